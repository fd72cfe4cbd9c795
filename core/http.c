/*
 * http.c — see http.h. Two layers: a byte-at-a-time syntax scanner for heads
 * (hscan_byte), which is what makes every split of the input behave the same
 * and rejects non-HTTP at its first wrong byte, and a parser (parse_head) that
 * runs once over a head the scanner has accepted and only has to cut it up.
 * Bodies are then followed by a small state machine per framing.
 */
#include "http.h"

#include <stdlib.h>
#include <string.h>

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
enum { SC_MORE = 0, SC_DONE = 1, SC_BAD = 2 };

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
        h->line_no++;
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

/* ---- head parser (input already accepted by the scanner) ---- */

typedef struct head_extra {
    int has_context;
    const char *host;
    size_t host_len;
} head_extra;

#define CL_MAX ((int64_t)1 << 62)

/* Content-Length: 1*DIGIT, or a list of identical values ("5, 5", which some
 * proxies produce). Returns -1 when malformed or the values differ. */
static int64_t parse_content_length(const char *v, size_t n)
{
    int64_t val = -1;
    size_t i = 0;
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

typedef struct framing {
    int cl_seen, cl_bad, te_seen, te_chunked_count, te_last_chunked;
    int conn_close, conn_keepalive, conn_upgrade, has_upgrade;
    int64_t cl;
} framing;

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

static void parse_head(const char *h, size_t n, int is_response, dds_http_msg *m, head_extra *x)
{
    const char *end = h + n, *p, *eol;
    framing f;

    memset(&f, 0, sizeof f);
    m->is_response = is_response;
    m->method[0] = '\0';
    m->target = NULL;
    m->target_len = 0;
    m->status = 0;
    m->nheaders = 0;
    m->headers_truncated = 0;
    m->content_length = -1;
    m->chunked = m->conn_close = m->expect_continue = m->upgrade = 0;
    m->ambiguous_framing = 0;
    m->head_len = n;
    m->body_len = 0;
    if (x) {
        x->has_context = 0;
        x->host = NULL;
        x->host_len = 0;
    }

    eol = memchr(h, '\r', n);
    if (is_response) {
        m->version_minor = h[7] - '0';
        m->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    } else {
        const char *sp1 = memchr(h, ' ', (size_t)(eol - h));
        const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
        memcpy(m->method, h, (size_t)(sp1 - h));
        m->method[sp1 - h] = '\0';
        m->target = sp1 + 1;
        m->target_len = (size_t)(sp2 - sp1 - 1);
        m->version_minor = sp2[8] - '0';
    }

    for (p = eol + 2; p < end; p = eol + 2) {
        const char *colon, *name, *val;
        size_t nlen, vlen;
        eol = memchr(p, '\r', (size_t)(end - p));
        if (eol == p)
            break; /* the empty line */
        colon = memchr(p, ':', (size_t)(eol - p));
        name = p;
        nlen = (size_t)(colon - p);
        val = colon + 1;
        vlen = (size_t)(eol - val);
        trim_ows(&val, &vlen);
        if (m->nheaders < DDS_HTTP_MAX_HEADERS) {
            dds_http_header *hd = &m->headers[m->nheaders++];
            hd->name = name;
            hd->name_len = nlen;
            hd->value = val;
            hd->value_len = vlen;
        } else {
            m->headers_truncated = 1;
        }
        /* Framing and context headers are looked at on every line, kept or
         * not, so that header 65 cannot change how the body is read. */
        switch (lower((unsigned char)name[0])) {
        case 'c':
            if (ieq(name, nlen, "content-length")) {
                int64_t v = parse_content_length(val, vlen);
                if (v < 0 || (f.cl_seen && v != f.cl))
                    f.cl_bad = 1;
                f.cl_seen = 1;
                f.cl = v;
            } else if (ieq(name, nlen, "connection")) {
                each_token(val, vlen, &f, conn_token);
            }
            break;
        case 't':
            if (ieq(name, nlen, "transfer-encoding")) {
                f.te_seen = 1;
                f.te_last_chunked = 0; /* an empty value ends in nothing */
                each_token(val, vlen, &f, te_token);
            } else if (x && ieq(name, nlen, "traceparent")) {
                x->has_context = 1;
            }
            break;
        case 'u':
            if (ieq(name, nlen, "upgrade"))
                f.has_upgrade = 1;
            break;
        case 'e':
            if (ieq(name, nlen, "expect") && ieq(val, vlen, "100-continue"))
                m->expect_continue = 1;
            break;
        case 'h':
            if (x && !x->host && ieq(name, nlen, "host")) {
                x->host = val;
                x->host_len = vlen;
            }
            break;
        case 'x':
            if (x && (ieq(name, nlen, "x-datadog-trace-id") || ieq(name, nlen, "x-datadog-parent-id")))
                x->has_context = 1;
            break;
        default:
            break;
        }
    }

    /* RFC 9112 §6.1-6.3. */
    if (f.cl_seen && !f.cl_bad)
        m->content_length = f.cl;
    if (f.cl_bad)
        m->ambiguous_framing = 1;
    if (f.te_seen) {
        m->content_length = -1;
        if (f.cl_seen || m->version_minor == 0 || f.te_chunked_count > 1)
            m->ambiguous_framing = 1;
        if (f.te_last_chunked && f.te_chunked_count == 1)
            m->chunked = 1;
        else if (!is_response)
            m->ambiguous_framing = 1; /* a request body must end in chunked */
        /* a response whose coding does not end in chunked: read until close */
    }
    m->upgrade = f.conn_upgrade && f.has_upgrade;
    m->conn_close = f.conn_close || (m->version_minor == 0 && !f.conn_keepalive);
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
    cb(ctx, DDS_HTTP_EV_DONE, &m);
}

static void on_head(dds_http_stream *s, const char *h, size_t n, dds_http_cb cb, void *ctx)
{
    dds_http_msg m;
    int no_body;

    parse_head(h, n, s->is_response, &m, NULL);
    next_message(s);
    if (s->is_response && m.status < 200 && m.status != 101)
        return; /* interim: the real response follows on the same stream */

    memcpy(s->method, m.method, sizeof s->method);
    s->status = (int16_t)m.status;
    s->version_minor = (uint8_t)m.version_minor;
    s->content_length = m.content_length;
    s->chunked = (uint8_t)m.chunked;
    s->conn_close = (uint8_t)m.conn_close;
    s->expect_continue = (uint8_t)m.expect_continue;
    s->upgrade = (uint8_t)m.upgrade;
    s->head_len = (uint32_t)n;
    s->body_len = 0;

    s->want_no_body = s->want_tunnel = 0;
    s->in_cb = 1;
    if (cb)
        cb(ctx, DDS_HTTP_EV_HEAD, &m);
    s->in_cb = 0;

    if (s->want_tunnel || (s->is_response && m.status == 101)) {
        emit_done(s, cb, ctx);
        go_dead(s, DDS_HTTP_DEAD_TUNNEL);
        return;
    }
    no_body = s->is_response && (s->want_no_body || m.status == 204 || m.status == 304);
    if (no_body) {
        emit_done(s, cb, ctx);
        return;
    }
    if (m.ambiguous_framing) {
        fail(s, DDS_HTTP_DEAD_INVALID, cb, ctx);
        return;
    }
    if (m.chunked) {
        s->state = ST_CHUNK_SIZE;
        s->remaining = 0;
        s->chunk_digits = s->chunk_seen = 0;
        s->aux = 0;
    } else if (m.content_length > 0) {
        s->state = ST_BODY_CL;
        s->remaining = (uint64_t)m.content_length;
    } else if (m.content_length == 0 || !s->is_response) {
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
    size_t i = 0, start, have;

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
    for (; i < n; i++) {
        /* Runs of plain bytes in one go, never past the head size limit
         * (the byte over it still goes through the check below). */
        size_t room = DDS_HTTP_MAX_HEAD - (s->hs.pos < DDS_HTTP_MAX_HEAD ? s->hs.pos : DDS_HTTP_MAX_HEAD);
        i += hscan_run(&s->hs, p + i, room < n - i ? room : n - i);
        if (i == n)
            break;
        int r = hscan_byte(&s->hs, p[i]);
        if (r == SC_BAD) {
            fail(s, DDS_HTTP_DEAD_INVALID, cb, ctx);
            return n;
        }
        if (s->hs.pos > DDS_HTTP_MAX_HEAD) {
            fail(s, DDS_HTTP_DEAD_LIMIT, cb, ctx);
            return n;
        }
        if (r == SC_DONE) {
            size_t hl = s->hs.pos;
            i++;
            if (have == 0) {
                on_head(s, (const char *)p + start, hl, cb, ctx);
            } else {
                if (save_head(s, p + start, have, i - start) != 0) {
                    fail(s, DDS_HTTP_DEAD_NOMEM, cb, ctx);
                    return n;
                }
                /* on_head may end the stream; hbuf must outlive the callback. */
                char *hb = s->hbuf;
                s->hbuf = NULL;
                s->hcap = 0;
                on_head(s, hb, hl, cb, ctx);
                free(hb);
            }
            return i;
        }
    }
    if (i > start && save_head(s, p + start, have, i - start) != 0)
        fail(s, DDS_HTTP_DEAD_NOMEM, cb, ctx);
    return n;
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
    size_t n, i;

    memset(out, 0, sizeof *out);
    out->content_length = -1;
    if (!buf || len == 0)
        return DDS_SCAN_NOT_HTTP;
    hscan_init(&hs, 0);
    n = len < DDS_HTTP_MAX_HEAD ? len : DDS_HTTP_MAX_HEAD;
    for (i = 0; i < n; i++) {
        i += hscan_run(&hs, (const unsigned char *)buf + i, n - i);
        if (i == n)
            break;
        int r = hscan_byte(&hs, (unsigned char)buf[i]);
        if (r == SC_BAD)
            return DDS_SCAN_NOT_HTTP;
        if (r == SC_DONE) {
            dds_http_msg m;
            head_extra x;
            parse_head(buf, i + 1, 0, &m, &x);
            out->head_len = i + 1;
            out->insert_off = i - 1;
            out->has_context = x.has_context;
            memcpy(out->method, m.method, sizeof out->method);
            out->target = m.target;
            out->target_len = m.target_len;
            out->host = x.host;
            out->host_len = x.host_len;
            out->content_length = m.content_length;
            out->chunked = m.chunked;
            out->ambiguous_framing = m.ambiguous_framing;
            out->version_minor = m.version_minor;
            return DDS_SCAN_COMPLETE;
        }
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
