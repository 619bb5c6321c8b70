#!/usr/bin/env bash
# Installs Debian's rabbitmq-server when missing (idempotent), for .ci/cluster.sh, which runs
# its own nodes as the calling user from /usr/lib/rabbitmq/bin (Debian's /usr/sbin wrappers
# switch to user rabbitmq and its /var/lib home). The package enables a system node
# (rabbit@host on 5672 and 25672) and starts it where the init system lets it: on every run
# that node is stopped and kept from starting at boot, so no system broker holds ports or
# competes for the CPU beside the test cluster.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! dpkg -s rabbitmq-server >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server
fi

# `systemctl disable` works without a running systemd too, and takes the SysV links along.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet rabbitmq-server 2>/dev/null; then
    $SUDO systemctl disable --quiet rabbitmq-server
fi
if [ -d /run/systemd/system ]; then
    if systemctl is-active --quiet rabbitmq-server; then
        $SUDO systemctl stop rabbitmq-server
    fi
elif [ -s /var/run/rabbitmq/pid ]; then
    # No systemd (a container, sysvinit): a node the init script started says so in its pid
    # file. The epmd it spawned (port 4369) goes too; `epmd -kill` refuses while any other
    # Erlang node is registered with it.
    $SUDO /etc/init.d/rabbitmq-server stop
    epmd -kill >/dev/null 2>&1 || true
fi
echo "rabbitmq-server $(dpkg-query -W -f '${Version}' rabbitmq-server): installed; the system node is disabled and not running"
