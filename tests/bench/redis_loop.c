/* A hiredis client loop for `make bench` (scripts/bench.sh): the same program
 * runs untraced and under ddshim-run, and prints its throughput.
 *
 *   redis_loop tcp:HOST:PORT | unix:PATH  MODE  SECONDS  [DEPTH]
 *
 * MODE single:   blocking redisCommand, alternating SET and GET on one key
 *                (one command, one round trip).
 * MODE pipeline: DEPTH (default 16) redisAppendCommand calls, then DEPTH
 *                redisGetReply calls, alternating SET and GET.
 *
 * It warms up for 10% of SECONDS (at least 0.2 s), then runs for SECONDS and
 * prints one line: "commands=N seconds=S cmds_per_sec=R us_per_cmd=U total=T",
 * T counting the warm-up commands too (each is a span when traced).
 * SECONDS written as COUNTx (e.g. 20000x) runs exactly COUNT commands (rounded
 * up to the pipeline depth) after 200 warm-up commands: for callgrind.
 * Exits non-zero only if Redis answers wrongly (not on a slow figure).
 */
// link: -lhiredis
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static redisContext *connect_to(const char *where)
{
    if (strncmp(where, "unix:", 5) == 0)
        return redisConnectUnix(where + 5);
    if (strncmp(where, "tcp:", 4) == 0) {
        char host[256];
        const char *colon = strrchr(where + 4, ':');
        if (colon == NULL || (size_t)(colon - (where + 4)) >= sizeof host)
            return NULL;
        memcpy(host, where + 4, (size_t)(colon - (where + 4)));
        host[colon - (where + 4)] = '\0';
        return redisConnect(host, atoi(colon + 1));
    }
    return NULL;
}

static int check(redisContext *c, redisReply *r)
{
    if (r == NULL) {
        fprintf(stderr, "redis_loop: %s\n", c->errstr);
        return -1;
    }
    int bad = r->type == REDIS_REPLY_ERROR;
    if (bad)
        fprintf(stderr, "redis_loop: error reply %s\n", r->str);
    freeReplyObject(r);
    return bad ? -1 : 0;
}

/* One unit of work: returns the number of commands done, or -1. */
static long single(redisContext *c, long i)
{
    redisReply *r = i & 1 ? redisCommand(c, "GET %s", "bench:key")
                          : redisCommand(c, "SET %s %s", "bench:key", "value-0123456789");
    return check(c, r) < 0 ? -1 : 1;
}

static long pipeline(redisContext *c, long depth)
{
    for (long k = 0; k < depth; k++) {
        if (k & 1)
            redisAppendCommand(c, "GET %s", "bench:key");
        else
            redisAppendCommand(c, "SET %s %s", "bench:key", "value-0123456789");
    }
    for (long k = 0; k < depth; k++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || check(c, r) < 0)
            return -1;
    }
    return depth;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: redis_loop tcp:HOST:PORT|unix:PATH single|pipeline SECONDS [DEPTH]\n");
        return 2;
    }
    int pipe = strcmp(argv[2], "pipeline") == 0;
    double secs = atof(argv[3]);
    long count = argv[3][0] && argv[3][strlen(argv[3]) - 1] == 'x' ? atol(argv[3]) : 0;
    long depth = argc > 4 ? atol(argv[4]) : 16;
    if (depth < 1)
        depth = 1;
    redisContext *c = connect_to(argv[1]);
    if (c == NULL || c->err) {
        fprintf(stderr, "redis_loop: cannot connect to %s: %s\n", argv[1], c ? c->errstr : "?");
        return 1;
    }
    long n = 0, i = 0;
    if (count > 0) {
        for (long w = 0; w < 200; w += pipe ? depth : 1)
            if ((pipe ? pipeline(c, depth) : single(c, i++)) < 0)
                return 1;
        double t0 = now_s();
        while (n < count) {
            long d = pipe ? pipeline(c, depth) : single(c, i++);
            if (d < 0)
                return 1;
            n += d;
        }
        double el = now_s() - t0;
        printf("commands=%ld seconds=%.3f cmds_per_sec=%.1f us_per_cmd=%.3f total=%ld\n", n, el,
               n / el, el * 1e6 / (double)n, n + (pipe ? ((200 + depth - 1) / depth) * depth : 200));
        redisFree(c);
        return 0;
    }
    double warm = secs / 10 > 0.2 ? secs / 10 : 0.2;
    long warmed = 0;
    for (double end = now_s() + warm; now_s() < end;) {
        long d = pipe ? pipeline(c, depth) : single(c, i++);
        if (d < 0)
            return 1;
        warmed += d;
    }
    double t0 = now_s(), t = t0;
    /* Check the clock every 64 commands: a clock read per command would
     * itself be part of what is measured. */
    while (t - t0 < secs) {
        for (int k = 0; k < 64; k += pipe ? (int)depth : 1) {
            long d = pipe ? pipeline(c, depth) : single(c, i++);
            if (d < 0)
                return 1;
            n += d;
        }
        t = now_s();
    }
    double el = t - t0;
    printf("commands=%ld seconds=%.3f cmds_per_sec=%.1f us_per_cmd=%.3f total=%ld\n", n, el,
           n / el, el * 1e6 / (double)n, n + warmed);
    redisFree(c);
    return 0;
}
