/* Unit tests for core/redis.c: RESP and inline parsing (bounds, truncation,
 * binary arguments), resource naming, redis.raw_command obfuscation, and the
 * small helpers the hiredis hooks use (SELECT, pub/sub, error text). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "redis.h"

/* ---- helpers ---- */

/* RESP multibulk of NULL-terminated words, as hiredis formats them. */
static size_t resp(char *out, size_t cap, const char *const *words)
{
    size_t n = 0, argc = 0;
    while (words[argc])
        argc++;
    n += (size_t)snprintf(out + n, cap - n, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc; i++) {
        size_t l = strlen(words[i]);
        n += (size_t)snprintf(out + n, cap - n, "$%zu\r\n", l);
        memcpy(out + n, words[i], l);
        n += l;
        memcpy(out + n, "\r\n", 2);
        n += 2;
    }
    return n;
}

static dds_redis_cmd cmd;

static const dds_redis_cmd *argv_cmd(const char *const *words)
{
    int argc = 0;
    while (words[argc])
        argc++;
    dds_redis_from_argv(&cmd, argc, words, NULL);
    return &cmd;
}

static char outbuf[DDS_REDIS_RAW_CAP];

static const char *raw(const char *const *words)
{
    dds_redis_raw_command(argv_cmd(words), outbuf, sizeof outbuf);
    return outbuf;
}

static const char *res(const char *const *words)
{
    static char r[DDS_REDIS_RESOURCE_CAP];
    dds_redis_resource(argv_cmd(words), r, sizeof r);
    return r;
}

#define W(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- parsing ---- */

static void test_parse_resp(void **state)
{
    (void)state;
    char buf[256];
    size_t n = resp(buf, sizeof buf, W("SET", "key", "value"));
    assert_int_equal(dds_redis_parse(buf, n, &cmd), (long)n);
    assert_int_equal(cmd.argc, 3);
    assert_int_equal(cmd.nargs, 3);
    assert_int_equal(cmd.truncated, 0);
    assert_int_equal(cmd.arg[0].len, 3);
    assert_memory_equal(cmd.arg[0].p, "SET", 3);
    assert_memory_equal(cmd.arg[2].p, "value", 5);

    /* Two commands back to back: only the first is consumed. */
    size_t m = resp(buf + n, sizeof buf - n, W("GET", "key"));
    assert_int_equal(dds_redis_parse(buf, n + m, &cmd), (long)n);
    assert_int_equal(dds_redis_parse(buf + n, m, &cmd), (long)m);
    assert_int_equal(cmd.argc, 2);
}

static void test_parse_binary_args(void **state)
{
    (void)state;
    /* Arguments with CR, LF, NUL and '$' inside: lengths rule, not delimiters. */
    static const char b[] = "*3\r\n$3\r\nSET\r\n$4\r\nk\r\n\0\r\n$6\r\n$1\r\nx\r\r\n";
    size_t n = sizeof b - 1;
    assert_int_equal(dds_redis_parse(b, n, &cmd), (long)n);
    assert_int_equal(cmd.argc, 3);
    assert_int_equal(cmd.arg[1].len, 4);
    assert_memory_equal(cmd.arg[1].p, "k\r\n\0", 4);
    assert_int_equal(cmd.arg[2].len, 6);
    assert_memory_equal(cmd.arg[2].p, "$1\r\nx\r", 6);
    /* Empty argument. */
    static const char e[] = "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n";
    assert_int_equal(dds_redis_parse(e, sizeof e - 1, &cmd), (long)(sizeof e - 1));
    assert_int_equal(cmd.arg[1].len, 0);
}

static void test_parse_truncated_everywhere(void **state)
{
    (void)state;
    char buf[256];
    size_t n = resp(buf, sizeof buf, W("HSET", "user:1", "name", "alice"));
    /* Every prefix is incomplete (0), never malformed, and never reads past it. */
    for (size_t cut = 0; cut < n; cut++) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        long r = dds_redis_parse(copy, cut, &cmd);
        assert_int_equal(r, 0);
        assert_int_equal(cmd.truncated, 1);
        assert_true(cmd.nargs <= 4);
        for (int i = 0; i < cmd.nargs; i++)
            assert_true(cmd.arg[i].p >= copy && cmd.arg[i].p + cmd.arg[i].len <= copy + cut);
        if (cut > 4)
            assert_int_equal(cmd.argc, 4);
        free(copy);
    }
    assert_int_equal(dds_redis_parse(buf, n, &cmd), (long)n);
}

static void test_parse_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "*-1\r\n", "*x\r\n", "*2\n$3\r\nGET\r\n", "*1\r\n:3\r\n", "*1\r\n$3\r\nGETX\r\n",
        "*1\r\n$-1\r\n", "*1\r\n$99999999999999999999\r\n", "*1\r\n$3x\r\nGET\r\n",
        "\x01\x02", "*99999999999\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(dds_redis_parse(bad[i], strlen(bad[i]), &cmd), -1);
    assert_int_equal(dds_redis_parse(NULL, 0, &cmd), 0);
    assert_int_equal(dds_redis_parse("", 0, &cmd), 0);
}

static void test_parse_huge_declared_count(void **state)
{
    (void)state;
    /* A declared count far beyond the buffer: bounded by the buffer. */
    const char b[] = "*1000000000\r\n$3\r\nGET\r\n";
    assert_int_equal(dds_redis_parse(b, sizeof b - 1, &cmd), 0);
    assert_int_equal(cmd.argc, 1000000000L);
    assert_int_equal(cmd.nargs, 1);
    /* A bulk length far beyond the buffer. */
    const char c[] = "*2\r\n$3\r\nSET\r\n$1000000\r\nabc";
    assert_int_equal(dds_redis_parse(c, sizeof c - 1, &cmd), 0);
    assert_int_equal(cmd.nargs, 2);
    assert_int_equal(cmd.arg[1].len, 3);
}

static void test_parse_many_args(void **state)
{
    (void)state;
    /* More arguments than a dds_redis_cmd keeps: counted, not stored. */
    size_t cap = 64 + 300 * 16;
    char *buf = malloc(cap);
    size_t n = (size_t)snprintf(buf, cap, "*301\r\n$4\r\nMGET\r\n");
    for (int i = 0; i < 300; i++)
        n += (size_t)snprintf(buf + n, cap - n, "$4\r\nk%03d\r\n", i);
    assert_int_equal(dds_redis_parse(buf, n, &cmd), (long)n);
    assert_int_equal(cmd.argc, 301);
    assert_int_equal(cmd.nargs, DDS_REDIS_MAX_ARGS);
    dds_redis_raw_command(&cmd, outbuf, sizeof outbuf);
    assert_true(strncmp(outbuf, "MGET k000 k001", 14) == 0);
    assert_true(strlen(outbuf) > 4 && strcmp(outbuf + strlen(outbuf) - 4, " ...") == 0);
    free(buf);
}

static void test_parse_inline(void **state)
{
    (void)state;
    const char b[] = "  get   mykey\r\nPING\r\n";
    assert_int_equal(dds_redis_parse(b, sizeof b - 1, &cmd), 15);
    assert_int_equal(cmd.argc, 2);
    assert_memory_equal(cmd.arg[0].p, "get", 3);
    assert_memory_equal(cmd.arg[1].p, "mykey", 5);
    assert_int_equal(dds_redis_parse("GET k", 5, &cmd), 0);
    assert_int_equal(cmd.truncated, 1);
    assert_int_equal(cmd.argc, 2);
    /* An inline line longer than redis-server accepts is not a command. */
    char *big = malloc(DDS_REDIS_INLINE_MAX + 10);
    memset(big, 'a', DDS_REDIS_INLINE_MAX + 10);
    assert_int_equal(dds_redis_parse(big, DDS_REDIS_INLINE_MAX + 10, &cmd), -1);
    free(big);
}

static void test_from_argv(void **state)
{
    (void)state;
    const char *argv[] = {"SET", "k", "a\0b"};
    size_t lens[] = {3, 1, 3};
    dds_redis_from_argv(&cmd, 3, argv, lens);
    assert_int_equal(cmd.argc, 3);
    assert_int_equal(cmd.arg[2].len, 3);
    dds_redis_from_argv(&cmd, 3, argv, NULL);
    assert_int_equal(cmd.arg[2].len, 1);
    dds_redis_from_argv(&cmd, 0, argv, NULL);
    assert_int_equal(cmd.argc, 0);
    assert_int_equal(cmd.nargs, 0);
    dds_redis_from_argv(&cmd, -3, argv, NULL);
    assert_int_equal(cmd.argc, 0);
}

/* ---- naming ---- */

static void test_resource(void **state)
{
    (void)state;
    assert_string_equal(res(W("GET", "k")), "GET");
    assert_string_equal(res(W("get", "k")), "GET");
    assert_string_equal(res(W("hGetAll", "k")), "HGETALL");
    assert_string_equal(res(W("client", "list")), "CLIENT LIST");
    assert_string_equal(res(W("CLIENT", "setname", "x")), "CLIENT SETNAME");
    assert_string_equal(res(W("config", "get", "maxmemory")), "CONFIG GET");
    assert_string_equal(res(W("CLUSTER", "INFO")), "CLUSTER INFO");
    assert_string_equal(res(W("COMMAND", "COUNT")), "COMMAND COUNT");
    assert_string_equal(res(W("DEBUG", "SLEEP", "0")), "DEBUG SLEEP");
    assert_string_equal(res(W("SCRIPT", "LOAD", "return 1")), "SCRIPT LOAD");
    assert_string_equal(res(W("OBJECT", "ENCODING", "k")), "OBJECT ENCODING");
    assert_string_equal(res(W("XINFO", "STREAM", "s")), "XINFO STREAM");
    /* Alone, or followed by something that is not a subcommand word. */
    assert_string_equal(res(W("COMMAND")), "COMMAND");
    assert_string_equal(res(W("CLIENT", "no such word")), "CLIENT");
    /* Only the listed containers take a second word. */
    assert_string_equal(res(W("SET", "k", "v")), "SET");
    /* Odd bytes never reach the resource as such; the length is bounded. */
    assert_string_equal(res(W("g\x01t")), "G_T");
    const char *longname = "AVERYVERYVERYVERYVERYVERYVERYLONGCOMMANDNAME";
    assert_int_equal(strlen(res(W(longname))), 32);
    dds_redis_from_argv(&cmd, 0, NULL, NULL);
    char r[DDS_REDIS_RESOURCE_CAP];
    assert_int_equal(dds_redis_resource(&cmd, r, sizeof r), 0);
    assert_string_equal(r, "");
}

/* ---- obfuscation ---- */

static void test_obfuscate_agent_rules(void **state)
{
    (void)state;
    assert_string_equal(raw(W("SET", "k", "v")), "SET k ?");
    assert_string_equal(raw(W("set", "k", "v", "EX", "10")), "set k ? EX 10");
    assert_string_equal(raw(W("SETEX", "k", "10", "v")), "SETEX k 10 ?");
    assert_string_equal(raw(W("GETSET", "k", "v")), "GETSET k ?");
    assert_string_equal(raw(W("APPEND", "k", "v")), "APPEND k ?");
    assert_string_equal(raw(W("HSETNX", "h", "f", "v")), "HSETNX h f ?");
    assert_string_equal(raw(W("LINSERT", "l", "BEFORE", "p", "v")), "LINSERT l BEFORE p ?");
    assert_string_equal(raw(W("LPUSH", "l", "a", "b", "c")), "LPUSH l ?");
    assert_string_equal(raw(W("SADD", "s", "a", "b")), "SADD s ?");
    assert_string_equal(raw(W("HSET", "h", "f1", "v1", "f2", "v2")), "HSET h f1 ? f2 ?");
    assert_string_equal(raw(W("HMSET", "h", "f1", "v1")), "HMSET h f1 ?");
    assert_string_equal(raw(W("MSET", "k1", "v1", "k2", "v2")), "MSET k1 ? k2 ?");
    assert_string_equal(raw(W("MSETNX", "k1", "v1")), "MSETNX k1 ?");
    assert_string_equal(raw(W("GEOADD", "g", "13.3", "38.1", "Palermo", "15.0", "37.5", "Catania")),
                        "GEOADD g 13.3 38.1 ? 15.0 37.5 ?");
    assert_string_equal(raw(W("ZADD", "z", "NX", "CH", "1", "a", "2", "b")), "ZADD z NX CH 1 ? 2 ?");
    assert_string_equal(raw(W("ZADD", "z", "1", "a")), "ZADD z 1 ?");
    assert_string_equal(raw(W("CONFIG", "SET", "requirepass", "s3cr3t")), "CONFIG SET requirepass ?");
    assert_string_equal(raw(W("CONFIG", "SET", "a", "1", "b", "2")), "CONFIG SET a ? b ?");
    assert_string_equal(raw(W("CONFIG", "GET", "maxmemory")), "CONFIG GET maxmemory");
    assert_string_equal(raw(W("BITFIELD", "b", "GET", "u8", "0", "SET", "u8", "8", "255")),
                        "BITFIELD b GET u8 0 SET u8 8 ?");
    assert_string_equal(raw(W("ACL", "SETUSER", "bob", "on", ">pw")), "ACL SETUSER ?");
    assert_string_equal(raw(W("ACL", "LIST")), "ACL LIST");
}

static void test_obfuscate_secrets(void **state)
{
    (void)state;
    assert_string_equal(raw(W("AUTH", "hunter2")), "AUTH ?");
    assert_string_equal(raw(W("auth", "user", "hunter2")), "auth ?");
    assert_string_equal(raw(W("HELLO", "3", "AUTH", "user", "hunter2")), "HELLO ?");
    assert_string_equal(raw(W("HELLO")), "HELLO");
    assert_string_equal(raw(W("MIGRATE", "h", "6379", "k", "0", "5", "AUTH", "pw")), "MIGRATE ?");
    assert_string_equal(raw(W("ECHO", "private")), "ECHO ?");
    assert_string_equal(raw(W("PING")), "PING");
    assert_string_equal(raw(W("PING", "private")), "PING ?");
}

static void test_obfuscate_scripts(void **state)
{
    (void)state;
    assert_string_equal(raw(W("EVAL", "return redis.call('set',KEYS[1],ARGV[1])", "1", "k", "v")),
                        "EVAL ? 1 k ?");
    assert_string_equal(raw(W("EVAL", "return 1", "0")), "EVAL ? 0");
    assert_string_equal(raw(W("EVAL", "return 1", "0", "a", "b")), "EVAL ? 0 ?");
    assert_string_equal(raw(W("EVAL", "return 1", "x", "a")), "EVAL ? x ?");
    assert_string_equal(raw(W("EVAL", "return 1", "5", "a")), "EVAL ? 5 ?");
    assert_string_equal(raw(W("EVALSHA", "abc123", "2", "k1", "k2", "v")), "EVALSHA abc123 2 k1 k2 ?");
    assert_string_equal(raw(W("FCALL", "myfn", "1", "k", "v")), "FCALL myfn 1 k ?");
    assert_string_equal(raw(W("SCRIPT", "LOAD", "return 'x'")), "SCRIPT LOAD ?");
    assert_string_equal(raw(W("SCRIPT", "EXISTS", "abc")), "SCRIPT EXISTS abc");
    assert_string_equal(raw(W("FUNCTION", "LOAD", "REPLACE", "code")), "FUNCTION LOAD ?");
}

static void test_obfuscate_defaults(void **state)
{
    (void)state;
    /* Keys, fields, indices: kept. */
    assert_string_equal(raw(W("GET", "k")), "GET k");
    assert_string_equal(raw(W("MGET", "a", "b", "c")), "MGET a b c");
    assert_string_equal(raw(W("DEL", "a", "b")), "DEL a b");
    assert_string_equal(raw(W("HGET", "h", "f")), "HGET h f");
    assert_string_equal(raw(W("HMGET", "h", "f1", "f2")), "HMGET h f1 f2");
    assert_string_equal(raw(W("LRANGE", "l", "0", "-1")), "LRANGE l 0 -1");
    assert_string_equal(raw(W("EXPIRE", "k", "10")), "EXPIRE k 10");
    assert_string_equal(raw(W("SELECT", "2")), "SELECT 2");
    assert_string_equal(raw(W("INCR", "n")), "INCR n");
    assert_string_equal(raw(W("CLIENT", "LIST")), "CLIENT LIST");
    assert_string_equal(raw(W("SUBSCRIBE", "a", "b")), "SUBSCRIBE a b");
    /* Anything else keeps the command and the key only. */
    assert_string_equal(raw(W("PUBLISH", "chan", "secret message")), "PUBLISH chan ?");
    assert_string_equal(raw(W("XADD", "s", "*", "f", "v")), "XADD s ?");
    assert_string_equal(raw(W("JSON.SET", "doc", "$", "{\"a\":1}")), "JSON.SET doc ?");
    assert_string_equal(raw(W("LPOS", "l", "elem")), "LPOS l ?");
    assert_string_equal(raw(W("UNKNOWNCMD", "k")), "UNKNOWNCMD k");
    assert_string_equal(raw(W("UNKNOWNCMD")), "UNKNOWNCMD");
    /* Lower case works the same and is kept as written. */
    assert_string_equal(raw(W("hset", "h", "f", "v")), "hset h f ?");
}

static void test_raw_command_bounds(void **state)
{
    (void)state;
    /* One long shown argument: cut at DDS_REDIS_ARG_MAX with "...". */
    char big[300];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *s = raw(W("GET", big));
    assert_int_equal(strlen(s), 4 + DDS_REDIS_ARG_MAX + 3);
    assert_string_equal(s + strlen(s) - 3, "...");
    /* Many shown arguments: the whole is cut near DDS_REDIS_RAW_MAX. */
    const char *argv[DDS_REDIS_MAX_ARGS];
    argv[0] = "MGET";
    for (int i = 1; i < DDS_REDIS_MAX_ARGS; i++)
        argv[i] = big;
    dds_redis_from_argv(&cmd, DDS_REDIS_MAX_ARGS, argv, NULL);
    size_t n = dds_redis_raw_command(&cmd, outbuf, sizeof outbuf);
    assert_int_equal(n, strlen(outbuf));
    assert_true(n <= DDS_REDIS_RAW_MAX + 3);
    assert_true(n >= DDS_REDIS_RAW_MAX);
    assert_string_equal(outbuf + n - 3, "...");
    /* A UTF-8 character is never cut in two. */
    char utf[DDS_REDIS_ARG_MAX + 8];
    memset(utf, 'a', sizeof utf);
    memcpy(utf + DDS_REDIS_ARG_MAX - 1, "\xc3\xa9", 2); /* é straddles the cut */
    utf[sizeof utf - 1] = '\0';
    s = raw(W("GET", utf));
    assert_int_equal(strlen(s), 4 + DDS_REDIS_ARG_MAX - 1 + 3);
    /* A buffer smaller than DDS_REDIS_RAW_CAP is refused, not overrun. */
    char small[16];
    assert_int_equal(dds_redis_raw_command(argv_cmd(W("GET", "k")), small, sizeof small), 0);
    assert_string_equal(small, "");
    /* Truncated input is marked. */
    const char b[] = "*3\r\n$3\r\nGET\r\n$1\r\nk";
    dds_redis_parse(b, sizeof b - 1, &cmd);
    dds_redis_raw_command(&cmd, outbuf, sizeof outbuf);
    assert_string_equal(outbuf, "GET k ...");
    /* A binary value never shows: */
    const char *bin[] = {"SET", "k", "\x00\xff\x01"};
    size_t lens[] = {3, 1, 3};
    dds_redis_from_argv(&cmd, 3, bin, lens);
    dds_redis_raw_command(&cmd, outbuf, sizeof outbuf);
    assert_string_equal(outbuf, "SET k ?");
}

/* ---- helpers for the hooks ---- */

static void test_select_and_pubsub(void **state)
{
    (void)state;
    assert_int_equal(dds_redis_select_db(argv_cmd(W("SELECT", "2"))), 2);
    assert_int_equal(dds_redis_select_db(argv_cmd(W("select", "15"))), 15);
    assert_int_equal(dds_redis_select_db(argv_cmd(W("SELECT", "x"))), -1);
    assert_int_equal(dds_redis_select_db(argv_cmd(W("SELECT", "-1"))), -1);
    assert_int_equal(dds_redis_select_db(argv_cmd(W("SELECT", "12345678"))), -1);
    assert_int_equal(dds_redis_select_db(argv_cmd(W("SELECT"))), -1);
    assert_int_equal(dds_redis_select_db(argv_cmd(W("GET", "2"))), -1);
    assert_true(dds_redis_is_pubsub(argv_cmd(W("subscribe", "a"))));
    assert_true(dds_redis_is_pubsub(argv_cmd(W("PSUBSCRIBE", "a*"))));
    assert_true(dds_redis_is_pubsub(argv_cmd(W("SSUBSCRIBE", "a"))));
    assert_true(dds_redis_is_pubsub(argv_cmd(W("UNSUBSCRIBE"))));
    assert_true(dds_redis_is_pubsub(argv_cmd(W("punsubscribe"))));
    assert_true(dds_redis_is_pubsub(argv_cmd(W("MONITOR"))));
    assert_false(dds_redis_is_pubsub(argv_cmd(W("PUBLISH", "a", "b"))));
    assert_false(dds_redis_is_pubsub(argv_cmd(W("GET", "k"))));
}

/* A head says what the hook needs (pub/sub, SELECT's index) as a full parse
 * would, reads only the name of the other commands, and fails exactly where
 * a full parse fails on what it reads. */
static void test_parse_head(void **state)
{
    (void)state;
    const char *const *const cases[] = {
        W("SET", "key", "value"), W("get", "k"), W("SELECT", "3"), W("select", "x"),
        W("SUBSCRIBE", "a", "b"), W("punsubscribe"), W("MONITOR"), W("PUBLISH", "a", "b"),
        W("SSUBSCRIBE", "c"), W("SUNSUBSCRIBE"), W("SELECTX", "1"), W("CLIENT", "LIST"),
    };
    static dds_redis_cmd full;
    char buf[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = resp(buf, sizeof buf, cases[i]);
        long whole = dds_redis_parse(buf, n, &full);
        long head = dds_redis_parse_head(buf, n, &cmd);
        assert_true(head > 0 && head <= whole);
        assert_int_equal(cmd.argc, full.argc);
        assert_string_equal(cmd.name, full.name);
        assert_int_equal(dds_redis_is_pubsub(&cmd), dds_redis_is_pubsub(&full));
        assert_int_equal(dds_redis_select_db(&cmd), dds_redis_select_db(&full));
    }
    /* SELECT is read whole; GET only as far as its name. */
    size_t n = resp(buf, sizeof buf, W("SELECT", "7"));
    assert_int_equal(dds_redis_parse_head(buf, n, &cmd), (long)n);
    assert_int_equal(cmd.nargs, 2);
    assert_int_equal(dds_redis_select_db(&cmd), 7);
    n = resp(buf, sizeof buf, W("GET", "key"));
    assert_int_equal(dds_redis_parse_head(buf, n, &cmd), (long)strlen("*2\r\n$3\r\nGET\r\n"));
    assert_int_equal(cmd.nargs, 1);
    assert_int_equal(cmd.argc, 2);
    /* No arguments at all. */
    assert_int_equal(dds_redis_parse_head("*0\r\n", 4, &cmd), 4);
    assert_int_equal(cmd.nargs, 0);
    assert_false(dds_redis_is_pubsub(&cmd));
    /* Cut or broken inside the name: as dds_redis_parse. */
    n = resp(buf, sizeof buf, W("SUBSCRIBE", "chan"));
    for (size_t cut = 0; cut < strlen("*2\r\n$9\r\nSUBSCRIBE\r\n"); cut++) {
        char copy[64];
        memcpy(copy, buf, cut);
        assert_int_equal(dds_redis_parse_head(copy, cut, &cmd), dds_redis_parse(copy, cut, &full));
        assert_int_equal(cmd.truncated, full.truncated);
    }
    static const char *const bad[] = {"*1\r\n:3\r\nGET\r\n", "*1\r\n$3\r\nGETX\r\n", "*x\r\n",
                                      "*1\r\n$-1\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(dds_redis_parse_head(bad[i], strlen(bad[i]), &cmd), -1);
    /* Inline commands are read whole. */
    assert_int_equal(dds_redis_parse_head("select 4\r\n", 10, &cmd), 10);
    assert_int_equal(dds_redis_select_db(&cmd), 4);
    assert_int_equal(dds_redis_parse_head("GET a b\n", 8, &cmd), 8);
    assert_int_equal(cmd.nargs, 3);
}

static void test_error_text(void **state)
{
    (void)state;
    char b[64];
    const char *e = "WRONGTYPE Operation against a key holding the wrong kind of value";
    assert_int_equal(dds_redis_error_text(e, strlen(e), b, sizeof b), 63);
    assert_memory_equal(b, e, 63);
    const char *u = "ERR unknown command 'fooo', with args beginning with: 'secret' 'x' ";
    dds_redis_error_text(u, strlen(u), b, sizeof b);
    assert_string_equal(b, "ERR unknown command 'fooo'");
    const char *m = "ERR first line\r\nsecond line";
    dds_redis_error_text(m, strlen(m), b, sizeof b);
    assert_string_equal(b, "ERR first line");
    assert_int_equal(dds_redis_error_text(NULL, 5, b, sizeof b), 0);
    assert_string_equal(b, "");
    assert_int_equal(dds_redis_error_text("x", 1, b, 0), 0);
}

/* What dds_redis_describe should give: parse, resource, raw_command. */
static void describe_ref(const char *buf, size_t len, dds_redis_desc *d)
{
    dds_redis_cmd c;
    dds_redis_parse(buf, len, &c);
    d->argc = c.argc;
    d->has_res = dds_redis_resource(&c, d->res, sizeof d->res) != 0;
    d->has_raw = dds_redis_raw_command(&c, d->raw, sizeof d->raw) != 0;
    d->res_len = strlen(d->res);
    d->raw_len = strlen(d->raw);
}

static void check_describe(const char *buf, size_t len)
{
    dds_redis_desc got, want;
    describe_ref(buf, len, &want);
    dds_redis_describe(buf, len, &got);
    assert_int_equal(got.argc, want.argc);
    assert_int_equal(got.has_res, want.has_res);
    assert_int_equal(got.has_raw, want.has_raw);
    assert_int_equal(got.res_len, want.res_len);
    assert_int_equal(got.raw_len, want.raw_len);
    assert_string_equal(got.res, want.res);
    assert_string_equal(got.raw, want.raw);
}

/* A RESP command of argc words. */
static size_t resp_of(char *out, int argc, const char *const *w)
{
    size_t n = (size_t)sprintf(out, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        n += (size_t)sprintf(out + n, "$%zu\r\n%s\r\n", strlen(w[i]), w[i]);
    return n;
}

/* The cache of descriptions (keyed by the command's bytes) never hands a
 * command another's: commands of the same length differing in one byte
 * (the key, the value, the name's case, the count), each described many
 * times in an interleaved order, against the uncached functions. */
static void test_describe_cache(void **state)
{
    (void)state;
    static const char *const names[] = {"GET", "get", "SET", "AUTH", "CLIENT", "HSET",
                                         "PING", "ECHO", "ZADD", "EVAL", "DEL", "XX"};
    char buf[2048];
    unsigned seed = 12345;
    for (int round = 0; round < 20000; round++) {
        seed = seed * 1103515245u + 12345u;
        unsigned r = seed >> 8;
        char key[8], val[8], val2[8];
        snprintf(key, sizeof key, "k%u", r % 7);
        snprintf(val, sizeof val, "v%u", (r >> 3) % 5);
        snprintf(val2, sizeof val2, "%c%u", (r & 64) ? 'a' : 'b', (r >> 6) % 3);
        const char *w[5] = {names[(r >> 9) % 12], key, val, val2, "LIST"};
        int argc = 1 + (int)((r >> 13) % 4);
        if (((r >> 15) & 7) == 0) {
            w[1] = "list"; /* CLIENT list: two words */
        }
        size_t n = resp_of(buf, argc, w);
        if (((r >> 18) & 15) == 0 && n > 3)
            n -= 3; /* truncated */
        if (((r >> 22) & 31) == 0)
            buf[n / 2] = '\0'; /* a NUL inside */
        check_describe(buf, n);
    }
    /* Same length, same hash neighbourhood: the bytes decide. */
    const char *a = "*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n";
    const char *b = "*2\r\n$3\r\nGET\r\n$2\r\nk2\r\n";
    for (int i = 0; i < 4; i++) {
        check_describe(a, strlen(a));
        check_describe(b, strlen(b));
    }
    /* A password is described, never kept: the same result every time. */
    const char *auth = "*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n";
    for (int i = 0; i < 3; i++)
        check_describe(auth, strlen(auth));
    /* Inline, binary, empty, too long for the cache. */
    check_describe("PING\r\n", 6);
    check_describe("", 0);
    check_describe(NULL, 0);
    char big[1024];
    memset(big, 'x', sizeof big);
    const char *bw[2] = {"SET", big};
    big[600] = '\0';
    size_t bn = resp_of(buf, 2, bw);
    check_describe(buf, bn);
    check_describe(buf, bn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_resp),
        cmocka_unit_test(test_parse_binary_args),
        cmocka_unit_test(test_parse_truncated_everywhere),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_parse_huge_declared_count),
        cmocka_unit_test(test_parse_many_args),
        cmocka_unit_test(test_parse_inline),
        cmocka_unit_test(test_from_argv),
        cmocka_unit_test(test_resource),
        cmocka_unit_test(test_obfuscate_agent_rules),
        cmocka_unit_test(test_obfuscate_secrets),
        cmocka_unit_test(test_obfuscate_scripts),
        cmocka_unit_test(test_obfuscate_defaults),
        cmocka_unit_test(test_raw_command_bounds),
        cmocka_unit_test(test_select_and_pubsub),
        cmocka_unit_test(test_parse_head),
        cmocka_unit_test(test_error_text),
        cmocka_unit_test(test_describe_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
