"""Threads and signals under ddshim.

- 64 threads opening, using and closing HTTP connections at once against a
  server in the same process: every request answered, one client and one
  server span per request, each server span the child of its client span.
  Also under ThreadSanitizer: ddshim built with `make SANITIZE=thread
  BUILD=build-tsan` is preloaded into the same helper built with
  -fsanitize=thread (one libtsan for both), and TSan must report nothing.
- A thread closes a tracked socket while another is blocked writing to it or
  reading from it (the writer returns after the close): no crash, and under
  AddressSanitizer no use of freed ddshim state.
- Two threads writing whole requests to one tracked socket at once (a third
  reading the answers): every write returns exactly its length, every head
  arrives whole with at most one header block. ddshim releases the
  connection's lock during a write's system call; the other thread's write
  used to take (or drop) the block the first one carried: wrong counts in 6
  runs of 8, once a head with the block twice.
- A SIGALRM handler writing to a tracked HTTP socket and to a socketpair,
  10 000 times a second for 2 s, while the main thread does HTTP and
  malloc: the program ends on its own, every record arrives whole and in
  order, requests carry no or one well-formed header block; also with the
  handler installed by sigset().
"""
import os
import re
import subprocess
import time

import pytest

from conftest import HELPERS, ROOT, RUN, plain_env, settled, traced_env

THREADS = os.path.join(HELPERS, "sys_threads")
SIGNALS = os.path.join(HELPERS, "sys_signals")
CLOSERACE = os.path.join(HELPERS, "sys_closerace")
SHAREDSOCK = os.path.join(HELPERS, "sys_sharedsock")
TSAN_BUILD = os.path.join(ROOT, "build-tsan")
ASAN_BUILD = os.path.join(ROOT, "build-asan")


def stats(out):
    return {k: int(v) for k, v in re.findall(rb"([\w-]+)=(\d+)", out)}


def check_threads(agent, n, pipelined):
    cli = settled(agent, "http.client.request", timeout=60)
    srv = agent.spans("http.server.request")
    assert len(cli) == n, len(cli)
    assert len(srv) == n, len(srv)
    # Each server span is the child of its client span, except the second
    # request of a pipelined pair (written together with the first: ddshim
    # injects into the first head of a write only), which starts a trace.
    ids = {s["span_id"] for s in cli}
    children = [s for s in srv if s["parent_id"] != 0]
    assert all(s["parent_id"] in ids for s in children)
    assert len({s["parent_id"] for s in children}) == len(children) == n - pipelined
    assert all(s["meta"].get("http.status_code") == "200" for s in cli + srv)


def test_64_threads_open_use_close(agent, tmp, rel):
    r = subprocess.run([RUN, THREADS, "64", "5", "4"], env=traced_env(agent, tmp), capture_output=True,
                       timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    st = stats(r.stdout)
    assert st[b"requests"] == st[b"answered"] == st[b"served"] == 64 * 5 * 4
    check_threads(agent, 64 * 5 * 4, st[b"pipelined"])
    rel.input(64 * 5 * 4)


@pytest.mark.slow
def test_64_threads_long(agent, tmp, rel):
    r = subprocess.run([RUN, THREADS, "64", "40", "8"],
                       env=traced_env(agent, tmp, DDSHIM_MAX_QUEUED_SPANS=100000),
                       capture_output=True, timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr)
    check_threads(agent, 64 * 40 * 8, stats(r.stdout)[b"pipelined"])
    rel.input(64 * 40 * 8)


def sanitizer_build(build, sanitize, targets):
    """Builds what is missing of a sanitizer build (make does nothing when
    everything is up to date)."""
    r = subprocess.run(["make", "-s", "-j2", "SANITIZE=" + sanitize, "BUILD=" + build] + targets,
                       cwd=ROOT, capture_output=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.slow
def test_64_threads_clean_under_tsan(agent, tmp, rel):
    helper = os.path.join(TSAN_BUILD, "tests", "helpers", "sys_threads")
    sanitizer_build(TSAN_BUILD, "thread", [os.path.join(TSAN_BUILD, "libddshim.so"), helper])
    log = os.path.join(tmp, "tsan")
    # The helper is instrumented: libtsan is already its first library, so
    # nothing is preloaded before ddshim.
    env = traced_env(agent, tmp, DDSHIM_PRELOAD_EXTRA="",
                     TSAN_OPTIONS="halt_on_error=0 exitcode=66 log_path=%s "
                     "report_signal_unsafe=0" % log)
    r = subprocess.run([RUN, "--lib", os.path.join(TSAN_BUILD, "libddshim.so"), helper, "64", "3", "3"],
                       env=env, capture_output=True, timeout=600)
    reports = ""
    for f in os.listdir(tmp):
        if f.startswith("tsan."):
            reports += open(os.path.join(tmp, f)).read()
    assert reports == "", reports[:6000]
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    # ddshim was really there: spans arrived.
    check_threads(agent, 64 * 3 * 3, stats(r.stdout)[b"pipelined"])
    rel.input(64 * 3 * 3)


def test_close_while_blocked_in_write(agent, tmp, rel):
    r = subprocess.run([RUN, CLOSERACE, "40"], env=traced_env(agent, tmp), capture_output=True,
                       timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout == b"rounds=40 writer-returned=40\n"
    rel.fault(40)


@pytest.mark.slow
def test_close_while_blocked_in_write_asan(agent, tmp, rel):
    helper = os.path.join(ASAN_BUILD, "tests", "helpers", "sys_closerace")
    sanitizer_build(ASAN_BUILD, "address", [os.path.join(ASAN_BUILD, "libddshim.so"), helper])
    env = traced_env(agent, tmp, DDSHIM_PRELOAD_EXTRA="",
                     ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=0")
    r = subprocess.run([RUN, "--lib", os.path.join(ASAN_BUILD, "libddshim.so"), helper, "60"], env=env,
                       capture_output=True, timeout=300)
    assert b"AddressSanitizer" not in r.stderr, r.stderr.decode(errors="replace")[:6000]
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    rel.fault(60)


# malloc-sigset: the handler installed with sigset(), which ddshim did not
# wrap (the handler's writes were traced: the program hung, 4 runs of 4).
@pytest.mark.parametrize("mode", ["http", "malloc", "malloc-sigset"])
def test_signal_handler_writes_to_sockets(agent, tmp, mode, rel):
    args = [SIGNALS, "2", "10000"] + (mode.split("-") if mode != "http" else [])
    t0 = time.monotonic()
    r = subprocess.run([RUN] + args, env=traced_env(agent, tmp), capture_output=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
    st = stats(r.stdout)
    assert st[b"bad"] == 0 and st[b"failed_writes"] == 0, r.stdout
    assert st[b"signals"] > 5000, r.stdout  # about 10 000 a second were asked for
    assert st[b"a_checked"] == st[b"signals"] == st[b"pair_records"], r.stdout
    assert elapsed < 20, elapsed
    if mode == "http":
        # The main thread's requests were traced meanwhile, both ends.
        n = st[b"b_requests"]
        assert n > 100
        spans = settled(agent, timeout=30)
        b_cli = [s for s in spans if s["name"] == "http.client.request" and "/b/" in s["meta"]["http.url"]]
        b_srv = [s for s in spans if s["name"] == "http.server.request"]
        assert len(b_cli) == n and len(b_srv) == n, (len(b_cli), len(b_srv), n)
    # Untraced, the same program gives the same kind of result.
    p = subprocess.run(args, env=plain_env(), capture_output=True, timeout=60)
    assert p.returncode == 0, p.stdout
    rel.fault(st[b"signals"])
    rel.input(st[b"signals"])


def test_two_threads_write_one_socket_at_once(agent, tmp, rel):
    total = 0
    for _ in range(3):
        r = subprocess.run([RUN, SHAREDSOCK, "10000"], env=traced_env(agent, tmp), capture_output=True,
                           timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
        st = stats(r.stdout)
        assert st[b"wrong_returns"] == 0 and st[b"bad"] == 0, r.stdout
        assert st[b"heads"] == st[b"answers"] == st[b"writes"] == 20000, r.stdout
        assert st[b"injected"] >= 1, r.stdout  # the first request, at least, was traced
        total += st[b"writes"]
    p = subprocess.run([SHAREDSOCK, "10000"], env=plain_env(), capture_output=True, timeout=60)
    st = stats(p.stdout)
    assert p.returncode == 0 and st[b"wrong_returns"] == st[b"bad"] == st[b"injected"] == 0, p.stdout
    rel.input(total)


@pytest.mark.slow
def test_signal_handler_long(agent, tmp, rel):
    total = 0
    for mode in ([], ["malloc"]) * 3:
        r = subprocess.run([RUN, SIGNALS, "3", "10000"] + mode, env=traced_env(agent, tmp),
                           capture_output=True, timeout=60)
        assert r.returncode == 0, (r.stdout, r.stderr[-3000:])
        total += stats(r.stdout)[b"signals"]
    rel.fault(total)
