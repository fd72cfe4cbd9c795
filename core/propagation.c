/* See propagation.h. */
#include "propagation.h"
#include "ids.h"

#include <limits.h>
#include <stddef.h>
#include <string.h>

/* Trace tags kept from one extraction, in x-datadog-tags form
 * ("k=v,k=v"): the spec's 512-byte extraction limit, applied to tracestate's
 * t.* tags as well, so that injection has a known worst case. */
#define TAGS_BUDGET 512
/* Hard cap on the x-datadog-tags value we send, whatever the configuration:
 * extraction can produce at most TAGS_BUDGET + _dd.p.tid + _dd.p.dm (~560). */
#define XDD_TAGS_HARD_MAX 640
/* tracestate: the dd member is at most 256 chars; 32 members in all. */
#define TS_DD_MAX 256
#define TS_OTHER_MAX_MEMBERS 31
#define TS_LONG_MEMBER 128
#define DD_MEMBER_EXTRACT_MAX 512

/* ------------------------------------------------------------------------ */
/* Small text helpers. Everything is ASCII; locale must not matter. */

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int is_print(int c)
{
    return c >= 0x20 && c <= 0x7e;
}

static int all_print(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_print((unsigned char)s[i]))
            return 0;
    return 1;
}

static int eq_lit(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && memcmp(s, lit, l) == 0;
}

static int eq_lit_nocase(const char *s, size_t n, const char *lit)
{
    if (n != strlen(lit))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != lit[i])
            return 0;
    return 1;
}

/* HTTP optional whitespace; the parser trims it already, callers in tests
 * may not. */
static void trim(const char **s, size_t *n)
{
    while (*n > 0 && ((*s)[0] == ' ' || (*s)[0] == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

static int hexdig(int c, int lower_only)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (!lower_only && c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1..16 hex digits. */
static int parse_hex64(const char *s, size_t n, int lower_only, uint64_t *out)
{
    if (n == 0 || n > 16)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = hexdig((unsigned char)s[i], lower_only);
        if (d < 0)
            return 0;
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return 1;
}

/* 1..32 hex digits; the last 16 are the low half. */
static int parse_hex128(const char *s, size_t n, int lower_only, uint64_t *hi, uint64_t *lo)
{
    if (n == 0 || n > 32)
        return 0;
    size_t split = n > 16 ? n - 16 : 0;
    uint64_t h = 0, l = 0;
    if (split > 0 && !parse_hex64(s, split, lower_only, &h))
        return 0;
    if (!parse_hex64(s + split, n - split, lower_only, &l))
        return 0;
    *hi = h;
    *lo = l;
    return 1;
}

static int parse_dec_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

static int parse_dec_int(const char *s, size_t n, int *out)
{
    int neg = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        s++;
        n--;
    }
    if (n == 0 || n > 10)
        return 0;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    if (neg)
        v = -v;
    if (v < INT_MIN || v > INT_MAX)
        return 0;
    *out = (int)v;
    return 1;
}

/* Two output characters per step, from a table: half the steps of a digit
 * loop, on every injected request. */
static const char dec_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";


/* An error tag: `what` plus an echo of the offending value. The value came
 * from the network and ends up in span meta (msgpack str, must be UTF-8), so
 * it is cut to fit and anything unprintable becomes '?'. */
static void set_error(char *dst, size_t cap, const char *what, const char *v, size_t vn)
{
    size_t w = strlen(what);
    if (w >= cap)
        w = cap - 1;
    memcpy(dst, what, w);
    size_t room = cap - 1 - w;
    if (vn > room)
        vn = room;
    for (size_t i = 0; i < vn; i++)
        dst[w + i] = is_print((unsigned char)v[i]) ? v[i] : '?';
    dst[w + vn] = '\0';
}

#define PERR(c, what, v, vn) \
    set_error((c)->propagation_error, sizeof (c)->propagation_error, (what), (v), (vn))
#define W3CERR(c, what) \
    set_error((c)->w3c_extraction_error, sizeof (c)->w3c_extraction_error, (what), NULL, 0)

/* ------------------------------------------------------------------------ */
/* The headers we look at, found in one pass so each style's lookups are
 * direct. Single-valued headers: the first occurrence counts. */

enum { H_DD_TRACE, H_DD_PARENT, H_DD_PRIO, H_DD_ORIGIN, H_DD_TAGS, H_TRACEPARENT,
       H_B3_TRACE, H_B3_SPAN, H_B3_SAMPLED, H_B3_FLAGS, H_B3, H_N };

static const struct {
    const char *name;
    size_t len;
} hdr_names[H_N] = {
    [H_DD_TRACE] = {"x-datadog-trace-id", 18},
    [H_DD_PARENT] = {"x-datadog-parent-id", 19},
    [H_DD_PRIO] = {"x-datadog-sampling-priority", 27},
    [H_DD_ORIGIN] = {"x-datadog-origin", 16},
    [H_DD_TAGS] = {"x-datadog-tags", 14},
    [H_TRACEPARENT] = {"traceparent", 11},
    [H_B3_TRACE] = {"x-b3-traceid", 12},
    [H_B3_SPAN] = {"x-b3-spanid", 11},
    [H_B3_SAMPLED] = {"x-b3-sampled", 12},
    [H_B3_FLAGS] = {"x-b3-flags", 10},
    [H_B3] = {"b3", 2},
};

typedef struct hdr_set {
    const dds_hdr *h[H_N];
    const dds_hdr *all;
    int n;
    int ts_first; /* first tracestate header, -1 if none */
} hdr_set;

static int name_is(const dds_hdr *h, const char *lname, size_t len)
{
    if (h->name_len != len)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (lower((unsigned char)h->name[i]) != lname[i])
            return 0;
    return 1;
}

static int hdr_usable(const dds_hdr *h)
{
    return h->name != NULL && (h->value != NULL || h->value_len == 0);
}

static void index_headers(const dds_hdr *hdrs, int n, hdr_set *hs)
{
    memset(hs, 0, sizeof *hs);
    hs->all = hdrs;
    hs->n = n;
    hs->ts_first = -1;
    for (int i = 0; i < n; i++) {
        const dds_hdr *h = &hdrs[i];
        if (!hdr_usable(h))
            continue;
        if (name_is(h, "tracestate", 10)) {
            if (hs->ts_first < 0)
                hs->ts_first = i;
            continue;
        }
        for (int k = 0; k < H_N; k++) {
            if (name_is(h, hdr_names[k].name, hdr_names[k].len)) {
                if (hs->h[k] == NULL)
                    hs->h[k] = h;
                break;
            }
        }
    }
}

/* The trimmed value of header k, if present. */
static int hval(const hdr_set *hs, int k, const char **v, size_t *n)
{
    const dds_hdr *h = hs->h[k];
    if (h == NULL)
        return 0;
    *v = h->value ? h->value : "";
    *n = h->value ? h->value_len : 0;
    trim(v, n);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* What one style found, besides what it wrote into the context. */

typedef struct found {
    int has_trace;
    uint64_t hi, lo;
    int has_parent;
    uint64_t parent;
    int has_tid;          /* datadog: a valid _dd.p.tid supplied hi */
    const char *tid_raw;  /* tracecontext: the t.tid value, checked after the merge */
    size_t tid_raw_len;
    char last_parent[17]; /* tracecontext: tracestate p:, or 16 zeros */
} found;

/* Keep the error fields, clear the rest: a style that did not win must leave
 * nothing behind but its diagnostics. The tag slots past ntags are already
 * zero (dds_propagation_extract zeroes the context first, and tags are only
 * ever appended), so only the used ones are cleared: the slots are 4 KiB of
 * the context's 5, and this runs up to three times per extraction, for every
 * request a traced server reads. */
static void clear_keep_errors(dds_trace_context *c)
{
    char pe[sizeof c->propagation_error], we[sizeof c->w3c_extraction_error];
    size_t a = offsetof(dds_trace_context, tags), b = a + sizeof c->tags;
    int used = c->ntags < 0 ? 0 : c->ntags > DDS_MAX_TRACE_TAGS ? DDS_MAX_TRACE_TAGS : c->ntags;
    memcpy(pe, c->propagation_error, sizeof pe);
    memcpy(we, c->w3c_extraction_error, sizeof we);
    memset(c, 0, a);
    memset(c->tags, 0, sizeof c->tags[0] * (size_t)used);
    memset((char *)c + b, 0, sizeof *c - b);
    memcpy(c->propagation_error, pe, sizeof pe);
    memcpy(c->w3c_extraction_error, we, sizeof we);
}

static void set_origin(dds_trace_context *c, const char *v, size_t n, int tilde)
{
    if (n == 0 || n >= sizeof c->origin || !all_print(v, n))
        return;
    for (size_t i = 0; i < n; i++)
        c->origin[i] = (tilde && v[i] == '~') ? '=' : v[i];
    c->origin[n] = '\0';
}

static size_t tags_encoded_len(const dds_trace_context *c)
{
    size_t n = 0;
    for (int i = 0; i < c->ntags; i++)
        n += (i ? 1 : 0) + strnlen(c->tags[i].key, sizeof c->tags[i].key) + 1 +
             strnlen(c->tags[i].val, sizeof c->tags[i].val);
    return n;
}

/* Add _dd.p.<name>=<val> unless it is malformed, too big, a duplicate, or one
 * we never carry. tilde: tracestate's '~' stands for '='. */
static void add_tag(dds_trace_context *c, const char *name, size_t nlen, const char *val,
                    size_t vlen, int tilde)
{
    if (nlen == 0 || vlen == 0 || 6 + nlen >= sizeof c->tags[0].key ||
        vlen >= sizeof c->tags[0].val || c->ntags >= DDS_MAX_TRACE_TAGS)
        return;
    if (eq_lit(name, nlen, "tid") || eq_lit(name, nlen, "upstream_services"))
        return;
    for (size_t i = 0; i < nlen; i++) {
        int ch = (unsigned char)name[i];
        if (ch <= 0x20 || ch > 0x7e || ch == ',' || ch == '=')
            return;
    }
    for (size_t i = 0; i < vlen; i++) {
        int ch = (unsigned char)val[i];
        if (!is_print(ch) || ch == ',')
            return;
    }
    for (int i = 0; i < c->ntags; i++)
        if (strncmp(c->tags[i].key + 6, name, nlen) == 0 && c->tags[i].key[6 + nlen] == '\0')
            return;
    size_t cur = tags_encoded_len(c);
    if (cur + (c->ntags ? 1 : 0) + 6 + nlen + 1 + vlen > TAGS_BUDGET)
        return;
    dds_trace_tag *t = &c->tags[c->ntags++];
    memcpy(t->key, "_dd.p.", 6);
    memcpy(t->key + 6, name, nlen);
    t->key[6 + nlen] = '\0';
    for (size_t i = 0; i < vlen; i++)
        t->val[i] = (tilde && val[i] == '~') ? '=' : val[i];
    t->val[vlen] = '\0';
}

/* ------------------------------------------------------------------------ */
/* datadog */

/* x-datadog-tags (§3.3). store: keep the _dd.p.* tags in c (the winning
 * style); otherwise only validate and look for _dd.p.tid. */
static void parse_xdd_tags(const char *v, size_t n, dds_trace_context *c, found *f, int store)
{
    if (n > 512) {
        PERR(c, "extract_max_size", NULL, 0);
        return;
    }
    int saved = c->ntags;
    uint64_t tid = 0;
    int has_tid = 0;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        const char *m = v + i;
        size_t mn = j - i;
        i = j + 1; /* a trailing ',' ends the loop: tolerated, as cpp */
        const char *eq = memchr(m, '=', mn);
        if (eq == NULL || eq == m || eq == m + mn - 1)
            goto bad;
        size_t kn = (size_t)(eq - m);
        for (size_t k = 0; k < kn; k++)
            if (m[k] <= 0x20 || m[k] > 0x7e)
                goto bad;
        const char *val = eq + 1;
        size_t vn = mn - kn - 1;
        if (!all_print(val, vn))
            goto bad;
        if (kn <= 6 || memcmp(m, "_dd.p.", 6) != 0)
            continue;
        if (eq_lit(m + 6, kn - 6, "tid")) {
            uint64_t x;
            /* Strict like py: exactly 16 lower-case hex digits, not zero. */
            if (vn != 16 || !parse_hex64(val, vn, 1, &x) || x == 0) {
                PERR(c, "malformed_tid ", val, vn);
            } else {
                tid = x;
                has_tid = 1;
            }
            continue;
        }
        if (store)
            add_tag(c, m + 6, kn - 6, val, vn, 0);
    }
    if (has_tid && f->has_trace) {
        f->hi = tid;
        f->has_tid = 1;
    }
    return;
bad:
    c->ntags = saved;
    memset(&c->tags[saved], 0, sizeof c->tags[0] * (size_t)(DDS_MAX_TRACE_TAGS - saved));
    PERR(c, "decoding_error", NULL, 0);
}

static void extract_datadog(const hdr_set *hs, dds_trace_context *c, found *f, int full)
{
    const char *v;
    size_t n;
    uint64_t lo, parent = 0;
    int has_parent = 0;
    if (!hval(hs, H_DD_TRACE, &v, &n) || !parse_dec_u64(v, n, &lo) || lo == 0)
        return;
    if (hval(hs, H_DD_PARENT, &v, &n)) {
        if (!parse_dec_u64(v, n, &parent))
            return;
        has_parent = 1;
    }
    f->has_trace = 1;
    f->hi = 0;
    f->lo = lo;
    f->has_parent = has_parent;
    f->parent = parent;
    if (full) {
        int p;
        if (hval(hs, H_DD_PRIO, &v, &n) && parse_dec_int(v, n, &p)) {
            c->has_priority = 1;
            c->priority = p;
        }
        if (hval(hs, H_DD_ORIGIN, &v, &n))
            set_origin(c, v, n, 0);
    }
    if (hval(hs, H_DD_TAGS, &v, &n))
        parse_xdd_tags(v, n, c, f, full);
}

/* ------------------------------------------------------------------------ */
/* tracecontext */

/* Returns NULL or the _dd.w3c_extraction_error value. */
static const char *parse_traceparent(const char *s, size_t n, found *f, int *sampled)
{
    uint64_t hi, lo, parent, flags;
    if (n < 55)
        return "malformed_traceparent";
    if (hexdig((unsigned char)s[0], 1) < 0 || hexdig((unsigned char)s[1], 1) < 0)
        return "invalid_version";
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return "malformed_traceparent";
    if (s[0] == 'f' && s[1] == 'f')
        return "invalid_version";
    /* Version 00 is exactly 55 chars; a later version may add "-..." fields. */
    if (n > 55 && ((s[0] == '0' && s[1] == '0') || s[55] != '-'))
        return "malformed_traceparent";
    if (!parse_hex64(s + 3, 16, 1, &hi) || !parse_hex64(s + 19, 16, 1, &lo) || (hi | lo) == 0)
        return "malformed_traceid";
    if (!parse_hex64(s + 36, 16, 1, &parent) || parent == 0)
        return "malformed_parentid";
    if (!parse_hex64(s + 53, 2, 1, &flags))
        return "malformed_traceflags";
    f->hi = hi;
    f->lo = lo;
    f->parent = parent;
    *sampled = (int)(flags & 1);
    return NULL;
}

/* Members of every tracestate header, in order, as one list. */
typedef struct ts_iter {
    const hdr_set *hs;
    int i;
    int in_hdr;
    size_t off;
} ts_iter;

static void ts_begin(ts_iter *it, const hdr_set *hs)
{
    it->hs = hs;
    it->i = hs->ts_first < 0 ? hs->n : hs->ts_first;
    it->in_hdr = 0;
    it->off = 0;
}

static int ts_next(ts_iter *it, const char **m, size_t *mn)
{
    while (it->i < it->hs->n) {
        const dds_hdr *h = &it->hs->all[it->i];
        if (!it->in_hdr) {
            if (!hdr_usable(h) || !name_is(h, "tracestate", 10)) {
                it->i++;
                continue;
            }
            it->in_hdr = 1;
            it->off = 0;
        }
        const char *v = h->value ? h->value : "";
        size_t n = h->value ? h->value_len : 0;
        if (it->off > n) {
            it->in_hdr = 0;
            it->i++;
            continue;
        }
        size_t s = it->off, e = s;
        while (e < n && v[e] != ',')
            e++;
        it->off = e + 1;
        *m = v + s;
        *mn = e - s;
        trim(m, mn);
        return 1;
    }
    return 0;
}

/* W3C list-member key: [a-z0-9][a-z0-9_-*\/@]*, at most 256 chars. */
static int ts_key_ok(const char *k, size_t n)
{
    if (n == 0 || n > 256)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)k[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!ok && i > 0)
            ok = ch == '_' || ch == '-' || ch == '*' || ch == '/' || ch == '@';
        if (!ok)
            return 0;
    }
    return 1;
}

/* W3C value: 1..256 printable chars, no ',' ('=' tolerated), no trailing
 * space (trim took care of it). */
static int ts_value_ok(const char *v, size_t n)
{
    if (n == 0 || n > 256)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_print((unsigned char)v[i]) || v[i] == ',')
            return 0;
    return 1;
}

/* The dd member's value (§3.5). full: the winning style (priority, origin,
 * tags); otherwise only what a merge carries over (p:, unknown sub-keys). */
static void parse_dd_member(dds_trace_context *c, found *f, const char *v, size_t n, int full)
{
    if (n > DD_MEMBER_EXTRACT_MAX) {
        PERR(c, "extract_max_size", NULL, 0);
        return;
    }
    if (!all_print(v, n))
        return;
    size_t ulen = strnlen(c->dd_unknown, sizeof c->dd_unknown);
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && v[j] != ';')
            j++;
        const char *p = v + i;
        size_t pn = j - i;
        i = j + 1;
        const char *colon = pn ? memchr(p, ':', pn) : NULL;
        if (colon == NULL)
            continue;
        size_t kn = (size_t)(colon - p);
        const char *val = colon + 1;
        size_t vn = pn - kn - 1;
        if (eq_lit(p, kn, "s")) {
            int s;
            /* cpp: the s: priority wins when it agrees in sign with the
             * sampled flag; otherwise the flag's 0/1 stands. */
            if (full && parse_dec_int(val, vn, &s) &&
                (!c->has_priority || (c->priority > 0) == (s > 0))) {
                c->has_priority = 1;
                c->priority = s;
            }
        } else if (eq_lit(p, kn, "p")) {
            uint64_t x;
            if (vn == 16 && parse_hex64(val, vn, 0, &x))
                dds_hex16(x, f->last_parent);
        } else if (eq_lit(p, kn, "o")) {
            if (full)
                set_origin(c, val, vn, 1);
        } else if (kn > 2 && p[0] == 't' && p[1] == '.') {
            if (!full)
                continue;
            if (eq_lit(p + 2, kn - 2, "tid")) {
                f->tid_raw = val;
                f->tid_raw_len = vn;
            } else {
                add_tag(c, p + 2, kn - 2, val, vn, 1);
            }
        } else if (ulen + (ulen ? 1 : 0) + pn < sizeof c->dd_unknown) {
            /* Unknown sub-key: carried verbatim to the next hop. */
            if (ulen)
                c->dd_unknown[ulen++] = ';';
            memcpy(c->dd_unknown + ulen, p, pn);
            ulen += pn;
            c->dd_unknown[ulen] = '\0';
        }
    }
}

/* Classify a member: 1 = dd, 2 = a well-formed other member, 0 = skip. */
static int ts_member_kind(const char *m, size_t mn, const char **val, size_t *vn)
{
    const char *eq = mn ? memchr(m, '=', mn) : NULL;
    if (eq == NULL)
        return 0;
    size_t kn = (size_t)(eq - m);
    *val = eq + 1;
    *vn = mn - kn - 1;
    if (eq_lit(m, kn, "dd"))
        return 1;
    return ts_key_ok(m, kn) && ts_value_ok(*val, *vn) ? 2 : 0;
}

static void read_tracestate(const hdr_set *hs, dds_trace_context *c, found *f, int full)
{
    if (hs->ts_first < 0)
        return;
    ts_iter it;
    const char *m, *val;
    size_t mn, vn;
    size_t total = 0;
    int count = 0, dd_seen = 0;

    /* Pass 1: the dd member, and the size of the others. */
    ts_begin(&it, hs);
    while (ts_next(&it, &m, &mn)) {
        int kind = ts_member_kind(m, mn, &val, &vn);
        if (kind == 1 && !dd_seen) {
            dd_seen = 1;
            parse_dd_member(c, f, val, vn, full);
        } else if (kind == 2) {
            total += (count ? 1 : 0) + mn;
            count++;
        }
    }
    if (count == 0)
        return;

    /* Pass 2: copy the others. When they do not all fit, drop the long ones
     * first, then from the right (W3C). */
    int drop_long = count > TS_OTHER_MAX_MEMBERS || total >= sizeof c->tracestate_other;
    size_t len = 0;
    int kept = 0;
    ts_begin(&it, hs);
    while (ts_next(&it, &m, &mn)) {
        if (ts_member_kind(m, mn, &val, &vn) != 2)
            continue;
        if (drop_long && mn > TS_LONG_MEMBER)
            continue;
        if (kept == TS_OTHER_MAX_MEMBERS ||
            len + (kept ? 1 : 0) + mn >= sizeof c->tracestate_other)
            break;
        if (kept)
            c->tracestate_other[len++] = ',';
        memcpy(c->tracestate_other + len, m, mn);
        len += mn;
        kept++;
    }
    c->tracestate_other[len] = '\0';
}

/* full: the winning candidate. Otherwise (a later style), read tracestate only
 * when the ids match the winner's, for the merge of §3.7. */
static void extract_w3c(const hdr_set *hs, dds_trace_context *c, found *f, int full,
                        const found *winner)
{
    const char *v;
    size_t n;
    int sampled = 0;
    if (!hval(hs, H_TRACEPARENT, &v, &n))
        return;
    found tmp;
    memset(&tmp, 0, sizeof tmp);
    const char *err = parse_traceparent(v, n, &tmp, &sampled);
    if (err != NULL) {
        W3CERR(c, err);
        return;
    }
    *f = tmp;
    f->has_trace = 1;
    f->has_parent = 1;
    memcpy(f->last_parent, "0000000000000000", 17);
    if (full) {
        c->has_priority = 1;
        c->priority = sampled;
    } else if (winner == NULL || winner->hi != f->hi || winner->lo != f->lo) {
        return;
    }
    read_tracestate(hs, c, f, full);
}

/* ------------------------------------------------------------------------ */
/* b3 */

static void extract_b3multi(const hdr_set *hs, dds_trace_context *c, found *f, int full)
{
    const char *v;
    size_t n;
    uint64_t hi, lo, parent = 0;
    int has_parent = 0;
    if (!hval(hs, H_B3_TRACE, &v, &n) || !parse_hex128(v, n, 0, &hi, &lo) || (hi | lo) == 0)
        return;
    if (hval(hs, H_B3_SPAN, &v, &n)) {
        if (!parse_hex64(v, n, 0, &parent))
            return;
        has_parent = 1;
    }
    f->has_trace = 1;
    f->hi = hi;
    f->lo = lo;
    f->has_parent = has_parent;
    f->parent = parent;
    if (!full)
        return;
    if (hval(hs, H_B3_FLAGS, &v, &n) && eq_lit(v, n, "1")) {
        c->has_priority = 1; /* debug: py maps it to USER_KEEP */
        c->priority = DDS_PRIO_USER_KEEP;
    } else if (hval(hs, H_B3_SAMPLED, &v, &n)) {
        if (eq_lit(v, n, "1") || eq_lit_nocase(v, n, "true")) {
            c->has_priority = 1;
            c->priority = DDS_PRIO_AUTO_KEEP;
        } else if (eq_lit(v, n, "0") || eq_lit_nocase(v, n, "false")) {
            c->has_priority = 1;
            c->priority = DDS_PRIO_AUTO_REJECT;
        }
    }
}

/* b3: {trace}-{span}[-{0|1|d}[-{parent}]]; a lone state carries no ids. */
static void extract_b3single(const hdr_set *hs, dds_trace_context *c, found *f, int full)
{
    const char *v;
    size_t n;
    if (!hval(hs, H_B3, &v, &n))
        return;
    const char *part[3];
    size_t plen[3];
    int np = 0;
    size_t i = 0;
    while (np < 3) {
        size_t j = i;
        while (j < n && v[j] != '-')
            j++;
        part[np] = v + i;
        plen[np] = j - i;
        np++;
        if (j >= n)
            break;
        i = j + 1;
    }
    uint64_t hi, lo, parent;
    if (np < 2 || !parse_hex128(part[0], plen[0], 0, &hi, &lo) || (hi | lo) == 0 ||
        !parse_hex64(part[1], plen[1], 0, &parent))
        return;
    f->has_trace = 1;
    f->hi = hi;
    f->lo = lo;
    f->has_parent = 1;
    f->parent = parent;
    if (!full || np < 3)
        return;
    if (eq_lit(part[2], plen[2], "1")) {
        c->has_priority = 1;
        c->priority = DDS_PRIO_AUTO_KEEP;
    } else if (eq_lit(part[2], plen[2], "0")) {
        c->has_priority = 1;
        c->priority = DDS_PRIO_AUTO_REJECT;
    } else if (eq_lit(part[2], plen[2], "d")) {
        c->has_priority = 1;
        c->priority = DDS_PRIO_USER_KEEP;
    }
}

/* ------------------------------------------------------------------------ */

static void run_style(int style, const hdr_set *hs, dds_trace_context *c, found *f)
{
    switch (style) {
    case DDS_STYLE_DATADOG:
        extract_datadog(hs, c, f, 1);
        break;
    case DDS_STYLE_TRACECONTEXT:
        extract_w3c(hs, c, f, 1, NULL);
        break;
    case DDS_STYLE_B3MULTI:
        extract_b3multi(hs, c, f, 1);
        break;
    case DDS_STYLE_B3:
        /* "b3" is the single header for py, js 6+ and Datadog's docs, but the
         * x-b3-* headers for cpp, Go, Java and js 5 (the release line for
         * Node.js < 22): read the single header, else the multi headers. */
        extract_b3single(hs, c, f, 1);
        if (!f->has_trace)
            extract_b3multi(hs, c, f, 1);
        break;
    default:
        break;
    }
}

int dds_propagation_extract(const dds_hdr *hdrs, int n, const dds_config *cfg,
                            dds_trace_context *out)
{
    if (out == NULL)
        return 0;
    memset(out, 0, sizeof *out);
    if (cfg == NULL || cfg->extract_behavior != DDS_EXTRACT_CONTINUE || hdrs == NULL || n <= 0)
        return 0;

    hdr_set hs;
    index_headers(hdrs, n, &hs);

    found win, w3c, dd;
    memset(&win, 0, sizeof win);
    memset(&w3c, 0, sizeof w3c);
    memset(&dd, 0, sizeof dd);
    int win_style = 0;
    int nstyles = cfg->extract.n;
    if (nstyles > (int)(sizeof cfg->extract.style / sizeof cfg->extract.style[0]))
        nstyles = (int)(sizeof cfg->extract.style / sizeof cfg->extract.style[0]);

    /* §3.7: the first style that yields a trace id wins; later tracecontext
     * and datadog results are kept only for the merge. Later b3 styles can
     * contribute nothing, so they are not even parsed. */
    for (int i = 0; i < nstyles; i++) {
        int st = cfg->extract.style[i];
        if (win_style == 0) {
            found f;
            memset(&f, 0, sizeof f);
            clear_keep_errors(out);
            run_style(st, &hs, out, &f);
            if (!f.has_trace)
                continue;
            win = f;
            win_style = st;
            if (st == DDS_STYLE_TRACECONTEXT)
                w3c = f;
            else if (st == DDS_STYLE_DATADOG)
                dd = f;
            if (cfg->extract_first)
                break;
        } else if (st == DDS_STYLE_TRACECONTEXT) {
            extract_w3c(&hs, out, &w3c, 0, &win);
        } else if (st == DDS_STYLE_DATADOG) {
            extract_datadog(&hs, out, &dd, 0);
        }
    }
    if (win_style == 0) {
        clear_keep_errors(out);
        return 0;
    }

    if (win_style != DDS_STYLE_TRACECONTEXT && w3c.has_trace) {
        if (w3c.hi == win.hi && w3c.lo == win.lo) {
            /* Same trace: tracestate was attached by extract_w3c. The W3C
             * parent is the most recent hop; remember the last Datadog one. */
            if (!win.has_parent || w3c.parent != win.parent) {
                if (strcmp(w3c.last_parent, "0000000000000000") != 0)
                    memcpy(out->last_parent_id, w3c.last_parent, 17);
                else if (dd.has_trace && dd.hi == win.hi && dd.lo == win.lo && dd.has_parent)
                    dds_hex16(dd.parent, out->last_parent_id);
                win.parent = w3c.parent;
                win.has_parent = 1;
            }
        } else if (win_style == DDS_STYLE_DATADOG && win.has_tid && w3c.lo == win.lo) {
            char h[17];
            dds_hex16(win.hi, h);
            PERR(out, "inconsistent_tid ", h, 16);
        }
    }
    if (win_style == DDS_STYLE_TRACECONTEXT) {
        memcpy(out->last_parent_id, win.last_parent, 17);
        if (win.tid_raw != NULL) {
            uint64_t tid;
            if (win.tid_raw_len != 16 || !parse_hex64(win.tid_raw, 16, 1, &tid) || tid == 0)
                PERR(out, "malformed_tid ", win.tid_raw, win.tid_raw_len);
            else if (tid != win.hi)
                PERR(out, "inconsistent_tid ", win.tid_raw, win.tid_raw_len);
        }
    }

    /* §3.2: a trace id without a parent only with an origin (a root started
     * upstream without a span, e.g. synthetics). */
    if (!win.has_parent && out->origin[0] == '\0') {
        clear_keep_errors(out);
        return 0;
    }
    out->trace_id_hi = win.hi;
    out->trace_id_lo = win.lo;
    out->parent_id = win.has_parent ? win.parent : 0;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Injection */

typedef struct wbuf {
    char *p;
    size_t cap, len;
    int over;
} wbuf;

static void w_mem(wbuf *w, const char *s, size_t n)
{
    if (w->over || n > w->cap - w->len) {
        w->over = 1;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void w_str(wbuf *w, const char *s)
{
    w_mem(w, s, strlen(s));
}

static void w_ch(wbuf *w, char ch)
{
    w_mem(w, &ch, 1);
}

/* Four digits of v < 10000 at p, two pairs from 32-bit arithmetic. */
static inline void dec4(char *p, uint32_t v)
{
    memcpy(p, dec_pairs + 2 * (v / 100), 2);
    memcpy(p + 2, dec_pairs + 2 * (v % 100), 2);
}

/* Decimal, in 8-digit groups: at most two 64-bit divisions for the widest
 * id, the rest in 32 bits (two ids per injected request). */
static void w_u64(wbuf *w, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    while (v >= 100000000) {
        uint32_t g = (uint32_t)(v % 100000000);
        v /= 100000000;
        i -= 8;
        dec4(tmp + i, g / 10000);
        dec4(tmp + i + 4, g % 10000);
    }
    uint32_t u = (uint32_t)v;
    while (u >= 100) {
        i -= 2;
        memcpy(tmp + i, dec_pairs + 2 * (u % 100), 2);
        u /= 100;
    }
    if (u >= 10) {
        i -= 2;
        memcpy(tmp + i, dec_pairs + 2 * u, 2);
    } else {
        tmp[--i] = (char)('0' + u);
    }
    w_mem(w, tmp + i, sizeof tmp - i);
}

static void w_int(wbuf *w, int v)
{
    if (v < 0) {
        w_ch(w, '-');
        w_u64(w, (uint64_t)(-(int64_t)v));
    } else {
        w_u64(w, (uint64_t)v);
    }
}

static void w_hex16(wbuf *w, uint64_t v)
{
    char h[17];
    dds_hex16(v, h);
    w_mem(w, h, 16);
}

/* A context field that should be a NUL-terminated printable string; the
 * struct is plain data anyone could have filled, so check before sending. */
static size_t field_len(const char *s, size_t cap, int *ok)
{
    size_t n = strnlen(s, cap);
    *ok = n < cap && all_print(s, n);
    return n;
}

static int tag_ok(const dds_trace_tag *t, size_t *kn, size_t *vn)
{
    int ok1, ok2;
    *kn = field_len(t->key, sizeof t->key, &ok1);
    *vn = field_len(t->val, sizeof t->val, &ok2);
    if (!ok1 || !ok2 || *kn <= 6 || *vn == 0 || memcmp(t->key, "_dd.p.", 6) != 0)
        return 0;
    for (size_t i = 0; i < *kn; i++)
        if (t->key[i] == ' ' || t->key[i] == ',' || t->key[i] == '=')
            return 0;
    return memchr(t->val, ',', *vn) == NULL;
}

static int is_tag(const dds_trace_tag *t, const char *key)
{
    return strncmp(t->key, key, sizeof t->key) == 0;
}

/* _dd.p.dm to send: our decision's mechanism when we made it, else the one
 * that came in; none when the trace is dropped (cpp). */
static const char *dm_value(const dds_trace *t, int prio, int mech, char buf[16])
{
    if (prio <= 0)
        return NULL;
    if (mech >= 0) {
        wbuf w = {buf, 15, 0, 0};
        w_ch(&w, '-');
        w_int(&w, mech);
        buf[w.len] = '\0';
        return buf;
    }
    int n = t->ctx->ntags < DDS_MAX_TRACE_TAGS ? t->ctx->ntags : DDS_MAX_TRACE_TAGS;
    for (int i = 0; i < n; i++) {
        size_t kn, vn;
        if (is_tag(&t->ctx->tags[i], "_dd.p.dm") && tag_ok(&t->ctx->tags[i], &kn, &vn))
            return t->ctx->tags[i].val;
    }
    return NULL;
}

static size_t encode_xdd_tags(const dds_trace *t, const char *dm, char *out, size_t cap, int *over)
{
    wbuf w = {out, cap, 0, 0};
    if (dm != NULL) {
        w_str(&w, "_dd.p.dm=");
        w_str(&w, dm);
    }
    int n = t->ctx->ntags < DDS_MAX_TRACE_TAGS ? t->ctx->ntags : DDS_MAX_TRACE_TAGS;
    for (int i = 0; i < n; i++) {
        const dds_trace_tag *tg = &t->ctx->tags[i];
        size_t kn, vn;
        if (is_tag(tg, "_dd.p.dm") || is_tag(tg, "_dd.p.tid") || !tag_ok(tg, &kn, &vn))
            continue;
        if (w.len)
            w_ch(&w, ',');
        w_mem(&w, tg->key, kn);
        w_ch(&w, '=');
        w_mem(&w, tg->val, vn);
    }
    if (t->trace_id_hi != 0) {
        if (w.len)
            w_ch(&w, ',');
        w_str(&w, "_dd.p.tid=");
        w_hex16(&w, t->trace_id_hi);
    }
    *over = w.over;
    return w.len;
}

static void w_line_begin(wbuf *w, const char *name)
{
    w_str(w, name);
    w_str(w, ": ");
}

static void w_crlf(wbuf *w)
{
    w_mem(w, "\r\n", 2);
}

static void inject_datadog(wbuf *w, dds_trace *t, uint64_t span_id, const dds_config *cfg,
                           int prio, const char *dm)
{
    w_line_begin(w, "x-datadog-trace-id");
    w_u64(w, t->trace_id_lo);
    w_crlf(w);
    w_line_begin(w, "x-datadog-parent-id");
    w_u64(w, span_id);
    w_crlf(w);
    w_line_begin(w, "x-datadog-sampling-priority");
    w_int(w, prio);
    w_crlf(w);
    int ok;
    size_t on = field_len(t->ctx->origin, sizeof t->ctx->origin, &ok);
    if (ok && on > 0) {
        w_line_begin(w, "x-datadog-origin");
        w_mem(w, t->ctx->origin, on);
        w_crlf(w);
    }
    if (cfg->x_datadog_tags_max_length <= 0)
        return;
    size_t limit = (size_t)cfg->x_datadog_tags_max_length;
    if (limit > XDD_TAGS_HARD_MAX)
        limit = XDD_TAGS_HARD_MAX;
    char tags[XDD_TAGS_HARD_MAX];
    int over;
    size_t tn = encode_xdd_tags(t, dm, tags, sizeof tags, &over);
    if (over || tn > limit) {
        dds_trace_context *c = t->ctx->propagation_error[0] ? NULL : dds_trace_ctx_mut(t);
        if (c)
            set_error(c->propagation_error, sizeof c->propagation_error, "inject_max_size", NULL, 0);
    } else if (tn > 0) {
        w_line_begin(w, "x-datadog-tags");
        w_mem(w, tags, tn);
        w_crlf(w);
    }
}

/* Copy into a dd= sub-value: ',' ';' '~' and unprintables become '_', and
 * '=' becomes '~' (cpp's encoding); keys also lose ' ' and '='. */
static void w_ts_sanitized(wbuf *w, const char *s, size_t n, int is_key)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!is_print((unsigned char)ch) || ch == ',' || ch == ';' ||
            (is_key ? (ch == ' ' || ch == '=') : ch == '~'))
            ch = '_';
        else if (ch == '=')
            ch = '~';
        w_ch(w, ch);
    }
}

static void inject_tracecontext(wbuf *w, dds_trace *t, uint64_t span_id, int prio, const char *dm)
{
    w_line_begin(w, "traceparent");
    w_str(w, "00-");
    w_hex16(w, t->trace_id_hi);
    w_hex16(w, t->trace_id_lo);
    w_ch(w, '-');
    w_hex16(w, span_id);
    w_str(w, prio > 0 ? "-01" : "-00");
    w_crlf(w);

    /* The dd member, built whole and then cut back to 256 chars at a ';'. It
     * may overflow the local buffer, leaving a partial last segment; no single
     * write is longer than 255 bytes, so that segment starts beyond char 256
     * and the cut removes it. */
    char dd[2 * TS_DD_MAX];
    wbuf d = {dd, sizeof dd, 0, 0};
    w_str(&d, "dd=s:");
    w_int(&d, prio);
    w_str(&d, ";p:");
    w_hex16(&d, span_id);
    int ok;
    size_t on = field_len(t->ctx->origin, sizeof t->ctx->origin, &ok);
    if (ok && on > 0) {
        w_str(&d, ";o:");
        w_ts_sanitized(&d, t->ctx->origin, on, 0);
    }
    if (dm != NULL) {
        w_str(&d, ";t.dm:");
        w_ts_sanitized(&d, dm, strlen(dm), 0);
    }
    int nt = t->ctx->ntags < DDS_MAX_TRACE_TAGS ? t->ctx->ntags : DDS_MAX_TRACE_TAGS;
    for (int i = 0; i < nt; i++) {
        const dds_trace_tag *tg = &t->ctx->tags[i];
        size_t kn, vn;
        if (is_tag(tg, "_dd.p.dm") || is_tag(tg, "_dd.p.tid") || !tag_ok(tg, &kn, &vn))
            continue;
        w_str(&d, ";t.");
        w_ts_sanitized(&d, tg->key + 6, kn - 6, 1);
        w_ch(&d, ':');
        w_ts_sanitized(&d, tg->val, vn, 0);
    }
    size_t un = field_len(t->ctx->dd_unknown, sizeof t->ctx->dd_unknown, &ok);
    if (ok && un > 0 && memchr(t->ctx->dd_unknown, ',', un) == NULL) {
        w_ch(&d, ';');
        w_mem(&d, t->ctx->dd_unknown, un);
    }
    size_t dn = d.len;
    while (dn > TS_DD_MAX) {
        while (dn > 0 && dd[dn - 1] != ';')
            dn--;
        if (dn > 0)
            dn--; /* drop the ';' too */
    }

    w_line_begin(w, "tracestate");
    w_mem(w, dd, dn);
    size_t on2 = field_len(t->ctx->tracestate_other, sizeof t->ctx->tracestate_other, &ok);
    if (ok && on2 > 0) {
        /* At most 31 other members: 32 with ours. */
        const char *o = t->ctx->tracestate_other;
        size_t end = 0;
        int members = 0;
        while (end < on2 && members < TS_OTHER_MAX_MEMBERS) {
            const char *comma = memchr(o + end, ',', on2 - end);
            end = comma ? (size_t)(comma - o) + 1 : on2;
            members++;
        }
        if (end > 0 && o[end - 1] == ',')
            end--;
        if (end > 0) {
            w_ch(w, ',');
            w_mem(w, o, end);
        }
    }
    w_crlf(w);
}

static void w_b3_trace(wbuf *w, const dds_trace *t)
{
    if (t->trace_id_hi != 0)
        w_hex16(w, t->trace_id_hi);
    w_hex16(w, t->trace_id_lo);
}

static void inject_b3multi(wbuf *w, const dds_trace *t, uint64_t span_id, int prio)
{
    w_line_begin(w, "x-b3-traceid");
    w_b3_trace(w, t);
    w_crlf(w);
    w_line_begin(w, "x-b3-spanid");
    w_hex16(w, span_id);
    w_crlf(w);
    w_line_begin(w, "x-b3-sampled");
    w_ch(w, prio > 0 ? '1' : '0');
    w_crlf(w);
}

static int has_style(const dds_style_list *l, int n, int style)
{
    for (int i = 0; i < n; i++)
        if (l->style[i] == style)
            return 1;
    return 0;
}

size_t dds_propagation_inject(dds_trace *t, uint64_t span_id, const dds_config *cfg,
                              char *buf, size_t cap)
{
    if (buf == NULL || cap == 0)
        return 0;
    buf[0] = '\0';
    if (t == NULL || cfg == NULL || (t->trace_id_hi | t->trace_id_lo) == 0)
        return 0;

    int prio, mech;
    if (t->sampling.decided) {
        prio = t->sampling.priority;
        mech = t->sampling.mechanism;
    } else {
        prio = t->ctx->has_priority ? t->ctx->priority : DDS_PRIO_AUTO_KEEP;
        mech = DDS_MECH_NONE;
    }
    char dmbuf[16];
    const char *dm = dm_value(t, prio, mech, dmbuf);

    wbuf w = {buf, cap, 0, 0};
    int nstyles = cfg->inject.n;
    if (nstyles > (int)(sizeof cfg->inject.style / sizeof cfg->inject.style[0]))
        nstyles = (int)(sizeof cfg->inject.style / sizeof cfg->inject.style[0]);
    for (int i = 0; i < nstyles; i++) {
        switch (cfg->inject.style[i]) {
        case DDS_STYLE_DATADOG:
            inject_datadog(&w, t, span_id, cfg, prio, dm);
            break;
        case DDS_STYLE_TRACECONTEXT:
            inject_tracecontext(&w, t, span_id, prio, dm);
            break;
        case DDS_STYLE_B3MULTI:
            inject_b3multi(&w, t, span_id, prio);
            break;
        case DDS_STYLE_B3:
            w_line_begin(&w, "b3");
            w_b3_trace(&w, t);
            w_ch(&w, '-');
            w_hex16(&w, span_id);
            w_ch(&w, '-');
            w_ch(&w, prio > 1 ? 'd' : prio > 0 ? '1' : '0');
            w_crlf(&w);
            /* Also the x-b3-* headers, for receivers that read "b3" as the
             * multi-header form (see run_style); once is enough. */
            if (!has_style(&cfg->inject, nstyles, DDS_STYLE_B3MULTI))
                inject_b3multi(&w, t, span_id, prio);
            break;
        default:
            break;
        }
    }
    if (w.over) {
        buf[0] = '\0';
        return 0;
    }
    if (w.len < cap)
        buf[w.len] = '\0';
    return w.len;
}
