//! The parent's side of a running process: feed stdin, drain stdout, stderr (and
//! the Python runner's result channel) in one poll loop under a combined byte cap,
//! watch the clock, and read the init's report.

use super::child::{Record, EXITED, RECORD_SIZE, SETUP_FAILED};
use super::Disk;
use super::{Exit, Launch, Outcome, Stop, Stream, Usage};
use crate::sandbox::{errno, Step};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What the parent feeds a plugin and how long and how much it lets it print.
#[derive(Clone, Copy)]
pub struct Io<'a> {
    pub stdin: &'a [u8],
    pub timeout: Duration,
    /// stdout + stderr (+ the result channel), together.
    pub output_cap: u64,
    /// What stops the call early: upm asked to stop, or the call cancelled.
    pub stop: &'a super::stop::Watch,
}

impl Launch {
    pub fn io<'a>(&'a self, stop: &'a super::stop::Watch) -> Io<'a> {
        Io {
            stdin: &self.stdin,
            timeout: self.timeout,
            output_cap: self.output_cap,
            stop,
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
pub(super) struct Capture<'a> {
    io: Io<'a>,
    started: Instant,
    stdout: Stream,
    stderr: Stream,
    result: Stream,
    report: Vec<u8>,
    /// Where output past the cap is read to be counted and dropped (allocated only then).
    scratch: Option<Vec<u8>>,
    /// Per stream (stdout, stderr, result channel): its buffer's address and how much
    /// of it is faulted in.
    populated: [(usize, usize); 3],
    stopped_by: Option<Stop>,
}

const CHUNK: usize = 1 << 20;
/// Reads per readable stream per wake-up before polling again (bounded, so one
/// stream cannot starve the clock or the others).
const READS_PER_WAKE: usize = 16;
/// After a kill, how long to keep reading before giving up on the pipes.
const GRACE: Duration = Duration::from_millis(2000);

impl<'a> Capture<'a> {
    pub(super) fn new(io: Io<'a>, started: Instant) -> Self {
        Capture {
            io,
            started,
            stdout: Stream::default(),
            stderr: Stream::default(),
            result: Stream::default(),
            report: Vec::new(),
            scratch: None,
            populated: [(0, 0); 3],
            stopped_by: None,
        }
    }

    /// `stop` kills the process tree; called at most once, on timeout or past the output cap.
    pub(super) fn pump(
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
            if let Some(why) = self.io.stop.stopped().filter(|_| self.stopped_by.is_none()) {
                self.stopped_by = Some(Stop::Cancelled(why));
                stop();
                give_up = Some(now + GRACE);
                stdin_w = None;
            }
            let wait_until = give_up.unwrap_or(deadline);
            let timeout_ms = wait_until
                .saturating_duration_since(now)
                .as_millis()
                .min(i32::MAX as u128) as i32;

            let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(7);
            // Wake this poll when upm is asked to stop or the call is cancelled; watched
            // until the plugin is stopped for any reason (they stay readable: watched
            // after, they would spin). A negative descriptor is ignored by poll.
            let watching = self.stopped_by.is_none();
            if watching {
                for fd in self.io.stop.fds() {
                    pfds.push(pollfd(fd, libc::POLLIN));
                }
            }
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
            let mut i = if watching {
                self.io.stop.fds().len()
            } else {
                0
            };
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
                    match self.read_from(*which, fd.as_raw_fd()) {
                        Read::Eof | Read::Failed => *slot = None,
                        Read::Again => {}
                        Read::Data { full, over_cap } => {
                            if over_cap && self.stopped_by.is_none() {
                                self.stopped_by = Some(Stop::Output);
                                stop();
                                give_up = Some(Instant::now() + GRACE);
                            }
                            if full {
                                continue;
                            }
                        }
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

    /// One read from stream `which` (0 stdout, 1 stderr, 2 result channel, 3 the
    /// init's report). Output goes straight into its stream's buffer, up to the
    /// combined cap — no intermediate buffer to zero or copy from — and what is past
    /// the cap is read, counted and dropped.
    fn read_from(&mut self, which: usize, fd: RawFd) -> Read {
        if which == 3 {
            let mut rec = [0u8; 4 * RECORD_SIZE];
            return match read_fd(fd, &mut rec) {
                Ok(0) => Read::Eof,
                Ok(k) => {
                    self.report.extend_from_slice(&rec[..k]);
                    if self.end_reported() {
                        // The init's last word: it exits next, writing nothing more.
                        return Read::Eof;
                    }
                    Read::Data {
                        full: false,
                        over_cap: false,
                    }
                }
                Err(e) => Read::from_errno(e),
            };
        }
        let used =
            (self.stdout.data.len() + self.stderr.data.len() + self.result.data.len()) as u64;
        let room = self.io.output_cap.saturating_sub(used).min(CHUNK as u64) as usize;
        let s = match which {
            0 => &mut self.stdout,
            1 => &mut self.stderr,
            _ => &mut self.result,
        };
        if room == 0 {
            let scratch = self.scratch.get_or_insert_with(|| vec![0u8; 64 * 1024]);
            return match read_fd(fd, scratch) {
                Ok(0) => Read::Eof,
                Ok(k) => {
                    s.total += k as u64;
                    Read::Data {
                        full: k == scratch.len(),
                        over_cap: true,
                    }
                }
                Err(e) => Read::from_errno(e),
            };
        }
        s.data.reserve(room);
        let spare = s.data.spare_capacity_mut();
        let want = room.min(spare.len());
        // SAFETY: read(2) writes at most `want` bytes into the vector's spare capacity,
        // which is allocated and ours; only the bytes it reports are then marked initialized.
        let r = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
        if r < 0 {
            return Read::from_errno(errno());
        }
        let k = r as usize;
        if k == 0 {
            return Read::Eof;
        }
        // SAFETY: the first k bytes of the spare capacity were just written by read(2).
        unsafe { s.data.set_len(s.data.len() + k) };
        s.total += k as u64;
        // A stream printing in volume: fault in where its next read goes now, between
        // reads (small outputs never pay for this).
        if s.data.len() >= CHUNK {
            let room_after = self.io.output_cap.saturating_sub(used + k as u64);
            let ahead = room_after.min(CHUNK as u64) as usize;
            populate_ahead(&mut s.data, &mut self.populated[which], ahead);
        }
        Read::Data {
            full: k == want,
            over_cap: false,
        }
    }

    /// Whether the init has reported its plugin's end (its last record).
    pub(super) fn end_reported(&self) -> bool {
        records(&self.report).any(|r| r.kind == EXITED)
    }

    pub(super) fn finish(self) -> Outcome {
        let mut exit = None;
        let mut start_failure = None;
        let mut usage = None;
        for rec in records(&self.report) {
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
                    usage = Some(Usage {
                        user_ms: rec.utime_us as f64 / 1000.0,
                        sys_ms: rec.stime_us as f64 / 1000.0,
                        max_rss_kb: rec.maxrss_kb,
                        disk: (rec.disk_used >= 0).then_some(Disk {
                            used_bytes: rec.disk_used as u64,
                            full: rec.disk_full != 0,
                        }),
                    });
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

/// The init's report, record by record.
fn records(report: &[u8]) -> impl Iterator<Item = Record> + '_ {
    report.chunks_exact(RECORD_SIZE).map(|chunk| {
        let mut rec = Record::default();
        // SAFETY: copies RECORD_SIZE bytes into a repr(C) struct of plain integers.
        unsafe {
            std::ptr::copy_nonoverlapping(
                chunk.as_ptr(),
                (&mut rec as *mut Record).cast::<u8>(),
                RECORD_SIZE,
            )
        };
        rec
    })
}

/// What one read gave.
enum Read {
    Eof,
    /// Nothing to read now (or interrupted): poll again.
    Again,
    Failed,
    /// `full`: the read filled what was asked, so more may be waiting.
    Data {
        full: bool,
        over_cap: bool,
    },
}

impl Read {
    fn from_errno(e: i32) -> Read {
        if e == libc::EAGAIN || e == libc::EINTR {
            Read::Again
        } else {
            Read::Failed
        }
    }
}

/// Faults in the `ahead` bytes after `buf`'s contents, so that the next read(2) does
/// not take them: a pipe read holds the pipe's lock while it copies, and every page
/// fault taken there stalls the writer (measured: 0.84 → 1.48 GB/s into a 512 MiB
/// buffer, `bench/output.py`). Best effort: without MADV_POPULATE_WRITE (Linux < 5.14)
/// the read takes the faults as before.
fn populate_ahead(buf: &mut Vec<u8>, populated: &mut (usize, usize), ahead: usize) {
    const PAGE: usize = 4096;
    if ahead == 0 || UNSUPPORTED.load(Ordering::Relaxed) {
        return;
    }
    buf.reserve(ahead);
    let base = buf.as_ptr() as usize;
    // A buffer that moved may have left its faulted-in pages behind: start over.
    let done = if populated.0 == base { populated.1 } else { 0 };
    let from = (base + buf.len().max(done)).next_multiple_of(PAGE);
    let to = (base + buf.len() + ahead) & !(PAGE - 1);
    if to <= from {
        return;
    }
    // SAFETY: [from, to) lies within the vector's allocation (its spare capacity, just
    // reserved); MADV_POPULATE_WRITE faults pages in and changes no contents.
    let rc = unsafe {
        libc::madvise(
            from as *mut libc::c_void,
            to - from,
            libc::MADV_POPULATE_WRITE,
        )
    };
    if rc == 0 {
        *populated = (base, to - base);
    } else if errno() == libc::EINVAL {
        UNSUPPORTED.store(true, Ordering::Relaxed);
    }
}

/// MADV_POPULATE_WRITE is unknown to this kernel: stop asking.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

fn read_fd(fd: RawFd, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: read(2) into a valid, writable buffer of buf.len() bytes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
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
