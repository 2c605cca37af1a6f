#!/usr/bin/env bash
# Build the Debian package: binary, systemd unit, example config, user.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
cargo deb -p clawcut-worker "$@"
