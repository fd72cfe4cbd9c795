/*
 * queue.c — lock-free hand-off of completed chunks to the writer (queue.h).
 */
#include "queue.h"

#include <stdatomic.h>

static _Atomic(dds_trace *) q_head;
static atomic_size_t q_spans;       /* spans reserved by pushers, not yet taken */
static atomic_size_t q_inflight;    /* taken by the writer, not yet released */
static atomic_size_t q_cap = DDS_QUEUE_DEFAULT_CAP;
static _Atomic uint64_t q_dropped;

void dds_queue_set_cap(size_t max_spans)
{
    atomic_store_explicit(&q_cap, max_spans ? max_spans : DDS_QUEUE_DEFAULT_CAP,
                          memory_order_relaxed);
}

int dds_queue_push(dds_trace *t)
{
    if (t == NULL)
        return -1;
    size_t n = t->nfinished > 0 ? (size_t)t->nfinished : 0;
    if (n == 0) {
        dds_trace_free(t);
        return -1;
    }
    /* Reserve room first: the counter, not the list, is what bounds memory, and
     * reserving before publishing means the cap holds even with many pushers.
     * A compare-and-swap, not add-then-undo, so that a refused chunk never
     * pushes the count over the cap for the others, even for an instant. */
    size_t cap = atomic_load_explicit(&q_cap, memory_order_relaxed);
    size_t before = atomic_load_explicit(&q_spans, memory_order_relaxed);
    size_t held = atomic_load_explicit(&q_inflight, memory_order_relaxed);
    do {
        if (before + held + n > cap) {
            atomic_fetch_add_explicit(&q_dropped, n, memory_order_relaxed);
            dds_trace_free(t);
            return -1;
        }
    } while (!atomic_compare_exchange_weak_explicit(&q_spans, &before, before + n,
                                                    memory_order_relaxed, memory_order_relaxed));
    dds_trace *head = atomic_load_explicit(&q_head, memory_order_relaxed);
    do {
        t->qnext = head;
    } while (!atomic_compare_exchange_weak_explicit(&q_head, &head, t, memory_order_release,
                                                    memory_order_relaxed));
    return before + n >= cap / 2 ? 1 : 0;
}

dds_trace *dds_queue_take_all(size_t *nspans)
{
    dds_trace *t = atomic_exchange_explicit(&q_head, NULL, memory_order_acquire);
    /* The stack is newest first; reversing restores arrival order. */
    dds_trace *ordered = NULL;
    size_t n = 0;
    while (t != NULL) {
        dds_trace *next = t->qnext;
        t->qnext = ordered;
        ordered = t;
        n += (size_t)t->nfinished;
        t = next;
    }
    if (n) {
        atomic_fetch_add_explicit(&q_inflight, n, memory_order_relaxed);
        atomic_fetch_sub_explicit(&q_spans, n, memory_order_relaxed);
    }
    if (nspans)
        *nspans = n;
    return ordered;
}

void dds_queue_release(size_t nspans)
{
    size_t held = atomic_load_explicit(&q_inflight, memory_order_relaxed);
    size_t left;
    do {
        left = nspans < held ? held - nspans : 0;
    } while (!atomic_compare_exchange_weak_explicit(&q_inflight, &held, left, memory_order_relaxed,
                                                    memory_order_relaxed));
}

size_t dds_queue_pending_spans(void)
{
    return atomic_load_explicit(&q_spans, memory_order_relaxed);
}

uint64_t dds_queue_dropped_spans(void)
{
    return atomic_load_explicit(&q_dropped, memory_order_relaxed);
}

void dds_queue_reset_after_fork(void)
{
    atomic_store_explicit(&q_head, NULL, memory_order_relaxed);
    atomic_store_explicit(&q_spans, 0, memory_order_relaxed);
    atomic_store_explicit(&q_inflight, 0, memory_order_relaxed);
    atomic_store_explicit(&q_dropped, 0, memory_order_relaxed);
}
