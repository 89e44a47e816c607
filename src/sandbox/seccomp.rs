//! OCI / Docker seccomp profiles, compiled to one BPF program before upm forks.
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
//! # One filter, with the precedence a stack of filters would have
//! A profile mixes actions, and several of its rules (plus upm's own network rules) can
//! match one call. The answer is the one the kernel would give for a stack of filters, one
//! per action group (which is what upm installed before it compiled a single program):
//!
//! - the most restrictive matching action wins: KILL_PROCESS > KILL_THREAD > TRAP >
//!   ERRNO > LOG > ALLOW;
//! - between two ERRNO values, the one whose *group* comes later wins. Groups are the
//!   profile's distinct non-allow actions in order of first appearance (after resolving
//!   includes/excludes), then upm's network errnos (EAFNOSUPPORT, then ENOSYS);
//! - a call matching only ALLOW rules is allowed; a call matching no rule gets
//!   `defaultAction`.
//!
//! [`Profile::compile`] turns this into **one** classic-BPF program, so a call pays one
//! filter install and every syscall one short walk:
//!
//! 1. the ABI guard (below);
//! 2. a binary search over sorted ranges of syscall numbers (consecutive numbers with the
//!    same decision share a range, the default's gaps included): O(log n) JGEs;
//! 3. per-syscall blocks, shared between numbers with identical decisions. A number whose
//!    rules are unconditional is a single `RET`. Otherwise its block tries the rules'
//!    argument conditions in precedence order (the first that holds returns its action)
//!    and falls back to the best unconditional rule or `defaultAction`.
//!
//! Arguments are compared on 64 bits, unsigned, high word then low word, as libseccomp
//! does on 64-bit arches. Classic BPF's conditional jumps reach 255 instructions; farther
//! targets go through a JA with a 32-bit offset. A program above the kernel's 4096
//! instructions is refused. Since nothing is installed after this filter, a profile may
//! give `seccomp(2)` itself any action.
//!
//! # The ABI guard
//! The program's first instructions: a foreign `arch` (i386 via `int 0x80`) and, on
//! x86_64, any syscall number with the x32 bit (>= 0x4000_0000) kill the process, so a
//! deny-list profile cannot be bypassed through the x32 numbers of the same syscalls.
//!
//! # upm's own rules
//! Ranked after every profile group, they win over any profile ALLOW, LOG or ERRNO for
//! their calls, and over the profile's default; an explicit KILL/TRAP rule in the
//! profile still wins, being more restrictive.
//! - The network layer ([`CompileOptions::deny_sockets`]): `socket()` of every
//!   family, AF_UNIX included, answers EAFNOSUPPORT, and a datagram `socketpair()`
//!   ESOCKTNOSUPPORT (it could `sendto()` a pathname socket); stream pairs still work.
//!   With an egress allowlist ([`CompileOptions::allow_tcp`]) only TCP sockets over
//!   IPv4/IPv6 are created: another family answers EAFNOSUPPORT, another type
//!   ESOCKTNOSUPPORT, another protocol EPROTONOSUPPORT.
//! - Always: every SysV IPC call, `io_uring_setup`, `memfd_create` and `openat2` answer
//!   ENOSYS ([`SYSV_IPC`], [`ALWAYS_ENOSYS`]); a mode with the setuid or setgid bit
//!   answers EPERM in every call that sets one ([`MODE_SETTERS`]).
//!
//! So a profile whose default is KILL or TRAP gets ENOSYS, not its default, for those
//! calls when it does not name them: refused either way.
//!
//! A container engine does not run this program: [`Profile::engine_profile`] writes the
//! same decisions for those syscalls into the OCI profile it is handed, as entries whose
//! conditions never overlap between actions (libseccomp ranks overlapping rules its own way).
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
//!   libseccomp; that entry is dropped (seccompiler would have masked the datum and matched).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use seccompiler::{sock_filter, BpfProgram, SeccompCmpOp};
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
    #[error("seccomp profile {path} is not a regular file")]
    NotAFile { path: PathBuf },
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
    /// Native numbers of the entry's names, looked up once; a name foreign to this arch
    /// has none.
    nrs: Vec<i64>,
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
    /// Compiled filters, by `deny_sockets` and `allow_tcp`: a batch compiles each once.
    compiled: [std::sync::OnceLock<std::sync::Arc<CompiledFilter>>; 3],
}

/// Options that upm layers on top of any profile.
#[derive(Debug, Default, Clone)]
pub struct CompileOptions {
    /// upm's "no network" layer: socket() of every family, AF_UNIX included, answers
    /// EAFNOSUPPORT, whatever the profile says (stream socketpairs still work). Landlock does
    /// not check connect() on a pathname socket, so an AF_UNIX socket could reach any
    /// host daemon listening on a world-writable one (a bus, a database, a logger).
    pub deny_sockets: bool,
    /// With `deny_sockets`, the egress allowlist's exception (issue 22): `socket()` of
    /// TCP over IPv4 or IPv6 (`AF_INET`/`AF_INET6`, `SOCK_STREAM` with any flags,
    /// protocol 0 or `IPPROTO_TCP`) is allowed, every other one refused as above. What
    /// such a socket may reach is the network namespace's and Landlock's business.
    pub allow_tcp: bool,
}

impl CompileOptions {
    /// Which cached filter these options compile to.
    fn slot(&self) -> usize {
        match (self.deny_sockets, self.allow_tcp) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        }
    }
}

/// The BPF program ready to install (one; `apply` installs a list in order).
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

    /// The native numbers of the entry's names (foreign names have none).
    fn syscall_numbers(&self, entry: usize, raw: &RawSyscall) -> Result<Vec<i64>, SeccompError> {
        let names = match (&raw.name, &raw.names) {
            (Some(_), Some(names)) if !names.is_empty() => {
                return Err(SeccompError::NameAndNames {
                    profile: self.profile.to_owned(),
                    entry,
                })
            }
            (Some(name), _) => std::slice::from_ref(name),
            (None, names) => names.as_deref().unwrap_or_default(),
        };
        if names.is_empty() {
            return Err(SeccompError::NoSyscallNames {
                profile: self.profile.to_owned(),
                entry,
            });
        }
        let mut nrs = Vec::with_capacity(names.len());
        for name in names {
            match syscalls::native_number(name) {
                Some(nr) => nrs.push(nr),
                None if syscalls::known_on_any_arch(name) => {}
                None => {
                    return Err(SeccompError::UnknownSyscall {
                        profile: self.profile.to_owned(),
                        entry,
                        name: name.clone(),
                    })
                }
            }
        }
        Ok(nrs)
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
            nrs: self.syscall_numbers(index, raw)?,
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
        let read_err = |source| SeccompError::Read {
            path: path.to_owned(),
            source,
        };
        let bytes = crate::files::read_regular(path, MAX_PROFILE_BYTES).map_err(|e| match e {
            crate::files::ReadError::Io(source) => read_err(source),
            crate::files::ReadError::NotAFile => SeccompError::NotAFile {
                path: path.to_owned(),
            },
            crate::files::ReadError::TooLarge(_) => SeccompError::TooLarge {
                path: path.to_owned(),
            },
        })?;
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
        let slot = &self.compiled[opts.slot()];
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
        let program = self.plan(opts, host).to_bpf();
        if program.len() > BPF_MAXINSNS {
            return Err(SeccompError::ProgramTooLarge {
                profile: self.name.clone(),
                instructions: program.len(),
            });
        }
        Ok(CompiledFilter {
            programs: vec![program],
        })
    }

    /// The rules that apply on `host`, as (syscall number, action, conditions).
    fn resolve(&self, host: &Host) -> Vec<ResolvedRule> {
        let mut rules = Vec::new();
        for entry in self.entries.iter().filter(|e| entry_applies(e, host)) {
            if !entry.conds.iter().all(Cond::satisfiable) {
                continue;
            }
            for &nr in &entry.nrs {
                rules.push(ResolvedRule {
                    nr,
                    action: entry.action,
                    conds: entry.conds.clone(),
                });
            }
        }
        rules
    }

    /// The profile's rules plus upm's network rules, each ranked as the module doc says.
    fn ranked_rules(&self, opts: &CompileOptions, host: &Host) -> Vec<(Rank, ResolvedRule)> {
        let mut groups: Vec<Action> = Vec::new();
        let mut ranked = Vec::new();
        for rule in self.resolve(host) {
            let group = if rule.action == Action::Allow {
                0
            } else if let Some(i) = groups.iter().position(|a| *a == rule.action) {
                i
            } else {
                groups.push(rule.action);
                groups.len() - 1
            };
            ranked.push((Rank::new(rule.action, group), rule));
        }
        // Ranked after every profile group, so their errnos win over the profile's.
        let first = groups.len();
        for (i, rule) in own_rules(opts).into_iter().enumerate() {
            ranked.push((Rank::new(rule.action, first + i), rule));
        }
        ranked
    }

    /// The decision for every syscall number.
    fn plan(&self, opts: &CompileOptions, host: &Host) -> Plan {
        let mut rules = self.ranked_rules(opts, host);
        // By number, then best rank first; stable, so one rank keeps the profile's order.
        rules.sort_by_key(|(rank, r)| (r.nr, std::cmp::Reverse(*rank)));
        let mut plan = Plan::default();
        let gap = plan.intern(Block::ret(self.default_action));
        let mut next: u64 = 0;
        for same_nr in rules.chunk_by(|a, b| a.1.nr == b.1.nr) {
            // Native numbers are small and positive (tested); anything else is no syscall.
            let Some(nr) = same_nr.first().and_then(|(_, r)| u32::try_from(r.nr).ok()) else {
                continue;
            };
            let nr = u64::from(nr);
            if nr > next {
                plan.push_range(next, gap);
            }
            let block = plan.intern(Block::decide(same_nr, self.default_action));
            plan.push_range(nr, block);
            next = nr + 1;
        }
        if next <= u64::from(u32::MAX) {
            plan.push_range(next, gap);
        }
        plan
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

/// upm's own rules, on top of any profile (see the module doc), in ranking order.
fn own_rules(opts: &CompileOptions) -> Vec<ResolvedRule> {
    let enosys = Action::Errno(libc::ENOSYS as u32);
    let mut rules = Vec::new();
    if opts.deny_sockets && opts.allow_tcp {
        rules.extend(tcp_only_socket_rules());
    } else if opts.deny_sockets {
        rules.push(ResolvedRule::own(
            libc::SYS_socket,
            None,
            Action::Errno(libc::EAFNOSUPPORT as u32),
        ));
    }
    if opts.deny_sockets {
        // A datagram pair can still sendto() or connect() any pathname socket.
        rules.push(ResolvedRule {
            nr: libc::SYS_socketpair,
            action: Action::Errno(libc::ESOCKTNOSUPPORT as u32),
            conds: vec![Cond {
                index: 1,
                op: SeccompCmpOp::MaskedEq(0xf),
                value: libc::SOCK_DGRAM as u64,
            }],
        });
    }
    for nr in SYSV_IPC.into_iter().chain(ALWAYS_ENOSYS) {
        rules.push(ResolvedRule::own(nr, None, enosys));
    }
    let bit_set = |index: u8, bit: u64| Cond {
        index,
        op: SeccompCmpOp::MaskedEq(bit),
        value: bit,
    };
    for (nr, mode_arg, flags_arg) in MODE_SETTERS {
        // open(at) reads its mode only when it creates: O_CREAT, or O_TMPFILE's own bit.
        let creating: Vec<Option<Cond>> = match flags_arg {
            Some(f) => vec![
                Some(bit_set(f, libc::O_CREAT as u64)),
                Some(bit_set(f, O_TMPFILE_BIT)),
            ],
            None => vec![None],
        };
        for when in creating {
            for bit in [libc::S_ISUID, libc::S_ISGID] {
                let mut conds: Vec<Cond> = when.iter().cloned().collect();
                conds.push(bit_set(mode_arg, u64::from(bit)));
                rules.push(ResolvedRule {
                    nr,
                    action: Action::Errno(libc::EPERM as u32),
                    conds,
                });
            }
        }
    }
    rules
}

/// `socket()` with an egress allowlist: TCP over IPv4/IPv6 only. Each rule refuses one
/// way of asking for something else; arguments are compared on all 64 bits, so stray
/// high bits are refused too.
fn tcp_only_socket_rules() -> Vec<ResolvedRule> {
    let errno = |e: i32| Action::Errno(e as u32);
    let arg = |index: u8, op: SeccompCmpOp, value: u64| Cond { index, op, value };
    // Ranked in this order, so that where several match the last one's errno wins:
    // a wrong family says so before a wrong type, a wrong type before a wrong protocol.
    // SOCK_STREAM over IP could also be SCTP or MPTCP: only protocol 0 or IPPROTO_TCP.
    let mut rules = vec![ResolvedRule {
        nr: libc::SYS_socket,
        action: errno(libc::EPROTONOSUPPORT),
        conds: vec![
            arg(2, SeccompCmpOp::Ne, 0),
            arg(2, SeccompCmpOp::Ne, libc::IPPROTO_TCP as u64),
        ],
    }];
    // The type is the low 4 bits (SOCK_TYPE_MASK; the rest are SOCK_NONBLOCK and
    // SOCK_CLOEXEC, or an EINVAL from the kernel), and SOCK_STREAM is 1: any other type
    // is 0 or has bit 1, 2 or 3 set.
    let not_stream = [(0xf, 0), (0x2, 0x2), (0x4, 0x4), (0x8, 0x8)];
    const _: () = assert!(libc::SOCK_STREAM == 1);
    for (mask, value) in not_stream {
        rules.push(ResolvedRule {
            nr: libc::SYS_socket,
            action: errno(libc::ESOCKTNOSUPPORT),
            conds: vec![arg(1, SeccompCmpOp::MaskedEq(mask), value)],
        });
    }
    rules.push(ResolvedRule {
        nr: libc::SYS_socket,
        action: errno(libc::EAFNOSUPPORT),
        conds: vec![
            arg(0, SeccompCmpOp::Ne, libc::AF_INET as u64),
            arg(0, SeccompCmpOp::Ne, libc::AF_INET6 as u64),
        ],
    });
    rules
}

/// `__O_TMPFILE`: `O_TMPFILE` is this bit with `O_DIRECTORY`.
const O_TMPFILE_BIT: u64 = (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64;

/// fchmodat2 has the same number on every arch (added in Linux 6.6).
const SYS_FCHMODAT2: i64 = 452;

/// Refused whatever the profile says, as if this kernel lacked them (callers fall back):
/// - `io_uring_setup`: io_uring opens files (with any mode) and creates sockets without
///   a syscall seccomp sees;
/// - `memfd_create`: its pages are charged to no rlimit, so a plugin could hold any
///   amount of memory past `memory_bytes` (an address-space limit);
/// - `openat2`: its mode is in a struct seccomp cannot read (see [`MODE_SETTERS`]).
pub const ALWAYS_ENOSYS: [i64; 3] = [
    libc::SYS_io_uring_setup,
    libc::SYS_memfd_create,
    libc::SYS_openat2,
];

/// Calls that set a file's mode: (number, mode argument, flags argument when the mode
/// counts only with O_CREAT or O_TMPFILE). A mode with the setuid or setgid bit answers
/// EPERM. Otherwise a plugin could leave a setuid copy of a shell in its directory, and
/// any local user could run it as the plugin's uid (and reach other calls' directories,
/// or signal their plugins). (`mkdir` drops both bits itself.)
#[cfg(target_arch = "x86_64")]
pub const MODE_SETTERS: [(i64, u8, Option<u8>); 9] = [
    (libc::SYS_chmod, 1, None),
    (libc::SYS_fchmod, 1, None),
    (libc::SYS_fchmodat, 2, None),
    (SYS_FCHMODAT2, 2, None),
    (libc::SYS_creat, 1, None),
    (libc::SYS_open, 2, Some(1)),
    (libc::SYS_openat, 3, Some(2)),
    (libc::SYS_mknod, 1, None),
    (libc::SYS_mknodat, 2, None),
];
#[cfg(target_arch = "aarch64")]
pub const MODE_SETTERS: [(i64, u8, Option<u8>); 5] = [
    (libc::SYS_fchmod, 1, None),
    (libc::SYS_fchmodat, 2, None),
    (SYS_FCHMODAT2, 2, None),
    (libc::SYS_openat, 3, Some(2)),
    (libc::SYS_mknodat, 2, None),
];

/// SysV shared memory, message queues and semaphores. Refused whatever the profile
/// says: their memory is the IPC namespace's, which no rlimit counts (a plugin could
/// attach, fill and detach segment after segment past `memory_bytes`); and where the
/// IPC namespace was given up (`allow_degraded`), the host's objects would be in reach.
pub const SYSV_IPC: [i64; 12] = [
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_msgget,
    libc::SYS_msgsnd,
    libc::SYS_msgrcv,
    libc::SYS_msgctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semctl,
    libc::SYS_semtimedop,
];

impl ResolvedRule {
    /// upm's own rule: `nr` when arg 0 differs from `except`, or always when `except` is None.
    fn own(nr: i64, except: Option<i32>, action: Action) -> ResolvedRule {
        let conds = except
            .map(|v| Cond {
                index: 0,
                op: SeccompCmpOp::Ne,
                value: v as u64,
            })
            .into_iter()
            .collect();
        ResolvedRule { nr, action, conds }
    }
}

// ---------------------------------------------------------------------------
// The profile a container engine is handed.

#[cfg(target_arch = "x86_64")]
const NATIVE_SCMP_ARCH: &str = "SCMP_ARCH_X86_64";
#[cfg(target_arch = "aarch64")]
const NATIVE_SCMP_ARCH: &str = "SCMP_ARCH_AARCH64";

/// upm's own rules by the name results report them under, and their syscalls.
const OWN_RULE_NAMES: [(&str, &str); 4] = [
    (
        "no_sockets",
        "socket() of every family answers EAFNOSUPPORT",
    ),
    (
        "no_datagram_socketpair",
        "a datagram socketpair() answers ESOCKTNOSUPPORT",
    ),
    (
        "enosys",
        "SysV IPC, memfd_create, io_uring_setup and openat2 answer ENOSYS",
    ),
    (
        "no_setuid_setgid_modes",
        "a mode with the setuid or setgid bit answers EPERM",
    ),
];

/// The OCI profile for a container engine: the profile's own JSON, with every syscall
/// upm has rules for taken out of its entries and given entries of its own, and only the
/// native ABI listed (`architectures`, no `archMap`), as the native filter's ABI guard.
#[derive(Debug, Clone)]
pub struct EngineProfile {
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// Each of upm's own rules ([`OWN_RULE_NAMES`]) and what the engine's profile does about it.
    pub upm_rules: std::collections::BTreeMap<&'static str, String>,
}

/// Most entries one syscall may turn into: the complement of a mask enumerates values.
const MAX_ENGINE_ENTRIES_PER_SYSCALL: usize = 64;

impl Profile {
    /// The profile a container engine gets, with upm's rules (always without network).
    ///
    /// libseccomp (runc, crun) does not rank overlapping rules of one syscall the way
    /// upm does, so each such syscall's decision, as upm's own filter computes it
    /// ([`Block::decide`]), is written as entries whose argument conditions are
    /// *disjoint* between different actions: which rule a library prefers never matters.
    pub fn engine_profile(&self) -> Result<EngineProfile, SeccompError> {
        let host = Host {
            arch: NATIVE_GO_ARCH,
            kernel: KernelVersion::running()?,
        };
        self.engine_profile_for(&host)
    }

    fn engine_profile_for(&self, host: &Host) -> Result<EngineProfile, SeccompError> {
        let opts = CompileOptions {
            deny_sockets: true,
            allow_tcp: false,
        };
        let own_nrs: std::collections::BTreeSet<i64> =
            own_rules(&opts).iter().map(|r| r.nr).collect();
        let mut ranked = self.ranked_rules(&opts, host);
        ranked.sort_by_key(|(rank, r)| (r.nr, std::cmp::Reverse(*rank)));
        let mut raw: serde_json::Value =
            serde_json::from_slice(&self.bytes).map_err(|source| SeccompError::Parse {
                profile: self.name.clone(),
                source,
            })?;
        let mut names = Vec::new();
        let mut entries = Vec::new();
        for nr in &own_nrs {
            let Some(name) = syscalls::NATIVE
                .iter()
                .find(|(_, n)| n == nr)
                .map(|(name, _)| *name)
            else {
                return Err(self.engine_error(&nr.to_string(), "no name on this arch"));
            };
            names.push(name);
            let rules: Vec<(Rank, ResolvedRule)> = ranked
                .iter()
                .filter(|(_, r)| r.nr == *nr)
                .cloned()
                .collect();
            let block = Block::decide(&rules, self.default_action);
            let regions = block
                .disjoint_regions()
                .map_err(|reason| self.engine_error(name, &reason))?;
            if regions.len() > MAX_ENGINE_ENTRIES_PER_SYSCALL {
                return Err(self.engine_error(name, "too many entries"));
            }
            entries.extend(
                regions
                    .iter()
                    .map(|(action, conds)| oci_entry(name, *action, conds)),
            );
        }
        let obj = raw
            .as_object_mut()
            .ok_or_else(|| self.engine_error("(all)", "the profile is not a JSON object"))?;
        let mut syscalls_json: Vec<serde_json::Value> = match obj.remove("syscalls") {
            Some(serde_json::Value::Array(a)) => a,
            _ => Vec::new(),
        };
        for e in &mut syscalls_json {
            let Some(e) = e.as_object_mut() else { continue };
            if let Some(serde_json::Value::Array(list)) = e.get_mut("names") {
                list.retain(|n| !n.as_str().is_some_and(|n| names.contains(&n)));
            }
            if e.get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| names.contains(&n))
            {
                e.remove("name");
            }
        }
        // An entry left without a name would name nothing (or be refused).
        syscalls_json.retain(|e| {
            let has_names = e
                .get("names")
                .and_then(|n| n.as_array())
                .is_some_and(|a| !a.is_empty());
            has_names || e.get("name").is_some()
        });
        syscalls_json.extend(entries);
        obj.insert("syscalls".into(), serde_json::Value::Array(syscalls_json));
        obj.remove("archMap");
        obj.insert(
            "architectures".into(),
            serde_json::json!([NATIVE_SCMP_ARCH]),
        );
        let bytes = serde_json::to_vec_pretty(&raw).map_err(|source| SeccompError::Parse {
            profile: self.name.clone(),
            source,
        })?;
        let upm_rules = OWN_RULE_NAMES
            .iter()
            .map(|(rule, what)| (*rule, format!("enforced in the engine's profile: {what}")))
            .collect();
        Ok(EngineProfile {
            digest: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            bytes,
            upm_rules,
        })
    }

    fn engine_error(&self, syscall: &str, reason: &str) -> SeccompError {
        SeccompError::EngineProfile {
            profile: self.name.clone(),
            syscall: syscall.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

fn oci_entry(name: &str, action: Action, conds: &[Cond]) -> serde_json::Value {
    let (action_name, errno) = match action {
        Action::Allow => ("SCMP_ACT_ALLOW", None),
        Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
        Action::KillThread => ("SCMP_ACT_KILL_THREAD", None),
        Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
        Action::Trap => ("SCMP_ACT_TRAP", None),
        Action::Log => ("SCMP_ACT_LOG", None),
    };
    let mut e = serde_json::json!({"names": [name], "action": action_name});
    if let Some(errno) = errno {
        e["errnoRet"] = serde_json::json!(errno);
    }
    if !conds.is_empty() {
        e["args"] = conds.iter().map(Cond::to_oci).collect();
    }
    e
}

impl Cond {
    fn to_oci(&self) -> serde_json::Value {
        let (op, value, value_two) = match self.op {
            SeccompCmpOp::Eq => ("SCMP_CMP_EQ", self.value, 0),
            SeccompCmpOp::Ne => ("SCMP_CMP_NE", self.value, 0),
            SeccompCmpOp::Lt => ("SCMP_CMP_LT", self.value, 0),
            SeccompCmpOp::Le => ("SCMP_CMP_LE", self.value, 0),
            SeccompCmpOp::Gt => ("SCMP_CMP_GT", self.value, 0),
            SeccompCmpOp::Ge => ("SCMP_CMP_GE", self.value, 0),
            // OCI: `value` is the mask, `valueTwo` the datum.
            SeccompCmpOp::MaskedEq(mask) => ("SCMP_CMP_MASKED_EQ", mask, self.value),
        };
        serde_json::json!({"index": self.index, "value": value, "valueTwo": value_two, "op": op})
    }

    /// The conditions one of which holds exactly when this one does not (`Err` when that
    /// needs more than 16 values of a mask).
    fn negation(&self) -> Result<Vec<Cond>, String> {
        let with = |op, value| Cond {
            index: self.index,
            op,
            value,
        };
        Ok(match self.op {
            SeccompCmpOp::Eq => vec![with(SeccompCmpOp::Ne, self.value)],
            SeccompCmpOp::Ne => vec![with(SeccompCmpOp::Eq, self.value)],
            SeccompCmpOp::Lt => vec![with(SeccompCmpOp::Ge, self.value)],
            SeccompCmpOp::Ge => vec![with(SeccompCmpOp::Lt, self.value)],
            SeccompCmpOp::Le => vec![with(SeccompCmpOp::Gt, self.value)],
            SeccompCmpOp::Gt => vec![with(SeccompCmpOp::Le, self.value)],
            SeccompCmpOp::MaskedEq(mask) => {
                if mask.count_ones() > 4 {
                    return Err(format!(
                        "the negation of a MASKED_EQ with mask {mask:#x} (more than 4 bits)"
                    ));
                }
                let bits: Vec<u64> = (0..64)
                    .map(|b| 1u64 << b)
                    .filter(|b| mask & b != 0)
                    .collect();
                (0..1u32 << bits.len())
                    .map(|sel| {
                        bits.iter()
                            .enumerate()
                            .filter(|(i, _)| sel & (1 << i) != 0)
                            .fold(0, |acc, (_, b)| acc | b)
                    })
                    .filter(|v| *v != self.value)
                    .map(|v| with(SeccompCmpOp::MaskedEq(mask), v))
                    .collect()
            }
        })
    }

    /// Whether every argument that satisfies `self` satisfies `other` too.
    fn implies(&self, other: &Cond) -> bool {
        if self == other {
            return true;
        }
        match (&self.op, &other.op) {
            (SeccompCmpOp::MaskedEq(m1), SeccompCmpOp::MaskedEq(m2))
                if self.index == other.index =>
            {
                *m2 & !*m1 == 0 && self.value & *m2 == other.value
            }
            _ => false,
        }
    }
}

/// A conjunction of conditions with at most one per argument (runc turns two conditions
/// on one argument into an OR). Two MASKED_EQs on one argument merge; `Ok(None)` when
/// the result can never hold; `Err` when two other conditions share an argument.
fn and_cond(conj: &[Cond], c: &Cond) -> Result<Option<Vec<Cond>>, String> {
    let mut out = conj.to_vec();
    match out.iter().position(|x| x.index == c.index) {
        None => out.push(c.clone()),
        Some(i) if out[i] == *c => {}
        Some(i) => match (&out[i].op, &c.op) {
            (SeccompCmpOp::MaskedEq(m1), SeccompCmpOp::MaskedEq(m2)) => {
                let (m1, m2) = (*m1, *m2);
                let both = m1 & m2;
                if out[i].value & both != c.value & both {
                    return Ok(None);
                }
                out[i] = Cond {
                    index: c.index,
                    op: SeccompCmpOp::MaskedEq(m1 | m2),
                    value: out[i].value | c.value,
                };
            }
            _ => {
                return Err(format!(
                    "two different comparisons of argument {} in one entry",
                    c.index
                ))
            }
        },
    }
    Ok(Some(out))
}

/// `region AND conds` for each conjunction of `region` (in disjunctive form).
fn and_all(region: &[Vec<Cond>], conds: &[Cond]) -> Result<Vec<Vec<Cond>>, String> {
    let mut out = Vec::new();
    for conj in region {
        let mut acc = Some(conj.clone());
        for c in conds {
            acc = match acc {
                Some(a) => and_cond(&a, c)?,
                None => None,
            };
        }
        out.extend(acc);
    }
    Ok(simplify(out))
}

/// NOT (c1 OR c2 OR ...), each `ci` a conjunction, in disjunctive form.
fn complement(checks: &[&[Cond]]) -> Result<Vec<Vec<Cond>>, String> {
    let mut region: Vec<Vec<Cond>> = vec![Vec::new()];
    for conds in checks {
        let mut next = Vec::new();
        for conj in &region {
            for c in *conds {
                for alt in c.negation()? {
                    next.extend(and_cond(conj, &alt)?);
                }
            }
        }
        region = simplify(next);
        if region.len() > MAX_ENGINE_ENTRIES_PER_SYSCALL {
            return Err("too many entries".into());
        }
    }
    Ok(region)
}

/// Drops conjunctions that another one already covers.
fn simplify(mut region: Vec<Vec<Cond>>) -> Vec<Vec<Cond>> {
    let covers =
        |wide: &[Cond], narrow: &[Cond]| wide.iter().all(|w| narrow.iter().any(|n| n.implies(w)));
    let mut out: Vec<Vec<Cond>> = Vec::new();
    region.sort_by_key(Vec::len);
    for conj in region {
        if !out.iter().any(|kept| covers(kept, &conj)) {
            out.push(conj);
        }
    }
    out
}

impl Block {
    /// The decision as (action, conjunction) regions: regions of different actions never
    /// overlap, and together they cover every call. A check is decided where it holds
    /// and no earlier check of another action does (an earlier one of the same action
    /// gives the same answer); `otherwise` where none holds.
    fn disjoint_regions(&self) -> Result<Vec<(Action, Vec<Cond>)>, String> {
        let mut out = Vec::new();
        for (i, check) in self.checks.iter().enumerate() {
            let earlier: Vec<&[Cond]> = self.checks[..i]
                .iter()
                .filter(|c| c.action != check.action)
                .map(|c| c.conds.as_slice())
                .collect();
            for conj in and_all(&complement(&earlier)?, &check.conds)? {
                out.push((check.action, conj));
            }
        }
        let all: Vec<&[Cond]> = self.checks.iter().map(|c| c.conds.as_slice()).collect();
        for conj in complement(&all)? {
            out.push((self.otherwise, conj));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Planning: what each syscall number does.

/// Which of several matching rules decides: the most restrictive action, and between
/// equally restrictive ones the later group (the filter a stack would install later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    restrictiveness: u8,
    group: usize,
}

impl Rank {
    fn new(action: Action, group: usize) -> Rank {
        let restrictiveness = match action {
            Action::Allow => 0,
            Action::Log => 1,
            Action::Errno(_) => 2,
            Action::Trap => 3,
            Action::KillThread => 4,
            Action::KillProcess => 5,
        };
        Rank {
            restrictiveness,
            group,
        }
    }
}

/// One syscall number's decision: the first check that holds returns its action, and
/// `otherwise` is returned when none does. A block without checks is a single RET.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    checks: Vec<Check>,
    otherwise: Action,
}

/// Conditions that must all hold (never empty: an unconditional rule ends a block).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Check {
    action: Action,
    conds: Vec<Cond>,
}

impl Block {
    fn ret(action: Action) -> Block {
        Block {
            checks: Vec::new(),
            otherwise: action,
        }
    }

    /// One syscall's rules, best rank first; a call matching none gets `default`.
    fn decide(rules: &[(Rank, ResolvedRule)], default: Action) -> Block {
        let mut checks: Vec<Check> = Vec::new();
        let mut otherwise = default;
        for (_, rule) in rules {
            if rule.conds.is_empty() {
                // Everything ranked below an unconditional rule is unreachable.
                otherwise = rule.action;
                break;
            }
            let check = Check {
                action: rule.action,
                conds: rule.conds.clone(),
            };
            if !checks.contains(&check) {
                checks.push(check);
            }
        }
        // A last check whose action is also the fallback decides nothing.
        while checks.last().is_some_and(|c| c.action == otherwise) {
            checks.pop();
        }
        Block { checks, otherwise }
    }
}

/// The whole filter before it becomes BPF.
#[derive(Debug, Default)]
struct Plan {
    /// Distinct blocks; syscall numbers with equal decisions share one.
    blocks: Vec<Block>,
    /// (first syscall number, block), sorted and starting at 0; a range runs up to the
    /// next one's start, the last one up to u32::MAX. Neighbours have different blocks.
    ranges: Vec<(u32, usize)>,
}

impl Plan {
    fn intern(&mut self, block: Block) -> usize {
        match self.blocks.iter().position(|b| *b == block) {
            Some(i) => i,
            None => {
                self.blocks.push(block);
                self.blocks.len() - 1
            }
        }
    }

    /// `start` is at most u32::MAX: callers only pass numbers that follow a u32.
    fn push_range(&mut self, start: u64, block: usize) {
        if self.ranges.last().is_some_and(|r| r.1 == block) {
            return;
        }
        if let Ok(start) = u32::try_from(start) {
            self.ranges.push((start, block));
        }
    }

    /// Lays the plan out as one program: ABI guard, binary search over the ranges, then
    /// the blocks (single RETs first, next to the search, then the conditional ones).
    fn to_bpf(&self) -> BpfProgram {
        let mut blocks = self.blocks.clone();
        let kill = blocks
            .iter()
            .position(|b| *b == Block::ret(Action::KillProcess))
            .unwrap_or_else(|| {
                blocks.push(Block::ret(Action::KillProcess));
                blocks.len() - 1
            });
        let mut e = Emitter::default();
        let mut labels = vec![0; blocks.len()];
        // Emitted backwards: the conditional blocks end up last.
        for (i, b) in blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.checks.is_empty())
        {
            labels[i] = e.block(b);
        }
        for (i, b) in blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b.checks.is_empty())
        {
            labels[i] = e.ret(b.otherwise);
        }
        let root = e.search(&self.ranges, &labels, labels[kill]);
        e.guard(root, labels[kill]);
        e.finish()
    }
}

// ---------------------------------------------------------------------------
// BPF.

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// The kernel refuses longer programs (BPF_MAXINSNS in linux/bpf_common.h).
const BPF_MAXINSNS: usize = 4096;
/// Conditional jumps have 8-bit offsets; farther targets go through a JA.
const MAX_JUMP: usize = u8::MAX as usize;
/// Offsets in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
const SECCOMP_DATA_ARGS: u32 = 16;
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

impl Action {
    /// The filter's return value (SECCOMP_RET_*), as seccompiler and libseccomp encode it.
    fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | (e & libc::SECCOMP_RET_DATA),
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Log => libc::SECCOMP_RET_LOG,
        }
    }
}

/// (high word, low word) offsets of argument `index`.
fn arg_offsets(index: u8) -> (u32, u32) {
    let base = SECCOMP_DATA_ARGS + 8 * u32::from(index);
    if cfg!(target_endian = "little") {
        (base + 4, base)
    } else {
        (base, base + 4)
    }
}

/// (high word, low word).
fn split(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// Where an emitted instruction sits: its index in `Emitter::rev`.
type Label = usize;

/// Builds a program backwards, so every jump target (always further on) already has a
/// place when the jump is emitted and far targets can get a trampoline on the spot.
#[derive(Default)]
struct Emitter {
    rev: Vec<sock_filter>,
}

impl Emitter {
    fn push(&mut self, insn: sock_filter) -> Label {
        self.rev.push(insn);
        self.rev.len() - 1
    }

    fn stmt(&mut self, code: u16, k: u32) -> Label {
        self.push(sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        })
    }

    fn ret(&mut self, action: Action) -> Label {
        self.stmt(BPF_RET_K, action.ret())
    }

    /// Instructions skipped by a jump placed at `from` that lands on `to`.
    fn distance(from: Label, to: Label) -> usize {
        from - to - 1
    }

    /// An unconditional jump, whose 32-bit offset reaches anywhere.
    fn ja(&mut self, to: Label) -> Label {
        let k = Emitter::distance(self.rev.len(), to);
        self.stmt(BPF_JA, u32::try_from(k).unwrap_or(u32::MAX))
    }

    /// A conditional jump; a target out of 8-bit reach goes through a JA placed right
    /// after the jump (each such JA pushes the jump one further from the other target).
    fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) -> Label {
        let (mut far_t, mut far_f) = (false, false);
        loop {
            let shared = far_t && far_f && jt == jf;
            let trampolines = usize::from(far_t) + usize::from(far_f && !shared);
            let at = self.rev.len() + trampolines;
            let t = far_t || Emitter::distance(at, jt) > MAX_JUMP;
            let f = far_f || Emitter::distance(at, jf) > MAX_JUMP;
            if (t, f) == (far_t, far_f) {
                break;
            }
            (far_t, far_f) = (t, f);
        }
        let jf = if far_f { self.ja(jf) } else { jf };
        let jt = match (far_t, far_f) {
            (true, true) if jt == jf => jf,
            (true, _) => self.ja(jt),
            _ => jt,
        };
        let at = self.rev.len();
        let offset = |to| u8::try_from(Emitter::distance(at, to)).unwrap_or(u8::MAX);
        let insn = sock_filter {
            code,
            jt: offset(jt),
            jf: offset(jf),
            k,
        };
        self.push(insn)
    }

    /// Loads a word of `seccomp_data`, then branches on it; returns the load.
    fn load_and_jump(&mut self, offset: u32, code: u16, k: u32, jt: Label, jf: Label) -> Label {
        self.jump(code, k, jt, jf);
        self.stmt(BPF_LD_W_ABS, offset)
    }

    /// Binary search over `ranges`: one JGE per split, landing on the blocks' labels.
    fn search(&mut self, ranges: &[(u32, usize)], labels: &[Label], empty: Label) -> Label {
        match ranges {
            [] => empty,
            [(_, block)] => labels[*block],
            _ => {
                let mid = ranges.len() / 2;
                let above = self.search(&ranges[mid..], labels, empty);
                let below = self.search(&ranges[..mid], labels, empty);
                self.jump(BPF_JGE_K, ranges[mid].0, above, below)
            }
        }
    }

    /// Kills a foreign `arch` and (x86_64) x32 numbers, then loads the syscall number.
    fn guard(&mut self, search: Label, kill: Label) -> Label {
        #[cfg(target_arch = "x86_64")]
        self.jump(BPF_JGE_K, X32_SYSCALL_BIT, kill, search);
        #[cfg(not(target_arch = "x86_64"))]
        if search + 1 != self.rev.len() {
            // The load below falls through; the search may start elsewhere.
            self.ja(search);
        }
        let nr = self.stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR);
        self.load_and_jump(SECCOMP_DATA_ARCH, BPF_JEQ_K, NATIVE_AUDIT_ARCH, nr, kill)
    }

    /// Checks in order, then `otherwise`; one RET per distinct action at the block's end.
    fn block(&mut self, block: &Block) -> Label {
        let mut rets = Vec::new();
        for check in &block.checks {
            self.shared_ret(&mut rets, check.action);
        }
        let mut next = self.shared_ret(&mut rets, block.otherwise);
        for check in block.checks.iter().rev() {
            let mut all = self.shared_ret(&mut rets, check.action);
            for cond in check.conds.iter().rev() {
                all = self.cond(cond, all, next);
            }
            next = all;
        }
        next
    }

    /// The block's RET for `action`, emitted on first use (only reached by jumps).
    fn shared_ret(&mut self, rets: &mut Vec<(Action, Label)>, action: Action) -> Label {
        if let Some((_, label)) = rets.iter().find(|(a, _)| *a == action) {
            return *label;
        }
        let label = self.ret(action);
        rets.push((action, label));
        label
    }

    /// One 64-bit comparison as libseccomp emits it: high word first, then low word.
    fn cond(&mut self, cond: &Cond, pass: Label, fail: Label) -> Label {
        let (hi_off, lo_off) = arg_offsets(cond.index);
        let (hi, lo) = split(cond.value);
        match cond.op {
            SeccompCmpOp::Eq => {
                let low = self.load_and_jump(lo_off, BPF_JEQ_K, lo, pass, fail);
                self.load_and_jump(hi_off, BPF_JEQ_K, hi, low, fail)
            }
            SeccompCmpOp::Ne => {
                let low = self.load_and_jump(lo_off, BPF_JEQ_K, lo, fail, pass);
                self.load_and_jump(hi_off, BPF_JEQ_K, hi, low, pass)
            }
            SeccompCmpOp::Gt | SeccompCmpOp::Ge => {
                let code = if cond.op == SeccompCmpOp::Gt {
                    BPF_JGT_K
                } else {
                    BPF_JGE_K
                };
                let low = self.load_and_jump(lo_off, code, lo, pass, fail);
                self.high_word(hi_off, hi, pass, low, fail)
            }
            SeccompCmpOp::Lt | SeccompCmpOp::Le => {
                // a < v is !(a >= v); a <= v is !(a > v).
                let code = if cond.op == SeccompCmpOp::Lt {
                    BPF_JGE_K
                } else {
                    BPF_JGT_K
                };
                let low = self.load_and_jump(lo_off, code, lo, fail, pass);
                self.high_word(hi_off, hi, fail, low, pass)
            }
            SeccompCmpOp::MaskedEq(mask) => {
                let (mask_hi, mask_lo) = split(mask);
                let low = self.masked_word(lo_off, mask_lo, lo, pass, fail);
                self.masked_word(hi_off, mask_hi, hi, low, fail)
            }
        }
    }

    /// Three-way branch on a high word against `v`.
    fn high_word(
        &mut self,
        offset: u32,
        v: u32,
        above: Label,
        equal: Label,
        below: Label,
    ) -> Label {
        if v == u32::MAX {
            // Nothing is above.
            return self.load_and_jump(offset, BPF_JEQ_K, v, equal, below);
        }
        // With v == 0, "not above" already means equal.
        let not_above = if v == 0 {
            equal
        } else {
            self.jump(BPF_JEQ_K, v, equal, below)
        };
        self.load_and_jump(offset, BPF_JGT_K, v, above, not_above)
    }

    /// `(word & mask) == v`, with the shortcuts the mask allows.
    fn masked_word(&mut self, offset: u32, mask: u32, v: u32, pass: Label, fail: Label) -> Label {
        if mask == 0 {
            return if v == 0 { pass } else { fail };
        }
        if v == 0 {
            return self.load_and_jump(offset, BPF_JSET_K, mask, fail, pass);
        }
        self.jump(BPF_JEQ_K, v, pass, fail);
        if mask != u32::MAX {
            self.stmt(BPF_AND_K, mask);
        }
        self.stmt(BPF_LD_W_ABS, offset)
    }

    fn finish(mut self) -> BpfProgram {
        self.rev.reverse();
        self.rev
    }
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

    /// Total BPF instructions installed, for reports and limits.
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
    use std::collections::BTreeMap;

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
        // The hash index finds every native name, and nothing else.
        for (name, nr) in syscalls::NATIVE {
            assert_eq!(syscalls::native_number(name), Some(*nr), "{name}");
        }
        for not_native in ["", "rea", "readd", "READ", "chown32", "set_tls", "x"] {
            assert_eq!(syscalls::native_number(not_native), None, "{not_native}");
        }
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
        assert_eq!(p.entries[0].nrs, vec![nr("read")]);
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

    // ---- the reference: yesterday's stack of seccompiler filters ----

    /// The stack compiler upm used before the single program, kept as the oracle the new
    /// program is checked against: ABI guard, one filter per action group, the network
    /// filters, the default filter.
    mod oracle {
        use super::super::*;
        use seccompiler::{
            SeccompAction, SeccompCmpArgLen, SeccompCondition, SeccompFilter, SeccompRule,
            TargetArch,
        };
        use std::collections::BTreeMap;

        #[cfg(target_arch = "x86_64")]
        const NATIVE_TARGET: TargetArch = TargetArch::x86_64;
        #[cfg(target_arch = "aarch64")]
        const NATIVE_TARGET: TargetArch = TargetArch::aarch64;

        fn to_seccompiler(action: Action) -> SeccompAction {
            match action {
                Action::Allow => SeccompAction::Allow,
                Action::Errno(e) => SeccompAction::Errno(e),
                Action::KillThread => SeccompAction::KillThread,
                Action::KillProcess => SeccompAction::KillProcess,
                Action::Trap => SeccompAction::Trap,
                Action::Log => SeccompAction::Log,
            }
        }

        /// One filter of the stack. Per syscall, `None` means "matches unconditionally",
        /// otherwise the OR of the listed AND-ed condition sets.
        #[derive(Debug, Clone)]
        pub struct Stage {
            pub mismatch_action: Action,
            pub match_action: Action,
            pub rules: BTreeMap<i64, Option<Vec<Vec<Cond>>>>,
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

        /// The filters after the ABI guard, in installation order.
        pub fn plan(p: &Profile, opts: &CompileOptions, host: &Host) -> Vec<Stage> {
            let rules = p.resolve(host);
            let mut groups: Vec<Stage> = Vec::new();
            for rule in rules.iter().filter(|r| r.action != Action::Allow) {
                match groups.iter_mut().find(|g| g.match_action == rule.action) {
                    Some(group) => group.add(rule),
                    None => {
                        let mut group = Stage::new(Action::Allow, rule.action);
                        group.add(rule);
                        groups.push(group);
                    }
                }
            }
            let mut default = Stage::new(p.default_action, Action::Allow);
            for rule in &rules {
                default.add(rule);
            }
            // Each of upm's own rules as a filter of its own, installed after the profile's.
            for rule in own_rules(opts) {
                let mut stage = Stage::new(Action::Allow, rule.action);
                stage.add(&rule);
                groups.push(stage);
                default.add(&rule);
            }
            if p.default_action != Action::Allow {
                groups.push(default);
            }
            groups
        }

        fn to_bpf(stage: Stage) -> BpfProgram {
            let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
            for (nr, alternatives) in stage.rules {
                let chain = alternatives
                    .unwrap_or_default()
                    .into_iter()
                    .map(|conds| {
                        let conditions = conds
                            .into_iter()
                            .map(|c| {
                                SeccompCondition::new(
                                    c.index,
                                    SeccompCmpArgLen::Qword,
                                    c.op,
                                    c.value,
                                )
                                .unwrap()
                            })
                            .collect();
                        SeccompRule::new(conditions).unwrap()
                    })
                    .collect();
                rules.insert(nr, chain);
            }
            let filter = SeccompFilter::new(
                rules,
                to_seccompiler(stage.mismatch_action),
                to_seccompiler(stage.match_action),
                NATIVE_TARGET,
            )
            .unwrap();
            BpfProgram::try_from(filter).unwrap()
        }

        fn insn(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
            sock_filter { code, jt, jf, k }
        }

        /// Kills foreign ABIs: another `arch`, and x32 numbers on x86_64.
        pub fn abi_guard() -> BpfProgram {
            let mut prog = vec![
                insn(BPF_LD_W_ABS, SECCOMP_DATA_ARCH, 0, 0),
                insn(BPF_JEQ_K, NATIVE_AUDIT_ARCH, 1, 0),
                insn(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
            ];
            #[cfg(target_arch = "x86_64")]
            prog.extend([
                insn(BPF_LD_W_ABS, SECCOMP_DATA_NR, 0, 0),
                insn(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
                insn(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS, 0, 0),
            ]);
            prog.push(insn(BPF_RET_K, libc::SECCOMP_RET_ALLOW, 0, 0));
            prog
        }

        /// The whole stack, in installation order.
        pub fn stack(p: &Profile, opts: &CompileOptions, host: &Host) -> Vec<BpfProgram> {
            let mut programs = vec![abi_guard()];
            programs.extend(plan(p, opts, host).into_iter().map(to_bpf));
            programs
        }
    }

    // ---- a classic-BPF interpreter, to run both compilers' output ----

    /// `struct seccomp_data` (the instruction pointer is 0).
    #[derive(Debug, Clone, Copy)]
    struct Data {
        nr: u32,
        arch: u32,
        args: [u64; 6],
    }

    impl Data {
        fn native(nr: u32, args: [u64; 6]) -> Data {
            Data {
                nr,
                arch: NATIVE_AUDIT_ARCH,
                args,
            }
        }

        fn word(&self, offset: u32) -> u32 {
            let mut bytes = [0u8; 64];
            bytes[0..4].copy_from_slice(&self.nr.to_ne_bytes());
            bytes[4..8].copy_from_slice(&self.arch.to_ne_bytes());
            for (i, a) in self.args.iter().enumerate() {
                bytes[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
            }
            let o = offset as usize;
            assert!(o % 4 == 0 && o + 4 <= 64, "load at bad offset {offset}");
            u32::from_ne_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]])
        }
    }

    /// Runs `prog` as the kernel would; any opcode upm does not expect fails the test.
    fn run(prog: &[sock_filter], d: &Data) -> u32 {
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let Some(i) = prog.get(pc) else {
                panic!("ran off the end of a {}-instruction program", prog.len());
            };
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => acc = d.word(i.k),
                BPF_AND_K => acc &= i.k,
                BPF_RET_K => return i.k,
                BPF_JA => pc += i.k as usize,
                BPF_JEQ_K | BPF_JGT_K | BPF_JGE_K | BPF_JSET_K => {
                    let taken = match i.code {
                        BPF_JEQ_K => acc == i.k,
                        BPF_JGT_K => acc > i.k,
                        BPF_JGE_K => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                other => panic!("unexpected opcode {other:#x} at {}", pc - 1),
            }
        }
    }

    /// The kernel's rule for a stack: the lowest action (as i32) wins, and between equal
    /// actions the most recently installed filter's return value.
    fn run_stack(programs: &[BpfProgram], d: &Data) -> u32 {
        let action = |r: u32| (r & 0xffff_0000) as i32;
        let mut best = libc::SECCOMP_RET_ALLOW;
        for p in programs {
            let r = run(p, d);
            if action(r) <= action(best) {
                best = r;
            }
        }
        best
    }

    /// What libseccomp's 64-bit comparison means, written independently of both compilers.
    fn holds(c: &Cond, x: u64) -> bool {
        match c.op {
            SeccompCmpOp::Eq => x == c.value,
            SeccompCmpOp::Ne => x != c.value,
            SeccompCmpOp::Lt => x < c.value,
            SeccompCmpOp::Le => x <= c.value,
            SeccompCmpOp::Gt => x > c.value,
            SeccompCmpOp::Ge => x >= c.value,
            SeccompCmpOp::MaskedEq(m) => x & m == c.value,
        }
    }

    /// Values on and around a condition's edges, in both words.
    fn boundary_values(c: &Cond) -> Vec<u64> {
        let v = c.value;
        let mut out = vec![
            v,
            v.wrapping_sub(1),
            v.wrapping_add(1),
            0,
            1,
            u64::MAX,
            u64::from(u32::MAX),
            1 << 32,
            v ^ (1 << 32),
            v ^ (1 << 63),
            v.wrapping_add(1 << 32),
            v.wrapping_sub(1 << 32),
            v & 0xffff_ffff,
            v | 0xffff_ffff_0000_0000,
            (v & 0xffff_ffff).wrapping_sub(1),
        ];
        if let SeccompCmpOp::MaskedEq(m) = c.op {
            let outside = !m;
            out.extend([
                m,
                outside,
                v | outside,
                v ^ (m & m.wrapping_neg()),
                v ^ (1u64 << (63 - m.leading_zeros().min(63))),
                v | (outside & outside.wrapping_neg()),
            ]);
        }
        out
    }

    /// Deterministic xorshift64*.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    /// Checks the single program against the oracle stack; returns how many inputs it ran.
    fn assert_equivalent(p: &Profile, opts: &CompileOptions, h: &Host) -> usize {
        let compiled = p.compile_for(opts, h).unwrap();
        assert_eq!(compiled.filter_count(), 1);
        let prog = &compiled.programs[0];
        let stack = oracle::stack(p, opts, h);
        let mut checked = 0;
        let mut check = |d: Data| {
            let (new, old) = (run(prog, &d), run_stack(&stack, &d));
            assert_eq!(
                new, old,
                "{} (sockets denied: {}): {d:x?}: single program {new:#x}, stack {old:#x}",
                p.name, opts.deny_sockets
            );
            checked += 1;
        };
        for nr in 0..=1023 {
            check(Data::native(nr, [0; 6]));
        }
        let x32 = [
            0x4000_0000,
            0x4000_0000 | 39,
            0x4000_0000 | 512,
            0x7fff_ffff,
        ];
        for nr in x32.into_iter().chain([0x3fff_ffff, 0x8000_0000, u32::MAX]) {
            check(Data::native(nr, [0; 6]));
        }
        // AUDIT_ARCH_I386, and a zero arch.
        for arch in [0x4000_0003, 0] {
            for nr in [0, 1, 2, 39, 59, 231, 435] {
                check(Data {
                    nr,
                    arch,
                    args: [0; 6],
                });
            }
        }
        let mut by_nr: BTreeMap<i64, Vec<Vec<Cond>>> = BTreeMap::new();
        for (_, rule) in p.ranked_rules(opts, h) {
            if !rule.conds.is_empty() {
                by_nr.entry(rule.nr).or_default().push(rule.conds);
            }
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for (nr, alternatives) in by_nr {
            let nr = u32::try_from(nr).unwrap();
            let mut candidates: [Vec<u64>; 6] = Default::default();
            for c in alternatives.iter().flatten() {
                candidates[usize::from(c.index)].extend(boundary_values(c));
            }
            // Starting points: nothing set, and one vector satisfying each alternative.
            let mut bases = vec![[0u64; 6]];
            for conds in &alternatives {
                let mut args = [0u64; 6];
                for c in conds {
                    let slot = usize::from(c.index);
                    if let Some(x) = boundary_values(c).into_iter().find(|x| holds(c, *x)) {
                        args[slot] = x;
                    }
                }
                assert!(conds.iter().all(|c| holds(c, args[usize::from(c.index)])));
                bases.push(args);
            }
            for base in &bases {
                for (slot, values) in candidates.iter().enumerate() {
                    for &x in values {
                        let mut args = *base;
                        args[slot] = x;
                        check(Data::native(nr, args));
                    }
                }
            }
            for _ in 0..300 {
                let mut args = *bases.get(rng.next() as usize % bases.len()).unwrap();
                for (slot, values) in candidates.iter().enumerate() {
                    args[slot] = match rng.next() % 4 {
                        0 => args[slot],
                        1 if !values.is_empty() => values[rng.next() as usize % values.len()],
                        2 => rng.next() % 16,
                        _ => rng.next(),
                    };
                }
                check(Data::native(nr, args));
            }
        }
        checked
    }

    fn both_network_options() -> [CompileOptions; 2] {
        [
            CompileOptions::default(),
            CompileOptions {
                deny_sockets: true,
                allow_tcp: false,
            },
        ]
    }

    // ---- the single program ----

    const MIXED: &str = r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[
        {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
        {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
        {"names":["uname"],"action":"SCMP_ACT_TRAP"},
        {"names":["getpid"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
        {"names":["gettid"],"action":"SCMP_ACT_ERRNO","errnoRet":13}
    ]}"#;

    /// Every action, two errnos in an order that matters, every operator, 64-bit values,
    /// a syscall at each end of the table, and rules for upm's network syscalls.
    const SYNTHETIC_DENY: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
        {"names":["read","write","close","exit_group"],"action":"SCMP_ACT_ALLOW"},
        {"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":1,"value":4294967296,"op":"SCMP_CMP_LT"}]},
        {"names":["getpid"],"action":"SCMP_ACT_KILL","args":[{"index":0,"value":5,"op":"SCMP_CMP_GT"}]},
        {"names":["getpid"],"action":"SCMP_ACT_ALLOW","args":[{"index":2,"value":7,"op":"SCMP_CMP_NE"}]},
        {"names":["getpid","getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":22,"args":[{"index":0,"value":4294967301,"op":"SCMP_CMP_GE"}]},
        {"names":["getppid"],"action":"SCMP_ACT_TRAP","args":[{"index":3,"value":12884901888,"op":"SCMP_CMP_LE"},{"index":4,"value":0,"op":"SCMP_CMP_EQ"}]},
        {"names":["getppid"],"action":"SCMP_ACT_LOG","args":[{"index":5,"value":280375465083135,"valueTwo":188016488349714,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["getppid","uname"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":1,"value":18446744073709551615,"op":"SCMP_CMP_EQ"}]},
        {"names":["uname"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
        {"names":["uname"],"action":"SCMP_ACT_LOG","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["socket"],"action":"SCMP_ACT_ERRNO","errnoRet":22,"args":[{"index":0,"value":2,"op":"SCMP_CMP_EQ"}]},
        {"names":["socket"],"action":"SCMP_ACT_KILL_PROCESS","args":[{"index":0,"value":10,"op":"SCMP_CMP_EQ"}]},
        {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":1,"op":"SCMP_CMP_EQ"}]},
        {"names":["io_uring_setup"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
        {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
        {"names":["seccomp"],"action":"SCMP_ACT_KILL"},
        {"names":["listns","mseal"],"action":"SCMP_ACT_TRAP","args":[{"index":2,"value":4294967295,"op":"SCMP_CMP_GE"}]},
        {"names":["getuid"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_LE"},{"index":1,"value":18446744073709551615,"op":"SCMP_CMP_LT"}]}
    ]}"#;

    /// An allow-list turned inside out: default ALLOW, then KILL, TRAP, LOG and errnos.
    const SYNTHETIC_ALLOW: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["mount","umount2"],"action":"SCMP_ACT_ERRNO"},
        {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"},
        {"names":["kill"],"action":"SCMP_ACT_KILL","args":[{"index":1,"value":9,"op":"SCMP_CMP_EQ"}]},
        {"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":3,"args":[{"index":0,"value":1,"op":"SCMP_CMP_LE"}]},
        {"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":9223372036854775808,"op":"SCMP_CMP_GE"}]},
        {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},
        {"names":["personality"],"action":"SCMP_ACT_LOG","args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_MASKED_EQ","valueTwo":8}]},
        {"names":["personality"],"action":"SCMP_ACT_TRAP","args":[{"index":0,"value":4294967296,"op":"SCMP_CMP_GT"}]},
        {"names":["socket"],"action":"SCMP_ACT_LOG"},
        {"names":["ioctl"],"action":"SCMP_ACT_ERRNO","errnoRet":25,"args":[{"index":1,"value":21505,"op":"SCMP_CMP_NE"},{"index":2,"value":0,"op":"SCMP_CMP_NE"}]},
        {"names":["ioctl"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":21505,"op":"SCMP_CMP_EQ"}]},
        {"names":["read"],"action":"SCMP_ACT_TRAP","args":[{"index":0,"value":1,"op":"SCMP_CMP_MASKED_EQ","valueTwo":1},{"index":2,"value":4294967296,"op":"SCMP_CMP_LE"}]}
    ]}"#;

    fn synthetic_profiles() -> Vec<Profile> {
        let mut profiles = vec![
            parse(MIXED).unwrap(),
            parse(SYNTHETIC_DENY).unwrap(),
            parse(SYNTHETIC_ALLOW).unwrap(),
        ];
        // The same rules under every other default.
        for default in ["SCMP_ACT_TRAP", "SCMP_ACT_LOG", "SCMP_ACT_KILL"] {
            let json = SYNTHETIC_ALLOW.replacen("SCMP_ACT_ALLOW", default, 1);
            profiles.push(parse(&json).unwrap());
        }
        profiles
    }

    #[test]
    fn single_program_matches_the_stack_for_shipped_and_docker_profiles() {
        let mut checked = 0;
        for path in [DEFAULT_POLICY, DOCKER_PROFILE] {
            let p = Profile::load(Path::new(path)).unwrap();
            for opts in both_network_options() {
                checked += assert_equivalent(&p, &opts, &host(NATIVE_GO_ARCH, 6, 18));
            }
        }
        // Docker's profile on an old kernel drops its minKernel rules.
        let d = Profile::load(Path::new(DOCKER_PROFILE)).unwrap();
        checked += assert_equivalent(&d, &CompileOptions::default(), &host(NATIVE_GO_ARCH, 4, 7));
        assert!(checked > 10_000, "only {checked} inputs");
    }

    #[test]
    fn single_program_matches_the_stack_for_synthetic_profiles() {
        for p in synthetic_profiles() {
            for opts in both_network_options() {
                assert_equivalent(&p, &opts, &host(NATIVE_GO_ARCH, 6, 18));
            }
        }
    }

    fn block_of(plan: &Plan, nr: i64) -> &Block {
        let nr = u32::try_from(nr).unwrap();
        let i = plan.ranges.partition_point(|r| r.0 <= nr) - 1;
        &plan.blocks[plan.ranges[i].1]
    }

    #[test]
    fn plan_orders_checks_by_precedence_then_group() {
        let p = parse(SYNTHETIC_DENY).unwrap();
        let plan = p.plan(&CompileOptions::default(), &host(NATIVE_GO_ARCH, 6, 18));
        let actions = |nr| {
            let b = block_of(&plan, nr);
            let mut a: Vec<_> = b.checks.iter().map(|c| c.action).collect();
            a.push(b.otherwise);
            a
        };
        // KILL first; EINVAL's group (22) appears after EACCES's (13), so it is tried first.
        assert_eq!(
            actions(nr("getpid")),
            vec![
                Action::KillThread,
                Action::Errno(22),
                Action::Errno(13),
                Action::Allow,
                Action::Errno(38)
            ]
        );
        // An unconditional ERRNO makes the LOG rule below it unreachable.
        assert_eq!(
            actions(nr("uname")),
            vec![Action::KillProcess, Action::Errno(13)]
        );
        assert_eq!(
            *block_of(&plan, nr("seccomp")),
            Block::ret(Action::KillThread)
        );
        assert_eq!(*block_of(&plan, 1023), Block::ret(Action::Errno(38)));
        assert_eq!(
            *block_of(&plan, i64::from(u32::MAX)),
            Block::ret(Action::Errno(38))
        );
        // Neighbouring numbers with equal decisions share a range; ranges start at 0.
        assert_eq!(plan.ranges[0], (0, plan.ranges[0].1));
        assert!(plan
            .ranges
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1));
        let read_write = block_of(&plan, nr("read"));
        assert_eq!(read_write, block_of(&plan, nr("write")));
        assert_eq!(*read_write, Block::ret(Action::Allow));
    }

    #[test]
    fn network_rules_rank_after_the_profile_groups() {
        let p = parse(SYNTHETIC_DENY).unwrap();
        let opts = CompileOptions {
            deny_sockets: true,
            allow_tcp: false,
        };
        let plan = p.plan(&opts, &host(NATIVE_GO_ARCH, 6, 18));
        let b = block_of(&plan, libc::SYS_socket);
        let actions: Vec<_> = b.checks.iter().map(|c| c.action).collect();
        // The profile's explicit KILL still wins; otherwise upm's refusal of every
        // family, whatever the profile's own (conditional) rules for socket() say.
        assert_eq!(actions, vec![Action::KillProcess]);
        assert_eq!(b.otherwise, Action::Errno(libc::EAFNOSUPPORT as u32));
        let without = p.plan(&CompileOptions::default(), &host(NATIVE_GO_ARCH, 6, 18));
        let b = block_of(&without, libc::SYS_socket);
        let actions: Vec<_> = b.checks.iter().map(|c| c.action).collect();
        assert_eq!(
            actions,
            vec![Action::KillProcess, Action::Errno(22), Action::Allow]
        );
        // The profile's EACCES group comes first, so upm's ENOSYS wins for io_uring_setup,
        // with or without network.
        for plan in [&plan, &without] {
            assert_eq!(
                *block_of(plan, libc::SYS_io_uring_setup),
                Block::ret(Action::Errno(libc::ENOSYS as u32))
            );
        }
    }

    #[test]
    fn default_policy_is_one_small_program() {
        let p = Profile::load(Path::new(DEFAULT_POLICY)).unwrap();
        let host = host(NATIVE_GO_ARCH, 6, 18);
        for opts in both_network_options() {
            let compiled = p.compile_for(&opts, &host).unwrap();
            let stack: usize = oracle::stack(&p, &opts, &host).iter().map(Vec::len).sum();
            let plan = p.plan(&opts, &host);
            println!(
                "default.json (sockets denied: {}): {} instructions in 1 filter, {} ranges, {} blocks (the stack: {stack})",
                opts.deny_sockets,
                compiled.instruction_count(),
                plan.ranges.len(),
                plan.blocks.len()
            );
            assert_eq!(compiled.filter_count(), 1);
            assert!(
                compiled.instruction_count() < 300,
                "{}",
                compiled.instruction_count()
            );
        }
        let d = Profile::load(Path::new(DOCKER_PROFILE)).unwrap();
        let compiled = d.compile_for(&CompileOptions::default(), &host).unwrap();
        println!(
            "docker-default.json: {} instructions",
            compiled.instruction_count()
        );
        assert!(compiled.instruction_count() < 400);
    }

    #[test]
    fn allow_all_profile_is_the_guard_and_upms_own_rules() {
        let p = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        let compiled = p
            .compile_for(&CompileOptions::default(), &host(NATIVE_GO_ARCH, 6, 18))
            .unwrap();
        assert_eq!(compiled.filter_count(), 1);
        assert!(
            compiled.instruction_count() <= 200,
            "{:?}",
            compiled.programs
        );
        let prog = &compiled.programs[0];
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        for nr in 0..460u32 {
            let want =
                if SYSV_IPC.contains(&i64::from(nr)) || ALWAYS_ENOSYS.contains(&i64::from(nr)) {
                    enosys
                } else {
                    libc::SECCOMP_RET_ALLOW
                };
            assert_eq!(run(prog, &Data::native(nr, [0; 6])), want, "syscall {nr}");
        }
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        for (nr, arg, flags) in MODE_SETTERS {
            let nr = u32::try_from(nr).unwrap();
            if let Some(f) = flags {
                // Without O_CREAT or O_TMPFILE the mode argument means nothing.
                let mut args = [0; 6];
                args[usize::from(arg)] = 0o4755;
                assert_eq!(run(prog, &Data::native(nr, args)), libc::SECCOMP_RET_ALLOW);
                args[usize::from(f)] = libc::O_TMPFILE as u64 | libc::O_RDWR as u64;
                assert_eq!(run(prog, &Data::native(nr, args)), eperm, "O_TMPFILE");
            }
            for (mode, want) in [
                (0o755, libc::SECCOMP_RET_ALLOW),
                (0o4755, eperm),
                (0o2755, eperm),
                (0o6000, eperm),
                (0o1777, libc::SECCOMP_RET_ALLOW),
                // The kernel reads a mode's low bits only.
                (0xffff_ffff_0000_0000 | 0o755, libc::SECCOMP_RET_ALLOW),
                (0xffff_ffff_0000_0000 | 0o4755, eperm),
            ] {
                let mut args = [0; 6];
                args[usize::from(arg)] = mode;
                if let Some(f) = flags {
                    args[usize::from(f)] = (libc::O_CREAT | libc::O_WRONLY) as u64;
                }
                assert_eq!(
                    run(prog, &Data::native(nr, args)),
                    want,
                    "syscall {nr} mode {mode:o}"
                );
            }
        }
        assert_eq!(
            run(prog, &Data::native(u32::MAX, [0; 6])),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn abi_guard_checks_arch_then_x32_bit() {
        let p = parse(MIXED).unwrap();
        let compiled = p
            .compile_for(&CompileOptions::default(), &host(NATIVE_GO_ARCH, 6, 18))
            .unwrap();
        let prog = &compiled.programs[0];
        assert_eq!((prog[0].code, prog[0].k), (BPF_LD_W_ABS, SECCOMP_DATA_ARCH));
        assert_eq!((prog[1].code, prog[1].k), (BPF_JEQ_K, NATIVE_AUDIT_ARCH));
        assert_eq!((prog[2].code, prog[2].k), (BPF_LD_W_ABS, SECCOMP_DATA_NR));
        #[cfg(target_arch = "x86_64")]
        assert_eq!((prog[3].code, prog[3].k), (BPF_JGE_K, X32_SYSCALL_BIT));
        let kill = libc::SECCOMP_RET_KILL_PROCESS;
        let read = u32::try_from(nr("read")).unwrap();
        let foreign = Data {
            nr: read,
            arch: 0x4000_0003,
            args: [0; 6],
        };
        assert_eq!(run(prog, &foreign), kill);
        assert_eq!(
            run(prog, &Data::native(read, [0; 6])),
            libc::SECCOMP_RET_ALLOW
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            run(prog, &Data::native(read | X32_SYSCALL_BIT, [0; 6])),
            kill
        );
    }

    #[test]
    fn comparisons_are_64_bit_and_unsigned() {
        let values = [
            0,
            1,
            5,
            0xffff_ffff,
            1 << 32,
            0x1_0000_0005,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        let masks = [
            0,
            1,
            0xff,
            0xffff_ffff,
            0xffff_ffff_0000_0000,
            0xff00_0000_00ff,
            u64::MAX,
        ];
        let mut conds = Vec::new();
        for &value in &values {
            for op in [
                SeccompCmpOp::Eq,
                SeccompCmpOp::Ne,
                SeccompCmpOp::Lt,
                SeccompCmpOp::Le,
                SeccompCmpOp::Gt,
                SeccompCmpOp::Ge,
            ] {
                conds.push(Cond {
                    index: 3,
                    op,
                    value,
                });
            }
            for &mask in &masks {
                conds.push(Cond {
                    index: 3,
                    op: SeccompCmpOp::MaskedEq(mask),
                    value: value & mask,
                });
            }
        }
        for cond in conds {
            let block = Block {
                checks: vec![Check {
                    action: Action::Allow,
                    conds: vec![cond.clone()],
                }],
                otherwise: Action::Errno(1),
            };
            let plan = Plan {
                blocks: vec![block],
                ranges: vec![(0, 0)],
            };
            let prog = plan.to_bpf();
            for x in boundary_values(&cond).into_iter().chain(values) {
                let mut args = [0; 6];
                args[3] = x;
                let got = run(&prog, &Data::native(7, args)) == libc::SECCOMP_RET_ALLOW;
                assert_eq!(got, holds(&cond, x), "{cond:?} on {x:#x}");
            }
        }
    }

    /// Distinct conditional blocks for many syscalls, each out of 8-bit reach of the search.
    fn wide_profile(syscalls: usize, alternatives: u64) -> Profile {
        let entries: Vec<String> = syscalls::NATIVE
            .iter()
            .take(syscalls)
            .enumerate()
            .flat_map(|(i, (name, _))| {
                (0..alternatives).map(move |a| {
                    let v = (i as u64 + 1) * 0x1_0000_0001 + a;
                    format!(
                        r#"{{"names":["{name}"],"action":"SCMP_ACT_ALLOW","args":[{{"index":0,"value":{v},"op":"SCMP_CMP_EQ"}},{{"index":1,"value":{a},"op":"SCMP_CMP_GE"}}]}}"#
                    )
                })
            })
            .collect();
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{}]}}"#,
            entries.join(",")
        );
        parse(&json).unwrap()
    }

    #[test]
    fn far_targets_go_through_trampolines() {
        let p = wide_profile(200, 1);
        let h = host(NATIVE_GO_ARCH, 6, 18);
        let compiled = p.compile_for(&CompileOptions::default(), &h).unwrap();
        let prog = &compiled.programs[0];
        println!("wide profile: {} instructions", prog.len());
        let far = prog
            .iter()
            .filter(|i| i.code == BPF_JA && i.k > MAX_JUMP as u32)
            .count();
        assert!(far > 10, "{far} far jumps in {} instructions", prog.len());
        assert_equivalent(&p, &CompileOptions::default(), &h);
    }

    #[test]
    fn programs_above_the_kernel_limit_are_refused() {
        let p = wide_profile(300, 4);
        let err = p
            .compile_for(&CompileOptions::default(), &host(NATIVE_GO_ARCH, 6, 18))
            .unwrap_err();
        assert!(
            matches!(err, SeccompError::ProgramTooLarge { instructions, .. } if instructions > BPF_MAXINSNS),
            "{err}"
        );
        assert!(err.to_string().contains("4096"), "{err}");
    }

    #[test]
    fn native_syscall_numbers_fit_the_search() {
        assert!(syscalls::NATIVE
            .iter()
            .all(|(_, nr)| (0..1024).contains(nr)));
    }

    // ---- the oracle itself ----

    /// upm's own EPERM rules for mode bits: two per setter, four where the flags count.
    fn mode_rules() -> usize {
        MODE_SETTERS
            .iter()
            .map(|(_, _, flags)| if flags.is_some() { 4 } else { 2 })
            .sum()
    }

    #[test]
    fn oracle_stacking_order_and_contents() {
        let p = parse(MIXED).unwrap();
        let plan = oracle::plan(&p, &CompileOptions::default(), &host("amd64", 6, 18));
        let shape: Vec<_> = plan
            .iter()
            .map(|s| (s.mismatch_action, s.match_action))
            .collect();
        let enosys = Action::Errno(libc::ENOSYS as u32);
        let mut want = vec![
            (Action::Allow, Action::Errno(13)),
            (Action::Allow, Action::Trap),
        ];
        // upm's own rules, one filter each: SysV IPC, io_uring/memfd/openat2, then
        // the setuid and setgid bits of each mode-setting call
        want.extend([(Action::Allow, enosys); SYSV_IPC.len() + ALWAYS_ENOSYS.len()]);
        let eperm = Action::Errno(libc::EPERM as u32);
        want.extend(vec![(Action::Allow, eperm); mode_rules()]);
        want.push((Action::KillProcess, Action::Allow)); // default filter last
        assert_eq!(shape, want);
        let last = plan.len() - 1;
        let keys = |s: &oracle::Stage| s.rules.keys().copied().collect::<Vec<_>>();
        let mut errno_nrs = vec![nr("getppid"), nr("gettid")];
        errno_nrs.sort();
        assert_eq!(keys(&plan[0]), errno_nrs);
        assert_eq!(keys(&plan[1]), vec![nr("uname")]);
        assert_eq!(keys(&plan[2]), vec![libc::SYS_shmget]);
        assert_eq!(plan[last].rules[&nr("read")], None);
        assert_eq!(
            plan[last].rules[&nr("getpid")],
            Some(vec![vec![Cond {
                index: 0,
                op: SeccompCmpOp::Eq,
                value: 1
            }]])
        );
        let opts = CompileOptions {
            deny_sockets: true,
            allow_tcp: false,
        };
        let with_network: Vec<_> = oracle::plan(&p, &opts, &host("amd64", 6, 18))
            .iter()
            .map(|s| s.match_action)
            .collect();
        assert_eq!(
            with_network,
            [
                vec![
                    Action::Errno(13),
                    Action::Trap,
                    Action::Errno(libc::EAFNOSUPPORT as u32),
                    Action::Errno(libc::ESOCKTNOSUPPORT as u32),
                ],
                vec![enosys; SYSV_IPC.len() + ALWAYS_ENOSYS.len()],
                vec![eperm; mode_rules()],
                vec![Action::Allow],
            ]
            .concat()
        );
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
                deny_sockets: true,
                allow_tcp: false,
            })
            .unwrap()
    }

    extern "C" fn thread_main(_: *mut libc::c_void) -> *mut libc::c_void {
        std::ptr::null_mut()
    }

    /// Each failing step exits with its own number.
    /// With an egress allowlist: TCP over IPv4/IPv6 only (issue 22). Each failing step
    /// exits with its own number.
    fn tcp_only_checks() -> i32 {
        let refused = |family: i64, kind: i64, protocol: i64, want: i32| {
            // SAFETY: socket() with integer arguments; a descriptor made is closed.
            let fd = unsafe { libc::syscall(libc::SYS_socket, family, kind, protocol) };
            if fd >= 0 {
                // SAFETY: our own descriptor.
                unsafe { libc::close(fd as i32) };
                return false;
            }
            errno() == want
        };
        let made = |family: i32, kind: i32, protocol: i32| {
            // SAFETY: as above.
            let fd = unsafe { libc::socket(family, kind, protocol) };
            // SAFETY: our own descriptor.
            fd >= 0 && unsafe { libc::close(fd) } == 0
        };
        let (inet, inet6, stream) = (libc::AF_INET, libc::AF_INET6, libc::SOCK_STREAM);
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let allowed = [
            (inet, stream, 0),
            (inet6, stream, 0),
            (inet, stream | flags, libc::IPPROTO_TCP),
            (inet6, stream | libc::SOCK_CLOEXEC, libc::IPPROTO_TCP),
        ];
        for (i, (f, k, p)) in allowed.into_iter().enumerate() {
            if !made(f, k, p) {
                return 1 + i as i32;
            }
        }
        let (af, kind, proto) = (
            libc::EAFNOSUPPORT,
            libc::ESOCKTNOSUPPORT,
            libc::EPROTONOSUPPORT,
        );
        let refusals: [(i64, i64, i64, i32); 12] = [
            (libc::AF_UNIX as i64, stream as i64, 0, af),
            (libc::AF_NETLINK as i64, libc::SOCK_RAW as i64, 0, af),
            (libc::AF_PACKET as i64, libc::SOCK_RAW as i64, 0, af),
            // Stray high bits never pass for the family or the protocol.
            ((1 << 32) | inet as i64, stream as i64, 0, af),
            (inet as i64, libc::SOCK_DGRAM as i64, 0, kind),
            (inet6 as i64, (libc::SOCK_DGRAM | flags) as i64, 0, kind),
            (
                inet as i64,
                libc::SOCK_RAW as i64,
                libc::IPPROTO_ICMP as i64,
                kind,
            ),
            (inet as i64, libc::SOCK_SEQPACKET as i64, 0, kind),
            (inet as i64, 0, 0, kind),
            (inet as i64, stream as i64, 132, proto),
            (inet as i64, stream as i64, 262, proto),
            (
                inet as i64,
                stream as i64,
                (1 << 32) | libc::IPPROTO_TCP as i64,
                proto,
            ),
        ];
        for (i, (f, k, p, want)) in refusals.into_iter().enumerate() {
            if !refused(f, k, p, want) {
                return 10 + i as i32;
            }
        }
        0
    }

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
            // No AF_UNIX socket either (it could connect to a host daemon's pathname
            // socket); a connected pair is fine.
            if libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) != -1
                || errno() != libc::EAFNOSUPPORT
            {
                return 7;
            }
            let mut pair = [0; 2];
            if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) != 0 {
                return 12;
            }
            // A datagram pair could sendto() any pathname socket.
            let mut dgram = [0; 2];
            if libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, dgram.as_mut_ptr()) != -1
                || errno() != libc::ESOCKTNOSUPPORT
            {
                return 17;
            }
            // No setuid or setgid bit, however a mode is set; other bits as before. (A
            // path that does not exist: should the filter fail, nothing gets the bit.)
            let nowhere = c"/nonexistent/upm-seccomp-test".as_ptr();
            if libc::chmod(nowhere, 0o4755) != -1 || errno() != libc::EPERM {
                return 13;
            }
            if libc::fchmod(pair[0], 0o2755) != -1 || errno() != libc::EPERM {
                return 14;
            }
            if libc::fchmod(pair[0], 0o755) != 0 {
                return 15;
            }
            libc::close(pair[0]);
            libc::close(pair[1]);
            if libc::syscall(libc::SYS_memfd_create, c"x".as_ptr(), 0) != -1
                || errno() != libc::ENOSYS
            {
                return 16;
            }
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
    fn an_egress_allowlist_allows_tcp_sockets_and_nothing_else() {
        let filter = Profile::load(Path::new(DEFAULT_POLICY))
            .unwrap()
            .compile(&CompileOptions {
                deny_sockets: true,
                allow_tcp: true,
            })
            .unwrap();
        let status = in_child(&filter, tcp_only_checks);
        assert_eq!(exit_code(status), Some(0), "wait status {status:#x}");
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
        assert_eq!(filter.filter_count(), 1);
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

    /// With one filter nothing is installed after the profile's: it may deny seccomp(2).
    #[test]
    fn kernel_enforces_a_profile_that_kills_seccomp_itself() {
        let p = parse(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["seccomp"],"action":"SCMP_ACT_KILL"}]}"#).unwrap();
        let filter = p.compile(&CompileOptions::default()).unwrap();
        assert_eq!(filter.filter_count(), 1);
        let status = in_child(&filter, || {
            // SAFETY: plain syscalls; seccomp(SECCOMP_GET_ACTION_AVAIL) reads a valid u32.
            unsafe {
                if libc::getpid() <= 0 {
                    return 1;
                }
                let action = libc::SECCOMP_RET_LOG;
                libc::syscall(libc::SYS_seccomp, 2, 0, &action as *const u32);
            }
            0
        });
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
            "{status:#x}"
        );
    }

    /// Prints the cost of forking children that install the filter, for the old stack and
    /// the single program. A measurement, not a test: `cargo test --release --lib
    /// sandbox::seccomp::tests::install_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn install_cost() {
        let p = Profile::load(Path::new(DEFAULT_POLICY)).unwrap();
        let opts = CompileOptions {
            deny_sockets: true,
            allow_tcp: false,
        };
        let h = host(NATIVE_GO_ARCH, 6, 18);
        let single = p.compile_for(&opts, &h).unwrap();
        let stack = CompiledFilter {
            programs: oracle::stack(&p, &opts, &h),
        };
        let none = CompiledFilter {
            programs: Vec::new(),
        };
        let per_fork = |filter: &CompiledFilter| {
            let n = 2000;
            let t = std::time::Instant::now();
            for _ in 0..n {
                assert_eq!(exit_code(in_child(filter, || 0)), Some(0));
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        };
        for round in 0..3 {
            let (base, old, new) = (per_fork(&none), per_fork(&stack), per_fork(&single));
            println!(
                "round {round}: fork+exit {base:.1} µs; install: stack of {} ({} insns) {:.1} µs, single ({} insns) {:.1} µs",
                stack.filter_count(),
                stack.instruction_count(),
                old - base,
                single.instruction_count(),
                new - base
            );
            println!(
                "round {round}: getppid() {:.0} ns bare, {:.0} ns under the stack, {:.0} ns under the single program",
                syscall_ns(&none),
                syscall_ns(&stack),
                syscall_ns(&single)
            );
        }
    }

    /// Nanoseconds per getppid() in a child that installed `filter`.
    fn syscall_ns(filter: &CompiledFilter) -> f64 {
        const CALLS: u32 = 200_000;
        let mut fds = [0; 2];
        let mut ns = 0u64;
        // SAFETY: the child only makes syscalls, reads the vDSO clock and _exits; the
        // parent reads 8 bytes into `ns`.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            let pid = libc::fork();
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                if filter.apply().is_err() {
                    libc::_exit(100);
                }
                let t = std::time::Instant::now();
                for _ in 0..CALLS {
                    libc::syscall(libc::SYS_getppid);
                }
                let elapsed = t.elapsed().as_nanos() as u64;
                libc::write(fds[1], (&elapsed as *const u64).cast(), 8);
                libc::_exit(0);
            }
            libc::close(fds[1]);
            assert_eq!(libc::read(fds[0], (&mut ns as *mut u64).cast(), 8), 8);
            libc::close(fds[0]);
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        }
        ns as f64 / f64::from(CALLS)
    }

    // ---- the profile a container engine is handed ----

    fn holds_args(c: &Cond, args: &[u64; 6]) -> bool {
        let a = args[usize::from(c.index)];
        match c.op {
            SeccompCmpOp::Eq => a == c.value,
            SeccompCmpOp::Ne => a != c.value,
            SeccompCmpOp::Lt => a < c.value,
            SeccompCmpOp::Le => a <= c.value,
            SeccompCmpOp::Gt => a > c.value,
            SeccompCmpOp::Ge => a >= c.value,
            SeccompCmpOp::MaskedEq(m) => a & m == c.value,
        }
    }

    /// What upm's own filter answers (the block's checks in order, then `otherwise`).
    fn upm_answer(b: &Block, args: &[u64; 6]) -> Action {
        b.checks
            .iter()
            .find(|c| c.conds.iter().all(|x| holds_args(x, args)))
            .map_or(b.otherwise, |c| c.action)
    }

    /// What an engine answers whatever order it ranks rules in: every matching entry
    /// must agree (else the answer would depend on the library), none means the default.
    fn engine_answer(entries: &[(Action, Vec<Cond>)], default: Action, args: &[u64; 6]) -> Action {
        let matching: Vec<Action> = entries
            .iter()
            .filter(|(_, conds)| conds.iter().all(|c| holds_args(c, args)))
            .map(|(a, _)| *a)
            .collect();
        assert!(
            matching.windows(2).all(|w| w[0] == w[1]),
            "overlapping entries disagree for {args:?}: {matching:?}"
        );
        matching.first().copied().unwrap_or(default)
    }

    /// Arguments that exercise every condition upm's rules and these profiles use.
    fn sample_args() -> Vec<[u64; 6]> {
        let flags = [
            0,
            libc::O_CREAT as u64,
            libc::O_TMPFILE as u64,
            (libc::O_CREAT | libc::O_WRONLY) as u64,
            libc::O_RDWR as u64,
        ];
        let modes = [
            0o644,
            0o4755,
            0o2755,
            0o6755,
            0o1777,
            0xffff_ffff_0000_0000 | 0o4000,
        ];
        let mut out = Vec::new();
        for first in [0u64, 1, 2, 5, 10, 40, 0x7e02_0000] {
            for f in flags {
                for m in modes {
                    for t in 0..20u64 {
                        out.push([first, t | (f & 0x80000), f, m, m, 0]);
                        out.push([first, m, f, m, 0, 0]);
                    }
                }
            }
        }
        out
    }

    /// The engine's entries for one syscall, read back from the generated JSON.
    fn entries_for(json: &serde_json::Value, name: &str) -> Vec<(Action, Vec<Cond>)> {
        let p = Profile::from_json("gen", &serde_json::to_vec(json).unwrap()).unwrap();
        let nr = nr(name);
        p.entries
            .iter()
            .filter(|e| e.nrs.contains(&nr))
            .map(|e| (e.action, e.conds.clone()))
            .collect()
    }

    fn check_engine_profile(p: &Profile) {
        let h = host(NATIVE_GO_ARCH, 6, 8);
        let gen = p.engine_profile_for(&h).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&gen.bytes).unwrap();
        assert_eq!(json["architectures"], serde_json::json!([NATIVE_SCMP_ARCH]));
        assert!(json.get("archMap").is_none());
        assert!(gen.digest.starts_with("sha256:"));
        assert_eq!(gen.upm_rules.len(), OWN_RULE_NAMES.len());
        let opts = CompileOptions {
            deny_sockets: true,
            allow_tcp: false,
        };
        let mut ranked = p.ranked_rules(&opts, &h);
        ranked.sort_by_key(|(rank, r)| (r.nr, std::cmp::Reverse(*rank)));
        let own: std::collections::BTreeSet<i64> = own_rules(&opts).iter().map(|r| r.nr).collect();
        for nr in own {
            let name = syscalls::NATIVE.iter().find(|(_, n)| *n == nr).unwrap().0;
            let rules: Vec<_> = ranked.iter().filter(|(_, r)| r.nr == nr).cloned().collect();
            let block = Block::decide(&rules, p.default_action);
            let entries = entries_for(&json, name);
            assert!(!entries.is_empty(), "{name}: no entry");
            for args in sample_args() {
                assert_eq!(
                    engine_answer(&entries, p.default_action, &args),
                    upm_answer(&block, &args),
                    "{}: {name} with {args:?}",
                    p.name
                );
            }
        }
    }

    #[test]
    fn engine_profile_carries_upms_rules_as_disjoint_entries() {
        for path in [DEFAULT_POLICY, DOCKER_PROFILE] {
            let p = Profile::load(Path::new(path)).unwrap();
            check_engine_profile(&p);
        }
        let p = Profile::load(Path::new(DEFAULT_POLICY)).unwrap();
        let json: serde_json::Value = serde_json::from_slice(
            &p.engine_profile_for(&host(NATIVE_GO_ARCH, 6, 8))
                .unwrap()
                .bytes,
        )
        .unwrap();
        // socket: one unconditional EAFNOSUPPORT, whatever the profile allowed.
        assert_eq!(
            entries_for(&json, "socket"),
            [(Action::Errno(libc::EAFNOSUPPORT as u32), vec![])]
        );
        assert_eq!(
            entries_for(&json, "shmget"),
            [(Action::Errno(libc::ENOSYS as u32), vec![])]
        );
        // The profile's other syscalls are untouched.
        assert!(entries_for(&json, "read")
            .iter()
            .any(|(a, c)| *a == Action::Allow && c.is_empty()));
    }

    #[test]
    fn engine_profile_keeps_upms_precedence_over_odd_profiles() {
        for json in [
            // A KILL for SysV wins over upm's ENOSYS, as natively.
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["shmget","openat","read"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
            // Conditional rules of several actions on the same syscalls.
            r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","syscalls":[
                {"names":["openat"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":5,"op":"SCMP_CMP_EQ"}]},
                {"names":["openat"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"args":[{"index":2,"value":1,"valueTwo":1,"op":"SCMP_CMP_MASKED_EQ"}]},
                {"names":["socketpair"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
                {"names":["chmod","fchmod"],"action":"SCMP_ACT_LOG"},
                {"names":["socket"],"action":"SCMP_ACT_TRAP","args":[{"index":0,"value":10,"op":"SCMP_CMP_EQ"}]}]}"#,
            // An ALLOW default: upm's rules still bite.
            r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#,
        ] {
            check_engine_profile(&parse(json).unwrap());
        }
    }

    #[test]
    fn engine_profile_refuses_what_it_cannot_express() {
        // Two comparisons of the mode argument in one entry would become an OR in runc.
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["chmod"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":448,"op":"SCMP_CMP_LT"}]}]}"#,
        )
        .unwrap();
        let err = p
            .engine_profile_for(&host(NATIVE_GO_ARCH, 6, 8))
            .unwrap_err();
        assert!(matches!(err, SeccompError::EngineProfile { .. }), "{err}");
    }
}
