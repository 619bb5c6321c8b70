#!/usr/bin/env bash
# The gateways' ARM builds, built and run: cross/build.sh makes the aarch64 and armv7 binaries
# and .debs (installing the gcc cross compilers and rustup targets it needs); each binary then
# runs under qemu-user over every capture of the corpus (`parse --all`) and must print exactly
# what the native build prints: 32-bit armv7 and 64-bit aarch64 decide every epoch alike.
set -euo pipefail
cd "$(dirname "$0")/.."

corpus="${GPS_AGENT_CORPUS:-$PWD/../shared/nmea-corpus}"
if ! ls "$corpus"/*.log >/dev/null 2>&1; then
  echo "cross: no corpus at $corpus" >&2
  exit 1
fi

if ! command -v qemu-aarch64 >/dev/null 2>&1 || ! command -v qemu-arm >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user
fi

bash cross/build.sh all
# Each package carries the conffile and both templates to start a config from.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
for deb in target/debian/gps-agent_"${version}"_arm64.deb target/debian/gps-agent_"${version}"_armhf.deb; do
  for f in ./etc/gps-agent/config.toml ./usr/share/gps-agent/example.toml \
           ./usr/share/gps-agent/cellular.toml; do
    dpkg-deb -c "$deb" | awk '{print $6}' | grep -qxF "$f" || { echo "cross: $deb lacks $f"; exit 1; }
  done
done
# The native release build (the demo feature does not touch parsing).
cargo build --release --locked
native=target/release/gps-agent

declare -A RUN=(
  [aarch64]="qemu-aarch64 -L /usr/aarch64-linux-gnu target/aarch64-unknown-linux-gnu/release/gps-agent"
  [armv7]="qemu-arm -L /usr/arm-linux-gnueabihf target/armv7-unknown-linux-gnueabihf/release/gps-agent"
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for a in aarch64 armv7; do
  run=${RUN[$a]}
  $run check-config --config config/example.toml >/dev/null
  logs=0
  for log in "$corpus"/*.log; do
    name=$(basename "$log")
    rc_native=0; "$native" parse --all "$log" > "$work/native" 2>/dev/null || rc_native=$?
    rc_arm=0; $run parse --all "$log" > "$work/$a" 2>/dev/null || rc_arm=$?
    if [ "$rc_native" != "$rc_arm" ] || ! cmp -s "$work/native" "$work/$a"; then
      echo "cross: $a differs from the native build on $name (exit $rc_arm vs $rc_native)"
      diff "$work/native" "$work/$a" | head -n 20 || true
      exit 1
    fi
    logs=$((logs + 1))
  done
  echo "cross: $a agrees with the native build on $logs captures (parse --all, under qemu-user)"
done
