//! issue 23: one call's observer of what the sandbox refused, beside the capture.
//!
//! ```text
//! plugin: Landlock (named upm:<token>) → seccomp(NEW_LISTENER) → listener fd L
//!         (cloned with CLONE_FILES: L lands in the init's table too) → exec
//!            (the exec unshares the plugin's table and closes L there: close-on-exec)
//! init:   after the vfork returns: sendmsg(SCM_RIGHTS L) on its end of a socketpair,
//!         then closes everything but its report pipe, L included
//! upm:    observer thread: recvmsg → L; answers L's notifications (seccomp) and reads
//!         the kernel's audit records of the call's Landlock domain, until told to stop
//! ```
//!
//! Why this hand-off: the listener exists only in the process that installed the filter,
//! after the install. Anything that process does next goes through the filter (a
//! `sendmsg` of its own could be refused by the profile, and would then wait on a
//! supervisor that has no listener yet), and `pidfd_getfd` would need ptrace rights over
//! the plugin (Yama may refuse them) plus a way to stop it before its exec closes L. A
//! shared descriptor table needs no system call in the plugin at all: the init, which
//! runs no filter, sends L. The plugin's calls between the install and its exec are
//! checked in the parent beforehand (`notify::refused_before_exec`): were one refused, it
//! would wait for an answer while the init waits for the exec, so that call then runs
//! with the plain errno filter and says so.
//!
//! Bounds: the thread polls (no wait on the plugin), answers one notification per
//! wake-up, and stops when upm, having killed and reaped the call's tree, says so (or
//! before, once the filter's every process has ended and no audit is read); it
//! then answers what is still pending for at most [`DRAIN`], waits at most
//! `landlock_audit::BARRIER` for the audit queue, and closes L (a survivor's later
//! refused calls then get ENOSYS from the kernel). The list of denials is bounded
//! (`crate::denials`). A plugin that hammers refused calls from many threads or
//! processes queues them in the kernel; each waits for its answer, so it slows itself,
//! and upm's capture, clock and kill run on the main thread regardless.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::syscalls::{syscall, Sysno};

use crate::denials::{Denials, Layer};
use crate::sandbox::landlock_audit::{self, Question, Reader};
use crate::sandbox::seccomp::notify::{Answered, Context, Supervisor};
use crate::sandbox::seccomp::CompiledFilter;
use crate::sandbox::{errno, Prepared};

/// What the listener slot holds until the plugin's filter install writes it.
pub(super) const NO_LISTENER: i32 = i32::MIN;

/// After the call's end: how long pending notifications are still answered.
const DRAIN: Duration = Duration::from_millis(10);

// ---- the init's half: async-signal-safe, raw system calls, no allocation ----

/// Sends the listener (`listener` >= 0) or why there is none (`-errno`) to upm over
/// `sock`, never blocking. A failure leaves upm without a listener: the result then
/// says seccomp's denials were not observed (and the kernel answers the errnos ENOSYS
/// once the init closes L).
pub(crate) fn hand_over(sock: RawFd, listener: i32) {
    let payload = listener.to_ne_bytes();
    let iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    // Room for one cmsghdr and one int, 8-byte aligned.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all zeroes is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = (&iov as *const libc::iovec).cast_mut();
    msg.msg_iovlen = 1;
    if listener >= 0 {
        // SAFETY: CMSG_* are pointer arithmetic on `control`, which holds
        // CMSG_SPACE(sizeof(int)) = 24 bytes; the header and data written stay inside.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), listener);
        }
    }
    // SAFETY: a valid msghdr on our stack, pointing at our stack.
    let _ = unsafe {
        syscall!(
            Sysno::sendmsg,
            sock,
            &msg as *const libc::msghdr,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT
        )
    };
}

// ---- upm's half ----

/// The observer of one running call.
pub(super) struct Observer {
    /// Written to stop the thread.
    stop: Option<OwnedFd>,
    thread: Option<Thread>,
    /// Without a thread: what is already known is all there will be.
    known: Option<Denials>,
    /// Prepared before the go, run on the thread after it ([`Observer::launch`]).
    pending: Option<Pending>,
    /// It reads the kernel's audit (Landlock's denials), whose last records may come from
    /// processes that only the init's end kills.
    pub(super) reads_audit: bool,
}

/// An observation ready to run, and what to say should its thread not start.
struct Pending {
    job: Job,
    /// What is known without the thread: at most the other layers' reasons.
    kept: Denials,
    /// The layers the thread was to watch, said unobserved should it not start.
    watching: [(Layer, bool); 2],
}

/// A call's observation, run as a job on its calling thread's observer thread.
type Job = Box<dyn FnOnce() -> Denials + Send>;

/// An observer thread, kept by the thread that calls (a batch's worker, a one-shot
/// call's main thread) for its next call: a thread's creation and end less per call.
/// Busy with one call at a time; a thread that observes two at once makes a second.
struct Thread {
    jobs: std::sync::mpsc::Sender<Job>,
    done: std::sync::mpsc::Receiver<Denials>,
}

thread_local! {
    static KEPT: std::cell::RefCell<Option<Thread>> = const { std::cell::RefCell::new(None) };
}

/// Lets the calling thread's kept observer thread end, without waiting for it: a
/// process that makes no further call then ends it beside its last steps, instead of
/// its exit having to stop a parked thread.
pub fn end_kept() {
    let _ = KEPT.try_with(|k| k.borrow_mut().take());
}

impl Thread {
    /// The calling thread's kept observer thread, or a new one, running `job`.
    fn run(job: Job) -> std::io::Result<Thread> {
        // (During the thread's own end its kept thread is gone: make one.)
        let kept = KEPT.try_with(|k| k.borrow_mut().take()).ok().flatten();
        let job = match kept {
            Some(t) => match t.jobs.send(job) {
                Ok(()) => return Ok(t),
                // Its thread ended (a panic in a job): make another.
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (jobs, todo) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("upm-denials".into())
            .spawn(move || {
                // Ends when its owner is gone (the sender dropped) or cannot be told.
                for job in todo {
                    if done_tx.send(job()).is_err() {
                        return;
                    }
                }
            })?;
        let t = Thread { jobs, done };
        // (Sent before anything can end the thread: cannot fail.)
        let _ = t.jobs.send(job);
        Ok(t)
    }

    /// The job's denials; the thread is then kept for the calling thread's next call.
    fn wait(self) -> Option<Denials> {
        let d = self.done.recv().ok()?;
        self.keep();
        Some(d)
    }

    /// Whether the calling thread has a kept observer thread.
    fn kept() -> bool {
        KEPT.try_with(|k| k.borrow().is_some()).unwrap_or(false)
    }

    /// The job's denials if it has ended already (then the thread is kept), or the
    /// thread back.
    fn ended(self) -> Result<Denials, Thread> {
        match self.done.try_recv() {
            Ok(d) => {
                self.keep();
                Ok(d)
            }
            Err(_) => Err(self),
        }
    }

    fn keep(self) {
        let _ = KEPT.try_with(|k| {
            let mut k = k.borrow_mut();
            if k.is_none() {
                *k = Some(self);
            }
        });
    }
}

impl Observer {
    /// Prepares observing before the plugin may start (the audit's subscription
    /// included); the thread runs from [`launch`](Self::launch), just after the go. `channel` is
    /// upm's end of the socketpair the init hands the listener over, when upm
    /// supervises the errnos.
    pub(super) fn start(sandbox: &Prepared, channel: Option<OwnedFd>) -> Observer {
        let mut denials = Denials::new();
        let seccomp = match (&sandbox.observe.seccomp, &sandbox.seccomp, channel) {
            (Ok(context), Some(filter), Some(channel)) => {
                Some((channel, filter.clone(), context.clone()))
            }
            (Err(why), Some(_), _) => {
                denials.not_observable(Layer::Seccomp, why.clone());
                None
            }
            _ => None,
        };
        // Subscribed now, before the go: the plugin's first denial may come at once;
        // not when the audit is already known to be off (nothing would come).
        let reader = match (&sandbox.observe.landlock, &sandbox.landlock) {
            (Ok(()), Some(plan)) => {
                let audit = landlock_audit::question();
                let off = match audit.answer() {
                    Some(Ok(true)) | None => false,
                    Some(on) => !audit_is_on(on, &mut denials),
                };
                match plan.log_token().filter(|_| !off).map(Reader::open) {
                    Some(Ok(r)) => Some((r, audit)),
                    Some(Err(why)) => {
                        denials.not_observable(Layer::Landlock, why);
                        None
                    }
                    None => None,
                }
            }
            (Err(why), Some(_)) => {
                denials.not_observable(Layer::Landlock, why.clone());
                None
            }
            _ => None,
        };
        let known = |denials| Observer {
            stop: None,
            thread: None,
            known: Some(denials),
            pending: None,
            reads_audit: false,
        };
        if seccomp.is_none() && reader.is_none() {
            return known(denials);
        }
        // The layers this observer was to watch: said unobserved, should it not start.
        let watching = [
            (Layer::Seccomp, seccomp.is_some()),
            (Layer::Landlock, reader.is_some()),
        ];
        let (stop_r, stop_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(e) => return known(unobserved(denials, &watching, &e)),
        };
        // Kept to report with, should the thread not start (the closure takes `denials`).
        let kept = denials.clone();
        // Deferred to the go only when that saves a thread's start on the go's path: not
        // with a kept thread (a job is a channel send), and not with the audit to read
        // (a batch's call may wait long for its slot, the subscribed socket filling).
        let now = reader.is_some() || Thread::kept();
        let mut o = Observer {
            reads_audit: reader.is_some(),
            stop: Some(stop_w),
            thread: None,
            known: None,
            pending: Some(Pending {
                job: Box::new(move || observe(denials, stop_r, seccomp, reader)),
                kept,
                watching,
            }),
        };
        if now {
            o.launch();
        }
        o
    }

    /// Runs the prepared observation on the calling thread's observer thread: just after
    /// the go, so that a thread's start overlaps the init's set-up instead of delaying
    /// the go. Until then the plugin has not exec'd, and what the sandbox refuses waits
    /// for an answer (a notification) or is queued (the audit's records, subscribed to
    /// in [`start`](Self::start)).
    pub(super) fn launch(&mut self) {
        let Some(p) = self.pending.take() else { return };
        match Thread::run(p.job) {
            Ok(thread) => self.thread = Some(thread),
            Err(e) => {
                self.stop = None;
                self.known = Some(unobserved(p.kept, &p.watching, &e));
            }
        }
    }

    /// After the call's whole tree has ended: stops the observer and returns what it
    /// saw. Bounded: see the module doc.
    pub(super) fn finish(mut self) -> Denials {
        self.stop()
    }

    fn stop(&mut self) -> Denials {
        // (`run_plugin` launches it with the go: only a failed go can get here first.)
        self.launch();
        if let Some(known) = self.known.take() {
            return known;
        }
        // Ended by itself (nothing was left to watch): no word needed.
        match self.thread.take().map(Thread::ended) {
            Some(Ok(d)) => return d,
            Some(Err(t)) => self.thread = Some(t),
            None => {}
        }
        if let Some(stop) = &self.stop {
            let _ = nix::unistd::write(stop, b"s");
        }
        match self.thread.take().and_then(Thread::wait) {
            Some(d) => d,
            _ => {
                let mut d = Denials::new();
                let why = "upm's observer of the call failed";
                d.not_observable(Layer::Seccomp, why);
                d.not_observable(Layer::Landlock, why);
                d
            }
        }
    }
}

/// A call given up before its go (or whose `run` never came): the thread ends with it;
/// one never launched is dropped (its init already reaped: nothing can be pending).
impl Drop for Observer {
    fn drop(&mut self) {
        self.pending = None;
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// What could not be observed for want of the observer: `why` for each watched layer.
fn unobserved(
    mut denials: Denials,
    watching: &[(Layer, bool); 2],
    why: &dyn std::fmt::Display,
) -> Denials {
    let why = format!("upm could not start observing the call: {why}");
    for (layer, _) in watching.iter().filter(|(_, w)| *w) {
        denials.not_observable(*layer, why.clone());
    }
    denials
}

/// The thread: waits for the listener, answers it, reads the audit, until stopped.
fn observe(
    mut denials: Denials,
    stop: OwnedFd,
    seccomp: Option<(OwnedFd, Arc<CompiledFilter>, Context)>,
    reader: Option<(Reader, Arc<Question>)>,
) -> Denials {
    // Whether the kernel's audit is on: asked off the call's path (see `Question`),
    // and mostly answered before the plugin ends.
    let (mut reader, audit) = match reader {
        Some((r, q)) => (Some(r), Some(q)),
        None => (None, None),
    };
    let mut audit_known = false;
    let (mut channel, filter, context) = match seccomp {
        Some((ch, f, c)) => (Some(ch), Some(f), Some(c)),
        None => (None, None, None),
    };
    let mut supervisor: Option<Supervisor> = None;
    loop {
        let mut fds = vec![poll_in(stop.as_raw_fd())];
        let ch_at = channel.as_ref().map(|c| {
            fds.push(poll_in(c.as_raw_fd()));
            fds.len() - 1
        });
        let sup_at = supervisor.as_ref().map(|s| {
            fds.push(poll_in(s.fd()));
            fds.len() - 1
        });
        let audit_at = reader.as_ref().map(|r| {
            fds.push(poll_in(r.fd()));
            fds.len() - 1
        });
        // SAFETY: a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break;
        }
        if ch_at.is_some_and(|i| fds[i].revents != 0) {
            if let Some(c) = channel.take() {
                supervisor = receive(&c, &filter, &context, &mut denials);
            }
        }
        if let Some(i) = sup_at {
            let ev = fds[i].revents;
            if ev & libc::POLLIN != 0 {
                answer(&mut supervisor, &mut denials);
            } else if ev & (libc::POLLHUP | libc::POLLNVAL) != 0 {
                // Every process of the filter has ended. (A bare POLLERR is the kernel's
                // lock on the listener interrupted by a signal: polled again.)
                supervisor = None;
            }
        }
        if let (Some(i), Some(r)) = (audit_at, reader.as_mut()) {
            if fds[i].revents != 0 {
                r.read_available(&mut denials);
            }
            if !audit_known {
                if let Some(on) = audit.as_ref().and_then(|q| q.answer()) {
                    audit_known = true;
                    if !audit_is_on(on, &mut denials) {
                        reader = None;
                    }
                }
            }
        }
        if fds[0].revents != 0 {
            break;
        }
        // Nothing left to watch: the listener came (or why there is none) and every
        // process of the filter has ended, with no audit to read. Done now, not at
        // upm's word, which comes only once upm has drained and reaped the tree: the
        // end of a call then waits for no wake-up of this thread.
        if channel.is_none() && supervisor.is_none() && reader.is_none() {
            break;
        }
    }
    // The tree is gone: a listener handed over late, and what is still pending.
    if let Some(c) = channel.take() {
        supervisor = receive(&c, &filter, &context, &mut denials);
    }
    let deadline = Instant::now() + DRAIN;
    while supervisor.is_some() && Instant::now() < deadline {
        let ready = supervisor
            .as_ref()
            .is_some_and(|s| poll_now(s.fd()) & libc::POLLIN != 0);
        if !ready {
            break;
        }
        answer(&mut supervisor, &mut denials);
    }
    if let (Some(mut r), Some(q)) = (reader, audit) {
        r.read_available(&mut denials);
        let on = q.wait(AUDIT_ANSWER);
        if audit_known || audit_is_on(on, &mut denials) {
            r.finish(&mut denials);
        }
    }
    denials
}

/// How long the end of a call waits for the audit's answer to whether it is on, when it
/// has not come while the plugin ran (a call shorter than the kernel's answer).
const AUDIT_ANSWER: Duration = Duration::from_millis(200);

/// Records whether Landlock's denials are observed, from the audit's answer.
fn audit_is_on(on: Result<bool, String>, denials: &mut Denials) -> bool {
    match on {
        Ok(true) => {
            denials.observed(Layer::Landlock);
            true
        }
        Ok(false) => {
            denials.not_observable(Layer::Landlock, landlock_audit::AUDIT_OFF);
            false
        }
        Err(why) => {
            denials.not_observable(Layer::Landlock, why);
            false
        }
    }
}

fn answer(supervisor: &mut Option<Supervisor>, denials: &mut Denials) {
    let Some(s) = supervisor.as_ref() else { return };
    match s.answer() {
        Answered::Denied(d) => denials.record(s.denial(&d)),
        Answered::Nothing => {}
        Answered::Broken(e) => {
            denials.not_observable(
                Layer::Seccomp,
                format!(
                    "upm could no longer answer the filter's notifications ({}); the kernel \
                     answered the rest ENOSYS",
                    std::io::Error::from_raw_os_error(e)
                ),
            );
            *supervisor = None;
        }
    }
}

/// The init's message: the listener, or why there is none.
fn receive(
    channel: &OwnedFd,
    filter: &Option<Arc<CompiledFilter>>,
    context: &Option<Context>,
    denials: &mut Denials,
) -> Option<Supervisor> {
    let mut payload = [0u8; 4];
    let mut iov = [std::io::IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    );
    let mut listener = None;
    let bytes = match &msg {
        Ok(m) => {
            if let Ok(cmsgs) = m.cmsgs() {
                for c in cmsgs {
                    if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                        for fd in fds {
                            // SAFETY: the kernel just installed this descriptor for us.
                            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                            if listener.is_none() {
                                listener = Some(owned);
                            }
                        }
                    }
                }
            }
            m.bytes
        }
        Err(_) => 0,
    };
    let said = (bytes == 4).then(|| i32::from_ne_bytes(payload));
    match (listener, filter, context) {
        (Some(l), Some(f), Some(c)) => {
            denials.observed(Layer::Seccomp);
            Some(Supervisor::new(l, f.clone(), c.clone()))
        }
        _ => {
            let why = match said {
                Some(e) if e < 0 && e != NO_LISTENER => format!(
                    "the kernel gave no listener for the call's filter ({}): the profile's \
                     errnos were answered by the kernel, unrecorded",
                    std::io::Error::from_raw_os_error(-e)
                ),
                _ => "the plugin's process ended before its filter was installed".to_owned(),
            };
            denials.not_observable(Layer::Seccomp, why);
            None
        }
    }
}

fn poll_in(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn poll_now(fd: RawFd) -> libc::c_short {
    let mut p = poll_in(fd);
    // SAFETY: one valid pollfd on our stack.
    if unsafe { libc::poll(&mut p, 1, 0) } == 1 {
        p.revents
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Runs a job that says which thread ran it, under its name.
    fn on_thread(
        ran: &Arc<Mutex<Vec<(&'static str, std::thread::ThreadId)>>>,
        name: &'static str,
    ) -> Thread {
        let ran = ran.clone();
        Thread::run(Box::new(move || {
            ran.lock()
                .unwrap()
                .push((name, std::thread::current().id()));
            Denials::new()
        }))
        .unwrap()
    }

    /// The observer ends once nothing is left to watch, before upm's word to stop (the
    /// stop's pipe is never written here): an init that had no listener to hand over.
    #[test]
    fn an_observer_with_nothing_left_to_watch_ends_without_being_told() {
        use crate::sandbox::policy::{BUILTIN_SECCOMP, BUILTIN_SECCOMP_NAME};
        use crate::sandbox::seccomp::{CompileOptions, Profile};
        let profile = Profile::from_json(BUILTIN_SECCOMP_NAME, BUILTIN_SECCOMP).unwrap();
        let filter = profile.compiled(&CompileOptions::default()).unwrap();
        let context = Context {
            profile: profile.name.clone(),
            deny_sockets: false,
        };
        let (init_end, upm_end) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (stop_r, _stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        hand_over(init_end.as_raw_fd(), -libc::EPERM);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let d = observe(
                Denials::new(),
                stop_r,
                Some((upm_end, filter, context)),
                None,
            );
            let _ = tx.send(d);
        });
        let d = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the observer waited for a stop with nothing left to watch");
        let said = serde_json::to_string(&d.summary_json()).unwrap();
        assert!(said.contains("no listener"), "{said}");
    }

    #[test]
    fn a_calls_observer_thread_is_kept_for_the_next_call_and_only_when_free() {
        std::thread::spawn(|| {
            let ran = Arc::new(Mutex::new(Vec::new()));
            on_thread(&ran, "first").wait().unwrap();
            on_thread(&ran, "second").wait().unwrap();
            // Two at once: the second cannot wait behind the first.
            let (a, b) = (on_thread(&ran, "a"), on_thread(&ran, "b"));
            b.wait().unwrap();
            a.wait().unwrap();
            let ran: std::collections::HashMap<_, _> =
                ran.lock().unwrap().iter().copied().collect();
            assert_eq!(ran["first"], ran["second"], "kept for the next call");
            assert_eq!(ran["first"], ran["a"], "still kept");
            assert_ne!(
                ran["a"], ran["b"],
                "a second thread while the first is busy"
            );
            assert_ne!(ran["first"], std::thread::current().id());
        })
        .join()
        .unwrap();
    }
}
