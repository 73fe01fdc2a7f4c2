#!/usr/bin/env bash
# Builds layerfs and shows a union: two lower layers and an upper, a copy-up and a whiteout.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=$PWD/target/release/layerfs
d=$(mktemp -d /tmp/layerfs-demo.XXXXXX)
trap 'umount "$d/merged" 2>/dev/null || true; rm -rf "$d"' EXIT
mkdir -p "$d"/{lower1,lower2,upper,merged}
echo "from lower2" > "$d/lower2/base.txt"
echo "shadowed"    > "$d/lower2/both.txt"
echo "from lower1" > "$d/lower1/both.txt"
echo "delete me"   > "$d/lower2/old.txt"

"$bin" mount "$d/lower1:$d/lower2" "$d/upper" "$d/merged"
echo "== merged view";             ls -l "$d/merged"
echo "== both.txt (lower1 wins):"; cat "$d/merged/both.txt"
echo "appended" >> "$d/merged/base.txt"
rm "$d/merged/old.txt"
echo "== after an append (copy-up) and an rm (whiteout):"; ls -l "$d/merged"
echo "== the upper layer holds the copy and a whiteout (c 0,0):"; ls -l "$d/upper"
echo "== the lower layer is untouched:"; cat "$d/lower2/base.txt"
umount "$d/merged"
echo "== unmounted"
