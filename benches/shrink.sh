#!/usr/bin/env bash
# The shrink benchmark: a dirty 2 GiB GPT image (FAT ESP + ext4 root populated from a real
# directory tree, 300 MB of random data written then deleted), shrunk four ways:
#
#   (a) zerofree + qemu-img convert -c                         (zlib)
#   (b) zerofree + qemu-img convert -c -o compression_type=zstd
#   (c) imgscrub convert --sparsify --compress zstd            (one pass, input read-only)
#   (d) imgscrub convert --sparsify --compress zlib
#   (d9) the same with --level 9, for reference
#
#   benches/shrink.sh [WORKDIR]        (env: TREE=/usr/share  IMGSCRUB="cmd"  KEEP=1  NICE=-10
#                                            ONLY_IMAGE=1: build the image and stop
#                                            RUNS=3: runs per variant, the median is reported)
#
# NICE runs every measured command (baselines and ours alike) at that nice level, which
# gives steadier figures on a machine shared with other jobs (negative values need root).
#
# zerofree works on a filesystem image, so the root partition is copied out, zerofreed and
# copied back; only zerofree itself is timed (as if it ran on a loop device). The same
# zerofreed disk feeds (a) and (b), and zerofree's time is added to both. Wall time and peak
# RSS come from /usr/bin/time; the image stays in the page cache for every run.
set -euo pipefail
export PATH="$PATH:/sbin:/usr/sbin"
LC_ALL=C

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/imgscrub-shrink-bench}
tree=${TREE:-/usr/share}
mkdir -p "$work"
cd "$work"

for t in qemu-img zerofree sgdisk mkfs.vfat mcopy mkfs.ext4 debugfs /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

if [ -z "${IMGSCRUB:-}" ]; then
  cargo build --release -q --manifest-path "$repo/Cargo.toml" -p imgscrub-cli
  target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  IMGSCRUB="$target/release/imgscrub convert -q"
fi

# ---- the dirty image --------------------------------------------------------------------
disk=dirty.raw
if [ ! -f "$disk" ]; then
  echo "building $work/$disk from $tree ..."
  dd if=/dev/zero of=disk.tmp bs=4M count=512 status=none          # fully allocated 2 GiB
  sgdisk -n1:2048:+100M -t1:EF00 -c1:ESP -n2:0:0 -t2:8300 -c2:root disk.tmp >/dev/null
  esp_start=$((2048 * 512))
  root_start=$(( $(sgdisk -i 2 disk.tmp | sed -n 's/^First sector: \([0-9]*\).*/\1/p') * 512 ))
  root_end=$(( ($(sgdisk -i 2 disk.tmp | sed -n 's/^Last sector: \([0-9]*\).*/\1/p') + 1) * 512 ))

  truncate -s 100M esp.img
  mkfs.vfat -n ESP esp.img >/dev/null
  mmd -i esp.img ::/EFI ::/EFI/BOOT
  find /usr/lib -maxdepth 2 -name '*.so*' -type f -size -2M | head -40 |
    xargs -r -I{} mcopy -i esp.img {} ::/EFI/BOOT/ 2>/dev/null || true

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
[ -n "${ONLY_IMAGE:-}" ] && exit 0   # benches/formats.sh: just the image
read -r root_start root_end < root.range
root_len=$((root_end - root_start))
vsize=$(stat -c %s "$disk")

# measure NAME CMD...: wall seconds, peak RSS (KiB) and CPU seconds (user + sys) into
# $secs / $rss / $cpu: the run with the median wall time of RUNS runs (default 3; zerofree,
# which changes its input, runs once). The files are read before each run so that every run
# starts from the page cache, and the variant's previous output ($name.qcow2) is deleted.
measure() {
  local name=$1; shift
  local n=${RUNS:-3}
  [ "$name" = zerofree ] && n=1
  local i
  : > "time.$name.all"
  for i in $(seq 1 "$n"); do
    cat "$disk" zf.raw > /dev/null 2>&1 || true
    # Every run writes a new file: deleting the previous output (qemu-img truncates it, we
    # replace it) is file-system work common to both, left out of the timing.
    rm -f "$name.qcow2"
    ${NICE:+nice -n "$NICE"} /usr/bin/time -f '%e %M %U %S' -o "time.$name" "$@" >/dev/null
    cat "time.$name" >> "time.$name.all"
  done
  local u s
  read -r secs rss u s < <(sort -n "time.$name.all" | sed -n "$(( (n + 1) / 2 ))p")
  cpu=$(echo "$u + $s" | bc)
  all_walls[$name]=$(cut -d' ' -f1 "time.$name.all" | tr '\n' ' ')
}
declare -A all_walls

load=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- baselines: zerofree, then qemu-img convert -c ----------------------------------------
cp --sparse=never "$disk" zf.raw
dd if=zf.raw of=zf-root.img bs=4M skip=$root_start count=$root_len iflag=skip_bytes,count_bytes status=none
dd if=zf-root.img of=sb.orig bs=1024 skip=1 count=1 status=none
measure zerofree zerofree zf-root.img
zf_secs=$secs zf_cpu=$cpu
# zerofree rewrites the superblock on close (write time); restore it so that the outputs can
# be compared byte for byte (only the free blocks differ from the dirty image).
dd if=sb.orig of=zf-root.img bs=1024 seek=1 conv=notrunc status=none
dd if=zf-root.img of=zf.raw bs=4M seek=$root_start oflag=seek_bytes conv=notrunc status=none
rm -f zf-root.img sb.orig

measure a qemu-img convert -c -f raw -O qcow2 zf.raw a.qcow2
a_secs=$(echo "$zf_secs + $secs" | bc) a_rss=$rss a_cpu=$(echo "$zf_cpu + $cpu" | bc)
measure b qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd zf.raw b.qcow2
b_secs=$(echo "$zf_secs + $secs" | bc) b_rss=$rss b_cpu=$(echo "$zf_cpu + $cpu" | bc)

# ---- imgscrub: one pass over the dirty image ------------------------------------------------
measure c $IMGSCRUB "$disk" c.qcow2 --sparsify --compress zstd
c_secs=$secs c_rss=$rss c_cpu=$cpu
measure d $IMGSCRUB "$disk" d.qcow2 --sparsify --compress zlib
d_secs=$secs d_rss=$rss d_cpu=$cpu
# For reference: zlib level 9 (zlib-rs level 6 packs slightly worse than C zlib level 6).
measure d9 $IMGSCRUB "$disk" d9.qcow2 --sparsify --compress zlib --level 9
d9_secs=$secs d9_rss=$rss d9_cpu=$cpu

# ---- checks -------------------------------------------------------------------------------
for f in a b c d d9; do qemu-img check -q "$f.qcow2"; done
ok=yes
for f in c d d9; do
  qemu-img compare -q -f raw -F qcow2 zf.raw "$f.qcow2" || ok=no
done

size() { stat -c %s "$1"; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
sa=$(size a.qcow2) sb=$(size b.qcow2) sc=$(size c.qcow2) sd=$(size d.qcow2) sd9=$(size d9.qcow2)

echo
echo "image: $(mib "$vsize") MiB virtual, tree $tree, zerofree alone ${zf_secs}s (${zf_cpu}s CPU)"
echo "machine: $(nproc) CPUs, load average before the runs: $load${NICE:+, nice $NICE}"
printf '%-44s %9s %9s %11s %10s %9s\n' variant "wall s" "CPU s" "size MiB" "% of raw" "RSS MiB"
row() { printf '%-44s %9s %9s %11s %10s %9s\n' "$1" "$2" "$3" "$(mib "$4")" \
  "$(echo "scale=1; 100 * $4 / $vsize" | bc)" "$(echo "scale=1; $5 / 1024" | bc)"; }
row "(a) zerofree + qemu-img convert -c (zlib)" "$a_secs" "$a_cpu" "$sa" "$a_rss"
row "(b) zerofree + qemu-img convert -c (zstd)" "$b_secs" "$b_cpu" "$sb" "$b_rss"
row "(c) imgscrub convert --sparsify zstd" "$c_secs" "$c_cpu" "$sc" "$c_rss"
row "(d) imgscrub convert --sparsify zlib" "$d_secs" "$d_cpu" "$sd" "$d_rss"
row "(d9) the same, --level 9" "$d9_secs" "$d9_cpu" "$sd9" "$d9_rss"
echo
echo "wall (c) vs (b): $(echo "scale=2; $b_secs / $c_secs" | bc)x  CPU: $(echo "scale=2; $b_cpu / $c_cpu" | bc)x  size (c)/(b): $(echo "scale=3; $sc / $sb" | bc)"
echo "wall (d) vs (a): $(echo "scale=2; $a_secs / $d_secs" | bc)x  CPU: $(echo "scale=2; $a_cpu / $d_cpu" | bc)x  size (d)/(a): $(echo "scale=3; $sd / $sa" | bc)"
echo "wall (d9) vs (a): $(echo "scale=2; $a_secs / $d9_secs" | bc)x  CPU: $(echo "scale=2; $a_cpu / $d9_cpu" | bc)x  size (d9)/(a): $(echo "scale=3; $sd9 / $sa" | bc)"
echo "outputs equal to the zerofreed image (qemu-img compare): $ok"
echo "every run's wall seconds (median reported; (a) and (b) without zerofree's ${zf_secs}s):"
for v in a b c d d9; do echo "  ($v) ${all_walls[$v]}"; done
[ -n "${KEEP:-}" ] || rm -f zf.raw a.qcow2 b.qcow2 c.qcow2 d.qcow2 d9.qcow2 time.*
