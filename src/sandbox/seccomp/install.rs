//! Installing the compiled program in the calling thread. This runs after fork, in the
//! plugin's process before its exec: raw, async-signal-safe system calls, the `unsafe`
//! the layer needs.

use std::sync::atomic::{AtomicI32, Ordering};

use ::syscalls::{syscall, Sysno};
use seccompiler::BpfProgram;

use crate::sandbox::sys;

/// The BPF program ready to install (one; `apply` installs a list in order).
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    pub(super) programs: Vec<BpfProgram>,
    /// The one program with its ERRNO returns turned into USER_NOTIF (see
    /// `bpf::notifying`), for [`CompiledFilter::apply_notifying`].
    pub(super) notifying: Option<BpfProgram>,
}

/// SECCOMP_FILTER_FLAG_* (linux/seccomp.h).
const NEW_LISTENER: libc::c_ulong = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
const WAIT_KILLABLE_RECV: libc::c_ulong = libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;

impl CompiledFilter {
    /// The one program, and its notifying twin.
    pub(super) fn of(program: BpfProgram) -> CompiledFilter {
        CompiledFilter {
            notifying: Some(super::bpf::notifying(&program)),
            programs: vec![program],
        }
    }

    /// Installs the filters in the calling thread. Runs in the sandbox's init, so
    /// async-signal-safe: no allocation, no locks, raw prctl(PR_SET_NO_NEW_PRIVS) +
    /// seccomp(SECCOMP_SET_MODE_FILTER) system calls that never write `errno`; returns
    /// the errno on failure.
    pub fn apply(&self) -> Result<(), i32> {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
        sys(unsafe { syscall!(Sysno::prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        for prog in &self.programs {
            install(prog, 0)?;
        }
        Ok(())
    }

    /// Like [`CompiledFilter::apply`], but the calls the profile answers with an errno
    /// are sent to a user-notification listener instead, whose descriptor (close-on-exec)
    /// is stored in `listener`: upm's supervisor answers them with the same errno and
    /// records them. If the kernel will not give a listener (no user notification, or
    /// EBUSY: a filter upm itself runs under already has one), the errno program is
    /// installed as [`CompiledFilter::apply`] would, and `listener` holds `-errno` of
    /// the refusal. Same rules as `apply`: async-signal-safe, no allocation.
    pub fn apply_notifying(&self, listener: &AtomicI32) -> Result<(), i32> {
        let Some(prog) = &self.notifying else {
            listener.store(-libc::EOPNOTSUPP, Ordering::Relaxed);
            return self.apply();
        };
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes no pointers.
        sys(unsafe { syscall!(Sysno::prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
        // Killable once received: a signal to the waiting plugin then cannot restart
        // the call behind the supervisor's back (and have it counted twice). Linux 5.19.
        let refused = match install(prog, NEW_LISTENER | WAIT_KILLABLE_RECV) {
            Ok(fd) => Ok(fd),
            Err(libc::EINVAL) => install(prog, NEW_LISTENER),
            Err(e) => Err(e),
        };
        match refused {
            Ok(fd) => {
                listener.store(fd as i32, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                listener.store(-e, Ordering::Relaxed);
                for prog in &self.programs {
                    install(prog, 0)?;
                }
                Ok(())
            }
        }
    }

    /// The filter's answer to one call, as the kernel would give it: the errno it
    /// answers with, if it answers with one (`None`: allowed, logged, trapped or
    /// killed). `data` is a `struct seccomp_data`.
    pub fn errno_for(&self, data: &[u8; 64]) -> Option<u32> {
        let ret = super::bpf::run(self.programs.first()?, data)?;
        (ret & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_ERRNO)
            .then_some(ret & libc::SECCOMP_RET_DATA)
    }

    /// Whether [`CompiledFilter::apply_notifying`] can be used at all: one program.
    pub fn can_notify(&self) -> bool {
        self.notifying.is_some()
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

/// seccomp(SECCOMP_SET_MODE_FILTER, flags, prog): the listener's descriptor with
/// NEW_LISTENER, else 0.
fn install(prog: &BpfProgram, flags: libc::c_ulong) -> Result<usize, i32> {
    let len = u16::try_from(prog.len()).map_err(|_| libc::EINVAL)?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads through this pointer.
        filter: prog.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `fprog` points at `len` instructions owned by the caller, alive for the
    // call; seccompiler's `sock_filter` is `#[repr(C)]` with the kernel's layout, the
    // same as libc's.
    sys(unsafe {
        syscall!(
            Sysno::seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog
        )
    })
}
