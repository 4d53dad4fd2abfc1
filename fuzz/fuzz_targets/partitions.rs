//! Partition discovery on arbitrary bytes: never panics, and every partition it returns
//! lies inside the device (so slicing it works).
#![no_main]

use imgscrub_disk::partition::discover;
use imgscrub_disk::{BlockDev, MemDev};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Inputs are small; pad to at least 64 KiB so that GPT entry arrays and EBR chains
    // have room, with the input both at the start and at the end (backup GPT).
    let len = data.len().max(64 << 10);
    let mut buf = vec![0u8; len];
    buf[..data.len()].copy_from_slice(data);
    for dev in [MemDev::from_vec(buf.clone()), {
        let mut b = vec![0u8; len];
        b[len - data.len()..].copy_from_slice(data);
        b[..data.len().min(8192)].copy_from_slice(&data[..data.len().min(8192)]);
        MemDev::from_vec(b)
    }] {
        if let Ok(t) = discover(&dev) {
            for p in &t.partitions {
                assert!(p.end() <= dev.len(), "partition {} past the end", p.index);
                let s = p.slice(&dev).expect("partition inside the device");
                if s.len() > 0 {
                    let mut b = [0u8; 1];
                    s.read_at(&mut b, s.len() - 1).expect("read last byte");
                }
            }
        }
    }
});
