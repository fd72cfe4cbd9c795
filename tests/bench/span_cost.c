/* What one span costs, for `make bench` (scripts/bench.sh). Linked with
 * ddshim's core objects directly (no preload, no hooks): the same code the
 * hooks call, measured without the noise of a network round trip.
 *
 *   span_cost lifecycle N   N single-span traces shaped like a hiredis
 *                           command (resource, 9 meta, 3 metrics), each
 *                           started, tagged, finished and queued on this
 *                           thread, while the real writer thread encodes and
 *                           POSTs them to the agent of DD_TRACE_AGENT_URL.
 *                           In batches of 500, each followed by a flush: about
 *                           the payload a busy traced program sends (the
 *                           writer wakes when 512 spans wait), and none is
 *                           dropped by the queue's cap: every span is encoded
 *                           and sent. The figures:
 *       app_ns_per_span   this thread's CPU time per span (start→queued,
 *                         and its share of the flush requests)
 *       cpu_ns_per_span   the whole process's CPU time per span: creation
 *                         to being sent (writer thread and HTTP included)
 *       wall_ns_per_span, spans_sent, spans_dropped
 *   span_cost encode N      the encoder alone: a list of 1000 such chunks
 *                           encoded again and again for N spans in all;
 *                           prints encode_ns_per_span and spans_per_sec.
 *
 * Instructions (callgrind): in encode mode, --collect-atstart=no collects
 * only the measured loop (CALLGRIND_TOGGLE_COLLECT; natively the macro costs
 * nothing), so the count divided by N is instructions per span. Lifecycle
 * mode has no toggle (it would switch the calling thread only, not the
 * writer): run it for N and 2N spans with --separate-threads=yes and take
 * the difference per thread (scripts/bench.sh does).
 */
#define _GNU_SOURCE
#include "config.h"
#include "encode.h"
#include "guard.h"
#include "queue.h"
#include "sampler.h"
#include "span.h"
#include "url.h"
#include "writer.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <valgrind/callgrind.h>

extern char **environ;

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One span as hooks/hiredis.c makes it for `GET bench:key`. */
static void one_span(void)
{
    dds_span *s = dds_span_start("redis.command", "redis", dds_active_span(), NULL);
    if (s == NULL)
        return;
    dds_span_set_resource(s, "GET");
    dds_span_set_meta(s, "redis.raw_command", "GET bench:key");
    dds_span_set_metric(s, "redis.args_length", 2);
    dds_span_set_meta(s, "db.system", "redis");
    dds_span_set_meta(s, "component", "hiredis");
    dds_span_set_meta(s, "span.kind", "client");
    dds_span_set_metric(s, "_dd.measured", 1);
    dds_span_set_meta(s, "out.host", "127.0.0.1");
    dds_span_set_meta(s, "peer.service", "127.0.0.1");
    dds_span_set_meta(s, "_dd.peer.service.source", "out.host");
    dds_span_set_metric(s, "network.destination.port", 6379);
    dds_span_set_meta(s, "out.redis_db", "0");
    dds_span_set_meta(s, "db.redis.database_index", "0");
    dds_span_finish(s);
}

static dds_config cfg;

static void setup(void)
{
    dds_config_load(&cfg, environ, "span_cost");
    dds_cfg = &cfg;
    dds_url_init(cfg.query_regexp);
    dds_sampler_init(&cfg);
    dds_trace_decide_hook = dds_sampler_decide;
    dds_writer_rates_hook = dds_sampler_update_rates;
}

static int lifecycle(long n)
{
    dds_trace_complete_hook = dds_writer_enqueue;
    dds_writer_init(&cfg);
    dds_writer_start();
    /* Warm up: the writer's connection, the agent's rates, malloc's arenas. */
    for (int i = 0; i < 2000; i++)
        one_span();
    dds_writer_flush(10000);
    dds_writer_stats before;
    dds_writer_get_stats(&before);

    int64_t w0 = clock_ns(CLOCK_MONOTONIC), p0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    int64_t t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    for (long i = 0; i < n; i++) {
        one_span();
        if (i % 500 == 499)
            dds_writer_flush(30000);
    }
    dds_writer_flush(30000);
    int64_t t1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    int64_t w1 = clock_ns(CLOCK_MONOTONIC), p1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);

    dds_writer_stats after;
    dds_writer_get_stats(&after);
    printf("app_ns_per_span=%.1f cpu_ns_per_span=%.1f wall_ns_per_span=%.1f spans_sent=%llu "
           "spans_dropped=%llu\n",
           (double)(t1 - t0) / (double)n, (double)(p1 - p0) / (double)n,
           (double)(w1 - w0) / (double)n,
           (unsigned long long)(after.spans_sent - before.spans_sent),
           (unsigned long long)(after.spans_dropped - before.spans_dropped));
    dds_writer_stop(2000);
    return 0;
}

static dds_trace *chunks;

static void collect(dds_trace *t)
{
    t->qnext = chunks;
    chunks = t;
}

static int encode(long n)
{
    enum { K = 1000 };
    dds_trace_complete_hook = collect;
    for (int i = 0; i < K; i++)
        one_span();
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dds_encode_opts o = {.cfg = &cfg, .runtime_id = "0b7a3cbe-7f1f-4c3e-9a50-3a1f0d4e5c6b",
                         .pid = 4242};
    dds_encode_result r;
    dds_encode_traces(&sb, chunks, &o, &r); /* warm up: the buffer's size */
    long rounds = n / K > 0 ? n / K : 1;
    size_t bytes = sb.size;
    int64_t t0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    CALLGRIND_TOGGLE_COLLECT;
    for (long i = 0; i < rounds; i++)
        dds_encode_traces(&sb, chunks, &o, &r);
    CALLGRIND_TOGGLE_COLLECT;
    int64_t t1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    double per = (double)(t1 - t0) / (double)(rounds * K);
    printf("encode_ns_per_span=%.1f spans_per_sec=%.0f bytes_per_span=%.1f spans=%ld\n", per,
           1e9 / per, (double)bytes / K, rounds * K);
    msgpack_sbuffer_destroy(&sb);
    for (dds_trace *t = chunks, *next; t; t = next) {
        next = t->qnext;
        dds_trace_free(t);
    }
    return r.spans == K ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: span_cost lifecycle|encode N\n");
        return 2;
    }
    long n = atol(argv[2]);
    if (n < 1)
        n = 1;
    setup();
    if (strcmp(argv[1], "lifecycle") == 0)
        return lifecycle(n);
    if (strcmp(argv[1], "encode") == 0)
        return encode(n);
    fprintf(stderr, "span_cost: unknown mode %s\n", argv[1]);
    return 2;
}
