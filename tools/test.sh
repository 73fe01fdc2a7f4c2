#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests that mount layerfs (and kernel
# overlayfs as the reference). Needs root, /dev/fuse and overlayfs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-false}"
# Integration tests mount in parallel; each uses its own temp directories.
cargo test --release -- --test-threads=4
# No test may leave a mount behind (layerfs, a test's own FUSE layer, tmpfs or overlay).
left=$(grep -E 'layerfs|/layerfs-test|faulty' /proc/mounts || true)
if [ -n "$left" ]; then
  echo "mounts left behind by the tests:" >&2
  echo "$left" >&2
  exit 1
fi
