"""A private PostgreSQL server for the integration tests.

initdb into a temporary directory, then pg_ctl start with a unix socket in that
directory and a private TCP port on 127.0.0.1; stopped and removed at the end
of the session. PostgreSQL refuses to run as root, so under root (CI) the
server runs as an unprivileged system user, created if missing.

The server logs every statement it runs (log_statement=all) to a file: tests
count the statements a program really executed by reading the lines written
since a given offset, and compare that count with the spans the agent got.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import free_port

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from daemons import PG_SUPERUSER as SUPERUSER, PgCluster  # noqa: E402 (after the path)

DBNAME = "ddshim_test"


# A statement as the server logs it: "LOG:  statement: ..." for the simple
# protocol, "LOG:  execute <name>: ..." for an extended-protocol Execute. Parse
# (PQprepare), Bind and Describe messages are not logged by log_statement.
_STMT = re.compile(r"LOG:  (statement|execute [^:]*): ")


class PgServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ddshim-pg-")
        self.logfile = os.path.join(self.dir, "server.log")
        self.sockdir = self.dir
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = SUPERUSER
        self.dbname = DBNAME
        self.cluster = PgCluster(self.dir, self.port, [
            "-c listen_addresses=127.0.0.1",
            "-c log_statement=all", "-c log_parameter_max_length=0",
            "-c logging_collector=off",
            "-c max_connections=50", "-c shared_buffers=16MB",
        ], self.logfile)
        self.bindir = self.cluster.bindir  # pgbench and friends live there too
        self.psql_untraced(["-d", "postgres", "-c", "CREATE DATABASE %s" % DBNAME])

    # ---- how clients reach it ---------------------------------------------------

    def dsn(self, tcp=False):
        return "host=%s port=%d user=%s dbname=%s" % (self.host if tcp else self.sockdir,
                                                       self.port, self.user, self.dbname)

    def client_env(self, env, tcp=False):
        """env plus the PG* variables that point libpq clients (psql, pgbench) here."""
        env = dict(env)
        for k in list(env):
            if k.startswith("PG"):
                del env[k]
        env.update(PGHOST=self.host if tcp else self.sockdir, PGPORT=str(self.port),
                   PGUSER=self.user, PGDATABASE=self.dbname)
        return env

    def psql_untraced(self, args):
        env = self.client_env({k: v for k, v in os.environ.items()
                               if k != "LD_PRELOAD" and not k.startswith("DD")})
        r = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q"] + list(args),
                           env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("psql %s failed: %s" % (args, r.stderr))
        return r.stdout

    # ---- what it ran ------------------------------------------------------------

    def log_offset(self):
        return os.path.getsize(self.logfile)

    def statements_since(self, offset):
        """The statements the server executed since offset, in order."""
        with open(self.logfile, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        return [line[m.end():] for line in text.splitlines() for m in [_STMT.search(line)] if m]

    def stop(self):
        self.cluster.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg():
    server = PgServer()
    yield server
    server.stop()
