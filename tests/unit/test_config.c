/* Unit tests for core/config.c: every variable, good and bad values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static char logpath[256];

static void load(dds_config *c, char **env)
{
    dds_config_load(c, env, "myprog");
}

static char *read_log(void)
{
    static char buf[65536];
    FILE *f = fopen(logpath, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    return buf;
}

static int setup(void **state)
{
    (void)state;
    snprintf(logpath, sizeof logpath, "/tmp/ddshim-test-config-%d.log", (int)getpid());
    unlink(logpath);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(logpath);
    return 0;
}

static void test_defaults(void **state)
{
    (void)state;
    char *env[] = {NULL};
    dds_config c;
    load(&c, env);
    assert_true(c.enabled);
    assert_false(c.debug);
    assert_true(c.startup_logs);
    assert_true(c.trace_id_128);
    assert_string_equal(c.service, "myprog");
    assert_string_equal(c.env, "");
    assert_string_equal(c.agent_url, "http://localhost:8126");
    assert_int_equal(c.inject.n, 2);
    assert_int_equal(c.inject.style[0], DDS_STYLE_DATADOG);
    assert_int_equal(c.inject.style[1], DDS_STYLE_TRACECONTEXT);
    assert_int_equal(c.extract.n, 2);
    assert_false(c.has_sample_rate);
    assert_true(c.rate_limit == 100);
    assert_int_equal(c.x_datadog_tags_max_length, 512);
    assert_null(c.query_regexp);
    dds_config_free(&c);
}

static void test_values(void **state)
{
    (void)state;
    char log_var[300];
    snprintf(log_var, sizeof log_var, "DD_TRACE_LOG_FILE=%s", logpath);
    char *env[] = {log_var, "DD_SERVICE=svc", "DD_ENV=prod", "DD_VERSION=1.0",
                   "DD_TAGS=a:1, b:2,c,a:3", "DD_AGENT_HOST=agent.local", "DD_TRACE_AGENT_PORT=9126",
                   "DD_TRACE_ENABLED=false", "DD_TRACE_DEBUG=1",
                   "DD_TRACE_128_BIT_TRACEID_GENERATION_ENABLED=no",
                   "DD_TRACE_PROPAGATION_STYLE_INJECT=b3multi b3", "DD_TRACE_PROPAGATION_STYLE=tracecontext",
                   "DD_TRACE_SAMPLE_RATE=0.25", "DD_TRACE_RATE_LIMIT=7",
                   "DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT=restart", NULL};
    dds_config c;
    load(&c, env);
    assert_string_equal(c.service, "svc");
    assert_string_equal(c.env, "prod");
    assert_string_equal(c.version, "1.0");
    assert_int_equal(c.ntags, 3);
    assert_string_equal(c.tags[0].key, "a");
    assert_string_equal(c.tags[0].val, "3"); /* last duplicate wins */
    assert_string_equal(c.tags[1].key, "b");
    assert_string_equal(c.tags[1].val, "2");
    assert_string_equal(c.tags[2].key, "c");
    assert_string_equal(c.tags[2].val, "");
    assert_string_equal(c.agent_url, "http://agent.local:9126");
    assert_false(c.enabled);
    assert_true(c.debug);
    assert_false(c.trace_id_128);
    assert_int_equal(c.inject.n, 2);
    assert_int_equal(c.inject.style[0], DDS_STYLE_B3MULTI);
    assert_int_equal(c.inject.style[1], DDS_STYLE_B3);
    assert_int_equal(c.extract.n, 1);
    assert_int_equal(c.extract.style[0], DDS_STYLE_TRACECONTEXT);
    assert_true(c.has_sample_rate);
    assert_true(c.sample_rate == 0.25);
    assert_true(c.rate_limit == 7);
    assert_int_equal(c.extract_behavior, DDS_EXTRACT_RESTART);
    dds_config_free(&c);
}

static void test_space_separated_tags_and_urls(void **state)
{
    (void)state;
    char *env[] = {"DD_TAGS=k1:v1 k2:v:2", "DD_TRACE_AGENT_URL=unix:///var/run/datadog/apm.socket",
                   "DD_AGENT_HOST=ignored", NULL};
    dds_config c;
    load(&c, env);
    assert_int_equal(c.ntags, 2);
    assert_string_equal(c.tags[1].val, "v:2");
    assert_true(c.agent_is_unix);
    assert_string_equal(c.agent_unix_path, "/var/run/datadog/apm.socket");
    assert_string_equal(c.agent_url, "unix:///var/run/datadog/apm.socket");
    dds_config_free(&c);

    char *env2[] = {"DD_TRACE_AGENT_URL=http://[::1]:8127", NULL};
    load(&c, env2);
    assert_false(c.agent_is_unix);
    assert_string_equal(c.agent_host, "::1");
    assert_int_equal(c.agent_port, 8127);
    assert_string_equal(c.agent_url, "http://[::1]:8127");
    dds_config_free(&c);

    char *env3[] = {"DD_AGENT_HOST=::1", NULL};
    load(&c, env3);
    assert_string_equal(c.agent_url, "http://[::1]:8126");
    dds_config_free(&c);
}

static void test_bad_values_warn_and_default(void **state)
{
    (void)state;
    char log_var[300];
    snprintf(log_var, sizeof log_var, "DD_TRACE_LOG_FILE=%s", logpath);
    char *env[] = {log_var, "DD_TRACE_ENABLED=maybe", "DD_TRACE_AGENT_PORT=99999",
                   "DD_TRACE_SAMPLE_RATE=1.5", "DD_TRACE_RATE_LIMIT=-3",
                   "DD_TRACE_PROPAGATION_STYLE_EXTRACT=datadog,zipkin",
                   "DD_TRACE_AGENT_URL=ftp://x", "DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT=sometimes",
                   "DDSHIM_MAX_QUEUED_SPANS=lots", NULL};
    dds_config c;
    load(&c, env);
    assert_true(c.enabled);
    assert_int_equal(c.agent_port, 8126);
    assert_false(c.has_sample_rate);
    assert_true(c.rate_limit == 100);
    assert_int_equal(c.extract.n, 1);
    assert_int_equal(c.extract.style[0], DDS_STYLE_DATADOG);
    assert_string_equal(c.agent_url, "http://localhost:8126");
    assert_int_equal(c.extract_behavior, DDS_EXTRACT_CONTINUE);
    assert_int_equal((int)c.max_queued_spans, 10000);
    char *log = read_log();
    assert_non_null(strstr(log, "DD_TRACE_ENABLED=\"maybe\""));
    assert_non_null(strstr(log, "DD_TRACE_AGENT_PORT=\"99999\""));
    assert_non_null(strstr(log, "DD_TRACE_SAMPLE_RATE=\"1.5\""));
    assert_non_null(strstr(log, "DD_TRACE_RATE_LIMIT=\"-3\""));
    assert_non_null(strstr(log, "zipkin"));
    assert_non_null(strstr(log, "ftp://x"));
    assert_non_null(strstr(log, "sometimes"));
    assert_non_null(strstr(log, "DDSHIM_MAX_QUEUED_SPANS"));
    /* One line per problem. */
    int lines = 0;
    for (char *p = log; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 8);
    dds_config_free(&c);
}

static void test_bool_parsing(void **state)
{
    (void)state;
    assert_int_equal(dds_config_parse_bool("TRUE"), 1);
    assert_int_equal(dds_config_parse_bool(" 1 "), 1);
    assert_int_equal(dds_config_parse_bool("No"), 0);
    assert_int_equal(dds_config_parse_bool("off"), 0);
    assert_int_equal(dds_config_parse_bool("2"), -1);
    assert_int_equal(dds_config_parse_bool(""), -1);
}

static void test_startup_json(void **state)
{
    (void)state;
    char *env[] = {"DD_SERVICE=a\"b", "DD_TAGS=k:v", NULL};
    dds_config c;
    load(&c, env);
    char buf[4096];
    size_t n = dds_config_to_json(&c, buf, sizeof buf);
    assert_int_equal(n, strlen(buf));
    assert_non_null(strstr(buf, "\"service\":\"a\\\"b\""));
    assert_non_null(strstr(buf, "\"tags\":{\"k\":\"v\"}"));
    assert_non_null(strstr(buf, "\"propagation_style_inject\":[\"datadog\",\"tracecontext\"]"));
    assert_int_equal(buf[0], '{');
    assert_int_equal(buf[n - 1], '}');
    char small[16];
    n = dds_config_to_json(&c, small, sizeof small);
    assert_int_equal(n, 15);
    dds_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test_setup_teardown(test_values, setup, teardown),
        cmocka_unit_test(test_space_separated_tags_and_urls),
        cmocka_unit_test_setup_teardown(test_bad_values_warn_and_default, setup, teardown),
        cmocka_unit_test(test_bool_parsing),
        cmocka_unit_test(test_startup_json),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
