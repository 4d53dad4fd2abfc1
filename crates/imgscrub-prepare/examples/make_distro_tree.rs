//! Write one of the synthetic distribution trees used by the tests into a directory, e.g.
//! to make an ext4 image of it for a differential test:
//!
//! ```sh
//! cargo run -p imgscrub-prepare --example make_distro_tree -- centos7 /tmp/c7
//! mkfs.ext4 -q -d /tmp/c7 /tmp/c7.img 64M
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/distros.rs"]
mod distros;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!(
            "usage: make_distro_tree NAME DIR   (NAME: {})",
            distros::DISTROS.join(", ")
        );
        std::process::exit(2);
    };
    if !distros::DISTROS.contains(&name.as_str()) {
        eprintln!(
            "unknown tree {name}; one of: {}",
            distros::DISTROS.join(", ")
        );
        std::process::exit(2);
    }
    std::fs::create_dir_all(dir).unwrap();
    distros::build(name, std::path::Path::new(dir));
}
