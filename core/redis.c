/* See redis.h. The obfuscation table follows Datadog's Agent
 * (pkg/obfuscate/redis.go) for the commands it lists; the keep-all list and the
 * hide-by-default rule for everything else are ddshim's, so that an unknown
 * command cannot leak a value. */
#define _GNU_SOURCE
#include "redis.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* ---- parsing ----------------------------------------------------------- */

/* Decimal digits then CRLF at buf[*pos]. 1: read; 0: buf ends first; -1: not
 * a number (or larger than max). */
static int read_num(const char *buf, size_t len, size_t *pos, unsigned long long max,
                    unsigned long long *out)
{
    size_t p = *pos;
    unsigned long long v = 0;
    int digits = 0;
    while (p < len && buf[p] >= '0' && buf[p] <= '9') {
        if (++digits > 15)
            return -1;
        v = v * 10 + (unsigned long long)(buf[p] - '0');
        p++;
    }
    if (p >= len)
        return 0;
    if (digits == 0 || v > max || buf[p] != '\r')
        return -1;
    if (p + 1 >= len)
        return 0;
    if (buf[p + 1] != '\n')
        return -1;
    *pos = p + 2;
    *out = v;
    return 1;
}

static void add_arg(dds_redis_cmd *out, long idx, const char *p, size_t len)
{
    if (idx < DDS_REDIS_MAX_ARGS) {
        out->arg[idx].p = p;
        out->arg[idx].len = len;
        out->nargs = (int)idx + 1;
    }
}

static long parse_inline(const char *buf, size_t len, dds_redis_cmd *out)
{
    unsigned char c0 = (unsigned char)buf[0];
    if (c0 < 0x20 && c0 != ' ' && c0 != '\t' && c0 != '\r' && c0 != '\n')
        return -1;
    if (c0 >= 0x7f)
        return -1;
    size_t scan = len < DDS_REDIS_INLINE_MAX ? len : DDS_REDIS_INLINE_MAX;
    const char *nl = memchr(buf, '\n', scan);
    size_t end;
    if (nl == NULL) {
        if (len >= DDS_REDIS_INLINE_MAX)
            return -1;
        out->truncated = 1;
        end = len;
    } else {
        end = (size_t)(nl - buf);
    }
    size_t line = end;
    if (nl && line > 0 && buf[line - 1] == '\r')
        line--;
    size_t i = 0;
    while (i < line) {
        while (i < line && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        if (i >= line)
            break;
        size_t s = i;
        while (i < line && buf[i] != ' ' && buf[i] != '\t')
            i++;
        add_arg(out, out->argc, buf + s, i - s);
        out->argc++;
    }
    return nl ? (long)(end + 1) : 0;
}

static void set_name(dds_redis_cmd *out);

static long parse_any(const char *buf, size_t len, dds_redis_cmd *out)
{
    out->argc = 0;
    out->nargs = 0;
    out->truncated = 0;
    if (buf == NULL || len == 0) {
        out->truncated = 1;
        return 0;
    }
    if (buf[0] != '*')
        return parse_inline(buf, len, out);

    size_t pos = 1;
    unsigned long long n, alen;
    int r = read_num(buf, len, &pos, 1000000000ULL, &n);
    if (r <= 0) {
        out->truncated = r == 0;
        return r;
    }
    out->argc = (long)n;
    /* Every argument takes at least 6 bytes ("$0\r\n\r\n"), so this loop is
     * bounded by len whatever n says. */
    for (unsigned long long i = 0; i < n; i++) {
        if (pos >= len) {
            out->truncated = 1;
            return 0;
        }
        if (buf[pos] != '$')
            return -1;
        pos++;
        r = read_num(buf, len, &pos, 1ULL << 40, &alen);
        if (r <= 0) {
            out->truncated = r == 0;
            return r;
        }
        size_t avail = len - pos;
        add_arg(out, (long)i, buf + pos, alen < avail ? (size_t)alen : avail);
        if (avail < 2 || alen > avail - 2) {
            out->truncated = 1;
            return 0;
        }
        if (buf[pos + alen] != '\r' || buf[pos + alen + 1] != '\n')
            return -1;
        pos += (size_t)alen + 2;
    }
    return (long)pos;
}

long dds_redis_parse(const char *buf, size_t len, dds_redis_cmd *out)
{
    long r = parse_any(buf, len, out);
    set_name(out);
    return r;
}

static int needs_args(const dds_redis_cmd *c);
static void set_head_name(dds_redis_cmd *out);

long dds_redis_parse_head(const char *buf, size_t len, dds_redis_cmd *out)
{
    out->argc = 0;
    out->nargs = 0;
    out->truncated = 0;
    if (buf == NULL || len == 0 || buf[0] != '*')
        return dds_redis_parse(buf, len, out);
    size_t pos = 1;
    unsigned long long n, alen;
    int r = read_num(buf, len, &pos, 1000000000ULL, &n);
    if (r > 0 && n > 0) {
        if (pos >= len)
            r = 0;
        else if (buf[pos] != '$')
            r = -1;
        else {
            pos++;
            r = read_num(buf, len, &pos, 1ULL << 40, &alen);
        }
        if (r > 0 && (len - pos < 2 || alen > len - pos - 2))
            r = 0;
        else if (r > 0 && (buf[pos + alen] != '\r' || buf[pos + alen + 1] != '\n'))
            r = -1;
    }
    if (r <= 0) /* what dds_redis_parse makes of it */
        return dds_redis_parse(buf, len, out);
    out->argc = (long)n;
    if (n > 0)
        add_arg(out, 0, buf + pos, (size_t)alen);
    set_head_name(out);
    if (needs_args(out))
        return dds_redis_parse(buf, len, out);
    return n > 0 ? (long)(pos + alen + 2) : (long)pos;
}

void dds_redis_from_argv(dds_redis_cmd *out, int argc, const char *const *argv,
                         const size_t *argvlen)
{
    out->argc = argc > 0 ? argc : 0;
    out->nargs = 0;
    out->truncated = 0;
    out->name[0] = '\0';
    if (argv == NULL) {
        out->argc = 0;
        return;
    }
    for (int i = 0; i < argc && i < DDS_REDIS_MAX_ARGS; i++) {
        const char *p = argv[i] ? argv[i] : "";
        add_arg(out, i, p, argvlen ? argvlen[i] : strlen(p));
        if (argv[i] == NULL)
            out->arg[i].len = 0;
    }
    set_name(out);
}

/* ---- names ------------------------------------------------------------- */

#define NAME_MAX_LEN 32

static int up(int c)
{
    return c >= 'a' && c <= 'z' ? c - 32 : c;
}

/* The argument upper-cased, at most NAME_MAX_LEN bytes, anything but
 * printable ASCII as '_'. */
static size_t upper_name(const dds_redis_arg *a, char *out)
{
    size_t n = a->len < NAME_MAX_LEN ? a->len : NAME_MAX_LEN;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a->p[i];
        out[i] = (c > 0x20 && c < 0x7f) ? (char)up(c) : '_';
    }
    out[n] = '\0';
    return n;
}

static int arg_is(const dds_redis_arg *a, const char *word)
{
    size_t n = strlen(word);
    if (a->len != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (up((unsigned char)a->p[i]) != word[i])
            return 0;
    return 1;
}

/* A subcommand: a short word of letters, digits, '-' and '_'. */
static int is_word(const dds_redis_arg *a)
{
    if (a->len == 0 || a->len > NAME_MAX_LEN)
        return 0;
    for (size_t i = 0; i < a->len; i++) {
        unsigned char c = (unsigned char)a->p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return 1;
}

enum { CL_TWO_WORD = 1, CL_PUBSUB = 2, CL_KEEP_ALL = 4, CL_ARGS = 8 };

/* Commands named by two words in the resource. The Agent's quantizer uses the
 * first six; the others are containers of subcommands just the same. */
static const char *const two_word[] = {
    "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "SCRIPT",
    "ACL", "FUNCTION", "LATENCY", "MEMORY", "MODULE", "OBJECT", "PUBSUB", "SLOWLOG",
    "XGROUP", "XINFO", NULL,
};

size_t dds_redis_resource(const dds_redis_cmd *c, char *buf, size_t cap)
{
    char sub[NAME_MAX_LEN + 1];
    const char *name = c->name;
    if (cap == 0)
        return 0;
    buf[0] = '\0';
    if (c->nargs == 0 || c->arg[0].len == 0 || cap < 2 * NAME_MAX_LEN + 2)
        return 0;
    size_t n = c->arg[0].len < NAME_MAX_LEN ? c->arg[0].len : NAME_MAX_LEN;
    memcpy(buf, name, n + 1);
    if (c->nargs >= 2 && (c->name_class & CL_TWO_WORD) && is_word(&c->arg[1])) {
        size_t k = upper_name(&c->arg[1], sub);
        buf[n] = ' ';
        memcpy(buf + n + 1, sub, k + 1);
        n += 1 + k;
    }
    return n;
}

static const char *const pubsub[] = {
    "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
    "MONITOR", NULL,
};

int dds_redis_is_pubsub(const dds_redis_cmd *c)
{
    if (c->nargs == 0)
        return 0;
    return (c->name_class & CL_PUBSUB) != 0;
}

static int small_uint(const dds_redis_arg *a, int maxdigits)
{
    if (a->len == 0 || a->len > (size_t)maxdigits)
        return -1;
    int v = 0;
    for (size_t i = 0; i < a->len; i++) {
        if (a->p[i] < '0' || a->p[i] > '9')
            return -1;
        v = v * 10 + (a->p[i] - '0');
    }
    return v;
}

/* The commands dds_redis_parse_head reads whole: their arguments matter to
 * the hook while the command is sent. */
static const char *const with_args[] = {"SELECT", NULL};

static int needs_args(const dds_redis_cmd *c)
{
    return (c->name_class & CL_ARGS) != 0;
}

int dds_redis_select_db(const dds_redis_cmd *c)
{
    if (c->nargs < 2 || !arg_is(&c->arg[0], "SELECT"))
        return -1;
    return small_uint(&c->arg[1], 6);
}

/* ---- obfuscation ------------------------------------------------------- */

enum { R_DEFAULT, R_KEEP, R_HIDE_ALL, R_ARGN, R_STEP, R_CONFIG, R_BITFIELD, R_ZADD,
       R_EVAL, R_EVALSHA, R_SUBLOAD };

typedef struct rule {
    const char *name;
    unsigned char kind;
    /* R_ARGN: a = position (1 = first argument); R_STEP: a = start, b = step, as the Agent's */
    unsigned char a, b;
} rule;

static const rule rules[] = {
    /* The Agent's rules. */
    {"AUTH", R_HIDE_ALL, 0, 0}, {"HELLO", R_HIDE_ALL, 0, 0}, {"MIGRATE", R_HIDE_ALL, 0, 0},
    {"APPEND", R_ARGN, 2, 0}, {"GETSET", R_ARGN, 2, 0}, {"LPUSHX", R_ARGN, 2, 0},
    {"GEORADIUSBYMEMBER", R_ARGN, 2, 0}, {"RPUSHX", R_ARGN, 2, 0}, {"SET", R_ARGN, 2, 0},
    {"SETNX", R_ARGN, 2, 0}, {"SISMEMBER", R_ARGN, 2, 0}, {"ZRANK", R_ARGN, 2, 0},
    {"ZREVRANK", R_ARGN, 2, 0}, {"ZSCORE", R_ARGN, 2, 0},
    {"HSETNX", R_ARGN, 3, 0}, {"LREM", R_ARGN, 3, 0}, {"LSET", R_ARGN, 3, 0},
    {"SETBIT", R_ARGN, 3, 0}, {"SETEX", R_ARGN, 3, 0}, {"PSETEX", R_ARGN, 3, 0},
    {"SETRANGE", R_ARGN, 3, 0}, {"ZINCRBY", R_ARGN, 3, 0}, {"SMOVE", R_ARGN, 3, 0},
    {"RESTORE", R_ARGN, 3, 0},
    {"LINSERT", R_ARGN, 4, 0},
    {"GEOADD", R_STEP, 1, 3}, {"HMSET", R_STEP, 1, 2}, {"HSET", R_STEP, 1, 2},
    {"MSET", R_STEP, 0, 2}, {"MSETNX", R_STEP, 0, 2},
    {"CONFIG", R_CONFIG, 0, 0}, {"BITFIELD", R_BITFIELD, 0, 0}, {"ZADD", R_ZADD, 0, 0},
    /* GEOHASH GEOPOS GEODIST LPUSH RPUSH SREM ZREM SADD ACL: R_DEFAULT ("key ?"), as the Agent. */
    /* ddshim's: values the Agent would show. */
    {"ECHO", R_HIDE_ALL, 0, 0}, {"PING", R_HIDE_ALL, 0, 0},
    {"EVAL", R_EVAL, 0, 0}, {"EVAL_RO", R_EVAL, 0, 0},
    {"EVALSHA", R_EVALSHA, 0, 0}, {"EVALSHA_RO", R_EVALSHA, 0, 0},
    {"FCALL", R_EVALSHA, 0, 0}, {"FCALL_RO", R_EVALSHA, 0, 0},
    {"SCRIPT", R_SUBLOAD, 0, 0}, {"FUNCTION", R_SUBLOAD, 0, 0},
};

/* Commands whose arguments are keys, fields, channels, counts, indices or
 * options, never values: shown whole. */
static const char *const keep_all[] = {
    "BGREWRITEAOF", "BGSAVE", "BITCOUNT", "BITPOS", "BLMOVE", "BLMPOP", "BLPOP", "BRPOP",
    "BRPOPLPUSH", "BZMPOP", "BZPOPMAX", "BZPOPMIN", "CLIENT", "CLUSTER", "COMMAND", "COPY",
    "DBSIZE", "DEBUG", "DECR", "DECRBY", "DEL", "DISCARD", "DUMP", "EXEC", "EXISTS", "EXPIRE",
    "EXPIREAT", "EXPIRETIME", "FLUSHALL", "FLUSHDB", "GET", "GETBIT", "GETDEL", "GETEX",
    "GETRANGE", "HDEL", "HEXISTS", "HGET", "HGETALL", "HINCRBY", "HINCRBYFLOAT", "HKEYS",
    "HLEN", "HMGET", "HRANDFIELD", "HSCAN", "HSTRLEN", "HVALS", "INCR", "INCRBY",
    "INCRBYFLOAT", "INFO", "KEYS", "LASTSAVE", "LATENCY", "LINDEX", "LLEN", "LMOVE", "LMPOP",
    "LPOP", "LRANGE", "LTRIM", "MEMORY", "MGET", "MONITOR", "MOVE", "MULTI", "OBJECT",
    "PERSIST", "PEXPIRE", "PEXPIREAT", "PEXPIRETIME", "PFCOUNT", "PFMERGE", "PSUBSCRIBE",
    "PTTL", "PUBSUB", "PUNSUBSCRIBE", "QUIT", "RANDOMKEY", "READONLY", "READWRITE", "RENAME",
    "RENAMENX", "RESET", "ROLE", "RPOP", "RPOPLPUSH", "SAVE", "SCAN", "SCARD", "SDIFF",
    "SDIFFSTORE", "SELECT", "SINTER", "SINTERCARD", "SINTERSTORE", "SLOWLOG", "SMEMBERS",
    "SPOP", "SRANDMEMBER", "SSCAN", "SSUBSCRIBE", "STRLEN", "SUBSCRIBE", "SUNION",
    "SUNIONSTORE", "SUNSUBSCRIBE", "SWAPDB", "TIME", "TOUCH", "TTL", "TYPE", "UNLINK",
    "UNSUBSCRIBE", "UNWATCH", "WAIT", "WATCH", "XACK", "XDEL", "XGROUP", "XINFO", "XLEN",
    "XPENDING", "XRANGE", "XREAD", "XREADGROUP", "XREVRANGE", "XTRIM", "ZCARD", "ZCOUNT",
    "ZDIFF", "ZDIFFSTORE", "ZINTER", "ZINTERCARD", "ZINTERSTORE", "ZMPOP", "ZPOPMAX",
    "ZPOPMIN", "ZRANDMEMBER", "ZRANGE", "ZRANGEBYSCORE", "ZRANGESTORE", "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZSCAN", "ZUNION", "ZUNIONSTORE",
    NULL,
};

/* ---- what a command's name says, looked up once per command ----------- */

/* Every name of the tables above, in one open-addressing hash table built
 * once: the parser classifies a command with one lookup instead of scanning
 * four lists (this runs per command). */
#define NT_SLOTS 512 /* a power of two, over twice the names */

typedef struct name_ent {
    const char *name; /* NULL: empty slot */
    unsigned char len;
    unsigned char cls;
    signed char rule;
} name_ent;

static name_ent ntab[NT_SLOTS];
static uint32_t head_lens; /* bit n: some name of n bytes matters to a head */
static pthread_once_t ntab_once = PTHREAD_ONCE_INIT;

static unsigned name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return (h ^ (h >> 15)) & (NT_SLOTS - 1);
}

static name_ent *ntab_slot(const char *name, size_t n)
{
    for (unsigned i = name_hash(name, n);; i = (i + 1) & (NT_SLOTS - 1)) {
        name_ent *e = &ntab[i];
        if (e->name == NULL || (e->len == n && memcmp(e->name, name, n) == 0))
            return e;
    }
}

static void ntab_add(const char *name, int cls, int rule_index)
{
    size_t n = strlen(name);
    name_ent *e = ntab_slot(name, n);
    if (e->name == NULL)
        *e = (name_ent){name, (unsigned char)n, 0, -1};
    e->cls |= (unsigned char)cls;
    if (rule_index >= 0)
        e->rule = (signed char)rule_index;
}

static void ntab_build(void)
{
    for (size_t i = 0; i < sizeof rules / sizeof *rules; i++)
        ntab_add(rules[i].name, 0, (int)i);
    for (int i = 0; two_word[i]; i++)
        ntab_add(two_word[i], CL_TWO_WORD, -1);
    for (int i = 0; pubsub[i]; i++)
        ntab_add(pubsub[i], CL_PUBSUB, -1);
    for (int i = 0; keep_all[i]; i++)
        ntab_add(keep_all[i], CL_KEEP_ALL, -1);
    for (int i = 0; with_args[i]; i++)
        ntab_add(with_args[i], CL_ARGS, -1);
    for (int i = 0; pubsub[i]; i++)
        head_lens |= 1u << strlen(pubsub[i]);
    for (int i = 0; with_args[i]; i++)
        head_lens |= 1u << strlen(with_args[i]);
}

/* What a head needs of its name, without the table's lookup for most names
 * (GET, SET, ...): the length of a pub/sub or SELECT name is in head_lens. */
static void set_head_name(dds_redis_cmd *out)
{
    pthread_once(&ntab_once, ntab_build);
    if (out->nargs > 0 && out->arg[0].len < 32 && !((head_lens >> out->arg[0].len) & 1)) {
        upper_name(&out->arg[0], out->name);
        out->name_class = 0;
        out->name_rule = -1; /* not looked up: a head has no use for it */
        return;
    }
    set_name(out);
}

/* The parser's last step: the upper-cased name and what the tables say of it. */
static void set_name(dds_redis_cmd *out)
{
    out->name_class = 0;
    out->name_rule = -1;
    if (out->nargs <= 0) {
        out->name[0] = '\0';
        return;
    }
    size_t n = upper_name(&out->arg[0], out->name);
    pthread_once(&ntab_once, ntab_build);
    const name_ent *e = ntab_slot(out->name, n);
    if (e->name != NULL) {
        out->name_class = e->cls;
        out->name_rule = e->rule;
    }
}

enum { A_KEEP = 0, A_HIDE = 1, A_REST = 2 }; /* A_REST: one "?" for this and all later args */

static void plan(const dds_redis_cmd *c, unsigned char *act)
{
    int n = c->nargs;
    const rule *r = c->name_rule >= 0 ? &rules[c->name_rule] : NULL;
    if (r == NULL) {
        if (n > 2 && !(c->name_class & CL_KEEP_ALL))
            act[2] = A_REST;
        return;
    }
    switch (r->kind) {
    case R_HIDE_ALL:
        if (n > 1)
            act[1] = A_REST;
        break;
    case R_ARGN:
        if (r->a < n)
            act[r->a] = A_HIDE;
        break;
    case R_STEP:
        /* The Agent's args exclude the command: its index j is our j + 1. */
        for (int j = r->a + r->b - 1; j + 1 < n; j += r->b)
            act[j + 1] = A_HIDE;
        break;
    case R_CONFIG:
        /* CONFIG SET parameter value [parameter value ...] */
        if (n > 1 && arg_is(&c->arg[1], "SET"))
            for (int i = 3; i < n; i += 2)
                act[i] = A_HIDE;
        break;
    case R_BITFIELD:
        /* ... SET encoding offset value ... */
        for (int i = 2; i + 3 < n; i++)
            if (arg_is(&c->arg[i], "SET")) {
                act[i + 3] = A_HIDE;
                i += 3;
            }
        break;
    case R_ZADD: {
        /* ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...] */
        int i = 2;
        while (i < n && (arg_is(&c->arg[i], "NX") || arg_is(&c->arg[i], "XX") ||
                         arg_is(&c->arg[i], "GT") || arg_is(&c->arg[i], "LT") ||
                         arg_is(&c->arg[i], "CH") || arg_is(&c->arg[i], "INCR")))
            i++;
        for (i = i + 1; i < n; i += 2)
            act[i] = A_HIDE;
        break;
    }
    case R_EVAL:
    case R_EVALSHA: {
        /* EVAL script numkeys key [key ...] arg [arg ...]: the script and the
         * args are values; a sha1 or a function name is not. */
        if (r->kind == R_EVAL && n > 1)
            act[1] = A_HIDE;
        int keys = n > 2 ? small_uint(&c->arg[2], 6) : -1;
        int first_arg = keys < 0 || 3 + (long)keys > c->argc ? 3 : 3 + keys;
        if (first_arg < n)
            act[first_arg] = A_REST;
        break;
    }
    case R_SUBLOAD:
        /* SCRIPT LOAD script, FUNCTION LOAD [REPLACE] code, FUNCTION RESTORE payload */
        if (n > 2 && (arg_is(&c->arg[1], "LOAD") || arg_is(&c->arg[1], "RESTORE")))
            act[2] = A_REST;
        break;
    default:
        if (n > 2)
            act[2] = A_REST;
        break;
    }
}

typedef struct outbuf {
    char *b;
    size_t n;
    int full;
} outbuf;

/* Largest k <= n that does not cut a UTF-8 sequence of p in two. */
static size_t utf8_floor(const char *p, size_t len, size_t n)
{
    if (n >= len)
        return len;
    for (int back = 0; back < 3 && n > 0 && ((unsigned char)p[n] & 0xc0) == 0x80; back++)
        n--;
    return n;
}

static void put(outbuf *o, const char *p, size_t len)
{
    memcpy(o->b + o->n, p, len);
    o->n += len;
}

/* One token, space-separated from the previous one; cut marks "...". Nothing
 * more is written once the total reached DDS_REDIS_RAW_MAX. */
static void token(outbuf *o, const char *p, size_t len)
{
    if (o->full)
        return;
    size_t sep = o->n ? 1 : 0;
    int cut = 0;
    if (len > DDS_REDIS_ARG_MAX) {
        len = utf8_floor(p, len, DDS_REDIS_ARG_MAX);
        cut = 1;
    }
    if (o->n + sep + len + (cut ? 3 : 0) > DDS_REDIS_RAW_MAX) {
        size_t room = DDS_REDIS_RAW_MAX > o->n + sep ? DDS_REDIS_RAW_MAX - o->n - sep : 0;
        room = utf8_floor(p, len, room);
        if (sep && room)
            put(o, " ", 1);
        put(o, p, room);
        put(o, "...", 3);
        o->full = 1;
        return;
    }
    if (sep)
        put(o, " ", 1);
    put(o, p, len);
    if (cut)
        put(o, "...", 3);
}

size_t dds_redis_raw_command(const dds_redis_cmd *c, char *buf, size_t cap)
{
    unsigned char act[DDS_REDIS_MAX_ARGS];
    if (cap == 0)
        return 0;
    buf[0] = '\0';
    if (c->nargs == 0 || cap < DDS_REDIS_RAW_CAP)
        return 0;
    outbuf o = {buf, 0, 0};
    memset(act, A_KEEP, (size_t)c->nargs);
    plan(c, act);
    token(&o, c->arg[0].p, c->arg[0].len);
    int rest = 0;
    for (int i = 1; i < c->nargs && !o.full; i++) {
        if (act[i] == A_REST) {
            token(&o, "?", 1);
            rest = 1;
            break;
        }
        if (act[i] == A_HIDE)
            token(&o, "?", 1);
        else
            token(&o, c->arg[i].p, c->arg[i].len);
    }
    if (!rest && !o.full && (c->argc > c->nargs || c->truncated))
        token(&o, "...", 3);
    buf[o.n] = '\0';
    return o.n;
}

/* ---- errors ------------------------------------------------------------ */

size_t dds_redis_error_text(const char *s, size_t len, char *buf, size_t cap)
{
    static const char echo[] = ", with args beginning with:";
    if (cap == 0)
        return 0;
    buf[0] = '\0';
    if (s == NULL)
        return 0;
    const char *nl = memchr(s, '\n', len);
    if (nl)
        len = (size_t)(nl - s);
    if (len && s[len - 1] == '\r')
        len--;
    const char *w = memmem(s, len, echo, sizeof echo - 1);
    if (w)
        len = (size_t)(w - s);
    if (len > cap - 1)
        len = utf8_floor(s, len, cap - 1);
    memcpy(buf, s, len);
    buf[len] = '\0';
    return len;
}

/* ---- descriptions, cached per command bytes --------------------------- */

/* A program sends the same few commands over and over (GET and SET of the
 * same keys, INCR of a counter, PING): their descriptions are kept, keyed
 * by the command's bytes, which a hit compares in full. Two ways per set
 * (slot, slot ^ 1), so that two commands a loop alternates cannot evict
 * each other at every span. */
#define DC_BITS 5
#define DC_SLOTS (1 << DC_BITS)

typedef struct desc_ent {
    uint64_t hash;  /* 0: empty */
    uint32_t len;
    uint16_t res_len, raw_len;
    unsigned char has_res, has_raw;
    long argc;
    char bytes[DDS_REDIS_DESC_CACHE_MAX];
    char res[DDS_REDIS_RESOURCE_CAP];
    char raw[DDS_REDIS_DESC_CACHE_MAX + 8]; /* a longer raw_command is not kept */
} desc_ent;

static desc_ent desc_cache[DC_SLOTS];
static int desc_lock;

static uint64_t desc_hash(const char *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    if (i < n) { /* the last 8 bytes (overlapping), or the few there are */
        w = 0;
        if (n >= 8)
            memcpy(&w, p + n - 8, 8);
        else
            for (size_t k = 0; k < n; k++)
                w = w << 8 | (unsigned char)p[k];
        h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    }
    h ^= h >> 32;
    return h | 1; /* never 0 (empty) */
}

static void describe_now(const char *buf, size_t len, dds_redis_desc *out, dds_redis_cmd *cmd)
{
    dds_redis_parse(buf, len, cmd);
    out->argc = cmd->argc;
    out->has_res = dds_redis_resource(cmd, out->res, sizeof out->res) != 0;
    out->has_raw = dds_redis_raw_command(cmd, out->raw, sizeof out->raw) != 0;
    out->res_len = strlen(out->res);
    out->raw_len = strlen(out->raw);
}

/* Whether a description may be kept: not for credentials (AUTH's password
 * would stay in memory), nor when it does not fit its slot. */
static int desc_keep(const dds_redis_cmd *c, const dds_redis_desc *d, size_t len)
{
    if (c->name_rule >= 0 && rules[c->name_rule].kind == R_HIDE_ALL &&
        (strcmp(c->name, "AUTH") == 0 || strcmp(c->name, "HELLO") == 0 ||
         strcmp(c->name, "MIGRATE") == 0))
        return 0;
    return d->raw_len < sizeof desc_cache[0].raw && d->res_len < DDS_REDIS_RESOURCE_CAP &&
           len <= DDS_REDIS_DESC_CACHE_MAX;
}

void dds_redis_describe(const char *buf, size_t len, dds_redis_desc *out)
{
    dds_redis_cmd cmd;
    if (buf == NULL || len == 0 || len > DDS_REDIS_DESC_CACHE_MAX ||
        __atomic_exchange_n(&desc_lock, 1, __ATOMIC_ACQUIRE)) {
        describe_now(buf, len, out, &cmd);
        return;
    }
    uint64_t h = desc_hash(buf, len);
    size_t slot = (size_t)(h >> (64 - DC_BITS)) & ~(size_t)1;
    for (size_t i = slot; i <= slot + 1; i++) {
        const desc_ent *e = &desc_cache[i];
        if (e->hash == h && e->len == len && memcmp(e->bytes, buf, len) == 0) {
            out->argc = e->argc;
            out->res_len = e->res_len;
            out->raw_len = e->raw_len;
            out->has_res = e->has_res;
            out->has_raw = e->has_raw;
            memcpy(out->res, e->res, (size_t)e->res_len + 1);
            memcpy(out->raw, e->raw, (size_t)e->raw_len + 1);
            __atomic_store_n(&desc_lock, 0, __ATOMIC_RELEASE);
            return;
        }
    }
    describe_now(buf, len, out, &cmd);
    /* Kept on its second sight only (the hash of the last miss of each set
     * remembered): a program whose commands never repeat does not pay for
     * copying each one in. */
    static uint64_t seen[DC_SLOTS / 2];
    int again = seen[slot / 2] == h;
    seen[slot / 2] = h;
    if (again && desc_keep(&cmd, out, len)) {
        /* An empty way of the two, else each in turn. */
        static unsigned char victim[DC_SLOTS / 2];
        desc_ent *e;
        if (desc_cache[slot].hash == 0)
            e = &desc_cache[slot];
        else if (desc_cache[slot + 1].hash == 0)
            e = &desc_cache[slot + 1];
        else {
            e = &desc_cache[slot + victim[slot / 2]];
            victim[slot / 2] ^= 1;
        }
        e->hash = h;
        e->len = (uint32_t)len;
        e->argc = out->argc;
        e->res_len = (uint16_t)out->res_len;
        e->raw_len = (uint16_t)out->raw_len;
        e->has_res = (unsigned char)out->has_res;
        e->has_raw = (unsigned char)out->has_raw;
        memcpy(e->bytes, buf, len);
        memcpy(e->res, out->res, out->res_len + 1);
        memcpy(e->raw, out->raw, out->raw_len + 1);
    }
    __atomic_store_n(&desc_lock, 0, __ATOMIC_RELEASE);
}
