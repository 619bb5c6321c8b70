#!/usr/bin/env bash
# The platform profiles beside the platforms' own device SDKs (issue 24): installs mosquitto
# and, in venvs under target/ (idempotent), ThingsBoard's, Azure's and AWS's Python device
# SDKs and Cumulocity's device agent from PyPI at the versions compared, then runs the
# #[ignore]d tests of tests/profile_conformance.rs (those needing mosquitto) and
# tests/profile_sdk.rs (with GPS_AGENT_SDK_PYTHON and GPS_AGENT_C8YDM_PYTHON set).
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

# Cumulocity's device agent in a venv of its own, on Debian's python with its packages:
# c8ydm imports Debian's python3-apt on Debian (its README: `apt install python-apt`), and
# 1.3.7 builds paho's Client the 1.x way, which paho-mqtt 2.x refuses (TypeError: Unsupported
# callback API version), while tb-mqtt-client brings a paho 2.x under the same module name.
# Its other requirements come as declared (sense-hat, and numpy and pillow with it): at
# start it resolves its own requirements (pkg_resources) for the version it reports (122).
if ! dpkg -s python3-apt python3-venv >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-apt python3-venv
fi
c8ydm_venv="$PWD/target/sdk-venv-c8ydm"
c8ydm_wanted="c8ydm==1.3.7 paho-mqtt==1.6.1"
c8ydm_stamp="$c8ydm_venv/.installed"
if [ ! -f "$c8ydm_stamp" ] || [ "$(cat "$c8ydm_stamp")" != "$c8ydm_wanted" ]; then
    rm -rf "$c8ydm_venv"
    /usr/bin/python3 -m venv --system-site-packages "$c8ydm_venv"
    # shellcheck disable=SC2086
    "$c8ydm_venv/bin/pip" install --quiet --disable-pip-version-check $c8ydm_wanted
    echo "$c8ydm_wanted" > "$c8ydm_stamp"
fi

# The profiles' conformance cases that need mosquitto (Azure: rumqttd refuses $iothub filters).
GPS_AGENT_MOSQUITTO=1 cargo test --test profile_conformance -- --ignored --nocapture

GPS_AGENT_SDK_PYTHON="$venv/bin/python" GPS_AGENT_C8YDM_PYTHON="$c8ydm_venv/bin/python" \
    GPS_AGENT_MOSQUITTO=1 \
    cargo test --test profile_sdk -- --ignored --nocapture --test-threads 1
