//! A bounded walk through any filesystem behind the `Filesystem` trait: what `prepare` and
//! the file verbs do to a guest (list, look up, stat, read, readlink, xattrs, free map).

use imgscrub_fs::Filesystem;
use imgscrub_fs::filesystem::FileType;

/// Read everything reachable: at most `budget` entries, `max_file` bytes of each file and
/// 32 directory levels, so that every input costs bounded time.
pub(crate) fn walk(fs: &dyn Filesystem, budget: usize, max_file: u64) {
    let mut stack = vec![fs.root()];
    let mut seen = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs.read_dir(dir) else {
            continue;
        };
        for e in entries {
            seen += 1;
            if seen > budget {
                return;
            }
            let _ = fs.lookup(dir, &e.name);
            let _ = fs.list_xattrs(e.node);
            let Ok(meta) = fs.stat(e.node) else { continue };
            match meta.file_type {
                FileType::Directory if stack.len() < 32 => stack.push(e.node),
                FileType::Regular => {
                    let mut off = 0u64;
                    while off < meta.size.min(max_file) {
                        match fs.read(e.node, off, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => off += n as u64,
                        }
                    }
                }
                FileType::Symlink => {
                    let _ = fs.readlink(e.node);
                }
                _ => {}
            }
        }
    }
    let _ = fs.free_ranges();
}
