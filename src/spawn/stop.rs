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
//!
//! One call can also be stopped alone (`upm mcp`: the client's `notifications/cancelled`,
//! or the client going away) by its own [`Cancel`]: the same flag and never-drained pipe,
//! fired by the same raw write, but per call. A call watches both through its [`Watch`],
//! and whichever fires first stops it, the same way.

use ::syscalls::{syscall, Sysno};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use std::sync::Arc;
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
    poke(PIPE_W.load(Ordering::SeqCst));
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
    let (r, w) = wake_pipe()?;
    // Process-wide, for the handler: never closed.
    use std::os::fd::IntoRawFd;
    PIPE_R.store(r.into_raw_fd(), Ordering::SeqCst);
    PIPE_W.store(w.into_raw_fd(), Ordering::SeqCst);
    // SAFETY: as below, for SIGALRM, whose handler says why on stderr and ends the
    // process; SA_NODEFER lets its own second alarm interrupt a blocked write.
    let rc = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as usize;
        act.sa_flags = libc::SA_NODEFER;
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

const _: () = assert!(
    GRACE.as_secs() == 5,
    "DEADLINE_MESSAGE names the grace period"
);

/// What upm says on stderr when [`GRACE`] runs out, before it ends.
const DEADLINE_MESSAGE: &[u8] = b"upm: still not done 5 s after the stop signal (blocked writing \
its output, or waiting for another process's lock on the audit log): exiting now (15); a call \
that was running may lack its `finished` audit entry and its result, and its private directory \
may be left in workdir_root\n";

/// Set when the deadline has come: a second SIGALRM (the one armed below, should the
/// message's write block) ends upm without trying to write again.
static DEADLINE: AtomicBool = AtomicBool::new(false);

/// [`GRACE`] after the first stop signal: upm is still not done, so it says why on stderr
/// and ends now, as the signal itself would have ended it (the plugins die by their
/// parent-death signal). Only raw syscalls: alarm, poll, write, exit_group.
extern "C" fn on_alarm(_: libc::c_int) {
    let code = crate::error::Code::Cancelled.exit_code();
    if !DEADLINE.swap(true, Ordering::SeqCst) {
        // The write must not hold upm past its deadline: only when stderr has room now,
        // and with a second alarm (this handler runs with SA_NODEFER) to end a write
        // that blocks all the same.
        let mut pfd = libc::pollfd {
            fd: 2,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: alarm(2) arms this process's timer; poll(2) reads and writes one pollfd
        // on our stack, timeout 0; write(2) reads a static buffer. Errors are ignored.
        unsafe {
            let _ = syscall!(Sysno::alarm, 1);
            let ready = syscall!(Sysno::poll, &mut pfd as *mut libc::pollfd, 1, 0);
            if ready == Ok(1) && pfd.revents & libc::POLLOUT != 0 {
                let _ = syscall!(
                    Sysno::write,
                    2,
                    DEADLINE_MESSAGE.as_ptr(),
                    DEADLINE_MESSAGE.len()
                );
            }
        }
    }
    // SAFETY: exit_group(2) ends the process at once; nothing else runs.
    let _ = unsafe { syscall!(Sysno::exit_group, code) };
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

/// The one way a stop is told: one byte written to a pipe that is never drained, so
/// that every poll watching its other end wakes, now and later. A raw write(2), safe in
/// a signal handler, that changes not even errno; a full pipe (the bytes already there
/// keep it readable) or a closed one (`fd < 0`) is ignored.
fn poke(fd: RawFd) {
    if fd < 0 {
        return;
    }
    let byte = 1u8;
    // SAFETY: a raw write(2) of one byte from our stack to a pipe we own; the pipe is
    // non-blocking, and an error is ignored.
    let _ = unsafe { syscall!(Sysno::write, fd, &byte as *const u8, 1) };
}

/// A non-blocking, close-on-exec pipe for [`poke`].
pub(crate) fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array on our stack.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Why a call was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// upm was asked to stop (SIGTERM, SIGINT or SIGHUP): every call stops.
    Signal,
    /// The caller cancelled this call (MCP's `notifications/cancelled`).
    Cancelled,
    /// The caller closed the connection the call came on (EOF on `upm mcp`'s stdin).
    CallerGone,
    /// The results can no longer be written (stdout failed: whoever read them is
    /// gone), so the calls still running or waiting to run are stopped.
    OutputGone,
}

impl Why {
    fn cause(self) -> &'static str {
        match self {
            Why::Signal => "upm was asked to stop (SIGTERM, SIGINT or SIGHUP)",
            Why::Cancelled => "the client cancelled the call (notifications/cancelled)",
            Why::CallerGone => "the client closed the connection (EOF on stdin)",
            Why::OutputGone => {
                "upm's stdout could not be written (whoever read the results is gone)"
            }
        }
    }

    /// The call's error once its plugin was killed.
    pub fn killed(self) -> String {
        match self {
            Why::Signal => format!(
                "{} and killed the plugin with its whole process tree",
                self.cause()
            ),
            _ => format!(
                "{}: upm killed the plugin with its whole process tree",
                self.cause()
            ),
        }
    }

    /// The call's error when it was stopped before its plugin started.
    pub fn not_run(self) -> String {
        format!("{}; the plugin was not run", self.cause())
    }

    fn code(self) -> u8 {
        match self {
            Why::Signal => 1,
            Why::Cancelled => 2,
            Why::CallerGone => 3,
            Why::OutputGone => 4,
        }
    }

    fn from_code(c: u8) -> Option<Why> {
        match c {
            1 => Some(Why::Signal),
            2 => Some(Why::Cancelled),
            3 => Some(Why::CallerGone),
            4 => Some(Why::OutputGone),
            _ => None,
        }
    }
}

/// One call's own stop: what the process-wide one is (a flag and a pipe poked once,
/// for good), for a single call.
#[derive(Debug)]
pub struct Cancel {
    why: AtomicU8,
    r: OwnedFd,
    w: OwnedFd,
}

impl Cancel {
    pub fn new() -> io::Result<Arc<Cancel>> {
        let (r, w) = wake_pipe()?;
        Ok(Arc::new(Cancel {
            why: AtomicU8::new(0),
            r,
            w,
        }))
    }

    /// Stops the call (the first reason given is kept).
    pub fn fire(&self, why: Why) {
        let _ = self
            .why
            .compare_exchange(0, why.code(), Ordering::SeqCst, Ordering::SeqCst);
        poke(self.w.as_raw_fd());
    }

    pub fn fired(&self) -> Option<Why> {
        Why::from_code(self.why.load(Ordering::SeqCst))
    }
}

/// What can stop one call: upm being asked to stop, and the call's own [`Cancel`] if
/// it has one. The default watches the process-wide stop alone (`upm run`).
#[derive(Debug, Clone, Default)]
pub struct Watch {
    call: Option<Arc<Cancel>>,
}

impl Watch {
    pub fn with(call: Arc<Cancel>) -> Watch {
        Watch { call: Some(call) }
    }

    /// Why the call must stop, if it must (upm's own stop first).
    pub fn stopped(&self) -> Option<Why> {
        if requested() {
            return Some(Why::Signal);
        }
        self.call.as_ref().and_then(|c| c.fired())
    }

    /// The descriptors that turn readable, for good, once [`stopped`](Self::stopped)
    /// answers; `-1` (which poll ignores) for one that does not exist.
    pub fn fds(&self) -> [RawFd; 2] {
        [
            fd().unwrap_or(-1),
            self.call.as_ref().map_or(-1, |c| c.r.as_raw_fd()),
        ]
    }
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
    wait_readable_or(fd, &Watch::default())
}

/// Blocks until `fd` is readable; `false` if `watch` fired first.
pub fn wait_readable_or(fd: RawFd, watch: &Watch) -> bool {
    let pfd = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        if watch.stopped().is_some() {
            return false;
        }
        let [a, b] = watch.fds();
        let mut pfds = [pfd(fd), pfd(a), pfd(b)];
        // SAFETY: three valid pollfds on our stack (a negative fd is ignored by poll).
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 3, -1) };
        if n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return true; // let the read itself report the problem
        }
        if pfds[1].revents != 0 || pfds[2].revents != 0 || watch.stopped().is_some() {
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

/// A reader whose reads give up, with [`Stopped`], once its [`Watch`] fires: upm asked
/// to stop, or its own [`Cancel`] (`upm mcp` stops reading once it cannot answer).
pub struct Watched<R>(pub R, pub Watch);

impl<R: io::Read + std::os::fd::AsRawFd> io::Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !wait_readable_or(self.0.as_raw_fd(), &self.1) {
            return Err(io::Error::other(Stopped));
        }
        self.0.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_stops_its_own_watch_and_wakes_a_waiting_poll() {
        let (a, b) = (Cancel::new().unwrap(), Cancel::new().unwrap());
        let (wa, wb) = (Watch::with(a.clone()), Watch::with(b.clone()));
        assert_eq!(wa.stopped(), None);
        // A reader that never turns readable: only the watch can end the wait.
        let (r, _w) = wake_pipe().unwrap();
        let fire = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            a.fire(Why::Cancelled);
            a.fire(Why::CallerGone);
        });
        assert!(!wait_readable_or(r.as_raw_fd(), &wa), "woken by the cancel");
        fire.join().unwrap();
        assert_eq!(
            wa.stopped(),
            Some(Why::Cancelled),
            "the first reason is kept"
        );
        assert_eq!(wb.stopped(), None, "another call's watch is untouched");
        assert_eq!(Watch::default().stopped(), None);
    }
}
