//! Spawn and capture: the only place that forks.
//!
//! Process shape:
//!
//! ```text
//! upm ──clone(NEWPID|NEWNET|NEWIPC[|NEWUSER])──▶ init (pid 1 in the new namespace)
//!                                                  │ applies every sandbox layer
//!                                                  └─fork─▶ plugin (execve)
//! ```
//!
//! The init reaps, reports the plugin's wait status and resource usage on a
//! pipe, and exits as soon as the plugin does — which makes the kernel kill
//! everything left in the PID namespace, daemonized grandchildren included.
//! On timeout upm kills the init, with the same effect. Everything the
//! children touch is prepared here before the clone; after it they only make
//! async-signal-safe system calls.
//!
//! The parent captures stdout, stderr and (for the Python runner) a result
//! channel on fd 3 in one poll loop with a combined byte cap, so upm's memory
//! stays bounded whatever the plugin prints.

use crate::sandbox::{errno, Prepared, SandboxError, Step};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create a pipe: {0}")]
    Pipe(#[source] io::Error),
    #[error("cannot start the sandboxed process: {0}")]
    Clone(#[source] io::Error),
    #[error("cannot map the caller's ids into the user namespace: {0}")]
    IdMap(#[source] io::Error),
    #[error("{0}")]
    Sandbox(#[from] SandboxError),
}

/// Everything needed to start one plugin process.
pub struct Launch {
    /// The verified executable, opened once: it is exec'd through this descriptor.
    pub exec_fd: RawFd,
    /// A script: the interpreter reads it as `/dev/fd/N`, so it must survive the exec.
    pub keep_exec_fd: bool,
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
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub user_ms: f64,
    pub sys_ms: f64,
    pub max_rss_kb: i64,
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
    pub usage: Usage,
}

impl Outcome {
    pub fn truncated(&self, s: &Stream) -> bool {
        s.total > s.data.len() as u64
    }
}

/// What the init (or the plugin, when its exec fails) tells the parent.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Record {
    kind: u32,
    step: u32,
    errno: i32,
    status: i32,
    utime_us: i64,
    stime_us: i64,
    maxrss_kb: i64,
}
const RECORD_SIZE: usize = std::mem::size_of::<Record>();
const SETUP_FAILED: u32 = 1;
const EXITED: u32 = 3;

/// Raw pointers the child uses; built in the parent, valid until the child execs or exits.
struct ChildCtx<'a> {
    stdin_r: RawFd,
    stdout_w: RawFd,
    stderr_w: RawFd,
    result_w: Option<RawFd>,
    report_w: RawFd,
    sync_r: RawFd,
    /// The parent's ends of every pipe: the init never execs, so CLOEXEC would not close them.
    parent_ends: [RawFd; 6],
    workdir: *const libc::c_char,
    exec_fd: RawFd,
    keep_exec_fd: bool,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    sandbox: &'a Prepared,
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
    high_dup(fd.as_raw_fd())
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

fn cptrs(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Runs the plugin under the prepared sandbox and captures what it printed.
pub fn run(launch: &Launch, sandbox: &mut Prepared) -> Result<Outcome, SpawnError> {
    let started = Instant::now();
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
    let argv = cptrs(&launch.argv);
    let envp = cptrs(&launch.envp);

    let pid = loop {
        let ctx = ChildCtx {
            stdin_r: stdin_r.as_raw_fd(),
            stdout_w: stdout_w.as_raw_fd(),
            stderr_w: stderr_w.as_raw_fd(),
            result_w: result_pipe.as_ref().map(|(_, w)| w.as_raw_fd()),
            report_w: report_w.as_raw_fd(),
            sync_r: sync_r.as_raw_fd(),
            parent_ends: [
                stdin_w.as_raw_fd(),
                stdout_r.as_raw_fd(),
                stderr_r.as_raw_fd(),
                report_r.as_raw_fd(),
                sync_w.as_raw_fd(),
                result_pipe.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()),
            ],
            workdir: launch.workdir.as_ptr(),
            exec_fd: exec_fd.as_raw_fd(),
            keep_exec_fd: launch.keep_exec_fd,
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            sandbox,
        };
        let flags = sandbox.namespaces.map_or(0, |n| n.clone_flags);
        match clone_child(flags, &ctx) {
            Ok(pid) => break pid,
            Err(e) if flags != 0 => {
                // Namespaces refused by this kernel or invoker: go on without them only if allowed.
                let reason = format!("creating namespaces failed: {e}");
                sandbox.without_namespaces(&reason)?;
            }
            Err(e) => return Err(SpawnError::Clone(e)),
        }
    };
    tracing::debug!(us = started.elapsed().as_micros() as u64, "spawn: cloned");
    drop((stdin_r, stdout_w, stderr_w, report_w));
    let result_r = result_pipe.map(|(r, w)| {
        drop(w);
        r
    });

    if sandbox.namespaces.is_some_and(|n| n.user_namespace) {
        if let Err(e) = map_ids(pid, sandbox.credentials.uid, sandbox.credentials.gid) {
            kill_tree(pid);
            reap(pid);
            return Err(SpawnError::IdMap(e));
        }
    }
    // Releases the child. sync_w then stays open until the call ends: the child
    // checks it to learn whether upm died before the parent-death signal was set.
    let _ = nix::unistd::write(&sync_w, b"g");

    let mut cap = Capture::new(launch.io(), started);
    let pipes = Pipes {
        stdin: stdin_w,
        stdout: stdout_r,
        stderr: stderr_r,
    };
    cap.pump(pipes, result_r, Some(report_r), &mut || kill_tree(pid));
    tracing::debug!(
        us = started.elapsed().as_micros() as u64,
        "spawn: output drained"
    );
    kill_tree(pid);
    let init_usage = reap(pid);
    tracing::debug!(us = started.elapsed().as_micros() as u64, "spawn: reaped");
    drop(sync_w);
    Ok(cap.finish(init_usage))
}

/// fork-like clone: the child runs `child_init` and never returns.
fn clone_child(flags: libc::c_int, ctx: &ChildCtx<'_>) -> io::Result<libc::pid_t> {
    // SAFETY: a raw clone without CLONE_VM behaves like fork: the child gets a copy of
    // this single-threaded process and only runs async-signal-safe code before exec/_exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        0 => child_init(ctx),
        p if p < 0 => Err(io::Error::last_os_error()),
        p => Ok(p as libc::pid_t),
    }
}

fn map_ids(pid: libc::pid_t, uid: u32, gid: u32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("{uid} {uid} 1\n"))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), format!("{gid} {gid} 1\n"))?;
    Ok(())
}

fn write_record(fd: RawFd, rec: &Record) {
    // SAFETY: writes RECORD_SIZE bytes from a valid repr(C) struct; a pipe write of
    // less than PIPE_BUF bytes is atomic.
    unsafe {
        libc::write(fd, (rec as *const Record).cast(), RECORD_SIZE);
    }
}

fn fail(fd: RawFd, step: Step, err: i32) -> ! {
    write_record(
        fd,
        &Record {
            kind: SETUP_FAILED,
            step: step as u32,
            errno: err,
            ..Record::default()
        },
    );
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(127) }
}

/// The sandbox's init. Async-signal-safe code only: raw syscalls, no allocation.
fn child_init(ctx: &ChildCtx<'_>) -> ! {
    let rep = ctx.report_w;
    for fd in ctx.parent_ends {
        if fd >= 0 {
            // SAFETY: closing this process's copy of a descriptor the parent keeps.
            unsafe { libc::close(fd) };
        }
    }
    let mut byte = 0u8;
    // SAFETY: reads one byte into a stack variable.
    if unsafe { libc::read(ctx.sync_r, (&mut byte as *mut u8).cast(), 1) } != 1 {
        fail(rep, Step::Sync, errno());
    }
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        fail(rep, Step::Session, errno());
    }
    let mut stdio = [
        (ctx.stdin_r, 0),
        (ctx.stdout_w, 1),
        (ctx.stderr_w, 2),
        (-1, 3),
    ];
    if let Some(r) = ctx.result_w {
        stdio[3] = (r, 3);
    }
    for (from, to) in stdio {
        // SAFETY: dup2 between valid descriptors; sources are >= 10, so none is clobbered.
        if from >= 0 && unsafe { libc::dup2(from, to) } < 0 {
            fail(rep, Step::Stdio, errno());
        }
    }
    let first_stray = if ctx.result_w.is_some() { 4 } else { 3 };
    // Everything else becomes close-on-exec, whatever upm's caller left open.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    if unsafe { libc::syscall(libc::SYS_close_range, first_stray as u32, u32::MAX, 4u32) } != 0 {
        fail(rep, Step::Stdio, errno());
    }
    // SAFETY: chdir with a NUL-terminated path prepared by the parent.
    if unsafe { libc::chdir(ctx.workdir) } != 0 {
        fail(rep, Step::Workdir, errno());
    }
    if let Err((step, e)) = ctx.sandbox.apply_in_child(ctx.sync_r) {
        fail(rep, step, e);
    }
    // SAFETY: fork-like clone in a single-threaded process; the child only execs or _exits.
    let plugin =
        unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if plugin == 0 {
        // SAFETY: fcntl on the verified descriptor, which stays open in this process.
        if ctx.keep_exec_fd && unsafe { libc::fcntl(ctx.exec_fd, libc::F_SETFD, 0) } != 0 {
            fail(rep, Step::Exec, errno());
        }
        // SAFETY: exec of the verified descriptor; argv/envp are NULL-terminated arrays of
        // NUL-terminated strings prepared by the parent; "" with AT_EMPTY_PATH names the fd itself.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                ctx.exec_fd,
                c"".as_ptr(),
                ctx.argv,
                ctx.envp,
                libc::AT_EMPTY_PATH,
            )
        };
        fail(rep, Step::Exec, errno());
    }
    if plugin < 0 {
        fail(rep, Step::Fork, errno());
    }
    // The init keeps nothing but its report pipe: no end of the plugin's pipes, so they reach
    // EOF when the plugin's tree closes them, and no copy of another call's pipes, which it
    // inherited if upm was running calls concurrently (`run --jsonl --parallel`).
    close_all_but(rep);
    loop {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid value; wait4 fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointers on our stack.
        let r = unsafe { libc::wait4(-1, &mut status, libc::__WALL, &mut usage) };
        if r as i64 == plugin {
            let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
            write_record(
                rep,
                &Record {
                    kind: EXITED,
                    status,
                    utime_us: us(usage.ru_utime),
                    stime_us: us(usage.ru_stime),
                    maxrss_kb: usage.ru_maxrss,
                    ..Record::default()
                },
            );
            // SAFETY: _exit never returns. The kernel now kills the rest of the namespace.
            unsafe { libc::_exit(0) };
        }
        if r < 0 && errno() != libc::EINTR {
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        }
    }
}

/// Closes every descriptor except `keep`. Async-signal-safe; falls back to plain
/// `close` calls if the seccomp profile refuses `close_range`.
fn close_all_but(keep: RawFd) {
    let keep = keep.max(0) as libc::c_uint;
    // SAFETY: close_range only closes this process's own descriptors.
    let below = keep == 0
        || unsafe { libc::syscall(libc::SYS_close_range, 0 as libc::c_uint, keep - 1, 0) } == 0;
    // SAFETY: as above.
    let above =
        unsafe { libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0) } == 0;
    if !(below && above) {
        for fd in (0..4096).filter(|&fd| fd != keep as RawFd) {
            // SAFETY: closing our own descriptors; EBADF for unused numbers is harmless.
            unsafe { libc::close(fd) };
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

fn reap(pid: libc::pid_t) -> Usage {
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid out-pointers on our stack.
        let r = unsafe { libc::wait4(pid, &mut status, libc::__WALL, &mut usage) };
        if r >= 0 || errno() != libc::EINTR {
            break;
        }
    }
    usage_of(usage.ru_utime, usage.ru_stime, usage.ru_maxrss)
}

fn usage_of(u: libc::timeval, s: libc::timeval, maxrss_kb: i64) -> Usage {
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    Usage {
        user_ms: ms(u),
        sys_ms: ms(s),
        max_rss_kb: maxrss_kb,
    }
}

/// What the parent feeds a plugin and how long and how much it lets it print.
#[derive(Clone, Copy)]
pub struct Io<'a> {
    pub stdin: &'a [u8],
    pub timeout: Duration,
    /// stdout + stderr (+ the result channel), together.
    pub output_cap: u64,
}

impl Launch {
    pub fn io(&self) -> Io<'_> {
        Io {
            stdin: &self.stdin,
            timeout: self.timeout,
            output_cap: self.output_cap,
        }
    }
}

/// The parent's ends of a process's standard streams.
pub struct Pipes {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What [`capture`] collected, and why it cut the process short if it did.
#[derive(Debug)]
pub struct Collected {
    pub stdout: Stream,
    pub stderr: Stream,
    pub stopped_by: Option<Stop>,
}

/// Feeds stdin and drains stdout/stderr of a process started elsewhere (the
/// container engine's client) with the same cap, clock and loop as the native
/// backend. `stop` must end the whole process tree; it is called at most once.
pub fn capture(io: Io<'_>, started: Instant, pipes: Pipes, stop: &mut dyn FnMut()) -> Collected {
    let mut cap = Capture::new(io, started);
    cap.pump(pipes, None, None, stop);
    Collected {
        stdout: cap.stdout,
        stderr: cap.stderr,
        stopped_by: cap.stopped_by,
    }
}

/// The parent's side of one call: feed stdin, drain outputs under a cap, watch the clock.
struct Capture<'a> {
    io: Io<'a>,
    started: Instant,
    stdout: Stream,
    stderr: Stream,
    result: Stream,
    report: Vec<u8>,
    stopped_by: Option<Stop>,
}

const CHUNK: usize = 1 << 20;
/// Reads per readable stream per wake-up before polling again (bounded, so one
/// stream cannot starve the clock or the others).
const READS_PER_WAKE: usize = 16;
/// After a kill, how long to keep reading before giving up on the pipes.
const GRACE: Duration = Duration::from_millis(2000);

impl<'a> Capture<'a> {
    fn new(io: Io<'a>, started: Instant) -> Self {
        Capture {
            io,
            started,
            stdout: Stream::default(),
            stderr: Stream::default(),
            result: Stream::default(),
            report: Vec::new(),
            stopped_by: None,
        }
    }

    /// `stop` kills the process tree; called at most once, on timeout or past the output cap.
    fn pump(
        &mut self,
        pipes: Pipes,
        result_r: Option<OwnedFd>,
        report_r: Option<OwnedFd>,
        stop: &mut dyn FnMut(),
    ) {
        for fd in [&pipes.stdin, &pipes.stdout, &pipes.stderr]
            .into_iter()
            .chain(result_r.as_ref())
            .chain(report_r.as_ref())
        {
            set_nonblocking(fd.as_raw_fd());
        }
        let mut stdin_w = Some(pipes.stdin);
        let mut written = 0usize;
        let mut readers: Vec<(usize, Option<OwnedFd>)> = vec![
            (0, Some(pipes.stdout)),
            (1, Some(pipes.stderr)),
            (2, result_r),
            (3, report_r),
        ];
        if readers[2].1.is_none() {
            self.result.closed = true;
        }
        let deadline = self.started + self.io.timeout;
        let mut give_up: Option<Instant> = None;
        let mut buf = vec![0u8; CHUNK];
        loop {
            if readers.iter().all(|(_, fd)| fd.is_none()) {
                break;
            }
            let now = Instant::now();
            if give_up.is_some_and(|g| now >= g) {
                break;
            }
            if self.stopped_by.is_none() && now >= deadline {
                self.stopped_by = Some(Stop::Timeout);
                stop();
                give_up = Some(now + GRACE);
                stdin_w = None;
            }
            let wait_until = give_up.unwrap_or(deadline);
            let timeout_ms = wait_until
                .saturating_duration_since(now)
                .as_millis()
                .min(i32::MAX as u128) as i32;

            let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(5);
            if let Some(w) = &stdin_w {
                pfds.push(pollfd(w.as_raw_fd(), libc::POLLOUT));
            }
            for (_, fd) in &readers {
                if let Some(fd) = fd {
                    pfds.push(pollfd(fd.as_raw_fd(), libc::POLLIN));
                }
            }
            // SAFETY: pfds is a valid array of pollfd for its length.
            let n =
                unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                break;
            }
            let mut i = 0;
            if let Some(w) = &stdin_w {
                let ev = pfds[i].revents;
                i += 1;
                if ev & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
                    let rest = &self.io.stdin[written..];
                    match nix::unistd::write(w, rest) {
                        Ok(k) => written += k,
                        Err(nix::errno::Errno::EAGAIN) => {}
                        Err(_) => written = self.io.stdin.len(),
                    }
                    if written >= self.io.stdin.len() {
                        stdin_w = None;
                    }
                }
            }
            for (which, slot) in readers.iter_mut() {
                if slot.is_none() {
                    continue;
                }
                let ev = pfds[i].revents;
                i += 1;
                if ev == 0 {
                    continue;
                }
                for _ in 0..READS_PER_WAKE {
                    let Some(fd) = slot.as_ref() else { break };
                    match nix::unistd::read(fd, &mut buf) {
                        Ok(0) => *slot = None,
                        Ok(k) => {
                            if *which == 3 {
                                self.report.extend_from_slice(&buf[..k]);
                            } else if !self.keep(*which, &buf[..k]) && self.stopped_by.is_none() {
                                self.stopped_by = Some(Stop::Output);
                                stop();
                                give_up = Some(Instant::now() + GRACE);
                            }
                            if k < buf.len() {
                                break;
                            }
                            continue;
                        }
                        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => *slot = None,
                    }
                    break;
                }
            }
        }
        for (which, slot) in &readers {
            if slot.is_none() {
                match which {
                    0 => self.stdout.closed = true,
                    1 => self.stderr.closed = true,
                    2 => self.result.closed = true,
                    _ => {}
                }
            }
        }
    }

    /// Keeps output up to the combined cap; false once the cap is passed.
    fn keep(&mut self, which: usize, bytes: &[u8]) -> bool {
        let cap = self.io.output_cap;
        let used =
            (self.stdout.data.len() + self.stderr.data.len() + self.result.data.len()) as u64;
        let room = cap.saturating_sub(used) as usize;
        let s = match which {
            0 => &mut self.stdout,
            1 => &mut self.stderr,
            _ => &mut self.result,
        };
        s.total += bytes.len() as u64;
        let take = bytes.len().min(room);
        s.data.extend_from_slice(&bytes[..take]);
        take == bytes.len()
    }

    fn finish(self, init_usage: Usage) -> Outcome {
        let mut exit = None;
        let mut start_failure = None;
        let mut usage = init_usage;
        for chunk in self.report.chunks_exact(RECORD_SIZE) {
            let mut rec = Record::default();
            // SAFETY: copies RECORD_SIZE bytes into a repr(C) struct of plain integers.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    chunk.as_ptr(),
                    (&mut rec as *mut Record).cast::<u8>(),
                    RECORD_SIZE,
                )
            };
            match rec.kind {
                SETUP_FAILED => {
                    start_failure =
                        start_failure.or(Step::from_u32(rec.step).map(|s| (s, rec.errno)))
                }
                EXITED => {
                    let st = rec.status;
                    exit = Some(if libc::WIFSIGNALED(st) {
                        Exit::Signal(libc::WTERMSIG(st))
                    } else {
                        Exit::Code(libc::WEXITSTATUS(st))
                    });
                    usage = Usage {
                        user_ms: rec.utime_us as f64 / 1000.0,
                        sys_ms: rec.stime_us as f64 / 1000.0,
                        max_rss_kb: rec.maxrss_kb,
                    };
                }
                _ => {}
            }
        }
        Outcome {
            exit,
            start_failure,
            stopped_by: self.stopped_by,
            stdout: self.stdout,
            stderr: self.stderr,
            result: self.result,
            wall: self.started.elapsed(),
            usage,
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl flag updates on a descriptor we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}
