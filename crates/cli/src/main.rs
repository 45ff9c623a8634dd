//! The `fastables` command.
fn main() {}
