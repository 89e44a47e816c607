//! Placeholder: the audit benchmark is being written.
fn main() {}
