#!/usr/bin/env bash
# Interop with a real mosquitto: plain, TLS, mutual TLS, credentials, packet limits.
# Installs Debian's mosquitto when missing (idempotent), then runs the #[ignore]d tests of
# tests/interop_mosquitto.rs. GPS_AGENT_MOSQUITTO=1 makes a missing mosquitto a failure
# rather than a skip, so this step can never pass without having run them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s mosquitto >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto
fi
# The package starts a system broker on 1883 where systemd runs; the tests start their own
# on free ports and never use it.

GPS_AGENT_MOSQUITTO=1 cargo test --test interop_mosquitto -- --ignored --nocapture
