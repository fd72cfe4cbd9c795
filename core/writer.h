/*
 * writer.h — the background thread that sends completed traces to the Agent.
 *
 * Completed chunks arrive through dds_writer_enqueue (preload/ installs it as
 * dds_trace_complete_hook, core/span.h) and wait in core/queue.h; the calling
 * application thread only pushes, without locks. A single writer thread,
 * started on the first chunk (never in the constructor), wakes every
 * flush_interval_ms, takes the whole queue, encodes it outside any lock
 * (core/encode.h) into bodies of at most 8 MiB, and POSTs each to
 * <agent>/v0.4/traces through core/agent_http.h. Every 200 answer's body goes to
 * dds_writer_rates_hook, so core/sampler.c can follow the Agent's rates.
 *
 * Failures never reach the program: an answer other than 200 drops the payload
 * (no retry: a 4xx will not change and a 5xx means an overloaded agent); a
 * connection error is retried once at once, then dropped; everything dropped is
 * counted and logged at most every 10 s. Memory stays bounded whatever the
 * Agent does: the queue is capped, one body is at most 8 MiB (plus one chunk),
 * an answer is read into 64 KiB, and every request has a 2 s timeout.
 *
 * The thread runs with all signals blocked and dds_in_shim set (core/guard.h),
 * so its sockets pass straight through ddshim's own hooks. Fork: prepare and
 * parent take and release the writer's lock; the child starts clean (no
 * thread, empty queue, the agent connection closed, a new runtime-id) and
 * starts its own thread on its first chunk. The parent sends what was queued
 * before the fork.
 */
#ifndef DDS_WRITER_H
#define DDS_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "span.h"

#define DDS_VERSION "0.1.0"

#define DDS_WRITER_TIMEOUT_MS 2000        /* one request, normally */
#define DDS_WRITER_CONNECT_TIMEOUT_MS 1000

typedef struct dds_writer_stats {
    uint64_t payloads_ok, payloads_failed;
    uint64_t traces_sent, spans_sent;
    uint64_t spans_dropped; /* queue overflow + failed or impossible sends */
} dds_writer_stats;

/* Remember the configuration (kept, not copied: it must outlive the writer)
 * and size the queue. Starts nothing. Call once, before the first enqueue;
 * again only after dds_writer_stop. */
void dds_writer_init(const dds_config *cfg);

/* Start the thread now if it is not running. Meant for the first traced
 * operation (preload's dds_ready), so that a short program that exits right
 * after its first span (curl, redis-cli) finds the writer already up at exit.
 * Never blocks; a no-op before dds_writer_init or with tracing disabled. */
void dds_writer_start(void);

/* dds_trace_complete_hook: queue a chunk; starts the thread on the first call
 * (and on the first call after a fork). Frees the chunk when tracing is
 * disabled or dds_writer_init was not called. Never blocks. */
void dds_writer_enqueue(dds_trace *t);

/* Ask for a flush now and wait until one that started after this call has
 * finished, or timeout_ms. 0 when done, -1 on timeout. The flush's requests are
 * cut short to end by the deadline. Safe (and immediate) without a thread. */
int dds_writer_flush(int timeout_ms);

/* From the shim's exit path: dds_writer_flush(cfg->exit_timeout_ms), then,
 * if this process dropped spans or leaves some unsent, one WARN line with the
 * counts ("at exit: S spans sent, D dropped, U not sent in time"): the
 * failure log is rate-limited, this line is the total. Never joins the
 * thread; the process may exit while it is still sending. */
void dds_writer_flush_at_exit(void);

/* Stop the thread: wait for it up to timeout_ms (it finishes its current
 * request first), then forget it. What is still queued stays queued. For
 * tests and unloading; 0 when the thread ended in time or none ran. */
int dds_writer_stop(int timeout_ms);

/* pthread_atfork handlers (preload/ registers them; the child handler must run
 * after dds_id_reseed's). */
void dds_writer_atfork_prepare(void);
void dds_writer_atfork_parent(void);
void dds_writer_atfork_child(void);

void dds_writer_get_stats(dds_writer_stats *s);

/* The runtime-id sent with every span (a UUIDv4 drawn by dds_writer_init, and
 * again by a fork child's new thread). */
const char *dds_writer_runtime_id(void);

/* Sampler feedback: called on the writer thread with the body of every 200
 * answer (JSON {"rate_by_service":{...}}, NUL-terminated, at most 64 KiB).
 * NULL = ignore. Set once at start-up. */
extern void (*dds_writer_rates_hook)(const char *json, size_t len);

#endif
