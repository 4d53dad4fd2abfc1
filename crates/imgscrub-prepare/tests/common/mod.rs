pub mod distros;
pub mod leftovers;
pub mod rows;
pub mod users;
