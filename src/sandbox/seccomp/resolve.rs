//! Key resolution: which of a profile's entries apply for a kernel and an architecture,
//! as moby's `setupSeccomp` decides for a container without capabilities (see the
//! module doc, "Resolving Docker's keys").

use super::model::{Action, Cond, Entry};
use super::{Parsed, SeccompError};

/// Major, minor, patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct KernelVersion(pub(super) u32, pub(super) u32, pub(super) u32);

impl KernelVersion {
    /// Parses `6.18`, `4.8.0`, `6.18.44-fc-v669` (the flavour after `-`/`+` is ignored).
    pub(super) fn parse(s: &str) -> Option<KernelVersion> {
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

    pub(super) fn running() -> Result<KernelVersion, SeccompError> {
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

/// What a profile's keys are resolved against: an architecture and a kernel version.
/// Not [`crate::sandbox::host::Host`], which says what the invoker may do: the tests
/// resolve one profile for other arches and older kernels than this machine's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    /// Go-style name, as Docker's `includes.arches` uses.
    pub(super) arch: &'static str,
    pub(super) kernel: KernelVersion,
}

impl Target {
    /// This machine: the arch upm is built for and the running kernel.
    pub(super) fn native() -> Result<Target, SeccompError> {
        Ok(Target {
            arch: NATIVE_GO_ARCH,
            kernel: KernelVersion::running()?,
        })
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) const NATIVE_GO_ARCH: &str = "amd64";
#[cfg(target_arch = "aarch64")]
pub(super) const NATIVE_GO_ARCH: &str = "arm64";

/// One syscall number's rule after resolution: (number, action, conditions).
#[derive(Debug, Clone)]
pub(super) struct ResolvedRule {
    pub(super) nr: i64,
    pub(super) action: Action,
    pub(super) conds: Vec<Cond>,
}

/// The rules of `profile` that apply on `target`, in the profile's order.
pub(super) fn rules(profile: &Parsed, target: &Target) -> Vec<ResolvedRule> {
    let mut rules = Vec::new();
    for entry in profile.entries.iter().filter(|e| applies(e, target)) {
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

/// Docker's include/exclude logic for a plugin with no capabilities.
fn applies(entry: &Entry, target: &Target) -> bool {
    let ex = &entry.excludes;
    if ex.arches.iter().any(|a| a == target.arch) {
        return false;
    }
    // excludes.caps: the plugin holds no capability, so nothing is excluded by caps.
    if ex.min_kernel.is_some_and(|v| target.kernel >= v) {
        return false;
    }
    let inc = &entry.includes;
    if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == target.arch) {
        return false;
    }
    if !inc.caps.is_empty() {
        return false;
    }
    if inc.min_kernel.is_some_and(|v| target.kernel < v) {
        return false;
    }
    true
}
