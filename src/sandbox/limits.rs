//! Hard limits: rlimits set in the child, the wall clock and output cap kept by the parent.

use super::policy::Limits;
use super::LayerReport;
use serde_json::json;

/// One `setrlimit` to make in the child.
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
    /// Async-signal-safe: setrlimit only.
    pub fn apply(&self) -> Result<(), i32> {
        for l in &self.rlimits {
            let lim = libc::rlimit {
                rlim_cur: l.soft,
                rlim_max: l.hard,
            };
            // SAFETY: setrlimit reads a valid rlimit struct on our stack.
            if unsafe { libc::setrlimit(l.resource, &lim) } != 0 {
                return Err(super::errno());
            }
        }
        Ok(())
    }
}
