#!/usr/bin/env bash
# Footprint bench: gps-agent beside gpsd on the same receiver stream, as a fleet operator
# would compare them on a gateway. Run by hand (not part of `cargo test`):
#
#   bash benches/footprint.sh              # 30 s side by side, then the drain scenario
#   FOOTPRINT_SECS=120 bash benches/footprint.sh
#   FOOTPRINT_SCENARIOS=side FOOTPRINT_AGENT=/path/to/gps-agent bash benches/footprint.sh
#
# 1. Side by side: the project's simulator writes one clean 10 Hz drive to two
#    pseudo-terminals at once (benches/footprint/feed.rs). gpsd 3.22 (Debian's) reads one,
#    with one watching client (`gpspipe -w`); the agent (release build as packaged, without
#    the demo) reads the other with its SQLite buffer and MQTT to a local mosquitto. After
#    FOOTPRINT_WARMUP s (5) both are measured over FOOTPRINT_SECS s (30): CPU as % of one
#    core from utime+stime in /proc/PID/stat (all threads; clock ticks, so a longer run
#    resolves smaller figures), where perf can count also task-clock and context switches
#    over the same window, and VmHWM (peak resident set) from /proc/PID/status.
# 2. Drain: a day at 1 Hz (FOOTPRINT_BACKLOG fixes, 86,400) is buffered by an agent whose
#    broker is away; a fresh agent then starts on that buffer with the broker up and the 10 Hz
#    drive still coming in. Measured until the backlog is gone: its VmHWM, CPU, and time.
#
# Targets (issue 12): agent CPU <= gpsd's; agent VmHWM <= 8 MiB at 10 Hz with MQTT up and
# <= 12 MiB while draining. Installs gpsd, gpsd-clients and mosquitto when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FOOTPRINT_SECS:-30}
warmup=${FOOTPRINT_WARMUP:-5}
backlog=${FOOTPRINT_BACKLOG:-86400}
scenarios=${FOOTPRINT_SCENARIOS:-side drain}

# --- tools, idempotently -------------------------------------------------------------------
missing=()
for p in gpsd gpsd-clients mosquitto curl jq; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Two builds: an example brings in the dev-dependencies' features, and the agent measured must
# be the binary as packaged.
cargo build --release --quiet --no-default-features --bin gps-agent
cargo build --release --quiet --no-default-features --example footprint_feed
# FOOTPRINT_AGENT: another build of the agent to measure (e.g. to compare two commits).
agent_bin=${FOOTPRINT_AGENT:-$PWD/target/release/gps-agent}
feed_bin=$PWD/target/release/examples/footprint_feed

work=$(mktemp -d)
pids=()
rm_work=1
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rm_work" = 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

# A loopback port nothing listens on.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

# utime + stime of a process and all its threads, in clock ticks (/proc/PID/stat fields 14, 15;
# the command name in field 2 is skipped by cutting at its closing parenthesis).
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
now_s() { date +%s.%N; }
hz=$(getconf CLK_TCK)

# % of one core from two tick counts over a wall time.
cpu_pct() { awk -v t="$1" -v hz="$hz" -v w="$2" 'BEGIN { printf "%.3f", 100 * t / hz / w }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# Stop with a message and the tail of every log, keeping the work directory.
fail() {
  echo "footprint: $*" >&2
  for f in "$work"/*.log "$work"/*.out; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -n 5 "$f" >&2; }
  done
  rm_work=0
  exit 1
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      fail "timed out waiting for $what"
    fi
    sleep 0.2
  done
}

# /health answers 503 while the agent is not healthy: any answer will do.
health() { curl -sS --max-time 2 "http://127.0.0.1:$1/health"; }
depth() { health "$1" | jq -e '.components.buffer.depth'; }
depth_is() { [ "$(depth "$1")" = "$2" ]; }
# Fixes acknowledged by the broker since the agent started (the latency histogram's count).
acked_fixes() {
  curl -sS --max-time 2 "http://127.0.0.1:$1/metrics" |
    awk '/^gps_agent_fix_to_ack_latency_seconds_count/ { print $2 }'
}
acked_at_least() { [ "$(acked_fixes "$1")" -ge "$2" ]; }

# mosquitto on a free loopback port, with nothing kept on disk.
mqtt_port=$(free_port)
{
  echo "listener $mqtt_port 127.0.0.1"
  echo "allow_anonymous true"
  echo "persistence false"
  if [ "$(id -u)" -eq 0 ]; then echo "user root"; fi
} > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_for 10 "mosquitto" bash -c "exec 3<>/dev/tcp/127.0.0.1/$mqtt_port"

# agent_config NAME GNSS_SECTION MQTT_URL HEALTH_PORT: a production-like configuration (the
# defaults, apart from paths and ports).
agent_config() {
  cat > "$work/$1.toml" <<EOF
[device]
id = "footprint-$1"

$2

[buffer]
path = "$work/$1.db"

[mqtt]
url = "$3"

[health]
listen = "127.0.0.1:$4"
EOF
}

# Starts the feeder for the given links; returns once the links exist.
start_feed() { # start_feed SECONDS LINK...
  local s=$1
  shift
  "$feed_bin" pty --rate 10 --secs "$s" "$@" > "$work/feed.out" 2>&1 &
  pids+=($!)
  wait_for 10 "the simulated receiver" grep -q ready "$work/feed.out"
}

side_by_side() {
  echo "== side by side: 10 Hz for ${secs} s (after ${warmup} s warm-up)"
  start_feed $((warmup + secs + 30)) "$work/gpsd.tty" "$work/agent.tty"

  local gpsd_port health_port
  gpsd_port=$(free_port)
  gpsd -N -b -n -s 115200 -S "$gpsd_port" -F "$work/gpsd.sock" "$work/gpsd.tty" \
    > "$work/gpsd.log" 2>&1 &
  local gpsd_pid=$!
  pids+=($gpsd_pid)
  wait_for 10 "gpsd" bash -c "exec 3<>/dev/tcp/127.0.0.1/$gpsd_port"
  gpspipe -w "127.0.0.1:$gpsd_port" > "$work/gpspipe.out" 2>&1 &
  pids+=($!)

  health_port=$(free_port)
  agent_config side "[gnss]
source = \"serial\"
path = \"$work/agent.tty\"
baud = 115200" "mqtt://127.0.0.1:$mqtt_port" "$health_port"
  "$agent_bin" run --config "$work/side.toml" > "$work/side.log" 2>&1 &
  local agent_pid=$!
  pids+=($agent_pid)
  wait_for 10 "the agent's health endpoint" health "$health_port"

  sleep "$warmup"
  local a0 g0 t0 a1 g1 t1 tpv0 tpv1 acked0 acked1
  a0=$(ticks $agent_pid); g0=$(ticks $gpsd_pid); t0=$(now_s)
  tpv0=$(grep -c '"class":"TPV"' "$work/gpspipe.out" || true)
  acked0=$(health "$health_port" | jq '.components.buffer.acked_seq // 0')
  # Where perf can count (software events need no privileges beyond the default), the same
  # window to the microsecond (task-clock) and the context switches (wakeups) of each.
  local perf_pids=()
  if perf stat -e task-clock true >/dev/null 2>&1; then
    for who in agent:$agent_pid gpsd:$gpsd_pid; do
      perf stat -x, -e task-clock,context-switches -p "${who#*:}" -o "$work/perf.${who%%:*}" \
        -- sleep "$secs" &
      perf_pids+=($!)
    done
  fi
  sleep "$secs"
  for p in "${perf_pids[@]}"; do wait "$p" || true; done
  a1=$(ticks $agent_pid); g1=$(ticks $gpsd_pid); t1=$(now_s)
  tpv1=$(grep -c '"class":"TPV"' "$work/gpspipe.out" || true)
  acked1=$(health "$health_port" | jq '.components.buffer.acked_seq // 0')
  local wall a_hwm g_hwm
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  a_hwm=$(hwm_kib $agent_pid); g_hwm=$(hwm_kib $gpsd_pid)
  local a_cpu g_cpu
  a_cpu=$(cpu_pct $((a1 - a0)) "$wall"); g_cpu=$(cpu_pct $((g1 - g0)) "$wall")

  printf '%-10s %14s %10s %12s %s\n' "" "CPU % of core" "ticks" "VmHWM MiB" "work done in the window"
  printf '%-10s %14s %10s %12s %s\n' gpsd "$g_cpu" $((g1 - g0)) "$(mib "$g_hwm")" \
    "$((tpv1 - tpv0)) TPV reports to its client"
  printf '%-10s %14s %10s %12s %s\n' gps-agent "$a_cpu" $((a1 - a0)) "$(mib "$a_hwm")" \
    "$((acked1 - acked0)) fixes acknowledged by mosquitto"
  awk -v a="$((a1 - a0))" -v g="$((g1 - g0))" -v ah="$a_hwm" -v gh="$g_hwm" 'BEGIN {
    if (g > 0) printf "agent / gpsd: CPU %.2fx", a / g; else printf "agent / gpsd: CPU (gpsd 0 ticks)";
    printf ", VmHWM %.2fx\n", ah / gh }'
  if [ ${#perf_pids[@]} -gt 0 ]; then
    for who in gpsd agent; do
      awk -F, -v who="$who" -v w="$secs" '
        $3 == "task-clock" { ms = $1 } $3 == "context-switches" { cs = $1 }
        END { printf "perf, %s: task-clock %.1f ms = %.3f%% of a core; %d context switches (%.1f/s)\n",
              who, ms, ms / 10 / w, cs, cs / w }' "$work/perf.$who"
    done
  fi
  echo "targets: agent CPU <= gpsd's; agent VmHWM <= 8 MiB"
  if [ $((tpv1 - tpv0)) -lt $((secs * 5)) ] || [ $((acked1 - acked0)) -lt $((secs * 5)) ]; then
    fail "one of them did not keep up with the stream (see above)"
  fi
  for p in $agent_pid $gpsd_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

drain() {
  echo "== drain: a day's backlog (${backlog} fixes at 1 Hz) with the broker up and 10 Hz coming in"
  "$feed_bin" log --rate 1 --epochs "$backlog" "$work/day.nmea" > /dev/null
  : > "$work/empty.toml"
  local expected
  expected=$("$agent_bin" parse --config "$work/empty.toml" "$work/day.nmea" 2>/dev/null | wc -l)

  # Fill: the agent replays the day with its broker away (a port nothing listens on).
  local fill_port
  fill_port=$(free_port)
  agent_config drain "[gnss]
source = \"file\"
path = \"$work/day.nmea\"
pace = \"fast\"" "mqtt://127.0.0.1:$(free_port)" "$fill_port"
  "$agent_bin" run --config "$work/drain.toml" > "$work/fill.log" 2>&1 &
  local fill_pid=$!
  pids+=($fill_pid)
  wait_for 10 "the filling agent" health "$fill_port"
  wait_for 600 "$expected fixes buffered" depth_is "$fill_port" "$expected"
  kill -TERM $fill_pid
  wait $fill_pid || true

  # Drain: the same buffer, the broker up, the drive coming in at 10 Hz.
  start_feed 3600 "$work/drain.tty"
  local health_port
  health_port=$(free_port)
  agent_config drain "[gnss]
source = \"serial\"
path = \"$work/drain.tty\"
baud = 115200" "mqtt://127.0.0.1:$mqtt_port" "$health_port"
  local t0 t1
  t0=$(now_s)
  "$agent_bin" run --config "$work/drain.toml" > "$work/drain.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  wait_for 10 "the draining agent" health "$health_port"
  # Drained: the day acknowledged (live fixes go out besides, ahead of the backlog).
  wait_for 600 "the backlog to drain" acked_at_least "$health_port" "$expected"
  t1=$(now_s)
  local wall t
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  t=$(ticks $pid)
  printf 'gps-agent: %s fixes drained in %.1f s (from process start), CPU %s s, VmHWM %s MiB (target <= 12 MiB)\n' \
    "$expected" "$wall" "$(awk -v t="$t" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')" "$(mib "$(hwm_kib $pid)")"
  kill -TERM $pid
  wait $pid || true
}

for s in $scenarios; do
  case $s in
    side) side_by_side ;;
    drain) drain ;;
    *) echo "footprint: unknown scenario $s (side, drain)" >&2; exit 2 ;;
  esac
done
