/* Unit tests for core/http.c: the incremental stream parser and the one-shot
 * request scan. Every stream case is checked one-shot, byte at a time, at every
 * two-way split and at random multi-way splits: the event log must not change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "http.h"

/* ---- event log ---- */

typedef struct rec {
    char log[65536];
    size_t n;
    int no_body;      /* call no_body() in every EV_HEAD */
    int tunnel_2xx;   /* call set_tunnel() in EV_HEAD of a 2xx (CONNECT) */
    int fields;       /* log host, user-agent and the context headers too */
    dds_http_stream *s;
} rec;

static void addf(rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(rec *r, const char *fmt, ...)
{
    va_list ap;
    int k;
    if (r->n >= sizeof r->log)
        return;
    va_start(ap, fmt);
    k = vsnprintf(r->log + r->n, sizeof r->log - r->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        r->n += (size_t)k;
    if (r->n >= sizeof r->log)
        r->n = sizeof r->log - 1;
}

static int lit_ieq(const char *a, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(a, lit, n) == 0;
}

/* What the parser found on the way must be what a search of headers[] finds:
 * host and user_agent as dds_http_msg_header returns them, and ctx_idx the
 * kept headers dds_propagation_extract reads (and only x-datadog-*, x-b3-*,
 * traceparent, tracestate, b3 besides), in order. */
static void check_fields(const dds_http_msg *m)
{
    static const char *const ctx_names[] = {
        "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
        "x-datadog-origin", "x-datadog-tags", "traceparent", "tracestate",
        "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags", "b3"};
    size_t l = 0;
    const char *v = dds_http_msg_header(m, "host", &l);
    int i, j = 0;
    assert_ptr_equal(v, m->host);
    if (v)
        assert_int_equal(l, m->host_len);
    v = dds_http_msg_header(m, "user-agent", &l);
    assert_ptr_equal(v, m->user_agent);
    if (v)
        assert_int_equal(l, m->user_agent_len);
    assert_true(m->nctx >= 0 && m->nctx <= m->nheaders);
    for (i = 0; i < m->nheaders; i++) {
        const char *n = m->headers[i].name;
        size_t nl = m->headers[i].name_len;
        int named = 0;
        for (size_t k = 0; k < sizeof ctx_names / sizeof ctx_names[0]; k++)
            named |= lit_ieq(n, nl, ctx_names[k]);
        if (j < m->nctx && m->ctx_idx[j] == i) {
            j++;
            assert_true(named || (nl >= 10 && strncasecmp(n, "x-datadog-", 10) == 0) ||
                        (nl >= 5 && strncasecmp(n, "x-b3-", 5) == 0));
        } else {
            assert_false(named);
        }
    }
    assert_int_equal(j, m->nctx);
}

static void on_event(void *ctx, int ev, const dds_http_msg *m)
{
    rec *r = ctx;
    int i;
    switch (ev) {
    case DDS_HTTP_EV_HEAD:
        if (m->is_response)
            addf(r, "H %d", m->status);
        else
            addf(r, "H %s %.*s", m->method, (int)m->target_len, m->target);
        addf(r, " 1.%d cl=%lld ch=%d cc=%d ec=%d up=%d amb=%d hl=%zu n=%d tr=%d [",
             m->version_minor, (long long)m->content_length, m->chunked, m->conn_close,
             m->expect_continue, m->upgrade, m->ambiguous_framing, m->head_len,
             m->nheaders, m->headers_truncated);
        for (i = 0; i < m->nheaders; i++)
            addf(r, "%.*s=%.*s;", (int)m->headers[i].name_len, m->headers[i].name,
                 (int)m->headers[i].value_len, m->headers[i].value);
        addf(r, "]\n");
        check_fields(m);
        if (r->fields) {
            addf(r, "  host=%.*s ua=%.*s ctx=", m->host ? (int)m->host_len : 1,
                 m->host ? m->host : "-", m->user_agent ? (int)m->user_agent_len : 1,
                 m->user_agent ? m->user_agent : "-");
            for (i = 0; i < m->nctx; i++)
                addf(r, "%d,", m->ctx_idx[i]);
            addf(r, "\n");
        }
        if (r->no_body)
            dds_http_stream_no_body(r->s);
        if (r->tunnel_2xx && m->status >= 200 && m->status < 300)
            dds_http_stream_set_tunnel(r->s);
        break;
    case DDS_HTTP_EV_DONE:
        assert_non_null(m);
        assert_null(m->target);
        assert_int_equal(m->nheaders, 0);
        if (m->is_response)
            addf(r, "D %d body=%llu\n", m->status, (unsigned long long)m->body_len);
        else
            addf(r, "D %s body=%llu\n", m->method, (unsigned long long)m->body_len);
        break;
    case DDS_HTTP_EV_INVALID:
        assert_null(m);
        addf(r, "I\n");
        break;
    default:
        fail();
    }
}

typedef struct opts {
    int is_response, no_body, tunnel_2xx, eof;
} opts;

static int log_fields; /* set by test_head_fields: rec.fields */

/* Feeds `in` cut at the given split points (sorted offsets), then optionally
 * eof. Fills r->log and returns the final stream state summary in *dead. */
static void run_split(const opts *o, const char *in, size_t len, const size_t *cuts, int ncuts,
                      rec *r, int *dead_reason, int *boundary)
{
    dds_http_stream s;
    size_t prev = 0;
    int i;
    memset(r, 0, sizeof *r);
    r->no_body = o->no_body;
    r->tunnel_2xx = o->tunnel_2xx;
    r->fields = log_fields;
    r->s = &s;
    dds_http_stream_init(&s, o->is_response);
    for (i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        /* Feed from a private copy so a pointer kept past the feed would be
         * caught by ASan rather than read stale data. */
        char *piece = malloc(end - prev + 1);
        memcpy(piece, in + prev, end - prev);
        dds_http_stream_feed(&s, piece, end - prev, on_event, r);
        free(piece);
        prev = end;
    }
    *boundary = dds_http_stream_at_boundary(&s);
    if (o->eof)
        dds_http_stream_eof(&s, on_event, r);
    *dead_reason = dds_http_stream_dead_reason(&s);
    dds_http_stream_free(&s);
    r->log[r->n] = '\0';
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Checks that every way of cutting the input gives `want` (and the same dead
 * reason); returns the dead reason. */
static int check_o(const opts *o, const char *in, size_t len, const char *want)
{
    static rec r1, r2;
    int dead1, dead2, b1, b2;
    size_t cuts[8];
    size_t i;
    int t;

    run_split(o, in, len, NULL, 0, &r1, &dead1, &b1);
    if (want && strcmp(r1.log, want) != 0) {
        print_error("one-shot log:\n%s\nwanted:\n%s\n", r1.log, want);
        fail();
    }
    /* byte at a time */
    {
        size_t *all = malloc(sizeof(size_t) * (len + 1));
        for (i = 1; i < len; i++)
            all[i - 1] = i;
        run_split(o, in, len, all, len > 1 ? (int)(len - 1) : 0, &r2, &dead2, &b2);
        free(all);
        if (strcmp(r1.log, r2.log) != 0 || dead1 != dead2 || b1 != b2) {
            print_error("bytewise differs:\n%s\nvs one-shot:\n%s\n", r2.log, r1.log);
            fail();
        }
    }
    /* every two-way split (bounded for long inputs) */
    for (i = 1; i < len && i < 4096; i++) {
        cuts[0] = i;
        run_split(o, in, len, cuts, 1, &r2, &dead2, &b2);
        if (strcmp(r1.log, r2.log) != 0 || dead1 != dead2 || b1 != b2) {
            print_error("split at %zu differs:\n%s\nvs one-shot:\n%s\n", i, r2.log, r1.log);
            fail();
        }
    }
    /* random multi-way splits */
    for (t = 0; t < 50 && len > 2; t++) {
        int k = 1 + (int)(rnd() % 7), j;
        for (j = 0; j < k; j++)
            cuts[j] = 1 + rnd() % (len - 1);
        for (j = 1; j < k; j++) { /* insertion sort */
            size_t v = cuts[j];
            int m = j - 1;
            while (m >= 0 && cuts[m] > v) {
                cuts[m + 1] = cuts[m];
                m--;
            }
            cuts[m + 1] = v;
        }
        run_split(o, in, len, cuts, k, &r2, &dead2, &b2);
        if (strcmp(r1.log, r2.log) != 0 || dead1 != dead2 || b1 != b2) {
            print_error("random split differs:\n%s\nvs:\n%s\n", r2.log, r1.log);
            fail();
        }
    }
    return dead1;
}

static int check(int is_response, const char *in, const char *want)
{
    opts o = { is_response, 0, 0, 0 };
    return check_o(&o, in, strlen(in), want);
}

/* ---- requests ---- */

static void test_simple_get(void **state)
{
    (void)state;
    int d = check(0, "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept:  */*  \r\n\r\n",
                  "H GET /a?b=1 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=58 n=2 tr=0 "
                  "[Host=example.com;Accept=*/*;]\nD GET body=0\n");
    assert_int_equal(d, DDS_HTTP_ALIVE);
}

static void test_no_headers_and_http10(void **state)
{
    (void)state;
    check(0, "GET / HTTP/1.0\r\n\r\n",
          "H GET / 1.0 cl=-1 ch=0 cc=1 ec=0 up=0 amb=0 hl=18 n=0 tr=0 []\nD GET body=0\n");
    check(0, "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
          "H GET / 1.0 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=42 n=1 tr=0 [Connection=Keep-Alive;]\n"
          "D GET body=0\n");
    check(0, "GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n",
          "H GET / 1.1 cl=-1 ch=0 cc=1 ec=0 up=0 amb=0 hl=42 n=1 tr=0 [Connection=foo, close;]\n"
          "D GET body=0\n");
}

static void test_pipelined_body_with_request_text(void **state)
{
    (void)state;
    const char *in =
        "POST /x HTTP/1.1\r\nContent-Length: 18\r\n\r\n"
        "GET / HTTP/1.1\r\n\r\n"
        "PUT /y HTTP/1.1\r\nContent-Length: 0\r\nExpect: 100-Continue\r\n\r\n"
        "DELETE /z HTTP/1.1\r\n\r\n";
    int d = check(0, in,
                  "H POST /x 1.1 cl=18 ch=0 cc=0 ec=0 up=0 amb=0 hl=40 n=1 tr=0 [Content-Length=18;]\n"
                  "D POST body=18\n"
                  "H PUT /y 1.1 cl=0 ch=0 cc=0 ec=1 up=0 amb=0 hl=60 n=2 tr=0 "
                  "[Content-Length=0;Expect=100-Continue;]\n"
                  "D PUT body=0\n"
                  "H DELETE /z 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=22 n=0 tr=0 []\n"
                  "D DELETE body=0\n");
    assert_int_equal(d, DDS_HTTP_ALIVE);
}

static void test_chunked_request(void **state)
{
    (void)state;
    const char *in =
        "POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
        "5;name=\"va;l\"\r\nhello\r\n"
        "00A \t; x\r\nGET / HTTP\r\n"
        "0\r\nX-Trailer: 1\r\nY: GET / HTTP/1.1\r\n\r\n"
        "GET /next HTTP/1.1\r\n\r\n";
    check(0, in,
          "H POST /c 1.1 cl=-1 ch=1 cc=0 ec=0 up=0 amb=0 hl=54 n=1 tr=0 "
          "[Transfer-Encoding=gzip, Chunked;]\n"
          "D POST body=15\n"
          "H GET /next 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=22 n=0 tr=0 []\n"
          "D GET body=0\n");
    /* the simplest chunked body */
    check(0, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
          "H POST / 1.1 cl=-1 ch=1 cc=0 ec=0 up=0 amb=0 hl=47 n=1 tr=0 "
          "[Transfer-Encoding=chunked;]\nD POST body=0\n");
}

static void test_chunked_errors(void **state)
{
    (void)state;
    const char *h = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *head = "H POST / 1.1 cl=-1 ch=1 cc=0 ec=0 up=0 amb=0 hl=47 n=1 tr=0 "
                       "[Transfer-Encoding=chunked;]\n";
    const char *bodies[] = {
        "x\r\n",                   /* not hex */
        "\r\n",                    /* no digits */
        "5\nhello\r\n0\r\n\r\n",   /* bare LF */
        "5\r\nhelloX\r\n",         /* data not followed by CRLF */
        "1000000000000000\r\n",    /* 16 significant digits */
        "0\r\n trailer: folded\r\n\r\n",
        "0\r\nT: v\n\r\n",
    };
    char buf[512], want[512];
    size_t i;
    snprintf(want, sizeof want, "%sI\n", head);
    for (i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        snprintf(buf, sizeof buf, "%s%s", h, bodies[i]);
        int d = check(0, buf, want);
        assert_true(d == DDS_HTTP_DEAD_INVALID || d == DDS_HTTP_DEAD_LIMIT);
    }
    /* a chunk extension is bounded */
    {
        static char big[6000];
        size_t n = strlen(h);
        memcpy(big, h, n);
        memcpy(big + n, "5;", 2);
        n += 2;
        memset(big + n, 'e', 4200);
        n += 4200;
        static const char tail[] = "\r\nhello\r\n0\r\n\r\n";
        memcpy(big + n, tail, sizeof tail - 1);
        opts o = { 0, 0, 0, 0 };
        snprintf(want, sizeof want, "%sI\n", head);
        assert_int_equal(check_o(&o, big, n + sizeof tail - 1, want), DDS_HTTP_DEAD_LIMIT);
    }
    /* leading zeros are fine */
    snprintf(buf, sizeof buf, "%s%s", h, "0000000000000000000003\r\nabc\r\n0\r\n\r\n");
    snprintf(want, sizeof want, "%sD POST body=3\n", head);
    check(0, buf, want);
}

static void test_not_http(void **state)
{
    (void)state;
    const char *cases[] = {
        "*1\r\n$4\r\nPING\r\n",                 /* RESP */
        "PING\r\n",                             /* Redis inline */
        "SET k v\r\n",
        "get key\r\n",                          /* memcached */
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.2\r\n\r\n",
        "GET / http/1.1\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1 \r\n\r\n",
        "GET /\tx HTTP/1.1\r\n\r\n",
        " GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\n\n",                   /* bare LF */
        "GET / HTTP/1.1\r\r\n",
        "GET / HTTP/1.1\rXHost: h\r\n\r\n",   /* CR not followed by LF */
        "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
        "ABCDEFGHIJKLMNOPQRSTUVWX / HTTP/1.1\r\n\r\n", /* 24-char method */
        "GE(T / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",    /* space before colon */
        "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\n\tx: y\r\n\r\n",
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty\r\n\r\n",
        "GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n",
        "\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",   /* three leading empty lines */
        "\nGET / HTTP/1.1\r\n\r\n",
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int d = check(0, cases[i], "I\n");
        assert_int_equal(d, DDS_HTTP_DEAD_INVALID);
    }
    /* postgres startup: binary with NULs */
    {
        static const char pg[] = "\x00\x00\x00\x08\x04\xd2\x16\x2f";
        opts o = { 0, 0, 0, 0 };
        assert_int_equal(check_o(&o, pg, 8, "I\n"), DDS_HTTP_DEAD_INVALID);
    }
    /* NUL in a header value */
    {
        static const char nul[] = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
        opts o = { 0, 0, 0, 0 };
        check_o(&o, nul, sizeof nul - 1, "I\n");
    }
    /* responses */
    {
        const char *rs[] = {
            "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 099 x\r\n\r\n", "HTTP/1.1  200 OK\r\n\r\n",
            "HTTP/2 200\r\n\r\n", "HTTP/1.1 200OK\r\n\r\n", "+OK\r\n", "-ERR x\r\n",
            "HTTP/1.1 200 OK\r\nA: \x01\r\n\r\n",
        };
        for (i = 0; i < sizeof rs / sizeof rs[0]; i++)
            check(1, rs[i], "I\n");
    }
}

static void test_leading_empty_lines(void **state)
{
    (void)state;
    check(0, "\r\n\r\nGET / HTTP/1.1\r\n\r\n",
          "H GET / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=18 n=0 tr=0 []\nD GET body=0\n");
    /* and between pipelined requests */
    check(0, "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\nGET / HTTP/1.1\r\n\r\n",
          "H POST / 1.1 cl=1 ch=0 cc=0 ec=0 up=0 amb=0 hl=38 n=1 tr=0 [Content-Length=1;]\n"
          "D POST body=1\n"
          "H GET / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=18 n=0 tr=0 []\nD GET body=0\n");
    /* responses never get that leniency */
    check(1, "\r\nHTTP/1.1 200 OK\r\n\r\n", "I\n");
}

static void test_ambiguous(void **state)
{
    (void)state;
    int d;
    d = check(0, "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
              "H POST / 1.1 cl=-1 ch=1 cc=0 ec=0 up=0 amb=1 hl=66 n=2 tr=0 "
              "[Content-Length=3;Transfer-Encoding=chunked;]\nI\n");
    assert_int_equal(d, DDS_HTTP_DEAD_INVALID);
    check(0, "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
          "H POST / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=1 hl=57 n=2 tr=0 "
          "[Content-Length=3;Content-Length=4;]\nI\n");
    check(0, "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\nabcd",
          "H POST / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=1 hl=41 n=1 tr=0 [Content-Length=3, 4;]\nI\n");
    check(0, "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
          "H POST / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=1 hl=39 n=1 tr=0 [Content-Length=-1;]\nI\n");
    check(0, "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
          "H POST / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=1 hl=57 n=1 tr=0 "
          "[Content-Length=99999999999999999999;]\nI\n");
    check(0, "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
          "H POST / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=1 hl=36 n=1 tr=0 [Content-Length=;]\nI\n");
    /* same value twice is fine */
    check(0, "POST / HTTP/1.1\r\nContent-Length: 2 , 2\r\nContent-Length: 2\r\n\r\nab",
          "H POST / 1.1 cl=2 ch=0 cc=0 ec=0 up=0 amb=0 hl=61 n=2 tr=0 "
          "[Content-Length=2 , 2;Content-Length=2;]\nD POST body=2\n");
    /* TE not ending in chunked on a request; chunked twice; TE on 1.0 */
    check(0, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
          "H POST / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=1 hl=53 n=1 tr=0 "
          "[Transfer-Encoding=chunked, gzip;]\nI\n");
    check(0, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
          "H POST / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=1 hl=75 n=2 tr=0 "
          "[Transfer-Encoding=chunked;Transfer-Encoding=chunked;]\nI\n");
    check(0, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
          "H POST / 1.0 cl=-1 ch=1 cc=1 ec=0 up=0 amb=1 hl=47 n=1 tr=0 "
          "[Transfer-Encoding=chunked;]\nI\n");
    /* a response with a non-chunked coding is read until close */
    {
        opts o = { 1, 0, 0, 1 };
        const char *in = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabcdefGET / HTTP/1.1\r\n\r\n";
        check_o(&o, in, strlen(in),
                "H 200 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=44 n=1 tr=0 [Transfer-Encoding=gzip;]\n"
                "D 200 body=24\n");
    }
    /* a 304 with both is harmless: no body either way */
    check(1, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
             "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
          "H 304 1.1 cl=-1 ch=1 cc=0 ec=0 up=0 amb=1 hl=76 n=2 tr=0 "
          "[Content-Length=5;Transfer-Encoding=chunked;]\nD 304 body=0\n"
          "H 200 1.1 cl=0 ch=0 cc=0 ec=0 up=0 amb=0 hl=38 n=1 tr=0 [Content-Length=0;]\nD 200 body=0\n");
}

/* ---- responses ---- */

static void test_responses(void **state)
{
    (void)state;
    check(1, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
             "HTTP/1.1 204 No Content\r\n\r\n"
             "HTTP/1.0 404 \r\nContent-Length: 0\r\n\r\n"
             "HTTP/1.1 500\r\nContent-Length: 1\r\n\r\nx",
          "H 200 1.1 cl=5 ch=0 cc=0 ec=0 up=0 amb=0 hl=38 n=1 tr=0 [Content-Length=5;]\n"
          "D 200 body=5\n"
          "H 204 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=27 n=0 tr=0 []\nD 204 body=0\n"
          "H 404 1.0 cl=0 ch=0 cc=1 ec=0 up=0 amb=0 hl=36 n=1 tr=0 [Content-Length=0;]\n"
          "D 404 body=0\n"
          "H 500 1.1 cl=1 ch=0 cc=0 ec=0 up=0 amb=0 hl=35 n=1 tr=0 [Content-Length=1;]\n"
          "D 500 body=1\n");
}

static void test_interim_responses(void **state)
{
    (void)state;
    check(1, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
             "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
          "H 201 1.1 cl=2 ch=0 cc=0 ec=0 up=0 amb=0 hl=43 n=1 tr=0 [Content-Length=2;]\n"
          "D 201 body=2\n");
}

static void test_head_response(void **state)
{
    (void)state;
    opts o = { 1, 1, 0, 0 };
    const char *in = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 200 OK\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n";
    check_o(&o, in, strlen(in),
            "H 200 1.1 cl=1000 ch=0 cc=0 ec=0 up=0 amb=0 hl=41 n=1 tr=0 [Content-Length=1000;]\n"
            "D 200 body=0\n"
            "H 200 1.1 cl=-1 ch=1 cc=0 ec=0 up=0 amb=0 hl=47 n=1 tr=0 [Transfer-Encoding=chunked;]\n"
            "D 200 body=0\n");
}

static void test_tunnels(void **state)
{
    (void)state;
    int d;
    opts o = { 1, 0, 0, 0 };
    const char *up = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                     "\x81\x05hello";
    d = check_o(&o, up, strlen(up),
                "H 101 1.1 cl=-1 ch=0 cc=0 ec=0 up=1 amb=0 hl=77 n=2 tr=0 "
                "[Connection=Upgrade;Upgrade=websocket;]\nD 101 body=0\n");
    assert_int_equal(d, DDS_HTTP_DEAD_TUNNEL);

    o.tunnel_2xx = 1;
    const char *conn = "HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01\x00\x05hello";
    d = check_o(&o, conn, strlen(conn),
                "H 200 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=39 n=0 tr=0 []\nD 200 body=0\n");
    assert_int_equal(d, DDS_HTTP_DEAD_TUNNEL);

    /* set_tunnel outside a callback: dead at once, no event */
    {
        dds_http_stream s;
        rec *r = calloc(1, sizeof *r);
        dds_http_stream_init(&s, 0);
        r->s = &s;
        dds_http_stream_feed(&s, "CONNECT h:443 HTTP/1.1\r\n\r\n", 26, on_event, r);
        assert_true(dds_http_stream_at_boundary(&s));
        dds_http_stream_set_tunnel(&s);
        assert_true(dds_http_stream_dead(&s));
        assert_int_equal(dds_http_stream_dead_reason(&s), DDS_HTTP_DEAD_TUNNEL);
        dds_http_stream_feed(&s, "\x16\x03\x01", 3, on_event, r);
        r->log[r->n] = '\0';
        assert_string_equal(r->log,
                            "H CONNECT h:443 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=26 n=0 tr=0 []\n"
                            "D CONNECT body=0\n");
        dds_http_stream_free(&s);
        free(r);
    }
}

static void test_eof(void **state)
{
    (void)state;
    opts o = { 1, 0, 0, 1 };
    const char *in = "HTTP/1.0 200 OK\r\n\r\nall of this until close\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
    int d = check_o(&o, in, strlen(in),
                    "H 200 1.0 cl=-1 ch=0 cc=1 ec=0 up=0 amb=0 hl=19 n=0 tr=0 []\nD 200 body=46\n");
    assert_int_equal(d, DDS_HTTP_DEAD_EOF);
    /* truncated CL body */
    in = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    check_o(&o, in, strlen(in),
            "H 200 1.1 cl=10 ch=0 cc=0 ec=0 up=0 amb=0 hl=39 n=1 tr=0 [Content-Length=10;]\nI\n");
    /* truncated head */
    in = "HTTP/1.1 200 OK\r\nContent-Le";
    check_o(&o, in, strlen(in), "I\n");
    /* clean close between messages */
    in = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx";
    d = check_o(&o, in, strlen(in),
                "H 200 1.1 cl=1 ch=0 cc=0 ec=0 up=0 amb=0 hl=38 n=1 tr=0 [Content-Length=1;]\n"
                "D 200 body=1\n");
    assert_int_equal(d, DDS_HTTP_DEAD_EOF);
}

static void test_boundary(void **state)
{
    (void)state;
    dds_http_stream s;
    rec *r = calloc(1, sizeof *r);
    r->s = &s;
    dds_http_stream_init(&s, 0);
    assert_true(dds_http_stream_at_boundary(&s));
    dds_http_stream_feed(&s, "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n", 38, on_event, r);
    assert_false(dds_http_stream_at_boundary(&s));
    dds_http_stream_feed(&s, "a", 1, on_event, r);
    assert_false(dds_http_stream_at_boundary(&s));
    dds_http_stream_feed(&s, "b", 1, on_event, r);
    assert_true(dds_http_stream_at_boundary(&s));
    dds_http_stream_feed(&s, "GET", 3, on_event, r);
    assert_false(dds_http_stream_at_boundary(&s));
    assert_false(dds_http_stream_dead(&s));
    dds_http_stream_free(&s);
    free(r);
}

static void test_limits(void **state)
{
    (void)state;
    /* a head of exactly DDS_HTTP_MAX_HEAD bytes is fine, one more is not */
    char *buf = malloc(DDS_HTTP_MAX_HEAD + 64);
    const char *pre = "GET / HTTP/1.1\r\nX: ";
    size_t pl = strlen(pre), fill = DDS_HTTP_MAX_HEAD - pl - 4;
    opts o = { 0, 0, 0, 0 };
    memcpy(buf, pre, pl);
    memset(buf + pl, 'a', fill);
    memcpy(buf + pl + fill, "\r\n\r\n", 4);
    {
        rec *r = calloc(1, sizeof *r);
        int dead, b;
        run_split(&o, buf, DDS_HTTP_MAX_HEAD, NULL, 0, r, &dead, &b);
        assert_non_null(strstr(r->log, "hl=16384 n=1"));
        assert_non_null(strstr(r->log, "D GET body=0\n"));
        size_t cuts[3] = { 5, 100, 9000 };
        rec *r2 = calloc(1, sizeof *r2);
        run_split(&o, buf, DDS_HTTP_MAX_HEAD, cuts, 3, r2, &dead, &b);
        assert_string_equal(r->log, r2->log);
        free(r);
        free(r2);
    }
    memset(buf + pl, 'a', fill + 1);
    memcpy(buf + pl + fill + 1, "\r\n\r\n", 4);
    {
        rec *r = calloc(1, sizeof *r);
        int dead, b;
        size_t cuts[2] = { 7, 12000 };
        run_split(&o, buf, DDS_HTTP_MAX_HEAD + 1, cuts, 2, r, &dead, &b);
        assert_string_equal(r->log, "I\n");
        assert_int_equal(dead, DDS_HTTP_DEAD_LIMIT);
        free(r);
    }
    free(buf);
}

static void test_many_headers(void **state)
{
    (void)state;
    char buf[4096];
    size_t n = 0;
    int i;
    n += (size_t)sprintf(buf + n, "POST / HTTP/1.1\r\n");
    for (i = 0; i < 70; i++)
        n += (size_t)sprintf(buf + n, "H%d: v\r\n", i);
    n += (size_t)sprintf(buf + n, "content-LENGTH: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n");
    opts o = { 0, 0, 0, 0 };
    check_o(&o, buf, n, NULL);
    rec *r = calloc(1, sizeof *r);
    int dead, b;
    run_split(&o, buf, n, NULL, 0, r, &dead, &b);
    assert_non_null(strstr(r->log, "cl=3 "));
    assert_non_null(strstr(r->log, "n=64 tr=1"));
    assert_non_null(strstr(r->log, "D POST body=3\nH GET / 1.1"));
    free(r);
}

/* Host, User-Agent and the trace-context headers, found during the scan,
 * identical for every split (check_o), and as a search would find them
 * (check_fields). */
static void test_head_fields(void **state)
{
    (void)state;
    char buf[4096];
    size_t n = 0;
    int i;
    opts o = { 0, 0, 0, 0 };
    log_fields = 1;
    check(0, "GET / HTTP/1.1\r\nHOST:  a.example:80 \r\nhost: b\r\nUser-AGENT: curl/8\r\n"
                "TraceParent: 00-1-2-01\r\nx-b3x: 1\r\nb33: 1\r\nB3: 1\r\nX-B3-Sampled: 1\r\n"
                "x-datadog-origin: rum\r\nX-Datadog-Whatever: 1\r\nx-datadog: 1\r\ntracestate: a=b\r\n"
                "x-b3-: 1\r\nuser-agent: second\r\n\r\n",
            "H GET / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=242 n=14 tr=0 [HOST=a.example:80;host=b;"
            "User-AGENT=curl/8;TraceParent=00-1-2-01;x-b3x=1;b33=1;B3=1;X-B3-Sampled=1;x-datadog-origin=rum;"
            "X-Datadog-Whatever=1;x-datadog=1;tracestate=a=b;x-b3-=1;user-agent=second;]\n"
            "  host=a.example:80 ua=curl/8 ctx=3,6,7,8,9,11,12,\n"
            "D GET body=0\n");
    check(1, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "H 200 1.1 cl=0 ch=0 cc=0 ec=0 up=0 amb=0 hl=38 n=1 tr=0 [Content-Length=0;]\n"
            "  host=- ua=- ctx=\n"
            "D 200 body=0\n");
    /* past the 64 kept headers: not reported (a search would not find them) */
    n += (size_t)sprintf(buf + n, "GET / HTTP/1.1\r\n");
    for (i = 0; i < 64; i++)
        n += (size_t)sprintf(buf + n, "H%d: v\r\n", i);
    n += (size_t)sprintf(buf + n, "Host: late\r\ntraceparent: x\r\nUser-Agent: u\r\n\r\n");
    check_o(&o, buf, n, NULL);
    rec *r = calloc(1, sizeof *r);
    int dead, b;
    run_split(&o, buf, n, NULL, 0, r, &dead, &b);
    assert_non_null(strstr(r->log, "n=64 tr=1"));
    assert_non_null(strstr(r->log, "  host=- ua=- ctx=\n"));
    free(r);
    log_fields = 0;
}

/* Header lines of name lengths around 16 (the longest the one-pass
 * line takes) and value length around 16, 32 and 64 (where its loads
 * end), at the end of the input and before another line, with one odd byte
 * (HTAB, obs-text, a control, DEL) at each place of the value, one or two
 * SP after the colon and SP before the CR: what the head reports is built
 * here from the grammar, independently of the scanner, and every split
 * must agree with it. */
static void test_line_shapes(void **state)
{
    (void)state;
    static const char name_bytes[] = "Abcdefghij-KLMNOPQRSTUVWXYZ0123456789";
    static const unsigned char odd[] = { 0, '\t', 0x80, 0x01, 0x7f, 0x0b };
    char in[512], want[1024], name[40], val[100];
    static const int nls[] = { 1, 2, 5, 14, 15, 16, 17, 19 };
    int nl, vl, pad, o, j, sp, trail;
    size_t ni;
    for (ni = 0; ni < sizeof nls / sizeof nls[0]; ni++) {
        nl = nls[ni];
        memcpy(name, name_bytes + (nl * 7) % 10, (size_t)nl);
        name[nl] = '\0';
        for (vl = 0; vl <= 70; vl++) {
            if ((vl > 4 && vl < 12) || (vl > 20 && vl < 26) || (vl > 38 && vl < 42) || (vl > 50 && vl < 58))
                continue; /* fewer cases; the loads' edges are kept */
            for (pad = 0; pad < 2; pad++) {
                for (o = 0; o < (int)sizeof odd; o++) {
                    for (j = 0; j < (o ? vl : 1); j += (o ? 1 + vl / 4 : 1)) {
                        sp = 1 + (vl + j + o) % 2;
                        trail = (vl + o + pad) % 3 == 0;
                        int bad = 0, n, k, vs = 0, ve;
                        for (k = 0; k < vl; k++)
                            val[k] = (char)('a' + (k * 5 + nl) % 26);
                        if (vl >= 2) {
                            val[0] = '0' + (char)(vl % 10);
                            val[vl / 2] = ' ';
                        }
                        if (o) {
                            val[j] = (char)odd[o];
                            bad = odd[o] != '\t' && odd[o] != 0x80;
                        }
                        n = sprintf(in, "GET / HTTP/1.1\r\n%s%s:%s", pad ? "Pad: x\r\n" : "", name,
                                    sp == 2 ? "  " : " ");
                        memcpy(in + n, val, (size_t)vl);
                        n += vl;
                        n += sprintf(in + n, "%s\r\n%s\r\n", trail ? " " : "", pad ? "" : "Z: z\r\n");
                        /* the value as the header reports it: OWS trimmed */
                        ve = vl;
                        while (vs < ve && (val[vs] == ' ' || val[vs] == '\t'))
                            vs++;
                        while (ve > vs && (val[ve - 1] == ' ' || val[ve - 1] == '\t'))
                            ve--;
                        if (bad) {
                            snprintf(want, sizeof want, "I\n");
                        } else {
                            int w = snprintf(want, sizeof want,
                                             "H GET / 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=%d n=2 tr=0 [%s%s=",
                                             n, pad ? "Pad=x;" : "", name);
                            memcpy(want + w, val + vs, (size_t)(ve - vs));
                            w += ve - vs;
                            snprintf(want + w, sizeof want - (size_t)w, ";%s]\nD GET body=0\n", pad ? "" : "Z=z;");
                        }
                        opts op = { 0, 0, 0, 0 };
                        check_o(&op, in, (size_t)n, want);
                    }
                }
            }
        }
    }
}

/* Content-Length: the 1-18 digit values taken in one pass, and the longer
 * ones (up to 2^62) as before; a status line's code. */
static void test_cl_and_status_edges(void **state)
{
    (void)state;
    static const struct { const char *v; const char *cl; } cls[] = {
        { "0", "cl=0 " }, { "7", "cl=7 " }, { "999999999999999999", "cl=999999999999999999 " },
        { "000000000000000012", "cl=12 " }, { "0000000000000000012", "cl=12 " },
        { "4611686018427387904", "cl=4611686018427387904 " }, { "4611686018427387905", "amb=1 " },
        { "1234567890123456789", "cl=1234567890123456789 " }, { "12a", "amb=1 " },
        { "1 ", "cl=1 " }, { "3,3", "cl=3 " }, { "3,4", "amb=1 " }, { "+3", "amb=1 " },
        { "99999999999999999x", "amb=1 " },
    };
    char in[256];
    size_t i;
    for (i = 0; i < sizeof cls / sizeof cls[0]; i++) {
        rec *r = calloc(1, sizeof *r);
        opts o = { 1, 1, 0, 0 }; /* a response to HEAD: no body to read */
        int dead, b, n = snprintf(in, sizeof in, "HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n", cls[i].v);
        check_o(&o, in, (size_t)n, NULL);
        run_split(&o, in, (size_t)n, NULL, 0, r, &dead, &b);
        if (!strstr(r->log, cls[i].cl))
            print_error("%s: %s\n", cls[i].v, r->log);
        assert_non_null(strstr(r->log, cls[i].cl));
        free(r);
    }
    check(1, "HTTP/1.1 200\r\n\r\n", "H 200 1.1 cl=-1 ch=0 cc=0 ec=0 up=0 amb=0 hl=16 n=0 tr=0 []\n");
    check(1, "HTTP/1.1 999 X\r\nContent-Length: 0\r\n\r\n",
          "H 999 1.1 cl=0 ch=0 cc=0 ec=0 up=0 amb=0 hl=37 n=1 tr=0 [Content-Length=0;]\nD 999 body=0\n");
    check(1, "HTTP/1.1 099 X\r\n\r\n", "I\n");
    check(1, "HTTP/1.1 1000\r\n\r\n", "I\n");
    check(1, "HTTP/1.1 2x0 OK\r\n\r\n", "I\n");
    check(1, "HTTP/1.1  200 OK\r\n\r\n", "I\n");
    check(1, "HTTP/1.1 20", NULL);
    check(1, "HTTP/1.1 200", NULL);
}

static void hdr_cb(void *ctx, int ev, const dds_http_msg *m)
{
    int *ok = ctx;
    size_t l = 0;
    const char *v;
    if (ev != DDS_HTTP_EV_HEAD)
        return;
    v = dds_http_msg_header(m, "content-type", &l);
    assert_non_null(v);
    assert_int_equal(l, 9);
    assert_memory_equal(v, "text/html", 9);
    v = dds_http_msg_header(m, "X-EMPTY", &l);
    assert_non_null(v);
    assert_int_equal(l, 0);
    assert_null(dds_http_msg_header(m, "content", NULL));
    assert_null(dds_http_msg_header(m, "content-typ", NULL));
    /* first match wins */
    v = dds_http_msg_header(m, "dup", &l);
    assert_memory_equal(v, "1", 1);
    *ok = 1;
}

static void test_header_lookup(void **state)
{
    (void)state;
    const char *in = "HTTP/1.1 200 OK\r\nContent-Type:\t text/html \t\r\nx-empty:   \r\n"
                     "Dup: 1\r\nDUP: 2\r\nContent-Length: 0\r\n\r\n";
    dds_http_stream s;
    int ok = 0;
    dds_http_stream_init(&s, 1);
    dds_http_stream_feed(&s, in, strlen(in), hdr_cb, &ok);
    assert_int_equal(ok, 1);
    dds_http_stream_free(&s);
}

static void test_null_cb_and_reuse(void **state)
{
    (void)state;
    dds_http_stream s;
    const char *in = "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HT";
    dds_http_stream_init(&s, 0);
    dds_http_stream_feed(&s, in, strlen(in), NULL, NULL);
    assert_false(dds_http_stream_dead(&s));
    /* free with a partial head held: no leak under ASan */
    dds_http_stream_free(&s);
    assert_true(dds_http_stream_dead(&s));
}

/* ---- dds_http_stream_take_scanned ---- */

static void scalar_cb(void *ctx, int ev, const dds_http_msg *m)
{
    rec *r = ctx;
    if (ev == DDS_HTTP_EV_INVALID) {
        addf(r, "I\n");
        return;
    }
    addf(r, "%d %s 1.%d cl=%lld ch=%d cc=%d ec=%d up=%d amb=%d hl=%zu body=%llu\n", ev, m->method,
         m->version_minor, (long long)m->content_length, m->chunked, m->conn_close, m->expect_continue,
         m->upgrade, m->ambiguous_framing, m->head_len, (unsigned long long)m->body_len);
}

/* A head the one-shot scan found complete, taken by the stream without a
 * second scan: the same events and state as feeding its bytes. */
static void test_take_scanned(void **state)
{
    (void)state;
    static const char *const in[] = {
        "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        "POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPUT /q HTTP/1.0\r\n\r\n",
        "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        "3\r\nabc\r\n0\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "HEAD / HTTP/1.1\r\nConnection: close\r\n\r\nnot http",
    };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        size_t len = strlen(in[i]);
        dds_http_scan sc;
        rec a, b;
        dds_http_stream s;
        memset(&a, 0, sizeof a);
        memset(&b, 0, sizeof b);
        assert_int_equal(dds_http_scan_request(in[i], len, &sc), DDS_SCAN_COMPLETE);

        dds_http_stream_init(&s, 0);
        a.s = &s;
        dds_http_stream_feed(&s, in[i], len, scalar_cb, &a);
        addf(&a, "B%d R%d\n", dds_http_stream_at_boundary(&s), dds_http_stream_dead_reason(&s));
        dds_http_stream_free(&s);

        dds_http_stream_init(&s, 0);
        b.s = &s;
        assert_int_equal(dds_http_stream_take_scanned(&s, &sc, scalar_cb, &b), 1);
        dds_http_stream_feed(&s, in[i] + sc.head_len, len - sc.head_len, scalar_cb, &b);
        addf(&b, "B%d R%d\n", dds_http_stream_at_boundary(&s), dds_http_stream_dead_reason(&s));
        dds_http_stream_free(&s);

        a.log[a.n] = b.log[b.n] = '\0';
        assert_string_equal(a.log, b.log);
    }

    /* Not at a boundary, or not a request stream: refused, nothing changes. */
    {
        dds_http_scan sc;
        dds_http_stream s;
        rec r;
        memset(&r, 0, sizeof r);
        assert_int_equal(dds_http_scan_request(in[0], strlen(in[0]), &sc), DDS_SCAN_COMPLETE);
        dds_http_stream_init(&s, 0);
        dds_http_stream_feed(&s, "GE", 2, scalar_cb, &r);
        assert_int_equal(dds_http_stream_take_scanned(&s, &sc, scalar_cb, &r), 0);
        dds_http_stream_feed(&s, in[0] + 2, strlen(in[0]) - 2, scalar_cb, &r);
        assert_int_equal(r.n > 0, 1);
        dds_http_stream_free(&s);
        dds_http_stream_init(&s, 1);
        assert_int_equal(dds_http_stream_take_scanned(&s, &sc, scalar_cb, &r), 0);
        assert_true(dds_http_stream_at_boundary(&s));
        dds_http_stream_free(&s);
    }
}

/* ---- dds_http_scan_request ---- */

static void test_scan_complete(void **state)
{
    (void)state;
    dds_http_scan sc;
    const char *in = "POST /api/v1?q=1 HTTP/1.1\r\nHost:  example.com:8080 \r\n"
                     "Content-Length: 4\r\n\r\nbody";
    assert_int_equal(dds_http_scan_request(in, strlen(in), &sc), DDS_SCAN_COMPLETE);
    assert_int_equal(sc.head_len, strlen(in) - 4);
    assert_int_equal(sc.insert_off, sc.head_len - 2);
    assert_memory_equal(in + sc.insert_off, "\r\n", 2);
    assert_memory_equal(in + sc.insert_off - 2, "\r\n", 2);
    assert_string_equal(sc.method, "POST");
    assert_int_equal(sc.target_len, 11);
    assert_memory_equal(sc.target, "/api/v1?q=1", 11);
    assert_int_equal(sc.host_len, 16);
    assert_memory_equal(sc.host, "example.com:8080", 16);
    assert_int_equal(sc.content_length, 4);
    assert_false(sc.chunked);
    assert_false(sc.ambiguous_framing);
    assert_false(sc.has_context);
    assert_int_equal(sc.version_minor, 1);

    in = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(dds_http_scan_request(in, strlen(in), &sc), DDS_SCAN_COMPLETE);
    assert_int_equal(sc.insert_off, 16);
    assert_null(sc.host);
    assert_int_equal(sc.content_length, -1);
}

static void test_scan_context(void **state)
{
    (void)state;
    dds_http_scan sc;
    const char *ctx[] = {
        "GET / HTTP/1.1\r\nTraceParent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
        "GET / HTTP/1.1\r\nX-Datadog-Trace-Id: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nx-datadog-parent-id: 2\r\n\r\n",
    };
    const char *noctx[] = {
        "GET / HTTP/1.1\r\nX-Datadog-Origin: synthetics\r\ntracestate: dd=s:1\r\n\r\n",
        "GET / HTTP/1.1\r\nX-Trace: traceparent\r\n\r\n",
        "GET /traceparent HTTP/1.1\r\n\r\n",
    };
    size_t i;
    for (i = 0; i < 3; i++) {
        assert_int_equal(dds_http_scan_request(ctx[i], strlen(ctx[i]), &sc), DDS_SCAN_COMPLETE);
        assert_true(sc.has_context);
        assert_int_equal(dds_http_scan_request(noctx[i], strlen(noctx[i]), &sc), DDS_SCAN_COMPLETE);
        assert_false(sc.has_context);
    }
    /* context beyond the 64th header still counts */
    {
        char buf[4096];
        size_t n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");
        int k;
        for (k = 0; k < 80; k++)
            n += (size_t)sprintf(buf + n, "A%d: b\r\n", k);
        n += (size_t)sprintf(buf + n, "traceparent: x\r\n\r\n");
        assert_int_equal(dds_http_scan_request(buf, n, &sc), DDS_SCAN_COMPLETE);
        assert_true(sc.has_context);
    }
}

static void test_scan_partial_and_not(void **state)
{
    (void)state;
    dds_http_scan sc;
    const char *in = "PATCH /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
    size_t n = strlen(in), i;
    for (i = 1; i < n; i++) {
        assert_int_equal(dds_http_scan_request(in, i, &sc), DDS_SCAN_PARTIAL);
        if (i > 5)
            assert_string_equal(sc.method, "PATCH");
        else
            assert_string_equal(sc.method, "");
    }
    assert_int_equal(dds_http_scan_request(in, n, &sc), DDS_SCAN_COMPLETE);
    assert_int_equal(dds_http_scan_request(in, 0, &sc), DDS_SCAN_NOT_HTTP);

    const char *bad[] = {
        "GET / HTTP/1.1\nHost: h\n\n", "GET / HTTP/1.1\r\nHost: h\n", "*3\r\n$3\r\nSET\r\n",
        "\x16\x03\x01", "PRI * HTTP/2.0\r\n", "\r\nGET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\n x\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
    };
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(dds_http_scan_request(bad[i], strlen(bad[i]), &sc), DDS_SCAN_NOT_HTTP);

    /* too long: NOT_HTTP whether or not it would end later */
    {
        char *big = malloc(DDS_HTTP_MAX_HEAD + 100);
        memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
        memset(big + 19, 'a', DDS_HTTP_MAX_HEAD + 100 - 19);
        assert_int_equal(dds_http_scan_request(big, DDS_HTTP_MAX_HEAD + 100, &sc), DDS_SCAN_NOT_HTTP);
        assert_int_equal(dds_http_scan_request(big, DDS_HTTP_MAX_HEAD - 1, &sc), DDS_SCAN_PARTIAL);
        memcpy(big + DDS_HTTP_MAX_HEAD - 4, "\r\n\r\n", 4);
        assert_int_equal(dds_http_scan_request(big, DDS_HTTP_MAX_HEAD + 100, &sc), DDS_SCAN_COMPLETE);
        assert_int_equal(sc.head_len, DDS_HTTP_MAX_HEAD);
        free(big);
    }
}

static void test_scan_framing(void **state)
{
    (void)state;
    dds_http_scan sc;
    const char *in = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(dds_http_scan_request(in, strlen(in), &sc), DDS_SCAN_COMPLETE);
    assert_true(sc.chunked);
    assert_false(sc.ambiguous_framing);
    in = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
    assert_int_equal(dds_http_scan_request(in, strlen(in), &sc), DDS_SCAN_COMPLETE);
    assert_true(sc.ambiguous_framing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_no_headers_and_http10),
        cmocka_unit_test(test_pipelined_body_with_request_text),
        cmocka_unit_test(test_chunked_request),
        cmocka_unit_test(test_chunked_errors),
        cmocka_unit_test(test_not_http),
        cmocka_unit_test(test_leading_empty_lines),
        cmocka_unit_test(test_ambiguous),
        cmocka_unit_test(test_responses),
        cmocka_unit_test(test_interim_responses),
        cmocka_unit_test(test_head_response),
        cmocka_unit_test(test_tunnels),
        cmocka_unit_test(test_eof),
        cmocka_unit_test(test_boundary),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_many_headers),
        cmocka_unit_test(test_header_lookup),
        cmocka_unit_test(test_head_fields),
        cmocka_unit_test(test_line_shapes),
        cmocka_unit_test(test_cl_and_status_edges),
        cmocka_unit_test(test_null_cb_and_reuse),
        cmocka_unit_test(test_take_scanned),
        cmocka_unit_test(test_scan_complete),
        cmocka_unit_test(test_scan_context),
        cmocka_unit_test(test_scan_partial_and_not),
        cmocka_unit_test(test_scan_framing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
