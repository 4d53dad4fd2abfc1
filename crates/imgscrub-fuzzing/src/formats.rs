//! The VMDK and VHD readers and the format detection (`imgscrub-formats`).

use imgscrub_disk::{AllocKind, BlockDev, MemDev};
use imgscrub_formats::vhd::{DynamicHeader, Footer};
use imgscrub_formats::vmdk::SparseHeader;
use imgscrub_formats::{Vhd, Vmdk, detect};
use std::path::Path;

/// Byte 0 bit 0 picks VMDK (0) or VHD (1); the rest is the image file, held in memory.
/// Detection, the header parsers (a decoded header encodes and decodes to itself), then an
/// open and a bounded read of what it maps: `allocation` covers exactly what was asked, in
/// order, and reads never fail on a range it calls unallocated.
pub fn formats_open(data: &[u8]) {
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let d = detect(file, &[], file.len() as u64);
    let _ = d.refusal(Path::new("fuzz.img"));
    let _ = d.to_string();
    if let Ok(h) = SparseHeader::parse(file) {
        assert_eq!(SparseHeader::parse(&h.to_bytes()).ok(), Some(h));
        let _ = h.validate();
    }
    if let Ok(f) = Footer::parse(file) {
        let again = Footer::parse(&f.to_bytes()).ok();
        assert_eq!(again.map(|g| g.current_size), Some(f.current_size));
        let _ = f.virtual_size();
    }
    if let Ok(h) = DynamicHeader::parse(file.get(512..).unwrap_or_default()) {
        assert_eq!(DynamicHeader::parse(&h.to_bytes()).ok(), Some(h));
    }
    let mem = Box::new(MemDev::from_vec(file.to_vec()).read_only());
    let dev: Box<dyn BlockDev> = if sel & 1 == 0 {
        match Vmdk::from_dev(mem, "fuzz.vmdk") {
            Ok(v) => Box::new(v),
            Err(_) => return,
        }
    } else {
        match Vhd::from_dev(mem, "fuzz.vhd") {
            Ok(v) => Box::new(v),
            Err(_) => return,
        }
    };
    assert!(dev.is_read_only());
    assert!(dev.write_at(b"x", 0).is_err() || dev.is_empty());
    let span = dev.len().min(16 << 20);
    let Ok(ranges) = dev.allocation(0, span) else {
        return;
    };
    let mut pos = 0;
    for r in &ranges {
        assert_eq!(r.offset, pos, "allocation ranges not contiguous");
        assert!(r.len > 0);
        pos += r.len;
    }
    assert_eq!(pos, span, "allocation does not cover the request");
    let mut buf = vec![0u8; 65536 + 512];
    let mut budget = 32u32;
    for r in ranges {
        let n = (buf.len() as u64).min(r.len) as usize;
        let Some(b) = buf.get_mut(..n) else {
            return;
        };
        let res = dev.read_at(b, r.offset);
        if r.kind != AllocKind::Data {
            assert!(res.is_ok(), "reading an unallocated range failed");
            assert!(
                b.iter().all(|&x| x == 0),
                "an unallocated range is not zero"
            );
        }
        budget -= 1;
        if budget == 0 {
            break;
        }
    }
    // Past the end is an error, never a panic.
    assert!(dev.read_at(&mut [0u8; 1], dev.len()).is_err());
}
