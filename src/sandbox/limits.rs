//! Hard limits: rlimits set in the child, the wall clock and output cap kept by the parent.

use super::policy::Limits;
use super::{sys, LayerReport};
use ::syscalls::{syscall, Sysno};
use serde_json::json;

/// One rlimit to set in the child.
#[derive(Debug, Clone, Copy)]
pub struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub rlimits: Vec<Rlimit>,
}

pub fn prepare(limits: &Limits) -> (Plan, LayerReport) {
    let r = |resource, soft: u64, hard: u64| Rlimit {
        resource,
        soft,
        hard,
    };
    // The CPU soft limit sends SIGXCPU (reported as the cpu limit); the hard one, a second later, SIGKILL.
    let rlimits = vec![
        r(libc::RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        r(libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        // The sandbox's small init process counts as one.
        r(
            libc::RLIMIT_NPROC,
            limits.max_processes + 1,
            limits.max_processes + 1,
        ),
        r(
            libc::RLIMIT_FSIZE,
            limits.file_size_bytes,
            limits.file_size_bytes,
        ),
        r(libc::RLIMIT_NOFILE, limits.open_files, limits.open_files),
        r(libc::RLIMIT_CORE, 0, 0),
    ];
    let report = LayerReport::enforced(
        super::policy::Layer::Limits,
        json!({
            "timeout_ms": limits.timeout_ms,
            "cpu_seconds": limits.cpu_seconds,
            "memory_bytes": limits.memory_bytes,
            "max_processes": limits.max_processes,
            "file_size_bytes": limits.file_size_bytes,
            "open_files": limits.open_files,
            "output_bytes": limits.output_bytes,
            "core_dumps": false,
        }),
    );
    (Plan { rlimits }, report)
}

impl Plan {
    /// Async-signal-safe: raw prlimit64 on this process only.
    pub fn apply(&self) -> Result<(), i32> {
        for l in &self.rlimits {
            let lim = libc::rlimit64 {
                rlim_cur: l.soft,
                rlim_max: l.hard,
            };
            // SAFETY: prlimit64(0 = this process) reads a valid rlimit64 on our stack.
            sys(unsafe {
                syscall!(
                    Sysno::prlimit64,
                    0,
                    l.resource,
                    &lim as *const libc::rlimit64,
                    0
                )
            })?;
        }
        Ok(())
    }
}
