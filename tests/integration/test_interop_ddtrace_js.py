"""ddshim against Datadog's own Node.js tracer (dd-trace-js).

One distributed trace crosses three processes:

    curl (ddshim)  ->  Node.js http server + client (dd-trace-js)  ->  pyserver (ddshim)

and, the other way round, Node.js (dd-trace-js) is the first caller of a
traced pyserver. For every propagation style (DD_TRACE_PROPAGATION_STYLE set
to the same value for Node.js and for ddshim) the spans of both tracers, as the
local agent received them, must share the trace id (low 64 bits, and
`_dd.p.tid` for the high ones), have the right parents, and carry the same
sampling decision on every chunk root, whether it was made upstream by ddshim
(default, DD_TRACE_SAMPLE_RATE=1, =0) or by dd-trace-js (default, =0).

dd-trace-js comes from the npm registry: the version pinned in
tests/interop/package.json / package-lock.json is installed with `npm ci` into
build/interop/ (once; again only when the lock file changes).
"""
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess

import pytest

from conftest import BUILD, ROOT, RUN, Agent, run, traced_env, wait_until

PY = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
INTEROP_SRC = os.path.join(ROOT, "tests", "interop")
INTEROP = os.path.join(BUILD, "interop")
APP = os.path.join(INTEROP_SRC, "app.js")

# Each alone, then both tracers' default (dd-trace-js adds baggage, which
# ddshim forwards untouched).
STYLES = ["datadog", "tracecontext", "b3multi", "b3", "datadog,tracecontext,baggage"]
# Styles that carry the exact priority (-1..2); B3 only says sampled or not.
FULL_PRIORITY = {"datadog", "tracecontext", "datadog,tracecontext,baggage"}


def _pinned_version():
    with open(os.path.join(INTEROP_SRC, "package.json")) as f:
        return json.load(f)["dependencies"]["dd-trace"]


@pytest.fixture
def agent(tmp):
    """The local agent, as lenient as the Datadog Agent: dd-trace-js leaves out
    empty optional fields (a span without `type`), which ddshim never does."""
    a = Agent(tmp, args=["--lenient"])
    yield a
    a.stop()


@pytest.fixture(scope="module")
def dd_trace_js():
    """build/interop/node_modules with the pinned dd-trace; returns NODE_PATH."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed (scripts/debian-packages.txt: nodejs, npm)"
    files = ("package.json", "package-lock.json")
    digest = hashlib.sha256()
    for name in files:
        with open(os.path.join(INTEROP_SRC, name), "rb") as f:
            digest.update(f.read())
    stamp = os.path.join(INTEROP, ".installed")
    modules = os.path.join(INTEROP, "node_modules")
    installed = os.path.join(modules, "dd-trace", "package.json")
    os.makedirs(INTEROP, exist_ok=True)
    with open(os.path.join(INTEROP, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be installing
        fresh = (os.path.exists(stamp) and open(stamp).read() == digest.hexdigest()
                 and os.path.exists(installed))
        if not fresh:
            if os.path.exists(stamp):
                os.unlink(stamp)
            for name in files:
                shutil.copyfile(os.path.join(INTEROP_SRC, name), os.path.join(INTEROP, name))
            r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=INTEROP,
                               capture_output=True, timeout=600)
            assert r.returncode == 0, "npm ci failed:\n%s\n%s" % (r.stdout.decode(), r.stderr.decode())
            with open(stamp, "w") as f:
                f.write(digest.hexdigest())
    with open(installed) as f:
        assert json.load(f)["version"] == _pinned_version()
    return modules


class Proc:
    """A server that writes its port to a ready file."""

    def __init__(self, tmp, name, cmd, env):
        self.ready = os.path.join(tmp, name + ".port")
        self.log_path = os.path.join(tmp, name + ".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd + [self.ready], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        ok = wait_until(lambda: os.path.exists(self.ready) or self.proc.poll() is not None, 20)
        assert ok and self.proc.poll() is None, "%s did not start: %s" % (name, open(self.log_path).read())
        self.port = int(open(self.ready).read())
        self.url = "http://127.0.0.1:%d" % self.port

    def stop(self, sig=signal.SIGINT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def node_env(agent, modules, style, **extra):
    """dd-trace-js pointed at the local agent; not under ddshim."""
    env = dict(NODE_PATH=modules, DD_SERVICE="node-svc", DD_TRACE_FLUSH_INTERVAL="100",
               DD_TRACE_PROPAGATION_STYLE=style)
    env.update(extra)
    return traced_env(agent, None, **env)


def prio(span):
    return span["metrics"].get("_sampling_priority_v1")


def downstream(style, upstream):
    """The priority the next hop must end up with."""
    if style in FULL_PRIORITY:
        return upstream
    return 1 if upstream > 0 else 0


def find(spans, **want):
    out = [s for s in spans if all(s.get(k) == v for k, v in want.items())]
    assert len(out) <= 1, out
    return out[0] if out else None


@pytest.mark.parametrize("style", STYLES)
def test_one_trace_across_ddshim_and_dd_trace_js(dd_trace_js, agent, tmp, style):
    py = Proc(tmp, "pysrv", [RUN, PY, os.path.join(HERE, "servers", "pyserver.py")],
              traced_env(agent, tmp, DD_SERVICE="pysrv", DD_TRACE_PROPAGATION_STYLE=style))
    node = Proc(tmp, "node", ["node", APP, "server"], node_env(agent, dd_trace_js, style))
    # ddshim's curl starts the trace: AUTO_KEEP by default, USER_KEEP/USER_REJECT
    # by DD_TRACE_SAMPLE_RATE (a catch-all rule).
    forward = {"curl-default": ({}, 1, "-0"), "curl-keep": ({"DD_TRACE_SAMPLE_RATE": "1"}, 2, "-3"),
               "curl-drop": ({"DD_TRACE_SAMPLE_RATE": "0"}, -1, None)}
    # dd-trace-js starts it: AUTO_KEEP by default, USER_REJECT with rate 0.
    reverse = {"node-default": ({}, 1), "node-drop": ({"DD_TRACE_SAMPLE_RATE": "0"}, -1)}
    try:
        for svc, (extra, _, _) in forward.items():
            r = run(["curl", "-sS", "--max-time", "10", node.url + "/call?url=" + py.url + "/"],
                    traced_env(agent, tmp, DD_SERVICE=svc, DD_TRACE_PROPAGATION_STYLE=style, **extra))
            assert r.returncode == 0 and r.stdout == b"ok\n", r
        for svc, (extra, _) in reverse.items():
            r = run(["node", APP, "client", py.url + "/"],
                    node_env(agent, dd_trace_js, style, DD_SERVICE=svc, **extra), traced=False)
            assert r.returncode == 0 and r.stdout == b"200 ok\n", r

        def complete():
            refused = [(q["headers"].get("datadog-meta-lang"), q["status"], q.get("error"))
                       for q in agent.request_log() if q["path"] == "/v0.4/traces" and q["status"] != 200]
            assert not refused, "the local agent refused payloads: %s" % refused
            spans = agent.spans()
            roots = [s for s in spans if s["service"] in forward or
                     (s["service"] in reverse and s["name"] == "http.request")]
            ids = {s["trace_id"] for s in roots}
            # Each trace: its root, pysrv's span, and for the forward ones node's two.
            have = sum(1 for s in spans if s["trace_id"] in ids and
                       (s["service"] == "pysrv" or s["name"] in ("web.request", "http.request")))
            return len(roots) == 5 and have == 3 * 3 + 2 * 2 and spans
        spans = wait_until(complete, 20)
        assert spans, "incomplete traces: %s" % json.dumps(agent.spans(), indent=1)[:6000]
    finally:
        node.stop(signal.SIGTERM)
        py.stop()

    chunks = agent.chunks()
    # Every payload, Node's and ddshim's, was accepted. dd-trace-js sends v0.4
    # straight away (no /info, no /v0.5 probe); its telemetry, remote
    # configuration and health-metric calls get 404 and it carries on.
    reqs = agent.request_log()
    traces_reqs = [q for q in reqs if q["path"] == "/v0.4/traces"]
    assert traces_reqs and all(q["status"] == 200 for q in traces_reqs), traces_reqs
    assert {q["headers"].get("datadog-meta-lang") for q in traces_reqs} == {"cpp", "nodejs"}
    assert not [q for q in reqs if q["path"] in ("/info", "/v0.5/traces")]

    # Nothing either tracer extracted was malformed or inconsistent.
    for sp in spans:
        assert "_dd.propagation_error" not in sp["meta"], sp
        assert "_dd.w3c_extraction_error" not in sp["meta"], sp

    def chunk_root(span):
        """The first span of the chunk span came in (what the agent reads)."""
        for c in chunks:
            if any(s["span_id"] == span["span_id"] for s in c["spans"]):
                return c["spans"][0]
        raise AssertionError("span not in any chunk")

    for svc, (_, want, dm) in forward.items():
        curl = find(spans, service=svc)
        tid = curl["trace_id"]
        n_srv = find(spans, trace_id=tid, name="web.request")
        n_cli = find(spans, trace_id=tid, name="http.request")
        p_srv = find(spans, trace_id=tid, service="pysrv")
        assert None not in (n_srv, n_cli, p_srv), (svc, [s for s in spans if s["trace_id"] == tid])
        # The chain of parents: curl -> node server -> node client -> pyserver.
        assert curl["parent_id"] == 0
        assert n_srv["parent_id"] == curl["span_id"], (svc, n_srv, curl)
        assert n_cli["parent_id"] == n_srv["span_id"]
        assert p_srv["parent_id"] == n_cli["span_id"], (svc, p_srv, n_cli)
        assert n_srv["service"] == "node-svc" and n_srv["type"] == "web"
        assert curl["name"] == "http.client.request" and p_srv["name"] == "http.server.request"
        # The high 64 bits went through Node.js too.
        high = curl["meta"]["_dd.p.tid"]
        assert len(high) == 16 and int(high, 16) != 0
        assert n_srv["meta"].get("_dd.p.tid") == high, (svc, n_srv["meta"])
        assert p_srv["meta"].get("_dd.p.tid") == high, (svc, p_srv["meta"])
        # The decision: made by curl, honoured by Node.js, then by pyserver.
        assert chunk_root(curl)["span_id"] == curl["span_id"]
        assert prio(curl) == want, (svc, curl["metrics"])
        assert curl["meta"].get("_dd.p.dm") == dm, (svc, curl["meta"])
        at_node = downstream(style, want)
        assert chunk_root(n_srv)["span_id"] == n_srv["span_id"]
        assert prio(n_srv) == at_node, (svc, style, n_srv["metrics"])
        assert all(prio(s) == at_node for s in spans
                   if s["trace_id"] == tid and s["service"] == "node-svc"), svc
        assert chunk_root(p_srv)["span_id"] == p_srv["span_id"]
        assert prio(p_srv) == downstream(style, at_node), (svc, style, p_srv["metrics"])
        if want <= 0:
            assert prio(n_srv) <= 0 and prio(p_srv) <= 0
        if style in FULL_PRIORITY and want > 0:
            # The decision maker travels in x-datadog-tags / tracestate t.dm.
            assert n_srv["meta"].get("_dd.p.dm") == dm, (svc, n_srv["meta"])
            assert p_srv["meta"].get("_dd.p.dm") == dm, (svc, p_srv["meta"])

    for svc, (_, want) in reverse.items():
        n_cli = find(spans, service=svc, name="http.request")
        tid = n_cli["trace_id"]
        p_srv = find(spans, trace_id=tid, service="pysrv")
        assert p_srv is not None, (svc, [s for s in spans if s["trace_id"] == tid])
        assert n_cli["parent_id"] == 0 and chunk_root(n_cli)["span_id"] == n_cli["span_id"]
        assert p_srv["parent_id"] == n_cli["span_id"]
        high = n_cli["meta"]["_dd.p.tid"]
        assert len(high) == 16 and int(high, 16) != 0
        assert p_srv["meta"].get("_dd.p.tid") == high, (svc, p_srv["meta"])
        assert prio(n_cli) == want, (svc, n_cli["metrics"])
        assert chunk_root(p_srv)["span_id"] == p_srv["span_id"]
        assert prio(p_srv) == downstream(style, want), (svc, style, p_srv["metrics"])
        if want <= 0:
            assert prio(p_srv) <= 0
