/*
 * span.h — spans and the local trace segments that own them.
 *
 * A dds_span is one timed operation (an HTTP request, a SQL statement, a Redis
 * command). Every span belongs to a dds_trace: the part of a distributed trace
 * that lives in this process. The trace holds the 128-bit trace id, the
 * propagated context (context.h), the sampling decision, and the spans that have
 * finished. When its last open span finishes, the whole chunk goes to
 * dds_trace_complete_hook (preload/ sets it to the queue of core/queue.h; tests
 * capture it). Service, env, version, DD_TAGS, language, runtime-id and
 * process_id are not stored per span: core/encode.c adds them when it encodes.
 *
 * Threads: a span is written by one thread at a time (the hooks guarantee it;
 * once its chunk completes, that is the writer, which runs the deferred work
 * of dds_span_defer); the trace's list and counters are under the trace's own
 * lock (dds_trace_lock). Nothing here
 * interposes or knows about file descriptors.
 */
#ifndef DDS_SPAN_H
#define DDS_SPAN_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "context.h"
#include "lock.h"

/* Sampling mechanisms (_dd.p.dm = -<n>), wire spec §4.1. */
enum { DDS_MECH_NONE = -1, DDS_MECH_DEFAULT = 0, DDS_MECH_AGENT_RATE = 1,
       DDS_MECH_RULE = 3, DDS_MECH_MANUAL = 4 };

typedef struct dds_sampling {
    int decided;
    int priority;      /* DDS_PRIO_* */
    int mechanism;     /* DDS_MECH_*; NONE when the decision was extracted */
    double rule_psr;   /* < 0: not set */
    double agent_psr;
    double limit_psr;
    double ksr;        /* rate for _dd.p.ksr; < 0: not set */
} dds_sampling;

typedef struct dds_meta {
    const char *key; /* static unless key_owned */
    char *val;       /* owned */
    uint32_t vlen;   /* strlen(val): the encoder needs no strlen */
    int key_owned;
} dds_meta;

typedef struct dds_metric {
    const char *key; /* static */
    double val;
} dds_metric;

struct dds_trace;
struct dds_span;
struct dds_tagset;

/* Work a hook leaves to the writer thread (dds_span_defer): it runs once,
 * with the bytes the hook saved, before the chunk's sampling decision and
 * encoding. data is a private copy and not aligned. */
typedef void (*dds_span_finalize_fn)(struct dds_span *s, const void *data, size_t len);

typedef struct dds_span {
    struct dds_trace *trace;
    struct dds_span *next;   /* in the trace's finished list */
    uint64_t span_id;
    uint64_t parent_id;      /* 0 for a root */
    int64_t start_ns;        /* wall clock, ns since the epoch */
    int64_t mono_start_ns;   /* CLOCK_MONOTONIC, for the duration */
    int64_t duration_ns;
    int32_t error;
    int finished;
    const char *name;        /* static */
    const char *type;        /* static */
    char *resource;          /* owned; NULL = name */
    dds_meta *meta;
    int nmeta, capmeta;
    dds_metric *metrics;
    int nmetrics, capmetrics;
    uint64_t keys;                 /* bit dds_key_bit(k) of every meta key k: most lookups stop here */
    uint64_t mkeys;                /* the same for the metrics' keys */
    struct dds_tagset *tagset;     /* shared tags (core/tagset.h), or NULL; a reference */
    dds_span_finalize_fn finalize; /* deferred work, or NULL */
    void *fdata;                   /* its bytes: in the arena, or owned */
    size_t flen;
} dds_span;

typedef struct dds_trace {
    int mu;                     /* the lock (dds_trace_lock): list, counters, decision */
    struct dds_trace *qnext;    /* used by core/queue.c */
    uint64_t trace_id_hi, trace_id_lo;
    uint64_t root_span_id;      /* the local root: the first span of this segment */
    int open_spans;             /* started, not yet finished */
    int nfinished;
    dds_span *finished;         /* finished spans, newest first */
    dds_span *finished_tail;
    const dds_trace_context *ctx; /* origin, _dd.p.* tags, tracestate to carry on:
                                   * a right-sized copy, or dds_context_none */
    dds_sampling sampling;
    int is_continued;           /* the root continues a remote parent */
    int completed;              /* handed to the complete hook; no new children */
    int finalized;              /* dds_trace_finalize ran */
    int refs;                   /* 1 for the chunk itself + 1 per active-stack entry */
} dds_trace;

/* One bit of 64 for a tag key, from its length and its first, middle and
 * last two bytes: a set of keys as a mask, so that most lookups end without
 * a strcmp (span meta and metrics). Tells apart families with a common
 * prefix (http.method / http.url / http.status_code, error.message /
 * error.type) that a hash of the first bytes did not. For the string
 * literals hooks pass, the compiler works it out (inline, strlen of a
 * literal). */
static inline __attribute__((always_inline)) uint64_t dds_key_bit(const char *k)
{
    size_t n = __builtin_strlen(k);
    unsigned h = (unsigned)n * 0x9E37u;
    if (n) {
        h += (unsigned char)k[0] * 31u;
        h = h * 31 + (unsigned char)k[n - 1];
        if (n > 2)
            h = h * 31 + (unsigned char)k[n - 2];
        h = h * 31 + (unsigned char)k[n / 2];
    }
    h ^= h >> 7;
    h ^= h >> 13;
    return 1ULL << (h & 63);
}

/* Start a span. parent: a local parent (same trace). Else remote: an extracted
 * context to continue (trace id, parent id, priority, tags, origin). Else a new
 * trace. name and type must be static strings. Returns NULL only when out of
 * memory (the caller then simply does not trace). */
dds_span *dds_span_start(const char *name, const char *type, dds_span *parent,
                         const dds_trace_context *remote);
/* Like dds_span_start but with an explicit start time (ns since the epoch and
 * monotonic), for spans whose start was observed before they were created. */
dds_span *dds_span_start_at(const char *name, const char *type, dds_span *parent,
                            const dds_trace_context *remote, int64_t wall_ns, int64_t mono_ns);

/* Tags. key must be static (use _dyn for computed keys). val is copied.
 * Setting an existing key replaces its value. dds_span_set_meta and _n are
 * inline so that, for the string literals hooks pass, the key's bit and the
 * value's length are worked out by the compiler (both run per span).
 * dds_span_put_meta is theirs only: s, key and val must not be NULL. */
void dds_span_put_meta(dds_span *s, const char *key, uint64_t key_bit, const char *val,
                       size_t len);
static inline __attribute__((always_inline)) void
dds_span_set_meta_n(dds_span *s, const char *key, const char *val, size_t len)
{
    if (s && key && val)
        dds_span_put_meta(s, key, dds_key_bit(key), val, len);
}
static inline __attribute__((always_inline)) void
dds_span_set_meta(dds_span *s, const char *key, const char *val)
{
    if (s && key && val)
        dds_span_put_meta(s, key, dds_key_bit(key), val, __builtin_strlen(val));
}
void dds_span_set_meta_dyn(dds_span *s, const char *key, const char *val);
/* The span's own tags, then its tag set's: what the encoder will send. */
const char *dds_span_get_meta(const dds_span *s, const char *key);
void dds_span_put_metric(dds_span *s, const char *key, uint64_t key_bit, double val);
static inline __attribute__((always_inline)) void
dds_span_set_metric(dds_span *s, const char *key, double val)
{
    if (key)
        dds_span_put_metric(s, key, dds_key_bit(key), val);
}
int dds_span_get_metric(const dds_span *s, const char *key, double *val);

/* Give the span a set of shared tags (core/tagset.h), as if each were set on
 * it, except that the span's own tags of the same keys win whenever they are
 * set. At most one set: another replaces it. _set takes a reference of its
 * own; _take is handed the caller's. The span releases it when it is freed
 * (sent or dropped). */
void dds_span_set_tagset(dds_span *s, struct dds_tagset *ts);
void dds_span_take_tagset(dds_span *s, struct dds_tagset *ts);
void dds_span_set_resource(dds_span *s, const char *res);
void dds_span_set_resource_n(dds_span *s, const char *res, size_t len);
/* error = 1 and error.message (may be NULL); msg is truncated to 1 KiB. */
void dds_span_set_error(dds_span *s, const char *msg);

/* Leave work to the writer thread: fn(s, copy of data, len) runs once, in
 * dds_trace_finalize, before the chunk is sampled and encoded. For what is
 * the same for every span of a connection or can be worked out later (the
 * tags of a database client span, the resource from a command's bytes):
 * the application thread then only copies bytes. Sampling rules see the
 * tags fn sets, since a chunk that completes undecided is decided after.
 * A span has at most one: a second call replaces the first. Returns 0, or
 * -1 when out of memory (fn will not run). */
int dds_span_defer(dds_span *s, dds_span_finalize_fn fn, const void *data, size_t len);

/* The copy dds_span_defer keeps, writable by the span's thread until the
 * span finishes (for what the hook learns after deferring: a row count);
 * NULL when no deferred work is pending (none was left, or it ran). */
void *dds_span_deferred_data(dds_span *s);

/* Run the span's deferred work now, on this thread, if it has not run yet:
 * for a hook that needs its result before the chunk completes (an error
 * message checked against the resource). dds_span_finish_at does the same
 * for a span the sampling decision is made on. */
void dds_span_run_deferred(dds_span *s);

/* Finish: sets the duration; the span must not be used afterwards. When it was
 * the trace's last open span, the chunk is handed to dds_trace_complete_hook. */
void dds_span_finish(dds_span *s);
void dds_span_finish_at(dds_span *s, int64_t mono_ns);

/* An empty context: what a trace with nothing to carry points at. */
extern const dds_trace_context dds_context_none;

/* The trace's context, made writable: when it is dds_context_none, a
 * full-size empty one is allocated first (so tags may be added); a copy made
 * from an extracted context is right-sized, so add no tags to that. NULL if
 * out of memory. */
dds_trace_context *dds_trace_ctx_mut(dds_trace *t);

/* Make the sampling decision now if it is not made yet (before the first
 * injection, or when the first span of a chunk finishes while others are
 * still open). Calls dds_trace_decide_hook. */
void dds_trace_decide(dds_trace *t, const dds_span *root);

/* The trace's lock: one word (core/lock.h), held only briefly (never
 * across a system call; on the writer, dds_trace_finalize's deferred work). */
static inline void dds_trace_lock(dds_trace *t) { dds_spin_lock(&t->mu); }
static inline void dds_trace_unlock(dds_trace *t) { dds_spin_unlock(&t->mu); }

/* dds_trace_decide with the trace's lock already held (for a caller that
 * needs the lock afterwards anyway: one lock pair instead of two). */
void dds_trace_decide_locked(dds_trace *t, const dds_span *root);

/* For a completed chunk, on the thread that encodes it (the writer): run
 * the spans' deferred work (dds_span_defer), then make the sampling
 * decision if nothing made it yet (a chunk whose spans all finished at
 * once, and that injected nothing, is decided here rather than on the
 * application thread). Idempotent; under the trace's lock, since a late
 * child of the chunk's root (dds_span_start_at) finalizes it first on its
 * own thread when it gets there before the writer. */
void dds_trace_finalize(dds_trace *t);

/* Release the chunk's reference to a completed trace (the writer calls this
 * after encoding, the queue when it drops one). The memory goes when no
 * thread's active stack still points into it. */
void dds_trace_free(dds_trace *t);

/* Hooks, set once at start-up: where completed chunks go, and who decides
 * sampling (core/sampler.c). Defaults: free the chunk; priority AUTO_KEEP,
 * mechanism DEFAULT, agent_psr 1. */
extern void (*dds_trace_complete_hook)(dds_trace *t);
extern void (*dds_trace_decide_hook)(dds_trace *t, const dds_span *root);

/* The span active on this thread: new spans started without an explicit parent
 * by the hooks become its children. A small per-thread stack. An entry pins its
 * trace (refs), so a span finished by another thread never dangles here: it is
 * dropped the next time this thread looks. A child of a trace that has already
 * completed starts a new chunk of the same trace. */
dds_span *dds_active_span(void);
void dds_active_push(dds_span *s);
void dds_active_remove(dds_span *s); /* remove wherever it is in the stack */

/* Clocks. */
int64_t dds_now_wall_ns(void);
int64_t dds_now_mono_ns(void);

#endif
