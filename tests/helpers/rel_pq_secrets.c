// link: -I/usr/include/postgresql -lpq
/* A libpq client that puts a canary where secrets live, for
 * tests/reliability/test_secrets.py: in SQL literals (PQexec, a failing cast
 * whose error message quotes the value, a unique-key violation whose DETAIL
 * does), in PQexecParams and PQexecPrepared parameters, and in
 * PQsendQueryParams. None of it may reach the agent or ddshim's log.
 *
 *   rel_pq_secrets CONNINFO CANARY
 * Prints one line per step ("<step>: <status>") and exits 0 when every step
 * behaved as expected (the failing ones fail). */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

static PGconn *conn;
static int bad;

static void expect(const char *step, PGresult *r, ExecStatusType want)
{
    ExecStatusType st = PQresultStatus(r);
    printf("%s: %s\n", step, PQresStatus(st));
    if (st != want)
        bad++;
    PQclear(r);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: rel_pq_secrets CONNINFO CANARY\n");
        return 64;
    }
    const char *canary = argv[2];
    conn = PQconnectdb(argv[1]);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(conn));
        return 1;
    }
    char sql[512];
    expect("create", PQexec(conn, "CREATE TEMP TABLE secrets (k text PRIMARY KEY, v text)"),
           PGRES_COMMAND_OK);
    snprintf(sql, sizeof sql, "INSERT INTO secrets VALUES ('literal', '%s')", canary);
    expect("literal", PQexec(conn, sql), PGRES_COMMAND_OK);
    snprintf(sql, sizeof sql, "SELECT '%s'::int", canary);
    expect("bad_cast", PQexec(conn, sql), PGRES_FATAL_ERROR);
    snprintf(sql, sizeof sql, "INSERT INTO secrets VALUES ('%s', 'a'), ('%s', 'b')", canary, canary);
    expect("duplicate", PQexec(conn, sql), PGRES_FATAL_ERROR);
    const char *params[2] = {"param", canary};
    expect("params", PQexecParams(conn, "INSERT INTO secrets VALUES ($1, $2)", 2, NULL, params, NULL,
                                  NULL, 0),
           PGRES_COMMAND_OK);
    expect("prepare", PQprepare(conn, "ins", "INSERT INTO secrets VALUES ($1, $2)", 2, NULL),
           PGRES_COMMAND_OK);
    const char *params2[2] = {"prepared", canary};
    expect("prepared", PQexecPrepared(conn, "ins", 2, params2, NULL, NULL, 0), PGRES_COMMAND_OK);
    const char *params3[1] = {canary};
    expect("param_cast", PQexecParams(conn, "SELECT $1::int", 1, NULL, params3, NULL, NULL, 0),
           PGRES_FATAL_ERROR);
    if (PQsendQueryParams(conn, "SELECT v FROM secrets WHERE v = $1", 1, NULL, params3, NULL, NULL, 0)) {
        PGresult *r;
        int rows = 0;
        while ((r = PQgetResult(conn)) != NULL) {
            rows += PQntuples(r);
            PQclear(r);
        }
        printf("send_params: %d rows\n", rows);
        bad += rows != 3;
    } else {
        bad++;
    }
    PQfinish(conn);
    return bad ? 1 : 0;
}
