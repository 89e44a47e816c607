//! Hard limits: rlimits set in the child, the wall clock and output cap kept by the parent.

use super::policy::Limits;
use super::{sys, LayerReport};
use ::syscalls::{syscall, Sysno};
use serde_json::json;

/// One rlimit to set in the child.
#[derive(Debug, Clone, Copy)]
pub struct Rlimit {
    /// The policy's name for it.
    pub name: &'static str,
    pub resource: libc::__rlimit_resource_t,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RaiseError {
    #[error("cannot read upm's own rlimits: {0}")]
    Own(#[source] std::io::Error),
    #[error("{name} needs a hard limit of {want}, above upm's own {have}, and upm may not raise it ({source})")]
    Refused {
        name: &'static str,
        want: u64,
        have: u64,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub rlimits: Vec<Rlimit>,
}

pub fn prepare(limits: &Limits) -> (Plan, LayerReport) {
    let r = |resource, soft: u64, hard: u64| Rlimit {
        name: match resource {
            libc::RLIMIT_CPU => "cpu_seconds",
            libc::RLIMIT_AS => "memory_bytes",
            libc::RLIMIT_NPROC => "max_processes",
            libc::RLIMIT_FSIZE => "file_size_bytes",
            libc::RLIMIT_NOFILE => "open_files",
            libc::RLIMIT_SIGPENDING => "pending_signals",
            _ => "core_dumps",
        },
        resource,
        soft,
        hard,
    };
    let pending = pending_signals();
    // The CPU soft limit sends SIGXCPU (reported as the cpu limit); the hard one, a second later, SIGKILL.
    let rlimits = vec![
        r(
            libc::RLIMIT_CPU,
            limits.cpu_seconds,
            limits.cpu_seconds.saturating_add(1),
        ),
        r(libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        // The sandbox's small init process counts as one.
        r(
            libc::RLIMIT_NPROC,
            limits.max_processes.saturating_add(1),
            limits.max_processes.saturating_add(1),
        ),
        r(
            libc::RLIMIT_FSIZE,
            limits.file_size_bytes,
            limits.file_size_bytes,
        ),
        r(libc::RLIMIT_NOFILE, limits.open_files, limits.open_files),
        r(libc::RLIMIT_CORE, 0, 0),
        r(libc::RLIMIT_SIGPENDING, pending, pending),
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
            "pending_signals": pending,
        }),
    );
    (Plan { rlimits }, report)
}

/// Signals a call may have queued at once (and POSIX timers, which reserve one each).
/// Each costs kernel memory that no other limit covers, and since every call has a user
/// namespace of its own, the host's limit (~96,000 here, ~8 MB) would apply per call. Fixed,
/// like `core_dumps`: a plugin needing more is unheard of. Never above upm's own hard
/// limit, which a call cannot raise without CAP_SYS_RESOURCE. The container backend
/// asks the engine for the same figure.
pub fn pending_signals() -> u64 {
    const PENDING_SIGNALS: u64 = 1024;
    let mut own = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 on upm itself, writing into a valid rlimit64 on our stack.
    let rc = unsafe { libc::prlimit64(0, libc::RLIMIT_SIGPENDING, std::ptr::null(), &mut own) };
    if rc == 0 {
        PENDING_SIGNALS.min(own.rlim_max)
    } else {
        PENDING_SIGNALS
    }
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

    /// Raises, on the (not yet started) init, the hard limits the policy sets above
    /// upm's own. The init sets every limit itself, but it cannot raise a hard one from
    /// inside a user namespace: that takes CAP_SYS_RESOURCE in the initial namespace,
    /// which only upm can have. Without it, this fails, and so does the call.
    pub fn raise_on(&self, pid: libc::pid_t) -> Result<(), RaiseError> {
        for l in &self.rlimits {
            let mut own = libc::rlimit64 {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: prlimit64 on upm itself, writing into a valid rlimit64 on our stack.
            if unsafe { libc::prlimit64(0, l.resource, std::ptr::null(), &mut own) } != 0 {
                return Err(RaiseError::Own(std::io::Error::last_os_error()));
            }
            if l.hard <= own.rlim_max {
                continue;
            }
            let lim = libc::rlimit64 {
                rlim_cur: own.rlim_cur,
                rlim_max: l.hard,
            };
            // SAFETY: prlimit64 reads a valid rlimit64 on our stack and writes nothing.
            if unsafe { libc::prlimit64(pid, l.resource, &lim, std::ptr::null_mut()) } != 0 {
                return Err(RaiseError::Refused {
                    name: l.name,
                    want: l.hard,
                    have: own.rlim_max,
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_values_mean_unlimited_not_zero() {
        let limits = Limits {
            cpu_seconds: u64::MAX,
            max_processes: u64::MAX,
            ..Limits::default()
        };
        let (plan, _) = prepare(&limits);
        for name in ["cpu_seconds", "max_processes"] {
            let r = plan.rlimits.iter().find(|r| r.name == name).unwrap();
            assert_eq!((r.soft, r.hard), (u64::MAX, u64::MAX), "{name}");
        }
    }
}
