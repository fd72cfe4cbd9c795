/*
 * ids.h — trace and span ids (wire spec §3.8).
 *
 * Span ids are random 63-bit values (MSB clear, never 0). A 128-bit trace id
 * has the unix time in seconds in the top 32 bits, 32 zero bits, and a random
 * low 64; with 128-bit generation off the low half has its MSB clear and the
 * high half is 0. The generator is a per-thread xoshiro256** seeded from
 * getrandom(), reseeded after fork, lock-free and allocation-free.
 */
#ifndef DDS_IDS_H
#define DDS_IDS_H

#include <stdint.h>

uint64_t dds_id_span(void);
void dds_id_trace(int use_128, uint64_t *hi, uint64_t *lo);
/* A new trace's id and its root span's id in one call (one state lookup):
 * the trace id's time is wall_ns (ns since the epoch: the root span's
 * start), not another clock read. */
void dds_id_root(int use_128, int64_t wall_ns, uint64_t *hi, uint64_t *lo, uint64_t *span_id);
/* A new random UUIDv4 string (37 bytes with the NUL), for runtime-id. */
void dds_id_uuid4(char out[37]);
/* Call in a fork child so parent and child never draw the same ids. */
void dds_id_reseed(void);
/* v as 16 lowercase hex digits and a NUL ("%016" PRIx64, without printf):
 * _dd.p.tid, traceparent, tracestate, b3. */
void dds_hex16(uint64_t v, char out[17]);

#endif
