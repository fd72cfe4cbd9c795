/* A plain hiredis client for the Redis integration tests. It prints every
 * reply in a stable form, so a traced run's stdout can be compared with an
 * untraced one's.
 *
 *   redis_client tcp:HOST:PORT | unix:PATH  SCENARIO [ARG]
 *
 * Scenarios: basic, pipeline N, error, auth PASSWORD, argv, mixed, inline,
 * nonblock (its own non-blocking context), free-pending, connect-only.
 */
// link: -lhiredis
#include <hiredis/hiredis.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_reply(const char *label, redisReply *r)
{
    if (r == NULL) {
        printf("%s: (null)\n", label);
        return;
    }
    switch (r->type) {
    case REDIS_REPLY_STATUS: printf("%s: +%s\n", label, r->str); break;
    case REDIS_REPLY_ERROR: printf("%s: -%s\n", label, r->str); break;
    case REDIS_REPLY_INTEGER: printf("%s: :%lld\n", label, r->integer); break;
    case REDIS_REPLY_NIL: printf("%s: (nil)\n", label); break;
    case REDIS_REPLY_STRING: printf("%s: $%.*s\n", label, (int)r->len, r->str); break;
    case REDIS_REPLY_ARRAY: printf("%s: *%zu\n", label, r->elements); break;
    default: printf("%s: ?%d\n", label, r->type); break;
    }
}

static void run(redisContext *c, const char *label, redisReply *r)
{
    print_reply(label, r);
    if (r == NULL)
        printf("%s: error %d %s\n", label, c->err, c->errstr);
    freeReplyObject(r);
}

static int scenario_basic(redisContext *c)
{
    run(c, "set", redisCommand(c, "SET %s %s", "greeting", "hello world"));
    run(c, "get", redisCommand(c, "GET %s", "greeting"));
    run(c, "del", redisCommand(c, "DEL counter"));
    run(c, "incr", redisCommand(c, "INCR counter"));
    run(c, "incrby", redisCommand(c, "INCRBY counter %d", 41));
    redisReply *r = redisCommand(c, "CLIENT LIST");
    /* The list holds ports and ids that change from run to run. */
    printf("client list: %s\n", r && r->type == REDIS_REPLY_STRING ? "string" : "other");
    freeReplyObject(r);
    run(c, "select", redisCommand(c, "SELECT 2"));
    run(c, "set2", redisCommand(c, "SET %s %b", "in-db-2", "v\0x", (size_t)3));
    run(c, "get2", redisCommand(c, "GET in-db-2"));
    return 0;
}

static int scenario_pipeline(redisContext *c, int n)
{
    for (int i = 0; i < n; i++) {
        if (i % 2 == 0)
            redisAppendCommand(c, "SET pipe:%d value-%d", i, i);
        else
            redisAppendCommand(c, "GET pipe:%d", i - 1);
    }
    for (int i = 0; i < n; i++) {
        redisReply *r = NULL;
        char label[32];
        snprintf(label, sizeof label, "pipe %d", i);
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            printf("%s: getreply failed: %s\n", label, c->errstr);
            return 1;
        }
        run(c, label, r);
    }
    return 0;
}

static int scenario_error(redisContext *c)
{
    run(c, "set", redisCommand(c, "SET word notanumber"));
    run(c, "incr", redisCommand(c, "INCR word"));
    run(c, "unknown", redisCommand(c, "NOSUCHCOMMAND %s %s", "somekey", "canary-arg"));
    run(c, "get", redisCommand(c, "GET word"));
    return 0;
}

static int scenario_auth(redisContext *c, const char *password)
{
    run(c, "auth", redisCommand(c, "AUTH %s", password));
    run(c, "ping", redisCommand(c, "PING"));
    return 0;
}

static int scenario_argv(redisContext *c)
{
    const char *argv[] = {"HSET", "h", "field", "bin\r\nary"};
    size_t lens[] = {4, 1, 5, 8};
    run(c, "hset", redisCommandArgv(c, 4, argv, lens));
    const char *get[] = {"hget", "h", "field"};
    run(c, "hget", redisCommandArgv(c, 3, get, NULL));
    const char *app[] = {"LPUSH", "l", "a", "b"};
    redisAppendCommandArgv(c, 4, app, NULL);
    redisReply *r = NULL;
    redisGetReply(c, (void **)&r);
    run(c, "lpush", r);
    return 0;
}

/* Appends, then redisCommand: hiredis returns the oldest pending reply. */
static int scenario_mixed(redisContext *c)
{
    redisAppendCommand(c, "SET mixed:a 1");
    redisAppendCommand(c, "SET mixed:b 2");
    run(c, "command returns first append's reply", redisCommand(c, "GET mixed:a"));
    for (int i = 0; i < 2; i++) {
        redisReply *r = NULL;
        redisGetReply(c, (void **)&r);
        run(c, "later", r);
    }
    return 0;
}

/* A pre-formatted inline command that looks like an HTTP request line: Redis
 * must receive exactly these bytes (one error reply), never injected headers. */
static int scenario_inline(redisContext *c)
{
    static const char line[] = "GET / HTTP/1.1\r\n";
    redisAppendFormattedCommand(c, line, sizeof line - 1);
    redisReply *r = NULL;
    redisGetReply(c, (void **)&r);
    run(c, "inline", r);
    run(c, "ping", redisCommand(c, "PING"));
    /* Two commands in one formatted buffer: two replies. */
    static const char two[] = "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n";
    redisAppendFormattedCommand(c, two, sizeof two - 1);
    for (int i = 0; i < 2; i++) {
        r = NULL;
        redisGetReply(c, (void **)&r);
        run(c, "two", r);
    }
    run(c, "echo", redisCommand(c, "ECHO %s", "after"));
    return 0;
}

/* hiredis's own non-blocking mode, driven by hand: redisCommand only
 * appends (and returns NULL), the replies come from redisGetReply. */
static int scenario_nonblock(const char *host, int port)
{
    redisContext *c = redisConnectNonBlock(host, port);
    if (c == NULL || c->err)
        return 1;
    void *none = redisCommand(c, "SET nb:a %s", "nb-value");
    printf("command in non-blocking mode: %s\n", none ? "reply" : "NULL");
    redisAppendCommand(c, "GET nb:a");
    int done = 0;
    while (!done) {
        struct pollfd p = {c->fd, POLLOUT, 0};
        poll(&p, 1, 2000);
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return 1;
    }
    int got = 0;
    while (got < 2) {
        struct pollfd p = {c->fd, POLLIN, 0};
        poll(&p, 1, 2000);
        if (redisBufferRead(c) != REDIS_OK)
            return 1;
        void *r = NULL;
        while (got < 2 && redisGetReply(c, &r) == REDIS_OK && r) {
            run(c, "nb", r);
            got++;
            r = NULL;
        }
    }
    redisFree(c);
    return 0;
}

static int scenario_free_pending(redisContext *c)
{
    redisAppendCommand(c, "SET pending:a 1");
    redisAppendCommand(c, "GET pending:a");
    /* Freed with both replies unread. */
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s tcp:HOST:PORT|unix:PATH SCENARIO [ARG]\n", argv[0]);
        return 2;
    }
    redisContext *c;
    if (strncmp(argv[1], "unix:", 5) == 0) {
        c = redisConnectUnix(argv[1] + 5);
    } else if (strncmp(argv[1], "tcp:", 4) == 0) {
        char host[256];
        snprintf(host, sizeof host, "%s", argv[1] + 4);
        char *colon = strrchr(host, ':');
        if (colon == NULL)
            return 2;
        *colon = '\0';
        struct timeval tv = {2, 0};
        c = redisConnectWithTimeout(host, atoi(colon + 1), tv);
    } else {
        return 2;
    }
    if (c == NULL) {
        printf("connect: out of memory\n");
        return 3;
    }
    if (c->err) {
        printf("connect error %d: %s\n", c->err, c->errstr);
        redisFree(c);
        return 1;
    }
    const char *s = argv[2];
    int rc = 0;
    if (strcmp(s, "basic") == 0)
        rc = scenario_basic(c);
    else if (strcmp(s, "pipeline") == 0)
        rc = scenario_pipeline(c, argc > 3 ? atoi(argv[3]) : 10);
    else if (strcmp(s, "error") == 0)
        rc = scenario_error(c);
    else if (strcmp(s, "auth") == 0)
        rc = scenario_auth(c, argc > 3 ? argv[3] : "");
    else if (strcmp(s, "argv") == 0)
        rc = scenario_argv(c);
    else if (strcmp(s, "mixed") == 0)
        rc = scenario_mixed(c);
    else if (strcmp(s, "nonblock") == 0 && strncmp(argv[1], "tcp:", 4) == 0) {
        char host[256];
        snprintf(host, sizeof host, "%s", argv[1] + 4);
        *strrchr(host, ':') = '\0';
        rc = scenario_nonblock(host, atoi(strrchr(argv[1], ':') + 1));
    } else if (strcmp(s, "inline") == 0)
        rc = scenario_inline(c);
    else if (strcmp(s, "free-pending") == 0)
        rc = scenario_free_pending(c);
    else if (strcmp(s, "connect-only") == 0)
        rc = 0;
    else
        rc = 2;
    redisFree(c);
    fflush(stdout);
    return rc;
}
