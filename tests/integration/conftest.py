"""Shared fixtures for ddshim's integration tests.

Everything here is real: the local agent is build/ddshim-agent (the same
program `make demo` uses), HTTP servers are real servers on loopback, and the
traced programs are run through scripts/ddshim-run exactly as a user would.
"""
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("DDSHIM_BUILD") or os.path.join(ROOT, "build")  # another tree: sanitizer builds
LIB = os.environ.get("DDSHIM_LIB") or os.path.join(BUILD, "libddshim.so")
# Kept in traced environments: they select a sanitizer build (make test SANITIZE=...).
BUILD_VARS = ("DDSHIM_BUILD", "DDSHIM_LIB", "DDSHIM_PRELOAD_EXTRA")
RUN = os.path.join(ROOT, "scripts", "ddshim-run")
AGENT_BIN = os.path.join(BUILD, "ddshim-agent")
HELPERS = os.path.join(BUILD, "tests", "helpers")
# Set for a sanitizer build (make test SANITIZE=...): the sanitizer's runtime,
# which ddshim-run preloads before ddshim.
PRELOAD_EXTRA = os.environ.get("DDSHIM_PRELOAD_EXTRA", "")

# Programs that cannot run at all with a sanitizer runtime preloaded, ddshim or
# not: with libasan or libtsan first in LD_PRELOAD, curl, psql and pgbench hang
# at start-up in glibc's setlocale lock (__libc_setlocale_lock, taken through
# the sanitizer's setlocale interceptor). Nothing about ddshim can be learnt
# from them in a sanitizer run, so the tests that trace them are skipped there
# (only there: without DDSHIM_PRELOAD_EXTRA nothing is ever skipped).
SANITIZER_HANGS = ("curl", "psql", "pgbench")


def sanitizer_cannot_run(cmd, env=None):
    """In a sanitizer run, why cmd cannot run traced (None: it can, or this is
    not a sanitizer run). Traced: started through ddshim-run, or with the
    sanitizer runtime in its LD_PRELOAD. A program named anywhere in its
    arguments counts too (helpers that exec one, ddshim-run's own command)."""
    if not PRELOAD_EXTRA or isinstance(cmd, (str, bytes)):
        return None
    argv = [os.fsdecode(a) for a in cmd]
    preload = (env if env is not None else os.environ).get("LD_PRELOAD", "")
    traced = (argv and os.path.basename(argv[0]) == "ddshim-run") or PRELOAD_EXTRA in preload.split(":")
    if not traced:
        return None
    for a in argv:
        name = os.path.basename(a)
        if name in SANITIZER_HANGS and (a == name or os.path.isfile(a)):
            return ("%s cannot run with the sanitizer runtime preloaded (%s): it hangs in glibc's "
                    "setlocale lock even without ddshim" % (name, os.path.basename(PRELOAD_EXTRA)))
    return None


class _SanitizerPopen(subprocess.Popen):
    """subprocess.Popen, but a traced start of a program listed above skips
    the current test instead (sanitizer runs only). Every way tests start
    programs (run(), subprocess.run, Popen with ddshim-run) goes through it."""
    _ddshim_sanitizer_guard = True

    def __init__(self, args, *a, **kw):
        reason = sanitizer_cannot_run(args, kw.get("env"))
        if reason:
            pytest.skip(reason)
        super().__init__(args, *a, **kw)


# Installed once per session (this file is also loaded by
# tests/reliability/conftest.py under another module name).
if PRELOAD_EXTRA and not getattr(subprocess.Popen, "_ddshim_sanitizer_guard", False):
    subprocess.Popen = _SanitizerPopen


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


class Agent:
    """build/ddshim-agent on a private port (or unix socket)."""

    def __init__(self, tmpdir, unix=False, args=()):
        self.dir = tmpdir
        self.out = os.path.join(tmpdir, "agent-traces.jsonl")
        self.requests = os.path.join(tmpdir, "agent-requests.jsonl")
        ready = os.path.join(tmpdir, "agent-ready")
        cmd = [AGENT_BIN, "--quiet", "--out", self.out, "--requests", self.requests,
               "--ready-file", ready]
        if unix:
            self.sock = os.path.join(tmpdir, "agent.sock")
            cmd += ["--unix", self.sock]
            self.url = "unix://" + self.sock
        else:
            cmd += ["--port", "0"]
        cmd += list(args)
        self.log = open(os.path.join(tmpdir, "agent.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        assert wait_until(lambda: os.path.exists(ready) and open(ready).read().strip(), 10), \
            "local agent did not start"
        if not unix:
            self.port = int(open(ready).read().strip())
            self.url = "http://127.0.0.1:%d" % self.port

    def chunks(self):
        if not os.path.exists(self.out):
            return []
        with open(self.out) as f:
            # A line the agent is still writing has no newline yet: read it next time.
            return [json.loads(l) for l in f if l.endswith("\n") and l.strip()]

    def spans(self, name=None):
        out = [s for c in self.chunks() for s in c["spans"]]
        return [s for s in out if name is None or s["name"] == name]

    def request_log(self):
        if not os.path.exists(self.requests):
            return []
        with open(self.requests) as f:
            return [json.loads(l) for l in f if l.strip()]

    def wait_spans(self, n, name=None, timeout=10.0):
        wait_until(lambda: len(self.spans(name)) >= n, timeout)
        return self.spans(name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Recorder:
    """A plain HTTP/1.1 server (Python's http.server, untraced: it runs in the
    pytest process) that records every request it receives."""

    def __init__(self, status=200, body=b"hello\n"):
        self.requests = []
        self.status = status
        self.body = body
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                rec.requests.append({"method": self.command, "path": self.path,
                                     "headers": [(k.lower(), v) for k, v in self.headers.items()],
                                     "body": body})
                payload = b"" if self.command == "HEAD" else rec.body
                self.send_response(rec.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(rec.body)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def header(self, req, name):
        vals = [v for k, v in req["headers"] if k == name.lower()]
        return vals

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


@pytest.fixture
def agent(tmp):
    a = Agent(tmp)
    yield a
    a.stop()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.stop()


def traced_env(agent=None, tmpdir=None, **extra):
    env = dict(os.environ)
    for k in list(env):
        if (k.startswith("DD_") or k.startswith("DDSHIM_") or k == "LD_PRELOAD") and k not in BUILD_VARS:
            del env[k]
    if agent is not None:
        env["DD_TRACE_AGENT_URL"] = agent.url
    env["DDSHIM_FLUSH_INTERVAL_MS"] = "200"
    if tmpdir is not None:
        env["DD_TRACE_LOG_FILE"] = os.path.join(tmpdir, "ddshim.log")
    for k, v in extra.items():
        env[k] = str(v)
    return env


def run(cmd, env=None, traced=True, timeout=60, **kw):
    """Run cmd (under ddshim-run when traced) and return CompletedProcess.
    In a sanitizer run, a traced program that cannot run there skips the
    test (sanitizer_cannot_run)."""
    full = ([RUN] + list(cmd)) if traced else list(cmd)
    reason = sanitizer_cannot_run(full, env)
    if reason:
        pytest.skip(reason)
    return subprocess.run(full, env=env, capture_output=True, timeout=timeout, **kw)


def by_id(spans):
    return {s["span_id"]: s for s in spans}
