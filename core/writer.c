/*
 * writer.c — the flush thread (writer.h).
 *
 * Locking: w_mu guards the flush requests (generations, deadline, stop) and
 * the thread's existence; it is never held while encoding or sending. The
 * queue itself is lock-free (queue.h), so an application thread finishing a
 * span never waits for the writer.
 */
#define _GNU_SOURCE
#include "writer.h"
#include "agent_http.h"
#include "encode.h"
#include "guard.h"
#include "ids.h"
#include "log.h"
#include "queue.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS 1000000LL
#define FAIL_LOG_INTERVAL_NS (10 * 1000 * NS_PER_MS)
#define START_RETRY_NS (1000 * NS_PER_MS)
#define KEEP_BUFFER_BYTES (1u << 20)
/* Flush early once this many spans wait: a chunk costs ~6 KiB, and a queue
 * left to fill for a whole interval at tens of thousands of spans a second
 * held tens of MiB that the heap gave back and took again at every flush
 * (page faults: most of the cost of a span; see BENCHMARKS.md). One request
 * per this many spans is cheap for the agent. */
#define WAKE_SPANS 512

void dds_span_pool_trim(void); /* core/span.c: recycled spans back to malloc */

void (*dds_writer_rates_hook)(const char *json, size_t len);

static const dds_config *w_cfg;
static char w_runtime_id[37];
static int w_new_runtime_id;       /* a fork child draws a new one on its thread */
static int w_pid;

static pthread_mutex_t w_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t w_wake_cv;   /* the writer waits here (CLOCK_MONOTONIC) */
static pthread_cond_t w_done_cv;   /* flush requesters wait here */
static pthread_t w_thread;
static int w_running;              /* atomic: the thread exists */
static int64_t w_last_start_try;   /* under w_mu: pthread_create back-off */
static uint64_t w_req_gen, w_done_gen; /* flush requests asked / served */
static int64_t w_deadline;         /* earliest deadline of pending requests; 0 none */
static int w_stop;
static int w_wake;                 /* atomic: the queue is filling up */
static int w_startup_logged;

/* Statistics, atomics: read by any thread. st_inflight: spans taken from
 * the queue by the flush under way, not yet sent or dropped. */
static uint64_t st_ok, st_failed, st_traces, st_spans, st_dropped, st_inflight;

/* The writer thread's own: failure log rate limit; queue overflow drops
 * already reported. */
static int64_t fail_last_log;
static uint64_t fail_unlogged;
static int64_t qdrop_last_log;
static uint64_t qdrop_logged;

static void stat_add(uint64_t *c, uint64_t n) { __atomic_add_fetch(c, n, __ATOMIC_RELAXED); }

static void cond_init(void)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&w_wake_cv, &a);
    pthread_cond_init(&w_done_cv, &a);
    pthread_condattr_destroy(&a);
}

static struct timespec ns_ts(int64_t ns)
{
    return (struct timespec){.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
}

void dds_writer_init(const dds_config *cfg)
{
    pthread_mutex_lock(&w_mu);
    w_cfg = cfg;
    dds_queue_set_cap(cfg ? cfg->max_queued_spans : 0);
    dds_id_uuid4(w_runtime_id);
    w_new_runtime_id = 0;
    w_pid = getpid();
    if (!__atomic_load_n(&w_running, __ATOMIC_ACQUIRE)) {
        cond_init();
        st_ok = st_failed = st_traces = st_spans = st_dropped = 0;
        fail_last_log = 0;
        fail_unlogged = 0;
    }
    pthread_mutex_unlock(&w_mu);
}

const char *dds_writer_runtime_id(void) { return w_runtime_id; }

/* ---- sending ------------------------------------------------------------ */

static void log_failure(const char *what, size_t ntraces, size_t nspans)
{
    int64_t now = dds_now_mono_ns();
    if (fail_last_log != 0 && now - fail_last_log < FAIL_LOG_INTERVAL_NS) {
        fail_unlogged++;
        return;
    }
    dds_log(DDS_LOG_WARN,
            "could not send %zu traces (%zu spans) to the agent at %s: %s; dropped"
            " (%" PRIu64 " more failed sends since the last message)",
            ntraces, nspans, w_cfg->agent_url ? w_cfg->agent_url : "?", what, fail_unlogged);
    fail_last_log = now;
    fail_unlogged = 0;
}

/* Milliseconds left before deadline (0 = none: normal), capped at cap. */
static int time_left_ms(int64_t deadline, int cap)
{
    if (deadline == 0)
        return cap;
    int64_t left = (deadline - dds_now_mono_ns()) / NS_PER_MS;
    return left < cap ? (int)left : cap;
}

/* One payload, at most one quick retry on a connection error. 0 when the
 * agent accepted it, 1 when it answered something else, -1 when it could not
 * be reached. */
static int send_payload(const char *body, size_t len, size_t ntraces, size_t nspans, int64_t deadline)
{
    char url[640], count[48], langv[48];
    if (w_cfg->agent_is_unix)
        snprintf(url, sizeof url, "http://localhost/v0.4/traces");
    else
        snprintf(url, sizeof url, "%s/v0.4/traces", w_cfg->agent_url);
    snprintf(count, sizeof count, "X-Datadog-Trace-Count: %zu", ntraces);
    snprintf(langv, sizeof langv, "Datadog-Meta-Lang-Version: %ld", (long)__STDC_VERSION__);
    const char *headers[] = {
        "Content-Type: application/msgpack",
        count,
        "Datadog-Meta-Lang: " DDS_LANGUAGE,
        langv,
        "Datadog-Meta-Tracer-Version: " DDS_VERSION,
        NULL,
    };
    char answer[DDS_HTTP_RESPONSE_MAX];
    dds_http_response rs = {.buf = answer, .cap = sizeof answer};
    int rc = DDS_HTTP_ERR_TIMEOUT;
    for (int attempt = 0; attempt < 2; attempt++) {
        int timeout = time_left_ms(deadline, DDS_WRITER_TIMEOUT_MS);
        if (timeout <= 0)
            break;
        dds_http_request rq = {
            .url = url,
            .unix_path = w_cfg->agent_is_unix ? w_cfg->agent_unix_path : NULL,
            .body = body,
            .len = len,
            .headers = headers,
            .connect_timeout_ms = timeout < DDS_WRITER_CONNECT_TIMEOUT_MS ? timeout
                                                                          : DDS_WRITER_CONNECT_TIMEOUT_MS,
            .timeout_ms = timeout,
        };
        rc = dds_http_post(&rq, &rs);
        if (rc != DDS_HTTP_ERR_CONNECT)
            break;
    }
    if (rc == DDS_HTTP_OK && rs.status == 200) {
        stat_add(&st_ok, 1);
        stat_add(&st_traces, ntraces);
        stat_add(&st_spans, nspans);
        if (dds_writer_rates_hook && rs.len > 0)
            dds_writer_rates_hook(answer, rs.len);
        DDS_DEBUG("sent %zu traces (%zu spans, %zu bytes)", ntraces, nspans, len);
        return 0;
    }
    stat_add(&st_failed, 1);
    stat_add(&st_dropped, nspans);
    char what[160];
    if (rc == DDS_HTTP_OK)
        snprintf(what, sizeof what, "HTTP %ld", rs.status);
    else
        snprintf(what, sizeof what, "%s", rs.error[0] ? rs.error : "deadline reached");
    log_failure(what, ntraces, nspans);
    return rc == DDS_HTTP_OK ? 1 : -1;
}

/* Frees n chunks; returns how many spans they held. */
/* Free up to n chunks the writer took; they stop counting against the cap. */
static size_t free_chunks(dds_trace *t, size_t n)
{
    size_t spans = 0;
    while (t && n--) {
        dds_trace *next = t->qnext;
        spans += (size_t)t->nfinished;
        dds_trace_free(t);
        t = next;
    }
    dds_queue_release(spans);
    return spans;
}

/* Spans refused by the full queue (on application threads, which never log)
 * are reported here, at most every 10 s. */
static void log_queue_drops(void)
{
    uint64_t dropped = dds_queue_dropped_spans();
    if (dropped == qdrop_logged)
        return;
    int64_t now = dds_now_mono_ns();
    if (qdrop_last_log != 0 && now - qdrop_last_log < FAIL_LOG_INTERVAL_NS)
        return;
    dds_log(DDS_LOG_WARN, "dropped %" PRIu64 " spans: more than %zu waiting for the agent"
            " (DDSHIM_MAX_QUEUED_SPANS)", dropped - qdrop_logged, w_cfg->max_queued_spans);
    qdrop_logged = dropped;
    qdrop_last_log = now;
}

static size_t count_spans(const dds_trace *t)
{
    size_t n = 0;
    for (; t; t = t->qnext)
        n += (size_t)t->nfinished;
    return n;
}

/* Send everything queued now. deadline: 0, or when the requester stops waiting. */
static void flush_once(msgpack_sbuffer *sb, int64_t deadline)
{
    log_queue_drops();
    size_t taken = 0;
    dds_trace *list = dds_queue_take_all(&taken);
    if (list == NULL) {
        dds_span_pool_trim(); /* idle: keep no spare spans */
        return;
    }
    __atomic_store_n(&st_inflight, (uint64_t)taken, __ATOMIC_RELAXED);
    for (dds_trace *t = list; t; t = t->qnext)
        dds_trace_finalize(t); /* deferred tags, then sampling (span.h) */
    dds_encode_opts o = {.cfg = w_cfg, .runtime_id = w_runtime_id, .pid = w_pid};
    int unreachable = 0; /* then the rest is dropped at once, not after a timeout each */
    while (list) {
        dds_encode_result r;
        if (unreachable || (deadline && dds_now_mono_ns() >= deadline) ||
            dds_encode_traces(sb, list, &o, &r) != 0) {
            stat_add(&st_dropped, count_spans(list));
            free_chunks(list, SIZE_MAX);
            break;
        }
        if (r.traces > 0 && send_payload(sb->data, sb->size, r.traces, r.spans, deadline) < 0)
            unreachable = 1;
        stat_add(&st_dropped, r.dropped_spans);
        dds_trace *rest = list;
        for (size_t i = 0; i < r.consumed && rest; i++)
            rest = rest->qnext;
        size_t done = free_chunks(list, r.consumed);
        taken = done < taken ? taken - done : 0;
        __atomic_store_n(&st_inflight, (uint64_t)taken, __ATOMIC_RELAXED);
        list = rest;
    }
    __atomic_store_n(&st_inflight, 0, __ATOMIC_RELAXED);
    /* A body near the cap leaves megabytes behind: give them back. */
    if (sb->alloc > KEEP_BUFFER_BYTES) {
        msgpack_sbuffer_destroy(sb);
        msgpack_sbuffer_init(sb);
    }
}

/* ---- the thread --------------------------------------------------------- */

static void startup_log(void)
{
    if (w_startup_logged || !w_cfg->startup_logs)
        return;
    w_startup_logged = 1;
    char json[8192];
    dds_config_to_json(w_cfg, json, sizeof json);
    dds_log_long(DDS_LOG_INFO, "DATADOG TRACER CONFIGURATION - ", json);
}

static void *writer_main(void *unused)
{
    (void)unused;
    dds_in_shim = 1; /* for the thread's whole life: its sockets are not traced */
    pthread_setname_np(pthread_self(), "ddshim-writer");
    if (__atomic_exchange_n(&w_new_runtime_id, 0, __ATOMIC_ACQ_REL)) {
        dds_id_uuid4(w_runtime_id);
        w_pid = getpid();
    }
    startup_log();
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int interval = w_cfg->flush_interval_ms > 0 ? w_cfg->flush_interval_ms : 1000;
    int64_t next = dds_now_mono_ns() + interval * NS_PER_MS;

    pthread_mutex_lock(&w_mu);
    while (!w_stop) {
        while (!w_stop && w_done_gen == w_req_gen && !__atomic_load_n(&w_wake, __ATOMIC_ACQUIRE)) {
            struct timespec ts = ns_ts(next);
            if (pthread_cond_timedwait(&w_wake_cv, &w_mu, &ts) == ETIMEDOUT)
                break;
        }
        if (w_stop)
            break;
        uint64_t serving = w_req_gen;
        int64_t deadline = w_deadline;
        w_deadline = 0;
        __atomic_store_n(&w_wake, 0, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&w_mu);

        flush_once(&sb, deadline);
        next = dds_now_mono_ns() + interval * NS_PER_MS;

        pthread_mutex_lock(&w_mu);
        w_done_gen = serving;
        pthread_cond_broadcast(&w_done_cv);
    }
    pthread_mutex_unlock(&w_mu);
    msgpack_sbuffer_destroy(&sb);
    dds_http_close();
    return NULL;
}

static void start_thread(void)
{
    /* Whoever holds the lock is starting it, or forking: never wait here. */
    if (pthread_mutex_trylock(&w_mu) != 0)
        return;
    int64_t now = dds_now_mono_ns();
    if (!__atomic_load_n(&w_running, __ATOMIC_ACQUIRE) &&
        (w_last_start_try == 0 || now - w_last_start_try >= START_RETRY_NS)) {
        w_last_start_try = now;
        w_stop = 0;
        /* The thread inherits the mask: no signal of the program's ever runs
         * on it, and a SIGPIPE cannot reach the program's handler. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int rc = pthread_create(&w_thread, NULL, writer_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc == 0)
            __atomic_store_n(&w_running, 1, __ATOMIC_RELEASE);
        else
            dds_log(DDS_LOG_ERROR, "cannot start the writer thread: %s", strerror(rc));
    }
    pthread_mutex_unlock(&w_mu);
}

void dds_writer_start(void)
{
    const dds_config *cfg = w_cfg;
    if (cfg != NULL && cfg->enabled && !__atomic_load_n(&w_running, __ATOMIC_ACQUIRE))
        start_thread();
}

void dds_writer_enqueue(dds_trace *t)
{
    const dds_config *cfg = w_cfg;
    if (cfg == NULL || !cfg->enabled) {
        dds_trace_free(t);
        return;
    }
    int rc = dds_queue_push(t);
    if (!__atomic_load_n(&w_running, __ATOMIC_ACQUIRE)) {
        start_thread();
        return;
    }
    /* Half full, or WAKE_SPANS waiting: flush before the interval is up
     * rather than drop or hoard. Signalled without the lock (never block
     * here); a wake-up lost in a race only means the usual interval. */
    if ((rc == 1 || (rc == 0 && dds_queue_pending_spans() >= WAKE_SPANS)) &&
        !__atomic_load_n(&w_wake, __ATOMIC_RELAXED) &&
        !__atomic_exchange_n(&w_wake, 1, __ATOMIC_ACQ_REL))
        pthread_cond_signal(&w_wake_cv);
}

int dds_writer_flush(int timeout_ms)
{
    /* Chunks can be waiting without a thread if its start lost a race with a
     * fork or pthread_create failed once: try again now. */
    if (!__atomic_load_n(&w_running, __ATOMIC_ACQUIRE) && dds_queue_pending_spans() > 0)
        dds_writer_start();
    if (!__atomic_load_n(&w_running, __ATOMIC_ACQUIRE))
        return 0;
    if (timeout_ms < 0)
        timeout_ms = 0;
    int64_t deadline = dds_now_mono_ns() + timeout_ms * NS_PER_MS;
    struct timespec ts = ns_ts(deadline);
    pthread_mutex_lock(&w_mu);
    uint64_t gen = ++w_req_gen;
    if (w_deadline == 0 || deadline < w_deadline)
        w_deadline = deadline;
    pthread_cond_signal(&w_wake_cv);
    while (w_done_gen < gen && __atomic_load_n(&w_running, __ATOMIC_ACQUIRE))
        if (pthread_cond_timedwait(&w_done_cv, &w_mu, &ts) == ETIMEDOUT)
            break;
    int done = w_done_gen >= gen;
    pthread_mutex_unlock(&w_mu);
    return done ? 0 : -1;
}

void dds_writer_flush_at_exit(void)
{
    const dds_config *cfg = w_cfg;
    if (cfg == NULL)
        return;
    dds_writer_flush(cfg->exit_timeout_ms > 0 ? cfg->exit_timeout_ms : 0);
    /* The failure log is rate-limited: say once what this process lost. */
    dds_writer_stats s;
    dds_writer_get_stats(&s);
    uint64_t unsent = __atomic_load_n(&st_inflight, __ATOMIC_RELAXED) + dds_queue_pending_spans();
    if (s.spans_dropped > 0 || unsent > 0)
        dds_log(DDS_LOG_WARN, "at exit: %" PRIu64 " spans sent, %" PRIu64 " dropped, %" PRIu64
                " not sent in time", s.spans_sent, s.spans_dropped, unsent);
}

int dds_writer_stop(int timeout_ms)
{
    pthread_mutex_lock(&w_mu);
    if (!__atomic_load_n(&w_running, __ATOMIC_ACQUIRE)) {
        pthread_mutex_unlock(&w_mu);
        return 0;
    }
    w_stop = 1;
    pthread_cond_signal(&w_wake_cv);
    pthread_mutex_unlock(&w_mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* pthread_timedjoin_np counts in CLOCK_REALTIME */
    int64_t end = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + (int64_t)timeout_ms * NS_PER_MS;
    ts = ns_ts(end);
    int rc = pthread_timedjoin_np(w_thread, NULL, &ts);
    if (rc != 0)
        pthread_detach(w_thread);
    pthread_mutex_lock(&w_mu);
    __atomic_store_n(&w_running, 0, __ATOMIC_RELEASE);
    w_last_start_try = 0;
    pthread_cond_broadcast(&w_done_cv);
    pthread_mutex_unlock(&w_mu);
    return rc == 0 ? 0 : -1;
}

/* ---- fork --------------------------------------------------------------- */

void dds_writer_atfork_prepare(void)
{
    pthread_mutex_lock(&w_mu);
}

void dds_writer_atfork_parent(void)
{
    pthread_mutex_unlock(&w_mu);
}

void dds_writer_atfork_child(void)
{
    /* Only this thread exists: re-create the lock rather than unlock a copy. */
    pthread_mutex_init(&w_mu, NULL);
    cond_init();
    __atomic_store_n(&w_running, 0, __ATOMIC_RELAXED);
    w_last_start_try = 0;
    w_req_gen = w_done_gen = 0;
    w_deadline = 0;
    w_stop = 0;
    w_wake = 0;
    w_new_runtime_id = 1;
    st_ok = st_failed = st_traces = st_spans = st_dropped = st_inflight = 0;
    fail_last_log = 0;
    fail_unlogged = 0;
    qdrop_last_log = 0;
    qdrop_logged = 0;
    dds_queue_reset_after_fork();
    dds_http_atfork_child();
}

void dds_writer_get_stats(dds_writer_stats *s)
{
    s->payloads_ok = __atomic_load_n(&st_ok, __ATOMIC_RELAXED);
    s->payloads_failed = __atomic_load_n(&st_failed, __ATOMIC_RELAXED);
    s->traces_sent = __atomic_load_n(&st_traces, __ATOMIC_RELAXED);
    s->spans_sent = __atomic_load_n(&st_spans, __ATOMIC_RELAXED);
    s->spans_dropped = __atomic_load_n(&st_dropped, __ATOMIC_RELAXED) + dds_queue_dropped_spans();
}
