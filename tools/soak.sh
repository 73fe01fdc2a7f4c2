#!/usr/bin/env bash
# Longer runs of the randomized tests than CI affords:
#   tools/soak.sh [SEQUENCES] [STRESS_SECONDS]
# - SEQUENCES seeded random operation sequences on kernel overlayfs and layerfs, compared
#   (a failure prints the seed; LAYERFS_DIFF_SEED=N repeats one);
# - STRESS_SECONDS of 8 threads doing random operations on one mount, with a watchdog;
# - STRESS_SECONDS of 8 processes doing the same, then checked against kernel overlayfs.
set -euo pipefail
cd "$(dirname "$0")/.."
seqs=${1:-2000}
secs=${2:-300}
LAYERFS_DIFF_SEQUENCES=$seqs cargo test --release --test differential random_sequences -- --nocapture
LAYERFS_STRESS_SECS=$secs cargo test --release --test concurrency random_operations -- --nocapture
LAYERFS_PROC_STRESS_SECS=$secs cargo test --release --test stress -- --nocapture
