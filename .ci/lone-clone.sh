#!/usr/bin/env bash
# A clone of the repository alone must pass `cargo test`: clone HEAD into a temporary
# directory with nothing beside it (no ../shared, no corpus) and run the tests there. Tests
# that need the gpsd corpus must say they skipped; nothing may fail for its absence.
# The main checkout's target directory is reused for the dependencies (only this crate is
# built again, under the clone's own path).
set -euo pipefail
cd "$(dirname "$0")/.."
here="$PWD"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
git clone -q "$here" "$tmp/gps-agent"
cd "$tmp/gps-agent"
test ! -e ../shared || { echo "lone clone: ../shared exists beside $tmp/gps-agent" >&2; exit 1; }
log="$tmp/test.log"
status=0
env -u GPS_AGENT_CORPUS -u GPS_AGENT_REQUIRE_CORPUS CARGO_TARGET_DIR="$here/target" \
  cargo test >"$log" 2>&1 || status=$?
grep -E '^test result|SKIPPED' "$log" || true
if [ "$status" -ne 0 ]; then
  echo "lone clone: cargo test failed (exit $status)" >&2
  tail -80 "$log" >&2
  exit 1
fi
skipped=$(grep -c 'SKIPPED' "$log" || true)
echo "lone clone: cargo test passed; $skipped corpus test(s) said they skipped"
