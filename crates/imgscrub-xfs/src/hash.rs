//! The name hash of directories and extended attributes (`xfs_da_hashname`): leaf blocks and
//! da-btree nodes are ordered by it. Filesystems made with `-n version=ci` (the `ascii-ci`
//! superblock bit) hash directory names case-folded (ASCII letters only), so that lookups that
//! ignore case land on the same hash; attribute names are always hashed as they are.

/// Hash of `name` as directory and attribute blocks store it.
pub fn da_hashname(name: &[u8]) -> u32 {
    hash_with(name, |c| c)
}

/// Hash of a directory entry name on an `ascii-ci` filesystem.
pub fn ascii_ci_hashname(name: &[u8]) -> u32 {
    hash_with(name, |c| c.to_ascii_lowercase())
}

/// The hash of a directory entry name on a filesystem with (`ci`) or without case folding.
pub fn dir_hashname(name: &[u8], ci: bool) -> u32 {
    if ci {
        ascii_ci_hashname(name)
    } else {
        da_hashname(name)
    }
}

fn hash_with(name: &[u8], f: impl Fn(u8) -> u8) -> u32 {
    let c = |i: usize| u32::from(f(name.get(i).copied().unwrap_or(0)));
    let mut hash: u32 = 0;
    let mut i = 0;
    let mut left = name.len();
    while left >= 4 {
        hash = (c(i) << 21) ^ (c(i + 1) << 14) ^ (c(i + 2) << 7) ^ c(i + 3) ^ hash.rotate_left(28);
        i += 4;
        left -= 4;
    }
    match left {
        3 => (c(i) << 14) ^ (c(i + 1) << 7) ^ c(i + 2) ^ hash.rotate_left(21),
        2 => (c(i) << 7) ^ c(i + 1) ^ hash.rotate_left(14),
        1 => c(i) ^ hash.rotate_left(7),
        _ => hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_xfs_db_hash() {
        // Values printed by `xfs_db -c 'hash NAME'` (xfsprogs 6.1).
        assert_eq!(da_hashname(b"ABC"), 0x0010_6143);
        assert_eq!(da_hashname(b"abc"), 0x0018_7163);
        assert_eq!(da_hashname(b"hello"), 0x8cbb_3669);
        assert_eq!(da_hashname(b"ab"), 0x30e2);
        assert_eq!(da_hashname(b"abcdefg"), 0x3c98_f471);
        assert_eq!(da_hashname(b""), 0);
    }

    #[test]
    fn ci_folds_ascii_letters_only() {
        assert_eq!(ascii_ci_hashname(b"ABC"), da_hashname(b"abc"));
        assert_eq!(dir_hashname(b"HeLLo", true), da_hashname(b"hello"));
        assert_eq!(dir_hashname(b"HeLLo", false), da_hashname(b"HeLLo"));
        assert_eq!(ascii_ci_hashname(&[0xc4]), da_hashname(&[0xc4]));
    }
}
