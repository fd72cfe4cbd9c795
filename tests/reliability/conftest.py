"""Shared pieces of ddshim's reliability tests (issue 7: the host program never
notices ddshim, whatever happens).

The integration fixtures are reused as they are: tests/integration/conftest.py
is loaded under its own module name and everything it defines (Agent,
Recorder, traced_env, run, the agent/recorder/tmp fixtures...) is re-exported
from here, so `from conftest import ...` gives the same names whichever of the
two conftest modules pytest imported last, and pgserver.py/redisserver.py keep
working.

Added here: the `slow` marker, a raw TCP server that records the exact bytes
it received, helpers to time runs and read ddshim's log, and the per-case
counts for the reliability summary table: when DDSHIM_RELIABILITY_LOG names a
file, every case appends one JSON line
    {"suite": "reliability", "case": ..., "faults": F, "inputs": I, "passed": bool}
(F: faults injected, I: inputs tried; each test adds to them through the
`rel` fixture).
"""
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_INTEGRATION = os.path.join(os.path.dirname(_HERE), "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)

_spec = importlib.util.spec_from_file_location("ddshim_integration_conftest",
                                               os.path.join(_INTEGRATION, "conftest.py"))
_integration = importlib.util.module_from_spec(_spec)
sys.modules["ddshim_integration_conftest"] = _integration
_spec.loader.exec_module(_integration)
for _name in dir(_integration):
    if not _name.startswith("__"):
        globals()[_name] = getattr(_integration, _name)

# Re-exported explicitly for readers (and linters): the names the tests use.
Agent = _integration.Agent
Recorder = _integration.Recorder
traced_env = _integration.traced_env
run = _integration.run
wait_until = _integration.wait_until
free_port = _integration.free_port
ROOT = _integration.ROOT
BUILD = _integration.BUILD
LIB = _integration.LIB
RUN = _integration.RUN
HELPERS = _integration.HELPERS
PRELOAD_EXTRA = _integration.PRELOAD_EXTRA

PY = "/usr/bin/python3"
REL_CLIENT = os.path.join(HELPERS, "rel_client")
REL_FORK = os.path.join(HELPERS, "rel_fork")
REL_LIBEARLY = os.path.join(HELPERS, "rel_libearly")
REL_SLOWINIT = os.path.join(HELPERS, "rel_slowinit")
TRACE_HEADERS = ("x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
                 "x-datadog-origin", "x-datadog-tags", "traceparent", "tracestate")


# pytest imports every directory's conftest.py as the module "conftest", the
# last one winning; the test modules here say `from conftest import ...` and
# must get this one, whatever else the session collects.
_SELF = sys.modules[__name__]


def pytest_collectstart(collector):
    path = str(getattr(collector, "path", ""))
    if path.startswith(_HERE + os.sep) and path.endswith(".py"):
        sys.modules["conftest"] = _SELF


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~5 s; left out of `make test` "
                                       "(pytest -m 'not slow'), run by `make reliability`")


# ---- per-case counts for the summary table ----------------------------------

class Counts:
    """What a case did: faults it injected, inputs it tried."""

    def __init__(self):
        self.faults = 0
        self.inputs = 0

    def fault(self, n=1):
        self.faults += n

    def input(self, n=1):
        self.inputs += n


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "_rel_rep_" + rep.when, rep)


@pytest.fixture(autouse=True)
def rel(request):
    counts = Counts()
    yield counts
    path = os.environ.get("DDSHIM_RELIABILITY_LOG")
    if not path:
        return
    setup = getattr(request.node, "_rel_rep_setup", None)
    call = getattr(request.node, "_rel_rep_call", None)
    passed = bool(setup is not None and setup.passed and call is not None and call.passed)
    line = {"suite": "reliability",
            "group": request.node.module.__name__.replace("test_", "", 1),
            "case": request.node.name, "faults": counts.faults, "inputs": counts.inputs,
            "passed": passed}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


# ---- running things ---------------------------------------------------------

def timed(cmd, env, traced=True, timeout=60, **kw):
    """run() plus the wall time it took, in seconds."""
    t0 = time.monotonic()
    r = run(cmd, env, traced=traced, timeout=timeout, **kw)
    return r, time.monotonic() - t0


def ld_preload(*libs):
    """An LD_PRELOAD value for libs. In a sanitizer run the runtime comes
    first (as ddshim-run puts it): an instrumented ddshim or helper library
    cannot load into an uninstrumented program otherwise."""
    return ":".join(([PRELOAD_EXTRA] if PRELOAD_EXTRA else []) + list(libs))


def plain_env(**extra):
    """The environment of an untraced run: no LD_PRELOAD, no DD_*."""
    return traced_env(**extra)


def ddshim_log(tmp):
    path = os.path.join(tmp, "ddshim.log")
    return open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""


def settled(agent, name=None, quiet=0.6, timeout=15):
    """The agent's spans once no new one arrived for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(agent.spans(name))
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.05)
    return agent.spans(name)


def trace_headers_in(data):
    """Trace-context header names found in raw request bytes (lower case)."""
    low = data.lower()
    return [h for h in TRACE_HEADERS if (b"\r\n" + h.encode() + b":") in low]


# ---- a raw HTTP server ----------------------------------------------------------

class RawServer:
    """A loopback HTTP/1.1 server that keeps the exact bytes of every
    connection. It answers each complete request it finds (Content-Length or
    chunked framing, pipelining allowed) with a fixed 200, and closes after a
    request that says "Connection: close" or when the client shuts down."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.connections = []   # raw bytes received, one entry per connection
        self.requests = []      # (head bytes, body bytes) in order
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _one(buf):
        """(head, body, rest) of the first complete request in buf, or None."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head, rest = buf[:end + 4], buf[end + 4:]
        low = head.lower()
        if b"\r\ntransfer-encoding: chunked" in low:
            body, pos = b"", 0
            while True:
                eol = rest.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(rest[pos:eol].split(b";")[0] or b"0", 16)
                if size == 0:
                    fin = rest.find(b"\r\n\r\n", eol)
                    if fin < 0 and rest[eol:eol + 4] != b"\r\n\r\n":
                        return None
                    stop = eol + 4 if rest[eol:eol + 4] == b"\r\n\r\n" else fin + 4
                    return head, rest[:stop], rest[stop:]
                if len(rest) < eol + 2 + size + 2:
                    return None
                pos = eol + 2 + size + 2
        n = 0
        for line in low.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                n = int(line.split(b":", 1)[1])
        if len(rest) < n:
            return None
        return head, rest[:n], rest[n:]

    def _serve(self, c):
        data, buf = b"", b""
        c.settimeout(20)
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    break
                data += b
                buf += b
                close = False
                while True:
                    one = self._one(buf)
                    if one is None:
                        break
                    head, body, buf = one
                    with self.lock:
                        self.requests.append((head, body))
                    c.sendall(self.ANSWER)
                    if b"\r\nconnection: close" in head.lower():
                        close = True
                if close:
                    break
        except OSError:
            pass
        finally:
            with self.lock:
                self.connections.append(data)
            c.close()

    def stop(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def raw_server():
    s = RawServer()
    yield s
    s.stop()


@pytest.fixture
def rtmp():
    """A temporary directory anyone may enter (programs run as `nobody` use
    it); pytest's own are private to root."""
    d = tempfile.mkdtemp(prefix="ddshim-rel-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
