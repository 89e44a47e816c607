//! The wire format: OCI's `LinuxSeccomp` plus Docker's `archMap`, `includes` and
//! `excludes`, parsed and validated into the model. Nothing host-dependent happens
//! here: which entries apply on this kernel and arch is [`super::resolve`]'s business.

use std::str::FromStr;

use seccompiler::SeccompCmpOp;
use serde::Deserialize;

use super::model::{Action, Cond, Conditional, Entry};
use super::resolve::KernelVersion;
use super::syscalls;
use super::SeccompError;

/// Profiles are small; anything bigger is a mistake or an attack on the parser.
pub(super) const MAX_PROFILE_BYTES: u64 = 1 << 20;
/// The kernel clamps larger values to MAX_ERRNO; refuse them instead.
pub(super) const MAX_ERRNO: u32 = 4095;
/// Highest syscall argument index.
pub(super) const MAX_ARG_INDEX: u32 = 5;

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

/// Parses and validates a profile: its default action and its entries, in order.
pub(super) fn parse(name: &str, bytes: &[u8]) -> Result<(Action, Vec<Entry>), SeccompError> {
    let raw: RawProfile = serde_json::from_slice(bytes).map_err(|source| SeccompError::Parse {
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
    Ok((default_action, entries))
}

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
