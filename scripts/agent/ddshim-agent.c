/*
 * ddshim-agent — a small local stand-in for the Datadog Agent's trace intake.
 *
 * It accepts /v0.4/traces (msgpack) like the Agent, validates every request
 * strictly against what ddshim promises to send (wire spec §1.3, §1.4, §6.1,
 * §7), and shows what arrived: a waterfall of each trace on stdout (for
 * `make demo`), one JSON line per chunk in --out and one per request in
 * --requests (for the integration tests, which read those files). It answers
 * 200 {"rate_by_service":{...}} like the Agent, or 400 with the reason when a
 * request breaks a rule. --fault makes it misbehave on purpose, for the
 * writer's reliability tests.
 *
 * HTTP is libmicrohttpd, one thread per connection; msgpack-c decodes, jansson
 * writes JSON. Standalone: it shares no code with the shim, so a bug in
 * ddshim's encoder cannot hide itself by being repeated here.
 *
 *   ddshim-agent [--port N | --unix PATH] [--out FILE] [--requests FILE]
 *                [--quiet] [--rates JSON] [--fault MODE] [--ready-file F]
 *                [--group-ms MS]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (25u * 1024 * 1024) /* the Agent's default max request size */
#define BAR_COLS 40
#define MAX_PENDING_TRACES 2000
#define MAX_SPANS_SHOWN 5000

enum fault { FAULT_NONE, FAULT_500, FAULT_413, FAULT_429, FAULT_GARBAGE, FAULT_HANG, FAULT_CLOSE,
             FAULT_SLOW };

static struct {
    int port;
    const char *unix_path;
    const char *out_path;
    const char *requests_path;
    const char *ready_file;
    int quiet;
    int lenient;     /* --lenient: accept absent/nil optional fields */
    enum fault fault;
    int slow_ms;
    int group_ms;
    char *rates_body; /* the whole 200 answer */
} opt = {.group_ms = 1200};

/* Shared flags, only ever accessed atomically (volatile is not a memory
 * model: TSan rightly reported g_stopping, read by connection threads).
 * g_signalled: the signal that asked us to stop, set in the handler (a
 * lock-free atomic store is async-signal-safe). g_stopping: set by the main
 * thread before it stops the daemon, so that connection threads sleeping in
 * a fault (hang, slow) return at once. */
static int g_signalled;
static int g_stopping;
static FILE *g_out, *g_requests;
static pthread_mutex_t g_files_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long g_seq, g_conn_seq;
static int g_tty;

/* ------------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Sleep in slices so that shutdown never waits for a slow or hanging answer. */
static void sleep_unless_stopping(int64_t ms)
{
    int64_t end = mono_ms() + ms;
    while (!__atomic_load_n(&g_stopping, __ATOMIC_ACQUIRE) && mono_ms() < end)
        sleep_ms(20);
}

/* Strict UTF-8, as Python's decoder in Datadog's test agent: no overlong
 * forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned min;
        if (c >= 0xC2 && c < 0xE0)
            k = 1, min = 0x80;
        else if (c >= 0xE0 && c < 0xF0)
            k = 2, min = 0x800;
        else if (c >= 0xF0 && c < 0xF5)
            k = 3, min = 0x10000;
        else
            return 0;
        if (n - i <= k)
            return 0;
        unsigned cp = c & (0x3Fu >> k);
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* ---- validation ---------------------------------------------------------- */

typedef struct verr {
    char msg[512];
} verr;

static int fail(verr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(verr *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_str(const msgpack_object *o) { return o->type == MSGPACK_OBJECT_STR; }
static int is_int(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER || o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}
static int is_num(const msgpack_object *o)
{
    return is_int(o) || o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64;
}

static const char *type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_BIN: return "bin";
    default: return "ext";
    }
}

static int key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->via.str.size == n && memcmp(k->via.str.ptr, s, n) == 0;
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (is_str(k) && key_is(k, key))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

#define STR_FMT(o) (int)((o)->via.str.size > 60 ? 60 : (o)->via.str.size), (o)->via.str.ptr

static int check_str_map(const msgpack_object *m, const char *what, verr *e, const char *where)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return fail(e, "%s: %s is %s, not a map", where, what, type_name(m));
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key, *v = &m->via.map.ptr[i].val;
        if (!is_str(k))
            return fail(e, "%s: a %s key is %s, not str", where, what, type_name(k));
        if (!utf8_valid(k->via.str.ptr, k->via.str.size))
            return fail(e, "%s: a %s key is not valid UTF-8", where, what);
        if (strcmp(what, "meta") == 0) {
            if (!is_str(v))
                return fail(e, "%s: meta \"%.*s\" is %s, not str", where, STR_FMT(k), type_name(v));
            if (!utf8_valid(v->via.str.ptr, v->via.str.size))
                return fail(e, "%s: meta \"%.*s\" is not valid UTF-8", where, STR_FMT(k));
        } else if (!is_num(v)) {
            return fail(e, "%s: metric \"%.*s\" is %s, not a number", where, STR_FMT(k), type_name(v));
        }
    }
    return 0;
}

static int check_span(const msgpack_object *s, verr *e, const char *where)
{
    static const char *const str_keys[] = {"service", "name", "resource", "type"};
    static const char *const uint_keys[] = {"trace_id", "span_id", "parent_id"};
    static const char *const int_keys[] = {"start", "duration", "error"};
    if (s->type != MSGPACK_OBJECT_MAP)
        return fail(e, "%s is %s, not a map", where, type_name(s));
    for (uint32_t i = 0; i < s->via.map.size; i++)
        if (!is_str(&s->via.map.ptr[i].key))
            return fail(e, "%s: a key is %s, not str", where, type_name(&s->via.map.ptr[i].key));
    /* ddshim always sends every field; with --lenient, like the Datadog
     * Agent, only name, trace_id and span_id are required and an absent or
     * nil optional field is accepted (other tracers omit empty ones). */
    for (size_t i = 0; i < 4; i++) {
        const msgpack_object *v = map_get(s, str_keys[i]);
        if (opt.lenient && i != 1 && (v == NULL || v->type == MSGPACK_OBJECT_NIL))
            continue;
        if (v == NULL)
            return fail(e, "%s: no %s", where, str_keys[i]);
        if (!is_str(v))
            return fail(e, "%s: %s is %s, not str", where, str_keys[i], type_name(v));
        if (!utf8_valid(v->via.str.ptr, v->via.str.size))
            return fail(e, "%s: %s is not valid UTF-8", where, str_keys[i]);
    }
    for (size_t i = 0; i < 3; i++) {
        const msgpack_object *v = map_get(s, uint_keys[i]);
        if (opt.lenient && i == 2 && (v == NULL || v->type == MSGPACK_OBJECT_NIL))
            continue;
        if (v == NULL)
            return fail(e, "%s: no %s", where, uint_keys[i]);
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return fail(e, "%s: %s is %s, not uint", where, uint_keys[i], type_name(v));
        if (i < 2 && v->via.u64 == 0)
            return fail(e, "%s: %s is 0", where, uint_keys[i]);
    }
    for (size_t i = 0; i < 3; i++) {
        const msgpack_object *v = map_get(s, int_keys[i]);
        if (opt.lenient && (v == NULL || v->type == MSGPACK_OBJECT_NIL))
            continue;
        if (v == NULL)
            return fail(e, "%s: no %s", where, int_keys[i]);
        if (!is_int(v))
            return fail(e, "%s: %s is %s, not int", where, int_keys[i], type_name(v));
    }
    const msgpack_object *meta = map_get(s, "meta"), *metrics = map_get(s, "metrics");
    if (opt.lenient && meta && meta->type == MSGPACK_OBJECT_NIL)
        meta = NULL;
    if (opt.lenient && metrics && metrics->type == MSGPACK_OBJECT_NIL)
        metrics = NULL;
    if (meta == NULL && !opt.lenient)
        return fail(e, "%s: no meta", where);
    if (metrics == NULL && !opt.lenient)
        return fail(e, "%s: no metrics", where);
    if ((meta && check_str_map(meta, "meta", e, where)) ||
        (metrics && check_str_map(metrics, "metrics", e, where)))
        return -1;
    return 0;
}

static int check_body(const msgpack_object *root, verr *e)
{
    char where[64];
    if (root->type != MSGPACK_OBJECT_ARRAY)
        return fail(e, "body is %s, not an array of traces", type_name(root));
    for (uint32_t c = 0; c < root->via.array.size; c++) {
        const msgpack_object *chunk = &root->via.array.ptr[c];
        if (chunk->type != MSGPACK_OBJECT_ARRAY)
            return fail(e, "trace %u is %s, not an array of spans", c, type_name(chunk));
        if (chunk->via.array.size == 0)
            return fail(e, "trace %u is empty", c);
        uint64_t tid = 0;
        for (uint32_t i = 0; i < chunk->via.array.size; i++) {
            snprintf(where, sizeof where, "trace %u span %u", c, i);
            const msgpack_object *s = &chunk->via.array.ptr[i];
            if (check_span(s, e, where))
                return -1;
            uint64_t t = map_get(s, "trace_id")->via.u64;
            if (i == 0)
                tid = t;
            else if (t != tid)
                return fail(e, "%s: trace_id %" PRIu64 " differs from the chunk's %" PRIu64, where, t, tid);
        }
        if (opt.lenient) {
            /* The Agent reads it from the root, else any span that has it. */
            int found = 0;
            for (uint32_t i = 0; i < chunk->via.array.size && !found; i++)
                found = map_get(map_get(&chunk->via.array.ptr[i], "metrics"), "_sampling_priority_v1") != NULL;
            if (!found)
                return fail(e, "trace %u: no span has _sampling_priority_v1", c);
        } else if (map_get(map_get(&chunk->via.array.ptr[0], "metrics"), "_sampling_priority_v1") == NULL)
            return fail(e, "trace %u: no _sampling_priority_v1 on its first span", c);
    }
    return 0;
}

/* ---- the waterfall ------------------------------------------------------- */

typedef struct wspan {
    uint64_t span_id, parent_id;
    int64_t start, duration;
    int error;
    char *service, *name, *resource, *errmsg;
} wspan;

typedef struct wtrace {
    struct wtrace *next;
    uint64_t trace_id;
    wspan *spans;
    size_t n, cap, hidden;
    int64_t last_ms;
} wtrace;

static wtrace *g_pending;
static size_t g_npending;
static pthread_mutex_t g_wf_mu = PTHREAD_MUTEX_INITIALIZER;

static char *obj_strdup(const msgpack_object *o)
{
    if (o == NULL || !is_str(o))
        return strdup("");
    return strndup(o->via.str.ptr, o->via.str.size);
}

static int64_t obj_i64(const msgpack_object *o)
{
    if (o == NULL)
        return 0;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64;
    return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o->via.u64 : 0;
}

/* An id, or 0 when absent or nil (--lenient). */
static uint64_t obj_u64(const msgpack_object *o)
{
    return (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) ? o->via.u64 : 0;
}

static void wtrace_free(wtrace *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->spans[i].service);
        free(t->spans[i].name);
        free(t->spans[i].resource);
        free(t->spans[i].errmsg);
    }
    free(t->spans);
    free(t);
}

static void waterfall_add_chunk(const msgpack_object *chunk)
{
    uint64_t tid = obj_u64(map_get(&chunk->via.array.ptr[0], "trace_id"));
    pthread_mutex_lock(&g_wf_mu);
    wtrace *t = g_pending;
    while (t && t->trace_id != tid)
        t = t->next;
    if (t == NULL && g_npending < MAX_PENDING_TRACES && (t = calloc(1, sizeof *t)) != NULL) {
        t->trace_id = tid;
        t->next = g_pending;
        g_pending = t;
        g_npending++;
    }
    for (uint32_t i = 0; t && i < chunk->via.array.size; i++) {
        const msgpack_object *s = &chunk->via.array.ptr[i];
        if (t->n == MAX_SPANS_SHOWN) {
            t->hidden++;
            continue;
        }
        if (t->n == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 16;
            wspan *ns = realloc(t->spans, cap * sizeof *ns);
            if (ns == NULL)
                break;
            t->spans = ns;
            t->cap = cap;
        }
        wspan *w = &t->spans[t->n++];
        w->span_id = obj_u64(map_get(s, "span_id"));
        w->parent_id = obj_u64(map_get(s, "parent_id"));
        w->start = obj_i64(map_get(s, "start"));
        w->duration = obj_i64(map_get(s, "duration"));
        w->error = obj_i64(map_get(s, "error")) != 0;
        w->service = obj_strdup(map_get(s, "service"));
        w->name = obj_strdup(map_get(s, "name"));
        w->resource = obj_strdup(map_get(s, "resource"));
        const msgpack_object *m = map_get(map_get(s, "meta"), "error.message");
        w->errmsg = m ? obj_strdup(m) : NULL;
    }
    if (t)
        t->last_ms = mono_ms();
    pthread_mutex_unlock(&g_wf_mu);
}

/* Display width: code points (the waterfall's text is mostly ASCII). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

/* Print s in exactly `width` columns: cut with "…" or padded with spaces.
 * Control characters (a newline in a SQL resource) print as spaces. */
static void put_cell(const char *s, size_t width)
{
    size_t w = text_width(s), cols = 0;
    size_t keep = w <= width ? w : (width ? width - 1 : 0);
    for (const char *p = s; *p && cols < keep; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f)
            c = ' ';
        putchar(c);
        if ((p[1] & 0xC0) != 0x80)
            cols++;
    }
    if (w > width && width) {
        fputs("…", stdout);
        cols++;
    }
    for (; cols < width; cols++)
        putchar(' ');
}

static int by_start(const void *a, const void *b)
{
    const wspan *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static int by_id(const void *a, const void *b, void *spans)
{
    const wspan *s = spans;
    uint64_t x = s[*(const size_t *)a].span_id, y = s[*(const size_t *)b].span_id;
    return x < y ? -1 : x > y;
}

static long find_span(const wspan *s, const size_t *by_id_idx, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint64_t v = s[by_id_idx[mid]].span_id;
        if (v == id)
            return (long)by_id_idx[mid];
        if (v < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static void print_trace(wtrace *t)
{
    size_t n = t->n;
    if (n == 0)
        return;
    qsort(t->spans, n, sizeof *t->spans, by_start);
    wspan *s = t->spans;
    size_t *idx = malloc(n * sizeof *idx);
    long *first = malloc(n * sizeof *first), *sibling = malloc(n * sizeof *sibling);
    size_t *order = malloc(n * sizeof *order), *depth = malloc(n * sizeof *depth);
    size_t *stack = malloc(n * sizeof *stack), *sdepth = malloc(n * sizeof *sdepth);
    char *seen = calloc(n, 1);
    if (!idx || !first || !sibling || !order || !depth || !stack || !sdepth || !seen)
        goto out;

    /* Children lists in start order: link from the latest start backwards. */
    for (size_t i = 0; i < n; i++)
        idx[i] = i, first[i] = -1, sibling[i] = -1;
    qsort_r(idx, n, sizeof *idx, by_id, s);
    long roots = -1;
    for (size_t k = n; k-- > 0;) {
        long p = s[k].parent_id ? find_span(s, idx, n, s[k].parent_id) : -1;
        if (p == (long)k)
            p = -1;
        long *head = p >= 0 ? &first[p] : &roots;
        sibling[k] = *head;
        *head = (long)k;
    }
    size_t norder = 0, sp = 0;
    for (long r = roots; r >= 0; r = sibling[r]) {
        stack[sp] = (size_t)r, sdepth[sp++] = 0;
        while (sp > 0) {
            size_t i = stack[--sp], d = sdepth[sp];
            if (seen[i])
                continue;
            seen[i] = 1;
            order[norder] = i, depth[norder++] = d;
            /* Push children in reverse so the earliest prints first. */
            size_t c0 = sp;
            for (long c = first[i]; c >= 0; c = sibling[c])
                stack[sp] = (size_t)c, sdepth[sp++] = d + 1;
            for (size_t a = c0, b = sp - 1; a < b && sp > c0; a++, b--) {
                size_t tmp = stack[a];
                stack[a] = stack[b], stack[b] = tmp;
            }
        }
    }
    for (size_t i = 0; i < n; i++) /* parent cycles: show them flat */
        if (!seen[i])
            order[norder] = i, depth[norder++] = 0;

    int64_t t0 = s[0].start, t1 = s[0].start + s[0].duration;
    size_t wsvc = 7, wname = 4, wres = 8;
    for (size_t k = 0; k < norder; k++) {
        const wspan *x = &s[order[k]];
        if (x->start < t0)
            t0 = x->start;
        if (x->start + x->duration > t1)
            t1 = x->start + x->duration;
        size_t d = depth[k] > 8 ? 8 : depth[k];
        size_t a = text_width(x->service), b = 2 * d + text_width(x->name), c = text_width(x->resource);
        wsvc = a > wsvc ? a : wsvc;
        wname = b > wname ? b : wname;
        wres = c > wres ? c : wres;
    }
    wsvc = wsvc > 20 ? 20 : wsvc;
    wname = wname > 36 ? 36 : wname;
    wres = wres > 44 ? 44 : wres;
    int64_t window = t1 - t0 > 0 ? t1 - t0 : 1;

    const char *bold = g_tty ? "\033[1m" : "", *red = g_tty ? "\033[31m" : "",
               *dim = g_tty ? "\033[2m" : "", *reset = g_tty ? "\033[0m" : "";
    printf("%strace %" PRIu64 "  ·  %zu span%s  ·  %.2f ms%s\n", bold, t->trace_id,
           n + t->hidden, n + t->hidden == 1 ? "" : "s", (double)window / 1e6, reset);
    for (size_t k = 0; k < norder; k++) {
        const wspan *x = &s[order[k]];
        size_t d = depth[k] > 8 ? 8 : depth[k];
        fputs("  ", stdout);
        put_cell(x->service, wsvc);
        fputs("  ", stdout);
        for (size_t i = 0; i < d && 2 * i + 2 <= wname; i++)
            fputs("  ", stdout);
        put_cell(x->name, wname > 2 * d ? wname - 2 * d : 0);
        fputs("  ", stdout);
        printf("%s", dim);
        put_cell(x->resource, wres);
        printf("%s  ", reset);
        int64_t c0 = (x->start - t0) * BAR_COLS / window;
        int64_t c1 = ((x->start + x->duration - t0) * BAR_COLS + window - 1) / window;
        if (c0 >= BAR_COLS)
            c0 = BAR_COLS - 1;
        if (c1 <= c0)
            c1 = c0 + 1;
        if (c1 > BAR_COLS)
            c1 = BAR_COLS;
        if (x->error)
            fputs(red, stdout);
        for (int64_t c = 0; c < BAR_COLS; c++)
            fputs(c >= c0 && c < c1 ? "█" : "·", stdout);
        printf("%s %9.2f ms", x->error ? reset : "", (double)x->duration / 1e6);
        if (x->error) {
            printf("  %sERROR%s", red, reset);
            if (x->errmsg && x->errmsg[0]) {
                putchar(' ');
                put_cell(x->errmsg, text_width(x->errmsg) > 80 ? 80 : text_width(x->errmsg));
            }
        }
        putchar('\n');
    }
    if (t->hidden)
        printf("  ... %zu more spans not shown\n", t->hidden);
    putchar('\n');
out:
    free(idx), free(first), free(sibling), free(order), free(depth), free(stack), free(sdepth);
    free(seen);
    fflush(stdout);
}

/* Print the traces whose last chunk is older than the grouping delay (all of
 * them when `all`). */
static void waterfall_print_ready(int all)
{
    int64_t now = mono_ms();
    wtrace *ready = NULL, **tail = &ready;
    pthread_mutex_lock(&g_wf_mu);
    for (wtrace **pp = &g_pending; *pp;) {
        wtrace *t = *pp;
        if (all || now - t->last_ms >= opt.group_ms) {
            *pp = t->next;
            g_npending--;
            t->next = NULL;
            *tail = t;
            tail = &t->next;
        } else {
            pp = &t->next;
        }
    }
    pthread_mutex_unlock(&g_wf_mu);
    /* Oldest first: the pending list is newest first. */
    wtrace *rev = NULL;
    while (ready) {
        wtrace *next = ready->next;
        ready->next = rev;
        rev = ready;
        ready = next;
    }
    while (rev) {
        wtrace *next = rev->next;
        print_trace(rev);
        wtrace_free(rev);
        rev = next;
    }
}

/* ---- JSON output --------------------------------------------------------- */

static json_t *obj_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        return json_stringn_nocheck(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 <= INT64_MAX ? json_integer((json_int_t)o->via.u64) : json_real((double)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
    default:
        return json_null();
    }
}

static json_t *map_to_json(const msgpack_object *m)
{
    json_t *j = json_object();
    for (uint32_t i = 0; m && m->type == MSGPACK_OBJECT_MAP && i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        char *key = strndup(k->via.str.ptr, k->via.str.size);
        if (key)
            json_object_set_new(j, key, obj_to_json(&m->via.map.ptr[i].val));
        free(key);
    }
    return j;
}

/* One span as a JSON object. The ids are written by hand: they are uint64 and
 * jansson's integers stop at 2^63 - 1. */
static void span_json(FILE *f, const msgpack_object *s)
{
    static const char *const keys[] = {"service", "name", "resource", "start", "duration", "error",
                                       "type"};
    json_t *j = json_object();
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const msgpack_object *v = map_get(s, keys[i]);
        json_object_set_new(j, keys[i], v ? obj_to_json(v) : json_null());
    }
    json_object_set_new(j, "meta", map_to_json(map_get(s, "meta")));
    json_object_set_new(j, "metrics", map_to_json(map_get(s, "metrics")));
    char *rest = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    fprintf(f, "{\"trace_id\":%" PRIu64 ",\"span_id\":%" PRIu64 ",\"parent_id\":%" PRIu64 ",%s",
            obj_u64(map_get(s, "trace_id")), obj_u64(map_get(s, "span_id")),
            obj_u64(map_get(s, "parent_id")), rest ? rest + 1 : "}");
    free(rest);
    json_decref(j);
}

static void write_line(FILE *f, const char *line, size_t len)
{
    pthread_mutex_lock(&g_files_mu);
    fwrite(line, 1, len, f);
    fputc('\n', f);
    fflush(f);
    pthread_mutex_unlock(&g_files_mu);
}

static void out_chunks(unsigned long seq, const char *headers_json, const msgpack_object *root)
{
    for (uint32_t c = 0; c < root->via.array.size; c++) {
        const msgpack_object *chunk = &root->via.array.ptr[c];
        char *line = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&line, &len);
        if (m == NULL)
            return;
        fprintf(m, "{\"payload\":%lu,\"headers\":%s,\"spans\":[", seq, headers_json);
        for (uint32_t i = 0; i < chunk->via.array.size; i++) {
            if (i)
                fputc(',', m);
            span_json(m, &chunk->via.array.ptr[i]);
        }
        fputs("]}", m);
        fclose(m);
        write_line(g_out, line, len);
        free(line);
    }
}

/* ---- HTTP ---------------------------------------------------------------- */

typedef struct request {
    unsigned long conn; /* which connection: shows keep-alive reuse */
    char *body;
    size_t len, cap;
    int too_large;
    json_t *headers;
} request;

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    (void)kind;
    char lower[256];
    size_t i;
    for (i = 0; key[i] && i < sizeof lower - 1; i++)
        lower[i] = (char)(key[i] >= 'A' && key[i] <= 'Z' ? key[i] + 32 : key[i]);
    lower[i] = '\0';
    json_object_set_new(cls, lower, json_string(value ? value : ""));
    return MHD_YES;
}

static void log_request(unsigned long seq, const char *method, const char *url, int status,
                        const request *rq, const char *error, size_t ntraces)
{
    if (g_requests == NULL)
        return;
    json_t *j = json_pack("{s:I, s:I, s:s, s:s, s:i, s:O, s:I}", "payload", (json_int_t)seq,
                          "connection", (json_int_t)rq->conn, "method", method, "path", url,
                          "status", status, "headers", rq->headers, "body_length",
                          (json_int_t)rq->len);
    if (error)
        json_object_set_new(j, "error", json_string(error));
    if (status == 200)
        json_object_set_new(j, "traces", json_integer((json_int_t)ntraces));
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s)
        write_line(g_requests, s, strlen(s));
    free(s);
    json_decref(j);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *body,
                             const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                             MHD_RESPMEM_MUST_COPY);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Datadog-Agent-Version", "ddshim-agent");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reject(struct MHD_Connection *c, unsigned long seq, const char *method,
                              const char *url, unsigned status, const request *rq, const char *why)
{
    fprintf(stderr, "ddshim-agent: %s %s -> %u %s\n", method, url, status, why);
    log_request(seq, method, url, (int)status, rq, why, 0);
    char body[600];
    snprintf(body, sizeof body, "%s\n", why);
    return reply(c, status, body, "text/plain");
}

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static enum MHD_Result handle_traces(struct MHD_Connection *c, unsigned long seq, const char *method,
                                     const char *url, request *rq)
{
    if (rq->too_large)
        return reject(c, seq, method, url, 413, rq, "payload-too-large");

    const char *ct = header(c, "Content-Type");
    if (ct == NULL || strncasecmp(ct, "application/msgpack", 19) != 0 || (ct[19] && ct[19] != ';'))
        return reject(c, seq, method, url, 400, rq, "Content-Type is not application/msgpack");
    if (header(c, "Content-Length") == NULL)
        return reject(c, seq, method, url, 400, rq, "no Content-Length (chunked bodies are not expected)");
    if (header(c, "Datadog-Meta-Lang") == NULL)
        return reject(c, seq, method, url, 400, rq, "no Datadog-Meta-Lang");
    if (header(c, "Datadog-Meta-Tracer-Version") == NULL)
        return reject(c, seq, method, url, 400, rq, "no Datadog-Meta-Tracer-Version");
    const char *tc = header(c, "X-Datadog-Trace-Count");
    if (tc == NULL)
        return reject(c, seq, method, url, 400, rq, "no X-Datadog-Trace-Count");
    char *end;
    errno = 0;
    unsigned long long count = strtoull(tc, &end, 10);
    if (errno || end == tc || *end)
        return reject(c, seq, method, url, 400, rq, "X-Datadog-Trace-Count is not a number");

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    verr e = {{0}};
    int rc = msgpack_unpack_next(&up, rq->body ? rq->body : "", rq->len, &off);
    if (rc != MSGPACK_UNPACK_SUCCESS)
        fail(&e, "body is not valid msgpack (%d)", rc);
    else if (off != rq->len)
        fail(&e, "%zu bytes after the msgpack body", rq->len - off);
    else if (check_body(&up.data, &e) == 0 && count != up.data.via.array.size)
        fail(&e, "X-Datadog-Trace-Count is %llu, the body has %u traces", count, up.data.via.array.size);
    if (e.msg[0]) {
        msgpack_unpacked_destroy(&up);
        return reject(c, seq, method, url, 400, rq, e.msg);
    }

    const msgpack_object *root = &up.data;
    if (g_out) {
        char *hj = json_dumps(rq->headers, JSON_COMPACT | JSON_PRESERVE_ORDER);
        out_chunks(seq, hj ? hj : "{}", root);
        free(hj);
    }
    if (!opt.quiet)
        for (uint32_t i = 0; i < root->via.array.size; i++)
            waterfall_add_chunk(&root->via.array.ptr[i]);
    size_t ntraces = root->via.array.size;
    msgpack_unpacked_destroy(&up);

    if (opt.fault == FAULT_GARBAGE) {
        log_request(seq, method, url, 200, rq, "fault garbage", ntraces);
        return reply(c, 200, "this is not JSON {", "application/json");
    }
    log_request(seq, method, url, 200, rq, NULL, ntraces);
    return reply(c, 200, opt.rates_body, "application/json");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    (void)cls;
    (void)version;
    request *rq = *con_cls;
    if (rq == NULL) {
        if ((rq = calloc(1, sizeof *rq)) == NULL)
            return MHD_NO;
        rq->headers = json_object();
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        rq->conn = ci ? (unsigned long)(uintptr_t)ci->socket_context : 0;
        MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, rq->headers);
        *con_cls = rq;
        return MHD_YES;
    }
    if (*data_size) {
        size_t n = *data_size;
        *data_size = 0;
        if (rq->too_large || rq->len + n > MAX_BODY) {
            rq->too_large = 1;
            rq->len += n;
            return MHD_YES;
        }
        if (rq->len + n > rq->cap) {
            size_t cap = rq->cap ? rq->cap : 64 * 1024;
            while (cap < rq->len + n)
                cap *= 2;
            char *b = realloc(rq->body, cap);
            if (b == NULL)
                return MHD_NO;
            rq->body = b;
            rq->cap = cap;
        }
        memcpy(rq->body + rq->len, data, n);
        rq->len += n;
        return MHD_YES;
    }

    unsigned long seq = __atomic_add_fetch(&g_seq, 1, __ATOMIC_RELAXED);
    switch (opt.fault) {
    case FAULT_HANG:
        log_request(seq, method, url, 0, rq, "fault hang", 0);
        sleep_unless_stopping(INT32_MAX);
        return MHD_NO;
    case FAULT_CLOSE:
        log_request(seq, method, url, 0, rq, "fault close", 0);
        return MHD_NO;
    case FAULT_SLOW:
        sleep_unless_stopping(opt.slow_ms);
        break;
    case FAULT_500:
        return reject(c, seq, method, url, 500, rq, "fault 500");
    case FAULT_413:
        return reject(c, seq, method, url, 413, rq, "fault 413");
    case FAULT_429:
        return reject(c, seq, method, url, 429, rq, "fault 429");
    default:
        break;
    }
    if (strcmp(url, "/v0.4/traces") != 0)
        return reject(c, seq, method, url, 404, rq, "not found (only /v0.4/traces is served)");
    return handle_traces(c, seq, method, url, rq);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode what)
{
    (void)cls, (void)c;
    if (what == MHD_CONNECTION_NOTIFY_STARTED)
        *socket_context = (void *)(uintptr_t)__atomic_add_fetch(&g_conn_seq, 1, __ATOMIC_RELAXED);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    request *rq = *con_cls;
    if (rq) {
        free(rq->body);
        json_decref(rq->headers);
        free(rq);
        *con_cls = NULL;
    }
}

/* ---- start-up ------------------------------------------------------------ */

static int listen_tcp(int port, int *bound)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *bound = ntohs(a.sin_port);
    return fd;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(a.sun_path, path);
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path); /* a stale socket from an earlier run */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    chmod(path, 0722); /* as the Agent: anyone may connect */
    return fd;
}

static void write_ready_file(const char *text)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", opt.ready_file, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%s\n", text) < 0 || fclose(f) != 0 || rename(tmp, opt.ready_file) != 0)
        fprintf(stderr, "ddshim-agent: cannot write %s: %s\n", opt.ready_file, strerror(errno));
}

/* libmicrohttpd's messages, minus the one each deliberate hang/close fault causes. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if ((opt.fault == FAULT_HANG || opt.fault == FAULT_CLOSE) &&
        strstr(msg, "Application reported internal error") != NULL)
        return;
    fprintf(stderr, "ddshim-agent: %s", msg);
}

static void on_signal(int sig)
{
    __atomic_store_n(&g_signalled, sig, __ATOMIC_RELEASE);
}

static void usage(FILE *f)
{
    fputs("usage: ddshim-agent [--port N | --unix PATH] [--out FILE] [--requests FILE]\n"
          "                    [--quiet] [--rates JSON] [--fault MODE] [--ready-file FILE]\n"
          "                    [--group-ms MS] [--lenient]\n"
          "  --port N          listen on 127.0.0.1:N (0: any free port, printed; default 8126)\n"
          "  --unix PATH       listen on a unix socket instead\n"
          "  --out FILE        append one JSON line per received trace chunk\n"
          "  --requests FILE   append one JSON line per request\n"
          "  --quiet           no waterfall on stdout\n"
          "  --lenient         accept what the Datadog Agent accepts from any tracer (absent or\n"
          "                    nil optional fields); default: ddshim's own strict contract\n"
          "  --rates JSON      the rate_by_service object answered (default {\"service:,env:\":1})\n"
          "  --fault MODE      500 | 413 | 429 | garbage | hang | close | slow:MS\n"
          "  --ready-file FILE write the port (or the socket path) there once listening\n"
          "  --group-ms MS     print a trace MS after its last chunk arrived (default 1200)\n",
          f);
}

static int parse_fault(const char *s)
{
    static const struct { const char *name; enum fault f; } names[] = {
        {"500", FAULT_500}, {"413", FAULT_413}, {"429", FAULT_429}, {"garbage", FAULT_GARBAGE},
        {"hang", FAULT_HANG}, {"close", FAULT_CLOSE}, {"none", FAULT_NONE},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcmp(s, names[i].name) == 0) {
            opt.fault = names[i].f;
            return 0;
        }
    if (strncmp(s, "slow:", 5) == 0 && atoi(s + 5) >= 0) {
        opt.fault = FAULT_SLOW;
        opt.slow_ms = atoi(s + 5);
        return 0;
    }
    return -1;
}

static FILE *open_append(const char *path)
{
    FILE *f = fopen(path, "ae");
    if (f == NULL) {
        fprintf(stderr, "ddshim-agent: cannot open %s: %s\n", path, strerror(errno));
        exit(2);
    }
    return f;
}

int main(int argc, char **argv)
{
    const char *rates = "{\"service:,env:\":1}";
    opt.port = 8126;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (strcmp(a, "--port") == 0 && v)
            opt.port = atoi(v);
        else if (strcmp(a, "--unix") == 0 && v)
            opt.unix_path = v;
        else if (strcmp(a, "--out") == 0 && v)
            opt.out_path = v;
        else if (strcmp(a, "--requests") == 0 && v)
            opt.requests_path = v;
        else if (strcmp(a, "--rates") == 0 && v)
            rates = v;
        else if (strcmp(a, "--ready-file") == 0 && v)
            opt.ready_file = v;
        else if (strcmp(a, "--group-ms") == 0 && v)
            opt.group_ms = atoi(v);
        else if (strcmp(a, "--fault") == 0 && v) {
            if (parse_fault(v) != 0) {
                fprintf(stderr, "ddshim-agent: unknown fault \"%s\"\n", v);
                return 2;
            }
        } else if (strcmp(a, "--quiet") == 0)
            opt.quiet = 1, takes = 0;
        else if (strcmp(a, "--lenient") == 0)
            opt.lenient = 1, takes = 0;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
        i += takes;
    }
    if (opt.port < 0 || opt.port > 65535) {
        fprintf(stderr, "ddshim-agent: bad port\n");
        return 2;
    }
    json_error_t jerr;
    json_t *r = json_loads(rates, 0, &jerr);
    if (r == NULL || !json_is_object(r)) {
        fprintf(stderr, "ddshim-agent: --rates must be a JSON object (%s)\n", r ? "not an object" : jerr.text);
        return 2;
    }
    json_t *answer = json_pack("{s:o}", "rate_by_service", r);
    opt.rates_body = json_dumps(answer, JSON_COMPACT);
    json_decref(answer);

    setvbuf(stdout, NULL, _IOLBF, 0);
    g_tty = isatty(1);
    if (opt.out_path)
        g_out = open_append(opt.out_path);
    if (opt.requests_path)
        g_requests = open_append(opt.requests_path);

    int bound = 0;
    int lfd = opt.unix_path ? listen_unix(opt.unix_path) : listen_tcp(opt.port, &bound);
    if (lfd < 0) {
        fprintf(stderr, "ddshim-agent: cannot listen on %s: %s\n",
                opt.unix_path ? opt.unix_path : "127.0.0.1", strerror(errno));
        return 1;
    }

    /* Signals: handled here, on the main thread only. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL,
        NULL, on_request, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET,
        lfd, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, NULL, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (d == NULL) {
        fprintf(stderr, "ddshim-agent: cannot start the HTTP server\n");
        return 1;
    }

    char where[600];
    if (opt.unix_path)
        snprintf(where, sizeof where, "%s", opt.unix_path);
    else
        snprintf(where, sizeof where, "%d", bound);
    printf("ddshim-agent listening on %s%s%s\n", opt.unix_path ? "unix://" : "http://127.0.0.1:",
           where, opt.fault != FAULT_NONE ? " (fault injection on)" : "");
    if (opt.ready_file)
        write_ready_file(where);

    while (!__atomic_load_n(&g_signalled, __ATOMIC_ACQUIRE)) {
        sleep_ms(50);
        if (!opt.quiet)
            waterfall_print_ready(0);
    }
    __atomic_store_n(&g_stopping, 1, __ATOMIC_RELEASE);
    MHD_stop_daemon(d);
    if (!opt.quiet)
        waterfall_print_ready(1);
    if (g_out)
        fclose(g_out);
    if (g_requests)
        fclose(g_requests);
    if (opt.unix_path)
        unlink(opt.unix_path);
    free(opt.rates_body);
    return 0;
}
