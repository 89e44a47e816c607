//! Landlock's denials of one call, read from the kernel's audit.
//!
//! Landlock (ABI 7) logs a denial to the kernel's audit when the domain was created with
//! `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON` (denials after the plugin's exec; those
//! before it are logged by default). Two record types matter (seen on Linux 6.18):
//!
//! ```text
//! 1423 audit(…:80): domain=1b1e81742 blockers=fs.read_file path="/srv/secret" dev="vda" ino=686
//! 1424 audit(…:80): domain=1b1e81742 status=allocated mode=enforcing pid=7191 uid=0 exe="…" comm="upm:3f9a2c1e8b0"
//! ```
//!
//! The first denial of a domain comes with a 1424 record that describes who created the
//! domain, as it was when it called `landlock_restrict_self`. Its `comm` is how upm
//! finds the call's domain: the plugin's process sets its name to a random per-call
//! token (`upm:` and 11 hex digits) just before it restricts itself, and its exec gives
//! it back the program's name. A pid would not do: the plugin's pid is that of its PID
//! namespace, and a host pid is reused.
//!
//! upm reads the records as root with CAP_AUDIT_READ on the NETLINK_AUDIT read-log
//! multicast group, while the call runs; it never turns the kernel's audit on (that is
//! the host's setting: auditd, or `auditctl -e 1`). At the end, it waits (bounded) until
//! the kernel's audit queue is empty (`AUDIT_GET`'s backlog), so that the records of
//! the call's last denials have been delivered, then reads what is left.
//!
//! The netlink framing is written here (a 16-byte header and the 44-byte status
//! struct): the crates for it (netlink-packet-audit and its async transport) bring a
//! runtime upm has no use for, and none parses Landlock's records.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::denials::{Allow, Denial, Denials, Layer};

pub mod kept;

/// NETLINK_AUDIT message types and the read-log multicast group (linux/audit.h).
const AUDIT_GET: u16 = 1000;
const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;
const AUDIT_NLGRP_READLOG: u32 = 1;
/// `struct audit_status`: mask, enabled, failure, pid, rate_limit, backlog_limit, lost,
/// backlog, feature_bitmap, backlog_wait_time, backlog_wait_time_actual.
const STATUS_WORDS: usize = 11;
/// The Landlock ABI that logs denials after an exec.
pub const LOGGING_ABI: i32 = 7;
/// `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON` (linux/landlock.h).
pub const LOG_NEW_EXEC_ON: u32 = 1 << 1;

/// Access records of domains not known yet (their 1424 record follows them).
const MAX_PENDING: usize = 256;
/// Domains known to be another process's.
const MAX_FOREIGN: usize = 1024;
/// The longest upm waits at the end of a call for the audit queue to drain.
const BARRIER: Duration = Duration::from_millis(50);

/// What the kernel's audit says about itself.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    /// 0 off, 1 on, 2 on and locked.
    pub enabled: u32,
    /// Records waiting in the kernel's queue.
    pub backlog: u32,
    /// pid of the audit daemon, 0 for none.
    pub auditd: u32,
}

/// Whether upm could read this call's Landlock denials, short of asking the kernel
/// whether its audit is on (`status`, which costs a kernel thread per question and so
/// is asked off the call's path). `Err` says why not.
pub fn can_read(euid: u32, landlock_abi: i32) -> Result<(), String> {
    if landlock_abi < LOGGING_ABI {
        return Err(format!(
            "Landlock ABI {landlock_abi} does not log denials after the plugin's exec (ABI 7, Linux 6.15)"
        ));
    }
    if euid != 0 {
        return Err(
            "upm is not root: reading the kernel's audit needs CAP_AUDIT_READ in the initial \
             namespaces"
                .into(),
        );
    }
    Ok(())
}

/// The reason given when the kernel's audit is off.
pub const AUDIT_OFF: &str = "the kernel's audit is off: Landlock logs its denials there \
    only when it is on (auditd, or `auditctl -e 1`), and upm never turns it on itself";

/// `AUDIT_GET`: the audit's status, or why it cannot be had. The kernel answers from a
/// thread it starts for the purpose (about a millisecond on a busy machine): a call
/// asks it without waiting ([`Reader::open`]) and reads the answer when it comes.
pub fn status() -> Result<Status, String> {
    let sock = socket().map_err(|e| format!("cannot open a NETLINK_AUDIT socket: {e}"))?;
    let fd = sock.as_raw_fd();
    ask_status(fd).map_err(|e| format!("AUDIT_GET: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = vec![0u8; 8192];
    loop {
        if !wait_readable(fd, deadline.saturating_duration_since(Instant::now())) {
            return Err("AUDIT_GET: no answer from the kernel within 1 s".into());
        }
        let n = recv(fd, &mut buf).map_err(|e| format!("AUDIT_GET: {e}"))?;
        for (ty, payload) in messages(&buf[..n]) {
            if let Some(answer) = status_answer(ty, payload) {
                return answer;
            }
        }
    }
}

/// How long a question to the audit about itself answers for the calls that start
/// after it was asked.
const FRESH: Duration = Duration::from_millis(250);

/// The latest question, shared by the calls that start within [`FRESH`] of it.
static LATEST: Mutex<Option<Arc<Question>>> = Mutex::new(None);

/// Whether the kernel's audit is on, asked once for the calls that start within
/// [`FRESH`] of the question (issue 25). The kernel answers every `AUDIT_GET` from a
/// thread it starts for that answer: 0.1 ms on a quiet machine, several on a busy one,
/// which a short call asking for itself waited for at its end. The answer is the state
/// at one moment either way (the host may switch its audit at any time); a shared one
/// is at most [`FRESH`] older than the call's start. A one-shot upm asks as its session
/// loads, before its call is parsed.
pub struct Question {
    asked: Instant,
    answer: Mutex<Option<Result<bool, String>>>,
    ready: Condvar,
}

/// The question a call starting now uses: the latest, if it was asked within
/// [`FRESH`] (by this process, or by another root upm with the same `workdir_root`:
/// [`kept`]), or a new one, asked on a thread of its own (the asking waits for the
/// kernel's thread to start).
pub fn question() -> Arc<Question> {
    let mut latest = LATEST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(q) = latest.as_ref().filter(|q| q.asked.elapsed() < FRESH) {
        return q.clone();
    }
    if let Some((on, age)) = kept::recall() {
        let q = Arc::new(Question {
            asked: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            answer: Mutex::new(Some(Ok(on))),
            ready: Condvar::new(),
        });
        *latest = Some(q.clone());
        return q;
    }
    let q = Arc::new(Question {
        asked: Instant::now(),
        answer: Mutex::new(None),
        ready: Condvar::new(),
    });
    let asking = q.clone();
    let asked_at = kept::now();
    let spawned = std::thread::Builder::new()
        .name("upm-audit-get".into())
        .spawn(move || {
            let on = status().map(|s| s.enabled != 0);
            asking.answered(on.clone());
            if let Ok(on) = on {
                kept::keep(on, asked_at);
            }
        });
    if let Err(e) = spawned {
        q.answered(Err(format!(
            "cannot ask the kernel's audit whether it is on: {e}"
        )));
    }
    *latest = Some(q.clone());
    q
}

impl Question {
    fn answered(&self, answer: Result<bool, String>) {
        *self.answer.lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
        self.ready.notify_all();
    }

    /// The answer, `None` while it has not come.
    pub fn answer(&self) -> Option<Result<bool, String>> {
        self.answer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits at most `limit` for the answer.
    pub fn wait(&self, limit: Duration) -> Result<bool, String> {
        let guard = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .ready
            .wait_timeout_while(guard, limit, |a| a.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.clone().unwrap_or_else(|| {
            Err(format!(
                "the kernel's audit did not say within {} ms whether it is on",
                limit.as_millis()
            ))
        })
    }
}

/// Sends AUDIT_GET on `fd`; the answer comes to the same socket.
fn ask_status(fd: RawFd) -> std::io::Result<()> {
    let header = nlmsghdr(16, AUDIT_GET, libc::NLM_F_REQUEST as u16, 1);
    let mut kernel: libc::sockaddr_nl = zeroed_nl();
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: a 16-byte message and a valid sockaddr_nl on our stack.
    let sent = unsafe {
        libc::sendto(
            fd,
            header.as_ptr().cast(),
            header.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The answer to AUDIT_GET, when this message is it (or the kernel's refusal of it).
fn status_answer(ty: u16, payload: &[u8]) -> Option<Result<Status, String>> {
    let word = |i: usize| {
        payload
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    if ty == libc::NLMSG_ERROR as u16 {
        let code = word(0)? as i32;
        return (code != 0).then(|| {
            Err(format!(
                "AUDIT_GET: {}",
                std::io::Error::from_raw_os_error(-code)
            ))
        });
    }
    if ty != AUDIT_GET || payload.len() < 4 * STATUS_WORDS {
        return None;
    }
    Some(Ok(Status {
        enabled: word(1)?,
        auditd: word(3)?,
        backlog: word(7)?,
    }))
}

/// `upm doctor`'s verdict: whether this call's Landlock denials could be observed here.
pub fn observable(euid: u32, landlock_abi: i32) -> Result<String, String> {
    can_read(euid, landlock_abi)?;
    let s = status()?;
    if s.enabled == 0 {
        return Err(AUDIT_OFF.into());
    }
    // Binding to the read-log group is what needs CAP_AUDIT_READ.
    Reader::subscribe().map_err(|e| e.to_string())?;
    Ok(format!(
        "the kernel's audit is on{}; upm reads Landlock's records of each call",
        if s.auditd != 0 {
            format!(" (auditd is pid {})", s.auditd)
        } else {
            String::new()
        }
    ))
}

/// The per-call token the plugin's process takes as its name before it restricts
/// itself: `upm:` and 11 random hex digits (a task name holds 15 bytes).
pub fn new_token() -> [u8; 16] {
    let random = uuid::Uuid::new_v4();
    let hex = hex::encode(random.as_bytes());
    let mut name = [0u8; 16];
    name[..4].copy_from_slice(b"upm:");
    name[4..15].copy_from_slice(&hex.as_bytes()[..11]);
    name
}

/// The token as the 1424 record's `comm` shows it.
pub fn token_str(token: &[u8; 16]) -> String {
    String::from_utf8_lossy(&token[..15]).into_owned()
}

/// One call's reader of the audit's Landlock records.
pub struct Reader {
    sock: OwnedFd,
    token: String,
    /// The call's domains (the plugin's; one, unless it is made again).
    ours: Vec<u64>,
    foreign: VecDeque<u64>,
    pending: VecDeque<(u64, Denial)>,
    /// The socket overflowed (ENOBUFS): some records were lost.
    lost: bool,
    /// Allocated when the first record waits: a call with nothing to read (the audit
    /// off, no denial) zeroes no 64 KiB.
    buf: Vec<u8>,
}

impl Reader {
    /// Subscribes to the read-log group. Needs CAP_AUDIT_READ.
    fn subscribe() -> std::io::Result<OwnedFd> {
        let sock = socket()?;
        let mut addr = zeroed_nl();
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = 1 << (AUDIT_NLGRP_READLOG - 1);
        // SAFETY: a valid sockaddr_nl on our stack.
        let r = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // A plugin's burst of denials must fit while upm is busy elsewhere (root may
        // force a buffer past rmem_max; best effort).
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt with a valid int on our stack.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        Ok(sock)
    }

    /// Starts listening for the records of the domain made under `token`; before the
    /// plugin can start.
    pub fn open(token: &[u8; 16]) -> Result<Reader, String> {
        let sock = Reader::subscribe().map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) => format!(
                "upm may not read the kernel's audit (binding to its read-log group: {e}; \
                 CAP_AUDIT_READ is needed)"
            ),
            _ => format!("cannot read the kernel's audit: {e}"),
        })?;
        Ok(Reader {
            sock,
            token: token_str(token),
            ours: Vec::new(),
            foreign: VecDeque::new(),
            pending: VecDeque::new(),
            lost: false,
            buf: Vec::new(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Reads every record waiting on the socket, without blocking.
    pub fn read_available(&mut self, denials: &mut Denials) {
        if self.buf.is_empty() {
            if !wait_readable(self.fd(), Duration::ZERO) {
                return;
            }
            self.buf = vec![0u8; 64 * 1024];
        }
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let n = match recv(self.fd(), &mut buf) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.lost = true;
                    self.buf = buf;
                    continue;
                }
                Err(_) => {
                    self.buf = buf;
                    return;
                }
            };
            for (ty, payload) in messages(&buf[..n]) {
                self.record(ty, payload, denials);
            }
            self.buf = buf;
        }
    }

    fn record(&mut self, ty: u16, payload: &[u8], denials: &mut Denials) {
        if ty != AUDIT_LANDLOCK_ACCESS && ty != AUDIT_LANDLOCK_DOMAIN {
            return;
        }
        let text = String::from_utf8_lossy(payload);
        let fields = Fields::parse(&text);
        let Some(domain) = fields
            .get("domain")
            .and_then(|d| u64::from_str_radix(d, 16).ok())
        else {
            return;
        };
        if ty == AUDIT_LANDLOCK_DOMAIN {
            if fields.get("status") != Some("allocated") {
                return;
            }
            if fields.get("comm") == Some(self.token.as_str()) {
                self.ours.push(domain);
                let (mine, others): (Vec<_>, Vec<_>) =
                    self.pending.drain(..).partition(|(d, _)| *d == domain);
                self.pending = others.into();
                for (_, d) in mine {
                    denials.record(d);
                }
            } else {
                self.pending.retain(|(d, _)| *d != domain);
                if self.foreign.len() == MAX_FOREIGN {
                    self.foreign.pop_front();
                }
                self.foreign.push_back(domain);
            }
            return;
        }
        if self.foreign.contains(&domain) {
            return;
        }
        let Some(denial) = denial(&fields) else {
            return;
        };
        if self.ours.contains(&domain) {
            denials.record(denial);
        } else {
            if self.pending.len() == MAX_PENDING {
                self.pending.pop_front();
            }
            self.pending.push_back((domain, denial));
        }
    }

    /// After the plugin's whole tree has ended: waits (at most [`BARRIER`]) until the
    /// kernel's audit queue is empty, reads what is left, and says in `denials` whether
    /// the list may be incomplete.
    pub fn finish(mut self, denials: &mut Denials) {
        let deadline = Instant::now() + BARRIER;
        let mut off = false;
        let drained = loop {
            self.read_available(denials);
            match status() {
                Ok(s) if s.backlog == 0 => {
                    // Off now: the answer the call started with (shared for 250 ms) was
                    // out of date, or the audit went off meanwhile. Either way, no
                    // record means nothing.
                    off = s.enabled == 0;
                    // Dequeued records reach the socket right after they leave the
                    // queue; give the one in flight, if any, that moment.
                    std::thread::sleep(Duration::from_micros(200));
                    self.read_available(denials);
                    break true;
                }
                Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                _ => break false,
            }
        };
        if off {
            denials.not_observable(Layer::Landlock, AUDIT_OFF);
        } else if self.lost {
            denials.not_observable(
                Layer::Landlock,
                "some of the kernel's audit records were lost before upm could read them \
                 (its socket overflowed): Landlock's denials are listed in part",
            );
        } else if !drained {
            denials.not_observable(
                Layer::Landlock,
                format!(
                    "the kernel's audit queue did not drain within {} ms of the call's end: \
                     Landlock's last denials may be missing",
                    BARRIER.as_millis()
                ),
            );
        }
    }
}

/// A Landlock access record as a denial: `fs.read_file /srv/secret`,
/// `net.connect_tcp 10.0.0.1:443`, `scope.signal pid 12 (sh)`.
fn denial(f: &Fields<'_>) -> Option<Denial> {
    let blockers = f.get("blockers")?;
    let writes = |k: &str| {
        k.starts_with("fs.write")
            || k.starts_with("fs.make_")
            || k.starts_with("fs.remove_")
            || matches!(k, "fs.truncate" | "fs.refer" | "fs.ioctl_dev")
    };
    if blockers.starts_with("fs.") {
        let path = f.decoded("path").unwrap_or_else(|| "(no path)".into());
        let setting = if blockers.split(',').any(writes) {
            "write_paths"
        } else {
            "read_paths"
        };
        let what = format!("{blockers} {path}");
        return Some(
            Denial::new(Layer::Landlock, what, Allow::Setting(setting)).with_subject(path),
        );
    }
    if blockers.starts_with("net.") {
        let (addr, port) = match (f.get("daddr"), f.get("dest")) {
            (None, None) => (f.get("saddr"), f.get("src")),
            other => other,
        };
        let target = match (addr, port) {
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (None, Some(p)) => format!("port {p}"),
            (Some(a), None) => a.to_owned(),
            (None, None) => String::new(),
        };
        let what = format!("{blockers} {target}").trim_end().to_owned();
        let d = Denial::new(Layer::Landlock, what, Allow::Setting("network"));
        return Some(d.with_subject(target));
    }
    // scope.signal, scope.abstract_unix_socket, ptrace: another process or its socket.
    let mut what = blockers.to_owned();
    if let Some(pid) = f.get("opid") {
        what.push_str(&format!(" pid {pid}"));
    }
    if let Some(comm) = f.decoded("ocomm") {
        what.push_str(&format!(" ({comm})"));
    }
    if let Some(path) = f.decoded("path") {
        what.push_str(&format!(" {path}"));
    }
    let never = "the plugin is kept away from processes and sockets outside its sandbox";
    Some(Denial::new(Layer::Landlock, what, Allow::Never(never)))
}

/// The `key=value` fields of an audit record, after its `audit(…): ` stamp. A value is
/// either quoted (no quote or control character inside) or a bare token; audit writes
/// an untrusted string it cannot quote as bare hex.
struct Fields<'a> {
    pairs: Vec<(&'a str, &'a str, bool)>,
}

impl<'a> Fields<'a> {
    fn parse(text: &'a str) -> Fields<'a> {
        let body = text.find("): ").map_or(text, |i| &text[i + 3..]);
        let mut pairs = Vec::new();
        let mut rest = body.trim_start();
        while let Some(eq) = rest.find('=') {
            let key = rest[..eq].trim();
            let after = &rest[eq + 1..];
            let (value, quoted, next) = if let Some(q) = after.strip_prefix('"') {
                match q.find('"') {
                    Some(end) => (&q[..end], true, &q[end + 1..]),
                    None => (q, true, ""),
                }
            } else {
                let end = after.find(' ').unwrap_or(after.len());
                (&after[..end], false, &after[end..])
            };
            pairs.push((key, value, quoted));
            rest = next.trim_start();
        }
        Fields { pairs }
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _, _)| *k == key).map(|p| p.1)
    }

    /// A string field: quoted as it is, or decoded from audit's bare hex.
    fn decoded(&self, key: &str) -> Option<String> {
        let (_, value, quoted) = self.pairs.iter().find(|(k, _, _)| *k == key)?;
        if *quoted || value.len() % 2 != 0 {
            return Some((*value).to_owned());
        }
        match hex::decode(value) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(_) => Some((*value).to_owned()),
        }
    }
}

fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a new descriptor we then own, or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_AUDIT,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn zeroed_nl() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

fn nlmsghdr(len: u32, ty: u16, flags: u16, seq: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&len.to_ne_bytes());
    h[4..6].copy_from_slice(&ty.to_ne_bytes());
    h[6..8].copy_from_slice(&flags.to_ne_bytes());
    h[8..12].copy_from_slice(&seq.to_ne_bytes());
    h
}

/// The netlink messages in one datagram: (type, payload).
fn messages(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let body = &buf[16..];
        let payload_len = len.saturating_sub(16).min(body.len());
        let payload = &body[..payload_len];
        // Text records may end in NULs.
        let end = payload.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let payload = if ty >= 1100 { &payload[..end] } else { payload };
        out.push((ty, payload));
        let step = (16 + payload_len + 3) & !3;
        if step >= buf.len() {
            break;
        }
        buf = &buf[step..];
    }
    out
}

fn recv(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: recv into a valid, writable buffer of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn wait_readable(fd: RawFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = limit.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd on our stack.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &str) -> Fields<'_> {
        Fields::parse(s)
    }

    #[test]
    fn access_records_become_denials() {
        let f = fields(
            r#"audit(1796591774.803:81): domain=1b1e81742 blockers=fs.read_file path="/etc/hostname" dev="vda" ino=611"#,
        );
        let d = denial(&f).unwrap();
        assert_eq!(d.what, "fs.read_file /etc/hostname");
        assert_eq!(d.allow, Allow::Setting("read_paths"));
        let f = fields(
            r#"audit(1.2:3): domain=1 blockers=fs.write_file path="/tmp/u23/x" dev="vda" ino=1"#,
        );
        assert_eq!(denial(&f).unwrap().allow, Allow::Setting("write_paths"));
        let f = fields(
            r#"audit(1.2:3): domain=1 blockers=fs.make_reg,fs.remove_file path="/a" dev="vda" ino=1"#,
        );
        assert_eq!(denial(&f).unwrap().allow, Allow::Setting("write_paths"));
        // A name audit would not quote is written as hex.
        let f = fields(
            r#"audit(1.2:88): domain=1b1e81742 blockers=fs.read_file path=2F746D702F7532332F776520697264226E616D65 dev="vda" ino=1"#,
        );
        assert_eq!(
            denial(&f).unwrap().what,
            "fs.read_file /tmp/u23/we ird\"name"
        );
        let f =
            fields(r#"audit(1.2:3): domain=1 blockers=net.connect_tcp daddr=127.0.0.1 dest=80"#);
        let d = denial(&f).unwrap();
        assert_eq!(d.what, "net.connect_tcp 127.0.0.1:80");
        assert_eq!(d.allow, Allow::Setting("network"));
        let f = fields(r#"audit(1.2:3): domain=1 blockers=scope.signal opid=1 ocomm="systemd""#);
        assert_eq!(denial(&f).unwrap().what, "scope.signal pid 1 (systemd)");
    }

    fn datagram(ty: u16, text: &str) -> Vec<u8> {
        let mut v = nlmsghdr((16 + text.len()) as u32, ty, 0, 0).to_vec();
        v.extend_from_slice(text.as_bytes());
        v
    }

    fn reader(token: &str) -> Reader {
        let sock = socket().unwrap();
        Reader {
            sock,
            token: token.into(),
            ours: Vec::new(),
            foreign: VecDeque::new(),
            pending: VecDeque::new(),
            lost: false,
            buf: Vec::new(),
        }
    }

    fn feed(r: &mut Reader, d: &mut Denials, ty: u16, text: &str) {
        let bytes = datagram(ty, text);
        for (ty, payload) in messages(&bytes) {
            r.record(ty, payload, d);
        }
    }

    #[test]
    fn only_the_calls_domain_is_kept_whichever_record_comes_first() {
        let mut r = reader("upm:0123456789a");
        let mut d = Denials::new();
        // Another process's domain, and ours, interleaved; access before domain records.
        feed(
            &mut r,
            &mut d,
            1423,
            r#"audit(1:1): domain=aa blockers=fs.read_file path="/x" dev="v" ino=1"#,
        );
        feed(
            &mut r,
            &mut d,
            1423,
            r#"audit(1:2): domain=bb blockers=fs.read_file path="/mine" dev="v" ino=1"#,
        );
        feed(
            &mut r,
            &mut d,
            1424,
            r#"audit(1:1): domain=aa status=allocated mode=enforcing pid=5 uid=0 exe="/x" comm="other""#,
        );
        feed(
            &mut r,
            &mut d,
            1424,
            r#"audit(1:2): domain=bb status=allocated mode=enforcing pid=6 uid=0 exe="/upm" comm="upm:0123456789a""#,
        );
        feed(
            &mut r,
            &mut d,
            1423,
            r#"audit(1:3): domain=aa blockers=fs.read_file path="/y" dev="v" ino=1"#,
        );
        feed(
            &mut r,
            &mut d,
            1423,
            r#"audit(1:4): domain=bb blockers=fs.read_file path="/mine" dev="v" ino=1"#,
        );
        feed(
            &mut r,
            &mut d,
            1300,
            r#"audit(1:4): arch=c000003e syscall=257 success=no"#,
        );
        feed(
            &mut r,
            &mut d,
            1424,
            r#"audit(1:9): domain=bb status=deallocated denials=2"#,
        );
        let list = d.list_json();
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list[0]["what"], "fs.read_file /mine");
        assert_eq!(list[0]["count"], 2);
        assert!(r.pending.is_empty());
    }

    #[test]
    fn pending_records_of_unknown_domains_are_bounded() {
        let mut r = reader("upm:0123456789a");
        let mut d = Denials::new();
        for i in 0..(MAX_PENDING + 50) {
            let text = format!(
                r#"audit(1:{i}): domain={:x} blockers=fs.read_file path="/p" dev="v" ino=1"#,
                i + 1
            );
            feed(&mut r, &mut d, 1423, &text);
        }
        assert_eq!(r.pending.len(), MAX_PENDING);
        assert!(d.is_empty());
    }

    #[test]
    fn tokens_are_task_names() {
        let t = new_token();
        let s = token_str(&t);
        assert_eq!(s.len(), 15);
        assert!(s.starts_with("upm:"));
        assert_eq!(t[15], 0);
        assert_ne!(token_str(&new_token()), s);
    }
}
