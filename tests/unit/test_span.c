/* Unit tests for core/span.c and core/ids.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "ids.h"
#include "span.h"

static dds_trace *completed[16];
static int ncompleted;

static void capture(dds_trace *t) { completed[ncompleted++] = t; }

static int setup(void **state)
{
    (void)state;
    ncompleted = 0;
    dds_trace_complete_hook = capture;
    return 0;
}

static void test_ids(void **state)
{
    (void)state;
    for (int i = 0; i < 10000; i++) {
        uint64_t id = dds_id_span();
        assert_true(id != 0);
        assert_true((id >> 63) == 0);
    }
    uint64_t hi, lo;
    dds_id_trace(1, &hi, &lo);
    uint64_t now = (uint64_t)time(NULL);
    assert_true((hi >> 32) >= now - 2 && (hi >> 32) <= now + 2);
    assert_int_equal(hi & 0xffffffffULL, 0);
    assert_true(lo != 0);
    dds_id_trace(0, &hi, &lo);
    assert_int_equal(hi, 0);
    assert_true(lo != 0 && (lo >> 63) == 0);
    char u[37];
    dds_id_uuid4(u);
    assert_int_equal(strlen(u), 36);
    assert_int_equal(u[14], '4');
    assert_true(u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b');
    /* dds_hex16 is "%016" PRIx64, without printf. */
    uint64_t vals[] = {0, 1, 0xabcULL, 0x0123456789abcdefULL, UINT64_MAX, dds_id_span()};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char got[17], want[17];
        dds_hex16(vals[i], got);
        snprintf(want, sizeof want, "%016" PRIx64, vals[i]);
        assert_string_equal(got, want);
    }
    /* Every nibble value in every position, and random words. */
    for (int i = 0; i < 200000; i++) {
        uint64_t v = i < 256 ? 0x0123456789abcdefULL * (uint64_t)(i & 15) ^ ((uint64_t)i << (i % 57))
                             : ((uint64_t)dds_id_span() << 1) ^ (uint64_t)i;
        char got[18], want[17];
        got[17] = 'z';
        dds_hex16(v, got);
        snprintf(want, sizeof want, "%016" PRIx64, v);
        assert_string_equal(got, want);
        assert_int_equal(got[17], 'z'); /* 17 bytes written, no more */
    }
}

static void test_trace_completes_when_last_span_finishes(void **state)
{
    (void)state;
    dds_span *root = dds_span_start("a", "web", NULL, NULL);
    dds_span *child = dds_span_start("b", "http", root, NULL);
    assert_ptr_equal(root->trace, child->trace);
    assert_int_equal(child->parent_id, root->span_id);
    assert_int_equal(root->parent_id, 0);
    dds_span_set_meta(child, "k", "v1");
    dds_span_set_meta(child, "k", "v2");
    assert_string_equal(dds_span_get_meta(child, "k"), "v2");
    assert_int_equal(child->nmeta, 1);
    dds_span_set_metric(child, "m", 3);
    double m;
    assert_true(dds_span_get_metric(child, "m", &m) && m == 3);
    dds_span_set_error(child, "boom\n");
    assert_int_equal(child->error, 1);
    assert_string_equal(dds_span_get_meta(child, "error.message"), "boom");
    dds_span_finish(root);
    assert_int_equal(ncompleted, 0);
    dds_span_finish(child);
    assert_int_equal(ncompleted, 1);
    dds_trace *t = completed[0];
    assert_int_equal(t->nfinished, 2);
    assert_int_equal(t->finished->span_id, t->root_span_id); /* the root leads the chunk */
    assert_true(t->sampling.decided);
    assert_int_equal(t->sampling.priority, DDS_PRIO_AUTO_KEEP);
    dds_trace_free(t);
}

static void test_continue_remote_context(void **state)
{
    (void)state;
    dds_trace_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.trace_id_hi = 7;
    ctx.trace_id_lo = 42;
    ctx.parent_id = 99;
    ctx.has_priority = 1;
    ctx.priority = DDS_PRIO_USER_KEEP;
    dds_span *s = dds_span_start("srv", "web", NULL, &ctx);
    assert_int_equal(s->trace->trace_id_lo, 42);
    assert_int_equal(s->trace->trace_id_hi, 7);
    assert_int_equal(s->parent_id, 99);
    dds_span_finish(s);
    assert_int_equal(ncompleted, 1);
    assert_int_equal(completed[0]->sampling.priority, DDS_PRIO_USER_KEEP);
    assert_int_equal(completed[0]->sampling.mechanism, DDS_MECH_NONE);
    dds_trace_free(completed[0]);
}

static void test_active_stack_and_late_child(void **state)
{
    (void)state;
    dds_span *srv = dds_span_start("srv", "web", NULL, NULL);
    dds_active_push(srv);
    assert_ptr_equal(dds_active_span(), srv);
    dds_span_finish(srv); /* removed from the stack, chunk completes */
    assert_null(dds_active_span());
    assert_int_equal(ncompleted, 1);
    dds_trace_free(completed[0]);

    /* A span finished elsewhere while still on this thread's stack: the entry
     * pins the trace, is dropped on the next look, and a child started just
     * before that look goes to a new chunk of the same trace. */
    dds_span *a = dds_span_start("a", "web", NULL, NULL);
    dds_active_push(a);
    uint64_t tid = a->trace->trace_id_lo, aid = a->span_id;
    __atomic_store_n(&a->finished, 0, __ATOMIC_RELAXED);
    dds_span_finish(a); /* same thread here, but exercises the same path */
    dds_trace *t = completed[1];
    dds_span *late = dds_span_start("late", "http", a, NULL);
    assert_ptr_not_equal(late->trace, t);
    assert_int_equal(late->trace->trace_id_lo, tid);
    assert_int_equal(late->parent_id, aid);
    dds_span_finish(late);
    assert_int_equal(ncompleted, 3);
    dds_trace_free(completed[1]);
    dds_trace_free(completed[2]);
}

static void *other_thread(void *arg)
{
    dds_span_finish(arg);
    return NULL;
}

static void test_finish_on_another_thread(void **state)
{
    (void)state;
    dds_span *srv = dds_span_start("srv", "web", NULL, NULL);
    dds_active_push(srv);
    pthread_t th;
    pthread_create(&th, NULL, other_thread, srv);
    pthread_join(th, NULL);
    assert_int_equal(ncompleted, 1);
    dds_trace_free(completed[0]); /* the writer's release; our stack still pins it */
    assert_null(dds_active_span()); /* dropped, and the memory released now */
}

/* dds_span_defer: the hook's bytes come back once, on dds_trace_finalize;
 * the tags they make are there before the sampling decision. */
static int nfinal;
static char seen_res[64];
static void deferred_tags(dds_span *s, const void *data, size_t len)
{
    nfinal++;
    char v[64];
    assert_true(len < sizeof v);
    memcpy(v, data, len);
    v[len] = '\0';
    dds_span_set_meta(s, "db.system", "redis");
    dds_span_set_resource_n(s, v, len);
}

static int ndecided;
static void decide_seeing_tags(dds_trace *t, const dds_span *root)
{
    ndecided++;
    const char *v = root ? dds_span_get_meta(root, "db.system") : NULL;
    snprintf(seen_res, sizeof seen_res, "%s/%s", v ? v : "-", root && root->resource ? root->resource : "-");
    t->sampling.decided = 1;
    t->sampling.priority = DDS_PRIO_USER_KEEP;
    t->sampling.mechanism = DDS_MECH_RULE;
}

static void test_defer_runs_on_finalize(void **state)
{
    (void)state;
    void (*saved)(dds_trace *, const dds_span *) = dds_trace_decide_hook;
    dds_trace_decide_hook = decide_seeing_tags;
    nfinal = ndecided = 0;
    dds_span *s = dds_span_start("redis.command", "redis", NULL, NULL);
    char cmd[] = "GET";
    assert_int_equal(dds_span_defer(s, deferred_tags, "SET", 3), 0);
    assert_int_equal(dds_span_defer(s, deferred_tags, cmd, 3), 0); /* replaces */
    cmd[0] = 'X'; /* a copy was kept */
    dds_span_finish(s);
    assert_int_equal(ncompleted, 1);
    dds_trace *t = completed[0];
    /* Completed in one go: nothing decided, nothing run on this thread. */
    assert_int_equal(nfinal, 0);
    assert_int_equal(ndecided, 0);
    assert_int_equal(t->sampling.decided, 0);
    dds_trace_finalize(t);
    dds_trace_finalize(t); /* idempotent */
    assert_int_equal(nfinal, 1);
    assert_int_equal(ndecided, 1);
    assert_string_equal(seen_res, "redis/GET");
    assert_int_equal(t->sampling.priority, DDS_PRIO_USER_KEEP);
    assert_string_equal(t->finished->resource, "GET");

    /* Deferred data too big for the span's arena, never finalized (a chunk
     * dropped at the queue's cap): freed with the span (ASan, valgrind). */
    static char big[4096];
    memset(big, 'k', sizeof big);
    dds_span *d = dds_span_start("redis.command", "redis", NULL, NULL);
    assert_int_equal(dds_span_defer(d, deferred_tags, big, sizeof big), 0);
    dds_span_finish(d);
    assert_int_equal(ncompleted, 2);
    dds_trace_free(completed[1]);
    assert_int_equal(nfinal, 1);
    dds_trace_free(t);
    dds_trace_decide_hook = saved;
}

static void test_decided_at_first_finish_when_others_open(void **state)
{
    (void)state;
    void (*saved)(dds_trace *, const dds_span *) = dds_trace_decide_hook;
    dds_trace_decide_hook = decide_seeing_tags;
    ndecided = 0;
    dds_span *root = dds_span_start("srv", "web", NULL, NULL);
    dds_span *child = dds_span_start("db", "sql", root, NULL);
    dds_span_finish(child); /* the root still open: decided now */
    assert_int_equal(ndecided, 1);
    assert_int_equal(root->trace->sampling.decided, 1);
    dds_span_finish(root);
    assert_int_equal(ncompleted, 1);
    dds_trace_finalize(completed[0]);
    assert_int_equal(ndecided, 1);

    /* A chunk that completed undecided, then a late child of its root: the
     * decision is made before the new chunk copies it. */
    dds_span *a = dds_span_start("a", "web", NULL, NULL);
    dds_span_finish(a);
    assert_int_equal(ncompleted, 2);
    assert_int_equal(completed[1]->sampling.decided, 0);
    dds_span *late = dds_span_start("late", "http", a, NULL);
    assert_int_equal(ndecided, 2);
    assert_int_equal(late->trace->sampling.decided, 1);
    assert_int_equal(late->trace->sampling.priority, DDS_PRIO_USER_KEEP);
    dds_span_finish(late);
    assert_int_equal(ncompleted, 3);
    dds_trace_finalize(completed[1]);
    dds_trace_finalize(completed[2]);
    assert_int_equal(ndecided, 2);
    for (int i = 0; i < 3; i++)
        dds_trace_free(completed[i]);
    dds_trace_decide_hook = saved;
}

/* What a hook learns after deferring goes into the kept copy; a hook that
 * needs the result early runs the work itself, and it runs only once. */
static void test_defer_data_written_late_and_run_now(void **state)
{
    (void)state;
    void (*saved)(dds_trace *, const dds_span *) = dds_trace_decide_hook;
    dds_trace_decide_hook = decide_seeing_tags;
    nfinal = ndecided = 0;
    dds_span *s = dds_span_start("redis.command", "redis", NULL, NULL);
    assert_null(dds_span_deferred_data(s));
    dds_span_run_deferred(s); /* nothing to run */
    assert_int_equal(nfinal, 0);
    assert_int_equal(dds_span_defer(s, deferred_tags, "GET", 3), 0);
    char *d = dds_span_deferred_data(s);
    assert_non_null(d);
    d[0] = 'S';
    d[1] = 'E';
    dds_span_run_deferred(s);
    assert_int_equal(nfinal, 1);
    assert_string_equal(s->resource, "SET");
    assert_string_equal(dds_span_get_meta(s, "db.system"), "redis");
    assert_null(dds_span_deferred_data(s));
    dds_span_run_deferred(s);
    dds_span_finish(s);
    assert_int_equal(ncompleted, 1);
    dds_trace_finalize(completed[0]);
    assert_int_equal(nfinal, 1); /* not again */
    assert_int_equal(ndecided, 1);
    assert_string_equal(seen_res, "redis/SET");
    dds_trace_free(completed[0]);

    /* The first span to finish while others are open decides the trace: its
     * deferred work runs before the rules look at it. */
    dds_span *root = dds_span_start("srv", "web", NULL, NULL);
    dds_span *child = dds_span_start("db", "sql", root, NULL);
    assert_int_equal(dds_span_defer(child, deferred_tags, "DEL", 3), 0);
    dds_span_finish(child);
    assert_int_equal(nfinal, 2);
    assert_int_equal(ndecided, 2);
    assert_string_equal(seen_res, "redis/DEL");
    dds_span_finish(root);
    assert_int_equal(ncompleted, 2);
    dds_trace_finalize(completed[1]);
    assert_int_equal(nfinal, 2);
    assert_int_equal(ndecided, 2);
    dds_trace_free(completed[1]);
    dds_trace_decide_hook = saved;
}

/* The writer finalizing a completed chunk while a late child of its root
 * starts on another thread: both run the deferred work under the trace's
 * lock, once (ThreadSanitizer checks this in make reliability). */
static void *finalize_thread(void *arg)
{
    dds_trace_finalize(arg);
    return NULL;
}

static void test_finalize_races_late_child(void **state)
{
    (void)state;
    void (*saved)(dds_trace *, const dds_span *) = dds_trace_decide_hook;
    dds_trace_decide_hook = decide_seeing_tags;
    for (int round = 0; round < 200; round++) {
        ncompleted = 0;
        nfinal = ndecided = 0;
        dds_span *a = dds_span_start("redis.command", "redis", NULL, NULL);
        dds_span_defer(a, deferred_tags, "GET", 3);
        dds_span_finish(a);
        dds_trace *t = completed[0];
        pthread_t th;
        pthread_create(&th, NULL, finalize_thread, t);
        dds_span *late = dds_span_start("late", "http", a, NULL);
        pthread_join(th, NULL);
        assert_int_equal(nfinal, 1);
        assert_int_equal(ndecided, 1); /* whichever thread came first */
        assert_int_equal(late->trace->sampling.decided, 1); /* inherited */
        dds_span_finish(late);
        dds_trace_finalize(completed[1]);
        assert_int_equal(ndecided, 1);
        assert_string_equal(seen_res, "redis/GET");
        dds_trace_free(completed[0]);
        dds_trace_free(completed[1]);
    }
    dds_trace_decide_hook = saved;
}

/* A new trace's ids come in one call with its root's (dds_id_root): the
 * trace id's top 32 bits are the root's start in seconds (the wall time the
 * span was started at, not another clock read), the next 32 zero, the low
 * half random and non-zero; the span id 63 bits, non-zero. */
static void test_root_ids(void **state)
{
    (void)state;
    const int64_t wall = 1700000000LL * 1000000000LL + 999999999LL;
    dds_span *s = dds_span_start_at("a", "web", NULL, NULL, wall, 5);
    dds_trace *t = s->trace;
    assert_int_equal(t->trace_id_hi, (uint64_t)1700000000 << 32);
    assert_true(t->trace_id_lo != 0);
    assert_true(s->span_id != 0 && (s->span_id >> 63) == 0);
    assert_int_equal(t->root_span_id, s->span_id);
    assert_int_equal(s->start_ns, wall);
    dds_span_finish(s);
    assert_int_equal(ncompleted, 1);
    dds_trace_free(completed[0]);
    for (int i = 0; i < 10000; i++) {
        uint64_t hi, lo, sp;
        dds_id_root(1, wall, &hi, &lo, &sp);
        assert_int_equal(hi, (uint64_t)1700000000 << 32);
        assert_true(lo != 0 && sp != 0 && (sp >> 63) == 0 && lo != sp);
        dds_id_root(0, wall, &hi, &lo, &sp);
        assert_int_equal(hi, 0);
        assert_true(lo != 0 && (lo >> 63) == 0 && sp != 0 && (sp >> 63) == 0);
    }
}

#define IDS_PER_THREAD 50000
#define ID_THREADS 4

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void *draw_ids(void *arg)
{
    uint64_t *out = arg, hi;
    for (int i = 0; i < IDS_PER_THREAD; i++)
        dds_id_root(1, 1, &hi, &out[2 * i], &out[2 * i + 1]);
    return NULL;
}

/* Per-thread generators: no id repeats across threads (each seeds its own
 * state from getrandom), and each bit is set about half the time. */
static void test_ids_unique_across_threads(void **state)
{
    (void)state;
    size_t n = (size_t)2 * IDS_PER_THREAD * (ID_THREADS + 1);
    uint64_t *all = malloc(n * sizeof *all);
    assert_non_null(all);
    pthread_t th[ID_THREADS];
    for (int i = 0; i < ID_THREADS; i++)
        pthread_create(&th[i], NULL, draw_ids, all + (size_t)2 * IDS_PER_THREAD * i);
    draw_ids(all + (size_t)2 * IDS_PER_THREAD * ID_THREADS);
    for (int i = 0; i < ID_THREADS; i++)
        pthread_join(th[i], NULL);
    size_t ones[64] = {0};
    for (size_t i = 0; i < n; i += 2) /* trace ids: all 64 bits random */
        for (int b = 0; b < 64; b++)
            ones[b] += (all[i] >> b) & 1;
    for (int b = 0; b < 64; b++) {
        double f = (double)ones[b] / (double)(n / 2);
        assert_true(f > 0.48 && f < 0.52);
    }
    qsort(all, n, sizeof *all, cmp_u64);
    for (size_t i = 1; i < n; i++)
        assert_true(all[i] != all[i - 1]);
    free(all);
}

/* After a fork the child draws ids its parent never draws: dds_id_reseed
 * (preload/init.c's fork child handler) makes every thread reseed. Without
 * it the child would repeat the parent's sequence, which the second half
 * checks the test would see. */
static void fork_ids(int reseed, uint64_t *parent, uint64_t *child, int n)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    uint64_t hi;
    dds_id_root(1, 1, &hi, &parent[0], &parent[1]); /* the state is in use before the fork */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (reseed)
            dds_id_reseed();
        for (int i = 0; i < n; i++)
            dds_id_root(1, 1, &hi, &child[2 * i], &child[2 * i + 1]);
        ssize_t w = write(fds[1], child, (size_t)n * 2 * sizeof *child);
        _exit(w == (ssize_t)((size_t)n * 2 * sizeof *child) ? 0 : 1);
    }
    close(fds[1]);
    for (int i = 0; i < n; i++)
        dds_id_root(1, 1, &hi, &parent[2 * i], &parent[2 * i + 1]);
    size_t want = (size_t)n * 2 * sizeof *child, got = 0;
    while (got < want) {
        ssize_t r = read(fds[0], (char *)child + got, want - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_fork_child_never_repeats_parent_ids(void **state)
{
    (void)state;
    enum { N = 20000 };
    uint64_t *p = malloc(2 * N * sizeof *p), *c = malloc(2 * N * sizeof *c);
    assert_non_null(p);
    assert_non_null(c);
    fork_ids(1, p, c, N);
    qsort(p, 2 * N, sizeof *p, cmp_u64);
    qsort(c, 2 * N, sizeof *c, cmp_u64);
    size_t i = 0, j = 0, common = 0;
    while (i < 2 * N && j < 2 * N) {
        if (p[i] == c[j])
            common++, i++, j++;
        else if (p[i] < c[j])
            i++;
        else
            j++;
    }
    assert_int_equal(common, 0);
    fork_ids(0, p, c, N); /* no reseed: the very same sequence */
    assert_memory_equal(p, c, 2 * N * sizeof *p);
    free(p);
    free(c);
}

/* Tag values of every length up to past the inline copy's 32 bytes, new
 * keys and replaced ones, more keys than the span holds inline and more
 * bytes than its arena: read back exactly, in the order they were set. */
static void test_meta_values_every_length(void **state)
{
    (void)state;
    static const char *const keys[] = {"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9",
                                       "k10", "k11", "k12", "k13", "k14", "k15", "k16", "k17",
                                       "k18", "k19", "k20", "k21", "k22", "k23", "k24", "k25",
                                       "k26", "k27", "k28", "k29", "k30", "k31", "k32", "k33",
                                       "k34", "k35", "k36", "k37", "k38", "k39", "k40"};
    char src[64];
    for (int i = 0; i < 64; i++)
        src[i] = (char)('A' + i % 26 + (i / 26) * 6);
    for (int round = 0; round < 2; round++) {
        dds_span *s = dds_span_start("m", "web", NULL, NULL);
        for (int len = 0; len <= 40; len++) {
            char v[64];
            memcpy(v, src + round, (size_t)len);
            v[len] = 'z'; /* past the end: must not be copied */
            dds_span_set_meta_n(s, keys[len], v, (size_t)len);
            if (round == 1) /* replaced at once, by the value one byte longer */
                dds_span_set_meta_n(s, keys[len], src, (size_t)len + 1);
        }
        assert_int_equal(s->nmeta, 41);
        for (int len = 0; len <= 40; len++) {
            size_t want_len = (size_t)len + (size_t)round;
            const char *want = round ? src : src + round;
            assert_string_equal(s->meta[len].key, keys[len]);
            assert_int_equal(s->meta[len].vlen, want_len);
            assert_memory_equal(s->meta[len].val, want, want_len);
            assert_int_equal(s->meta[len].val[want_len], '\0');
            assert_ptr_equal(dds_span_get_meta(s, keys[len]), s->meta[len].val);
        }
        dds_span_finish(s);
        dds_trace_free(completed[ncompleted - 1]);
    }
}

#define CHILD_THREADS 4
#define CHILDREN 2000

static void *start_children(void *arg)
{
    dds_span *root = arg;
    for (int i = 0; i < CHILDREN; i++)
        dds_span_finish(dds_span_start("c", "web", root, NULL));
    return NULL;
}

/* The trace's lock (one word): threads starting and finishing children of
 * one root at once lose no count; the chunk completes once, with them all. */
static void test_children_on_many_threads(void **state)
{
    (void)state;
    dds_span *root = dds_span_start("r", "web", NULL, NULL);
    pthread_t th[CHILD_THREADS];
    for (int i = 0; i < CHILD_THREADS; i++)
        pthread_create(&th[i], NULL, start_children, root);
    for (int i = 0; i < CHILD_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(ncompleted, 0);
    dds_trace *t = root->trace;
    assert_int_equal(t->open_spans, 1);
    dds_span_finish(root);
    assert_int_equal(ncompleted, 1);
    assert_int_equal(t->nfinished, CHILD_THREADS * CHILDREN + 1);
    assert_ptr_equal(t->finished, root); /* the local root leads */
    dds_trace_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test_setup(test_trace_completes_when_last_span_finishes, setup),
        cmocka_unit_test_setup(test_continue_remote_context, setup),
        cmocka_unit_test_setup(test_active_stack_and_late_child, setup),
        cmocka_unit_test_setup(test_finish_on_another_thread, setup),
        cmocka_unit_test_setup(test_defer_runs_on_finalize, setup),
        cmocka_unit_test_setup(test_decided_at_first_finish_when_others_open, setup),
        cmocka_unit_test_setup(test_finalize_races_late_child, setup),
        cmocka_unit_test_setup(test_defer_data_written_late_and_run_now, setup),
        cmocka_unit_test_setup(test_root_ids, setup),
        cmocka_unit_test(test_ids_unique_across_threads),
        cmocka_unit_test(test_fork_child_never_repeats_parent_ids),
        cmocka_unit_test_setup(test_meta_values_every_length, setup),
        cmocka_unit_test_setup(test_children_on_many_threads, setup),
    };
    return cmocka_run_group_tests_name("span", tests, NULL, NULL);
}
