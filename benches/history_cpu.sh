#!/usr/bin/env bash
# What the local history ([history]) costs the ingest thread, by hand (not part of cargo test):
#   HISTORY_RATE=10 HISTORY_SECS=120 HISTORY_RUNS=4 bash benches/history_cpu.sh
#
# Two agents (the release build as packaged) read the same simulated receiver at once (the
# footprint bench's feed writes one drive to two pseudo-terminals), one with the history off
# (keep_days = 0), one with it on (the default); no broker, so both queue every fix alike.
# After a warm-up, each agent's ingest thread's CPU time is read from
# /proc/PID/task/TID/schedstat over HISTORY_SECS. The feed writes to one terminal before the
# other, and the reader written first spends more (about 8% here), so the runs alternate
# which agent that is; with the ratio on/off of each run, the history's own factor is the
# geometric mean of the two orders' means (the order's factor cancels).
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${HISTORY_RATE:-10}
secs=${HISTORY_SECS:-120}
runs=${HISTORY_RUNS:-4}
warmup=10

cargo build --release --quiet --no-default-features --bin gps-agent
cargo build --release --quiet --no-default-features --example footprint_feed
agent_bin=$PWD/target/release/gps-agent
feed_bin=$PWD/target/release/examples/footprint_feed

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The ingest thread's CPU time so far, nanoseconds.
ingest_ns() {
  local t
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm")" = ingest ]; then
      awk '{ print $1 }' "$t/schedstat"
      return
    fi
  done
  echo "no ingest thread in $1" >&2
  exit 1
}

# One run: prints the ratio on/off of the two ingest threads' CPU. $1: which agent's
# terminal the feed writes first.
run() {
  local first=$1 second dir=$work/run$RANDOM
  mkdir "$dir"
  second=$([ "$first" = on ] && echo off || echo on)
  "$feed_bin" pty --rate "$rate" --secs $((warmup + secs + 20)) "$dir/$first.tty" "$dir/$second.tty" \
    > "$dir/feed.out" 2>&1 &
  local feed=$!
  pids+=($feed)
  until grep -q ready "$dir/feed.out" 2>/dev/null; do sleep 0.1; done
  local n keep port=$((20000 + RANDOM % 40000))
  declare -A pid before
  for n in off on; do
    keep=7
    if [ "$n" = off ]; then keep=0; fi
    port=$((port + 1))
    cat > "$dir/$n.toml" <<EOF
[device]
id = "history-cpu-$n"

[gnss]
source = "serial"
path = "$dir/$n.tty"
baud = 115200

[buffer]
path = "$dir/$n.db"

[history]
keep_days = $keep

[mqtt]
url = "mqtt://127.0.0.1:1"

[health]
listen = "127.0.0.1:$port"
EOF
    "$agent_bin" run --config "$dir/$n.toml" > "$dir/$n.log" 2>&1 &
    pid[$n]=$!
    pids+=($!)
  done
  sleep "$warmup"
  for n in off on; do before[$n]=$(ingest_ns "${pid[$n]}"); done
  sleep "$secs"
  local off on
  off=$(($(ingest_ns "${pid[off]}") - before[off]))
  on=$(($(ingest_ns "${pid[on]}") - before[on]))
  for n in off on; do kill "${pid[$n]}"; wait "${pid[$n]}" 2>/dev/null || true; done
  kill "$feed"
  wait "$feed" 2>/dev/null || true
  awk -v f="$first" -v a="$off" -v b="$on" -v s="$secs" -v r="$rate" 'BEGIN {
    printf "  %s first: ingest off %.3f ms/s, on %.3f ms/s (%.1f / %.1f us a fix), on/off %.3f\n",
      f, a / 1e6 / s, b / 1e6 / s, a / 1e3 / (s * r), b / 1e3 / (s * r), b / a > "/dev/stderr"
    printf "%s %.6f %.6f\n", f, b / a, (b - a) / 1e6 / s }'
}

echo "== the local history's CPU on the ingest thread, $rate Hz, $runs runs of ${secs} s"
for i in $(seq "$runs"); do
  if [ $((i % 2)) = 1 ]; then run off; else run on; fi >> "$work/results"
done
awk '
  { n[$1]++; ratio[$1] += $2 }
  END {
    if (!n["off"] || !n["on"]) { print "needs runs of both orders (HISTORY_RUNS >= 2)"; exit }
    h = sqrt((ratio["off"] / n["off"]) * (ratio["on"] / n["on"]))
    printf "history on/off, the order cancelled: %.3f (%+.1f%% of the ingest thread)\n", h, (h - 1) * 100
  }' "$work/results"
