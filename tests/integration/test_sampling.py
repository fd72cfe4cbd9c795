"""Sampling over many traces, as the local agent receives them, and the
start-up configuration line.

tests/helpers/http_loop runs under ddshim and makes plain HTTP requests, one
after the other, to an untraced http_loop server: every request is a root
client span, so every request is a trace of its own.
"""
import json
import math
import os
import re
import signal
import subprocess

import pytest

from conftest import HELPERS, RUN, Agent, run, traced_env, wait_until

LOOP = os.path.join(HELPERS, "http_loop")
KNUTH = 1111111111111111111
MAX_ID = 2 ** 64 - 1


def knuth_keeps(trace_id, rate):
    """The keep test of core/sampler.c, computed the same way: the threshold is
    the double product rate * (double)UINT64_MAX converted to an integer."""
    threshold = MAX_ID if rate >= 1.0 else int(rate * float(MAX_ID))
    return (trace_id * KNUTH) % 2 ** 64 <= threshold


@pytest.fixture
def server(tmp):
    ready = os.path.join(tmp, "loop.port")
    p = subprocess.Popen([LOOP, "serve", ready], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    assert wait_until(lambda: os.path.exists(ready), 10), "http_loop serve did not start"
    yield int(open(ready).read())
    p.send_signal(signal.SIGTERM)
    p.wait(5)


def loop_env(agent, tmp, **extra):
    # Room for every span of a burst, and time to send them all at exit.
    return traced_env(agent, tmp, DDSHIM_MAX_QUEUED_SPANS=200000, DDSHIM_EXIT_TIMEOUT_MS=30000, **extra)


def requests_made(r):
    m = re.match(rb"requests=(\d+) errors=(\d+)", r.stdout)
    assert r.returncode == 0 and m and m.group(2) == b"0", r
    return int(m.group(1))


def roots_of(agent, n, service=None, timeout=20):
    """The chunk roots (one per trace here), oldest first, once n arrived."""
    def got():
        rs = [c["spans"][0] for c in agent.chunks()]
        rs = [s for s in rs if service is None or s["service"] == service]
        return rs if len(rs) >= n else None
    rs = wait_until(got, timeout)
    assert rs, "expected %d traces, the agent has %d" % (n, len(agent.chunks()))
    assert len(rs) == n
    assert len({s["trace_id"] for s in rs}) == n  # one trace per request
    return sorted(rs, key=lambda s: s["start"])


def prio(s):
    return s["metrics"]["_sampling_priority_v1"]


def test_sample_rate_is_the_knuth_rule_over_10000_traces(agent, tmp, server):
    n, rate = 10000, 0.3
    # The rule's limiter (DD_TRACE_RATE_LIMIT, 100/s by default) would cap what
    # the hash keeps; lifted so that the hash alone decides here.
    r = run([LOOP, "get", "127.0.0.1", str(server), "-n", str(n)],
            loop_env(agent, tmp, DD_SERVICE="loop", DD_TRACE_SAMPLE_RATE=rate,
                     DD_TRACE_RATE_LIMIT=10000000))
    assert requests_made(r) == n
    roots = roots_of(agent, n)
    kept = [s for s in roots if prio(s) == 2]
    # Binomial(n, 0.3): the kept share within 4 standard deviations.
    sigma = math.sqrt(n * rate * (1 - rate))
    assert abs(len(kept) - n * rate) <= 4 * sigma, (len(kept), n * rate, sigma)
    wrong = [(s["trace_id"], prio(s)) for s in roots if prio(s) != (2 if knuth_keeps(s["trace_id"], rate) else -1)]
    assert wrong == [], wrong[:10]
    for s in roots:
        assert s["metrics"]["_dd.rule_psr"] == rate
        assert s["meta"]["_dd.p.ksr"] == "0.3"
        assert "_dd.agent_psr" not in s["metrics"]
        if prio(s) == 2:
            assert s["meta"]["_dd.p.dm"] == "-3"
            assert s["metrics"]["_dd.limit_psr"] == 1.0
        else:
            assert "_dd.p.dm" not in s["meta"] and "_dd.limit_psr" not in s["metrics"]


def test_rate_limit_caps_kept_traces_per_second(agent, tmp, server):
    limit = 50
    r = run([LOOP, "get", "127.0.0.1", str(server), "-d", "2000"],
            loop_env(agent, tmp, DD_SERVICE="loop", DD_TRACE_SAMPLE_RATE=1, DD_TRACE_RATE_LIMIT=limit))
    n = requests_made(r)
    assert n > 10 * limit * 2  # far more traffic than the limit
    roots = roots_of(agent, n)
    t0 = roots[0]["start"]
    span_s = (roots[-1]["start"] - t0) / 1e9
    kept = [s for s in roots if prio(s) == 2]
    dropped = [s for s in roots if prio(s) != 2]
    # Token bucket: full (limit tokens) at the first trace, then one token
    # every 1/limit s.
    expected = limit + limit * span_s
    assert abs(len(kept) - expected) <= 5, (len(kept), expected, span_s)
    # After the initial burst, about `limit` per second (a scheduling pause
    # at the window's edge moves a few tokens across it).
    in_second = [s for s in kept if 1e9 <= s["start"] - t0 < 2e9]
    if span_s >= 1.9:
        assert abs(len(in_second) - limit) <= 10, len(in_second)
    for s in kept:
        assert s["meta"]["_dd.p.dm"] == "-3" and s["metrics"]["_dd.rule_psr"] == 1.0
        assert 0 < s["metrics"]["_dd.limit_psr"] <= 1.0
    for s in dropped:
        assert prio(s) == -1
        assert "_dd.p.dm" not in s["meta"] and s["metrics"]["_dd.rule_psr"] == 1.0
        assert 0 < s["metrics"]["_dd.limit_psr"] < 1.0
    # The effective rate reported falls as the limiter keeps refusing.
    assert dropped[-1]["metrics"]["_dd.limit_psr"] < dropped[0]["metrics"]["_dd.limit_psr"]


def test_sampling_rules_with_a_service_glob(agent, tmp, server):
    rules = json.dumps([
        {"service": "web-*", "resource": "GET /health*", "sample_rate": 0},
        {"service": "WEB-?TORE", "sample_rate": 0.5},  # globs are case-insensitive
        # Rule tags match the root's tags, DD_ENV / DD_TAGS included (as cpp).
        {"service": "batch", "tags": {"team": "pa?", "env": "prod"}, "sample_rate": 0},
        {"service": "batch", "sample_rate": 1},
    ])
    n = 2000
    r = run([LOOP, "get", "127.0.0.1", str(server), "-n", str(n), "-k", "-p", "/healthz,/orders"],
            loop_env(agent, tmp, DD_SERVICE="web-store", DD_TRACE_SAMPLING_RULES=rules,
                     DD_TRACE_RATE_LIMIT=10000000))
    assert requests_made(r) == n
    r = run([LOOP, "get", "127.0.0.1", str(server), "-n", "200", "-p", "/healthz"],
            loop_env(agent, tmp, DD_SERVICE="api", DD_TRACE_SAMPLING_RULES=rules))
    assert requests_made(r) == 200
    r = run([LOOP, "get", "127.0.0.1", str(server), "-n", "50"],
            loop_env(agent, tmp, DD_SERVICE="batch", DD_ENV="prod", DD_TAGS="team:pay",
                     DD_TRACE_SAMPLING_RULES=rules))
    assert requests_made(r) == 50
    for s in roots_of(agent, 50, "batch"):
        assert s["meta"]["env"] == "prod" and s["meta"]["team"] == "pay"
        assert prio(s) == -1 and s["metrics"]["_dd.rule_psr"] == 0, s
    web = roots_of(agent, n, "web-store")
    health = [s for s in web if s["resource"] == "GET /healthz"]
    orders = [s for s in web if s["resource"] == "GET /orders"]
    assert len(health) == len(orders) == n // 2
    # First rule: dropped whatever the hash says.
    for s in health:
        assert prio(s) == -1 and s["metrics"]["_dd.rule_psr"] == 0 and "_dd.p.dm" not in s["meta"]
    # Second rule: the Knuth rule at 0.5.
    for s in orders:
        assert prio(s) == (2 if knuth_keeps(s["trace_id"], 0.5) else -1), s
        assert s["metrics"]["_dd.rule_psr"] == 0.5 and s["meta"]["_dd.p.ksr"] == "0.5"
    kept = sum(1 for s in orders if prio(s) == 2)
    assert abs(kept - len(orders) / 2) <= 4 * math.sqrt(len(orders) / 4), kept
    # No rule for service "api": the agent's rates (all 1 here) apply.
    for s in roots_of(agent, 200, "api"):
        assert prio(s) == 1 and s["metrics"]["_dd.agent_psr"] == 1.0
        assert "_dd.rule_psr" not in s["metrics"] and s["meta"]["_dd.p.dm"] in ("-0", "-1")


def test_agent_rate_by_service_applies_after_the_first_answer(tmp, server):
    rates = {"service:svc,env:": 0.0, "service:tagged,env:prod": 0.0, "service:,env:": 1}
    agent = Agent(tmp, args=["--rates", json.dumps(rates)])
    # "tagged" gets its env from DD_TAGS: the agent keys its rates by the
    # root's env tag, whichever variable set it.
    envs = {"svc": {}, "other": {}, "tagged": {"DD_TAGS": "env:prod"}}
    try:
        procs = [subprocess.Popen([RUN, LOOP, "get", "127.0.0.1", str(server), "-d", "2000"],
                                  env=loop_env(agent, tmp, DD_SERVICE=svc, **extra), stdout=subprocess.PIPE)
                 for svc, extra in envs.items()]
        roots = {}
        for p, svc in zip(procs, envs):
            out, _ = p.communicate(timeout=60)
            n = requests_made(subprocess.CompletedProcess(p.args, p.returncode, out, b""))
            roots[svc] = roots_of(agent, n, svc)
    finally:
        agent.stop()
    assert all(s["meta"]["env"] == "prod" for s in roots["tagged"])
    # Before the first answer: no rates yet, rate 1.0, mechanism DEFAULT (-0).
    # After it: "service:svc,env:" = 0 for svc, "service:tagged,env:prod" = 0
    # for tagged; the default 1 for the others (mechanism AGENT_RATE, -1).
    # Never back.
    for seq, rate in ((roots["svc"], 0.0), (roots["tagged"], 0.0), (roots["other"], 1.0)):
        first = next(i for i, s in enumerate(seq) if "_dd.p.ksr" in s["meta"])
        assert first >= 1  # some traces started before any answer arrived
        assert (seq[first]["start"] - seq[0]["start"]) / 1e9 < 1.5  # the first flush is at 200 ms
        assert len(seq) - first >= len(seq) // 2
        for s in seq[:first]:
            assert prio(s) == 1 and s["meta"]["_dd.p.dm"] == "-0" and s["metrics"]["_dd.agent_psr"] == 1.0
        for s in seq[first:]:
            assert s["metrics"]["_dd.agent_psr"] == rate, s
            assert s["meta"]["_dd.p.ksr"] == ("0" if rate == 0 else "1")
            if rate == 0:
                assert prio(s) == 0 and "_dd.p.dm" not in s["meta"]
            else:
                assert prio(s) == 1 and s["meta"]["_dd.p.dm"] == "-1"


STARTUP = "DATADOG TRACER CONFIGURATION - "


def startup_lines(path):
    if not os.path.exists(path):
        return []
    return [l for l in open(path).read().splitlines() if STARTUP in l]


def test_startup_log_one_json_line_per_process(agent, tmp, server):
    log = os.path.join(tmp, "ddshim.log")
    pids = []
    for extra in ({}, {}, {"DD_SERVICE": "cfg-svc", "DD_ENV": "staging", "DD_TRACE_SAMPLE_RATE": "0.25",
                          "DD_TRACE_RATE_LIMIT": "7", "DD_TRACE_PROPAGATION_STYLE": "b3multi,tracecontext",
                          "DD_TAGS": "team:pay,tier:gold"}):
        p = subprocess.Popen([RUN, LOOP, "get", "127.0.0.1", str(server), "-n", "3"],
                             env=traced_env(agent, tmp, **extra), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0
        # Never on the program's own streams.
        assert out.startswith(b"requests=3 errors=0 ") and out.count(b"\n") == 1, out
        assert err == b"", err
        pids.append(p.pid)  # ddshim-run execs: the program has this pid
    lines = startup_lines(log)
    assert len(lines) == 3, open(log).read()
    got = {}
    for l in lines:
        m = re.search(r"ddshim\[(\d+)\] INFO: " + STARTUP + r"(\{.*\})$", l)
        assert m, l
        got[int(m.group(1))] = json.loads(m.group(2))
    assert sorted(got) == sorted(pids)  # exactly one line for each process
    default = got[pids[0]]
    assert default["service"] == "http_loop" and default["env"] == ""
    assert default["agent_url"] == agent.url and default["enabled"] is True
    assert default["propagation_style_inject"] == ["datadog", "tracecontext"]
    assert default["propagation_style_extract"] == ["datadog", "tracecontext"]
    assert default["rate_limit"] == 100 and "sample_rate" not in default
    assert default["sampling_rules"] == "[]" and default["log_file"] == log
    assert default["trace_128_bit_generation"] is True and default["flush_interval_ms"] == 200
    cfg = got[pids[2]]
    assert cfg["service"] == "cfg-svc" and cfg["env"] == "staging"
    assert cfg["sample_rate"] == 0.25 and cfg["rate_limit"] == 7
    assert cfg["propagation_style_inject"] == ["b3multi", "tracecontext"]
    assert cfg["tags"] == {"team": "pay", "tier": "gold"}

    # Turned off: no such line, the rest of the log unaffected.
    log2 = os.path.join(tmp, "off", "ddshim.log")
    os.makedirs(os.path.dirname(log2))
    r = run([LOOP, "get", "127.0.0.1", str(server), "-n", "3"],
            traced_env(agent, os.path.dirname(log2), DD_TRACE_STARTUP_LOGS="false", DD_SERVICE="quiet"))
    assert requests_made(r) == 3 and r.stderr == b""
    assert wait_until(lambda: len([s for s in agent.spans() if s["service"] == "quiet"]) == 3, 10)
    assert startup_lines(log2) == []
