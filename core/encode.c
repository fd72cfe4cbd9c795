/*
 * encode.c — v0.4 msgpack encoding of trace chunks (encode.h).
 */
#include "bytes.h"
#include "encode.h"
#include "ids.h"
#include "tagset.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Keys computed here, per span, that the span's own tags may not override:
 * the fixed ones (enum rkey) and the trace's propagated tags. */
#define RESERVED_MAX (8 + DDS_MAX_TRACE_TAGS)

enum rkey { RK_NONE, RK_LANGUAGE, RK_RUNTIME_ID, RK_ORIGIN, RK_DM, RK_TID, RK_KSR, RK_PARENT_ID,
            RK_PROPAGATION_ERROR, RK_W3C_ERROR, RK_PROCESS_ID, RK_PRIORITY, RK_AGENT_PSR,
            RK_RULE_PSR, RK_LIMIT_PSR, RK_COUNT };

#define RKEY(lit) {lit, sizeof lit - 1}
static const struct { const char *name; size_t len; } rkeys[RK_COUNT] = {
    [RK_NONE] = RKEY(""),
    [RK_LANGUAGE] = RKEY("language"),
    [RK_RUNTIME_ID] = RKEY("runtime-id"),
    [RK_ORIGIN] = RKEY("_dd.origin"),
    [RK_DM] = RKEY("_dd.p.dm"),
    [RK_TID] = RKEY("_dd.p.tid"),
    [RK_KSR] = RKEY("_dd.p.ksr"),
    [RK_PARENT_ID] = RKEY("_dd.parent_id"),
    [RK_PROPAGATION_ERROR] = RKEY("_dd.propagation_error"),
    [RK_W3C_ERROR] = RKEY("_dd.w3c_extraction_error"),
    [RK_PROCESS_ID] = RKEY("process_id"),
    [RK_PRIORITY] = RKEY("_sampling_priority_v1"),
    [RK_AGENT_PSR] = RKEY("_dd.agent_psr"),
    [RK_RULE_PSR] = RKEY("_dd.rule_psr"),
    [RK_LIMIT_PSR] = RKEY("_dd.limit_psr"),
};

/* A key (or name, type) as it goes out: its fixstr, and which fixed reserved
 * key it is. Keys are looked up by address: within one call every span, and
 * so every key, stays alive and unchanged, and nearly all keys are the hooks'
 * static strings, the same few for every span. */
typedef struct key_ent {
    unsigned char n;  /* bytes of b to write; 0: not kept (pack_str every time) */
    unsigned char rk; /* enum rkey, RK_NONE for any other key */
    uint32_t rbit;    /* 1 << rk, 0 for RK_NONE: tested against enc.rset */
    char b[32];       /* fixstr header and body, zero-padded */
} key_ent;

#define KC_BITS 7
#define KC_SLOTS (1 << KC_BITS)

typedef struct enc {
    msgpack_sbuffer *sb;
    msgpack_packer pk;
    int oom;
    const dds_encode_opts *o;
    uint32_t rset;    /* bit rk set for each fixed reserved key of the item being packed */
    int nother;
    const char *other[RESERVED_MAX]; /* the others: propagated tags */
    /* What every span of the payload starts the same way, encoded once per
     * call (see prebuild): the map header, service and the "name" key; the
     * "meta" key, its map header and the language and runtime-id meta
     * (pre_nmeta entries); the "metrics" key, its map header and the
     * process_id metric. */
    msgpack_sbuffer pre;
    size_t pre_head, pre_meta, pre_metrics; /* ends of the three parts in pre */
    uint32_t pre_nmeta;
    /* The process-wide tags (env, version, DD_TAGS) as a span with none of
     * their keys writes them: pt_n pairs, pt_len bytes in pre after
     * pre_metrics; pt_keys: their key bits; pt_rk: one is a fixed reserved key. */
    uint32_t pt_n;
    size_t pt_len;
    uint64_t pt_keys;
    int pt_rk;
    uint32_t rset_base; /* the reserved bits every span's meta starts with */
    size_t span_room;   /* span_room() */
    size_t room;        /* what the span being packed may write (pack_span_items) */
    char dm[16];      /* _dd.p.dm of mechanism dm_mech, formatted */
    size_t dm_len;
    int dm_mech;
    key_ent kc_tmp;   /* a key not kept */
    const char *kc_key[KC_SLOTS]; /* cleared per call; kc[] is filled on use */
    key_ent kc[KC_SLOTS];
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
 * out of memory the buffer never grows again (reserve_slow), but what room
 * it had left may still be written: the caller discards the whole of it. */
__attribute__((always_inline)) static inline char *reserve(enc *e, size_t n)
{
    msgpack_sbuffer *sb = e->sb;
    if (__builtin_expect(sb->alloc - sb->size >= n, 1))
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

/* A str (header and body), as msgpack_pack_str + msgpack_pack_str_body, at
 * p, which has room for it; returns the end. */
__attribute__((always_inline)) static inline char *w_str(char *p, const char *s, size_t len)
{
    if (len < 32) {
        *p++ = (char)(0xa0 | len);
    } else if (len < 256) {
        p[0] = (char)0xd9;
        p[1] = (char)len;
        p += 2;
    } else if (len < 65536) {
        p[0] = (char)0xda;
        put_be(p + 1, len, 2);
        p += 3;
    } else {
        p[0] = (char)0xdb;
        put_be(p + 1, len, 4);
        p += 5;
    }
    dds_copy_bytes(p, s, len);
    return p + len;
}

/* The same, checked. */
__attribute__((always_inline)) static inline void put_str(enc *e, const char *s, size_t len)
{
    char *p = reserve(e, len + 5);
    if (p == NULL)
        return;
    e->sb->size = (size_t)(w_str(p, s, len) - e->sb->data);
}

#define PUT_KEY(e, lit) put_str((e), (lit), sizeof(lit) - 1)

/* uint64 (0xcf) / int64 (0xd3) / float64 (0xcb): a tag and 8 bytes. */
__attribute__((always_inline)) static inline char *w_fix64(char *p, unsigned char tag, uint64_t v)
{
    p[0] = (char)tag;
    v = __builtin_bswap64(v); /* big-endian (x86-64 and arm64 are little-endian) */
    memcpy(p + 1, &v, sizeof v);
    return p + 9;
}

static void put_fix64(enc *e, unsigned char tag, uint64_t v)
{
    char *p = reserve(e, 9);
    if (p == NULL)
        return;
    w_fix64(p, tag, v);
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

/* 1 when s[0..len) is ASCII without a NUL byte. Whole words only: the last
 * one (and a short string's two) overlap bytes already checked. */
__attribute__((always_inline)) static inline int ascii_no_nul(const char *s, size_t len)
{
    uint64_t x, bad = 0;
    if (len >= 8) {
        for (size_t i = 0; i + 8 < len; i += 8) {
            memcpy(&x, s + i, sizeof x);
            bad |= x | ((x - 0x0101010101010101ULL) & ~x);
        }
        memcpy(&x, s + len - 8, sizeof x);
        bad |= x | ((x - 0x0101010101010101ULL) & ~x);
    } else if (len >= 4) {
        uint32_t a, b;
        memcpy(&a, s, sizeof a);
        memcpy(&b, s + len - 4, sizeof b);
        x = (uint64_t)a << 32 | b;
        bad = x | ((x - 0x0101010101010101ULL) & ~x);
    } else {
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)s[i];
            bad |= c == 0 ? 0x80 : c;
        }
    }
    return !(bad & 0x8080808080808080ULL);
}

/* ---- headers whose count is known only at the end ---------------------- */

/* A map32/array32 header (fixed 5 bytes) to patch once the count is known. */
__attribute__((always_inline)) static inline size_t begin32(enc *e, unsigned char tag)
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

/* ---- keys ---------------------------------------------------------------- */

static int rkey_of(const char *k, size_t len)
{
    for (int i = 1; i < RK_COUNT; i++)
        if (rkeys[i].len == len && memcmp(rkeys[i].name, k, len) == 0)
            return i;
    return RK_NONE;
}

/* First sight of k in this call. A key pack_str would write as a fixstr
 * (valid UTF-8, under 32 bytes) is kept, exactly those bytes; any other goes
 * through pack_str each time. */
__attribute__((noinline)) static const key_ent *key_fill(enc *e, const char *k, size_t slot)
{
    /* Kept in either of two slots (slot, slot ^ 1): two keys of every span
     * whose addresses hash to the same slot would otherwise evict each other
     * at every span, and which keys collide depends on where the library is
     * loaded. */
    if (e->kc_key[slot] != NULL && e->kc_key[slot ^ 1] == NULL)
        slot ^= 1;
    size_t len = strlen(k);
    key_ent *ke = &e->kc_tmp;
    ke->n = 0;
    if (len < 32 && (all_ascii(k, len) || dds_utf8_valid_prefix(k, len) == len)) {
        ke = &e->kc[slot];
        memset(ke->b, 0, sizeof ke->b);
        ke->b[0] = (char)(0xa0 | len);
        dds_copy_bytes(ke->b + 1, k, len);
        ke->n = (unsigned char)(len + 1);
        e->kc_key[slot] = k;
    }
    ke->rk = (unsigned char)rkey_of(k, len);
    ke->rbit = ke->rk != RK_NONE ? 1u << ke->rk : 0;
    return ke;
}

__attribute__((always_inline)) static inline const key_ent *key_get(enc *e, const char *k)
{
    size_t slot = (size_t)(((uintptr_t)k * 0x9E3779B97F4A7C15ULL) >> (64 - KC_BITS));
    if (__builtin_expect(e->kc_key[slot] == k, 1))
        return &e->kc[slot];
    if (e->kc_key[slot ^ 1] == k)
        return &e->kc[slot ^ 1];
    return key_fill(e, k, slot);
}

/* The key's str: the same bytes as pack_str(e, k). */
__attribute__((always_inline)) static inline void put_key(enc *e, const char *k, const key_ent *ke)
{
    if (__builtin_expect(ke->n == 0, 0)) {
        pack_str(e, k);
        return;
    }
    char *p = reserve(e, sizeof ke->b);
    if (p == NULL)
        return;
    memcpy(p, ke->b, sizeof ke->b);
    e->sb->size += ke->n;
}

/* ---- spans -------------------------------------------------------------- */

/* The reserved keys of the item being packed: a bit per fixed key (decided
 * once per key and call, by key_get), a list for the rest. */

/* The fixed keys are bits, so they always fit; only the others (propagated
 * tags: at most DDS_MAX_TRACE_TAGS) are counted against the list. */
static void reserved_add(enc *e, const char *key, int rk)
{
    if (rk != RK_NONE)
        e->rset |= 1u << rk;
    else if (e->nother < RESERVED_MAX)
        e->other[e->nother++] = key;
}

/* key is reserved; rk is its enum rkey. A fixed key is never among the
 * others (reserved_add puts it in rset), nor any other key in rset. */
static int reserved_has(const enc *e, const char *key, int rk)
{
    if (rk != RK_NONE)
        return (e->rset >> rk) & 1;
    for (int i = 0; i < e->nother; i++)
        if (e->other[i][0] == key[0] && strcmp(e->other[i], key) == 0)
            return 1;
    return 0;
}

/* Claim a computed key, unless one of the same key is already out. */
static int reserve_key(enc *e, const char *key, int rk)
{
    if (reserved_has(e, key, rk) || (rk == RK_NONE && e->nother == RESERVED_MAX))
        return 0;
    reserved_add(e, key, rk);
    return 1;
}

/* A meta value from a C string. */
static void pack_val(enc *e, const char *v)
{
    pack_str_cap(e, v, v ? strlen(v) : 0, DDS_META_VALUE_MAX);
}

/* A span's meta value, whose length the span kept: no strlen. The value
 * ends at its first NUL, as it always did. */
static void pack_meta_val(enc *e, const dds_meta *m)
{
    if (m->vlen <= DDS_META_VALUE_MAX && ascii_no_nul(m->val, m->vlen))
        put_str(e, m->val, m->vlen);
    else
        pack_str_cap(e, m->val, strnlen(m->val, m->vlen), DDS_META_VALUE_MAX);
}

/* A computed meta entry whose key is a literal and whose value is short
 * ASCII (what pack_kv writes for it: no scan needed). */
#define PUT_KV_ASCII(e, lit, v, vlen) (PUT_KEY(e, lit), put_str((e), (v), (vlen)))
/* A computed meta entry whose value comes from outside (context). */
#define PUT_KV(e, lit, v) (PUT_KEY(e, lit), pack_val((e), (v)))

static int span_has_meta(const dds_span *s, const char *key)
{
    for (int i = 0; i < s->nmeta; i++)
        if (s->meta[i].key[0] == key[0] && strcmp(s->meta[i].key, key) == 0)
            return 1;
    return 0;
}

/* "-<n>" for a decision maker, without snprintf; returns its length. */
static size_t format_dm(int mech, char buf[16])
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
    return (size_t)n + 1;
}

/* ---- a span: one room check, then a cursor -------------------------------
 * pack_span works out, before it writes anything, room enough for every item
 * its fast paths may write (e->span_room per payload, plus so much per tag),
 * makes sure the buffer has it (one comparison) and then writes through a
 * local cursor p with no further check: p stays in a register, where every
 * store through e->sb's char pointer would make the compiler reload the
 * buffer's state. An item off the fast paths (a key or value that is long,
 * not ASCII or needs repair, the extracted context's tags, a tag set or a
 * process-wide tag whose key may collide) goes through the checked writers
 * above: SLOW stores the cursor, writes the item, and makes room for the
 * whole span again, so the items after it still fit. Same bytes either way. */

#define VAL_FAST 256                   /* longest meta value on the fast path */
#define KEY_ROOM 32                    /* w_key copies the whole key_ent.b */
#define META_ROOM (KEY_ROOM + 5 + VAL_FAST)
#define METRIC_ROOM (KEY_ROOM + 9)
#define COPY_SLACK 64                  /* dds_hex16 writes its NUL past the digits; margin */

#define RBIT(rk) (1u << (rk))

static void cur_save(enc *e, const char *p)
{
    e->sb->size = (size_t)(p - e->sb->data);
}

/* After a checked write: the cursor again, with the span's room ahead of it;
 * NULL when out of memory (e->oom is then set). */
__attribute__((noinline)) static char *cur_load(enc *e)
{
    return reserve(e, e->room);
}

#define SLOW(e, p, stmt)                                                                       \
    do {                                                                                       \
        cur_save((e), (p));                                                                    \
        stmt;                                                                                  \
        if (((p) = cur_load(e)) == NULL)                                                       \
            return NULL;                                                                       \
    } while (0)

/* A fixstr key from a literal (under 32 bytes). */
#define W_KEYLIT(p, lit)                                                                       \
    (*(p) = (char)(0xa0 | (sizeof(lit) - 1)), memcpy((p) + 1, (lit), sizeof(lit) - 1),        \
     (p) + sizeof(lit))

__attribute__((always_inline)) static inline char *w_key(char *p, const key_ent *ke)
{
    memcpy(p, ke->b, sizeof ke->b);
    return p + ke->n;
}

/* A block of pre-encoded bytes (e->pre, a tag set's). */
__attribute__((always_inline)) static inline char *w_block(char *p, const char *b, size_t n)
{
    dds_copy_bytes(p, b, n);
    return p + n;
}

static char *w_double(char *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, sizeof v);
    return w_fix64(p, 0xcb, v);
}

/* _dd.origin (an extracted context's), unless reserved: checked path. */
static uint32_t pack_origin(enc *e, const dds_trace *t)
{
    if (!reserve_key(e, "_dd.origin", RK_ORIGIN))
        return 0;
    PUT_KV(e, "_dd.origin", t->ctx->origin);
    return 1;
}

/* The chunk root's tags from the extracted context: checked path. */
static uint32_t pack_root_ctx(enc *e, const dds_trace_context *c)
{
    uint32_t n = 0;
    for (int i = 0; i < c->ntags && i < DDS_MAX_TRACE_TAGS; i++) {
        const char *k = c->tags[i].key;
        if (!k[0] || strcmp(k, "_dd.p.tid") == 0)
            continue;
        const key_ent *ke = key_get(e, k);
        if (reserve_key(e, k, ke->rk)) {
            put_key(e, k, ke);
            pack_val(e, c->tags[i].val);
            n++;
        }
    }
    if (c->last_parent_id[0] && reserve_key(e, "_dd.parent_id", RK_PARENT_ID)) {
        PUT_KV(e, "_dd.parent_id", c->last_parent_id);
        n++;
    }
    if (c->propagation_error[0] && reserve_key(e, "_dd.propagation_error", RK_PROPAGATION_ERROR)) {
        PUT_KV(e, "_dd.propagation_error", c->propagation_error);
        n++;
    }
    if (c->w3c_extraction_error[0] && reserve_key(e, "_dd.w3c_extraction_error", RK_W3C_ERROR)) {
        PUT_KV(e, "_dd.w3c_extraction_error", c->w3c_extraction_error);
        n++;
    }
    return n;
}

/* The tags of the chunk root only: the trace-level decision and context.
 * Only the fixed keys are reserved when it starts (language, runtime-id,
 * _dd.origin), so dm, tid and ksr are tested against rset alone. */
static char *pack_root_meta(enc *e, char *p, const dds_trace *t, uint32_t *np)
{
    uint32_t n = 0, rs = e->rset;
    const dds_sampling *sm = &t->sampling;
    const dds_trace_context *c = t->ctx;
    if (sm->priority > 0 && sm->mechanism >= 0) {
        if (sm->mechanism != e->dm_mech) { /* nearly always the same one */
            e->dm_len = format_dm(sm->mechanism, e->dm);
            e->dm_mech = sm->mechanism;
        }
        if (!(rs & RBIT(RK_DM))) {
            rs |= RBIT(RK_DM);
            p = W_KEYLIT(p, "_dd.p.dm");
            p = w_str(p, e->dm, e->dm_len);
            n++;
        }
    } else if (sm->priority <= 0) {
        /* A dropped trace carries no decision maker (as dd-trace-cpp); reserving
         * the key keeps an extracted one out too. */
        rs |= RBIT(RK_DM);
    }
    if (t->trace_id_hi != 0 && !(rs & RBIT(RK_TID))) {
        rs |= RBIT(RK_TID);
        p = W_KEYLIT(p, "_dd.p.tid");
        *p++ = (char)(0xa0 | 16);
        dds_hex16(t->trace_id_hi, p); /* and a NUL, in the slack */
        p += 16;
        n++;
    }
    if (sm->ksr >= 0 && !(rs & RBIT(RK_KSR))) {
        char buf[32];
        rs |= RBIT(RK_KSR);
        dds_format_rate(sm->ksr, buf);
        p = W_KEYLIT(p, "_dd.p.ksr");
        p = w_str(p, buf, strlen(buf));
        n++;
    }
    e->rset = rs;
    if (c->ntags > 0 || c->last_parent_id[0] || c->propagation_error[0] ||
        c->w3c_extraction_error[0])
        SLOW(e, p, n += pack_root_ctx(e, c));
    *np += n;
    return p;
}

/* The span's tag set's pairs (tagset.h), as if they were the span's own
 * tags set before all others, entry by entry: each checked as the span's own
 * would be, and left out when the span has the key itself (its own value
 * wins). */
__attribute__((noinline)) static uint32_t pack_shared_each(enc *e, const dds_span *s,
                                                           const dds_tagset_ent *ents, int nents,
                                                           const char *bytes, uint64_t overlap,
                                                           int reserved, int metric)
{
    uint32_t n = 0;
    for (int i = 0; i < nents; i++) {
        const dds_tagset_ent *t = &ents[i];
        if (t->len == 0)
            continue;
        if (overlap & t->bit) {
            int own = 0;
            if (metric) {
                for (int j = 0; j < s->nmetrics && !own; j++)
                    own = strcmp(s->metrics[j].key, t->key) == 0;
            } else {
                own = span_has_meta(s, t->key);
            }
            if (own)
                continue;
        }
        if (reserved && reserved_has(e, t->key, key_get(e, t->key)->rk))
            continue;
        put_raw(e, bytes + t->off, t->len);
        n++;
    }
    return n;
}

/* A tag set's pairs: in the usual case one copy of the whole block, when
 * none of their keys is the span's own (the key bits tell) or may be
 * reserved; else entry by entry. Adds the pairs written to *n. */
__attribute__((always_inline)) static inline char *
pack_shared(enc *e, char *p, const dds_span *s, const dds_tagset_ent *ents, int nents,
            const char *bytes, size_t len, uint32_t nout, uint64_t overlap, int reserved,
            int metric, uint32_t *n)
{
    if (__builtin_expect(!overlap && !reserved, 1)) {
        *n += nout;
        return w_block(p, bytes, len);
    }
    SLOW(e, p, *n += pack_shared_each(e, s, ents, nents, bytes, overlap, reserved, metric));
    return p;
}

/* A process-wide tag unless the span has the key or it is reserved. */
static int pack_process_tag(enc *e, const dds_span *s, const char *k, const char *v)
{
    if (span_has_meta(s, k) || (s->tagset && dds_tagset_find_meta(s->tagset, k, dds_key_bit(k))))
        return 0;
    const key_ent *ke = key_get(e, k);
    if (reserved_has(e, k, ke->rk))
        return 0;
    put_key(e, k, ke);
    pack_val(e, v);
    return 1;
}

/* Process-wide tags: the span's own value wins (dd-trace-cpp inserts
 * DD_TAGS without overwriting), DD_ENV / DD_VERSION win over DD_TAGS.
 * calls each(e, s, key, value) for each, in order; prebuild encodes them
 * with s == NULL. */
static uint32_t process_tags(enc *e, const dds_span *s,
                             int (*each)(enc *, const dds_span *, const char *, const char *))
{
    const dds_config *cfg = e->o->cfg;
    uint32_t n = 0;
    int has_env = cfg->env && cfg->env[0], has_version = cfg->version && cfg->version[0];
    if (has_env)
        n += (uint32_t)each(e, s, "env", cfg->env);
    if (has_version)
        n += (uint32_t)each(e, s, "version", cfg->version);
    for (int i = 0; i < cfg->ntags; i++) {
        const char *k = cfg->tags[i].key;
        if (k == NULL || !k[0])
            continue;
        if ((has_env && strcmp(k, "env") == 0) || (has_version && strcmp(k, "version") == 0))
            continue;
        n += (uint32_t)each(e, s, k, cfg->tags[i].val);
    }
    return n;
}

static char *pack_meta(enc *e, char *p, const dds_trace *t, const dds_span *s, int is_root)
{
    /* "meta", its map header, language and runtime-id (prebuild). */
    size_t off = (size_t)(p - e->sb->data) + sizeof "\xa4meta" - 1;
    uint32_t n = e->pre_nmeta;
    p = w_block(p, e->pre.data + e->pre_head, e->pre_meta - e->pre_head);
    e->rset = e->rset_base; /* language, runtime-id */
    e->nother = 0;
    if (t->ctx->origin[0])
        SLOW(e, p, n += pack_origin(e, t));
    if (is_root && (p = pack_root_meta(e, p, t, &n)) == NULL)
        return NULL;

    const uint32_t rset = e->rset;
    const int nother = e->nother;
    const dds_meta *m = s->meta, *end = m + s->nmeta;
    for (; m < end; m++) {
        const char *k = m->key;
        if (k == NULL)
            continue;
        const key_ent *ke = key_get(e, k);
        if (__builtin_expect((ke->rbit & rset) != 0, 0) ||
            (__builtin_expect(nother != 0, 0) && ke->rk == RK_NONE && reserved_has(e, k, RK_NONE)))
            continue;
        uint32_t vlen = m->vlen;
        if (__builtin_expect(ke->n != 0 && vlen <= VAL_FAST && ascii_no_nul(m->val, vlen), 1)) {
            p = w_key(p, ke);
            p = w_str(p, m->val, vlen);
        } else {
            SLOW(e, p, (put_key(e, k, ke), pack_meta_val(e, m)));
        }
        n++;
    }
    const dds_tagset *ts = s->tagset;
    if (ts && ts->nmeta_out &&
        (p = pack_shared(e, p, s, ts->meta, ts->nmeta, ts->meta_bytes, ts->meta_len, ts->nmeta_out,
                         s->keys & ts->keys, ts->meta_reserved, 0, &n)) == NULL)
        return NULL;
    if (e->pt_n) {
        uint64_t keys = s->keys | (ts ? ts->keys : 0);
        if (__builtin_expect(!(keys & e->pt_keys) && !e->pt_rk && nother == 0, 1)) {
            p = w_block(p, e->pre.data + e->pre_metrics, e->pt_len);
            n += e->pt_n;
        } else {
            SLOW(e, p, n += process_tags(e, s, pack_process_tag));
        }
    }
    uint32_t be = __builtin_bswap32(n);
    memcpy(e->sb->data + off + 1, &be, sizeof be);
    return p;
}

static char *pack_metrics(enc *e, char *p, const dds_trace *t, const dds_span *s, int is_root)
{
    /* "metrics", its map header, process_id (prebuild). */
    size_t off = (size_t)(p - e->sb->data) + sizeof "\xa7metrics" - 1;
    uint32_t n = 1;
    uint32_t rset = RBIT(RK_PROCESS_ID);
    p = w_block(p, e->pre.data + e->pre_meta, e->pre_metrics - e->pre_meta);
    if (is_root) {
        const dds_sampling *sm = &t->sampling;
        rset |= RBIT(RK_PRIORITY) | RBIT(RK_AGENT_PSR) | RBIT(RK_RULE_PSR) | RBIT(RK_LIMIT_PSR);
        p = W_KEYLIT(p, "_sampling_priority_v1");
        p = w_double(p, (double)sm->priority);
        n++;
        if (sm->agent_psr >= 0) {
            p = W_KEYLIT(p, "_dd.agent_psr");
            p = w_double(p, sm->agent_psr);
            n++;
        }
        if (sm->rule_psr >= 0) {
            p = W_KEYLIT(p, "_dd.rule_psr");
            p = w_double(p, sm->rule_psr);
            n++;
        }
        if (sm->limit_psr >= 0) {
            p = W_KEYLIT(p, "_dd.limit_psr");
            p = w_double(p, sm->limit_psr);
            n++;
        }
    }
    /* Only the fixed keys above are reserved: no others among metrics. */
    const dds_metric *m = s->metrics, *end = m + s->nmetrics;
    for (; m < end; m++) {
        const char *k = m->key;
        if (k == NULL || !isfinite(m->val))
            continue;
        const key_ent *ke = key_get(e, k);
        if (__builtin_expect((ke->rbit & rset) != 0, 0))
            continue;
        if (__builtin_expect(ke->n != 0, 1)) {
            p = w_key(p, ke);
            p = w_double(p, m->val);
        } else {
            SLOW(e, p, (put_key(e, k, ke), put_double(e, m->val)));
        }
        n++;
    }
    const dds_tagset *ts = s->tagset;
    if (ts && ts->nmetrics_out) {
        e->rset = rset; /* for pack_shared_each */
        e->nother = 0;
        if ((p = pack_shared(e, p, s, ts->metrics, ts->nmetrics, ts->metric_bytes, ts->metric_len,
                             ts->nmetrics_out, s->mkeys & ts->mkeys, ts->metric_reserved, 1,
                             &n)) == NULL)
            return NULL;
    }
    uint32_t be = __builtin_bswap32(n);
    memcpy(e->sb->data + off + 1, &be, sizeof be);
    return p;
}

/* The fixed-width fields, keys and type bytes, with zeros where pack_span
 * writes the values (big-endian, at the FX_ offsets), then the "type" key. */
static const char FIXED[] = "\xa8" "trace_id" "\xcf" "\0\0\0\0\0\0\0\0"
                            "\xa7" "span_id" "\xcf" "\0\0\0\0\0\0\0\0"
                            "\xa9" "parent_id" "\xcf" "\0\0\0\0\0\0\0\0"
                            "\xa5" "start" "\xd3" "\0\0\0\0\0\0\0\0"
                            "\xa8" "duration" "\xd3" "\0\0\0\0\0\0\0\0"
                            "\xa5" "error" "\xd3" "\0\0\0\0\0\0\0\0"
                            "\xa4" "type";
enum { FX_TRACE_ID = 10, FX_SPAN_ID = 27, FX_PARENT_ID = 46, FX_START = 61, FX_DURATION = 79,
       FX_ERROR = 94, FX_SIZE = 107 };
_Static_assert(sizeof FIXED == FX_SIZE + 1, "FIXED layout");

static void put_be64_at(char *p, uint64_t v)
{
    v = __builtin_bswap64(v); /* big-endian (x86-64 and arm64 are little-endian) */
    memcpy(p, &v, sizeof v);
}

/* What one span may write on the fast paths, beyond its tags (prebuild):
 * the three pre-encoded parts and the process-wide tags, name and type keys,
 * "resource" and its str header, the fixed fields, the root's dm, tid, ksr
 * and sampling metrics, and the slack. */
static size_t span_room(const enc *e)
{
    return e->pre_metrics + e->pt_len + 2 * KEY_ROOM + 9 + 5 + FX_SIZE +
           (9 + 1 + sizeof e->dm) + (10 + 1 + 16) + (10 + 1 + 32) + (22 + 9) + 3 * (14 + 9) +
           COPY_SLACK;
}

static char *pack_span_items(enc *e, const dds_trace *t, const dds_span *s, int is_root)
{
    const char *name = s->name ? s->name : "";
    const char *res = s->resource ? s->resource : name;
    size_t rlen = strlen(res);
    const dds_tagset *ts = s->tagset;
    size_t room = e->span_room + (size_t)s->nmeta * META_ROOM + (size_t)s->nmetrics * METRIC_ROOM +
                  (rlen <= DDS_RESOURCE_MAX ? rlen : 0);
    if (ts != NULL)
        room += ts->meta_len + ts->metric_len;
    e->room = room;
    char *p = reserve(e, room);
    if (p == NULL)
        return NULL;
    p = w_block(p, e->pre.data, e->pre_head); /* map of 12, service, "name" (prebuild) */
    const key_ent *ke = key_get(e, name);     /* name is static: kept like a key */
    if (__builtin_expect(ke->n != 0, 1))
        p = w_key(p, ke);
    else
        SLOW(e, p, put_key(e, name, ke));
    p = W_KEYLIT(p, "resource");
    /* (res has no NUL before rlen: ascii_no_nul is all_ascii here) */
    if (__builtin_expect(rlen <= DDS_RESOURCE_MAX && ascii_no_nul(res, rlen), 1))
        p = w_str(p, res, rlen);
    else
        SLOW(e, p, pack_str_cap(e, res, rlen, DDS_RESOURCE_MAX));
    memcpy(p, FIXED, FX_SIZE);
    put_be64_at(p + FX_TRACE_ID, t->trace_id_lo);
    put_be64_at(p + FX_SPAN_ID, s->span_id);
    put_be64_at(p + FX_PARENT_ID, s->parent_id);
    put_be64_at(p + FX_START, (uint64_t)s->start_ns);
    put_be64_at(p + FX_DURATION, (uint64_t)s->duration_ns);
    put_be64_at(p + FX_ERROR, s->error ? 1 : 0);
    p += FX_SIZE;
    const char *type = s->type ? s->type : "";
    ke = key_get(e, type); /* static too */
    if (__builtin_expect(ke->n != 0, 1))
        p = w_key(p, ke);
    else
        SLOW(e, p, put_key(e, type, ke));
    if ((p = pack_meta(e, p, t, s, is_root)) == NULL)
        return NULL;
    return pack_metrics(e, p, t, s, is_root);
}

static void pack_span(enc *e, const dds_trace *t, const dds_span *s, int is_root)
{
    char *p = pack_span_items(e, t, s, is_root);
    if (p != NULL)
        cur_save(e, p);
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

/* A process-wide tag as pack_process_tag writes it for a span without its
 * key, appended to e->pre. */
static int prebuild_process_tag(enc *e, const dds_span *s, const char *k, const char *v)
{
    (void)s;
    pack_str(e, k);
    pack_val(e, v);
    e->pt_keys |= dds_key_bit(k);
    if (rkey_of(k, strlen(k)) != RK_NONE)
        e->pt_rk = 1;
    return 1;
}

/* The parts every span of this payload shares, encoded once into e->pre with
 * the same functions as the rest (so the same bytes): the span map's header,
 * service and the "name" key; "meta", a map32 header (count patched per span),
 * the language and runtime-id meta; "metrics", its header, the process_id
 * metric. */
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
    PUT_KEY(e, "meta");
    begin32(e, 0xdf);
    PUT_KV(e, "language", DDS_LANGUAGE);
    e->pre_nmeta = 1;
    if (e->o->runtime_id && e->o->runtime_id[0]) {
        PUT_KV(e, "runtime-id", e->o->runtime_id);
        e->pre_nmeta++;
    }
    e->pre_meta = e->pre.size;
    PUT_KEY(e, "metrics");
    begin32(e, 0xdf);
    PUT_KEY(e, "process_id");
    put_double(e, (double)e->o->pid);
    e->pre_metrics = e->pre.size;
    e->pt_n = process_tags(e, NULL, prebuild_process_tag);
    e->pt_len = e->pre.size - e->pre_metrics;
    e->rset_base = RBIT(RK_LANGUAGE);
    if (e->o->runtime_id && e->o->runtime_id[0])
        e->rset_base |= RBIT(RK_RUNTIME_ID);
    e->span_room = span_room(e);
    e->sb = out;
}

int dds_encode_traces(msgpack_sbuffer *out, const dds_trace *list, const dds_encode_opts *o,
                      dds_encode_result *r)
{
    enc e;
    memset(&e, 0, offsetof(enc, kc)); /* kc[] is valid only where kc_key says */
    e.sb = out;
    e.o = o;
    e.dm_mech = -1;
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

/* The pairs of a tag set, made once with the functions that encode a span's
 * own tags (so the same bytes): key as pack_str, value as pack_meta_val or a
 * float64. A key is flagged as possibly reserved when it is one of the fixed
 * reserved keys or a propagated tag's (_dd.p.*, the only others). */
int dds_encode_tagset(dds_tagset *ts)
{
    enc e;
    msgpack_sbuffer sb;
    memset(&e, 0, offsetof(enc, kc));
    msgpack_sbuffer_init(&sb);
    e.sb = &sb;
    msgpack_packer_init(&e.pk, &e, enc_write);
    for (int i = 0; i < ts->nmeta; i++) {
        dds_tagset_ent *t = &ts->meta[i];
        size_t off = sb.size;
        pack_str(&e, t->key);
        /* What pack_meta_val writes for the value (it ends at its first NUL). */
        pack_str_cap(&e, t->val, strnlen(t->val, t->vlen), DDS_META_VALUE_MAX);
        t->off = (uint32_t)off;
        t->len = (uint32_t)(sb.size - off);
        ts->nmeta_out++;
        if (rkey_of(t->key, strlen(t->key)) != RK_NONE || strncmp(t->key, "_dd.p.", 6) == 0)
            ts->meta_reserved = 1;
    }
    ts->meta_bytes = sb.data;
    ts->meta_len = sb.size;
    msgpack_sbuffer_init(&sb);
    for (int i = 0; i < ts->nmetrics && !e.oom; i++) {
        dds_tagset_ent *t = &ts->metrics[i];
        size_t off = sb.size;
        if (isfinite(t->num)) {
            pack_str(&e, t->key);
            put_double(&e, t->num);
            ts->nmetrics_out++;
        }
        t->off = (uint32_t)off;
        t->len = (uint32_t)(sb.size - off);
        if (rkey_of(t->key, strlen(t->key)) != RK_NONE)
            ts->metric_reserved = 1;
    }
    ts->metric_bytes = sb.data;
    ts->metric_len = sb.size;
    return e.oom ? -1 : 0;
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
