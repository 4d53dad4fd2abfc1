#!/usr/bin/env bash
# Rebuild the small XFS template images the XFS fuzz targets overlay their input on:
#   xfs-v5.img.zst  32 MiB, two AGs of 16 MiB, 1 KiB blocks, 4 KiB directory blocks, v5
#                   (CRCs, ftype, finobt, sparse inodes, bigtime, inobtcount: the mkfs.xfs 6.1
#                   defaults)
#   xfs-v4.img.zst  the same tree on a v4 filesystem (-m crc=0): no CRCs, so byte flips reach
#                   the parsers without resealing
# Both hold directories in all five forms (shortform, block, leaf, node, btree), short
# (inline) and remote symlinks, a fifo and devices, files of one and of several extents with
# holes and an unwritten extent, and extended attributes in shortform, leaf, node and btree
# form with local and remote values.
#
# Needs xfsprogs (mkfs.xfs, xfs_db, xfs_repair; 6.1 tested) and faketime (for reproducible
# timestamps). mkfs.xfs 5.19+ refuses filesystems under 300 MB unless run the way fstests
# runs it (TEST_DIR, TEST_DEV and QA_CHECK_FS set), which is what this script does; the log
# is the smallest mkfs accepts. Deterministic (fixed UUID, fake time), so a rebuild gives the
# same bytes with the same xfsprogs.
set -euo pipefail
export PATH="$PATH:/sbin:/usr/sbin" LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] && echo "kept $tmp" >&2 || rm -rf "$tmp"' EXIT
for t in mkfs.xfs xfs_db xfs_repair faketime zstd; do
  command -v "$t" >/dev/null || { echo "$0: $t is required" >&2; exit 1; }
done
FT=(faketime -f '2023-11-14 22:13:20')   # 1700000000, as the ext4 templates

# ---- the source tree ---------------------------------------------------------------------------
src=$tmp/src
mkdir -p "$src"
cd "$src"
mkdir -p etc sf block leaf node btree xattr files
echo myhost > etc/hostname
printf 'UUID=5c3a2b1e / xfs defaults 0 0\n' > etc/fstab
for i in 1 2 3; do echo "sf $i" > "sf/e$i"; done
for i in $(seq 10 34); do : > "block/entry-$i"; done                      # one directory block
for i in $(seq 1 150); do : > "leaf/leaf-entry-number-$i"; done           # data blocks + one leaf
for i in $(seq 100 619); do : > "node/n-$i"; done                         # leaf split: node
# File data and inode chunks are allocated between the directory's blocks: with long names
# the directory ends up in more extents than fit in its inode, a block-map btree (btree form).
for i in $(seq 1 360); do
  printf -v n 'btree/%s-%03d' "$(printf 'b%.0s' $(seq 1 240))" "$i"
  echo "$i" > "$n"
done
head -c 1000 /dev/zero | tr '\0' 'a' > files/small
head -c 40960 /dev/zero | tr '\0' 'b' > files/contig
head -c 16384 /dev/zero | tr '\0' 'c' > files/frag          # split into extents by xfs_db below
: > files/empty
for f in xattr/sf xattr/leaf xattr/node xattr/remote xattr/bt1 xattr/bt2; do echo "$f" > "$f"; done

# The protofile (mkfs.xfs -p): names, "type+mode uid gid", then the file, target or numbers.
# Symlinks must stay within the inode's literal area (336 bytes on v5): mkfs.xfs 6.1 writes
# longer ones without their v5 block header; the remote one gets its header from xfs_db below.
long_target=$(printf 'very/long/path/%.0s' $(seq 1 30))target    # 456 bytes: remote
proto=$tmp/proto
{
  echo "imgscrub-fuzz"
  echo "0 0"
  echo "d--755 0 0"
  for d in etc sf block leaf node btree xattr files; do
    echo "$d d--755 0 0"
    (cd "$d" && for f in $(ls); do echo "$f ---644 0 0 $src/$d/$f"; done)
    case $d in
      etc) echo "localtime l--777 0 0 ../usr/share/zoneinfo/UTC"
           echo "remote l--777 0 0 $long_target"
           echo "null c--666 0 0 1 3"
           echo "sda b--660 0 6 8 0"
           echo "fifo p--644 0 0" ;;
    esac
    echo "\$"
  done
  echo "\$"
} > "$proto"

build() { # build OUT OPTS...: mkfs, then the xfs_db edits, then xfs_repair -n
  local out=$1; shift
  rm -f "$out"
  truncate -s 32M "$out"
  TEST_DIR=/nonexistent TEST_DEV=/nonexistent QA_CHECK_FS=xfs "${FT[@]}" mkfs.xfs -q -f \
    -b size=1024 -d agcount=2 -m uuid=5c3a2b1e-0d0f-4c1a-9e7b-6a5d4c3b2a10 -L fuzz "$@" \
    -p "$proto" "$out"
  local crc bmx=u3.bmx
  crc=$(xfs_db -r -c version "$out" | grep -c CRC || true)
  [ "$crc" = 1 ] || bmx=u.bmx
  dbw() {
    "${FT[@]}" xfs_db -x "$@" "$out" >"$tmp/db.out" 2>"$tmp/db.err" || { cat "$tmp/db.err" >&2; exit 1; }
    # (The remote symlink block has no header yet when it is written: a CRC error is expected.)
    if grep -v -e '^Metadata CRC error detected' -e '^Allowing write of corrupted data' "$tmp/db.err" |
       cat - "$tmp/db.out" | grep -i -e error -e failed -e unable -e invalid -e 'bad ' -e 'not found' >&2; then
      echo "$0: xfs_db -x failed" >&2; exit 1
    fi
  }
  db() { xfs_db -r "$@" "$out"; }

  # The remote symlink's v5 header (magic, offset, length, UUID, owner, block number).
  if [ "$crc" = 1 ]; then
    local ino daddr uuid
    uuid=$(db -c 'sb 0' -c 'print uuid' | awk '{print $3}')
    ino=$(db -c 'path /etc/remote' -c inode 2>/dev/null | awk '/current inode number/ {print $NF}')
    daddr=$(db -c 'path /etc/remote' -c 'dblock 0' -c daddr 2>/dev/null | awk '{print $NF}')
    dbw -c 'path /etc/remote' -c 'dblock 0' -c 'type symlink' -c 'write -d magic 0x58534c4d' \
        -c 'write -d offset 0' -c "write -d bytes ${#long_target}" -c "write -d uuid $uuid" \
        -c "write -d owner $ino" -c "write -d bno $daddr" -c 'write -d lsn 0' \
        -c "write -d data \"$long_target\""
  fi

  # files/frag (16 blocks at B): data 4, hole 4, data 4, unwritten 4 - four extents, no
  # block changing owner.
  local B
  B=$(db -c 'path /files/frag' -c "print $bmx[0].startblock" | awk '{print $3}')
  dbw -c 'path /files/frag' -c 'write core.nextents 3' \
      -c "write $bmx[0].blockcount 4" \
      -c "write $bmx[1].startoff 8" -c "write $bmx[1].startblock $((B + 4))" \
      -c "write $bmx[1].blockcount 4" -c "write $bmx[1].extentflag 0" \
      -c "write $bmx[2].startoff 12" -c "write $bmx[2].startblock $((B + 8))" \
      -c "write $bmx[2].blockcount 8" -c "write $bmx[2].extentflag 1"

  # Extended attributes: shortform, leaf (one block), node (a da-btree), remote values, and
  # two files whose attribute blocks interleave (more extents than the inode holds: btree).
  local args=(-c 'path /xattr/sf' -c 'attr_set -u -v 5 comment' -c 'attr_set -r -v 1 overlay.opaque'
              -c 'attr_set -s -v 20 selinux' -c 'path /etc/hostname' -c 'attr_set -s -v 20 selinux'
              -c 'path /xattr/leaf')
  for i in $(seq 1 12); do args+=(-c "attr_set -u -v $((i * 5)) leaf-attr-$i"); done
  args+=(-c 'path /xattr/node')
  for i in $(seq 1 120); do args+=(-c "attr_set -u -v $((i % 40 + 1)) node-attr-$i"); done
  # (xfs_db 6.1 crashes on v4 when the first attribute of a file is remote: a small one first.)
  args+=(-c 'path /xattr/remote' -c 'attr_set -u -v 1 small' -c 'attr_set -u -v 3000 remote-value'
         -c 'attr_set -r -v 900 big-trusted')
  for i in $(seq 1 25); do
    for f in bt1 bt2; do
      args+=(-c "path /xattr/$f")
      for j in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18; do args+=(-c "attr_set -u -v 24 $f-attr-$i-$j"); done
    done
  done
  dbw "${args[@]}"

  xfs_repair -n "$out" >"$tmp/repair" 2>&1 || { cat "$tmp/repair" >&2; exit 1; }
  for p in /sf /block /leaf /node /btree; do
    printf '%s: %s\n' "$p" "$(db -c "path $p" -c 'print core.format core.nextents' | tr '\n' ' ')"
  done
  for p in /xattr/sf /xattr/leaf /xattr/node /xattr/remote /xattr/bt1; do
    printf '%s: %s\n' "$p" "$(db -c "path $p" -c 'print core.aformat core.naextents' | tr '\n' ' ')"
  done
}

build "$tmp/v5.img"
zstd -19 -q -f --no-progress "$tmp/v5.img" -o "$here/xfs-v5.img.zst"
build "$tmp/v4.img" -m crc=0
zstd -19 -q -f --no-progress "$tmp/v4.img" -o "$here/xfs-v4.img.zst"
ls -l "$here"/xfs-*.zst

# ---- seeds of xfs_open: a whole filesystem in its first 64 KiB -----------------------------------
# mkfs.xfs makes no AG under 16 MiB, so a real filesystem never fits a fuzz input. But with two
# AGs, AG 0 holds the headers, the btree roots, the root inode chunk and the first data blocks
# in its first 64 blocks, and the log goes to AG 1. Editing the superblock to one AG with the
# log moved to a free (zero) area of AG 0 gives a consistent filesystem whose bytes past 64 KiB
# are all zero: the input, zero-padded, is the whole filesystem.
seeds=$here/../../../fuzz/seeds/xfs_open
mkdir -p "$seeds"
mkdir -p "$tmp/small"
echo hello > "$tmp/small/file"
printf 'x\n0 0\nd--755 0 0\nfile ---644 0 0 %s\nlink l--777 0 0 file\nfifo p--644 0 0\nnull c--666 0 0 1 3\n$\n$\n' \
  "$tmp/small/file" > "$tmp/small.proto"
for v in 5 4; do
  img=$tmp/small-v$v.img
  truncate -s 32M "$img"
  TEST_DIR=/nonexistent TEST_DEV=/nonexistent QA_CHECK_FS=xfs "${FT[@]}" mkfs.xfs -q -f -b size=1024 \
    -d agcount=2 -m uuid=5c3a2b1e-0d0f-4c1a-9e7b-6a5d4c3b2a10,crc=$((v == 5)) -p "$tmp/small.proto" \
    "$img" 2>/dev/null
  xfs_db -x -c 'path /' -c 'attr_set -u -v 6 seed' -c 'sb 0' -c 'write -d agcount 1' \
    -c 'write -d dblocks 16384' -c 'write -d logstart 8192' "$img" >/dev/null
  cmp -s <(tail -c +65537 "$img" | head -c $((16384 * 1024 - 65536))) <(head -c $((16384 * 1024 - 65536)) /dev/zero) ||
    { echo "$0: small-v$v: AG 0 is not zero past 64 KiB" >&2; exit 1; }
  # The seed ends with the last inode in use: the rest of the inode chunk holds free inodes,
  # which nothing reads.
  last=$(xfs_db -r -c 'path /' -c ls "$img" | awk '$2 ~ /^[0-9]+$/ && $2 > m { m = $2 } END { print m }')
  at=$(xfs_db -r -c "convert inode $last byte" "$img" | sed 's/.*(\([0-9]*\)).*/\1/')
  isize=$(xfs_db -r -c 'sb 0' -c 'print inodesize' "$img" | awk '{print $3}')
  head -c $((at + isize)) "$img" > "$seeds/v$v-one-ag"
done
ls -l "$seeds"
