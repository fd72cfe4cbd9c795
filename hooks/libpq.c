/*
 * libpq.c — PostgreSQL: one postgresql.query span per statement that a program
 * runs through libpq (psql, pgbench, psycopg2, any C service), with no change
 * to the program.
 *
 * The statement functions (PQexec, PQexecParams, PQprepare, PQexecPrepared,
 * PQdescribe*, their PQsend* forms) open a span; a synchronous call finishes it
 * when it returns, an asynchronous one when PQgetResult hands back the NULL that
 * ends the statement's results. Each connection keeps a FIFO of the statements
 * whose results are still to come, so pipeline mode (results in send order,
 * PGRES_PIPELINE_SYNC at each PQpipelineSync) and COPY (the span stays open
 * through the data transfer until the COPY's final result) come out right. The
 * resource is the statement obfuscated by core/sql.c; parameter values are
 * never read. PQexecPrepared gets the text its PQprepare had on that
 * connection.
 *
 * The application thread keeps only what cannot wait: timing, the statement
 * FIFO, row counts and errors, and a PQprepare's obfuscated text (its name
 * keeps it for EXECUTE). The tags and, for a statement of up to
 * PQ_DEFER_SQL_MAX bytes, the obfuscation are left to the writer thread
 * (dds_span_defer): a copy of the text. The tags that are the same for every
 * statement of a connection (db.system, component, span.kind, _dd.measured,
 * its database, user, host and port) are one shared tag set per connection
 * (core/tagset.h), made at its first statement once it is up: a span takes a
 * reference to it, and the writer copies its encoding.
 *
 * libpq calls its own exported functions through its PLT (PQexec calls
 * PQsendQuery and PQgetResult, PQconnectPoll calls PQgetResult, ...), and those
 * calls reach these hooks too: a per-thread depth counter makes every hook
 * called from inside another one a pure pass-through, so each statement gets
 * exactly one span. The connection's socket is handed to
 * dds_socket_ignore_fd() so that hooks/socket.c never reads it as HTTP.
 * PGconn and PGresult stay opaque: everything is read through libpq's getters,
 * resolved like the hooks (RTLD_NEXT, else libpq.so.5 already loaded
 * RTLD_LOCAL, as under Python).
 */
#define _GNU_SOURCE
#include <postgresql/libpq-fe.h>

#include "config.h"
#include "guard.h"
#include "log.h"
#include "span.h"
#include "sql.h"
#include "tagset.h"
#include "hooks/socket.h"
#include "preload/preload.h"
#include "preload/real.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bounds. Past the first two, a statement still gets a span, but one that
 * ends with its PQsend* call (its results cannot be followed). */
#define PQ_MAX_CONNS 4096     /* connections with state */
#define PQ_MAX_OPEN 1024      /* open spans per connection (a long pipeline) */
#define PQ_MAX_PREPARED 128   /* remembered prepared statements per connection */
#define PQ_NAME_MAX 63        /* PostgreSQL truncates identifiers to NAMEDATALEN - 1 */
#define PQ_TAG_MAX 255
#define PQ_SHAPES 4           /* statement shapes the writer remembers */
/* Longest statement whose text is copied for the writer to obfuscate: the
 * longest that has a shape (the text takes the place of the resource while
 * the span waits, so a queued span holds no more than before). A longer one
 * is obfuscated at once. */
#define PQ_DEFER_SQL_MAX DDS_SQL_SHAPE_MAX_INPUT

static const char *const pq_libs[] = {"libpq.so.5", NULL};

/* > 0 while this thread is inside a hook: libpq's own nested calls pass. */
static __thread int pq_depth __attribute__((tls_model("initial-exec")));

/* ---- libpq's getters ---------------------------------------------------- */

static struct {
    ExecStatusType (*result_status)(const PGresult *);
    int (*ntuples)(const PGresult *);
    char *(*cmd_tuples)(PGresult *);
    char *(*result_error)(const PGresult *);
    char *(*result_field)(const PGresult *, int);
    char *(*error_message)(const PGconn *);
    int (*socket)(const PGconn *);
    ConnStatusType (*status)(const PGconn *);
    char *(*db)(const PGconn *);
    char *(*user)(const PGconn *);
    char *(*host)(const PGconn *);
    char *(*port)(const PGconn *);
    PGpipelineStatus (*pipeline_status)(const PGconn *); /* libpq >= 14; else NULL */
} api;
static int api_ok;
static pthread_mutex_t api_mu = PTHREAD_MUTEX_INITIALIZER;

static void integration_off(const char *why)
{
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        DDS_DEBUG("postgres integration off: %s", why);
}

static int api_ready(void)
{
    if (__atomic_load_n(&api_ok, __ATOMIC_ACQUIRE))
        return 1;
    pthread_mutex_lock(&api_mu);
    int ok = api_ok;
    if (!ok) {
#define RESOLVE(field, name) api.field = (__typeof__(api.field))dds_real_sym_in(name, pq_libs)
        RESOLVE(result_status, "PQresultStatus");
        RESOLVE(ntuples, "PQntuples");
        RESOLVE(cmd_tuples, "PQcmdTuples");
        RESOLVE(result_error, "PQresultErrorMessage");
        RESOLVE(result_field, "PQresultErrorField");
        RESOLVE(error_message, "PQerrorMessage");
        RESOLVE(socket, "PQsocket");
        RESOLVE(status, "PQstatus");
        RESOLVE(db, "PQdb");
        RESOLVE(user, "PQuser");
        RESOLVE(host, "PQhost");
        RESOLVE(port, "PQport");
        RESOLVE(pipeline_status, "PQpipelineStatus");
#undef RESOLVE
        if (api.result_status && api.ntuples && api.cmd_tuples && api.result_error &&
            api.result_field && api.error_message && api.socket && api.status && api.db &&
            api.user && api.host && api.port)
            __atomic_store_n(&api_ok, ok = 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&api_mu);
    if (!ok)
        integration_off("libpq's getters (PQresultStatus, PQdb, ...) were not found");
    return ok;
}

/* ---- per-connection state ----------------------------------------------- */

/* A statement whose results are still to come, or a pipeline sync point. */
typedef struct pq_item {
    struct pq_item *next;
    dds_span *span;    /* NULL: a sync point, or a statement not traced */
    int sync;
    int nresults;
    int has_rows;
    double rows;
    int64_t last_mono; /* when its last result came; 0: none yet */
} pq_item;

typedef struct pq_prep {
    uint32_t hash;
    char *name;        /* NULL: free slot */
    char *text;        /* obfuscated */
} pq_prep;

/* An obfuscated statement and its shape (core/sql.h): the next statement of
 * the same shape (the same text but for its integers) gets this resource
 * without running the obfuscator. The writer keeps a few (whatever the
 * connection: the match is on the text alone). No literal is kept: a shape exists only for
 * a statement whose literals are all integers, and those are cut out. */
typedef struct pq_shape {
    size_t tmpl_len;
    size_t res_len;
    int ncuts;
    unsigned short cut[DDS_SQL_SHAPE_MAX_CUTS];
    char *res;          /* NUL-terminated, in data after the template */
    char data[];
} pq_shape;

typedef struct pq_conn {
    struct pq_conn *next; /* hash chain */
    const PGconn *key;
    pid_t pid;            /* the process whose spans the items are */
    int tags_read;
    char *db, *user, *host;
    size_t db_len, user_len, host_len;
    double port;          /* 0: unknown */
    dds_tagset *tags;     /* the tags every span shares (conn_tagset), or NULL */
    pq_item *head, *tail;
    pq_item *spare;       /* popped items kept for reuse (at most PQ_SPARE_MAX) */
    int nspare;
    int nopen;            /* items with a span */
    pq_prep *preps;       /* PQ_MAX_PREPARED slots, a ring; NULL until a prepare */
    int prep_next;
    int prep_unnamed;     /* 0: no slot holds the unnamed statement */
} pq_conn;

#define PQ_BUCKETS 256
#define PQ_SPARE_MAX 8
static pq_conn *buckets[PQ_BUCKETS];
static int nconns;        /* entries in buckets (read without the lock as a hint) */
static int npending;      /* items queued, all connections (hint for PQgetResult) */
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;

/* The last connection this thread looked up, valid while table_gen has not
 * moved: a program runs statement after statement on the same PGconn, and
 * the table's lock and hash chain cost more than the rest of PQgetResult's
 * hook. table_gen changes whenever an entry leaves the table (PQfinish,
 * reset of a stale address), so a cached entry is never one that was freed.
 * An entry only leaves through its own PGconn, which libpq lets one thread
 * use at a time: none can leave between the check and the use. */
static unsigned table_gen;
static __thread const PGconn *tl_conn __attribute__((tls_model("initial-exec")));
static __thread pq_conn *tl_pc __attribute__((tls_model("initial-exec")));
static __thread unsigned tl_gen __attribute__((tls_model("initial-exec")));
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void table_lock(void) { pthread_mutex_lock(&table_mu); }
static void table_unlock(void) { pthread_mutex_unlock(&table_mu); }
static void atfork_register(void) { pthread_atfork(table_lock, table_unlock, table_unlock); }

static unsigned bucket_of(const PGconn *c)
{
    uintptr_t p = (uintptr_t)c;
    return (unsigned)((p >> 4) ^ (p >> 12)) % PQ_BUCKETS;
}

static void items_drop(pq_conn *pc)
{
    /* A fork child's copy of its parent's open spans: the parent finishes
     * them; here they are only forgotten (their memory is the parent's copy). */
    for (pq_item *it = pc->head, *nx; it; it = nx) {
        nx = it->next;
        free(it);
        __atomic_sub_fetch(&npending, 1, __ATOMIC_RELAXED);
    }
    pc->head = pc->tail = NULL;
    pc->nopen = 0;
}

/* An item popped from the FIFO: kept for the next statement (a malloc and a
 * free per asynchronous statement otherwise). */
static void item_release(pq_conn *pc, pq_item *it)
{
    if (pc->nspare < PQ_SPARE_MAX) {
        it->next = pc->spare;
        pc->spare = it;
        pc->nspare++;
        return;
    }
    free(it);
}

static void spares_free(pq_conn *pc)
{
    for (pq_item *it = pc->spare, *nx; it; it = nx) {
        nx = it->next;
        free(it);
    }
    pc->spare = NULL;
    pc->nspare = 0;
}

/* The state of conn, created when `create` and there is room. The caller
 * owns the connection (libpq's rule: one thread at a time per PGconn), so the
 * entry is used without the lock once found. */
static __attribute__((noinline)) pq_conn *conn_lookup(const PGconn *conn, int create);

static inline pq_conn *conn_get(const PGconn *conn, int create)
{
    if (conn == tl_conn && conn != NULL &&
        tl_gen == __atomic_load_n(&table_gen, __ATOMIC_ACQUIRE) && tl_pc->pid == dds_pid)
        return tl_pc;
    return conn_lookup(conn, create);
}

static pq_conn *conn_lookup(const PGconn *conn, int create)
{
    if (conn == NULL || (!create && __atomic_load_n(&nconns, __ATOMIC_RELAXED) == 0))
        return NULL;
    if (conn == tl_conn && tl_gen == __atomic_load_n(&table_gen, __ATOMIC_ACQUIRE)) {
        pq_conn *hit = tl_pc;
        if (hit->pid != dds_pid) {
            items_drop(hit);
            hit->pid = dds_pid;
        }
        return hit;
    }
    pthread_once(&atfork_once, atfork_register);
    unsigned b = bucket_of(conn);
    table_lock();
    pq_conn *pc = buckets[b];
    while (pc && pc->key != conn)
        pc = pc->next;
    if (pc == NULL && create && nconns < PQ_MAX_CONNS && (pc = calloc(1, sizeof *pc)) != NULL) {
        pc->key = conn;
        pc->pid = dds_pid;
        pc->next = buckets[b];
        buckets[b] = pc;
        __atomic_add_fetch(&nconns, 1, __ATOMIC_RELAXED);
    }
    unsigned gen = __atomic_load_n(&table_gen, __ATOMIC_RELAXED);
    table_unlock();
    if (pc) {
        tl_conn = conn;
        tl_pc = pc;
        tl_gen = gen;
    }
    if (pc && pc->pid != dds_pid) {
        items_drop(pc);
        pc->pid = dds_pid;
    }
    return pc;
}

static void prep_clear(pq_conn *pc);
static void items_finish_all(pq_conn *pc);

/* conn is going away (PQfinish) or is new (a stale entry at its address). */
static void conn_forget(const PGconn *conn)
{
    if (conn == NULL || __atomic_load_n(&nconns, __ATOMIC_RELAXED) == 0)
        return;
    unsigned b = bucket_of(conn);
    table_lock();
    pq_conn **pp = &buckets[b];
    while (*pp && (*pp)->key != conn)
        pp = &(*pp)->next;
    pq_conn *pc = *pp;
    if (pc) {
        *pp = pc->next;
        __atomic_sub_fetch(&nconns, 1, __ATOMIC_RELAXED);
        /* Every thread's cached entry is stale from now on. */
        __atomic_add_fetch(&table_gen, 1, __ATOMIC_RELEASE);
    }
    table_unlock();
    if (pc == NULL)
        return;
    if (pc->pid == dds_pid)
        items_finish_all(pc);
    else
        items_drop(pc);
    spares_free(pc);
    prep_clear(pc);
    dds_tagset_unref(pc->tags); /* queued spans keep their own references */
    free(pc->db);
    free(pc->user);
    free(pc->host);
    free(pc);
}

/* ---- prepared statements: name -> obfuscated text ------------------------ */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; s[i] && i < PQ_NAME_MAX; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static pq_prep *prep_find(pq_conn *pc, const char *name, uint32_t h)
{
    if (pc == NULL || pc->preps == NULL)
        return NULL;
    for (int i = 0; i < PQ_MAX_PREPARED; i++) {
        pq_prep *p = &pc->preps[i];
        if (p->name && p->hash == h && strncmp(p->name, name, PQ_NAME_MAX) == 0)
            return p;
    }
    return NULL;
}

static void prep_put(pq_conn *pc, const char *name, const char *text)
{
    if (pc == NULL || name == NULL || text == NULL)
        return;
    if (pc->preps == NULL && (pc->preps = calloc(PQ_MAX_PREPARED, sizeof *pc->preps)) == NULL)
        return;
    uint32_t h = name_hash(name);
    pq_prep *p = prep_find(pc, name, h);
    if (p == NULL) {
        /* The oldest entry makes room: a program that keeps preparing new
         * names (an ORM's statement cache) stays bounded. */
        p = &pc->preps[pc->prep_next];
        pc->prep_next = (pc->prep_next + 1) % PQ_MAX_PREPARED;
        free(p->name);
        p->name = strndup(name, PQ_NAME_MAX);
        p->hash = h;
    }
    if (*name == '\0')
        pc->prep_unnamed = 1;
    free(p->text);
    p->text = strdup(text);
    if (p->name == NULL || p->text == NULL) {
        free(p->name);
        free(p->text);
        p->name = p->text = NULL;
    }
}

static void prep_clear(pq_conn *pc)
{
    if (pc->preps == NULL)
        return;
    for (int i = 0; i < PQ_MAX_PREPARED; i++) {
        free(pc->preps[i].name);
        free(pc->preps[i].text);
    }
    free(pc->preps);
    pc->preps = NULL;
    pc->prep_next = 0;
    pc->prep_unnamed = 0;
}

/* A simple query or a Parse of the unnamed statement replaces it. */
static void prep_forget_unnamed(pq_conn *pc)
{
    /* Most programs never prepare the unnamed statement: no scan of the
     * slots for every statement they run. */
    if (!pc->prep_unnamed)
        return;
    pc->prep_unnamed = 0;
    pq_prep *p = prep_find(pc, "", name_hash(""));
    if (p) {
        free(p->name);
        free(p->text);
        p->name = p->text = NULL;
    }
}

/* ---- spans -------------------------------------------------------------- */

/* 1 once ddshim is ready, libpq's getters are found and the integration is
 * on: none of these goes back, so each hook tests one flag, not three calls. */
static int pq_on;

static __attribute__((noinline)) int pq_enable(void)
{
    if (!(dds_cfg->integrations & DDS_INTEG_POSTGRES) || !dds_ready() || !api_ready())
        return 0;
    __atomic_store_n(&pq_on, 1, __ATOMIC_RELEASE);
    return 1;
}

static inline int tracing(void)
{
    return dds_active && !dds_in_shim && pq_depth == 0 &&
           (__atomic_load_n(&pq_on, __ATOMIC_ACQUIRE) || pq_enable());
}

static char *tag_dup(const char *s)
{
    return s && *s ? strndup(s, PQ_TAG_MAX) : NULL;
}

/* The libpq socket carries PostgreSQL, never HTTP: keep hooks/socket.c off
 * it. Called after every connect, poll, reset and statement: a new socket can
 * reuse the old one's number, and the call costs one table load when the fd
 * is already ignored. */
static void ignore_socket(PGconn *conn)
{
    int fd = api.socket(conn);
    if (fd >= 0)
        dds_socket_ignore_fd(fd);
}


/* What a statement call is about: the resource comes from it. */
enum { RES_SQL, RES_EXECUTE, RES_DESCRIBE, RES_DESCRIBE_PORTAL };

typedef struct pq_call {
    PGconn *conn;
    pq_conn *pc;
    dds_span *span;
    int saved_errno;
} pq_call;

/* Before the real call: the span starts now. */
static void call_begin(pq_call *c, PGconn *conn)
{
    c->saved_errno = errno;
    dds_in_shim = 1;
    c->conn = conn;
    c->span = dds_span_start("postgresql.query", "sql", dds_active_span(), NULL);
    dds_in_shim = 0;
    pq_depth++;
    errno = c->saved_errno;
}

/* ---- statement shapes: obfuscated text reused -------------------------- */

/* The writer's shapes. Deferred work can also run on an application thread
 * (an error, a sampling decision at finish): whoever finds the ring busy
 * obfuscates without it, which gives the same text. */
static struct {
    pq_shape *ring[PQ_SHAPES]; /* at most ~2 KiB each */
    int hit;                   /* where the last match was: tried first */
    int next;                  /* the slot the next new shape takes */
} shapes;
static int shapes_busy;

/* The remembered shape sql[0..len) has, if any: the last one matched is tried
 * first, then the one after it (a program cycling through a few statements
 * finds each at the first or second try). */
static const pq_shape *shape_find(const char *sql, size_t len)
{
    for (int k = 0; k < PQ_SHAPES; k++) {
        int i = (shapes.hit + k) % PQ_SHAPES;
        const pq_shape *sh = shapes.ring[i];
        if (sh == NULL)
            continue;
        if (dds_sql_shape_match(sh->data, sh->tmpl_len, sh->cut, sh->ncuts, sql, len)) {
            shapes.hit = i;
            return sh;
        }
    }
    return NULL;
}

/* Remember a statement's shape and its obfuscated text res[0..n). */
static void shape_put(const dds_sql_shape *shape, const char *res, size_t n)
{
    pq_shape *sh = malloc(sizeof *sh + shape->len + n + 1);
    if (sh == NULL)
        return;
    sh->tmpl_len = shape->len;
    sh->res_len = n;
    sh->ncuts = shape->ncuts;
    memcpy(sh->cut, shape->cut, (size_t)shape->ncuts * sizeof *sh->cut);
    memcpy(sh->data, shape->tmpl, shape->len);
    sh->res = sh->data + shape->len;
    memcpy(sh->res, res, n);
    sh->res[n] = '\0';
    int i = shapes.next;
    free(shapes.ring[i]);
    shapes.ring[i] = sh;
    shapes.hit = i;
    shapes.next = (i + 1) % PQ_SHAPES;
}

/* A statement's resource: the obfuscated text of sql[0..len) (len at most
 * DDS_SQL_MAX_INPUT + 1: dds_sql_obfuscate marks the cut). */
static void set_sql_resource(dds_span *s, const char *sql, size_t len)
{
    char ob[DDS_SQL_MAX_OUTPUT + 4];
    size_t n;
    if (len <= DDS_SQL_SHAPE_MAX_INPUT &&
        !__atomic_exchange_n(&shapes_busy, 1, __ATOMIC_ACQUIRE)) {
        const pq_shape *sh = shape_find(sql, len);
        if (sh) {
            if (sh->res_len > 0)
                dds_span_set_resource_n(s, sh->res, sh->res_len);
        } else {
            dds_sql_shape shape;
            n = dds_sql_obfuscate_shape(sql, len, ob, sizeof ob, &shape);
            if (shape.ok)
                shape_put(&shape, ob, n);
            if (n > 0)
                dds_span_set_resource_n(s, ob, n);
        }
        __atomic_store_n(&shapes_busy, 0, __ATOMIC_RELEASE);
        return;
    }
    n = dds_sql_obfuscate(sql, len, ob, sizeof ob);
    if (n > 0)
        dds_span_set_resource_n(s, ob, n);
}

/* ---- a span's tags and resource, left to the writer --------------------- */

/* The tags every statement of a connection gets, listed once: made into
 * one set (tagset.h) from the strings kept at its first statement, or set
 * on the span one by one by describe_deferred (the connection not up yet,
 * or no memory for a set). */
typedef struct conn_tags {
    dds_tag meta[8];
    dds_tag_num num[2];
    int nmeta, nnum;
} conn_tags;

static void conn_tags_list(conn_tags *l, const char *db, size_t dbl, const char *user, size_t userl,
                           const char *host, size_t hostl, double port)
{
    *l = (conn_tags){.meta = {{"db.system", "postgresql", 10},
                              {"component", "libpq", 5},
                              {"span.kind", "client", 6}},
                     .num = {{"_dd.measured", 1}},
                     .nmeta = 3,
                     .nnum = 1};
    if (dbl) {
        l->meta[l->nmeta++] = (dds_tag){"db.name", db, dbl};
        l->meta[l->nmeta++] = (dds_tag){"peer.service", db, dbl};
        l->meta[l->nmeta++] = (dds_tag){"_dd.peer.service.source", "db.name", 7};
    }
    if (userl)
        l->meta[l->nmeta++] = (dds_tag){"db.user", user, userl};
    if (hostl)
        l->meta[l->nmeta++] = (dds_tag){"out.host", host, hostl};
    if (port > 0)
        l->num[l->nnum++] = (dds_tag_num){"network.destination.port", port};
}

/* What call_describe leaves to the writer (dds_span_defer), one blob per
 * span: this header, then the bytes of db, user and host (the connection's
 * tags, copied: the pq_conn may be gone by then; none when the span has the
 * connection's tag set), then `text`: the statement to obfuscate (RES_SQL)
 * or the name in the resource (the other kinds). The blob is not aligned:
 * the header is copied out. */
enum { RES_SET = 255 }; /* the resource was set on the application thread */

typedef struct pq_deferred {
    const char *fn;     /* the hook's name, a string literal */
    double port;        /* 0: none */
    double rows;        /* db.row_count, when has_rows: written at finish */
    uint32_t text_len;
    uint16_t db_len, user_len, host_len;
    uint8_t fn_len;
    uint8_t res;        /* RES_*, or RES_SET */
    uint8_t has_rows;
    uint8_t shared;     /* the span has the connection's tag set: no constant tags */
} pq_deferred;

#define PQ_DEFERRED_MAX (sizeof(pq_deferred) + 3 * PQ_TAG_MAX + PQ_DEFER_SQL_MAX)

/* The span's tags and resource. Runs on the writer, before the
 * chunk is sampled; on the application thread when the span needs them
 * sooner (set_error) or when the blob could not be kept. */
static void describe_deferred(dds_span *s, const void *data, size_t len)
{
    pq_deferred h;
    if (len < sizeof h)
        return;
    memcpy(&h, data, sizeof h);
    const char *db = (const char *)data + sizeof h;
    const char *user = db + h.db_len, *host = user + h.user_len, *text = host + h.host_len;
    if (!h.shared) {
        conn_tags l;
        conn_tags_list(&l, db, h.db_len, user, h.user_len, host, h.host_len, h.port);
        dds_span_put_tags(s, l.meta, l.nmeta, l.num, l.nnum);
    }
    dds_span_set_meta_n(s, "libpq.function", h.fn, h.fn_len);
    char buf[PQ_NAME_MAX + 32];
    int n = (int)(h.text_len < PQ_NAME_MAX ? h.text_len : PQ_NAME_MAX);
    const char *name = n ? text : "<unnamed>";
    n = n ? n : (int)sizeof "<unnamed>" - 1;
    switch (h.res) {
    case RES_SET:
        break;
    case RES_SQL:
        set_sql_resource(s, text, h.text_len);
        break;
    case RES_EXECUTE:
        snprintf(buf, sizeof buf, "EXECUTE %.*s", n, name);
        dds_span_set_resource(s, buf);
        break;
    case RES_DESCRIBE:
        snprintf(buf, sizeof buf, "DESCRIBE %.*s", n, name);
        dds_span_set_resource(s, buf);
        break;
    default:
        snprintf(buf, sizeof buf, "DESCRIBE PORTAL %.*s", n, name);
        dds_span_set_resource(s, buf);
        break;
    }
    if (h.has_rows)
        dds_span_set_metric(s, "db.row_count", h.rows);
}

static char *put_bytes(char *p, const char *v, size_t n)
{
    if (n)
        memcpy(p, v, n);
    return p + n;
}

static dds_tagset *conn_tagset(const pq_conn *pc)
{
    conn_tags l;
    conn_tags_list(&l, pc->db, pc->db_len, pc->user, pc->user_len, pc->host, pc->host_len, pc->port);
    return dds_tagset_new(l.meta, l.nmeta, l.num, l.nnum);
}

/* The connection's tags: its tag set, a reference of which the span takes,
 * or (no set: not up yet, or out of memory) into the blob at p, the strings
 * kept at its first statement or read now while it is not yet up. Returns
 * the end. */
static char *put_conn_tags(pq_deferred *h, char *p, dds_span *s, PGconn *conn, pq_conn *pc)
{
    if (pc && !pc->tags_read && api.status(conn) == CONNECTION_OK) {
        pc->db = tag_dup(api.db(conn));
        pc->user = tag_dup(api.user(conn));
        pc->host = tag_dup(api.host(conn));
        pc->db_len = pc->db ? strlen(pc->db) : 0;
        pc->user_len = pc->user ? strlen(pc->user) : 0;
        pc->host_len = pc->host ? strlen(pc->host) : 0;
        const char *port = api.port(conn);
        pc->port = port && *port ? strtod(port, NULL) : 0;
        pc->tags_read = 1;
    }
    if (pc && pc->tags_read && (pc->tags || (pc->tags = conn_tagset(pc)))) {
        dds_span_set_tagset(s, pc->tags);
        h->shared = 1;
        return p;
    }
    const char *db, *user, *host;
    if (pc && pc->tags_read) {
        db = pc->db, user = pc->user, host = pc->host, h->port = pc->port;
        h->db_len = (uint16_t)pc->db_len;
        h->user_len = (uint16_t)pc->user_len;
        h->host_len = (uint16_t)pc->host_len;
    } else {
        db = api.db(conn), user = api.user(conn), host = api.host(conn);
        const char *port = api.port(conn);
        h->port = port && *port ? strtod(port, NULL) : 0;
        h->db_len = db ? (uint16_t)strnlen(db, PQ_TAG_MAX) : 0;
        h->user_len = user ? (uint16_t)strnlen(user, PQ_TAG_MAX) : 0;
        h->host_len = host ? (uint16_t)strnlen(host, PQ_TAG_MAX) : 0;
    }
    p = put_bytes(p, db, h->db_len);
    p = put_bytes(p, user, h->user_len);
    return put_bytes(p, host, h->host_len);
}

/* The resource: what the writer needs to make it into the blob at p, or set
 * now (a prepared statement's remembered text, a statement too long to
 * copy). For a PQprepare (obfuscated != NULL) the text is obfuscated now:
 * its name keeps it. Returns the end. */
static char *put_resource(pq_deferred *h, char *p, dds_span *s, int kind, const char *arg,
                          pq_conn *pc, char **obfuscated)
{
    h->res = RES_SET;
    const char *name = arg ? arg : "";
    size_t n;
    switch (kind) {
    case RES_SQL:
        if (obfuscated) {
            char *o = dds_sql_obfuscate_dup(arg);
            if (o && *o)
                dds_span_set_resource(s, o);
            *obfuscated = o;
            return p;
        }
        if (arg == NULL)
            return p;
        n = strnlen(arg, DDS_SQL_MAX_INPUT + 1);
        if (n > PQ_DEFER_SQL_MAX) {
            set_sql_resource(s, arg, n);
            return p;
        }
        break;
    case RES_EXECUTE: {
        pq_prep *pp = prep_find(pc, name, name_hash(name));
        if (pp) {
            dds_span_set_resource(s, pp->text);
            return p;
        }
        n = strnlen(name, PQ_NAME_MAX);
        break;
    }
    default:
        n = strnlen(name, PQ_NAME_MAX);
        break;
    }
    h->res = (uint8_t)kind;
    h->text_len = (uint32_t)n;
    return put_bytes(p, arg ? arg : "", n);
}

/* After the real call: what the span's tags and resource will be. Returns
 * the connection's state (created if need be). For a PQprepare/PQsendPrepare,
 * *obfuscated receives the obfuscated text (malloc'd) to remember under the
 * statement's name. */
static pq_conn *call_describe(pq_call *c, const char *fn, size_t fn_len, int kind,
                              const char *arg, char **obfuscated)
{
    pq_conn *pc = c->conn ? conn_get(c->conn, 1) : NULL;
    c->pc = pc;
    if (c->conn)
        ignore_socket(c->conn);
    dds_span *s = c->span;
    if (s == NULL)
        return pc;
    char blob[PQ_DEFERRED_MAX];
    pq_deferred h = {.fn = fn, .fn_len = (uint8_t)fn_len};
    char *p = blob + sizeof h;
    if (c->conn)
        p = put_conn_tags(&h, p, s, c->conn, pc);
    p = put_resource(&h, p, s, kind, arg, pc, obfuscated);
    memcpy(blob, &h, sizeof h);
    size_t n = (size_t)(p - blob);
    if (dds_span_defer(s, describe_deferred, blob, n) != 0)
        describe_deferred(s, blob, n);
    return pc;
}

/* error.message: the first line of libpq's message, without the values it
 * may quote (core/sql.h); error.type: the SQLSTATE. The message is checked
 * against the resource, and its tags come after the others: the deferred
 * work runs now (errors are rare). */
static void set_error(dds_span *s, const char *msg, const PGresult *r)
{
    dds_span_run_deferred(s);
    char line[512];
    size_t n = dds_sql_error_message(msg, s->resource, line, sizeof line);
    dds_span_set_error(s, n ? line : NULL);
    const char *state = r ? api.result_field(r, PG_DIAG_SQLSTATE) : NULL;
    if (state && *state)
        dds_span_set_meta(s, "error.type", state);
}

static void item_result(pq_item *it, PGresult *r)
{
    it->nresults++;
    it->last_mono = dds_now_mono_ns();
    if (it->span == NULL)
        return;
    switch (api.result_status(r)) {
    case PGRES_TUPLES_OK:
    case PGRES_SINGLE_TUPLE:
        it->rows += api.ntuples(r);
        it->has_rows = 1;
        break;
    case PGRES_COMMAND_OK: {
        const char *n = api.cmd_tuples(r);
        if (n && *n) {
            it->rows += strtod(n, NULL);
            it->has_rows = 1;
        }
        break;
    }
    case PGRES_FATAL_ERROR:
    case PGRES_BAD_RESPONSE:
        set_error(it->span, api.result_error(r), r);
        break;
    case PGRES_PIPELINE_ABORTED:
        set_error(it->span, "not executed: an earlier statement of the pipeline failed", NULL);
        break;
    default:
        break;
    }
}

static int is_copy(PGresult *r)
{
    ExecStatusType st = api.result_status(r);
    return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

static void item_finish(pq_item *it, int64_t end_mono)
{
    if (it->span == NULL)
        return;
    if (it->has_rows) {
        /* Still to be described: the count goes with the rest, after it. */
        char *d = dds_span_deferred_data(it->span);
        if (d) {
            uint8_t one = 1;
            memcpy(d + offsetof(pq_deferred, rows), &it->rows, sizeof it->rows);
            memcpy(d + offsetof(pq_deferred, has_rows), &one, 1);
        } else {
            dds_span_set_metric(it->span, "db.row_count", it->rows);
        }
    }
    if (end_mono)
        dds_span_finish_at(it->span, end_mono);
    else
        dds_span_finish(it->span);
    it->span = NULL;
}

static void item_push(pq_conn *pc, pq_item *tmpl)
{
    pq_item *it = pc->spare;
    if (it) {
        pc->spare = it->next;
        pc->nspare--;
    } else {
        it = malloc(sizeof *it);
    }
    if (it == NULL) {
        item_finish(tmpl, 0);
        return;
    }
    *it = *tmpl;
    if (it->span && pc->nopen >= PQ_MAX_OPEN) {
        /* Keep the place in the FIFO, not the span: memory stays bounded. */
        item_finish(it, 0);
    }
    it->next = NULL;
    if (it->span)
        pc->nopen++;
    if (pc->tail)
        pc->tail->next = it;
    else
        pc->head = it;
    pc->tail = it;
    __atomic_add_fetch(&npending, 1, __ATOMIC_RELAXED);
}

static pq_item *item_pop(pq_conn *pc)
{
    pq_item *it = pc->head;
    if (it == NULL)
        return NULL;
    pc->head = it->next;
    if (pc->head == NULL)
        pc->tail = NULL;
    if (it->span)
        pc->nopen--;
    __atomic_sub_fetch(&npending, 1, __ATOMIC_RELAXED);
    return it;
}

/* Statements still queued are over: finished at their last result. */
static void items_finish_all(pq_conn *pc)
{
    pq_item *it;
    while ((it = item_pop(pc)) != NULL) {
        item_finish(it, it->last_mono);
        item_release(pc, it);
    }
}

/* Outside pipeline mode a new command starts only once the previous one is
 * done, even if the program never fetched its final NULL (PQexec drains it
 * internally): whatever is still queued is over. */
static void settle(pq_conn *pc, PGconn *conn)
{
    if (pc == NULL || pc->head == NULL)
        return;
    if (api.pipeline_status && api.pipeline_status(conn) != PQ_PIPELINE_OFF)
        return;
    items_finish_all(pc);
}

/* A synchronous statement returned r. */
static void call_done_sync(pq_call *c, PGresult *r, int64_t end)
{
    pq_item it = {.span = c->span};
    if (r == NULL) {
        if (c->span)
            set_error(c->span, c->conn ? api.error_message(c->conn) : "connection pointer is NULL", NULL);
        item_finish(&it, end);
        return;
    }
    settle(c->pc, c->conn);
    item_result(&it, r);
    if (is_copy(r) && c->pc) {
        /* The COPY goes on: its span ends with its final result. */
        item_push(c->pc, &it);
        return;
    }
    item_finish(&it, end);
}

/* An asynchronous send returned ok. */
static void call_done_send(pq_call *c, int ok)
{
    pq_item it = {.span = c->span};
    if (!ok) {
        if (c->span)
            set_error(c->span, c->conn ? api.error_message(c->conn) : "connection pointer is NULL", NULL);
        item_finish(&it, 0);
        return;
    }
    if (c->pc == NULL) {
        /* No room to follow its results: the span covers the send only. */
        item_finish(&it, 0);
        return;
    }
    settle(c->pc, c->conn);
    item_push(c->pc, &it);
}

/* Common tail of every statement hook. */
static void call_end(pq_call *c)
{
    dds_in_shim = 0;
    errno = c->saved_errno;
}

/* A result (or the NULL that ends a statement's results) came back. */
static void got_result(pq_conn *pc, PGresult *r)
{
    pq_item *it = pc->head;
    if (r == NULL) {
        /* Every statement yields a result before its NULL; a NULL before
         * any is a second NULL, or a result that libpq consumed itself. */
        if (it->sync || it->nresults == 0)
            return;
        item_pop(pc);
        item_finish(it, dds_now_mono_ns());
        item_release(pc, it);
        return;
    }
    if (api.result_status(r) == PGRES_PIPELINE_SYNC) {
        pq_item *s = it;
        while (s && !s->sync)
            s = s->next;
        if (s == NULL)
            return; /* a sync we did not see sent */
        int64_t now = dds_now_mono_ns();
        for (;;) {
            pq_item *x = item_pop(pc);
            int was_sync = x->sync;
            item_finish(x, x->last_mono ? x->last_mono : now);
            item_release(pc, x);
            if (was_sync)
                break;
        }
        return;
    }
    if (!it->sync)
        item_result(it, r);
}

/* ---- the hooks ---------------------------------------------------------- */

/* The real function is missing (libpq not loaded?): fail as libpq would. */
#define MISSING(fn, failure)                                                   \
    do {                                                                       \
        integration_off(#fn " not found (is libpq.so.5 loaded?)");             \
        errno = ENOSYS;                                                        \
        return failure;                                                        \
    } while (0)

/* What a statement did to the connection's prepared statements: a prepare
 * names its text (once it succeeded, where that is known at once); any other
 * SQL replaces the unnamed statement. Takes text. */
static void track_prepared(pq_conn *pc, int kind, const char *prep_name, char *text, int ok)
{
    if (pc && ok) {
        if (prep_name)
            prep_put(pc, prep_name, text);
        else if (kind == RES_SQL)
            prep_forget_unnamed(pc);
    }
    free(text);
}

/* Right after the real call. */
static void call_returned(pq_call *c)
{
    pq_depth--;
    c->saved_errno = errno;
    dds_in_shim = 1;
}

/* Synchronous statement hook body. prep_name: the name a PQprepare gives. */
#define SYNC_STATEMENT(fn, conn, kind, arg, prep_name, call)                   \
    DDS_REAL_IN(fn, pq_libs);                                                  \
    if (real_##fn == NULL)                                                     \
        MISSING(fn, NULL);                                                     \
    if (!tracing())                                                            \
        return real_##fn call;                                                 \
    pq_call c;                                                                 \
    call_begin(&c, conn);                                                      \
    PGresult *r = real_##fn call;                                              \
    int64_t end = dds_now_mono_ns();                                           \
    call_returned(&c);                                                         \
    const char *pname = prep_name;                                             \
    char *text = NULL;                                                         \
    pq_conn *pc = call_describe(&c, #fn, sizeof #fn - 1, kind, arg,           \
                                pname ? &text : NULL);                         \
    track_prepared(pc, kind, pname, text,                                      \
                   r && (!pname || api.result_status(r) == PGRES_COMMAND_OK)); \
    call_done_sync(&c, r, end);                                                \
    call_end(&c);                                                              \
    return r

/* Asynchronous send hook body. A PQsendPrepare's success shows only in
 * PQgetResult: its name is remembered when the send succeeds. */
#define SEND_STATEMENT(fn, conn, kind, arg, prep_name, call)                   \
    DDS_REAL_IN(fn, pq_libs);                                                  \
    if (real_##fn == NULL)                                                     \
        MISSING(fn, 0);                                                        \
    if (!tracing())                                                            \
        return real_##fn call;                                                 \
    pq_call c;                                                                 \
    call_begin(&c, conn);                                                      \
    int ok = real_##fn call;                                                   \
    call_returned(&c);                                                         \
    const char *pname = prep_name;                                             \
    char *text = NULL;                                                         \
    pq_conn *pc = call_describe(&c, #fn, sizeof #fn - 1, kind, arg,           \
                                pname ? &text : NULL);                         \
    track_prepared(pc, kind, pname, text, ok);                                 \
    call_done_send(&c, ok);                                                    \
    call_end(&c);                                                              \
    return ok

DDS_EXPORT PGresult *PQexec(PGconn *conn, const char *query)
{
    SYNC_STATEMENT(PQexec, conn, RES_SQL, query, NULL, (conn, query));
}

DDS_EXPORT PGresult *PQexecParams(PGconn *conn, const char *command, int nParams,
                                  const Oid *paramTypes, const char *const *paramValues,
                                  const int *paramLengths, const int *paramFormats,
                                  int resultFormat)
{
    SYNC_STATEMENT(PQexecParams, conn, RES_SQL, command, NULL,
                   (conn, command, nParams, paramTypes, paramValues, paramLengths,
                    paramFormats, resultFormat));
}

DDS_EXPORT PGresult *PQprepare(PGconn *conn, const char *stmtName, const char *query,
                               int nParams, const Oid *paramTypes)
{
    SYNC_STATEMENT(PQprepare, conn, RES_SQL, query, stmtName,
                   (conn, stmtName, query, nParams, paramTypes));
}

DDS_EXPORT PGresult *PQexecPrepared(PGconn *conn, const char *stmtName, int nParams,
                                    const char *const *paramValues, const int *paramLengths,
                                    const int *paramFormats, int resultFormat)
{
    SYNC_STATEMENT(PQexecPrepared, conn, RES_EXECUTE, stmtName, NULL,
                   (conn, stmtName, nParams, paramValues, paramLengths, paramFormats,
                    resultFormat));
}

DDS_EXPORT PGresult *PQdescribePrepared(PGconn *conn, const char *stmt)
{
    SYNC_STATEMENT(PQdescribePrepared, conn, RES_DESCRIBE, stmt, NULL, (conn, stmt));
}

DDS_EXPORT PGresult *PQdescribePortal(PGconn *conn, const char *portal)
{
    SYNC_STATEMENT(PQdescribePortal, conn, RES_DESCRIBE_PORTAL, portal, NULL, (conn, portal));
}

DDS_EXPORT int PQsendQuery(PGconn *conn, const char *query)
{
    SEND_STATEMENT(PQsendQuery, conn, RES_SQL, query, NULL, (conn, query));
}

DDS_EXPORT int PQsendQueryParams(PGconn *conn, const char *command, int nParams,
                                 const Oid *paramTypes, const char *const *paramValues,
                                 const int *paramLengths, const int *paramFormats,
                                 int resultFormat)
{
    SEND_STATEMENT(PQsendQueryParams, conn, RES_SQL, command, NULL,
                   (conn, command, nParams, paramTypes, paramValues, paramLengths,
                    paramFormats, resultFormat));
}

DDS_EXPORT int PQsendPrepare(PGconn *conn, const char *stmtName, const char *query,
                             int nParams, const Oid *paramTypes)
{
    SEND_STATEMENT(PQsendPrepare, conn, RES_SQL, query, stmtName,
                   (conn, stmtName, query, nParams, paramTypes));
}

DDS_EXPORT int PQsendQueryPrepared(PGconn *conn, const char *stmtName, int nParams,
                                   const char *const *paramValues, const int *paramLengths,
                                   const int *paramFormats, int resultFormat)
{
    SEND_STATEMENT(PQsendQueryPrepared, conn, RES_EXECUTE, stmtName, NULL,
                   (conn, stmtName, nParams, paramValues, paramLengths, paramFormats,
                    resultFormat));
}

DDS_EXPORT int PQsendDescribePrepared(PGconn *conn, const char *stmt)
{
    SEND_STATEMENT(PQsendDescribePrepared, conn, RES_DESCRIBE, stmt, NULL, (conn, stmt));
}

DDS_EXPORT int PQsendDescribePortal(PGconn *conn, const char *portal)
{
    SEND_STATEMENT(PQsendDescribePortal, conn, RES_DESCRIBE_PORTAL, portal, NULL, (conn, portal));
}

DDS_EXPORT PGresult *PQgetResult(PGconn *conn)
{
    DDS_REAL_IN(PQgetResult, pq_libs);
    if (real_PQgetResult == NULL)
        MISSING(PQgetResult, NULL);
    if (__atomic_load_n(&npending, __ATOMIC_RELAXED) == 0 || !tracing())
        return real_PQgetResult(conn);
    pq_depth++;
    PGresult *r = real_PQgetResult(conn);
    pq_depth--;
    int e = errno;
    dds_in_shim = 1;
    pq_conn *pc = conn_get(conn, 0);
    if (pc && pc->head)
        got_result(pc, r);
    dds_in_shim = 0;
    errno = e;
    return r;
}

DDS_EXPORT int PQpipelineSync(PGconn *conn)
{
    DDS_REAL_IN(PQpipelineSync, pq_libs);
    if (real_PQpipelineSync == NULL)
        MISSING(PQpipelineSync, 0);
    if (!tracing())
        return real_PQpipelineSync(conn);
    pq_depth++;
    int ok = real_PQpipelineSync(conn);
    pq_depth--;
    int e = errno;
    dds_in_shim = 1;
    pq_conn *pc = ok == 1 ? conn_get(conn, 1) : NULL;
    if (pc) {
        pq_item sync = {.sync = 1};
        item_push(pc, &sync);
    }
    dds_in_shim = 0;
    errno = e;
    return ok;
}

/* The old COPY API ends a COPY inside libpq: its span ends here. */
DDS_EXPORT int PQendcopy(PGconn *conn)
{
    DDS_REAL_IN(PQendcopy, pq_libs);
    if (real_PQendcopy == NULL)
        MISSING(PQendcopy, 1);
    if (!tracing())
        return real_PQendcopy(conn);
    pq_depth++;
    int r = real_PQendcopy(conn);
    pq_depth--;
    int e = errno;
    dds_in_shim = 1;
    pq_conn *pc = conn_get(conn, 0);
    if (pc && pc->head && !pc->head->sync) {
        pq_item *it = item_pop(pc);
        if (r != 0 && it->span)
            set_error(it->span, api.error_message(conn), NULL);
        item_finish(it, dds_now_mono_ns());
        item_release(pc, it);
    }
    dds_in_shim = 0;
    errno = e;
    return r;
}

/* ---- connections: socket ownership and state lifetime -------------------- */

/* A connection was made or is being made: its address may be a freed one's,
 * and its socket is PostgreSQL's. */
static PGconn *connected(PGconn *conn, int is_new)
{
    if (conn == NULL)
        return conn;
    int e = errno;
    dds_in_shim = 1;
    if (is_new)
        conn_forget(conn);
    ignore_socket(conn);
    dds_in_shim = 0;
    errno = e;
    return conn;
}

#define CONNECT_HOOK(fn, args, call)                                           \
    DDS_EXPORT PGconn *fn args                                                 \
    {                                                                          \
        DDS_REAL_IN(fn, pq_libs);                                              \
        if (real_##fn == NULL)                                                 \
            MISSING(fn, NULL);                                                 \
        if (!tracing())                                                        \
            return real_##fn call;                                             \
        pq_depth++;                                                            \
        PGconn *conn = real_##fn call;                                         \
        pq_depth--;                                                            \
        return connected(conn, 1);                                             \
    }

CONNECT_HOOK(PQconnectdb, (const char *conninfo), (conninfo))
CONNECT_HOOK(PQconnectStart, (const char *conninfo), (conninfo))
CONNECT_HOOK(PQconnectdbParams,
             (const char *const *keywords, const char *const *values, int expand_dbname),
             (keywords, values, expand_dbname))
CONNECT_HOOK(PQconnectStartParams,
             (const char *const *keywords, const char *const *values, int expand_dbname),
             (keywords, values, expand_dbname))
CONNECT_HOOK(PQsetdbLogin,
             (const char *pghost, const char *pgport, const char *pgoptions, const char *pgtty,
              const char *dbName, const char *login, const char *pwd),
             (pghost, pgport, pgoptions, pgtty, dbName, login, pwd))

/* Trying the next host opens a new socket. */
DDS_EXPORT PostgresPollingStatusType PQconnectPoll(PGconn *conn)
{
    DDS_REAL_IN(PQconnectPoll, pq_libs);
    if (real_PQconnectPoll == NULL)
        MISSING(PQconnectPoll, PGRES_POLLING_FAILED);
    if (!tracing())
        return real_PQconnectPoll(conn);
    pq_depth++;
    PostgresPollingStatusType r = real_PQconnectPoll(conn);
    pq_depth--;
    connected(conn, 0);
    return r;
}

DDS_EXPORT PostgresPollingStatusType PQresetPoll(PGconn *conn)
{
    DDS_REAL_IN(PQresetPoll, pq_libs);
    if (real_PQresetPoll == NULL)
        MISSING(PQresetPoll, PGRES_POLLING_FAILED);
    if (!tracing())
        return real_PQresetPoll(conn);
    pq_depth++;
    PostgresPollingStatusType r = real_PQresetPoll(conn);
    pq_depth--;
    connected(conn, 0);
    return r;
}

/* A reset is a new session: queued statements are over, prepared statements
 * gone, and the host may differ. */
static void before_reset(PGconn *conn)
{
    int e = errno;
    dds_in_shim = 1;
    pq_conn *pc = conn_get(conn, 0);
    if (pc) {
        items_finish_all(pc);
        prep_clear(pc);
        free(pc->db);
        free(pc->user);
        free(pc->host);
        pc->db = pc->user = pc->host = NULL;
        pc->db_len = pc->user_len = pc->host_len = 0;
        pc->port = 0;
        pc->tags_read = 0;
        dds_tagset_unref(pc->tags);
        pc->tags = NULL;
    }
    dds_in_shim = 0;
    errno = e;
}

DDS_EXPORT void PQreset(PGconn *conn)
{
    DDS_REAL_IN(PQreset, pq_libs);
    if (real_PQreset == NULL) {
        integration_off("PQreset not found (is libpq.so.5 loaded?)");
        errno = ENOSYS;
        return;
    }
    if (!tracing()) {
        real_PQreset(conn);
        return;
    }
    before_reset(conn);
    pq_depth++;
    real_PQreset(conn);
    pq_depth--;
    connected(conn, 0);
}

DDS_EXPORT int PQresetStart(PGconn *conn)
{
    DDS_REAL_IN(PQresetStart, pq_libs);
    if (real_PQresetStart == NULL)
        MISSING(PQresetStart, 0);
    if (!tracing())
        return real_PQresetStart(conn);
    before_reset(conn);
    pq_depth++;
    int r = real_PQresetStart(conn);
    pq_depth--;
    connected(conn, 0);
    return r;
}

DDS_EXPORT void PQfinish(PGconn *conn)
{
    DDS_REAL_IN(PQfinish, pq_libs);
    if (real_PQfinish == NULL) {
        integration_off("PQfinish not found (is libpq.so.5 loaded?)");
        errno = ENOSYS;
        return;
    }
    /* Whatever the depth or settings: no state may outlive its PGconn. */
    if (__atomic_load_n(&nconns, __ATOMIC_RELAXED) != 0 && conn != NULL) {
        int e = errno, was = dds_in_shim;
        dds_in_shim = 1;
        conn_forget(conn);
        dds_in_shim = was;
        errno = e;
    }
    real_PQfinish(conn);
}
