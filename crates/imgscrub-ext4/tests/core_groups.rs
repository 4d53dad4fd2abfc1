#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Multi-group layouts: allocation spilling into BLOCK_UNINIT / INODE_UNINIT groups (flex_bg,
//! no flex_bg, crc16 gdt_csum, meta_bg with several meta groups), then freeing it all again;
//! e2fsck -fn after each step, free space map consistent with the counters.

mod core_common;

use core_common::*;
use imgscrub_ext4::{NewAttr, Timestamp};

#[test]
fn allocation_across_uninit_groups() {
    imgscrub_testkit::require_tools!("mke2fs", "e2fsck");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    build_tree(&src);
    let layouts: &[(&str, &[&str], u32)] = &[
        ("flex4k", &["-t", "ext4", "-b", "4096"], 300),
        (
            "noflex1k",
            &["-t", "ext4", "-b", "1024", "-O", "^flex_bg"],
            48,
        ),
        (
            "uninit_bg",
            &["-t", "ext4", "-b", "1024", "-O", "^metadata_csum,uninit_bg"],
            48,
        ),
        (
            "metabg1k",
            &["-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"],
            160,
        ),
        ("ext2-1k", &["-t", "ext2", "-b", "1024"], 48),
        (
            "sparse2",
            &["-t", "ext4", "-b", "1024", "-O", "sparse_super2"],
            48,
        ),
    ];
    let attr = NewAttr {
        time: Some(Timestamp::new(1_700_000_000, 0)),
        ..NewAttr::default()
    };
    for &(name, opts, size) in layouts {
        let Some(img) = image_with(opts, &src, &tmp.path().join(format!("{name}.img")), size)
        else {
            return;
        };
        let mut fs = open_rw(&img);
        let sb = fs.superblock();
        assert!(sb.group_count > 2, "{name}: only {} groups", sb.group_count);
        let group_bytes = u64::from(sb.blocks_per_group) * u64::from(sb.block_size);
        let ipg = sb.inodes_per_group;
        let root = fs.root();
        // A file larger than a group, written in chunks.
        let big = fs.create(root, b"big", &attr).unwrap();
        let len = (group_bytes * 3 / 2) as usize;
        let data = pattern(len, 9);
        for (i, chunk) in data.chunks(1 << 20).enumerate() {
            fs.write(big, (i as u64) << 20, chunk).unwrap();
        }
        // More inodes than one group holds.
        let d = fs.mkdir(root, b"many", &attr).unwrap();
        let mut last = 0;
        for i in 0..ipg + 50 {
            last = fs.create(d, format!("f{i}").as_bytes(), &attr).unwrap();
        }
        assert!(last > ipg, "{name}: inode {last} did not leave group 0");
        let sub = fs.mkdir(d, b"sub", &attr).unwrap();
        let leaf = fs.create(sub, b"leaf", &attr).unwrap();
        fs.write(leaf, 0, b"deep").unwrap();
        fs.flush().unwrap();
        strict_fsck(&img, "");
        assert_eq!(fs.read_to_vec(big).unwrap(), data, "{name}");
        check_free(&fs, name);

        fs.remove_tree(root, b"many").unwrap();
        fs.unlink(root, b"big").unwrap();
        fs.flush().unwrap();
        strict_fsck(&img, "");
        check_free(&fs, name);
        drop(fs);
        assert_eq!(our_tree(&open_ro(&img)), host_tree(&src), "{name}");
    }
}

fn check_free<D: imgscrub_disk::BlockDev>(fs: &imgscrub_ext4::Ext4Fs<D>, name: &str) {
    let bs = u64::from(fs.block_size());
    let free = fs.free_ranges().unwrap();
    let total: u64 = free.iter().map(|r| r.len).sum();
    assert_eq!(total / bs, fs.superblock().free_blocks_count(), "{name}");
    for w in free.windows(2) {
        assert!(w[0].offset + w[0].len < w[1].offset, "{name}");
    }
}
