/*
 * http.c — see http.h. Heads are scanned a line at a time (scan_lines): each
 * complete line is checked against the grammar in one pass and, when the
 * whole head is in the bytes of one feed, cut up on the way (headers, framing,
 * Host, User-Agent, the trace-context headers), so a head is read once. A
 * line that does not end within a feed is taken by a byte-at-a-time scanner
 * (hscan_byte, with hscan_run for runs of plain bytes) that keeps its state
 * across feeds; both reject at the same first wrong byte, which is what makes
 * every split of the input behave the same. A head that arrived in pieces is
 * copied, then cut up by scan_lines once complete (parse_head). Bodies are
 * then followed by a small state machine per framing.
 */
#include "http.h"

#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* ---- character classes (ASCII only; no locale) ---- */

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
    case '+': case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return 1;
    default:
        return 0;
    }
}

/* VCHAR, obs-text, SP, HTAB: what a field value or reason phrase may hold. */
static int is_text(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* n bytes at a equal the NUL-terminated lowercase literal, ignoring case. */
static int ieq(const char *a, size_t n, const char *lit)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (lit[i] == '\0' || lower((unsigned char)a[i]) != (unsigned char)lit[i])
            return 0;
    }
    return lit[n] == '\0';
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static void trim_ows(const char **p, size_t *n)
{
    while (*n > 0 && is_ows((*p)[0])) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((*p)[*n - 1]))
        (*n)--;
}

/* ---- head syntax scanner ---- */

enum {
    P_RQ_METHOD, P_RQ_TARGET, P_RQ_VERSION, P_RQ_END,
    P_RS_VERSION, P_RS_SP, P_RS_CODE, P_RS_END, P_RS_REASON,
    P_H_START, P_H_NAME, P_H_VALUE
};
enum { SC_MORE = 0, SC_DONE = 1, SC_BAD = 2, SC_LIMIT = 3 };

static const char http_ver[] = "HTTP/1.";

static void hscan_init(dds_http_hscan *h, int is_response)
{
    memset(h, 0, sizeof *h);
    h->phase = is_response ? P_RS_VERSION : P_RQ_METHOD;
}

/* One byte of a head. Strict where a wrong byte means "not HTTP" (the first
 * line), and where two parsers could disagree about where a header ends
 * (bare LF, CR not followed by LF, obs-fold, whitespace before the colon). */
static int hscan_byte(dds_http_hscan *h, unsigned char c)
{
    h->pos++;
    if (h->cr) {
        if (c != '\n')
            return SC_BAD;
        h->cr = 0;
        if (h->phase == P_H_START)
            return SC_DONE;
        h->phase = P_H_START;
        h->sub = 0;
        return SC_MORE;
    }
    if (c == '\r') {
        switch (h->phase) {
        case P_RQ_END: case P_RS_END: case P_RS_REASON: case P_H_VALUE: case P_H_START:
            h->cr = 1;
            return SC_MORE;
        default:
            return SC_BAD;
        }
    }
    switch (h->phase) {
    case P_RQ_METHOD:
        if (c == ' ') {
            if (h->sub == 0)
                return SC_BAD;
            h->phase = P_RQ_TARGET;
            h->sub = 0;
            return SC_MORE;
        }
        if (!is_tchar(c) || h->sub >= 23)
            return SC_BAD;
        h->sub++;
        return SC_MORE;
    case P_RQ_TARGET:
        if (c == ' ') {
            if (h->sub == 0)
                return SC_BAD;
            h->phase = P_RQ_VERSION;
            h->sub = 0;
            return SC_MORE;
        }
        if (c < 0x21 || c == 0x7f)
            return SC_BAD;
        h->sub = 1;
        return SC_MORE;
    case P_RQ_VERSION:
    case P_RS_VERSION:
        if (h->sub < 7) {
            if (c != (unsigned char)http_ver[h->sub])
                return SC_BAD;
            h->sub++;
            return SC_MORE;
        }
        if (c != '0' && c != '1')
            return SC_BAD;
        h->phase = h->phase == P_RQ_VERSION ? P_RQ_END : P_RS_SP;
        h->sub = 0;
        return SC_MORE;
    case P_RS_SP:
        if (c != ' ')
            return SC_BAD;
        h->phase = P_RS_CODE;
        return SC_MORE;
    case P_RS_CODE:
        if (c < '0' || c > '9' || (h->sub == 0 && c == '0'))
            return SC_BAD;
        if (++h->sub == 3)
            h->phase = P_RS_END;
        return SC_MORE;
    case P_RS_END:
        /* "HTTP/1.1 200\r\n" (no SP, no reason) is accepted too: some servers
         * send it, and it cannot be confused with anything else. */
        if (c != ' ')
            return SC_BAD;
        h->phase = P_RS_REASON;
        return SC_MORE;
    case P_RS_REASON:
    case P_H_VALUE:
        return is_text(c) ? SC_MORE : SC_BAD;
    case P_H_START:
        if (!is_tchar(c))
            return SC_BAD; /* includes SP/HTAB: obs-fold */
        h->phase = P_H_NAME;
        return SC_MORE;
    case P_H_NAME:
        if (c == ':') {
            h->phase = P_H_VALUE;
            return SC_MORE;
        }
        return is_tchar(c) ? SC_MORE : SC_BAD;
    default: /* P_RQ_END: only CR may follow the version */
        return SC_BAD;
    }
}

/* The bytes from p that hscan_byte would take one by one without anything
 * but h->pos changing (and P_RQ_TARGET's sub becoming 1): the inside of a
 * header name or value, a reason phrase, a request target. Takes them in one
 * tight loop (most of a head) and returns how many; at most n. Never past a
 * byte that ends the run (CR, ':', SP in a target, an invalid byte): those
 * go through hscan_byte. */
/* is_tchar (bit 1) and is_text (bit 2) of every byte, for the runs below:
 * the two functions above, tabulated (keep them in step). */
static const unsigned char byte_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 3, 2, 3, 3, 3, 3, 3, 2, 2, 3, 3, 2, 3, 3, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2,
    2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 3, 2, 3, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};
enum { BC_TCHAR = 1, BC_TEXT = 2 };

static size_t hscan_run(dds_http_hscan *h, const unsigned char *p, size_t n)
{
    size_t k = 0;
    if (h->cr)
        return 0;
    switch (h->phase) {
    case P_H_VALUE:
    case P_RS_REASON:
        while (k < n && (byte_class[p[k]] & BC_TEXT))
            k++;
        break;
    case P_H_NAME:
        while (k < n && (byte_class[p[k]] & BC_TCHAR))
            k++;
        break;
    case P_RQ_TARGET:
        while (k < n && p[k] > 0x20 && p[k] != 0x7f)
            k++;
        if (k)
            h->sub = 1;
        break;
    default:
        return 0;
    }
    h->pos += k;
    return k;
}

/* ---- line-at-a-time head scanning ---- */

/* The fast path for heads: whole lines at a time, each checked against the
 * same grammar as hscan_byte (the first wrong byte rejects the head, so the
 * decision is the same for every split of the input), and, when the whole
 * head is scanned in one call from its start, cut up on the way: header
 * names and values, the framing and context headers. A line that does not
 * end within the bytes given is left to hscan_run/hscan_byte, which keep
 * their state across feeds; the head is then parsed again once complete
 * (parse_head), by this same code. */

typedef struct framing {
    uint8_t cl_seen, cl_bad, te_seen, te_last_chunked;
    uint8_t conn_close, conn_keepalive, conn_upgrade, has_upgrade;
    int te_chunked_count;
    int64_t cl;
} framing;

/* What a collecting scan accumulates besides what goes into the message. */
typedef struct collect {
    dds_http_msg *m;
    framing f;
    int has_context;       /* traceparent, x-datadog-trace-id or x-datadog-parent-id: any line */
    const char *host_any;  /* first Host of any line */
    size_t host_any_len;
} collect;

#define CL_MAX ((int64_t)1 << 62)

/* Content-Length: 1*DIGIT, or a list of identical values ("5, 5", which some
 * proxies produce). Returns -1 when malformed or the values differ. */
static int64_t parse_content_length(const char *v, size_t n)
{
    int64_t val = -1;
    size_t i = 0;
    if (n - 1 < 18) {
        /* the usual one value of 1-18 digits: below CL_MAX, no list */
        uint64_t x = 0;
        for (i = 0; i < n; i++) {
            unsigned d = (unsigned char)v[i] - (unsigned)'0';
            if (d > 9)
                break;
            x = x * 10 + d;
        }
        if (i == n)
            return (int64_t)x;
        i = 0;
    }
    for (;;) {
        int64_t x = 0;
        size_t digits = 0;
        while (i < n && is_ows(v[i]))
            i++;
        while (i < n && v[i] >= '0' && v[i] <= '9') {
            if (x > (CL_MAX - (v[i] - '0')) / 10)
                return -1;
            x = x * 10 + (v[i] - '0');
            digits++;
            i++;
        }
        if (digits == 0)
            return -1;
        if (val >= 0 && x != val)
            return -1;
        val = x;
        while (i < n && is_ows(v[i]))
            i++;
        if (i == n)
            return val;
        if (v[i] != ',')
            return -1;
        i++;
    }
}

/* Calls fn for each element of a comma-separated list, trimmed, with any
 * ";params" cut off. Bounded by n. */
static void each_token(const char *v, size_t n, framing *f,
                       void (*fn)(framing *f, const char *t, size_t tn))
{
    size_t i = 0;
    while (i <= n) {
        size_t s = i, e, tn;
        const char *t;
        while (i < n && v[i] != ',')
            i++;
        e = i;
        t = v + s;
        tn = e - s;
        for (size_t k = 0; k < tn; k++) {
            if (t[k] == ';') {
                tn = k;
                break;
            }
        }
        trim_ows(&t, &tn);
        if (tn > 0)
            fn(f, t, tn);
        i++; /* past the comma (or past the end) */
    }
}

static void te_token(framing *f, const char *t, size_t n)
{
    int ch = ieq(t, n, "chunked");
    f->te_chunked_count += ch;
    f->te_last_chunked = ch;
}

static void conn_token(framing *f, const char *t, size_t n)
{
    if (ieq(t, n, "close"))
        f->conn_close = 1;
    else if (ieq(t, n, "keep-alive"))
        f->conn_keepalive = 1;
    else if (ieq(t, n, "upgrade"))
        f->conn_upgrade = 1;
}

static uint64_t ld8(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint16_t ld2(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static uint32_t ld4(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The n bytes at a, all tchars (a header name the scanner accepted) or all
 * field-value bytes, equal the first n bytes of the lowercase literal lit,
 * ignoring case. For such a byte b, b | 0x20 is its lowercase letter, and no
 * tchar or value byte other than a letter itself maps onto a lowercase
 * letter, a digit or '-' (the only bytes the literals hold; of the bytes
 * that would, 0x0d and 0x10-0x19 are controls), so one OR per byte, eight
 * bytes at a time, is exact. */
static int name_is(const unsigned char *a, size_t n, const char *lit)
{
    size_t i;
    if (n >= 8) {
        for (i = 0; i + 8 < n; i += 8)
            if ((ld8(a + i) | 0x2020202020202020ULL) != ld8(lit + i))
                return 0;
        return (ld8(a + n - 8) | 0x2020202020202020ULL) == ld8(lit + n - 8);
    }
    if (n >= 4)
        return (ld4(a) | 0x20202020u) == ld4(lit) && (ld4(a + n - 4) | 0x20202020u) == ld4(lit + n - 4);
    for (i = 0; i < n; i++)
        if ((a[i] | 0x20) != (unsigned char)lit[i])
            return 0;
    return 1;
}

/* Of every first byte of a name, the lengths modulo 32 (bit n % 32) of
 * the names collect_header looks at: most lines are none of them, and are
 * told so by one lookup. */
#define LB(n) (1u << (n))
static const uint32_t name_len_bits[256] = {
    ['b'] = LB(2), ['B'] = LB(2),
    ['c'] = LB(10) | LB(14), ['C'] = LB(10) | LB(14),
    ['e'] = LB(6), ['E'] = LB(6),
    ['h'] = LB(4), ['H'] = LB(4),
    ['t'] = LB(10) | LB(11) | LB(17), ['T'] = LB(10) | LB(11) | LB(17),
    ['u'] = LB(7) | LB(10), ['U'] = LB(7) | LB(10),
    ['x'] = ~0u, ['X'] = ~0u, /* x-datadog-*, x-b3-*: any length */
};
#undef LB

/* One header line of a head being collected: name (tchars), value (trimmed). */
static void collect_header(collect *col, const unsigned char *name, size_t nlen, const char *val,
                           size_t vlen)
{
    dds_http_msg *m = col->m;
    int idx = -1;
    if (m->nheaders < DDS_HTTP_MAX_HEADERS) {
        dds_http_header *hd = &m->headers[m->nheaders];
        idx = m->nheaders++;
        hd->name = (const char *)name;
        hd->name_len = nlen;
        hd->value = val;
        hd->value_len = vlen;
    } else {
        m->headers_truncated = 1;
    }
    /* Framing and context headers are looked at on every line, kept or
     * not, so that header 65 cannot change how the body is read. */
    if (!((name_len_bits[name[0]] >> (nlen & 31)) & 1))
        return;
    switch (name[0] | 0x20) {
    case 'c':
        if (nlen == 14 && name_is(name, 14, "content-length")) {
            int64_t v = parse_content_length(val, vlen);
            if (v < 0 || (col->f.cl_seen && v != col->f.cl))
                col->f.cl_bad = 1;
            col->f.cl_seen = 1;
            col->f.cl = v;
        } else if (nlen == 10 && name_is(name, 10, "connection")) {
            /* name_is is exact on field-value bytes too (no control but
             * HTAB, which maps onto ')'): the one-token values first. */
            if (vlen == 10 && name_is((const unsigned char *)val, 10, "keep-alive"))
                col->f.conn_keepalive = 1;
            else if (vlen == 5 && name_is((const unsigned char *)val, 5, "close"))
                col->f.conn_close = 1;
            else
                each_token(val, vlen, &col->f, conn_token);
        }
        break;
    case 't':
        if (nlen == 17 && name_is(name, 17, "transfer-encoding")) {
            col->f.te_seen = 1;
            col->f.te_last_chunked = 0; /* an empty value ends in nothing */
            if (vlen == 7 && name_is((const unsigned char *)val, 7, "chunked")) {
                col->f.te_chunked_count++;
                col->f.te_last_chunked = 1;
            } else {
                each_token(val, vlen, &col->f, te_token);
            }
        } else if (nlen == 11 && name_is(name, 11, "traceparent")) {
            col->has_context = 1;
            goto ctx;
        } else if (nlen == 10 && name_is(name, 10, "tracestate")) {
            goto ctx;
        }
        break;
    case 'u':
        if (nlen == 7 && name_is(name, 7, "upgrade")) {
            col->f.has_upgrade = 1;
        } else if (nlen == 10 && idx >= 0 && !m->user_agent && name_is(name, 10, "user-agent")) {
            m->user_agent = val;
            m->user_agent_len = vlen;
        }
        break;
    case 'e':
        if (nlen == 6 && name_is(name, 6, "expect") && ieq(val, vlen, "100-continue"))
            m->expect_continue = 1;
        break;
    case 'h':
        if (nlen == 4 && !col->host_any && name_is(name, 4, "host")) {
            col->host_any = val;
            col->host_any_len = vlen;
            if (idx >= 0) {
                m->host = val;
                m->host_len = vlen;
            }
        }
        break;
    case 'x':
        /* Every x-datadog-* and x-b3-* name: a superset of what extraction
         * reads is enough. */
        if (nlen >= 10 && name_is(name, 10, "x-datadog-")) {
            if ((nlen == 18 && name_is(name + 10, 8, "trace-id")) ||
                (nlen == 19 && name_is(name + 10, 9, "parent-id")))
                col->has_context = 1;
            goto ctx;
        }
        if (nlen >= 5 && name_is(name, 5, "x-b3-"))
            goto ctx;
        break;
    case 'b':
        if (nlen == 2 && name[1] == '3')
            goto ctx;
        break;
    default:
        break;
    }
    return;
ctx:
    if (idx >= 0)
        m->ctx_idx[m->nctx++] = (uint8_t)idx;
}

/* Bytes from p that may be inside a field value or reason phrase (is_text):
 * how many, at most n. Sixteen at a time where SSE2 is there. */
static inline __attribute__((always_inline)) size_t text_run(const unsigned char *p, size_t n)
{
    size_t k = 0;
#ifdef __SSE2__
    const __m128i c1f = _mm_set1_epi8(0x1f), del = _mm_set1_epi8(0x7f);
    for (;;) {
        while (k + 16 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + k));
            __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, c1f), v); /* v <= 0x1f */
            int mask = _mm_movemask_epi8(_mm_or_si128(ctl, _mm_cmpeq_epi8(v, del)));
            if (mask) {
                k += (size_t)__builtin_ctz((unsigned)mask);
                goto special;
            }
            k += 16;
        }
        while (k < n && p[k] >= 0x20 && p[k] != 0x7f)
            k++;
        if (k == n)
            return k;
    special:
        if (p[k] != '\t')
            return k;
        k++;
    }
#else
    while (k < n && (byte_class[p[k]] & BC_TEXT))
        k++;
    return k;
#endif
}

#ifdef __SSE2__
/* The bytes among the 16 at x that are not letters, digits or '-'. */
static inline __attribute__((always_inline)) unsigned nonname_mask(__m128i x)
{
    /* (x | 0x20) - 'a' < 26 and x - '0' < 10 as signed compares: bias by 0x80. */
    __m128i letter = _mm_cmplt_epi8(_mm_add_epi8(_mm_or_si128(x, _mm_set1_epi8(0x20)),
                                                 _mm_set1_epi8((char)(0x80 - 'a'))),
                                    _mm_set1_epi8((char)(0x80 + 26 - 256)));
    __m128i digit = _mm_cmplt_epi8(_mm_add_epi8(x, _mm_set1_epi8((char)(0x80 - '0'))),
                                   _mm_set1_epi8((char)(0x80 + 10 - 256)));
    __m128i ok = _mm_or_si128(_mm_or_si128(letter, digit), _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
    return (unsigned)_mm_movemask_epi8(ok) ^ 0xffffu;
}
#endif

/* Bytes from p that are tchars (a header name, a method): how many, at most
 * n. Letters, digits and '-', which make up nearly every name, sixteen at a
 * time where SSE2 is there; any other byte is looked up in the table, and a
 * tchar among them (_ . ! ...) does not end the run. */
static inline __attribute__((always_inline)) size_t tchar_run(const unsigned char *p, size_t n)
{
    size_t k = 0;
#ifdef __SSE2__
    for (;;) {
        while (k + 16 <= n) {
            unsigned mask = nonname_mask(_mm_loadu_si128((const __m128i *)(const void *)(p + k)));
            if (mask) {
                k += (size_t)__builtin_ctz(mask);
                goto other;
            }
            k += 16;
        }
        while (k < n && (byte_class[p[k]] & BC_TCHAR))
            k++;
        return k;
    other:
        if (!(byte_class[p[k]] & BC_TCHAR))
            return k;
        k++;
    }
#else
    while (k < n && (byte_class[p[k]] & BC_TCHAR))
        k++;
    return k;
#endif
}

/* Bytes from p that may be in a request target (VCHAR and obs-text: above
 * SP, not DEL): how many, at most n. */
static size_t target_run(const unsigned char *p, size_t n)
{
    size_t k = 0;
#ifdef __SSE2__
    const __m128i c20 = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
    while (k + 16 <= n) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + k));
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, c20), v); /* v <= 0x20 */
        int mask = _mm_movemask_epi8(_mm_or_si128(ctl, _mm_cmpeq_epi8(v, del)));
        if (mask)
            return k + (size_t)__builtin_ctz((unsigned)mask);
        k += 16;
    }
#endif
    while (k < n && p[k] > 0x20 && p[k] != 0x7f)
        k++;
    return k;
}

#ifdef __SSE2__
/* The bytes among the 16 at x that are neither controls (HTAB and CR among
 * them) nor DEL nor above 0x7f, bit j for byte j: x + 1 > 0x20 as a signed
 * compare, 0x7f-0xff wrapping below zero. */
static inline __attribute__((always_inline)) unsigned plain_mask(__m128i x)
{
    return (unsigned)_mm_movemask_epi8(_mm_cmpgt_epi8(_mm_add_epi8(x, _mm_set1_epi8(1)), _mm_set1_epi8(0x20)));
}

static inline __attribute__((always_inline)) __m128i load16(const unsigned char *p)
{
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

/* The bytes among the 32 at p that are not plain (plain_mask), bit j for
 * byte j. */
static inline __attribute__((always_inline)) uint32_t odd32(__m128i lo, const unsigned char *p16)
{
    return ~(plain_mask(lo) | plain_mask(load16(p16)) << 16);
}

/* The usual header line at l, from 16-byte loads: a name of 1-16 letters,
 * digits and '-', then ':', at most one SP, a value of 0x20-0x7e up to
 * CRLF, all within left. The first 32 bytes are looked at together (most
 * lines end within them): the first load gives where the name ends, both
 * where the value does. Returns the name's length and sets *vs (the value
 * after the SP) and *ve (its CR); 0 for any other line, which the
 * byte-class scan then takes from its start, so the two never disagree.
 * tail: the input has 16 bytes ending at l + left, so a load that would
 * run past the end is taken from l + left - 16 and its mask shifted. */
static inline __attribute__((always_inline)) size_t line_sse(const unsigned char *l, size_t left, int tail,
                                                             size_t *vs, size_t *ve)
{
    size_t k = 0, nl, e, v;
    unsigned nt;
    uint32_t ct;
    __m128i x;
    if (left >= 32) {
        x = load16(l);
        nt = nonname_mask(x);
        ct = odd32(x, l + 16);
        /* the name's bytes and ':' are not odd: ct's first byte is after them */
        while (ct == 0) {
            k += 32;
            if (k + 32 <= left) {
                ct = odd32(load16(l + k), l + k + 16);
            } else if (k < left) {
                ct = odd32(load16(l + left - 32), l + left - 16) >> (k + 32 - left);
                if (ct == 0)
                    return 0;
            } else {
                return 0;
            }
        }
    } else {
        size_t sh = 0;
        if (left >= 16) {
            x = load16(l);
        } else if (tail) {
            sh = 16 - left;
            x = load16(l + left - 16);
        } else {
            return 0;
        }
        nt = nonname_mask(x) >> sh;
        ct = (plain_mask(x) ^ 0xffffu) >> sh;
        if (ct == 0) {
            if (sh || left == 16)
                return 0;
            /* 17-31 bytes: the rest in one load ending at l + left */
            k = 16;
            ct = (plain_mask(load16(l + left - 16)) ^ 0xffffu) >> (32 - left);
            if (ct == 0)
                return 0;
        }
    }
    /* Odd bytes are not name bytes: the name ends at e at the latest. When
     * it does not end within the first 16 bytes (then e is past them), byte
     * 16 is still the line's: a 16-byte name is as good as a shorter one. */
    nl = (size_t)__builtin_ctz(nt | 0x10000u);
    e = k + (size_t)__builtin_ctz(ct);
    if (nl == 0 || l[nl] != ':' || e + 1 == left || ld2(l + e) != ld2("\r\n"))
        return 0;
    v = nl + 1 + (l[nl + 1] == ' ');
    if (l[v] == ' ')
        return 0;
    *vs = v;
    *ve = e;
    return nl;
}
#endif

enum { LN_OK, LN_PART, LN_BAD };

/* "HTTP/1.0" or "HTTP/1.1" at p: LN_OK, or LN_PART/LN_BAD as the first
 * byte that is missing or wrong says. */
static int version_at(const unsigned char *p, size_t n)
{
    size_t j;
    if (n >= 8 && (ld8(p) & 0x00ffffffffffffffULL) == (ld8("HTTP/1.0") & 0x00ffffffffffffffULL) &&
        (p[7] == '0' || p[7] == '1'))
        return LN_OK;
    for (j = 0; j < 8; j++) {
        if (j == n)
            return LN_PART;
        if (j < 7 ? p[j] != (unsigned char)http_ver[j] : (p[j] != '0' && p[j] != '1'))
            return LN_BAD;
    }
    return LN_OK;
}

/* The request or status line at p (a head's first bytes): LN_OK and its
 * length (CRLF included) in *len, LN_PART or LN_BAD. */
static int first_line(const unsigned char *p, size_t n, int is_response, size_t *len, collect *col)
{
    size_t k, t = 0, tl = 0;
    int r;
    if (!is_response) {
        k = tchar_run(p, n);
        if (k > 23)
            return LN_BAD;
        if (k == n)
            return LN_PART;
        if (p[k] != ' ' || k == 0)
            return LN_BAD;
        t = ++k;
        k += target_run(p + k, n - k);
        if (k == n)
            return LN_PART;
        if (p[k] != ' ' || k == t)
            return LN_BAD;
        tl = k - t;
        k++;
        if ((r = version_at(p + k, n - k)) != LN_OK)
            return r;
        k += 8;
    } else {
        if ((r = version_at(p, n)) != LN_OK)
            return r;
        /* " 1xx" .. " 9xx": the first byte that is missing or wrong decides,
         * so the loop below when any is */
        if (n > 12 && p[8] == ' ' && (unsigned)(p[9] - '1') < 9 && (unsigned)(p[10] - '0') < 10 &&
            (unsigned)(p[11] - '0') < 10)
            k = 12;
        else for (k = 8; k < 12; k++) {
            if (k == n)
                return LN_PART;
            if (k == 8 ? p[k] != ' ' : (p[k] < '0' || p[k] > '9' || (k == 9 && p[k] == '0')))
                return LN_BAD;
        }
        if (k == n)
            return LN_PART;
        if (p[k] == ' ') {
            k++;
            k += text_run(p + k, n - k);
            if (k == n)
                return LN_PART;
        }
    }
    if (k == n)
        return LN_PART;
    if (p[k] != '\r')
        return LN_BAD;
    if (k + 1 == n)
        return LN_PART;
    if (p[k + 1] != '\n')
        return LN_BAD;
    *len = k + 2;
    if (col) {
        dds_http_msg *m = col->m;
        if (is_response) {
            m->version_minor = p[7] - '0';
            m->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        } else {
            if (n >= sizeof m->method)
                memcpy(m->method, p, sizeof m->method); /* one fixed-size copy */
            else
                memcpy(m->method, p, t - 1);
            m->method[t - 1] = '\0';
            m->target = (const char *)p + t;
            m->target_len = tl;
            m->version_minor = p[t + tl + 8] - '0';
        }
    }
    return LN_OK;
}

/* Whole lines of a head from p, h at the start of a line (h->cr clear, and
 * h->phase P_H_START or nothing of the head seen yet). Returns the bytes
 * taken; *res: SC_DONE (the empty line that ends the head was taken), SC_BAD,
 * or SC_MORE: the line at p + returned does not end within n (h is left at
 * its start, for hscan_run/hscan_byte). col, if not NULL, collects what the
 * lines hold. */
static size_t scan_lines(dds_http_hscan *h, const unsigned char *p, size_t n, int *res, collect *col)
{
    size_t i = 0, k, v, ve, nl;
    int r = SC_MORE;
#ifdef __SSE2__
    int tail = n >= 16;
#endif

    if (h->pos == 0) {
        int lr = first_line(p, n, h->phase == P_RS_VERSION, &i, col);
        if (lr != LN_OK) {
            *res = lr == LN_BAD ? SC_BAD : SC_MORE;
            return 0;
        }
    }
    while (i < n) {
        const unsigned char *l = p + i;
        size_t left = n - i;
        if (l[0] == '\r') {
            if (left == 1)
                break;
            r = l[1] == '\n' ? SC_DONE : SC_BAD;
            i += 2;
            break;
        }
#ifdef __SSE2__
        if ((nl = line_sse(l, left, tail, &v, &ve)) != 0)
            goto line;
#endif
        nl = tchar_run(l, left);
        if (nl == left)
            break;
        if (nl == 0 || l[nl] != ':') {
            r = SC_BAD;
            break;
        }
        /* Leading OWS, which the value is trimmed of, is text: skipping it
         * first changes nothing about where the line ends. */
        v = nl + 1;
        if (v < left && l[v] == ' ')
            v++; /* the usual single SP */
        while (v < left && is_ows((char)l[v]))
            v++;
        ve = v + text_run(l + v, left - v);
        if (ve == left)
            break;
        if (l[ve] != '\r') {
            r = SC_BAD;
            break;
        }
        if (ve + 1 == left)
            break;
        if (l[ve + 1] != '\n') {
            r = SC_BAD;
            break;
        }
#ifdef __SSE2__
    line:
#endif
        if (col) {
            /* [v, ve) is text: of it, only SP and HTAB are below 0x21 */
            k = ve;
            if (__builtin_expect(l[k - 1] <= ' ', 0))
                while (k > v && l[k - 1] <= ' ')
                    k--;
            collect_header(col, l, nl, (const char *)l + v, k - v);
        }
        i += ve + 2;
    }
    *res = r;
    if (r == SC_BAD)
        return i;
    h->pos += (uint32_t)i;
    if (i) { /* the first line was taken, or h was at a line start already */
        h->phase = P_H_START;
        h->sub = 0;
    }
    return i;
}

static void msg_init(dds_http_msg *m, int is_response, size_t head_len)
{
    m->is_response = is_response;
    m->method[0] = '\0';
    m->target = NULL;
    m->target_len = 0;
    m->version_minor = 0;
    m->status = 0;
    m->nheaders = 0;
    m->headers_truncated = 0;
    m->content_length = -1;
    m->chunked = m->conn_close = m->expect_continue = m->upgrade = 0;
    m->ambiguous_framing = 0;
    m->head_len = head_len;
    m->body_len = 0;
    m->host = m->user_agent = NULL;
    m->host_len = m->user_agent_len = 0;
    m->nctx = 0;
}

static void collect_init(collect *col, dds_http_msg *m, int is_response)
{
    memset(&col->f, 0, sizeof col->f);
    col->m = m;
    col->has_context = 0;
    col->host_any = NULL;
    col->host_any_len = 0;
    msg_init(m, is_response, 0);
}

/* The message's framing, once all lines are in (RFC 9112 §6.1-6.3). */
static void collect_finish(collect *col, size_t head_len)
{
    dds_http_msg *m = col->m;
    const framing *f = &col->f;
    m->head_len = head_len;
    if (f->cl_seen && !f->cl_bad)
        m->content_length = f->cl;
    if (f->cl_bad)
        m->ambiguous_framing = 1;
    if (f->te_seen) {
        m->content_length = -1;
        if (f->cl_seen || m->version_minor == 0 || f->te_chunked_count > 1)
            m->ambiguous_framing = 1;
        if (f->te_last_chunked && f->te_chunked_count == 1)
            m->chunked = 1;
        else if (!m->is_response)
            m->ambiguous_framing = 1; /* a request body must end in chunked */
        /* a response whose coding does not end in chunked: read until close */
    }
    m->upgrade = f->conn_upgrade && f->has_upgrade;
    m->conn_close = f->conn_close || (m->version_minor == 0 && !f->conn_keepalive);
}

/* A complete head the scanner has accepted (it arrived in pieces): cut up. */
static void parse_head(const char *h, size_t n, int is_response, dds_http_msg *m, collect *col)
{
    dds_http_hscan hs;
    int r;
    hscan_init(&hs, is_response);
    collect_init(col, m, is_response);
    scan_lines(&hs, (const unsigned char *)h, n, &r, col);
    collect_finish(col, n);
}

/* A head from the scanner's state h: SC_DONE with *used = its bytes up to
 * the final LF, SC_BAD, SC_LIMIT (longer than DDS_HTTP_MAX_HEAD), or SC_MORE
 * (all n bytes taken). *colp: collecting while scanning, which is only
 * complete if the whole head is scanned by this call through scan_lines: set
 * to NULL when the byte-at-a-time path has to take over. */
static inline __attribute__((always_inline)) int head_scan(dds_http_hscan *h, const unsigned char *p, size_t n, size_t *used, collect **colp)
{
    size_t i = 0;
    for (;;) {
        size_t room = DDS_HTTP_MAX_HEAD - (h->pos < DDS_HTTP_MAX_HEAD ? h->pos : DDS_HTTP_MAX_HEAD);
        size_t lim = room < n - i ? room : n - i;
        int r;
        if (!h->cr && (h->phase == P_H_START || h->pos == 0)) {
            size_t k = scan_lines(h, p + i, lim, &r, *colp);
            i += k;
            if (r == SC_DONE) {
                *used = i;
                return SC_DONE;
            }
            if (r == SC_BAD)
                return SC_BAD;
            lim -= k;
        }
        *colp = NULL;
        /* Runs of plain bytes in one go, never past the head size limit
         * (the byte over it still goes through the check below). */
        i += hscan_run(h, p + i, lim);
        if (i == n) {
            *used = n;
            return SC_MORE;
        }
        r = hscan_byte(h, p[i++]);
        if (r == SC_BAD)
            return SC_BAD;
        if (h->pos > DDS_HTTP_MAX_HEAD)
            return SC_LIMIT;
        if (r == SC_DONE) {
            *used = i;
            return SC_DONE;
        }
    }
}

const char *dds_http_msg_header(const dds_http_msg *m, const char *name, size_t *len)
{
    size_t nl;
    int i;
    if (!m || !name)
        return NULL;
    nl = strlen(name);
    for (i = 0; i < m->nheaders && i < DDS_HTTP_MAX_HEADERS; i++) {
        const dds_http_header *h = &m->headers[i];
        size_t k;
        if (h->name_len != nl)
            continue;
        for (k = 0; k < nl; k++) {
            if (lower((unsigned char)h->name[k]) != lower((unsigned char)name[k]))
                break;
        }
        if (k == nl) {
            if (len)
                *len = h->value_len;
            return h->value;
        }
    }
    return NULL;
}

/* ---- the stream ---- */

enum {
    ST_HEAD = 0, ST_BODY_CL, ST_BODY_EOF,
    ST_CHUNK_SIZE, ST_CHUNK_EXT, ST_CHUNK_SIZE_LF, ST_CHUNK_DATA,
    ST_CHUNK_DATA_CR, ST_CHUNK_DATA_LF,
    ST_TRAILER_START, ST_TRAILER_LINE, ST_TRAILER_LF, ST_TRAILER_END_LF,
    ST_DEAD
};

#define LEAD_CR 0x80        /* a CR of a leading empty line was seen */
#define LEAD_MAX 2          /* empty lines tolerated before a request line */
#define CHUNK_EXT_MAX 4096

static void drop_hbuf(dds_http_stream *s)
{
    free(s->hbuf);
    s->hbuf = NULL;
    s->hcap = 0;
}

void dds_http_stream_init(dds_http_stream *s, int is_response)
{
    memset(s, 0, sizeof *s);
    s->is_response = is_response ? 1 : 0;
    s->state = ST_HEAD;
    s->content_length = -1;
    hscan_init(&s->hs, s->is_response);
}

void dds_http_stream_free(dds_http_stream *s)
{
    drop_hbuf(s);
    s->state = ST_DEAD;
    if (s->dead_reason == DDS_HTTP_ALIVE)
        s->dead_reason = DDS_HTTP_DEAD_EOF;
}

static void go_dead(dds_http_stream *s, int reason)
{
    drop_hbuf(s);
    s->state = ST_DEAD;
    s->dead_reason = (uint8_t)reason;
}

static void fail(dds_http_stream *s, int reason, dds_http_cb cb, void *ctx)
{
    go_dead(s, reason);
    if (cb)
        cb(ctx, DDS_HTTP_EV_INVALID, NULL);
}

static void next_message(dds_http_stream *s)
{
    s->state = ST_HEAD;
    s->lead = 0;
    hscan_init(&s->hs, s->is_response);
}

static void emit_done(dds_http_stream *s, dds_http_cb cb, void *ctx)
{
    dds_http_msg m;
    next_message(s);
    if (!cb)
        return;
    /* Only the scalar fields: the head is gone by now. */
    m.is_response = s->is_response;
    memcpy(m.method, s->method, sizeof m.method);
    m.target = NULL;
    m.target_len = 0;
    m.version_minor = s->version_minor;
    m.status = s->status;
    m.nheaders = 0;
    m.headers_truncated = 0;
    m.content_length = s->content_length;
    m.chunked = s->chunked;
    m.conn_close = s->conn_close;
    m.expect_continue = s->expect_continue;
    m.upgrade = s->upgrade;
    m.ambiguous_framing = 0;
    m.head_len = s->head_len;
    m.body_len = s->body_len;
    m.host = m.user_agent = NULL;
    m.host_len = m.user_agent_len = 0;
    m.nctx = 0;
    cb(ctx, DDS_HTTP_EV_DONE, &m);
}

/* A head of n bytes, parsed into *mp (pointers into the head, which stays
 * valid during the call). */
static void on_head(dds_http_stream *s, const dds_http_msg *mp, size_t n, dds_http_cb cb, void *ctx)
{
    int no_body;

    next_message(s);
    if (s->is_response && mp->status < 200 && mp->status != 101)
        return; /* interim: the real response follows on the same stream */

    memcpy(s->method, mp->method, sizeof s->method);
    s->status = (int16_t)mp->status;
    s->version_minor = (uint8_t)mp->version_minor;
    s->content_length = mp->content_length;
    s->chunked = (uint8_t)mp->chunked;
    s->conn_close = (uint8_t)mp->conn_close;
    s->expect_continue = (uint8_t)mp->expect_continue;
    s->upgrade = (uint8_t)mp->upgrade;
    s->head_len = (uint32_t)n;
    s->body_len = 0;

    s->want_no_body = s->want_tunnel = 0;
    s->in_cb = 1;
    if (cb)
        cb(ctx, DDS_HTTP_EV_HEAD, mp);
    s->in_cb = 0;

    if (s->want_tunnel || (s->is_response && mp->status == 101)) {
        emit_done(s, cb, ctx);
        go_dead(s, DDS_HTTP_DEAD_TUNNEL);
        return;
    }
    no_body = s->is_response && (s->want_no_body || mp->status == 204 || mp->status == 304);
    if (no_body) {
        emit_done(s, cb, ctx);
        return;
    }
    if (mp->ambiguous_framing) {
        fail(s, DDS_HTTP_DEAD_INVALID, cb, ctx);
        return;
    }
    if (mp->chunked) {
        s->state = ST_CHUNK_SIZE;
        s->remaining = 0;
        s->chunk_digits = s->chunk_seen = 0;
        s->aux = 0;
    } else if (mp->content_length > 0) {
        s->state = ST_BODY_CL;
        s->remaining = (uint64_t)mp->content_length;
    } else if (mp->content_length == 0 || !s->is_response) {
        emit_done(s, cb, ctx);
    } else {
        s->state = ST_BODY_EOF;
    }
}

/* Keeps the n head bytes at p (the scanner has already seen them). */
static int save_head(dds_http_stream *s, const unsigned char *p, size_t have, size_t n)
{
    size_t need = have + n;
    if (need > s->hcap) {
        size_t cap = s->hcap ? s->hcap : 512;
        char *nb;
        while (cap < need)
            cap *= 2;
        if (cap > DDS_HTTP_MAX_HEAD)
            cap = DDS_HTTP_MAX_HEAD;
        if (cap < need)
            return -1;
        nb = realloc(s->hbuf, cap);
        if (!nb)
            return -1;
        s->hbuf = nb;
        s->hcap = (uint32_t)cap;
    }
    memcpy(s->hbuf + have, p, n);
    return 0;
}

static size_t feed_head(dds_http_stream *s, const unsigned char *p, size_t n,
                        dds_http_cb cb, void *ctx)
{
    size_t i = 0, start, have, used, hl;
    dds_http_msg m;
    collect col, *colp;
    int r;

    /* RFC 9112 §2.2: a server SHOULD ignore an empty line or two before a
     * request line (some clients add CRLF after a body). */
    if (!s->is_response && s->hs.pos == 0) {
        while (i < n) {
            unsigned char c = p[i];
            if (s->lead & LEAD_CR) {
                if (c != '\n' || (s->lead & 0x7f) >= LEAD_MAX) {
                    fail(s, DDS_HTTP_DEAD_INVALID, cb, ctx);
                    return n;
                }
                s->lead = (uint8_t)((s->lead & 0x7f) + 1);
            } else if (c == '\r') {
                s->lead |= LEAD_CR;
            } else {
                break;
            }
            i++;
        }
    }

    start = i;
    have = s->hs.pos; /* bytes already in hbuf */
    colp = NULL;
    if (have == 0) {
        collect_init(&col, &m, s->is_response);
        colp = &col;
    }
    r = head_scan(&s->hs, p + start, n - start, &used, &colp);
    if (r == SC_BAD || r == SC_LIMIT) {
        fail(s, r == SC_BAD ? DDS_HTTP_DEAD_INVALID : DDS_HTTP_DEAD_LIMIT, cb, ctx);
        return n;
    }
    if (r == SC_MORE) {
        if (used > 0 && save_head(s, p + start, have, used) != 0)
            fail(s, DDS_HTTP_DEAD_NOMEM, cb, ctx);
        return n;
    }
    hl = s->hs.pos;
    if (have == 0) {
        /* The whole head is in this feed: parsed in place, during the scan
         * unless part of it needed the byte-at-a-time path. */
        if (colp)
            collect_finish(colp, hl);
        else
            parse_head((const char *)p + start, hl, s->is_response, &m, &col);
        on_head(s, &m, hl, cb, ctx);
    } else {
        char *hb;
        if (save_head(s, p + start, have, used) != 0) {
            fail(s, DDS_HTTP_DEAD_NOMEM, cb, ctx);
            return n;
        }
        /* on_head may end the stream; hbuf must outlive the callback. */
        hb = s->hbuf;
        s->hbuf = NULL;
        s->hcap = 0;
        parse_head(hb, hl, s->is_response, &m, &col);
        on_head(s, &m, hl, cb, ctx);
        free(hb);
    }
    return start + used;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* One byte of chunked framing outside chunk data (RFC 9112 §7.1). */
static void chunk_byte(dds_http_stream *s, unsigned char c, dds_http_cb cb, void *ctx)
{
    int v;
    switch (s->state) {
    case ST_CHUNK_SIZE:
        v = hexval(c);
        if (v >= 0) {
            s->chunk_seen = 1;
            if (s->remaining == 0 && v == 0)
                return; /* leading zeros do not count toward the limit */
            if (++s->chunk_digits > 15) {
                fail(s, DDS_HTTP_DEAD_LIMIT, cb, ctx);
                return;
            }
            s->remaining = s->remaining * 16 + (uint64_t)v;
            return;
        }
        if (!s->chunk_seen)
            break;
        if (c == '\r') {
            s->state = ST_CHUNK_SIZE_LF;
            return;
        }
        if (c == ';' || c == ' ' || c == '\t') {
            s->state = ST_CHUNK_EXT;
            s->aux = 0;
            return;
        }
        break;
    case ST_CHUNK_EXT:
        if (c == '\r') {
            s->state = ST_CHUNK_SIZE_LF;
            return;
        }
        if (!is_text(c))
            break;
        if (++s->aux > CHUNK_EXT_MAX) {
            fail(s, DDS_HTTP_DEAD_LIMIT, cb, ctx);
            return;
        }
        return;
    case ST_CHUNK_SIZE_LF:
        if (c != '\n')
            break;
        if (s->remaining == 0) {
            s->state = ST_TRAILER_START;
            s->aux = 0;
        } else {
            s->state = ST_CHUNK_DATA;
        }
        return;
    case ST_CHUNK_DATA_CR:
        if (c != '\r')
            break;
        s->state = ST_CHUNK_DATA_LF;
        return;
    case ST_CHUNK_DATA_LF:
        if (c != '\n')
            break;
        s->state = ST_CHUNK_SIZE;
        s->remaining = 0;
        s->chunk_digits = s->chunk_seen = 0;
        return;
    case ST_TRAILER_START:
        if (c == '\r') {
            s->state = ST_TRAILER_END_LF;
            return;
        }
        if (!is_tchar(c))
            break; /* includes obs-fold */
        s->state = ST_TRAILER_LINE;
        /* fall through: count it */
        /* FALLTHROUGH */
    case ST_TRAILER_LINE:
        if (c == '\r') {
            s->state = ST_TRAILER_LF;
            return;
        }
        if (!is_text(c))
            break;
        if (++s->aux > DDS_HTTP_MAX_HEAD) {
            fail(s, DDS_HTTP_DEAD_LIMIT, cb, ctx);
            return;
        }
        return;
    case ST_TRAILER_LF:
        if (c != '\n')
            break;
        s->state = ST_TRAILER_START;
        return;
    case ST_TRAILER_END_LF:
        if (c != '\n')
            break;
        emit_done(s, cb, ctx);
        return;
    default:
        break;
    }
    fail(s, DDS_HTTP_DEAD_INVALID, cb, ctx);
}

void dds_http_stream_feed(dds_http_stream *s, const char *buf, size_t len,
                          dds_http_cb cb, void *ctx)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t i = 0;

    if (!s || !buf)
        return;
    while (i < len && s->state != ST_DEAD) {
        size_t left = len - i;
        switch (s->state) {
        case ST_HEAD:
            i += feed_head(s, p + i, left, cb, ctx);
            break;
        case ST_BODY_CL:
        case ST_CHUNK_DATA: {
            size_t take = s->remaining < left ? (size_t)s->remaining : left;
            i += take;
            s->remaining -= take;
            s->body_len += take;
            if (s->remaining == 0) {
                if (s->state == ST_BODY_CL)
                    emit_done(s, cb, ctx);
                else
                    s->state = ST_CHUNK_DATA_CR;
            }
            break;
        }
        case ST_BODY_EOF:
            s->body_len += left;
            i = len;
            break;
        default:
            chunk_byte(s, p[i++], cb, ctx);
            break;
        }
    }
}

void dds_http_stream_eof(dds_http_stream *s, dds_http_cb cb, void *ctx)
{
    if (!s || s->state == ST_DEAD)
        return;
    if (s->state == ST_BODY_EOF) {
        emit_done(s, cb, ctx);
        go_dead(s, DDS_HTTP_DEAD_EOF);
        return;
    }
    if (s->state == ST_HEAD && s->hs.pos == 0) {
        go_dead(s, DDS_HTTP_DEAD_EOF); /* between messages: a clean close */
        return;
    }
    fail(s, DDS_HTTP_DEAD_EOF, cb, ctx); /* a head or a body cut short */
}

void dds_http_stream_no_body(dds_http_stream *s)
{
    if (s && s->in_cb)
        s->want_no_body = 1;
}

void dds_http_stream_set_tunnel(dds_http_stream *s)
{
    if (!s)
        return;
    if (s->in_cb)
        s->want_tunnel = 1;
    else if (s->state != ST_DEAD)
        go_dead(s, DDS_HTTP_DEAD_TUNNEL);
}

int dds_http_stream_at_boundary(const dds_http_stream *s)
{
    return s && s->state == ST_HEAD && s->hs.pos == 0 && !(s->lead & LEAD_CR);
}

int dds_http_stream_dead(const dds_http_stream *s)
{
    return !s || s->state == ST_DEAD;
}

int dds_http_stream_dead_reason(const dds_http_stream *s)
{
    return s ? s->dead_reason : DDS_HTTP_DEAD_INVALID;
}

/* ---- one-shot scan for the client write path ---- */

int dds_http_scan_request(const char *buf, size_t len, dds_http_scan *out)
{
    dds_http_hscan hs;
    dds_http_msg m;
    collect col, *colp = &col;
    size_t n, used;
    int r;

    memset(out, 0, sizeof *out);
    out->content_length = -1;
    if (!buf || len == 0)
        return DDS_SCAN_NOT_HTTP;
    hscan_init(&hs, 0);
    n = len < DDS_HTTP_MAX_HEAD ? len : DDS_HTTP_MAX_HEAD;
    collect_init(&col, &m, 0);
    r = head_scan(&hs, (const unsigned char *)buf, n, &used, &colp);
    if (r == SC_BAD || r == SC_LIMIT)
        return DDS_SCAN_NOT_HTTP;
    if (r == SC_DONE) {
        if (colp)
            collect_finish(colp, used);
        else
            parse_head(buf, used, 0, &m, &col);
        out->head_len = used;
        out->insert_off = used - 2;
        out->has_context = col.has_context;
        memcpy(out->method, m.method, sizeof out->method);
        out->target = m.target;
        out->target_len = m.target_len;
        out->host = col.host_any;
        out->host_len = col.host_any_len;
        out->content_length = m.content_length;
        out->chunked = m.chunked;
        out->ambiguous_framing = m.ambiguous_framing;
        out->version_minor = m.version_minor;
        out->conn_close = m.conn_close;
        out->expect_continue = m.expect_continue;
        out->upgrade = m.upgrade;
        return DDS_SCAN_COMPLETE;
    }
    if (len >= DDS_HTTP_MAX_HEAD)
        return DDS_SCAN_NOT_HTTP;
    if (hs.phase != P_RQ_METHOD) {
        const char *sp = memchr(buf, ' ', n);
        size_t ml = (size_t)(sp - buf);
        memcpy(out->method, buf, ml);
        out->method[ml] = '\0';
    }
    return DDS_SCAN_PARTIAL;
}

int dds_http_stream_take_scanned(dds_http_stream *s, const dds_http_scan *sc, dds_http_cb cb, void *ctx)
{
    dds_http_msg m;
    if (!s || !sc || s->is_response || !dds_http_stream_at_boundary(s) || sc->head_len == 0)
        return 0;
    /* What feed_head would have found: the head starts with its method (no
     * empty line to skip), so this is the message on_head would be given. */
    msg_init(&m, 0, sc->head_len);
    memcpy(m.method, sc->method, sizeof m.method);
    m.version_minor = sc->version_minor;
    m.content_length = sc->content_length;
    m.chunked = sc->chunked;
    m.conn_close = sc->conn_close;
    m.expect_continue = sc->expect_continue;
    m.upgrade = sc->upgrade;
    m.ambiguous_framing = sc->ambiguous_framing;
    on_head(s, &m, sc->head_len, cb, ctx);
    return 1;
}
