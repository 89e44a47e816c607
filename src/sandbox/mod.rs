//! The native sandbox: one file per layer.
pub mod seccomp;
mod syscalls;
