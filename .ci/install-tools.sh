#!/usr/bin/env bash
# Installs the tools CI and developers need, idempotently: each step checks first.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

# rustfmt and clippy come with the toolchain; add them if this toolchain lacks them.
if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi

# cargo-fuzz (libFuzzer driver), pinned for reproducibility.
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz --version 0.13.2
fi

echo "tools ready: $(cargo --version); $(cargo fuzz --version)"
