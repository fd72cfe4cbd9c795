/*
 * url.c — see url.h.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "url.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* Datadog's default, as dd-trace-py defines it (with the x flag: the space
 * before "bearer" is not part of the expression). Data, not code. */
const char dds_url_default_query_regexp[] =
    "(?ix)"
    "(?:"
    "(?:\"|%22)?"
    ")"
    "(?:"
    "(?:old[-_]?|new[-_]?)?p(?:ass)?w(?:or)?d(?:1|2)?"
    "|pass(?:[-_]?phrase)?"
    "|secret"
    "|(?:"
    "api[-_]?"
    "|private[-_]?"
    "|public[-_]?"
    "|access[-_]?"
    "|secret[-_]?"
    "|app(?:lica"
    "tion)?[-_]?"
    ")key(?:[-_]?id)?"
    "|token"
    "|consumer[-_]?(?:id|key|secret)"
    "|sign(?:ed|ature)?"
    "|auth(?:entication|orization)?"
    ")"
    "(?:"
    "(?:\\s|%20)*(?:=|%3D)[^&]+"
    "|(?:\"|%22)"
    "(?:\\s|%20)*(?::|%3A)(?:\\s|%20)*"
    "(?:\"|%22)"
    "(?:%2[^2]|%[^2]|[^\"%])+"
    "(?:\"|%22)"
    ")"
    "|(?:"
    " bearer(?:\\s|%20)+[a-z0-9._\\-]+"
    "|token(?::|%3A)[a-z0-9]{13}"
    "|gh[opsu]_[0-9a-zA-Z]{36}"
    "|ey[I-L](?:[\\w=-]|%3D)+\\.ey[I-L](?:[\\w=-]|%3D)+(?:\\.(?:[\\w.+/=-]|%3D|%2F|%2B)+)?"
    "|-{5}BEGIN(?:[a-z\\s]|%20)+PRIVATE(?:\\s|%20)KEY-{5}[^\\-]+-{5}END"
    "(?:[a-z\\s]|%20)+PRIVATE(?:\\s|%20)KEY(?:-{5})?(?:\\n|%0A)?"
    "|(?:ssh-(?:rsa|dss)|ecdsa-[a-z0-9]+-[a-z0-9]+)(?:\\s|%20|%09)+(?:[a-z0-9/.+]"
    "|%2F|%5C|%2B){100,}(?:=|%3D)*(?:(?:\\s|%20|%09)+[a-z0-9._-]+)?"
    ")";

/* Budgets. On the worst DDS_URL_MAX_QUERY-byte inputs we know of, the default
 * expression needs 128 KiB of JIT stack, or (interpreter, when JIT is not
 * available) a depth of ~4100 and ~1 MiB of heap; these leave headroom. A user
 * expression that backtracks past them gets the whole query redacted instead
 * of stalling an application thread. */
#define MATCH_LIMIT 1000000
#define DEPTH_LIMIT 20000
#define HEAP_LIMIT_KIB 2048
#define JIT_STACK_START (32 * 1024)
#define JIT_STACK_MAX (512 * 1024)
#define MAX_MATCH_CALLS 1024

enum { MODE_UNSET = 0, MODE_REGEX, MODE_OFF, MODE_ALL };

static pcre2_code *g_code;
static pcre2_match_context *g_mctx;
static int g_mode;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* The JIT's default 32 KiB stack is too small for a 4 KiB query (a repeated
 * group over thousands of characters), so each thread that redacts gets its
 * own, made on first use and freed when the thread exits. If that fails, PCRE2
 * uses the small default and a long match trips the limit: full redaction. */
static pthread_key_t g_jit_key;
static int g_jit_key_ok;
static pthread_once_t g_jit_once = PTHREAD_ONCE_INIT;

static void jit_stack_free(void *p)
{
    pcre2_jit_stack_free(p);
}

static void jit_key_init(void)
{
    g_jit_key_ok = pthread_key_create(&g_jit_key, jit_stack_free) == 0;
}

static pcre2_jit_stack *jit_stack_for_thread(void *unused)
{
    pcre2_jit_stack *js;
    (void)unused;
    pthread_once(&g_jit_once, jit_key_init);
    if (!g_jit_key_ok)
        return NULL;
    js = pthread_getspecific(g_jit_key);
    if (!js) {
        js = pcre2_jit_stack_create(JIT_STACK_START, JIT_STACK_MAX, NULL);
        if (js && pthread_setspecific(g_jit_key, js) != 0) {
            pcre2_jit_stack_free(js);
            js = NULL;
        }
    }
    return js;
}

static pcre2_code *compile(const char *re)
{
    int err;
    PCRE2_SIZE eoff;
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, 0, &err, &eoff, NULL);
    if (c)
        (void)pcre2_jit_compile(c, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    return c;
}

void dds_url_shutdown(void)
{
    pcre2_code_free(g_code);
    pcre2_match_context_free(g_mctx);
    g_code = NULL;
    g_mctx = NULL;
    __atomic_store_n(&g_mode, MODE_UNSET, __ATOMIC_RELEASE);
}

int dds_url_init(const char *query_regexp)
{
    int rc = 0;
    pcre2_code *c = NULL;

    dds_url_shutdown();
    if (query_regexp && query_regexp[0] == '\0') {
        __atomic_store_n(&g_mode, MODE_OFF, __ATOMIC_RELEASE);
        return 0;
    }
    if (query_regexp) {
        c = compile(query_regexp);
        if (!c)
            rc = -1;
    }
    if (!c)
        c = compile(dds_url_default_query_regexp);
    if (c)
        g_mctx = pcre2_match_context_create(NULL);
    if (!c || !g_mctx) {
        pcre2_code_free(c);
        pcre2_match_context_free(g_mctx);
        g_mctx = NULL;
        /* cannot match: hide every query rather than none */
        __atomic_store_n(&g_mode, MODE_ALL, __ATOMIC_RELEASE);
        return -1;
    }
    pcre2_set_match_limit(g_mctx, MATCH_LIMIT);
    pcre2_set_depth_limit(g_mctx, DEPTH_LIMIT);
    pcre2_set_heap_limit(g_mctx, HEAP_LIMIT_KIB);
    pcre2_jit_stack_assign(g_mctx, jit_stack_for_thread, NULL);
    g_code = c;
    __atomic_store_n(&g_mode, MODE_REGEX, __ATOMIC_RELEASE); /* publishes g_code, g_mctx */
    return rc;
}

static void default_init(void)
{
    if (__atomic_load_n(&g_mode, __ATOMIC_ACQUIRE) == MODE_UNSET)
        (void)dds_url_init(NULL);
}

static int current_mode(void)
{
    int m = __atomic_load_n(&g_mode, __ATOMIC_ACQUIRE);
    if (m == MODE_UNSET) {
        pthread_once(&g_once, default_init);
        m = __atomic_load_n(&g_mode, __ATOMIC_ACQUIRE);
    }
    return m;
}

/* ---- bounded output ---- */

typedef struct sb {
    char *p;
    size_t cap, n; /* n < cap whenever cap > 0 */
} sb;

static void sb_put(sb *b, const char *s, size_t n)
{
    size_t room;
    if (b->cap == 0)
        return;
    room = b->cap - 1 - b->n;
    if (n > room)
        n = room;
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void sb_puts(sb *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static size_t sb_end(sb *b)
{
    if (b->cap)
        b->p[b->n] = '\0';
    return b->n;
}

/* ---- query redaction ---- */

static void redact_into(sb *b, const char *q, size_t n)
{
    size_t start = b->n, pos = 0, copied = 0;
    pcre2_match_data *md;
    int calls = 0, mode;

    if (n == 0)
        return;
    mode = current_mode();
    if (mode == MODE_OFF) {
        sb_put(b, q, n);
        return;
    }
    if (mode != MODE_REGEX || n > DDS_URL_MAX_QUERY) {
        sb_puts(b, DDS_URL_REDACTED);
        return;
    }
    md = pcre2_match_data_create(1, NULL);
    if (!md) {
        sb_puts(b, DDS_URL_REDACTED);
        return;
    }
    while (pos < n) {
        PCRE2_SIZE *ov;
        size_t ms, me;
        int rc;
        if (++calls > MAX_MATCH_CALLS)
            goto all;
        /* NOTEMPTY: an empty match hides nothing, and skipping them one
         * position at a time would cost a call per byte. */
        rc = pcre2_match(g_code, (PCRE2_SPTR)q, n, pos, PCRE2_NOTEMPTY, md, g_mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            goto all; /* a limit, or an error: do not guess */
        ov = pcre2_get_ovector_pointer(md);
        ms = ov[0];
        me = ov[1];
        if (ms < copied || me < ms || me > n)
            goto all; /* \K and lookbehind games */
        if (me == ms)
            goto all; /* NOTEMPTY makes this impossible; do not loop on it */
        sb_put(b, q + copied, ms - copied);
        sb_puts(b, DDS_URL_REDACTED);
        copied = pos = me;
    }
    sb_put(b, q + copied, n - copied);
    pcre2_match_data_free(md);
    return;
all:
    pcre2_match_data_free(md);
    b->n = start;
    sb_puts(b, DDS_URL_REDACTED);
}

size_t dds_url_redact_query(char *out, size_t cap, const char *q, size_t qlen)
{
    sb b = { out, cap, 0 };
    if (q)
        redact_into(&b, q, qlen);
    return sb_end(&b);
}

/* ---- URL pieces ---- */

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Length of "scheme" when t starts with "scheme://", else 0. */
static size_t abs_scheme_len(const char *t, size_t n)
{
    size_t i;
    if (n == 0 || !is_alpha(t[0]))
        return 0;
    for (i = 1; i < n && i < 32; i++) {
        char c = t[i];
        if (c == ':')
            break;
        if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.')
            return 0;
    }
    if (i + 2 < n && t[i] == ':' && t[i + 1] == '/' && t[i + 2] == '/')
        return i;
    return 0;
}

/* Byte classes for hosts and paths (ASCII; no locale). */
enum {
    U_DIGIT = 1, U_HEX = 2,      /* 0-9; a-f A-F */
    U_SPECIAL = 4,               /* % & ' ( ) * + , : = @: a path segment with one is a value */
    U_CTL = 8,                   /* controls, SP, DEL: never copied from a host */
    U_AT = 16                    /* '@': the end of userinfo */
};
static const unsigned char ucls[256] = {
    [0x00 ... 0x20] = U_CTL, [0x7f] = U_CTL,
    ['0' ... '9'] = U_DIGIT, ['a' ... 'f'] = U_HEX, ['A' ... 'F'] = U_HEX,
    ['%'] = U_SPECIAL, ['&'] = U_SPECIAL, ['\''] = U_SPECIAL, ['('] = U_SPECIAL,
    [')'] = U_SPECIAL, ['*'] = U_SPECIAL, ['+'] = U_SPECIAL, [','] = U_SPECIAL,
    [':'] = U_SPECIAL, ['='] = U_SPECIAL, ['@'] = U_SPECIAL | U_AT,
};

/* Host text without userinfo (everything up to the last '@') and without
 * whitespace or control characters. One pass finds both; a host with no
 * such character after its userinfo (nearly all) is copied whole. */
static void put_host(sb *b, const char *h, size_t n)
{
    const unsigned char *u = (const unsigned char *)h;
    size_t i, s = 0, e;
    int ctl = 0; /* a control, SP or DEL after the last '@' */
    for (i = 0; i < n; i++) {
        unsigned c = ucls[u[i]];
        if (c & (U_AT | U_CTL)) {
            if (c & U_AT) {
                s = i + 1;
                ctl = 0;
            } else {
                ctl = 1;
            }
        }
    }
    if (!ctl) {
        sb_put(b, h + s, n - s);
        return;
    }
    /* the bytes other than controls, SP and DEL, a run at a time */
    for (i = s; i < n; i = e + 1) {
        e = i;
        while (e < n && !(ucls[u[e]] & U_CTL))
            e++;
        sb_put(b, h + i, e - i);
    }
}

/* Splits an origin-form remainder into path, and query (has_q when a '?' came
 * before any '#'). The fragment is dropped. */
static void split_pq(const char *t, size_t n, size_t *plen, const char **q, size_t *qlen, int *has_q)
{
    const char *hash = n ? memchr(t, '#', n) : NULL;
    size_t hn = hash ? (size_t)(hash - t) : n;
    const char *qm = hn ? memchr(t, '?', hn) : NULL;
    if (qm) {
        *plen = (size_t)(qm - t);
        *has_q = 1;
        *q = qm + 1;
        *qlen = hn - *plen - 1;
    } else {
        *plen = hn;
        *has_q = 0;
        *q = NULL;
        *qlen = 0;
    }
}

static void put_path_query(sb *b, const char *t, size_t n)
{
    size_t plen, qlen;
    const char *q;
    int has_q;
    split_pq(t, n, &plen, &q, &qlen, &has_q);
    sb_put(b, t, plen);
    if (has_q && qlen > 0) {
        sb_put(b, "?", 1);
        redact_into(b, q, qlen);
    }
}

/* The authority of an absolute-form target: from after "://" to the first
 * '/', '?' or '#'. */
static size_t authority_len(const char *t, size_t n)
{
    size_t i = 0;
    while (i < n && t[i] != '/' && t[i] != '?' && t[i] != '#')
        i++;
    return i;
}

size_t dds_url_build(char *out, size_t cap, const char *scheme, const char *host_hdr,
                     size_t host_len, const char *peer_host, int peer_port,
                     const char *target, size_t target_len)
{
    sb b = { out, cap, 0 };
    size_t sl;

    if (!target)
        target_len = 0;
    sl = abs_scheme_len(target, target_len);
    if (sl) {
        const char *rest = target + sl + 3;
        size_t rn = target_len - sl - 3, al = authority_len(rest, rn), i;
        for (i = 0; i < sl; i++) {
            char c = target[i];
            if (c >= 'A' && c <= 'Z')
                c = (char)(c + 32);
            sb_put(&b, &c, 1);
        }
        sb_puts(&b, "://");
        put_host(&b, rest, al);
        put_path_query(&b, rest + al, rn - al);
        return sb_end(&b);
    }

    if (!scheme || !scheme[0])
        scheme = "http";
    sb_puts(&b, scheme);
    sb_puts(&b, "://");
    if (host_hdr && host_len > 0) {
        put_host(&b, host_hdr, host_len);
    } else if (target_len > 0 && target[0] != '/' && !(target_len == 1 && target[0] == '*')) {
        put_host(&b, target, target_len); /* authority-form: CONNECT host:port */
        return sb_end(&b);
    } else if (peer_host && peer_host[0]) {
        int v6 = strchr(peer_host, ':') != NULL && peer_host[0] != '[';
        int dflt = (strcmp(scheme, "http") == 0 && peer_port == 80) ||
                   (strcmp(scheme, "https") == 0 && peer_port == 443);
        if (v6)
            sb_put(&b, "[", 1);
        sb_puts(&b, peer_host);
        if (v6)
            sb_put(&b, "]", 1);
        if (peer_port > 0 && !dflt) {
            char pb[16];
            int k = 0, p = peer_port;
            char tmp[16];
            while (p > 0 && k < 15) {
                tmp[k++] = (char)('0' + p % 10);
                p /= 10;
            }
            pb[0] = ':';
            for (int i = 0; i < k; i++)
                pb[1 + i] = tmp[k - 1 - i];
            sb_put(&b, pb, (size_t)k + 1);
        }
    }
    /* An authority-form target with a Host header adds nothing to the host. */
    if (target_len > 0 && target[0] == '/')
        put_path_query(&b, target, target_len);
    return sb_end(&b);
}

/* ---- resource names ---- */

/* Whether a path segment is a value rather than a name. The classes are those
 * of Datadog's endpoint inference; every one of them becomes "?". */
static int id_like(const char *s, size_t n)
{
    size_t digits = 0, hex = 0, delim = 0, i;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        unsigned k = ucls[(unsigned char)c];
        if (k & U_SPECIAL)
            return 1;
        if (k & U_DIGIT)
            digits++;
        else if (k & U_HEX)
            hex++;
        else if (c == '.' || c == '_' || c == '-')
            delim++;
    }
    if (digits == 0)
        return 0;        /* every other class needs a digit */
    if (digits == n)
        return 1;        /* 42, 007 */
    if (n >= 20)
        return 1;        /* a long token with digits in it */
    if (digits + hex + delim != n)
        return 0;        /* other letters: v2, x86_64, page3 */
    if (hex == 0)
        return n >= 3;   /* 2024-01-31, 1.2.3 */
    return n >= 6;       /* a1b2c3, UUIDs, hashes */
}

size_t dds_url_resource(char *out, size_t cap, const char *method,
                        const char *target, size_t target_len)
{
    sb b = { out, cap, 0 };
    const char *path = target;
    const unsigned char *u;
    size_t plen, qlen, sl, i, seg, run;
    const char *q;
    int has_q;

    if (!target)
        target_len = 0;
    if (method && method[0]) {
        sb_puts(&b, method);
        sb_put(&b, " ", 1);
    }
    sl = abs_scheme_len(target, target_len);
    if (sl) {
        const char *rest = target + sl + 3;
        size_t rn = target_len - sl - 3, al = authority_len(rest, rn);
        path = rest + al;
        target_len = rn - al;
    } else if (target_len > 0 && target[0] != '/') {
        sb_put(&b, target, target_len); /* "*", or CONNECT's authority */
        return sb_end(&b);
    }
    split_pq(path, target_len, &plen, &q, &qlen, &has_q);
    if (plen == 0) {
        sb_put(&b, "/", 1);
        return sb_end(&b);
    }
    /* Segments between '/'s. Those kept are copied in runs with the slashes
     * between them (pieces put one after another truncate where their
     * concatenation would); a segment with no digit and no special character
     * is never id-like, so only the others are looked at closely. */
    u = (const unsigned char *)path;
    for (i = 0, run = 0;; i++) {
        unsigned acc = 0;
        seg = i;
        while (i < plen && u[i] != '/')
            acc |= ucls[u[i++]];
        if ((acc & (U_DIGIT | U_SPECIAL)) && id_like(path + seg, i - seg)) {
            sb_put(&b, path + run, seg - run);
            sb_put(&b, "?", 1);
            run = i;
        }
        if (i == plen)
            break;
    }
    sb_put(&b, path + run, plen - run);
    return sb_end(&b);
}
