//! Everything that can go wrong with a profile: reading, parsing, resolving,
//! compiling, and rewriting it for a container engine. Each error names the profile
//! and, where there is one, the place in it.

use std::path::PathBuf;

use super::bpf::BPF_MAXINSNS;
use super::wire::{MAX_ARG_INDEX, MAX_ERRNO, MAX_PROFILE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot read seccomp profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp profile {path} is larger than {MAX_PROFILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("seccomp profile {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("seccomp profile {path} is not safe to use: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("seccomp profile {profile:?} is not a valid OCI/Docker profile: {source}")]
    Parse {
        profile: String,
        source: serde_json::Error,
    },
    #[error("seccomp profile {profile:?}: {location} has unknown action {action:?}")]
    UnknownAction {
        profile: String,
        location: String,
        action: String,
    },
    #[error("seccomp profile {profile:?}: {location} uses {action}, which upm refuses: {reason}")]
    RefusedAction {
        profile: String,
        location: String,
        action: String,
        reason: &'static str,
    },
    #[error("seccomp profile {profile:?}: {location} sets an errno ({value}) but its action {action} returns none")]
    ErrnoWithoutErrnoAction {
        profile: String,
        location: String,
        action: String,
        value: u32,
    },
    #[error("seccomp profile {profile:?}: {location} has errno {value}, above the kernel's maximum {MAX_ERRNO}")]
    ErrnoOutOfRange {
        profile: String,
        location: String,
        value: u32,
    },
    #[error("seccomp profile {profile:?}: syscalls[{entry}] names {name:?}, which is not a syscall on any Linux architecture")]
    UnknownSyscall {
        profile: String,
        entry: usize,
        name: String,
    },
    #[error("seccomp profile {profile:?}: syscalls[{entry}] names no syscall")]
    NoSyscallNames { profile: String, entry: usize },
    #[error("seccomp profile {profile:?}: syscalls[{entry}] has both \"name\" and \"names\"; use \"names\"")]
    NameAndNames { profile: String, entry: usize },
    #[error(
        "seccomp profile {profile:?}: syscalls[{entry}].args[{arg}] has unknown operator {op:?}"
    )]
    UnknownOperator {
        profile: String,
        entry: usize,
        arg: usize,
        op: String,
    },
    #[error("seccomp profile {profile:?}: syscalls[{entry}].args[{arg}] has index {index}; syscalls have arguments 0 to {MAX_ARG_INDEX}")]
    BadArgIndex {
        profile: String,
        entry: usize,
        arg: usize,
        index: u32,
    },
    #[error("seccomp profile {profile:?}: syscalls[{entry}].args[{arg}] sets valueTwo, which only SCMP_CMP_MASKED_EQ uses")]
    StrayValueTwo {
        profile: String,
        entry: usize,
        arg: usize,
    },
    #[error("seccomp profile {profile:?}: syscalls[{entry}] compares argument {index} twice; runc would OR such conditions, upm refuses to guess")]
    RepeatedArgIndex {
        profile: String,
        entry: usize,
        index: u32,
    },
    #[error("seccomp profile {profile:?}: {location} names unknown architecture {arch:?}")]
    UnknownArch {
        profile: String,
        location: String,
        arch: String,
    },
    #[error("seccomp profile {profile:?}: syscalls[{entry}].{field}.caps names unknown capability {cap:?}")]
    UnknownCapability {
        profile: String,
        entry: usize,
        field: &'static str,
        cap: String,
    },
    #[error("seccomp profile {profile:?}: syscalls[{entry}].{field}.minKernel {value:?} is not a kernel version like \"4.8\"")]
    BadMinKernel {
        profile: String,
        entry: usize,
        field: &'static str,
        value: String,
    },
    #[error(
        "seccomp profile {profile:?} has both \"architectures\" and \"archMap\"; use one of them"
    )]
    ArchitecturesAndArchMap { profile: String },
    #[error("seccomp profile {profile:?} sets {field}, which upm does not support: {reason}")]
    Unsupported {
        profile: String,
        field: &'static str,
        reason: &'static str,
    },
    #[error("cannot read the running kernel's version ({release:?}) to resolve minKernel")]
    KernelVersion { release: String },
    #[error("seccomp profile {profile:?} compiles to {instructions} BPF instructions; the kernel takes at most {BPF_MAXINSNS}")]
    ProgramTooLarge {
        profile: String,
        instructions: usize,
    },
    #[error("seccomp profile {profile:?}: cannot merge upm's own rules for {syscall} into the profile a container engine is handed: {reason}")]
    EngineProfile {
        profile: String,
        syscall: String,
        reason: String,
    },
}
