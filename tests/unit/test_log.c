/* Unit tests for core/log.c. The implementation is included to reach its
 * static date arithmetic, which replaces gmtime_r (glibc's tzset lock, held
 * across a fork by the writer thread, hung a daemonizing child). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../core/log.c"

#include <fcntl.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_civil_date_matches_gmtime),
        cmocka_unit_test(test_stamp_format),
        cmocka_unit_test(test_lines_and_file_mode),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
