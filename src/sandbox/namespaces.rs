//! Namespaces, created by the clone that starts the sandbox.
//!
//! A PID namespace makes the whole process tree killable: its first process
//! is upm's small init, and when that exits the kernel kills everything else
//! in the namespace — daemonized grandchildren included. A network namespace
//! leaves the plugin only a `lo` that is down. IPC is isolated too. Every call also
//! gets a user namespace of its own: an unprivileged upm needs it to create the
//! others, and for a root upm it makes RLIMIT_NPROC count this call's processes only
//! (the kernel counts per user *per user namespace*), not those of every call that
//! runs as the same uid.
//!
//! A root upm creates that user namespace as the plugin's uid (see [`AsOwner`]): the
//! kernel charges a namespace's per-user quotas (inotify instances, queued signals,
//! namespaces) to its owner, and those must stay the plugin uid's, as they are
//! without the namespace, not become root's.

use super::credentials::Mode;
use super::policy::Layer;
use super::{sys, LayerReport};
use ::syscalls::{syscall, Sysno};
use serde_json::json;
use std::io;

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub clone_flags: libc::c_int,
    pub user_namespace: bool,
    /// Unprivileged: `setgroups` must be denied before a gid map may be written. Root
    /// leaves it allowed, so that the init can clear root's supplementary groups.
    pub deny_setgroups: bool,
    /// Root: the uid that is to own the call's user namespace (the plugin's).
    pub owner: Option<u32>,
}

/// What `max_processes` counts, with a user namespace of the call's own.
pub const PER_CALL: &str = "the call's own processes (a user namespace of its own)";
/// ... and without one (the kernel refused it).
pub const PER_UID: &str = "every process of the plugin's uid, this call's and other calls'";

pub fn prepare(network_allowed: bool, cred_mode: Mode, plugin_uid: u32) -> (Plan, LayerReport) {
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWIPC;
    if !network_allowed {
        flags |= libc::CLONE_NEWNET;
    }
    let user_namespace = matches!(cred_mode, Mode::UserNamespace | Mode::Switch);
    if user_namespace {
        flags |= libc::CLONE_NEWUSER;
    }
    let mut names = vec!["pid", "ipc"];
    if !network_allowed {
        names.push("net");
    }
    if user_namespace {
        names.push("user");
    }
    let report = LayerReport::enforced(
        Layer::Namespaces,
        json!({ "created": names, "process_count": PER_CALL }),
    );
    (
        Plan {
            clone_flags: flags,
            user_namespace,
            deny_setgroups: cred_mode == Mode::UserNamespace,
            owner: (cred_mode == Mode::Switch).then_some(plugin_uid),
        },
        report,
    )
}

/// The calling thread, for as long as this lives, with the plugin's uid as its effective
/// uid, so that a user namespace it creates is owned by that uid. Credentials are per
/// thread with raw system calls (glibc's `setresuid` would switch every thread of upm);
/// the real and saved uids stay 0, so the way back is always open. Capabilities are
/// kept across the switch (`SECBIT_NO_SETUID_FIXUP`), so that a kernel which allows
/// only privileged callers to create user namespaces still lets upm create this one;
/// the namespace's first process starts with the default securebits whatever they were.
pub struct AsOwner {
    securebits: libc::c_ulong,
}

impl AsOwner {
    pub fn enter(uid: u32) -> io::Result<AsOwner> {
        // SAFETY: plain prctl with integer arguments, on this thread's credentials.
        let securebits =
            sys(unsafe { syscall!(Sysno::prctl, libc::PR_GET_SECUREBITS, 0, 0, 0, 0) })
                .map_err(io::Error::from_raw_os_error)?;
        let securebits = securebits as libc::c_ulong;
        let keep = securebits | libc::SECBIT_NO_SETUID_FIXUP as libc::c_ulong;
        // SAFETY: as above.
        sys(unsafe { syscall!(Sysno::prctl, libc::PR_SET_SECUREBITS, keep, 0, 0, 0) })
            .map_err(io::Error::from_raw_os_error)?;
        let guard = AsOwner { securebits };
        // SAFETY: setresuid on this thread only; -1 leaves the real and saved uids (0).
        sys(unsafe { syscall!(Sysno::setresuid, -1i32 as u32, uid, -1i32 as u32) })
            .map_err(io::Error::from_raw_os_error)?;
        Ok(guard)
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: back to euid 0, which the saved uid allows; then the old securebits.
        let back = sys(unsafe { syscall!(Sysno::setresuid, -1i32 as u32, 0, -1i32 as u32) })
            .and_then(|_| {
                // SAFETY: plain prctl with integer arguments.
                sys(unsafe {
                    syscall!(
                        Sysno::prctl,
                        libc::PR_SET_SECUREBITS,
                        self.securebits,
                        0,
                        0,
                        0
                    )
                })
            });
        if back.is_err() {
            // Cannot happen (the saved uid is 0 and capabilities were kept); were it to, a
            // upm thread with the wrong identity must not go on.
            std::process::abort();
        }
    }
}
