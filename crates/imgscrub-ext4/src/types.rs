//! The public vocabulary of the engine: what `stat` and `read_dir` return. File types,
//! timestamps, attributes and free ranges are the vocabulary every engine shares
//! (`imgscrub-vocab`), re-exported here so that engine code names them as before.

pub use imgscrub_vocab::{FileType, FreeRange, NewAttr, SetAttr, Timestamp};

/// What `stat` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub ino: u32,
    pub file_type: FileType,
    /// Permission bits including setuid/setgid/sticky (`i_mode & 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
    /// Device number (major, minor) for character and block devices.
    pub rdev: Option<(u32, u32)>,
    /// 512-byte sectors allocated (data + metadata blocks), as `stat(2)` counts them.
    pub blocks_512: u64,
    /// Inode flags (`i_flags`: EXTENTS, INLINE_DATA, INDEX, …).
    pub flags: u32,
    pub generation: u32,
}

/// One directory entry as `read_dir` returns it ("." and ".." are not included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub ino: u32,
    /// From the entry's file_type byte when the filesystem has the filetype feature,
    /// otherwise from the inode.
    pub file_type: FileType,
}
