/* Tests for core/writer.c (with core/agent_http.c and core/encode.c) against the real
 * local agent, build/ddshim-agent (override with DDSHIM_AGENT), started from
 * here on a free TCP port or a unix socket, with and without faults. What the
 * agent wrote to its --out and --requests files is the evidence. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "agent_http.h"
#include "log.h"
#include "queue.h"
#include "span.h"
#include "writer.h"

static char tmpdir[64];
static char path_out[128], path_req[128], path_ready[128], path_log[128], path_sock[128];
static pid_t agent_pid = -1;
static int agent_port;
static dds_config cfg;

/* ---- helpers ------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *agent_binary(void)
{
    const char *p = getenv("DDSHIM_AGENT");
    if (p && p[0])
        return p;
    if (access("build/ddshim-agent", X_OK) != 0 && system("make -s build/ddshim-agent >&2") != 0)
        fail_msg("build/ddshim-agent is missing and could not be built (run from the repo root)");
    return "build/ddshim-agent";
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return strdup("");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char tmp[8192];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        fwrite(tmp, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

static int count_lines(const char *path)
{
    char *s = slurp(path);
    int n = 0;
    for (char *p = s; *p; p++)
        n += *p == '\n';
    free(s);
    return n;
}

/* Start the agent with extra arguments (NULL-terminated); --unix when sock. */
static void agent_start(int unix_socket, ...)
{
    unlink(path_out), unlink(path_req), unlink(path_ready);
    const char *argv[32];
    int n = 0;
    argv[n++] = agent_binary();
    if (unix_socket) {
        argv[n++] = "--unix";
        argv[n++] = path_sock;
    } else {
        argv[n++] = "--port";
        argv[n++] = "0";
    }
    argv[n++] = "--quiet";
    argv[n++] = "--out";
    argv[n++] = path_out;
    argv[n++] = "--requests";
    argv[n++] = path_req;
    argv[n++] = "--ready-file";
    argv[n++] = path_ready;
    va_list ap;
    va_start(ap, unix_socket);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 30)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    agent_pid = fork();
    assert_true(agent_pid >= 0);
    if (agent_pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        char *s = slurp(path_ready);
        if (s[0]) {
            agent_port = atoi(s);
            free(s);
            return;
        }
        free(s);
        usleep(10000);
    }
    fail_msg("the agent did not become ready");
}

static void agent_stop(void)
{
    if (agent_pid > 0) {
        kill(agent_pid, SIGTERM);
        int st;
        waitpid(agent_pid, &st, 0);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    agent_pid = -1;
}

static char *env_agent_url(void)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "DD_TRACE_AGENT_URL=http://127.0.0.1:%d", agent_port);
    return buf;
}

static char *env_agent_unix(void)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "DD_TRACE_AGENT_URL=unix://%s", path_sock);
    return buf;
}

/* A fresh writer for the given agent URL. */
static void writer_start(const char *url_env, const char *extra_env)
{
    char logenv[160];
    snprintf(logenv, sizeof logenv, "DD_TRACE_LOG_FILE=%s", path_log);
    char *envp[] = {(char *)"DD_SERVICE=writer-test", (char *)"DD_ENV=test",
                    (char *)"DD_VERSION=9.9", (char *)"DD_TRACE_128_BIT_TRACEID_GENERATION_ENABLED=false",
                    (char *)"DDSHIM_FLUSH_INTERVAL_MS=100", (char *)url_env, logenv,
                    (char *)extra_env, NULL};
    dds_config_free(&cfg);
    dds_config_load(&cfg, envp, "test_writer");
    dds_cfg = &cfg;
    dds_writer_init(&cfg);
    dds_trace_complete_hook = dds_writer_enqueue;
}

static int rates_calls;
static char rates_body[1024];
static void on_rates(const char *json, size_t len)
{
    rates_calls++;
    snprintf(rates_body, sizeof rates_body, "%.*s", (int)len, json);
}

static int setup(void **state)
{
    (void)state;
    rates_calls = 0;
    rates_body[0] = '\0';
    dds_writer_rates_hook = on_rates;
    /* A failed test may leave chunks queued: never let them leak into the next. */
    size_t taken = 0;
    for (dds_trace *t = dds_queue_take_all(&taken), *n; t; t = n) {
        n = t->qnext;
        dds_trace_free(t);
    }
    dds_queue_release(taken);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(dds_writer_stop(3000), 0);
    dds_trace_complete_hook = NULL;
    agent_stop();
    return 0;
}

/* A chunk of n spans (root + children); returns the root's span id. */
static uint64_t send_trace(int n, uint64_t *trace_id)
{
    dds_span *root = dds_span_start("http.server.request", "web", NULL, NULL);
    dds_span_set_resource(root, "GET /items/?");
    uint64_t id = root->span_id;
    if (trace_id)
        *trace_id = root->trace->trace_id_lo;
    for (int i = 1; i < n; i++) {
        dds_span *c = dds_span_start("redis.command", "redis", root, NULL);
        dds_span_set_resource(c, "GET");
        if (i == 1)
            dds_span_set_error(c, "connection reset");
        dds_span_finish(c);
    }
    dds_span_finish(root);
    return id;
}

static json_t *load_lines(const char *path)
{
    json_t *arr = json_array();
    char *s = slurp(path);
    for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        if (j == NULL)
            fail_msg("bad JSON line in %s: %s: %.200s", path, err.text, line);
        json_array_append_new(arr, j);
    }
    free(s);
    return arr;
}

static json_t *find_chunk(json_t *chunks, uint64_t trace_id)
{
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c) {
        json_t *s0 = json_array_get(json_object_get(c, "spans"), 0);
        if ((uint64_t)json_integer_value(json_object_get(s0, "trace_id")) == trace_id)
            return c;
    }
    return NULL;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* ---- tests -------------------------------------------------------------- */

static void check_sent(json_t *chunks, uint64_t tid, int nspans)
{
    json_t *c = find_chunk(chunks, tid);
    if (c == NULL)
        fail_msg("trace %" PRIu64 " did not reach the agent", tid);
    json_t *spans = json_object_get(c, "spans");
    assert_int_equal(json_array_size(spans), nspans);
    json_t *h = json_object_get(c, "headers");
    assert_string_equal(jstr(h, "content-type"), "application/msgpack");
    assert_string_equal(jstr(h, "datadog-meta-lang"), "cpp");
    assert_string_equal(jstr(h, "datadog-meta-tracer-version"), DDS_VERSION);
    assert_non_null(jstr(h, "datadog-meta-lang-version"));
    assert_non_null(jstr(h, "content-length"));
    assert_non_null(jstr(h, "x-datadog-trace-count"));
    assert_null(jstr(h, "transfer-encoding"));
    json_t *root = json_array_get(spans, 0);
    assert_string_equal(jstr(root, "service"), "writer-test");
    assert_string_equal(jstr(root, "name"), "http.server.request");
    json_t *meta = json_object_get(root, "meta");
    assert_string_equal(jstr(meta, "env"), "test");
    assert_string_equal(jstr(meta, "version"), "9.9");
    assert_string_equal(jstr(meta, "language"), "cpp");
    assert_string_equal(jstr(meta, "runtime-id"), dds_writer_runtime_id());
    json_t *metrics = json_object_get(root, "metrics");
    assert_true(json_number_value(json_object_get(metrics, "process_id")) == getpid());
    assert_non_null(json_object_get(metrics, "_sampling_priority_v1"));
    if (nspans > 1) {
        json_t *child = json_array_get(spans, 1);
        assert_int_equal(json_integer_value(json_object_get(child, "error")), 1);
        assert_string_equal(jstr(json_object_get(child, "meta"), "error.message"), "connection reset");
    }
}

static void test_sends_to_tcp_agent(void **state)
{
    (void)state;
    unlink(path_log);
    agent_start(0, "--rates", "{\"service:writer-test,env:test\":0.5,\"service:,env:\":1}", NULL);
    writer_start(env_agent_url(), NULL);
    uint64_t t1, t2, t3;
    send_trace(1, &t1);
    send_trace(2, &t2);
    send_trace(5, &t3);
    assert_int_equal(dds_writer_flush(3000), 0);

    json_t *chunks = load_lines(path_out);
    assert_int_equal(json_array_size(chunks), 3);
    check_sent(chunks, t1, 1);
    check_sent(chunks, t2, 2);
    check_sent(chunks, t3, 5);
    /* X-Datadog-Trace-Count adds up to the chunks sent. */
    json_t *reqs = load_lines(path_req);
    size_t i;
    json_t *r;
    long counted = 0;
    json_array_foreach(reqs, i, r) {
        assert_int_equal(json_integer_value(json_object_get(r, "status")), 200);
        assert_string_equal(jstr(r, "method"), "POST");
        assert_string_equal(jstr(r, "path"), "/v0.4/traces");
        counted += atol(jstr(json_object_get(r, "headers"), "x-datadog-trace-count"));
    }
    assert_int_equal(counted, 3);

    dds_writer_stats st;
    dds_writer_get_stats(&st);
    assert_int_equal(st.traces_sent, 3);
    assert_int_equal(st.spans_sent, 8);
    assert_int_equal(st.payloads_ok, json_array_size(reqs));
    assert_int_equal(st.payloads_failed, 0);
    assert_int_equal(st.spans_dropped, 0);
    json_decref(chunks);
    json_decref(reqs);

    /* The agent's rates reach the sampler hook. */
    assert_true(rates_calls >= 1);
    json_t *rates = json_loads(rates_body, 0, NULL);
    assert_non_null(rates);
    assert_true(json_number_value(json_object_get(json_object_get(rates, "rate_by_service"),
                                                  "service:writer-test,env:test")) == 0.5);
    json_decref(rates);

    /* One startup line with the configuration. */
    char *log = slurp(path_log);
    char *line = strstr(log, "DATADOG TRACER CONFIGURATION - {");
    assert_non_null(line);
    assert_null(strstr(line + 1, "DATADOG TRACER CONFIGURATION"));
    free(log);
}

static void test_sends_to_unix_agent_and_keeps_the_connection(void **state)
{
    (void)state;
    agent_start(1, NULL);
    writer_start(env_agent_unix(), NULL);
    uint64_t tids[3];
    for (int round = 0; round < 3; round++) {
        send_trace(3, &tids[round]);
        assert_int_equal(dds_writer_flush(3000), 0);
    }
    json_t *chunks = load_lines(path_out);
    for (int round = 0; round < 3; round++)
        check_sent(chunks, tids[round], 3);
    json_decref(chunks);
    /* Three payloads over one kept-alive connection. */
    json_t *reqs = load_lines(path_req);
    assert_int_equal(json_array_size(reqs), 3);
    json_int_t conn = json_integer_value(json_object_get(json_array_get(reqs, 0), "connection"));
    assert_true(conn > 0);
    for (size_t i = 1; i < 3; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(reqs, i), "connection")), conn);
    json_decref(reqs);
    dds_writer_stats st;
    dds_writer_get_stats(&st);
    assert_int_equal(st.payloads_failed, 0);
    assert_int_equal(st.traces_sent, 3);
}

static void test_program_closing_the_agent_socket(void **state)
{
    (void)state;
    agent_start(0, NULL);
    writer_start(env_agent_url(), NULL);
    uint64_t t1, t2;
    send_trace(1, &t1);
    assert_int_equal(dds_writer_flush(3000), 0);
    int fd = -1;
    for (int i = 0; i < 1024 && fd < 0; i++)
        if (dds_http_owns_fd(i))
            fd = i;
    assert_true(fd >= 0); /* the kept-alive connection */
    /* Far above the numbers the program's next open() would get. */
    assert_true(dds_http_fd_floor() > 0);
    assert_true(fd >= dds_http_fd_floor());
    int fl = fcntl(fd, F_GETFD);
    assert_true(fl >= 0 && (fl & FD_CLOEXEC));
    /* The program closes it and the number is reused for one of its files,
     * as after closefrom() + open(); the close hook reports it. */
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(dup2(p[1], fd), fd);
    dds_http_fd_lost(fd);
    assert_false(dds_http_owns_fd(fd));
    send_trace(1, &t2);
    assert_int_equal(dds_writer_flush(3000), 0);
    /* Nothing of ours went into the program's file, and the trace arrived. */
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    char buf[64];
    assert_true(read(p[0], buf, sizeof buf) < 0 && errno == EAGAIN);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0); /* and the program's file is still open */
    assert_true(S_ISFIFO(st.st_mode));
    dds_writer_stats ws;
    dds_writer_get_stats(&ws);
    assert_int_equal(ws.payloads_failed, 0);
    json_t *chunks = load_lines(path_out);
    check_sent(chunks, t1, 1);
    check_sent(chunks, t2, 1);
    json_decref(chunks);
    close(p[0]), close(p[1]), close(fd);

    /* closefrom()/close_range() report a range. */
    fd = -1;
    for (int i = 0; i < 1024 && fd < 0; i++)
        if (dds_http_owns_fd(i))
            fd = i;
    assert_true(fd >= 0); /* the new connection */
    dds_http_fds_lost_range((unsigned)fd + 1, ~0U);
    assert_true(dds_http_owns_fd(fd));
    dds_http_fds_lost_range(0, (unsigned)fd);
    assert_false(dds_http_owns_fd(fd));
    close(fd); /* as the program's closefrom() did */
    uint64_t t3;
    send_trace(1, &t3);
    assert_int_equal(dds_writer_flush(3000), 0);
    chunks = load_lines(path_out);
    check_sent(chunks, t3, 1);
    json_decref(chunks);
}

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_agent_down_exit_is_quick(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "DD_TRACE_AGENT_URL=http://127.0.0.1:%d", closed_port());
    writer_start(url, NULL);
    for (int i = 0; i < 20; i++)
        send_trace(2, NULL);
    int64_t t0 = now_ms();
    dds_writer_flush_at_exit();
    int64_t took = now_ms() - t0;
    printf("agent down: flush_at_exit took %" PRId64 " ms\n", took);
    assert_true(took < 1200);
    dds_writer_stats st;
    dds_writer_get_stats(&st);
    assert_int_equal(st.spans_dropped, 40);
    assert_int_equal(st.spans_sent, 0);
    assert_true(st.payloads_failed >= 1);
}

static void test_hanging_agent_exit_has_a_deadline(void **state)
{
    (void)state;
    agent_start(0, "--fault", "hang", NULL);
    writer_start(env_agent_url(), "DDSHIM_EXIT_TIMEOUT_MS=1000");
    send_trace(2, NULL);
    int64_t t0 = now_ms();
    dds_writer_flush_at_exit();
    int64_t took = now_ms() - t0;
    printf("hanging agent: flush_at_exit took %" PRId64 " ms\n", took);
    assert_true(took >= 900 && took < 1200);
    /* The request itself was cut at the deadline: the thread stops at once. */
    int64_t t1 = now_ms();
    assert_int_equal(dds_writer_stop(1500), 0);
    assert_true(now_ms() - t1 < 500);
    dds_writer_stats st;
    dds_writer_get_stats(&st);
    assert_int_equal(st.spans_dropped, 2);
}

static void test_http_errors_are_not_retried(void **state)
{
    (void)state;
    static const char *const faults[] = {"500", "413", "429", NULL};
    for (int f = 0; faults[f]; f++) {
        agent_start(0, "--fault", faults[f], NULL);
        writer_start(env_agent_url(), NULL);
        send_trace(3, NULL);
        assert_int_equal(dds_writer_flush(3000), 0);
        assert_int_equal(count_lines(path_req), 1); /* one request, no retry */
        assert_int_equal(count_lines(path_out), 0);
        dds_writer_stats st;
        dds_writer_get_stats(&st);
        assert_int_equal(st.payloads_failed, 1);
        assert_int_equal(st.spans_dropped, 3);
        assert_int_equal(rates_calls, 0);
        assert_int_equal(dds_writer_stop(3000), 0);
        agent_stop();
    }
}

static void test_closed_connection_is_retried_once(void **state)
{
    (void)state;
    agent_start(0, "--fault", "close", NULL);
    writer_start(env_agent_url(), NULL);
    send_trace(2, NULL);
    assert_int_equal(dds_writer_flush(3000), 0);
    assert_int_equal(count_lines(path_req), 2);
    dds_writer_stats st;
    dds_writer_get_stats(&st);
    assert_int_equal(st.payloads_failed, 1);
    assert_int_equal(st.spans_dropped, 2);
}

static void test_garbage_answer_is_harmless(void **state)
{
    (void)state;
    agent_start(0, "--fault", "garbage", NULL);
    writer_start(env_agent_url(), NULL);
    uint64_t tid;
    send_trace(2, &tid);
    assert_int_equal(dds_writer_flush(3000), 0);
    json_t *chunks = load_lines(path_out);
    check_sent(chunks, tid, 2);
    json_decref(chunks);
    assert_int_equal(rates_calls, 1);
    assert_string_equal(rates_body, "this is not JSON {");
}

static void test_fork_child_sends_its_own(void **state)
{
    (void)state;
#ifdef __SANITIZE_THREAD__
    skip(); /* TSan cannot start threads in the child of a threaded fork */
#endif
    agent_start(0, NULL);
    writer_start(env_agent_url(), NULL);
    uint64_t before;
    send_trace(2, &before); /* queued in the parent at fork time */
    char parent_rid[37];
    snprintf(parent_rid, sizeof parent_rid, "%s", dds_writer_runtime_id());

    dds_writer_atfork_prepare();
    pid_t pid = fork();
    if (pid == 0) {
        dds_writer_atfork_child();
        uint64_t mine;
        send_trace(1, &mine);
        int ok = dds_writer_flush(3000) == 0;
        dds_writer_stats st;
        dds_writer_get_stats(&st);
        ok = ok && st.traces_sent == 1 && strcmp(dds_writer_runtime_id(), parent_rid) != 0;
        FILE *f = fopen(path_sock, "w"); /* tell the parent the child's trace id */
        fprintf(f, "%" PRIu64 "\n", mine);
        fclose(f);
        _exit(ok ? 0 : 1);
    }
    dds_writer_atfork_parent();
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(dds_writer_flush(3000), 0);

    char *s = slurp(path_sock);
    uint64_t child_tid = strtoull(s, NULL, 10);
    free(s);
    unlink(path_sock);
    json_t *chunks = load_lines(path_out);
    assert_int_equal(json_array_size(chunks), 2); /* the pre-fork chunk once, by the parent */
    check_sent(chunks, before, 2);
    json_t *c = find_chunk(chunks, child_tid);
    assert_non_null(c);
    json_t *root = json_array_get(json_object_get(c, "spans"), 0);
    assert_true(json_number_value(json_object_get(json_object_get(root, "metrics"), "process_id")) == pid);
    assert_string_not_equal(jstr(json_object_get(root, "meta"), "runtime-id"), parent_rid);
    json_decref(chunks);
}

static void test_unresolvable_agent_drops_and_counts(void **state)
{
    (void)state;
    agent_start(0, NULL);
    writer_start("http://no-such-agent.invalid:8126", NULL);
    send_trace(4, NULL);
    assert_int_equal(dds_writer_flush(3000), 0);
    dds_writer_stats st;
    dds_writer_get_stats(&st);
    assert_int_equal(st.spans_dropped, 4);
    assert_int_equal(count_lines(path_req), 0);
    assert_int_equal(st.payloads_failed, 1);
}

static void test_big_ids_reach_the_agent_intact(void **state)
{
    (void)state;
    /* 128-bit generation: the low half uses all 64 bits, and the agent writes
     * ids ≥ 2^63 as plain JSON integers. */
    agent_start(0, NULL);
    writer_start(env_agent_url(), NULL);
    dds_span *root = dds_span_start("big", "custom", NULL, NULL);
    root->trace->trace_id_lo = 0xfedcba9876543210ULL;
    dds_span_finish(root);
    assert_int_equal(dds_writer_flush(3000), 0);
    char *out = slurp(path_out);
    assert_non_null(strstr(out, "\"trace_id\":18364758544493064720,"));
    free(out);
}

/* ---- the agent's own validation ----------------------------------------- */

enum { V_OK, V_META_BIN, V_META_BAD_UTF8, V_SPAN_ID_ZERO, V_TRACE_ID_STR, V_START_FLOAT, V_NO_PRIORITY };

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void pack_test_span(msgpack_packer *pk, uint64_t tid, uint64_t sid, int variant)
{
    msgpack_pack_map(pk, 12);
    pk_str(pk, "service"), pk_str(pk, "svc");
    pk_str(pk, "name"), pk_str(pk, "op");
    pk_str(pk, "resource"), pk_str(pk, "res");
    pk_str(pk, "type"), pk_str(pk, "web");
    pk_str(pk, "trace_id");
    if (variant == V_TRACE_ID_STR)
        pk_str(pk, "123");
    else
        msgpack_pack_uint64(pk, tid);
    pk_str(pk, "span_id"), msgpack_pack_uint64(pk, variant == V_SPAN_ID_ZERO ? 0 : sid);
    pk_str(pk, "parent_id"), msgpack_pack_uint64(pk, 0);
    pk_str(pk, "start");
    if (variant == V_START_FLOAT)
        msgpack_pack_double(pk, 1.5);
    else
        msgpack_pack_int64(pk, 1700000000000000000LL);
    pk_str(pk, "duration"), msgpack_pack_int64(pk, 1000);
    pk_str(pk, "error"), msgpack_pack_int32(pk, 0);
    pk_str(pk, "meta"), msgpack_pack_map(pk, 1), pk_str(pk, "k");
    if (variant == V_META_BIN)
        msgpack_pack_bin(pk, 1), msgpack_pack_bin_body(pk, "v", 1);
    else if (variant == V_META_BAD_UTF8)
        msgpack_pack_str(pk, 2), msgpack_pack_str_body(pk, "\xc3(", 2);
    else
        pk_str(pk, "v");
    pk_str(pk, "metrics");
    if (variant == V_NO_PRIORITY)
        msgpack_pack_map(pk, 0);
    else
        msgpack_pack_map(pk, 1), pk_str(pk, "_sampling_priority_v1"), msgpack_pack_double(pk, 1);
}

/* POST a hand-made body; returns the status, the answer in `answer`. */
static long post_raw(const char *body, size_t len, const char *const *headers, char *answer, size_t cap)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v0.4/traces", agent_port);
    dds_http_request rq = {.url = url, .body = body, .len = len, .headers = headers,
                           .connect_timeout_ms = 1000, .timeout_ms = 3000};
    dds_http_response rs = {.buf = answer, .cap = cap};
    assert_int_equal(dds_http_post(&rq, &rs), DDS_HTTP_OK);
    return rs.status;
}

static void test_agent_rejects_what_breaks_the_rules(void **state)
{
    (void)state;
    agent_start(0, NULL);
    static const struct {
        int variant;      /* applied to the last span */
        int chunks, spans;
        int same_trace;   /* 0: the second span has another trace id */
        const char *count, *ctype, *lang;
        const char *want; /* NULL: accepted */
    } cases[] = {
        {V_OK, 2, 2, 1, "2", "application/msgpack", "cpp", NULL},
        {V_META_BIN, 1, 1, 1, "1", "application/msgpack", "cpp", "meta \"k\" is bin, not str"},
        {V_META_BAD_UTF8, 1, 1, 1, "1", "application/msgpack", "cpp", "meta \"k\" is not valid UTF-8"},
        {V_SPAN_ID_ZERO, 1, 2, 1, "1", "application/msgpack", "cpp", "trace 0 span 1: span_id is 0"},
        {V_TRACE_ID_STR, 1, 1, 1, "1", "application/msgpack", "cpp", "trace_id is str, not uint"},
        {V_START_FLOAT, 1, 1, 1, "1", "application/msgpack", "cpp", "start is float, not int"},
        {V_NO_PRIORITY, 1, 1, 1, "1", "application/msgpack", "cpp", "no _sampling_priority_v1"},
        {V_OK, 1, 2, 0, "1", "application/msgpack", "cpp", "differs from the chunk's"},
        {V_OK, 1, 0, 1, "1", "application/msgpack", "cpp", "trace 0 is empty"},
        {V_OK, 2, 1, 1, "3", "application/msgpack", "cpp", "X-Datadog-Trace-Count is 3, the body has 2"},
        {V_OK, 1, 1, 1, NULL, "application/msgpack", "cpp", "no X-Datadog-Trace-Count"},
        {V_OK, 1, 1, 1, "1", "application/json", "cpp", "Content-Type"},
        {V_OK, 1, 1, 1, "1", "application/msgpack", NULL, "no Datadog-Meta-Lang"},
    };
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char answer[1024];
    int expected_lines = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        msgpack_sbuffer_clear(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, (size_t)cases[i].chunks);
        for (int c = 0; c < cases[i].chunks; c++) {
            msgpack_pack_array(&pk, (size_t)cases[i].spans);
            for (int k = 0; k < cases[i].spans; k++)
                pack_test_span(&pk, 1000 + (uint64_t)c + (!cases[i].same_trace && k ? 7 : 0), 1 + (uint64_t)k,
                               k == cases[i].spans - 1 ? cases[i].variant : V_OK);
        }
        char count[64], ctype[64], lang[64];
        const char *h[8];
        int n = 0;
        snprintf(ctype, sizeof ctype, "Content-Type: %s", cases[i].ctype);
        h[n++] = ctype;
        if (cases[i].count) {
            snprintf(count, sizeof count, "X-Datadog-Trace-Count: %s", cases[i].count);
            h[n++] = count;
        }
        if (cases[i].lang) {
            snprintf(lang, sizeof lang, "Datadog-Meta-Lang: %s", cases[i].lang);
            h[n++] = lang;
        }
        h[n++] = "Datadog-Meta-Tracer-Version: test";
        h[n] = NULL;
        long status = post_raw(sb.data, sb.size, h, answer, sizeof answer);
        if (cases[i].want == NULL) {
            assert_int_equal(status, 200);
            assert_non_null(strstr(answer, "\"rate_by_service\""));
            expected_lines += cases[i].chunks;
        } else {
            if (status != 400 || strstr(answer, cases[i].want) == NULL)
                fail_msg("case %zu: got %ld \"%s\", want 400 \"%s\"", i, status, answer, cases[i].want);
        }
    }
    /* Not msgpack at all, and a chunked body without Content-Length. */
    static const char *const good[] = {"Content-Type: application/msgpack", "X-Datadog-Trace-Count: 0",
                                       "Datadog-Meta-Lang: cpp", "Datadog-Meta-Tracer-Version: t", NULL};
    assert_int_equal(post_raw("\xc1", 1, good, answer, sizeof answer), 400);
    assert_non_null(strstr(answer, "not valid msgpack"));
    /* ddshim's own client always sends Content-Length; write this one by hand. */
    {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)agent_port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(s, (struct sockaddr *)&sa, sizeof sa), 0);
        static const char req[] = "POST /v0.4/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
                                  "X-Datadog-Trace-Count: 0\r\nDatadog-Meta-Lang: cpp\r\n"
                                  "Datadog-Meta-Tracer-Version: t\r\nTransfer-Encoding: chunked\r\n"
                                  "Connection: close\r\n\r\n1\r\n\x90\r\n0\r\n\r\n";
        assert_int_equal(write(s, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
        size_t got = 0;
        ssize_t k;
        while (got < sizeof answer - 1 && (k = read(s, answer + got, sizeof answer - 1 - got)) > 0)
            got += (size_t)k;
        answer[got] = '\0';
        close(s);
        assert_non_null(strstr(answer, " 400 "));
        assert_non_null(strstr(answer, "Content-Length"));
    }
    assert_int_equal(post_raw("\x90", 1, good, answer, sizeof answer), 200); /* [] is fine */
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(count_lines(path_out), expected_lines);
    /* Every request is in --requests, with the reason for the refused ones. */
    json_t *reqs = load_lines(path_req);
    assert_int_equal(json_array_size(reqs), sizeof cases / sizeof *cases + 3);
    assert_non_null(strstr(jstr(json_array_get(reqs, 1), "error"), "is bin"));
    json_decref(reqs);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ddshim-test-writer-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    snprintf(path_out, sizeof path_out, "%s/out.jsonl", tmpdir);
    snprintf(path_req, sizeof path_req, "%s/requests.jsonl", tmpdir);
    snprintf(path_ready, sizeof path_ready, "%s/ready", tmpdir);
    snprintf(path_log, sizeof path_log, "%s/ddshim.log", tmpdir);
    snprintf(path_sock, sizeof path_sock, "%s/apm.socket", tmpdir);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sends_to_tcp_agent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sends_to_unix_agent_and_keeps_the_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_program_closing_the_agent_socket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_down_exit_is_quick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hanging_agent_exit_has_a_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_errors_are_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_connection_is_retried_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_answer_is_harmless, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fork_child_sends_its_own, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unresolvable_agent_drops_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_ids_reach_the_agent_intact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_rejects_what_breaks_the_rules, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
