#!/usr/bin/env bash
# Bytes per driving hour on the wire (issue 10): the real daemon against Debian's mosquitto
# over TLS, counted from the kernel's socket statistics. Installs mosquitto when missing,
# then runs benches/wire.rs; arguments go to the bench (`--minutes 5` for a short run; the
# whole half-hour tour by default). GPS_AGENT_MOSQUITTO=1 makes a missing broker a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-mosquitto.sh
GPS_AGENT_MOSQUITTO=1 cargo bench --bench wire -- "$@"
