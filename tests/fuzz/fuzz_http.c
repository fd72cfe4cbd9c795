/* libFuzzer target for core/http.c's stream parser.
 *
 * The first input byte picks the caller's behaviour (no_body / set_tunnel in
 * EV_HEAD, eof at the end); the rest is fed to a request stream and to a
 * response stream, once in one piece, once byte at a time, and once cut at
 * points derived from the input. Each piece is fed from its own heap copy, so
 * a pointer kept past a feed is an ASan error. The event logs (hashed), the
 * final dead reason and boundary state must be identical for every cutting;
 * any crash, sanitizer report or difference is a finding. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "url.h"

typedef struct evlog {
    uint64_t h;
    unsigned n;
    int flags;
    dds_http_stream *s;
} evlog;

static void mix(evlog *l, const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < n; i++) {
        l->h ^= b[i];
        l->h *= 0x100000001b3ULL;
    }
}

static void mix_i(evlog *l, int64_t v)
{
    mix(l, &v, sizeof v);
}

static void on_event(void *ctx, int ev, const dds_http_msg *m)
{
    evlog *l = ctx;
    int i;
    l->n++;
    mix_i(l, ev);
    if (ev == DDS_HTTP_EV_INVALID) {
        if (m != NULL)
            abort();
        return;
    }
    mix(l, m->method, strlen(m->method));
    mix_i(l, m->status);
    mix_i(l, m->version_minor);
    mix_i(l, m->content_length);
    mix_i(l, m->chunked);
    mix_i(l, m->conn_close);
    mix_i(l, m->expect_continue);
    mix_i(l, m->upgrade);
    mix_i(l, (int64_t)m->head_len);
    if (ev == DDS_HTTP_EV_DONE) {
        mix_i(l, (int64_t)m->body_len);
        if (m->nheaders != 0 || m->target != NULL)
            abort();
        return;
    }
    mix_i(l, m->ambiguous_framing);
    mix_i(l, m->headers_truncated);
    mix_i(l, m->nheaders);
    if (m->nheaders > DDS_HTTP_MAX_HEADERS || m->head_len > DDS_HTTP_MAX_HEAD)
        abort();
    if (m->target)
        mix(l, m->target, m->target_len);
    for (i = 0; i < m->nheaders; i++) {
        mix(l, m->headers[i].name, m->headers[i].name_len);
        mix(l, ":", 1);
        mix(l, m->headers[i].value, m->headers[i].value_len);
    }
    /* Found during the scan: what a search of the kept headers finds. */
    {
        size_t hl = 0, ul = 0;
        const char *h = dds_http_msg_header(m, "host", &hl), *u = dds_http_msg_header(m, "user-agent", &ul);
        if (h != m->host || (h && hl != m->host_len) || u != m->user_agent || (u && ul != m->user_agent_len))
            abort();
        if (m->nctx < 0 || m->nctx > m->nheaders)
            abort();
        for (i = 0; i < m->nctx; i++) {
            if (m->ctx_idx[i] >= m->nheaders || (i > 0 && m->ctx_idx[i] <= m->ctx_idx[i - 1]))
                abort();
            mix_i(l, m->ctx_idx[i]);
        }
        mix_i(l, m->nctx);
    }
    /* What conn.c does with a request head: http.url and the resource, at a
     * roomy and at a tight output size. Bounded, NUL-terminated, and the
     * userinfo of an absolute-form target never shows. */
    if (!m->is_response) {
        static char big[DDS_HTTP_MAX_HEAD + 256], small[16];
        size_t hl = 0, n;
        const char *host = dds_http_msg_header(m, "host", &hl);
        n = dds_url_build(big, sizeof big, "http", host, hl, "10.0.0.1", 8080, m->target, m->target_len);
        if (n >= sizeof big || strlen(big) != n)
            abort();
        if (memchr(m->target, '@', m->target_len) == NULL && memchr(big, '@', n) != NULL &&
            (host == NULL || memchr(host, '@', hl) == NULL))
            abort();
        n = dds_url_build(small, sizeof small, "https", host, hl, "::1", 443, m->target, m->target_len);
        if (n >= sizeof small || strlen(small) != n)
            abort();
        n = dds_url_resource(big, sizeof big, m->method, m->target, m->target_len);
        if (n >= sizeof big || strlen(big) != n)
            abort();
        n = dds_url_resource(small, sizeof small, m->method, m->target, m->target_len);
        if (n >= sizeof small || strlen(small) != n)
            abort();
    }
    /* Caller behaviour, decided only from the message so it is the same for
     * every cutting. */
    if ((l->flags & 1) && m->is_response && m->status % 3 == 0)
        dds_http_stream_no_body(l->s);
    if ((l->flags & 2) && m->is_response && m->status >= 200 && m->status < 300 && (m->status & 1))
        dds_http_stream_set_tunnel(l->s);
}

typedef struct result {
    uint64_t h;
    unsigned n;
    int dead, reason, boundary;
} result;

static void run(const uint8_t *d, size_t len, const size_t *cuts, size_t ncuts, int is_response,
                int flags, result *out)
{
    dds_http_stream s;
    evlog l = { 0xcbf29ce484222325ULL, 0, flags, &s };
    size_t prev = 0, i;
    dds_http_stream_init(&s, is_response);
    for (i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        if (end < prev)
            end = prev;
        if (end > prev) {
            char *piece = malloc(end - prev);
            if (!piece)
                abort();
            memcpy(piece, d + prev, end - prev);
            dds_http_stream_feed(&s, piece, end - prev, on_event, &l);
            free(piece);
        }
        prev = end;
    }
    out->boundary = dds_http_stream_at_boundary(&s);
    out->dead = dds_http_stream_dead(&s);
    if (flags & 4)
        dds_http_stream_eof(&s, on_event, &l);
    out->reason = dds_http_stream_dead_reason(&s);
    dds_http_stream_free(&s);
    out->h = l.h;
    out->n = l.n;
}

static void same(const result *a, const result *b)
{
    if (a->h != b->h || a->n != b->n || a->dead != b->dead || a->reason != b->reason ||
        a->boundary != b->boundary)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int flags, dir;
    size_t *all, i, cuts[4];
    if (size < 1)
        return 0;
    flags = data[0];
    data++;
    size--;

    all = malloc(sizeof(size_t) * (size + 1));
    if (!all)
        return 0;
    for (i = 0; i + 1 < size; i++)
        all[i] = i + 1;
    /* cut points from the input's own bytes, sorted */
    for (i = 0; i < 4; i++) {
        size_t v = size ? ((size_t)data[(i * 7919) % size] * 131 + i * 977) % (size + 1) : 0;
        size_t j = i;
        while (j > 0 && cuts[j - 1] > v) {
            cuts[j] = cuts[j - 1];
            j--;
        }
        cuts[j] = v;
    }

    for (dir = 0; dir < 2; dir++) {
        result one, bytes, some;
        run(data, size, NULL, 0, dir, flags, &one);
        run(data, size, all, size > 1 ? size - 1 : 0, dir, flags, &bytes);
        run(data, size, cuts, 4, dir, flags, &some);
        same(&one, &bytes);
        same(&one, &some);
    }
    free(all);

    /* the one-shot scan never reads past what it is given, nor past the cap */
    {
        dds_http_scan sc;
        int r = dds_http_scan_request((const char *)data, size, &sc);
        if (r == DDS_SCAN_COMPLETE &&
            (sc.head_len > size || sc.head_len > DDS_HTTP_MAX_HEAD || sc.insert_off + 2 != sc.head_len))
            abort();
    }
    return 0;
}
