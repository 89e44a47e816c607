//! OCI / Docker seccomp profiles, compiled to BPF with `seccompiler` before upm forks.
//!
//! A profile is the JSON users already have for Docker or Podman (`defaultAction`,
//! `syscalls[{names, action, errnoRet, args, includes, excludes}]`, ...). Anything this
//! module cannot enforce exactly as Docker + runc + libseccomp would is refused, never
//! skipped: unknown keys, actions, operators and syscall names are errors. The few places
//! where upm is deliberately *stricter* than Docker are listed under "Deviations".
//!
//! # Resolving Docker's keys (as moby's `setupSeccomp` does)
//! - `excludes.arches` / `includes.arches` are Go-style names (`amd64`, `arm64`) compared
//!   with the native architecture.
//! - `includes.caps`: upm runs plugins with an empty bounding set, so an entry that needs
//!   any capability is left out; `excludes.caps` therefore never excludes.
//! - `minKernel` is compared with the running kernel (major.minor[.patch]).
//! - `architectures` and `archMap` together are an error; both only say which ABIs are
//!   allowed, see "Deviations".
//! - A name unknown on the native arch but known on another (`chown32`, `_llseek`) is
//!   skipped, as libseccomp does; a name unknown on every arch is an error.
//!
//! # Why several stacked filters
//! `seccompiler` gives each filter a single match action, so a profile mixing actions
//! becomes a stack. The kernel runs every installed filter and keeps the result with the
//! highest precedence (KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > LOG > ALLOW); among
//! results of equal precedence the most recently installed filter's data (errno) wins.
//!
//! - The *default filter*: mismatch = `defaultAction`, match = ALLOW, over every rule of
//!   the profile whatever its action. It answers the default only when no rule matches.
//! - One *group filter* per distinct non-allow action (ERRNO with a given errno, KILL,
//!   TRAP, LOG): mismatch = ALLOW, match = that action, over that group's rules.
//!
//! For a call that matches no rule only the default filter is non-ALLOW: the result is
//! `defaultAction`. For a call that matches only ALLOW rules every filter says ALLOW. For
//! a call that matches a rule of action X, the default filter says ALLOW and X's group
//! says X: the result is X. If rules of several actions match, the most restrictive one
//! wins (and between two ERRNO groups, the one installed later: groups are installed in
//! the order their action first appears in the profile). Because the default filter and
//! a group filter are never both non-ALLOW for the same call, their relative order does
//! not matter; upm installs the default filter *last*, since every filter installed
//! before it must let the next `seccomp(2)` call through and only the default filter
//! denies calls the profile does not mention. A profile whose rules give `seccomp`
//! itself an action that blocks it (anything but ALLOW or LOG) is refused for that reason.
//!
//! Installation order: ABI guard, group filters, network filters, default filter.
//!
//! # The ABI guard
//! A hand-built program in front of everything: a foreign `arch` (i386 via `int 0x80`)
//! and, on x86_64, any syscall number with the x32 bit (>= 0x4000_0000) kill the process.
//! seccompiler checks `arch` but not the x32 bit, which would let a deny-list profile be
//! bypassed through the x32 numbers of the same syscalls.
//!
//! # The network layer ([`CompileOptions::deny_non_unix_sockets`])
//! A filter answering EAFNOSUPPORT to `socket()` of every family but AF_UNIX, installed
//! after the group filters so its errno wins over an equal-precedence profile errno; the
//! default filter also gets an ALLOW rule for those calls so the profile's default does
//! not mask EAFNOSUPPORT (an explicit KILL/TRAP rule in the profile still wins, being
//! more restrictive). A second filter answers ENOSYS to `io_uring_setup`, because
//! io_uring can create sockets without any syscall seccomp sees; the default filter
//! allows it for the same reason as socket().
//!
//! # Deviations from Docker (all stricter or fail-closed)
//! - Only the native ABI runs: sub-architectures listed in `archMap`/`architectures`
//!   (x86, x32, arm) are killed by the ABI guard instead of being filtered by the rules.
//! - A rule's SCMP_ACT_ERRNO without `errnoRet` answers EPERM as the OCI runtime spec and
//!   runc say (`defaultErrnoRet` only applies to `defaultAction`).
//! - `errnoRet` on an action that takes none, `valueTwo` on an operator other than
//!   SCMP_CMP_MASKED_EQ, `flags`, `listenerPath`, SCMP_ACT_TRACE and SCMP_ACT_NOTIFY
//!   are refused. So is an entry comparing the same argument twice: runc silently turns
//!   such an entry into an OR of its conditions, which we will not guess.
//! - A SCMP_CMP_MASKED_EQ whose datum has bits outside its mask can never match in
//!   libseccomp; that entry is dropped (seccompiler would mask the datum and match).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{sys, syscalls};
use ::syscalls::{syscall, Sysno};

/// Profiles are small; anything bigger is a mistake or an attack on the parser.
const MAX_PROFILE_BYTES: u64 = 1 << 20;
/// The kernel clamps larger values to MAX_ERRNO; refuse them instead.
const MAX_ERRNO: u32 = 4095;
/// Highest syscall argument index.
const MAX_ARG_INDEX: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot read seccomp profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seccomp profile {path} is larger than {MAX_PROFILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
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
    #[error("seccomp profile {profile:?} gives seccomp(2) the action {action}; upm stacks several filters and must be able to install them")]
    SeccompSyscallDenied { profile: String, action: String },
    #[error("cannot read the running kernel's version ({release:?}) to resolve minKernel")]
    KernelVersion { release: String },
    #[error("seccomp profile {profile:?} does not compile to BPF: {source}")]
    Compile {
        profile: String,
        source: seccompiler::BackendError,
    },
}

// ---------------------------------------------------------------------------
// Wire format (OCI `LinuxSeccomp` + Docker's `archMap`, `includes`, `excludes`).

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProfile {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    arch_map: Option<Vec<RawArchMap>>,
    flags: Option<Vec<String>>,
    listener_path: Option<String>,
    listener_metadata: Option<String>,
    syscalls: Option<Vec<RawSyscall>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArchMap {
    architecture: String,
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSyscall {
    names: Option<Vec<String>>,
    name: Option<String>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<RawArg>>,
    #[allow(dead_code)] // Accepted for compatibility; documentation only.
    comment: Option<String>,
    includes: Option<RawFilter>,
    excludes: Option<RawFilter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFilter {
    caps: Option<Vec<String>>,
    arches: Option<Vec<String>>,
    min_kernel: Option<String>,
}

// ---------------------------------------------------------------------------
// Validated model.

/// A seccomp action upm can enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Errno(u32),
    KillThread,
    KillProcess,
    Trap,
    Log,
}

impl Action {
    fn to_seccompiler(self) -> SeccompAction {
        match self {
            Action::Allow => SeccompAction::Allow,
            Action::Errno(e) => SeccompAction::Errno(e),
            Action::KillThread => SeccompAction::KillThread,
            Action::KillProcess => SeccompAction::KillProcess,
            Action::Trap => SeccompAction::Trap,
            Action::Log => SeccompAction::Log,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Allow => f.write_str("SCMP_ACT_ALLOW"),
            Action::Errno(e) => write!(f, "SCMP_ACT_ERRNO({e})"),
            Action::KillThread => f.write_str("SCMP_ACT_KILL_THREAD"),
            Action::KillProcess => f.write_str("SCMP_ACT_KILL_PROCESS"),
            Action::Trap => f.write_str("SCMP_ACT_TRAP"),
            Action::Log => f.write_str("SCMP_ACT_LOG"),
        }
    }
}

/// One argument comparison, 64 bits wide as libseccomp does on 64-bit arches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cond {
    index: u8,
    op: SeccompCmpOp,
    value: u64,
}

impl Cond {
    /// libseccomp's MASKED_EQ never matches when the datum has bits outside the mask.
    fn satisfiable(&self) -> bool {
        match self.op {
            SeccompCmpOp::MaskedEq(mask) => self.value & !mask == 0,
            _ => true,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Conditional {
    caps: Vec<String>,
    arches: Vec<String>,
    min_kernel: Option<KernelVersion>,
}

#[derive(Debug, Clone)]
struct Entry {
    names: Vec<String>,
    action: Action,
    conds: Vec<Cond>,
    includes: Conditional,
    excludes: Conditional,
}

/// A parsed and validated profile. Resolution against the host (arch, kernel) and the
/// compilation to BPF happen in [`Profile::compile`].
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// `sha256:<hex>` of the file bytes, for the audit log.
    pub digest: String,
    /// The exact bytes parsed (and digested): a container engine is handed these, never the path.
    pub bytes: Vec<u8>,
    default_action: Action,
    entries: Vec<Entry>,
    /// Compiled filters, by `deny_non_unix_sockets`: a batch compiles each once.
    compiled: [std::sync::OnceLock<std::sync::Arc<CompiledFilter>>; 2],
}

/// Options that upm layers on top of any profile.
#[derive(Debug, Default, Clone)]
pub struct CompileOptions {
    /// upm's "no network" layer: socket() for every family but AF_UNIX answers an errno (EAFNOSUPPORT), whatever the profile says.
    pub deny_non_unix_sockets: bool,
}

/// BPF programs ready to install, in installation order.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    programs: Vec<BpfProgram>,
}

/// Major, minor, patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct KernelVersion(u32, u32, u32);

impl KernelVersion {
    /// Parses `6.18`, `4.8.0`, `6.18.44-fc-v669` (the flavour after `-`/`+` is ignored).
    fn parse(s: &str) -> Option<KernelVersion> {
        let numeric = s.split(['-', '+', '_', ' ']).next()?;
        let mut parts = numeric.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(KernelVersion(major, minor, patch))
    }

    fn running() -> Result<KernelVersion, SeccompError> {
        // SAFETY: `uts` is a zeroed, writable utsname that uname(2) fills in.
        let release = unsafe {
            let mut uts: libc::utsname = std::mem::zeroed();
            if libc::uname(&mut uts) != 0 {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(uts.release.as_ptr())
                    .to_string_lossy()
                    .into_owned()
            }
        };
        KernelVersion::parse(&release).ok_or(SeccompError::KernelVersion { release })
    }
}

/// What an entry is resolved against.
#[derive(Debug, Clone, Copy)]
struct Host {
    /// Go-style name, as Docker's `includes.arches` uses.
    arch: &'static str,
    kernel: KernelVersion,
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("upm's seccomp layer has syscall tables for x86_64 and aarch64 only");

#[cfg(target_arch = "x86_64")]
const NATIVE_GO_ARCH: &str = "amd64";
#[cfg(target_arch = "aarch64")]
const NATIVE_GO_ARCH: &str = "arm64";
#[cfg(target_arch = "x86_64")]
const NATIVE_TARGET: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const NATIVE_TARGET: TargetArch = TargetArch::aarch64;
/// `AUDIT_ARCH_*` from linux/audit.h: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
#[cfg(target_arch = "x86_64")]
const NATIVE_AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "aarch64")]
const NATIVE_AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// Docker's `includes/excludes.arches` vocabulary (moby's `goToNative` values + newer ones).
const DOCKER_ARCHES: &[&str] = &[
    "x86",
    "amd64",
    "x32",
    "arm",
    "arm64",
    "mips",
    "mipsel",
    "mipsle",
    "mips64",
    "mips64n32",
    "mipsel64",
    "mips3l64n32",
    "mipsel64n32",
    "ppc",
    "ppc64",
    "ppc64le",
    "s390",
    "s390x",
    "riscv64",
    "loong64",
    "parisc",
    "parisc64",
];

/// libseccomp's architecture tokens.
const SCMP_ARCHES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

// ---------------------------------------------------------------------------
// Parsing and validation.

/// Validates one profile; `profile` names it in every error.
struct Parser<'a> {
    profile: &'a str,
}

impl Parser<'_> {
    fn action(
        &self,
        location: &str,
        action: &str,
        errno: Option<u32>,
        errno_fallback: u32,
    ) -> Result<Action, SeccompError> {
        let refused = |reason| SeccompError::RefusedAction {
            profile: self.profile.to_owned(),
            location: location.to_owned(),
            action: action.to_owned(),
            reason,
        };
        let parsed = match action {
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_ERRNO" => {
                let value = errno.unwrap_or(errno_fallback);
                if value > MAX_ERRNO {
                    return Err(SeccompError::ErrnoOutOfRange {
                        profile: self.profile.to_owned(),
                        location: location.to_owned(),
                        value,
                    });
                }
                return Ok(Action::Errno(value));
            }
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_LOG" => Action::Log,
            "SCMP_ACT_TRACE" => return Err(refused("no tracer is attached to a plugin")),
            "SCMP_ACT_NOTIFY" => return Err(refused("no listener serves a plugin")),
            _ => {
                return Err(SeccompError::UnknownAction {
                    profile: self.profile.to_owned(),
                    location: location.to_owned(),
                    action: action.to_owned(),
                })
            }
        };
        match errno {
            Some(value) => Err(SeccompError::ErrnoWithoutErrnoAction {
                profile: self.profile.to_owned(),
                location: location.to_owned(),
                action: action.to_owned(),
                value,
            }),
            None => Ok(parsed),
        }
    }

    fn scmp_arch(&self, location: &str, arch: &str) -> Result<(), SeccompError> {
        if SCMP_ARCHES.contains(&arch) {
            Ok(())
        } else {
            Err(self.unknown_arch(location, arch))
        }
    }

    fn unknown_arch(&self, location: &str, arch: &str) -> SeccompError {
        SeccompError::UnknownArch {
            profile: self.profile.to_owned(),
            location: location.to_owned(),
            arch: arch.to_owned(),
        }
    }

    fn architectures(&self, raw: &RawProfile) -> Result<(), SeccompError> {
        let arches = raw.architectures.as_deref().unwrap_or_default();
        let map = raw.arch_map.as_deref().unwrap_or_default();
        if !arches.is_empty() && !map.is_empty() {
            return Err(SeccompError::ArchitecturesAndArchMap {
                profile: self.profile.to_owned(),
            });
        }
        for (i, a) in arches.iter().enumerate() {
            self.scmp_arch(&format!("architectures[{i}]"), a)?;
        }
        for (i, m) in map.iter().enumerate() {
            self.scmp_arch(&format!("archMap[{i}].architecture"), &m.architecture)?;
            for (j, s) in m.sub_architectures.iter().flatten().enumerate() {
                self.scmp_arch(&format!("archMap[{i}].subArchitectures[{j}]"), s)?;
            }
        }
        Ok(())
    }

    fn unsupported_top_level(&self, raw: &RawProfile) -> Result<(), SeccompError> {
        let unsupported = |field, reason| SeccompError::Unsupported {
            profile: self.profile.to_owned(),
            field,
            reason,
        };
        if raw.flags.as_ref().is_some_and(|f| !f.is_empty()) {
            return Err(unsupported(
                "flags",
                "filter flags (logging, speculation, TSYNC) would change what the filter means",
            ));
        }
        if raw.listener_path.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(unsupported(
                "listenerPath",
                "no seccomp notify listener serves a plugin",
            ));
        }
        if raw
            .listener_metadata
            .as_ref()
            .is_some_and(|p| !p.is_empty())
        {
            return Err(unsupported(
                "listenerMetadata",
                "no seccomp notify listener serves a plugin",
            ));
        }
        Ok(())
    }

    fn names(&self, entry: usize, raw: &RawSyscall) -> Result<Vec<String>, SeccompError> {
        let names = match (&raw.name, &raw.names) {
            (Some(_), Some(names)) if !names.is_empty() => {
                return Err(SeccompError::NameAndNames {
                    profile: self.profile.to_owned(),
                    entry,
                })
            }
            (Some(name), _) => vec![name.clone()],
            (None, names) => names.clone().unwrap_or_default(),
        };
        if names.is_empty() {
            return Err(SeccompError::NoSyscallNames {
                profile: self.profile.to_owned(),
                entry,
            });
        }
        if let Some(bad) = names.iter().find(|n| !syscalls::known_on_any_arch(n)) {
            return Err(SeccompError::UnknownSyscall {
                profile: self.profile.to_owned(),
                entry,
                name: bad.clone(),
            });
        }
        Ok(names)
    }

    fn conds(&self, entry: usize, args: &[RawArg]) -> Result<Vec<Cond>, SeccompError> {
        let mut seen = [false; MAX_ARG_INDEX as usize + 1];
        let mut conds = Vec::with_capacity(args.len());
        for (arg, raw) in args.iter().enumerate() {
            let index = u8::try_from(raw.index)
                .ok()
                .filter(|i| u32::from(*i) <= MAX_ARG_INDEX)
                .ok_or_else(|| SeccompError::BadArgIndex {
                    profile: self.profile.to_owned(),
                    entry,
                    arg,
                    index: raw.index,
                })?;
            let slot = &mut seen[usize::from(index)];
            if *slot {
                return Err(SeccompError::RepeatedArgIndex {
                    profile: self.profile.to_owned(),
                    entry,
                    index: raw.index,
                });
            }
            *slot = true;
            let (op, value) = match raw.op.as_str() {
                "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(raw.value), raw.value_two),
                other => {
                    let op = match other {
                        "SCMP_CMP_NE" => SeccompCmpOp::Ne,
                        "SCMP_CMP_LT" => SeccompCmpOp::Lt,
                        "SCMP_CMP_LE" => SeccompCmpOp::Le,
                        "SCMP_CMP_EQ" => SeccompCmpOp::Eq,
                        "SCMP_CMP_GE" => SeccompCmpOp::Ge,
                        "SCMP_CMP_GT" => SeccompCmpOp::Gt,
                        _ => {
                            return Err(SeccompError::UnknownOperator {
                                profile: self.profile.to_owned(),
                                entry,
                                arg,
                                op: raw.op.clone(),
                            })
                        }
                    };
                    if raw.value_two != 0 {
                        return Err(SeccompError::StrayValueTwo {
                            profile: self.profile.to_owned(),
                            entry,
                            arg,
                        });
                    }
                    (op, raw.value)
                }
            };
            conds.push(Cond { index, op, value });
        }
        Ok(conds)
    }

    fn conditional(
        &self,
        entry: usize,
        field: &'static str,
        raw: Option<&RawFilter>,
    ) -> Result<Conditional, SeccompError> {
        let Some(raw) = raw else {
            return Ok(Conditional::default());
        };
        let arches = raw.arches.clone().unwrap_or_default();
        if let Some(bad) = arches.iter().find(|a| !DOCKER_ARCHES.contains(&a.as_str())) {
            return Err(self.unknown_arch(&format!("syscalls[{entry}].{field}.arches"), bad));
        }
        let caps = raw.caps.clone().unwrap_or_default();
        if let Some(bad) = caps.iter().find(|c| caps::Capability::from_str(c).is_err()) {
            return Err(SeccompError::UnknownCapability {
                profile: self.profile.to_owned(),
                entry,
                field,
                cap: bad.clone(),
            });
        }
        let min_kernel = match raw.min_kernel.as_deref() {
            None | Some("") => None,
            Some(v) => Some(
                KernelVersion::parse(v).ok_or_else(|| SeccompError::BadMinKernel {
                    profile: self.profile.to_owned(),
                    entry,
                    field,
                    value: v.to_owned(),
                })?,
            ),
        };
        Ok(Conditional {
            caps,
            arches,
            min_kernel,
        })
    }

    fn entry(&self, index: usize, raw: &RawSyscall) -> Result<Entry, SeccompError> {
        let location = format!("syscalls[{index}]");
        Ok(Entry {
            names: self.names(index, raw)?,
            action: self.action(&location, &raw.action, raw.errno_ret, libc::EPERM as u32)?,
            conds: self.conds(index, raw.args.as_deref().unwrap_or_default())?,
            includes: self.conditional(index, "includes", raw.includes.as_ref())?,
            excludes: self.conditional(index, "excludes", raw.excludes.as_ref())?,
        })
    }
}

impl Profile {
    /// Reads a profile file; its name is the file stem (`policies/default.json` → `default`).
    pub fn load(path: &Path) -> Result<Profile, SeccompError> {
        use std::io::Read;
        let read_err = |source| SeccompError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        file.take(MAX_PROFILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_PROFILE_BYTES {
            return Err(SeccompError::TooLarge {
                path: path.to_owned(),
            });
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Profile::from_json(&name, &bytes)
    }

    /// Parses and validates a profile; nothing host-dependent is resolved yet.
    pub fn from_json(name: &str, bytes: &[u8]) -> Result<Profile, SeccompError> {
        let raw: RawProfile =
            serde_json::from_slice(bytes).map_err(|source| SeccompError::Parse {
                profile: name.to_owned(),
                source,
            })?;
        let parser = Parser { profile: name };
        parser.unsupported_top_level(&raw)?;
        parser.architectures(&raw)?;
        let default_action = parser.action(
            "defaultAction",
            &raw.default_action,
            raw.default_errno_ret,
            libc::EPERM as u32,
        )?;
        let entries = raw
            .syscalls
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, s)| parser.entry(i, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Profile {
            name: name.to_owned(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
            bytes: bytes.to_vec(),
            default_action,
            entries,
            compiled: Default::default(),
        })
    }

    /// Resolves the profile against this host and compiles it; call before forking.
    /// Like [`Profile::compile`], compiled once per profile and options.
    pub fn compiled(
        &self,
        opts: &CompileOptions,
    ) -> Result<std::sync::Arc<CompiledFilter>, SeccompError> {
        let slot = &self.compiled[usize::from(opts.deny_non_unix_sockets)];
        if let Some(f) = slot.get() {
            return Ok(f.clone());
        }
        let f = std::sync::Arc::new(self.compile(opts)?);
        Ok(slot.get_or_init(|| f).clone())
    }

    pub fn compile(&self, opts: &CompileOptions) -> Result<CompiledFilter, SeccompError> {
        let host = Host {
            arch: NATIVE_GO_ARCH,
            kernel: KernelVersion::running()?,
        };
        self.compile_for(opts, &host)
    }

    fn compile_for(
        &self,
        opts: &CompileOptions,
        host: &Host,
    ) -> Result<CompiledFilter, SeccompError> {
        let plan = self.plan(opts, host)?;
        let mut programs = vec![abi_guard()];
        for stage in plan {
            programs.push(self.to_bpf(stage)?);
        }
        Ok(CompiledFilter { programs })
    }

    /// The rules that apply on `host`, as (syscall number, action, conditions).
    fn resolve(&self, host: &Host) -> Vec<ResolvedRule> {
        let mut rules = Vec::new();
        for entry in self.entries.iter().filter(|e| entry_applies(e, host)) {
            if !entry.conds.iter().all(Cond::satisfiable) {
                continue;
            }
            for nr in entry
                .names
                .iter()
                .filter_map(|n| syscalls::native_number(n))
            {
                rules.push(ResolvedRule {
                    nr,
                    action: entry.action,
                    conds: entry.conds.clone(),
                });
            }
        }
        rules
    }

    /// The filters to install after the ABI guard, in order.
    fn plan(&self, opts: &CompileOptions, host: &Host) -> Result<Vec<Stage>, SeccompError> {
        let rules = self.resolve(host);
        let mut groups: Vec<Stage> = Vec::new();
        for rule in rules.iter().filter(|r| r.action != Action::Allow) {
            // LOG still lets the call through; anything else would block the next filter.
            if rule.nr == libc::SYS_seccomp && rule.action != Action::Log {
                return Err(SeccompError::SeccompSyscallDenied {
                    profile: self.name.clone(),
                    action: rule.action.to_string(),
                });
            }
            match groups.iter_mut().find(|g| g.match_action == rule.action) {
                Some(group) => group.add(rule),
                None => {
                    let mut group = Stage::new(Action::Allow, rule.action);
                    group.add(rule);
                    groups.push(group);
                }
            }
        }
        let mut default = Stage::new(self.default_action, Action::Allow);
        for rule in &rules {
            default.add(rule);
        }
        if opts.deny_non_unix_sockets {
            let non_unix = ResolvedRule::network(libc::SYS_socket, Some(libc::AF_UNIX));
            let mut sockets = Stage::new(Action::Allow, Action::Errno(libc::EAFNOSUPPORT as u32));
            sockets.add(&non_unix);
            groups.push(sockets);
            let mut uring = Stage::new(Action::Allow, Action::Errno(libc::ENOSYS as u32));
            uring.add(&ResolvedRule::network(libc::SYS_io_uring_setup, None));
            groups.push(uring);
            default.add(&non_unix);
            // Same reason as for socket(): the profile's default errno would mask ENOSYS.
            default.add(&ResolvedRule::network(libc::SYS_io_uring_setup, None));
        }
        // A default filter that allows everything is a no-op (and seccompiler refuses
        // a filter whose two actions are equal).
        if self.default_action != Action::Allow {
            groups.push(default);
        }
        Ok(groups)
    }

    fn to_bpf(&self, stage: Stage) -> Result<BpfProgram, SeccompError> {
        let compile_err = |source| SeccompError::Compile {
            profile: self.name.clone(),
            source,
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for (nr, alternatives) in stage.rules {
            let Some(alternatives) = alternatives else {
                rules.insert(nr, Vec::new());
                continue;
            };
            let mut chain = Vec::with_capacity(alternatives.len());
            for conds in alternatives {
                let conditions = conds
                    .into_iter()
                    .map(|c| SeccompCondition::new(c.index, SeccompCmpArgLen::Qword, c.op, c.value))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(compile_err)?;
                chain.push(SeccompRule::new(conditions).map_err(compile_err)?);
            }
            rules.insert(nr, chain);
        }
        let filter = SeccompFilter::new(
            rules,
            stage.mismatch_action.to_seccompiler(),
            stage.match_action.to_seccompiler(),
            NATIVE_TARGET,
        )
        .map_err(compile_err)?;
        BpfProgram::try_from(filter).map_err(compile_err)
    }
}

/// Docker's include/exclude logic for a plugin with no capabilities.
fn entry_applies(entry: &Entry, host: &Host) -> bool {
    let ex = &entry.excludes;
    if ex.arches.iter().any(|a| a == host.arch) {
        return false;
    }
    // excludes.caps: the plugin holds no capability, so nothing is excluded by caps.
    if ex.min_kernel.is_some_and(|v| host.kernel >= v) {
        return false;
    }
    let inc = &entry.includes;
    if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == host.arch) {
        return false;
    }
    if !inc.caps.is_empty() {
        return false;
    }
    if inc.min_kernel.is_some_and(|v| host.kernel < v) {
        return false;
    }
    true
}

#[derive(Debug, Clone)]
struct ResolvedRule {
    nr: i64,
    action: Action,
    conds: Vec<Cond>,
}

impl ResolvedRule {
    /// upm's own rule: `nr` when arg 0 differs from `except`, or always when `except` is
    /// None. Its action is set by the stage it is added to.
    fn network(nr: i64, except: Option<i32>) -> ResolvedRule {
        let conds = except
            .map(|v| Cond {
                index: 0,
                op: SeccompCmpOp::Ne,
                value: v as u64,
            })
            .into_iter()
            .collect();
        ResolvedRule {
            nr,
            action: Action::Allow,
            conds,
        }
    }
}

/// One filter of the stack before it becomes BPF. Per syscall, `None` means "matches
/// unconditionally", otherwise the OR of the listed AND-ed condition sets.
#[derive(Debug, Clone)]
struct Stage {
    mismatch_action: Action,
    match_action: Action,
    rules: BTreeMap<i64, Option<Vec<Vec<Cond>>>>,
}

impl Stage {
    fn new(mismatch_action: Action, match_action: Action) -> Stage {
        Stage {
            mismatch_action,
            match_action,
            rules: BTreeMap::new(),
        }
    }

    fn add(&mut self, rule: &ResolvedRule) {
        let slot = self
            .rules
            .entry(rule.nr)
            .or_insert_with(|| Some(Vec::new()));
        match slot {
            None => {}
            Some(_) if rule.conds.is_empty() => *slot = None,
            Some(alternatives) if !alternatives.contains(&rule.conds) => {
                alternatives.push(rule.conds.clone());
            }
            Some(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// BPF.

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// Offsets in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Kills foreign ABIs: another `arch`, and x32 numbers on x86_64.
fn abi_guard() -> BpfProgram {
    let mut prog = vec![
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JEQ_K, NATIVE_AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    #[cfg(target_arch = "x86_64")]
    prog.extend([
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
    ]);
    prog.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
    prog
}

impl CompiledFilter {
    /// Installs the filters in the calling thread. Runs in the sandbox's init, so
    /// async-signal-safe: no allocation, no locks, raw prctl(PR_SET_NO_NEW_PRIVS) +
    /// seccomp(SECCOMP_SET_MODE_FILTER) system calls that never write `errno`; returns
    /// the errno on failure.
    pub fn apply(&self) -> Result<(), i32> {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
        sys(unsafe { syscall!(Sysno::prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        for prog in &self.programs {
            let len = u16::try_from(prog.len()).map_err(|_| libc::EINVAL)?;
            let fprog = libc::sock_fprog {
                len,
                // The kernel only reads through this pointer.
                filter: prog.as_ptr().cast::<libc::sock_filter>().cast_mut(),
            };
            // SAFETY: `fprog` points at `len` instructions owned by `self`, alive for the
            // call; seccompiler's `sock_filter` is `#[repr(C)]` with the kernel's layout,
            // the same as libc's.
            sys(unsafe {
                syscall!(
                    Sysno::seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &fprog as *const libc::sock_fprog
                )
            })?;
        }
        Ok(())
    }

    /// Total BPF instructions across the stack, for reports and limits.
    pub fn instruction_count(&self) -> usize {
        self.programs.iter().map(Vec::len).sum()
    }

    /// How many filters [`CompiledFilter::apply`] installs.
    pub fn filter_count(&self) -> usize {
        self.programs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default.json");
    const DOCKER_PROFILE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seccomp/docker-default.json"
    );

    fn parse(json: &str) -> Result<Profile, SeccompError> {
        Profile::from_json("t", json.as_bytes())
    }

    fn host(arch: &'static str, major: u32, minor: u32) -> Host {
        Host {
            arch,
            kernel: KernelVersion(major, minor, 0),
        }
    }

    fn nr(name: &str) -> i64 {
        syscalls::native_number(name).unwrap()
    }

    // ---- syscall table ----

    #[test]
    fn syscall_tables_are_sorted_for_binary_search() {
        assert!(syscalls::NATIVE.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(syscalls::ANY_ARCH.windows(2).all(|w| w[0] < w[1]));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn native_numbers_match_the_kernel_abi() {
        assert_eq!(syscalls::native_number("read"), Some(0));
        assert_eq!(syscalls::native_number("clone3"), Some(435));
        assert_eq!(syscalls::native_number("listns"), Some(470));
        assert_eq!(syscalls::native_number("chown32"), None);
        assert!(syscalls::known_on_any_arch("chown32"));
        assert!(syscalls::known_on_any_arch("set_tls"));
        assert!(!syscalls::known_on_any_arch("not_a_syscall"));
    }

    // ---- parsing and errors ----

    #[test]
    fn shipped_and_docker_profiles_parse() {
        let p = Profile::load(Path::new(DEFAULT_POLICY)).unwrap();
        assert_eq!(p.name, "default");
        assert!(p.digest.starts_with("sha256:") && p.digest.len() == 7 + 64);
        assert_eq!(p.default_action, Action::Errno(1));
        let d = Profile::load(Path::new(DOCKER_PROFILE)).unwrap();
        assert_eq!(d.name, "docker-default");
        assert_ne!(p.digest, d.digest);
    }

    #[test]
    fn unknown_keys_are_errors_at_every_level() {
        let cases = [
            r#"{"defaultAction":"SCMP_ACT_ERRNO","bogus":1}"#,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","nmes":[]}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ","valu":2}]}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"kernel":"4.8"}}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subs":[]}]}"#,
        ];
        for case in cases {
            let err = parse(case).unwrap_err();
            assert!(matches!(err, SeccompError::Parse { .. }), "{case}: {err}");
            assert!(err.to_string().contains("unknown field"), "{err}");
        }
    }

    #[test]
    fn malformed_json_and_missing_default_action_are_errors() {
        assert!(matches!(parse("{"), Err(SeccompError::Parse { .. })));
        assert!(matches!(
            parse(r#"{"syscalls":[]}"#),
            Err(SeccompError::Parse { .. })
        ));
        assert!(matches!(
            parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":-1}"#),
            Err(SeccompError::Parse { .. })
        ));
    }

    #[test]
    fn unknown_and_refused_actions_are_errors() {
        let err = parse(r#"{"defaultAction":"SCMP_ACT_DENY"}"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::UnknownAction { ref location, .. } if location == "defaultAction")
        );
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"allow"}]}"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::UnknownAction { ref location, .. } if location == "syscalls[0]")
        );
        for refused in ["SCMP_ACT_TRACE", "SCMP_ACT_NOTIFY"] {
            let json = format!(
                r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["read"],"action":"{refused}"}}]}}"#
            );
            assert!(
                matches!(parse(&json), Err(SeccompError::RefusedAction { .. })),
                "{refused}"
            );
        }
    }

    #[test]
    fn errno_rules() {
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW","defaultErrnoRet":1}"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::ErrnoWithoutErrnoAction { .. }),
            "{err}"
        );
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_KILL","errnoRet":1}]}"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::ErrnoWithoutErrnoAction { .. }),
            "{err}"
        );
        let err =
            parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":4096}"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::ErrnoOutOfRange { value: 4096, .. }),
            "{err}"
        );
        // defaultErrnoRet is the default action's errno only; a rule without errnoRet gets EPERM.
        let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO"},{"names":["write"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#).unwrap();
        assert_eq!(p.default_action, Action::Errno(38));
        assert_eq!(p.entries[0].action, Action::Errno(libc::EPERM as u32));
        assert_eq!(p.entries[1].action, Action::Errno(13));
        let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#).unwrap();
        assert_eq!(p.default_action, Action::Errno(libc::EPERM as u32));
    }

    #[test]
    fn syscall_names_unknown_everywhere_are_errors_but_foreign_ones_are_skipped() {
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","raed"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::UnknownSyscall { entry: 0, ref name, .. } if name == "raed"),
            "{err}"
        );
        assert!(err.to_string().contains("\"raed\""));
        let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","chown32","_llseek"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap();
        let rules = p.resolve(&host(NATIVE_GO_ARCH, 6, 18));
        assert_eq!(
            rules.iter().map(|r| r.nr).collect::<Vec<_>>(),
            vec![nr("read")]
        );
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap_err();
        assert!(matches!(err, SeccompError::NoSyscallNames { .. }));
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","names":["write"],"action":"SCMP_ACT_ALLOW"}]}"#).unwrap_err();
        assert!(matches!(err, SeccompError::NameAndNames { .. }));
        let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW"}]}"#).unwrap();
        assert_eq!(p.entries[0].names, vec!["read".to_owned()]);
    }

    #[test]
    fn argument_errors() {
        let with_args = |args: &str| {
            parse(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["read"],"action":"SCMP_ACT_ALLOW","args":{args}}}]}}"#
            ))
        };
        let err = with_args(r#"[{"index":0,"value":1,"op":"SCMP_CMP_EQUAL"}]"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::UnknownOperator { ref op, .. } if op == "SCMP_CMP_EQUAL"),
            "{err}"
        );
        let err = with_args(r#"[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::BadArgIndex { index: 6, .. }),
            "{err}"
        );
        let err = with_args(r#"[{"index":0,"value":1,"op":"SCMP_CMP_GE"},{"index":0,"value":5,"op":"SCMP_CMP_LE"}]"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::RepeatedArgIndex { index: 0, .. }),
            "{err}"
        );
        let err =
            with_args(r#"[{"index":0,"value":1,"valueTwo":2,"op":"SCMP_CMP_EQ"}]"#).unwrap_err();
        assert!(matches!(err, SeccompError::StrayValueTwo { .. }), "{err}");
        let p = with_args(r#"[{"index":0,"value":255,"valueTwo":3,"op":"SCMP_CMP_MASKED_EQ"},{"index":2,"value":7,"op":"SCMP_CMP_LT"}]"#).unwrap();
        assert_eq!(
            p.entries[0].conds,
            vec![
                Cond {
                    index: 0,
                    op: SeccompCmpOp::MaskedEq(255),
                    value: 3
                },
                Cond {
                    index: 2,
                    op: SeccompCmpOp::Lt,
                    value: 7
                },
            ]
        );
    }

    #[test]
    fn arch_and_top_level_errors() {
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":null}]}"#).unwrap_err();
        assert!(matches!(err, SeccompError::ArchitecturesAndArchMap { .. }));
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_VAX"]}"#)
            .unwrap_err();
        assert!(
            matches!(err, SeccompError::UnknownArch { ref location, .. } if location == "architectures[0]"),
            "{err}"
        );
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["x86_64"]}}]}"#).unwrap_err();
        assert!(matches!(err, SeccompError::UnknownArch { .. }), "{err}");
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMN"]}}]}"#).unwrap_err();
        assert!(
            matches!(err, SeccompError::UnknownCapability { .. }),
            "{err}"
        );
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","excludes":{"minKernel":"four"}}]}"#).unwrap_err();
        assert!(
            matches!(
                err,
                SeccompError::BadMinKernel {
                    field: "excludes",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#,
        )
        .unwrap_err();
        assert!(
            matches!(err, SeccompError::Unsupported { field: "flags", .. }),
            "{err}"
        );
        let err = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","listenerPath":"/run/x.sock"}"#)
            .unwrap_err();
        assert!(
            matches!(
                err,
                SeccompError::Unsupported {
                    field: "listenerPath",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn kernel_versions_parse_and_order() {
        assert_eq!(KernelVersion::parse("4.8"), Some(KernelVersion(4, 8, 0)));
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v669"),
            Some(KernelVersion(6, 18, 44))
        );
        assert_eq!(KernelVersion::parse("5"), None);
        assert_eq!(KernelVersion::parse("5.x"), None);
        assert!(KernelVersion(4, 10, 0) > KernelVersion(4, 8, 0));
        assert!(KernelVersion::running().is_ok());
    }

    // ---- include / exclude resolution ----

    fn resolved_names(p: &Profile, h: &Host) -> Vec<i64> {
        p.resolve(h).iter().map(|r| r.nr).collect()
    }

    #[test]
    fn includes_and_excludes_follow_docker() {
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64","arm64"]}},
            {"names":["write"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["s390x"]}},
            {"names":["close"],"action":"SCMP_ACT_ALLOW","excludes":{"arches":["amd64"]}},
            {"names":["getpid"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["getppid"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["gettid"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}},
            {"names":["uname"],"action":"SCMP_ACT_ALLOW","excludes":{"minKernel":"4.8"}}
        ]}"#,
        )
        .unwrap();
        let new_kernel = host("amd64", 4, 8);
        assert_eq!(
            resolved_names(&p, &new_kernel),
            vec![nr("read"), nr("getppid"), nr("gettid")]
        );
        let old_kernel = host("arm64", 4, 7);
        assert_eq!(
            resolved_names(&p, &old_kernel),
            vec![nr("read"), nr("close"), nr("getppid"), nr("uname")]
        );
    }

    #[test]
    fn docker_default_resolves_like_docker_for_a_capless_container() {
        let d = Profile::load(Path::new(DOCKER_PROFILE)).unwrap();
        let rules = d.resolve(&host(NATIVE_GO_ARCH, 6, 18));
        let actions_of = |name: &str| {
            rules
                .iter()
                .filter(|r| r.nr == nr(name))
                .map(|r| r.action)
                .collect::<Vec<_>>()
        };
        assert_eq!(actions_of("clone3"), vec![Action::Errno(38)]);
        assert_eq!(actions_of("ptrace"), vec![Action::Allow]); // minKernel 4.8
        assert!(actions_of("mount").is_empty()); // needs CAP_SYS_ADMIN
        assert!(actions_of("bpf").is_empty());
        let clone = rules
            .iter()
            .filter(|r| r.nr == nr("clone"))
            .collect::<Vec<_>>();
        assert_eq!(clone.len(), 1, "only the non-s390 clone rule applies");
        assert_eq!(clone[0].conds[0].op, SeccompCmpOp::MaskedEq(0x7E02_0000));
        assert!(
            actions_of("ptrace").len() == 1
                && resolved_names(&d, &host(NATIVE_GO_ARCH, 4, 7))
                    .iter()
                    .all(|n| *n != nr("ptrace"))
        );
    }

    #[test]
    fn unsatisfiable_masked_eq_entries_are_dropped() {
        let p = parse(r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"valueTwo":2,"op":"SCMP_CMP_MASKED_EQ"}]},
            {"names":["write"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":3,"valueTwo":2,"op":"SCMP_CMP_MASKED_EQ"}]}
        ]}"#).unwrap();
        assert_eq!(resolved_names(&p, &host("amd64", 6, 18)), vec![nr("write")]);
    }

    // ---- stacking ----

    const MIXED: &str = r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[
        {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
        {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
        {"names":["uname"],"action":"SCMP_ACT_TRAP"},
        {"names":["getpid"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
        {"names":["gettid"],"action":"SCMP_ACT_ERRNO","errnoRet":13}
    ]}"#;

    #[test]
    fn stacking_order_and_contents() {
        let p = parse(MIXED).unwrap();
        let plan = p
            .plan(&CompileOptions::default(), &host("amd64", 6, 18))
            .unwrap();
        let shape: Vec<_> = plan
            .iter()
            .map(|s| (s.mismatch_action, s.match_action))
            .collect();
        assert_eq!(
            shape,
            vec![
                (Action::Allow, Action::Errno(13)),
                (Action::Allow, Action::Trap),
                (Action::KillProcess, Action::Allow), // default filter last
            ]
        );
        let keys = |s: &Stage| s.rules.keys().copied().collect::<Vec<_>>();
        let mut errno_nrs = vec![nr("getppid"), nr("gettid")];
        errno_nrs.sort();
        assert_eq!(keys(&plan[0]), errno_nrs);
        assert_eq!(keys(&plan[1]), vec![nr("uname")]);
        // The default filter lets every rule's syscall through to the group filters.
        let mut all = vec![
            nr("read"),
            nr("write"),
            nr("getppid"),
            nr("uname"),
            nr("getpid"),
            nr("gettid"),
        ];
        all.sort();
        assert_eq!(keys(&plan[2]), all);
        assert_eq!(plan[2].rules[&nr("read")], None);
        assert_eq!(
            plan[2].rules[&nr("getpid")],
            Some(vec![vec![Cond {
                index: 0,
                op: SeccompCmpOp::Eq,
                value: 1
            }]])
        );
        let compiled = p
            .compile_for(&CompileOptions::default(), &host("amd64", 6, 18))
            .unwrap();
        assert_eq!(compiled.filter_count(), 4); // guard + 3
        assert!(compiled.instruction_count() > 20);
    }

    #[test]
    fn network_layer_adds_filters_before_the_default() {
        let p = parse(MIXED).unwrap();
        let opts = CompileOptions {
            deny_non_unix_sockets: true,
        };
        let plan = p.plan(&opts, &host("amd64", 6, 18)).unwrap();
        let shape: Vec<_> = plan.iter().map(|s| s.match_action).collect();
        assert_eq!(
            shape,
            vec![
                Action::Errno(13),
                Action::Trap,
                Action::Errno(libc::EAFNOSUPPORT as u32),
                Action::Errno(libc::ENOSYS as u32),
                Action::Allow,
            ]
        );
        let non_unix = vec![vec![Cond {
            index: 0,
            op: SeccompCmpOp::Ne,
            value: libc::AF_UNIX as u64,
        }]];
        assert_eq!(plan[2].rules[&libc::SYS_socket], Some(non_unix.clone()));
        assert_eq!(plan[3].rules[&libc::SYS_io_uring_setup], None);
        assert_eq!(plan[4].rules[&libc::SYS_socket], Some(non_unix));
        assert_eq!(plan[4].rules[&libc::SYS_io_uring_setup], None);
    }

    #[test]
    fn allow_by_default_profiles_have_no_default_filter() {
        let p = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO"}]}"#).unwrap();
        let plan = p
            .plan(&CompileOptions::default(), &host("amd64", 6, 18))
            .unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].match_action, Action::Errno(1));
        let empty = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        assert_eq!(
            empty
                .compile(&CompileOptions::default())
                .unwrap()
                .filter_count(),
            1
        );
    }

    #[test]
    fn denying_seccomp_itself_is_refused() {
        let p = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["seccomp"],"action":"SCMP_ACT_KILL"}]}"#).unwrap();
        let err = p.compile(&CompileOptions::default()).unwrap_err();
        assert!(
            matches!(err, SeccompError::SeccompSyscallDenied { .. }),
            "{err}"
        );
    }

    #[test]
    fn abi_guard_checks_arch_then_x32_bit() {
        let guard = abi_guard();
        assert_eq!(guard[1].k, NATIVE_AUDIT_ARCH);
        assert_eq!(guard[2].k, libc::SECCOMP_RET_KILL_PROCESS);
        #[cfg(target_arch = "x86_64")]
        assert_eq!((guard[4].code, guard[4].k), (BPF_JGE_K, X32_SYSCALL_BIT));
        assert_eq!(guard.last().map(|i| i.k), Some(libc::SECCOMP_RET_ALLOW));
    }

    // ---- real kernel ----

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Forks; the child applies `filter`, runs `body` and exits with its result.
    /// Returns the raw wait status.
    fn in_child(filter: &CompiledFilter, body: fn() -> i32) -> i32 {
        // SAFETY: the child only makes syscalls (plus pthread_create in one body) and
        // leaves with _exit, never returning into the test harness.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let code = match filter.apply() {
                    Ok(()) => body(),
                    Err(_) => 100,
                };
                libc::_exit(code);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
    }

    fn exit_code(status: i32) -> Option<i32> {
        libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
    }

    fn exec_under(filter: &CompiledFilter, argv: &[&str]) -> i32 {
        let cargs: Vec<std::ffi::CString> = argv
            .iter()
            .map(|a| std::ffi::CString::new(*a).unwrap())
            .collect();
        let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        // SAFETY: argv is prepared before fork; the child applies, execs or _exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                if filter.apply().is_err() {
                    libc::_exit(100);
                }
                libc::execv(ptrs[0], ptrs.as_ptr());
                libc::_exit(127);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
    }

    fn default_filter() -> CompiledFilter {
        Profile::load(Path::new(DEFAULT_POLICY))
            .unwrap()
            .compile(&CompileOptions {
                deny_non_unix_sockets: true,
            })
            .unwrap()
    }

    extern "C" fn thread_main(_: *mut libc::c_void) -> *mut libc::c_void {
        std::ptr::null_mut()
    }

    /// Each failing step exits with its own number.
    fn default_profile_checks() -> i32 {
        // SAFETY: plain syscalls with valid (or null, where allowed) arguments.
        unsafe {
            if libc::getpid() <= 0 {
                return 1;
            }
            if libc::unshare(0) != -1 || errno() != libc::EPERM {
                return 2;
            }
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != -1 || errno() != libc::EPERM {
                return 3;
            }
            let none = c"none".as_ptr();
            let tmp = c"/tmp".as_ptr();
            if libc::mount(none, tmp, c"tmpfs".as_ptr(), 0, std::ptr::null()) != -1
                || errno() != libc::EPERM
            {
                return 4;
            }
            if libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) != -1
                || errno() != libc::ENOSYS
            {
                return 5;
            }
            if libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) != -1
                || errno() != libc::EAFNOSUPPORT
            {
                return 6;
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return 7;
            }
            libc::close(fd);
            let mut tid: libc::pthread_t = 0;
            if libc::pthread_create(
                &mut tid,
                std::ptr::null(),
                thread_main,
                std::ptr::null_mut(),
            ) != 0
                || libc::pthread_join(tid, std::ptr::null_mut()) != 0
            {
                return 8;
            }
            // clone with a namespace flag is refused by the masked-flags rule.
            let flags = (libc::CLONE_NEWNET | libc::SIGCHLD) as libc::c_ulong;
            if libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) != -1 || errno() != libc::EPERM {
                return 9;
            }
            if libc::syscall(libc::SYS_bpf, 0, 0, 0) != -1 || errno() != libc::EPERM {
                return 10;
            }
            if libc::personality(0x0040_0000) != -1 || errno() != libc::EPERM {
                return 11; // READ_IMPLIES_EXEC
            }
        }
        0
    }

    #[test]
    fn kernel_enforces_default_profile() {
        let status = in_child(&default_filter(), default_profile_checks);
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    }

    #[test]
    fn kernel_runs_python_asyncio_threads_under_default_profile() {
        let code = "import asyncio, json, threading, socket\n\
            t = threading.Thread(target=lambda: None); t.start(); t.join()\n\
            async def main():\n    await asyncio.sleep(0.01)\n    return json.dumps({'ok': 1})\n\
            assert asyncio.run(main()) == '{\"ok\": 1}'\n\
            try:\n    socket.socket(socket.AF_INET)\n    raise SystemExit(3)\n\
            except OSError as e:\n    assert e.errno == 97, e\n";
        let status = exec_under(&default_filter(), &["/usr/bin/python3", "-c", code]);
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    }

    #[test]
    fn kernel_runs_sh_and_coreutils_under_default_profile() {
        let filter = default_filter();
        assert_eq!(
            exit_code(exec_under(&filter, &["/bin/sh", "-c", "true"])),
            Some(0)
        );
        let script = "ls / >/dev/null && cat /etc/passwd | wc -l >/dev/null && d=$(mktemp -d) && \
                      echo hi > $d/f && cp $d/f $d/g && chmod 600 $d/g && rm -r $d && date >/dev/null";
        let status = exec_under(&filter, &["/bin/sh", "-c", script]);
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    }

    #[test]
    fn kernel_runs_sh_under_docker_default_profile() {
        let filter = Profile::load(Path::new(DOCKER_PROFILE))
            .unwrap()
            .compile(&CompileOptions::default())
            .unwrap();
        assert!(filter.instruction_count() > 300);
        let status = exec_under(&filter, &["/bin/sh", "-c", "ls / >/dev/null && true"]);
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
        let status = in_child(&filter, || {
            // SAFETY: plain syscalls.
            unsafe {
                if libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) != -1
                    || errno() != libc::ENOSYS
                {
                    return 1;
                }
                if libc::unshare(0) != -1 || errno() != libc::EPERM {
                    return 2;
                }
            }
            0
        });
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
    }

    /// The stacking rule in the kernel: most restrictive wins, default only on no match.
    #[test]
    fn kernel_honours_stacked_actions() {
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"names":["getuid"],"action":"SCMP_ACT_ALLOW"},
            {"names":["getuid"],"action":"SCMP_ACT_ERRNO","errnoRet":22},
            {"names":["getgid"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":0,"value":7,"op":"SCMP_CMP_EQ"}]}
        ]}"#,
        )
        .unwrap();
        let filter = p.compile(&CompileOptions::default()).unwrap();
        let status = in_child(&filter, || {
            // SAFETY: plain syscalls.
            unsafe {
                if libc::syscall(libc::SYS_getppid) != -1 || errno() != libc::EACCES {
                    return 1;
                }
                if libc::syscall(libc::SYS_getuid) != -1 || errno() != libc::EINVAL {
                    return 2;
                }
                if libc::syscall(libc::SYS_getgid, 0) < 0 || libc::getpid() <= 0 {
                    return 3;
                }
            }
            0
        });
        assert_eq!(exit_code(status), Some(0), "raw wait status {status:#x}");
        let status = in_child(&filter, || {
            // SAFETY: a syscall the filter kills the process for.
            unsafe { libc::syscall(libc::SYS_getgid, 7) };
            0
        });
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "{status:#x}"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernel_kills_x32_syscalls() {
        let allow_all = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        let filter = allow_all.compile(&CompileOptions::default()).unwrap();
        let status = in_child(&filter, || {
            // SAFETY: getpid through the x32 ABI number; the guard kills before it runs.
            unsafe { libc::syscall(libc::SYS_getpid | 0x4000_0000) };
            0
        });
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "{status:#x}"
        );
    }
}
