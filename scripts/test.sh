#!/usr/bin/env bash
# Runs every check and test of livechat. Installs what the tests need when it is missing
# (Debian packages via apt-get, npm packages under tests/browser), so that a fresh Debian
# machine with Rust needs nothing else. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "unit and end-to-end tests (cargo test)"
cargo test --workspace
