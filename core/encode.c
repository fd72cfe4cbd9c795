/*
 * encode.c — v0.4 msgpack encoding of trace chunks (encode.h).
 */
#include "encode.h"
#include "ids.h"

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
    uint64_t rfirst; /* bit (c & 63) set for the first byte c of each reserved key */
    /* What every span of the payload starts the same way, encoded once per
     * call (see prebuild): the map header, service and the "name" key; the
     * language and runtime-id meta (pre_nmeta entries); the process_id metric. */
    msgpack_sbuffer pre;
    size_t pre_head, pre_meta, pre_metrics; /* ends of the three parts in pre */
    uint32_t pre_nmeta;
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

/* ---- direct writes ------------------------------------------------------
 * The common items (strings, fixed-width ints, doubles, headers) go straight
 * into the buffer: one capacity check per item instead of a packer callback
 * per fragment, which was most of the encoder's time. The packer (same
 * buffer, same bytes) remains for the rare paths. */

/* Room for n more bytes at the end of the buffer, or NULL (out of memory). */
__attribute__((noinline)) static char *reserve_slow(enc *e, size_t n)
{
    msgpack_sbuffer *sb = e->sb;
    if (e->oom)
        return NULL;
    size_t a = sb->alloc ? sb->alloc : MSGPACK_SBUFFER_INIT_SIZE;
    while (a - sb->size < n) {
        if (a > SIZE_MAX / 2) {
            e->oom = 1;
            return NULL;
        }
        a *= 2;
    }
    char *p = realloc(sb->data, a);
    if (p == NULL) {
        e->oom = 1;
        return NULL;
    }
    sb->data = p;
    sb->alloc = a;
    return sb->data + sb->size;
}

/* The common case is one comparison, inlined; growing is out of line. After
 * out of memory the buffer never grows again, so oom is checked too. */
__attribute__((always_inline)) static inline char *reserve(enc *e, size_t n)
{
    msgpack_sbuffer *sb = e->sb;
    if (__builtin_expect(sb->alloc - sb->size >= n && !e->oom, 1))
        return sb->data + sb->size;
    return reserve_slow(e, n);
}

static void put_be(char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}

static void put_raw(enc *e, const char *b, size_t n)
{
    char *p = reserve(e, n);
    if (p == NULL)
        return;
    memcpy(p, b, n);
    e->sb->size += n;
}

/* A str (header and body), as msgpack_pack_str + msgpack_pack_str_body. */
__attribute__((always_inline)) static inline void put_str(enc *e, const char *s, size_t len)
{
    char *p = reserve(e, len + 5);
    if (p == NULL)
        return;
    size_t h;
    if (len < 32) {
        p[0] = (char)(0xa0 | len);
        h = 1;
    } else if (len < 256) {
        p[0] = (char)0xd9;
        put_be(p + 1, len, 1);
        h = 2;
    } else if (len < 65536) {
        p[0] = (char)0xda;
        put_be(p + 1, len, 2);
        h = 3;
    } else {
        p[0] = (char)0xdb;
        put_be(p + 1, len, 4);
        h = 5;
    }
    memcpy(p + h, s, len);
    e->sb->size += h + len;
}

#define PUT_KEY(e, lit) put_str((e), (lit), sizeof(lit) - 1)

/* uint64 (0xcf) / int64 (0xd3) / float64 (0xcb): a tag and 8 bytes. */
static void put_fix64(enc *e, unsigned char tag, uint64_t v)
{
    char *p = reserve(e, 9);
    if (p == NULL)
        return;
    p[0] = (char)tag;
    v = __builtin_bswap64(v); /* big-endian (x86-64 and arm64 are little-endian) */
    memcpy(p + 1, &v, sizeof v);
    e->sb->size += 9;
}

static void put_double(enc *e, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    put_fix64(e, 0xcb, v);
}

static void put_byte(enc *e, unsigned char c)
{
    char *p = reserve(e, 1);
    if (p == NULL)
        return;
    p[0] = (char)c;
    e->sb->size++;
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

static int all_ascii(const char *s, size_t len)
{
    size_t i = 0;
    uint64_t w = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, sizeof x);
        w |= x;
    }
    if (len - i >= 4) {
        uint32_t x;
        memcpy(&x, s + i, sizeof x);
        w |= x;
        i += 4;
    }
    for (; i < len; i++)
        w |= (unsigned char)s[i];
    return !(w & 0x8080808080808080ULL);
}

/* A str of at most cap bytes, valid UTF-8. The common case (valid, short
 * enough) is one scan and one copy. */
static void pack_str_cap(enc *e, const char *s, size_t len, size_t cap)
{
    if (s == NULL) {
        s = "";
        len = 0;
    }
    if (len <= cap && (all_ascii(s, len) || dds_utf8_valid_prefix(s, len) == len)) {
        put_str(e, s, len);
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

/* 1 when s[0..len) is ASCII without a NUL byte. */
static int ascii_no_nul(const char *s, size_t len)
{
    size_t i = 0;
    uint64_t hi = 0, zero = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, s + i, sizeof x);
        hi |= x;
        zero |= (x - 0x0101010101010101ULL) & ~x;
    }
    for (; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        hi |= c;
        zero |= c == 0 ? 0x80 : 0;
    }
    return !((hi | zero) & 0x8080808080808080ULL);
}

/* A span's meta entry, whose value length the span kept: no strlen. The
 * value ends at its first NUL, as it always did. */
static void pack_meta_kv(enc *e, const dds_meta *m)
{
    pack_str(e, m->key);
    if (m->vlen <= DDS_META_VALUE_MAX && ascii_no_nul(m->val, m->vlen))
        put_str(e, m->val, m->vlen);
    else
        pack_str_cap(e, m->val, strnlen(m->val, m->vlen), DDS_META_VALUE_MAX);
}

/* ---- headers whose count is known only at the end ---------------------- */

/* A map32/array32 header (fixed 5 bytes) to patch once the count is known. */
static size_t begin32(enc *e, unsigned char tag)
{
    size_t off = e->sb->size;
    char *p = reserve(e, 5);
    if (p == NULL)
        return off;
    p[0] = (char)tag;
    memset(p + 1, 0, 4);
    e->sb->size += 5;
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

/* The reserved keys of the item being packed. Most keys start with a byte
 * no reserved key starts with: one bit test, no strcmp. */
static void reserved_reset(enc *e)
{
    e->nreserved = 0;
    e->rfirst = 0;
}

static void reserved_add(enc *e, const char *key)
{
    if (e->nreserved == RESERVED_MAX)
        return;
    e->reserved[e->nreserved++] = key;
    e->rfirst |= 1ULL << ((unsigned char)key[0] & 63);
}

static int reserved_has(const enc *e, const char *key)
{
    if (!(e->rfirst & (1ULL << ((unsigned char)key[0] & 63))))
        return 0;
    for (int i = 0; i < e->nreserved; i++)
        if (e->reserved[i][0] == key[0] && strcmp(e->reserved[i], key) == 0)
            return 1;
    return 0;
}

/* Emit a computed tag unless one of the same key is already out. */
static int put_reserved(enc *e, const char *key, const char *val)
{
    if (reserved_has(e, key) || e->nreserved == RESERVED_MAX)
        return 0;
    reserved_add(e, key);
    pack_kv(e, key, val);
    return 1;
}

static int span_has_meta(const dds_span *s, const char *key)
{
    for (int i = 0; i < s->nmeta; i++)
        if (s->meta[i].key[0] == key[0] && strcmp(s->meta[i].key, key) == 0)
            return 1;
    return 0;
}

/* "-<n>" for a decision maker, without snprintf. */
static void format_dm(int mech, char buf[16])
{
    char d[12];
    int n = 0;
    unsigned v = (unsigned)mech;
    do
        d[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0 && n < (int)sizeof d);
    buf[0] = '-';
    for (int i = 0; i < n; i++)
        buf[1 + i] = d[n - 1 - i];
    buf[1 + n] = '\0';
}


/* The tags of the chunk root only: the trace-level decision and context. */
static uint32_t pack_root_meta(enc *e, const dds_trace *t)
{
    uint32_t n = 0;
    const dds_sampling *sm = &t->sampling;
    char buf[32];
    if (sm->priority > 0 && sm->mechanism >= 0) {
        format_dm(sm->mechanism, buf);
        n += put_reserved(e, "_dd.p.dm", buf);
    } else if (sm->priority <= 0) {
        /* A dropped trace carries no decision maker (as dd-trace-cpp); reserving
         * the key keeps an extracted one out too. */
        reserved_add(e, "_dd.p.dm");
    }
    if (t->trace_id_hi != 0) {
        dds_hex16(t->trace_id_hi, buf);
        n += put_reserved(e, "_dd.p.tid", buf);
    }
    if (sm->ksr >= 0) {
        dds_format_rate(sm->ksr, buf);
        n += put_reserved(e, "_dd.p.ksr", buf);
    }
    for (int i = 0; i < t->ctx->ntags && i < DDS_MAX_TRACE_TAGS; i++)
        if (t->ctx->tags[i].key[0] && strcmp(t->ctx->tags[i].key, "_dd.p.tid") != 0)
            n += put_reserved(e, t->ctx->tags[i].key, t->ctx->tags[i].val);
    if (t->ctx->last_parent_id[0])
        n += put_reserved(e, "_dd.parent_id", t->ctx->last_parent_id);
    if (t->ctx->propagation_error[0])
        n += put_reserved(e, "_dd.propagation_error", t->ctx->propagation_error);
    if (t->ctx->w3c_extraction_error[0])
        n += put_reserved(e, "_dd.w3c_extraction_error", t->ctx->w3c_extraction_error);
    return n;
}

static void pack_meta(enc *e, const dds_trace *t, const dds_span *s, int is_root)
{
    const dds_config *cfg = e->o->cfg;
    size_t off = begin32(e, 0xdf);
    uint32_t n = 0;
    reserved_reset(e);
    /* language and runtime-id, encoded once per payload (prebuild). */
    reserved_add(e, "language");
    if (e->o->runtime_id && e->o->runtime_id[0])
        reserved_add(e, "runtime-id");
    put_raw(e, e->pre.data + e->pre_head, e->pre_meta - e->pre_head);
    n += e->pre_nmeta;
    if (t->ctx->origin[0])
        n += put_reserved(e, "_dd.origin", t->ctx->origin);
    if (is_root)
        n += pack_root_meta(e, t);

    for (int i = 0; i < s->nmeta; i++) {
        const dds_meta *m = &s->meta[i];
        if (m->key == NULL || reserved_has(e, m->key))
            continue;
        pack_meta_kv(e, m);
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
    put_double(e, v);
}

static void pack_metrics(enc *e, const dds_trace *t, const dds_span *s, int is_root)
{
    const dds_sampling *sm = &t->sampling;
    size_t off = begin32(e, 0xdf);
    uint32_t n = 0;
    reserved_reset(e);
    reserved_add(e, "process_id");
    put_raw(e, e->pre.data + e->pre_meta, e->pre_metrics - e->pre_meta); /* prebuild */
    n++;
    if (is_root) {
        static const char *const psr_keys[3] = {"_dd.agent_psr", "_dd.rule_psr", "_dd.limit_psr"};
        const double psr[3] = {sm->agent_psr, sm->rule_psr, sm->limit_psr};
        reserved_add(e, "_sampling_priority_v1");
        pack_metric(e, "_sampling_priority_v1", (double)sm->priority);
        n++;
        for (int i = 0; i < 3; i++) {
            reserved_add(e, psr_keys[i]);
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
    const char *name = s->name ? s->name : "";
    put_raw(e, e->pre.data, e->pre_head); /* map of 12, service, "name" (prebuild) */
    pack_str(e, name);
    PUT_KEY(e, "resource");
    const char *res = s->resource ? s->resource : name;
    pack_str_cap(e, res, strlen(res), DDS_RESOURCE_MAX);
    PUT_KEY(e, "trace_id");
    put_fix64(e, 0xcf, t->trace_id_lo);
    PUT_KEY(e, "span_id");
    put_fix64(e, 0xcf, s->span_id);
    PUT_KEY(e, "parent_id");
    put_fix64(e, 0xcf, s->parent_id);
    PUT_KEY(e, "start");
    put_fix64(e, 0xd3, (uint64_t)s->start_ns);
    PUT_KEY(e, "duration");
    put_fix64(e, 0xd3, (uint64_t)s->duration_ns);
    PUT_KEY(e, "error");
    put_fix64(e, 0xd3, s->error ? 1 : 0);
    PUT_KEY(e, "type");
    pack_str(e, s->type ? s->type : "");
    PUT_KEY(e, "meta");
    pack_meta(e, t, s, is_root);
    PUT_KEY(e, "metrics");
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

/* The parts every span of this payload shares, encoded once into e->pre with
 * the same functions as the rest (so the same bytes): the span map's header,
 * service and the "name" key; the language and runtime-id meta; the
 * process_id metric. */
static void prebuild(enc *e)
{
    msgpack_sbuffer *out = e->sb;
    msgpack_sbuffer_init(&e->pre);
    e->sb = &e->pre;
    put_byte(e, 0x8c); /* map of 12 */
    PUT_KEY(e, "service");
    pack_str(e, e->o->cfg->service ? e->o->cfg->service : "");
    PUT_KEY(e, "name");
    e->pre_head = e->pre.size;
    reserved_reset(e);
    e->pre_nmeta = (uint32_t)put_reserved(e, "language", DDS_LANGUAGE);
    if (e->o->runtime_id && e->o->runtime_id[0])
        e->pre_nmeta += (uint32_t)put_reserved(e, "runtime-id", e->o->runtime_id);
    e->pre_meta = e->pre.size;
    pack_metric(e, "process_id", (double)e->o->pid);
    e->pre_metrics = e->pre.size;
    e->sb = out;
}

int dds_encode_traces(msgpack_sbuffer *out, const dds_trace *list, const dds_encode_opts *o,
                      dds_encode_result *r)
{
    enc e = {.sb = out, .o = o};
    size_t max = o->max_bytes ? o->max_bytes : DDS_ENCODE_MAX_BYTES;
    memset(r, 0, sizeof *r);
    msgpack_sbuffer_clear(out);
    msgpack_packer_init(&e.pk, &e, enc_write);
    prebuild(&e);

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
    msgpack_sbuffer_destroy(&e.pre);
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
    /* Every root span of a trace sampled by a rule or the agent's rate needs
     * this, nearly always with the same rate: keep the last one formatted. */
    static __thread double last_rate = -1;
    static __thread char last_out[32];
    if (!(rate >= 0))
        rate = 0;
    if (rate == last_rate) {
        memcpy(out, last_out, 32);
        return;
    }
    snprintf(out, 32, "%.6f", rate);
    char *dot = strchr(out, '.');
    if (dot != NULL) {
        char *end = out + strlen(out);
        while (end > dot + 1 && end[-1] == '0')
            *--end = '\0';
        if (end == dot + 1)
            *dot = '\0';
    }
    memcpy(last_out, out, 32);
    last_rate = rate;
}
