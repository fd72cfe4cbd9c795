"""The agent misbehaves; the traced program must not notice.

Faults (build/ddshim-agent --fault, or no agent at all): down, accepting but
never answering (hang), 500, 413, 429, a 200 with a garbage body, closing the
connection without an answer, killed in the middle of a flush, restarted.

For each: the program's exit status and output are those of an untraced run,
its requests are not slowed down (the writer is a background thread: latency
compared with an untraced run as a ratio plus an absolute margin), its exit
waits at most the exit deadline, every flush is bounded by its timeout, what
cannot be sent is dropped and counted in ddshim's log instead of piling up,
nothing is retried after an HTTP answer (the agent's request log holds each
payload once: the X-Datadog-Trace-Count headers add up to exactly the traces
made), and delivery resumes when the agent is back."""
import os
import random
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import (REL_CLIENT, RUN, Agent, ddshim_log, free_port, plain_env, settled, timed,
                      traced_env, wait_until)

EXIT_SLACK = 2.5  # DDSHIM_EXIT_TIMEOUT_MS (1 s) plus noise on a busy 2-core machine
N = 30            # requests in the latency burst


def program(port):
    # Three bursts, usually three flushes (interval 200 ms): one span, one
    # span, then N spans whose latencies the helper measures.
    return [REL_CLIENT, "127.0.0.1", str(port), "get:/a", "sleep:300", "get:/b", "sleep:300",
            "gets:%d:/c" % N, "return:0"]


@pytest.fixture(scope="module")
def baseline():
    """The untraced run the traced ones are compared with (once per module)."""
    from conftest import Recorder
    rec = Recorder()
    try:
        return timed(program(rec.port), plain_env())
    finally:
        rec.stop()


def latency(stdout):
    m = re.search(rb"gets (\d+) ok (\d+) median_us (\d+) max_us (\d+)", stdout)
    assert m, stdout
    return int(m.group(3)), int(m.group(4))


def same_output(traced, plain):
    """Everything but the measured latencies."""
    strip = lambda b: re.sub(rb"median_us \d+ max_us \d+", b"", b)
    return strip(traced.stdout) == strip(plain.stdout) and traced.stderr == plain.stderr


def trace_count_sum(agent):
    return sum(int(r["headers"].get("x-datadog-trace-count", 0)) for r in agent.request_log())


def exit_summary(log):
    """(sent, dropped or not sent in time) from ddshim's line at exit."""
    m = re.search(r"at exit: (\d+) spans sent, (\d+) dropped, (\d+) not sent in time", log)
    return (int(m.group(1)), int(m.group(2)) + int(m.group(3))) if m else None


def drop_lines(log):
    return re.findall(r"could not send (\d+) traces \((\d+) spans\).*; dropped", log)


FAULTS = [
    # fault, spans reach the agent, HTTP answer (no retry allowed)
    ("500", False, True),
    ("413", False, True),
    ("429", False, True),
    ("garbage", True, True),
    ("close", False, False),
    ("hang", False, False),
    ("down", False, False),
]


@pytest.mark.parametrize("fault,delivered,answered", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_leaves_program_unaffected(recorder, tmp, rel, baseline, fault, delivered, answered):
    a = None
    if fault == "down":
        url = "http://127.0.0.1:%d" % free_port()  # nothing listens there
    else:
        a = Agent(tmp, args=["--fault", fault])
        url = a.url
    try:
        plain, t_plain = baseline
        env = traced_env(None, tmp, DD_TRACE_AGENT_URL=url, DD_TRACE_DEBUG="true")
        traced, t_traced = timed(program(recorder.port), env)
        rel.fault()
        rel.input(N + 2)
        log = ddshim_log(tmp)
        assert plain.returncode == traced.returncode == 0, (traced, log)
        assert same_output(traced, plain), (traced, plain)
        # Requests are not slowed down: no request waits for the writer.
        p_med, p_max = latency(plain.stdout)
        t_med, t_max = latency(traced.stdout)
        print("measure fault=%s request_median_us untraced=%d traced=%d max_us untraced=%d traced=%d "
              "wall_s untraced=%.2f traced=%.2f" % (fault, p_med, t_med, p_max, t_max, t_plain, t_traced))
        assert t_med <= 3 * p_med + 3000, (t_med, p_med)
        assert t_max <= 3 * p_max + 300000, (t_max, p_max)
        # Exit waits at most the exit deadline.
        assert t_traced < t_plain + EXIT_SLACK, (t_traced, t_plain)
        # The server got every request, each with its trace headers.
        assert len(recorder.requests) == N + 2
        assert all(len(recorder.header(r, "x-datadog-trace-id")) == 1 for r in recorder.requests)
        if delivered:
            spans = settled(a, "http.client.request")
            assert len(spans) == N + 2 and len({s["span_id"] for s in spans}) == N + 2
            assert drop_lines(log) == []
        else:
            # Dropped and counted in the log: the first failure is logged at once
            # (a hanging agent's first timeout, 2 s, may come after the exit),
            # and everything is summed up at exit.
            assert drop_lines(log) or fault == "hang", log
            if fault == "down":
                assert "Connection refused" in log, log
            assert exit_summary(log) == (0, N + 2), log
        if a is not None and answered:
            # One request per payload: no retry after an HTTP answer.
            assert wait_until(lambda: trace_count_sum(a) >= N + 2, 5)
            time.sleep(0.3)
            assert trace_count_sum(a) == N + 2, a.request_log()
        elif a is not None and fault == "close":
            # A connection error is retried once, never more.
            assert N + 2 <= trace_count_sum(a) <= 2 * (N + 2), a.request_log()
    finally:
        if a:
            a.stop()


@pytest.mark.slow
def test_hanging_agent_each_flush_bounded_and_queue_capped(recorder, tmp, rel):
    """A long-running program keeps making requests while the agent never
    answers: every flush gives up after its timeout (2 s) and the next one
    starts, requests are not slowed down, spans beyond DDSHIM_MAX_QUEUED_SPANS
    are dropped and counted, and the process's memory stays flat."""
    a = Agent(tmp, args=["--fault", "hang"])
    try:
        cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "gets:100:/warm", "rss",
               "gets:1500:/load", "sleep:7000", "rss", "gets:100:/end", "return:0"]
        env = traced_env(a, tmp, DD_TRACE_DEBUG="true", DDSHIM_MAX_QUEUED_SPANS=50,
                         DDSHIM_FLUSH_INTERVAL_MS=100)
        plain_cmd = [c if not c.startswith("sleep") else "sleep:0" for c in cmd]
        plain, _ = timed(plain_cmd, plain_env(), timeout=120)
        t0 = time.monotonic()
        traced, elapsed = timed(cmd, env, timeout=120)
        rel.fault()
        rel.input(1700)
        log = ddshim_log(tmp)
        assert plain.returncode == traced.returncode == 0, (traced, log)
        for (pm, px), (tm, tx) in zip(
                [latency(l) for l in plain.stdout.splitlines() if l.startswith(b"gets")],
                [latency(l) for l in traced.stdout.splitlines() if l.startswith(b"gets")]):
            assert tm <= 3 * pm + 3000, (tm, pm)
            assert tx <= 3 * px + 300000, (tx, px)
        rss = [int(x) for x in re.findall(rb"rss_kb (\d+)", traced.stdout)]
        assert len(rss) == 2 and rss[1] - rss[0] < 4096, rss  # KiB
        # Several flushes reached the agent, each cut off by its timeout: in
        # ~`elapsed` seconds at 2 s per attempt (+ interval), not just one.
        n = len(a.request_log())
        assert 3 <= n <= elapsed / 2.0 + 2, (n, elapsed)
        assert re.search(r"dropped \d+ spans: more than 50 waiting", log), log
        assert exit_summary(log) == (0, 1700), log
    finally:
        a.stop()


def established_to(port):
    """Whether some socket on this machine is connected to 127.0.0.1:port."""
    want = ":%04X" % port
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            f = l.split()
            if f[2].endswith(want) and f[3] == "01":
                return True
    return False


def test_agent_killed_in_the_middle_of_a_flush(recorder, tmp, rel):
    """The agent takes the payload and dies before answering: the program
    goes on and exits as usual; the failure is logged."""
    a = Agent(tmp, args=["--fault", "slow:5000"])
    cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/a", "stdin", "gets:10:/b", "return:0"]
    env = traced_env(a, tmp, DD_TRACE_DEBUG="true")
    p = subprocess.Popen([RUN] + cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"get /a 200\n"
        assert wait_until(lambda: established_to(a.port), 5), "the writer never connected"
        time.sleep(0.3)  # the payload is sent at once; the agent sits on it
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        rel.fault()
        t0 = time.monotonic()
        p.stdin.write(b"go\n")
        p.stdin.close()
        out = p.stdout.read()
        rc = p.wait(15)
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
        a.stop()
    rel.input(11)
    assert rc == 0, p.stderr.read()
    assert out.startswith(b"gets 10 ok 10 ")
    med, mx = latency(out)
    assert mx < 300000, mx
    assert elapsed < EXIT_SLACK, elapsed
    assert drop_lines(ddshim_log(tmp)), ddshim_log(tmp)


def port_outside_ephemeral_range():
    """A free port no outgoing connection will take while the agent is down."""
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for p in random.sample(range(max(1024, lo - 12000), lo), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    return free_port()


def test_delivery_resumes_after_agent_restart(recorder, tmp, rel):
    """Agent up, then killed, then started again on the same port: the span
    made while it was down is dropped (and logged), the next one arrives."""
    port = port_outside_ephemeral_range()
    d1, d2 = os.path.join(tmp, "first"), os.path.join(tmp, "second")
    os.makedirs(d1)
    os.makedirs(d2)
    a = Agent(d1, args=["--port", str(port)])
    cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/up", "stdin", "get:/down", "stdin",
           "get:/again", "stdin", "return:0"]
    env = traced_env(None, tmp, DD_TRACE_AGENT_URL="http://127.0.0.1:%d" % port, DD_TRACE_DEBUG="true")
    p = subprocess.Popen([RUN] + cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    b = None
    try:
        assert p.stdout.readline() == b"get /up 200\n"
        assert [s["resource"] for s in a.wait_spans(1, timeout=5)] == ["GET /up"]
        # The agent records a payload before it answers: kill it only once the
        # writer has its answer, or the first send itself looks broken.
        assert wait_until(lambda: "sent 1 traces" in ddshim_log(tmp), 5), ddshim_log(tmp)
        a.proc.send_signal(signal.SIGKILL)
        a.stop()
        rel.fault()
        p.stdin.write(b"go\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"get /down 200\n"
        assert wait_until(lambda: drop_lines(ddshim_log(tmp)), 5), ddshim_log(tmp)
        b = Agent(d2, args=["--port", str(port)])
        p.stdin.write(b"go\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"get /again 200\n"
        spans = b.wait_spans(1, timeout=5)
        assert [s["resource"] for s in spans] == ["GET /again"], (spans, ddshim_log(tmp))
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
        if b:
            b.stop()
    rel.input(3)
    assert [s["resource"] for s in settled(b)] == ["GET /again"]
