//! issue 23: the supervised filter installed for real, with upm's supervisor answering
//! its notifications from the parent (`notify`).

use super::kernel::{default_filter, default_profile_checks, exit_code};
use super::*;
use crate::sandbox::seccomp::notify::{Answered, Context, Supervisor};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicI32;
use std::sync::Arc;

/// Forks; the child installs `filter`'s supervised program, hands its listener over a
/// socketpair (as the sandbox's init does), then runs `body` (or execs `argv`) and
/// exits with its result. The parent answers every notification until the child ends;
/// returns the raw wait status and what was answered.
fn supervised(
    filter: &Arc<CompiledFilter>,
    body: fn() -> i32,
    argv: Option<&[&str]>,
) -> (i32, Vec<(i64, u32, String)>) {
    let cargs: Vec<std::ffi::CString> = argv
        .unwrap_or(&[])
        .iter()
        .map(|a| std::ffi::CString::new(*a).unwrap())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let mut pair = [0; 2];
    let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair fills two descriptors we then own.
    let made = unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, pair.as_mut_ptr()) };
    assert_eq!(made, 0);
    let slot = AtomicI32::new(i32::MIN);
    // SAFETY: the child only makes system calls (no allocation: everything was prepared
    // above) and leaves with _exit or exec.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            if filter.apply_notifying(&slot).is_err() {
                libc::_exit(100);
            }
            let listener = slot.load(std::sync::atomic::Ordering::Relaxed);
            if listener < 0 {
                libc::_exit(101);
            }
            crate::spawn::observe::hand_over(pair[1], listener);
            libc::close(listener);
            if cargs.is_empty() {
                libc::_exit(body());
            }
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    // SAFETY: both ends are ours; the child has its own copies.
    let (parent_end, child_end) =
        unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    drop(child_end);
    let listener = receive(&parent_end).expect("the child handed over its listener");
    let supervisor = Supervisor::new(
        listener,
        filter.clone(),
        Context {
            profile: "default".into(),
            deny_sockets: true,
        },
    );
    let mut answered = Vec::new();
    let mut status = 0;
    loop {
        let mut p = libc::pollfd {
            fd: supervisor.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 20) };
        if n == 1 && p.revents & libc::POLLIN != 0 {
            match supervisor.answer() {
                Answered::Denied(d) => answered.push((d.nr, d.errno, d.what.clone())),
                Answered::Nothing => {}
                Answered::Broken(e) => panic!("the listener broke: {e}"),
            }
            continue;
        }
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
    }
    (status, answered)
}

fn receive(channel: &OwnedFd) -> Option<OwnedFd> {
    let mut payload = [0u8; 4];
    let mut iov = [std::io::IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just installed it for us.
            return fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    None
}

#[test]
fn a_supervised_filter_answers_every_errno_the_plain_one_does() {
    let filter = Arc::new(default_filter());
    let (status, answered) = supervised(&filter, default_profile_checks, None);
    assert_eq!(
        exit_code(status),
        Some(0),
        "raw wait status {status:#x}; {answered:?}"
    );
    let names: Vec<&str> = answered.iter().map(|(_, _, w)| w.as_str()).collect();
    for expected in [
        "unshare",
        "ptrace",
        "mount",
        "clone3",
        "socket(AF_INET, SOCK_STREAM)",
        "socket(AF_UNIX, SOCK_STREAM)",
        "socketpair(AF_UNIX, SOCK_DGRAM)",
        "chmod (a setuid/setgid mode)",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not recorded: {names:?}"
        );
    }
    // Only refused calls reach the supervisor: getpid, the stream socketpair, the
    // plain chmod and everything else the checks call are answered in the kernel.
    for (_, errno, what) in &answered {
        assert_ne!(*errno, 0, "{what}");
        assert!(!what.starts_with("getpid"), "{what}");
    }
}

#[test]
fn a_python_program_with_many_threads_runs_supervised() {
    // Each thread's clone3 is refused (ENOSYS) through the supervisor before glibc falls
    // back to clone: 64 round trips, and the same program result as unsupervised.
    let code = "import threading\n\
        ts = [threading.Thread(target=lambda: None) for _ in range(64)]\n\
        [t.start() for t in ts]; [t.join() for t in ts]\n";
    let filter = Arc::new(default_filter());
    let (status, answered) = supervised(&filter, || 0, Some(&["/usr/bin/python3", "-c", code]));
    assert_eq!(
        exit_code(status),
        Some(0),
        "raw wait status {status:#x}; {answered:?}"
    );
    let clone3 = answered.iter().filter(|(_, _, w)| w == "clone3").count();
    assert!(clone3 >= 64, "{clone3} clone3 answered: {answered:?}");
    assert!(answered
        .iter()
        .all(|(_, e, _)| *e == libc::ENOSYS as u32 || *e == libc::EPERM as u32));
}
