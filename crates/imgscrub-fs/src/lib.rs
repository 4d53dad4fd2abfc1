//! Filesystem trait, detection by magic, FAT, host-dir backend for imgscrub
