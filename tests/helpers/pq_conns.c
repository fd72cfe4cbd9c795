// link: -I/usr/include/postgresql -lpq
/* Connections whose spans outlive them, for tests/integration/test_postgres.py
 * (the connection's shared tag set, hooks/libpq.c).
 *
 * usage: pq_conns CONNINFO_A CONNINFO_B CONNINFO_C
 * Two connections at once (A, B), statements interleaved; A is closed with a
 * statement still open (its span ends at PQfinish) while its spans wait for
 * the writer; B is reset; then C is opened (often at A's freed address) and
 * used. Each statement's alias names its connection and its place ("SELECT
 * 'tagset-secret' AS a1", ...: resource "SELECT ? AS a1"), so the test can
 * check that every span has its own connection's tags. Run with
 * a long flush interval: every span is still queued when its connection is
 * gone. Prints "ok" and exits 0 when all went well. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

static void die(PGconn *c, const char *what)
{
    fprintf(stderr, "pq_conns: %s: %s", what, c ? PQerrorMessage(c) : "no connection\n");
    exit(1);
}

static PGconn *open_conn(const char *info)
{
    PGconn *c = PQconnectdb(info);
    if (PQstatus(c) != CONNECTION_OK)
        die(c, "connect");
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die(c, sql);
    PQclear(r);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: pq_conns CONNINFO_A CONNINFO_B CONNINFO_C\n");
        return 2;
    }
    PGconn *a = open_conn(argv[1]);
    PGconn *b = open_conn(argv[2]);
    exec_ok(a, "SELECT 'tagset-secret' AS a1");
    exec_ok(b, "SELECT 'tagset-secret' AS b1");
    exec_ok(a, "SELECT 'tagset-secret' AS a2");
    exec_ok(b, "SELECT 'tagset-secret' AS b2");
    /* Still open when A goes: its results are never read. */
    if (!PQsendQuery(a, "SELECT 'tagset-secret' AS a3"))
        die(a, "send");
    PQfinish(a);
    exec_ok(b, "SELECT 'tagset-secret' AS b3");
    PQreset(b);
    if (PQstatus(b) != CONNECTION_OK)
        die(b, "reset");
    exec_ok(b, "SELECT 'tagset-secret' AS b4");
    PGconn *c = open_conn(argv[3]);
    exec_ok(c, "SELECT 'tagset-secret' AS c1");
    exec_ok(b, "SELECT 'tagset-secret' AS b5");
    PQfinish(b);
    exec_ok(c, "SELECT 'tagset-secret' AS c2");
    PQfinish(c);
    printf("ok\n");
    return 0;
}
