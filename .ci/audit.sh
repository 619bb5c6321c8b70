#!/usr/bin/env bash
# RustSec advisories against Cargo.lock, with the exceptions (and their reasons) of
# .cargo/audit.toml. Usage: .ci/audit.sh ADVISORY_DB_DIR (a checkout of rustsec/advisory-db).
# Not a step of .ci/run: CI reaches only the package registries, so it cannot fetch the
# database; run it where a checkout is at hand. Installs cargo-audit when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

db=${1:?usage: .ci/audit.sh ADVISORY_DB_DIR}
if [ ! -d "$db/crates" ]; then
  echo "audit: $db is not an advisory-db checkout (no crates/)" >&2
  exit 2
fi
if ! cargo audit --version >/dev/null 2>&1; then
  cargo install --locked cargo-audit --version 0.22.2
fi
# --deny warnings: an unmaintained or yanked crate fails too, unless audit.toml says why.
cargo audit --db "$db" --no-fetch --deny warnings
