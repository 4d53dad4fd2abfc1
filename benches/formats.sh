#!/usr/bin/env bash
# Cloud formats out (issue 14): the dirty 2 GiB image of benches/shrink.sh converted to a
# streamOptimized VMDK and to a fixed VHD, by imgscrub and by qemu-img, same run, hyperfine.
#
#   benches/formats.sh [WORKDIR]      (env: RUNS=3  IMGSCRUB=path/to/imgscrub)
#
#   (v1) imgscrub convert --output-format vmdk               (every core, deterministic; level 9)
#   (v6) imgscrub convert --output-format vmdk --level 6     (qemu-img's level)
#   (v2) qemu-img convert -O vmdk -o subformat=streamOptimized
#   (v3) imgscrub convert --sparsify --output-format vmdk     (free space never read)
#   (h1) imgscrub convert --output-format vhd                 (fixed, whole MiB)
#   (h2) qemu-img convert -O vpc -o subformat=fixed,force_size
#
# Prints hyperfine's table and the output sizes. The image stays in the page cache.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-${TMPDIR:-/tmp}/imgscrub-shrink-bench}
runs=${RUNS:-3}
command -v hyperfine >/dev/null || { echo "missing tool: hyperfine" >&2; exit 1; }
ONLY_IMAGE=1 IMGSCRUB=${IMGSCRUB:-true} "$repo/benches/shrink.sh" "$work"
if [ -z "${IMGSCRUB:-}" ]; then
  cargo build --release -q --manifest-path "$repo/Cargo.toml" -p imgscrub-cli
  target=$(cargo metadata --format-version 1 --no-deps --manifest-path "$repo/Cargo.toml" |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  IMGSCRUB="$target/release/imgscrub"
fi
cd "$work"
cat dirty.raw > /dev/null
hyperfine --runs "$runs" --export-markdown formats.md \
  -n "v1 imgscrub vmdk" "$IMGSCRUB convert -q --output-format vmdk dirty.raw v1.vmdk" \
  -n "v6 imgscrub vmdk --level 6" "$IMGSCRUB convert -q --level 6 --output-format vmdk dirty.raw v6.vmdk" \
  -n "v2 qemu-img vmdk streamOptimized" "qemu-img convert -O vmdk -o subformat=streamOptimized dirty.raw v2.vmdk" \
  -n "v3 imgscrub vmdk --sparsify" "$IMGSCRUB convert -q --sparsify --output-format vmdk dirty.raw v3.vmdk" \
  -n "h1 imgscrub vhd fixed" "$IMGSCRUB convert -q --output-format vhd dirty.raw h1.vhd" \
  -n "h2 qemu-img vpc fixed" "qemu-img convert -O vpc -o subformat=fixed,force_size dirty.raw h2.vhd"
for f in v1.vmdk v6.vmdk v2.vmdk v3.vmdk h1.vhd h2.vhd; do
  printf '%-8s %12d bytes  %10d KiB allocated\n' "$f" "$(stat -c %s "$f")" "$(du -k "$f" | cut -f1)"
done
qemu-img compare v1.vmdk dirty.raw
qemu-img compare -F vpc dirty.raw h1.vhd
rm -f v1.vmdk v6.vmdk v2.vmdk v3.vmdk h1.vhd h2.vhd
