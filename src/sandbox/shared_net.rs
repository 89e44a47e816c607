//! One empty network namespace per upm process that serves many calls (`upm run
//! --jsonl`, `upm mcp`), which every call without network joins instead of creating
//! one of its own: creating a network namespace (its loopback, sysctl tables, IPv6)
//! and tearing it down in the kernel's workers is the largest single cost of a call.
//!
//! Sharing holds only where nothing in the namespace can be reached: the call's
//! seccomp filter refuses `socket()` (only stream socketpairs, which name nothing, are
//! allowed) and Landlock scopes abstract unix sockets (which live per network
//! namespace) to the call's own domain; [`super::prepare`] shares it only then, and a
//! call with `network: true` or with either layer degraded keeps a namespace of its
//! own. Its `lo` stays down and nothing is ever configured in it. It is owned by the
//! initial user namespace (a root upm creates it), so no plugin, whose capabilities
//! are in its call's own user namespace, can configure or join it from outside.
//!
//! The call's init is cloned into new user, PID, IPC and mount namespaces, and a
//! process in a new user namespace cannot join a network namespace owned by the
//! initial one: so the cloning thread joins it for the clone (the init inherits it)
//! and goes back to upm's own right after ([`SharedNet::join`]).

use super::sys;
use ::syscalls::{syscall, Sysno};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

pub struct SharedNet {
    net: OwnedFd,
    /// upm's own network namespace, where the cloning thread goes back to.
    host: OwnedFd,
    /// The namespace's inode (what `/proc/PID/ns/net` shows), for the report.
    pub inode: u64,
}

static SHARED: OnceLock<SharedNet> = OnceLock::new();

/// Creates this process's shared namespace (once; a no-op for an unprivileged upm,
/// which cannot create one outside a user namespace of its own: its calls keep their
/// own). Called by `upm run --jsonl` and `upm mcp` before their first call.
pub fn enable() {
    if SHARED.get().is_some() || !nix::unistd::geteuid().is_root() {
        return;
    }
    match SharedNet::create() {
        Ok(s) => {
            tracing::debug!(inode = s.inode, "shared network namespace created");
            let _ = SHARED.set(s);
        }
        Err(e) => tracing::debug!("no shared network namespace ({e}): every call creates its own"),
    }
}

/// This process's shared namespace, if it has one.
pub fn get() -> Option<&'static SharedNet> {
    SHARED.get()
}

fn open_own() -> io::Result<OwnedFd> {
    let f = std::fs::File::open("/proc/thread-self/ns/net")?;
    Ok(OwnedFd::from(f))
}

impl SharedNet {
    fn create() -> io::Result<SharedNet> {
        let host = open_own()?;
        // On a thread of its own, which ends with it: upm's own threads stay in upm's
        // namespace, and the descriptor alone keeps the new one alive.
        let net = std::thread::spawn(|| -> io::Result<OwnedFd> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            open_own()
        })
        .join()
        .map_err(|_| io::Error::other("the thread creating it panicked"))??;
        // At 10 or above, like every descriptor upm keeps across a call's clone.
        let net = nix::fcntl::fcntl(&net, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
            // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nothing else owns.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })?;
        let inode = nix::sys::stat::fstat(&net)?.st_ino;
        Ok(SharedNet { net, host, inode })
    }

    /// Moves the calling thread into the shared namespace until the guard is dropped.
    pub fn join(&self) -> io::Result<Joined<'_>> {
        setns(self.net.as_raw_fd()).map_err(io::Error::from_raw_os_error)?;
        Ok(Joined(self))
    }
}

fn setns(fd: libc::c_int) -> Result<(), i32> {
    // SAFETY: setns on a namespace descriptor we own; affects this thread only.
    sys(unsafe { syscall!(Sysno::setns, fd, libc::CLONE_NEWNET) }).map(|_| ())
}

/// The calling thread, in the shared namespace.
pub struct Joined<'a>(&'a SharedNet);

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        if setns(self.0.host.as_raw_fd()).is_err() {
            // Cannot happen (root joined it a moment ago); were it to, a upm thread
            // must not go on in the wrong namespace.
            std::process::abort();
        }
    }
}
