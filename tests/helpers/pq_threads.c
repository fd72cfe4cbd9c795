// link: -I/usr/include/postgresql -lpq
/* Several threads, each opening and closing its own libpq connections, for
 * tests/integration/test_postgres.py (and helgrind).
 *
 * usage: pq_threads CONNINFO THREADS ROUNDS
 * Each thread, ROUNDS times: connect, PQprepare "s" + PQexecPrepared,
 * PQsendQuery + PQgetResult until NULL, PQexec, PQfinish. That is 4
 * statements per round. Prints "ok <statements>" and exits 0 when all went
 * well. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static const char *conninfo;
static int rounds;
static int failures;

static int ok(PGresult *r, ExecStatusType want)
{
    int good = r != NULL && PQresultStatus(r) == want;
    PQclear(r);
    return good;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < rounds; i++) {
        PGconn *c = PQconnectdb(conninfo);
        int good = PQstatus(c) == CONNECTION_OK;
        good = good && ok(PQprepare(c, "s", "SELECT $1::int + 1", 1, NULL), PGRES_COMMAND_OK);
        char v[16];
        snprintf(v, sizeof v, "%ld", id * 1000 + i);
        const char *vals[] = {v};
        good = good && ok(PQexecPrepared(c, "s", 1, vals, NULL, NULL, 0), PGRES_TUPLES_OK);
        good = good && PQsendQuery(c, "SELECT pg_backend_pid()");
        PGresult *r;
        while (good && (r = PQgetResult(c)) != NULL)
            good = ok(r, PGRES_TUPLES_OK);
        good = good && ok(PQexec(c, "SELECT 'thread' AS t"), PGRES_TUPLES_OK);
        PQfinish(c);
        if (!good)
            __atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: pq_threads CONNINFO THREADS ROUNDS\n");
        return 2;
    }
    conninfo = argv[1];
    int n = atoi(argv[2]);
    rounds = atoi(argv[3]);
    pthread_t t[64];
    if (n < 1 || n > 64 || rounds < 1)
        return 2;
    for (long i = 0; i < n; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    if (failures) {
        fprintf(stderr, "pq_threads: %d rounds failed\n", failures);
        return 1;
    }
    printf("ok %d\n", n * rounds * 4);
    return 0;
}
