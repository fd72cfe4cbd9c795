"""Redis through hiredis: real programs (tests/helpers/redis_*.c, Debian's
webdis) against a real redis-server, run under ddshim-run; assertions on the
spans the agent received and on the programs' own output, which must be the
same as an untraced run's."""
import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request

from conftest import HELPERS, PRELOAD_EXTRA, RUN, free_port, run, traced_env, wait_until
from redisserver import CANARY_PASSWORD, redis_auth_server, redis_server  # noqa: F401 (fixtures)

CLIENT = os.path.join(HELPERS, "redis_client")
ASYNC = os.path.join(HELPERS, "redis_async")
HTTPD = os.path.join(HELPERS, "redis_httpd")


def redis_spans(agent, n, timeout=10.0):
    spans = agent.wait_spans(n, "redis.command", timeout)
    return sorted(spans, key=lambda s: (s["start"], s["span_id"]))


def settle(agent, name="redis.command"):
    """Wait until the agent has stopped receiving spans of this name."""
    last = -1
    for _ in range(20):
        n = len(agent.spans(name))
        if n == last:
            return
        last = n
        time.sleep(0.25)


def end(s):
    return s["start"] + s["duration"]


# A span's start is a wall-clock reading and its duration a monotonic one,
# taken one after the other (as Datadog's tracers do), so start + duration
# carries the jitter between the two reads. Replies read from one buffer end
# spans microseconds apart; under a sanitizer runtime (its clock_gettime
# interceptor, preemption) that jitter has reached a few microseconds and put
# two ends out of order. Exact order is checked without one.
END_JITTER_NS = 50_000 if PRELOAD_EXTRA else 0


def in_order(ends):
    return all(b >= a - END_JITTER_NS for a, b in zip(ends, ends[1:]))


def check_common(s, host="127.0.0.1", port=None):
    assert s["name"] == "redis.command"
    assert s["type"] == "redis"
    m = s["meta"]
    assert m["db.system"] == "redis"
    assert m["component"] == "hiredis"
    assert m["span.kind"] == "client"
    assert m["out.host"] == host
    assert m["peer.service"] == host
    assert m["_dd.peer.service.source"] == "out.host"
    assert s["metrics"]["_dd.measured"] == 1
    if port is None:
        assert "network.destination.port" not in s["metrics"]
    else:
        assert s["metrics"]["network.destination.port"] == port


def same_as_untraced(cmd, agent, tmp, redis=None, **env):
    """Run cmd untraced, then traced, from the same (empty) database."""
    if redis:
        redis.command("FLUSHALL")
    plain = run(cmd, traced_env(**env), traced=False)
    if redis:
        redis.command("FLUSHALL")
    traced = run(cmd, traced_env(agent, tmp, **env))
    assert traced.returncode == plain.returncode, (traced, plain)
    assert traced.stdout == plain.stdout
    assert traced.stderr == plain.stderr
    return traced


def test_plain_commands(agent, redis_server, tmp):
    r = same_as_untraced([CLIENT, redis_server.tcp, "basic"], agent, tmp, redis_server)
    assert r.returncode == 0
    assert b"get: $hello world" in r.stdout
    settle(agent)
    spans = redis_spans(agent, 9)
    assert len(spans) == 9, [s["resource"] for s in spans]
    assert [s["resource"] for s in spans] == [
        "SET", "GET", "DEL", "INCR", "INCRBY", "CLIENT LIST", "SELECT", "SET", "GET"]
    assert [s["meta"]["redis.raw_command"] for s in spans] == [
        "SET greeting ?", "GET greeting", "DEL counter", "INCR counter", "INCRBY counter 41",
        "CLIENT LIST", "SELECT 2", "SET in-db-2 ?", "GET in-db-2"]
    assert [s["metrics"]["redis.args_length"] for s in spans] == [3, 2, 2, 2, 3, 2, 2, 3, 2]
    # The database index: 0 on a fresh connection, 2 after a successful SELECT.
    assert [s["meta"]["out.redis_db"] for s in spans] == ["0"] * 6 + ["2"] * 3
    assert all(s["meta"]["db.redis.database_index"] == s["meta"]["out.redis_db"] for s in spans)
    for s in spans:
        check_common(s, port=redis_server.port)
        assert s["error"] == 0
        assert s["parent_id"] == 0
        assert s["service"] == "redis_client"
        assert s["duration"] > 0
    # One trace per command (no server span to parent them).
    assert len({s["trace_id"] for s in spans}) == 9
    # Redis traffic is never taken for HTTP, and the value never leaves the process.
    assert {s["name"] for s in agent.spans()} == {"redis.command"}
    assert b"hello world" not in open(agent.out, "rb").read()


def test_pipeline_one_span_per_command_in_order(agent, redis_server, tmp):
    n = 40
    r = same_as_untraced([CLIENT, redis_server.tcp, "pipeline", str(n)], agent, tmp,
                         redis_server)
    assert r.returncode == 0
    spans = redis_spans(agent, n)
    settle(agent)
    spans = redis_spans(agent, n)
    assert len(spans) == n
    raws = [s["meta"]["redis.raw_command"] for s in spans]
    assert raws == [("SET pipe:%d ?" % i) if i % 2 == 0 else ("GET pipe:%d" % (i - 1))
                    for i in range(n)]
    for s in spans:
        check_common(s, port=redis_server.port)
        assert s["error"] == 0
    # Each span ends with its own reply: replies come back in order.
    ends = [end(s) for s in spans]
    assert in_order(ends), ends
    # All appends happen before the first reply is read.
    assert max(s["start"] for s in spans) <= min(ends)


def test_pipeline_beyond_the_fifo_bound(agent, redis_server, tmp):
    """More pending commands than a context queues (10000): the excess is not
    traced, the replies still match, and tracing resumes afterwards."""
    env = dict(DDSHIM_MAX_QUEUED_SPANS="100000")
    r = same_as_untraced([CLIENT, redis_server.tcp, "pipeline", "10500"], agent, tmp,
                         redis_server, **env)
    assert r.returncode == 0
    settle(agent)
    spans = redis_spans(agent, 10000, timeout=30)
    assert len(spans) == 10000
    raws = [s["meta"]["redis.raw_command"] for s in spans]
    assert raws[0] == "SET pipe:0 ?" and raws[-1] == "GET pipe:9998"
    assert all(s["error"] == 0 for s in spans)


def test_mixed_append_and_command(agent, redis_server, tmp):
    """redisCommand after appends returns the oldest pending reply: spans
    still end in the order the commands were sent."""
    r = same_as_untraced([CLIENT, redis_server.tcp, "mixed"], agent, tmp, redis_server)
    assert b"command returns first append's reply: +OK" in r.stdout
    spans = redis_spans(agent, 3)
    settle(agent)
    spans = redis_spans(agent, 3)
    assert [s["meta"]["redis.raw_command"] for s in spans] == [
        "SET mixed:a ?", "SET mixed:b ?", "GET mixed:a"]
    ends = [end(s) for s in spans]
    assert in_order(ends), ends
    assert all(s["error"] == 0 for s in spans)


def test_error_replies(agent, redis_server, tmp):
    r = same_as_untraced([CLIENT, redis_server.tcp, "error"], agent, tmp, redis_server)
    assert b"incr: -ERR value is not an integer" in r.stdout
    spans = redis_spans(agent, 4)
    settle(agent)
    spans = redis_spans(agent, 4)
    assert [s["resource"] for s in spans] == ["SET", "INCR", "NOSUCHCOMMAND", "GET"]
    assert [s["error"] for s in spans] == [0, 1, 1, 0]
    assert spans[1]["meta"]["error.message"] == "ERR value is not an integer or out of range"
    # Redis echoes the arguments of an unknown command: they are cut off.
    assert spans[2]["meta"]["error.message"] == "ERR unknown command 'NOSUCHCOMMAND'"
    assert spans[2]["meta"]["redis.raw_command"] == "NOSUCHCOMMAND somekey ?"
    assert b"canary-arg" not in open(agent.out, "rb").read()
    assert b"notanumber" not in open(agent.out, "rb").read()


def test_argv_and_binary_arguments(agent, redis_server, tmp):
    r = same_as_untraced([CLIENT, redis_server.tcp, "argv"], agent, tmp, redis_server)
    assert b"hset: :1" in r.stdout
    spans = redis_spans(agent, 3)
    settle(agent)
    spans = redis_spans(agent, 3)
    assert [s["resource"] for s in spans] == ["HSET", "HGET", "LPUSH"]
    assert [s["meta"]["redis.raw_command"] for s in spans] == [
        "HSET h field ?", "hget h field", "LPUSH l ?"]
    assert [s["metrics"]["redis.args_length"] for s in spans] == [4, 3, 4]


def test_inline_command_is_not_http(agent, redis_server, tmp):
    """`GET / HTTP/1.1` sent to Redis is a Redis command: no header is
    injected (Redis would answer each extra line), no HTTP span."""
    r = same_as_untraced([CLIENT, redis_server.tcp, "inline"], agent, tmp, redis_server)
    assert r.returncode == 0
    assert r.stdout.splitlines() == [
        b"inline: -ERR wrong number of arguments for 'get' command",
        b"ping: +PONG", b"two: (nil)", b"two: +PONG", b"echo: $after"]
    spans = redis_spans(agent, 4)
    settle(agent)
    spans = redis_spans(agent, 4)
    names = {s["name"] for s in agent.spans()}
    assert names == {"redis.command"}
    # One span per traced command; the second command of the two-command buffer
    # is counted, not traced, and the replies still line up (ECHO is fine).
    assert [s["resource"] for s in spans] == ["GET", "PING", "GET", "ECHO"]
    assert spans[0]["error"] == 1
    assert spans[0]["meta"]["redis.raw_command"] == "GET / HTTP/1.1"
    assert spans[3]["error"] == 0 and spans[3]["meta"]["redis.raw_command"] == "ECHO ?"


def test_non_blocking_context(agent, redis_server, tmp):
    r = same_as_untraced([CLIENT, redis_server.tcp, "nonblock"], agent, tmp, redis_server)
    assert r.stdout.splitlines()[:3] == [
        b"command in non-blocking mode: NULL", b"nb: +OK", b"nb: $nb-value"]
    redis_spans(agent, 2)
    settle(agent)
    spans = [s for s in agent.spans("redis.command") if s["meta"]["redis.raw_command"].startswith(
        ("SET nb:a", "GET nb:a"))]
    spans.sort(key=lambda s: s["start"])
    assert [s["meta"]["redis.raw_command"] for s in spans] == ["SET nb:a ?", "GET nb:a"]
    for s in spans:
        check_common(s, port=redis_server.port)
        assert s["error"] == 0
    # Each span lasts until its reply, not just until redisCommand returned.
    ends = [end(s) for s in spans]
    assert in_order(ends), ends


def test_free_with_pending_replies(agent, redis_server, tmp):
    same_as_untraced([CLIENT, redis_server.tcp, "free-pending"], agent, tmp, redis_server)
    spans = redis_spans(agent, 2)
    settle(agent)
    spans = redis_spans(agent, 2)
    assert [s["resource"] for s in spans] == ["SET", "GET"]
    assert all(s["error"] == 0 for s in spans)


def test_connection_refused_is_untouched(agent, tmp):
    port = free_port()
    r = same_as_untraced([CLIENT, "tcp:127.0.0.1:%d" % port, "basic"], agent, tmp)
    assert r.returncode == 1
    assert r.stdout.startswith(b"connect error 1: Connection refused")
    time.sleep(1)
    assert agent.spans("redis.command") == []


def test_auth_over_unix_socket_never_leaks_password(agent, redis_auth_server, tmp):
    r = same_as_untraced([CLIENT, redis_auth_server.unix, "auth", CANARY_PASSWORD], agent, tmp,
                         redis_auth_server, DD_TRACE_DEBUG="true")
    assert r.stdout == b"auth: +OK\nping: +PONG\n"
    spans = redis_spans(agent, 2)
    settle(agent)
    spans = redis_spans(agent, 2)
    assert [s["meta"]["redis.raw_command"] for s in spans] == ["AUTH ?", "PING"]
    for s in spans:
        check_common(s, host=redis_auth_server.sock, port=None)
        assert s["error"] == 0
    # Nowhere: not in the agent's traces, its request log, or ddshim's log.
    for path in (agent.out, agent.requests, os.path.join(tmp, "ddshim.log")):
        if os.path.exists(path):
            assert CANARY_PASSWORD.encode() not in open(path, "rb").read(), path


def test_wrong_password_error_is_recorded(agent, redis_auth_server, tmp):
    r = same_as_untraced([CLIENT, redis_auth_server.tcp, "auth", "wrong-" + CANARY_PASSWORD],
                         agent, tmp, redis_auth_server)
    assert b"auth: -WRONGPASS" in r.stdout
    spans = redis_spans(agent, 2)
    settle(agent)
    spans = redis_spans(agent, 2)
    assert spans[0]["error"] == 1 and spans[0]["meta"]["error.message"].startswith("WRONGPASS")
    assert spans[1]["error"] == 1 and spans[1]["meta"]["error.message"].startswith("NOAUTH")
    assert CANARY_PASSWORD.encode() not in open(agent.out, "rb").read()


def test_async_api_with_libevent(agent, redis_server, tmp):
    r = same_as_untraced([ASYNC, redis_server.host, str(redis_server.port)], agent, tmp,
                         redis_server)
    assert r.returncode == 0
    assert r.stdout.splitlines()[-2:] == [b"ping-then-free: (null reply)", b"done"]
    spans = redis_spans(agent, 9)
    settle(agent)
    spans = redis_spans(agent, 9)
    by_res = {}
    for s in spans:
        by_res.setdefault(s["resource"], []).append(s)
        check_common(s, port=redis_server.port)
    assert sorted(s["resource"] for s in spans) == sorted(
        ["SET", "GET", "INCR", "SELECT", "SET", "SUBSCRIBE", "PUBLISH", "UNSUBSCRIBE", "PING"])
    sets = by_res["SET"]
    assert [s["meta"]["redis.raw_command"] for s in sets] == ["SET akey ?", "SET bkey ?"]
    assert [s["meta"]["out.redis_db"] for s in sets] == ["0", "3"]
    assert by_res["SELECT"][0]["meta"]["out.redis_db"] == "3"
    assert by_res["PUBLISH"][0]["meta"]["redis.raw_command"] == "PUBLISH chan ?"
    assert by_res["PUBLISH"][0]["meta"]["out.redis_db"] == "3"
    assert by_res["INCR"][0]["error"] == 1
    assert by_res["INCR"][0]["meta"]["error.message"].startswith("ERR value is not an integer")
    # Its callback got a NULL reply: the context was freed first.
    ping = by_res["PING"][0]
    assert ping["error"] == 1 and ping["meta"]["error.message"]
    for res in ("GET", "SELECT", "SUBSCRIBE", "PUBLISH", "UNSUBSCRIBE"):
        assert by_res[res][0]["error"] == 0, res
    # A wrapped callback's span lasts until the reply: the first SET ends
    # before the GET that follows it ends.
    assert end(sets[0]) <= end(by_res["GET"][0])
    out = open(agent.out, "rb").read()
    assert b"secret-async-value" not in out and b"hello-subscriber" not in out


def test_integration_can_be_turned_off(agent, redis_server, tmp):
    same_as_untraced([CLIENT, redis_server.tcp, "basic"], agent, tmp, redis_server,
                     DDSHIM_INTEGRATIONS="http")
    time.sleep(1.5)
    assert agent.spans("redis.command") == []


# ---- servers that use Redis --------------------------------------------------------


def wait_port(port):
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    assert wait_until(up, 10), "port %d never opened" % port


def test_thread_per_request_server_parents_redis_spans(agent, redis_server, tmp):
    """Each request's Redis commands are children of that request's server
    span (needs the http.server.request spans)."""
    portfile = os.path.join(tmp, "httpd.port")
    p = subprocess.Popen([RUN, HTTPD, portfile, redis_server.host, str(redis_server.port), "3"],
                         env=traced_env(agent, tmp, DD_SERVICE="redis-httpd"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: os.path.exists(portfile), 10)
        port = int(open(portfile).read())
        bodies = {}
        for path in ("/one", "/two", "/three"):
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as resp:
                assert resp.status == 200
                bodies[path] = resp.read()
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert out == b"served 3\n"
    assert bodies["/two"] == b"/two hits=1 get=1\n"
    agent.wait_spans(3, "http.server.request")
    agent.wait_spans(6, "redis.command")
    settle(agent)
    servers = {s["span_id"]: s for s in agent.spans("http.server.request")}
    redis = agent.spans("redis.command")
    assert len(redis) == 6, [s["resource"] for s in redis]
    assert len(servers) == 3, "no http.server.request spans (server spans not available)"
    for s in redis:
        assert s["parent_id"] in servers, s
        parent = servers[s["parent_id"]]
        assert s["trace_id"] == parent["trace_id"]
        assert s["service"] == "redis-httpd"
        # The command belongs to the request it was made for.
        path = urllib.parse.urlparse(parent["meta"]["http.url"]).path
        assert s["meta"]["redis.raw_command"] in ("INCR hits:%s" % path, "GET hits:%s" % path)
        check_common(s, port=redis_server.port)
    # Both commands of each request, in the request's trace.
    for sid in servers:
        assert sorted(s["resource"] for s in redis if s["parent_id"] == sid) == ["GET", "INCR"]


def webdis_config(tmpdir, redis, http_port):
    cfg = {
        "redis_host": redis.host, "redis_port": redis.port, "redis_auth": None,
        "http_host": "127.0.0.1", "http_port": http_port, "threads": 1, "pool_size": 2,
        "daemonize": False, "database": 0, "verbosity": 0,
        "logfile": os.path.join(tmpdir, "webdis-%d.log" % http_port),
        "acl": [{"disabled": ["DEBUG"]}],
    }
    path = os.path.join(tmpdir, "webdis-%d.json" % http_port)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


WEBDIS_CALLS = ["/SET/hello/world", "/GET/hello", "/INCR/hello", "/DEL/hello", "/INCR/hello"]


def webdis_session(tmpdir, redis, env, traced, agent=None, tmp=None):
    """Start webdis, call it with curl, stop it; returns the curl results."""
    hp = free_port()
    cfg = webdis_config(tmpdir, redis, hp)
    cmd = ([RUN] if traced else []) + ["webdis", cfg]
    w = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_port(hp)
        results = []
        for path in WEBDIS_CALLS:
            c = run(["curl", "-sS", "-D", "-", "http://127.0.0.1:%d%s" % (hp, path)],
                    traced_env(agent, tmp, DD_SERVICE="curl") if traced else traced_env(),
                    traced=traced)
            results.append((c.returncode, c.stdout, c.stderr))
    finally:
        w.terminate()
        w.wait(10)
    return hp, results


def strip_date(raw):
    return b"\n".join(l for l in raw.split(b"\n") if not l.lower().startswith(b"date:"))


def test_webdis_async_server(agent, redis_server, tmp):
    """webdis (hiredis's async API on libevent) under ddshim, called by a
    traced curl: one redis.command span per call, and webdis answers exactly
    as untraced."""
    _, plain = webdis_session(tmp, redis_server, traced_env(), traced=False)
    redis_server.command("FLUSHALL")
    hp, traced = webdis_session(tmp, redis_server, traced_env(agent, tmp, DD_SERVICE="webdis"),
                                traced=True, agent=agent, tmp=tmp)
    for (prc, pout, perr), (trc, tout, terr) in zip(plain, traced):
        assert trc == prc == 0, (terr, perr)
        assert strip_date(tout) == strip_date(pout)
        assert terr == perr
    assert b'{"GET":"world"}' in traced[1][1]
    spans = redis_spans(agent, len(WEBDIS_CALLS))
    settle(agent)
    spans = [s for s in agent.spans("redis.command") if s["service"] == "webdis"]
    spans.sort(key=lambda s: s["start"])
    # webdis may send commands of its own (none with database 0); the calls' are these:
    calls = [s for s in spans if s["resource"] in ("SET", "GET", "INCR", "DEL")]
    assert [s["resource"] for s in calls] == ["SET", "GET", "INCR", "DEL", "INCR"]
    assert [s["meta"]["redis.raw_command"] for s in calls] == [
        "SET hello ?", "GET hello", "INCR hello", "DEL hello", "INCR hello"]
    assert [s["error"] for s in calls] == [0, 0, 1, 0, 0]
    for s in calls:
        check_common(s, port=redis_server.port)
    # Parenting: webdis handles one request at a time here, so the command is
    # sent while that request's server span is active on the thread: ddshim
    # makes it a child, in the trace curl started. Without server spans, the
    # commands are roots.
    servers = {s["span_id"]: s for s in agent.spans("http.server.request")
               if s["service"] == "webdis"}
    clients = sorted((s for s in agent.spans("http.client.request") if s["service"] == "curl"),
                     key=lambda s: s["start"])
    for i, (s, path) in enumerate(zip(calls, WEBDIS_CALLS)):
        if not servers:
            assert s["parent_id"] == 0
            continue
        assert s["parent_id"] in servers, (s, servers)
        parent = servers[s["parent_id"]]
        assert s["trace_id"] == parent["trace_id"]
        assert parent["meta"]["http.url"].endswith(path)
        # The trace is the one the traced curl started (when its span arrived).
        if len(clients) == len(WEBDIS_CALLS):
            assert clients[i]["meta"]["http.url"].endswith(path)
            assert clients[i]["trace_id"] == s["trace_id"]
