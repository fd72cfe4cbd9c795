// link: -I/usr/include/postgresql -lpq
/* A libpq client using the asynchronous API and COPY, for
 * tests/integration/test_postgres.py.
 *
 * usage: pq_async CONNINFO
 * Connects with PQconnectStart/PQconnectPoll, then runs, one step per line of
 * output ("<step>: <status> <rows>"):
 *   ddl       PQsendQuery of two statements in one string
 *   insert    PQsendQueryParams (the value is a parameter, never recorded)
 *   prepare   PQsendPrepare, then exec_prep: PQsendQueryPrepared
 *   select    PQsendQuery, results awaited with PQconsumeInput/PQisBusy
 *   copy_in   PQexec("COPY .. FROM STDIN") + PQputCopyData + PQputCopyEnd
 *   copy_out  PQsendQuery("COPY .. TO STDOUT") + PQgetCopyData
 *   bad       PQsendQuery of a statement that fails
 *   old_copy  PQexec("COPY .. FROM STDIN") + PQputline + PQendcopy
 *   describe  PQdescribePrepared
 *   unknown   PQexecPrepared of a name never prepared (fails)
 *   undrained PQsendQuery whose final NULL is never fetched, then PQexec
 *   count     PQexec
 *   after_reset  PQreset, then PQexecPrepared of "ins" (gone) and PQexec
 * Exits 0 when every step behaved as libpq documents. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>

static PGconn *conn;

static void die(const char *what)
{
    fprintf(stderr, "pq_async: %s: %s", what, PQerrorMessage(conn));
    exit(1);
}

static void wait_socket(int for_write)
{
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(PQsocket(conn), &fds);
    if (select(PQsocket(conn) + 1, for_write ? NULL : &fds, for_write ? &fds : NULL, NULL, NULL) < 0)
        die("select");
}

/* All results of the command in flight, up to its NULL; returns the status
 * of the last one and prints it. */
static ExecStatusType drain(const char *step)
{
    ExecStatusType last = PGRES_EMPTY_QUERY;
    int rows = 0;
    PGresult *r;
    while ((r = PQgetResult(conn)) != NULL) {
        last = PQresultStatus(r);
        rows += PQntuples(r);
        if (last == PGRES_FATAL_ERROR)
            printf("%s: error %s", step, PQresultErrorMessage(r));
        PQclear(r);
    }
    printf("%s: %s %d\n", step, PQresStatus(last), rows);
    return last;
}

static void expect(const char *step, ExecStatusType got, ExecStatusType want)
{
    if (got != want) {
        fprintf(stderr, "pq_async: %s: %s, expected %s\n", step, PQresStatus(got), PQresStatus(want));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: pq_async CONNINFO\n");
        return 2;
    }
    conn = PQconnectStart(argv[1]);
    if (conn == NULL || PQstatus(conn) == CONNECTION_BAD)
        die("connect start");
    for (;;) {
        PostgresPollingStatusType p = PQconnectPoll(conn);
        if (p == PGRES_POLLING_OK)
            break;
        if (p == PGRES_POLLING_FAILED)
            die("connect poll");
        wait_socket(p == PGRES_POLLING_WRITING);
    }

    if (!PQsendQuery(conn, "DROP TABLE IF EXISTS async_t; CREATE TABLE async_t (id int, v text)"))
        die("ddl");
    expect("ddl", drain("ddl"), PGRES_COMMAND_OK);

    const char *vals[] = {"7", "async-secret-7"};
    if (!PQsendQueryParams(conn, "INSERT INTO async_t VALUES ($1, $2)", 2, NULL, vals, NULL, NULL, 0))
        die("insert");
    expect("insert", drain("insert"), PGRES_COMMAND_OK);

    if (!PQsendPrepare(conn, "ins", "INSERT INTO async_t VALUES ($1, 'const-literal')", 1, NULL))
        die("prepare");
    expect("prepare", drain("prepare"), PGRES_COMMAND_OK);
    const char *eight[] = {"8"};
    if (!PQsendQueryPrepared(conn, "ins", 1, eight, NULL, NULL, 0))
        die("exec_prep");
    expect("exec_prep", drain("exec_prep"), PGRES_COMMAND_OK);

    if (!PQsendQuery(conn, "SELECT id, v FROM async_t WHERE id > 0 ORDER BY id"))
        die("select");
    while (PQisBusy(conn)) {
        wait_socket(0);
        if (!PQconsumeInput(conn))
            die("consume");
    }
    expect("select", drain("select"), PGRES_TUPLES_OK);

    PGresult *r = PQexec(conn, "COPY async_t FROM STDIN");
    expect("copy_in", PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    const char *rows[] = {"10\tcopy-secret-a\n", "11\tcopy-secret-b\n", "12\tcopy-secret-c\n"};
    for (int i = 0; i < 3; i++)
        if (PQputCopyData(conn, rows[i], (int)strlen(rows[i])) != 1)
            die("put copy data");
    if (PQputCopyEnd(conn, NULL) != 1)
        die("put copy end");
    expect("copy_in", drain("copy_in"), PGRES_COMMAND_OK);

    if (!PQsendQuery(conn, "COPY (SELECT id FROM async_t ORDER BY id) TO STDOUT"))
        die("copy_out");
    r = PQgetResult(conn);
    expect("copy_out", PQresultStatus(r), PGRES_COPY_OUT);
    PQclear(r);
    char *buf;
    int n, lines = 0;
    while ((n = PQgetCopyData(conn, &buf, 0)) > 0) {
        lines++;
        PQfreemem(buf);
    }
    if (n != -1)
        die("get copy data");
    printf("copy_out: %d lines\n", lines);
    expect("copy_out", drain("copy_out"), PGRES_COMMAND_OK);

    if (!PQsendQuery(conn, "SELECT * FROM no_such_table"))
        die("bad");
    expect("bad", drain("bad"), PGRES_FATAL_ERROR);

    r = PQexec(conn, "COPY async_t (id) FROM STDIN");
    expect("old_copy", PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    if (PQputline(conn, "20\n") || PQputline(conn, "\\.\n") || PQendcopy(conn))
        die("old_copy");
    printf("old_copy: done\n");

    r = PQdescribePrepared(conn, "ins");
    expect("describe", PQresultStatus(r), PGRES_COMMAND_OK);
    printf("describe: %d params\n", PQnparams(r));
    PQclear(r);

    r = PQexecPrepared(conn, "never_prepared", 0, NULL, NULL, NULL, 0);
    expect("unknown", PQresultStatus(r), PGRES_FATAL_ERROR);
    printf("unknown: %s", PQresultErrorMessage(r));
    PQclear(r);

    if (!PQsendQuery(conn, "SELECT 'undrained'"))
        die("undrained");
    r = PQgetResult(conn);
    expect("undrained", PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    /* No PQgetResult until NULL: PQexec takes care of it. */
    r = PQexec(conn, "SELECT count(*) FROM async_t");
    expect("count", PQresultStatus(r), PGRES_TUPLES_OK);
    printf("count: %s\n", PQgetvalue(r, 0, 0));
    PQclear(r);

    /* A reset is a new session on a new socket: "ins" is gone. */
    PQreset(conn);
    if (PQstatus(conn) != CONNECTION_OK)
        die("reset");
    r = PQexecPrepared(conn, "ins", 1, eight, NULL, NULL, 0);
    expect("after_reset", PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    r = PQexec(conn, "SELECT 'after reset'");
    expect("after_reset", PQresultStatus(r), PGRES_TUPLES_OK);
    printf("after_reset: ok\n");
    PQclear(r);

    PQfinish(conn);
    return 0;
}
