"""No secret leaves the process, and ddshim's log never surprises anyone.

Canaries go where secrets live — an Authorization header, a Cookie, URL
userinfo, a query-string token (client and server side), SQL literals
(including ones a failing statement's error message quotes), PQexecParams /
PQexecPrepared parameters, Redis AUTH/HELLO passwords — and are looked for,
as bytes, in everything that left: every payload the agent received (its
--out and --requests files) and ddshim's own log with DD_TRACE_DEBUG=true.

The log: off the program's stdout/stderr unless configured, no debug lines
unless asked, created 0600 even under umask 0, appended to (O_APPEND), not
inherited across exec (O_CLOEXEC), and a symlink planted at its path is not
followed (O_NOFOLLOW)."""
import os
import stat
import subprocess
import sys
import time

import pytest

from conftest import (PY, REL_CLIENT, RUN, HELPERS, ddshim_log, plain_env, settled, timed,
                      traced_env, wait_until)
from pgserver import pg  # noqa: F401  (the session's PostgreSQL server fixture)
from redisserver import CANARY_PASSWORD, redis_auth_server  # noqa: F401

PYSERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration",
                        "servers", "pyserver.py")


def leaks(agent, tmp, canaries):
    """The canaries found in what left the process: agent files and ddshim's log."""
    found = []
    for path in (agent.out, agent.requests, os.path.join(tmp, "ddshim.log")):
        data = open(path, "rb").read() if os.path.exists(path) else b""
        found += [(os.path.basename(path), c) for c in canaries if c.encode() in data]
    return found


def debug_env(agent, tmp, **extra):
    return traced_env(agent, tmp, DD_TRACE_DEBUG="true", **extra)


def test_http_client_secrets(agent, recorder, tmp, rel):
    c = {"auth": "canaryAuthz41a", "cookie": "canaryCookie9b2", "token": "canaryToken3c7",
         "userinfo": "canaryUserPw5d8", "proxy": "canaryProxy6e1", "pw": "canaryQueryPw2f0"}
    url = "http://user:%s@127.0.0.1:%d/api/items?token=%s&page=2&password=%s" % (
        c["userinfo"], recorder.port, c["token"], c["pw"])
    cmd = ["curl", "-sS", "-H", "Authorization: Bearer " + c["auth"], "-H", "Cookie: session=" + c["cookie"],
           "-H", "Proxy-Authorization: Basic " + c["proxy"], url]
    r = subprocess.run([RUN] + cmd, env=debug_env(agent, tmp), capture_output=True, timeout=30)
    code = ("import urllib.request,sys\n"
            "q=urllib.request.Request(sys.argv[1], headers={'Authorization': 'Token ' + sys.argv[2]})\n"
            "sys.stdout.write(urllib.request.urlopen(q).read().decode())\n")
    p = subprocess.run([RUN, PY, "-c", code, recorder.url + "/py?api_key=" + c["token"], c["auth"]],
                       env=debug_env(agent, tmp), capture_output=True, timeout=30)
    rel.input(len(c) + 2)
    assert r.returncode == p.returncode == 0, (r, p)
    assert r.stdout == p.stdout == b"hello\n"
    # The secrets did reach the server (the program works as written)...
    assert c["cookie"] in recorder.header(recorder.requests[0], "cookie")[0]
    spans = settled(agent, "http.client.request")
    assert len(spans) == 2
    # ...and nowhere else.
    assert leaks(agent, tmp, list(c.values())) == []
    assert "page=2" in [s for s in spans if "/api/items" in s["meta"]["http.url"]][0]["meta"]["http.url"]


def test_http_server_secrets(agent, tmp, rel):
    c = {"auth": "canarySrvAuth8a1", "cookie": "canarySrvCookie7b2", "token": "canarySrvToken6c3",
         "pw": "canarySrvPw5d4"}
    ready = os.path.join(tmp, "srv.port")
    log = open(os.path.join(tmp, "srv.log"), "w")
    srv = subprocess.Popen([RUN, PY, PYSERVER, ready], env=debug_env(agent, tmp, DD_SERVICE="srv"),
                           stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: os.path.exists(ready), 10)
        port = int(open(ready).read())
        r = subprocess.run(["curl", "-sS", "-u", "admin:" + c["pw"], "-H", "Authorization: Bearer " + c["auth"],
                            "-H", "Cookie: sid=" + c["cookie"],
                            "http://127.0.0.1:%d/?access_token=%s&x=1" % (port, c["token"])],
                           env=plain_env(), capture_output=True, timeout=30)
        assert r.returncode == 0 and r.stdout == b"ok\n"
        spans = agent.wait_spans(1, "http.server.request", timeout=10)
    finally:
        srv.send_signal(2)
        srv.wait(10)
        log.close()
    rel.input(len(c))
    assert spans[0]["resource"] == "GET /"
    assert leaks(agent, tmp, list(c.values())) == []


def test_postgres_secrets(agent, tmp, pg, rel):
    canary = "canaryPg3f9e1"
    r = subprocess.run([RUN, os.path.join(HELPERS, "rel_pq_secrets"), pg.dsn(tcp=True), canary],
                       env=debug_env(agent, tmp), capture_output=True, timeout=60)
    plain = subprocess.run([os.path.join(HELPERS, "rel_pq_secrets"), pg.dsn(tcp=True), canary],
                           env=plain_env(), capture_output=True, timeout=60)
    rel.input(9)
    assert r.returncode == plain.returncode == 0, (r, plain)
    assert r.stdout == plain.stdout
    spans = settled(agent, "postgresql.query")
    assert len(spans) >= 9, [s["resource"] for s in spans]
    errors = [s for s in spans if s["error"]]
    assert len(errors) == 3, [(s["resource"], s["meta"].get("error.message")) for s in errors]
    assert all(s["meta"].get("error.type") for s in errors)
    assert leaks(agent, tmp, [canary]) == []


def test_redis_secrets(agent, tmp, redis_auth_server, rel):
    canary = "canaryRedisValue4a2"
    cmd = [os.path.join(HELPERS, "rel_redis_secrets"), redis_auth_server.host, str(redis_auth_server.port),
           CANARY_PASSWORD, canary]
    r = subprocess.run([RUN] + cmd, env=debug_env(agent, tmp), capture_output=True, timeout=30)
    rel.input(10)
    assert r.returncode == 0, r
    assert r.stdout.count(b": ok\n") == 10
    spans = settled(agent, "redis.command")
    assert len(spans) == 10, [s["resource"] for s in spans]
    assert leaks(agent, tmp, [CANARY_PASSWORD, canary]) == []


# ---- the log ------------------------------------------------------------------

def test_log_never_on_program_stdio_unless_asked(agent, recorder, tmp, rel):
    """A warning (bad setting) and, with DD_TRACE_DEBUG, debug lines: none on
    the program's stdout/stderr, all in the default file under $TMPDIR; no
    debug lines there unless asked. DD_TRACE_LOG_FILE=stderr does send them
    to stderr."""
    cmd = ["curl", "-sS", recorder.url + "/log"]
    plain, _ = timed(cmd, plain_env(), traced=False)
    default_log = os.path.join(tmp, "ddshim-%d.log" % os.getuid())
    base = dict(DD_TRACE_SAMPLE_RATE="not-a-number", TMPDIR=tmp)
    quiet, _ = timed(cmd, traced_env(agent, None, **base))
    rel.input()
    assert quiet.returncode == 0 and (quiet.stdout, quiet.stderr) == (plain.stdout, plain.stderr)
    text = open(default_log).read()
    assert "DD_TRACE_SAMPLE_RATE" in text and " WARN: " in text
    assert " DEBUG: " not in text
    debug, _ = timed(cmd, traced_env(agent, None, DD_TRACE_DEBUG="true", **base))
    rel.input()
    assert (debug.stdout, debug.stderr) == (plain.stdout, plain.stderr)
    assert " DEBUG: " in open(default_log).read()
    asked, _ = timed(cmd, traced_env(agent, None, DD_TRACE_LOG_FILE="stderr", **base))
    rel.input()
    assert asked.stdout == plain.stdout and b"DD_TRACE_SAMPLE_RATE" in asked.stderr


def test_log_file_created_private_and_appended(agent, recorder, tmp, rel):
    log = os.path.join(tmp, "ddshim.log")
    cmd = ["curl", "-sS", recorder.url + "/"]
    r, _ = timed(cmd, debug_env(agent, tmp), umask=0)
    assert r.returncode == 0
    st = os.lstat(log)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    first = open(log, "rb").read()
    assert first
    r, _ = timed(cmd, debug_env(agent, tmp), umask=0)
    rel.input(2)
    second = open(log, "rb").read()
    assert second.startswith(first) and len(second) > len(first)


def test_log_fd_not_inherited_across_exec(agent, recorder, tmp, rel):
    log = os.path.join(tmp, "ddshim.log")
    cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/x", "exec", "ls", "-l", "/proc/self/fd/"]
    r, _ = timed(cmd, debug_env(agent, tmp))
    rel.input()
    assert r.returncode == 0, r
    assert os.path.getsize(log) > 0  # the log was open when exec happened
    assert b"ddshim.log" not in r.stdout, r.stdout


@pytest.mark.parametrize("target", ["existing", "missing"])
def test_symlink_at_log_path_not_followed(agent, recorder, tmp, rel, target):
    victim = os.path.join(tmp, "victim")
    if target == "existing":
        open(victim, "w").write("untouched\n")
    for path in (os.path.join(tmp, "ddshim.log"), os.path.join(tmp, "ddshim-%d.log" % os.getuid())):
        os.symlink(victim, path)
    cmd = ["curl", "-sS", recorder.url + "/"]
    plain, _ = timed(cmd, plain_env(), traced=False)
    named, _ = timed(cmd, debug_env(agent, tmp))
    default, _ = timed(cmd, traced_env(agent, None, DD_TRACE_DEBUG="true", TMPDIR=tmp))
    rel.input(2)
    rel.fault(2)
    for r in (named, default):
        assert (r.returncode, r.stdout, r.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    if target == "existing":
        assert open(victim).read() == "untouched\n"
    else:
        assert not os.path.exists(victim)
    # Tracing itself went on.
    assert len(settled(agent, "http.client.request")) == 2


@pytest.mark.parametrize("where", ["named", "default"])
def test_fifo_at_log_path_does_not_block(agent, recorder, tmp, rel, where):
    """A FIFO planted at the log path (the default one is in a shared
    directory: anyone can plant it) must not block the program: opening it
    for writing without a reader would wait forever."""
    path = os.path.join(tmp, "ddshim.log" if where == "named" else "ddshim-%d.log" % os.getuid())
    os.mkfifo(path)
    cmd = ["curl", "-sS", recorder.url + "/fifo"]
    plain, _ = timed(cmd, plain_env(), traced=False)
    # A bad setting makes the constructor itself log a warning.
    env = traced_env(agent, tmp if where == "named" else None, DD_TRACE_DEBUG="true", TMPDIR=tmp,
                     DD_TRACE_SAMPLE_RATE="not-a-number")
    r, elapsed = timed(cmd, env, timeout=20)
    rel.fault()
    assert (r.returncode, r.stdout, r.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert elapsed < 2.5, elapsed
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert len(settled(agent, "http.client.request")) == 1


def test_default_log_of_another_user_not_written(agent, recorder, tmp, rel):
    """Someone else created $TMPDIR/ddshim-<uid>.log, world-writable: ddshim
    does not write into a file it does not own."""
    path = os.path.join(tmp, "ddshim-%d.log" % os.getuid())
    open(path, "w").write("theirs\n")
    os.chmod(path, 0o666)
    os.chown(path, 65534, 65534)
    r, _ = timed(["curl", "-sS", recorder.url + "/"],
                 traced_env(agent, None, DD_TRACE_DEBUG="true", TMPDIR=tmp, DD_TRACE_SAMPLE_RATE="bad"))
    rel.fault()
    assert r.returncode == 0 and r.stdout == b"hello\n" and r.stderr == b""
    assert open(path).read() == "theirs\n"
