#!/usr/bin/env bash
# make demo: ddshim end to end on this machine, no Datadog account needed.
# Starts the local agent (it prints each trace as a waterfall), two small
# HTTP services traced by ddshim-run (frontend calls backend), and a traced
# curl that calls the frontend; then prints what the agent received.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=$root/build
py=/usr/bin/python3
dir=$(mktemp -d "${TMPDIR:-/tmp}/ddshim-demo.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

for tool in curl "$py"; do
    command -v "$tool" >/dev/null || { echo "demo: '$tool' is needed (apt-get install curl python3)" >&2; exit 1; }
done

echo "== ddshim demo (scratch dir: $dir)"
"$build/ddshim-agent" --port 0 --ready-file "$dir/agent.port" --out "$dir/traces.jsonl" &
agent_pid=$!
for _ in $(seq 100); do [ -s "$dir/agent.port" ] && break; sleep 0.05; done
agent_url="http://127.0.0.1:$(cat "$dir/agent.port")"
echo "== local agent listening on $agent_url"

export DD_TRACE_AGENT_URL=$agent_url DD_ENV=demo DDSHIM_FLUSH_INTERVAL_MS=200
export DD_TRACE_LOG_FILE=$dir/ddshim.log

start() { # name: starts a traced service, sets $url
    DD_SERVICE=$1 "$here/ddshim-run" "$py" "$root/tests/integration/servers/pyserver.py" "$dir/$1.port" \
        >"$dir/$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$dir/$1.port" ] && break; sleep 0.05; done
    url="http://127.0.0.1:$(cat "$dir/$1.port")"
}
start backend; backend=$url
start frontend; frontend=$url
echo "== backend  ($backend) and frontend ($frontend) run under ddshim-run"
echo

run_curl() {
    echo "\$ ddshim-run curl $*"
    DD_SERVICE=curl "$here/ddshim-run" curl -sS -o /dev/null -w "   -> HTTP %{http_code}\n" "$@" || true
}
run_curl "$frontend/call?url=$backend/&url=$backend/status/204"
run_curl "$frontend/status/503"
run_curl "$frontend/orders/8f14e45fceea167a5a36dedd4bea2543?token=s3cret"
echo
echo "== the services shut down; the agent prints every trace it received:"
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
sleep 1
kill -TERM "$agent_pid"; wait "$agent_pid" 2>/dev/null || true
echo
echo "== $(wc -l < "$dir/traces.jsonl") chunks received; ddshim's own log: $(wc -l < "$dir/ddshim.log") lines (startup configuration, warnings)"
