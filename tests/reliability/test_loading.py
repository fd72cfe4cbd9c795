"""How ddshim gets (or does not get) into a process.

- Another preloaded library's constructor sends an HTTP request, in both
  preload orders; in one of them (glibc 2.36: "ddshim:early") it runs before
  ddshim's own constructor (the loader's LD_DEBUG trace says which), so ddshim's hooks are called before
  ddshim is initialised: the request must go out unchanged and the program
  behave as untraced.
- jemalloc preloaded too, before or after ddshim: programs work and are traced.
- A static binary never loads ddshim: it simply works, untouched.
- setuid binaries, run by root (setuid to nobody) and by nobody (setuid
  root): the loader leaves ddshim out; and when ddshim does get in under
  AT_SECURE (dlopen, as /etc/ld.so.preload would), it stays inert.
- DD_TRACE_ENABLED=false: no header injected, no agent traffic, no thread
  (/proc/PID/task count equal to an untraced run's), no log file.
"""
import glob
import os
import re
import shutil
import subprocess

import pytest

from conftest import (HELPERS, LIB, REL_CLIENT, REL_FORK, REL_LIBEARLY, ROOT, ddshim_log, ld_preload,
                      plain_env, settled, timed, trace_headers_in, traced_env)

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
REL_DLOPEN = os.path.join(HELPERS, "rel_dlopen")


def preload_env(agent, tmp, preload, **extra):
    env = traced_env(agent, tmp, **extra)
    env["LD_PRELOAD"] = ld_preload(*preload)
    return env


def init_order(debug_prefix):
    """The objects whose constructors ran, in order (LD_DEBUG=files)."""
    order = []
    for path in glob.glob(debug_prefix + ".*"):
        for line in open(path, errors="replace"):
            m = re.search(r"calling init: (\S+)", line)
            if m:
                order.append(os.path.basename(m.group(1)))
    return order


@pytest.mark.parametrize("order", ["LD_PRELOAD=early:ddshim", "LD_PRELOAD=ddshim:early"])
def test_constructor_sends_before_ddshim_is_ready(agent, raw_server, tmp, rel, order):
    early_out = os.path.join(tmp, "early.txt")
    libs = [REL_LIBEARLY, LIB] if order.endswith("early:ddshim") else [LIB, REL_LIBEARLY]
    cmd = [REL_CLIENT, "127.0.0.1", str(raw_server.port), "get:/main", "return:0"]
    extra = dict(REL_EARLY_ADDR="127.0.0.1:%d" % raw_server.port, REL_EARLY_OUT=early_out)

    plain, _ = timed(cmd, dict(plain_env(**extra), LD_PRELOAD=ld_preload(REL_LIBEARLY)), traced=False)
    assert plain.returncode == 0 and open(early_out).read() == "status 200"
    os.unlink(early_out)
    raw_server.requests.clear()

    dbg = os.path.join(tmp, "ld-debug")
    env = preload_env(agent, tmp, libs, LD_DEBUG="files", LD_DEBUG_OUTPUT=dbg, DD_TRACE_DEBUG="true",
                      **extra)
    traced, _ = timed(cmd, env, traced=False)
    rel.input(2)
    assert traced.returncode == 0, (traced, ddshim_log(tmp))
    assert traced.stdout == plain.stdout and traced.stderr == plain.stderr
    assert open(early_out).read() == "status 200"
    inits = init_order(dbg)
    early_at, shim_at = inits.index("rel_libearly"), inits.index("libddshim.so")
    heads = {h.split(b" ")[1]: h for h, _ in raw_server.requests}
    assert set(heads) == {b"/early", b"/main"}
    spans = settled(agent, "http.client.request")
    resources = sorted(s["resource"] for s in spans)
    if early_at < shim_at:
        # ddshim's hooks ran before its constructor: pure pass-through.
        assert trace_headers_in(heads[b"/early"]) == []
        assert resources == ["GET /main"]
    else:
        assert len(trace_headers_in(heads[b"/early"])) >= 2
        assert resources == ["GET /early", "GET /main"]
    assert len(trace_headers_in(heads[b"/main"])) >= 2


def test_some_preload_order_runs_hooks_before_ddshim_constructor(tmp, rel):
    """The case above is real: in at least one order the other library's
    constructor runs first (else it would test nothing)."""
    firsts = []
    for libs in ([REL_LIBEARLY, LIB], [LIB, REL_LIBEARLY]):
        dbg = os.path.join(tmp, "ld-%d" % len(firsts))
        env = dict(plain_env(), LD_PRELOAD=ld_preload(*libs), LD_DEBUG="files", LD_DEBUG_OUTPUT=dbg)
        assert subprocess.run(["/bin/true"], env=env).returncode == 0
        inits = init_order(dbg)
        firsts.append(inits.index("rel_libearly") < inits.index("libddshim.so"))
        rel.input()
    assert any(firsts), firsts


@pytest.mark.parametrize("order", ["jemalloc-first", "ddshim-first"])
def test_with_jemalloc(agent, recorder, tmp, rel, order):
    libs = [JEMALLOC, LIB] if order == "jemalloc-first" else [LIB, JEMALLOC]
    urls = [recorder.url + "/j%d" % i for i in range(3)]
    for cmd, n in ((["curl", "-sS"] + urls, 3),
                   ([REL_FORK, "127.0.0.1", str(recorder.port), "stress", "10", "2"], None)):
        plain, _ = timed(cmd, dict(plain_env(), LD_PRELOAD=JEMALLOC), traced=False)
        traced, _ = timed(cmd, preload_env(agent, tmp, libs), traced=False)
        rel.input()
        assert traced.returncode == plain.returncode == 0, (traced, ddshim_log(tmp))
        if n:
            assert traced.stdout == plain.stdout
    spans = settled(agent, "http.client.request")
    m = re.search(rb"parent_requests (\d+) child_requests (\d+)", traced.stdout)
    assert len(spans) == 3 + int(m.group(1)) + int(m.group(2))
    assert len({s["span_id"] for s in spans}) == len(spans)


def test_static_binary_is_untouched(agent, raw_server, tmp, rel):
    exe = os.path.join(tmp, "rel_client_static")
    b = subprocess.run(["gcc", "-static", "-O2", "-o", exe, os.path.join(ROOT, "tests", "helpers",
                                                                         "rel_client.c"), "-lpthread"],
                       capture_output=True, text=True)
    assert b.returncode == 0, b.stderr
    cmd = [exe, "127.0.0.1", str(raw_server.port), "get:/static", "tasks", "return:3"]
    plain, _ = timed(cmd, plain_env(), traced=False)
    traced, _ = timed(cmd, traced_env(agent, tmp, DD_TRACE_DEBUG="true"))
    rel.input()
    assert plain.returncode == traced.returncode == 3
    assert traced.stdout == plain.stdout == b"get /static 200\ntasks 1\n"
    assert traced.stderr == plain.stderr == b""
    assert [trace_headers_in(h) for h, _ in raw_server.requests] == [[], []]
    # Had ddshim been loaded, its exit flush would have reached the agent
    # before the process ended.
    assert agent.request_log() == []


def setuid_copy(rtmp, src, owner):
    dst = os.path.join(rtmp, os.path.basename(src) + "-suid-" + owner)
    shutil.copy(src, dst)
    shutil.chown(dst, owner)
    os.chmod(dst, 0o4755)
    return dst


def open_dir(rtmp):
    d = os.path.join(rtmp, "anyone")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o1777)
    return d


@pytest.mark.parametrize("who", ["root", "nobody"])
def test_setuid_binary_ignores_ddshim(agent, raw_server, rtmp, rel, who):
    """root runs a program setuid to nobody; nobody runs one setuid to root.
    Either way AT_SECURE is set: the loader does not preload ddshim."""
    lib = os.path.join(rtmp, "libddshim.so")
    shutil.copy(LIB, lib)
    exe = setuid_copy(rtmp, REL_CLIENT, "nobody" if who == "root" else "root")
    logs = open_dir(rtmp)
    log = os.path.join(logs, "ddshim.log")
    cmd = [exe, "127.0.0.1", str(raw_server.port), "get:/suid", "tasks", "return:4"]
    env = traced_env(agent, None, DD_TRACE_LOG_FILE=log, DD_TRACE_DEBUG="true", TMPDIR=logs,
                     LD_PRELOAD=ld_preload(lib))
    prefix = [] if who == "root" else ["runuser", "-u", "nobody", "--", "env"] + \
        ["%s=%s" % (k, v) for k, v in env.items() if k.startswith(("DD", "LD_", "TMPDIR"))]
    plain, _ = timed(prefix[:4] + cmd if prefix else cmd, plain_env(), traced=False)
    r, _ = timed(prefix + cmd, env, traced=False)
    rel.input()
    assert plain.returncode == r.returncode == 4, r
    assert r.stdout == plain.stdout == b"get /suid 200\ntasks 1\n"
    assert r.stderr == plain.stderr
    assert [trace_headers_in(h) for h, _ in raw_server.requests] == [[], []]
    assert os.listdir(logs) == []
    assert agent.request_log() == []


def test_ddshim_loaded_under_at_secure_stays_inert(agent, raw_server, rtmp, rel):
    """ddshim's own check: loaded into a setuid process anyway (dlopen here,
    /etc/ld.so.preload in real life), it does nothing. The same helper not
    setuid is traced, so the calls do go through ddshim's hooks."""
    lib = os.path.join(rtmp, "libddshim.so")
    shutil.copy(LIB, lib)
    logs = open_dir(rtmp)
    log = os.path.join(logs, "ddshim.log")
    env = traced_env(agent, None, DD_TRACE_LOG_FILE=log, DD_TRACE_DEBUG="true", TMPDIR=logs)
    args = [lib, "127.0.0.1", str(raw_server.port)]
    control = subprocess.run([REL_DLOPEN] + args, env=env, capture_output=True, timeout=30)
    assert control.returncode == 0 and control.stdout == b"status 200\ntasks 2\n", control
    assert len(trace_headers_in(raw_server.requests[0][0])) >= 2
    assert len(settled(agent, "http.client.request")) == 1
    os.unlink(log)
    n_requests = len(agent.request_log())

    exe = setuid_copy(rtmp, REL_DLOPEN, "nobody")
    r = subprocess.run([exe] + args, env=env, capture_output=True, timeout=30)
    rel.input(2)
    assert r.returncode == 0 and r.stdout == b"status 200\ntasks 1\n", r
    assert r.stderr == b""
    assert trace_headers_in(raw_server.requests[1][0]) == []
    assert os.listdir(logs) == []
    assert len(agent.request_log()) == n_requests


def test_disabled_does_nothing(agent, raw_server, tmp, rel):
    cmd = [REL_CLIENT, "127.0.0.1", str(raw_server.port), "get:/off", "tasks", "return:0"]
    plain, _ = timed(cmd, plain_env(), traced=False)
    env = traced_env(agent, None, DD_TRACE_ENABLED="false", TMPDIR=tmp)
    off, _ = timed(cmd, env)
    on, _ = timed(cmd, traced_env(agent, None, TMPDIR=tmp, DD_TRACE_LOG_FILE="off"))
    rel.input(3)
    assert plain.returncode == off.returncode == on.returncode == 0
    assert off.stdout == plain.stdout == b"get /off 200\ntasks 1\n"
    assert on.stdout == b"get /off 200\ntasks 2\n"  # the control: the writer thread
    heads = [h for h, _ in raw_server.requests]
    assert trace_headers_in(heads[1]) == [] and len(trace_headers_in(heads[2])) >= 2
    assert [q["headers"].get("x-datadog-trace-count") for q in agent.request_log()] == ["1"]
    assert glob.glob(os.path.join(tmp, "ddshim-*.log")) == []
