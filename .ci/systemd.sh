#!/usr/bin/env bash
# Checks the shipped unit: `systemd-analyze verify` clean, and an exposure score of at most
# 1.5 from `systemd-analyze security --offline=true`. Uses the release binary in place of
# /usr/bin/gps-agent, since verify checks that ExecStart exists.
set -euo pipefail
cd "$(dirname "$0")/.."
max_exposure="1.5"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd
fi

cargo build --release --locked
bin="$PWD/target/release/gps-agent"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s#/usr/bin/gps-agent#$bin#g" systemd/gps-agent.service > "$work/gps-agent.service"

echo "systemd-analyze verify:"
out=$(systemd-analyze verify "$work/gps-agent.service" 2>&1 || true)
# Only complaints about this unit count (the host's own units may have warnings of their own).
mine=$(printf '%s\n' "$out" | grep -F "gps-agent.service" || true)
if [ -n "$mine" ]; then
  printf '%s\n' "$mine"
  echo "systemd: verify reported problems in gps-agent.service"
  exit 1
fi
echo "  clean"

line=$(systemd-analyze security --offline=true "$work/gps-agent.service" 2>&1 | grep "Overall exposure level" || true)
echo "$line"
score=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
if [ -z "$score" ]; then
  echo "systemd: could not read the exposure score"
  exit 1
fi
if awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
  echo "systemd: exposure $score is above $max_exposure"
  exit 1
fi
echo "systemd: exposure $score <= $max_exposure"

# install.sh, staged into a directory as a package build would: every file in its place.
DESTDIR="$work/root" bash systemd/install.sh "$bin"
for f in usr/bin/gps-agent etc/systemd/system/gps-agent.service \
         usr/lib/sysusers.d/gps-agent.conf usr/lib/tmpfiles.d/gps-agent.conf etc/gps-agent/config.toml \
         usr/share/gps-agent/example.toml usr/share/gps-agent/cellular.toml; do
  [ -e "$work/root/$f" ] || { echo "install.sh: $f missing"; exit 1; }
done
"$work/root/usr/bin/gps-agent" check-config --config "$work/root/etc/gps-agent/config.toml" >/dev/null
echo "install.sh: binary, unit, sysusers and tmpfiles entries and a valid config staged"
bash .ci/systemd-live.sh
