/*
 * fuzz_conn.c — libFuzzer target for core/conn.c: one traced connection fed
 * whatever the peer sends.
 *
 * Server role (the main case: a traced server reading requests from anyone):
 * the input's bytes are what the server reads, in pieces of input-chosen
 * sizes; whenever requests are waiting, the "application" answers the oldest
 * one (a 200 with a small body, written through dds_conn_send_plan/_done
 * with input-chosen partial kernel counts), so spans are extracted, started,
 * tagged (core/propagation.c, core/url.c) and finished as in a real server.
 * Client role: the application writes a few fixed requests (GET, HEAD, POST
 * with a body, maybe CONNECT) through the injection path with partial kernel
 * counts, and the input's bytes are the responses it reads.
 *
 * Input: byte 0 = flags: bit 0 client role; bit 1 end with eof; bit 2 end
 * with a connection error; bit 3 shutdown(SHUT_WR) before the end; bit 4 the
 * client also sends CONNECT; bits 5-7 unused. Byte 1 = seed for the piece
 * sizes and kernel counts. The rest: the peer's bytes.
 *
 * Checked, besides no crash, leak or undefined behaviour (ASan/UBSan/LSan):
 * - the application is only ever told counts of its own bytes (send_done
 *   returns ≤ what it offered, never 0 for a non-empty write, and the sum of
 *   what it was told equals what it wrote);
 * - every span that starts also finishes by the time the connection closes
 *   (one left open would be reported as a leak);
 * - differential: the same bytes fed in one piece and in input-chosen pieces
 *   give the same finished spans (name, resource, http.url, status, error,
 *   and the trace id / parent id extracted from the request), unless more
 *   requests were pipelined than a connection follows (DDS_CONN_MAX_INFLIGHT),
 *   a server's request was CONNECT, or the bytes stopped being HTTP (then
 *   the order of reads and answers decides, see below).
 *
 * Build (see tests/fuzz/README.md, or `make fuzz`):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *     -std=gnu11 -I. -Icore -o build/fuzz/fuzz_conn tests/fuzz/fuzz_conn.c core/conn.c \
 *     core/http.c core/inject.c core/span.c core/ids.c core/propagation.c core/config.c \
 *     core/url.c core/log.c core/guard.c -Wl,-Bstatic -lpcre2-8 -ljansson -Wl,-Bdynamic -lpthread
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "conn.h"
#include "span.h"
#include "url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_conn: %s\n", what);
        abort();
    }
}

static dds_config cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static char *env[] = {"DD_TRACE_PROPAGATION_STYLE=datadog,tracecontext,b3multi,b3", "DD_SERVICE=fuzz",
                          "DD_TRACE_LOG_FILE=off", NULL};
    dds_config_load(&cfg, env, "fuzz_conn");
    dds_cfg = &cfg;
    dds_url_init(cfg.query_regexp);
    return 0;
}

/* ---- what finished -------------------------------------------------------- */

static char summary[1 << 16];
static size_t summary_len;
static int spans_finished;

static void add(const char *s)
{
    size_t n = strlen(s);
    if (summary_len + n + 1 < sizeof summary) {
        memcpy(summary + summary_len, s, n);
        summary_len += n;
        summary[summary_len++] = '|';
    }
}

static void capture(dds_trace *t)
{
    for (dds_span *s = t->finished; s; s = s->next) {
        char line[512];
        const char *status = dds_span_get_meta(s, "http.status_code");
        const char *url = dds_span_get_meta(s, "http.url");
        snprintf(line, sizeof line, "%s %s %s %s e%d", s->name, s->resource ? s->resource : "-",
                 url ? url : "-", status ? status : "-", s->error);
        add(line);
        if (t->is_continued && s->span_id == t->root_span_id) {
            snprintf(line, sizeof line, "ctx %016llx%016llx %016llx", (unsigned long long)t->trace_id_hi,
                     (unsigned long long)t->trace_id_lo, (unsigned long long)s->parent_id);
            add(line);
        }
        spans_finished++;
    }
    dds_trace_free(t);
}

/* ---- one run -------------------------------------------------------------- */

typedef struct {
    const uint8_t *seed;
    size_t nseed, pos;
} rng;

static unsigned next(rng *r)
{
    if (r->nseed == 0)
        return 0;
    unsigned v = r->seed[r->pos % r->nseed] * 2654435761u + (unsigned)r->pos * 40503u;
    r->pos++;
    return v >> 8;
}

/* The application writes buf through the hooks' protocol; the kernel
 * accepts input-chosen amounts. */
static void app_write(dds_conn *c, const char *buf, size_t len, rng *r)
{
    size_t off = 0;
    for (int guard = 0; off < len && guard < 10000; guard++) {
        struct iovec app[2];
        size_t rest = len - off, split = rest > 1 ? next(r) % rest : 0;
        int napp = 0;
        if (split) {
            app[napp++] = (struct iovec){(char *)buf + off, split};
            app[napp++] = (struct iovec){(char *)buf + off + split, rest - split};
        } else {
            app[napp++] = (struct iovec){(char *)buf + off, rest};
        }
        struct iovec out[8];
        int planned = dds_conn_send_plan(c, app, napp, out, 8);
        size_t offered = rest;
        if (planned > 0) {
            offered = 0;
            for (int i = 0; i < planned; i++)
                offered += out[i].iov_len;
        }
        size_t k = offered ? next(r) % (offered + 1) : 0;
        if (next(r) % 4 == 0)
            k = offered; /* often all of it */
        ssize_t told = dds_conn_send_done(c, app, napp, planned, (ssize_t)k, 0);
        if (told == -2)
            continue; /* only injected bytes went: write again */
        check(told >= 0 && (size_t)told <= rest, "told more than offered");
        check(told > 0 || k == 0, "told 0 for bytes the kernel took");
        off += (size_t)told;
    }
    check(off == len, "the application's bytes never all went out");
}

static const char ANSWER[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
#define ANSWER_HEAD_LEN (sizeof ANSWER - 3) /* to a HEAD request: no body */

static int max_inflight;
static int died; /* the connection stopped being followed in this run */

static void answer_waiting(dds_conn *c, rng *r)
{
    /* Each answer pops the oldest request (EV_DONE of the response). */
    for (int guard = 0; c->role == DDS_CONN_SERVER && c->nq > 0 && !c->dead && guard < 64; guard++)
        app_write(c, ANSWER, c->q[0].is_head ? ANSWER_HEAD_LEN : sizeof ANSWER - 1, r);
}

static void feed(dds_conn *c, const uint8_t *buf, size_t len)
{
    struct iovec v = {(void *)buf, len};
    dds_conn_received(c, &v, 1, len);
    if (c->nq > max_inflight)
        max_inflight = c->nq;
}

static void run(uint8_t flags, const uint8_t *seed, size_t nseed, const uint8_t *peer, size_t n,
                int pieces)
{
    rng r = {seed, nseed, 0};
    int client = flags & 1;
    dds_conn *c = dds_conn_new(client ? DDS_CONN_CLIENT : DDS_CONN_SERVER, "192.0.2.7", 8080, 1);
    if (c == NULL)
        return;
    if (client) {
        static const char reqs[] =
            "GET /a/123?token=secret HTTP/1.1\r\nHost: example.com\r\n\r\n"
            "HEAD /b HTTP/1.1\r\nHost: example.com\r\n\r\n"
            "POST /c HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 5\r\n\r\nhello";
        app_write(c, reqs, sizeof reqs - 1, &r);
        if (flags & 16) {
            static const char conn[] = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
            app_write(c, conn, sizeof conn - 1, &r);
        }
    }
    size_t off = 0;
    while (off < n) {
        size_t take = n - off;
        if (pieces && take > 1)
            take = 1 + next(&r) % take;
        feed(c, peer + off, take);
        off += take;
        answer_waiting(c, &r);
    }
    died |= c->dead;
    if (flags & 8)
        dds_conn_shutdown_write(c);
    if (flags & 2)
        dds_conn_eof(c);
    if (flags & 4)
        dds_conn_error(c, 104);
    dds_conn_close(c, "fuzz: closed");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    const uint8_t *seed = data + 1;
    const uint8_t *peer = data + 2;
    size_t n = size - 2;
    void (*saved)(dds_trace *) = dds_trace_complete_hook;
    dds_trace_complete_hook = capture;

    static char one[sizeof summary];
    summary_len = 0;
    spans_finished = 0;
    max_inflight = 0;
    died = 0;
    run(flags, seed, 1, peer, n, 0);
    size_t one_len = summary_len;
    memcpy(one, summary, one_len);

    summary_len = 0;
    run(flags, seed, 1, peer, n, 1);
    if (getenv("FUZZ_CONN_DEBUG"))
        fprintf(stderr, "one piece:   %.*s\nmany pieces: %.*s\n", (int)one_len, one, (int)summary_len, summary);
    /* A server reading pipelined requests in one piece parses what follows
     * a CONNECT as requests before the answer turns it into a tunnel; in
     * pieces, it never reads them as HTTP: both are right. Likewise, once
     * the bytes stop being HTTP, requests read earlier and not yet answered
     * end without a status, while in pieces they were answered first. */
    int tunnel = !(flags & 1) && memmem(one, one_len, "request CONNECT", 15) != NULL;
    if (max_inflight < DDS_CONN_MAX_INFLIGHT && one_len < sizeof summary - 600 && !tunnel && !died)
        check(one_len == summary_len && memcmp(one, summary, one_len) == 0,
              "one piece and many pieces finished different spans");
    dds_trace_complete_hook = saved;
    return 0;
}
