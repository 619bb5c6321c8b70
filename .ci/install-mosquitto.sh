#!/usr/bin/env bash
# Installs Debian's mosquitto and its clients when missing (idempotent): the interop tests,
# the wire bench and the live install check run against it. The package starts a system
# broker on 1883 where systemd runs; the tests and the bench start their own on free ports
# and never use it.
set -euo pipefail
if ! dpkg -s mosquitto mosquitto-clients >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto mosquitto-clients
fi
