#!/usr/bin/env bash
# Rebuild the small FAT template images the fat fuzz target overlays its input on:
#   fat12.img.gz   1 MiB FAT12 (mkfs.vfat), an ESP-like tree: EFI/BOOT/BOOTX64.EFI,
#                  loader/random-seed, long names, a subdirectory of 12 long-named entries (three
#                  directory clusters), a fragmented file, deleted entries
#   fat16.img.gz   4 MiB FAT16, the same tree
# Needs dosfstools and mtools. Deterministic enough for a template: fixed volume id and
# --invariant (mtools stamps the current time, so a rebuild differs in timestamps only).
set -euo pipefail
export PATH="$PATH:/sbin:/usr/sbin"
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build() { # name size-KiB fat-bits
  local img=$tmp/$1.img
  mkfs.vfat -C --invariant -i 1234abcd -F "$3" -s 1 -n IMGSCRUB "$img" "$2" >/dev/null
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$img" ::EFI ::EFI/BOOT ::loader ::many
  head -c 5000 /dev/zero | tr '\0' 'E' > "$tmp/efi"
  mcopy -i "$img" "$tmp/efi" ::EFI/BOOT/BOOTX64.EFI
  head -c 32 /dev/zero | tr '\0' 'r' > "$tmp/seed"
  mcopy -i "$img" "$tmp/seed" ::loader/random-seed
  echo 'default arch' > "$tmp/conf"
  mcopy -i "$img" "$tmp/conf" "::loader/A Long File Name.conf"
  for i in $(seq 1 12); do
    echo "$i" > "$tmp/m"
    mcopy -i "$img" "$tmp/m" "::many/entry number $i.txt"
  done
  for i in 1 2 3 4 5 6; do
    head -c 700 /dev/zero | tr '\0' "$i" > "$tmp/f"
    mcopy -i "$img" "$tmp/f" "::frag$i"
  done
  mdel -i "$img" ::frag2 ::frag4 "::many/entry number 7.txt"
  head -c 3000 /dev/zero | tr '\0' 'F' > "$tmp/f"
  mcopy -i "$img" "$tmp/f" ::fragmented
  fsck.vfat -n "$img" >/dev/null
  gzip -9n < "$img" > "$here/$1.img.gz"
}
build fat12 1024 12
build fat16 4096 16
ls -l "$here"/fat*.gz
