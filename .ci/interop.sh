#!/usr/bin/env bash
# Interop with a real mosquitto: plain, TLS, mutual TLS, credentials, packet limits, and the
# keep-alive (pings only when nothing else was sent; a frozen agent's last will).
# Installs Debian's mosquitto when missing (idempotent), then runs the #[ignore]d tests of
# tests/interop_mosquitto.rs. GPS_AGENT_MOSQUITTO=1 makes a missing mosquitto a failure
# rather than a skip, so this step can never pass without having run them.
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-mosquitto.sh

GPS_AGENT_MOSQUITTO=1 cargo test --test interop_mosquitto --test interop_keepalive -- --ignored --nocapture
