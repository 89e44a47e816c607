//! upm's own helper processes: the egress proxy (`upm-egress`, issue 22, see
//! [`super::egress`]), which a call
//! with an allowlist runs beside its plugin. A helper is started from the descriptor
//! upm opened and checked (never looked up again by path), with an empty environment,
//! `/` as its directory, no_new_privs, a parent-death signal, and, when upm is root, a
//! uid and gid of its own; its standard input and output are pipes to upm.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// What a helper gets.
pub struct Helper<'a> {
    /// The helper's executable, opened (and checked) by upm.
    pub exe: &'a std::fs::File,
    /// Becomes the helper's descriptor 3.
    pub fd3: &'a OwnedFd,
    /// The uid and gid it runs as (root upm); `None` keeps upm's.
    pub ids: Option<(u32, u32)>,
    /// Its argv[0].
    pub name: &'a str,
    pub args: &'a [&'a str],
}

pub fn start(h: &Helper<'_>) -> io::Result<Child> {
    // The kernel resolves /proc/self/fd/N to the open file before the exec closes it.
    let mut cmd = Command::new(format!("/proc/self/fd/{}", h.exe.as_raw_fd()));
    cmd.arg0(h.name)
        .args(h.args)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some((uid, gid)) = h.ids {
        // std drops root's supplementary groups along with the switch.
        cmd.uid(uid).gid(gid);
    }
    let from = h.fd3.as_raw_fd();
    // SAFETY: getpid before the fork; the closure makes only async-signal-safe calls
    // (dup2, prctl, getppid) between fork and exec, and allocates nothing.
    let parent = unsafe { libc::getpid() };
    // SAFETY: see above. std applies the uid/gid switch before this closure, so the
    // parent-death signal set here is not cleared by it.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 gives the copy at 3 without close-on-exec; `from` is >= 10.
            if libc::dup2(from, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
    super::default_sigxfsz_on_exec(&mut cmd);
    cmd.spawn()
}
