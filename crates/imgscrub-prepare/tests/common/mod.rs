pub mod distros;
pub mod rows;
pub mod users;
