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
            libc::RLIMIT_MSGQUEUE => "message_queue_bytes",
            libc::RLIMIT_RTPRIO => "realtime_priority",
            libc::RLIMIT_NICE => "raise_priority",
            _ => "core_dumps",
        },
        resource,
        soft,
        hard,
    };
    let fixed = Fixed::get();
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
        r(
            libc::RLIMIT_SIGPENDING,
            fixed.pending_signals,
            fixed.pending_signals,
        ),
        r(
            libc::RLIMIT_MSGQUEUE,
            fixed.message_queue_bytes,
            fixed.message_queue_bytes,
        ),
        // No real-time scheduling, and no nice value below the one inherited: without
        // these, a host that grants either to upm would grant it to every plugin.
        r(libc::RLIMIT_RTPRIO, 0, 0),
        r(libc::RLIMIT_NICE, 0, 0),
    ];
    let report = LayerReport::enforced(
        super::policy::Layer::Limits,
        json!({
            "timeout_ms": limits.timeout_ms,
            "cpu_seconds": limits.cpu_seconds,
            "memory_bytes": limits.memory_bytes,
            "max_processes": limits.max_processes,
            "file_size_bytes": limits.file_size_bytes,
            "disk_bytes": limits.disk_bytes,
            "open_files": limits.open_files,
            "output_bytes": limits.output_bytes,
            "core_dumps": false,
            "pending_signals": fixed.pending_signals,
            "message_queue_bytes": fixed.message_queue_bytes,
            "realtime_priority": 0,
            "raise_priority": false,
        }),
    );
    (Plan { rlimits }, report)
}

/// Limits on kernel memory that no configurable limit covers, the same for every call.
/// Each call has a user namespace of its own, so the host's figures would apply per call:
/// ~96,000 queued signals here (~8 MB), and whatever the host's POSIX message queue
/// allowance is (819,200 bytes by default, unlimited on some hosts). Fixed, like
/// `core_dumps`: a plugin needing more is unheard of. Never above upm's own hard limit,
/// which a call cannot raise without CAP_SYS_RESOURCE. The container backend asks the
/// engine for the same figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    /// Signals queued at once (and POSIX timers, which reserve one each).
    pub pending_signals: u64,
    /// Bytes of POSIX message queues (mq_open), counted with the kernel's overhead.
    pub message_queue_bytes: u64,
}

impl Fixed {
    const PENDING_SIGNALS: u64 = 1024;
    /// The kernel's default.
    const MESSAGE_QUEUE_BYTES: u64 = 819_200;

    pub fn get() -> Fixed {
        Fixed {
            pending_signals: at_most_own(libc::RLIMIT_SIGPENDING, Self::PENDING_SIGNALS),
            message_queue_bytes: at_most_own(libc::RLIMIT_MSGQUEUE, Self::MESSAGE_QUEUE_BYTES),
        }
    }
}

fn at_most_own(resource: libc::__rlimit_resource_t, want: u64) -> u64 {
    let mut own = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 on upm itself, writing into a valid rlimit64 on our stack.
    let rc = unsafe { libc::prlimit64(0, resource, std::ptr::null(), &mut own) };
    if rc == 0 {
        want.min(own.rlim_max)
    } else {
        want
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
    fn host_grants_are_pinned() {
        let (plan, report) = prepare(&Limits::default());
        let get = |name: &str| {
            let r = plan.rlimits.iter().find(|r| r.name == name).unwrap();
            (r.resource, r.soft, r.hard)
        };
        let fixed = Fixed::get();
        assert!(fixed.message_queue_bytes <= 819_200);
        assert_eq!(
            get("message_queue_bytes"),
            (
                libc::RLIMIT_MSGQUEUE,
                fixed.message_queue_bytes,
                fixed.message_queue_bytes
            )
        );
        assert_eq!(get("realtime_priority"), (libc::RLIMIT_RTPRIO, 0, 0));
        assert_eq!(get("raise_priority"), (libc::RLIMIT_NICE, 0, 0));
        let detail = &report.detail;
        assert_eq!(
            detail["message_queue_bytes"],
            serde_json::json!(fixed.message_queue_bytes)
        );
        assert_eq!(detail["realtime_priority"], 0);
        assert_eq!(detail["raise_priority"], false);
    }

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
