/* See conn.h. */
#include "conn.h"
#include "config.h"
#include "propagation.h"
#include "url.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Heads bigger than this get no injection: servers commonly refuse heads over
 * 8 KiB, and ddshim must never be the reason a request is refused. */
#define DDS_INJECT_MAX_HEAD 7168
#define DDS_INJECT_BLOCK_MAX 2048

static const char *const NAME_CLIENT = "http.client.request";
static const char *const NAME_SERVER = "http.server.request";
static const char *const TYPE_HTTP = "http";
static const char *const TYPE_WEB = "web";

/* Event-loop detection for server spans (see server_head). */
static __thread int tl_eventloop __attribute__((tls_model("initial-exec")));
static __thread dds_conn *tl_active_conn __attribute__((tls_model("initial-exec")));

/* Recycled states (see conn.h: their memory is never freed). */
static pthread_mutex_t free_mu = PTHREAD_MUTEX_INITIALIZER;
static dds_conn *free_list;

unsigned dds_conn_fork_epoch;

void dds_conn_atfork_prepare(void)
{
    pthread_mutex_lock(&free_mu);
    __atomic_add_fetch(&dds_conn_fork_epoch, 1, __ATOMIC_RELAXED); /* seen by both processes */
}

void dds_conn_atfork_release(void)
{
    pthread_mutex_unlock(&free_mu);
}

dds_conn *dds_conn_new(int role, const char *peer_ip, int peer_port, pid_t pid)
{
    pthread_mutex_lock(&free_mu);
    dds_conn *c = free_list;
    if (c)
        free_list = c->next_free;
    pthread_mutex_unlock(&free_mu);
    if (c == NULL && (c = calloc(1, sizeof *c)) == NULL)
        return NULL;
    /* Everything from the lock on starts from zero (unlocked); the shared
     * fields are set atomically (a stale reader may be looking at refs). */
    memset(&c->mu, 0, sizeof *c - offsetof(dds_conn, mu));
    c->next_free = NULL;
    c->close_why = NULL;
    __atomic_store_n(&c->passive, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->lost, 0, __ATOMIC_RELAXED);
    c->role = role;
    c->pid = pid;
    snprintf(c->peer_ip, sizeof c->peer_ip, "%s", peer_ip ? peer_ip : "");
    c->peer_ip_len = strlen(c->peer_ip);
    c->peer_port = peer_port;
    c->fork_epoch = __atomic_load_n(&dds_conn_fork_epoch, __ATOMIC_RELAXED);
    /* Client: we send requests and read responses; server: the reverse. */
    dds_http_stream_init(&c->out, role == DDS_CONN_SERVER);
    dds_http_stream_init(&c->in, role == DDS_CONN_CLIENT);
    __atomic_store_n(&c->refs, 1, __ATOMIC_RELEASE); /* last: usable from here on */
    return c;
}

static void set_status(dds_span *s, int status)
{
    /* 100..999 from the parser; anything else would still be printed right */
    char buf[12];
    int n;
    if (status >= 100 && status <= 999) {
        buf[0] = (char)('0' + status / 100);
        buf[1] = (char)('0' + status / 10 % 10);
        buf[2] = (char)('0' + status % 10);
        buf[3] = '\0';
        n = 3;
    } else {
        n = snprintf(buf, sizeof buf, "%d", status);
    }
    dds_span_set_meta_n(s, "http.status_code", buf, (size_t)n);
    if (status >= 500) {
        s->error = 1;
        if (s->name == NAME_CLIENT) {
            char msg[48];
            snprintf(msg, sizeof msg, "HTTP %d", status);
            dds_span_set_meta(s, "error.message", msg);
        }
    }
}

/* strcmp == 0, without the call for the methods that differ at once. */
static int is_method(const char *m, const char *lit)
{
    return m[0] == lit[0] && strcmp(m, lit) == 0;
}

static void q_push(dds_conn *c, dds_span *s, int is_head, int is_connect)
{
    if (c->nq == DDS_CONN_MAX_INFLIGHT) {
        /* Far more pipelined requests than any real client keeps: the oldest
         * will never be matched reliably; finish it. */
        dds_span_set_error(c->q[0].span, "too many pipelined requests to follow");
        dds_span_finish(c->q[0].span);
        memmove(&c->q[0], &c->q[1], sizeof c->q[0] * (DDS_CONN_MAX_INFLIGHT - 1));
        c->nq--;
    }
    c->q[c->nq++] = (dds_conn_req){.span = s, .is_head = is_head, .is_connect = is_connect};
}

static dds_conn_req q_pop(dds_conn *c)
{
    dds_conn_req r = c->q[0];
    memmove(&c->q[0], &c->q[1], sizeof c->q[0] * (size_t)(c->nq - 1));
    c->nq--;
    return r;
}

static void go_dead(dds_conn *c)
{
    c->dead = 1;
    /* A block partly on the wire must be completed, or the head it sits in
     * would carry half a header line; one not started is simply dropped —
     * but not while a send is in its system call (another thread, the lock
     * released): that send's plan may hold the block, and its count must be
     * made against it (send_done drops it then, if none of it went). */
    if (c->inj.block_sent == 0 && !c->sending)
        dds_inject_reset(&c->inj);
}

void dds_conn_lost_sync(dds_conn *c)
{
    go_dead(c);
}

/* Tags shared by client and server spans, from a request line and Host. */
static void request_tags(dds_conn *c, dds_span *s, const char *method, const char *target, size_t tlen,
                         const char *host, size_t hlen)
{
    char buf[2048];
    size_t n;
    /* Lengths passed along where known: what the url functions return is
     * the length of what they wrote (no NUL inside: the head's bytes never
     * hold one). */
    dds_span_set_meta(s, "http.method", method);
    n = dds_url_build(buf, sizeof buf, "http", host, hlen, c->peer_ip, c->peer_port, target, tlen);
    dds_span_set_meta_n(s, "http.url", buf, n);
    n = dds_url_resource(buf, sizeof buf, method, target, tlen);
    dds_span_set_resource_n(s, buf, n);
    dds_span_set_meta_n(s, "component", "http", 4);
}

static void client_tags(dds_conn *c, dds_span *s, const char *method, const char *target, size_t tlen,
                        const char *host, size_t hlen)
{
    request_tags(c, s, method, target, tlen, host, hlen);
    dds_span_set_meta_n(s, "span.kind", "client", 6);
    /* out.host: the name the application asked for (Host without the port),
     * else the peer address. */
    if (host && hlen) {
        size_t n = hlen;
        if (host[0] == '[') {
            const char *rb = memchr(host, ']', hlen);
            n = rb ? (size_t)(rb - host + 1) : hlen;
        } else {
            const char *colon = memchr(host, ':', hlen);
            if (colon)
                n = (size_t)(colon - host);
        }
        dds_span_set_meta_n(s, "out.host", host, n);
    } else {
        dds_span_set_meta_n(s, "out.host", c->peer_ip, c->peer_ip_len);
    }
    dds_span_set_meta_n(s, "network.destination.ip", c->peer_ip, c->peer_ip_len);
    dds_span_set_metric(s, "network.destination.port", c->peer_port);
}

/* The trace-context headers of a head (the only ones extraction reads, in
 * their order); how many. */
static int to_hdrs(const dds_http_msg *m, dds_hdr *h)
{
    for (int i = 0; i < m->nctx; i++) {
        const dds_http_header *x = &m->headers[m->ctx_idx[i]];
        h[i] = (dds_hdr){x->name, x->name_len, x->value, x->value_len};
    }
    return m->nctx;
}

static dds_span *client_span_new(dds_conn *c, const dds_http_msg *m_or_null)
{
    dds_span *parent = dds_active_span();
    dds_trace_context ctx;
    const dds_trace_context *remote = NULL;
    if (parent == NULL && m_or_null != NULL && m_or_null->nctx > 0) {
        /* The application injected its own context (it has a tracer of its
         * own): our span becomes a child of the one it announced. (With no
         * context header, extraction finds nothing.) */
        dds_hdr h[DDS_HTTP_MAX_HEADERS];
        int nh = to_hdrs(m_or_null, h);
        if (dds_propagation_extract(h, nh, dds_cfg, &ctx))
            remote = &ctx;
    }
    (void)c;
    return dds_span_start(NAME_CLIENT, TYPE_HTTP, parent, remote);
}

/* ---- client side ---------------------------------------------------- */

static void client_out_cb(void *arg, int ev, const dds_http_msg *m)
{
    dds_conn *c = arg;
    if (ev == DDS_HTTP_EV_INVALID) {
        go_dead(c);
        return;
    }
    if (ev != DDS_HTTP_EV_HEAD)
        return;
    dds_span *s = c->prepared;
    c->prepared = NULL;
    if (s == NULL) {
        s = client_span_new(c, m);
        if (s == NULL)
            return;
        client_tags(c, s, m->method, m->target, m->target_len, m->host, m->host_len);
    }
    q_push(c, s, is_method(m->method, "HEAD"), is_method(m->method, "CONNECT"));
}

static void client_in_cb(void *arg, int ev, const dds_http_msg *m)
{
    dds_conn *c = arg;
    if (ev == DDS_HTTP_EV_INVALID) {
        go_dead(c);
        return;
    }
    if (ev != DDS_HTTP_EV_HEAD || m->status < 100)
        return;
    if (c->nq == 0) {
        /* An answer to no request ddshim saw: some went out another way. */
        dds_conn_wire_suspect(c);
        return;
    }
    dds_conn_req r = q_pop(c);
    if (r.is_head)
        dds_http_stream_no_body(&c->in);
    if (m->status == 101 || (r.is_connect && m->status >= 200 && m->status < 300)) {
        dds_http_stream_set_tunnel(&c->in);
        c->dead = 1; /* what follows is not HTTP/1.x */
    }
    set_status(r.span, m->status);
    dds_span_finish(r.span);
}

/* ---- server side ---------------------------------------------------- */

static void server_in_cb(void *arg, int ev, const dds_http_msg *m)
{
    dds_conn *c = arg;
    if (ev == DDS_HTTP_EV_INVALID) {
        go_dead(c);
        return;
    }
    if (ev != DDS_HTTP_EV_HEAD)
        return;
    dds_trace_context ctx;
    const dds_trace_context *remote = NULL;
    if (m->nctx > 0) {
        /* Only the context headers: extraction reads nothing else, and with
         * none of them it finds nothing (and no error). */
        dds_hdr h[DDS_HTTP_MAX_HEADERS];
        int nh = to_hdrs(m, h);
        if (dds_propagation_extract(h, nh, dds_cfg, &ctx))
            remote = &ctx;
        else if (ctx.propagation_error[0] || ctx.w3c_extraction_error[0])
            remote = &ctx; /* no context, but the errors belong on the new root */
    }
    int64_t wall = c->req_started ? c->req_start_wall : dds_now_wall_ns();
    int64_t mono = c->req_started ? c->req_start_mono : dds_now_mono_ns();
    c->req_started = 0;
    dds_span *s = dds_span_start_at(NAME_SERVER, TYPE_WEB, NULL, remote, wall, mono);
    if (s == NULL)
        return;
    request_tags(c, s, m->method, m->target, m->target_len, m->host, m->host_len);
    dds_span_set_meta_n(s, "span.kind", "server", 6);
    if (m->user_agent) {
        size_t ul = m->user_agent_len;
        dds_span_set_meta_n(s, "http.useragent", m->user_agent, ul < 512 ? ul : 512);
    }
    dds_span_set_meta_n(s, "network.client.ip", c->peer_ip, c->peer_ip_len);
    dds_trace_decide(s->trace, s);

    /* Thread-per-request servers: the span is active on this thread, so what
     * the handler does becomes its child. A thread that reads requests of a
     * second connection while one is still open is an event loop: from then
     * on nothing is parented there, since it would be a guess. */
    if (!tl_eventloop) {
        dds_span *top = dds_active_span();
        if (top && top->type == TYPE_WEB && tl_active_conn != c) {
            tl_eventloop = 1;
            dds_active_remove(top);
        } else if (top == NULL || top->type != TYPE_WEB) {
            dds_active_push(s);
            tl_active_conn = c;
        }
    }
    q_push(c, s, is_method(m->method, "HEAD"), is_method(m->method, "CONNECT"));
}


static void server_out_cb(void *arg, int ev, const dds_http_msg *m)
{
    dds_conn *c = arg;
    if (ev == DDS_HTTP_EV_INVALID) {
        go_dead(c);
        return;
    }
    if (c->nq == 0)
        return;
    dds_conn_req *r = &c->q[0];
    if (ev == DDS_HTTP_EV_HEAD) {
        if (r->is_head)
            dds_http_stream_no_body(&c->out);
        set_status(r->span, m->status);
        if (m->status == 101 || (r->is_connect && m->status >= 200 && m->status < 300)) {
            dds_http_stream_set_tunnel(&c->out);
            dds_conn_req done = q_pop(c);
            dds_span_finish(done.span);
            c->dead = 1;
        }
        return;
    }
    if (ev == DDS_HTTP_EV_DONE) {
        if (c->dead)
            return; /* the tunnel's head already finished its span */
        dds_conn_req done = q_pop(c);
        dds_span_finish(done.span);
    }
}
static void (*const out_cb[3])(void *, int, const dds_http_msg *) = {NULL, client_out_cb, server_out_cb};
static void (*const in_cb[3])(void *, int, const dds_http_msg *) = {NULL, client_in_cb, server_in_cb};

/* ---- bytes ------------------------------------------------------------- */

/* Bytes [skip, skip + len) of the iovecs, to the stream. */
static void feed_iov(dds_conn *c, dds_http_stream *st, dds_http_cb cb, const struct iovec *iov, int n,
                     size_t skip, size_t len)
{
    for (int i = 0; i < n && len > 0 && !c->dead; i++) {
        size_t have = iov[i].iov_len, take;
        if (skip >= have) {
            skip -= have;
            continue;
        }
        take = have - skip < len ? have - skip : len;
        dds_http_stream_feed(st, (const char *)iov[i].iov_base + skip, take, cb, c);
        skip = 0;
        len -= take;
        if (dds_http_stream_dead(st) && !c->dead)
            go_dead(c);
    }
}

static size_t iov_total(const struct iovec *iov, int n)
{
    size_t t = 0;
    for (int i = 0; i < n; i++)
        t += iov[i].iov_len;
    return t;
}

/* The application's bytes the kernel took, to the request (client) or
 * response (server) stream. A request head send_plan scanned in this same
 * call, all of it sent, is not scanned again: the stream takes what the scan
 * found (client_out_cb needs only the method, as the span is prepared). */
static void feed_sent(dds_conn *c, const struct iovec *app, int napp, size_t r)
{
    size_t skip = 0;
    dds_http_cb cb = out_cb[c->role];
    if (c->planned_head_ok) {
        c->planned_head_ok = 0;
        if (c->prepared && r >= c->planned_head.head_len &&
            dds_http_stream_take_scanned(&c->out, &c->planned_head, cb, c)) {
            skip = c->planned_head.head_len;
            if (dds_http_stream_dead(&c->out) && !c->dead)
                go_dead(c);
        }
    }
    if (r > skip)
        feed_iov(c, &c->out, cb, app, napp, skip, r - skip);
}

int dds_conn_send_plan(dds_conn *c, const struct iovec *app, int napp, struct iovec *out, int outcap)
{
    if (c->sending) {
        /* Another thread's send on this connection is in its system call:
         * the two threads' bytes reach the kernel in an order ddshim cannot
         * know. Stop following (this thread's bytes go out as they are; the
         * other send's count stays exact: go_dead keeps its block). */
        go_dead(c);
        return -1;
    }
    c->sending = 1;
    c->planned_head_ok = 0;
    if (c->inj.active) /* even when dead: see go_dead */
        return dds_inject_plan(&c->inj, app, napp, out, outcap);
    if (c->dead || c->role != DDS_CONN_CLIENT)
        return 0;
    if (c->prepared || !dds_http_stream_at_boundary(&c->out) || napp <= 0)
        return 0;
    size_t total = iov_total(app, napp);
    if (total == 0)
        return 0;

    /* The head must be visible in this one call to be rewritten. */
    const char *buf = app[0].iov_base;
    size_t len = app[0].iov_len;
    char *gathered = NULL;
    if (len < total && len < DDS_HTTP_MAX_HEAD) {
        len = total < DDS_HTTP_MAX_HEAD ? total : DDS_HTTP_MAX_HEAD;
        gathered = malloc(len);
        if (gathered == NULL)
            return 0;
        len = dds_iov_gather(app, napp, gathered, len);
        buf = gathered;
    }
    dds_http_scan sc;
    int r = dds_http_scan_request(buf, len, &sc);
    int planned = 0;
    /* NOT_HTTP only means "nothing to inject here": the stream, fed the
     * bytes as they go out, decides whether the connection is HTTP at all
     * (it tolerates the stray CRLF some clients send after a body). */
    if (r == DDS_SCAN_COMPLETE && !sc.has_context) {
        dds_span *s = client_span_new(c, NULL);
        if (s != NULL) {
            c->prepared = s;
            c->planned_head = sc;
            c->planned_head.target = c->planned_head.host = NULL; /* may be in `gathered` */
            c->planned_head_ok = 1;
            client_tags(c, s, sc.method, sc.target, sc.target_len, sc.host, sc.host_len);
            if (sc.head_len <= DDS_INJECT_MAX_HEAD && !sc.ambiguous_framing && dds_cfg->inject.n > 0) {
                dds_trace *t = s->trace;
                dds_span *root = t->root_span_id == s->span_id ? s : NULL;
                char block[DDS_INJECT_BLOCK_MAX];
                dds_trace_lock(t);
                dds_trace_decide_locked(t, root ? root : s);
                size_t bl = dds_propagation_inject(t, s->span_id, dds_cfg, block, sizeof block);
                dds_trace_unlock(t);
                if (bl > 0 && sc.head_len + bl <= DDS_INJECT_MAX_HEAD + DDS_INJECT_BLOCK_MAX &&
                    dds_inject_begin(&c->inj, block, bl, sc.insert_off) == 0)
                    planned = dds_inject_plan(&c->inj, app, napp, out, outcap);
            }
        }
    }
    free(gathered);
    return planned;
}

ssize_t dds_conn_send_done(dds_conn *c, const struct iovec *app, int napp, int planned, ssize_t k,
                           int err)
{
    (void)err;
    c->sending = 0;
    ssize_t r = k;
    if (k >= 0) {
        c->wire_out += (uint64_t)k;
        if (planned > 0)
            r = dds_inject_account(&c->inj, iov_total(app, napp), (size_t)k);
    }
    if (c->dead && c->inj.active && c->inj.block_sent == 0)
        dds_inject_reset(&c->inj); /* went dead during the system call; none of the block went */
    if (k < 0)
        return k;
    if (r < 0)
        return -2;
    if (r > 0 && !c->dead)
        feed_sent(c, app, napp, (size_t)r);
    return r;
}

void dds_conn_sent_opaque(dds_conn *c, size_t n)
{
    /* sendfile: the body left the file without passing through user space.
     * Its bytes only count down the framing (a Content-Length body); if the
     * stream expected anything else, zeros are not HTTP and it stops. */
    static const char zeros[4096];
    c->wire_out += n;
    if (c->sending)
        go_dead(c); /* sent while another thread's send was under way: order unknown */
    while (n > 0 && !c->dead) {
        size_t take = n < sizeof zeros ? n : sizeof zeros;
        dds_http_stream_feed(&c->out, zeros, take, out_cb[c->role], c);
        if (dds_http_stream_dead(&c->out))
            go_dead(c);
        n -= take;
    }
}

void dds_conn_received_opaque(dds_conn *c, size_t n)
{
    static const char zeros[4096];
    while (n > 0 && !c->dead) {
        size_t take = n < sizeof zeros ? n : sizeof zeros;
        dds_http_stream_feed(&c->in, zeros, take, in_cb[c->role], c);
        if (dds_http_stream_dead(&c->in))
            go_dead(c);
        n -= take;
    }
}

int dds_conn_wire_check_due(dds_conn *c)
{
    if (c->dead || c->inj.active || c->prepared != NULL || !dds_http_stream_at_boundary(&c->out))
        return 0;
    if (!c->wire_checked || __atomic_load_n(&c->wire_always, __ATOMIC_RELAXED) ||
        c->fork_epoch != __atomic_load_n(&dds_conn_fork_epoch, __ATOMIC_RELAXED))
        return 1;
    return ++c->wire_starts >= DDS_CONN_WIRE_CHECK_EVERY;
}

void dds_conn_check_wire(dds_conn *c, uint64_t kernel_out)
{
    c->wire_checked = 1;
    c->wire_starts = 0;
    if (kernel_out != c->wire_out && !c->inj.active)
        go_dead(c);
}

void dds_conn_wire_suspect(dds_conn *c)
{
    __atomic_store_n(&c->wire_always, 1, __ATOMIC_RELAXED); /* may be called without c->mu */
}

void dds_conn_received(dds_conn *c, const struct iovec *iov, int n, size_t len)
{
    if (c->dead || len == 0)
        return;
    if (c->role == DDS_CONN_SERVER && !c->req_started && dds_http_stream_at_boundary(&c->in)) {
        c->req_started = 1;
        c->req_start_wall = dds_now_wall_ns();
        c->req_start_mono = dds_now_mono_ns();
    }
    feed_iov(c, &c->in, in_cb[c->role], iov, n, 0, len);
}

static void fail_inflight(dds_conn *c, const char *msg)
{
    if (c->role != DDS_CONN_CLIENT)
        return;
    while (c->nq > 0) {
        dds_conn_req r = q_pop(c);
        dds_span_set_error(r.span, msg);
        dds_span_finish(r.span);
    }
}

void dds_conn_eof(dds_conn *c)
{
    if (c->role == DDS_CONN_CLIENT)
        fail_inflight(c, "connection closed by the server before the response");
}

void dds_conn_error(dds_conn *c, int err)
{
    char msg[128];
    snprintf(msg, sizeof msg, "connection error: %s", strerror(err));
    fail_inflight(c, msg);
}

void dds_conn_shutdown_write(dds_conn *c)
{
    if (c->role == DDS_CONN_SERVER && !c->dead)
        dds_http_stream_eof(&c->out, server_out_cb, c);
}

void dds_conn_close(dds_conn *c, const char *why)
{
    if (c == NULL)
        return;
    if (c->role == DDS_CONN_SERVER) {
        if (!c->dead)
            dds_http_stream_eof(&c->out, server_out_cb, c);
        while (c->nq > 0) {
            dds_conn_req r = q_pop(c);
            dds_span_finish(r.span);
        }
        if (tl_active_conn == c)
            tl_active_conn = NULL;
    } else {
        fail_inflight(c, why ? why : "connection closed before the response");
        if (c->prepared) {
            dds_span_set_error(c->prepared, "connection closed before the request was sent");
            dds_span_finish(c->prepared);
            c->prepared = NULL;
        }
    }
    dds_conn_abandon(c);
}

void dds_conn_abandon(dds_conn *c)
{
    if (c == NULL)
        return;
    dds_inject_reset(&c->inj);
    dds_http_stream_free(&c->out);
    dds_http_stream_free(&c->in);
    __atomic_store_n(&c->refs, 0, __ATOMIC_RELEASE);
    pthread_mutex_lock(&free_mu);
    c->next_free = free_list;
    free_list = c;
    pthread_mutex_unlock(&free_mu);
}
