/*
 * socket.c — the libc socket hooks.
 *
 * Each exported function is the libc name; the fast path, for a descriptor
 * ddshim does not track, is one table load and the real call. TCP sockets the
 * application connect()s or accept()s get a dds_conn (core/conn.c), which
 * parses the HTTP/1.x traffic and says what to inject; this file only moves
 * bytes and keeps return values and errno exactly those of the real calls.
 * The table holds a pointer per fd: NULL (not tracked), DDS_IGNORED (seen, not
 * HTTP or owned by another integration), or a dds_conn.
 */
#define _GNU_SOURCE
#include "socket.h"

#include "agent_http.h"
#include "conn.h"
#include "config.h"
#include "guard.h"
#include "log.h"
#include "preload/preload.h"
#include "preload/real.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_sent (glibc's lacks it) */

#define DDS_FD_MAX (1 << 20)
#define DDS_IGNORED ((dds_conn *)1)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

static dds_conn **fd_table;     /* mmap'd lazily: untouched pages cost nothing */
static size_t fd_table_cap;     /* 0 until the first tracked socket */
static int fd_high;             /* highest fd ever tracked, for close_range */
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;

static int table_ensure(void)
{
    if (__atomic_load_n(&fd_table_cap, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&table_mu);
    if (fd_table_cap == 0) {
        void *p = mmap(NULL, DDS_FD_MAX * sizeof(dds_conn *), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            fd_table = p;
            __atomic_store_n(&fd_table_cap, DDS_FD_MAX, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&table_mu);
    return fd_table_cap ? 0 : -1;
}

static inline dds_conn *fd_get(int fd)
{
    /* Acquire: the table's pages were mapped before the capacity was
     * published (a plain load on x86). */
    if (LIKELY((unsigned)fd >= __atomic_load_n(&fd_table_cap, __ATOMIC_ACQUIRE)))
        return NULL;
    return __atomic_load_n(&fd_table[fd], __ATOMIC_ACQUIRE);
}

/* Nothing to do on this fd's data: not tracked, or ignored (a libpq or
 * hiredis socket). The I/O hooks' fast path: the real call, nothing else. */
static inline int fd_untraced(int fd)
{
    return (uintptr_t)fd_get(fd) <= (uintptr_t)DDS_IGNORED;
}

/* Swap in a new state for fd; returns the old one. */
static dds_conn *fd_swap(int fd, dds_conn *c)
{
    if ((unsigned)fd >= __atomic_load_n(&fd_table_cap, __ATOMIC_ACQUIRE))
        return NULL;
    if (c != NULL && fd > __atomic_load_n(&fd_high, __ATOMIC_RELAXED))
        __atomic_store_n(&fd_high, fd, __ATOMIC_RELAXED);
    return __atomic_exchange_n(&fd_table[fd], c, __ATOMIC_ACQ_REL);
}

/* References. A hook that uses an fd's state holds a reference from its
 * lookup to its end, across the real system call, so another thread closing
 * the fd meanwhile (a watchdog closing a socket a writer is blocked on) never
 * frees it under the hook: whoever drops the last reference finishes the
 * state. A reference is only taken while the count is non-zero, and a dds_conn's
 * memory is never freed (core/conn.h), so reading a pointer that was just
 * swapped out of the table is safe. */
static void conn_put(dds_conn *c)
{
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    int was = dds_in_shim;
    dds_in_shim = 1;
    if (c->pid != dds_pid)
        dds_conn_abandon(c); /* our fork parent's state: theirs to finish */
    else
        dds_conn_close(c, c->close_why);
    dds_in_shim = was;
}

static dds_conn *conn_get(int fd)
{
    dds_conn *c = fd_get(fd);
    if (LIKELY(c == NULL) || c == DDS_IGNORED)
        return NULL;
    int r = __atomic_load_n(&c->refs, __ATOMIC_ACQUIRE);
    do {
        if (r <= 0)
            return NULL; /* being finished, or already recycled */
    } while (!__atomic_compare_exchange_n(&c->refs, &r, r + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    if (fd_get(fd) != c) { /* closed (and maybe recycled) meanwhile */
        conn_put(c);
        return NULL;
    }
    return c;
}

/* The fd table's own reference, for a state just swapped out of it. */
static void conn_release(dds_conn *c, const char *why)
{
    if (c == NULL || c == DDS_IGNORED)
        return;
    c->close_why = why; /* read by the last holder, after its atomic decrement */
    conn_put(c);
}

/* A tracked fd is being used: the state it carries, or NULL if the call
 * must pass through (inside ddshim, in a signal handler, vfork child, busy,
 * dead). On success the caller holds a reference and the conn's mutex, and
 * dds_in_shim is set; conn_leave gives all three back. */
static dds_conn *conn_enter(int fd)
{
    if (dds_in_shim || dds_in_signal || !dds_active)
        return NULL;
    dds_conn *c = conn_get(fd);
    if (LIKELY(c == NULL))
        return NULL;
    if (__atomic_load_n(&c->passive, __ATOMIC_RELAXED))
        goto pass;
    /* The cached pid, not getpid(): a system call (about 1 µs on a VM) on
     * every read and write of a traced connection cost nginx 5% of its
     * throughput. dds_pid is updated by the fork child handler, so a fork
     * child is told apart here. A vfork/posix_spawn child keeps its parent's
     * dds_pid, but between vfork and exec it only closes and duplicates
     * descriptors, and those paths (forget_fd) do check getpid(). */
    pid_t pid = dds_pid;
    if (c->pid != pid) {
        /* fork child (a server forking per connection): the parent's spans
         * are the parent's to finish; this process starts clean on the same
         * connection. */
        dds_conn *fresh = dds_conn_new(c->role, c->peer_ip, c->peer_port, pid);
        if (fresh) {
            fresh->wire_out = c->wire_out; /* the bytes already on this connection */
            dds_conn_wire_suspect(fresh);  /* the parent may write to it too */
        }
        dds_conn *expect = c;
        if (!__atomic_compare_exchange_n(&fd_table[fd], &expect, fresh ? fresh : DDS_IGNORED, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            if (fresh)
                conn_put(fresh);
            goto pass;
        }
        conn_put(c); /* the table's reference */
        conn_put(c); /* ours */
        c = fresh;
        if (c == NULL)
            return NULL;
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_ACQ_REL); /* ours, besides the table's */
    }
    /* Never block: a signal handler writing to this socket while the
     * interrupted code holds the lock must not deadlock. The lock is only
     * ever held for parsing (never across a system call), so a reader and a
     * writer thread of one connection get it within a short spin. */
    int tries = 0;
    while (!dds_conn_trylock(c)) {
        if (++tries > 2000) {
            /* bytes go by unparsed: the parser cannot follow any more */
            __atomic_store_n(&c->lost, 1, __ATOMIC_RELAXED);
            goto pass;
        }
        dds_conn_cpu_relax();
    }
    if (UNLIKELY(__atomic_load_n(&c->lost, __ATOMIC_RELAXED)))
        dds_conn_lost_sync(c);
    dds_in_shim = 1;
    return c;
pass:
    conn_put(c);
    return NULL;
}

static void conn_leave(dds_conn *c, int fd)
{
    int retire = 0;
    if (c->dead && !c->inj.active) {
        __atomic_store_n(&c->passive, 1, __ATOMIC_RELAXED);
        /* Passive for good, and nothing open that a later event (the
         * response, the close) would finish: the state has nothing left to
         * do, so the fd drops to the fast path (DDS_IGNORED), like a socket
         * ddshim never tracked. Finishing the state now or at close does the
         * same (nothing to finish), and close/accept/dup2 treat DDS_IGNORED
         * like any state. A connection that died with requests in flight
         * keeps its state until it is closed, which ends their spans. */
        retire = c->nq == 0 && c->prepared == NULL;
    }
    dds_conn_unlock(c);
    if (retire) {
        dds_conn *expect = c;
        if (__atomic_compare_exchange_n(&fd_table[fd], &expect, DDS_IGNORED, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            conn_put(c); /* the table's reference */
    }
    conn_put(c); /* with dds_in_shim still set: it may finish the state */
    dds_in_shim = 0;
}

void dds_socket_ignore_fd(int fd)
{
    if (fd < 0 || table_ensure() < 0)
        return;
    dds_conn *old = fd_get(fd);
    if (old == DDS_IGNORED)
        return;
    conn_release(fd_swap(fd, DDS_IGNORED), NULL);
}

static int peer_of(const struct sockaddr *sa, char *ip, size_t cap, int *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, (socklen_t)cap);
        *port = ntohs(in->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, (socklen_t)cap);
        *port = ntohs(in6->sin6_port);
        return 0;
    }
    return -1;
}

static int is_stream_socket(int fd)
{
    int type = 0;
    socklen_t len = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

static void track(int fd, int role, const struct sockaddr *sa)
{
    char ip[64] = "";
    int port = 0;
    if (sa == NULL || peer_of(sa, ip, sizeof ip, &port) < 0)
        return;
    int want = role == DDS_CONN_CLIENT ? DDS_INTEG_HTTP_CLIENT : DDS_INTEG_HTTP_SERVER;
    if (!(dds_cfg->integrations & want) || !is_stream_socket(fd) || table_ensure() < 0)
        return;
    dds_conn *c = dds_conn_new(role, ip, port, dds_pid);
    conn_release(fd_swap(fd, c), NULL);
}

/* ---- connect / accept ------------------------------------------------- */

DDS_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    DDS_REAL(connect);
    if (UNLIKELY(real_connect == NULL))
        return (int)syscall(SYS_connect, fd, addr, len);
    int r = real_connect(fd, addr, len);
    if (dds_in_shim || dds_in_signal || !dds_active || addr == NULL ||
        (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return r;
    int e = errno;
    if ((r == 0 || e == EINPROGRESS) && getpid() == dds_pid && dds_ready()) {
        dds_in_shim = 1;
        track(fd, DDS_CONN_CLIENT, addr);
        dds_in_shim = 0;
    }
    errno = e;
    return r;
}

static void accepted(int fd)
{
    if (fd < 0 || dds_in_shim || !dds_active || getpid() != dds_pid)
        return;
    if (UNLIKELY(dds_in_signal)) {
        /* Accepted in a signal handler: nothing may be freed or locked
         * here; a reused fd number just stops being followed. */
        if (fd_get(fd) != NULL)
            fd_swap(fd, DDS_IGNORED);
        return;
    }
    int e = errno;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) && dds_ready()) {
        dds_in_shim = 1;
        track(fd, DDS_CONN_SERVER, (struct sockaddr *)&ss);
        dds_in_shim = 0;
    } else {
        /* A reused fd number must not carry an older connection's state. */
        conn_release(fd_swap(fd, NULL), NULL);
    }
    errno = e;
}

DDS_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    DDS_REAL(accept);
    int r = real_accept ? real_accept(fd, addr, len) : (int)syscall(SYS_accept, fd, addr, len);
    accepted(r);
    return r;
}

DDS_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    DDS_REAL(accept4);
    int r = real_accept4 ? real_accept4(fd, addr, len, flags)
                         : (int)syscall(SYS_accept4, fd, addr, len, flags);
    accepted(r);
    return r;
}

/* ---- sending ---------------------------------------------------------- */

static int fd_blocking(int fd, int flags)
{
    if (flags & MSG_DONTWAIT)
        return 0;
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_NONBLOCK);
}

/* One send of the app's iovecs on a tracked fd; `plain` performs the
 * application's own call unchanged, sendmsg carries a rewritten one. */
typedef ssize_t (*plain_send_fn)(int fd, const struct iovec *iov, int n, int flags, const struct msghdr *m);

static ssize_t real_sendmsg_call(int fd, const struct msghdr *m, int flags)
{
    DDS_REAL(sendmsg);
    if (real_sendmsg == NULL)
        return syscall(SYS_sendmsg, fd, m, flags);
    return real_sendmsg(fd, m, flags);
}

/* Bytes the program has written to a TCP socket so far, by the kernel's
 * count: sent once (retransmissions excluded) plus not yet sent. -1 when the
 * kernel is too old to say (before 4.19). */
static int64_t kernel_bytes_out(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_retrans) + sizeof ti.tcpi_bytes_retrans)
        return -1;
    return (int64_t)(ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans + ti.tcpi_notsent_bytes);
}

static ssize_t traced_send(dds_conn *c, int fd, const struct iovec *iov, int n, int flags,
                           const struct msghdr *orig, plain_send_fn plain)
{
    struct iovec out[IOV_MAX > 1024 ? 1024 : IOV_MAX];
    if (dds_conn_wire_check_due(c)) {
        /* About to look for a request head: make sure the kernel saw no
         * bytes ddshim did not (see dds_conn_check_wire). */
        int64_t kout = kernel_bytes_out(fd);
        if (kout >= 0)
            dds_conn_check_wire(c, (uint64_t)kout);
    }
    for (int tries = 0;; tries++) {
        int planned = dds_conn_send_plan(c, iov, n, out, (int)(sizeof out / sizeof *out));
        ssize_t k;
        int e;
        dds_conn_unlock(c);
        if (planned < 0) { /* another thread's send is under way: not followed */
            k = plain(fd, iov, n, flags, orig);
            e = errno;
            dds_conn_lock(c);
            errno = e;
            return k;
        }
        if (planned > 0) {
            struct msghdr m = {0};
            if (orig)
                m = *orig;
            m.msg_iov = out;
            m.msg_iovlen = (size_t)planned;
            k = real_sendmsg_call(fd, &m, flags);
        } else {
            k = plain(fd, iov, n, flags, orig);
        }
        e = errno;
        dds_conn_lock(c);
        ssize_t r = dds_conn_send_done(c, iov, n, planned, k, e);
        if (r == -2) {
            /* Only injected bytes went out. A blocking caller never sees
             * EAGAIN: go on writing; a non-blocking one retries later. */
            if (fd_blocking(fd, flags) && tries < 1000)
                continue;
            errno = EAGAIN;
            return -1;
        }
        if (r < 0 && k < 0 && (e == EPIPE || e == ECONNRESET))
            dds_conn_error(c, e);
        errno = e;
        return r;
    }
}

static ssize_t plain_write(int fd, const struct iovec *iov, int n, int flags, const struct msghdr *m)
{
    (void)n, (void)flags, (void)m;
    DDS_REAL(write);
    return real_write ? real_write(fd, iov[0].iov_base, iov[0].iov_len)
                      : syscall(SYS_write, fd, iov[0].iov_base, iov[0].iov_len);
}

static ssize_t plain_writev(int fd, const struct iovec *iov, int n, int flags, const struct msghdr *m)
{
    (void)flags, (void)m;
    DDS_REAL(writev);
    return real_writev ? real_writev(fd, iov, n) : syscall(SYS_writev, fd, iov, n);
}

static ssize_t plain_send(int fd, const struct iovec *iov, int n, int flags, const struct msghdr *m)
{
    (void)n, (void)m;
    DDS_REAL(send);
    return real_send ? real_send(fd, iov[0].iov_base, iov[0].iov_len, flags)
                     : syscall(SYS_sendto, fd, iov[0].iov_base, iov[0].iov_len, flags, NULL, 0);
}

static ssize_t plain_sendmsg(int fd, const struct iovec *iov, int n, int flags, const struct msghdr *m)
{
    (void)iov, (void)n;
    return real_sendmsg_call(fd, m, flags);
}

static ssize_t plain_sendto(int fd, const struct iovec *iov, int n, int flags, const struct msghdr *m)
{
    (void)n;
    DDS_REAL(sendto);
    const void *to = m ? m->msg_name : NULL;
    socklen_t tl = m ? m->msg_namelen : 0;
    return real_sendto ? real_sendto(fd, iov[0].iov_base, iov[0].iov_len, flags, to, tl)
                       : syscall(SYS_sendto, fd, iov[0].iov_base, iov[0].iov_len, flags, to, tl);
}

static ssize_t send_common(int fd, const struct iovec *iov, int n, int flags, const struct msghdr *m,
                           plain_send_fn plain)
{
    dds_conn *c = conn_enter(fd);
    if (c == NULL)
        return plain(fd, iov, n, flags, m);
    ssize_t r = traced_send(c, fd, iov, n, flags, m, plain);
    int e = errno;
    conn_leave(c, fd);
    errno = e;
    return r;
}

/* The hooks below keep their fast path (an fd ddshim does not follow) short:
 * one table load and a tail call to the real function; the traced path is a
 * separate, never-inlined function, so that its locals and saved registers
 * do not weigh on every untraced call. */
#define DDS_SLOW __attribute__((noinline, cold))

static DDS_SLOW ssize_t write_slow(int fd, const void *buf, size_t len)
{
    struct iovec v = {(void *)buf, len};
    return send_common(fd, &v, 1, 0, NULL, plain_write);
}

DDS_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    DDS_REAL(write);
    if (LIKELY(fd_untraced(fd)) && LIKELY(real_write != NULL))
        return real_write(fd, buf, len);
    return write_slow(fd, buf, len);
}

static DDS_SLOW ssize_t writev_slow(int fd, const struct iovec *iov, int n)
{
    if (n < 0 || n > IOV_MAX)
        return plain_writev(fd, iov, n, 0, NULL);
    return send_common(fd, iov, n, 0, NULL, plain_writev);
}

DDS_EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
    DDS_REAL(writev);
    if (LIKELY(fd_untraced(fd)) && LIKELY(real_writev != NULL))
        return real_writev(fd, iov, n);
    return writev_slow(fd, iov, n);
}

static DDS_SLOW ssize_t send_slow(int fd, const void *buf, size_t len, int flags)
{
    struct iovec v = {(void *)buf, len};
    return send_common(fd, &v, 1, flags, NULL, plain_send);
}

DDS_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    DDS_REAL(send);
    if (LIKELY(fd_untraced(fd)) && LIKELY(real_send != NULL))
        return real_send(fd, buf, len, flags);
    return send_slow(fd, buf, len, flags);
}

static DDS_SLOW ssize_t sendto_slow(int fd, const void *buf, size_t len, int flags,
                                    const struct sockaddr *to, socklen_t tolen)
{
    struct iovec v = {(void *)buf, len};
    struct msghdr m = {.msg_name = (void *)to, .msg_namelen = tolen};
    return send_common(fd, &v, 1, flags, &m, plain_sendto);
}

DDS_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to,
                          socklen_t tolen)
{
    DDS_REAL(sendto);
    if (LIKELY(fd_untraced(fd)) && LIKELY(real_sendto != NULL))
        return real_sendto(fd, buf, len, flags, to, tolen);
    return sendto_slow(fd, buf, len, flags, to, tolen);
}

static DDS_SLOW ssize_t sendmsg_slow(int fd, const struct msghdr *m, int flags)
{
    if (m == NULL || m->msg_iovlen > IOV_MAX)
        return real_sendmsg_call(fd, m, flags);
    return send_common(fd, m->msg_iov, (int)m->msg_iovlen, flags, m, plain_sendmsg);
}

DDS_EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    DDS_REAL(sendmsg);
    if (LIKELY(fd_untraced(fd)) && LIKELY(real_sendmsg != NULL))
        return real_sendmsg(fd, m, flags);
    return sendmsg_slow(fd, m, flags);
}

static void opaque_sent(int fd, ssize_t r)
{
    if (r <= 0)
        return;
    int e = errno;
    dds_conn *c = conn_enter(fd);
    if (c) {
        dds_conn_sent_opaque(c, (size_t)r);
        conn_leave(c, fd);
    }
    errno = e;
}

DDS_EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t count)
{
    DDS_REAL(sendfile);
    ssize_t r = real_sendfile ? real_sendfile(out, in, off, count)
                              : syscall(SYS_sendfile, out, in, off, count);
    if (UNLIKELY(!fd_untraced(out)))
        opaque_sent(out, r);
    return r;
}

static void opaque_received(int fd, ssize_t r)
{
    if (r <= 0)
        return;
    int e = errno;
    dds_conn *c = conn_enter(fd);
    if (c) {
        dds_conn_received_opaque(c, (size_t)r);
        conn_leave(c, fd);
    }
    errno = e;
}

/* splice: a pipe on one side, maybe a tracked socket on the other; the bytes
 * never pass through user space, so, as for sendfile, they only count down
 * the framing (a body), in whichever direction they went. */
DDS_EXPORT ssize_t splice(int in, loff_t *off_in, int out, loff_t *off_out, size_t len,
                          unsigned int flags)
{
    DDS_REAL(splice);
    ssize_t r = real_splice ? real_splice(in, off_in, out, off_out, len, flags)
                            : syscall(SYS_splice, in, off_in, out, off_out, len, flags);
    if (UNLIKELY(!fd_untraced(out)))
        opaque_sent(out, r);
    if (UNLIKELY(!fd_untraced(in)))
        opaque_received(in, r);
    return r;
}

DDS_EXPORT ssize_t sendfile64(int out, int in, off64_t *off, size_t count)
{
    DDS_REAL(sendfile64);
    ssize_t r = real_sendfile64 ? real_sendfile64(out, in, off, count)
                                : syscall(SYS_sendfile, out, in, off, count);
    if (UNLIKELY(!fd_untraced(out)))
        opaque_sent(out, r);
    return r;
}

/* ---- receiving -------------------------------------------------------- */

/* glibc's fortified entry points (used by programs built with
 * _FORTIFY_SOURCE); no public header declares them. */
ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                       struct sockaddr *from, socklen_t *fl);

static void received(int fd, const struct iovec *iov, int n, ssize_t r, int flags)
{
    if (flags & (MSG_PEEK | MSG_TRUNC)) {
        if (flags & MSG_TRUNC) {
            dds_conn *c = fd_get(fd); /* safe to look at: see conn_get */
            if (c && c != DDS_IGNORED)
                __atomic_store_n(&c->lost, 1, __ATOMIC_RELAXED); /* bytes discarded unseen */
        }
        return; /* peeked data is parsed once, when it is really read */
    }
    int e = errno;
    dds_conn *c = conn_enter(fd);
    if (c) {
        if (r > 0)
            dds_conn_received(c, iov, n, (size_t)r);
        else if (r == 0)
            dds_conn_eof(c);
        else if (e == ECONNRESET || e == ETIMEDOUT || e == EPIPE)
            dds_conn_error(c, e);
        conn_leave(c, fd);
    }
    errno = e;
}

DDS_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
    DDS_REAL(read);
    if (UNLIKELY(real_read == NULL))
        return syscall(SYS_read, fd, buf, len);
    if (LIKELY(fd_untraced(fd)))
        return real_read(fd, buf, len);
    ssize_t r = real_read(fd, buf, len);
    struct iovec v = {buf, len};
    received(fd, &v, 1, r, 0);
    return r;
}

DDS_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
    DDS_REAL(__read_chk);
    if (UNLIKELY(real___read_chk == NULL))
        return syscall(SYS_read, fd, buf, len);
    ssize_t r = real___read_chk(fd, buf, len, buflen); /* keeps glibc's size check */
    if (UNLIKELY(!fd_untraced(fd))) {
        struct iovec v = {buf, len};
        received(fd, &v, 1, r, 0);
    }
    return r;
}

DDS_EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
    DDS_REAL(readv);
    if (UNLIKELY(real_readv == NULL))
        return syscall(SYS_readv, fd, iov, n);
    ssize_t r = real_readv(fd, iov, n);
    if (UNLIKELY(!fd_untraced(fd)))
        received(fd, iov, n, r, 0);
    return r;
}

DDS_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    DDS_REAL(recv);
    if (UNLIKELY(real_recv == NULL))
        return syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
    ssize_t r = real_recv(fd, buf, len, flags);
    if (UNLIKELY(!fd_untraced(fd))) {
        struct iovec v = {buf, len};
        received(fd, &v, 1, r, flags);
    }
    return r;
}

DDS_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    DDS_REAL(__recv_chk);
    if (UNLIKELY(real___recv_chk == NULL))
        return syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
    ssize_t r = real___recv_chk(fd, buf, len, buflen, flags);
    if (UNLIKELY(!fd_untraced(fd))) {
        struct iovec v = {buf, len};
        received(fd, &v, 1, r, flags);
    }
    return r;
}

DDS_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from,
                            socklen_t *fl)
{
    DDS_REAL(recvfrom);
    if (UNLIKELY(real_recvfrom == NULL))
        return syscall(SYS_recvfrom, fd, buf, len, flags, from, fl);
    ssize_t r = real_recvfrom(fd, buf, len, flags, from, fl);
    if (UNLIKELY(!fd_untraced(fd))) {
        struct iovec v = {buf, len};
        received(fd, &v, 1, r, flags);
    }
    return r;
}

DDS_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                                  struct sockaddr *from, socklen_t *fl)
{
    DDS_REAL(__recvfrom_chk);
    if (UNLIKELY(real___recvfrom_chk == NULL))
        return syscall(SYS_recvfrom, fd, buf, len, flags, from, fl);
    ssize_t r = real___recvfrom_chk(fd, buf, len, buflen, flags, from, fl);
    if (UNLIKELY(!fd_untraced(fd))) {
        struct iovec v = {buf, len};
        received(fd, &v, 1, r, flags);
    }
    return r;
}

DDS_EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    DDS_REAL(recvmsg);
    if (UNLIKELY(real_recvmsg == NULL))
        return syscall(SYS_recvmsg, fd, m, flags);
    ssize_t r = real_recvmsg(fd, m, flags);
    if (UNLIKELY(!fd_untraced(fd)) && m)
        received(fd, m->msg_iov, (int)m->msg_iovlen, r, flags | (m->msg_flags & MSG_TRUNC));
    return r;
}

/* ---- closing and handing over ----------------------------------------- */

/* The fd is about to stop meaning this connection. Not in a vfork child:
 * that would free state the parent still uses. */
static void forget_fd(int fd, const char *why)
{
    /* The program closes our agent connection or our log file. A vfork child
     * closes only its own copy of the fd table: the parent's stay ours. */
    if (UNLIKELY(!dds_in_shim) && UNLIKELY(dds_http_owns_fd(fd) || dds_log_owns_fd(fd)) &&
        getpid() == dds_pid) {
        dds_http_fd_lost(fd);
        dds_log_fd_lost(fd);
    }
    if (LIKELY(fd_get(fd) == NULL) || getpid() != dds_pid)
        return;
    if (UNLIKELY(dds_in_signal)) {
        /* Closed by a signal handler, which may have interrupted malloc or
         * ddshim itself: nothing may be freed or locked here. The state is
         * left behind (a small leak, for a rare event) and the fd forgotten. */
        fd_swap(fd, NULL);
        return;
    }
    int e = errno;
    int was = dds_in_shim;
    dds_in_shim = 1;
    conn_release(fd_swap(fd, NULL), why);
    dds_in_shim = was;
    errno = e;
}

DDS_EXPORT int close(int fd)
{
    DDS_REAL(close);
    forget_fd(fd, "connection closed before the response");
    return real_close ? real_close(fd) : (int)syscall(SYS_close, fd);
}

DDS_EXPORT int shutdown(int fd, int how)
{
    DDS_REAL(shutdown);
    int r = real_shutdown ? real_shutdown(fd, how) : (int)syscall(SYS_shutdown, fd, how);
    if (UNLIKELY(fd_get(fd) != NULL) && r == 0 && (how == SHUT_WR || how == SHUT_RDWR)) {
        int e = errno;
        dds_conn *c = conn_enter(fd);
        if (c) {
            dds_conn_shutdown_write(c);
            conn_leave(c, fd);
        }
        errno = e;
    }
    return r;
}

/* A tracked socket gets a second descriptor, which ddshim does not follow
 * (stdio on fd 1, say): bytes may reach it unseen from now on, so its wire
 * count is compared before every message (core/conn.h). */
static void duplicated(int old)
{
    /* No reference needed: a dds_conn's memory is never freed (see conn_get),
     * and the flag only ever adds comparisons, so setting it on a state
     * recycled meanwhile is harmless. Nothing here locks or allocates. */
    dds_conn *c = fd_get(old);
    if (UNLIKELY(c != NULL) && c != DDS_IGNORED)
        dds_conn_wire_suspect(c);
}

DDS_EXPORT int dup(int old)
{
    DDS_REAL(dup);
    duplicated(old);
    return real_dup ? real_dup(old) : (int)syscall(SYS_dup, old);
}

/* stdio on a tracked socket writes through glibc's internal system call
 * path, which no preloaded library sees: its bytes would reach the wire
 * unseen. Compared before every message from now on, a connection that had
 * such bytes stops being followed before a head is judged wrongly. */
DDS_EXPORT FILE *fdopen(int fd, const char *mode)
{
    DDS_REAL(fdopen);
    duplicated(fd);
    if (real_fdopen == NULL) {
        errno = ENOSYS;
        return NULL;
    }
    return real_fdopen(fd, mode);
}

/* Not followed (several messages at once, in practice UDP): on a tracked
 * socket its bytes are unseen ones, so the wire is compared before every
 * message from now on (see fdopen). */
DDS_EXPORT int sendmmsg(int fd, struct mmsghdr *msgs, unsigned int n, int flags)
{
    DDS_REAL(sendmmsg);
    duplicated(fd);
    return real_sendmmsg ? real_sendmmsg(fd, msgs, n, flags)
                         : (int)syscall(SYS_sendmmsg, fd, msgs, n, flags);
}

/* fcntl(F_DUPFD*) makes a second descriptor like dup. Every other command
 * passes straight through; the third argument is forwarded as the word it is
 * (an int or a pointer, as the command says), as interposers do. Programs
 * built with _FILE_OFFSET_BITS=64 call fcntl64. */
static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    if (UNLIKELY(cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
        duplicated(fd);
    return real ? real(fd, cmd, arg) : (int)syscall(SYS_fcntl, fd, cmd, arg);
}

DDS_EXPORT int fcntl(int fd, int cmd, ...)
{
    DDS_REAL(fcntl);
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fcntl_common(real_fcntl, fd, cmd, arg);
}

DDS_EXPORT int fcntl64(int fd, int cmd, ...)
{
    DDS_REAL(fcntl64);
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fcntl_common(real_fcntl64, fd, cmd, arg);
}

DDS_EXPORT int dup2(int old, int newfd)
{
    DDS_REAL(dup2);
    if (old != newfd) {
        forget_fd(newfd, "connection replaced by dup2");
        duplicated(old);
    }
    return real_dup2 ? real_dup2(old, newfd) : (int)syscall(SYS_dup2, old, newfd);
}

DDS_EXPORT int dup3(int old, int newfd, int flags)
{
    DDS_REAL(dup3);
    if (old != newfd) {
        forget_fd(newfd, "connection replaced by dup3");
        duplicated(old);
    }
    return real_dup3 ? real_dup3(old, newfd, flags) : (int)syscall(SYS_dup3, old, newfd, flags);
}

static void forget_range(unsigned lo, unsigned hi)
{
    if (!dds_in_shim && getpid() == dds_pid) { /* not in a vfork child: see forget_fd */
        dds_http_fds_lost_range(lo, hi);
        dds_log_fds_lost_range(lo, hi);
    }
    size_t cap = __atomic_load_n(&fd_table_cap, __ATOMIC_ACQUIRE);
    if (cap == 0)
        return;
    unsigned top = (unsigned)__atomic_load_n(&fd_high, __ATOMIC_RELAXED);
    if (hi > top)
        hi = top;
    for (unsigned fd = lo; fd <= hi && fd < cap; fd++)
        if (fd_get((int)fd) != NULL)
            forget_fd((int)fd, "connection closed before the response");
}

DDS_EXPORT int close_range(unsigned lo, unsigned hi, int flags)
{
    DDS_REAL(close_range);
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
    if (!(flags & CLOSE_RANGE_CLOEXEC))
        forget_range(lo, hi);
    return real_close_range ? real_close_range(lo, hi, flags)
                            : (int)syscall(SYS_close_range, lo, hi, flags);
}

DDS_EXPORT void closefrom(int lo)
{
    DDS_REAL(closefrom);
    if (lo >= 0)
        forget_range((unsigned)lo, UINT_MAX);
    if (real_closefrom)
        real_closefrom(lo);
    else
        syscall(SYS_close_range, (unsigned)lo, ~0U, 0);
}
