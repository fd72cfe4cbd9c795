/* See span.h. */
#include "span.h"
#include "bytes.h"
#include "config.h"
#include "ids.h"
#include "tagset.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DDS_ERROR_MSG_MAX 1024
#define DDS_ACTIVE_MAX 16

/* A span and, in the same allocation, room for what hooks usually give it:
 * meta and metric arrays and a small arena for the meta values and the
 * resource. One malloc per span instead of one per tag; what does not fit
 * (many tags, long values) falls back to malloc. Spans are only made here,
 * so every dds_span is the head of a span_box. */
#define SPAN_META_INLINE 12
#define SPAN_METRICS_INLINE 4
#define SPAN_ARENA 384

typedef struct span_box {
    dds_span s;
    dds_meta meta[SPAN_META_INLINE];
    dds_metric metrics[SPAN_METRICS_INLINE];
    size_t used;
    int heap;       /* strings malloc'd (did not fit the arena): span_free looks for them */
    char arena[SPAN_ARENA];
} span_box;

static span_box *box_of(const dds_span *s) { return (span_box *)(void *)s; }

#define key_bit dds_key_bit

static int in_arena(const dds_span *s, const char *p)
{
    const span_box *b = box_of(s);
    return p >= b->arena && p < b->arena + SPAN_ARENA;
}

/* Out of the arena: a malloc'd copy, which span_free looks for. */
static __attribute__((noinline, cold)) char *span_strdup_heap(dds_span *s, const char *val, size_t len)
{
    char *v = malloc(len + 1);
    if (v == NULL)
        return NULL;
    box_of(s)->heap = 1;
    memcpy(v, val, len);
    v[len] = '\0';
    return v;
}

/* A copy of val[0..len) plus NUL, in the arena when it fits. */
static inline __attribute__((always_inline)) char *span_strdup(dds_span *s, const char *val, size_t len)
{
    span_box *b = box_of(s);
    if (__builtin_expect(len >= SPAN_ARENA - b->used, 0))
        return span_strdup_heap(s, val, len);
    char *v = b->arena + b->used;
    b->used += len + 1;
    dds_copy_bytes(v, val, len);
    v[len] = '\0';
    return v;
}

static void span_strfree(dds_span *s, char *p)
{
    if (p && !in_arena(s, p))
        free(p);
}

/* Recycled traces and span boxes. The writer thread frees whole payloads of
 * chunks at once; given back to malloc, that memory merged into the top of
 * the heap and was returned to the kernel, and the application thread then
 * faulted it in again: about 1.5 page faults per span, the biggest cost of a
 * span (tests/bench, BENCHMARKS.md). Up to POOL_MAX of each are kept for
 * reuse instead. The lock is only ever tried, never waited for: a busy pool
 * means plain malloc/free, and a fork child that inherited it held simply
 * never uses it. dds_span_pool_trim() (the writer, when it finds nothing to
 * send) gives everything back, so an idle process keeps nothing. Under
 * AddressSanitizer and ThreadSanitizer every free is real, so that a
 * use-after-free (or a use after recycling) stays visible as one. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DDS_NO_POOLS 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(DDS_NO_POOLS)
#define POOL_MAX 0
#else
#define POOL_MAX 512
#endif

typedef struct pool {
    int lock;
    int n;
    void *head; /* objects linked through their first word */
} pool;

static pool trace_pool, box_pool;

static int pool_trylock(pool *p) { return !__atomic_exchange_n(&p->lock, 1, __ATOMIC_ACQUIRE); }
static void pool_unlock(pool *p) { __atomic_store_n(&p->lock, 0, __ATOMIC_RELEASE); }

static void *pool_get(pool *p, size_t size)
{
    void *o = NULL;
    if (__atomic_load_n(&p->n, __ATOMIC_RELAXED) > 0 && pool_trylock(p)) {
        o = p->head;
        if (o) {
            p->head = *(void **)o;
            __atomic_store_n(&p->n, p->n - 1, __ATOMIC_RELAXED);
        }
        pool_unlock(p);
    }
    return o ? o : malloc(size);
}

static void pool_put(pool *p, void *o)
{
    if (__atomic_load_n(&p->n, __ATOMIC_RELAXED) < POOL_MAX && pool_trylock(p)) {
        if (p->n < POOL_MAX) {
            *(void **)o = p->head;
            p->head = o;
            __atomic_store_n(&p->n, p->n + 1, __ATOMIC_RELAXED);
            o = NULL;
        }
        pool_unlock(p);
    }
    free(o);
}

static void pool_drain(pool *p)
{
    if (__atomic_load_n(&p->n, __ATOMIC_RELAXED) == 0 || !pool_trylock(p))
        return;
    void *o = p->head;
    p->head = NULL;
    __atomic_store_n(&p->n, 0, __ATOMIC_RELAXED);
    pool_unlock(p);
    while (o) {
        void *next = *(void **)o;
        free(o);
        o = next;
    }
}

/* Declared here rather than in span.h (core/writer.c declares it too). */
void dds_span_pool_trim(void);
void dds_span_pool_trim(void)
{
    pool_drain(&trace_pool);
    pool_drain(&box_pool);
}

static void default_complete(dds_trace *t) { dds_trace_free(t); }

static void default_decide(dds_trace *t, const dds_span *root)
{
    (void)root;
    t->sampling.decided = 1;
    t->sampling.priority = DDS_PRIO_AUTO_KEEP;
    t->sampling.mechanism = DDS_MECH_DEFAULT;
    t->sampling.agent_psr = 1.0;
}

void (*dds_trace_complete_hook)(dds_trace *t) = default_complete;
void (*dds_trace_decide_hook)(dds_trace *t, const dds_span *root) = default_decide;

int64_t dds_now_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t dds_now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

const dds_trace_context dds_context_none;

/* A right-sized heap copy of c (dds_context_size bytes). */
static dds_trace_context *context_copy(const dds_trace_context *c)
{
    size_t n = dds_context_size(c);
    dds_trace_context *d = malloc(n);
    if (d)
        memcpy(d, c, n);
    return d;
}

static void context_release(const dds_trace_context *c)
{
    if (c && c != &dds_context_none)
        free((void *)c);
}

dds_trace_context *dds_trace_ctx_mut(dds_trace *t)
{
    const dds_trace_context *cur = __atomic_load_n(&t->ctx, __ATOMIC_ACQUIRE);
    if (cur != &dds_context_none)
        return (dds_trace_context *)cur;
    /* Full size: the caller may add tags. */
    dds_trace_context *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    if (!__atomic_compare_exchange_n(&t->ctx, &cur, c, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        free(c); /* another thread made one first */
        return (dds_trace_context *)cur;
    }
    return c;
}

static void finalize_locked(dds_trace *t);

/* A new trace: remote's ids, or new ones (then *span_id gets the root's id
 * too, drawn in the same call; wall_ns is its start, the trace id's time). */
static dds_trace *trace_new(const dds_trace_context *remote, int64_t wall_ns, uint64_t *span_id)
{
    dds_trace *t = pool_get(&trace_pool, sizeof *t);
    if (t == NULL)
        return NULL;
    memset(t, 0, sizeof *t);
    t->ctx = &dds_context_none; /* memset left the lock free */
    t->refs = 1;
    t->sampling.mechanism = DDS_MECH_NONE;
    t->sampling.rule_psr = t->sampling.agent_psr = t->sampling.limit_psr = t->sampling.ksr = -1;
    if (remote != NULL) {
        if (dds_context_has_extras(remote)) {
            const dds_trace_context *c = context_copy(remote);
            if (c == NULL) {
                pool_put(&trace_pool, t);
                return NULL;
            }
            t->ctx = c;
        }
        t->trace_id_hi = remote->trace_id_hi;
        t->trace_id_lo = remote->trace_id_lo;
        t->is_continued = remote->trace_id_lo != 0 || remote->trace_id_hi != 0;
        if (remote->has_priority) {
            t->sampling.decided = 1;
            t->sampling.priority = remote->priority;
        }
    }
    if (!t->is_continued) {
        int use_128 = dds_cfg ? dds_cfg->trace_id_128 : 1;
        dds_id_root(use_128, wall_ns, &t->trace_id_hi, &t->trace_id_lo, span_id);
    }
    return t;
}

dds_span *dds_span_start_at(const char *name, const char *type, dds_span *parent,
                            const dds_trace_context *remote, int64_t wall_ns, int64_t mono_ns)
{
    span_box *box = pool_get(&box_pool, sizeof *box);
    if (box == NULL)
        return NULL;
    dds_span *s = &box->s;
    *s = (dds_span){.meta = box->meta, .capmeta = SPAN_META_INLINE, .metrics = box->metrics,
                    .capmetrics = SPAN_METRICS_INLINE};
    box->used = 0;
    box->heap = 0;
    dds_trace *t = NULL;
    if (parent != NULL) {
        t = parent->trace;
        s->parent_id = parent->span_id;
        dds_trace_lock(t);
        if (!t->completed) {
            t->open_spans++;
            dds_trace_unlock(t);
            goto started;
        }
        /* The parent's chunk is gone: continue the same trace in a new chunk,
         * with its decision (made now, after the chunk's deferred work, if it
         * was left to the writer). */
        finalize_locked(t);
        dds_trace_context c;
        memcpy(&c, t->ctx, dds_context_size(t->ctx));
        c.trace_id_hi = t->trace_id_hi;
        c.trace_id_lo = t->trace_id_lo;
        c.parent_id = parent->span_id;
        c.has_priority = t->sampling.decided;
        c.priority = t->sampling.priority;
        dds_sampling smp = t->sampling;
        dds_trace_unlock(t);
        t = trace_new(&c, wall_ns, &s->span_id);
        if (t == NULL) {
            pool_put(&box_pool, box);
            return NULL;
        }
        t->sampling = smp;
    } else {
        t = trace_new(remote, wall_ns, &s->span_id);
        if (t == NULL) {
            pool_put(&box_pool, box);
            return NULL;
        }
        if (t->is_continued)
            s->parent_id = remote->parent_id;
    }
    /* A new trace: no other thread can see it yet, so no lock. Its root's
     * id came with the trace id, unless the trace continues another. */
    if (s->span_id == 0)
        s->span_id = dds_id_span();
    t->root_span_id = s->span_id;
    t->open_spans++;
started:
    s->trace = t;
    if (s->span_id == 0)
        s->span_id = dds_id_span();
    s->name = name;
    s->type = type;
    s->start_ns = wall_ns;
    s->mono_start_ns = mono_ns;
    return s;
}

dds_span *dds_span_start(const char *name, const char *type, dds_span *parent,
                         const dds_trace_context *remote)
{
    return dds_span_start_at(name, type, parent, remote, dds_now_wall_ns(), dds_now_mono_ns());
}

static dds_meta *meta_find_bit(const dds_span *s, const char *key, uint64_t bit)
{
    if (!(s->keys & bit))
        return NULL;
    for (int i = 0; i < s->nmeta; i++) {
        const char *k = s->meta[i].key;
        if (k == key || (k[0] == key[0] && strcmp(k, key) == 0))
            return &s->meta[i];
    }
    return NULL;
}

/* Double the capacity of an array that starts inline (in the span's box) and
 * moves to the heap when it outgrows it. */
static void *grow(void *arr, const void *inline_arr, int *cap, size_t elem)
{
    int ncap = *cap * 2;
    void *p;
    if (arr == inline_arr) {
        p = malloc((size_t)ncap * elem);
        if (p)
            memcpy(p, arr, (size_t)*cap * elem);
    } else {
        p = realloc(arr, (size_t)ncap * elem);
    }
    if (p)
        *cap = ncap;
    return p;
}

static __attribute__((noinline)) void meta_put(dds_span *s, const char *key, uint64_t bit,
                                               int key_owned, const char *val, size_t len)
{
    char *v = span_strdup(s, val, len);
    if (v == NULL)
        return;
    dds_meta *m = meta_find_bit(s, key, bit);
    if (m != NULL) {
        span_strfree(s, m->val);
        m->val = v;
        m->vlen = (uint32_t)len;
        return;
    }
    if (s->nmeta == s->capmeta) {
        dds_meta *nm = grow(s->meta, box_of(s)->meta, &s->capmeta, sizeof *nm);
        if (nm == NULL) {
            span_strfree(s, v);
            return;
        }
        s->meta = nm;
    }
    const char *k = key;
    if (key_owned) {
        k = span_strdup(s, key, strlen(key));
        if (k == NULL) {
            span_strfree(s, v);
            return;
        }
    }
    s->meta[s->nmeta++] = (dds_meta){.key = k, .val = v, .vlen = (uint32_t)len, .key_owned = key_owned};
    s->keys |= bit;
}

void dds_span_put_meta(dds_span *s, const char *key, uint64_t bit, const char *val, size_t len)
{
    /* s, key and val are not NULL: the inline setters of span.h, its only
     * callers, test them. The usual case, without meta_put's generality: a
     * key the span does not have yet (its bit is not set), a value of up to
     * 32 bytes (no call, so no stack frame), room in the array and the
     * arena. The same result: appended, the value copied into the arena. */
    span_box *b = box_of(s);
    int n = s->nmeta;
    size_t used = b->used;
    if (__builtin_expect(!(s->keys & bit) && n < s->capmeta && len <= 32 && len < SPAN_ARENA - used, 1)) {
        char *v = b->arena + used;
        b->used = used + len + 1;
        dds_copy_bytes(v, val, len);
        v[len] = '\0';
        s->meta[n] = (dds_meta){.key = key, .val = v, .vlen = (uint32_t)len};
        s->nmeta = n + 1;
        s->keys |= bit;
        return;
    }
    meta_put(s, key, bit, 0, val, len);
}

void dds_span_set_meta_dyn(dds_span *s, const char *key, const char *val)
{
    if (s && key && val)
        meta_put(s, key, key_bit(key), 1, val, strlen(val));
}

const char *dds_span_get_meta(const dds_span *s, const char *key)
{
    if (s == NULL || key == NULL)
        return NULL;
    uint64_t bit = key_bit(key);
    const dds_meta *m = meta_find_bit(s, key, bit);
    if (m)
        return m->val;
    const dds_tagset_ent *t = dds_tagset_find_meta(s->tagset, key, bit);
    return t ? t->val : NULL;
}

void dds_span_put_metric(dds_span *s, const char *key, uint64_t bit, double val)
{
    if (s == NULL || key == NULL)
        return;
    span_box *b = box_of(s);
    if (s->mkeys & bit) {
        for (int i = 0; i < s->nmetrics; i++) {
            const char *k = s->metrics[i].key;
            if (k == key || (k[0] == key[0] && strcmp(k, key) == 0)) {
                s->metrics[i].val = val;
                return;
            }
        }
    }
    if (s->nmetrics == s->capmetrics) {
        dds_metric *nm = grow(s->metrics, b->metrics, &s->capmetrics, sizeof *nm);
        if (nm == NULL)
            return;
        s->metrics = nm;
    }
    s->metrics[s->nmetrics++] = (dds_metric){.key = key, .val = val};
    s->mkeys |= bit;
}

int dds_span_get_metric(const dds_span *s, const char *key, double *val)
{
    if (s == NULL || key == NULL)
        return 0;
    for (int i = 0; i < s->nmetrics; i++)
        if (strcmp(s->metrics[i].key, key) == 0) {
            if (val)
                *val = s->metrics[i].val;
            return 1;
        }
    const dds_tagset_ent *t = dds_tagset_find_metric(s->tagset, key, key_bit(key));
    if (t && val)
        *val = t->num;
    return t != NULL;
}

void dds_span_take_tagset(dds_span *s, dds_tagset *ts)
{
    if (s == NULL) {
        dds_tagset_unref(ts);
        return;
    }
    dds_tagset *old = s->tagset;
    s->tagset = ts;
    dds_tagset_unref(old);
}

void dds_span_set_tagset(dds_span *s, dds_tagset *ts)
{
    if (s == NULL)
        return;
    dds_tagset_ref(ts);
    dds_span_take_tagset(s, ts);
}

int dds_span_defer(dds_span *s, dds_span_finalize_fn fn, const void *data, size_t len)
{
    if (s == NULL || fn == NULL || (data == NULL && len > 0))
        return -1;
    /* span_strdup's copy plus a NUL, which fn may ignore. */
    char *d = span_strdup(s, len ? (const char *)data : "", len);
    if (d == NULL)
        return -1;
    span_strfree(s, s->fdata);
    s->fdata = d;
    s->flen = len;
    s->finalize = fn;
    return 0;
}

void *dds_span_deferred_data(dds_span *s)
{
    return s && s->finalize ? s->fdata : NULL;
}

void dds_span_run_deferred(dds_span *s)
{
    dds_span_finalize_fn fn = s ? s->finalize : NULL;
    if (fn) {
        s->finalize = NULL;
        fn(s, s->fdata, s->flen);
    }
}

void dds_span_set_resource_n(dds_span *s, const char *res, size_t len)
{
    if (s == NULL || res == NULL)
        return;
    char *r = span_strdup(s, res, len);
    if (r == NULL)
        return;
    span_strfree(s, s->resource);
    s->resource = r;
}

void dds_span_set_resource(dds_span *s, const char *res)
{
    if (res)
        dds_span_set_resource_n(s, res, strlen(res));
}

void dds_span_set_error(dds_span *s, const char *msg)
{
    if (s == NULL)
        return;
    s->error = 1;
    if (msg != NULL) {
        size_t len = strnlen(msg, DDS_ERROR_MSG_MAX);
        /* Trim trailing newlines (libpq and hiredis messages end with one). */
        while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
            len--;
        dds_span_set_meta_n(s, "error.message", msg, len);
    }
}

void dds_trace_decide_locked(dds_trace *t, const dds_span *root)
{
    if (!t->sampling.decided)
        dds_trace_decide_hook(t, root);
}

void dds_trace_decide(dds_trace *t, const dds_span *root)
{
    if (t == NULL)
        return;
    dds_trace_lock(t);
    dds_trace_decide_locked(t, root);
    dds_trace_unlock(t);
}

/* dds_trace_finalize with the trace's lock held. Under the lock because a late child
 * of a completed chunk (dds_span_start_at) may finalize it on its own
 * thread while the writer is about to. */
static void finalize_locked(dds_trace *t)
{
    if (t->finalized)
        return;
    for (dds_span *s = t->finished; s; s = s->next)
        dds_span_run_deferred(s);
    /* The local root leads the list (dds_span_finish_at). */
    if (!t->sampling.decided)
        dds_trace_decide_hook(t, t->finished);
    t->finalized = 1;
}

void dds_trace_finalize(dds_trace *t)
{
    if (t == NULL)
        return;
    dds_trace_lock(t);
    finalize_locked(t);
    dds_trace_unlock(t);
}

void dds_span_finish_at(dds_span *s, int64_t mono_ns)
{
    /* Exactly once, even if two threads finish the span at the same time:
     * a second append would hand the chunk to the writer twice. */
    if (s == NULL || __atomic_exchange_n(&s->finished, 1, __ATOMIC_ACQ_REL))
        return;
    dds_active_remove(s);
    s->duration_ns = mono_ns - s->mono_start_ns;
    if (s->duration_ns < 0)
        s->duration_ns = 0;
    dds_trace *t = s->trace;
    /* Undecided yet and other spans still open: decide on this span (the
     * first to finish), so that they inherit it. One lock for the decision
     * and the list. A chunk that completes undecided is decided by
     * dds_trace_finalize, on the writer, after the deferred work. Rules
     * look at this span's resource and tags: its deferred work runs first. */
    dds_trace_lock(t);
    if (!t->sampling.decided && t->open_spans > 1) {
        dds_span_run_deferred(s);
        dds_trace_decide_hook(t, s);
    }
    /* Keep the chunk in start order: the local root, started first, leads. */
    s->next = NULL;
    if (s->span_id == t->root_span_id) {
        s->next = t->finished;
        t->finished = s;
        if (t->finished_tail == NULL)
            t->finished_tail = s;
    } else {
        if (t->finished_tail)
            t->finished_tail->next = s;
        else
            t->finished = s;
        t->finished_tail = s;
    }
    t->nfinished++;
    int done = --t->open_spans == 0;
    if (done)
        t->completed = 1;
    dds_trace_unlock(t);
    if (done)
        dds_trace_complete_hook(t);
}

void dds_span_finish(dds_span *s)
{
    dds_span_finish_at(s, dds_now_mono_ns());
}

static void span_free(dds_span *s)
{
    span_box *b = box_of(s);
    if (b->heap) { /* else every string is in the arena */
        for (int i = 0; i < s->nmeta; i++) {
            span_strfree(s, s->meta[i].val);
            if (s->meta[i].key_owned)
                span_strfree(s, (char *)s->meta[i].key);
        }
        span_strfree(s, s->resource);
        span_strfree(s, s->fdata);
    }
    if (s->meta != b->meta)
        free(s->meta);
    if (s->metrics != b->metrics)
        free(s->metrics);
    if (s->tagset)
        dds_tagset_unref(s->tagset);
    pool_put(&box_pool, b);
}

void dds_trace_free(dds_trace *t)
{
    if (t == NULL || __atomic_sub_fetch(&t->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    dds_span *s = t->finished;
    while (s) {
        dds_span *n = s->next;
        span_free(s);
        s = n;
    }
    context_release(t->ctx);
    pool_put(&trace_pool, t);
}

/* Per-thread stack of active spans. Fixed size: deeper nesting simply stops
 * being tracked (spans then parent to the deepest one kept). Each entry holds
 * a reference on its trace; a pthread key releases them when a thread exits. */
static __thread dds_span *active_stack[DDS_ACTIVE_MAX] __attribute__((tls_model("initial-exec")));
static __thread int active_n __attribute__((tls_model("initial-exec")));
static pthread_key_t active_key;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void active_release_all(void *unused)
{
    (void)unused;
    while (active_n > 0)
        dds_trace_free(active_stack[--active_n]->trace);
}

static void active_key_init(void)
{
    pthread_key_create(&active_key, active_release_all);
}

static void active_drop_finished(void)
{
    while (active_n > 0 && __atomic_load_n(&active_stack[active_n - 1]->finished, __ATOMIC_ACQUIRE))
        dds_trace_free(active_stack[--active_n]->trace);
}

dds_span *dds_active_span(void)
{
    active_drop_finished();
    return active_n > 0 ? active_stack[active_n - 1] : NULL;
}

void dds_active_push(dds_span *s)
{
    active_drop_finished();
    if (active_n >= DDS_ACTIVE_MAX)
        return;
    pthread_once(&active_once, active_key_init);
    if (active_n == 0)
        pthread_setspecific(active_key, (void *)1);
    __atomic_add_fetch(&s->trace->refs, 1, __ATOMIC_ACQ_REL);
    active_stack[active_n++] = s;
}

void dds_active_remove(dds_span *s)
{
    for (int i = active_n - 1; i >= 0; i--)
        if (active_stack[i] == s) {
            memmove(&active_stack[i], &active_stack[i + 1], (size_t)(active_n - i - 1) * sizeof s);
            active_n--;
            dds_trace_free(s->trace);
            return;
        }
}
