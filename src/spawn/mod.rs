//! Spawn and capture: the only place that starts plugin processes.
//!
//! ```text
//! upm ──clone(CLONE_VM | NEWPID | NEWNET | NEWIPC [| NEWUSER])──▶ init (pid 1 of its PID namespace)
//!                                     └──clone(CLONE_VM | CLONE_VFORK)──▶ plugin (execveat)
//! ```
//!
//! [`start`] clones the init (creating the namespaces is most of a spawn's cost), which
//! sets the plugin's descriptors and, once upm has written its id maps, its mounts,
//! limits and credentials up while upm makes the call's `started` audit entry durable,
//! and starts the plugin's process, which puts itself under Landlock and waits for the
//! go (without a user namespace of the call's own the init waits, before its limits).
//! [`Spawned::run`] gives the go (or a one-shot call's entry thread gave it already:
//! [`give_go`]); the plugin then installs its seccomp filter and execs. The init reaps
//! it and reports its status and resource usage on a pipe.
//! When the init exits the kernel kills everything left in the PID namespace,
//! daemonized grandchildren included. On timeout or past the output cap upm kills the
//! plugin first (so that the init still reaps it and reports its usage), then the init,
//! with the same effect. What runs in the children is in [`child`].
//!
//! The parent captures stdout, stderr and (for the Python runner) a result channel on
//! fd 3 in one poll loop with a combined byte cap ([`capture`]), so upm's memory stays
//! bounded whatever the plugin prints.

mod capture;
mod child;
pub mod egress;
pub mod helper;
pub(crate) mod observe;
pub mod stop;

pub use capture::{capture, Collected, Io, Pipes};

use crate::denials::Denials;
use crate::sandbox::namespaces::AsOwner;
use crate::sandbox::shared_net;
use crate::sandbox::{Prepared, SandboxError, Step};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Gives the process `cmd` starts SIGXFSZ's default disposition back: upm ignores it
/// (`cli::main`, so that a write past the caller's `ulimit -f` fails instead of killing
/// upm mid-line), an ignored signal stays ignored across exec, and std resets only
/// SIGPIPE. A program started by upm then behaves as it would started by the caller.
pub fn default_sigxfsz_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure makes one async-signal-safe call (sigaction, with a zeroed
    // struct on its stack, which is SIG_DFL with no flags) between fork and exec, and
    // allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_DFL;
            if libc::sigaction(libc::SIGXFSZ, &act, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create a pipe: {0}")]
    Pipe(#[source] io::Error),
    #[error("cannot start the sandboxed process: {0}")]
    Clone(#[source] io::Error),
    #[error("cannot map the sandbox's stacks: {0}")]
    Stack(#[source] io::Error),
    #[error("cannot map the caller's ids into the user namespace: {0}")]
    IdMap(#[source] io::Error),
    #[error("cannot tell where the plugin's executable is: {0}")]
    ExecPath(#[source] io::Error),
    #[error("cannot open a pidfd of the spawning thread (the init's parent): {0}")]
    ParentPidfd(#[source] io::Error),
    #[error("cannot name the script for its interpreter: {0}")]
    ScriptName(#[source] io::Error),
    #[error("the limits layer could not be applied: {0}")]
    Limits(#[from] crate::sandbox::limits::RaiseError),
    #[error("{0}")]
    Sandbox(#[from] SandboxError),
}

/// Everything needed to start one plugin process.
pub struct Launch {
    /// The verified executable, opened once: it is exec'd through this descriptor.
    pub exec_fd: RawFd,
    /// It is a sealed memfd, not a file of the host: nothing to reopen in the call's
    /// mount namespace (see [`ExecAt`]).
    pub sealed_exec: bool,
    /// A script: the interpreter reads it as `/dev/fd/N`, so it must survive the exec.
    pub keep_exec_fd: bool,
    /// A script is exec'd through a symlink made here, in the call's directory and named
    /// like the script, to `/proc/self/fd/N`: the same descriptor, but what its
    /// interpreter calls it (`$0`, `__file__`, its error messages) names the script.
    pub script_name: Option<std::path::PathBuf>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub workdir: CString,
    pub stdin: Vec<u8>,
    /// Give the plugin a result channel on fd 3 (the Python runner's).
    pub result_channel: bool,
    pub timeout: Duration,
    /// stdout + stderr + result channel, together.
    pub output_cap: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Timeout,
    Output,
    /// upm was asked to stop, or the call was cancelled ([`stop`]).
    Cancelled(stop::Why),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub user_ms: f64,
    pub sys_ms: f64,
    pub max_rss_kb: i64,
    /// The call's home tmpfs when the plugin ended (none without a mount namespace).
    pub disk: Option<Disk>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    pub used_bytes: u64,
    /// Its bytes or its inodes had run out: the plugin's writes failed with ENOSPC.
    pub full: bool,
}

#[derive(Debug, Default)]
pub struct Stream {
    pub data: Vec<u8>,
    /// Bytes the plugin wrote, kept or not.
    pub total: u64,
    pub closed: bool,
}

#[derive(Debug)]
pub struct Outcome {
    /// How the plugin ended; `None` when it was killed before it could be reaped.
    pub exit: Option<Exit>,
    /// The sandbox or the exec failed before the plugin ran.
    pub start_failure: Option<(Step, i32)>,
    pub stopped_by: Option<Stop>,
    pub stdout: Stream,
    pub stderr: Stream,
    pub result: Stream,
    pub wall: Duration,
    /// The plugin's own usage, as its init reaped it; `None` when the plugin was killed
    /// without being reaped there (nothing else measures the plugin alone).
    pub usage: Option<Usage>,
}

impl Outcome {
    pub fn truncated(&self, s: &Stream) -> bool {
        s.total > s.data.len() as u64
    }
}

/// A pipe whose ends live at descriptors >= 10, so that the child's dup2 onto
/// 0..=3 can never clobber one of them.
fn pipe_high() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Pipe(e.into()))?;
    Ok((high(r)?, high(w)?))
}

/// A 1 MiB pipe lets a chatty plugin write in big strides (fewer wake-ups on both
/// sides). Best effort: the kernel's pipe-max-size may refuse it.
fn widen_pipe(fd: RawFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe we own; failure leaves the default size.
    unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
}

fn high(fd: OwnedFd) -> Result<OwnedFd, SpawnError> {
    if fd.as_raw_fd() >= 10 {
        return Ok(fd);
    }
    high_dup(fd.as_raw_fd())
}

/// Where the verified executable is, for the init to open it again inside the call's
/// mount namespace: a descriptor opened out here is on the host's writable mount, and
/// through it (`fchmod`, `/proc/self/exe`, a script's `/dev/fd/N`) a plugin of the
/// file's owner could change the file's metadata past the read-only mounts.
struct ExecAt {
    /// The file's path as the kernel names it (symlinks resolved).
    path: CString,
    /// Device and inode, which the init checks on what it opens.
    id: (u64, u64),
}

impl ExecAt {
    fn of(fd: &OwnedFd) -> Result<ExecAt, SpawnError> {
        use std::os::unix::ffi::OsStrExt;
        let fail = |e: io::Error| SpawnError::ExecPath(e);
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(fail)?;
        if !path.is_absolute() {
            return Err(fail(io::Error::other(format!(
                "the kernel names it {}",
                path.display()
            ))));
        }
        let st = nix::sys::stat::fstat(fd).map_err(|e| fail(e.into()))?;
        Ok(ExecAt {
            path: CString::new(path.as_os_str().as_bytes())
                .map_err(|e| fail(io::Error::other(e)))?,
            id: (st.st_dev, st.st_ino),
        })
    }
}

fn high_dup(fd: RawFd) -> Result<OwnedFd, SpawnError> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new one we then own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if n < 0 {
        return Err(SpawnError::Pipe(io::Error::last_os_error()));
    }
    // SAFETY: n is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// A pidfd of the calling thread alone (`PIDFD_THREAD`, Linux 6.9), at a descriptor of
/// 10 or more: it turns readable when this thread exits, which is what fires the init's
/// parent-death signal. The init checks it after setting that signal, beside the go
/// pipe's hang-up (see `Prepared::apply_in_init` for why it takes both).
fn parent_pidfd() -> Result<OwnedFd, SpawnError> {
    const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;
    // SAFETY: raw gettid (glibc's wrapper is not linked into the static build), then
    // pidfd_open, which returns a new descriptor or -1.
    let fd = unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        // Always close-on-exec; O_CLOEXEC itself is refused.
        libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD)
    };
    if fd < 0 {
        return Err(SpawnError::ParentPidfd(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    high_dup(fd.as_raw_fd()).map_err(|e| match e {
        SpawnError::Pipe(e) => SpawnError::ParentPidfd(e),
        other => other,
    })
}

fn cptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A sandbox set up up to the go (its plugin's exec), which [`Spawned::run`] gives
/// unless a one-shot call's entry thread gave it ([`Spawned::gone_ahead`]). Dropping it
/// before the go kills the init and whatever waits with it: the plugin never runs.
pub struct Spawned<'a> {
    launch: &'a Launch,
    sandbox: &'a Prepared,
    pid: libc::pid_t,
    reaped: bool,
    /// The init, once it has reported its plugin's end (see [`Ending`]).
    ending: Option<Ending>,
    sync_w: OwnedFd,
    /// The go, when another thread gave it ([`Spawned::gone_ahead`]), and when.
    went: Option<(Instant, nix::Result<usize>)>,
    pipes: Option<(Pipes, Option<OwnedFd>, OwnedFd)>,
    // What the children read: kept (and unchanged) until the init is reaped.
    memory: Option<InitMemory>,
    _argv: Vec<*const libc::c_char>,
    _envp: Vec<*const libc::c_char>,
    _exec_fd: OwnedFd,
    _exec_at: Option<ExecAt>,
    _script_name: Option<CString>,
    _parent: OwnedFd,
    /// issue 23: what the sandbox refuses, observed from before the go (a thread that
    /// starts while the init sets up, and takes upm's end of the listener's channel).
    observer: Option<Box<observe::Observer>>,
    /// upm's end of the channel the init hands the egress listener over (issue 22).
    egress: Option<OwnedFd>,
}

/// Clones the sandbox's init, which sets the sandbox up (once told the id maps are
/// written) and waits for the go, itself or in the plugin's process (see [`child`]).
pub fn start<'a>(launch: &'a Launch, sandbox: &'a mut Prepared) -> Result<Spawned<'a>, SpawnError> {
    let (stdin_r, stdin_w) = pipe_high()?;
    let (stdout_r, stdout_w) = pipe_high()?;
    let (stderr_r, stderr_w) = pipe_high()?;
    for fd in [&stdout_r, &stderr_r] {
        widen_pipe(fd.as_raw_fd());
    }
    let (report_r, report_w) = pipe_high()?;
    let (sync_r, sync_w) = pipe_high()?;
    let result_pipe = if launch.result_channel {
        Some(pipe_high()?)
    } else {
        None
    };
    let exec_fd = high_dup(launch.exec_fd)?;
    let exec_at = match launch.sealed_exec {
        true => None,
        false => Some(ExecAt::of(&exec_fd)?),
    };
    let script_name = match &launch.script_name {
        None => None,
        Some(link) => {
            use std::os::unix::ffi::OsStrExt;
            let target = format!("/proc/self/fd/{}", exec_fd.as_raw_fd());
            std::os::unix::fs::symlink(target, link).map_err(SpawnError::ScriptName)?;
            let c = CString::new(link.as_os_str().as_bytes())
                .map_err(|e| SpawnError::ScriptName(io::Error::other(e)))?;
            Some(c)
        }
    };
    let parent = parent_pidfd()?;
    let argv = cptrs(&launch.argv);
    let envp = cptrs(&launch.envp);
    let mut stacks = child::Pooled::take().map_err(SpawnError::Stack)?;
    // issue 23: the listener of the plugin's filter comes to upm over this pair.
    let observe_channel = match supervised(
        launch,
        sandbox,
        exec_fd.as_raw_fd(),
        &argv,
        &envp,
        &script_name,
    ) {
        true => Some(socketpair_high()?),
        false => None,
    };
    // issue 22: with an egress allowlist the init sends the proxy's listening socket,
    // made in the call's network namespace, over this pair.
    let egress = match sandbox.egress {
        Some(_) => Some(socketpair_high()?),
        None => None,
    };

    let (pid, ctx) = loop {
        let mut ctx = Box::new(child::Ctx {
            stdio: [
                stdin_r.as_raw_fd(),
                stdout_w.as_raw_fd(),
                stderr_w.as_raw_fd(),
                result_pipe.as_ref().map_or(-1, |(_, w)| w.as_raw_fd()),
            ],
            report: report_w.as_raw_fd(),
            sync: sync_r.as_raw_fd(),
            parent: parent.as_raw_fd(),
            exec_fd: exec_fd.as_raw_fd(),
            exec_path: exec_at
                .as_ref()
                .map_or(std::ptr::null(), |e| e.path.as_ptr()),
            exec_id: exec_at.as_ref().map_or((0, 0), |e| e.id),
            keep_exec_fd: launch.keep_exec_fd,
            script_name: script_name
                .as_ref()
                .map_or(std::ptr::null(), |c| c.as_ptr()),
            workdir: launch.workdir.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            sandbox: &*sandbox,
            plugin_stack: stacks.plugin_top(),
            observe_channel: observe_channel
                .as_ref()
                .map_or(-1, |(init_end, _)| init_end.as_raw_fd()),
            listener: std::sync::atomic::AtomicI32::new(observe::NO_LISTENER),
            egress_channel: egress
                .as_ref()
                .map_or(-1, |(init_end, _)| init_end.as_raw_fd()),
            go_in_plugin: false,
        });
        // The shared network namespace is joined by this thread for the clone: the
        // init, in a user namespace of its own, could not join it itself.
        let joined = match (
            sandbox.namespaces.filter(|n| n.shared_net),
            shared_net::get(),
        ) {
            (Some(_), Some(shared)) => match shared.join() {
                Ok(j) => Some(j),
                Err(e) => {
                    sandbox.own_network_namespace(&format!("cannot join it: {e}"));
                    None
                }
            },
            (Some(_), None) => {
                sandbox.own_network_namespace("this process has none");
                None
            }
            _ => None,
        };
        let flags = sandbox.namespaces.map_or(0, |n| n.clone_flags);
        ctx.go_in_plugin = flags & libc::CLONE_NEWUSER != 0;
        // A root upm's call gets a user namespace owned by a uid of its own.
        let owner = match sandbox.namespaces.and_then(|n| n.owner) {
            Some(uid) if flags & libc::CLONE_NEWUSER != 0 => match AsOwner::enter(uid) {
                Ok(guard) => Some(guard),
                Err(e) => {
                    let why = format!("not created: cannot create it as uid {uid}: {e}");
                    sandbox.without_user_namespace(&why);
                    continue;
                }
            },
            _ => None,
        };
        // SAFETY: ctx, everything it points to and the stacks live in the returned
        // Spawned, unchanged, until its Drop has reaped the init.
        let cloned = stop::blocked_during(|| unsafe { child::clone_init(flags, &stacks, &ctx) });
        drop(owner);
        drop(joined);
        match cloned {
            Ok(pid) => {
                // Without a PID namespace of its own, the init's reaping does not prove its
                // plugin (which shares upm's memory until its exec) gone: not reused then.
                stacks.keep_after_reap(flags & libc::CLONE_NEWPID != 0);
                break (pid, ctx);
            }
            // A root upm goes on without the call's own user namespace (the report says
            // what max_processes then counts) before it considers the other namespaces.
            Err(e @ (libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS))
                if flags & libc::CLONE_NEWUSER != 0
                    && sandbox.credentials.mode == crate::sandbox::credentials::Mode::Switch =>
            {
                let e = io::Error::from_raw_os_error(e);
                sandbox.without_user_namespace(&format!("not created: {e}"));
            }
            // Refused by this kernel or invoker (not a passing shortage like EAGAIN).
            Err(e @ (libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS)) if flags != 0 => {
                // Go on without namespaces only if the policy allows it.
                let e = io::Error::from_raw_os_error(e);
                sandbox.without_namespaces(&format!("creating namespaces failed: {e}"))?;
            }
            Err(e) => return Err(SpawnError::Clone(io::Error::from_raw_os_error(e))),
        }
    };
    let sandbox: &'a Prepared = sandbox;
    drop((stdin_r, stdout_w, stderr_w, report_w, sync_r));
    // Only the init holds the other end now: if it ends without sending, upm reads EOF.
    let observe_channel = observe_channel.map(|(_init_end, upm_end)| upm_end);
    // Prepared now, before the plugin can exist (the audit's subscription, if any); its
    // thread starts just after the go, while the init sets up (see `Observer::launch`).
    let observer = Box::new(observe::Observer::start(sandbox, observe_channel));
    let egress = egress.map(|(init_end, upm_end)| {
        drop(init_end);
        upm_end
    });
    let result_r = result_pipe.map(|(r, _w)| r);
    let spawned = Spawned {
        launch,
        sandbox,
        pid,
        reaped: false,
        ending: None,
        sync_w,
        went: None,
        pipes: Some((
            Pipes {
                stdin: stdin_w,
                stdout: stdout_r,
                stderr: stderr_r,
            },
            result_r,
            report_r,
        )),
        memory: Some(InitMemory {
            _ctx: ctx,
            _stacks: stacks,
        }),
        _argv: argv,
        _envp: envp,
        _exec_fd: exec_fd,
        _exec_at: exec_at,
        _script_name: script_name,
        _parent: parent,
        observer: Some(observer),
        egress,
    };
    if let Some(n) = sandbox.namespaces.filter(|n| n.user_namespace) {
        let c = &sandbox.credentials;
        map_ids(pid, c.uid, c.gid, n.deny_setgroups).map_err(SpawnError::IdMap)?;
    }
    // The init sets its rlimits after upm's word below, but only upm can raise a hard one.
    sandbox.limits.raise_on(pid).map_err(SpawnError::Limits)?;
    // The init may mount now. A failed write means the init is gone: the go finds that
    // out and reads its report.
    let _ = say(&spawned.sync_w, child::MAPPED);
    Ok(spawned)
}

impl Spawned<'_> {
    /// The sandbox as it really is (namespaces may have been given up, if allowed).
    pub fn sandbox(&self) -> &Prepared {
        self.sandbox
    }

    /// Another end of the pipe the go is given on, for [`give_go`] on another thread:
    /// a one-shot call's `started` entry is made durable on one, which then gives the
    /// go at once instead of waking this one to give it.
    pub fn go_pipe(&self) -> io::Result<OwnedFd> {
        self.sync_w.try_clone()
    }

    /// The go was given on [`Spawned::go_pipe`] at that instant, with this result.
    pub fn gone_ahead(&mut self, at: Instant, went: nix::Result<usize>) {
        self.went = Some((at, went));
    }

    /// With an egress allowlist: where the init hands over the proxy's listening socket.
    pub fn egress_listener(&mut self) -> Option<ListenerChannel> {
        self.egress.take().map(ListenerChannel)
    }

    /// Lets the plugin start, captures what it prints and waits for the whole tree.
    pub fn run(self, stop: &stop::Watch) -> Outcome {
        self.run_observed(stop).0
    }

    /// [`Spawned::run`], and what the sandbox refused meanwhile (issue 23): observed
    /// from before the go until the plugin has ended (`observe`), and until the whole
    /// tree has when the kernel's audit is read. With the init, when it reported its
    /// plugin's end: killed, still to be reaped ([`Ending`]).
    pub fn run_observed(mut self, stop: &stop::Watch) -> (Outcome, Denials, Option<Ending>) {
        let mut observer = self.observer.take();
        let outcome = self.run_plugin(stop, observer.as_deref_mut());
        let mut ending = self.ending.take();
        if observer.as_ref().is_some_and(|o| o.reads_audit) {
            // Reaped first: the audit's last records may come from what its end killed.
            ending = None;
        }
        (
            outcome,
            observer.map(|o| o.finish()).unwrap_or_default(),
            ending,
        )
    }

    fn run_plugin(
        &mut self,
        stop: &stop::Watch,
        observer: Option<&mut observe::Observer>,
    ) -> Outcome {
        // sync_w then stays open until the call ends: the init checks it (and a pidfd
        // of this thread) to learn whether upm died before its parent-death signal was set.
        // The call's time (its timeout) counts from the go.
        let (started, go) = match self.went.take() {
            Some(went) => went,
            None => (Instant::now(), give_go(&self.sync_w)),
        };
        if let Some(o) = observer {
            o.launch();
        }
        let mut cap = capture::Capture::new(self.launch.io(stop), started);
        if go.is_err() {
            // The init is gone (EPIPE) before it could start anything. Make sure, then
            // read what it may have reported (why its set-up failed) until EOF.
            kill_tree(self.pid);
        }
        if let Some((pipes, result_r, report_r)) = self.pipes.take() {
            let pid = self.pid;
            cap.pump(pipes, result_r, Some(report_r), &mut || stop_tree(pid));
        }
        tracing::debug!(
            us = started.elapsed().as_micros() as u64,
            "spawn: output drained"
        );
        kill_tree(self.pid);
        if cap.end_reported() {
            // Nothing of the call is left but the init's own end: the kernel tears its
            // namespaces down while upm makes the `finished` entry durable.
            self.ending = self.memory.take().map(|memory| Ending {
                pid: self.pid,
                _memory: memory,
            });
        }
        if self.ending.is_none() {
            reap(self.pid);
        }
        self.reaped = true;
        let mut o = cap.finish();
        if let Err(e) = go {
            o.start_failure = o.start_failure.or(Some((Step::Sync, e as i32)));
        }
        o
    }
}

/// What the init may still touch after its report: it runs in upm's memory (`CLONE_VM`),
/// on one of these stacks, until its exit. Kept until it is reaped.
struct InitMemory {
    _ctx: Box<child::Ctx>,
    _stacks: child::Pooled,
}

// SAFETY: upm never reads or writes through the context's pointers: it only keeps the
// memory alive, and frees it on whichever thread reaps the init (a batch's finisher).
unsafe impl Send for InitMemory {}

/// A call's init after it reported its plugin's end (the plugin reaped, its usage
/// measured): killed, its exit and the kernel's teardown of its namespaces under way,
/// not yet reaped. Reaped when dropped, which the pipeline does once the `finished`
/// entry is durable and before the response: no call answers with a process left.
pub struct Ending {
    pid: libc::pid_t,
    _memory: InitMemory,
}

impl Drop for Ending {
    fn drop(&mut self) {
        reap(self.pid);
    }
}

impl Drop for Spawned<'_> {
    fn drop(&mut self) {
        if !self.reaped {
            kill_tree(self.pid);
            reap(self.pid);
        }
    }
}

/// issue 23: whether upm answers this call's seccomp errnos. Not when the sandbox says
/// it cannot, nor when the filter refuses one of the calls the plugin's process makes
/// between its filter install and its exec (the init, which hands the listener over,
/// waits for that exec: such a call would wait for ever), which is then said instead.
fn supervised(
    launch: &Launch,
    sandbox: &mut Prepared,
    exec_fd: RawFd,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    script_name: &Option<CString>,
) -> bool {
    let Some(filter) = sandbox
        .seccomp
        .clone()
        .filter(|_| sandbox.observe.seccomp.is_ok())
    else {
        return false;
    };
    let ptr = |p: *const libc::c_char| p as u64;
    let fd = exec_fd as u64;
    let mut calls = Vec::with_capacity(4);
    if launch.keep_exec_fd {
        calls.push((libc::SYS_fcntl, [fd, libc::F_SETFD as u64, 0, 0, 0, 0]));
    }
    calls.push(match script_name {
        Some(name) => (
            libc::SYS_execve,
            [
                ptr(name.as_ptr()),
                ptr(argv.as_ptr().cast()),
                ptr(envp.as_ptr().cast()),
                0,
                0,
                0,
            ],
        ),
        None => (
            libc::SYS_execveat,
            [
                fd,
                ptr(child::EMPTY_PATH.as_ptr()),
                ptr(argv.as_ptr().cast()),
                ptr(envp.as_ptr().cast()),
                libc::AT_EMPTY_PATH as u64,
                0,
            ],
        ),
    });
    // What a failed exec does next: report (the record's address is on a stack).
    calls.push((
        libc::SYS_write,
        [
            child::REPORT_FD as u64,
            0,
            child::RECORD_SIZE as u64,
            0,
            0,
            0,
        ],
    ));
    calls.push((libc::SYS_exit_group, [127, 0, 0, 0, 0, 0]));
    match crate::sandbox::seccomp::notify::refused_before_exec(&filter, &calls) {
        None => true,
        Some(call) => {
            sandbox.observe.seccomp = Err(format!(
                "the seccomp profile refuses {call}, which the plugin's process calls \
                 before its exec: upm does not supervise this call's filter"
            ));
            false
        }
    }
}

/// A connected pair of Unix stream sockets, both at descriptors >= 10 (see [`pipe_high`]).
fn socketpair_high() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SpawnError::Pipe(e.into()))?;
    Ok((high(a)?, high(b)?))
}

/// upm's end of the socketpair over which a call's init hands over the egress proxy's
/// listening socket (issue 22; the init's half is `sandbox::network::Plan::listen_in_init`).
pub struct ListenerChannel(OwnedFd);

impl ListenerChannel {
    /// What the egress helper (`upm-egress`) hands on to: upm's end of the channel.
    pub fn into_fd(self) -> OwnedFd {
        self.0
    }

    /// In the egress helper: the channel upm passed it as descriptor 3 ([`helper`]).
    pub fn inherited() -> Result<ListenerChannel, String> {
        const FD: RawFd = 3;
        // SAFETY: zeroed stat is a valid value; fstat fills it or fails on a closed fd.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out-pointer on our stack.
        if unsafe { libc::fstat(FD, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err("descriptor 3 is not the channel upm passes (run by upm only)".into());
        }
        // SAFETY: descriptor 3 is open (fstat said so) and nothing else in this process
        // owns it: upm passed it for this purpose alone.
        let fd = unsafe { OwnedFd::from_raw_fd(FD) };
        // SAFETY: F_SETFD on our own descriptor.
        unsafe { libc::fcntl(FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(ListenerChannel(fd))
    }

    /// Waits at most `limit` for the listening socket. An error says why there is none
    /// (the init ended first, say): the plugin's connections are then refused.
    pub fn receive(self, limit: Duration) -> Result<std::net::TcpListener, String> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let fd = self.0.as_raw_fd();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on our stack.
            let n = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            match n {
                1.. => break,
                0 => {
                    return Err(format!(
                        "the sandbox's init did not hand over the proxy's listening socket within {} ms",
                        limit.as_millis()
                    ))
                }
                _ if crate::sandbox::errno() == libc::EINTR => continue,
                _ => return Err(format!("waiting for the proxy's listening socket: {}", io::Error::last_os_error())),
            }
        }
        let mut byte = [0u8; 1];
        let mut iov = [io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| format!("receiving the proxy's listening socket: {e}"))?;
        let mut received = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    // SAFETY: the kernel just installed these descriptors in this
                    // process for us (close-on-exec); nothing else refers to them.
                    received.extend(fds.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                }
            }
        }
        let mut received = received.into_iter();
        match received.next() {
            Some(listener) => Ok(std::net::TcpListener::from(listener)),
            None => Err(
                "the sandbox's init ended before it handed over the proxy's listening socket"
                    .into(),
            ),
        }
    }
}

/// Starts and runs in one go, for callers with nothing to do in between.
pub fn run(
    launch: &Launch,
    sandbox: &mut Prepared,
    stop: &stop::Watch,
) -> Result<Outcome, SpawnError> {
    Ok(start(launch, sandbox)?.run(stop))
}

/// Gives the go on `sync_w` (once upm's word that the id maps are written went first).
pub fn give_go(sync_w: &OwnedFd) -> nix::Result<usize> {
    say(sync_w, child::GO)
}

/// One of upm's words to the init on the sync pipe (`child::MAPPED`, `child::GO`).
fn say(sync_w: &OwnedFd, word: u8) -> nix::Result<usize> {
    loop {
        match nix::unistd::write(sync_w, &[word]) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Maps the plugin's uid and gid onto themselves, and nothing else: every other id
/// (root's included) is unmapped in the call's user namespace.
fn map_ids(pid: libc::pid_t, uid: u32, gid: u32, deny_setgroups: bool) -> io::Result<()> {
    if deny_setgroups {
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("{uid} {uid} 1\n"))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), format!("{gid} {gid} 1\n"))?;
    Ok(())
}

/// Stops a plugin on timeout or past the output cap. The plugin is killed first, alone,
/// so that its init reaps it and reports its real usage (the init's own rusage would be
/// upm's: it shares upm's memory), and the init gets a moment to exit; then the whole
/// tree is killed whatever happened.
fn stop_tree(init: libc::pid_t) {
    let children = sandboxed_children(init);
    for c in &children {
        // SAFETY: pidfd_send_signal on a pidfd we own, with no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                c.as_raw_fd(),
                libc::SIGKILL,
                0,
                0,
            )
        };
    }
    if !children.is_empty() {
        wait_for_exit(init, Duration::from_millis(250));
    }
    kill_tree(init);
}

/// Pidfds of the init's children (the plugin, and orphans it adopted), each confirmed to
/// be the init's child after its pidfd was opened: a number read earlier could since
/// have been freed and reused by a process outside the sandbox.
fn sandboxed_children(init: libc::pid_t) -> Vec<OwnedFd> {
    // The numbers in /proc are those of the PID namespace /proc was mounted for; if that
    // is not upm's (a foreign /proc in a container), pidfd_open would read them wrongly.
    let own = std::process::id().to_string();
    if std::fs::read_link("/proc/self").map_or(true, |p| p.as_os_str() != own.as_str()) {
        return Vec::new();
    }
    let path = format!("/proc/{init}/task/{init}/children");
    let pids = |s: &str| -> Vec<libc::pid_t> {
        s.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let Ok(first) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let opened: Vec<(libc::pid_t, OwnedFd)> = pids(&first)
        .into_iter()
        .filter_map(|pid| pidfd_open(pid).map(|fd| (pid, fd)))
        .collect();
    let still = std::fs::read_to_string(&path).map_or_else(|_| Vec::new(), |s| pids(&s));
    opened
        .into_iter()
        .filter(|(pid, _)| still.contains(pid))
        .map(|(_, fd)| fd)
        .collect()
}

fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor we then own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: fd is fresh and ours.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits (bounded) until a child has exited, without reaping it.
fn wait_for_exit(pid: libc::pid_t, limit: Duration) {
    let Some(fd) = pidfd_open(pid) else { return };
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on our stack.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis() as libc::c_int) };
        if n != -1 || crate::sandbox::errno() != libc::EINTR || left.is_zero() {
            return;
        }
    }
}

/// Kills the init (and with it the PID namespace) and its process group.
fn kill_tree(pid: libc::pid_t) {
    // SAFETY: signals to a child we have not reaped yet, so the ids are still ours.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Reaps the init. Its own rusage is not the plugin's (it shares upm's memory), so
/// only the init's report says what the plugin used.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: a valid out-pointer on our stack.
        let r = unsafe { libc::wait4(pid, &mut status, libc::__WALL, std::ptr::null_mut()) };
        if r >= 0 || crate::sandbox::errno() != libc::EINTR {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::parent_gone;

    #[test]
    fn the_parent_pidfd_tells_whether_the_spawning_thread_lives() {
        let (fd_tx, fd_rx) = std::sync::mpsc::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            fd_tx.send(parent_pidfd().unwrap()).unwrap();
            let _ = end_rx.recv();
        });
        let fd = fd_rx.recv().unwrap();
        assert!(fd.as_raw_fd() >= 10);
        // The process lives on either way: only this thread's end may count.
        assert!(!parent_gone(fd.as_raw_fd()), "the thread is alive");
        end_tx.send(()).unwrap();
        thread.join().unwrap();
        // join returns once the thread's tid is cleared, a moment before it has exited.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !parent_gone(fd.as_raw_fd()) {
            assert!(Instant::now() < deadline, "the thread's end was never seen");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
