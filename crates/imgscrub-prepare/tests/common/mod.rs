pub mod distros;
