//! The vocabulary every filesystem engine of imgscrub (ext2/3/4, XFS, …) shares with the
//! layers above it: file types, timestamps, attributes of new files, attribute changes and
//! free-space runs. Engines depend on this crate and never on each other.

/// Kind of an inode, from the top bits of `i_mode` (and the dirent file_type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileType {
    /// From `i_mode & 0o170000`. `None` for an invalid type.
    pub fn from_mode(mode: u16) -> Option<Self> {
        Some(match mode & 0o170000 {
            0o100000 => FileType::Regular,
            0o040000 => FileType::Directory,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            _ => return None,
        })
    }

    /// The `S_IF*` bits for `i_mode`.
    pub fn mode_bits(self) -> u16 {
        match self {
            FileType::Regular => 0o100000,
            FileType::Directory => 0o040000,
            FileType::Symlink => 0o120000,
            FileType::CharDevice => 0o020000,
            FileType::BlockDevice => 0o060000,
            FileType::Fifo => 0o010000,
            FileType::Socket => 0o140000,
        }
    }

    /// The directory-entry `file_type` byte (filetype feature): 1 reg … 7 symlink.
    pub fn dirent_type(self) -> u8 {
        match self {
            FileType::Regular => 1,
            FileType::Directory => 2,
            FileType::CharDevice => 3,
            FileType::BlockDevice => 4,
            FileType::Fifo => 5,
            FileType::Socket => 6,
            FileType::Symlink => 7,
        }
    }

    /// From a directory-entry `file_type` byte; `None` for 0 (unknown) or invalid values.
    pub fn from_dirent_type(t: u8) -> Option<Self> {
        Some(match t {
            1 => FileType::Regular,
            2 => FileType::Directory,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => return None,
        })
    }
}

/// Seconds since the epoch plus nanoseconds (nanoseconds are kept only with large inodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nsecs: u32,
}

impl Timestamp {
    pub fn new(secs: i64, nsecs: u32) -> Self {
        Timestamp { secs, nsecs }
    }

    /// The system clock now (the epoch if the clock is before it).
    pub fn now() -> Self {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp::new(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            Err(_) => Timestamp::default(),
        }
    }

    /// The UTC calendar time: `(year, month 1..=12, day 1..=31, hour, minute, second)`,
    /// proleptic Gregorian (civil-from-days), for any `secs`.
    pub fn utc(&self) -> (i64, u32, u32, u32, u32, u32) {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // Every value below is in range by construction (rem < 86 400, 1 <= month <= 12…).
        let n = |v: i64| u32::try_from(v).unwrap_or(0);
        (
            year,
            n(month),
            n(day),
            n(rem / 3600),
            n(rem / 60 % 60),
            n(rem % 60),
        )
    }
}

/// Attributes of a new inode. `time` defaults to "now" when `None`; imgscrub passes a fixed
/// time when the user asks for reproducible output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttr {
    /// Permission bits (`0o7777` mask applied).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub time: Option<Timestamp>,
}

impl Default for NewAttr {
    fn default() -> Self {
        NewAttr {
            perm: 0o644,
            uid: 0,
            gid: 0,
            time: None,
        }
    }
}

/// Changes for `set_attr`; `None` leaves a field as it is. ctime is set to `ctime` or now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
}

/// A run of free space, in bytes from the start of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeRange {
    pub offset: u64,
    pub len: u64,
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn utc_calendar() {
        assert_eq!(Timestamp::new(0, 0).utc(), (1970, 1, 1, 0, 0, 0));
        assert_eq!(
            Timestamp::new(1_700_000_000, 0).utc(),
            (2023, 11, 14, 22, 13, 20)
        );
        assert_eq!(Timestamp::new(951_782_400, 0).utc(), (2000, 2, 29, 0, 0, 0));
        assert_eq!(Timestamp::new(-1, 0).utc(), (1969, 12, 31, 23, 59, 59));
    }
}

/// Why a name cannot be a new directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadName {
    /// Longer than 255 bytes (the length is given).
    TooLong(usize),
    /// Empty, `.`, `..`, or holding `/` or NUL.
    Invalid,
}

/// Check a new directory entry name, before anything is allocated for it (the rule every
/// Linux filesystem shares).
pub fn check_entry_name(name: &[u8]) -> Result<(), BadName> {
    if name.len() > 255 {
        return Err(BadName::TooLong(name.len()));
    }
    if name.is_empty() || name == b"." || name == b".." || name.iter().any(|&c| c == b'/' || c == 0)
    {
        return Err(BadName::Invalid);
    }
    Ok(())
}
