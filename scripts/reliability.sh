#!/bin/sh
# reliability.sh — issue 7: the host program never notices ddshim, whatever
# happens. `make reliability` runs it; it stops by itself (every step has a
# time limit; ~20 minutes in all on 2 cores) and ends with a table.
#
#   scripts/reliability.sh                     everything below, then the table
#   scripts/reliability.sh --fuzz DIR SECONDS TARGET...   (make fuzz)
#   scripts/reliability.sh --sanitizer-report LOGDIR      (make test SANITIZE=...)
#   scripts/reliability.sh --table LOG         the table of a JSON-lines log
#
# Steps: tests/reliability with the slow cases (each case appends a JSON line
# to $DDSHIM_RELIABILITY_LOG: suite, group, case, faults, inputs, passed);
# the unit tests built with ASan+UBSan and with TSan; the integration and
# reliability suites against those builds when tests/integration/conftest.py
# honours DDSHIM_BUILD; a traced curl and a traced pgbench under valgrind
# memcheck; every libFuzzer target for FUZZ_SECONDS (default 30). Exit status
# 0 only if every case passed.
set -u
ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-/usr/bin/python3}
MAKE=${MAKE:-make}
OUT=${RELIABILITY_OUT:-$ROOT/build/reliability}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

# One JSON line per case: suite group case faults inputs passed(0/1)
record() {
    printf '{"suite": "%s", "group": "%s", "case": "%s", "faults": %s, "inputs": %s, "passed": %s}\n' \
        "$1" "$2" "$3" "$4" "$5" "$(if [ "$6" = 1 ]; then echo true; else echo false; fi)" >>"$LOG"
}

say() { printf '\n=== %s\n' "$*"; }

# ---- fuzzing ------------------------------------------------------------------

# fuzz DIR SECONDS TARGET...: runs each built target from its seeds; one JSON
# line per target in DIR/results.jsonl (inputs = executions).
fuzz() {
    dir=$1 secs=$2
    shift 2
    : >"$dir/results.jsonl"
    status=0
    for t in "$@"; do
        name=${t#fuzz_}
        seeds=tests/fuzz/corpus/$name
        work=tests/fuzz/corpus-out/$name
        mkdir -p "$work" "$seeds"
        log=$dir/$t.log
        printf '%-14s %ss ... ' "$t" "$secs"
        # A small quarantine keeps RSS down for targets that allocate per
        # byte (fuzz_http); use-after-free detection is unaffected.
        ASAN_OPTIONS=quarantine_size_mb=64:detect_leaks=1 timeout -k 10 $((secs + 120)) \
            "$dir/$t" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$dir/$t-" "$work" "$seeds" >"$log" 2>&1
        rc=$?
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
        [ -n "$runs" ] || runs=0
        crashes=$(ls "$dir/$t"-crash-* "$dir/$t"-leak-* "$dir/$t"-timeout-* "$dir/$t"-oom-* 2>/dev/null | wc -l)
        if [ $rc -eq 0 ] && [ "$crashes" -eq 0 ]; then
            ok=true
            echo "$runs runs, no findings"
        else
            ok=false
            status=1
            echo "FAILED (exit $rc, $crashes finding(s)); see $log"
        fi
        printf '{"suite": "fuzz", "group": "fuzz", "case": "%s", "faults": 0, "inputs": %s, "passed": %s}\n' \
            "$t" "$runs" "$ok" >>"$dir/results.jsonl"
    done
    return $status
}

# ---- sanitizer reports -------------------------------------------------------------

# sanitizer_report LOGDIR: prints every report found there; fails on those
# whose stack goes through ddshim (libddshim.so, its sources, the test
# helpers, or the local agent); the rest (inside uninstrumented programs' own
# code) are listed.
sanitizer_report() {
    d=$1
    ours=0 theirs=0
    for f in "$d"/*; do
        [ -f "$f" ] || continue
        if grep -qE 'libddshim\.so|core/[a-z_]+\.c|hooks/[a-z_]+\.c|preload/[a-z_]+\.c|tests/helpers/|scripts/agent/' "$f"; then
            ours=$((ours + 1))
            echo "--- $f (involves ddshim)"
            head -60 "$f"
        else
            theirs=$((theirs + 1))
            echo "--- $f (outside ddshim): $(grep -m1 -E 'ERROR|WARNING' "$f")"
        fi
    done
    echo "sanitizer reports: $ours involving ddshim, $theirs elsewhere"
    [ "$ours" -eq 0 ]
}

# ---- the table ------------------------------------------------------------------------

table() {
    "$PY" - "$1" <<'EOF'
import json, sys
rows, order = {}, []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    try:
        d = json.loads(line)
    except ValueError:
        continue
    g = d.get("group") or d.get("suite") or "?"
    if g not in rows:
        rows[g] = [0, 0, 0, 0, []]
        order.append(g)
    r = rows[g]
    r[0] += 1
    r[1] += int(d.get("faults") or 0)
    r[2] += int(d.get("inputs") or 0)
    if not d.get("passed"):
        r[3] += 1
        r[4].append(d.get("case", "?"))
w = max([len(g) for g in order] + [5])
head = "%-*s %7s %9s %16s %16s" % (w, "group", "cases", "failures", "faults injected", "inputs tried")
print(head)
print("-" * len(head))
tot = [0, 0, 0, 0]
for g in order:
    c, f, i, x, _ = rows[g]
    print("%-*s %7d %9d %16d %16d" % (w, g, c, x, f, i))
    tot = [tot[0] + c, tot[1] + f, tot[2] + i, tot[3] + x]
print("-" * len(head))
print("%-*s %7d %9d %16d %16d" % (w, "total", tot[0], tot[3], tot[1], tot[2]))
failed = [(g, n) for g in order for n in rows[g][4]]
if failed:
    print("\nfailed cases:")
    for g, n in failed:
        print("  %s: %s" % (g, n))
EOF
}

case "${1:-}" in
    --fuzz) shift; fuzz "$@"; exit $? ;;
    --sanitizer-report) shift; sanitizer_report "$1"; exit $? ;;
    --table) shift; table "$1"; exit 0 ;;
    "") ;;
    *) echo "usage: reliability.sh [--fuzz DIR SECONDS TARGET... | --sanitizer-report LOGDIR | --table LOG]" >&2; exit 2 ;;
esac

# ---- everything -------------------------------------------------------------------------

mkdir -p "$OUT"
LOG=$OUT/cases.jsonl
: >"$LOG"
export DDSHIM_RELIABILITY_LOG="$LOG"
START=$(date +%s)

say "tests/reliability, slow cases included"
timeout -k 20 660 "$PY" -m pytest -q -p no:cacheprovider tests/reliability \
    --junitxml="$OUT/reliability.xml" 2>&1 | tail -25
[ -s "$LOG" ] || record reliability reliability "pytest run" 0 0 0

# Sanitizer builds: unit tests (core/ instrumented), then the suites if the
# test fixtures can be pointed at another build tree.
for san in address thread; do
    b=build-$( [ $san = address ] && echo asan || echo tsan )
    say "SANITIZE=$san ($b): build and unit tests"
    if timeout -k 10 600 $MAKE -s -j2 SANITIZE=$san BUILD=$b all >"$OUT/$b-build.log" 2>&1 &&
       timeout -k 10 300 $MAKE -s SANITIZE=$san BUILD=$b unit >"$OUT/$b-unit.log" 2>&1; then
        n=$(grep -c '^\[       OK \]' "$OUT/$b-unit.log")
        echo "unit tests: $n passed"
        record sanitizer sanitizers "$san: unit tests" 0 "$n" 1
    else
        echo "FAILED; see $OUT/$b-build.log, $OUT/$b-unit.log"
        tail -20 "$OUT/$b-unit.log" 2>/dev/null
        record sanitizer sanitizers "$san: unit tests" 0 0 0
        continue
    fi
    if grep -q DDSHIM_BUILD tests/integration/conftest.py; then
        say "SANITIZE=$san: integration and reliability suites against $b"
        rm -rf "$b/sanitizer-logs"
        mkdir -p "$b/sanitizer-logs"
        # Left out here, each for a reason outside ddshim: nginx and
        # setuid/AT_SECURE programs (the loader refuses to preload a
        # sanitizer runtime into a secure process); forking a multithreaded
        # program (the sanitizers' allocators are not fork-safe: the child
        # hangs in its first malloc, in SizeClassAllocator64::GetFromAllocator,
        # on a lock another thread held at the fork); bounds on elapsed time
        # (sanitizers are 2-10x slower); a count of the process's threads
        # (TSan adds one); jemalloc preloaded next to the sanitizer's own
        # allocator. Tests that trace curl, psql or pgbench skip themselves
        # (tests/integration/conftest.py: those hang in glibc's setlocale
        # lock under a sanitizer runtime, ddshim or not).
        out=$(DDSHIM_RELIABILITY_LOG= PYTEST_ADDOPTS="-rsf -k 'not nginx and not setuid and not at_secure and not fork_while_spans_flow and not fork_during_lazy_init and not hanging_agent_is_bounded and not disabled_does_nothing and not jemalloc'" \
              timeout -k 20 900 $MAKE -s SANITIZE=$san BUILD=$b integration 2>&1)
        rc=$?
        echo "$out" >"$OUT/$b-integration.log" # whole, for a failure's traceback
        echo "$out" | grep -E 'passed|failed|error|^SKIPPED' | tail -12
        [ $rc -eq 0 ] || echo "$out" | grep -E '^FAILED|^ERROR' | sed 's/^/  /'
        [ $rc -eq 0 ] || echo "(whole output: $OUT/$b-integration.log)"
        npass=$(echo "$out" | sed -n 's/.* \([0-9][0-9]*\) passed.*/\1/p' | awk '{s+=$1} END {print s+0}')
        record sanitizer sanitizers "$san: integration + reliability suites" 0 "$npass" \
            $([ $rc -eq 0 ] && echo 1 || echo 0)
        if sanitizer_report "$b/sanitizer-logs" >"$OUT/$b-reports.txt" 2>&1; then ok=1; else ok=0; fi
        tail -1 "$OUT/$b-reports.txt"
        record sanitizer sanitizers "$san: no report in ddshim" 0 0 $ok
    else
        echo "(suites not run against $b: tests/integration/conftest.py does not honour DDSHIM_BUILD yet)"
    fi
done

say "valgrind memcheck: traced curl and traced pgbench"
"$PY" - "$OUT" "$LOG" <<'EOF'
import json, os, subprocess, sys, tempfile
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "integration"))
import conftest as it  # the integration fixtures' classes, used directly
out, log = sys.argv[1], sys.argv[2]
supp = os.path.join(os.getcwd(), "tests", "valgrind.supp")
VG = ["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
      "--errors-for-leak-kinds=definite", "--error-exitcode=99", "--num-callers=40",
      "--child-silent-after-fork=yes", "--suppressions=" + supp]

def record(case, inputs, passed):
    with open(log, "a") as f:
        f.write(json.dumps({"suite": "valgrind", "group": "valgrind", "case": case, "faults": 0,
                            "inputs": inputs, "passed": passed}) + "\n")

def vg_run(name, cmd, env, timeout=600):
    xml = os.path.join(out, "valgrind-%s.log" % name)
    env = dict(env, LD_PRELOAD=it.LIB)
    r = subprocess.run(VG + ["--log-file=" + xml] + cmd, env=env, capture_output=True, timeout=timeout)
    text = open(xml).read()
    errs = [l for l in text.splitlines() if "ERROR SUMMARY" in l]
    print("%s: exit %d, %s" % (name, r.returncode, errs[-1].split("== ")[-1] if errs else "?"))
    if r.returncode != 0:
        print(text[-4000:])
    return r

tmp = tempfile.mkdtemp(prefix="ddshim-vg-")
agent = it.Agent(tmp)
rec = it.Recorder()
try:
    env = it.traced_env(agent, tmp, DDSHIM_EXIT_TIMEOUT_MS=3000)
    urls = [rec.url + "/vg/%d?token=x" % i for i in range(5)]
    r = vg_run("curl", ["curl", "-sS", "-o", "/dev/null"] + urls, env)
    spans = agent.wait_spans(5, "http.client.request", timeout=15)
    ok = r.returncode == 0 and len(rec.requests) == 5 and len(spans) == 5
    print("curl: %d requests, %d spans" % (len(rec.requests), len(spans)))
    record("curl (5 requests, keep-alive)", 5, ok)
finally:
    rec.stop()
try:
    import pgserver
    pg = pgserver.PgServer()
    try:
        base = pg.client_env(it.traced_env())
        subprocess.run(["pgbench", "-i", "-s", "1", "-q"], env=base, capture_output=True, check=True,
                       timeout=120)
        env = pg.client_env(it.traced_env(agent, tmp, DD_SERVICE="pgbench", DDSHIM_EXIT_TIMEOUT_MS=3000),
                            tcp=True)
        before = len(agent.spans("postgresql.query"))
        # The binary itself: /usr/bin/pgbench may be a wrapper that execs it.
        real = os.path.join(pg.bindir, "pgbench")
        r = vg_run("pgbench", [real if os.path.exists(real) else "pgbench", "-M", "extended", "-c", "2",
                               "-j", "2", "-t", "20"], env)
        agent.wait_spans(before + 2 * 20 * 7, "postgresql.query", timeout=20)
        n = len(agent.spans("postgresql.query")) - before
        print("pgbench: %d postgresql.query spans" % n)
        record("pgbench (2 clients x 20 transactions, extended protocol)", 40, r.returncode == 0 and n >= 280)
    finally:
        pg.stop()
except Exception as e:  # no PostgreSQL here: say so, count it as failed
    print("pgbench under valgrind: %s" % e)
    record("pgbench (2 clients x 20 transactions, extended protocol)", 0, False)
finally:
    agent.stop()
EOF

say "fuzzing: every target, ${FUZZ_SECONDS}s each"
if timeout -k 10 $((FUZZ_SECONDS * 8 + 600)) $MAKE -s fuzz FUZZ_SECONDS="$FUZZ_SECONDS" BUILD=build; then :; fi
[ -f build/fuzz/results.jsonl ] && cat build/fuzz/results.jsonl >>"$LOG"

say "issue 7 — reliability figures ($(( $(date +%s) - START ))s)"
table "$LOG"
if grep -q '"passed": false' "$LOG"; then
    exit 1
fi
exit 0
