#!/usr/bin/env bash
# Cross-compiles gps-agent for the gateways' ARM cores and packages a .deb per target.
#   cross/build.sh [aarch64|armv7|all]     (default: all)
# Installs what it needs, idempotently: Debian's gcc cross compilers (the bundled SQLite is C)
# and the rustup targets. Output: target/<triple>/release/gps-agent and
# target/debian/gps-agent_<version>_<arch>.deb. The demo feature is left out of packages.
set -euo pipefail
cd "$(dirname "$0")/.."

which_targets="${1:-all}"
declare -A TRIPLE=([aarch64]=aarch64-unknown-linux-gnu [armv7]=armv7-unknown-linux-gnueabihf)
declare -A GCC=([aarch64]=gcc-aarch64-linux-gnu [armv7]=gcc-arm-linux-gnueabihf)
declare -A CC=([aarch64]=aarch64-linux-gnu-gcc [armv7]=arm-linux-gnueabihf-gcc)
declare -A DEBARCH=([aarch64]=arm64 [armv7]=armhf)

case "$which_targets" in
  all) arches=(aarch64 armv7) ;;
  aarch64|armv7) arches=("$which_targets") ;;
  *) echo "usage: cross/build.sh [aarch64|armv7|all]" >&2; exit 2 ;;
esac

apt_updated=0
need_pkg() {
  dpkg -s "$1" >/dev/null 2>&1 && return 0
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1"
}

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
for a in "${arches[@]}"; do
  t=${TRIPLE[$a]}
  need_pkg "${GCC[$a]}"
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
  upper=$(echo "$t" | tr 'a-z-' 'A-Z_')
  lower=$(echo "$t" | tr '-' '_')
  env "CARGO_TARGET_${upper}_LINKER=${CC[$a]}" "CC_${lower}=${CC[$a]}" \
    cargo build --release --locked --target "$t" --no-default-features
  bin="target/$t/release/gps-agent"
  echo "$a: $(stat -c %s "$bin") bytes  $bin"

  # A minimal .deb: binary, unit, sysusers and tmpfiles entries, example config (as a conffile), and the
  # templates in /usr/share/gps-agent (example and cellular) to start a config from.
  root="target/debian/$a/root"
  rm -rf "$root"
  DESTDIR="$root" bash systemd/install.sh "$bin"
  mkdir -p "$root/DEBIAN"
  cat > "$root/DEBIAN/control" <<CONTROL
Package: gps-agent
Version: $version
Architecture: ${DEBARCH[$a]}
Maintainer: gps-agent developers
Section: net
Priority: optional
Description: On-vehicle GPS telematics edge agent
 Reads NMEA from a serial GPS receiver, validates fixes, buffers them in SQLite
 and publishes them to an MQTT broker.
CONTROL
  echo "/etc/gps-agent/config.toml" > "$root/DEBIAN/conffiles"
  # The service user comes from sysusers.d; systemd learns of the unit. Not started here:
  # the operator sets the device id and broker first, then `systemctl enable --now`.
  cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
# The service user, then /etc/gps-agent root's with group gps-agent, 0770 (remote config.set
# writes beside config.toml); both tools come with systemd and work without it running.
if command -v systemd-sysusers >/dev/null 2>&1; then
  systemd-sysusers gps-agent.conf
  systemd-tmpfiles --create gps-agent.conf
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
POSTINST
  chmod 0755 "$root/DEBIAN/postinst"
  mkdir -p target/debian
  dpkg-deb --root-owner-group --build "$root" "target/debian/gps-agent_${version}_${DEBARCH[$a]}.deb" >/dev/null
  echo "$a: target/debian/gps-agent_${version}_${DEBARCH[$a]}.deb"
done
