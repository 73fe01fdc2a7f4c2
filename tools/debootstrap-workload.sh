#!/usr/bin/env bash
# A real workload on layerfs, compared with kernel overlayfs: a Debian minbase root
# filesystem (debootstrap) as the lower layer; in a chroot on each mount: dpkg -i of a local
# .deb, apt-get remove of it, ldconfig, useradd. Then the two merged trees are compared
# (type, mode, owner, size, symlink target, content hash), and the two upper directories.
# Usage (as root): tools/debootstrap-workload.sh [WORKDIR]   — needs network to a Debian
# mirror (read from this machine's apt sources); takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/var/tmp/layerfs-workload}
command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
cargo build --release -q
bin=$PWD/target/release/layerfs

mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
[ -n "$mirror" ] || mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1)
[ -n "$mirror" ] || { echo "no Debian mirror in the apt sources" >&2; exit 1; }
suite=$(. /etc/os-release; echo "$VERSION_CODENAME")

mkdir -p "$work"
base=$work/base
if [ ! -x "$base/usr/bin/apt-get" ]; then
  rm -rf "$base"
  echo "== debootstrap --variant=minbase $suite from $mirror"
  debootstrap --variant=minbase "$suite" "$base" "$mirror" >"$work/debootstrap.log" 2>&1
fi
deb=$work/hello.deb
if [ ! -f "$deb" ]; then
  (cd "$work" && apt-get download hello >/dev/null 2>&1 && mv hello_*.deb "$deb")
fi

run_side() { # name mount-command...
  local side=$1; shift
  local d=$work/$side
  umount "$d/m" 2>/dev/null || true
  rm -rf "$d"; mkdir -p "$d"/{u,w,m}
  "$@" "$d"
  cp "$deb" "$d/m/tmp/hello.deb"
  chroot "$d/m" /bin/sh -ec '
    export PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive
    dpkg -i /tmp/hello.deb >/dev/null
    hello >/dev/null
    apt-get remove -y -q hello >/dev/null
    ldconfig
    useradd -m -s /bin/sh tester
    rm /tmp/hello.deb
  '
  (cd "$d/m" && find . -xdev \( -path ./var/log -o -path ./var/cache/ldconfig -o -path ./var/cache/debconf \) -prune -o -printf '%p %y %m %U:%G %s %l\n' | sort) >"$d/tree"
  (cd "$d/m" && find . -xdev -type f \( -path ./var/log -o -path ./var/cache \) -prune -o -type f -print0 | sort -z | xargs -0 md5sum) >"$d/sums"
  (cd "$d/u" && find . -printf '%p %y %m %U:%G\n' | sort) >"$d/upper"
  umount "$d/m"
}
kernel_mount() { mount -t overlay overlay -o "lowerdir=$base,upperdir=$1/u,workdir=$1/w,index=off,redirect_dir=off,metacopy=off,xino=off" "$1/m"; }
layerfs_mount() { "$bin" mount "$base" "$1/u" "$1/m" --workdir "$1/w" -o dev,suid; }

s=$(date +%s.%N); run_side kernel kernel_mount; k=$(awk "BEGIN{print $(date +%s.%N) - $s}")
s=$(date +%s.%N); run_side layerfs layerfs_mount; l=$(awk "BEGIN{print $(date +%s.%N) - $s}")
printf 'workload time: kernel %.2fs, layerfs %.2fs (layerfs/kernel %.2f)\n' "$k" "$l" "$(awk "BEGIN{print $l / $k}")"

status=0
for f in tree sums upper; do
  # /etc/shadow holds the day of the password change and differs only if midnight passed.
  if diff -u "$work/kernel/$f" "$work/layerfs/$f" | grep -v '^\(---\|+++\)' | grep '^[-+]' >"$work/$f.diff"; then
    echo "== $f differs:"; head -n 40 "$work/$f.diff"; status=1
  else
    echo "== $f: identical ($(wc -l <"$work/kernel/$f") entries)"
  fi
done
exit $status
