/* Unit tests for core/log.c. The implementation is included to reach its
 * static date arithmetic, which replaces gmtime_r (glibc's tzset lock, held
 * across a fork by the writer thread, hung a daemonizing child). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../core/log.c"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

static void test_civil_date_matches_gmtime(void **state)
{
    (void)state;
    /* Every day from 1900 to 2200, and random instants. */
    for (long long t = -2208988800LL; t < 7258118400LL; t += 86400 - 7) {
        time_t tt = (time_t)t;
        struct tm tm;
        gmtime_r(&tt, &tm);
        long long days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
        int y, m, d;
        civil_from_days(days, &y, &m, &d);
        if (y != tm.tm_year + 1900 || m != tm.tm_mon + 1 || d != tm.tm_mday)
            fail_msg("t=%lld: %04d-%02d-%02d, gmtime says %04d-%02d-%02d", t, y, m, d,
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    }
}

static void test_stamp_format(void **state)
{
    (void)state;
    struct timespec ts = {.tv_sec = 951782400 + 3600 * 13 + 60 * 5 + 9, .tv_nsec = 123456789}; /* 2000-02-29 */
    char buf[128];
    int n = log_stamp(buf, sizeof buf, &ts, DDS_LOG_WARN);
    assert_true(n > 0);
    assert_memory_equal(buf, "2000-02-29T13:05:09.123Z ddshim[", 32);
    assert_non_null(strstr(buf, "] WARN: "));
}

static void test_lines_and_file_mode(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "/tmp/ddshim-test-log-%d.log", (int)getpid());
    unlink(path);
    mode_t old = umask(0);
    dds_log_configure(path, 0);
    dds_log(DDS_LOG_WARN, "value \"%s\"\nsecond", "x");
    dds_log(DDS_LOG_DEBUG, "not written: debug is off");
    dds_log_long(DDS_LOG_INFO, "PREFIX - ", "{\"k\":1}");
    umask(old);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char buf[1024] = {0};
    int fd = open(path, O_RDONLY);
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    assert_true(r > 0);
    assert_non_null(strstr(buf, "WARN: value \"x\" second\n")); /* one line, newline folded */
    assert_null(strstr(buf, "not written"));
    assert_non_null(strstr(buf, "INFO: PREFIX - {\"k\":1}\n"));
    unlink(path);
}

/* Back to "nothing opened yet", as at start-up. */
static void log_reset(const char *path)
{
    int fd = __atomic_exchange_n(&log_fd, -1, __ATOMIC_SEQ_CST);
    if (fd >= 0)
        close(fd);
    dds_log_configure(path, 0);
    __atomic_store_n(&log_window_count, 0, __ATOMIC_RELAXED);
}

static size_t count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char buf[2048];
    size_t n = 0;
    while (fgets(buf, sizeof buf, f))
        if (needle == NULL || strstr(buf, needle))
            n++;
    fclose(f);
    return n;
}

/* fds of this process open on path. */
static int fds_on(const char *path)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char link[300], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t r = readlink(link, target, sizeof target - 1);
        if (r > 0) {
            target[r] = '\0';
            n += strcmp(target, path) == 0;
        }
    }
    if (d)
        closedir(d);
    return n;
}

#define RACERS 8
static pthread_barrier_t first_line_bar;

static void *first_line(void *arg)
{
    pthread_barrier_wait(&first_line_bar);
    dds_log(DDS_LOG_WARN, "first line from racer %d", (int)(intptr_t)arg);
    return NULL;
}

/* Threads logging their first lines at once: every line is written, and
 * only one fd stays open on the file (the ones that lost the race to
 * publish theirs closed them). */
static void test_first_lines_race(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "/tmp/ddshim-test-log-race-%d.log", (int)getpid());
    for (int round = 0; round < 20; round++) {
        unlink(path);
        log_reset(path);
        pthread_t t[RACERS];
        pthread_barrier_init(&first_line_bar, NULL, RACERS);
        for (int i = 0; i < RACERS; i++)
            pthread_create(&t[i], NULL, first_line, (void *)(intptr_t)i);
        for (int i = 0; i < RACERS; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&first_line_bar);
        assert_int_equal(count_lines(path, "first line from racer"), RACERS);
        assert_int_equal(fds_on(path), 1);
    }
    log_reset(path);
    unlink(path);
}

static int closer_stop;

static void *busy_logger(void *arg)
{
    (void)arg;
    for (int i = 0; !__atomic_load_n(&closer_stop, __ATOMIC_ACQUIRE); i++) {
        __atomic_store_n(&log_window_count, 0, __ATOMIC_RELAXED); /* no rate limit here */
        dds_log(DDS_LOG_WARN, "busy line %d", i);
    }
    return NULL;
}

/* The program closes the log's fd (after the close hook's dds_log_fd_lost)
 * and at once opens a file of its own, which usually gets the same number,
 * while other threads are writing lines: none of them may land in the
 * program's file. */
static void test_closed_fd_never_gets_lines(void **state)
{
    (void)state;
    char path[128], mine[128];
    snprintf(path, sizeof path, "/tmp/ddshim-test-log-close-%d.log", (int)getpid());
    snprintf(mine, sizeof mine, "/tmp/ddshim-test-log-program-%d.txt", (int)getpid());
    unlink(path);
    unlink(mine);
    log_reset(path);
    __atomic_store_n(&closer_stop, 0, __ATOMIC_RELAXED);
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, busy_logger, NULL);
    int reused = 0;
    for (int round = 0; round < 300; round++) {
        int fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);
        if (fd < 0 || !dds_log_owns_fd(fd)) {
            usleep(100);
            continue;
        }
        dds_log_fd_lost(fd);
        close(fd);
        int p = open(mine, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        assert_true(p >= 0);
        reused += p == fd;
        usleep(200); /* the loggers keep going, onto a reopened log */
        close(p);
    }
    __atomic_store_n(&closer_stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    assert_true(reused > 0); /* the situation under test did happen */
    assert_int_equal(count_lines(mine, NULL), 0);
    assert_true(count_lines(path, "busy line") > 0);
    log_reset(path);
    unlink(path);
    unlink(mine);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_civil_date_matches_gmtime),
        cmocka_unit_test(test_stamp_format),
        cmocka_unit_test(test_lines_and_file_mode),
        cmocka_unit_test(test_first_lines_race),
        cmocka_unit_test(test_closed_fd_never_gets_lines),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
