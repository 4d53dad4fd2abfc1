#!/usr/bin/env bash
# Benchmark: `imgscrub prepare --profile linux` in place on a 2 GiB GPT disk whose ext4 root
# holds a Debian 12 tree plus ~20,000 files (issue target: at most 1 s on a 2-core machine;
# virt-sysprep needs about 26 s for the same job).
#
#   benches/prepare.sh [WORKDIR]          (env: FILES=20000 RUNS=10 IMGSCRUB=path)
#
# Each timed run starts from a fresh copy of the dirty disk (hyperfine --prepare), so every
# run does the whole scrub. Uses hyperfine when installed, else /usr/bin/time.
set -euo pipefail
export PATH="$PATH:/sbin:/usr/sbin"
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/imgscrub-prepare-bench.XXXXXX)}
files=${FILES:-20000}
runs=${RUNS:-10}
mkdir -p "$work"
cd "$work"

for t in sgdisk mkfs.ext4 qemu-img; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
cargo build --release -q --manifest-path "$repo/Cargo.toml" -p imgscrub-cli -p imgscrub-prepare --examples --bins
target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
IMGSCRUB=${IMGSCRUB:-$target/release/imgscrub}
tree_tool="$target/release/examples/make_distro_tree"

# ---- the guest: a Debian 12 tree with per-instance state, plus $files ordinary files ------
rm -rf tree && mkdir tree
"$tree_tool" debian12 tree
mkdir -p tree/usr/share/bench
for d in $(seq 1 100); do
  mkdir -p "tree/usr/share/bench/d$d"
  for f in $(seq 1 $((files / 100))); do echo "file $d/$f" > "tree/usr/share/bench/d$d/f$f"; done
done
# Logs and caches worth scrubbing.
for i in $(seq 1 200); do head -c 20000 /dev/urandom > "tree/var/log/app$i.log"; done
echo "files in the guest: $(find tree | wc -l)"

# ---- a 2 GiB GPT disk: 100 MiB ESP (left empty) + ext4 root -------------------------------
truncate -s 2G disk.img
sgdisk -n1:2048:+100M -t1:ef00 -n2:0:0 -t2:8300 disk.img >/dev/null
start=$(( $(sgdisk -i2 disk.img | sed -n 's/^First sector: \([0-9]*\).*/\1/p') * 512 ))
size=$(( ($(sgdisk -i2 disk.img | sed -n 's/^Last sector: \([0-9]*\).*/\1/p') + 1) * 512 - start ))
truncate -s "$size" root.ext4
mkfs.ext4 -q -F -d tree root.ext4
dd if=root.ext4 of=disk.img bs=4M seek="$start" oflag=seek_bytes conv=notrunc,sparse status=none
rm root.ext4
cp --sparse=always disk.img base.img

# ---- timing -------------------------------------------------------------------------------
echo "imgscrub: $IMGSCRUB"
if command -v hyperfine >/dev/null; then
  hyperfine --runs "$runs" --warmup 1 \
    --prepare "cp --sparse=always base.img work.img" \
    "$IMGSCRUB prepare work.img --profile linux -q"
else
  for i in $(seq 1 "$runs"); do
    cp --sparse=always base.img work.img
    /usr/bin/time -f "%e s wall, %M KiB peak" "$IMGSCRUB" prepare work.img --profile linux -q >/dev/null
  done
fi
cp --sparse=always base.img report.img
"$IMGSCRUB" prepare report.img --profile linux --json | grep -c '"action"' | sed 's/^/steps per run: /'
echo "work directory: $work"
