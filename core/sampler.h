/*
 * sampler.h — the trace sampling decision (wire spec §4).
 *
 * core/span.c calls dds_sampler_decide (through dds_trace_decide_hook) on the
 * local root, once per trace, before the first injection or when the chunk
 * completes. An extracted priority is kept; otherwise the user's rules
 * (DD_TRACE_SAMPLING_RULES, then DD_TRACE_SAMPLE_RATE as a catch-all) are
 * tried in order, the first match sampling by the Knuth hash of the trace id
 * and a rate limiter (DD_TRACE_RATE_LIMIT); with no match the agent's
 * per-service rates apply, which the writer thread feeds in from every agent
 * answer (dds_sampler_update_rates). The result goes into dds_trace.sampling,
 * which core/encode.c turns into _sampling_priority_v1, _dd.p.dm, _dd.*_psr and
 * _dd.p.ksr, and core/propagation.c into outgoing headers.
 *
 * Threads: init runs once before any decision; decide runs on application
 * threads and never allocates; update_rates runs on the writer thread. The
 * rates table is swapped under a mutex held only for a pointer swap or a
 * lookup; the limiter has its own short mutex. preload/ should call the
 * atfork functions below so a fork never inherits one of them locked.
 */
#ifndef DDS_SAMPLER_H
#define DDS_SAMPLER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "span.h"

/* Parse cfg->sampling_rules_json (a JSON array of objects with service, name,
 * resource, tags, sample_rate; "provenance" is accepted and ignored), append
 * cfg->sample_rate as a catch-all rule when set, size the limiter with
 * cfg->rate_limit. A bad rules value → -1 and no rules from it (the sample
 * rate rule still applies); the caller logs. May be called again (tests), but
 * not while another thread decides. */
int dds_sampler_init(const dds_config *cfg);
/* Release what init allocated (tests, leak checkers). */
void dds_sampler_shutdown(void);

/* Fill t->sampling (decided = 1; unset rates are -1). Service and env for
 * matching are dds_cfg's; name and resource are root's (resource defaults to
 * the name); rule tags are looked up in root's meta. root may be NULL. */
void dds_sampler_decide(dds_trace *t, const dds_span *root);

/* The agent's answer: {"rate_by_service":{"service:a,env:b":0.5,...}}. The
 * whole map replaces the previous one. A body without rate_by_service (the
 * agent's "{}" when nothing changed), invalid JSON, or any rate that is not a
 * number in [0,1] leaves the previous map in place. */
void dds_sampler_update_rates(const char *json, size_t len);

/* Knuth hash of the low 64 bits of a trace id, and the keep test (§4.3). */
uint64_t dds_knuth_hash(uint64_t trace_id_lo);
int dds_sampled_by_rate(uint64_t trace_id_lo, double rate);

/* Token bucket (§4.5): capacity ceil(per_second), one token every
 * 1/per_second s, starting full. effective_rate (may be NULL) = mean of the
 * allowed/requested ratios of the 9 previous seconds (1.0 for a second with no
 * request) and of the current one. The clock is the caller's (monotonic ns),
 * so tests are deterministic. per_second <= 0 or NaN means 100. Thread-safe. */
typedef struct dds_limiter {
    pthread_mutex_t mu;
    int64_t capacity;
    int64_t tokens;
    int64_t interval_ns;     /* one token per interval */
    int64_t next_refill_ns;
    int64_t second;          /* now_ns / 1e9 of the current window */
    int64_t allowed, requested; /* in the current second */
    double prev[9];          /* ratios of the previous seconds, prev[0] newest */
} dds_limiter;

void dds_limiter_init(dds_limiter *l, double per_second, int64_t now_ns);
int dds_limiter_allow(dds_limiter *l, int64_t now_ns, double *effective_rate);

/* Glob with '*' (any run) and '?' (one char), ASCII case-insensitive, no
 * escapes. Iterative with one backtrack point: O(len(pattern) * len(s)) at
 * worst, never exponential. NULL matches as "". */
int dds_glob_match(const char *pattern, const char *s);

/* Test seam: the monotonic clock the rules' limiter uses (NULL = the real
 * CLOCK_MONOTONIC). */
void dds_sampler_set_clock(int64_t (*now_ns)(void));

/* pthread_atfork handlers for the sampler's two mutexes: prepare takes both,
 * parent and child release them. */
void dds_sampler_atfork_prepare(void);
void dds_sampler_atfork_parent(void);
void dds_sampler_atfork_child(void);

#endif
