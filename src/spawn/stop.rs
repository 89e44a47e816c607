//! SIGTERM, SIGINT and SIGHUP: upm's caller, or a container engine stopping upm as its
//! ENTRYPOINT, asking it to stop. Without a handler these would kill upm mid-call (its
//! plugins die with it, by their parent-death signal, but every running call is left
//! with a `started` entry and no `finished` one, and its private directory on disk)
//! or, for upm as PID 1 in a container, be ignored until the engine sends SIGKILL.
//!
//! With it, a running call is stopped as on timeout: its plugin is killed with its
//! whole tree, and the call ends as `cancelled` with its `finished` entry, its
//! directory removed and its result printed. A call not yet started is refused, and
//! a batch reads no more lines. The handler only sets a flag and writes one byte to
//! a pipe that is never drained, so every poll that watches the pipe wakes, now and
//! later.
//!
//! Stopping is bounded: upm may be blocked where no poll watches the pipe (writing a
//! result nobody reads, waiting for another process's lock on the audit log), so the
//! handler also arms an alarm that ends upm with exit 15 [`GRACE`] later, as the signal
//! itself would have. A second signal of the same kind acts at once, as if there were
//! no handler.

use ::syscalls::{syscall, Sysno};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

/// How long upm may take to finish its calls once asked to stop (killing a plugin and
/// writing its entry take milliseconds; this bounds a blocked write or lock).
pub const GRACE: Duration = Duration::from_secs(5);

static REQUESTED: AtomicBool = AtomicBool::new(false);
static PIPE_R: AtomicI32 = AtomicI32::new(-1);
static PIPE_W: AtomicI32 = AtomicI32::new(-1);

/// The signals that ask upm to stop.
const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Runs in whichever upm thread the kernel picks (never in a sandbox init: the signals
/// are blocked while one is cloned, and it resets every disposition before unblocking).
/// A raw write, so that not even errno changes under the interrupted code.
extern "C" fn on_signal(_: libc::c_int) {
    let first = !REQUESTED.swap(true, Ordering::SeqCst);
    let fd = PIPE_W.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: a raw write(2) of one byte from our stack to a pipe we own; the pipe is
        // non-blocking (once full, the bytes already there keep it readable), and an
        // error is ignored.
        let _ = unsafe { syscall!(Sysno::write, fd, &byte as *const u8, 1) };
    }
    if first {
        // SAFETY: alarm(2) only arms this process's timer (upm uses no other); SIGALRM's
        // handler ends upm if it is not done by then. Armed once: a later signal of
        // another kind must not push the deadline back.
        let _ = unsafe { syscall!(Sysno::alarm, GRACE.as_secs()) };
    }
}

/// Installs the handler (once per process; `upm run` calls it before anything else).
pub fn install() -> io::Result<()> {
    if PIPE_R.load(Ordering::SeqCst) >= 0 {
        return Ok(());
    }
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array on our stack.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    PIPE_R.store(fds[0], Ordering::SeqCst);
    PIPE_W.store(fds[1], Ordering::SeqCst);
    // SAFETY: as below, for SIGALRM, whose handler only ends the process.
    let rc = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGALRM, &act, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    for sig in SIGNALS {
        // SAFETY: a zeroed sigaction is valid; we set a plain handler with SA_RESTART (a
        // blocking read resumes; the polls that must wake also watch the pipe, and the
        // alarm bounds the rest), SA_RESETHAND (a second signal acts at once) and an
        // empty mask, then install it for one of the three signals.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            act.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// [`GRACE`] after the first stop signal: upm is still not done, so it ends now, as the
/// signal itself would have ended it (the plugins die by their parent-death signal).
extern "C" fn on_alarm(_: libc::c_int) {
    // SAFETY: exit_group(2) ends the process at once; nothing else runs.
    let _ = unsafe { syscall!(Sysno::exit_group, crate::error::Code::Cancelled.exit_code()) };
}

/// Runs `f` (the clone of a sandbox init) with the stop signals blocked in this thread,
/// so that the init, which shares upm's memory and starts with a copy of its handlers,
/// can never run the handler: it resets every disposition before it unblocks them.
pub(super) fn blocked_during<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset operations on a set on our stack, then pthread_sigmask on this
    // thread with valid pointers; the old mask is restored below.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in SIGNALS.into_iter().chain([libc::SIGALRM]) {
            libc::sigaddset(&mut set, sig);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    let r = f();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}

/// Whether upm has been asked to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// A descriptor that turns readable, for good, once upm is asked to stop (`None`
/// before [`install`]).
pub fn fd() -> Option<RawFd> {
    let fd = PIPE_R.load(Ordering::SeqCst);
    (fd >= 0).then_some(fd)
}

/// Blocks until `fd` is readable; `false` if upm was asked to stop first.
pub fn wait_readable(fd: RawFd) -> bool {
    loop {
        if requested() {
            return false;
        }
        let mut pfds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self::fd().unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds on our stack (a negative fd is ignored by poll).
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, -1) };
        if n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return true; // let the read itself report the problem
        }
        if pfds[1].revents != 0 || requested() {
            return false;
        }
        if pfds[0].revents != 0 {
            return true;
        }
    }
}

/// The error a read gives once upm is asked to stop.
#[derive(Debug, thiserror::Error)]
#[error("upm was asked to stop (SIGTERM, SIGINT or SIGHUP) before the input was read")]
pub struct Stopped;

impl Stopped {
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Stopped>())
    }
}

/// A reader (stdin) whose reads give up, with [`Stopped`], once upm is asked to stop.
pub struct Stoppable<R>(pub R);

impl<R: io::Read + std::os::fd::AsRawFd> io::Read for Stoppable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !wait_readable(self.0.as_raw_fd()) {
            return Err(io::Error::other(Stopped));
        }
        self.0.read(buf)
    }
}
