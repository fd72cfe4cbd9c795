"""fork, exec, vfork and posix_spawn under ddshim.

- Forks while spans flow (threads making requests, so the writer and the
  queue are busy at the moment of each fork): no child hangs, and every span
  reaches the agent exactly once (span ids counted, never from both parent
  and child).
- Spans buffered before a fork are sent by the parent only; children send
  their own.
- A prefork pool of 100 children costs little memory per child (PSS and
  private dirty pages from /proc/PID/smaps_rollup, compared with an
  untraced pool).
- exec keeps tracing the new program (LD_PRELOAD survives).
- A vfork or posix_spawn child that closes or replaces a traced fd changes
  nothing in the parent: the parent's connection is still traced, and its
  agent connection is neither lost nor leaked."""
import os
import re
import subprocess
import time

import pytest

from conftest import (REL_CLIENT, REL_FORK, REL_SLOWINIT, RUN, ddshim_log, plain_env, settled, timed, traced_env)


def counts(stdout):
    m = re.search(rb"parent_requests (\d+) child_requests (\d+)", stdout)
    assert m, stdout
    return int(m.group(1)), int(m.group(2))


def fork_stress(agent, recorder, tmp, rel, forks, threads):
    cmd = [REL_FORK, "127.0.0.1", str(recorder.port), "stress", str(forks), str(threads)]
    plain, t_plain = timed(cmd, plain_env(), timeout=120)
    assert plain.returncode == 0, plain
    env = traced_env(agent, tmp, DDSHIM_FLUSH_INTERVAL_MS=50, DDSHIM_EXIT_TIMEOUT_MS=5000)
    traced, t_traced = timed(cmd, env, timeout=120)
    rel.input(forks)
    assert traced.returncode == 0, (traced, ddshim_log(tmp))
    assert b"hung 0" in traced.stdout and b"failed 0" in traced.stdout
    parent, children = counts(traced.stdout)
    assert children == forks // 2
    spans = settled(agent, "http.client.request", quiet=1.0)
    ids = [s["span_id"] for s in spans]
    assert len(ids) == len(set(ids)), "a span was sent twice"
    by_res = {}
    for s in spans:
        by_res[s["resource"]] = by_res.get(s["resource"], 0) + 1
    assert by_res == {"GET /parent": parent, "GET /child": children}, by_res
    # Each child's span comes from that child, not from the parent.
    parent_pid = {s["metrics"]["process_id"] for s in spans if s["resource"] == "GET /parent"}
    child_pids = {s["metrics"]["process_id"] for s in spans if s["resource"] == "GET /child"}
    assert len(parent_pid) == 1 and len(child_pids) == children
    assert not parent_pid & child_pids


def test_fork_while_spans_flow(agent, recorder, tmp, rel):
    fork_stress(agent, recorder, tmp, rel, forks=40, threads=2)


@pytest.mark.slow
def test_fork_while_spans_flow_many(agent, recorder, tmp, rel):
    fork_stress(agent, recorder, tmp, rel, forks=400, threads=3)


def test_fork_during_lazy_init(agent, recorder, tmp, rel):
    """A thread's first request runs ddshim's lazy initialisation while main
    forks. rel_slowinit, preloaded after ddshim, makes that initialisation
    take 300 ms and hold a lock throughout (as PCRE2's JIT allocator holds one
    for a moment): the fork must wait for the initialisation to finish, so the
    child never runs it again on a lock held by a thread it does not have
    (that hung one child in a hundred in the fork stress test)."""
    out = os.path.join(tmp, "json_loads.txt")
    env = traced_env(agent, tmp, DDSHIM_FLUSH_INTERVAL_MS=50,
                     DD_TRACE_SAMPLING_RULES='[{"service":"nothing-matches","sample_rate":1}]',
                     LD_PRELOAD=REL_SLOWINIT, REL_SLOWINIT_OUT=out)
    for delay_us in (0, 1000, 100000):  # after the initialisation began (see rel_fork)
        open(out, "w").close()
        cmd = [RUN, REL_FORK, "127.0.0.1", str(recorder.port), "initrace", str(delay_us)]
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        rel.input(1)
        assert r.returncode == 0, (delay_us, r, ddshim_log(tmp))
        assert r.stdout == b"first 200 child ok\n", r
        calls = open(out).read().split("\n")[:-1]
        # Once, by the parent's first request; the child inherits the result.
        assert len(calls) == 1, (delay_us, calls)
    spans = settled(agent, "http.client.request")
    res = sorted(s["resource"] for s in spans)
    assert res == ["GET /child"] * 3 + ["GET /first"] * 3


def test_buffered_spans_sent_once(agent, recorder, tmp, rel):
    """K spans queued (flush interval: a minute), then three children that
    exit(0), request + exit(0), request + _exit(0): the agent gets the K once
    (from the parent, at its exit) and each child's own span once."""
    k = 5
    cmd = [REL_FORK, "127.0.0.1", str(recorder.port), "buffered", str(k)]
    env = traced_env(agent, tmp, DDSHIM_FLUSH_INTERVAL_MS=60000)
    r, elapsed = timed(cmd, env)
    rel.input(k + 3)
    assert r.returncode == 0, (r, ddshim_log(tmp))
    assert elapsed < 5
    spans = settled(agent, "http.client.request")
    assert len({s["span_id"] for s in spans}) == len(spans) == k + 2, spans
    res = sorted(s["resource"] for s in spans)
    assert res == ["GET /before-fork"] * k + ["GET /child-_exit", "GET /child-exit"]
    pids = {s["metrics"]["process_id"] for s in spans if s["resource"] == "GET /before-fork"}
    assert len(pids) == 1
    assert len(agent.request_log()) == 3  # parent's payload, one per child


def smaps(pid):
    d = {}
    for line in open("/proc/%d/smaps_rollup" % pid):
        f = line.split()
        if f[0] in ("Rss:", "Pss:", "Private_Dirty:"):
            d[f[0].rstrip(":")] = int(f[1])
    return d


def prefork_pool(recorder, env, traced, n):
    cmd = ([RUN] if traced else []) + [REL_FORK, "127.0.0.1", str(recorder.port), "prefork", str(n)]
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        pids = [int(x) for x in p.stdout.readline().split()[1:]]
        assert p.stdout.readline() == b"ready %d\n" % n
        time.sleep(0.3)  # let the children's writer threads send and settle
        mem = [smaps(pid) for pid in pids]
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
    return {k: sum(m[k] for m in mem) / len(mem) for k in mem[0]}


@pytest.mark.slow
def test_prefork_children_cost_little_memory(agent, recorder, tmp, rel):
    n = 100
    plain = prefork_pool(recorder, plain_env(), False, n)
    traced = prefork_pool(recorder, traced_env(agent, tmp), True, n)
    rel.input(2 * n)
    extra_pss = traced["Pss"] - plain["Pss"]
    extra_dirty = traced["Private_Dirty"] - plain["Private_Dirty"]
    print("prefork child, KiB: untraced %r traced %r" % (plain, traced))
    # Each child's own writer thread and request: about 120 KiB measured.
    assert extra_pss < 512 and extra_dirty < 512, (plain, traced)
    spans = settled(agent, "http.client.request")
    assert len(spans) == n + 1 and len({s["span_id"] for s in spans}) == n + 1


def test_exec_keeps_tracing(agent, recorder, tmp, rel):
    """A traced program execs curl: its own span leaves before the exec, and
    curl, still preloaded, sends one of its own with its own service name."""
    cmd = [REL_CLIENT, "127.0.0.1", str(recorder.port), "get:/before-exec", "exec", "curl", "-sS",
           recorder.url + "/curl"]
    plain, _ = timed(cmd, plain_env())
    traced, _ = timed(cmd, traced_env(agent, tmp, DDSHIM_FLUSH_INTERVAL_MS=60000))
    rel.input(2)
    assert traced.returncode == plain.returncode == 0
    assert traced.stdout == plain.stdout == b"get /before-exec 200\nhello\n"
    spans = settled(agent, "http.client.request")
    got = sorted((s["service"], s["resource"]) for s in spans)
    assert got == [("curl", "GET /curl"), ("rel_client", "GET /before-exec")], got
    assert all(len(recorder.header(r, "x-datadog-trace-id")) == 1 for r in recorder.requests[2:])


@pytest.mark.parametrize("how", ["vfork:close", "vfork:dup2", "vfork:closefrom", "vfork:close_range",
                                 "spawn:close", "spawn:dup2"])
def test_vfork_child_changes_nothing(agent, raw_server, tmp, rel, how):
    """The parent holds a traced keep-alive connection; a vfork/posix_spawn
    child closes or replaces that fd before exec. The parent's next request
    on it still gets its trace headers and its span, exactly as without the
    child. The writer's agent connection (open: a flush happened first)
    survives too: no fd is lost or leaked in the parent."""
    cmd = [REL_CLIENT, "127.0.0.1", str(raw_server.port), "get:/warm", "sleep:300", "fds",
           "hold:/", how, "send:/after", "fds", how, "send:/again", "fds", "sleep:300", "fds",
           "return:0"]
    env = traced_env(agent, tmp, DDSHIM_FLUSH_INTERVAL_MS=100)
    r, _ = timed(cmd, env)
    rel.input(3)
    rel.fault(2)
    assert r.returncode == 0, (r, ddshim_log(tmp))
    fds = re.findall(rb"fds (\d+)", r.stdout)
    # warm: stdio + agent; then + the held connection, steady, whatever the children did.
    assert fds[1] == fds[2] == fds[3] and int(fds[1]) == int(fds[0]) + 1, r.stdout
    heads = [h for h, _ in raw_server.requests]
    assert [h.split(b" ")[1] for h in heads] == [b"/warm", b"/after", b"/again"]
    spans = settled(agent, "http.client.request")
    assert sorted(s["resource"] for s in spans) == ["GET /after", "GET /again", "GET /warm"]
    for h in heads:
        m = re.search(rb"\r\nx-datadog-parent-id: (\d+)\r\n", h)
        assert m, h
        assert int(m.group(1)) in {s["span_id"] for s in spans}
    # One agent connection the whole time: the requests log numbers them.
    assert len({q["connection"] for q in agent.request_log()}) == 1, agent.request_log()
