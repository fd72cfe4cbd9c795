// link: -lhiredis
/* A hiredis client that authenticates every way Redis allows, for
 * tests/reliability/test_secrets.py: AUTH password, AUTH user password, HELLO
 * with AUTH, the same through redisCommandArgv and a pipeline, a SET whose
 * value is the canary, CONFIG SET requirepass, and an ACL user whose password
 * is the canary. Neither the password nor the value may reach the agent
 * or ddshim's log.
 *
 *   rel_redis_secrets HOST PORT PASSWORD CANARY
 * Prints one line per reply and exits 0 when every command succeeded. */
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad;

static void show(const char *step, redisReply *r)
{
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        printf("%s: error %s\n", step, r ? r->str : "no reply");
        bad++;
    } else {
        printf("%s: ok\n", step);
    }
    freeReplyObject(r);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: rel_redis_secrets HOST PORT PASSWORD CANARY\n");
        return 64;
    }
    const char *pw = argv[3], *canary = argv[4];
    redisContext *c = redisConnect(argv[1], atoi(argv[2]));
    if (c == NULL || c->err) {
        fprintf(stderr, "connect failed\n");
        return 1;
    }
    show("auth", redisCommand(c, "AUTH %s", pw));
    show("auth_user", redisCommand(c, "AUTH default %s", pw));
    show("hello", redisCommand(c, "HELLO 2 AUTH default %s", pw));
    const char *argv_auth[] = {"auth", "default", pw};
    show("auth_argv", redisCommandArgv(c, 3, argv_auth, NULL));
    redisAppendCommand(c, "AUTH %s", pw);
    redisAppendCommand(c, "SET secret:value %s", canary);
    for (int i = 0; i < 2; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK)
            bad++;
        show(i == 0 ? "pipelined_auth" : "set", r);
    }
    show("get", redisCommand(c, "GET secret:value"));
    show("config_set", redisCommand(c, "CONFIG SET requirepass %s", pw));
    show("acl_setuser", redisCommand(c, "ACL SETUSER reluser on >%s ~* +@all", canary));
    show("auth_acl_user", redisCommand(c, "AUTH reluser %s", canary));
    redisFree(c);
    return bad ? 1 : 0;
}
