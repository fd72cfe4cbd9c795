/* See log.h. One write(2) per line; the fd is opened lazily with O_APPEND,
 * O_CLOEXEC, O_NOFOLLOW, O_NONBLOCK and mode 0600, and kept only if it is a
 * regular file. Rate limit: at most DDS_LOG_BURST lines
 * per second; the file stops growing at DDS_LOG_MAX_BYTES. */
#include "log.h"
#include "guard.h"

#include <errno.h>
#include <fcntl.h>
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

static int log_debug;
static int log_mode;          /* 0 default file, 1 stderr, 2 off, 3 path */
static char log_path[512];
static int log_fd = -1;
static int log_open_failed;
static long log_window_sec;
static int log_window_count;

void dds_log_configure(const char *dest, int debug)
{
    log_debug = debug;
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

void dds_log_fd_lost(int fd)
{
    /* Not closed: it is the program's now. The next line reopens the file. */
    int expected = fd;
    if (fd >= 0)
        __atomic_compare_exchange_n(&log_fd, &expected, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

void dds_log_fds_lost_range(unsigned lo, unsigned hi)
{
    int fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0 && (unsigned)fd >= lo && (unsigned)fd <= hi)
        dds_log_fd_lost(fd);
}

void dds_log_reset_after_fork(void)
{
    /* The inherited fd is still valid and O_APPEND; keep using it. Only the
     * rate-limit window restarts. */
    log_window_count = 0;
}

static int log_get_fd(void)
{
    if (log_mode == 2)
        return -1;
    if (log_mode == 1)
        return 2;
    int cur = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE); /* dds_log_fd_lost may reset it */
    if (cur >= 0)
        return cur;
    if (log_open_failed)
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
        log_open_failed = 1;
        return -1;
    }
    int expected = -1;
    if (!__atomic_compare_exchange_n(&log_fd, &expected, fd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        close(fd);
        return expected;
    }
    return fd;
}

/* Whether a line may be written now (rate limit, file cap); the fd or -1. */
static int log_admit(struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME, ts);
    long sec = (long)ts->tv_sec;
    if (__atomic_load_n(&log_window_sec, __ATOMIC_RELAXED) != sec) {
        __atomic_store_n(&log_window_sec, sec, __ATOMIC_RELAXED);
        __atomic_store_n(&log_window_count, 0, __ATOMIC_RELAXED);
    }
    if (__atomic_add_fetch(&log_window_count, 1, __ATOMIC_RELAXED) > DDS_LOG_BURST)
        return -1;
    int fd = log_get_fd();
    if (fd < 0)
        return -1;
    if (log_mode != 1) {
        struct stat st;
        if (fstat(fd, &st) == 0 && st.st_size > DDS_LOG_MAX_BYTES)
            return -1;
    }
    return fd;
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
    int fd = log_admit(&ts);
    if (fd < 0)
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
    ssize_t w = write(fd, line, len);
    (void)w;
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
    int fd = log_admit(&ts);
    if (fd >= 0 && strpbrk(text, "\r\n") == NULL) {
        char stamp[128];
        int n = log_stamp(stamp, sizeof stamp, &ts, level);
        if (n > 0) {
            struct iovec v[4] = {{stamp, (size_t)n}, {(void *)prefix, strlen(prefix)},
                                 {(void *)text, strlen(text)}, {"\n", 1}};
            ssize_t w = writev(fd, v, 4);
            (void)w;
        }
    }
    dds_in_shim = was_in;
    errno = saved_errno;
}
