/*
 * encode.c — v0.4 msgpack encoding of trace chunks (encode.h).
 */
#include "encode.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Keys computed here, per span, that the span's own tags may not override. */
#define RESERVED_MAX (8 + DDS_MAX_TRACE_TAGS)

typedef struct enc {
    msgpack_sbuffer *sb;
    msgpack_packer pk;
    int oom;
    const dds_encode_opts *o;
    const char *reserved[RESERVED_MAX];
    int nreserved;
} enc;

static int enc_write(void *data, const char *buf, size_t len)
{
    enc *e = data;
    if (e->oom || msgpack_sbuffer_write(e->sb, buf, len) != 0) {
        e->oom = 1;
        return -1;
    }
    return 0;
}

/* ---- UTF-8 ------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if p[0] starts none.
 * Overlong forms, surrogates and code points above U+10FFFF are invalid, as
 * for Python's strict decoder in the test agent. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    if (c < 0xC2 || c > 0xF4)
        return 0;
    if (c < 0xE0)
        return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
            return 0;
        return 3;
    }
    if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
        return 0;
    if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
        return 0;
    return 4;
}

size_t dds_utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0)
            break;
        i += n;
    }
    return i;
}

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

/* Walk s producing its repaired form, at most `limit` bytes of it, never
 * splitting a character. Appends it to the payload when emit is set. Returns
 * the number of bytes produced; *all tells whether the whole input fit. */
static size_t utf8_repair(enc *e, const char *s, size_t len, size_t limit, int emit, int *all)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, out = 0, run = 0; /* run: valid bytes pending at s+i-run */
    *all = 1;
    while (i < len) {
        size_t n = p[i] < 0x80 ? 1 : utf8_seq(p + i, len - i);
        size_t w = n ? n : sizeof REPLACEMENT;
        if (out + w > limit) {
            *all = 0;
            break;
        }
        if (n) {
            run += n;
            i += n;
        } else {
            if (emit && run)
                msgpack_pack_str_body(&e->pk, s + i - run, run);
            run = 0;
            if (emit)
                msgpack_pack_str_body(&e->pk, REPLACEMENT, sizeof REPLACEMENT);
            i++;
        }
        out += w;
    }
    if (emit && run)
        msgpack_pack_str_body(&e->pk, s + i - run, run);
    return out;
}

/* A str of at most cap bytes, valid UTF-8. The common case (valid, short
 * enough) is one scan and one copy. */
static void pack_str_cap(enc *e, const char *s, size_t len, size_t cap)
{
    if (s == NULL) {
        s = "";
        len = 0;
    }
    if (len <= cap && dds_utf8_valid_prefix(s, len) == len) {
        msgpack_pack_str(&e->pk, len);
        msgpack_pack_str_body(&e->pk, s, len);
        return;
    }
    int all;
    size_t n = utf8_repair(e, s, len, cap, 0, &all);
    if (all) {
        msgpack_pack_str(&e->pk, n);
        utf8_repair(e, s, len, cap, 1, &all);
        return;
    }
    /* Too long: cut on a character boundary and mark the cut. */
    n = utf8_repair(e, s, len, cap - 3, 0, &all);
    msgpack_pack_str(&e->pk, n + 3);
    utf8_repair(e, s, len, cap - 3, 1, &all);
    msgpack_pack_str_body(&e->pk, "...", 3);
}

static void pack_str(enc *e, const char *s)
{
    pack_str_cap(e, s, s ? strlen(s) : 0, SIZE_MAX);
}

static void pack_kv(enc *e, const char *k, const char *v)
{
    pack_str(e, k);
    pack_str_cap(e, v, v ? strlen(v) : 0, DDS_META_VALUE_MAX);
}

/* ---- headers whose count is known only at the end ---------------------- */

/* A map32/array32 header (fixed 5 bytes) to patch once the count is known. */
static size_t begin32(enc *e, unsigned char tag)
{
    size_t off = e->sb->size;
    char h[5] = {(char)tag, 0, 0, 0, 0};
    enc_write(e, h, sizeof h);
    return off;
}

static void end32(enc *e, size_t off, uint32_t n)
{
    if (e->oom)
        return;
    unsigned char *p = (unsigned char *)e->sb->data + off + 1;
    p[0] = (unsigned char)(n >> 24);
    p[1] = (unsigned char)(n >> 16);
    p[2] = (unsigned char)(n >> 8);
    p[3] = (unsigned char)n;
}

/* ---- spans -------------------------------------------------------------- */

static int reserved_has(const enc *e, const char *key)
{
    for (int i = 0; i < e->nreserved; i++)
        if (strcmp(e->reserved[i], key) == 0)
            return 1;
    return 0;
}

/* Emit a computed tag unless one of the same key is already out. */
static int put_reserved(enc *e, const char *key, const char *val)
{
    if (reserved_has(e, key) || e->nreserved == RESERVED_MAX)
        return 0;
    e->reserved[e->nreserved++] = key;
    pack_kv(e, key, val);
    return 1;
}

static int span_has_meta(const dds_span *s, const char *key)
{
    for (int i = 0; i < s->nmeta; i++)
        if (strcmp(s->meta[i].key, key) == 0)
            return 1;
    return 0;
}

/* The tags of the chunk root only: the trace-level decision and context. */
static uint32_t pack_root_meta(enc *e, const dds_trace *t)
{
    uint32_t n = 0;
    const dds_sampling *sm = &t->sampling;
    char buf[32];
    if (sm->priority > 0 && sm->mechanism >= 0) {
        snprintf(buf, sizeof buf, "-%d", sm->mechanism);
        n += put_reserved(e, "_dd.p.dm", buf);
    } else if (sm->priority <= 0) {
        /* A dropped trace carries no decision maker (as dd-trace-cpp); reserving
         * the key keeps an extracted one out too. */
        if (e->nreserved < RESERVED_MAX)
            e->reserved[e->nreserved++] = "_dd.p.dm";
    }
    if (t->trace_id_hi != 0) {
        snprintf(buf, sizeof buf, "%016" PRIx64, t->trace_id_hi);
        n += put_reserved(e, "_dd.p.tid", buf);
    }
    if (sm->ksr >= 0) {
        dds_format_rate(sm->ksr, buf);
        n += put_reserved(e, "_dd.p.ksr", buf);
    }
    for (int i = 0; i < t->ctx.ntags && i < DDS_MAX_TRACE_TAGS; i++)
        if (t->ctx.tags[i].key[0] && strcmp(t->ctx.tags[i].key, "_dd.p.tid") != 0)
            n += put_reserved(e, t->ctx.tags[i].key, t->ctx.tags[i].val);
    if (t->ctx.last_parent_id[0])
        n += put_reserved(e, "_dd.parent_id", t->ctx.last_parent_id);
    if (t->ctx.propagation_error[0])
        n += put_reserved(e, "_dd.propagation_error", t->ctx.propagation_error);
    if (t->ctx.w3c_extraction_error[0])
        n += put_reserved(e, "_dd.w3c_extraction_error", t->ctx.w3c_extraction_error);
    return n;
}

static void pack_meta(enc *e, const dds_trace *t, const dds_span *s, int is_root)
{
    const dds_config *cfg = e->o->cfg;
    size_t off = begin32(e, 0xdf);
    uint32_t n = 0;
    e->nreserved = 0;
    n += put_reserved(e, "language", DDS_LANGUAGE);
    if (e->o->runtime_id && e->o->runtime_id[0])
        n += put_reserved(e, "runtime-id", e->o->runtime_id);
    if (t->ctx.origin[0])
        n += put_reserved(e, "_dd.origin", t->ctx.origin);
    if (is_root)
        n += pack_root_meta(e, t);

    for (int i = 0; i < s->nmeta; i++) {
        const dds_meta *m = &s->meta[i];
        if (m->key == NULL || reserved_has(e, m->key))
            continue;
        pack_kv(e, m->key, m->val);
        n++;
    }

    /* Process-wide tags: the span's own value wins (dd-trace-cpp inserts
     * DD_TAGS without overwriting), DD_ENV / DD_VERSION win over DD_TAGS. */
    int has_env = cfg->env && cfg->env[0], has_version = cfg->version && cfg->version[0];
    if (has_env && !span_has_meta(s, "env") && !reserved_has(e, "env")) {
        pack_kv(e, "env", cfg->env);
        n++;
    }
    if (has_version && !span_has_meta(s, "version") && !reserved_has(e, "version")) {
        pack_kv(e, "version", cfg->version);
        n++;
    }
    for (int i = 0; i < cfg->ntags; i++) {
        const char *k = cfg->tags[i].key;
        if (k == NULL || !k[0] || span_has_meta(s, k) || reserved_has(e, k))
            continue;
        if ((has_env && strcmp(k, "env") == 0) || (has_version && strcmp(k, "version") == 0))
            continue;
        pack_kv(e, k, cfg->tags[i].val);
        n++;
    }
    end32(e, off, n);
}

static void pack_metric(enc *e, const char *k, double v)
{
    pack_str(e, k);
    msgpack_pack_double(&e->pk, v);
}

static void pack_metrics(enc *e, const dds_trace *t, const dds_span *s, int is_root)
{
    const dds_sampling *sm = &t->sampling;
    size_t off = begin32(e, 0xdf);
    uint32_t n = 0;
    e->nreserved = 0;
    e->reserved[e->nreserved++] = "process_id";
    pack_metric(e, "process_id", (double)e->o->pid);
    n++;
    if (is_root) {
        static const char *const psr_keys[3] = {"_dd.agent_psr", "_dd.rule_psr", "_dd.limit_psr"};
        const double psr[3] = {sm->agent_psr, sm->rule_psr, sm->limit_psr};
        e->reserved[e->nreserved++] = "_sampling_priority_v1";
        pack_metric(e, "_sampling_priority_v1", (double)sm->priority);
        n++;
        for (int i = 0; i < 3; i++) {
            e->reserved[e->nreserved++] = psr_keys[i];
            if (psr[i] >= 0) {
                pack_metric(e, psr_keys[i], psr[i]);
                n++;
            }
        }
    }
    for (int i = 0; i < s->nmetrics; i++) {
        const dds_metric *m = &s->metrics[i];
        if (m->key == NULL || !isfinite(m->val) || reserved_has(e, m->key))
            continue;
        pack_metric(e, m->key, m->val);
        n++;
    }
    end32(e, off, n);
}

static void pack_span(enc *e, const dds_trace *t, const dds_span *s, int is_root)
{
    msgpack_packer *pk = &e->pk;
    const char *name = s->name ? s->name : "";
    msgpack_pack_map(pk, 12);
    pack_str(e, "service");
    pack_str(e, e->o->cfg->service ? e->o->cfg->service : "");
    pack_str(e, "name");
    pack_str(e, name);
    pack_str(e, "resource");
    const char *res = s->resource ? s->resource : name;
    pack_str_cap(e, res, strlen(res), DDS_RESOURCE_MAX);
    pack_str(e, "trace_id");
    msgpack_pack_fix_uint64(pk, t->trace_id_lo);
    pack_str(e, "span_id");
    msgpack_pack_fix_uint64(pk, s->span_id);
    pack_str(e, "parent_id");
    msgpack_pack_fix_uint64(pk, s->parent_id);
    pack_str(e, "start");
    msgpack_pack_fix_int64(pk, s->start_ns);
    pack_str(e, "duration");
    msgpack_pack_fix_int64(pk, s->duration_ns);
    pack_str(e, "error");
    msgpack_pack_fix_int64(pk, s->error ? 1 : 0);
    pack_str(e, "type");
    pack_str(e, s->type ? s->type : "");
    pack_str(e, "meta");
    pack_meta(e, t, s, is_root);
    pack_str(e, "metrics");
    pack_metrics(e, t, s, is_root);
}

/* The local root first, with the trace-level tags, then the rest in the
 * list's order, whatever order core/span.c keeps: a child that outlived the
 * root must not take its place. No root in the chunk (cannot happen today):
 * the first span stands in. */
static uint32_t pack_chunk(enc *e, const dds_trace *t)
{
    size_t off = begin32(e, 0xdd);
    uint32_t n = 0;
    const dds_span *root = t->finished;
    for (const dds_span *s = t->finished; s != NULL; s = s->next)
        if (s->span_id == t->root_span_id) {
            root = s;
            break;
        }
    if (root != NULL) {
        pack_span(e, t, root, 1);
        n++;
    }
    for (const dds_span *s = t->finished; s != NULL; s = s->next)
        if (s != root) {
            pack_span(e, t, s, 0);
            n++;
        }
    end32(e, off, n);
    return n;
}

int dds_encode_traces(msgpack_sbuffer *out, const dds_trace *list, const dds_encode_opts *o,
                      dds_encode_result *r)
{
    enc e = {.sb = out, .o = o};
    size_t max = o->max_bytes ? o->max_bytes : DDS_ENCODE_MAX_BYTES;
    memset(r, 0, sizeof *r);
    msgpack_sbuffer_clear(out);
    msgpack_packer_init(&e.pk, &e, enc_write);

    size_t top = begin32(&e, 0xdd);
    for (const dds_trace *t = list; t != NULL && !e.oom; t = t->qnext) {
        size_t mark = out->size;
        uint32_t n = pack_chunk(&e, t);
        if (e.oom)
            break;
        if (n == 0) { /* an empty chunk would be dropped by the Agent */
            out->size = mark;
            r->consumed++;
            continue;
        }
        if (out->size > max) {
            if (r->traces > 0) { /* full: this chunk starts the next body */
                out->size = mark;
                break;
            }
            if (out->size > DDS_ENCODE_HARD_MAX) {
                out->size = mark;
                r->consumed++;
                r->dropped_spans += n;
                continue;
            }
        }
        r->consumed++;
        r->traces++;
        r->spans += n;
        if (out->size >= max)
            break;
    }
    if (e.oom) {
        msgpack_sbuffer_clear(out);
        memset(r, 0, sizeof *r);
        return -1;
    }
    end32(&e, top, (uint32_t)r->traces);
    return 0;
}

void dds_format_rate(double rate, char out[32])
{
    if (!(rate >= 0))
        rate = 0;
    snprintf(out, 32, "%.6f", rate);
    char *dot = strchr(out, '.');
    if (dot == NULL)
        return;
    char *end = out + strlen(out);
    while (end > dot + 1 && end[-1] == '0')
        *--end = '\0';
    if (end == dot + 1)
        *dot = '\0';
}
