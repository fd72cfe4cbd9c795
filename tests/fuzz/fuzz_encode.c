/*
 * fuzz_encode.c — libFuzzer target for core/encode.c.
 *
 * The input is read as a script that builds a few traces: spans with meta
 * (key from a list that includes every reserved key, or one made of input
 * bytes; value any input bytes: long, not UTF-8, with NULs), metrics
 * (non-finite too), a resource, shared tag sets, the root's sampling
 * decision and extracted context, and the process-wide tags (env, version,
 * DD_TAGS). The traces are encoded with a payload cap taken from the input,
 * into a buffer of a size taken from the input (so the span's room is made
 * at every boundary). Checked: the body decodes as one msgpack array whose
 * length is r.traces, every str in it is valid UTF-8, and no read or write
 * leaves its object (ASan, UBSan). make fuzz / fuzz-smoke build and run it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "encode.h"
#include "span.h"
#include "tagset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *keys[] = {
    "language", "runtime-id", "_dd.origin", "_dd.p.dm", "_dd.p.tid", "_dd.p.ksr", "_dd.parent_id",
    "_dd.propagation_error", "_dd.w3c_extraction_error", "process_id", "_sampling_priority_v1",
    "_dd.agent_psr", "_dd.rule_psr", "_dd.limit_psr", "env", "version", "team", "_dd.p.usr.id",
    "db.system", "span.kind", "a", "", "a-key-that-is-much-longer-than-thirty-two-bytes",
    "\xff\xfe", "caf\xc3\xa9"};
#define NKEYS (sizeof keys / sizeof keys[0])

typedef struct in {
    const uint8_t *p;
    size_t n;
} in;

static unsigned byte(in *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

/* A run of input bytes: length from one or two bytes, at most what is left. */
static size_t run(in *r, const char **s)
{
    size_t len = byte(r);
    if (len >= 0xf0)
        len = (len - 0xf0) * 4096 + byte(r) * 16;
    if (len > r->n)
        len = r->n;
    *s = (const char *)r->p;
    r->p += len;
    r->n -= len;
    return len;
}

/* A NUL-terminated copy of a run, kept in pool until the input is done. */
static char *pool[256];
static int npool;
static char *str(in *r)
{
    const char *s;
    size_t len = run(r, &s);
    if (npool == (int)(sizeof pool / sizeof pool[0]))
        return (char *)"";
    char *c = malloc(len + 1);
    if (c == NULL)
        abort();
    memcpy(c, s, len);
    c[len] = '\0';
    return pool[npool++] = c;
}

static const char *key(in *r)
{
    unsigned b = byte(r);
    return b < 0xe0 ? keys[b % NKEYS] : str(r);
}

static double num(in *r)
{
    static const double v[] = {0, 1, -1, 0.5, 1e300, -1e-300, __builtin_nan(""), __builtin_inf()};
    return v[byte(r) % 8];
}

static dds_trace *got;
static void capture(dds_trace *t) { got = t; }

static dds_tagset *make_set(in *r)
{
    dds_tag m[8];
    dds_tag_num x[4];
    int nm = (int)(byte(r) % 9), nx = (int)(byte(r) % 5);
    for (int i = 0; i < nm; i++) {
        m[i].key = key(r);
        m[i].val = str(r);
        m[i].vlen = strlen(m[i].val);
    }
    for (int i = 0; i < nx; i++) {
        x[i].key = key(r);
        x[i].val = num(r);
    }
    return dds_tagset_new(m, nm, x, nx);
}

static dds_trace *make_trace(in *r, dds_tagset *ts)
{
    dds_span *sp[4];
    int ns = 1 + (int)(byte(r) % 4);
    got = NULL;
    for (int i = 0; i < ns; i++) {
        sp[i] = dds_span_start(key(r), key(r), i ? sp[0] : NULL, NULL);
        if (sp[i] == NULL)
            abort();
        int nt = (int)(byte(r) % 24);
        for (int j = 0; j < nt; j++) {
            unsigned op = byte(r) % 8;
            if (op < 4) {
                const char *k = key(r);
                const char *v;
                size_t n = run(r, &v);
                dds_span_set_meta_n(sp[i], k, v, n);
            } else if (op == 4) {
                const char *k = key(r);
                dds_span_set_meta_dyn(sp[i], k, str(r));
            } else if (op == 5) {
                dds_span_set_metric(sp[i], key(r), num(r));
            } else if (op == 6) {
                dds_span_set_resource(sp[i], str(r));
            } else if (ts != NULL) {
                dds_span_set_tagset(sp[i], ts);
            }
        }
    }
    for (int i = ns - 1; i >= 0; i--)
        dds_span_finish(sp[i]);
    dds_trace *t = got;
    if (t == NULL)
        abort();
    unsigned f = byte(r);
    t->trace_id_hi = f & 1 ? 0x6553f0ab00000000ULL : 0;
    t->sampling = (dds_sampling){.decided = 1, .priority = (int)(byte(r) % 5) - 2,
                                 .mechanism = (int)(byte(r) % 14) - 1, .agent_psr = num(r),
                                 .rule_psr = num(r), .limit_psr = num(r), .ksr = num(r)};
    if (f & 2) {
        dds_trace_context *c = dds_trace_ctx_mut(t);
        const char *s;
        size_t n = run(r, &s);
        if (n >= sizeof c->origin)
            n = sizeof c->origin - 1;
        memcpy(c->origin, s, n);
        int nt = (int)(byte(r) % (DDS_MAX_TRACE_TAGS + 1));
        for (int i = 0; i < nt; i++) {
            dds_trace_tag *tg = &c->tags[c->ntags++];
            const char *k = key(r);
            strncpy(tg->key, k, sizeof tg->key - 1);
            n = run(r, &s);
            if (n >= sizeof tg->val)
                n = sizeof tg->val - 1;
            memcpy(tg->val, s, n);
        }
        if (f & 4)
            memcpy(c->last_parent_id, "00f067aa0ba902b7", 17);
        if (f & 8)
            memcpy(c->propagation_error, "inject_max_size", 16);
        if (f & 16)
            memcpy(c->w3c_extraction_error, "malformed", 10);
    }
    return t;
}

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_strs(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        check(dds_utf8_valid_prefix(o->via.str.ptr, o->via.str.size) == o->via.str.size);
        break;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            check_strs(&o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            check_strs(&o->via.map.ptr[i].key);
            check_strs(&o->via.map.ptr[i].val);
        }
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in r = {data, size};
    dds_trace_complete_hook = capture;
    npool = 0;
    dds_kv tags[6];
    dds_config cfg = {.enabled = 1};
    unsigned f = byte(&r);
    cfg.service = f & 1 ? str(&r) : NULL;
    cfg.env = f & 2 ? str(&r) : NULL;
    cfg.version = f & 4 ? str(&r) : NULL;
    cfg.ntags = (int)(byte(&r) % 7);
    for (int i = 0; i < cfg.ntags; i++) {
        tags[i].key = byte(&r) % 8 ? (char *)key(&r) : NULL;
        tags[i].val = str(&r);
    }
    cfg.tags = tags;
    dds_tagset *ts = f & 8 ? make_set(&r) : NULL;
    dds_trace *list = NULL, **tail = &list;
    int nt = 1 + (int)(byte(&r) % 4);
    for (int i = 0; i < nt; i++) {
        *tail = make_trace(&r, ts);
        tail = &(*tail)->qnext;
    }
    dds_encode_opts o = {.cfg = &cfg, .runtime_id = f & 16 ? "0b7e1c6a-3f9d-4c2e-9a51-7d2f0c9e4b13" : NULL,
                         .pid = 4242, .max_bytes = f & 32 ? (size_t)byte(&r) * 64 + 1 : 0};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    size_t start = (size_t)byte(&r) * 8;
    if (start) {
        sb.data = malloc(start);
        sb.alloc = sb.data ? start : 0;
    }
    const dds_trace *at = list;
    while (at != NULL) {
        dds_encode_result res;
        check(dds_encode_traces(&sb, at, &o, &res) == 0);
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        check(msgpack_unpack_next(&up, sb.data, sb.size, &off) == MSGPACK_UNPACK_SUCCESS);
        check(off == sb.size);
        check(up.data.type == MSGPACK_OBJECT_ARRAY && up.data.via.array.size == res.traces);
        check_strs(&up.data);
        msgpack_unpacked_destroy(&up);
        check(res.consumed > 0);
        for (size_t k = 0; k < res.consumed && at != NULL; k++)
            at = at->qnext;
    }
    msgpack_sbuffer_destroy(&sb);
    while (list != NULL) {
        dds_trace *n = list->qnext;
        dds_trace_free(list);
        list = n;
    }
    dds_tagset_unref(ts);
    for (int i = 0; i < npool; i++)
        free(pool[i]);
    return 0;
}
