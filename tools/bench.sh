#!/usr/bin/env bash
# Side-by-side benchmark of layerfs against kernel overlayfs, native ext4 and the FUSE
# overlays that are installed (fuse-overlayfs 1.x from Debian; 2.0, the Rust rewrite, from
# $FOV2, default ~/.cache/layerfs-bench/bin/fuse-overlayfs: `cargo install fuse-overlayfs
# --version 2.0.0 --root ~/.cache/layerfs-bench`). Targets run interleaved round-robin,
# ROUNDS rounds (default 3); each figure is the median, shown with its ratio to kernel
# overlayfs. Prints a Markdown table and writes a bar chart (SVG) of the ratios.
#
#   tools/bench.sh [--quick] [--rounds N] [--out DIR] [--targets "kernel layerfs ..."]
#
# --quick: smaller sizes (a 3-minute run). Needs root, fio, and a release build.
# BASE_LAYERFS=PATH adds a target "layerfs-base" run by another layerfs binary (an older
# build), for before/after figures from one interleaved run. "layerfs-nopassthrough" is
# layerfs with passthrough=off (the path rootless engines get); "layerfs-all" is
# passthrough=all (read-only opens of lower files passed through too); "layerfs-uring" is
# uring=on (requests over FUSE-over-io_uring queues; the fuse module's enable_uring is
# turned on for the run where it can be).
# --rootless adds the same targets run as root of a user namespace (tools/userns.py), as
# rootless engines run them: kernel overlayfs with userxattr, and the FUSE overlays
# without passthrough, which the kernel refuses there. Their ratios are to
# kernel-rootless.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
QUICK=0 ROUNDS=3 OUT=${TMPDIR:-/tmp}/layerfs-bench TARGETS="" ROOTLESS=0 INNER=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rootless) ROOTLESS=1 ;;
    # Internal: --inner FUNCTION ARG runs one function of the run set up in $BENCH_W.
    --inner) INNER=$2 INNER_ARG=$3; shift 2 ;;
    --rounds) ROUNDS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 1 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root" >&2; exit 1; }
command -v fio >/dev/null || { echo "bench.sh: needs fio (apt-get install fio)" >&2; exit 1; }
LAYERFS=$ROOT/target/release/layerfs
[ -x "$LAYERFS" ] || cargo build --release --quiet
FOV2=${FOV2:-$HOME/.cache/layerfs-bench/bin/fuse-overlayfs}
URING_PARAM=/sys/module/fuse/parameters/enable_uring
if [ -z "$TARGETS" ]; then
  TARGETS="native kernel layerfs layerfs-all layerfs-nopassthrough"
  [ -w "$URING_PARAM" ] && TARGETS="$TARGETS layerfs-uring"
  command -v fuse-overlayfs >/dev/null && TARGETS="$TARGETS fuse-overlayfs-1"
  [ -x "$FOV2" ] && TARGETS="$TARGETS fuse-overlayfs-2"
  [ -n "${BASE_LAYERFS:-}" ] && TARGETS="$TARGETS layerfs-base"
fi
if [ $ROOTLESS = 1 ]; then
  TARGETS="$TARGETS kernel-rootless layerfs-rootless"
  command -v fuse-overlayfs >/dev/null && TARGETS="$TARGETS fuse-overlayfs-1-rootless"
  [ -x "$FOV2" ] && TARGETS="$TARGETS fuse-overlayfs-2-rootless"
fi
if [ $QUICK = 1 ]; then
  WALK=5000 DIRENTS=4000 BIG=256 COPY=64 NFILES=2000 RT=3 HUGE=20000
else
  WALK=20000 DIRENTS=10000 BIG=1024 COPY=256 NFILES=10000 RT=10 HUGE=100000
fi

if [ -n "$INNER" ]; then
  W=$BENCH_W
else
  mkdir -p "$OUT"
  W=$(mktemp -d "$OUT/run.XXXXXX")
fi
RESULTS=$W/results.tsv
MNT=$W/mnt
L1=$W/lower1 L2=$W/lower2 MANY=$W/many
URING_WAS=""
cleanup() {
  umount -l "$MNT" 2>/dev/null || true
  [ -z "$URING_WAS" ] || echo "$URING_WAS" > "$URING_PARAM"
}
trap cleanup EXIT
# layerfs-uring (uring=on) needs the fuse module's enable_uring: on for the run, put back
# after.
case " $TARGETS " in
  *" layerfs-uring "*)
    if [ -z "$INNER" ]; then URING_WAS=$(cat "$URING_PARAM") && echo Y > "$URING_PARAM"; fi ;;
esac

build_layers() {
: > "$RESULTS"
mkdir -p "$MNT"
echo "building the image layers in $W (walk $WALK files, dir $DIRENTS entries, big ${BIG} MiB)" >&2
mkdir -p "$L1/walk" "$L1/merged" "$L2/merged" "$L1/victims"
for d in $(seq 1 $((WALK / 100))); do
  mkdir "$L1/walk/d$d"
  (cd "$L1/walk/d$d" && seq 1 100 | xargs touch)
done
(cd "$L1/merged" && seq 1 $((DIRENTS / 2)) | sed 's/^/a/' | xargs touch)
(cd "$L2/merged" && seq 1 $((DIRENTS / 2)) | sed 's/^/b/' | xargs touch)
(cd "$L1/victims" && seq 1 $NFILES | xargs touch)
dd if=/dev/urandom of="$L2/big" bs=1M count=$BIG status=none
# Read natively before it is read through the mount: another container of the image read
# it, so its pages are cached below.
dd if=/dev/urandom of="$L2/shared" bs=1M count=$BIG status=none
dd if=/dev/urandom of="$L2/copy1" bs=1M count=$COPY status=none
dd if=/dev/urandom of="$L2/copy2" bs=1M count=$COPY status=none
dd if=/dev/urandom of="$L2/rw" bs=1M count=64 status=none
# A bigger tree for the daemon's memory and fds, and a tarball to unpack into the mount.
mkdir -p "$L1/huge"
for d in $(seq 1 $((HUGE / 1000))); do
  mkdir "$L1/huge/d$d"
  (cd "$L1/huge/d$d" && seq 1 1000 | xargs touch)
done
tar -C "$L1" -cf "$W/rootfs.tar" walk
for i in $(seq 1 64); do mkdir -p "$MANY/l$i/d$i"; touch "$MANY/l$i/f$i"; done
sync
}

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }
# Inside a user namespace the caches cannot be dropped: the caller dropped them before.
drop_caches() { sync; [ -n "$INNER" ] || echo 3 > /proc/sys/vm/drop_caches; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$RESULTS"; }

# mount TARGET LOWERDIR UPPER WORK: mounts on $MNT (native: a bind of the top lower).
# EXTRA (optional) is more comma-separated options for kernel overlayfs and layerfs.
mount_target() {
  local t=$1 lower=$2 upper=$3 work=$4 o="lowerdir=$2,upperdir=$3,workdir=$4${5:+,$5}"
  mkdir -p "$upper" "$work"
  case $t in
    native) mount --bind "${lower%%:*}" "$MNT" ;;
    kernel) mount -t overlay overlay -o "$o" "$MNT" ;;
    kernel-rootless) mount -t overlay overlay -o "$o,userxattr" "$MNT" ;;
    layerfs | layerfs-rootless) "$LAYERFS" -o "$o" "$MNT" ;;
    layerfs-base) "$BASE_LAYERFS" -o "$o" "$MNT" ;;
    layerfs-nopassthrough) "$LAYERFS" -o "$o,passthrough=off" "$MNT" ;;
    layerfs-all) "$LAYERFS" -o "$o,passthrough=all" "$MNT" ;;
    layerfs-uring) "$LAYERFS" -o "$o,uring=on" "$MNT" ;;
    fuse-overlayfs-1*) fuse-overlayfs -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$MNT" 2>/dev/null ;;
    fuse-overlayfs-2*) "$FOV2" -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$MNT" 2>/dev/null ;;
  esac
}
unmount_target() { umount "$MNT" 2>/dev/null || umount -l "$MNT"; sleep 0.2; }
daemon_pid() { pgrep -f -- "$MNT\$" | head -1; }

fio_bw() { # fio_bw JOB DIR FILE SIZE [JOBS] -> KiB/s
  FIO_DIR=$2 FIO_FILE=$3 FIO_SIZE=$4 FIO_JOBS=${5:-1} FIO_RUNTIME=$RT \
    fio --output-format=json "$ROOT/tools/fio/$1.fio" |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(j["read"]["bw"] + j["write"]["bw"])'
}

# One round of every workload on target $1, round $2.
round() {
  local t=$1 r=$2 up=$W/up-$1-$2 wk=$W/wk-$1-$2 lower="$L1:$L2" s
  # The native target gets a plain directory of the same content for what it can do.
  if [ "$t" = native ]; then lower="$W/native-$r"; mkdir -p "$lower"; cp -a "$L1/walk" "$L1/merged" "$lower/"; cp -a "$L2/merged/." "$lower/merged/"; ln "$L2/big" "$lower/big"; ln "$L2/shared" "$lower/shared"; fi
  drop_caches
  mount_target "$t" "$lower" "$up" "$wk"
  s=$(now); find "$MNT/walk" -printf '%s\n' > /dev/null; record "$t" "stat-walk, cold (s)" "$r" "$(since "$s")"
  s=$(now); find "$MNT/walk" -printf '%s\n' > /dev/null; record "$t" "stat-walk, warm (s)" "$r" "$(since "$s")"
  if [ "$t" != native ] && [ "${t%-rootless}" != kernel ]; then
    record "$t" "daemon RSS after the walk (MiB)" "$r" "$(awk '/VmHWM/ {print $2/1024}' /proc/"$(daemon_pid)"/status)"
    find "$MNT/huge" -printf '%s\n' > /dev/null
    record "$t" "daemon RSS after a $HUGE-file walk (MiB)" "$r" "$(awk '/VmHWM/ {print $2/1024}' /proc/"$(daemon_pid)"/status)"
    record "$t" "daemon fds after a $HUGE-file walk" "$r" "$(ls /proc/"$(daemon_pid)"/fd | wc -l)"
  fi
  s=$(now); ls -f "$MNT/merged" > /dev/null; record "$t" "ls -f merged dir, first (s)" "$r" "$(since "$s")"
  s=$(now); ls -f "$MNT/merged" > /dev/null; record "$t" "ls -f merged dir, again (s)" "$r" "$(since "$s")"
  record "$t" "seq read big file, cold (MiB/s) ↑" "$r" "$(echo "$(fio_bw seqread "$MNT" big ${BIG}m) / 1024" | bc -l)"
  record "$t" "seq read big file, warm (MiB/s) ↑" "$r" "$(echo "$(fio_bw seqread "$MNT" big ${BIG}m) / 1024" | bc -l)"
  cat "$L2/shared" > /dev/null
  record "$t" "seq read, cached below (MiB/s) ↑" "$r" "$(echo "$(fio_bw seqread "$MNT" shared ${BIG}m) / 1024" | bc -l)"
  record "$t" "4k rand read, cached (MiB/s) ↑" "$r" "$(echo "$(fio_bw randread "$MNT" big ${BIG}m) / 1024" | bc -l)"
  record "$t" "4k rand read, 4 jobs (MiB/s) ↑" "$r" "$(echo "$(fio_bw randread "$MNT" big ${BIG}m 4) / 1024" | bc -l)"
  record "$t" "seq write new file (MiB/s) ↑" "$r" "$(echo "$(fio_bw seqwrite "$MNT" new ${BIG}m) / 1024" | bc -l)"
  rm -f "$MNT/new"
  mkdir "$MNT/untar"
  s=$(now); tar -C "$MNT/untar" -xf "$W/rootfs.tar"; record "$t" "untar $WALK files (s)" "$r" "$(since "$s")"
  mkdir "$MNT/created"
  s=$(now); (cd "$MNT/created" && seq 1 $NFILES | xargs touch); record "$t" "create $NFILES files (s)" "$r" "$(since "$s")"
  s=$(now); (cd "$MNT/created" && seq 1 $NFILES | xargs rm); record "$t" "unlink $NFILES upper files (s)" "$r" "$(since "$s")"
  if [ "$t" != native ]; then
    record "$t" "4k rand write, copied-up file (MiB/s) ↑" "$r" "$(echo "$(fio_bw randwrite "$MNT" rw 64m) / 1024" | bc -l)"
    s=$(now); (cd "$MNT/victims" && seq 1 $NFILES | xargs rm); record "$t" "unlink $NFILES lower files (s)" "$r" "$(since "$s")"
    # Copy-ups fsync: what earlier workloads left dirty is written out first, so that the
    # fsync (a journal commit, which in ext4's data=ordered mode writes out all dirty data
    # of the transaction) pays for the copy-up alone.
    sync
    s=$(now); printf x >> "$MNT/copy1"; record "$t" "1-byte append to ${COPY} MiB lower file (s)" "$r" "$(since "$s")"
    sync
    s=$(now); chmod 600 "$MNT/copy2"; record "$t" "chmod of ${COPY} MiB lower file (s)" "$r" "$(since "$s")"
  fi
  unmount_target
  # Metadata changes of lower files with metacopy off and on (the kernel beside it with
  # the same option; fuse-overlayfs has no metacopy).
  case $t in
    kernel | layerfs | layerfs-all | layerfs-nopassthrough)
      for mc in off on; do
        mount_target "$t" "$lower" "$W/mcu-$t-$r-$mc" "$W/mcw-$t-$r-$mc" "metacopy=$mc"
        sync
        s=$(now); chown -R 1:1 "$MNT/walk"; record "$t" "chown -R of $WALK lower files, metacopy=$mc (s)" "$r" "$(since "$s")"
        sync
        s=$(now); chmod 600 "$MNT/copy2"; record "$t" "chmod of ${COPY} MiB lower file, metacopy=$mc (s)" "$r" "$(since "$s")"
        unmount_target
        rm -rf "$W/mcu-$t-$r-$mc" "$W/mcw-$t-$r-$mc"
      done
      ;;
  esac
  if [ "$t" != native ]; then
    local many; many=$(ls -d "$MANY"/l* | paste -sd:)
    # Timed up to the unmount's return: unmount_target's settling pause is not counted.
    s=$(now); mount_target "$t" "$many" "$W/mup-$t-$r" "$W/mwk-$t-$r"; ls "$MNT" > /dev/null
    umount "$MNT" 2>/dev/null || umount -l "$MNT"
    record "$t" "mount + ls + umount, 64 layers (s)" "$r" "$(since "$s")"
    sleep 0.2
  fi
  rm -rf "$up" "$wk" "$W/mup-$t-$r" "$W/mwk-$t-$r" "$W/native-$r"
}

# Page cache used when MOUNTS mounts of one image each read the same big file.
page_cache() {
  local t=$1 n=$2 i before after
  [ "$t" = native ] && return
  drop_caches
  before=$(awk '/^Cached:/ {print $2}' /proc/meminfo)
  for i in $(seq 1 "$n"); do
    mkdir -p "$W/pc$i" "$W/pcu$i" "$W/pcw$i"
    local m=$W/pc$i
    case $t in
      kernel) mount -t overlay overlay -o "lowerdir=$L1:$L2,upperdir=$W/pcu$i,workdir=$W/pcw$i" "$m" ;;
      kernel-rootless) mount -t overlay overlay -o "lowerdir=$L1:$L2,upperdir=$W/pcu$i,workdir=$W/pcw$i,userxattr" "$m" ;;
      layerfs | layerfs-rootless) "$LAYERFS" mount "$L1:$L2" "$W/pcu$i" "$m" --workdir "$W/pcw$i" ;;
      layerfs-base) "$BASE_LAYERFS" mount "$L1:$L2" "$W/pcu$i" "$m" --workdir "$W/pcw$i" ;;
      layerfs-nopassthrough) "$LAYERFS" mount "$L1:$L2" "$W/pcu$i" "$m" --workdir "$W/pcw$i" -o passthrough=off ;;
      layerfs-all) "$LAYERFS" mount "$L1:$L2" "$W/pcu$i" "$m" --workdir "$W/pcw$i" -o passthrough=all ;;
      layerfs-uring) "$LAYERFS" mount "$L1:$L2" "$W/pcu$i" "$m" --workdir "$W/pcw$i" -o uring=on ;;
      fuse-overlayfs-1*) fuse-overlayfs -o "lowerdir=$L1:$L2,upperdir=$W/pcu$i,workdir=$W/pcw$i" "$m" 2>/dev/null ;;
      fuse-overlayfs-2*) "$FOV2" -o "lowerdir=$L1:$L2,upperdir=$W/pcu$i,workdir=$W/pcw$i" "$m" 2>/dev/null ;;
    esac
    cat "$m/big" > /dev/null
  done
  after=$(awk '/^Cached:/ {print $2}' /proc/meminfo)
  record "$t" "page cache, $n mounts read one ${BIG} MiB file (MiB)" 1 "$(echo "($after - $before) / 1024" | bc -l)"
  for i in $(seq 1 "$n"); do umount "$W/pc$i"; rm -rf "$W/pcu$i" "$W/pcw$i"; done
}

# run FUNCTION TARGET ARG: FUNCTION (round or page_cache) for TARGET, a rootless one as
# root of a user namespace (this script again, in --inner mode there).
run() {
  local f=$1 t=$2
  case $t in
    *-rootless)
      drop_caches
      local q=""; [ $QUICK = 1 ] && q=--quick
      BENCH_W=$W FOV2=$FOV2 "$ROOT/tools/userns.py" "$ROOT/tools/bench.sh" $q --targets "$t" --inner "$f" "$3"
      ;;
    *) "$f" "$t" "$3" ;;
  esac
}
if [ -n "$INNER" ]; then
  "$INNER" "$TARGETS" "$INNER_ARG"
  exit
fi
build_layers
for r in $(seq 1 "$ROUNDS"); do
  for t in $TARGETS; do
    echo "round $r: $t" >&2
    run round "$t" "$r"
  done
done
for n in 1 5 10; do for t in $TARGETS; do run page_cache "$t" $n; done; done

python3 "$ROOT/tools/bench-report.py" "$RESULTS" "$W/chart.svg" $TARGETS
echo >&2
echo "raw results: $RESULTS; chart: $W/chart.svg" >&2
