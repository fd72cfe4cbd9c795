/* Unit tests for core/queue.c: arrival order, the cap, concurrent pushers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "queue.h"
#include "span.h"
#include "tagset.h"

/* Chunks are built with the real span API; the complete hook hands each one
 * back to the thread that finished it. */
static __thread dds_trace *finished_chunk;
static void capture(dds_trace *t) { finished_chunk = t; }

static dds_trace *make_chunk(int nspans, double thread, double seq)
{
    dds_span *root = dds_span_start("root", "web", NULL, NULL);
    dds_span_set_metric(root, "thread", thread);
    dds_span_set_metric(root, "seq", seq);
    for (int i = 1; i < nspans; i++)
        dds_span_finish(dds_span_start("child", "http", root, NULL));
    finished_chunk = NULL;
    dds_span_finish(root);
    assert_non_null(finished_chunk);
    assert_int_equal(finished_chunk->nfinished, nspans);
    return finished_chunk;
}

static double metric(const dds_trace *t, const char *key)
{
    double v = -1;
    assert_true(dds_span_get_metric(t->finished, key, &v));
    return v;
}

/* Free a taken list and release its spans, as the writer does. */
static void free_list(dds_trace *t)
{
    size_t spans = 0;
    while (t) {
        dds_trace *n = t->qnext;
        spans += (size_t)t->nfinished;
        dds_trace_free(t);
        t = n;
    }
    dds_queue_release(spans);
}

static int setup(void **state)
{
    (void)state;
    dds_trace_complete_hook = capture;
    dds_queue_reset_after_fork();
    dds_queue_set_cap(0);
    return 0;
}

static void test_take_restores_arrival_order(void **state)
{
    (void)state;
    size_t n = 99;
    assert_null(dds_queue_take_all(&n));
    assert_int_equal(n, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(dds_queue_push(make_chunk(i + 1, 0, i)), 0);
    assert_int_equal(dds_queue_pending_spans(), 15);
    dds_trace *list = dds_queue_take_all(&n);
    assert_int_equal(n, 15);
    assert_int_equal(dds_queue_pending_spans(), 0);
    int i = 0;
    for (dds_trace *t = list; t; t = t->qnext, i++) {
        assert_int_equal((int)metric(t, "seq"), i);
        assert_int_equal(t->nfinished, i + 1);
    }
    assert_int_equal(i, 5);
    free_list(list);
    assert_null(dds_queue_take_all(NULL));
}

static void test_cap_drops_whole_chunks(void **state)
{
    (void)state;
    dds_queue_set_cap(10);
    assert_int_equal(dds_queue_push(make_chunk(3, 0, 0)), 0);  /* 3 */
    assert_int_equal(dds_queue_push(make_chunk(3, 0, 1)), 1);  /* 6: half full */
    assert_int_equal(dds_queue_push(make_chunk(3, 0, 2)), 1);  /* 9 */
    assert_int_equal(dds_queue_push(make_chunk(3, 0, 3)), -1); /* 12 > 10: dropped */
    assert_int_equal(dds_queue_push(make_chunk(1, 0, 4)), 1);  /* 10: still fits */
    assert_int_equal(dds_queue_push(make_chunk(1, 0, 5)), -1);
    assert_int_equal(dds_queue_dropped_spans(), 4);
    size_t n;
    dds_trace *list = dds_queue_take_all(&n);
    assert_int_equal(n, 10);
    double want[] = {0, 1, 2, 4};
    int i = 0;
    for (dds_trace *t = list; t; t = t->qnext)
        assert_true(metric(t, "seq") == want[i++]);
    assert_int_equal(i, 4);
    /* Taken but not yet released (the writer still holds them, its request to
     * a hung agent pending): they still count, so nothing more fits. */
    assert_int_equal(dds_queue_pending_spans(), 0);
    assert_int_equal(dds_queue_push(make_chunk(1, 0, 7)), -1);
    assert_int_equal(dds_queue_dropped_spans(), 5);
    free_list(list);
    /* Released: room again. */
    assert_int_equal(dds_queue_push(make_chunk(3, 0, 6)), 0);
    free_list(dds_queue_take_all(NULL));
    assert_int_equal(dds_queue_push(NULL), -1);
}

static void test_reset_after_fork_forgets_everything(void **state)
{
    (void)state;
    dds_queue_set_cap(2);
    dds_trace *kept = make_chunk(2, 0, 0);
    assert_int_equal(dds_queue_push(kept), 1);
    assert_int_equal(dds_queue_push(make_chunk(1, 0, 1)), -1);
    dds_queue_reset_after_fork();
    assert_int_equal(dds_queue_pending_spans(), 0);
    assert_int_equal(dds_queue_dropped_spans(), 0);
    assert_null(dds_queue_take_all(NULL));
    dds_trace_free(kept); /* in a real child this would be the parent's memory, left alone */
}

#define PUSHERS 4
#define PER_PUSHER 3000
#define CONCURRENT_CAP 500

static int pushers_done;

static void *pusher(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < PER_PUSHER; i++)
        dds_queue_push(make_chunk(1 + i % 3, id, i));
    __atomic_add_fetch(&pushers_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_concurrent_pushers_and_taker(void **state)
{
    (void)state;
    dds_queue_set_cap(CONCURRENT_CAP);
    pushers_done = 0;
    pthread_t th[PUSHERS];
    for (int i = 0; i < PUSHERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, pusher, (void *)(intptr_t)i), 0);

    double last_seq[PUSHERS];
    for (int i = 0; i < PUSHERS; i++)
        last_seq[i] = -1;
    uint64_t taken_spans = 0, pushed_spans = 0;
    for (;;) {
        int done = __atomic_load_n(&pushers_done, __ATOMIC_ACQUIRE) == PUSHERS;
        assert_true(dds_queue_pending_spans() <= CONCURRENT_CAP);
        size_t n;
        dds_trace *list = dds_queue_take_all(&n);
        size_t counted = 0;
        for (dds_trace *t = list; t; t = t->qnext) {
            int who = (int)metric(t, "thread");
            double seq = metric(t, "seq");
            /* Each pusher's chunks come out in the order it pushed them. */
            assert_true(seq > last_seq[who]);
            last_seq[who] = seq;
            counted += (size_t)t->nfinished;
        }
        assert_int_equal(counted, n);
        taken_spans += n;
        free_list(list);
        if (done && list == NULL)
            break;
    }
    for (int i = 0; i < PUSHERS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < PER_PUSHER; i++)
        pushed_spans += (uint64_t)(1 + i % 3);
    pushed_spans *= PUSHERS;
    assert_int_equal(taken_spans + dds_queue_dropped_spans(), pushed_spans);
    assert_int_equal(dds_queue_pending_spans(), 0);
}

/* A chunk dropped at the cap is freed, and with it its spans' references to
 * a shared tag set: only the set's owner's remains (under ASan, freeing the
 * set then is the last free of it). */
static void test_dropped_chunk_releases_its_tag_set(void **state)
{
    (void)state;
    const dds_tag meta[] = {{"db.system", "redis", 5}};
    dds_tagset *ts = dds_tagset_new(meta, 1, NULL, 0);
    assert_non_null(ts);
    dds_queue_set_cap(2);
    for (int i = 0; i < 3; i++) {
        dds_span *root = dds_span_start("root", "redis", NULL, NULL);
        dds_span_set_tagset(root, ts);
        dds_span *child = dds_span_start("child", "redis", root, NULL);
        dds_span_set_tagset(child, ts);
        dds_span_finish(child);
        finished_chunk = NULL;
        dds_span_finish(root);
        assert_non_null(finished_chunk);
        dds_queue_push(finished_chunk);
    }
    /* The first chunk fits (2 spans); the others are dropped and freed. */
    assert_int_equal(dds_queue_dropped_spans(), 4);
    assert_int_equal(ts->refs, 3);
    size_t n = 0;
    free_list(dds_queue_take_all(&n));
    assert_int_equal(n, 2);
    assert_int_equal(ts->refs, 1);
    dds_tagset_unref(ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_take_restores_arrival_order, setup),
        cmocka_unit_test_setup(test_cap_drops_whole_chunks, setup),
        cmocka_unit_test_setup(test_reset_after_fork_forgets_everything, setup),
        cmocka_unit_test_setup(test_concurrent_pushers_and_taker, setup),
        cmocka_unit_test_setup(test_dropped_chunk_releases_its_tag_set, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
