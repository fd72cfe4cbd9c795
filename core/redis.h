/*
 * redis.h — what a Redis command says about itself: its name for the span's
 * resource, its arguments with the values hidden for redis.raw_command, and the
 * few commands that change how a connection behaves (SELECT, pub/sub, MONITOR).
 *
 * Pure functions over bytes: hooks/hiredis.c hands in either the RESP bytes
 * hiredis formatted (redisvFormatCommand's output, or a buffer the program
 * formatted itself) or an argc/argv pair, and gets back strings to put on a
 * span. Nothing here allocates, interposes or touches a span; every scan is
 * bounded by the buffer it is given and by the DDS_REDIS_* limits below.
 *
 * Obfuscation keeps the command and, for most commands, the key (the first
 * argument); values become `?`. For the commands Datadog's Agent knows
 * (pkg/obfuscate/redis.go: SET, HSET, MSET, ZADD, GEOADD, BITFIELD, CONFIG SET,
 * ...), the same positions are hidden as the Agent hides. Commands that carry
 * only keys, fields, counts or indices (GET, MGET, HGET, LRANGE, EXPIRE, ...)
 * keep every argument. Every other command, including unknown and module
 * commands, keeps the command and its first argument and hides the rest, so a
 * value can only reach the agent through a command listed as harmless. AUTH,
 * HELLO and MIGRATE hide all their arguments.
 */
#ifndef DDS_REDIS_H
#define DDS_REDIS_H

#include <stddef.h>

#define DDS_REDIS_MAX_ARGS 128   /* arguments kept in a dds_redis_cmd (the rest are counted) */
#define DDS_REDIS_RAW_MAX 1000   /* bytes of redis.raw_command before "..." */
#define DDS_REDIS_ARG_MAX 100    /* bytes of one shown argument before "..." */
#define DDS_REDIS_RAW_CAP (DDS_REDIS_RAW_MAX + 8) /* buffer size for dds_redis_raw_command */
#define DDS_REDIS_RESOURCE_CAP 80 /* buffer size for dds_redis_resource */
#define DDS_REDIS_INLINE_MAX (64 * 1024) /* longest inline command line (as redis-server) */

typedef struct dds_redis_arg {
    const char *p; /* into the caller's buffer or argv; not NUL-terminated */
    size_t len;
} dds_redis_arg;

typedef struct dds_redis_cmd {
    long argc;       /* arguments the command declares, including its name */
    int nargs;       /* how many of them are in arg[] */
    int truncated;   /* the buffer ended inside the command: the last arg may be partial */
    char name[33];   /* arg[0] upper-cased (at most 32 bytes, anything but
                      * printable ASCII as '_'), worked out once by the parser */
    unsigned char name_class; /* what core/redis.c's tables say of name (private) */
    signed char name_rule;    /* its obfuscation rule, -1 for none (private) */
    dds_redis_arg arg[DDS_REDIS_MAX_ARGS];
} dds_redis_cmd;

/* Parse one command at the start of buf: a RESP multibulk (*N\r\n$L\r\n...\r\n)
 * as hiredis formats them, or an inline command (words up to \n). Returns the
 * number of bytes the command occupies when it is complete (> 0); 0 when buf
 * ends first (out then holds what could be read, truncated = 1); -1 when buf
 * does not start with a command. out is always initialised. */
long dds_redis_parse(const char *buf, size_t len, dds_redis_cmd *out);

/* Only as much of the command at the start of buf as a hook needs while the
 * command is sent: its name (and so dds_redis_is_pubsub), and every argument
 * only for the commands whose arguments change how the connection behaves
 * (SELECT: dds_redis_select_db). The rest of a RESP multibulk is not read,
 * so out->nargs may be 1 while argc says more; dds_redis_parse the same
 * bytes for the resource and redis.raw_command. Inline commands are parsed
 * whole. Returns > 0 when the name (or the whole command) was read, else as
 * dds_redis_parse. */
long dds_redis_parse_head(const char *buf, size_t len, dds_redis_cmd *out);

/* The same from hiredis's argv form; argvlen may be NULL (then strlen). */
void dds_redis_from_argv(dds_redis_cmd *out, int argc, const char *const *argv,
                         const size_t *argvlen);

/* The span's resource: the command upper-cased ("GET"), two words for the
 * commands that take a subcommand ("CLIENT LIST", "CONFIG SET"). Returns its
 * length; 0 (empty string) when there is no command. cap >= DDS_REDIS_RESOURCE_CAP. */
size_t dds_redis_resource(const dds_redis_cmd *c, char *buf, size_t cap);

/* redis.raw_command: the command and its arguments separated by spaces, values
 * replaced by `?` (see above), each shown argument cut at DDS_REDIS_ARG_MAX and
 * the whole at DDS_REDIS_RAW_MAX bytes (a cut is marked "..."). Returns the
 * length written (always NUL-terminated). cap >= DDS_REDIS_RAW_CAP. */
size_t dds_redis_raw_command(const dds_redis_cmd *c, char *buf, size_t cap);

/* What the writer puts on a command's span: the resource and
 * redis.raw_command as dds_redis_resource and dds_redis_raw_command write
 * them (has_*: what they returned was not 0; *_len: the strlen of each,
 * what a span keeps of it) and the argument count (argc). */
typedef struct dds_redis_desc {
    long argc;
    int has_res, has_raw;
    size_t res_len, raw_len;
    char res[DDS_REDIS_RESOURCE_CAP];
    char raw[DDS_REDIS_RAW_CAP];
} dds_redis_desc;

/* The description of the command at the start of buf (dds_redis_parse, then
 * dds_redis_resource and dds_redis_raw_command), from a cache of the last
 * commands described when these exact bytes were seen before: the result
 * depends only on the bytes, which are compared in full. Commands longer
 * than DDS_REDIS_DESC_CACHE_MAX bytes, and those whose arguments are all
 * hidden for being credentials (AUTH, HELLO, MIGRATE), are never kept.
 * Thread-safe: the cache is only tried, never waited for. */
#define DDS_REDIS_DESC_CACHE_MAX 240
void dds_redis_describe(const char *buf, size_t len, dds_redis_desc *out);

/* 1 for the commands whose replies do not come one per command: SUBSCRIBE,
 * PSUBSCRIBE, SSUBSCRIBE, their UNSUBSCRIBE forms, and MONITOR. */
int dds_redis_is_pubsub(const dds_redis_cmd *c);

/* For `SELECT n` with a plain decimal n: n; otherwise -1. */
int dds_redis_select_db(const dds_redis_cmd *c);

/* error.message for an error reply: its first line, without the argument
 * values Redis echoes in "unknown command ... with args beginning with: ...",
 * at most cap - 1 bytes. Returns the length. */
size_t dds_redis_error_text(const char *s, size_t len, char *buf, size_t cap);

#endif
