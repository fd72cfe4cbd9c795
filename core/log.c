/* See log.h. One write(2) per line; the fd is opened lazily with O_APPEND,
 * O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK and mode 0600, and kept only if it is a
 * regular file. Rate limit: at most DDS_LOG_BURST lines
 * per second; the file stops growing at DDS_LOG_MAX_BYTES.
 *
 * Threads, without a lock (dds_log runs inside hooks, in signal handlers and
 * around fork, where a lock could be held by an interrupted or vanished
 * thread): log_fd is only read, published and forgotten atomically. Two
 * threads logging their first line may both open the file; one
 * compare-and-swap publishes one fd and the other closes its own, never
 * published. The program may close the log's fd at any time (close, dup2,
 * closefrom: the hooks call dds_log_fd_lost first), and a thread may be
 * between reading log_fd and its write; were the close to go ahead then, the
 * line could reach whatever the program opens under that number next. So a
 * thread counts itself in log_users for as long as it uses the fd, and
 * dds_log_fd_lost, after unpublishing the fd, waits until no other thread
 * that may have read it still does. Two counters, as in userspace RCU:
 * while one is drained, log_phase sends the lines that start meanwhile
 * (which read -1, or a reopened fd) to the other, so they cannot keep the
 * wait going. The wait is bounded (LOG_LOST_WAIT_NS) and skips this
 * thread's own use (a signal handler that closes the fd may have
 * interrupted a line): it can delay a close, never block it. */
#include "log.h"
#include "guard.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define DDS_LOG_BURST 50
#define DDS_LOG_MAX_BYTES (16 * 1024 * 1024)
#define LOG_LOST_WAIT_NS (50 * 1000 * 1000LL)

/* Set once by dds_log_configure, in the constructor, before any thread. */
static int log_debug;
static int log_mode;          /* 0 default file, 1 stderr, 2 off, 3 path */
static char log_path[512];
/* Shared between threads: every access is atomic. */
static int log_fd = -1;       /* the published fd, or -1 (not open yet, or lost) */
static int log_open_failed;
static unsigned log_users[2]; /* threads between reading log_fd and their last use of it */
static unsigned log_phase;    /* which of log_users a new line counts in */
static long log_window_sec;
static int log_window_count;
/* This thread's part of each log_users counter: 1 in a line, 2 if a signal
 * handler logged while the interrupted code was in one. */
static __thread unsigned log_held[2] __attribute__((tls_model("initial-exec")));

void dds_log_configure(const char *dest, int debug)
{
    log_debug = debug;
    __atomic_store_n(&log_open_failed, 0, __ATOMIC_RELAXED);
    if (dest == NULL || dest[0] == '\0') {
        const char *tmp = getenv("TMPDIR");
        if (tmp == NULL || tmp[0] != '/')
            tmp = "/tmp";
        snprintf(log_path, sizeof log_path, "%s/ddshim-%u.log", tmp, (unsigned)getuid());
        log_mode = 0;
    } else if (strcmp(dest, "stderr") == 0) {
        log_mode = 1;
        snprintf(log_path, sizeof log_path, "stderr");
    } else if (strcmp(dest, "off") == 0 || strcmp(dest, "none") == 0) {
        log_mode = 2;
        log_path[0] = '\0';
    } else {
        log_mode = 3;
        snprintf(log_path, sizeof log_path, "%s", dest);
    }
}

int dds_log_debug_enabled(void) { return log_debug; }

const char *dds_log_path(void) { return log_path; }

int dds_log_owns_fd(int fd)
{
    return fd >= 0 && __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE) == fd;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Until no other thread that may have read the fd just unpublished is
 * still using it, or the bound. Such a thread counted itself in one of the
 * two counters before it read log_fd; each is drained in turn while new
 * lines count in the other one. */
static void log_wait_unused(void)
{
    int64_t end = 0;
    for (unsigned p = 0; p < 2; p++) {
        __atomic_store_n(&log_phase, !p, __ATOMIC_SEQ_CST);
        unsigned mine = log_held[p];
        for (int i = 0; __atomic_load_n(&log_users[p], __ATOMIC_SEQ_CST) > mine; i++) {
            if (i < 100) {
                __builtin_ia32_pause();
                continue;
            }
            int64_t now = mono_ns();
            if (end == 0)
                end = now + LOG_LOST_WAIT_NS;
            else if (now >= end)
                return; /* a thread stopped in a line (or gone by longjmp): let the close go */
            sched_yield();
        }
    }
}

void dds_log_fd_lost(int fd)
{
    /* Not closed: it is the program's now. The next line reopens the file.
     * Sequentially consistent, with log_hold's: either a thread that is
     * about to write counted itself before this reads log_users (then this
     * waits for it), or it reads log_fd after this unpublished it. */
    int expected = fd;
    if (fd >= 0 &&
        __atomic_compare_exchange_n(&log_fd, &expected, -1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        log_wait_unused();
}

void dds_log_fds_lost_range(unsigned lo, unsigned hi)
{
    int fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0 && (unsigned)fd >= lo && (unsigned)fd <= hi)
        dds_log_fd_lost(fd);
}

void dds_log_reset_after_fork(void)
{
    /* The inherited fd is still valid and O_APPEND; keep using it. The
     * parent's other threads, in a line or not, are gone: only this one's
     * own use counts. The rate-limit window restarts. */
    __atomic_store_n(&log_users[0], log_held[0], __ATOMIC_RELAXED);
    __atomic_store_n(&log_users[1], log_held[1], __ATOMIC_RELAXED);
    __atomic_store_n(&log_window_count, 0, __ATOMIC_RELAXED);
}

/* Opens the file and publishes it; the published fd (this one or the one
 * another thread published first), or -1. */
static int log_open(void)
{
    if (__atomic_load_n(&log_open_failed, __ATOMIC_RELAXED))
        return -1;
    /* Only a regular file: a FIFO planted at the path (the default one is in a
     * shared directory) would block open() forever without O_NONBLOCK, a
     * device would take the lines. The default file must be our own. */
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
                    (log_mode == 0 && st.st_uid != geteuid()))) {
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        __atomic_store_n(&log_open_failed, 1, __ATOMIC_RELAXED);
        return -1;
    }
    int expected = -1;
    if (!__atomic_compare_exchange_n(&log_fd, &expected, fd, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        close(fd); /* never published: no other thread knows this one */
        return expected;
    }
    return fd;
}

/* The fd to write this line to, or -1. Unless -1 (or stderr, which is the
 * program's own), log_drop(fd, *phase) must follow the last use of it. */
static int log_hold(unsigned *phase)
{
    *phase = 0;
    if (log_mode == 2)
        return -1;
    if (log_mode == 1)
        return 2;
    unsigned p = __atomic_load_n(&log_phase, __ATOMIC_SEQ_CST) & 1;
    log_held[p]++;
    __atomic_add_fetch(&log_users[p], 1, __ATOMIC_SEQ_CST);
    int fd = __atomic_load_n(&log_fd, __ATOMIC_SEQ_CST);
    if (fd < 0)
        fd = log_open();
    if (fd < 0) {
        __atomic_sub_fetch(&log_users[p], 1, __ATOMIC_RELEASE);
        log_held[p]--;
    }
    *phase = p;
    return fd;
}

static void log_drop(int fd, unsigned phase)
{
    if (fd < 0 || log_mode == 1)
        return;
    __atomic_sub_fetch(&log_users[phase], 1, __ATOMIC_RELEASE);
    log_held[phase]--;
}

/* Whether a line may be written now: logging on, rate limit. Sets *ts. */
static int log_admit(struct timespec *ts)
{
    if (log_mode == 2)
        return 0;
    clock_gettime(CLOCK_REALTIME, ts);
    long sec = (long)ts->tv_sec;
    if (__atomic_load_n(&log_window_sec, __ATOMIC_RELAXED) != sec) {
        __atomic_store_n(&log_window_sec, sec, __ATOMIC_RELAXED);
        __atomic_store_n(&log_window_count, 0, __ATOMIC_RELAXED);
    }
    return __atomic_add_fetch(&log_window_count, 1, __ATOMIC_RELAXED) <= DDS_LOG_BURST;
}

/* One line, in one write(2), unless the file is over its cap. The fd is
 * held from the moment it is read to the end of the write. */
static void log_emit(const struct iovec *v, int n)
{
    unsigned phase;
    int fd = log_hold(&phase);
    if (fd < 0)
        return;
    struct stat st;
    if (log_mode == 1 || fstat(fd, &st) != 0 || st.st_size <= DDS_LOG_MAX_BYTES) {
        ssize_t w = n == 1 ? write(fd, v[0].iov_base, v[0].iov_len) : writev(fd, v, n);
        (void)w;
    }
    log_drop(fd, phase);
}

/* UTC calendar date from days since 1970-01-01 (Howard Hinnant's
 * days-to-civil), in plain arithmetic. Not gmtime_r: it takes glibc's
 * tzset lock, and a fork while the writer thread held it left the child
 * (a daemonizing program) hanging at its first log line. */
static void civil_from_days(long long z, int *y, int *m, int *d)
{
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int log_stamp(char *buf, size_t cap, const struct timespec *ts, int level)
{
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    long long secs = (long long)ts->tv_sec;
    long long days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
    long long rem = secs - days * 86400;
    int y, mo, d;
    civil_from_days(days, &y, &mo, &d);
    return snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ddshim[%d] %s: ", y, mo, d,
                    (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), ts->tv_nsec / 1000000,
                    (int)getpid(), names[level & 3]);
}

void dds_log(int level, const char *fmt, ...)
{
    if (level > DDS_LOG_INFO && !log_debug)
        return;
    int saved_errno = errno;
    int was_in = dds_in_shim;
    dds_in_shim = 1;
    struct timespec ts;
    if (!log_admit(&ts))
        goto out;
    char line[1024];
    int n = log_stamp(line, sizeof line, &ts, level);
    if (n < 0)
        goto out;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    /* One line each: drop embedded newlines from values. */
    for (size_t i = (size_t)n; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[len++] = '\n';
    struct iovec v = {line, len};
    log_emit(&v, 1);
out:
    dds_in_shim = was_in;
    errno = saved_errno;
}

void dds_log_long(int level, const char *prefix, const char *text)
{
    if (level > DDS_LOG_INFO && !log_debug)
        return;
    int saved_errno = errno;
    int was_in = dds_in_shim;
    dds_in_shim = 1;
    struct timespec ts;
    if (log_admit(&ts) && strpbrk(text, "\r\n") == NULL) {
        char stamp[128];
        int n = log_stamp(stamp, sizeof stamp, &ts, level);
        if (n > 0) {
            struct iovec v[4] = {{stamp, (size_t)n}, {(void *)prefix, strlen(prefix)},
                                 {(void *)text, strlen(text)}, {"\n", 1}};
            log_emit(v, 4);
        }
    }
    dds_in_shim = was_in;
    errno = saved_errno;
}
