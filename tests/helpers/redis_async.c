/* hiredis's asynchronous API on libevent, for the Redis integration tests.
 *
 *   redis_async HOST PORT
 *
 * Phase 1 (context A): SET, GET, INCR on a string (error), SELECT 3, SET.
 * Phase 2 (context B): SUBSCRIBE; A publishes; B prints the message and
 * unsubscribes. Phase 3: A sends PING and is freed at once (its callback gets
 * a NULL reply), B disconnects, the loop ends. Output is deterministic.
 */
// link: -lhiredis -levent
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct event_base *base;
static redisAsyncContext *a, *b;
static const char *host;
static int port;

static void show(const char *label, redisReply *r)
{
    if (r == NULL) {
        printf("%s: (null reply)\n", label);
        return;
    }
    switch (r->type) {
    case REDIS_REPLY_STATUS: printf("%s: +%s\n", label, r->str); break;
    case REDIS_REPLY_ERROR: printf("%s: -%s\n", label, r->str); break;
    case REDIS_REPLY_INTEGER: printf("%s: :%lld\n", label, r->integer); break;
    case REDIS_REPLY_NIL: printf("%s: (nil)\n", label); break;
    case REDIS_REPLY_STRING: printf("%s: $%.*s\n", label, (int)r->len, r->str); break;
    case REDIS_REPLY_ARRAY:
        printf("%s: *%zu", label, r->elements);
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i];
            if (e->type == REDIS_REPLY_STRING)
                printf(" %.*s", (int)e->len, e->str);
            else if (e->type == REDIS_REPLY_INTEGER)
                printf(" %lld", e->integer);
        }
        printf("\n");
        break;
    default: printf("%s: ?\n", label); break;
    }
}

static void on_reply(redisAsyncContext *c, void *reply, void *privdata)
{
    (void)c;
    show((const char *)privdata, reply);
}

static long long published = -1;
static int unsubscribed;

/* After both the PUBLISH reply (on A) and the unsubscribe (on B), whichever
 * comes first: the two connections race, the output must not. */
static void phase3(void)
{
    if (published < 0 || !unsubscribed)
        return;
    printf("publish: :%lld\n", published);
    redisAsyncCommand(a, on_reply, "ping-then-free", "PING");
    redisAsyncFree(a); /* the PING's callback runs now, with NULL */
    a = NULL;
    redisAsyncDisconnect(b);
}

static void on_published(redisAsyncContext *c, void *reply, void *privdata)
{
    (void)c, (void)privdata;
    redisReply *r = reply;
    published = r && r->type == REDIS_REPLY_INTEGER ? r->integer : 99;
    phase3();
}

static void on_sub(redisAsyncContext *c, void *reply, void *privdata)
{
    (void)privdata;
    redisReply *r = reply;
    if (r == NULL)
        return;
    show("sub", r);
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        redisAsyncCommand(a, on_published, NULL, "PUBLISH chan %s", "hello-subscriber");
    } else if (strcmp(kind, "message") == 0) {
        redisAsyncCommand(c, NULL, NULL, "UNSUBSCRIBE chan");
    } else if (strcmp(kind, "unsubscribe") == 0) {
        unsubscribed = 1;
        phase3();
    }
}

static void phase2(redisAsyncContext *c, void *reply, void *privdata)
{
    on_reply(c, reply, privdata);
    b = redisAsyncConnect(host, port);
    if (b == NULL || b->err) {
        printf("connect b failed\n");
        exit(1);
    }
    redisLibeventAttach(b, base);
    redisAsyncCommand(b, on_sub, NULL, "SUBSCRIBE chan");
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    host = argv[1];
    port = atoi(argv[2]);
    base = event_base_new();
    a = redisAsyncConnect(host, port);
    if (a == NULL || a->err) {
        printf("connect error: %s\n", a ? a->errstr : "oom");
        return 1;
    }
    redisLibeventAttach(a, base);
    redisAsyncCommand(a, on_reply, "set", "SET %s %s", "akey", "secret-async-value");
    redisAsyncCommand(a, on_reply, "get", "GET akey");
    redisAsyncCommand(a, on_reply, "incr", "INCR akey");
    const char *sel[] = {"SELECT", "3"};
    redisAsyncCommandArgv(a, on_reply, "select", 2, sel, NULL);
    redisAsyncCommand(a, phase2, "set-db3", "SET bkey %s", "in-db-3");
    event_base_dispatch(base);
    event_base_free(base);
    printf("done\n");
    return 0;
}
