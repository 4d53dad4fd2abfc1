//! Open an arbitrary byte string as a qcow2 image held in memory, read through it, then open
//! it read-write and write, zero and discard: any input must give `Ok` or a clean `Err`,
//! never a panic, a hang or a huge allocation.
#![no_main]

use imgscrub_disk::{BlockDev, MemDev};
use imgscrub_qcow2::{DevStorage, MemStorage, OpenOptions, Qcow2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dev = MemDev::from_vec(data.to_vec()).read_only();
    let opts = OpenOptions {
        // Keep memory small whatever the cluster size.
        l2_cache_bytes: 1 << 20,
        refcount_cache_bytes: 1 << 20,
        ..OpenOptions::read_only()
    };
    let Ok(img) = Qcow2::from_storage(Box::new(DevStorage(dev)), &opts) else {
        return;
    };
    let len = img.len();
    let _ = img.allocation(0, len.min(1 << 30));
    // Read the start, a few spots and the end; bounded work per input.
    let mut buf = vec![0u8; 64 << 10];
    let spots = [0, len / 3, len / 2, len.saturating_sub(buf.len() as u64)];
    for off in spots {
        let n = (len - off.min(len)).min(buf.len() as u64) as usize;
        let _ = img.read_at(&mut buf[..n], off);
    }
    drop(img);
    // The write paths on the same bytes, in a growable in-memory file.
    let rw = OpenOptions {
        writable: true,
        ..opts
    };
    let Ok(img) = Qcow2::from_storage(Box::new(MemStorage::from_vec(data.to_vec())), &rw) else {
        return;
    };
    let len = img.len();
    let n = len.min(70_000) as usize;
    let _ = img.write_at(&vec![0x5a; n], len.saturating_sub(n as u64) / 2);
    let _ = img.write_zeroes(0, len.min(300_000));
    let _ = img.flush();
});
