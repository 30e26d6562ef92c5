//! The `distro` binary (being written).
fn main() {}
