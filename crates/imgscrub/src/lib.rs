//! imgscrub facade library: open an image, inspect, prepare, sparsify, convert
