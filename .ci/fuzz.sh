#!/usr/bin/env bash
# A short libFuzzer run of the pipeline target (framing, parsing, assembly, validation).
# The machine has a stable toolchain only: RUSTC_BOOTSTRAP lets cargo-fuzz pass its
# sanitizer flags. Seeds come from the gpsd corpus; crashes land in fuzz/artifacts.
# libFuzzer's progress goes to fuzz/fuzz.log; its last lines are printed either way.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
corpus_src="${GPS_AGENT_CORPUS:-$PWD/../../shared/nmea-corpus}"
mkdir -p corpus/pipeline
if [ -d "$corpus_src" ]; then
  for f in "$corpus_src"/*.log; do cp -n "$f" corpus/pipeline/ 2>/dev/null || true; done
fi
RUSTC_BOOTSTRAP=1 cargo fuzz build pipeline
status=0
RUSTC_BOOTSTRAP=1 cargo fuzz run pipeline corpus/pipeline -- \
  -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=1024 -print_final_stats=1 \
  > fuzz.log 2>&1 || status=$?
tail -n 25 fuzz.log
if [ "$status" -ne 0 ]; then
  echo "fuzz: FAILED (exit $status); reproduce with: cargo fuzz run pipeline fuzz/artifacts/pipeline/<file>"
  exit "$status"
fi
echo "fuzz: no crash in ${seconds} s"
