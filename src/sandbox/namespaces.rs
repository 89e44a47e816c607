//! Namespaces, created by the clone that starts the sandbox.
//!
//! A PID namespace makes the whole process tree killable: its first process
//! is upm's small init, and when that exits the kernel kills everything else
//! in the namespace — daemonized grandchildren included. A network namespace
//! leaves the plugin only a `lo` that is down. IPC is isolated too, and the mount
//! namespace holds the call's read-only view of the host (see `mounts`). Every call also
//! gets a user namespace of its own: an unprivileged upm needs it to create the
//! others, and for a root upm it makes RLIMIT_NPROC count this call's processes only
//! (the kernel counts per user *per user namespace*), not those of every call that
//! runs as the same uid.
//!
//! A root upm creates that user namespace as a uid of the call's own (see [`AsOwner`]),
//! never as root or as the plugin's uid. The kernel charges a namespace's per-user
//! quotas (inotify instances, queued signals, nested namespaces) to its owner: owned by
//! root, a plugin could use up root's. And every host process whose effective uid is
//! the owner holds every capability over the namespace, and over the network, PID and
//! IPC namespaces it owns: owned by the plugin's uid (often `nobody`), any process of
//! that uid could join them, bring up `lo`, plant processes or trace the plugin.

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
    /// Root: the uid that is to own the call's user namespace (see [`owner_uid`]).
    pub owner: Option<u32>,
    /// The call joins this upm process's empty network namespace (see `shared_net`)
    /// instead of creating one.
    pub shared_net: bool,
}

/// What `max_processes` counts, with a user namespace of the call's own.
pub const PER_CALL: &str = "the call's own processes (a user namespace of its own)";
/// ... and without one (the kernel refused it).
pub const PER_UID: &str = "every process of the plugin's uid, this call's and other calls'";

pub fn prepare(network_allowed: bool, cred_mode: Mode) -> (Plan, LayerReport) {
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWNS;
    if !network_allowed {
        flags |= libc::CLONE_NEWNET;
    }
    let user_namespace = matches!(cred_mode, Mode::UserNamespace | Mode::Switch);
    if user_namespace {
        flags |= libc::CLONE_NEWUSER;
    }
    let mut names = vec!["pid", "ipc", "mount"];
    if !network_allowed {
        names.push("net");
    }
    if user_namespace {
        names.push("user");
    }
    let owner = (cred_mode == Mode::Switch).then(owner_uid);
    let mut detail = json!({ "created": names, "process_count": PER_CALL });
    if let Some(uid) = owner {
        detail["user_namespace_owner"] = json!(uid);
    }
    let report = LayerReport::enforced(Layer::Namespaces, detail);
    (
        Plan {
            clone_flags: flags,
            user_namespace,
            deny_setgroups: cred_mode == Mode::UserNamespace,
            owner,
            shared_net: false,
        },
        report,
    )
}

/// A uid for one call's user namespace to be owned by: picked at random in
/// 2147483648..=4294967293, which systemd's uid ranges leave unused ("HIC SVNT LEONES"),
/// so that no account, service or container runs as it. Calls do not share one either,
/// so each has per-user quotas of its own.
pub fn owner_uid() -> u32 {
    let mut r: u32 = 0;
    // SAFETY: getrandom writes at most 4 bytes into r. (Insecure: never blocks, and
    // only uniqueness matters.)
    let got = unsafe { syscall!(Sysno::getrandom, &mut r as *mut u32, 4, libc::GRND_INSECURE) };
    if got != Ok(4) {
        // Only uniqueness matters here, not secrecy.
        r = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id();
    }
    0x8000_0000 + r % 0x7fff_fffe
}

/// Keeps a parent-death signal that upm's caller set on it in force for upm's whole life,
/// on a thread of its own that never changes credentials. The kernel clears a thread's
/// signal whenever its effective uid changes, which a root upm does on the spawning thread
/// around every call's clone ([`AsOwner`]); and it signals all of upm when the thread that
/// started upm ends if *any* of upm's threads holds one. [`AsOwner`] puts the spawning
/// thread's signal back afterwards, but a parent thread ending within that millisecond
/// would go unnoticed without this holder. Called once, before the first call; a no-op
/// when no signal is set.
pub fn hold_parent_death_signal() {
    static HELD: std::sync::Once = std::sync::Once::new();
    HELD.call_once(|| {
        let mut sig: libc::c_int = 0;
        // SAFETY: PR_GET_PDEATHSIG writes one int into sig.
        let got = unsafe {
            syscall!(
                Sysno::prctl,
                libc::PR_GET_PDEATHSIG,
                &mut sig as *mut libc::c_int,
                0,
                0,
                0
            )
        };
        if got.is_err() || sig == 0 {
            return;
        }
        let (set_tx, set_rx) = std::sync::mpsc::sync_channel(1);
        let holder = std::thread::Builder::new()
            .name("upm-pdeath".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                // SAFETY: plain prctl with integer arguments, on this thread.
                let set = unsafe { syscall!(Sysno::prctl, libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) };
                let _ = set_tx.send(set.is_ok());
                loop {
                    std::thread::park();
                }
            });
        // Until the holder has it, the signal is still this thread's own (no euid has
        // changed yet); if it cannot take it, AsOwner's put-back is what remains.
        if holder.is_err() || set_rx.recv() != Ok(true) {
            tracing::warn!(
                "cannot keep the parent-death signal on a thread of its own; a parent \
                 thread that ends during a call's clone may go unnoticed"
            );
        }
    });
}

/// The calling thread, for as long as this lives, with `uid` as its effective uid, so
/// that a user namespace it creates is owned by that uid. Credentials are per
/// thread with raw system calls (glibc's `setresuid` would switch every thread of upm);
/// the real and saved uids stay 0, so the way back is always open. Capabilities are
/// kept across the switch (`SECBIT_NO_SETUID_FIXUP`), so that a kernel which allows
/// only privileged callers to create user namespaces still lets upm create this one;
/// the namespace's first process starts with the default securebits whatever they were.
///
/// Any change of the effective uid clears the thread's parent-death signal: it is put
/// back afterwards (and raised, if the parent died meanwhile), while
/// [`hold_parent_death_signal`]'s thread keeps it in force throughout.
///
/// It also sets upm's memory as dumpable as `fs.suid_dumpable` says, for every task that
/// shares it: the inits of calls in flight included, which run as their plugin's uid and
/// made themselves undumpable. Each switch is therefore followed at once by
/// `PR_SET_DUMPABLE(0)`, so that a `suid_dumpable` turned to 1 during a batch leaves
/// them traceable for a few instructions, not for the rest of their call.
pub struct AsOwner {
    securebits: libc::c_ulong,
    pdeathsig: libc::c_int,
    ppid: libc::pid_t,
}

impl AsOwner {
    pub fn enter(uid: u32) -> io::Result<AsOwner> {
        let mut pdeathsig: libc::c_int = 0;
        // SAFETY: PR_GET_PDEATHSIG writes one int into pdeathsig.
        sys(unsafe {
            syscall!(
                Sysno::prctl,
                libc::PR_GET_PDEATHSIG,
                &mut pdeathsig as *mut libc::c_int,
                0,
                0,
                0
            )
        })
        .map_err(io::Error::from_raw_os_error)?;
        // SAFETY: getppid cannot fail.
        let ppid = unsafe { libc::getppid() };
        // SAFETY: plain prctl with integer arguments, on this thread's credentials.
        let securebits =
            sys(unsafe { syscall!(Sysno::prctl, libc::PR_GET_SECUREBITS, 0, 0, 0, 0) })
                .map_err(io::Error::from_raw_os_error)?;
        let securebits = securebits as libc::c_ulong;
        let keep = securebits | libc::SECBIT_NO_SETUID_FIXUP as libc::c_ulong;
        // SAFETY: as above.
        sys(unsafe { syscall!(Sysno::prctl, libc::PR_SET_SECUREBITS, keep, 0, 0, 0) })
            .map_err(io::Error::from_raw_os_error)?;
        let guard = AsOwner {
            securebits,
            pdeathsig,
            ppid,
        };
        // SAFETY: setresuid on this thread only; -1 leaves the real and saved uids (0).
        sys(unsafe { syscall!(Sysno::setresuid, -1i32 as u32, uid, -1i32 as u32) })
            .and_then(|_| undumpable())
            .map_err(io::Error::from_raw_os_error)?;
        Ok(guard)
    }
}

/// Makes upm's memory (shared with every call's init) undumpable again after an euid change.
fn undumpable() -> Result<(), i32> {
    // SAFETY: plain prctl with integer arguments; 0 is always a valid value.
    sys(unsafe { syscall!(Sysno::prctl, libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }).map(|_| ())
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        // SAFETY: back to euid 0, which the saved uid allows; then the old securebits.
        let back = sys(unsafe { syscall!(Sysno::setresuid, -1i32 as u32, 0, -1i32 as u32) })
            .and_then(|_| undumpable())
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
        if self.pdeathsig != 0 {
            // SAFETY: plain prctl with integer arguments.
            let set = unsafe {
                syscall!(
                    Sysno::prctl,
                    libc::PR_SET_PDEATHSIG,
                    self.pdeathsig,
                    0,
                    0,
                    0
                )
            };
            // SAFETY: getppid cannot fail.
            if set.is_err() || unsafe { libc::getppid() } != self.ppid {
                // SAFETY: kill on ourselves with a valid signal.
                unsafe { libc::kill(libc::getpid(), self.pdeathsig) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumpable() -> usize {
        // SAFETY: plain prctl returning the flag.
        unsafe { syscall!(Sysno::prctl, libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }.unwrap()
    }

    /// With `fs.suid_dumpable` at 0 (the usual value) the kernel's own reset after a
    /// switch already gives 0, so only 1 tells the fix from its absence; and 1 is
    /// host-wide for as long as the test runs.
    #[test]
    #[ignore = "sets the host-wide fs.suid_dumpable to 1 for a moment (root); run by hand with --ignored"]
    fn as_owner_leaves_upm_undumpable_whatever_suid_dumpable_says() {
        const KNOB: &str = "/proc/sys/fs/suid_dumpable";
        struct Restore(String);
        impl Drop for Restore {
            fn drop(&mut self) {
                std::fs::write(KNOB, &self.0).unwrap();
            }
        }
        let _restore = Restore(std::fs::read_to_string(KNOB).unwrap());
        std::fs::write(KNOB, "1").unwrap();
        // SAFETY: plain prctl with integer arguments.
        unsafe { syscall!(Sysno::prctl, libc::PR_SET_DUMPABLE, 1, 0, 0, 0) }.unwrap();
        let owner = AsOwner::enter(owner_uid()).unwrap();
        assert_eq!(dumpable(), 0, "after the switch to the owner uid");
        // SAFETY: as above.
        unsafe { syscall!(Sysno::prctl, libc::PR_SET_DUMPABLE, 1, 0, 0, 0) }.unwrap();
        drop(owner);
        assert_eq!(dumpable(), 0, "after the switch back");
    }
}
