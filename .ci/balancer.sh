#!/usr/bin/env bash
# A fleet behind a load balancer (issue 20): 100 agents, the real binary, each its own
# process, state directory and health port, behind the harness's balancer (tests/support/
# front.rs) before rumqttd; the broker stops for a minute, then for ten. Prints the figures
# of the README's outage table. CI runs it four times faster (GPS_AGENT_BALANCER_SCALE=0.25:
# outages of 15 s and 150 s, probe_interval_s and probe_max_s shrunk alike, about 3.5
# minutes); GPS_AGENT_BALANCER_SCALE=1 runs the real durations (about 13 minutes). First, one
# agent through the issue's own minute-long outage (about 2 minutes, never scaled).
set -euo pipefail
cd "$(dirname "$0")/.."
export GPS_AGENT_BALANCER_SCALE="${GPS_AGENT_BALANCER_SCALE:-0.25}"
export GPS_AGENT_FLEET="${GPS_AGENT_FLEET:-100}"
# 100 agents keep 100 connections, logs and health sockets each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# One agent, the issue's own minute (not scaled): about 2 minutes.
cargo test --test uplink_balancer behind_a_balancer_a_minute -- --ignored --nocapture
cargo test --test uplink_balancer a_fleet_behind_a_balancer -- --ignored --nocapture
