// link: -I/usr/include/postgresql -lpq
/* A libpq client in pipeline mode, for tests/integration/test_postgres.py.
 *
 * usage: pq_pipeline CONNINFO
 * Three pipelines, each closed by PQpipelineSync: (1) INSERT, SELECT,
 * PQsendPrepare + PQsendQueryPrepared; (2) a statement that fails and one the
 * server therefore skips (PGRES_PIPELINE_ABORTED); (3) a SELECT and a
 * PQsendDescribePrepared. Synchronous statements before and after. Prints one
 * line per result ("<status> <rows>"), "end" at each statement's NULL, and
 * exits 0 when every result came as expected. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static PGconn *conn;

static void die(const char *what)
{
    fprintf(stderr, "pq_pipeline: %s: %s", what, PQerrorMessage(conn));
    exit(1);
}

static void exec_ok(const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        die(sql);
    printf("exec %s %d\n", PQresStatus(st), PQntuples(r));
    PQclear(r);
}

static void send_params(const char *sql, int n, const char *const *values)
{
    if (!PQsendQueryParams(conn, sql, n, NULL, values, NULL, NULL, 0))
        die(sql);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: pq_pipeline CONNINFO\n");
        return 2;
    }
    conn = PQconnectdb(argv[1]);
    if (PQstatus(conn) != CONNECTION_OK)
        die("connect");
    exec_ok("DROP TABLE IF EXISTS pipe_t; CREATE TABLE pipe_t (id int, v text)");

    if (!PQenterPipelineMode(conn))
        die("enter pipeline mode");
    const char *ins[] = {"1", "pipeline-secret-1"};
    send_params("INSERT INTO pipe_t VALUES ($1, $2)", 2, ins);
    const char *one[] = {"1"};
    send_params("SELECT id, v FROM pipe_t WHERE id = $1", 1, one);
    if (!PQsendPrepare(conn, "pipe_sel", "SELECT count(*) FROM pipe_t WHERE v <> $1", 1, NULL))
        die("send prepare");
    const char *x[] = {"x"};
    if (!PQsendQueryPrepared(conn, "pipe_sel", 1, x, NULL, NULL, 0))
        die("send query prepared");
    if (!PQpipelineSync(conn))
        die("sync 1");

    const char *zero[] = {"0"};
    send_params("SELECT 1 / $1::int", 1, zero);
    send_params("INSERT INTO pipe_t VALUES (2, 'never-inserted')", 0, NULL);
    if (!PQpipelineSync(conn))
        die("sync 2");

    send_params("SELECT 42", 0, NULL);
    if (!PQsendDescribePrepared(conn, "pipe_sel"))
        die("send describe");
    if (!PQpipelineSync(conn))
        die("sync 3");

    /* Results, in order: each statement's results end with a NULL, each
     * sync point is a PGRES_PIPELINE_SYNC result. */
    static const ExecStatusType want[] = {
        PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_PIPELINE_SYNC,
        PGRES_FATAL_ERROR, PGRES_PIPELINE_ABORTED, PGRES_PIPELINE_SYNC,
        PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_PIPELINE_SYNC,
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        PGresult *r = PQgetResult(conn);
        if (r == NULL) {
            fprintf(stderr, "pq_pipeline: unexpected NULL at %zu\n", i);
            return 1;
        }
        ExecStatusType st = PQresultStatus(r);
        printf("%s %d\n", PQresStatus(st), PQntuples(r));
        if (st != want[i]) {
            fprintf(stderr, "pq_pipeline: result %zu is %s, not %s\n", i, PQresStatus(st),
                    PQresStatus(want[i]));
            bad = 1;
        }
        PQclear(r);
        if (st != PGRES_PIPELINE_SYNC) {
            r = PQgetResult(conn);
            if (r != NULL) {
                fprintf(stderr, "pq_pipeline: no NULL after result %zu\n", i);
                return 1;
            }
            printf("end\n");
        }
    }
    if (!PQexitPipelineMode(conn))
        die("exit pipeline mode");
    exec_ok("SELECT count(*) FROM pipe_t");
    PQfinish(conn);
    return bad;
}
