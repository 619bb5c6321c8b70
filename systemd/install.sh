#!/usr/bin/env bash
# Installs gps-agent on a gateway: binary, unit, sysusers and tmpfiles entries, and the two configuration
# templates in /usr/share/gps-agent (example.toml: every key and its default; cellular.toml:
# for a metered link), the example as /etc/gps-agent/config.toml when there is none.
# Idempotent: run it again to upgrade; an existing /etc/gps-agent/config.toml is kept.
# Usage: systemd/install.sh [path/to/gps-agent]   (default: target/release/gps-agent)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../target/release/gps-agent}"
prefix="${DESTDIR:-}"

[ -x "$bin" ] || { echo "install.sh: no executable at $bin (cargo build --release first)" >&2; exit 1; }

install -D -m 0755 "$bin" "$prefix/usr/bin/gps-agent"
install -D -m 0644 "$here/gps-agent.service" "$prefix/etc/systemd/system/gps-agent.service"
install -D -m 0644 "$here/gps-agent.sysusers" "$prefix/usr/lib/sysusers.d/gps-agent.conf"
install -D -m 0644 "$here/gps-agent.tmpfiles" "$prefix/usr/lib/tmpfiles.d/gps-agent.conf"
install -D -m 0644 "$here/../config/example.toml" "$prefix/usr/share/gps-agent/example.toml"
install -D -m 0644 "$here/../config/cellular.toml" "$prefix/usr/share/gps-agent/cellular.toml"
if [ ! -e "$prefix/etc/gps-agent/config.toml" ]; then
  install -D -m 0644 "$here/../config/example.toml" "$prefix/etc/gps-agent/config.toml"
fi

# Only on the live system (not when staging into DESTDIR for a package): the service user,
# then the configuration directory's owner and mode (tmpfiles.d, as at each boot), then
# systemd when it runs (a chroot or an image build has none).
if [ -z "$prefix" ]; then
  systemd-sysusers /usr/lib/sysusers.d/gps-agent.conf
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/gps-agent.conf
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
  /usr/bin/gps-agent check-config --config /etc/gps-agent/config.toml
  echo "installed; start with: systemctl enable --now gps-agent"
fi
