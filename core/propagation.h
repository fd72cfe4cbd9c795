/*
 * propagation.h — reading and writing distributed-trace headers (wire spec §3).
 *
 * Extraction turns the headers of an incoming HTTP/1.x request into a
 * dds_trace_context (context.h) that core/span.c continues; injection writes
 * the header lines that core/conn.c splices into an outgoing request head, from
 * the local trace (span.h) and the sampling decision core/sampler.c made.
 * Styles: datadog (x-datadog-*), tracecontext (W3C traceparent/tracestate),
 * b3multi (x-b3-*) and b3 (the single "b3:" header), as listed in
 * dds_config.extract / .inject (config.h). Both directions run on application
 * threads, so neither allocates, every scan is bounded by the input, and all
 * incoming values are treated as hostile: nothing is copied into the context
 * (and so nothing can reach an outgoing header) unless it is printable ASCII
 * of bounded length.
 *
 * Choices and simplifications, where Datadog's tracers differ or the spec
 * leaves room:
 *  - An id header that does not parse (a non-decimal x-datadog-trace-id or
 *    -parent-id, a zero trace id, a bad x-b3-traceid / x-b3-spanid / b3...)
 *    makes only that style yield nothing, as in dd-trace-py; dd-trace-cpp
 *    aborts the whole extraction. An unparsable x-datadog-sampling-priority,
 *    x-b3-sampled (0/1/true/false) or b3 state (0/1/d) only loses the
 *    priority. B3 ids accept either case of hex; x-b3-flags: 1 means 2.
 *  - The missing-id rules of §3.2 are applied after the merge of §3.7, as in
 *    cpp: a trace id without a parent id is accepted only with an origin
 *    (the new span is then a root of the remote trace); an explicit parent
 *    id of 0 counts as present.
 *  - traceparent is validated strictly (lower-case hex, exactly two version
 *    digits, version 00 exactly 55 chars) like dd-trace-py; the error values
 *    recorded in w3c_extraction_error are cpp's (malformed_traceparent,
 *    invalid_version, malformed_traceid, malformed_parentid,
 *    malformed_traceflags).
 *  - Other vendors' tracestate members are kept only when well formed (key
 *    [a-z0-9][a-z0-9_-*\/@]* of at most 256 chars, value 1..256 chars of
 *    0x20-0x7E without ','; '=' in a value is tolerated). At most 31 of them
 *    (the dd member makes 32) and 511 bytes are kept: when they do not all
 *    fit, members longer than 128 chars are dropped first, then from the
 *    right (W3C). The first dd member is used; later ones are dropped.
 *  - Trace tags: at most DDS_MAX_TRACE_TAGS, key <= 63 and value <= 191
 *    bytes, and at most 512 bytes in x-datadog-tags form in total; others are
 *    dropped silently. _dd.p.upstream_services is dropped (as py).
 *    _dd.p.tid never goes into ctx.tags: it is ctx.trace_id_hi. _dd.p.ts is
 *    kept as an ordinary propagated tag and tracestate "ts:" as an unknown
 *    dd sub-key.
 *  - Origin: 1..63 printable chars, else ignored.
 *  - _dd.p.tid from tracestate (t.tid) is checked against the traceparent id:
 *    malformed → "malformed_tid <v>", different → "inconsistent_tid <v>" (as
 *    cpp). When datadog headers win and carry a _dd.p.tid, and traceparent
 *    has the same low 64 bits but other high bits, the contexts are not merged
 *    (as cpp and py) and "inconsistent_tid <tid>" is recorded.
 *  - A trace id whose low 64 bits are 0 but high bits are not is accepted.
 *  - DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT=restart returns 0 without a span
 *    link (ddshim records no links); ignore returns 0.
 *  - Baggage is not parsed here; conn.c forwards the header untouched.
 *  - Injection never sends x-datadog-origin / x-datadog-tags with b3 styles
 *    (cpp does; py does not). x-b3-flags is never sent. _dd.p.ksr is not
 *    propagated (it goes on the root span only). An x-datadog-tags value is
 *    sent only if it is at most min(x_datadog_tags_max_length, 640) bytes
 *    (640 is far above what extraction can produce, see above, and keeps the
 *    worst case below DDS_PROPAGATION_INJECT_MAX); 0 disables the header
 *    without an error tag.
 */
#ifndef DDS_PROPAGATION_H
#define DDS_PROPAGATION_H

#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "context.h"
#include "span.h"

/* One incoming header; the same layout as dds_http_header (core/http.h), so
 * the parser's array can be passed as is. Values need not be NUL-terminated. */
typedef struct dds_hdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} dds_hdr;

/* A buffer of this size always holds what dds_propagation_inject writes, for
 * every style enabled at once (the worst case is 1826 bytes). */
#define DDS_PROPAGATION_INJECT_MAX 2048

/* Extract per cfg->extract (ordered), cfg->extract_behavior and
 * cfg->extract_first. Returns 1 and fills *out when a context with a non-zero
 * trace id was found, else 0 (out is then zero but for the error fields). In
 * both cases out->propagation_error / out->w3c_extraction_error say what was
 * wrong (they belong on the new local root). Header names are matched
 * case-insensitively; several tracestate headers are read as one list. */
int dds_propagation_extract(const dds_hdr *hdrs, int n, const dds_config *cfg,
                            dds_trace_context *out);

/* Write the header lines ("name: value\r\n"...) for an outgoing request made
 * by span `span_id` of trace t, per cfg->inject, into buf. Returns the bytes
 * written, 0 when there is nothing to write or it does not all fit (never a
 * partial line or block); a NUL follows when there is room. The priority is
 * t->sampling's when decided (call dds_trace_decide first), else the
 * extracted one, else AUTO_KEEP. An x-datadog-tags value over the limit is
 * left out and t->ctx.propagation_error becomes "inject_max_size": the caller
 * holds t->mu. */
size_t dds_propagation_inject(dds_trace *t, uint64_t span_id, const dds_config *cfg,
                              char *buf, size_t cap);

#endif
