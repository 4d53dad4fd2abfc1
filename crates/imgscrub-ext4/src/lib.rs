//! ext2/3/4 engine for imgscrub: read, offline edits, free-space map, journal replay
