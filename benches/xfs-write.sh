#!/usr/bin/env bash
# The XFS write benchmark (issue 12), side by side with ext4. The guest: a CentOS 7 tree (the
# prepare tests' distro tree, via the make_distro_tree example) plus FILES small files in 100
# directories, a 10,000-entry directory tree and 200 x 20 KB logs, on a 2 GiB GPT disk whose
# one partition is XFS (fixtures/mkxfs.sh `el9`) or ext4 (mkfs.ext4 -d), same tree. Timed
# (wall, CPU, peak RSS from /usr/bin/time; median of RUNS runs; every in-place run starts
# from a fresh, fully allocated copy written back to the disk before the clock starts):
#
#   (p)  imgscrub prepare DISK --profile linux               in place        target: < 1 s
#   (c)  fs_bulk create ROOT bulk 10000: mkdir + 10,000 files of 100 bytes + flush, on the
#        bare root filesystem, through the Filesystem trait (no CLI process per file)
#                                                                            target: < 2 s
#   (r)  imgscrub rm -r DISK /srv/tree10k: a 10,000-entry tree                target: < 2 s
#   (r') fs_bulk remove ROOT srv/tree10k (the engine alone)
#   (o)  imgscrub prepare DISK --profile linux --output OUT.qcow2 --compress zstd (one pass):
#        seconds per GiB of allocated input, XFS against ext4   target: XFS as fast per byte
#
#   benches/xfs-write.sh [WORKDIR]   (env: FILES=20000 RUNS=5 IMGSCRUB=path FS_BULK=path
#                                          KEEP=1: keep the images for a later run)
#
# No assertion: the figures go to stdout and WORKDIR/results.md, for docs/benchmarks.md.
set -euo pipefail
export PATH="$PATH:/sbin:/usr/sbin" LC_ALL=C

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/imgscrub-xfs-write-bench}
files=${FILES:-20000}
runs=${RUNS:-5}
mkdir -p "$work"
work=$(cd "$work" && pwd)
cd "$work"

for t in sgdisk mkfs.xfs xfs_db xfs_repair mkfs.ext4 e2fsck qemu-img /usr/bin/time bc; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

if [ -z "${IMGSCRUB:-}" ] || [ -z "${FS_BULK:-}" ]; then
  cargo build --release -q --manifest-path "$repo/Cargo.toml" -p imgscrub-cli --bins
  cargo build --release -q --manifest-path "$repo/Cargo.toml" -p imgscrub-prepare --example make_distro_tree
  cargo build --release -q --manifest-path "$repo/Cargo.toml" -p imgscrub-fs --example fs_bulk
  target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  # Copies: others building in the same target directory must not replace them mid-run.
  cp "$target/release/imgscrub" imgscrub.bin
  cp "$target/release/examples/fs_bulk" fs_bulk.bin
  cp "$target/release/examples/make_distro_tree" make_distro_tree.bin
  IMGSCRUB=$work/imgscrub.bin FS_BULK=$work/fs_bulk.bin
  echo "imgscrub: release build of $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')"
fi

disk_mb=2048 part_start=$((1 << 20)) part_mb=2046

# ---- the guest tree -----------------------------------------------------------------------
if [ ! -d tree ]; then
  echo "building the guest tree ($files files + a 10,000-entry tree) ..."
  rm -rf tree.tmp && mkdir tree.tmp
  tool=${MAKE_DISTRO_TREE:-$work/make_distro_tree.bin}
  "$tool" centos7 tree.tmp
  mkdir -p tree.tmp/usr/share/bench tree.tmp/srv/tree10k
  for d in $(seq 1 100); do
    mkdir -p "tree.tmp/usr/share/bench/d$d"
    for f in $(seq 1 $((files / 100))); do echo "file $d/$f" > "tree.tmp/usr/share/bench/d$d/f$f"; done
  done
  # 10,000 entries: 20 directories of 499 files (+ the directories themselves).
  for d in $(seq 1 20); do
    mkdir "tree.tmp/srv/tree10k/d$d"
    for f in $(seq 1 499); do echo "$d/$f" > "tree.tmp/srv/tree10k/d$d/f$f"; done
  done
  for i in $(seq 1 200); do head -c 20000 /dev/urandom > "tree.tmp/var/log/app$i.log"; done
  mv tree.tmp tree
fi
echo "entries in the guest: $(find tree | wc -l)"

mkdisk() { # mkdisk FS.img OUT: a fully allocated 2 GiB GPT disk with FS.img as partition 1
  dd if=/dev/zero of=disk.tmp bs=4M count=$((disk_mb / 4)) status=none
  sgdisk -n1:$((part_start / 512)):+${part_mb}M -t1:8300 -c1:root disk.tmp >/dev/null
  dd if="$1" of=disk.tmp bs=4M seek=$part_start oflag=seek_bytes conv=notrunc status=none
  mv disk.tmp "$2"
}

if [ ! -f xfs.raw ]; then
  echo "building xfs.raw (fixtures/mkxfs.sh el9, $part_mb MiB) ..."
  bash "$repo/fixtures/mkxfs.sh" --size "$part_mb" el9 xfs-root.img "$work/tree" >/dev/null
  rm -rf xfs-root.img.manifest.tsv xfs-root.img.xattrs.tsv xfs-root.img.expect xfs-root.img.proto
  mkdisk xfs-root.img xfs.raw
fi
if [ ! -f ext4.raw ]; then
  echo "building ext4.raw (mkfs.ext4 -d, $part_mb MiB) ..."
  rm -f ext4-root.img
  truncate -s $((part_mb << 20)) ext4-root.img
  mkfs.ext4 -q -F -E nodiscard -L root -d tree ext4-root.img
  mkdisk ext4-root.img ext4.raw
fi

# measure NAME PREP CMD...: median (by wall time) of RUNS runs of CMD, PREP evaluated
# (untimed) before each; sets $secs $cpu $rss.
measure() {
  local name=$1 prep=$2; shift 2
  : > "time.$name.all"
  for _ in $(seq 1 "$runs"); do
    eval "$prep"
    /usr/bin/time -f '%e %M %U %S' -o "time.$name" "$@" >"out.$name" 2>&1 ||
      { echo "($name) failed: $*" >&2; cat "out.$name" "time.$name" >&2; exit 1; }
    cat "time.$name" >> "time.$name.all"
  done
  local u s
  read -r secs rss u s < <(sort -n "time.$name.all" | sed -n "$(( (runs + 1) / 2 ))p")
  cpu=$(printf '%.2f' "$(echo "$u + $s" | bc)")
}
fresh() { rm -f "$2"; cp --sparse=never "$1" "$2"; sync "$2"; cat "$2" >/dev/null; }

declare -A R
for fs in ${FS:-xfs ext4}; do
  measure "p-$fs" "fresh $fs.raw w.raw" "$IMGSCRUB" prepare -q w.raw --profile linux
  R[p-$fs]="$secs $cpu $rss"
  measure "c-$fs" "fresh $fs-root.img w.img" "$FS_BULK" create w.img bulk 10000
  R[c-$fs]="$secs $cpu $rss"
  measure "r-$fs" "fresh $fs.raw w.raw" "$IMGSCRUB" rm -r w.raw /srv/tree10k
  R[r-$fs]="$secs $cpu $rss"
  measure "rb-$fs" "fresh $fs-root.img w.img" "$FS_BULK" remove w.img srv/tree10k
  R[rb-$fs]="$secs $cpu $rss"
  measure "o-$fs" "rm -f o.qcow2; cat $fs.raw >/dev/null" \
    "$IMGSCRUB" prepare -q "$fs.raw" --profile linux --output o.qcow2 --compress zstd
  R[o-$fs]="$secs $cpu $rss"
  # Allocated bytes of the input partition (what a one-pass run must read at least).
  R[alloc-$fs]=$(du -B1 "$fs-root.img" | cut -f1)
done
# The results are checked once (untimed): the filesystems stay clean.
check="XFS not measured"
if [[ " ${FS:-xfs ext4} " == *" xfs "* ]]; then
  fresh xfs.raw w.raw; "$IMGSCRUB" prepare -q w.raw --profile linux
  dd if=w.raw of=w.part bs=4M skip=$part_start count=$((part_mb << 20)) iflag=skip_bytes,count_bytes status=none
  xfs_repair -n w.part >/dev/null 2>&1 && check="xfs_repair -n clean after (p)" || check="xfs_repair -n NOT clean after (p)"
fi
rm -f w.raw w.img w.part o.qcow2

per_gib() { [ -n "${R[alloc-$2]:-}" ] && echo "scale=3; $1 / (${R[alloc-$2]} / 1073741824)" | bc || echo -; }
{
  echo "## XFS writes vs ext4 ($(date -u +%Y-%m-%d), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), RUNS=$runs)"
  echo
  echo "| | XFS wall s | XFS CPU s | XFS RSS KiB | ext4 wall s | ext4 CPU s | ext4 RSS KiB | target |"
  echo "|---|---|---|---|---|---|---|---|"
  row() { read -r a b c <<<"${R[$1-xfs]:-- - -}"; read -r d e f <<<"${R[$1-ext4]:-- - -}"; echo "| $2 | $a | $b | $c | $d | $e | $f | $3 |"; }
  row p "(p) prepare --profile linux, in place" "< 1 s"
  row c "(c) create 10,000 files + flush (engine)" "< 2 s"
  row r "(r) rm -r of a 10,000-entry tree (CLI)" "< 2 s"
  row rb "(r') remove_tree of it + flush (engine)" "-"
  row o "(o) prepare --output --compress zstd" "-"
  echo
  o_xfs=${R[o-xfs]:-0} o_ext4=${R[o-ext4]:-0}
  echo "(o) per GiB of allocated input: XFS $(per_gib "${o_xfs%% *}" xfs) s, ext4 $(per_gib "${o_ext4%% *}" ext4) s" \
       "(allocated: XFS ${R[alloc-xfs]:--} bytes, ext4 ${R[alloc-ext4]:--} bytes). $check."
} | tee results.md

if [ "${KEEP:-1}" != 1 ]; then rm -f xfs.raw ext4.raw xfs-root.img ext4-root.img; fi
