/*
 * hiredis.c — the hiredis hooks: one redis.command span for every command an
 * unmodified program sends with hiredis 0.14 or 1.x, blocking, pipelined or
 * asynchronous.
 *
 * Blocking and pipelined commands: a command's span starts when it is
 * appended and ends with its reply. Replies come back in order, so each
 * context has a FIFO of pending spans: an append pushes, a reply
 * (redisGetReply) pops. redisCommand is an append followed by one reply, and
 * the reply it returns is the oldest pending one, so it is modelled the same.
 * The FIFO is bounded; past the bound, commands are only counted (untracked)
 * so the replies still line up, and tracing resumes once they drained.
 *
 * Asynchronous commands: the program's callback is wrapped. hiredis gets a
 * trampoline and a {callback, privdata, span} record, and the trampoline ends
 * the span (with an error for a NULL reply: the context went away) before
 * calling the program's callback exactly as hiredis would have. SUBSCRIBE,
 * MONITOR and the like get several replies, or none (UNSUBSCRIBE); their
 * callbacks are never wrapped, their spans end when the command is queued, and
 * from then on that context is in "direct" mode (nothing wrapped or queued).
 *
 * A span's resource and tags come from its command's bytes: the hook only
 * copies them, with, at the reply, the database index, into the span
 * (dds_span_defer), and the writer thread parses them and sets the tags
 * (redis_finalize). The tags that are the same for every command of a
 * connection (db.system, component, span.kind, the peer, _dd.measured) are
 * one shared tag set per context (core/tagset.h), made again when the peer
 * changes: a span takes a reference to it, and the writer copies its
 * encoding. The application thread reads only what it acts on: the
 * command's name (pub/sub) and SELECT's argument (dds_redis_parse_head).
 * Commands over DEFER_CMD_MAX bytes are tagged at once; an error reply runs
 * the deferred work first (dds_span_run_deferred), so that its tags still
 * come after, and so does a child span its trace is sampled on when it
 * finishes (dds_span_finish_at). A command sent before the peer was known
 * gets the context's new tag set at its reply.
 *
 * hiredis calls itself through the PLT (redisCommand -> redisvCommand ->
 * redisvAppendCommand + redisGetReply): a per-thread depth counter makes the
 * outermost hook the only one that traces.
 *
 * Struct layouts: the contexts are opaque here. Only err, errstr[128], fd and
 * flags are read; they follow each other in both versions, but 1.x puts a
 * function-table pointer before them, and its redisReply has a double before
 * len/str. Which layout applies is decided once, from whether the library that
 * provides redisFree also has redisConnectWithOptions (1.x only); a context
 * whose fields look wrong turns the integration off (logged once).
 * Per-context state (peer, database, FIFO) lives in a small hash map keyed by
 * the context pointer, created at connect (or lazily at the first command) and
 * dropped at redisFree/redisAsyncFree.
 */
#define _GNU_SOURCE
#include "redis.h"

#include "config.h"
#include "guard.h"
#include "hooks/socket.h"
#include "log.h"
#include "preload/preload.h"
#include "preload/real.h"
#include "span.h"
#include "tagset.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

/* ---- hiredis's API, as far as ddshim needs it ------------------------- */

typedef struct redisContext redisContext;
typedef struct redisAsyncContext redisAsyncContext;
typedef struct redisOptions redisOptions;
typedef void(redisCallbackFn)(redisAsyncContext *, void *, void *);

#define REDIS_OK 0
#define REDIS_ERR (-1)
#define REDIS_BLOCK 0x1
#define REDIS_REPLY_ERROR 6

redisContext *redisConnect(const char *ip, int port);
redisContext *redisConnectWithTimeout(const char *ip, int port, const struct timeval tv);
redisContext *redisConnectNonBlock(const char *ip, int port);
redisContext *redisConnectBindNonBlock(const char *ip, int port, const char *source_addr);
redisContext *redisConnectBindNonBlockWithReuse(const char *ip, int port, const char *source_addr);
redisContext *redisConnectUnix(const char *path);
redisContext *redisConnectUnixWithTimeout(const char *path, const struct timeval tv);
redisContext *redisConnectUnixNonBlock(const char *path);
redisContext *redisConnectFd(int fd);
redisContext *redisConnectWithOptions(const redisOptions *options);
int redisReconnect(redisContext *c);
void redisFree(redisContext *c);
int redisFreeKeepFd(redisContext *c);
int redisGetReply(redisContext *c, void **reply);
int redisAppendFormattedCommand(redisContext *c, const char *cmd, size_t len);
int redisvAppendCommand(redisContext *c, const char *format, va_list ap);
int redisAppendCommand(redisContext *c, const char *format, ...);
int redisAppendCommandArgv(redisContext *c, int argc, const char **argv, const size_t *argvlen);
void *redisvCommand(redisContext *c, const char *format, va_list ap);
void *redisCommand(redisContext *c, const char *format, ...);
void *redisCommandArgv(redisContext *c, int argc, const char **argv, const size_t *argvlen);

redisAsyncContext *redisAsyncConnect(const char *ip, int port);
redisAsyncContext *redisAsyncConnectBind(const char *ip, int port, const char *source_addr);
redisAsyncContext *redisAsyncConnectBindWithReuse(const char *ip, int port,
                                                  const char *source_addr);
redisAsyncContext *redisAsyncConnectUnix(const char *path);
redisAsyncContext *redisAsyncConnectWithOptions(const redisOptions *options);
void redisAsyncFree(redisAsyncContext *ac);
int redisvAsyncCommand(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata,
                       const char *format, va_list ap);
int redisAsyncCommand(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata,
                      const char *format, ...);
int redisAsyncCommandArgv(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata, int argc,
                          const char **argv, const size_t *argvlen);
int redisAsyncFormattedCommand(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata,
                               const char *cmd, size_t len);

/* Not hooked; called to read the command a format string makes. */
int redisvFormatCommand(char **target, const char *format, va_list ap);
void redisFreeCommand(char *cmd);

static const char *const hiredis_libs[] = {
    "libhiredis.so.0.14", "libhiredis.so.1.1.0", "libhiredis.so.1.0.0", "libhiredis.so.1.2.0",
    "libhiredis.so.1.3.0", "libhiredis.so.0.13", "libhiredis.so", NULL,
};

#define FIFO_CAP 10000u
#define NBUCKETS 256
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

static __thread int depth __attribute__((tls_model("initial-exec")));

/* ---- layouts ----------------------------------------------------------- */

static pthread_once_t layout_once = PTHREAD_ONCE_INIT;
static int layout_ok;        /* 1 once detected and plausible; 0 = do not trace */
static size_t ctx_base;      /* offset of redisContext.err */
static size_t reply_len_off; /* offsets of redisReply.len / .str */
static size_t reply_str_off;

static void layout_detect(void)
{
    void *fr = dds_real_sym_in("redisFree", hiredis_libs);
    void *opt = dds_real_sym_in("redisConnectWithOptions", hiredis_libs);
    Dl_info a, b;
    int v1 = 0;
    if (fr == NULL || !dladdr(fr, &a)) {
        dds_log(DDS_LOG_WARN, "hiredis: library not found; Redis commands are not traced");
        return;
    }
    if (opt && dladdr(opt, &b) && a.dli_fbase == b.dli_fbase)
        v1 = 1;
    ctx_base = v1 ? sizeof(void *) : 0;
    reply_len_off = v1 ? 24 : 16;
    reply_str_off = v1 ? 32 : 24;
    __atomic_store_n(&layout_ok, 1, __ATOMIC_RELEASE);
    DDS_DEBUG("hiredis: %s layout (%s)", v1 ? "1.x" : "0.x", a.dli_fname ? a.dli_fname : "?");
}

static int ctx_int(const void *c, size_t off)
{
    int v;
    memcpy(&v, (const char *)c + ctx_base + off, sizeof v);
    return v;
}

static int ctx_err(const void *c) { return ctx_int(c, 0); }
static int ctx_fd(const void *c) { return ctx_int(c, 4 + 128); }
static int ctx_flags(const void *c) { return ctx_int(c, 4 + 128 + 4); }

/* The context's errstr, or dflt when it is empty. */
static const char *ctx_errstr(const void *c, char *buf, size_t cap, const char *dflt)
{
    const char *s = (const char *)c + ctx_base + 4;
    size_t n = strnlen(s, 128);
    if (n == 0 || ctx_err(c) == 0)
        return dflt;
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* A context that hiredis says is fine must look fine; if not, the layout
 * guess is wrong and reading further would be reading garbage. */
static int ctx_plausible(const void *c)
{
    int err = ctx_err(c), fd = ctx_fd(c);
    if (err < 0 || err > 16 || fd < -1 || fd > (1 << 24)) {
        if (__atomic_exchange_n(&layout_ok, 0, __ATOMIC_RELAXED))
            dds_log(DDS_LOG_WARN, "hiredis: unexpected context layout; Redis tracing turned off");
        return 0;
    }
    return 1;
}

static int reply_is_error(const void *r)
{
    int t;
    memcpy(&t, r, sizeof t);
    return t == REDIS_REPLY_ERROR;
}

static const char *reply_error_text(const void *r, char *buf, size_t cap)
{
    const char *str;
    size_t len;
    memcpy(&len, (const char *)r + reply_len_off, sizeof len);
    memcpy(&str, (const char *)r + reply_str_off, sizeof str);
    if (str == NULL || dds_redis_error_text(str, len < 4096 ? len : 4096, buf, cap) == 0)
        return "redis error";
    return buf;
}

/* ---- gate ---------------------------------------------------------------- */

static int want(void)
{
    if (!dds_active || dds_in_shim || depth > 0)
        return 0;
    if (dds_cfg == NULL || !(dds_cfg->integrations & DDS_INTEG_REDIS) || !dds_ready())
        return 0;
    pthread_once(&layout_once, layout_detect);
    return __atomic_load_n(&layout_ok, __ATOMIC_RELAXED);
}

/* ---- per-context state ----------------------------------------------------- */

typedef struct pending {
    dds_span *span; /* may be NULL: a command counted but not traced */
    int select_db;  /* SELECT's argument, or -1 */
} pending;

typedef struct rctx {
    struct rctx *next;
    const void *key;
    int fd;
    int peer;          /* 0 unknown, 1 from the connect arguments, 2 from getpeername */
    char host[256];
    int port;          /* 0 for a unix socket */
    dds_tagset *tags;  /* the tags every command's span shares (rctx_tags), or NULL */
    int db;            /* -1 unknown */
    int direct;        /* pub/sub or MONITOR seen: no FIFO, no wrapping */
    pending *q;
    unsigned qhead, qlen, qcap;
    unsigned long untracked; /* commands after the FIFO's tail, counted only */
} rctx;

/* The map's lock: one word (core/lock.h), never held across a call into
 * hiredis; a pthread mutex pair cost ~55 instructions per command. */
static int map_mu;
static rctx *buckets[NBUCKETS];
static long n_ctx;      /* contexts in the map: free hooks skip the lock at 0 */
static long n_pending;  /* FIFO entries + untracked, all contexts: redisGetReply's fast path */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void) { dds_spin_lock(&map_mu); }
static void atfork_parent(void) { dds_spin_unlock(&map_mu); }
static void atfork_child(void)
{
    /* The child forgets its parent's contexts (their spans are the parent's):
     * they come back lazily, without the database index, if it uses them. */
    map_mu = 0;
    memset(buckets, 0, sizeof buckets);
    n_ctx = 0;
    n_pending = 0;
}
static void atfork_register(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

static unsigned bucket_of(const void *key)
{
    uint64_t x = (uint64_t)(uintptr_t)key;
    x ^= x >> 29;
    x *= 0x9e3779b97f4a7c15ULL;
    return (unsigned)(x >> 56) % NBUCKETS;
}

static rctx *map_find(const void *key)
{
    for (rctx *r = buckets[bucket_of(key)]; r; r = r->next)
        if (r->key == key)
            return r;
    return NULL;
}

static rctx *map_unlink(const void *key)
{
    for (rctx **pp = &buckets[bucket_of(key)]; *pp; pp = &(*pp)->next)
        if ((*pp)->key == key) {
            rctx *r = *pp;
            *pp = r->next;
            __atomic_sub_fetch(&n_ctx, 1, __ATOMIC_RELAXED);
            __atomic_sub_fetch(&n_pending, (long)(r->qlen + r->untracked), __ATOMIC_RELAXED);
            return r;
        }
    return NULL;
}

static void map_insert(rctx *r)
{
    unsigned b = bucket_of(r->key);
    r->next = buckets[b];
    buckets[b] = r;
    __atomic_add_fetch(&n_ctx, 1, __ATOMIC_RELAXED);
}

static int peer_from_fd(int fd, char *host, size_t cap, int *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)&ss;
        if (!inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)cap))
            return -1;
        *port = ntohs(in->sin_port);
        return 0;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)&ss;
        if (!inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)cap))
            return -1;
        *port = ntohs(in6->sin6_port);
        return 0;
    }
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)&ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        if (sl <= off)
            return -1;
        size_t n = sl - off;
        if (n > sizeof un->sun_path)
            n = sizeof un->sun_path;
        if (un->sun_path[0] == '\0') { /* abstract: shown as @name */
            if (n < 2 || n >= cap)
                return -1;
            host[0] = '@';
            memcpy(host + 1, un->sun_path + 1, n - 1);
            host[n] = '\0';
        } else {
            n = strnlen(un->sun_path, n);
            if (n == 0 || n >= cap)
                return -1;
            memcpy(host, un->sun_path, n);
            host[n] = '\0';
        }
        *port = 0;
        return 0;
    }
    return -1;
}

/* The peer changed: the spans' shared tags are made again when next needed. */
static void peer_changed(rctx *r)
{
    dds_tagset_unref(r->tags);
    r->tags = NULL;
}

static void peer_refresh(rctx *r)
{
    char host[sizeof r->host];
    int port = 0;
    if (r->peer < 2 && peer_from_fd(r->fd, host, sizeof host, &port) == 0) {
        memcpy(r->host, host, sizeof host);
        r->port = port;
        r->peer = 2;
        peer_changed(r);
    }
}

static void rctx_free(rctx *r)
{
    if (r == NULL)
        return;
    dds_tagset_unref(r->tags);
    free(r->q);
    free(r);
}

static rctx *rctx_new(const void *key, int fd)
{
    rctx *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->key = key;
    r->fd = fd;
    r->db = -1;
    peer_refresh(r);
    return r;
}

/* Take all of r's pending spans (the caller finishes them outside the lock). */
static pending *rctx_take_pending(rctx *r, unsigned *n)
{
    pending *out = NULL;
    *n = 0;
    if (r->qlen) {
        out = malloc(r->qlen * sizeof *out);
        if (out) {
            for (unsigned i = 0; i < r->qlen; i++)
                out[i] = r->q[(r->qhead + i) % r->qcap];
            *n = r->qlen;
        }
        /* Without memory the spans are lost with their traces: nothing to
         * finish them with. */
    }
    __atomic_sub_fetch(&n_pending, (long)(r->qlen + r->untracked), __ATOMIC_RELAXED);
    r->qhead = r->qlen = 0;
    r->untracked = 0;
    return out;
}

static int fifo_push(rctx *r, dds_span *s, int select_db)
{
    if (r->qlen == r->qcap) {
        unsigned ncap = r->qcap ? r->qcap * 2 : 8;
        if (ncap > FIFO_CAP)
            ncap = FIFO_CAP;
        if (ncap <= r->qlen)
            return -1;
        pending *nq = malloc(ncap * sizeof *nq);
        if (nq == NULL)
            return -1;
        for (unsigned i = 0; i < r->qlen; i++)
            nq[i] = r->q[(r->qhead + i) % r->qcap];
        free(r->q);
        r->q = nq;
        r->qcap = ncap;
        r->qhead = 0;
    }
    r->q[(r->qhead + r->qlen) % r->qcap] = (pending){s, select_db};
    r->qlen++;
    __atomic_add_fetch(&n_pending, 1, __ATOMIC_RELAXED);
    return 0;
}

/* The oldest pending command got its reply: 1 with *out set, 0 when it was an
 * untracked one, -1 when nothing was pending. */
static int fifo_pop(rctx *r, pending *out)
{
    if (r->qlen) {
        *out = r->q[r->qhead];
        r->qhead = (r->qhead + 1) % r->qcap;
        r->qlen--;
        __atomic_sub_fetch(&n_pending, 1, __ATOMIC_RELAXED);
        return 1;
    }
    if (r->untracked) {
        r->untracked--;
        __atomic_sub_fetch(&n_pending, 1, __ATOMIC_RELAXED);
        return 0;
    }
    return -1;
}

static void untracked_add(rctx *r, unsigned long n)
{
    r->untracked += n;
    __atomic_add_fetch(&n_pending, (long)n, __ATOMIC_RELAXED);
}

/* The context's state, created if missing; called and returns with map_mu
 * held (it may drop it to build a new entry). */
static rctx *ctx_get_locked(const void *key)
{
    rctx *r = map_find(key);
    if (r)
        return r;
    int fd = ctx_fd(key);
    dds_spin_unlock(&map_mu);
    pthread_once(&atfork_once, atfork_register);
    rctx *fresh = rctx_new(key, fd);
    if (fresh)
        dds_socket_ignore_fd(fd);
    dds_spin_lock(&map_mu);
    r = map_find(key);
    if (r == NULL && fresh) {
        map_insert(fresh);
        return fresh;
    }
    rctx_free(fresh);
    return r;
}

/* ---- spans --------------------------------------------------------------------- */

typedef struct peer_snap {
    char host[256];
    size_t hostlen;
    int port;
} peer_snap;

/* The peer as the span needs it: only the bytes of the name are copied (this
 * runs per command). */
static void snap(const rctx *r, peer_snap *p)
{
    size_t n = strnlen(r->host, sizeof p->host - 1);
    memcpy(p->host, r->host, n);
    p->host[n] = '\0';
    p->hostlen = n;
    p->port = r->port;
}

/* The tags every command of a connection gets, listed once: made into one
 * set (tagset.h), whose reference a span takes instead of the tags (the
 * writer copies their encoding), or, when the set cannot be made (out of
 * memory), set on the span one by one (conn_tags_each). */
typedef struct conn_tags {
    dds_tag meta[6];
    dds_tag_num num[2];
    int nmeta, nnum;
} conn_tags;

static void conn_tags_list(conn_tags *l, const char *host, size_t hostlen, int port)
{
    *l = (conn_tags){.meta = {{"db.system", "redis", 5},
                              {"component", "hiredis", 7},
                              {"span.kind", "client", 6}},
                     .num = {{"_dd.measured", 1}},
                     .nmeta = 3,
                     .nnum = 1};
    if (hostlen) {
        l->meta[l->nmeta++] = (dds_tag){"out.host", host, hostlen};
        l->meta[l->nmeta++] = (dds_tag){"peer.service", host, hostlen};
        l->meta[l->nmeta++] = (dds_tag){"_dd.peer.service.source", "out.host", 8};
    }
    if (port > 0)
        l->num[l->nnum++] = (dds_tag_num){"network.destination.port", port};
}

static dds_tagset *redis_tagset(const char *host, size_t hostlen, int port)
{
    conn_tags l;
    conn_tags_list(&l, host, hostlen, port);
    return dds_tagset_new(l.meta, l.nmeta, l.num, l.nnum);
}

/* r's tag set, made if missing; under map_mu. NULL when out of memory (the
 * spans then get the tags one by one: conn_tags_each). */
static dds_tagset *rctx_tags(rctx *r)
{
    if (r->tags == NULL)
        r->tags = redis_tagset(r->host, strnlen(r->host, sizeof r->host - 1), r->port);
    return r->tags;
}

/* A command as a hook has it: cmd is what op_begin needs (the head of a
 * RESP command: dds_redis_parse_head, unless whole), resp its bytes (NULL
 * for the argv form, whose cmd is always whole). */
typedef struct rcmd {
    dds_redis_cmd cmd;
    int whole;
    const char *resp;
    size_t len;
} rcmd;

/* Commands up to this size leave their resource and tags to the writer
 * (redis_finalize): the application thread only copies their bytes. A
 * longer one is parsed and tagged at once, as it always was. */
#define DEFER_CMD_MAX 2048

/* Deferred unless too long. A child may be the span its trace is sampled
 * on when it finishes: dds_span_finish_at runs its deferred work first, so
 * rules still see its resource and tags. */
static int want_defer(size_t len)
{
    return len <= DEFER_CMD_MAX;
}

/* Read a RESP buffer: only its head when the rest can wait for the writer.
 * Returns what dds_redis_parse(_head) returned. */
static long rcmd_parse(rcmd *rc, const char *buf, size_t len)
{
    rc->resp = buf;
    rc->len = len;
    rc->whole = !want_defer(len);
    return rc->whole ? dds_redis_parse(buf, len, &rc->cmd)
                     : dds_redis_parse_head(buf, len, &rc->cmd);
}

static void rcmd_argv(rcmd *rc, int argc, const char **argv, const size_t *argvlen)
{
    dds_redis_from_argv(&rc->cmd, argc, argv, argvlen);
    rc->whole = 1;
    rc->resp = NULL;
    rc->len = 0;
}

/* The deferred bytes: this head (unaligned: memcpy), then the command as
 * RESP. db is -1 until span_end writes the index the reply left. */
typedef struct dhead {
    int32_t db;
} dhead;

/* The connection's tags on the span itself: only when its tag set could not
 * be made (out of memory). Setting one a span already has changes nothing. */
static void conn_tags_each(dds_span *s, const peer_snap *p)
{
    conn_tags l;
    conn_tags_list(&l, p->host, p->hostlen, p->port);
    dds_span_put_tags(s, l.meta, l.nmeta, l.num, l.nnum);
}

/* The tags that depend on the command (span_begin, or the writer:
 * redis_finalize); the connection's come with its tag set. */
static void span_tags(dds_span *s, const dds_redis_cmd *cmd)
{
    char res[DDS_REDIS_RESOURCE_CAP];
    char raw[DDS_REDIS_RAW_CAP];
    if (dds_redis_resource(cmd, res, sizeof res))
        dds_span_set_resource(s, res);
    if (dds_redis_raw_command(cmd, raw, sizeof raw))
        dds_span_set_meta(s, "redis.raw_command", raw);
    dds_span_set_metric(s, "redis.args_length", (double)cmd->argc);
}

static void set_db(dds_span *s, int db)
{
    /* The index as decimal, without snprintf (this runs per command). */
    char buf[16];
    char *p = buf + sizeof buf;
    unsigned v = (unsigned)db;
    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    size_t n = (size_t)(buf + sizeof buf - p);
    dds_span_set_meta_n(s, "out.redis_db", p, n);
    dds_span_set_meta_n(s, "db.redis.database_index", p, n);
}

/* On the writer (dds_trace_finalize), or on the application thread when
 * the span's end has more to add (run_deferred). */
static void redis_finalize(dds_span *s, const void *data, size_t len)
{
    dhead h;
    dds_redis_desc d;
    if (len < sizeof h)
        return;
    memcpy(&h, data, sizeof h);
    /* What span_tags sets, from the description (the same calls with the
     * same values), which repeated commands find cached. */
    dds_redis_describe((const char *)data + sizeof h, len - sizeof h, &d);
    if (d.has_res)
        dds_span_set_resource_n(s, d.res, d.res_len);
    if (d.has_raw)
        dds_span_set_meta_n(s, "redis.raw_command", d.raw, d.raw_len);
    dds_span_set_metric(s, "redis.args_length", (double)d.argc);
    if (h.db >= 0)
        set_db(s, h.db);
}

/* A RESP count line ("*3\r\n", "$5\r\n") at w, without snprintf (this runs
 * per argument). Returns its end. */
static char *put_count(char *w, char kind, size_t v)
{
    char num[24], *q = num + sizeof num;
    do
        *--q = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    *w++ = kind;
    memcpy(w, q, (size_t)(num + sizeof num - q));
    w += num + sizeof num - q;
    *w++ = '\r';
    *w++ = '\n';
    return w;
}

/* Leave the tags to the writer: 0, or -1 (then the caller sets them). */
static int defer_tags(dds_span *s, const rcmd *rc)
{
    char blob[sizeof(dhead) + DEFER_CMD_MAX];
    dhead h = {-1};
    size_t n = sizeof h;
    memcpy(blob, &h, sizeof h);
    if (rc->resp) {
        if (rc->len > DEFER_CMD_MAX)
            return -1;
        memcpy(blob + n, rc->resp, rc->len);
        n += rc->len;
    } else {
        /* The argv form, as RESP: the writer has one parser. */
        const dds_redis_cmd *c = &rc->cmd;
        char *w = blob + n;
        char *end = w + DEFER_CMD_MAX;
        if (c->argc != c->nargs)
            return -1;
        w = put_count(w, '*', (size_t)c->nargs);
        for (int i = 0; i < c->nargs; i++) {
            size_t al = c->arg[i].len;
            if (al + 26 > (size_t)(end - w))
                return -1;
            w = put_count(w, '$', al);
            memcpy(w, c->arg[i].p, al);
            w += al;
            *w++ = '\r';
            *w++ = '\n';
        }
        n = (size_t)(w - blob);
    }
    return dds_span_defer(s, redis_finalize, blob, n);
}

/* A command sent while a non-blocking connect was still in progress had no
 * peer yet; by its reply the socket knows it. Under map_mu, with the span
 * popped (this thread's): r's tag set, with a reference, when the span
 * should have it instead of its own (which had no peer); else NULL. */
static dds_tagset *late_peer_tags(rctx *r, const dds_span *s, peer_snap *p)
{
    p->hostlen = 0;
    if (s == NULL || r->host[0] == '\0' || (r->tags && s->tagset == r->tags))
        return NULL;
    if (dds_span_get_meta(s, "out.host") != NULL)
        return NULL;
    dds_tagset *ts = rctx_tags(r);
    if (ts == NULL) {
        snap(r, p); /* no set (out of memory): the peer's tags one by one */
        return NULL;
    }
    dds_tagset_ref(ts);
    return ts;
}

/* Out of the lock: the span gets what late_peer_tags chose. */
static void set_late_peer(dds_span *s, dds_tagset *ts, const peer_snap *p)
{
    if (ts)
        dds_span_take_tagset(s, ts);
    else if (p->hostlen)
        conn_tags_each(s, p);
}

/* ts: the connection's tag set, with a reference for the span; NULL when
 * there is none (out of memory): then the tags of p one by one. */
static dds_span *span_begin(const rcmd *rc, dds_tagset *ts, const peer_snap *p)
{
    dds_span *s = dds_span_start("redis.command", "redis", dds_active_span(), NULL);
    if (s == NULL) {
        dds_tagset_unref(ts);
        return NULL;
    }
    if (ts)
        dds_span_take_tagset(s, ts);
    else
        conn_tags_each(s, p);
    if ((rc->resp == NULL || want_defer(rc->len)) && defer_tags(s, rc) == 0)
        return s;
    if (rc->whole) {
        span_tags(s, &rc->cmd);
    } else {
        dds_redis_cmd full;
        dds_redis_parse(rc->resp, rc->len, &full);
        span_tags(s, &full);
    }
    return s;
}

/* End a command's span: reply (may be NULL), or err when the command failed
 * without one; db is the context's database index at that point. */
static void span_end(dds_span *s, const void *reply, const char *err, int db)
{
    char buf[512];
    if (s == NULL)
        return;
    int failed = reply ? reply_is_error(reply) : err != NULL;
    char *d = dds_span_deferred_data(s);
    if (d) {
        if (!failed) {
            /* The usual end: the index goes with the deferred bytes. */
            int32_t i = db;
            memcpy(d + offsetof(dhead, db), &i, sizeof i);
            dds_span_finish(s);
            return;
        }
        dds_span_run_deferred(s); /* error.message comes after the command's tags */
    }
    if (reply && failed)
        dds_span_set_error(s, reply_error_text(reply, buf, sizeof buf));
    else if (reply == NULL && err)
        dds_span_set_error(s, err);
    if (db >= 0)
        set_db(s, db);
    dds_span_finish(s);
}

static void finish_all(pending *p, unsigned n, const char *err, int db)
{
    for (unsigned i = 0; i < n; i++)
        span_end(p[i].span, NULL, err, db);
    free(p);
}

/* ---- the command being sent ---------------------------------------------------- */

static void free_formatted(char *buf)
{
    /* 1.x allocates through its replaceable allocator: give it back the same way. */
    DDS_REAL_IN(redisFreeCommand, hiredis_libs);
    if (real_redisFreeCommand)
        real_redisFreeCommand(buf);
    else
        free(buf);
}

enum { M_FIFO, M_UNTRACKED, M_DIRECT };

/* op.r, the state op_begin found for the command's context, is still that
 * context's when the call returns, and may be read and written without
 * map_mu: an entry leaves the map (and is freed) only in a call on its own
 * context (redisFree, redisReconnect, a connect that returns the same
 * address), which hiredis does not allow at the same time as a command on
 * it, and in the fork child's handler, which frees nothing. Other threads
 * only walk past it in its bucket (its key and next, which this path never
 * touches). The map's shape needs the lock; a context's fields belong to
 * the thread using the context, like the context itself. So the calls that
 * follow an append (op_appended, command_done) take no lock in the usual
 * case: one lock pair per command instead of two. */
typedef struct op {
    dds_span *span;
    rctx *r;        /* the context's state (op_begin found or made it), or NULL */
    int mode;
    int select_db;
    int db;         /* the context's database index when the command was sent */
    long ncmds;     /* commands in one formatted buffer (redisAppendFormattedCommand) */
} op;

/* Read the command a printf-style format makes, with hiredis's own
 * formatter on a copy of ap (only its head when the rest can wait for the
 * writer: hiredis's output is well-formed). Returns the formatted buffer
 * (rc points into it; release it with free_formatted once the span is
 * started), or NULL. */
static char *format_cmd_len(rcmd *rc, const char *format, va_list ap, size_t *lenp)
{
    DDS_REAL_IN(redisvFormatCommand, hiredis_libs);
    char *buf = NULL;
    va_list cp;
    if (real_redisvFormatCommand == NULL || format == NULL)
        return NULL;
    va_copy(cp, ap);
    int len = real_redisvFormatCommand(&buf, format, cp);
    va_end(cp);
    if (len <= 0 || buf == NULL)
        return NULL;
    if (rcmd_parse(rc, buf, (size_t)len) <= 0) {
        free_formatted(buf);
        return NULL;
    }
    *lenp = (size_t)len;
    return buf;
}

static char *format_cmd(rcmd *rc, const char *format, va_list ap)
{
    size_t len;
    return format_cmd_len(rc, format, ap, &len);
}

/* The command the hook already formatted, sent as hiredis itself would: for
 * a format that formats, redisvAppendCommand is redisAppendFormattedCommand
 * of that buffer, and redisvCommand is that plus, on a blocking context,
 * redisGetReply (hiredis 0.14 and 1.x alike). Formatting once instead of
 * twice was the largest part of what tracing added to a blocking command. */
static int have_formatted_calls(void)
{
    DDS_REAL_IN(redisAppendFormattedCommand, hiredis_libs);
    DDS_REAL_IN(redisGetReply, hiredis_libs);
    return real_redisAppendFormattedCommand != NULL && real_redisGetReply != NULL;
}

typedef struct fmtbuf {
    const char *cmd;
    size_t len;
} fmtbuf;

/* Decide how the command is traced and start its span (map lock not held on
 * return). */
static void op_begin(const void *c, const rcmd *rc, int async, op *o)
{
    const dds_redis_cmd *cmd = &rc->cmd;
    peer_snap p;
    int pubsub = dds_redis_is_pubsub(cmd);
    o->span = NULL;
    o->db = -1;
    o->select_db = dds_redis_select_db(cmd);
    dds_spin_lock(&map_mu);
    rctx *r = ctx_get_locked(c);
    o->r = r;
    if (r == NULL) {
        dds_spin_unlock(&map_mu);
        o->mode = M_UNTRACKED;
        o->ncmds = 0;
        return;
    }
    peer_refresh(r);
    if (r->direct || (async && pubsub))
        o->mode = M_DIRECT;
    else if (r->untracked || r->qlen >= FIFO_CAP)
        o->mode = M_UNTRACKED;
    else
        o->mode = M_FIFO;
    if (pubsub)
        r->direct = 1; /* this command still takes the FIFO; its first reply pops it */
    o->db = r->db;
    dds_tagset *ts = NULL;
    if (o->mode != M_UNTRACKED) {
        ts = rctx_tags(r);
        if (ts)
            dds_tagset_ref(ts); /* the span's */
        else
            snap(r, &p);
    }
    dds_spin_unlock(&map_mu);
    if (o->mode != M_UNTRACKED)
        o->span = span_begin(rc, ts, &p);
}

/* An append returned: queue the command for its reply, or end its span. */
static void op_appended(const void *c, op *o, int ok)
{
    char eb[160];
    const char *err = NULL;
    int db = o->db;
    dds_span *end = NULL;
    rctx *r = o->r;
    if (r)
        db = r->db;
    if (!ok) {
        end = o->span;
        err = ctx_errstr(c, eb, sizeof eb, "command not sent");
    } else if (r == NULL || o->mode == M_DIRECT) {
        end = o->span;
    } else if (o->mode == M_UNTRACKED || fifo_push(r, o->span, o->select_db) < 0) {
        untracked_add(r, o->ncmds > 0 ? (unsigned long)o->ncmds : 1);
        end = o->span;
    } else if (o->ncmds > 1) {
        untracked_add(r, (unsigned long)o->ncmds - 1);
    }
    if (end)
        span_end(end, NULL, err, db);
}

/* A reply came back (or the context failed: status REDIS_ERR). consumed: a
 * reply was taken off the connection. */
static void got_reply(const void *c, int status, int consumed, const void *reply)
{
    char eb[160];
    pending pop, *all = NULL;
    unsigned nall = 0;
    int popped = 0, db = -1;
    peer_snap late;
    dds_tagset *late_ts = NULL;
    dds_spin_lock(&map_mu);
    rctx *r = map_find(c);
    if (r == NULL) {
        dds_spin_unlock(&map_mu);
        return;
    }
    if (status == REDIS_OK && consumed) {
        popped = fifo_pop(r, &pop) > 0;
        if (popped && pop.select_db >= 0 && (reply == NULL || !reply_is_error(reply)))
            r->db = pop.select_db;
        if (popped && r->peer < 2)
            peer_refresh(r);
        if (popped)
            late_ts = late_peer_tags(r, pop.span, &late);
    } else if (status != REDIS_OK) {
        /* A blocking context that failed is dead: no pending command will
         * get its reply. */
        all = rctx_take_pending(r, &nall);
    }
    db = r->db;
    dds_spin_unlock(&map_mu);
    if (popped) {
        set_late_peer(pop.span, late_ts, &late);
        span_end(pop.span, reply, NULL, db);
    }
    if (all)
        finish_all(all, nall, ctx_errstr(c, eb, sizeof eb, "connection failed"), db);
}

/* ---- blocking commands ---------------------------------------------------------- */

/* redisCommand and friends: an append, then (blocking) the oldest reply. */
static void command_done(const void *c, op *o, const void *reply)
{
    char eb[160];
    int blocking = ctx_flags(c) & REDIS_BLOCK;
    if (reply == NULL && ctx_err(c) == 0 && !blocking) {
        op_appended(c, o, 1); /* non-blocking: only appended */
        return;
    }
    if (reply == NULL) {
        /* Failed: the context is dead, every pending command with it. */
        const char *err = ctx_errstr(c, eb, sizeof eb, "connection failed");
        got_reply(c, REDIS_ERR, 0, NULL);
        int db = o->db;
        dds_spin_lock(&map_mu);
        rctx *r = map_find(c);
        if (r)
            db = r->db;
        dds_spin_unlock(&map_mu);
        span_end(o->span, NULL, err, db);
        return;
    }
    int db = o->db;
    rctx *r = o->r;
    int earlier = r && (r->qlen || r->untracked);
    if (r && !earlier) {
        /* The usual case, settled without a lock (see op): the reply is ours. */
        if (o->select_db >= 0 && !reply_is_error(reply))
            r->db = o->select_db;
        db = r->db;
    }
    if (earlier && o->mode != M_DIRECT) {
        /* The reply is an earlier append's; ours is now pending. */
        got_reply(c, REDIS_OK, 1, reply);
        op_appended(c, o, 1);
        return;
    }
    if (earlier) {
        got_reply(c, REDIS_OK, 1, reply);
        dds_spin_lock(&map_mu);
        r = map_find(c);
        if (r)
            db = r->db;
        dds_spin_unlock(&map_mu);
    }
    span_end(o->span, earlier ? NULL : reply, NULL, db);
}

static void *traced_command(redisContext *c, const rcmd *cmd, char *fmt,
                            void *(*call)(redisContext *, void *), void *arg)
{
    op o = {.ncmds = 1};
    op_begin(c, cmd, 0, &o);
    if (fmt)
        free_formatted(fmt);
    depth++;
    void *reply = call(c, arg);
    depth--;
    int e = errno;
    command_done(c, &o, reply);
    errno = e;
    return reply;
}

typedef struct vargs {
    const char *format;
    va_list *ap;
} vargs;

static void *call_vcommand(redisContext *c, void *arg)
{
    DDS_REAL_IN(redisvCommand, hiredis_libs);
    vargs *v = arg;
    return real_redisvCommand(c, v->format, *v->ap);
}

static void *call_formatted_command(redisContext *c, void *arg)
{
    DDS_REAL_IN(redisAppendFormattedCommand, hiredis_libs);
    DDS_REAL_IN(redisGetReply, hiredis_libs);
    fmtbuf *f = arg;
    void *reply = NULL;
    if (real_redisAppendFormattedCommand(c, f->cmd, f->len) != REDIS_OK)
        return NULL;
    if (!(ctx_flags(c) & REDIS_BLOCK) || real_redisGetReply(c, &reply) != REDIS_OK)
        return NULL;
    return reply;
}

static void *vcommand(redisContext *c, const char *format, va_list ap)
{
    DDS_REAL_IN(redisvCommand, hiredis_libs);
    if (UNLIKELY(real_redisvCommand == NULL)) {
        errno = ENOSYS;
        return NULL;
    }
    if (!want() || c == NULL || !ctx_plausible(c))
        return real_redisvCommand(c, format, ap);
    rcmd cmd;
    size_t flen = 0;
    char *fmt = format_cmd_len(&cmd, format, ap, &flen);
    if (fmt == NULL)
        return real_redisvCommand(c, format, ap);
    if (have_formatted_calls()) {
        fmtbuf f = {fmt, flen};
        void *r = traced_command(c, &cmd, NULL, call_formatted_command, &f);
        int e = errno;
        free_formatted(fmt);
        errno = e;
        return r;
    }
    va_list cp;
    va_copy(cp, ap);
    vargs v = {format, &cp};
    void *r = traced_command(c, &cmd, fmt, call_vcommand, &v);
    va_end(cp);
    return r;
}

DDS_EXPORT void *redisvCommand(redisContext *c, const char *format, va_list ap)
{
    return vcommand(c, format, ap);
}

DDS_EXPORT void *redisCommand(redisContext *c, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    void *r = vcommand(c, format, ap);
    va_end(ap);
    return r;
}

typedef struct argvargs {
    int argc;
    const char **argv;
    const size_t *argvlen;
} argvargs;

static void *call_command_argv(redisContext *c, void *arg)
{
    DDS_REAL_IN(redisCommandArgv, hiredis_libs);
    argvargs *a = arg;
    return real_redisCommandArgv(c, a->argc, a->argv, a->argvlen);
}

DDS_EXPORT void *redisCommandArgv(redisContext *c, int argc, const char **argv,
                                  const size_t *argvlen)
{
    DDS_REAL_IN(redisCommandArgv, hiredis_libs);
    if (UNLIKELY(real_redisCommandArgv == NULL)) {
        errno = ENOSYS;
        return NULL;
    }
    if (!want() || c == NULL || argc <= 0 || argv == NULL || !ctx_plausible(c))
        return real_redisCommandArgv(c, argc, argv, argvlen);
    rcmd cmd;
    rcmd_argv(&cmd, argc, argv, argvlen);
    argvargs a = {argc, argv, argvlen};
    return traced_command(c, &cmd, NULL, call_command_argv, &a);
}

/* ---- pipelines: append, then redisGetReply ---------------------------------------- */

static int vappend(redisContext *c, const char *format, va_list ap)
{
    DDS_REAL_IN(redisvAppendCommand, hiredis_libs);
    if (UNLIKELY(real_redisvAppendCommand == NULL)) {
        errno = ENOSYS;
        return REDIS_ERR;
    }
    if (!want() || c == NULL || !ctx_plausible(c))
        return real_redisvAppendCommand(c, format, ap);
    rcmd cmd;
    size_t flen = 0;
    char *fmt = format_cmd_len(&cmd, format, ap, &flen);
    if (fmt == NULL)
        return real_redisvAppendCommand(c, format, ap);
    op o = {.ncmds = 1};
    op_begin(c, &cmd, 0, &o);
    int r;
    depth++;
    if (have_formatted_calls()) {
        DDS_REAL_IN(redisAppendFormattedCommand, hiredis_libs);
        r = real_redisAppendFormattedCommand(c, fmt, flen); /* formatted once (see above) */
    } else {
        r = real_redisvAppendCommand(c, format, ap);
    }
    depth--;
    int e = errno;
    free_formatted(fmt);
    op_appended(c, &o, r == REDIS_OK);
    errno = e;
    return r;
}

DDS_EXPORT int redisvAppendCommand(redisContext *c, const char *format, va_list ap)
{
    return vappend(c, format, ap);
}

DDS_EXPORT int redisAppendCommand(redisContext *c, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int r = vappend(c, format, ap);
    va_end(ap);
    return r;
}

DDS_EXPORT int redisAppendCommandArgv(redisContext *c, int argc, const char **argv,
                                      const size_t *argvlen)
{
    DDS_REAL_IN(redisAppendCommandArgv, hiredis_libs);
    if (UNLIKELY(real_redisAppendCommandArgv == NULL)) {
        errno = ENOSYS;
        return REDIS_ERR;
    }
    if (!want() || c == NULL || argc <= 0 || argv == NULL || !ctx_plausible(c))
        return real_redisAppendCommandArgv(c, argc, argv, argvlen);
    rcmd cmd;
    rcmd_argv(&cmd, argc, argv, argvlen);
    op o = {.ncmds = 1};
    op_begin(c, &cmd, 0, &o);
    depth++;
    int r = real_redisAppendCommandArgv(c, argc, argv, argvlen);
    depth--;
    int e = errno;
    op_appended(c, &o, r == REDIS_OK);
    errno = e;
    return r;
}

/* A buffer the program formatted itself may hold several commands: the first
 * is traced, the others only counted so that the replies still line up. */
DDS_EXPORT int redisAppendFormattedCommand(redisContext *c, const char *cmdbuf, size_t len)
{
    DDS_REAL_IN(redisAppendFormattedCommand, hiredis_libs);
    if (UNLIKELY(real_redisAppendFormattedCommand == NULL)) {
        errno = ENOSYS;
        return REDIS_ERR;
    }
    if (!want() || c == NULL || cmdbuf == NULL || !ctx_plausible(c))
        return real_redisAppendFormattedCommand(c, cmdbuf, len);
    rcmd cmd;
    dds_redis_cmd more;
    long used = dds_redis_parse(cmdbuf, len, &cmd.cmd);
    cmd.whole = 1;
    cmd.resp = cmdbuf; /* its first command: the one traced */
    cmd.len = used > 0 ? (size_t)used : 0;
    long n = used > 0 ? 1 : 0;
    for (size_t off = used > 0 ? (size_t)used : len; off < len && n < (1L << 30); n++) {
        long k = dds_redis_parse(cmdbuf + off, len - off, &more);
        if (k <= 0)
            break;
        off += (size_t)k;
    }
    if (n == 0) {
        /* Not commands ddshim can read: the replies cannot be matched any
         * more, so this context's spans end when their commands are sent. */
        dds_spin_lock(&map_mu);
        rctx *r = ctx_get_locked(c);
        if (r)
            r->direct = 1;
        dds_spin_unlock(&map_mu);
        return real_redisAppendFormattedCommand(c, cmdbuf, len);
    }
    op o = {.ncmds = n};
    op_begin(c, &cmd, 0, &o);
    depth++;
    int r = real_redisAppendFormattedCommand(c, cmdbuf, len);
    depth--;
    int e = errno;
    op_appended(c, &o, r == REDIS_OK);
    errno = e;
    return r;
}

DDS_EXPORT int redisGetReply(redisContext *c, void **reply)
{
    DDS_REAL_IN(redisGetReply, hiredis_libs);
    if (UNLIKELY(real_redisGetReply == NULL)) {
        errno = ENOSYS;
        return REDIS_ERR;
    }
    if (LIKELY(__atomic_load_n(&n_pending, __ATOMIC_RELAXED) == 0) || c == NULL || !want())
        return real_redisGetReply(c, reply);
    depth++;
    int r = real_redisGetReply(c, reply);
    depth--;
    int e = errno;
    void *got = reply ? *reply : NULL;
    /* Without the caller's pointer hiredis frees the reply itself; in a
     * blocking context a reply was still consumed. */
    int consumed = got != NULL || (reply == NULL && (ctx_flags(c) & REDIS_BLOCK));
    got_reply(c, r, consumed, r == REDIS_OK ? got : NULL);
    errno = e;
    return r;
}

/* ---- asynchronous commands -------------------------------------------------------- */

typedef struct awrap {
    redisCallbackFn *fn;
    void *privdata;
    dds_span *span;
    int select_db;
    int db;   /* as sent, for when the context is gone by the reply */
    pid_t pid;
} awrap;

static void trampoline(redisAsyncContext *ac, void *reply, void *priv)
{
    awrap *w = priv;
    redisCallbackFn *fn = w->fn;
    void *pd = w->privdata;
    if (w->span && w->pid == dds_pid) {
        char eb[160];
        int e = errno;
        int db = w->db;
        peer_snap late;
        late.hostlen = 0;
        dds_tagset *late_ts = NULL;
        dds_spin_lock(&map_mu);
        rctx *r = map_find(ac);
        if (r) {
            if (reply && w->select_db >= 0 && !reply_is_error(reply))
                r->db = w->select_db;
            db = r->db;
            if (r->peer < 2)
                peer_refresh(r);
            late_ts = late_peer_tags(r, w->span, &late);
        }
        dds_spin_unlock(&map_mu);
        set_late_peer(w->span, late_ts, &late);
        span_end(w->span, reply,
                 reply ? NULL : ctx_errstr(ac, eb, sizeof eb, "connection closed before the reply"),
                 db);
        errno = e;
    }
    free(w);
    if (fn)
        fn(ac, reply, pd);
}

typedef int (*async_call)(redisAsyncContext *ac, redisCallbackFn *fn, void *pd, void *arg);

static int traced_async(redisAsyncContext *ac, const rcmd *cmd, char *fmt,
                        redisCallbackFn *fn, void *pd, async_call call, void *arg)
{
    op o = {.ncmds = 1};
    op_begin(ac, cmd, 1, &o);
    if (fmt)
        free_formatted(fmt);
    awrap *w = NULL;
    if (o.span && o.mode != M_DIRECT) {
        w = malloc(sizeof *w);
        if (w)
            *w = (awrap){fn, pd, o.span, o.select_db, o.db, dds_pid};
    }
    depth++;
    int r = w ? call(ac, trampoline, w, arg) : call(ac, fn, pd, arg);
    depth--;
    int e = errno;
    if (w == NULL || r != REDIS_OK) {
        /* Queued without a wrapper (its span ends now), or refused (hiredis
         * will never call back: the wrapper is ours to free). */
        char eb[160];
        free(w);
        int db = o.db;
        dds_spin_lock(&map_mu);
        rctx *rc = map_find(ac);
        if (rc)
            db = rc->db;
        dds_spin_unlock(&map_mu);
        span_end(o.span, NULL,
                 r == REDIS_OK ? NULL : ctx_errstr(ac, eb, sizeof eb, "command not accepted"), db);
    }
    errno = e;
    return r;
}

typedef struct avargs {
    const char *format;
    va_list *ap;
} avargs;

static int call_vasync(redisAsyncContext *ac, redisCallbackFn *fn, void *pd, void *arg)
{
    DDS_REAL_IN(redisvAsyncCommand, hiredis_libs);
    avargs *v = arg;
    return real_redisvAsyncCommand(ac, fn, pd, v->format, *v->ap);
}

static int vasync(redisAsyncContext *ac, redisCallbackFn *fn, void *pd, const char *format,
                  va_list ap)
{
    DDS_REAL_IN(redisvAsyncCommand, hiredis_libs);
    if (UNLIKELY(real_redisvAsyncCommand == NULL)) {
        errno = ENOSYS;
        return REDIS_ERR;
    }
    if (!want() || ac == NULL || !ctx_plausible(ac))
        return real_redisvAsyncCommand(ac, fn, pd, format, ap);
    rcmd cmd;
    char *fmt = format_cmd(&cmd, format, ap);
    if (fmt == NULL)
        return real_redisvAsyncCommand(ac, fn, pd, format, ap);
    va_list cp;
    va_copy(cp, ap);
    avargs v = {format, &cp};
    int r = traced_async(ac, &cmd, fmt, fn, pd, call_vasync, &v);
    va_end(cp);
    return r;
}

DDS_EXPORT int redisvAsyncCommand(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata,
                                  const char *format, va_list ap)
{
    return vasync(ac, fn, privdata, format, ap);
}

DDS_EXPORT int redisAsyncCommand(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata,
                                 const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int r = vasync(ac, fn, privdata, format, ap);
    va_end(ap);
    return r;
}

static int call_async_argv(redisAsyncContext *ac, redisCallbackFn *fn, void *pd, void *arg)
{
    DDS_REAL_IN(redisAsyncCommandArgv, hiredis_libs);
    argvargs *a = arg;
    return real_redisAsyncCommandArgv(ac, fn, pd, a->argc, a->argv, a->argvlen);
}

DDS_EXPORT int redisAsyncCommandArgv(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata,
                                     int argc, const char **argv, const size_t *argvlen)
{
    DDS_REAL_IN(redisAsyncCommandArgv, hiredis_libs);
    if (UNLIKELY(real_redisAsyncCommandArgv == NULL)) {
        errno = ENOSYS;
        return REDIS_ERR;
    }
    if (!want() || ac == NULL || argc <= 0 || argv == NULL || !ctx_plausible(ac))
        return real_redisAsyncCommandArgv(ac, fn, privdata, argc, argv, argvlen);
    rcmd cmd;
    rcmd_argv(&cmd, argc, argv, argvlen);
    argvargs a = {argc, argv, argvlen};
    return traced_async(ac, &cmd, NULL, fn, privdata, call_async_argv, &a);
}

typedef struct fmtargs {
    const char *cmd;
    size_t len;
} fmtargs;

static int call_async_formatted(redisAsyncContext *ac, redisCallbackFn *fn, void *pd, void *arg)
{
    DDS_REAL_IN(redisAsyncFormattedCommand, hiredis_libs);
    fmtargs *f = arg;
    return real_redisAsyncFormattedCommand(ac, fn, pd, f->cmd, f->len);
}

DDS_EXPORT int redisAsyncFormattedCommand(redisAsyncContext *ac, redisCallbackFn *fn,
                                          void *privdata, const char *cmdbuf, size_t len)
{
    DDS_REAL_IN(redisAsyncFormattedCommand, hiredis_libs);
    if (UNLIKELY(real_redisAsyncFormattedCommand == NULL)) {
        errno = ENOSYS;
        return REDIS_ERR;
    }
    rcmd cmd;
    long used;
    if (!want() || ac == NULL || cmdbuf == NULL || !ctx_plausible(ac) ||
        (used = dds_redis_parse(cmdbuf, len, &cmd.cmd)) <= 0)
        return real_redisAsyncFormattedCommand(ac, fn, privdata, cmdbuf, len);
    cmd.whole = 1;
    cmd.resp = cmdbuf;
    cmd.len = (size_t)used;
    fmtargs f = {cmdbuf, len};
    return traced_async(ac, &cmd, NULL, fn, privdata, call_async_formatted, &f);
}

/* ---- connections ------------------------------------------------------------------ */

/* A context was (re)connected: its fd is Redis (never HTTP), its peer and
 * database start afresh. host/port: the connect arguments (NULL when there
 * are none), used until getpeername() can answer (non-blocking connects). */
static void connected(const void *c, const char *host, int port)
{
    if (c == NULL || !ctx_plausible(c))
        return;
    int fd = ctx_fd(c);
    pthread_once(&atfork_once, atfork_register);
    rctx *fresh = NULL;
    if (ctx_err(c) == 0 && fd >= 0) {
        fresh = rctx_new(c, fd);
        if (fresh) {
            fresh->db = 0; /* a new connection starts on database 0 */
            if (fresh->peer < 2 && host && host[0]) {
                snprintf(fresh->host, sizeof fresh->host, "%s", host);
                fresh->port = port > 0 ? port : 0;
                fresh->peer = 1;
                peer_changed(fresh);
            }
        }
        dds_socket_ignore_fd(fd);
    }
    dds_spin_lock(&map_mu);
    rctx *old = map_unlink(c);
    if (old && fresh && fresh->peer == 0 && old->peer) {
        memcpy(fresh->host, old->host, sizeof fresh->host);
        fresh->port = old->port;
        fresh->peer = 1;
        peer_changed(fresh);
    }
    if (fresh)
        map_insert(fresh);
    unsigned n = 0;
    pending *p = old ? rctx_take_pending(old, &n) : NULL;
    dds_spin_unlock(&map_mu);
    if (old) {
        finish_all(p, n, NULL, old->db);
        rctx_free(old);
    }
}

#define CONNECT_BODY(fn, host, port, ...)                                         \
    DDS_REAL_IN(fn, hiredis_libs);                                                \
    if (UNLIKELY(real_##fn == NULL)) {                                            \
        errno = ENOSYS;                                                           \
        return NULL;                                                              \
    }                                                                             \
    if (!want())                                                          \
        return real_##fn(__VA_ARGS__);                                            \
    depth++;                                                                      \
    __typeof__(real_##fn(__VA_ARGS__)) c_ = real_##fn(__VA_ARGS__);               \
    depth--;                                                                      \
    int e_ = errno;                                                               \
    connected(c_, host, port);                                                    \
    errno = e_;                                                                   \
    return c_

DDS_EXPORT redisContext *redisConnect(const char *ip, int port)
{
    CONNECT_BODY(redisConnect, ip, port, ip, port);
}

DDS_EXPORT redisContext *redisConnectWithTimeout(const char *ip, int port, const struct timeval tv)
{
    CONNECT_BODY(redisConnectWithTimeout, ip, port, ip, port, tv);
}

DDS_EXPORT redisContext *redisConnectNonBlock(const char *ip, int port)
{
    CONNECT_BODY(redisConnectNonBlock, ip, port, ip, port);
}

DDS_EXPORT redisContext *redisConnectBindNonBlock(const char *ip, int port, const char *source_addr)
{
    CONNECT_BODY(redisConnectBindNonBlock, ip, port, ip, port, source_addr);
}

DDS_EXPORT redisContext *redisConnectBindNonBlockWithReuse(const char *ip, int port,
                                                           const char *source_addr)
{
    CONNECT_BODY(redisConnectBindNonBlockWithReuse, ip, port, ip, port, source_addr);
}

DDS_EXPORT redisContext *redisConnectUnix(const char *path)
{
    CONNECT_BODY(redisConnectUnix, path, 0, path);
}

DDS_EXPORT redisContext *redisConnectUnixWithTimeout(const char *path, const struct timeval tv)
{
    CONNECT_BODY(redisConnectUnixWithTimeout, path, 0, path, tv);
}

DDS_EXPORT redisContext *redisConnectUnixNonBlock(const char *path)
{
    CONNECT_BODY(redisConnectUnixNonBlock, path, 0, path);
}

DDS_EXPORT redisContext *redisConnectFd(int fd)
{
    CONNECT_BODY(redisConnectFd, NULL, 0, fd);
}

/* hiredis 1.x only; on 0.14 nothing calls it. */
DDS_EXPORT redisContext *redisConnectWithOptions(const redisOptions *options)
{
    CONNECT_BODY(redisConnectWithOptions, NULL, 0, options);
}

DDS_EXPORT redisAsyncContext *redisAsyncConnect(const char *ip, int port)
{
    CONNECT_BODY(redisAsyncConnect, ip, port, ip, port);
}

DDS_EXPORT redisAsyncContext *redisAsyncConnectBind(const char *ip, int port,
                                                    const char *source_addr)
{
    CONNECT_BODY(redisAsyncConnectBind, ip, port, ip, port, source_addr);
}

DDS_EXPORT redisAsyncContext *redisAsyncConnectBindWithReuse(const char *ip, int port,
                                                             const char *source_addr)
{
    CONNECT_BODY(redisAsyncConnectBindWithReuse, ip, port, ip, port, source_addr);
}

DDS_EXPORT redisAsyncContext *redisAsyncConnectUnix(const char *path)
{
    CONNECT_BODY(redisAsyncConnectUnix, path, 0, path);
}

/* hiredis 1.x only. */
DDS_EXPORT redisAsyncContext *redisAsyncConnectWithOptions(const redisOptions *options)
{
    CONNECT_BODY(redisAsyncConnectWithOptions, NULL, 0, options);
}

/* The same context on a new socket: replies to what was pending are gone. */
DDS_EXPORT int redisReconnect(redisContext *c)
{
    DDS_REAL_IN(redisReconnect, hiredis_libs);
    if (UNLIKELY(real_redisReconnect == NULL)) {
        errno = ENOSYS;
        return REDIS_ERR;
    }
    if (!want() || c == NULL)
        return real_redisReconnect(c);
    depth++;
    int r = real_redisReconnect(c);
    depth--;
    int e = errno;
    connected(c, NULL, 0);
    errno = e;
    return r;
}

/* ---- the end of a context ------------------------------------------------------------ */

/* Drop c's state before hiredis frees it (afterwards the address may already
 * belong to a new context). Commands still waiting for a reply end now. */
static void forget(const void *c)
{
    if (LIKELY(__atomic_load_n(&n_ctx, __ATOMIC_RELAXED) == 0) || c == NULL)
        return;
    int e = errno;
    dds_spin_lock(&map_mu);
    rctx *r = map_unlink(c);
    unsigned n = 0;
    pending *p = r ? rctx_take_pending(r, &n) : NULL;
    dds_spin_unlock(&map_mu);
    if (r) {
        finish_all(p, n, NULL, r->db);
        rctx_free(r);
    }
    errno = e;
}

DDS_EXPORT void redisFree(redisContext *c)
{
    DDS_REAL_IN(redisFree, hiredis_libs);
    forget(c);
    if (LIKELY(real_redisFree != NULL))
        real_redisFree(c);
}

DDS_EXPORT int redisFreeKeepFd(redisContext *c)
{
    DDS_REAL_IN(redisFreeKeepFd, hiredis_libs);
    if (UNLIKELY(real_redisFreeKeepFd == NULL)) {
        errno = ENOSYS;
        return -1;
    }
    forget(c);
    return real_redisFreeKeepFd(c);
}

/* The pending callbacks run (with NULL replies: their spans end with an
 * error) inside hiredis's free, which then frees the context. */
DDS_EXPORT void redisAsyncFree(redisAsyncContext *ac)
{
    DDS_REAL_IN(redisAsyncFree, hiredis_libs);
    forget(ac);
    if (LIKELY(real_redisAsyncFree != NULL))
        real_redisAsyncFree(ac);
}
