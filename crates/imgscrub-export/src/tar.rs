//! The tar encoding: 512-byte ustar headers and pax extended headers (POSIX.1-2001), as GNU
//! tar and bsdtar read them. Pure functions of their arguments: no clock, no user database,
//! no process id, so the same entries always give the same bytes.

/// Size of a tar block.
pub const BLOCK: usize = 512;

/// Longest value of the octal `size`/`mtime` fields (11 digits).
const MAX_OCTAL_11: u64 = 0o777_7777_7777;
/// Longest value of the octal `uid`/`gid`/`mode`/device fields (7 digits).
const MAX_OCTAL_7: u64 = 0o777_7777;

/// The type of a tar entry (the header's `typeflag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `0`: a regular file (its data follows).
    File,
    /// `1`: a hard link to an earlier entry.
    HardLink,
    /// `2`: a symbolic link.
    Symlink,
    /// `3`: a character device.
    CharDevice,
    /// `4`: a block device.
    BlockDevice,
    /// `5`: a directory.
    Directory,
    /// `6`: a FIFO.
    Fifo,
    /// `x`: a pax extended header for the next entry.
    PaxHeader,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::File => b'0',
            Kind::HardLink => b'1',
            Kind::Symlink => b'2',
            Kind::CharDevice => b'3',
            Kind::BlockDevice => b'4',
            Kind::Directory => b'5',
            Kind::Fifo => b'6',
            Kind::PaxHeader => b'x',
        }
    }
}

/// What one header says. Fields that do not fit the ustar header are moved into pax
/// records by [`Header::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The entry's path (directories end with `/`).
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of data that follow the header (rounded up to a block in the archive).
    pub size: u64,
    pub mtime_secs: i64,
    pub mtime_nsecs: u32,
    /// Symlink target or hard-link target.
    pub link: Vec<u8>,
    /// Device numbers (devices only).
    pub dev: (u32, u32),
}

/// One pax record `key=value` (the value may hold any bytes).
pub type Record = (Vec<u8>, Vec<u8>);

impl Header {
    /// The header block(s): a pax extended header (with its records) when any field does not
    /// fit ustar or `extra` is not empty, then the ustar header. Errors only for device
    /// numbers beyond 7 octal digits (no tar format has a record for them).
    pub fn encode(&self, mut extra: Vec<Record>) -> Result<Vec<u8>, String> {
        let mut records: Vec<Record> = Vec::new();
        let name_fits = fits_name(&self.path, 100);
        if !name_fits {
            records.push((b"path".to_vec(), self.path.clone()));
        }
        let link_fits = fits_name(&self.link, 100);
        if !link_fits {
            records.push((b"linkpath".to_vec(), self.link.clone()));
        }
        if u64::from(self.uid) > MAX_OCTAL_7 {
            records.push((b"uid".to_vec(), self.uid.to_string().into_bytes()));
        }
        if u64::from(self.gid) > MAX_OCTAL_7 {
            records.push((b"gid".to_vec(), self.gid.to_string().into_bytes()));
        }
        if self.size > MAX_OCTAL_11 {
            records.push((b"size".to_vec(), self.size.to_string().into_bytes()));
        }
        let header_mtime = if self.mtime_secs < 0 || self.mtime_secs as u64 > MAX_OCTAL_11 {
            records.push((
                b"mtime".to_vec(),
                pax_time(self.mtime_secs, self.mtime_nsecs),
            ));
            0
        } else {
            if self.mtime_nsecs != 0 {
                records.push((
                    b"mtime".to_vec(),
                    pax_time(self.mtime_secs, self.mtime_nsecs),
                ));
            }
            self.mtime_secs as u64
        };
        if u64::from(self.dev.0) > MAX_OCTAL_7 || u64::from(self.dev.1) > MAX_OCTAL_7 {
            return Err(format!(
                "device number {}:{} too large for a tar header",
                self.dev.0, self.dev.1
            ));
        }
        records.append(&mut extra);

        let mut out = Vec::with_capacity(3 * BLOCK);
        if !records.is_empty() {
            let body = pax_body(&records);
            let pax = Header {
                path: pax_name(&self.path),
                kind: Kind::PaxHeader,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: body.len() as u64,
                mtime_secs: self.mtime_secs.max(0).min(MAX_OCTAL_11 as i64),
                mtime_nsecs: 0,
                link: Vec::new(),
                dev: (0, 0),
            };
            out.extend_from_slice(&pax.ustar(pax.mtime_secs as u64));
            out.extend_from_slice(&body);
            pad(&mut out);
        }
        out.extend_from_slice(&self.ustar(header_mtime));
        Ok(out)
    }

    /// The 512-byte ustar header; fields that do not fit are left truncated or zero (the
    /// pax records before it carry them).
    fn ustar(&self, mtime: u64) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        put_name(&mut h[0..100], &self.path);
        octal(&mut h[100..108], u64::from(self.mode & 0o7777));
        octal(&mut h[108..116], or_zero(u64::from(self.uid), MAX_OCTAL_7));
        octal(&mut h[116..124], or_zero(u64::from(self.gid), MAX_OCTAL_7));
        octal(&mut h[124..136], or_zero(self.size, MAX_OCTAL_11));
        octal(&mut h[136..148], mtime);
        h[156] = self.kind.flag();
        put_name(&mut h[157..257], &self.link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        if matches!(self.kind, Kind::CharDevice | Kind::BlockDevice) {
            octal(&mut h[329..337], u64::from(self.dev.0));
            octal(&mut h[337..345], u64::from(self.dev.1));
        }
        // The checksum is computed with its own field as eight spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let digits = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(digits.as_bytes());
        h
    }
}

/// `v`, or 0 when it exceeds `max` (a pax record carries it then).
fn or_zero(v: u64, max: u64) -> u64 {
    if v > max { 0 } else { v }
}

/// True when `name` can stand in a ustar name field of `len` bytes as it is: short enough
/// and plain ASCII (anything else goes into a pax record, which readers take as UTF-8 or,
/// for other bytes, as they are).
fn fits_name(name: &[u8], len: usize) -> bool {
    name.len() <= len && name.iter().all(|&b| (0x20..0x7f).contains(&b))
}

/// Copy as much of `name` as fits (without a terminating NUL when it fills the field).
fn put_name(field: &mut [u8], name: &[u8]) {
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
}

/// `value` in octal, zero-padded, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    let s = s.as_bytes();
    let start = s.len().saturating_sub(digits);
    field[..digits].copy_from_slice(&s[start..]);
    field[digits] = 0;
}

/// Pad `out` with zeros to a whole number of blocks.
pub fn pad(out: &mut Vec<u8>) {
    let r = out.len() % BLOCK;
    if r != 0 {
        out.resize(out.len() + BLOCK - r, 0);
    }
}

/// Zero bytes that follow `size` bytes of data to end its last block.
pub fn padding(size: u64) -> usize {
    let r = (size % BLOCK as u64) as usize;
    if r == 0 { 0 } else { BLOCK - r }
}

/// A pax time: `SECS` or `SECS.NNNNNNNNN` (trailing zeros dropped); negative times count
/// down from 1970 (`-1.5` is half a second before `-1`).
pub fn pax_time(secs: i64, nsecs: u32) -> Vec<u8> {
    let nsecs = nsecs.min(999_999_999);
    if nsecs == 0 {
        return secs.to_string().into_bytes();
    }
    let (sign, whole, frac) = if secs < 0 {
        ("-", (secs + 1).unsigned_abs(), 1_000_000_000 - nsecs)
    } else {
        ("", secs as u64, nsecs)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0')).into_bytes()
}

/// The body of a pax extended header: each record as `LEN key=value\n`, where LEN counts the
/// whole record including its own digits.
pub fn pax_body(records: &[Record]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        body.extend_from_slice(len.to_string().as_bytes());
        body.push(b' ');
        body.extend_from_slice(k);
        body.push(b'=');
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    body
}

/// The name of the pax header of `path`: `DIR/PaxHeaders/NAME` as GNU tar names them (only
/// readers that do not know pax see it), kept within 100 ASCII bytes.
fn pax_name(path: &[u8]) -> Vec<u8> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (&b"."[..], trimmed),
    };
    let base = if base.is_empty() || base == b"." {
        &b"root"[..]
    } else {
        base
    };
    let mut name = Vec::new();
    name.extend_from_slice(dir);
    name.extend_from_slice(b"/PaxHeaders/");
    name.extend_from_slice(base);
    let mut name: Vec<u8> = name
        .into_iter()
        .map(|b| if (0x20..0x7f).contains(&b) { b } else { b'_' })
        .collect();
    if name.len() > 100 {
        // Keep the tail (the name), which is what a reader that shows it would want.
        name.drain(..name.len() - 100);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let b = pax_body(&[(b"path".to_vec(), b"a".to_vec())]);
        assert_eq!(b, b"9 path=a\n");
        // 98 + 2 digits = 100 -> needs 3 digits -> 101.
        let v = vec![b'x'; 91];
        let b = pax_body(&[(b"path".to_vec(), v)]);
        let len: usize = std::str::from_utf8(&b[..b.iter().position(|&c| c == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, b.len());
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(5, 0), b"5");
        assert_eq!(pax_time(5, 500_000_000), b"5.5");
        assert_eq!(pax_time(5, 1), b"5.000000001");
        assert_eq!(pax_time(-2, 500_000_000), b"-1.5");
        assert_eq!(pax_time(-1, 250_000_000), b"-0.75");
    }

    #[test]
    fn header_checksum_and_fields() {
        let h = Header {
            path: b"./etc/passwd".to_vec(),
            kind: Kind::File,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            size: 1234,
            mtime_secs: 1_700_000_000,
            mtime_nsecs: 0,
            link: Vec::new(),
            dev: (0, 0),
        };
        let b = h.encode(Vec::new()).unwrap();
        assert_eq!(b.len(), BLOCK);
        assert_eq!(&b[100..108], b"0004755\0");
        assert_eq!(&b[124..136], b"00000002322\0");
        let mut c = b.clone();
        c[148..156].copy_from_slice(b"        ");
        let sum: u64 = c.iter().map(|&x| u64::from(x)).sum();
        assert_eq!(&b[148..156], format!("{sum:06o}\0 ").as_bytes());
        // A long name and sub-second time go to a pax header first.
        let long = Header {
            path: [b"./".to_vec(), vec![b'a'; 150]].concat(),
            mtime_nsecs: 5,
            ..h
        };
        let b = long.encode(Vec::new()).unwrap();
        assert_eq!(b[156], b'x');
        assert_eq!(b.len(), 3 * BLOCK);
    }
}
