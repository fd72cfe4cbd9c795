"""PostgreSQL through libpq: real programs (pgbench, psql, python3 + psycopg2,
small C clients in tests/helpers) under ddshim-run against a private server
(pgserver.py). Span counts are compared with what the server itself logged
(log_statement=all): one "statement:" line per simple-protocol Query message,
one "execute <name>:" line per extended-protocol Execute. PQprepare sends only
a Parse, which the server does not log: those spans are counted separately
(libpq.function = PQprepare)."""
import collections
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import HELPERS, RUN, run, traced_env, wait_until
from pgserver import pg  # noqa: F401  (the session's server fixture)

PY = "/usr/bin/python3"
SPAN = "postgresql.query"


def settled_spans(agent, n, name=SPAN, timeout=15):
    """The spans named `name` once at least n arrived and no more come."""
    agent.wait_spans(n, name, timeout)
    time.sleep(0.5)
    return agent.spans(name)


def normalize(sql):
    """A Python model of core/sql.c for the statements these tests run:
    strings, numbers (with a sign) and booleans become ?, whitespace collapses."""
    sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
    sql = re.sub(r"(?<![\w$.])-?\d+(?:\.\d+)?", "?", sql)
    sql = re.sub(r"\b(?:true|false)\b", "?", sql, flags=re.I)
    return " ".join(sql.split())


def has_literal(resource):
    """A digit outside identifiers and $n placeholders, or a quote."""
    return re.search(r"(?<![\w$])\d", resource) is not None or "'" in resource


def check_pg_tags(s, pg, tcp=False):
    assert s["name"] == SPAN and s["type"] == "sql"
    m = s["meta"]
    assert m["db.system"] == "postgresql"
    assert m["component"] == "libpq"
    assert m["span.kind"] == "client"
    assert m["db.name"] == pg.dbname
    assert m["db.user"] == pg.user
    assert m["peer.service"] == pg.dbname
    assert m["_dd.peer.service.source"] == "db.name"
    assert m["out.host"] == (pg.host if tcp else pg.sockdir)
    assert s["metrics"]["network.destination.port"] == pg.port
    assert s["metrics"]["_dd.measured"] == 1


@pytest.fixture(scope="module")
def pgbench_db(pg):
    r = subprocess.run(["pgbench", "-i", "-s", "1", "-q"], env=pg.client_env(traced_env()),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return pg


PGBENCH_CASES = [
    # mode, extra args, statements per transaction, over TCP
    ("simple", ["-S", "-n"], 1, False),
    ("extended", ["-S", "-n"], 1, True),
    ("prepared", ["-S", "-n"], 1, False),
    ("simple", [], 7, True),
    ("extended", [], 7, False),
    ("prepared", [], 7, True),
]


@pytest.mark.parametrize("mode,args,per_tx,tcp", PGBENCH_CASES,
                         ids=["%s%s" % (c[0], "-select" if c[1] else "-tpcb") for c in PGBENCH_CASES])
def test_pgbench_one_span_per_statement(agent, tmp, pgbench_db, mode, args, per_tx, tcp):
    pg = pgbench_db
    clients, tx = 3, 6
    threads = 1 if per_tx == 1 else 3  # one thread per client: several threads use libpq
    env = pg.client_env(traced_env(agent, tmp, DD_SERVICE="pgbench"), tcp=tcp)
    off = pg.log_offset()
    r = run(["pgbench", "-M", mode, "-c", str(clients), "-j", str(threads), "-t", str(tx)] + args,
            env)
    assert r.returncode == 0, r.stderr
    assert b"number of transactions actually processed: %d/%d" % (clients * tx, clients * tx) \
        in r.stdout
    executed = pg.statements_since(off)
    # pgbench's own setup statements come on top of clients * tx * per_tx.
    assert len(executed) >= clients * tx * per_tx
    prepares = clients * per_tx if mode == "prepared" else 0
    spans = settled_spans(agent, len(executed) + prepares)
    assert len(spans) == len(executed) + prepares
    assert agent.spans() == spans, "the libpq socket produced other spans"
    by_fn = collections.Counter(s["meta"]["libpq.function"] for s in spans)
    assert by_fn["PQprepare"] == prepares
    run_spans = [s for s in spans if s["meta"]["libpq.function"] != "PQprepare"]
    # Exactly the statements the server ran, each with its literals obfuscated.
    assert collections.Counter(s["resource"] for s in run_spans) == \
        collections.Counter(normalize(x) for x in executed)
    for s in spans:
        assert not has_literal(s["resource"]), s["resource"]
        assert s["error"] == 0, s
        assert s["service"] == "pgbench"
        check_pg_tags(s, pg, tcp)
    placeholder = "?" if mode == "simple" else "$1"
    select = "SELECT abalance FROM pgbench_accounts WHERE aid = %s;" % placeholder
    selects = [s for s in run_spans if s["resource"] == select]
    assert len(selects) == clients * tx
    assert all(s["metrics"]["db.row_count"] == 1 for s in selects)
    want_fn = {"simple": "PQsendQuery", "extended": "PQsendQueryParams",
               "prepared": "PQsendQueryPrepared"}[mode]
    assert all(s["meta"]["libpq.function"] == want_fn for s in selects)
    if per_tx == 7:
        update = "UPDATE pgbench_accounts SET abalance = abalance + %s WHERE aid = %s;" % (
            ("?", "?") if mode == "simple" else ("$1", "$2"))
        assert sum(s["resource"] == update for s in run_spans) == clients * tx


def test_pgbench_init_copy_is_one_span(agent, tmp, pgbench_db):
    pg = pgbench_db
    off = pg.log_offset()
    r = run(["pgbench", "-i", "-s", "1", "-q"], pg.client_env(traced_env(agent, tmp)))
    assert r.returncode == 0, r.stderr
    executed = pg.statements_since(off)
    spans = settled_spans(agent, len(executed))
    assert collections.Counter(s["resource"] for s in spans) == \
        collections.Counter(normalize(x) for x in executed)
    # 100000 rows through PQputline and PQendcopy: inside the COPY's span,
    # which ends before the next statement starts.
    spans.sort(key=lambda s: s["start"])
    i = [s["resource"] for s in spans].index("copy pgbench_accounts from stdin with (freeze on)")
    copy, after = spans[i], spans[i + 1]
    assert copy["error"] == 0 and after["resource"] == "commit"
    assert copy["start"] + copy["duration"] <= after["start"]
    assert copy["duration"] > sum(s["duration"] for s in spans[:i]) / i


def test_psql_error_is_recorded_and_output_unchanged(agent, tmp, pg):
    cmd = ["psql", "-X", "-c", "SELECT 1/0 AS boom"]
    plain = run(cmd, pg.client_env(traced_env()), traced=False)
    traced = run(cmd, pg.client_env(traced_env(agent, tmp)))
    assert plain.returncode == traced.returncode == 1
    assert plain.stdout == traced.stdout
    assert plain.stderr == traced.stderr
    assert b"division by zero" in traced.stderr
    spans = settled_spans(agent, 1)
    assert len(spans) == 1
    s = spans[0]
    assert s["resource"] == "SELECT ?/? AS boom"
    assert s["error"] == 1
    assert s["meta"]["error.message"] == "ERROR:  division by zero"
    assert s["meta"]["error.type"] == "22012"
    assert s["parent_id"] == 0
    check_pg_tags(s, pg)


def test_psql_over_tcp_output_unchanged_and_no_http_spans(agent, tmp, pg):
    cmd = ["psql", "-X", "-A", "-c", "SELECT 'GET / HTTP/1.1' AS line, 42 AS n",
           "-c", "SELECT relname FROM pg_class WHERE relname = 'pg_class'"]
    plain = run(cmd, pg.client_env(traced_env(), tcp=True), traced=False)
    traced = run(cmd, pg.client_env(traced_env(agent, tmp), tcp=True))
    assert plain.returncode == traced.returncode == 0
    assert plain.stdout == traced.stdout and plain.stderr == traced.stderr
    spans = settled_spans(agent, 2)
    assert sorted(s["resource"] for s in spans) == [
        "SELECT ? AS line, ? AS n", "SELECT relname FROM pg_class WHERE relname = ?"]
    assert agent.spans() == spans
    for s in spans:
        check_pg_tags(s, pg, tcp=True)
        assert s["error"] == 0


PSYCOPG2_SCRIPT = r'''
import ctypes
import sys
import psycopg2
dsn, canary = sys.argv[1], sys.argv[2]
# psycopg2's extension module brought libpq in with dlopen(RTLD_LOCAL): it is
# not in the global scope, so ddshim's hooks find it by soname.
try:
    ctypes.CDLL(None).PQlibVersion
    print("libpq global")
except AttributeError:
    print("libpq local")
conn = psycopg2.connect(dsn)
cur = conn.cursor()
cur.execute("DROP TABLE IF EXISTS py_secrets")
cur.execute("CREATE TABLE py_secrets (id int PRIMARY KEY, secret text)")
cur.execute("INSERT INTO py_secrets VALUES (%s, %s)", (1, canary))
cur.execute("SELECT id FROM py_secrets WHERE secret = %s", (canary,))
assert cur.fetchone() == (1,)
cur.execute("UPDATE py_secrets SET secret = %(s)s WHERE id = %(id)s", {"s": canary + "-2", "id": 1})
conn.commit()
# A value ending in a backslash: where its string ends depends on the
# server's standard_conforming_strings, so the rest of the statement goes.
cur.execute("INSERT INTO py_secrets VALUES (%s, %s)", (2, canary + "'\\"))
conn.commit()
# Errors: the server's message is recorded, never the lines that quote the
# statement or the data, nor a value the message itself quotes.
for sql, args in [("SELECT %s garbage garbage", (canary,)),
                  ("INSERT INTO py_secrets VALUES (%s, %s)", (1, canary)),
                  ("SELECT %s::int", (canary,))]:
    try:
        cur.execute(sql, args)
    except psycopg2.Error as e:
        print("error", e.pgcode)
    conn.rollback()
conn.close()
print("ok")
'''


def test_psycopg2_traced_and_parameters_never_leave(agent, tmp, pg):
    script = os.path.join(tmp, "pg_client.py")
    with open(script, "w") as f:
        f.write(PSYCOPG2_SCRIPT)
    canary = "c4n4ry-S3cr3t-v4lue"
    off = pg.log_offset()
    r = run([PY, script, pg.dsn(), canary], traced_env(agent, tmp, DD_SERVICE="pyapp"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split(b"\n")[:5] == [b"libpq local", b"error 42601", b"error 23505",
                                         b"error 22P02", b"ok"]
    executed = pg.statements_since(off)
    assert any(canary in x for x in executed)  # psycopg2 interpolates client-side
    # The statement with a syntax error never runs, so the server does not
    # log it as executed: one span more than the log.
    spans = settled_spans(agent, len(executed) + 1)
    assert len(spans) == len(executed) + 1
    assert all(s["meta"]["libpq.function"] == "PQexec" for s in spans)
    res = [s["resource"] for s in spans]
    for want in ["INSERT INTO py_secrets VALUES (?, ?)",
                 "SELECT id FROM py_secrets WHERE secret = ?",
                 "UPDATE py_secrets SET secret = ? WHERE id = ?",
                 "INSERT INTO py_secrets VALUES (?, ?",  # cut at the ambiguous string
                 "SELECT ? garbage garbage", "BEGIN", "COMMIT", "ROLLBACK"]:
        assert want in res, (want, res)
    errors = {s["resource"]: s for s in spans if s["error"]}
    assert errors["SELECT ? garbage garbage"]["meta"]["error.message"] == \
        'ERROR:  syntax error at or near "garbage"'
    dup = [s for s in spans if s["error"] and s["resource"] == "INSERT INTO py_secrets VALUES (?, ?)"]
    assert len(dup) == 1 and dup[0]["meta"]["error.type"] == "23505"
    assert dup[0]["meta"]["error.message"] == \
        "ERROR:  duplicate key value violates unique constraint ?"
    assert errors["SELECT ?::int"]["meta"]["error.message"] == \
        "ERROR:  invalid input syntax for type integer: ?"
    for s in spans:
        check_pg_tags(s, pg)
        assert s["service"] == "pyapp"
    # Nothing that reached the agent, nor ddshim's log, holds the value.
    for path in (agent.out, agent.requests, os.path.join(tmp, "ddshim.log")):
        if os.path.exists(path):
            assert canary.encode() not in open(path, "rb").read(), path


SHAPES_SCRIPT = r'''
import sys
import psycopg2
a = psycopg2.connect(sys.argv[1])
b = psycopg2.connect(sys.argv[1])
a.autocommit = b.autocommit = True
for name, sql in (line.split(" ", 1) for line in sys.stdin.read().splitlines()):
    cur = (a if name == "a" else b).cursor()
    cur.execute(sql)
    print(cur.fetchall())
'''

# (connection, statement, resource). The connection remembers the shapes of
# its last statements whose literals are all integers; these check that a
# statement of another shape, or one where another kind of literal stands
# for an integer, is never given a remembered resource.
SHAPE_CASES = [
    ("a", "SELECT 1 AS n", "SELECT ? AS n"),
    ("a", "SELECT 23 AS n", "SELECT ? AS n"),
    ("b", "SELECT 4 AS n", "SELECT ? AS n"),
    ("a", "SELECT 1 AS n, 2 AS m", "SELECT ? AS n, ? AS m"),
    ("a", "SELECT 'x1' AS n", "SELECT ? AS n"),
    ("a", "SELECT 1.5 AS n, 2 AS m", "SELECT ? AS n, ? AS m"),
    ("a", "SELECT 1e2 AS n", "SELECT ? AS n"),
    ("a", "SELECT 5::int8 AS n", "SELECT ?::int8 AS n"),
    ("a", "SELECT -5 AS n", "SELECT -? AS n"),
    ("a", "SELECT (-5) AS n", "SELECT (?) AS n"),
    ("a", "SELECT (5) AS n", "SELECT (?) AS n"),
    ("a", "SELECT 7 AS n -- 8", "SELECT ? AS n"),
    ("a", "SELECT 7 AS n1", "SELECT ? AS n1"),
    ("a", "SELECT 7 AS n", "SELECT ? AS n"),
    ("a", "SELECT 7 AS \"n 2\"", "SELECT ? AS \"n 2\""),
    ("a", "SELECT 8 AS \"n 2\"", "SELECT ? AS \"n 2\""),
    ("b", "SELECT 8 AS n, 9 AS m", "SELECT ? AS n, ? AS m"),
    ("b", "SELECT 10 AS  n", "SELECT ? AS n"),
    ("b", "SELECT 10 AS n WHERE true", "SELECT ? AS n WHERE ?"),
    ("b", "SELECT 10 AS n WHERE 1 < 2", "SELECT ? AS n WHERE ? < ?"),
    ("b", "SELECT 10 AS n WHERE 1 <2", "SELECT ? AS n WHERE ? <?"),
]


def test_statement_shapes_give_exact_resources(agent, tmp, pg):
    script = os.path.join(tmp, "pg_shapes.py")
    with open(script, "w") as f:
        f.write(SHAPES_SCRIPT)
    # Five distinct shapes in turn, three times: more than a connection keeps.
    cycle = [("a", "SELECT %d AS c%d" % (100 * k + j, j), "SELECT ? AS c%d" % j)
             for k in range(3) for j in range(5)]
    cases = SHAPE_CASES + cycle
    stdin = "".join("%s %s\n" % (c, q) for c, q, _ in cases).encode()
    r = subprocess.run([RUN, PY, script, pg.dsn()], input=stdin, capture_output=True,
                       env=traced_env(agent, tmp), timeout=60)
    assert r.returncode == 0, r.stderr
    plain = subprocess.run([PY, script, pg.dsn()], input=stdin, capture_output=True,
                           env=traced_env(), timeout=60)
    assert plain.returncode == 0 and plain.stdout == r.stdout
    spans = [s for s in settled_spans(agent, len(cases)) if s["resource"].startswith("SELECT")]
    spans.sort(key=lambda s: s["start"])
    assert [s["resource"] for s in spans] == [res for _, _, res in cases]
    for s in spans:
        assert s["error"] == 0
        check_pg_tags(s, pg)


def helper(name):
    path = os.path.join(HELPERS, name)
    assert os.path.exists(path), "run make first (%s)" % path
    return path


def test_pipeline_mode_one_span_per_statement(agent, tmp, pg):
    r = run([helper("pq_pipeline"), pg.dsn()], traced_env(agent, tmp))
    assert r.returncode == 0, r.stdout + r.stderr
    plain = run([helper("pq_pipeline"), pg.dsn()], traced_env(), traced=False)
    assert plain.returncode == 0 and plain.stdout == r.stdout
    spans = sorted(settled_spans(agent, 10), key=lambda s: s["start"])
    got = [(s["meta"]["libpq.function"], s["resource"], s["error"]) for s in spans]
    assert got == [
        ("PQexec", "DROP TABLE IF EXISTS pipe_t; CREATE TABLE pipe_t (id int, v text)", 0),
        ("PQsendQueryParams", "INSERT INTO pipe_t VALUES ($1, $2)", 0),
        ("PQsendQueryParams", "SELECT id, v FROM pipe_t WHERE id = $1", 0),
        ("PQsendPrepare", "SELECT count(*) FROM pipe_t WHERE v <> $1", 0),
        ("PQsendQueryPrepared", "SELECT count(*) FROM pipe_t WHERE v <> $1", 0),
        ("PQsendQueryParams", "SELECT ? / $1::int", 1),
        ("PQsendQueryParams", "INSERT INTO pipe_t VALUES (?, ?)", 1),
        ("PQsendQueryParams", "SELECT ?", 0),
        ("PQsendDescribePrepared", "DESCRIBE pipe_sel", 0),
        ("PQexec", "SELECT count(*) FROM pipe_t", 0),
    ]
    assert spans[5]["meta"]["error.message"] == "ERROR:  division by zero"
    assert "not executed" in spans[6]["meta"]["error.message"]
    assert [s["metrics"].get("db.row_count") for s in spans] == \
        [None, 1, 1, None, 1, None, None, 1, None, 1]
    # A pipelined statement ends when its results have been read, after the
    # statements sent before it.
    for a, b in zip(spans[1:5], spans[2:5]):
        assert a["start"] + a["duration"] <= b["start"] + b["duration"]
    for s in spans:
        check_pg_tags(s, pg)
    assert b"pipeline-secret-1" not in open(agent.out, "rb").read()


def test_async_api_and_copy(agent, tmp, pg):
    r = run([helper("pq_async"), pg.dsn(tcp=True)], traced_env(agent, tmp))
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"copy_out: 5 lines" in r.stdout and b"count: 6" in r.stdout
    assert b"after_reset: ok" in r.stdout
    spans = sorted(settled_spans(agent, 15), key=lambda s: s["start"])
    assert agent.spans() == spans, "the libpq socket produced other spans"
    got = [(s["meta"]["libpq.function"], s["resource"], s["error"],
            s["metrics"].get("db.row_count")) for s in spans]
    assert got == [
        ("PQsendQuery", "DROP TABLE IF EXISTS async_t; CREATE TABLE async_t (id int, v text)", 0, None),
        ("PQsendQueryParams", "INSERT INTO async_t VALUES ($1, $2)", 0, 1),
        ("PQsendPrepare", "INSERT INTO async_t VALUES ($1, ?)", 0, None),
        ("PQsendQueryPrepared", "INSERT INTO async_t VALUES ($1, ?)", 0, 1),
        ("PQsendQuery", "SELECT id, v FROM async_t WHERE id > ? ORDER BY id", 0, 2),
        ("PQexec", "COPY async_t FROM STDIN", 0, 3),
        ("PQsendQuery", "COPY (SELECT id FROM async_t ORDER BY id) TO STDOUT", 0, 5),
        ("PQsendQuery", "SELECT * FROM no_such_table", 1, None),
        ("PQexec", "COPY async_t (id) FROM STDIN", 0, None),
        ("PQdescribePrepared", "DESCRIBE ins", 0, None),
        ("PQexecPrepared", "EXECUTE never_prepared", 1, None),
        ("PQsendQuery", "SELECT ?", 0, 1),
        ("PQexec", "SELECT count(*) FROM async_t", 0, 1),
        ("PQexecPrepared", "EXECUTE ins", 1, None),
        ("PQexec", "SELECT ?", 0, 1),
    ]
    assert spans[7]["meta"]["error.message"] == 'ERROR:  relation "no_such_table" does not exist'
    assert spans[7]["meta"]["error.type"] == "42P01"
    assert "never_prepared" in spans[10]["meta"]["error.message"]
    # Spans never overlap: each ends before the next statement starts, the
    # COPYs included (their data transfer is inside their span).
    for a, b in zip(spans, spans[1:]):
        assert a["start"] + a["duration"] <= b["start"], (a["resource"], b["resource"])
    for s in spans:
        check_pg_tags(s, pg, tcp=True)
    out = open(agent.out, "rb").read()
    for secret in (b"async-secret-7", b"copy-secret", b"const-literal", b"undrained",
                   b"after reset"):
        assert secret not in out


def test_threads_and_connection_churn(agent, tmp, pg):
    threads, rounds = 8, 10
    r = run([helper("pq_threads"), pg.dsn(), str(threads), str(rounds)], traced_env(agent, tmp))
    assert r.returncode == 0, r.stdout + r.stderr
    n = threads * rounds * 4
    spans = settled_spans(agent, n)
    assert len(spans) == n
    got = collections.Counter((s["meta"]["libpq.function"], s["resource"]) for s in spans)
    # Every PQexecPrepared found its own connection's PQprepare, never a
    # closed connection's state left at a reused address.
    assert got == {("PQprepare", "SELECT $1::int + ?"): threads * rounds,
                   ("PQexecPrepared", "SELECT $1::int + ?"): threads * rounds,
                   ("PQsendQuery", "SELECT pg_backend_pid()"): threads * rounds,
                   ("PQexec", "SELECT ? AS t"): threads * rounds}
    for s in spans:
        assert s["error"] == 0
        check_pg_tags(s, pg)


CONN_TAGS = {"db.system", "component", "span.kind", "db.name", "peer.service",
             "_dd.peer.service.source", "db.user", "out.host"}


def test_each_span_has_its_own_connections_tags_after_the_connection_is_gone(agent, tmp, pg):
    """A connection's constant tags are one shared set (hooks/libpq.c): every
    span must carry exactly its own connection's, including spans still
    queued (long flush interval) when PQfinish/PQreset drop the connection's
    set, and a connection at a closed one's address (under ASan, a set freed
    too early is a report)."""
    try:
        pg.psql_untraced(["-d", "postgres", "-c", "CREATE ROLE tagset_u LOGIN"])
        pg.psql_untraced(["-d", "postgres", "-c", "CREATE DATABASE tagset_db OWNER tagset_u"])
    except RuntimeError as e:
        assert "already exists" in str(e)
    a = (pg.sockdir, pg.dbname, pg.user)
    b = (pg.host, "tagset_db", "tagset_u")
    c = (pg.host, "tagset_db", pg.user)
    dsn = ["host=%s port=%d dbname=%s user=%s" % (h, pg.port, d, u) for h, d, u in (a, b, c)]
    r = run([helper("pq_conns")] + dsn,
            traced_env(agent, tmp, DDSHIM_FLUSH_INTERVAL_MS=60000))
    assert r.returncode == 0 and r.stdout == b"ok\n", r.stdout + r.stderr
    spans = settled_spans(agent, 10)
    got = {s["resource"]: s for s in spans}
    want = {"SELECT ? AS %s%d" % (k, i): conn
            for k, conn, n in (("a", a, 3), ("b", b, 5), ("c", c, 2)) for i in range(1, n + 1)}
    assert len(spans) == 10 and set(got) == set(want), [s["resource"] for s in spans]
    for res, (host, db, user) in want.items():
        s = got[res]
        m = {k: v for k, v in s["meta"].items() if k in CONN_TAGS}
        assert m == {"db.system": "postgresql", "component": "libpq", "span.kind": "client",
                     "db.name": db, "peer.service": db, "_dd.peer.service.source": "db.name",
                     "db.user": user, "out.host": host}, res
        assert s["metrics"]["network.destination.port"] == pg.port, res
        assert s["metrics"]["_dd.measured"] == 1, res
        assert s["error"] == 0 and s["meta"]["libpq.function"] == \
            ("PQsendQuery" if res.endswith("a3") else "PQexec"), res
    assert "db.row_count" not in got["SELECT ? AS a3"]["metrics"]  # never read
    assert got["SELECT ? AS b1"]["metrics"]["db.row_count"] == 1
    assert b"tagset-secret" not in open(agent.out, "rb").read()


def test_without_libpq_the_hook_fails_like_libpq(agent, tmp):
    plain = run([helper("pq_nolib")], traced_env(), traced=False)
    assert plain.returncode == 0 and plain.stdout == b"no PQexec\n"
    r = run([helper("pq_nolib")], traced_env(agent, tmp, DD_TRACE_DEBUG="true"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == b"PQexec -> NULL, Function not implemented\n"
    log = open(os.path.join(tmp, "ddshim.log")).read()
    assert log.count("postgres integration off: PQexec not found") == 1, log
    time.sleep(0.5)
    assert agent.spans() == []


def test_disabled_integration_is_pure_passthrough(agent, tmp, pg):
    env = traced_env(agent, tmp, DDSHIM_INTEGRATIONS="http_client")
    r = run([helper("pq_async"), pg.dsn()], env)
    assert r.returncode == 0, r.stdout + r.stderr
    time.sleep(1)
    assert agent.spans(SPAN) == []


SERVER_SCRIPT = r'''
import http.server, sys, threading
import psycopg2
ready, dsn = sys.argv[1], sys.argv[2]
local = threading.local()

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        if not hasattr(local, "conn"):
            local.conn = psycopg2.connect(dsn)
            local.conn.autocommit = True
        cur = local.conn.cursor()
        cur.execute("SELECT count(*) FROM pg_class WHERE relname = %s", (self.path.strip("/"),))
        body = ("%d\n" % cur.fetchone()[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(ready + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os
os.rename(ready + ".tmp", ready)
try:
    srv.serve_forever()
except KeyboardInterrupt:
    pass
'''


def test_query_in_http_handler_is_child_of_server_span(agent, tmp, pg):
    script = os.path.join(tmp, "pg_web.py")
    with open(script, "w") as f:
        f.write(SERVER_SCRIPT)
    ready = os.path.join(tmp, "web.port")
    log = open(os.path.join(tmp, "web.log"), "w")
    proc = subprocess.Popen([RUN, PY, script, ready, pg.dsn()],
                            env=traced_env(agent, tmp, DD_SERVICE="pgweb"),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: os.path.exists(ready), 15), "server did not start"
        port = int(open(ready).read())
        for name in ("pg_class", "nope"):
            c = subprocess.run(["curl", "-sS", "http://127.0.0.1:%d/%s" % (port, name)],
                               capture_output=True, timeout=30)
            assert c.returncode == 0, c.stderr
        assert c.stdout == b"0\n"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    queries = settled_spans(agent, 2)
    servers = agent.wait_spans(2, "http.server.request")
    assert len(queries) == 2 and len(servers) == 2
    by_span = {s["span_id"]: s for s in servers}
    for q in queries:
        assert q["resource"] == "SELECT count(*) FROM pg_class WHERE relname = ?"
        parent = by_span.get(q["parent_id"])
        assert parent is not None, "query span is not a child of a server span"
        assert parent["trace_id"] == q["trace_id"]
        assert parent["start"] <= q["start"]
        assert q["start"] + q["duration"] <= parent["start"] + parent["duration"]
        check_pg_tags(q, pg)
