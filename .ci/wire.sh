#!/usr/bin/env bash
# Bytes per driving hour on the wire (issues 10 and 23): the real daemon against Debian's
# mosquitto over TLS, counted from the kernel's socket statistics, as a table of
# configurations (linger 60, 120, 300; first connection full or resumed) with the computed
# floor beside each. Installs mosquitto when missing, then runs benches/wire.rs; arguments go
# to the bench (`--minutes 5` for a short run; the whole half-hour tour, ~35 min, by default). GPS_AGENT_MOSQUITTO=1 makes a missing broker a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-mosquitto.sh
GPS_AGENT_MOSQUITTO=1 cargo bench --bench wire -- "$@"
