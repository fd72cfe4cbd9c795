#!/usr/bin/python3
"""ddshim benchmarks: what tracing costs, as ratios against the untraced run.

Run by scripts/bench.sh (`make bench`), which builds the programs in
tests/bench/ into build/bench/ first. Every workload runs untraced and traced
(scripts/ddshim-run, every span sent to build/ddshim-agent) in the same run,
alternating (ABBA order across rounds), for several rounds; the figure kept is
the median of the rounds, and the ratio is the median of the per-round
traced/untraced ratios. The machine is shared and noisy: ratios taken close
together are what can be compared, not absolute figures across runs.

Nothing here fails on a figure: a workload that cannot run prints n/a and the
others go on. The exit status is non-zero only when nothing at all could be
measured. The results are printed and written to BENCHMARKS.md (the text
between the BEGIN NOTES / END NOTES markers of an existing file is kept).

Environment: BENCH_QUICK=1 (about a minute: shorter runs, 2 rounds),
BENCH_SECONDS, BENCH_ROUNDS (override), BENCH_OUT (default BENCHMARKS.md),
BENCH_ONLY (comma-separated workload keys: pg,redis,nginx,http_client,
passthrough,span,memory).
"""
import glob
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from daemons import PG_SUPERUSER, PgCluster, nginx_conf  # noqa: E402 (after the path)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, "build")
BENCH = os.path.join(BUILD, "bench")
LIB = os.path.join(BUILD, "libddshim.so")
RUN = os.path.join(ROOT, "scripts", "ddshim-run")
AGENT_BIN = os.path.join(BUILD, "ddshim-agent")

QUICK = os.environ.get("BENCH_QUICK") == "1"
SECONDS = int(os.environ.get("BENCH_SECONDS") or (1 if QUICK else 3))
ROUNDS = int(os.environ.get("BENCH_ROUNDS") or (2 if QUICK else 5))
# Also run traced against tests/bench/sink_agent (discards payloads): what
# ddshim costs without the stand-in agent's own CPU. Not in quick mode.
SINK = os.environ.get("BENCH_SINK", "0" if QUICK else "1") == "1"
OUT = os.environ.get("BENCH_OUT") or os.path.join(ROOT, "BENCHMARKS.md")
ONLY = set(filter(None, (os.environ.get("BENCH_ONLY") or "").split(",")))

COMMANDS = []   # (what, command line) as run, for BENCHMARKS.md
T0 = time.monotonic()


def log(msg):
    print("[%5.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def wanted(key):
    return not ONLY or key in ONLY


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return bool(pred())


def note_command(what, cmd, traced_too=True, traced=None):
    """traced_too: the traced run is the same command under ddshim-run;
    traced: or say how it differs."""
    line = " ".join(cmd)
    if traced:
        line += "    # traced: " + traced
    elif traced_too:
        line += "    # traced: scripts/ddshim-run " + line
    if all(w != what for w, _ in COMMANDS):
        COMMANDS.append((what, line))


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def kv(text):
    """key=value pairs of a program's output line."""
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", text or "")}


# ---- environment ------------------------------------------------------------

def base_env():
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("DD_") or k.startswith("DDSHIM_") or k == "LD_PRELOAD")}
    return env


class Agent:
    """build/ddshim-agent, as the integration tests start it, logging one line
    per request so that the spans it received can be counted."""

    def __init__(self, tmp):
        self.requests = os.path.join(tmp, "agent-requests.jsonl")
        ready = os.path.join(tmp, "agent.port")
        self.log = open(os.path.join(tmp, "agent.log"), "w")
        self.proc = subprocess.Popen([AGENT_BIN, "--quiet", "--port", "0", "--ready-file", ready,
                                      "--requests", self.requests],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_until(lambda: os.path.exists(ready) and open(ready).read().strip(), 10):
            raise RuntimeError("the local agent did not start")
        self.url = "http://127.0.0.1:%s" % open(ready).read().strip()

    def traces(self):
        n = 0
        try:
            with open(self.requests) as f:
                for line in f:
                    try:
                        n += json.loads(line).get("traces", 0)
                    except ValueError:
                        pass
        except OSError:
            pass
        return n

    def cpu_seconds(self):
        try:
            f = open("/proc/%d/stat" % self.proc.pid).read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class Sink(Agent):
    """tests/bench/sink_agent: takes payloads and throws them away."""

    def __init__(self, tmp):  # pylint: disable=super-init-not-called (another program)
        self.requests = os.path.join(tmp, "sink-requests.jsonl")
        ready = os.path.join(tmp, "sink.port")
        self.log = open(os.path.join(tmp, "sink.log"), "w")
        self.proc = subprocess.Popen([os.path.join(BENCH, "sink_agent"), ready, self.requests],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_until(lambda: os.path.exists(ready) and open(ready).read().strip(), 10):
            raise RuntimeError("sink_agent did not start")
        self.url = "http://127.0.0.1:%s" % open(ready).read().strip()


AGENTS = {}  # "agent": Agent, "sink": Sink (when SINK)


def modes():
    return [False, "agent"] + (["sink"] if "sink" in AGENTS else [])


def traced_env(agent, tmp, **extra):
    env = base_env()
    env["DD_TRACE_AGENT_URL"] = agent.url
    env["DD_TRACE_LOG_FILE"] = os.path.join(tmp, "ddshim.log")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def child_cpu():
    """CPU seconds (user + system) of every child process waited for so far,
    their own children included."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


LAST_CPU = [None]  # CPU seconds of the program the last run() ran
STARTUP_CPU = [0.0]  # what starting under ddshim-run costs once (see startup_cpu)


def cpu_per_op(cpu, traced, ops):
    """µs of CPU per operation of a run; for a traced run without the fixed
    cost of starting under ddshim-run (its shell, the library's start-up and
    exit flush), which a long-running program pays once."""
    if cpu is None or not ops:
        return None
    if traced:
        cpu -= STARTUP_CPU[0]
    return max(cpu, 0.0) * 1e6 / ops


def startup_cpu(env):
    """Median over 5 starts of (ddshim-run /bin/true) − (/bin/true), CPU seconds."""
    xs = []
    for _ in range(5):
        c0 = child_cpu()
        subprocess.run([RUN, "/bin/true"], env=env, check=False)
        c1 = child_cpu()
        subprocess.run(["/bin/true"], env=env, check=False)
        c2 = child_cpu()
        xs.append((c1 - c0) - (c2 - c1))
    return max(median(xs), 0.0)


def run(cmd, env, traced, timeout=120):
    full = ([RUN] + cmd) if traced else cmd
    LAST_CPU[0] = None
    c0 = child_cpu()
    try:
        r = subprocess.run(full, env=env, capture_output=True, text=True, timeout=timeout)
        LAST_CPU[0] = child_cpu() - c0
    except (OSError, subprocess.TimeoutExpired) as e:
        log("  ! %s: %s" % (" ".join(cmd[:2]), e))
        return None
    if r.returncode != 0:
        log("  ! %s exited %d: %s" % (" ".join(cmd[:2]), r.returncode, (r.stderr or r.stdout).strip()[-300:]))
        return None
    return r.stdout


# ---- servers ------------------------------------------------------------------

class Postgres:
    """A private server (tests/support/daemons.py, as the integration tests
    start one), unix socket only; then `pgbench -i -s 1`."""

    def __init__(self, tmp):
        os.chmod(tmp, 0o755)
        self.dir = tempfile.mkdtemp(prefix="ddsbench-pg-", dir=tmp)
        self.port = free_port()
        self.cluster = PgCluster(self.dir, self.port, [
            "-c listen_addresses=''", "-c max_connections=20", "-c shared_buffers=64MB"],
            os.path.join(self.dir, "server.log"))
        self.bindir = self.cluster.bindir
        env = self.env(base_env())
        subprocess.run(["psql", "-X", "-q", "-d", "postgres", "-c", "CREATE DATABASE bench"],
                       env=env, check=True, capture_output=True, timeout=60)
        subprocess.run(["pgbench", "-i", "-s", "1", "-q", "bench"], env=env, check=True,
                       capture_output=True, timeout=300)

    def env(self, env):
        env = {k: v for k, v in env.items() if not k.startswith("PG")}
        env.update(PGHOST=self.dir, PGPORT=str(self.port), PGUSER=PG_SUPERUSER,
                   PGDATABASE="bench")
        return env

    def stop(self):
        self.cluster.stop()


class Redis:
    def __init__(self, tmp):
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=tmp)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", self.dir, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        if not wait_until(up, 10):
            self.stop()
            raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Nginx:
    """nginx (one worker) serving a 170-byte file, as in
    tests/integration/test_http_server.py; traced when env says so."""

    def __init__(self, tmp, env, traced):
        self.dir = tempfile.mkdtemp(prefix="nginx-", dir=tmp)
        os.chmod(self.dir, 0o755)
        os.makedirs(os.path.join(self.dir, "www"))
        with open(os.path.join(self.dir, "www", "index.html"), "w") as f:
            f.write("hello from nginx\n" * 10)
        self.port = free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(self.dir, self.port, workers=1, keepalive_requests=1000000))
        self.cmd = ["/usr/sbin/nginx", "-c", conf, "-p", self.dir]
        cmd = ([RUN] if traced else []) + self.cmd
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        if not wait_until(up, 10):
            self.stop()
            raise RuntimeError("nginx did not start")
        self.url = "http://127.0.0.1:%d/index.html" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers flush their spans
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- throughput workloads ------------------------------------------------------

class Result:
    def __init__(self, key, name, unit, target_loss, spans_per_op=1.0, higher_is_better=True):
        self.key, self.name, self.unit = key, name, unit
        self.target_loss = target_loss
        self.spans_per_op = spans_per_op
        self.untraced, self.traced, self.ratios = [], [], []
        self.sink, self.sink_ratios = [], []  # traced against sink_agent
        self.extra_u, self.extra_t = [], []  # per round: dict of other figures
        self.ops, self.received = 0, 0       # traced runs: operations done / spans the agent got
        self.note = ""

    def add(self, u, t, eu=None, et=None):
        if u is None or t is None or u <= 0:
            return
        self.untraced.append(u)
        self.traced.append(t)
        self.ratios.append(t / u)
        self.extra_u.append(eu or {})
        self.extra_t.append(et or {})

    @property
    def ratio(self):
        return median(self.ratios)

    @property
    def loss(self):
        r = self.ratio
        return None if r is None else 1 - r

    def verdict(self):
        if self.loss is None:
            return "n/a"
        if self.target_loss is None:
            return "(no target)"
        return "met" if self.loss <= self.target_loss else "NOT met"

    def spans_per_sec(self):
        t = median(self.traced)
        return None if t is None else t * self.spans_per_op

    def extra(self, key, traced):
        return median([float(e[key]) for e in (self.extra_t if traced else self.extra_u)
                       if e.get(key) is not None])


def rounds(res, fn):
    """fn(mode) -> (figure, extras dict, ops, spans received) or None; mode is
    False (untraced), "agent" or "sink" (traced, spans sent to that intake).
    The order alternates round by round (ABC, CBA, ...)."""
    for r in range(ROUNDS):
        order = modes() if r % 2 == 0 else modes()[::-1]
        got = {}
        for mode in order:
            got[mode] = fn(mode)
        u, t, k = got[False], got["agent"], got.get("sink")
        if u is None or t is None:
            continue
        res.add(u[0], t[0], u[1], t[1])
        res.ops += t[2]
        res.received += t[3]
        msg = "  round %d: untraced %.1f, traced %.1f %s (ratio %.3f)" % (r + 1, u[0], t[0], res.unit,
                                                                           t[0] / u[0])
        if k is not None and u[0] > 0:
            res.sink.append(k[0])
            res.sink_ratios.append(k[0] / u[0])
            msg += "; traced, sink agent: %.1f (ratio %.3f)" % (k[0], k[0] / u[0])
        log(msg)


def bench_pg(agent, tmp, results):
    try:
        pg = Postgres(tmp)
    except Exception as e:  # noqa: BLE001 - any failure: skip, report
        log("postgres: skipped (%s)" % e)
        return
    try:
        for mode in ("simple", "prepared"):
            res = Result("pg_" + mode, "pgbench select-only, -M %s, 1 client (unix socket)" % mode,
                         "tps", 0.02)
            # The binary itself: /usr/bin/pgbench is Debian's wrapper script.
            exe = os.path.join(pg.bindir, "pgbench")
            if not os.path.exists(exe):
                exe = "pgbench"
            cmd = [exe, "-n", "-S", "-M", mode, "-c", "1", "-j", "1", "-T", str(SECONDS), "bench"]
            note_command(res.name, cmd)
            log("pgbench -M %s" % mode)

            def one(mode):
                traced, intake = bool(mode), AGENTS.get(mode)
                env = pg.env(traced_env(intake, tmp, DD_SERVICE="pgbench") if traced else base_env())
                before = intake.traces() if traced else 0
                out = run(cmd, env, traced, timeout=SECONDS + 60)
                m = re.search(r"tps = ([\d.]+) \(without initial", out or "")
                n = re.search(r"number of transactions actually processed: (\d+)", out or "")
                if not m:
                    return None
                received = 0
                ops = int(n.group(1)) if n else 0
                cpu = cpu_per_op(LAST_CPU[0], traced, ops)
                if traced:
                    received = spans_received(intake, before, ops)
                return float(m.group(1)), {"cpu_us": cpu} if cpu else {}, ops, received
            rounds(res, one)
            results.append(res)
    finally:
        pg.stop()


def spans_received(intake, before, ops):
    """Spans the intake got since `before`, once it has all ops of them or
    after 2 s."""
    wait_until(lambda: intake.traces() - before >= ops, 2)
    return intake.traces() - before


def loop_round(cmd, mode, tmp, service, rate_key, us_key):
    """One run of a tests/bench loop program (its output: key=value pairs with
    rate_key, us_key and total), for rounds()."""
    traced, intake = bool(mode), AGENTS.get(mode)
    env = traced_env(intake, tmp, DD_SERVICE=service) if traced else base_env()
    before = intake.traces() if traced else 0
    f = kv(run(cmd, env, traced, timeout=SECONDS + 60))
    if rate_key not in f:
        return None
    ops = int(f["total"])
    cpu = cpu_per_op(LAST_CPU[0], traced, ops)
    received = spans_received(intake, before, ops) if traced else 0
    return float(f[rate_key]), {"us": f[us_key], "cpu_us": cpu}, ops, received


def bench_redis(agent, tmp, results):
    exe = os.path.join(BENCH, "redis_loop")
    if not os.path.exists(exe):
        log("redis: skipped (build/bench/redis_loop missing)")
        return
    try:
        rs = Redis(tmp)
    except Exception as e:  # noqa: BLE001
        log("redis: skipped (%s)" % e)
        return
    try:
        for mode, label in (("single", "hiredis loop, blocking GET/SET, 1 connection (TCP)"),
                            ("pipeline", "hiredis pipelined loop, 16 per batch (TCP)")):
            res = Result("redis_" + mode, label, "cmd/s", 0.02)
            cmd = [exe, "tcp:127.0.0.1:%d" % rs.port, mode, str(SECONDS), "16"]
            note_command(res.name, ["build/bench/redis_loop", "tcp:127.0.0.1:PORT", mode, str(SECONDS), "16"])
            log("redis_loop %s" % mode)

            rounds(res, lambda mode: loop_round(cmd, mode, tmp, "redis_loop", "cmds_per_sec",
                                                "us_per_cmd"))
            results.append(res)
    finally:
        rs.stop()


def wrk(url, seconds):
    cmd = ["wrk", "-t1", "-c4", "-d%ds" % seconds, "--latency", url]
    c0 = child_cpu()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    LAST_CPU[0] = child_cpu() - c0  # wrk's own, to take out of nginx's
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if not m:
        return None
    ex = {}
    for p in ("50", "90", "99"):
        lm = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % p, out, re.M)
        if lm:
            v = float(lm.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[lm.group(2)]
            ex["p" + p] = v
    return float(m.group(1)), ex, int(n.group(1)) if n else 0


def bench_nginx(agent, tmp, results):
    if not shutil.which("wrk") or not os.path.exists("/usr/sbin/nginx"):
        log("nginx: skipped (nginx or wrk missing)")
        return
    res = Result("nginx", "nginx (1 worker) under wrk -t1 -c4, keep-alive, 170-byte file", "req/s",
                 0.05)
    note_command(res.name, ["/usr/sbin/nginx", "-c", "nginx.conf", "-p", "DIR", "&&", "wrk", "-t1",
                            "-c4", "-d%ds" % SECONDS, "--latency", "http://127.0.0.1:PORT/index.html"])
    log("nginx + wrk")

    def one(mode):
        traced, intake = bool(mode), AGENTS.get(mode)
        env = traced_env(intake, tmp, DD_SERVICE="nginx") if traced else base_env()
        c0 = child_cpu()
        try:
            ng = Nginx(tmp, env, traced)
        except Exception as e:  # noqa: BLE001
            log("  ! nginx: %s" % e)
            return None
        before = intake.traces() if traced else 0
        try:
            w = wrk(ng.url, SECONDS)
        finally:
            ng.stop()
        if w is None:
            return None
        # nginx's CPU (master and worker, waited for by stop()) without wrk's.
        cpu = cpu_per_op(child_cpu() - c0 - LAST_CPU[0], traced, w[2])
        if cpu:
            w[1]["cpu_us"] = cpu
        received = spans_received(intake, before, w[2]) if traced else 0
        return w[0], w[1], w[2], received
    rounds(res, one)
    results.append(res)


def bench_http_client(agent, tmp, results):
    exe = os.path.join(BENCH, "http_client_loop")
    if not os.path.exists(exe) or not os.path.exists("/usr/sbin/nginx"):
        log("http client: skipped")
        return
    try:
        ng = Nginx(tmp, base_env(), traced=False)
    except Exception as e:  # noqa: BLE001
        log("http client: skipped (%s)" % e)
        return
    res = Result("http_client", "HTTP client loop, keep-alive GET to untraced nginx (headers injected)",
                 "req/s", None)
    cmd = [exe, "127.0.0.1:%d" % ng.port, str(SECONDS), "/index.html"]
    note_command(res.name, ["build/bench/http_client_loop", "127.0.0.1:PORT", str(SECONDS), "/index.html"])
    log("http_client_loop")
    try:
        rounds(res, lambda mode: loop_round(cmd, mode, tmp, "http_client_loop", "req_per_sec",
                                            "us_per_req"))
    finally:
        ng.stop()
    results.append(res)


# ---- per-call and per-span costs ---------------------------------------------------

def callgrind(cmd, env, outfile, separate_threads=False, atstart=False):
    full = ["valgrind", "--tool=callgrind", "--collect-atstart=" + ("yes" if atstart else "no"),
            "--callgrind-out-file=" + outfile]
    if separate_threads:
        full.append("--separate-threads=yes")
    try:
        r = subprocess.run(full + cmd, env=env, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r


def callgrind_fn_totals(path):
    """Inclusive Ir per function name of a callgrind output file."""
    try:
        out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    tot = {}
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+\S*:(\w+)\s", line)
        if m:
            tot.setdefault(m.group(2), int(m.group(1).replace(",", "")))
    return tot


def callgrind_total(path):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("totals:") or line.startswith("summary:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def bench_passthrough(agent, tmp, extra):
    exe, fake = os.path.join(BENCH, "passthrough"), os.path.join(BENCH, "fake_io.so")
    if not os.path.exists(exe) or not os.path.exists(fake):
        log("passthrough: skipped")
        return
    log("passthrough (hook cost on descriptors ddshim does not trace)")
    note_command("passthrough, ns per call",
                 ["LD_PRELOAD=build/bench/fake_io.so", "build/bench/passthrough", "time", "0"],
                 traced="LD_PRELOAD=build/bench/fake_io.so scripts/ddshim-run build/bench/passthrough "
                        "time 0  (ddshim-run prepends libddshim.so)")
    rows = {}
    for r in range(3 if QUICK else 5):
        for traced in (False, True):
            env = traced_env(agent, tmp) if traced else base_env()
            env["LD_PRELOAD"] = fake
            f = run([exe, "time", "0"], env, traced, timeout=120)
            for line in (f or "").splitlines():
                p = kv(line)
                name = line.split()[0] if line.strip() else ""
                if "overhead_ns" in p:
                    rows.setdefault(name, {"u": [], "t": []})["t" if traced else "u"].append(
                        float(p["overhead_ns"]))
                if "real_write_devnull_syscall_ns" in p:
                    extra["syscall_ns"] = float(p["real_write_devnull_syscall_ns"])
    n = 20000
    note_command("passthrough, instructions per call",
                 ["LD_PRELOAD=build/bench/fake_io.so", "valgrind", "--tool=callgrind",
                  "--collect-atstart=no", "build/bench/passthrough", "count", str(n)],
                 traced="the same with LD_PRELOAD=build/libddshim.so:build/bench/fake_io.so")
    ir = {}
    for traced in (False, True):
        env = base_env()
        if traced:
            env.update(traced_env(agent, tmp))
            env["LD_PRELOAD"] = LIB + ":" + fake
        else:
            env["LD_PRELOAD"] = fake
        outf = os.path.join(tmp, "pt.%d.cg" % traced)
        callgrind([exe, "count", str(n)], env, outf)
        tot = callgrind_fn_totals(outf)
        for fn in ("count_write_devnull", "count_send_unix", "count_send_tcp"):
            if fn in tot:
                ir.setdefault(fn, {})[traced] = tot[fn] / n
    names = {"write_devnull": "count_write_devnull", "send_unix_socket": "count_send_unix",
             "send_tcp_not_http": "count_send_tcp"}
    out = []
    for name, fn in names.items():
        v = rows.get(name, {"u": [], "t": []})
        u, t = median(v["u"]), median(v["t"])
        ns = None if u is None or t is None else t - u
        i = ir.get(fn, {})
        ins = i[True] - i[False] if True in i and False in i else None
        out.append((name, ns, ins))
    extra["passthrough"] = out


def bench_span(agent, tmp, extra):
    exe = os.path.join(BENCH, "span_cost")
    if not os.path.exists(exe):
        log("span cost: skipped")
        return
    log("span cost (span_cost: core objects linked directly)")
    n = 50000 if QUICK else 200000
    env = traced_env(agent, tmp, DD_SERVICE="span_cost")
    note_command("span cost, ns per span", ["build/bench/span_cost", "lifecycle", str(n)], False)
    note_command("encoder throughput", ["build/bench/span_cost", "encode", str(n * 5)], False)
    life, enc = [], []
    for _ in range(1 if QUICK else 3):
        life.append(kv(run([exe, "lifecycle", str(n)], env, False, timeout=300)))
        enc.append(kv(run([exe, "encode", str(n * 5)], env, False, timeout=300)))
    extra["span"] = {
        "app_ns": median([float(x["app_ns_per_span"]) for x in life if "app_ns_per_span" in x]),
        "cpu_ns": median([float(x["cpu_ns_per_span"]) for x in life if "cpu_ns_per_span" in x]),
        "sent": median([float(x["spans_sent"]) for x in life if "spans_sent" in x]),
        "n": n,
        "encode_ns": median([float(x["encode_ns_per_span"]) for x in enc if "encode_ns_per_span" in x]),
        "encode_sps": median([float(x["spans_per_sec"]) for x in enc if "spans_per_sec" in x]),
        "bytes": median([float(x["bytes_per_span"]) for x in enc if "bytes_per_span" in x]),
    }
    # CALLGRIND_TOGGLE_COLLECT only switches the calling thread, and the
    # writer thread's work is the point here: collect everything, per thread,
    # for N and 2N spans; the difference is N spans' worth, start-up excluded.
    cn = 5000 if QUICK else 10000
    note_command("span cost, instructions per span (run for N and 2N; difference / N)",
                 ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                  "build/bench/span_cost", "lifecycle", "N"], False)
    per = {}
    for k in (1, 2):
        outf = os.path.join(tmp, "span%d.cg" % k)
        callgrind([exe, "lifecycle", str(cn * k)], env, outf, separate_threads=True, atstart=True)
        per[k] = [callgrind_total(p) or 0 for p in sorted(glob.glob(outf + "-*"))]
    if len(per[1]) >= 2 and len(per[2]) >= 2:
        diffs = [(b - a) / cn for a, b in zip(per[1], per[2])]
        extra["span"]["ir_app"] = diffs[0]
        extra["span"]["ir_total"] = sum(diffs)
    ncg = 100000
    outf = os.path.join(tmp, "enc.cg")
    callgrind([exe, "encode", str(ncg)], env, outf)
    t = callgrind_total(outf)
    if t:
        extra["span"]["ir_encode"] = t / ncg


def bench_memory(agent, tmp, extra):
    exe = os.path.join(BENCH, "http_client_loop")
    if not os.path.exists(exe):
        log("memory: skipped")
        return
    log("memory (http_client_loop with its in-process server)")
    idle = {"u": [], "t": []}
    note_command("memory, idle (VmRSS after the loop)",
                 ["build/bench/http_client_loop", "self", "1x", "--idle", "1500", "--rss"])
    for _ in range(1 if QUICK else 3):
        for traced in (False, True):
            env = traced_env(agent, tmp, DD_SERVICE="mem") if traced else base_env()
            f = kv(run([exe, "self", "1x", "--idle", "1500", "--rss"], env, traced))
            if "rss_kb" in f:
                idle["t" if traced else "u"].append(int(f["rss_kb"]))
    u, t = median(idle["u"]), median(idle["t"])
    extra["mem_idle"] = (u, t)
    # Two ways for the agent to be down: nothing listens (each flush fails at
    # once and its spans are dropped: the queue never fills), and an agent
    # that accepts and never answers (ddshim-agent --fault hang: each request
    # waits for its 2 s timeout while the queue fills to DDSHIM_MAX_QUEUED_SPANS;
    # this is where the cap is what bounds memory).
    dead = "http://127.0.0.1:%d" % free_port()
    hang_ready = os.path.join(tmp, "hang.port")
    hang_log = open(os.path.join(tmp, "hang.log"), "w")
    hang = subprocess.Popen([AGENT_BIN, "--quiet", "--port", "0", "--fault", "hang",
                             "--ready-file", hang_ready], stdout=hang_log, stderr=subprocess.STDOUT)
    hung = None
    if wait_until(lambda: os.path.exists(hang_ready) and open(hang_ready).read().strip(), 10):
        hung = "http://127.0.0.1:%s" % open(hang_ready).read().strip()
    secs = 1 if QUICK else 4
    flood = []
    try:
        for how, url in (("refused", dead), ("hung", hung)):
            if url is None:
                continue
            for cap in (1000, 10000):
                note_command("memory, flood with the agent down (%s)" % how,
                             ["build/bench/http_client_loop", "self", str(secs), "--rss"],
                             traced="DD_TRACE_AGENT_URL=%s DDSHIM_MAX_QUEUED_SPANS=N "
                                    "scripts/ddshim-run build/bench/http_client_loop self %d --rss" % (
                                        "http://127.0.0.1:CLOSED_PORT" if how == "refused" else
                                        "<build/ddshim-agent --fault hang>", secs))
                fu = kv(run([exe, "self", str(secs), "--rss"], base_env(), False, timeout=120))
                env = traced_env(agent, tmp, DD_SERVICE="flood", DD_TRACE_AGENT_URL=url,
                                 DDSHIM_MAX_QUEUED_SPANS=cap)
                ft = kv(run([exe, "self", str(secs), "--rss"], env, True, timeout=120))
                if "hwm_kb" in fu and "hwm_kb" in ft:
                    flood.append((how, cap, secs, int(fu["hwm_kb"]), int(ft["hwm_kb"]),
                                  int(ft["total"])))
    finally:
        hang.terminate()
        try:
            hang.wait(5)
        except subprocess.TimeoutExpired:
            hang.kill()
        hang_log.close()
    extra["mem_flood"] = flood


# ---- report -----------------------------------------------------------------------

def fmt(v, nd=1):
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return "{:,.0f}".format(v)
    return ("%%.%df" % nd) % v


def machine():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def ver(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", model),
        ("kernel", platform.release()),
        ("libc", " ".join(platform.libc_ver())),
        ("compiler", ver(["gcc", "--version"])),
        ("PostgreSQL", ver(["pgbench", "--version"])),
        ("Redis", ver(["redis-server", "--version"])),
        ("nginx", ver(["/usr/sbin/nginx", "-v"])),
        ("wrk", ver(["wrk", "-v"])),
        ("ddshim", subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                  capture_output=True, text=True).stdout.strip() or "?"),
    ]


def report(results, extra, agent_cpu):
    lines = []
    add = lines.append
    add("| workload | unit | untraced | traced | ratio | loss | spans/s (traced) | agent got | target | | loss with sink agent | CPU µs per operation, untraced → traced |")
    add("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in results:
        got = "%.1f%%" % (100.0 * r.received / r.ops) if r.ops else "n/a"
        sr = median(r.sink_ratios)
        cu, ct = r.extra("cpu_us", False), r.extra("cpu_us", True)
        cpu = "n/a" if cu is None or ct is None else "%.2f → %.2f (%+.2f)" % (cu, ct, ct - cu)
        add("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r.name, r.unit, fmt(median(r.untraced)), fmt(median(r.traced)),
            "n/a" if r.ratio is None else "%.3f" % r.ratio,
            "n/a" if r.loss is None else "%.1f%%" % (100 * r.loss),
            fmt(r.spans_per_sec()), got,
            "—" if r.target_loss is None else "≤ %d%% loss" % round(100 * r.target_loss),
            r.verdict(), "n/a" if sr is None else "%.1f%%" % (100 * (1 - sr)), cpu))
    for r in results:
        if r.key == "nginx" and r.untraced:
            add("")
            add("nginx latency (wrk, median of rounds): p50 %s → %s µs, p90 %s → %s µs, "
                "p99 %s → %s µs (untraced → traced)." % tuple(
                    fmt(r.extra(p, t)) for p in ("p50", "p90", "p99") for t in (False, True)))
    add("")
    add("Figures: median of %d rounds of %d s each, untraced and traced alternating (ABC, "
        "CBA, ...); ratio = median of the per-round traced/untraced ratios. \"agent got\": "
        "spans the local agent received during the traced runs ÷ operations the traced "
        "programs did (warm-up included): every operation is one span. Verdicts are on the "
        "traced runs with build/ddshim-agent, which decodes and checks every payload: %s s "
        "of CPU during these runs, on the same 2 cores as the workload. \"loss with sink "
        "agent\": the same workload traced against tests/bench/sink_agent, which discards "
        "payloads: what ddshim itself costs (n/a in BENCH_QUICK mode). \"CPU µs per "
        "operation\": CPU time (user + system, all threads: the writer's too) of the "
        "program ÷ the operations it did, median of rounds, traced runs with the stand-in "
        "agent; for nginx, master and worker without wrk. Far steadier than throughput on "
        "this machine: the difference is what ddshim costs per operation. Traced runs "
        "exclude the fixed cost of starting under ddshim-run (%s ms of CPU, once per "
        "program)." % (ROUNDS, SECONDS, fmt(agent_cpu, 1), fmt(STARTUP_CPU[0] * 1e3, 1)))
    add("")

    pt = extra.get("passthrough")
    if pt:
        add("### Passthrough: hooks on descriptors ddshim does not trace")
        add("")
        add("| call | extra ns per call | extra instructions per call | target | |")
        add("|---|---:|---:|---:|---|")
        for name, ns, ins in pt:
            ok = ns is not None and ins is not None and ns <= 10 and ins <= 30
            add("| %s | %s | %s | ≤ 10 ns, ≤ 30 instructions | %s |" % (
                name, fmt(ns, 2), fmt(ins, 1), "n/a" if ns is None or ins is None else
                ("met" if ok else "NOT met")))
        add("")
        add("ns: (hooked − direct) traced minus the same untraced (noise floor), median of "
            "rounds, with fake_io.so standing in for the kernel. A real write() to /dev/null "
            "costs %s ns here, so these are fractions of a percent of any real call. "
            "Instructions: callgrind, traced minus untraced, per call." % fmt(extra.get("syscall_ns"), 0))
        add("")
    sp = extra.get("span")
    if sp:
        add("### One span: creation to sent")
        add("")
        add("| figure | value | target | |")
        add("|---|---:|---:|---|")
        cpu = sp.get("cpu_ns")
        add("| CPU per span, creation → sent to the agent (app + writer threads) | %s ns | ≤ 1000 ns | %s |" % (
            fmt(cpu, 0), "n/a" if cpu is None else ("met" if cpu <= 1000 else "NOT met")))
        add("| of which on the application thread (start, 9 tags, finish, queue) | %s ns | | |" % fmt(sp.get("app_ns"), 0))
        add("| instructions per span, all threads (callgrind) | %s | | |" % fmt(sp.get("ir_total"), 0))
        add("| instructions per span, application thread (callgrind) | %s | | |" % fmt(sp.get("ir_app"), 0))
        add("| encoder alone: ns per span | %s ns | | |" % fmt(sp.get("encode_ns"), 0))
        add("| encoder alone: instructions per span | %s | | |" % fmt(sp.get("ir_encode"), 0))
        add("| encoder throughput | %s spans/s | | |" % fmt(sp.get("encode_sps"), 0))
        add("| payload bytes per span | %s | | |" % fmt(sp.get("bytes"), 0))
        add("")
        add("A span shaped like a hiredis command's (resource, 9 meta, 3 metrics, process and "
            "root tags added by the encoder), %s spans in batches of 500 (about the payload a "
            "busy traced program sends: the writer wakes at 512 queued spans), each followed "
            "by a flush, so that all are sent (%s sent). Median of 3 runs (1 in BENCH_QUICK). Instructions: "
            "callgrind, the same program run for N and 2N spans, difference per span, per "
            "thread. (callgrind counts each byte of a rep-prefixed memset/memcpy as one "
            "instruction, which inflates large clears.)" % (fmt(sp.get("n"), 0),
                                                                    fmt(sp.get("sent"), 0)))
        add("")
    mi = extra.get("mem_idle")
    if mi:
        u, t = mi
        d = None if u is None or t is None else (t - u) / 1024.0
        add("### Memory")
        add("")
        add("| figure | untraced | traced | extra | target | |")
        add("|---|---:|---:|---:|---:|---|")
        add("| idle process after its first span (VmRSS) | %s KiB | %s KiB | %s MiB | ≤ 4 MiB | %s |" % (
            fmt(u, 0), fmt(t, 0), fmt(d, 2), "n/a" if d is None else ("met" if d <= 4 else "NOT met")))
        for how, cap, secs, hu, ht, total in extra.get("mem_flood", []):
            ex = (ht - hu) / 1024.0
            per = " (%s bytes per span of the cap)" % fmt((ht - hu) * 1024.0 / cap, 0) \
                if how == "hung" else ""
            add("| flood, agent %s, DDSHIM_MAX_QUEUED_SPANS=%d, %d s, %s spans made (VmHWM) | %s KiB | %s KiB | %s MiB%s | bounded by the cap | |" % (
                how, cap, secs, fmt(total, 0), fmt(hu, 0), fmt(ht, 0), fmt(ex, 1), per))
        add("")
    return "\n".join(lines)


def write_md(table, env_rows, notes):
    md = []
    md.append("# ddshim benchmarks")
    md.append("")
    md.append("What tracing costs, measured by `make bench` (scripts/bench.sh → tests/bench/bench.py)"
              " on %s%s. Each workload runs untraced and traced in the same run, alternating;"
              " the traced runs send every span to a local agent (build/ddshim-agent), default "
              "configuration (100%% of spans sent, 1 s flush interval)." % (
                  time.strftime("%Y-%m-%d"), ", BENCH_QUICK=1 (short runs: rough figures)" if QUICK else ""))
    md.append("")
    md.append("## Machine")
    md.append("")
    md.append("| | |")
    md.append("|---|---|")
    for k, v in env_rows:
        md.append("| %s | %s |" % (k, v.replace("|", "\\|")))
    md.append("")
    md.append("## Results")
    md.append("")
    md.append(table)
    md.append("")
    md.append("## Commands")
    md.append("")
    md.append("Ports and directories are chosen at run time (PORT, DIR). Traced runs: the same "
              "command under `scripts/ddshim-run`, with `DD_TRACE_AGENT_URL` pointing at "
              "`build/ddshim-agent --quiet --port 0` (and, for the sink-agent column, at "
              "`build/bench/sink_agent READY_FILE REQUESTS_FILE`).")
    md.append("")
    md.append("```")
    for what, line in COMMANDS:
        md.append("# " + what)
        md.append(line)
    md.append("```")
    md.append("")
    md.append("<!-- BEGIN NOTES: kept as they are when bench.sh rewrites this file -->")
    md.append(notes.strip("\n") if notes else "")
    md.append("<!-- END NOTES -->")
    md.append("")
    with open(OUT, "w") as f:
        f.write("\n".join(md))


def old_notes():
    try:
        text = open(OUT).read()
    except OSError:
        return ""
    m = re.search(r"<!-- BEGIN NOTES[^>]*-->\n(.*?)<!-- END NOTES -->", text, re.S)
    return m.group(1) if m else ""


def main():
    for p in (LIB, AGENT_BIN):
        if not os.path.exists(p):
            print("bench: %s is missing (make all)" % p, file=sys.stderr)
            return 1
    tmp = tempfile.mkdtemp(prefix="ddshim-bench-")
    os.chmod(tmp, 0o755)
    log("ddshim bench: %d rounds of %d s%s; scratch %s" % (ROUNDS, SECONDS,
                                                           " (BENCH_QUICK)" if QUICK else "", tmp))
    results, extra = [], {}
    agent = Agent(tmp)
    AGENTS["agent"] = agent
    if SINK and os.path.exists(os.path.join(BENCH, "sink_agent")):
        try:
            AGENTS["sink"] = Sink(tmp)
        except Exception as e:  # noqa: BLE001
            log("sink agent: not used (%s)" % e)
    STARTUP_CPU[0] = startup_cpu(traced_env(agent, tmp))
    log("starting a program under ddshim-run costs %.1f ms of CPU (taken out of CPU per operation)"
        % (STARTUP_CPU[0] * 1e3))
    try:
        cpu0 = agent.cpu_seconds()
        steps = [("pg", bench_pg), ("redis", bench_redis), ("nginx", bench_nginx),
                 ("http_client", bench_http_client)]
        for key, fn in steps:
            if wanted(key):
                try:
                    fn(agent, tmp, results)
                except Exception as e:  # noqa: BLE001 - a broken workload must not stop the rest
                    log("%s: failed (%s)" % (key, e))
        cpu1 = agent.cpu_seconds()
        for key, fn in (("passthrough", bench_passthrough), ("span", bench_span),
                        ("memory", bench_memory)):
            if wanted(key):
                try:
                    fn(agent, tmp, extra)
                except Exception as e:  # noqa: BLE001
                    log("%s: failed (%s)" % (key, e))
    finally:
        for a in AGENTS.values():
            a.stop()
    agent_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    table = report(results, extra, agent_cpu)
    print()
    print(table)
    write_md(table, machine(), old_notes())
    log("written to %s" % OUT)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if results or extra else 1


if __name__ == "__main__":
    sys.exit(main())
