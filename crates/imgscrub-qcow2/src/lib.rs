//! qcow2 v2/v3 read and write for imgscrub
