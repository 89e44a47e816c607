//! The proxy of one call: accepts the plugin's connections on the listening socket its
//! init handed over, decides each one, relays what is allowed within the call's limits,
//! and sends one [`Record`] per connection to the audit as it ends.
//!
//! Two threads, both scoped to the call: the server (a current-thread tokio runtime,
//! built for this call and dropped with it, which drops every connection) and the
//! audit writer, which appends each record (a durable write must not stall the relays).
//! If the audit log cannot take a record, the proxy stops: no connection goes on
//! unaudited. [`Proxy::finish`] stops it when the call ends.

use super::address::Local;
use super::allowlist::Host;
use super::record::{Protocol, Record, Summary, Verdict};
use super::resolve::Resolver;
use super::Settings;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// At most this much is moved per splice (a pipe holds 64 KiB).
const CHUNK: usize = 64 << 10;
/// Connections past `max_connections` still get an answer, but at most this many at a
/// time; more are closed at once.
const PAST_LIMIT_AT_ONCE: usize = 32;
/// How long `finish` waits for connections to notice the end of the call.
const WIND_DOWN: Duration = Duration::from_secs(1);
/// How long the init may take to hand over the listening socket.
const HANDOVER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    CallEnded,
    AuditFailed,
}

/// Hands the listening socket over: called once, on the server's thread.
pub type Handover<'a> =
    Box<dyn FnOnce(Duration) -> Result<std::net::TcpListener, String> + Send + 'a>;

/// A running proxy; [`Proxy::finish`] ends it with the call.
pub struct Proxy<'scope> {
    stop: Arc<watch::Sender<Stop>>,
    server: Option<ScopedJoinHandle<'scope, Summary>>,
    writer: Option<ScopedJoinHandle<'scope, Option<String>>>,
    start_error: Option<String>,
}

impl<'scope> Proxy<'scope> {
    /// Starts the call's proxy on two threads of `scope`. `handover` yields the listening
    /// socket; `sink` audits one record (an error stops the proxy).
    pub fn start<'env, F>(
        scope: &'scope Scope<'scope, 'env>,
        handover: Handover<'scope>,
        settings: &Settings,
        sink: F,
    ) -> Proxy<'scope>
    where
        F: FnMut(&Record) -> Result<(), String> + Send + 'scope,
    {
        let (stop_tx, stop_rx) = watch::channel(Stop::Running);
        let stop = Arc::new(stop_tx);
        let (records_tx, records_rx) = mpsc::channel::<Record>();
        let mut proxy = Proxy {
            stop: stop.clone(),
            server: None,
            writer: None,
            start_error: None,
        };
        let writer = std::thread::Builder::new()
            .name("upm-egress-audit".into())
            .spawn_scoped(scope, move || write_records(records_rx, sink, &stop));
        match writer {
            Ok(w) => proxy.writer = Some(w),
            Err(e) => {
                // Without its writer nothing could be audited: no proxy (the listening
                // socket is closed with `handover`, so the plugin's connects are refused).
                proxy.start_error = Some(format!("cannot start the proxy's audit writer: {e}"));
                return proxy;
            }
        }
        let settings = settings.clone();
        let server = std::thread::Builder::new()
            .name("upm-egress".into())
            .spawn_scoped(scope, move || {
                serve_blocking(handover, settings, stop_rx, records_tx)
            });
        match server {
            Ok(s) => proxy.server = Some(s),
            Err(e) => proxy.start_error = Some(format!("cannot start the proxy: {e}")),
        }
        proxy
    }

    /// Ends every connection (the call is over), waits until each is audited, and sums up.
    pub fn finish(mut self) -> Summary {
        self.stop.send_if_modified(|s| {
            let running = *s == Stop::Running;
            if running {
                *s = Stop::CallEnded;
            }
            running
        });
        let mut summary = match self.server.take().map(ScopedJoinHandle::join) {
            Some(Ok(s)) => s,
            Some(Err(_)) => failed_summary("the proxy failed (a bug in upm)"),
            None => failed_summary(self.start_error.as_deref().unwrap_or("no proxy")),
        };
        // The server's end of the record channel is gone: the writer drains and ends.
        if let Some(Ok(Some(e))) = self.writer.take().map(ScopedJoinHandle::join) {
            summary.error.get_or_insert(format!(
                "the audit log could not record a connection ({e}): the proxy stopped and \
                 ended every connection"
            ));
        }
        summary
    }
}

fn failed_summary(why: &str) -> Summary {
    let mut s = Summary::new(super::proxy_address());
    s.error = Some(why.to_owned());
    s
}

/// Audits records as they come; the first failure stops the proxy.
fn write_records<F>(
    records: mpsc::Receiver<Record>,
    mut sink: F,
    stop: &watch::Sender<Stop>,
) -> Option<String>
where
    F: FnMut(&Record) -> Result<(), String>,
{
    let mut failed = None;
    for r in records {
        if let Err(e) = sink(&r) {
            if failed.is_none() {
                stop.send_replace(Stop::AuditFailed);
                failed = Some(e);
            }
        }
    }
    failed
}

fn serve_blocking(
    handover: Handover<'_>,
    settings: Settings,
    stop: watch::Receiver<Stop>,
    records: mpsc::Sender<Record>,
) -> Summary {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return failed_summary(&format!("cannot start the proxy's runtime: {e}")),
    };
    // Taken (blocking) before anything else: until then the plugin's connections wait in
    // the listening socket's backlog.
    let listener = match handover(HANDOVER) {
        Ok(l) => l,
        Err(e) => return failed_summary(&e),
    };
    runtime.block_on(serve(listener, settings, stop, records))
}

/// What every connection of the call shares.
pub(super) struct Ctx {
    pub settings: Settings,
    pub idle: Duration,
    /// Built at the first name to resolve: a call that resolves none never reads the
    /// resolver's files.
    resolver: std::sync::OnceLock<Resolver>,
    /// This host's own addresses: read when the proxy starts, and added to at each
    /// decision on a name ([`Ctx::local`]); `Err` if they could not be read at the start.
    local: Mutex<Result<Local, String>>,
    bytes_left: AtomicU64,
    tally: Mutex<Summary>,
    records: Mutex<mpsc::Sender<Record>>,
    stop: watch::Receiver<Stop>,
}

impl Ctx {
    fn tally(&self) -> std::sync::MutexGuard<'_, Summary> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This host's own addresses as a name's answer is checked: those read when the proxy
    /// started and those it has now (an address added during the call counts as soon as
    /// it is there, one removed still counts). `Err` (the name is refused) if they cannot
    /// be read now, or could not be when the proxy started.
    fn local(&self) -> Result<Local, String> {
        let now = Local::read();
        let mut seen = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let seen = seen.as_mut().map_err(|e| e.clone())?;
        seen.extend(now?);
        Ok(seen.clone())
    }

    /// Takes `n` bytes from the call's budget, or reports the limit reached.
    fn take(&self, n: usize) -> bool {
        let n = n as u64;
        let took = self
            .bytes_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok();
        if !took {
            self.bytes_left.store(0, Ordering::Relaxed);
            self.tally().limit_reached("max_bytes");
        }
        took
    }
}

async fn serve(
    listener: std::net::TcpListener,
    settings: Settings,
    mut stop: watch::Receiver<Stop>,
    records: mpsc::Sender<Record>,
) -> Summary {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => return failed_summary(&format!("cannot use the listening socket: {e}")),
    };
    let ctx = Arc::new(Ctx {
        idle: Duration::from_millis(settings.idle_timeout_ms),
        bytes_left: AtomicU64::new(settings.max_bytes),
        settings,
        resolver: std::sync::OnceLock::new(),
        local: Mutex::new(Local::read()),
        tally: Mutex::new(Summary::new(super::proxy_address())),
        records: Mutex::new(records),
        stop: stop.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let past_limit = Arc::new(tokio::sync::Semaphore::new(PAST_LIMIT_AT_ONCE));
    let mut n: u32 = 0;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s != Stop::Running) => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => {
                    n = n.saturating_add(1);
                    ctx.tally().connections = n;
                    if n <= ctx.settings.max_connections {
                        tasks.spawn(handle(ctx.clone(), sock, n, None));
                    } else {
                        ctx.tally().limit_reached("max_connections");
                        match past_limit.clone().try_acquire_owned() {
                            Ok(permit) => {
                                tasks.spawn(handle(ctx.clone(), sock, n, Some(permit)));
                            }
                            Err(_) => {
                                ctx.tally().refused_past_limit += 1;
                                drop(sock);
                            }
                        }
                    }
                }
                // Out of descriptors, say: let connections end, then go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // The call is over (or the audit failed): no new connection, and every open one ends
    // now. Each notices the stop itself and is audited; one that does not within
    // WIND_DOWN is dropped, and its record is still sent by its guard. Connections still
    // waiting in the backlog were made during the call: each is audited as refused.
    drain_backlog(listener, &ctx, n);
    let _ = tokio::time::timeout(WIND_DOWN, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.shutdown().await;
    let summary = ctx.tally().clone();
    summary
}

/// Takes what is left in the listening socket's backlog and closes it: each such
/// connection is refused and audited (counted, past `max_connections`).
fn drain_backlog(listener: tokio::net::TcpListener, ctx: &Arc<Ctx>, mut n: u32) {
    let Ok(listener) = listener.into_std() else {
        return;
    };
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while let Ok((sock, _)) = listener.accept() {
        drop(sock);
        n = n.saturating_add(1);
        ctx.tally().connections = n;
        if n > ctx.settings.max_connections {
            ctx.tally().refused_past_limit += 1;
            continue;
        }
        let mut conn = Conn::new(ctx.clone(), n, None);
        conn.record.reason = "the call ended before the proxy took the connection".into();
    }
}

/// One connection, from accept to its audit record. Its record is sent when it is
/// dropped, however the connection ended (the call's end included).
pub(super) struct Conn {
    pub ctx: Arc<Ctx>,
    pub record: Record,
    started: Instant,
    up: AtomicU64,
    down: AtomicU64,
    /// Milliseconds since `started` at the last byte relayed either way.
    last: AtomicU64,
    /// `Some`: past `max_connections`, refused and counted, not audited on its own.
    past_limit: Option<tokio::sync::OwnedSemaphorePermit>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Dir {
    Up,
    Down,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut r = std::mem::replace(&mut self.record, Record::new(0));
        r.bytes_up = self.up.load(Ordering::Relaxed);
        r.bytes_down = self.down.load(Ordering::Relaxed);
        r.duration_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let mut tally = self.ctx.tally();
        if self.past_limit.is_some() {
            tally.refused_past_limit += 1;
            return;
        }
        tally.add(&r);
        drop(tally);
        let _ = self
            .ctx
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(r);
    }
}

impl Conn {
    fn new(ctx: Arc<Ctx>, n: u32, past_limit: Option<tokio::sync::OwnedSemaphorePermit>) -> Conn {
        Conn {
            ctx,
            record: Record::new(n),
            started: Instant::now(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            last: AtomicU64::new(0),
            past_limit,
        }
    }

    /// Marks the connection refused or failed (as `why` says), with its reason.
    pub fn refuse(&mut self, why: &Refusal) {
        self.record.verdict = why.verdict();
        self.record.reason = why.reason.clone();
    }

    /// Counts `n` bytes about to be relayed, against the call's budget.
    pub fn forward(&self, n: usize, dir: Dir) -> Result<(), String> {
        if !self.ctx.take(n) {
            return Err(format!(
                "byte limit ({} bytes for the call) reached",
                self.ctx.settings.max_bytes
            ));
        }
        match dir {
            Dir::Up => self.up.fetch_add(n as u64, Ordering::Relaxed),
            Dir::Down => self.down.fetch_add(n as u64, Ordering::Relaxed),
        };
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Runs `fut` until it completes or the connection has been idle (nothing relayed
    /// either way) for the idle timeout.
    pub async fn within_idle<T, F>(&self, fut: F) -> Result<T, String>
    where
        F: std::future::Future<Output = T>,
    {
        tokio::pin!(fut);
        loop {
            let left = self.ctx.idle.saturating_sub(self.idle_for());
            tokio::select! {
                r = &mut fut => return Ok(r),
                _ = tokio::time::sleep(left) => {
                    if self.idle_for() >= self.ctx.idle {
                        return Err(format!("idle timeout ({} ms)", self.ctx.idle.as_millis()));
                    }
                }
            }
        }
    }

    /// The refusal a connection past the limit gets, whatever it asks for.
    pub fn past_limit(&self) -> Option<Refusal> {
        self.past_limit.as_ref().map(|_| {
            Refusal::refused(
                Why::Limit,
                format!(
                    "the call's connection limit ({}) is reached",
                    self.ctx.settings.max_connections
                ),
            )
        })
    }
}

/// Why a connection was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    /// The allowlist or the address policy.
    Policy,
    /// A limit of the call.
    Limit,
    /// Not a request the proxy takes.
    Malformed,
    /// Allowed, but: the name does not resolve.
    Resolve,
    /// Allowed, but: the host refused the connection.
    ConnectionRefused,
    /// Allowed, but: the host is unreachable (or another connect error).
    Unreachable,
    /// Allowed, but: resolving or connecting took longer than the idle timeout.
    Timeout,
}

#[derive(Debug, Clone)]
pub(super) struct Refusal {
    pub why: Why,
    pub reason: String,
}

impl Refusal {
    pub fn refused(why: Why, reason: String) -> Refusal {
        Refusal { why, reason }
    }

    pub fn verdict(&self) -> Verdict {
        match self.why {
            Why::Policy | Why::Limit | Why::Malformed => Verdict::Refused,
            Why::Resolve | Why::ConnectionRefused | Why::Unreachable | Why::Timeout => {
                Verdict::Failed
            }
        }
    }
}

async fn handle(
    ctx: Arc<Ctx>,
    sock: TcpStream,
    n: u32,
    past_limit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let mut stop = ctx.stop.clone();
    let mut conn = Conn::new(ctx, n, past_limit);
    let mut client = Client {
        stream: sock,
        buf: Vec::new(),
    };
    let stopped = tokio::select! {
        biased;
        _ = serve_one(&mut conn, &mut client) => false,
        _ = stop.wait_for(|s| *s != Stop::Running) => true,
    };
    if stopped {
        let why = match *stop.borrow() {
            Stop::AuditFailed => "the audit log failed: the proxy stopped",
            _ => "the call ended",
        };
        if conn.record.verdict == Verdict::Allowed {
            conn.record.end = Some(why.into());
        } else if conn.record.target.is_none() {
            conn.record.reason = format!("no request before {why}");
        }
    }
}

async fn serve_one(conn: &mut Conn, client: &mut Client) {
    match conn.within_idle(client.fill()).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) => return,
        Ok(Err(e)) => {
            conn.record.reason = format!("the client sent no request: {e}");
            return;
        }
        Err(e) => {
            conn.record.reason = format!("the client sent no request: {e}");
            return;
        }
    }
    match client.buf[0] {
        5 => super::socks::serve(conn, client).await,
        4 => {
            conn.record.protocol = Protocol::Socks5;
            conn.refuse(&Refusal::refused(
                Why::Malformed,
                "SOCKS4 is not supported: use SOCKS5 (socks5h://)".into(),
            ));
            // SOCKS4's "request rejected or failed".
            let _ = client.stream.write_all(&[0, 0x5b, 0, 0, 0, 0, 0, 0]).await;
        }
        _ => super::http::serve(conn, client).await,
    }
}

/// The plugin's side of a connection, with what has been read and not yet used.
pub(super) struct Client {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Client {
    /// Reads more into `buf`; 0 at end of stream.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads until `buf` holds at least `n` bytes.
    pub async fn need(&mut self, conn: &Conn, n: usize) -> Result<(), String> {
        while self.buf.len() < n {
            match conn.within_idle(self.fill()).await? {
                Ok(0) => return Err("the client closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Takes the first `n` bytes of `buf`.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n.min(self.buf.len()));
        std::mem::replace(&mut self.buf, rest)
    }
}

/// Decides `host:port` and, if allowed, connects to exactly an address that was checked.
/// Records the target, the entry and the address.
pub(super) async fn open(
    conn: &mut Conn,
    protocol: Protocol,
    host: &Host,
    port: u16,
) -> Result<TcpStream, Refusal> {
    conn.record.protocol = protocol;
    conn.record.target = Some(format!("{host}:{port}"));
    if let Some(r) = conn.past_limit() {
        return Err(r);
    }
    let ctx = conn.ctx.clone();
    if ctx.bytes_left.load(Ordering::Relaxed) == 0 {
        return Err(Refusal::refused(
            Why::Limit,
            format!(
                "the call's byte limit ({} bytes) is reached",
                ctx.settings.max_bytes
            ),
        ));
    }
    let entry = ctx
        .settings
        .allow
        .check(host, port)
        .map_err(|r| Refusal::refused(Why::Policy, r))?;
    conn.record.entry = Some(entry.text().to_owned());
    let addresses: Vec<IpAddr> = match host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => {
            let resolver = ctx.resolver.get_or_init(Resolver::system);
            let found = match conn.within_idle(resolver.lookup(name)).await {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => return Err(Refusal::refused(Why::Resolve, e)),
                Err(_) => {
                    return Err(Refusal::refused(
                        Why::Timeout,
                        format!("resolving {name} timed out"),
                    ))
                }
            };
            let local = ctx.local().map_err(|e| {
                Refusal::refused(
                    Why::Policy,
                    format!(
                        "{name}:{port} cannot be checked against this host's own addresses: {e}"
                    ),
                )
            })?;
            ctx.settings
                .allow
                .usable(name, port, &found, &local)
                .map_err(|r| Refusal::refused(Why::Policy, r))?
        }
    };
    let mut last = None;
    for ip in addresses {
        let to = SocketAddr::new(ip, port);
        match conn.within_idle(TcpStream::connect(to)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                conn.record.address = Some(to.to_string());
                conn.record.verdict = Verdict::Allowed;
                conn.record.reason = format!("allowed by {:?}", entry.text());
                return Ok(s);
            }
            Ok(Err(e)) => {
                let why = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    Why::ConnectionRefused
                } else {
                    Why::Unreachable
                };
                last = Some(Refusal::refused(
                    why,
                    format!("connecting to {to} failed: {e}"),
                ));
            }
            Err(_) => {
                last = Some(Refusal::refused(
                    Why::Timeout,
                    format!("connecting to {to} timed out"),
                ))
            }
        }
    }
    Err(last
        .unwrap_or_else(|| Refusal::refused(Why::Unreachable, "no address to connect to".into())))
}

/// Relays one direction until end of stream (then half-closes the other side), or
/// returns why it stopped early. The bytes go through a pipe with splice(2): they never
/// enter the proxy's memory (and a connection costs no relay buffer).
pub(super) async fn pump(
    conn: &Conn,
    src: &TcpStream,
    dst: &TcpStream,
    dir: Dir,
) -> Result<(), String> {
    use nix::fcntl::{splice, OFlag, SpliceFFlags};
    use tokio::io::Interest;
    let (pipe_r, pipe_w) =
        nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        let n = loop {
            conn.within_idle(src.readable())
                .await?
                .map_err(|e| e.to_string())?;
            let moved = src.try_io(Interest::READABLE, || {
                splice(src, None, &pipe_w, None, CHUNK, flags).map_err(std::io::Error::from)
            });
            match moved {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.to_string()),
            }
        };
        if n == 0 {
            let _ = nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(dst),
                nix::sys::socket::Shutdown::Write,
            );
            return Ok(());
        }
        conn.forward(n, dir)?;
        let mut left = n;
        while left > 0 {
            conn.within_idle(dst.writable())
                .await?
                .map_err(|e| e.to_string())?;
            let moved = dst.try_io(Interest::WRITABLE, || {
                splice(&pipe_r, None, dst, None, left, flags).map_err(std::io::Error::from)
            });
            match moved {
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// Runs both directions until both reach end of stream, or one stops early; says how
/// the connection ended.
pub(super) async fn both<A, B>(a: A, b: B) -> String
where
    A: std::future::Future<Output = Result<(), String>>,
    B: std::future::Future<Output = Result<(), String>>,
{
    tokio::pin!(a, b);
    let (mut a_done, mut b_done) = (false, false);
    while !(a_done && b_done) {
        tokio::select! {
            r = &mut a, if !a_done => match r {
                Ok(()) => a_done = true,
                Err(e) => return e,
            },
            r = &mut b, if !b_done => match r {
                Ok(()) => b_done = true,
                Err(e) => return e,
            },
        }
    }
    "closed".into()
}

/// A tunnel (CONNECT, SOCKS5): what the client sent early goes first, then both ways.
pub(super) async fn tunnel(conn: &mut Conn, client: &mut Client, mut upstream: TcpStream) {
    let early = client.take(client.buf.len());
    if !early.is_empty() {
        if let Err(e) = conn.forward(early.len(), Dir::Up) {
            conn.record.end = Some(e);
            return;
        }
        if let Err(e) = upstream.write_all(&early).await {
            conn.record.end = Some(e.to_string());
            return;
        }
    }
    let conn_ref: &Conn = conn;
    let end = both(
        pump(conn_ref, &client.stream, &upstream, Dir::Up),
        pump(conn_ref, &upstream, &client.stream, Dir::Down),
    )
    .await;
    conn.record.end = Some(end);
}
