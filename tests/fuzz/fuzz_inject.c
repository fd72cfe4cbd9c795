/* libFuzzer target: header injection, differentially.
 *
 * When dds_http_scan_request says the input starts with a COMPLETE request
 * head, the hooks would insert a header block at insert_off. This target
 * builds that rewritten byte stream and checks, against the stream parser:
 *   - the original parses to a head that agrees with the scan (method, target,
 *     Host, framing);
 *   - the rewritten head has the same request line, and its headers are the
 *     original ones followed by exactly the injected ones;
 *   - everything after the first head (body framing, body lengths, later
 *     pipelined messages) produces identical events: the body bytes are the
 *     same bytes, framed the same way;
 *   - the rewritten head scans as COMPLETE, with context present;
 *   - writing the original through core/inject.c's plan/account with kernel
 *     acceptance sizes drawn from the input puts exactly the rewritten bytes on
 *     the wire, and the app's progress count only ever counts its own bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "inject.h"

static const char BLOCK[] =
    "x-datadog-trace-id: 1234567890123456789\r\n"
    "x-datadog-parent-id: 987654321\r\n"
    "x-datadog-sampling-priority: 1\r\n"
    "traceparent: 00-000000000000000011223344556677aa-0000000000000001-01\r\n";
#define BLOCK_LEN (sizeof BLOCK - 1)
#define BLOCK_HEADERS 4

typedef struct first_head {
    int seen;
    char method[24];
    char target[DDS_HTTP_MAX_HEAD];
    size_t target_len;
    int version_minor, nheaders, truncated, ambiguous, chunked;
    int64_t content_length;
    size_t head_len;
    /* name\0value\0 ... of every kept header */
    char hdrs[2 * DDS_HTTP_MAX_HEAD];
    size_t hdrs_len;
    size_t hdr_off[DDS_HTTP_MAX_HEADERS + 1];
} first_head;

typedef struct capture {
    first_head *fh;
    unsigned events;
    int first_ev;
    uint64_t rest_hash; /* every event after the first head */
    unsigned rest_n;
} capture;

static void mix(capture *c, const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i;
    for (i = 0; i < n; i++) {
        c->rest_hash ^= b[i];
        c->rest_hash *= 0x100000001b3ULL;
    }
}

static void mix_i(capture *c, int64_t v)
{
    mix(c, &v, sizeof v);
}

static void on_event(void *ctx, int ev, const dds_http_msg *m)
{
    capture *c = ctx;
    int i;
    if (c->events++ == 0)
        c->first_ev = ev;
    if (ev == DDS_HTTP_EV_HEAD && !c->fh->seen) {
        first_head *f = c->fh;
        f->seen = 1;
        memcpy(f->method, m->method, sizeof f->method);
        memcpy(f->target, m->target, m->target_len);
        f->target_len = m->target_len;
        f->version_minor = m->version_minor;
        f->nheaders = m->nheaders;
        f->truncated = m->headers_truncated;
        f->ambiguous = m->ambiguous_framing;
        f->chunked = m->chunked;
        f->content_length = m->content_length;
        f->head_len = m->head_len;
        f->hdrs_len = 0;
        for (i = 0; i < m->nheaders; i++) {
            f->hdr_off[i] = f->hdrs_len;
            memcpy(f->hdrs + f->hdrs_len, m->headers[i].name, m->headers[i].name_len);
            f->hdrs_len += m->headers[i].name_len;
            f->hdrs[f->hdrs_len++] = '\0';
            memcpy(f->hdrs + f->hdrs_len, m->headers[i].value, m->headers[i].value_len);
            f->hdrs_len += m->headers[i].value_len;
            f->hdrs[f->hdrs_len++] = '\0';
        }
        f->hdr_off[m->nheaders] = f->hdrs_len;
        return;
    }
    /* Later events; head_len of the first message's EV_DONE differs by the
     * block, so head lengths stay out of the comparison. */
    c->rest_n++;
    mix_i(c, ev);
    if (ev == DDS_HTTP_EV_INVALID)
        return;
    mix(c, m->method, strlen(m->method));
    mix_i(c, m->status);
    mix_i(c, m->content_length);
    mix_i(c, m->chunked);
    if (ev == DDS_HTTP_EV_DONE) {
        mix_i(c, (int64_t)m->body_len);
        return;
    }
    mix_i(c, (int64_t)m->head_len);
    if (m->target)
        mix(c, m->target, m->target_len);
    for (i = 0; i < m->nheaders; i++) {
        mix(c, m->headers[i].name, m->headers[i].name_len);
        mix(c, m->headers[i].value, m->headers[i].value_len);
    }
}

static void parse(const char *d, size_t n, first_head *fh, capture *c)
{
    dds_http_stream s;
    memset(c, 0, sizeof *c);
    fh->seen = 0;
    c->fh = fh;
    c->rest_hash = 0xcbf29ce484222325ULL;
    dds_http_stream_init(&s, 0);
    dds_http_stream_feed(&s, d, n, on_event, c);
    dds_http_stream_free(&s);
}

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Writes `orig` through plan/account with kernel sizes from rng; the wire must
 * equal `want`. */
static void write_through(const char *orig, size_t n, size_t off, const char *want, size_t wn,
                          uint64_t rng)
{
    dds_inject_state st;
    char *wire = malloc(wn + 1);
    size_t wlen = 0, done = 0;
    int guard = 0;
    memset(&st, 0, sizeof st);
    if (dds_inject_begin(&st, BLOCK, BLOCK_LEN, off) != 0)
        abort();
    while (done < n) {
        struct iovec app[3], out[8];
        int napp = 0, k;
        size_t alen = n - done, cut = (size_t)(xs(&rng) % (alen + 1)), planned, acc;
        ssize_t r;
        /* the app's buffer, as two iovecs split somewhere */
        app[napp++] = (struct iovec){ (void *)(orig + done), cut };
        app[napp++] = (struct iovec){ (void *)(orig + done + cut), alen - cut };
        k = dds_inject_plan(&st, app, napp, out, 8);
        planned = dds_iov_total(out, k);
        if (planned == 0 || ++guard > 100000)
            abort();
        switch (xs(&rng) % 3) {
        case 0: acc = planned; break;
        case 1: acc = 1 + (size_t)(xs(&rng) % 8); break;
        default: acc = 1 + (size_t)(xs(&rng) % planned); break;
        }
        if (acc > planned)
            acc = planned;
        if (wlen + acc > wn)
            abort();
        dds_iov_gather(out, k, wire + wlen, acc);
        wlen += acc;
        r = dds_inject_account(&st, alen, acc);
        if (r == 0 || r > (ssize_t)alen)
            abort();
        if (r > 0)
            done += (size_t)r;
        /* the app's count is exactly its bytes on the wire */
        {
            size_t blk = wlen <= off ? 0 : (wlen - off < BLOCK_LEN ? wlen - off : BLOCK_LEN);
            if (wlen - blk != done)
                abort();
        }
    }
    if (wlen != wn || memcmp(wire, want, wn) != 0 || st.active)
        abort();
    dds_inject_reset(&st);
    free(wire);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static first_head fo, fr;
    capture co, cr;
    dds_http_scan sc, sc2;
    const char *d = (const char *)data;
    char *rw;
    size_t rn;
    int i;
    uint64_t rng = 0x9e3779b97f4a7c15ULL;

    if (dds_http_scan_request(d, size, &sc) != DDS_SCAN_COMPLETE)
        return 0;
    if (sc.insert_off + 2 != sc.head_len || sc.head_len > size || memcmp(d + sc.insert_off, "\r\n", 2))
        abort();
    if (sc.head_len + BLOCK_LEN > DDS_HTTP_MAX_HEAD)
        return 0; /* the hooks do not inject into heads this large */

    rn = size + BLOCK_LEN;
    rw = malloc(rn);
    memcpy(rw, d, sc.insert_off);
    memcpy(rw + sc.insert_off, BLOCK, BLOCK_LEN);
    memcpy(rw + sc.insert_off + BLOCK_LEN, d + sc.insert_off, size - sc.insert_off);

    parse(d, size, &fo, &co);
    parse(rw, rn, &fr, &cr);

    /* the scan and the stream agree about the original */
    if (!fo.seen || co.first_ev != DDS_HTTP_EV_HEAD)
        abort();
    if (strcmp(fo.method, sc.method) || fo.target_len != sc.target_len ||
        memcmp(fo.target, sc.target, sc.target_len) || fo.head_len != sc.head_len ||
        fo.content_length != sc.content_length || fo.chunked != sc.chunked ||
        fo.ambiguous != sc.ambiguous_framing || fo.version_minor != sc.version_minor)
        abort();

    /* the rewritten head: same request line, headers = original + block */
    if (!fr.seen || cr.first_ev != DDS_HTTP_EV_HEAD)
        abort();
    if (strcmp(fo.method, fr.method) || fo.target_len != fr.target_len ||
        memcmp(fo.target, fr.target, fo.target_len) || fo.version_minor != fr.version_minor ||
        fr.head_len != fo.head_len + BLOCK_LEN || fo.content_length != fr.content_length ||
        fo.chunked != fr.chunked || fo.ambiguous != fr.ambiguous)
        abort();
    if (fo.nheaders + BLOCK_HEADERS <= DDS_HTTP_MAX_HEADERS && !fo.truncated) {
        static const char *const names[BLOCK_HEADERS] = {
            "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority", "traceparent"
        };
        if (fr.nheaders != fo.nheaders + BLOCK_HEADERS || fr.truncated)
            abort();
        if (memcmp(fo.hdrs, fr.hdrs, fo.hdrs_len) != 0)
            abort();
        for (i = 0; i < BLOCK_HEADERS; i++) {
            const char *nm = fr.hdrs + fr.hdr_off[fo.nheaders + i];
            if (strcmp(nm, names[i]) != 0)
                abort();
        }
    } else {
        /* past the kept-header limit: the kept ones are unchanged */
        size_t upto = fo.hdr_off[fo.nheaders < fr.nheaders ? fo.nheaders : fr.nheaders];
        if (memcmp(fo.hdrs, fr.hdrs, upto) != 0)
            abort();
    }

    /* everything after the head is the same */
    if (co.rest_hash != cr.rest_hash || co.rest_n != cr.rest_n)
        abort();

    /* the rewritten head scans the same, now with context */
    if (dds_http_scan_request(rw, rn, &sc2) != DDS_SCAN_COMPLETE || !sc2.has_context ||
        sc2.head_len != sc.head_len + BLOCK_LEN || strcmp(sc2.method, sc.method) ||
        sc2.content_length != sc.content_length || sc2.chunked != sc.chunked ||
        sc2.ambiguous_framing != sc.ambiguous_framing)
        abort();

    /* and the write path puts exactly those bytes on the wire */
    for (i = 0; i < (int)size && i < 16; i++)
        rng = (rng ^ data[i]) * 0x100000001b3ULL + 1;
    write_through(d, size, sc.insert_off, rw, rn, rng | 1);

    free(rw);
    return 0;
}
