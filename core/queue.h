/*
 * queue.h — completed trace chunks waiting for the writer.
 *
 * Application threads hand every finished chunk (a dds_trace from core/span.h,
 * linked through t->qnext) to dds_queue_push from dds_span_finish. That path
 * must never block, take a lock or wait for the writer: the push is a lock-free
 * Treiber stack plus an atomic span counter. Over the cap the chunk is freed at
 * once and its spans are counted as dropped, so the memory held here is bounded
 * whatever the agent does. Chunks the writer has taken count against the cap
 * until it releases them (dds_queue_release), so a batch held through a slow
 * or hung agent request does not let another cap's worth pile up behind it. The writer thread (core/writer.c) takes the whole
 * stack in one atomic exchange and gets the chunks back in arrival order.
 *
 * The writer only ever takes everything at once and never pops single nodes,
 * so the stack has no ABA problem.
 */
#ifndef DDS_QUEUE_H
#define DDS_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include "span.h"

#define DDS_QUEUE_DEFAULT_CAP 10000

/* The cap in spans (dds_config.max_queued_spans); 0 restores the default.
 * core/writer.c sets it from the configuration in dds_writer_init. */
void dds_queue_set_cap(size_t max_spans);

/* Queue a completed chunk. Returns 0 when queued, 1 when queued and the queue
 * is now at least half full (time to wake the writer), -1 when it was over
 * the cap (or empty): the chunk has then been freed and its spans counted as
 * dropped. Either way the caller no longer owns t. Lock-free, never allocates. */
int dds_queue_push(dds_trace *t);

/* Take every queued chunk, oldest first (linked through qnext, NULL-terminated).
 * *nspans (may be NULL) receives their span count. The caller owns the list,
 * and its spans still count against the cap until dds_queue_release. */
dds_trace *dds_queue_take_all(size_t *nspans);

/* The writer has freed nspans spans it took: they no longer count. */
void dds_queue_release(size_t nspans);

/* Spans currently queued (approximate while pushers run). */
size_t dds_queue_pending_spans(void);

/* Spans dropped because the queue was full, since start (or the last fork). */
uint64_t dds_queue_dropped_spans(void);

/* In a fork child: forget the chunks inherited from the parent (the parent
 * sends them) and zero the counters. Touches none of the inherited chunks:
 * they are the child's private copy of the parent's memory, and leaking them
 * once is cheaper than walking them. */
void dds_queue_reset_after_fork(void);

#endif
