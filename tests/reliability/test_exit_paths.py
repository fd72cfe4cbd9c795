"""Every way a process ends: return from main, exit, _exit, exit from a second
thread, SIGTERM, abort, daemonizing (double fork, setsid, every fd closed).

The traced program must end exactly like the untraced one (same status or
signal, same output), in bounded time, and where it lives long enough to run
an exit path (return, exit, _exit, exit from a thread, the daemon's own end)
the span it made must reach the agent. The flush interval is a minute, so only
the exit path can have delivered it. SIGTERM and abort promise nothing but
"no hang, same signal"."""
import os
import signal
import subprocess
import time

import pytest

from conftest import REL_CLIENT, RUN, Agent, ddshim_log, plain_env, settled, timed, traced_env, wait_until

# Exit flush deadline is DDSHIM_EXIT_TIMEOUT_MS (1 s by default): a traced run
# may take that much longer than an untraced one, plus scheduling noise.
SLACK = 2.5

CASES = [
    # name, actions after the request, expected returncode, span promised
    ("return", ["return:7"], 7, True),
    ("exit", ["exit:5"], 5, True),
    ("_exit", ["_exit:6"], 6, True),
    ("exit_from_thread", ["thread_exit:4"], 4, True),
    ("sigterm", ["signal:%d" % signal.SIGTERM], -signal.SIGTERM, False),
    ("abort", ["abort"], -signal.SIGABRT, False),
]


def env_for(agent, tmp, **extra):
    return traced_env(agent, tmp, DDSHIM_FLUSH_INTERVAL_MS=60000, DD_TRACE_DEBUG="true", **extra)


@pytest.mark.parametrize("name,actions,code,promised", CASES, ids=[c[0] for c in CASES])
def test_exit_path(agent, recorder, tmp, rel, name, actions, code, promised):
    cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/" + name] + actions
    plain, t_plain = timed(cmd, plain_env(), traced=False, timeout=30)
    traced, t_traced = timed(cmd, env_for(agent, tmp), timeout=30)
    rel.input(2)
    assert plain.returncode == code, plain
    assert traced.returncode == plain.returncode, (traced, ddshim_log(tmp))
    assert traced.stdout == plain.stdout == ("get /%s 200\n" % name).encode()
    assert traced.stderr == plain.stderr
    assert t_traced < t_plain + SLACK, (t_traced, t_plain)
    print("measure exit=%s wall_s untraced=%.2f traced=%.2f" % (name, t_plain, t_traced))
    # Both requests reached the server; the traced one carried trace headers.
    assert len(recorder.requests) == 2
    assert recorder.header(recorder.requests[0], "x-datadog-trace-id") == []
    ids = recorder.header(recorder.requests[1], "x-datadog-parent-id")
    assert len(ids) == 1
    if promised:
        spans = agent.wait_spans(1, "http.client.request", timeout=5)
        assert [s["resource"] for s in spans] == ["GET /" + name]
        assert spans[0]["span_id"] == int(ids[0])
        time.sleep(0.3)
        assert len(agent.spans()) == 1  # delivered once


def test_sigterm_from_outside(agent, recorder, tmp, rel):
    """SIGTERM delivered while the program waits (the usual service stop):
    killed by the same signal, at once, traced or not."""
    results = []
    for traced in (False, True):
        env = env_for(agent, tmp) if traced else plain_env()
        cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/t", "stdin"]
        p = subprocess.Popen(([RUN] if traced else []) + cmd, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout.readline() == b"get /t 200\n"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(10)
        results.append((rc, time.monotonic() - t0))
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()
        rel.fault()
    assert results[0][0] == results[1][0] == -signal.SIGTERM
    assert results[1][1] < 1.0, results


@pytest.mark.parametrize("how", ["closefrom", "close_range"])
def test_program_closes_every_fd(agent, recorder, tmp, rel, how):
    """The program closes all its fds, the writer's agent connection among
    them, between two requests: both spans still arrive (ddshim reconnects),
    and the program's own output and status are unchanged."""
    cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/before", "sleep:700",
           "closeall:" + how, "get:/after", "exit:0"]
    env = traced_env(agent, None, DD_TRACE_LOG_FILE="off")
    plain, _ = timed(cmd, plain_env(), traced=False)
    traced, elapsed = timed(cmd, env)
    rel.input(2)
    rel.fault()
    assert traced.returncode == plain.returncode == 0, traced
    assert traced.stdout == plain.stdout
    spans = agent.wait_spans(2, "http.client.request", timeout=5)
    assert sorted(s["resource"] for s in spans) == ["GET /after", "GET /before"]
    # The first span went out before the close: the writer had a connection.
    assert len(agent.request_log()) == 2


@pytest.mark.parametrize("how", ["closefrom", "close_range"])
def test_log_fd_not_reused_after_program_closes_every_fd(agent, recorder, tmp, rel, how):
    """ddshim's log is open (debug on, a flush logged) when the program closes
    every fd and opens files of its own, which take the freed numbers: no
    ddshim line may land in them; the log goes on in its own file."""
    f1, f2 = os.path.join(tmp, "own1.txt"), os.path.join(tmp, "own2.txt")
    cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/a", "sleep:400", "closeall:" + how,
           "open:" + f1, "open:" + f2, "putfile:mine", "get:/b", "sleep:400", "putfile:END", "return:0"]
    r, _ = timed(cmd, traced_env(agent, tmp, DD_TRACE_DEBUG="true", DDSHIM_FLUSH_INTERVAL_MS=100))
    rel.fault()
    rel.input(2)
    assert r.returncode == 0, r
    assert open(f2).read() == "mineEND" and open(f1).read() == ""
    assert ddshim_log(tmp).count("DEBUG: sent 1 traces") == 2, ddshim_log(tmp)


def test_daemonize(agent, recorder, tmp, rel):
    """Double fork + setsid + stdio to /dev/null + closefrom(3): the launcher
    returns at once with status 0, the daemon's span arrives, and the daemon
    ends on its own. The span made before daemonizing leaves with the first
    parent's exit(0); the forks send nothing twice."""
    done = os.path.join(tmp, "daemon-done")
    cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/before", "daemon",
           "get:/in-daemon", "touch:" + done, "return:0"]
    plain_done = os.path.join(tmp, "plain-done")
    plain, t_plain = timed([c.replace(done, plain_done) for c in cmd], plain_env(), traced=False)
    assert wait_until(lambda: os.path.exists(plain_done), 10)
    traced, t_traced = timed(cmd, env_for(agent, tmp))
    rel.input(2)
    assert traced.returncode == plain.returncode == 0
    assert traced.stdout == plain.stdout == b"get /before 200\n"
    assert t_traced < t_plain + SLACK
    assert wait_until(lambda: os.path.exists(done), 10), ddshim_log(tmp)
    spans = agent.wait_spans(2, "http.client.request", timeout=10)
    spans = settled(agent, "http.client.request")
    assert sorted(s["resource"] for s in spans) == ["GET /before", "GET /in-daemon"]
    assert len({s["span_id"] for s in spans}) == 2
    daemon_pid = [s for s in spans if s["resource"] == "GET /in-daemon"][0]["metrics"]["process_id"]
    assert wait_until(lambda: ended(daemon_pid), 5), "daemon did not end"


def ended(pid):
    """Gone, or a zombie nobody reaps (an orphan under a container's init)."""
    try:
        return open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_exit_with_unreachable_agent_is_bounded(recorder, tmp, rel):
    """Spans queued, agent address black-holed (nothing listening), every exit
    path: the exit flush gives up at once or by its deadline."""
    agent_url = "http://127.0.0.1:1"
    for name, actions, code, _ in CASES:
        cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/" + name] + actions
        env = traced_env(None, tmp, DD_TRACE_AGENT_URL=agent_url, DDSHIM_FLUSH_INTERVAL_MS=60000)
        r, elapsed = timed(cmd, env, timeout=30)
        rel.input()
        rel.fault()
        assert r.returncode == code, (name, r)
        assert elapsed < SLACK, (name, elapsed)


def test_exit_with_hanging_agent_is_bounded(recorder, tmp, rel):
    """The agent accepts and never answers: exit waits at most
    DDSHIM_EXIT_TIMEOUT_MS, on every exit path that flushes."""
    a = Agent(tmp, args=["--fault", "hang"])
    try:
        for name, actions, code, _ in CASES:
            cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/" + name] + actions
            env = traced_env(a, tmp, DDSHIM_FLUSH_INTERVAL_MS=60000, DDSHIM_EXIT_TIMEOUT_MS=300)
            r, elapsed = timed(cmd, env, timeout=30)
            rel.input()
            rel.fault()
            assert r.returncode == code, (name, r)
            assert elapsed < 0.3 + 1.2, (name, elapsed)
    finally:
        a.stop()
