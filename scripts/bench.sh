#!/usr/bin/env bash
# make bench: what tracing costs, as ratios against the untraced run.
# Builds the benchmark programs of tests/bench/ into build/bench/ (against the
# core objects `make all` built), then runs tests/bench/bench.py, which runs
# every workload untraced and traced, alternating, prints the table and
# writes BENCHMARKS.md. BENCH_QUICK=1: about a minute. Never fails on a
# figure; CI does not run it. --build-only: build the programs and stop.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=$root/build
out=$build/bench
cc=${CC:-gcc}
cflags="-O2 -g -Wall -Wextra"
mkdir -p "$out"
cd "$root" || exit 1

build_one() { # name, command...: a failed build only skips that benchmark
    local name=$1
    shift
    if ! "$@" 2>"$out/$name.build.log"; then
        echo "bench: could not build $name (see $out/$name.build.log); skipped" >&2
        rm -f "$out/$name"
    fi
}

core_obj=()
for f in core/*.c; do core_obj+=("$build/${f%.c}.o"); done

build_one redis_loop $cc $cflags -o "$out/redis_loop" tests/bench/redis_loop.c -lhiredis
build_one http_client_loop $cc $cflags -pthread -o "$out/http_client_loop" tests/bench/http_client_loop.c
build_one passthrough $cc $cflags -pthread -o "$out/passthrough" tests/bench/passthrough.c -ldl
build_one fake_io.so $cc $cflags -shared -fPIC -o "$out/fake_io.so" tests/bench/fake_io.c -ldl
build_one sink_agent $cc $cflags -pthread -o "$out/sink_agent" tests/bench/sink_agent.c
build_one span_cost $cc $cflags -std=gnu11 -pthread -I. -Icore -o "$out/span_cost" \
    tests/bench/span_cost.c "${core_obj[@]}" -Wl,-Bstatic -lmsgpackc -lpcre2-8 -Wl,-Bdynamic \
    -ljansson -ldl -lpthread

[ "${1:-}" = "--build-only" ] && exit 0
exec /usr/bin/python3 "$root/tests/bench/bench.py" "$@"
