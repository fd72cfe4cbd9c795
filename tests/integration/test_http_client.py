"""Outgoing HTTP: real clients (curl, python3 urllib) under ddshim-run against
a recording server; assertions on what the server and the agent received."""
import json
import os
import subprocess
import time

from conftest import Agent, Recorder, run, traced_env, wait_until

PY = "/usr/bin/python3"


def ctx_headers(req):
    h = {}
    for k, v in req["headers"]:
        if k.startswith("x-datadog-") or k in ("traceparent", "tracestate"):
            h.setdefault(k, []).append(v)
    return h


def test_curl_get_is_traced_and_headers_match_span(agent, recorder, tmp):
    env = traced_env(agent, tmp, DD_SERVICE="curl-test", DD_ENV="ci", DD_VERSION="1.2",
                     DD_TAGS="team:apm,tier:test")
    r = run(["curl", "-sS", recorder.url + "/users/12345/orders?token=s3cr3t&page=2"], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello\n"
    assert len(recorder.requests) == 1
    h = ctx_headers(recorder.requests[0])
    for name in ("x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
                 "traceparent", "tracestate"):
        assert len(h.get(name, [])) == 1, (name, h)
    spans = agent.wait_spans(1, "http.client.request")
    assert len(spans) == 1
    s = spans[0]
    assert s["service"] == "curl-test"
    assert s["type"] == "http"
    assert s["resource"] == "GET /users/?/orders"
    assert s["meta"]["http.method"] == "GET"
    assert s["meta"]["http.status_code"] == "200"
    assert s["meta"]["span.kind"] == "client"
    assert s["meta"]["env"] == "ci" and s["meta"]["version"] == "1.2"
    assert s["meta"]["team"] == "apm" and s["meta"]["tier"] == "test"
    assert s["meta"]["out.host"] == "127.0.0.1"
    assert s["metrics"]["network.destination.port"] == recorder.port
    assert "s3cr3t" not in s["meta"]["http.url"]
    assert "page=2" in s["meta"]["http.url"]
    assert s["error"] == 0
    assert s["parent_id"] == 0
    assert s["metrics"]["_sampling_priority_v1"] == 1
    assert s["metrics"]["process_id"] > 0
    assert s["meta"]["language"] == "cpp"
    assert len(s["meta"]["runtime-id"]) == 36
    # The headers name exactly this span and trace.
    assert int(h["x-datadog-trace-id"][0]) == s["trace_id"]
    assert int(h["x-datadog-parent-id"][0]) == s["span_id"]
    tp = h["traceparent"][0].split("-")
    assert tp[0] == "00" and tp[3] == "01"
    assert int(tp[1][16:], 16) == s["trace_id"]
    assert tp[1][:16] == s["meta"]["_dd.p.tid"]
    assert int(tp[2], 16) == s["span_id"]
    assert h["tracestate"][0].startswith("dd=s:1;p:%016x" % s["span_id"])
    # No secret anywhere in what reached the agent.
    assert b"s3cr3t" not in open(agent.out, "rb").read()


def test_output_and_status_identical_to_untraced(agent, recorder, tmp):
    url = recorder.url + "/x"
    plain = run(["curl", "-sS", "-o", "-", "-w", "%{http_code}", url], traced_env(), traced=False)
    traced = run(["curl", "-sS", "-o", "-", "-w", "%{http_code}", url], traced_env(agent, tmp))
    assert plain.returncode == traced.returncode == 0
    assert plain.stdout == traced.stdout
    assert plain.stderr == traced.stderr == b""
    bad = run(["curl", "-sS", "http://127.0.0.1:1/"], traced_env(agent, tmp))
    bad_plain = run(["curl", "-sS", "http://127.0.0.1:1/"], traced_env(), traced=False)
    assert bad.returncode == bad_plain.returncode == 7
    assert bad.stdout == bad_plain.stdout


def test_keep_alive_one_header_set_per_request(agent, recorder, tmp):
    urls = [recorder.url + "/a", recorder.url + "/b", recorder.url + "/c"]
    r = run(["curl", "-sS"] + urls, traced_env(agent, tmp))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello\n" * 3
    assert len(recorder.requests) == 3
    spans = agent.wait_spans(3, "http.client.request")
    assert len(spans) == 3
    ids = set()
    for req in recorder.requests:
        h = ctx_headers(req)
        assert len(h["x-datadog-parent-id"]) == 1 and len(h["traceparent"]) == 1
        ids.add(int(h["x-datadog-parent-id"][0]))
    assert ids == {s["span_id"] for s in spans}
    assert sorted(s["resource"] for s in spans) == ["GET /a", "GET /b", "GET /c"]


def test_post_body_byte_identical(agent, recorder, tmp):
    body = bytes(range(256)) * 300 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    path = os.path.join(tmp, "body.bin")
    open(path, "wb").write(body)
    r = run(["curl", "-sS", "--data-binary", "@" + path, recorder.url + "/upload"],
            traced_env(agent, tmp))
    assert r.returncode == 0, r.stderr
    assert len(recorder.requests) == 1
    assert recorder.requests[0]["body"] == body
    s = agent.wait_spans(1, "http.client.request")[0]
    assert s["resource"] == "POST /upload"


def test_existing_context_is_not_injected_twice(agent, recorder, tmp):
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = run(["curl", "-sS", "-H", "traceparent: " + tp, recorder.url + "/"], traced_env(agent, tmp))
    assert r.returncode == 0
    h = ctx_headers(recorder.requests[0])
    assert h == {"traceparent": [tp]}
    # The span still exists, as a child of the context the request carried.
    s = agent.wait_spans(1, "http.client.request")[0]
    assert s["parent_id"] == 0xb7ad6b7169203331
    assert s["trace_id"] == 0x8448eb211c80319c


def test_server_error_marks_span(agent, tmp):
    rec = Recorder(status=503, body=b"down\n")
    try:
        r = run(["curl", "-sS", rec.url + "/fail"], traced_env(agent, tmp))
        assert r.returncode == 0
        s = agent.wait_spans(1, "http.client.request")[0]
        assert s["error"] == 1
        assert s["meta"]["http.status_code"] == "503"
    finally:
        rec.stop()


def test_python_urllib(agent, recorder, tmp):
    code = ("import urllib.request,sys\n"
            "for p in ('/one','/two?password=hunter2'):\n"
            "    sys.stdout.write(urllib.request.urlopen(sys.argv[1]+p).read().decode())\n")
    r = run([PY, "-c", code, recorder.url], traced_env(agent, tmp, DD_SERVICE="pyclient"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello\nhello\n"
    spans = agent.wait_spans(2, "http.client.request")
    assert len(spans) == 2
    for req in recorder.requests:
        h = ctx_headers(req)
        assert len(h["x-datadog-trace-id"]) == 1
    assert {s["resource"] for s in spans} == {"GET /one", "GET /two"}
    assert b"hunter2" not in open(agent.out, "rb").read()


def test_unix_socket_agent(recorder, tmp):
    a = Agent(tmp, unix=True)
    try:
        r = run(["curl", "-sS", recorder.url + "/unix"], traced_env(a, tmp))
        assert r.returncode == 0
        spans = a.wait_spans(1, "http.client.request")
        assert [s["resource"] for s in spans] == ["GET /unix"]
    finally:
        a.stop()


def test_agent_down_program_unaffected(recorder, tmp):
    env = traced_env(None, tmp, DD_TRACE_AGENT_URL="http://127.0.0.1:%d" % 1)
    t0 = time.monotonic()
    traced = run(["curl", "-sS", recorder.url + "/"], env)
    elapsed = time.monotonic() - t0
    plain = run(["curl", "-sS", recorder.url + "/"], traced_env(), traced=False)
    assert traced.returncode == plain.returncode == 0
    assert traced.stdout == plain.stdout and traced.stderr == plain.stderr
    assert elapsed < 3.0, elapsed


def test_disabled_is_passive(recorder, agent, tmp):
    r = run(["curl", "-sS", recorder.url + "/"], traced_env(agent, tmp, DD_TRACE_ENABLED="false"))
    assert r.returncode == 0
    assert ctx_headers(recorder.requests[0]) == {}
    time.sleep(0.6)
    assert agent.spans() == []
