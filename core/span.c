/* See span.h. */
#include "span.h"
#include "config.h"
#include "ids.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DDS_ERROR_MSG_MAX 1024
#define DDS_ACTIVE_MAX 16

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

static dds_trace *trace_new(const dds_trace_context *remote)
{
    dds_trace *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    t->refs = 1;
    t->sampling.mechanism = DDS_MECH_NONE;
    t->sampling.rule_psr = t->sampling.agent_psr = t->sampling.limit_psr = t->sampling.ksr = -1;
    if (remote != NULL) {
        t->ctx = *remote;
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
        dds_id_trace(use_128, &t->trace_id_hi, &t->trace_id_lo);
    }
    return t;
}

dds_span *dds_span_start_at(const char *name, const char *type, dds_span *parent,
                            const dds_trace_context *remote, int64_t wall_ns, int64_t mono_ns)
{
    dds_span *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    dds_trace *t = NULL;
    if (parent != NULL) {
        t = parent->trace;
        s->parent_id = parent->span_id;
        pthread_mutex_lock(&t->mu);
        if (!t->completed) {
            t->open_spans++;
            pthread_mutex_unlock(&t->mu);
            goto started;
        }
        /* The parent's chunk is gone: continue the same trace in a new chunk. */
        dds_trace_context c = t->ctx;
        c.trace_id_hi = t->trace_id_hi;
        c.trace_id_lo = t->trace_id_lo;
        c.parent_id = parent->span_id;
        c.has_priority = t->sampling.decided;
        c.priority = t->sampling.priority;
        dds_sampling smp = t->sampling;
        pthread_mutex_unlock(&t->mu);
        t = trace_new(&c);
        if (t == NULL) {
            free(s);
            return NULL;
        }
        t->sampling = smp;
    } else {
        t = trace_new(remote);
        if (t == NULL) {
            free(s);
            return NULL;
        }
        if (t->is_continued)
            s->parent_id = remote->parent_id;
    }
    s->span_id = dds_id_span();
    pthread_mutex_lock(&t->mu);
    t->root_span_id = s->span_id;
    t->open_spans++;
    pthread_mutex_unlock(&t->mu);
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

static dds_meta *meta_find(const dds_span *s, const char *key)
{
    for (int i = 0; i < s->nmeta; i++)
        if (s->meta[i].key == key || strcmp(s->meta[i].key, key) == 0)
            return &s->meta[i];
    return NULL;
}

static void meta_put(dds_span *s, const char *key, int key_owned, const char *val, size_t len)
{
    char *v = malloc(len + 1);
    if (v == NULL)
        return;
    memcpy(v, val, len);
    v[len] = '\0';
    dds_meta *m = meta_find(s, key);
    if (m != NULL) {
        free(m->val);
        m->val = v;
        return;
    }
    if (s->nmeta == s->capmeta) {
        int cap = s->capmeta ? s->capmeta * 2 : 8;
        dds_meta *nm = realloc(s->meta, (size_t)cap * sizeof *nm);
        if (nm == NULL) {
            free(v);
            return;
        }
        s->meta = nm;
        s->capmeta = cap;
    }
    const char *k = key;
    if (key_owned) {
        k = strdup(key);
        if (k == NULL) {
            free(v);
            return;
        }
    }
    s->meta[s->nmeta++] = (dds_meta){.key = k, .val = v, .key_owned = key_owned};
}

void dds_span_set_meta_n(dds_span *s, const char *key, const char *val, size_t len)
{
    if (s && key && val)
        meta_put(s, key, 0, val, len);
}

void dds_span_set_meta(dds_span *s, const char *key, const char *val)
{
    if (s && key && val)
        meta_put(s, key, 0, val, strlen(val));
}

void dds_span_set_meta_dyn(dds_span *s, const char *key, const char *val)
{
    if (s && key && val)
        meta_put(s, key, 1, val, strlen(val));
}

const char *dds_span_get_meta(const dds_span *s, const char *key)
{
    const dds_meta *m = s ? meta_find(s, key) : NULL;
    return m ? m->val : NULL;
}

void dds_span_set_metric(dds_span *s, const char *key, double val)
{
    if (s == NULL || key == NULL)
        return;
    for (int i = 0; i < s->nmetrics; i++)
        if (strcmp(s->metrics[i].key, key) == 0) {
            s->metrics[i].val = val;
            return;
        }
    if (s->nmetrics == s->capmetrics) {
        int cap = s->capmetrics ? s->capmetrics * 2 : 4;
        dds_metric *nm = realloc(s->metrics, (size_t)cap * sizeof *nm);
        if (nm == NULL)
            return;
        s->metrics = nm;
        s->capmetrics = cap;
    }
    s->metrics[s->nmetrics++] = (dds_metric){.key = key, .val = val};
}

int dds_span_get_metric(const dds_span *s, const char *key, double *val)
{
    for (int i = 0; s && i < s->nmetrics; i++)
        if (strcmp(s->metrics[i].key, key) == 0) {
            if (val)
                *val = s->metrics[i].val;
            return 1;
        }
    return 0;
}

void dds_span_set_resource_n(dds_span *s, const char *res, size_t len)
{
    if (s == NULL || res == NULL)
        return;
    char *r = malloc(len + 1);
    if (r == NULL)
        return;
    memcpy(r, res, len);
    r[len] = '\0';
    free(s->resource);
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

void dds_trace_decide(dds_trace *t, const dds_span *root)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    if (!t->sampling.decided)
        dds_trace_decide_hook(t, root);
    pthread_mutex_unlock(&t->mu);
}

void dds_span_finish_at(dds_span *s, int64_t mono_ns)
{
    if (s == NULL || s->finished)
        return;
    dds_active_remove(s);
    __atomic_store_n(&s->finished, 1, __ATOMIC_RELEASE);
    s->duration_ns = mono_ns - s->mono_start_ns;
    if (s->duration_ns < 0)
        s->duration_ns = 0;
    dds_trace *t = s->trace;
    if (t->root_span_id == s->span_id)
        dds_trace_decide(t, s);
    pthread_mutex_lock(&t->mu);
    if (!t->sampling.decided)
        dds_trace_decide_hook(t, s);
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
    pthread_mutex_unlock(&t->mu);
    if (done)
        dds_trace_complete_hook(t);
}

void dds_span_finish(dds_span *s)
{
    dds_span_finish_at(s, dds_now_mono_ns());
}

static void span_free(dds_span *s)
{
    for (int i = 0; i < s->nmeta; i++) {
        free(s->meta[i].val);
        if (s->meta[i].key_owned)
            free((char *)s->meta[i].key);
    }
    free(s->meta);
    free(s->metrics);
    free(s->resource);
    free(s);
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
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* Per-thread stack of active spans. Fixed size: deeper nesting simply stops
 * being tracked (spans then parent to the deepest one kept). Each entry holds
 * a reference on its trace; a pthread key releases them when a thread exits. */
static __thread dds_span *active_stack[DDS_ACTIVE_MAX];
static __thread int active_n;
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
