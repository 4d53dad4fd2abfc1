#!/usr/bin/env bash
# The export benchmark: the guest tree of the shrink benchmark's image (a 2 GiB GPT disk,
# ext4 root populated from /usr/share; see benches/shrink.sh) written as a tarball by
#
#   (a) imgscrub export --partition 2 IMG out.tar           (no compression)
#   (b) imgscrub export --partition 2 IMG out.tar.zst       (zstd level 3, on every core)
#   (c) imgscrub export --partition 2 IMG out.tar.gz        (gzip level 6)
#
# against GNU tar of a loop-mounted copy of the same root filesystem (mounted read-only with
# noload; the mount itself is not timed):
#
#   (A) tar --format=posix --xattrs --numeric-owner --sort=name -cf out.tar .
#   (B) the same with --zstd
#   (C) the same with --gzip
#
#   benches/export.sh [WORKDIR]     (env: TREE=/usr/share  IMGSCRUB=path  RUNS=3  KEEP=1)
#
# Needs root for the loop mount. Every run starts with the image (and the mounted copy)
# in the page cache; wall time and peak RSS come from /usr/bin/time, the median of RUNS.
set -euo pipefail
export PATH="$PATH:/sbin:/usr/sbin"
LC_ALL=C

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/imgscrub-shrink-bench}
tree=${TREE:-/usr/share}
mkdir -p "$work"
cd "$work"

for t in sgdisk mkfs.vfat mcopy mkfs.ext4 debugfs tar zstd gzip mount /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "benches/export.sh needs root (loop mount)" >&2; exit 1; }

if [ -z "${IMGSCRUB:-}" ]; then
  cargo build --release -q --manifest-path "$repo/Cargo.toml" -p imgscrub-cli
  target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  IMGSCRUB="$target/release/imgscrub"
fi

# ---- the image: the same as benches/shrink.sh builds (shared work directory) --------------
disk=dirty.raw
if [ ! -f "$disk" ]; then
  echo "building $work/$disk from $tree ..."
  dd if=/dev/zero of=disk.tmp bs=4M count=512 status=none
  sgdisk -n1:2048:+100M -t1:EF00 -c1:ESP -n2:0:0 -t2:8300 -c2:root disk.tmp >/dev/null
  esp_start=$((2048 * 512))
  root_start=$(( $(sgdisk -i 2 disk.tmp | sed -n 's/^First sector: \([0-9]*\).*/\1/p') * 512 ))
  root_end=$(( ($(sgdisk -i 2 disk.tmp | sed -n 's/^Last sector: \([0-9]*\).*/\1/p') + 1) * 512 ))
  truncate -s 100M esp.img
  mkfs.vfat -n ESP esp.img >/dev/null
  mmd -i esp.img ::/EFI ::/EFI/BOOT
  truncate -s $((root_end - root_start)) root.img
  mkfs.ext4 -q -F -E nodiscard -L root -d "$tree" root.img
  head -c 300M /dev/urandom > junk.bin
  debugfs -w -R "write junk.bin junk" root.img >/dev/null 2>&1
  debugfs -w -R "rm junk" root.img >/dev/null 2>&1
  rm -f junk.bin
  dd if=esp.img of=disk.tmp bs=4M seek=$esp_start oflag=seek_bytes conv=notrunc status=none
  dd if=root.img of=disk.tmp bs=4M seek=$root_start oflag=seek_bytes conv=notrunc status=none
  rm -f esp.img root.img
  echo "$root_start $root_end" > root.range
  mv disk.tmp "$disk"
fi
read -r root_start root_end < root.range

# ---- the loop-mounted copy ----------------------------------------------------------------
cp --sparse=always "$disk" mounted.raw
mkdir -p mnt
mount -o loop,ro,noload,offset="$root_start",sizelimit=$((root_end - root_start)) mounted.raw mnt
cleanup() { umount mnt 2>/dev/null || true; rm -f mounted.raw; [ -n "${KEEP:-}" ] || rm -f out.*; }
trap cleanup EXIT

measure() {   # NAME OUTPUT CMD...: median wall seconds / peak RSS KiB of RUNS runs
  local name=$1 out=$2; shift 2
  local n=${RUNS:-3} i
  : > "time.$name.all"
  for i in $(seq 1 "$n"); do
    cat "$disk" > /dev/null
    tar -C mnt -cf - . > /dev/null    # the mounted copy in the page cache too
    rm -f "$out"
    /usr/bin/time -f '%e %M %U %S' -o "time.$name" "$@" > /dev/null
    cat "time.$name" >> "time.$name.all"
  done
  read -r secs rss u s < <(sort -n "time.$name.all" | sed -n "$(( (n + 1) / 2 ))p")
  size=$(stat -c %s "$out")
  printf '%-34s %7.2f s  %7d KiB RSS  %6.2f s CPU  %12d bytes\n' "$name" "$secs" "$rss" \
    "$(echo "$u + $s" | bc)" "$size"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
gtar=(tar --format=posix --xattrs --numeric-owner --sort=name -C mnt)
measure "imgscrub export .tar"     out.i.tar     "$IMGSCRUB" export -q --partition 2 "$disk" out.i.tar
measure "GNU tar of the mount .tar" out.g.tar    "${gtar[@]}" -cf "$work/out.g.tar" .
measure "imgscrub export .tar.zst" out.i.tar.zst "$IMGSCRUB" export -q --partition 2 "$disk" out.i.tar.zst
measure "GNU tar --zstd"           out.g.tar.zst "${gtar[@]}" --zstd -cf "$work/out.g.tar.zst" .
measure "imgscrub export .tar.gz"  out.i.tar.gz  "$IMGSCRUB" export -q --partition 2 "$disk" out.i.tar.gz
measure "GNU tar --gzip"           out.g.tar.gz  "${gtar[@]}" --gzip -cf "$work/out.g.tar.gz" .
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Same tree: the listings (path, type, mode, owner, size, link target) agree.
list() { tar --numeric-owner -tvf "$1" | awk '{ $4=""; $5=""; print }' | sed 's#^\(.\{0,200\}\) \./#\1 #; s#/$##' | sort; }
if diff <(list out.i.tar) <(list out.g.tar) > listing.diff; then
  echo "listings agree ($(tar -tf out.i.tar | wc -l) entries)"
else
  echo "listings differ (first lines of $work/listing.diff):"; head -5 listing.diff
fi
