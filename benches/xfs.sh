#!/usr/bin/env bash
# The XFS benchmark (issue 11): a dirty 2 GiB GPT image whose one partition is an XFS made by
# fixtures/mkxfs.sh from ~20,000 files of a real tree, with 300 MB of random bytes written
# into its free space; and, for the per-byte comparison, an ext4 image of the same size,
# tree and dirt. Timed:
#
#   (s)  imgscrub sparsify, in place, on a fresh copy of the dirty XFS image
#   (c)  imgscrub convert --sparsify --compress zstd      dirty XFS image -> qcow2
#   (p1) the manual way: loop mount, dd if=/dev/zero into a file until the disk is full, sync
#        (without it XFS delayed allocation drops the zeros unwritten when the file is removed),
#        rm, umount; then qemu-img convert -c -o compression_type=zstd  (needs root)
#   (p2) qemu-img convert -c -o compression_type=zstd of the dirty image, nothing zeroed
#   (e)  imgscrub convert --sparsify --compress zstd      dirty ext4 image -> qcow2
#   (es) imgscrub sparsify, in place, on a fresh copy of the dirty ext4 image (reference)
#
#   benches/xfs.sh [WORKDIR]     (env: TREE=/usr/share  FILES=20000  DIRT_MB=300
#                                      IMGSCRUB=path/to/imgscrub  KEEP=1  NICE=-10
#                                      RUNS=3: runs per variant, the median is reported
#                                      AB=0: runs of (c) and (e) in turn, for the per-byte ratio)
#
# zerofree does not handle XFS, hence (p1). NICE runs every measured command (baselines and
# ours alike) at that nice level (negative values need root). Wall time, CPU time and peak
# RSS come from /usr/bin/time; every input is read before each run so that every run starts
# from the page cache. Untimed before each run: the variant's previous output is deleted, and
# in-place variants get a fresh, fully allocated copy of the dirty image (written back to
# the disk with sync, so that no writeback of the copy runs during the measurement).
#
# The images stay in WORKDIR for later runs; WORKDIR/xfs-root.img (the bare dirty XFS) is
# what `IMGSCRUB_XFS_BENCH_IMAGE=WORKDIR/xfs-root.img cargo bench -p imgscrub-xfs --bench
# free` measures.
set -euo pipefail
export PATH="$PATH:/sbin:/usr/sbin"
export LC_ALL=C

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/imgscrub-xfs-bench}
tree=${TREE:-/usr/share}
files=${FILES:-20000}
dirt_mb=${DIRT_MB:-300}
mkdir -p "$work"
work=$(cd "$work" && pwd)
cd "$work"

for t in qemu-img sgdisk mkfs.xfs xfs_db xfs_repair mkfs.ext4 debugfs e2fsck /usr/bin/time bc; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

if [ -z "${IMGSCRUB:-}" ]; then
  cargo build --release -q --manifest-path "$repo/Cargo.toml" -p imgscrub-cli
  target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  # A copy: others building in the same target directory must not replace it mid-run.
  cp "$target/release/imgscrub" "$work/imgscrub.bin"
  IMGSCRUB="$work/imgscrub.bin"
  echo "imgscrub: release build of $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')"
fi

disk_mb=2048                      # the disk
part_start=$((1 << 20))           # partition 1 at 1 MiB ...
part_mb=2046                      # ... of 2046 MiB (the GPT backup at the end stays outside)
part_len=$((part_mb << 20))

# ---- the tree: the first FILES files and symlinks of TREE, in path order --------------------
# (names with whitespace or backslashes left out: a protofile cannot express them)
if [ ! -d tree ]; then
  echo "copying $files files of $tree into $work/tree ..."
  (cd "$tree" && find . -mindepth 1 \( -type f -o -type l \) ! -path '*[[:space:]\\]*' \
     ! -lname '*[[:space:]\\]*' -print | sort | sed -n "1,${files}p") > tree.list
  rm -rf tree.tmp && mkdir tree.tmp
  tar -C "$tree" -cf - --no-recursion -T tree.list | tar -C tree.tmp -xpf -
  rm tree.list
  mv tree.tmp tree
fi

# mkdisk FS.img OUT: a fully allocated 2 GiB GPT disk with FS.img as partition 1.
mkdisk() {
  dd if=/dev/zero of=disk.tmp bs=4M count=$((disk_mb / 4)) status=none
  sgdisk -n1:$((part_start / 512)):+${part_mb}M -t1:8300 -c1:root disk.tmp >/dev/null
  dd if="$1" of=disk.tmp bs=4M seek=$part_start oflag=seek_bytes conv=notrunc status=none
  mv disk.tmp "$2"
}

# ---- the dirty XFS image ------------------------------------------------------------------
if [ ! -f xfs.raw ]; then
  echo "building $work/xfs.raw (fixtures/mkxfs.sh v5, ${part_mb} MiB) ..."
  bash "$repo/fixtures/mkxfs.sh" --size "$part_mb" v5 root.tmp "$work/tree"
  rm -rf root.tmp.manifest.tsv root.tmp.xattrs.tsv root.tmp.expect root.tmp.proto
  # DIRT_MB of random bytes in the first free extents (as `xfs_db freesp -d` lists them):
  # what a deleted file leaves behind. mkxfs.sh --dirty would fill all 1.4 GB of free space.
  bs=$(xfs_db -r -c 'sb 0' -c 'print blocksize' root.tmp | awk '{print $3}')
  agblocks=$(xfs_db -r -c 'sb 0' -c 'print agblocks' root.tmp | awk '{print $3}')
  left=$(( (dirt_mb << 20) / bs ))
  exec 3</dev/urandom
  while read -r agno agbno len; do
    [ "$left" -gt 0 ] || break
    [ "$len" -le "$left" ] || len=$left
    dd if=/dev/fd/3 of=root.tmp bs="$bs" seek=$((agno * agblocks + agbno)) count="$len" \
       conv=notrunc iflag=fullblock status=none
    left=$((left - len))
  done < <(xfs_db -r -c 'freesp -d' root.tmp | awk 'NF == 3 && $1 ~ /^[0-9]+$/ { print $1, $2, $3 } /^ *from/ { exit }')
  exec 3<&-
  xfs_repair -n root.tmp >/dev/null 2>&1 || { echo "xfs_repair -n: the dirty XFS is not clean" >&2; exit 1; }
  mkdisk root.tmp xfs.raw
  mv root.tmp xfs-root.img
fi

# ---- the dirty ext4 image (same size, tree and dirt) ------------------------------------------
if [ ! -f ext4.raw ]; then
  echo "building $work/ext4.raw (mkfs.ext4 -d, ${part_mb} MiB) ..."
  rm -f root.tmp
  truncate -s $part_len root.tmp
  mkfs.ext4 -q -F -E nodiscard -L root -d tree root.tmp
  head -c "${dirt_mb}M" /dev/urandom > junk.bin
  debugfs -w -R "write junk.bin junk" root.tmp >/dev/null 2>&1
  debugfs -w -R "rm junk" root.tmp >/dev/null 2>&1
  rm -f junk.bin
  mkdisk root.tmp ext4.raw
  rm -f root.tmp
fi
vsize=$(stat -c %s xfs.raw)

# measure NAME [-p PREP] [-i INPUT] CMD...: wall seconds, peak RSS (KiB) and CPU seconds
# (user + sys) of the run with the median wall time of RUNS runs into $secs / $rss / $cpu.
# Before each run (untimed): PREP is evaluated, INPUT (default: both dirty images) is read
# into the page cache, and the variant's output NAME.qcow2 is deleted.
measure() {
  local name=$1; shift
  local prep="" input="xfs.raw ext4.raw"
  while :; do
    case "$1" in
      -p) prep=$2; shift 2 ;;
      -i) input=$2; shift 2 ;;
      *) break ;;
    esac
  done
  local n=${RUNS:-3} i
  : > "time.$name.all"
  for i in $(seq 1 "$n"); do
    rm -f "$name.qcow2"
    [ -z "$prep" ] || eval "$prep"
    cat $input > /dev/null
    ${NICE:+nice -n "$NICE"} /usr/bin/time -f '%e %M %U %S' -o "time.$name" "$@" >/dev/null ||
      { echo "($name) failed: $*" >&2; cat "time.$name" >&2; exit 1; }
    cat "time.$name" >> "time.$name.all"
  done
  local u s
  read -r secs rss u s < <(sort -n "time.$name.all" | sed -n "$(( (n + 1) / 2 ))p")
  cpu=$(printf '%.2f' "$(echo "$u + $s" | bc)")
  all_walls[$name]=$(cut -d' ' -f1 "time.$name.all" | tr '\n' ' ')
}
declare -A all_walls
# fresh SRC DST: a fully allocated copy, on the disk, nothing left to write back.
fresh() { rm -f "$2"; cp --sparse=never "$1" "$2"; sync "$2"; }

load=$(cut -d' ' -f1-3 /proc/loadavg)
psi=$(sed -n 's/^some //p' /proc/pressure/cpu 2>/dev/null || echo n/a)

# ---- imgscrub ------------------------------------------------------------------------------
measure s -p 'fresh xfs.raw s.raw' -i s.raw "$IMGSCRUB" sparsify -q s.raw
s_secs=$secs s_rss=$rss s_cpu=$cpu
measure c -i xfs.raw "$IMGSCRUB" convert -q xfs.raw c.qcow2 --sparsify --compress zstd
c_secs=$secs c_rss=$rss c_cpu=$cpu
measure e -i ext4.raw "$IMGSCRUB" convert -q ext4.raw e.qcow2 --sparsify --compress zstd
e_secs=$secs e_rss=$rss e_cpu=$cpu
measure es -p 'fresh ext4.raw es.raw' -i es.raw "$IMGSCRUB" sparsify -q es.raw
es_secs=$secs es_rss=$rss es_cpu=$cpu
# What the converter reads of each image (bytes_read: allocated data; the rest is skipped).
c_read=$("$IMGSCRUB" convert --json xfs.raw json.qcow2 --sparsify --compress zstd | sed -n 's/.*"bytes_read": \([0-9]*\).*/\1/p')
e_read=$("$IMGSCRUB" convert --json ext4.raw json.qcow2 --sparsify --compress zstd | sed -n 's/.*"bytes_read": \([0-9]*\).*/\1/p')
rm -f json.qcow2
# AB=N: N more runs of (c) and (e) in turn (XFS, ext4, XFS, ...), so that both meet the same
# changes of load; medians of wall and CPU seconds.
if [ "${AB:-0}" -gt 0 ]; then
  : > time.ab
  for i in $(seq 1 "$AB"); do
    for fs in xfs ext4; do
      rm -f ab.qcow2; cat $fs.raw > /dev/null
      ${NICE:+nice -n "$NICE"} /usr/bin/time -f "$fs %e %U %S" -a -o time.ab \
        "$IMGSCRUB" convert -q $fs.raw ab.qcow2 --sparsify --compress zstd
    done
  done
  rm -f ab.qcow2
  median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  for fs in xfs ext4; do
    read -r "ab_${fs}_wall" < <(awk -v f=$fs '$1 == f { print $2 }' time.ab | median)
    read -r "ab_${fs}_cpu" < <(awk -v f=$fs '$1 == f { print $3 + $4 }' time.ab | median)
  done
fi

# ---- peers -----------------------------------------------------------------------------------
measure p2 -i xfs.raw qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd xfs.raw p2.qcow2
p2_secs=$secs p2_rss=$rss p2_cpu=$cpu

# (p1): zero the free space through the kernel, then qemu-img. The fill runs RUNS times on
# fresh copies (median reported); the last filled copy feeds the qemu-img runs.
p1=""
mkdir -p mnt
fill='mount -o loop,offset='$part_start' p1.raw mnt && { dd if=/dev/zero of=mnt/zero bs=1M status=none 2>/dev/null || true; sync mnt/zero; rm mnt/zero; umount mnt; }'
if [ "$(id -u)" = 0 ] && fresh xfs.raw p1.raw && mount -o loop,offset=$part_start p1.raw mnt 2>/dev/null && umount mnt; then
  measure fill -p 'fresh xfs.raw p1.raw' -i p1.raw sh -c "$fill"
  fill_secs=$secs fill_cpu=$cpu
  measure p1 -i p1.raw qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd p1.raw p1.qcow2
  p1_secs=$(echo "$fill_secs + $secs" | bc) p1_rss=$rss p1_cpu=$(printf '%.2f' "$(echo "$fill_cpu + $cpu" | bc)")
  p1=yes
else
  p1_note="(p1) skipped: the loop mount needs root and a kernel with XFS"
fi

# ---- checks -------------------------------------------------------------------------------
for f in c e p2 ${p1:+p1}; do qemu-img check -q "$f.qcow2"; done
ok=yes
qemu-img compare -q -f raw -F qcow2 s.raw c.qcow2 || ok=no
qemu-img compare -q -f raw -F qcow2 es.raw e.qcow2 || ok=no
dd if=s.raw of=s-root.img bs=4M skip=$part_start count=$part_len iflag=skip_bytes,count_bytes conv=sparse status=none
repair=clean
xfs_repair -n s-root.img >/dev/null 2>&1 || repair=NOT-CLEAN
dd if=es.raw of=s-root.img bs=4M skip=$part_start count=$part_len iflag=skip_bytes,count_bytes conv=sparse status=none
e2fsck -fn s-root.img >/dev/null 2>&1 || repair="$repair, e2fsck: NOT-CLEAN"
rm -f s-root.img

# ---- report -----------------------------------------------------------------------------------
size() { stat -c %s "$1"; }
alloc() { echo $(( $(stat -c %b "$1") * $(stat -c %B "$1") )); }
mib() { echo "scale=1; $1 / 1048576" | bc; }
mbps() { echo "scale=0; $1 / 1000000 / $2" | bc; }
ratio() { printf '%.2f' "$(echo "scale=4; ($1) / ($2)" | bc)"; }
ss=$(alloc s.raw) ses=$(alloc es.raw) sc=$(size c.qcow2) se=$(size e.qcow2) sp2=$(size p2.qcow2)
[ -z "$p1" ] || sp1=$(size p1.qcow2)
nfiles=$(find tree -type f | wc -l) nlinks=$(find tree -type l | wc -l) tree_mb=$(du -sm tree | cut -f1)

echo
echo "image: $(mib "$vsize") MiB virtual (GPT, one $part_mb MiB partition), $nfiles files + $nlinks symlinks ($tree_mb MB) of $tree, $dirt_mb MB of random bytes in free space"
echo "machine: $(nproc) CPUs, load average before the runs: $load, CPU pressure: $psi${NICE:+, nice $NICE}"
printf '%-46s %8s %8s %9s %8s %8s %10s\n' variant "wall s" "CPU s" "size MiB" "% virt" "RSS MiB" "virt MB/s"
row() { printf '%-46s %8s %8s %9s %8s %8s %10s\n' "$1" "$2" "$3" "$(mib "$4")" \
  "$(echo "scale=1; 100 * $4 / $vsize" | bc)" "$(echo "scale=1; $5 / 1024" | bc)" "$(mbps "$vsize" "$2")"; }
row "(s) imgscrub sparsify, XFS (size: allocated)" "$s_secs" "$s_cpu" "$ss" "$s_rss"
row "(c) imgscrub convert --sparsify zstd, XFS" "$c_secs" "$c_cpu" "$sc" "$c_rss"
if [ -n "$p1" ]; then
  row "(p1) mount+dd zeros+rm + qemu-img -c zstd" "$p1_secs" "$p1_cpu" "$sp1" "$p1_rss"
fi
row "(p2) qemu-img -c zstd, nothing zeroed" "$p2_secs" "$p2_cpu" "$sp2" "$p2_rss"
row "(e) imgscrub convert --sparsify zstd, ext4" "$e_secs" "$e_cpu" "$se" "$e_rss"
row "(es) imgscrub sparsify, ext4 (size: alloc.)" "$es_secs" "$es_cpu" "$ses" "$es_rss"
echo
[ -z "$p1" ] || echo "(p1): fill alone ${fill_secs}s (${fill_cpu}s CPU), qemu-img alone $(echo "$p1_secs - $fill_secs" | bc)s"
[ -z "$p1" ] || echo "wall (c) vs (p1): $(ratio "$p1_secs" "$c_secs")x  CPU: $(ratio "$p1_cpu" "$c_cpu")x  size (c)/(p1): $(printf '%.3f' "$(echo "scale=4; $sc / $sp1" | bc)")"
echo "wall (c) vs (p2): $(ratio "$p2_secs" "$c_secs")x  CPU: $(ratio "$p2_cpu" "$c_cpu")x  size (c)/(p2): $(printf '%.3f' "$(echo "scale=4; $sc / $sp2" | bc)")"
echo "per byte, XFS (c) against ext4 (e):"
echo "  virtual bytes/s: XFS $(mbps "$vsize" "$c_secs") MB/s, ext4 $(mbps "$vsize" "$e_secs") MB/s: XFS/ext4 $(ratio "$e_secs" "$c_secs")"
echo "  bytes read (allocated data): XFS $(mib "$c_read") MiB, ext4 $(mib "$e_read") MiB; per second XFS $(mbps "$c_read" "$c_secs") MB/s, ext4 $(mbps "$e_read" "$e_secs") MB/s: XFS/ext4 $(ratio "$c_read * $e_secs" "$e_read * $c_secs")"
echo "  output: XFS $(mib "$sc") MiB, ext4 $(mib "$se") MiB"
if [ "${AB:-0}" -gt 0 ]; then
  echo "  in turn, $AB runs each (medians): XFS ${ab_xfs_wall}s (${ab_xfs_cpu}s CPU), ext4 ${ab_ext4_wall}s (${ab_ext4_cpu}s CPU): XFS/ext4 per virtual byte $(ratio "$ab_ext4_wall" "$ab_xfs_wall") (wall), $(ratio "$ab_ext4_cpu" "$ab_xfs_cpu") (CPU); per byte read $(ratio "$c_read * $ab_ext4_wall" "$e_read * $ab_xfs_wall") (wall)"
fi
echo "checks: qemu-img check clean; (c) = sparsified XFS and (e) = sparsified ext4 (qemu-img compare): $ok; xfs_repair -n / e2fsck -fn of the sparsified images: $repair"
[ -z "${p1_note:-}" ] || echo "$p1_note"
echo "every run's wall seconds (median reported):"
for v in s c e es p2 ${p1:+fill p1}; do echo "  ($v) ${all_walls[$v]}"; done
[ -n "${KEEP:-}" ] || rm -f s.raw es.raw p1.raw c.qcow2 e.qcow2 p1.qcow2 p2.qcow2 time.* imgscrub.bin
