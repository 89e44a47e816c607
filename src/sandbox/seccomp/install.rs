//! Installing the compiled program in the calling thread. This runs after fork, in the
//! sandbox's init: raw, async-signal-safe system calls, the `unsafe` the layer needs.

use ::syscalls::{syscall, Sysno};
use seccompiler::BpfProgram;

use crate::sandbox::sys;

/// The BPF program ready to install (one; `apply` installs a list in order).
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    pub(super) programs: Vec<BpfProgram>,
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
