"""Bytes ddshim does not control: what callers send a traced server, and what
a traced client writes.

- Server side: oversized and malformed trace headers (16 KiB traceparent,
  64 KiB x-datadog-tags, numeric overflows, non-UTF-8 origin, duplicates,
  hundreds of tracestate members...). The traced server answers exactly as an
  untraced one, keeps serving, and every request gets one span that the
  (strict) agent accepts.
- Client side: request heads from 1 to 16 KiB. No injection pushes a head
  past 8 KiB (heads over ~7 KiB are left alone); apart from the injected
  header lines every byte goes out unchanged.
- Pipelining with bodies that look like HTTP requests: a traced server makes
  one span per real request; a traced client's bodies go out byte for byte,
  nothing injected into them, with one span per real request.
"""
import os
import re
import socket
import subprocess

import pytest

from conftest import (PY, REL_CLIENT, RUN, ddshim_log, plain_env, settled, trace_headers_in,
                      traced_env, wait_until)

PYSERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration",
                        "servers", "pyserver.py")


class PyServer:
    def __init__(self, tmp, name, env, traced):
        self.ready = os.path.join(tmp, name + ".port")
        self.log = open(os.path.join(tmp, name + ".log"), "w")
        self.proc = subprocess.Popen(([RUN] if traced else []) + [PY, PYSERVER, self.ready], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        assert wait_until(lambda: os.path.exists(self.ready), 10)
        self.port = int(open(self.ready).read())

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.send_signal(2)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def exchange(port, data, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except socket.timeout:
        out += b"<timeout>"
    s.close()
    return out


def comparable(answer):
    """A response without the lines that differ from run to run."""
    return re.sub(rb"\r\n(Date|Server): [^\r]*", b"", answer)


# name, a span is expected, the header lines. No span where the head is over
# ddshim's 16 KiB parsing limit, or breaks RFC 9112 (NUL, obsolete line
# folding): the connection then turns passive, by design; the server's
# answer must still be the untraced one.
BAD_HEADERS = [
    ("traceparent_16k", False, b"traceparent: 00-" + b"a" * 16384 + b"-01\r\n"),
    ("traceparent_bad_version", True, b"traceparent: ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"),
    ("traceparent_zero_ids", True, b"traceparent: 00-00000000000000000000000000000000-0000000000000000-01\r\n"),
    ("traceparent_upper", True, b"traceparent: 00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01\r\n"),
    ("traceparent_twice", True, b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
                          b"traceparent: 00-11111111111111111111111111111111-2222222222222222-00\r\n"),
    ("traceparent_short", True, b"traceparent: 00-abc-def-01\r\n"),
    ("tracestate_600_members", True, b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
                               b"tracestate: " + b",".join(b"m%d=%s" % (i, b"v" * 20) for i in range(600)) + b"\r\n"),
    ("tracestate_dd_garbage", True, b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
                              b"tracestate: dd=s:zz;o:\xff\xfe;t.dm:-9;p:nothex;" + b"t.x:" + b"y" * 4000 + b"\r\n"),
    ("trace_id_overflow", True, b"x-datadog-trace-id: 99999999999999999999999999999\r\nx-datadog-parent-id: 1\r\n"),
    ("trace_id_negative", True, b"x-datadog-trace-id: -5\r\nx-datadog-parent-id: -7\r\n"),
    ("trace_id_text", True, b"x-datadog-trace-id: abc\r\nx-datadog-parent-id: \r\n"),
    ("parent_zero", True, b"x-datadog-trace-id: 123\r\nx-datadog-parent-id: 0\r\n"),
    ("priority_overflow", True, b"x-datadog-trace-id: 123\r\nx-datadog-parent-id: 456\r\n"
                          b"x-datadog-sampling-priority: 99999999999999999999999\r\n"),
    ("tags_64k", False, b"x-datadog-trace-id: 123\r\nx-datadog-parent-id: 456\r\nx-datadog-tags: _dd.p.a="
                 + b"b" * 65000 + b"\r\n"),
    ("tags_malformed", True, b"x-datadog-trace-id: 123\r\nx-datadog-parent-id: 456\r\n"
                       b"x-datadog-tags: ,,=,_dd.p.dm=,_dd.p.tid=zzzz,=x,_dd.p.\xff=\xfe\r\n"),
    ("origin_not_utf8", True, b"x-datadog-trace-id: 123\r\nx-datadog-parent-id: 456\r\n"
                        b"x-datadog-origin: \xff\xfe\xc0\xaf synthetics\r\n"),
    ("origin_4k", True, b"x-datadog-trace-id: 123\r\nx-datadog-parent-id: 456\r\nx-datadog-origin: " + b"o" * 4096 + b"\r\n"),
    ("ids_twice_conflicting", True, b"x-datadog-trace-id: 123\r\nx-datadog-trace-id: 999\r\n"
                              b"x-datadog-parent-id: 456\r\n"),
    ("many_trace_headers", True, b"".join(b"x-datadog-tags: _dd.p.k%d=v\r\n" % i for i in range(90))),
    ("nul_and_controls", False, b"x-datadog-trace-id: 12\x003\r\nx-datadog-parent-id: 4\x01\x1b56\r\n"),
    ("b3_garbage", True, b"b3: \xff-zz-1-nothex\r\nx-b3-traceid: " + b"f" * 2000 + b"\r\n"),
    ("obs_fold", False, b"x-datadog-trace-id: 123\r\n   456\r\nx-datadog-parent-id: 789\r\n"),
]


def test_malformed_trace_headers_server_side(agent, tmp, rel):
    traced = PyServer(tmp, "traced", traced_env(agent, tmp, DD_SERVICE="untrusted"), True)
    plain = PyServer(tmp, "plain", plain_env(), False)
    try:
        for name, _, headers in BAD_HEADERS:
            req = b"GET /?case=" + name.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n"
            want, got = exchange(plain.port, req), exchange(traced.port, req)
            rel.input()
            assert comparable(got) == comparable(want), (name, got[:300], want[:300])
            assert traced.alive(), name
        # Still serving normally after all that.
        assert exchange(traced.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"ok\n")
        expected = sorted(["http://x/"] + ["http://x/?case=" + name for name, span, _ in BAD_HEADERS if span])
        agent.wait_spans(len(expected), "http.server.request", timeout=10)
        spans = settled(agent, "http.server.request")
    finally:
        traced.stop()
        plain.stop()
    assert sorted(s["meta"]["http.url"] for s in spans) == expected
    assert all(q["status"] == 200 for q in agent.request_log()), agent.request_log()
    for s in spans:
        for k, v in s["meta"].items():
            assert len(v) <= 25000, (k, len(v))


HEAD_SIZES = [1024, 6 * 1024, 7 * 1024 - 200, 7 * 1024 + 100, 8 * 1024, 12 * 1024, 16 * 1024 - 64]


def request_of_size(size, path):
    head = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % path.encode()
    filler = size - len(head) - len(b"X-Fill: \r\n\r\n")
    return head + b"X-Fill: " + b"f" * filler + b"\r\n\r\n"


def strip_injected(data):
    """data without the header lines ddshim adds."""
    lines = data.split(b"\r\n")
    return b"\r\n".join(l for l in lines if l.split(b":")[0].lower().decode("latin-1") not in
                        ("x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
                         "x-datadog-tags", "x-datadog-origin", "traceparent", "tracestate"))


@pytest.mark.parametrize("size", HEAD_SIZES)
def test_large_request_heads_client_side(agent, raw_server, tmp, rel, size):
    req = request_of_size(size, "/big%d" % size)
    assert len(req) == size
    f = os.path.join(tmp, "req.bin")
    open(f, "wb").write(req)
    cmd = [REL_CLIENT, "127.0.0.1", str(raw_server.port), "raw:" + f]
    r = subprocess.run([RUN] + cmd, env=traced_env(agent, tmp), capture_output=True, timeout=30)
    rel.input()
    assert r.returncode == 0, (r, ddshim_log(tmp))
    assert r.stdout.startswith(b"raw %d " % size)
    assert len(raw_server.connections) == 1
    got = raw_server.connections[0]
    assert strip_injected(got) == req
    if size > 7 * 1024:
        assert got == req  # near server limits: left alone
    else:
        assert len(trace_headers_in(got)) >= 2
    assert len(got) <= max(size, 8192)
    spans = settled(agent, "http.client.request")
    assert [s["resource"] for s in spans] == ["GET /big?"] or \
        [s["resource"] for s in spans] == ["GET /big%d" % size], spans


# A body that is itself a complete request head, and one that looks like a response.
FAKE = b"GET /fake HTTP/1.1\r\nHost: evil\r\nx-datadog-trace-id: 1\r\n\r\n"
FAKE2 = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nPOST /fake2 HTTP/1.0\r\n\r\n"


def pipeline(chunked):
    parts = [b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(FAKE) + FAKE,
             b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(FAKE2) + FAKE2]
    if chunked:
        parts.append(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(FAKE), FAKE, len(FAKE2), FAKE2))
    parts.append(b"GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return parts


def test_pipelined_bodies_that_look_like_requests_server_side(agent, tmp, rel):
    traced = PyServer(tmp, "traced", traced_env(agent, tmp, DD_SERVICE="pipe"), True)
    plain = PyServer(tmp, "plain", plain_env(), False)
    try:
        data = b"".join(pipeline(chunked=False))  # Python's server reads no chunked bodies
        want, got = exchange(plain.port, data), exchange(traced.port, data)
        rel.input(3)
        assert comparable(got) == comparable(want)
        assert got.count(b"HTTP/1.") == 3
        spans = agent.wait_spans(3, "http.server.request", timeout=10)
        spans = settled(agent, "http.server.request")
    finally:
        traced.stop()
        plain.stop()
    assert sorted(s["resource"] for s in spans) == ["GET /d", "POST /a", "POST /b"]
    # The x-datadog-trace-id inside the first body is not a header.
    assert all(s["trace_id"] != 1 for s in spans)


@pytest.mark.parametrize("writes", ["one_write", "write_per_request"])
def test_pipelined_bodies_that_look_like_requests_client_side(agent, raw_server, tmp, rel, writes):
    parts = pipeline(chunked=True)
    files = []
    chunks = [b"".join(parts)] if writes == "one_write" else parts
    for i, c in enumerate(chunks):
        files.append(os.path.join(tmp, "part%d" % i))
        open(files[-1], "wb").write(c)
    cmd = [REL_CLIENT, "127.0.0.1", str(raw_server.port), "raw:" + ",".join(files)]
    r = subprocess.run([RUN] + cmd, env=traced_env(agent, tmp), capture_output=True, timeout=30)
    rel.input(4)
    assert r.returncode == 0, (r, ddshim_log(tmp))
    # Byte for byte, once the injected header lines are taken out of the heads.
    assert raw_server.connections[0] == b"".join(h + b for h, b in raw_server.requests)
    assert b"".join(strip_injected(h) + b for h, b in raw_server.requests) == b"".join(parts)
    bodies = [b for _, b in raw_server.requests]
    assert bodies[0] == FAKE and bodies[1] == FAKE2 and FAKE in bodies[2] and FAKE2 in bodies[2]
    heads = [h for h, _ in raw_server.requests]
    assert [h.split(b" ")[1] for h in heads] == [b"/a", b"/b", b"/c", b"/d"]
    if writes == "write_per_request":
        assert all(len(trace_headers_in(h)) >= 2 for h in heads)
    else:
        assert len(trace_headers_in(heads[0])) >= 2  # only the head at the start of the write
    spans = settled(agent, "http.client.request")
    assert sorted(s["resource"] for s in spans) == ["GET /d", "POST /a", "POST /b", "POST /c"]
    assert all(s["meta"]["http.status_code"] == "200" for s in spans)
