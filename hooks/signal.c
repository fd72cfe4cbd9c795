/*
 * signal.c — knowing when the program is inside its own signal handler.
 *
 * A handler may call write() or close() on a tracked socket at any moment,
 * including while the thread it interrupted holds malloc's lock or one of
 * ddshim's (a span's trace, the queue). Tracing there would allocate and lock
 * and could deadlock the program (seen: write() from a SIGALRM handler that
 * interrupted malloc). So ddshim installs its own small trampoline for every
 * handler the program sets with sigaction(), signal() or sigset(): the
 * trampoline marks the thread "in a handler" (dds_in_signal; the socket hooks
 * then pass straight through, as they do inside ddshim) and calls the
 * program's handler exactly as the kernel would have. What the program reads
 * back (sigaction's old action, signal()'s and sigset()'s return) is always
 * its own handler and flags, never the trampoline. SIG_DFL and SIG_IGN are
 * installed as they are.
 *
 * Not covered: handlers installed by a raw rt_sigaction system call (they
 * run unmarked); a handler that leaves by longjmp without going through
 * siglongjmp/longjmp (the thread stays marked, so untraced, until its next
 * handler returns). A handler that runs unmarked and writes to a traced
 * socket is traced like any other code: safe for the byte counts (see
 * dds_conn_send_plan on a send under way), but it may deadlock if it
 * interrupted malloc.
 */
#define _GNU_SOURCE
#include "guard.h"
#include "preload/real.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>

/* The program's action per signal, as it set it. handler is NULL when the
 * kernel holds the program's own action (SIG_DFL, SIG_IGN, or never set). */
typedef struct {
    void *handler;  /* sa_handler or sa_sigaction, read and written atomically */
    int flags;      /* the program's sa_flags */
    int reset;      /* SA_RESETHAND fired: the kernel went back to SIG_DFL but
                     * kept our SA_SIGINFO in its flags */
} app_action;

static app_action actions[NSIG];

DDS_NO_TSAN static void trampoline(int sig, siginfo_t *si, void *uc)
{
    if (sig <= 0 || sig >= NSIG)
        return;
    void *h = __atomic_load_n(&actions[sig].handler, __ATOMIC_ACQUIRE);
    int flags = __atomic_load_n(&actions[sig].flags, __ATOMIC_RELAXED);
    if (flags & SA_RESETHAND) { /* the kernel has just gone back to SIG_DFL */
        __atomic_store_n(&actions[sig].handler, NULL, __ATOMIC_RELEASE);
        __atomic_store_n(&actions[sig].reset, 1, __ATOMIC_RELAXED);
    }
    if (h == NULL || h == (void *)SIG_IGN || h == (void *)SIG_DFL)
        return; /* changed to SIG_IGN/SIG_DFL while this one was in flight */
    dds_in_signal++;
    if (flags & SA_SIGINFO)
        ((void (*)(int, siginfo_t *, void *))h)(sig, si, uc);
    else
        ((void (*)(int))h)(sig);
    dds_in_signal--;
}

static void resolve_jumps(void);

DDS_NO_TSAN static app_action snapshot(int sig)
{
    app_action a;
    a.handler = __atomic_load_n(&actions[sig].handler, __ATOMIC_ACQUIRE);
    a.flags = __atomic_load_n(&actions[sig].flags, __ATOMIC_RELAXED);
    a.reset = __atomic_load_n(&actions[sig].reset, __ATOMIC_RELAXED);
    return a;
}

DDS_NO_TSAN static void store(int sig, void *handler, int flags)
{
    __atomic_store_n(&actions[sig].flags, flags, __ATOMIC_RELAXED);
    __atomic_store_n(&actions[sig].reset, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&actions[sig].handler, handler, __ATOMIC_RELEASE);
}

/* The program's view of an action the kernel reported, given what the
 * program had set (a): the trampoline replaced by its handler, and our
 * SA_SIGINFO taken out of the flags. */
DDS_NO_TSAN static void app_view(const app_action *a, struct sigaction *k)
{
    if (k->sa_sigaction == trampoline) {
        if (a->handler == NULL)
            k->sa_handler = SIG_DFL;
        else if (a->flags & SA_SIGINFO)
            k->sa_sigaction = (void (*)(int, siginfo_t *, void *))a->handler;
        else
            k->sa_handler = (void (*)(int))a->handler;
        k->sa_flags = (k->sa_flags & ~SA_SIGINFO) | (a->flags & SA_SIGINFO);
    } else if (a->reset && !(a->flags & SA_SIGINFO) && k->sa_handler == SIG_DFL) {
        k->sa_flags &= ~SA_SIGINFO; /* SA_RESETHAND left our flag behind */
    }
}

DDS_NO_TSAN DDS_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    DDS_REAL(sigaction);
    if (real_sigaction == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (sig <= 0 || sig >= NSIG || !dds_active)
        return real_sigaction(sig, act, old);
    app_action before = snapshot(sig);
    struct sigaction mine, prev;
    const struct sigaction *give = act;
    int wrap = 0;
    if (act != NULL) {
        void *h = (act->sa_flags & SA_SIGINFO) ? (void *)act->sa_sigaction : (void *)act->sa_handler;
        wrap = h != NULL && h != (void *)SIG_DFL && h != (void *)SIG_IGN;
        if (wrap) {
            resolve_jumps();
            mine = *act;
            mine.sa_sigaction = trampoline;
            mine.sa_flags |= SA_SIGINFO;
            give = &mine;
            store(sig, h, act->sa_flags); /* before the kernel can deliver to it */
        }
    }
    int r = real_sigaction(sig, give, old ? &prev : NULL);
    int e = errno;
    if (r != 0) {
        if (wrap)
            store(sig, before.handler, before.flags);
        errno = e;
        return r;
    }
    if (act != NULL && !wrap)
        store(sig, NULL, act->sa_flags);
    if (old != NULL) {
        *old = prev;
        app_view(&before, old);
    }
    errno = e;
    return r;
}

/* signal() and its aliases, as glibc builds them on sigaction (BSD
 * semantics: the signal is blocked while its handler runs, and system
 * calls restart; sysv_signal: one shot, not blocked). Done here because
 * glibc's own signal() calls its internal sigaction, which no hook sees. */
DDS_NO_TSAN static __sighandler_t set_handler(int sig, __sighandler_t h, int flags)
{
    struct sigaction act, old;
    if (sig <= 0 || sig >= NSIG || h == SIG_ERR) {
        errno = EINVAL;
        return SIG_ERR;
    }
    memset(&act, 0, sizeof act);
    act.sa_handler = h;
    sigemptyset(&act.sa_mask);
    if (!(flags & SA_NODEFER))
        sigaddset(&act.sa_mask, sig);
    act.sa_flags = flags;
    if (sigaction(sig, &act, &old) < 0)
        return SIG_ERR;
    return old.sa_handler;
}

DDS_NO_TSAN DDS_EXPORT __sighandler_t signal(int sig, __sighandler_t h)
{
    return set_handler(sig, h, SA_RESTART);
}

__sighandler_t bsd_signal(int sig, __sighandler_t h); /* declared only for old X/Open levels */
DDS_NO_TSAN DDS_EXPORT __sighandler_t bsd_signal(int sig, __sighandler_t h)
{
    return set_handler(sig, h, SA_RESTART);
}

DDS_NO_TSAN DDS_EXPORT __sighandler_t sysv_signal(int sig, __sighandler_t h)
{
    return set_handler(sig, h, SA_RESETHAND | SA_NODEFER);
}

/* sigset() (System V), as glibc builds it: SIG_HOLD adds the signal to the
 * thread's mask and changes no action; anything else is installed with no
 * flags and an empty mask, and the signal is taken out of the mask. It
 * returns SIG_HOLD when the signal was blocked before, else the previous
 * action — the program's own handler, never the trampoline. */
DDS_NO_TSAN DDS_EXPORT __sighandler_t sigset(int sig, __sighandler_t disp)
{
    sigset_t set, old;
    struct sigaction act, oact;
    sigemptyset(&set);
    if (sig <= 0 || sig >= NSIG || sigaddset(&set, sig) < 0) {
        errno = EINVAL;
        return SIG_ERR;
    }
    if (disp == SIG_HOLD) {
        if (sigprocmask(SIG_BLOCK, &set, &old) < 0)
            return SIG_ERR;
        if (sigismember(&old, sig))
            return SIG_HOLD;
        if (sigaction(sig, NULL, &oact) < 0)
            return SIG_ERR;
        return oact.sa_handler;
    }
    memset(&act, 0, sizeof act);
    act.sa_handler = disp;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &oact) < 0)
        return SIG_ERR;
    if (sigprocmask(SIG_UNBLOCK, &set, &old) < 0)
        return SIG_ERR;
    return sigismember(&old, sig) ? SIG_HOLD : oact.sa_handler;
}

/* A handler that leaves with a long jump never returns to the trampoline:
 * the jump ends whatever handler this thread was in. The real functions are
 * looked up when the first handler is installed (dlsym may allocate: never
 * inside a handler). */
typedef void (*jump_fn)(struct __jmp_buf_tag env[1], int val);
static jump_fn real_jump[3]; /* siglongjmp, longjmp, __longjmp_chk */
static const char *const jump_name[3] = {"siglongjmp", "longjmp", "__longjmp_chk"};

static void resolve_jumps(void)
{
    for (int i = 0; i < 3; i++)
        if (__atomic_load_n(&real_jump[i], __ATOMIC_RELAXED) == NULL)
            __atomic_store_n(&real_jump[i], (jump_fn)dds_real_sym(jump_name[i]), __ATOMIC_RELAXED);
}

__attribute__((noreturn)) static void jump(int i, struct __jmp_buf_tag env[1], int val)
{
    dds_in_signal = 0;
    jump_fn f = __atomic_load_n(&real_jump[i], __ATOMIC_RELAXED);
    if (f == NULL) {
        resolve_jumps();
        f = __atomic_load_n(&real_jump[i], __ATOMIC_RELAXED);
    }
    if (f == NULL)
        f = __atomic_load_n(&real_jump[0], __ATOMIC_RELAXED); /* the same code in glibc */
    if (f)
        f(env, val);
    __builtin_trap(); /* unreachable: glibc always has siglongjmp */
}

DDS_EXPORT void siglongjmp(sigjmp_buf env, int val)
{
    jump(0, env, val);
}

DDS_EXPORT void longjmp(jmp_buf env, int val)
{
    jump(1, env, val);
}

/* What longjmp/siglongjmp become in a program built with _FORTIFY_SOURCE. */
void __longjmp_chk(struct __jmp_buf_tag env[1], int val);
DDS_EXPORT void __longjmp_chk(struct __jmp_buf_tag env[1], int val)
{
    jump(2, env, val);
}
