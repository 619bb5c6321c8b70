#!/usr/bin/env bash
# The platform profiles beside the platforms' own device SDKs (issue 24): installs mosquitto
# and, in a venv under target/ (idempotent), ThingsBoard's, Azure's and AWS's Python device
# SDKs from PyPI at the versions compared, then runs the #[ignore]d tests of
# tests/profile_conformance.rs (those needing mosquitto) and tests/profile_sdk.rs (with
# GPS_AGENT_SDK_PYTHON set).
set -euo pipefail
cd "$(dirname "$0")/.."

bash .ci/install-mosquitto.sh

venv="$PWD/target/sdk-venv"
wanted="tb-mqtt-client==1.13.14 azure-iot-device==2.14.0 awsiotsdk==1.31.0"
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $wanted
    echo "$wanted" > "$stamp"
fi

# The profiles' conformance cases that need mosquitto (Azure: rumqttd refuses $iothub filters).
GPS_AGENT_MOSQUITTO=1 cargo test --test profile_conformance -- --ignored --nocapture

GPS_AGENT_SDK_PYTHON="$venv/bin/python" GPS_AGENT_MOSQUITTO=1 \
    cargo test --test profile_sdk -- --ignored --nocapture --test-threads 1
