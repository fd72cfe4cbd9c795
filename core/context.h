/*
 * context.h — a distributed-trace context as it crosses a process boundary.
 *
 * core/propagation.c fills one of these from incoming HTTP headers (extraction)
 * and writes headers from one (injection); core/span.c keeps one per local trace
 * (dds_trace.ctx) so that the origin, the _dd.p.* trace tags and the tracestate
 * of other vendors travel on to every outgoing request. Plain data, fixed size:
 * no allocation, so it can be filled on an application thread. A trace keeps
 * a right-sized heap copy only when there is something to carry (about 1 KiB
 * plus 256 bytes a tag); otherwise it points at an empty one.
 */
#ifndef DDS_CONTEXT_H
#define DDS_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#define DDS_MAX_TRACE_TAGS 16

/* Sampling priorities (wire spec §4.1). */
enum { DDS_PRIO_USER_REJECT = -1, DDS_PRIO_AUTO_REJECT = 0,
       DDS_PRIO_AUTO_KEEP = 1, DDS_PRIO_USER_KEEP = 2 };

/* Propagation styles, as bits so a config can hold a set; the order of a list
 * is kept separately (dds_style_list). */
enum { DDS_STYLE_DATADOG = 1, DDS_STYLE_TRACECONTEXT = 2, DDS_STYLE_B3MULTI = 4,
       DDS_STYLE_B3 = 8 };

typedef struct dds_style_list {
    int n;        /* 0 means "none" */
    int style[4]; /* DDS_STYLE_* in configured order, no duplicates */
} dds_style_list;

/* One propagated trace tag (_dd.p.<name>=value). */
typedef struct dds_trace_tag {
    char key[64];
    char val[192];
} dds_trace_tag;

/* Field order matters: tags[] comes last, so that a copy kept with a trace
 * (core/span.c) holds only the ntags slots in use (dds_context_size). Nothing
 * reads tags[] at or past ntags. */
typedef struct dds_trace_context {
    uint64_t trace_id_hi, trace_id_lo; /* 128-bit trace id; hi may be 0 */
    uint64_t parent_id;                /* remote parent span id; 0 = none */
    int has_priority;
    int priority;                      /* DDS_PRIO_* when has_priority */
    char origin[64];                   /* x-datadog-origin / tracestate o: ; "" = none */
    char tracestate_other[512];        /* other vendors' tracestate members, original order, comma-joined */
    char dd_unknown[256];              /* unknown dd= sub-keys, ';'-joined, re-emitted verbatim */
    char last_parent_id[17];           /* _dd.parent_id (16 hex) or "" */
    char propagation_error[80];        /* _dd.propagation_error or "" */
    char w3c_extraction_error[32];     /* _dd.w3c_extraction_error or "" */
    int ntags;
    dds_trace_tag tags[DDS_MAX_TRACE_TAGS]; /* _dd.p.* except _dd.p.tid (implied by trace_id_hi) */
} dds_trace_context;

/* The bytes of c that matter: everything up to its last used tag slot. */
static inline size_t dds_context_size(const dds_trace_context *c)
{
    int n = c->ntags < 0 ? 0 : c->ntags > DDS_MAX_TRACE_TAGS ? DDS_MAX_TRACE_TAGS : c->ntags;
    return offsetof(dds_trace_context, tags) + (size_t)n * sizeof(dds_trace_tag);
}

/* True when c carries something besides ids and a priority (origin, trace
 * tags, tracestate, errors): only then does a trace keep a copy of it. */
static inline int dds_context_has_extras(const dds_trace_context *c)
{
    return c->ntags > 0 || c->origin[0] || c->tracestate_other[0] || c->dd_unknown[0] ||
           c->last_parent_id[0] || c->propagation_error[0] || c->w3c_extraction_error[0];
}

#endif
