#!/usr/bin/env bash
# Footprint of an idle daemon (BENCHMARKS.md, "Footprint"): resident memory
# and CPU time over 60 s of `clawcut-worker run` on a fresh SQLite database
# with the HTTP listener on and one provider configured, no jobs.
#
#   cargo build --release -p clawcut-worker && bash scripts/footprint.sh [SECONDS]
set -euo pipefail
secs="${1:-60}"
bin="$(cd "$(dirname "$0")/.." && pwd)/target/release/clawcut-worker"
dir="$(mktemp -d)"
trap 'kill -TERM "${pid:-0}" 2>/dev/null || true; rm -rf "$dir"' EXIT
port=$(( 20000 + RANDOM % 20000 ))
cat > "$dir/config.toml" <<CFG
[database]
url = "sqlite://$dir/clawcut.db"
[media]
dir = "$dir/media"
[http]
listen = "127.0.0.1:$port"
[providers.openai]
kind = "openai"
base_url = "http://127.0.0.1:9"
api_key_env = "FOOTPRINT_KEY"
CFG
export FOOTPRINT_KEY=unused
"$bin" --config "$dir/config.toml" migrate >/dev/null
"$bin" --config "$dir/config.toml" run >"$dir/run.log" 2>&1 &
pid=$!
# CPU of every thread, in ns (schedstat's first field).
cpu() { local t n=0; for t in /proc/"$pid"/task/*; do n=$(( n + $(cut -d' ' -f1 "$t/schedstat") )); done; echo "$n"; }
sleep 5 # startup (schema check, first claim) is not idle
a=$(cpu)
sleep "$secs"
b=$(cpu)
rss=$(awk '/VmRSS/ {print $2}' /proc/"$pid"/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/"$pid"/status)
echo "idle ${secs}s: cpu $(( (b - a) / 1000000 )).$(( (b - a) / 100000 % 10 )) ms, rss $(( rss / 1024 )).$(( rss * 10 / 1024 % 10 )) MiB (peak $(( hwm / 1024 )) MiB), threads $(awk '/Threads/ {print $2}' /proc/"$pid"/status)"
