pub mod distros;
pub mod rows;
