/* Unit tests for core/conn.c: HTTP tracing of one connection, driven with
 * byte strings (no sockets): client injection and spans, server spans with
 * extraction and the active span, pipelining, closing mid-request. */
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
#include "conn.h"
#include "span.h"
#include "url.h"

static dds_config cfg;
static dds_trace *done[32];
static int ndone;

static void capture(dds_trace *t) { done[ndone++] = t; }

static int setup(void **state)
{
    (void)state;
    char *env[] = {"DD_TRACE_LOG_FILE=off", NULL};
    dds_config_load(&cfg, env, "test_conn");
    dds_cfg = &cfg;
    dds_url_init(NULL);
    dds_trace_complete_hook = capture;
    ndone = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < ndone; i++)
        dds_trace_free(done[i]);
    dds_config_free(&cfg);
    return 0;
}

/* Send `req` through the conn as a kernel that takes everything; returns the
 * bytes that went on the wire (static buffer). */
static const char *send_all(dds_conn *c, const char *req, size_t *wire_len)
{
    static char wire[16384];
    struct iovec app = {(void *)req, strlen(req)}, out[8];
    int planned = dds_conn_send_plan(c, &app, 1, out, 8);
    size_t n = 0;
    if (planned > 0) {
        for (int i = 0; i < planned; i++) {
            memcpy(wire + n, out[i].iov_base, out[i].iov_len);
            n += out[i].iov_len;
        }
    } else {
        memcpy(wire, req, app.iov_len);
        n = app.iov_len;
    }
    ssize_t r = dds_conn_send_done(c, &app, 1, planned, (ssize_t)n, 0);
    assert_int_equal(r, (ssize_t)strlen(req)); /* the app sees its own length */
    wire[n] = '\0';
    *wire_len = n;
    return wire;
}

static void recv_str(dds_conn *c, const char *s)
{
    struct iovec v = {(void *)s, strlen(s)};
    dds_conn_received(c, &v, 1, v.iov_len);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

static dds_span *only_span(int i)
{
    assert_true(i < ndone);
    assert_int_equal(done[i]->nfinished, 1);
    return done[i]->finished;
}

static void test_client_injects_once_and_finishes_on_response(void **state)
{
    (void)state;
    dds_conn *c = dds_conn_new(DDS_CONN_CLIENT, "10.0.0.1", 8080, getpid());
    size_t wl;
    const char *req = "GET /v1/users/123?api_key=SECRET&x=1 HTTP/1.1\r\nHost: api.example:8080\r\nAccept: */*\r\n\r\n";
    const char *wire = send_all(c, req, &wl);
    assert_int_equal(count(wire, "x-datadog-trace-id: "), 1);
    assert_int_equal(count(wire, "traceparent: 00-"), 1);
    assert_int_equal(count(wire, "tracestate: dd=s:1;"), 1);
    /* The app's lines are all there, in order, and the head still ends once. */
    assert_non_null(strstr(wire, "GET /v1/users/123?api_key=SECRET&x=1 HTTP/1.1\r\nHost: api.example:8080\r\nAccept: */*\r\n"));
    assert_int_equal(count(wire, "\r\n\r\n"), 1);
    assert_int_equal(ndone, 0);
    recv_str(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n");
    dds_span *s = only_span(0);
    assert_string_equal(s->name, "http.client.request");
    assert_string_equal(s->resource, "GET /v1/users/?");
    assert_string_equal(dds_span_get_meta(s, "http.status_code"), "404");
    assert_string_equal(dds_span_get_meta(s, "out.host"), "api.example");
    const char *url = dds_span_get_meta(s, "http.url");
    assert_null(strstr(url, "SECRET"));
    assert_non_null(strstr(url, "http://api.example:8080/v1/users/123?"));
    assert_int_equal(s->error, 0);
    char id[32];
    snprintf(id, sizeof id, "x-datadog-parent-id: %llu\r\n", (unsigned long long)s->span_id);
    assert_non_null(strstr(wire, id));
    dds_conn_close(c, NULL);
}

static void test_client_keepalive_and_existing_context(void **state)
{
    (void)state;
    dds_conn *c = dds_conn_new(DDS_CONN_CLIENT, "127.0.0.1", 80, getpid());
    size_t wl;
    const char *post = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 23\r\n\r\nGET /b HTTP/1.1\r\n\r\n\r\n\r\n";
    const char *wire = send_all(c, post, &wl);
    assert_int_equal(count(wire, "traceparent"), 1);
    /* The body was not rewritten: it follows the head byte for byte. */
    assert_non_null(strstr(wire, "\r\n\r\nGET /b HTTP/1.1\r\n\r\n\r\n\r\n"));
    recv_str(c, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    const char *own = "GET /c HTTP/1.1\r\nHost: h\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
    wire = send_all(c, own, &wl);
    assert_int_equal(wl, strlen(own)); /* nothing added to a request that has context */
    recv_str(c, "HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(ndone, 2);
    dds_span *a = only_span(0), *b = only_span(1);
    assert_string_equal(a->resource, "POST /a");
    assert_string_equal(b->resource, "GET /c");
    assert_int_equal(b->parent_id, 0xb7ad6b7169203331ULL);
    assert_int_equal(b->trace->trace_id_lo, 0x8448eb211c80319cULL);
    assert_int_equal(b->error, 1);
    dds_conn_close(c, NULL);
}

static void test_client_not_http_goes_passive(void **state)
{
    (void)state;
    dds_conn *c = dds_conn_new(DDS_CONN_CLIENT, "127.0.0.1", 6379, getpid());
    size_t wl;
    const char *redis = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    const char *wire = send_all(c, redis, &wl);
    assert_memory_equal(wire, redis, strlen(redis));
    assert_true(c->dead);
    const char *inl = "GET / HTTP/1.1\r\n\r\n"; /* later bytes are never touched */
    wire = send_all(c, inl, &wl);
    assert_int_equal(wl, strlen(inl));
    dds_conn_close(c, NULL);
    assert_int_equal(ndone, 0);
}

static void test_client_close_before_response_is_an_error(void **state)
{
    (void)state;
    dds_conn *c = dds_conn_new(DDS_CONN_CLIENT, "127.0.0.1", 80, getpid());
    size_t wl;
    send_all(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", &wl);
    dds_conn_eof(c);
    assert_int_equal(ndone, 1);
    dds_span *s = only_span(0);
    assert_int_equal(s->error, 1);
    assert_non_null(strstr(dds_span_get_meta(s, "error.message"), "closed"));
    dds_conn_close(c, NULL);
}

static void test_server_span_extracts_and_is_active(void **state)
{
    (void)state;
    dds_conn *c = dds_conn_new(DDS_CONN_SERVER, "192.0.2.7", 50000, getpid());
    recv_str(c, "GET /orders/42?token=abc HTTP/1.1\r\nHost: shop\r\nUser-Agent: t/1\r\n"
                "x-datadog-trace-id: 1234\r\nx-datadog-parent-id: 5678\r\nx-datadog-sampling-priority: 2\r\n\r\n");
    dds_span *active = dds_active_span();
    assert_non_null(active);
    assert_string_equal(active->name, "http.server.request");
    assert_int_equal(active->parent_id, 5678);
    assert_int_equal(active->trace->trace_id_lo, 1234);
    /* A child started now (by any integration) belongs to the request. */
    dds_span *child = dds_span_start("redis.command", "redis", dds_active_span(), NULL);
    dds_span_finish(child);
    struct iovec resp = {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 43};
    resp.iov_len = strlen(resp.iov_base);
    assert_int_equal(dds_conn_send_plan(c, &resp, 1, NULL, 0), 0); /* responses are never rewritten */
    dds_conn_send_done(c, &resp, 1, 0, (ssize_t)resp.iov_len, 0);
    assert_null(dds_active_span());
    assert_int_equal(ndone, 1);
    dds_trace *t = done[0];
    assert_int_equal(t->nfinished, 2);
    dds_span *srv = t->finished;
    assert_string_equal(srv->name, "http.server.request");
    assert_string_equal(srv->resource, "GET /orders/?");
    assert_string_equal(dds_span_get_meta(srv, "http.status_code"), "200");
    assert_string_equal(dds_span_get_meta(srv, "http.useragent"), "t/1");
    assert_null(strstr(dds_span_get_meta(srv, "http.url"), "abc"));
    assert_int_equal(t->sampling.priority, 2);
    assert_int_equal(srv->next->parent_id, srv->span_id);
    dds_conn_close(c, NULL);
}

static void test_server_pipelined_head_and_split_bytes(void **state)
{
    (void)state;
    dds_conn *c = dds_conn_new(DDS_CONN_SERVER, "127.0.0.1", 1, getpid());
    const char *reqs = "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n";
    for (const char *p = reqs; *p; p++) { /* one byte at a time */
        struct iovec v = {(void *)p, 1};
        dds_conn_received(c, &v, 1, 1);
    }
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" /* HEAD: no body follows */
                       "HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nok";
    struct iovec v = {(void *)resp, strlen(resp)};
    dds_conn_send_done(c, &v, 1, 0, (ssize_t)v.iov_len, 0);
    assert_int_equal(ndone, 2);
    assert_string_equal(only_span(0)->resource, "HEAD /h");
    assert_string_equal(dds_span_get_meta(only_span(0), "http.status_code"), "200");
    assert_string_equal(only_span(1)->resource, "GET /g");
    assert_int_equal(only_span(1)->error, 1);
    dds_conn_close(c, NULL);
}

/* The wire comparison (a system call in hooks/socket.c): before the first
 * request, then once every DDS_CONN_WIRE_CHECK_EVERY message starts; before
 * every one once the socket may be written from elsewhere; a mismatch found
 * late still turns the connection passive before anything is injected. */
static void one_exchange(dds_conn *c)
{
    size_t wl;
    send_all(c, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n", &wl);
    recv_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    for (int i = 0; i < ndone; i++) /* done[] holds 32 */
        dds_trace_free(done[i]);
    ndone = 0;
}

static void test_wire_check_schedule(void **state)
{
    (void)state;
    dds_conn *c = dds_conn_new(DDS_CONN_CLIENT, "127.0.0.1", 80, getpid());
    assert_int_equal(dds_conn_wire_check_due(c), 1); /* the first message */
    dds_conn_check_wire(c, 0);
    int due = 0;
    for (int i = 0; i < 3 * DDS_CONN_WIRE_CHECK_EVERY; i++) {
        if (dds_conn_wire_check_due(c)) {
            due++;
            dds_conn_check_wire(c, c->wire_out);
        }
        one_exchange(c);
    }
    assert_int_equal(due, 3);
    assert_int_equal(c->dead, 0);
    /* Bytes the kernel got unseen: caught by the next comparison, before the
     * request that follows is injected into. */
    uint64_t unseen = 40;
    int sent = 0;
    while (!dds_conn_wire_check_due(c)) {
        one_exchange(c);
        sent++;
    }
    assert_true(sent < DDS_CONN_WIRE_CHECK_EVERY);
    dds_conn_check_wire(c, c->wire_out + unseen);
    assert_int_equal(c->dead, 1);
    struct iovec app = {(void *)"GET /y HTTP/1.1\r\nHost: h\r\n\r\n", 29}, out[8];
    assert_int_equal(dds_conn_send_plan(c, &app, 1, out, 8), 0); /* nothing injected */
    dds_conn_close(c, NULL);

    /* Suspect (dup2, fork child, an answer to an unseen request): every time. */
    c = dds_conn_new(DDS_CONN_CLIENT, "127.0.0.1", 80, getpid());
    dds_conn_check_wire(c, 0);
    assert_int_equal(dds_conn_wire_check_due(c), 0);
    dds_conn_wire_suspect(c);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dds_conn_wire_check_due(c), 1);
        dds_conn_check_wire(c, c->wire_out);
        one_exchange(c);
    }
    dds_conn_close(c, NULL);

    /* A response with no request in flight makes the connection suspect. */
    c = dds_conn_new(DDS_CONN_CLIENT, "127.0.0.1", 80, getpid());
    dds_conn_check_wire(c, 0);
    recv_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(dds_conn_wire_check_due(c), 1);
    dds_conn_check_wire(c, c->wire_out);
    assert_int_equal(dds_conn_wire_check_due(c), 1);
    dds_conn_close(c, NULL);

    /* A state made before a fork: the socket may be shared, every time. */
    c = dds_conn_new(DDS_CONN_CLIENT, "127.0.0.1", 80, getpid());
    dds_conn_check_wire(c, 0);
    assert_int_equal(dds_conn_wire_check_due(c), 0);
    dds_conn_atfork_prepare();
    dds_conn_atfork_release();
    assert_int_equal(dds_conn_wire_check_due(c), 1);
    dds_conn_check_wire(c, c->wire_out);
    assert_int_equal(dds_conn_wire_check_due(c), 1);
    dds_conn_close(c, NULL);
}

static void test_server_close_delimited_response(void **state)
{
    (void)state;
    dds_conn *c = dds_conn_new(DDS_CONN_SERVER, "127.0.0.1", 1, getpid());
    recv_str(c, "GET / HTTP/1.0\r\n\r\n");
    const char *resp = "HTTP/1.0 200 OK\r\n\r\nbody until close";
    struct iovec v = {(void *)resp, strlen(resp)};
    dds_conn_send_done(c, &v, 1, 0, (ssize_t)v.iov_len, 0);
    assert_int_equal(ndone, 0);
    dds_conn_close(c, NULL); /* the close ends the body and the span */
    assert_int_equal(ndone, 1);
    assert_string_equal(dds_span_get_meta(only_span(0), "http.status_code"), "200");
}

/* ---- a send under way (lock released for the system call) ---- */

static const char *const UNDERWAY_REQ = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";

/* A new client connection whose first send of UNDERWAY_REQ is planned with
 * the header block, as the hook leaves it during the system call. */
static dds_conn *send_under_way(struct iovec *app, struct iovec *out, int *planned)
{
    dds_conn *c = dds_conn_new(DDS_CONN_CLIENT, "10.0.0.1", 8080, getpid());
    app->iov_base = (void *)UNDERWAY_REQ;
    app->iov_len = strlen(UNDERWAY_REQ);
    *planned = dds_conn_send_plan(c, app, 1, out, 8);
    assert_true(*planned > 1);
    assert_true(dds_iov_total(out, *planned) > app->iov_len);
    return c;
}

/* From now on the connection's bytes go out as they are. */
static void then_unchanged(dds_conn *c, struct iovec *app)
{
    struct iovec out[8];
    assert_int_equal(dds_conn_send_plan(c, app, 1, out, 8), 0);
    assert_int_equal(dds_conn_send_done(c, app, 1, 0, (ssize_t)app->iov_len, 0), (ssize_t)app->iov_len);
    dds_conn_close(c, NULL);
}

/* Another thread makes the connection stop being followed (its reader
 * found bytes lost, or the response unreadable) while a send is in its
 * system call: that send's plan carries the header block, so its count must
 * still be made against it. The block used to be dropped under the send,
 * which then reported the block's bytes as the application's (a write
 * returned more than it was given). */
static void test_send_under_way_keeps_its_block_when_the_connection_goes_dead(void **state)
{
    (void)state;
    struct iovec app, out[8];
    int planned;
    dds_conn *c = send_under_way(&app, out, &planned);
    dds_conn_lost_sync(c); /* another thread, meanwhile */
    ssize_t wire = (ssize_t)dds_iov_total(out, planned);
    assert_int_equal(dds_conn_send_done(c, &app, 1, planned, wire, 0), (ssize_t)app.iov_len);
    assert_false(c->inj.active);
    then_unchanged(c, &app);
}

/* The same, when the kernel took only the app's bytes before the block: the
 * block, not begun, is dropped, and the rest of the head goes unchanged. */
static void test_send_under_way_drops_a_block_not_begun_when_the_connection_goes_dead(void **state)
{
    (void)state;
    struct iovec app, out[8];
    int planned;
    dds_conn *c = send_under_way(&app, out, &planned);
    size_t before = c->inj.app_before;
    assert_true(before > 0 && before < app.iov_len);
    dds_conn_lost_sync(c);
    assert_int_equal(dds_conn_send_done(c, &app, 1, planned, (ssize_t)before, 0), (ssize_t)before);
    assert_false(c->inj.active);
    struct iovec rest = {(char *)app.iov_base + before, app.iov_len - before};
    then_unchanged(c, &rest);
}

/* A second thread's send while the first is in its system call: it is told
 * to write its bytes unchanged (-1), the connection stops being followed
 * (the order of the two threads' bytes is unknown), and the first send's
 * count is still made against its block. */
static void test_second_send_under_way_passes_through(void **state)
{
    (void)state;
    struct iovec app, out[8], out2[8];
    int planned;
    dds_conn *c = send_under_way(&app, out, &planned);
    const char *req2 = "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    struct iovec app2 = {(void *)req2, strlen(req2)};
    assert_int_equal(dds_conn_send_plan(c, &app2, 1, out2, 8), -1);
    ssize_t wire = (ssize_t)dds_iov_total(out, planned);
    assert_int_equal(dds_conn_send_done(c, &app, 1, planned, wire, 0), (ssize_t)app.iov_len);
    assert_false(c->inj.active);
    assert_true(c->dead);
    then_unchanged(c, &app2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_client_injects_once_and_finishes_on_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_under_way_keeps_its_block_when_the_connection_goes_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_under_way_drops_a_block_not_begun_when_the_connection_goes_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_send_under_way_passes_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_keepalive_and_existing_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_not_http_goes_passive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_close_before_response_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_span_extracts_and_is_active, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_pipelined_head_and_split_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_close_delimited_response, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wire_check_schedule, setup, teardown),
    };
    return cmocka_run_group_tests_name("conn", tests, NULL, NULL);
}
