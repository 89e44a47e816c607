//! The validated model of a profile: actions, argument conditions and entries, as the
//! parser leaves them and before anything is resolved against a kernel.

use std::fmt;

use seccompiler::SeccompCmpOp;

use super::resolve::KernelVersion;

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

impl Action {
    /// The filter's return value (SECCOMP_RET_*), as seccompiler and libseccomp encode it.
    pub(super) fn ret(self) -> u32 {
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

/// One argument comparison, 64 bits wide as libseccomp does on 64-bit arches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cond {
    pub(super) index: u8,
    pub(super) op: SeccompCmpOp,
    pub(super) value: u64,
}

impl Cond {
    /// libseccomp's MASKED_EQ never matches when the datum has bits outside the mask.
    pub(super) fn satisfiable(&self) -> bool {
        match self.op {
            SeccompCmpOp::MaskedEq(mask) => self.value & !mask == 0,
            _ => true,
        }
    }
}

/// An entry's `includes` or `excludes`, validated; empty when absent.
#[derive(Debug, Clone, Default)]
pub(super) struct Conditional {
    pub(super) caps: Vec<String>,
    pub(super) arches: Vec<String>,
    pub(super) min_kernel: Option<KernelVersion>,
}

/// One `syscalls[]` entry, validated.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Native numbers of the entry's names, looked up once; a name foreign to this arch
    /// has none.
    pub(super) nrs: Vec<i64>,
    pub(super) action: Action,
    pub(super) conds: Vec<Cond>,
    pub(super) includes: Conditional,
    pub(super) excludes: Conditional,
}
