#!/usr/bin/env bash
# Side-by-side timings of layerfs and kernel overlayfs over identical layers, in one run:
# a metadata walk, reading files, and copy-up by appending. Prints seconds and the ratio.
# Usage: tools/compare.sh [FILES] [SIZE_KB]     (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
kb=${2:-256}
cargo build --release -q
bin=$PWD/target/release/layerfs
d=$(mktemp -d /tmp/layerfs-compare.XXXXXX)
cleanup() { umount "$d/k/m" 2>/dev/null || true; umount "$d/l/m" 2>/dev/null || true; rm -rf "$d"; }
trap cleanup EXIT
mkdir -p "$d/lower"
for i in $(seq 1 "$n"); do
  mkdir -p "$d/lower/d$((i % 50))"
  head -c "$((kb * 1024))" /dev/urandom > "$d/lower/d$((i % 50))/f$i"
done
for side in k l; do mkdir -p "$d/$side"/{u,w,m}; done
mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/k/u,workdir=$d/k/w" "$d/k/m"
"$bin" mount "$d/lower" "$d/l/u" "$d/l/m" --workdir "$d/l/w"

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk "BEGIN{print $e - $s}"; }
row() {
  local name=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches
  local k l
  k=$(t "$@" "$d/k/m")
  sync; echo 3 > /proc/sys/vm/drop_caches
  l=$(t "$@" "$d/l/m")
  printf '%-28s kernel %8.3fs  layerfs %8.3fs  layerfs/kernel %6.2f\n' "$name" "$k" "$l" "$(awk "BEGIN{print $l / $k}")"
}
walk() { find "$1" -printf '%i %s %m\n'; }
readall() { cat "$1"/d*/f* ; }
append() { for f in "$1"/d*/f*; do echo x >> "$f"; done; }
echo "$n files of ${kb} KiB in 50 directories"
row "stat walk (find)" walk
row "read every file" readall
row "copy-up (append 1 line)" append
