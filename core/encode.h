/*
 * encode.h — completed trace chunks to the Agent's v0.4 msgpack payload.
 *
 * The writer thread (core/writer.c) takes chunks from core/queue.h and calls
 * dds_encode_traces to turn a prefix of them into one request body: an array of
 * chunks, each an array of span maps (wire spec §1.4). Spans (core/span.h) carry
 * only what the hooks recorded; the tags every span of the process shares are
 * added here, from the configuration (core/config.h), so they cost nothing on
 * application threads:
 *   every span:  meta env / version (when non-empty), the DD_TAGS entries (never
 *                overwriting the span's own), language=cpp, runtime-id,
 *                _dd.origin (when extracted); metric process_id.
 *   chunk root:  metric _sampling_priority_v1, _dd.agent_psr / _dd.rule_psr /
 *                _dd.limit_psr (when ≥ 0); meta _dd.p.dm, _dd.p.tid, _dd.p.ksr,
 *                every propagated _dd.p.* tag, _dd.parent_id,
 *                _dd.propagation_error, _dd.w3c_extraction_error (wire spec §2.1).
 * The chunk root is the first span of t->finished: core/span.c keeps the local
 * root at the head of that list.
 *
 * language is "cpp", as Datadog-Meta-Lang (core/writer.c): ddshim is a native
 * tracer, and "cpp" is the native language the Agent and the backend know.
 *
 * Wire choices (those of dd-trace-cpp, accepted by the Agent and the test
 * agent): ids as uint64, start/duration/error as int64, all fixed width;
 * metrics as float64 (non-finite values are left out: JSON cannot carry them).
 * Every string is a msgpack str, never bin, and valid UTF-8 (each invalid byte
 * becomes U+FFFD). meta values are capped at 25000 bytes and the resource at
 * 5000 (the Agent's own limits), cut on a character boundary and ending "...".
 * A span's own meta and metrics win over the process-wide tags of the same key,
 * except the reserved ones computed here (language, runtime-id, _dd.*).
 *
 * Payload size: chunks are added while the body stays within max_bytes; the
 * rest is left for the next call. A single chunk larger than max_bytes is sent
 * alone if it stays under DDS_ENCODE_HARD_MAX (the Agent refuses 25 MiB and
 * more), else it is skipped and its spans counted as dropped.
 */
#ifndef DDS_ENCODE_H
#define DDS_ENCODE_H

#include <msgpack.h>
#include <stddef.h>
#include "config.h"
#include "span.h"

#define DDS_ENCODE_MAX_BYTES  (8u << 20)   /* default payload cap */
#define DDS_ENCODE_HARD_MAX   (24u << 20)  /* never send a body this large */
#define DDS_META_VALUE_MAX    25000
#define DDS_RESOURCE_MAX      5000
#define DDS_LANGUAGE          "cpp"

typedef struct dds_encode_opts {
    const dds_config *cfg;  /* service, env, version, DD_TAGS (required) */
    const char *runtime_id; /* UUIDv4; NULL → none */
    int pid;                /* process_id metric */
    size_t max_bytes;       /* 0 → DDS_ENCODE_MAX_BYTES */
} dds_encode_opts;

typedef struct dds_encode_result {
    size_t consumed;      /* chunks taken from the head of the list (encoded or skipped) */
    size_t traces;        /* chunks in the body: the X-Datadog-Trace-Count header */
    size_t spans;         /* spans in the body */
    size_t dropped_spans; /* spans of skipped chunks (too large to ever send) */
} dds_encode_result;

/* Encode a prefix of `list` (linked through qnext) into `out`, which is reset
 * first. The caller still owns every chunk: it frees the first r->consumed once
 * they are sent (or dropped) and passes the remainder to the next call. With
 * r->traces == 0 nothing needs sending. Returns 0, or -1 when out of memory
 * (out is then left empty and r->consumed is 0). */
int dds_encode_traces(msgpack_sbuffer *out, const dds_trace *list, const dds_encode_opts *o,
                      dds_encode_result *r);

/* Format a sampling rate for _dd.p.ksr: up to 6 decimals, trailing zeros (and
 * a trailing '.') stripped: 1 → "1", 0.1 → "0.1", 0.0000001 → "0". */
void dds_format_rate(double rate, char out[32]);

/* Length in bytes of the longest valid UTF-8 prefix of s[0..len). */
size_t dds_utf8_valid_prefix(const char *s, size_t len);

#endif
