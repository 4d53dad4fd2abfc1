//! Walk an XFS image with the engine and print one line per file: path, type, mode, uid,
//! gid, size, a content checksum (regular files) or target (symlinks), and xattr names.
//! A debugging aid: `cargo run -p imgscrub-xfs --example xfs-walk -- IMAGE [--free]`.

use imgscrub_disk::RawFile;
use imgscrub_xfs::{FileType, OpenOptions, XfsFs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        return Err("usage: xfs-walk IMAGE [--free]".into());
    };
    let fs = XfsFs::open(RawFile::open(path)?, OpenOptions::default())?;
    if args.iter().any(|a| a == "--free") {
        for r in fs.free_ranges()? {
            println!("{} {}", r.offset, r.len);
        }
        return Ok(());
    }
    let mut stack = vec![(b"".to_vec(), fs.root())];
    while let Some((p, ino)) = stack.pop() {
        let mut ents = fs.read_dir(ino)?;
        ents.sort_by(|a, b| b.name.cmp(&a.name));
        for e in ents {
            let mut path = p.clone();
            path.push(b'/');
            path.extend_from_slice(&e.name);
            let st = fs.stat(e.ino)?;
            let extra = match st.file_type {
                FileType::Regular => {
                    let mut h = 0u32;
                    let mut buf = vec![0u8; 1 << 16];
                    let mut off = 0u64;
                    loop {
                        let n = fs.read(e.ino, off, &mut buf)?;
                        if n == 0 {
                            break;
                        }
                        h = crc32c::crc32c_append(h, &buf[..n]);
                        off += n as u64;
                    }
                    format!("crc={h:08x}")
                }
                FileType::Symlink => {
                    format!("-> {}", String::from_utf8_lossy(&fs.readlink(e.ino)?))
                }
                _ => String::new(),
            };
            let xattrs: Vec<String> = fs
                .list_xattrs(e.ino)?
                .into_iter()
                .map(|(n, v)| format!("{n}({})", v.len()))
                .collect();
            println!(
                "{} {:?} {:o} {}:{} {} {} {}",
                String::from_utf8_lossy(&path),
                st.file_type,
                st.perm,
                st.uid,
                st.gid,
                st.size,
                extra,
                xattrs.join(",")
            );
            if st.file_type == FileType::Directory {
                stack.push((path, e.ino));
            }
        }
    }
    Ok(())
}
