#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests that mount layerfs (and kernel
# overlayfs as the reference). Needs root, /dev/fuse and overlayfs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-false}"
# Integration tests mount in parallel; each uses its own temp directories.
cargo test --release -- --test-threads=4
# The integration tests again with requests over io_uring (uring=on), the fuse module's
# enable_uring turned on for the pass and put back after (podman, the CLI and the io_uring
# test itself mount in their own ways or toggle the parameter).
param=/sys/module/fuse/parameters/enable_uring
if [ -w "$param" ]; then
  old=$(cat "$param")
  trap 'echo "$old" > "$param"' EXIT
  echo Y > "$param"
  tests=()
  for t in tests/*.rs; do
    t=$(basename "$t" .rs)
    case "$t" in podman | cli | uring) ;; *) tests+=(--test "$t") ;; esac
  done
  LAYERFS_TEST_OPTIONS=uring=on cargo test --release "${tests[@]}" -- --test-threads=4
  echo "$old" > "$param"
  trap - EXIT
elif [ "$CI" = true ]; then
  echo "no FUSE over io_uring to test here ($param)" >&2
  exit 1
fi
# No test may leave a mount behind (layerfs, a test's own FUSE layer, tmpfs or overlay).
left=$(grep -E 'layerfs|/layerfs-test|faulty' /proc/mounts || true)
if [ -n "$left" ]; then
  echo "mounts left behind by the tests:" >&2
  echo "$left" >&2
  exit 1
fi
