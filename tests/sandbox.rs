//! Hostile plugins against the native sandbox, as real processes.
//!
//! Every test runs twice: with upm as root (the plugin becomes uid 65534) and
//! with upm as an unprivileged user (uid 4242; upm then uses a user namespace
//! and the plugin keeps that uid). A hostile probe that ran without its
//! sandbox would run with the test's own privileges, so every test first
//! runs a benign control call through the same config and panics unless the
//! result reports every layer enforced ([`assert_fully_sandboxed`]).
//!
//! Probes report what the kernel answered (`{"errno": 13}`), so each test
//! asserts the specific denial next to a benign control that works.

mod common;

use common::{is_root, request, run_command, Run, TestDir};
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant};

const PROBE: &str = include_str!("fixtures/sandbox/probe.py");

/// Prints whatever it is asked, forever, on stdout or stderr.
const SPEW: &str = r#"#!/bin/sh
read -r line || true
case "$line" in
  *'"method":"control"'*) echo "{\"uid\": $(/usr/bin/id -u), \"euid\": $(/usr/bin/id -u), \"gid\": $(/usr/bin/id -g)}"; exit 0;;
  *'"method":"stderr"'*) exec /usr/bin/yes 'upm sandbox test: a line of output that goes on and on and on' >&2;;
  *'"method":"both"'*) /usr/bin/yes 'upm sandbox test: stderr goes on and on' >&2 &;;
esac
exec /usr/bin/yes 'upm sandbox test: a line of output that goes on and on and on'
"#;

/// A UPM-style class plugin: the Python runner maps MemoryError to the memory limit.
const PYCLASS: &str = r#"import os


class Hostile:
    def __init__(self, project_root=None, cache_dir=None, policy=None):
        pass

    def control(self):
        return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid()}

    def memory_bomb(self):
        hoard = []
        while True:
            hoard.append(bytearray(16 << 20))
"#;

/// Writes a file into the call's `write_paths` directory, to prove it ran.
const SENTINEL: &str = r#"#!/bin/sh
echo ran > "$UPM_SENTINEL_DIR/ran"
echo '{"ran": true}'
"#;

const PROBE_METHODS: [&str; 22] = [
    "control",
    "read",
    "listdir",
    "write",
    "sockets",
    "tcp",
    "unix",
    "signal",
    "syscalls",
    "privileges",
    "fork_bomb",
    "file_limits",
    "sleep",
    "spin",
    "daemon",
    "env",
    "fd",
    "reach_init",
    "signal_state",
    "host_grants",
    "litter",
    "meta",
];

/// The uid/gid upm runs as in the unprivileged variant (no passwd entry needed).
const USER: (u32, u32) = (4242, 4242);
const NOBODY: u32 = 65534;

const EPERM: i64 = 1;
const EAGAIN: i64 = 11;
const EBADF: i64 = 9;
const EACCES: i64 = 13;
const ESRCH: i64 = 3;
const ENOSYS: i64 = 38;
const EAFNOSUPPORT: i64 = 97;
const EROFS: i64 = 30;

/// Fork bombs run alone (other calls take this lock shared), so that their timing is
/// not disturbed. (RLIMIT_NPROC itself is per call: each has its own user namespace.)
static NPROC: RwLock<()> = RwLock::new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// upm runs as root: plugins become 65534.
    Root,
    /// upm runs as uid 4242: plugins stay 4242 inside a user namespace.
    User,
}

impl Who {
    /// The uid and gid the plugin must have.
    fn plugin_ids(self) -> (u32, u32) {
        match self {
            Who::Root => (NOBODY, NOBODY),
            Who::User => USER,
        }
    }
}

/// One scratch config dir with every hostile plugin in a `plugins/` subdirectory.
struct Fx {
    dir: TestDir,
    config: PathBuf,
    who: Who,
    nonce: String,
}

fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}{n:03}{nanos:09}", std::process::id())
}

fn base_config() -> Value {
    json!({
        "require_schemas": false,
        "python": "/usr/bin/python3",
        "sandbox": {
            "limits": {
                "timeout_ms": 5000,
                "cpu_seconds": 2,
                "memory_bytes": 256u64 << 20,
                "max_processes": 32,
                "output_bytes": 1u64 << 20
            },
            "env": {
                "allow": ["LANG"],
                "set": {"PATH": "/usr/bin:/bin", "UPM_PROBE": "set-by-config"}
            }
        },
        "plugins": {
            "probe": {"command": ["plugins/probe.py"], "allowed_methods": PROBE_METHODS},
            "spew": {"command": ["plugins/spew.sh"], "allowed_methods": ["control", "stdout", "stderr", "both"]},
            "pyclass": {
                "module": "hostile_cls",
                "class": "Hostile",
                "python_path": ["plugins/pyclass"],
                "allowed_methods": ["control", "memory_bomb"]
            }
        }
    })
}

impl Fx {
    /// `None` when this variant cannot run here (the root variant, or switching to
    /// another uid, needs root): the caller returns, loudly.
    fn new(who: Who, tweak: impl FnOnce(&mut Value, &Path)) -> Option<Fx> {
        if !is_root() {
            eprintln!(
                "SKIPPED: the sandbox tests start upm as root and as uid 4242; run them as root"
            );
            return None;
        }
        let dir = TestDir::new();
        dir.write("plugins/probe.py", PROBE, true);
        dir.write("plugins/spew.sh", SPEW, true);
        dir.write("plugins/sentinel.sh", SENTINEL, true);
        dir.write("plugins/pyclass/hostile_cls.py", PYCLASS, false);
        let mut cfg = base_config();
        tweak(&mut cfg, &dir.path);
        let config = dir.config(&cfg);
        if who == Who::User {
            // upm writes its audit log beside the config.
            std::os::unix::fs::chown(&dir.path, Some(USER.0), Some(USER.1)).unwrap();
        }
        Some(Fx {
            dir,
            config,
            who,
            nonce: nonce(),
        })
    }

    fn plugin_path(&self, name: &str) -> PathBuf {
        self.dir.join("plugins").join(name)
    }

    /// `upm run --config ...` as the variant's user, with a clean, known environment.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8");
        if self.who == Who::User {
            cmd.uid(USER.0).gid(USER.1);
        }
        cmd
    }

    fn upm_args(&self, cmd: &mut Command) {
        cmd.args(["run", "--config", self.config.to_str().unwrap()]);
    }

    /// Starts `upm run` on `request` (stdio piped) and returns at once, while it runs.
    fn start(&self, request: &[u8]) -> std::process::Child {
        use std::io::Write;
        let mut cmd = self.command(&common::upm_bin());
        self.upm_args(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(request).unwrap();
        child
    }

    fn call(&self, plugin: &str, method: &str, args: Value) -> Run {
        self.call_with(plugin, method, args, |_| {})
    }

    fn call_with(
        &self,
        plugin: &str,
        method: &str,
        args: Value,
        customize: impl FnOnce(&mut Command),
    ) -> Run {
        let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
        self.call_unlocked(plugin, method, args, customize)
    }

    fn call_unlocked(
        &self,
        plugin: &str,
        method: &str,
        args: Value,
        customize: impl FnOnce(&mut Command),
    ) -> Run {
        let mut cmd = self.command(&common::upm_bin());
        self.upm_args(&mut cmd);
        customize(&mut cmd);
        let run = run_command(cmd, &request(plugin, method, args));
        if std::env::var_os("UPM_SANDBOX_TEST_VERBOSE").is_some() {
            eprintln!(
                "VERBOSE {:?} {plugin}.{method} {} {}",
                self.who, run.code, run.json
            );
        }
        run
    }
}

fn ctx(run: &Run) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        run.code,
        truncate(&run.stdout, 4000),
        truncate(&run.stderr, 2000)
    )
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The guard: a benign control call through the same config and plugin must
/// report every layer enforced and the expected unprivileged identity, or the
/// test stops here, before any hostile probe runs.
fn assert_fully_sandboxed(fx: &Fx, plugin: &str) {
    let run = fx.call(plugin, "control", json!({}));
    check_layers(fx, plugin, &run);
}

/// The guard's verdict on one control call's result.
fn check_layers(fx: &Fx, plugin: &str, run: &Run) {
    let fail = |why: String| -> ! {
        panic!(
            "GUARD: refusing to run hostile probes for plugin {plugin:?} ({:?}): {why}\n{}",
            fx.who,
            ctx(run)
        )
    };
    if run.code != 0 {
        fail("the control call failed".into());
    }
    let layers = &run.json["data"]["sandbox"]["layers"];
    let Some(map) = layers.as_object() else {
        fail("the result reports no sandbox layers".into())
    };
    for name in [
        "credentials",
        "landlock",
        "seccomp",
        "namespaces",
        "network",
        "limits",
    ] {
        if map.get(name).map(|l| &l["state"]) != Some(&json!("enforced")) {
            fail(format!(
                "layer {name} is not enforced: {}",
                map.get(name).unwrap_or(&Value::Null)
            ));
        }
    }
    for (name, layer) in map {
        if layer["state"] != "enforced" {
            fail(format!("layer {name} is {}", layer["state"]));
        }
    }
    let (uid, gid) = fx.who.plugin_ids();
    let cred = &map["credentials"]["detail"];
    if cred["uid"] != uid || cred["gid"] != gid {
        fail(format!(
            "credentials report uid/gid {}/{}, want {uid}/{gid}",
            cred["uid"], cred["gid"]
        ));
    }
    // The plugin's own file is named by its path, not by upm's descriptor for it.
    let read = &map["landlock"]["detail"]["read"];
    let probe = fx.plugin_path(&format!("{plugin}.py"));
    if plugin == "probe" && !read.as_array().is_some_and(|a| a.contains(&json!(probe))) {
        fail(format!(
            "landlock's read list lacks {}: {read}",
            probe.display()
        ));
    }
    if read.to_string().contains("/proc/self/fd") {
        fail(format!("landlock's read list names a descriptor: {read}"));
    }
    let created = &map["namespaces"]["detail"]["created"];
    for ns in ["pid", "net", "ipc"] {
        if !created.as_array().is_some_and(|a| a.contains(&json!(ns))) {
            fail(format!("namespace {ns} was not created: {created}"));
        }
    }
    // Check rather than trust: the plugin itself must see the unprivileged identity.
    let r = run.result();
    if r["uid"] != uid || r["euid"] != uid || r["gid"] != gid {
        fail(format!("the plugin runs as {r}, want uid/gid {uid}/{gid}"));
    }
}

/// Declares `name::as_root` and `name::as_user` for a `fn name(who: Who)`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn as_root() {
                super::$name(super::Who::Root)
            }
            #[test]
            fn as_user() {
                super::$name(super::Who::User)
            }
        }
    )*};
}

both!(
    a_locked_litter_is_removed,
    host_files_cannot_be_changed_by_path,
    reads_outside_the_allowed_paths_are_denied,
    writes_outside_the_workdir_are_denied,
    no_network_sockets,
    tcp_to_a_host_listener_never_connects,
    unix_sockets_of_the_host_are_unreachable,
    signals_cannot_reach_the_caller,
    dangerous_syscalls_are_refused,
    no_privileges_and_setuid_does_not_work,
    fork_bomb_is_contained,
    memory_bomb_is_limit_exceeded,
    cpu_spin_is_limit_exceeded,
    file_size_open_files_and_core_limits_hold,
    sleeping_past_the_timeout_is_killed,
    daemonized_grandchild_does_not_outlive_the_call,
    killing_upm_kills_the_plugin_tree,
    stdout_flood_is_capped,
    stderr_flood_is_capped,
    both_streams_flooding_keep_upm_within_the_cap_plus_10_mb,
    stopped_plugin_reports_its_own_usage,
    process_limit_is_per_call,
    user_namespace_has_an_owner_of_its_own,
    hard_limit_above_upms_own_is_raised_or_refused,
    inherited_descriptors_are_closed,
    caller_environment_is_not_passed,
    layer_that_cannot_be_applied_fails_closed,
    unreadable_read_path_fails_closed,
    unknown_syscall_in_profile_is_config_error,
    the_plugin_cannot_reach_into_its_init,
    signal_dispositions_and_mask_are_reset,
);

fn errno(v: &Value) -> i64 {
    v["errno"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an errno, got {v}"))
}

fn assert_ok(v: &Value, what: &str) {
    assert_eq!(v["ok"], true, "{what} should work inside the sandbox: {v}");
}

fn reads_outside_the_allowed_paths_are_denied(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    // A world-readable file under /root (0700): only the DAC of /root and Landlock stand in the way.
    let root_file = PathBuf::from(format!("/root/upm-sandbox-test-{}", fx.nonce));
    std::fs::write(&root_file, "secret under /root\n").unwrap();
    std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _cleanup = RemoveOnDrop(root_file.clone());

    let config = fx.config.to_str().unwrap().to_owned();
    let own = fx.plugin_path("probe.py").to_str().unwrap().to_owned();
    let sibling = fx.plugin_path("spew.sh").to_str().unwrap().to_owned();
    let audit = fx.dir.join("entrypoint.log").to_str().unwrap().to_owned();
    let root_s = root_file.to_str().unwrap().to_owned();
    let run = fx.call(
        "probe",
        "read",
        json!({"paths": [own, "/etc/ld.so.conf", "/usr/lib/os-release",
                          "/etc/shadow", "/etc/passwd", root_s, config, sibling, audit,
                          "/proc/1/environ"]}),
    );
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    // Controls: the plugin's own file and the base system are readable.
    assert_ok(&r[own.as_str()], "reading its own file");
    assert_ok(&r["/etc/ld.so.conf"], "reading /etc/ld.so.conf");
    assert_ok(&r["/usr/lib/os-release"], "reading under /usr");
    // /etc/passwd, the config, a sibling plugin and the audit log are world-readable:
    // EACCES there is Landlock's answer, not the file mode's.
    for p in [
        "/etc/shadow",
        "/etc/passwd",
        &root_s,
        &config,
        &sibling,
        &audit,
        "/proc/1/environ",
    ] {
        assert_eq!(errno(&r[p]), EACCES, "reading {p}: {r}");
    }

    let plugins_dir = fx.dir.join("plugins").to_str().unwrap().to_owned();
    let dir_s = fx.dir.path.to_str().unwrap().to_owned();
    let run = fx.call(
        "probe",
        "listdir",
        json!({"paths": [".", "/usr", "/root", dir_s, plugins_dir, "/tmp", "/"]}),
    );
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["."], "listing its working directory");
    assert_ok(&r["/usr"], "listing /usr");
    for p in ["/root", &dir_s, &plugins_dir, "/tmp", "/"] {
        assert_eq!(errno(&r[p]), EACCES, "listing {p}: {r}");
    }
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn writes_outside_the_workdir_are_denied(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let escape_tmp = format!("/tmp/upm-escape-{}", fx.nonce);
    let escape_cfgdir = fx.dir.join("escaped.txt").to_str().unwrap().to_owned();
    let config = fx.config.to_str().unwrap().to_owned();
    let own = fx.plugin_path("probe.py").to_str().unwrap().to_owned();
    let config_before = std::fs::read(&fx.config).unwrap();
    let probe_before = std::fs::read(&own).unwrap();
    let _c1 = RemoveOnDrop(PathBuf::from(&escape_tmp));
    let run = fx.call(
        "probe",
        "write",
        json!({"paths": ["inside.txt", "/dev/null", escape_tmp, escape_cfgdir, config, own,
                          "/etc/upm-escape", "/dev/shm/upm-escape"]}),
    );
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["inside.txt"], "writing in its working directory");
    assert_ok(&r["/dev/null"], "writing /dev/null");
    for p in [
        &escape_tmp,
        &escape_cfgdir,
        &config,
        &own,
        "/etc/upm-escape",
        "/dev/shm/upm-escape",
    ] {
        // Landlock refuses (EACCES), or the read-only mounts before it (EROFS).
        let e = errno(&r[AsRef::<str>::as_ref(p)]);
        assert!(e == EACCES || e == EROFS, "writing {p}: {r}");
    }
    assert!(!Path::new(&escape_tmp).exists());
    assert!(!Path::new(&escape_cfgdir).exists());
    assert!(!Path::new("/etc/upm-escape").exists());
    assert_eq!(std::fs::read(&fx.config).unwrap(), config_before);
    assert_eq!(std::fs::read(&own).unwrap(), probe_before);
    // The private working directory was the call's alone: gone once it returns.
    let control = fx.call("probe", "control", json!({}));
    let cwd = control.result()["cwd"].as_str().unwrap().to_owned();
    assert!(cwd.starts_with("/tmp/upm-"), "{cwd}");
    assert!(
        !Path::new(&cwd).exists(),
        "the workdir {cwd} outlived the call"
    );
}

fn no_network_sockets(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "sockets", json!({}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["unix_socketpair"], "unix_socketpair");
    // seccomp answers EAFNOSUPPORT to socket() of any family, AF_UNIX included.
    for denied in [
        "unix_stream",
        "unix_dgram",
        "inet_stream",
        "inet_dgram",
        "inet_raw_icmp",
        "inet6_stream",
        "inet6_dgram",
        "packet_raw",
        "netlink_route",
    ] {
        assert_eq!(errno(&r[denied]), EAFNOSUPPORT, "{denied}: {r}");
    }
}

fn tcp_to_a_host_listener_never_connects(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let udp_port = udp.local_addr().unwrap().port();
    // Control: the listener is reachable from outside the sandbox.
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    let (_conn, _) = listener.accept().expect("the control connection");

    let run = fx.call("probe", "tcp", json!({"port": port}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(
        errno(&run.result()["socket"]),
        EAFNOSUPPORT,
        "{}",
        ctx(&run)
    );
    assert_eq!(
        errno(&run.result()["udp_socket"]),
        EAFNOSUPPORT,
        "{}",
        ctx(&run)
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host listener got a connection from the sandbox: {other:?}"),
    }
    let run = fx.call("probe", "tcp", json!({"port": udp_port}));
    assert_eq!(
        errno(&run.result()["udp_socket"]),
        EAFNOSUPPORT,
        "{}",
        ctx(&run)
    );
    let mut buf = [0u8; 16];
    match udp.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host UDP socket got a datagram from the sandbox: {other:?}"),
    }
}

fn unix_sockets_of_the_host_are_unreachable(who: Who) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let name = format!("upm-sandbox-test-{}", fx.nonce);
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let abstract_listener = UnixListener::bind_addr(&addr).unwrap();
    // A pathname socket anyone may connect to, like a system bus or a logger: Landlock
    // does not check connect() on one, and the network namespace does not scope it.
    let path = fx.dir.join("daemon.sock");
    let path_listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&fx.dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for l in [&abstract_listener, &path_listener] {
        l.set_nonblocking(true).unwrap();
    }
    // Control: both are reachable from outside, even as the plugin's uid.
    drop(UnixStream::connect_addr(&addr).unwrap());
    let _ = abstract_listener.accept().expect("the control connection");
    let (uid, gid) = who.plugin_ids();
    let control = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
        ])
        .arg(&path)
        .uid(uid)
        .gid(gid)
        .status()
        .unwrap();
    assert!(control.success(), "the pathname control");
    let _ = path_listener
        .accept()
        .expect("the pathname control connection");

    // And a datagram socket, like /dev/log: a datagram pair could sendto() it.
    let dgram_path = fx.dir.join("daemon.dgram");
    let dgram = std::os::unix::net::UnixDatagram::bind(&dgram_path).unwrap();
    std::fs::set_permissions(&dgram_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    dgram.set_nonblocking(true).unwrap();

    let args = json!({"name": name, "path": path, "dgram_path": dgram_path});
    let run = fx.call("probe", "unix", args);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(errno(&r["connect_abstract"]), EAFNOSUPPORT, "{r}");
    assert_eq!(errno(&r["connect_path"]), EAFNOSUPPORT, "{r}");
    assert_eq!(
        errno(&r["dgram_pair_sendto"]),
        libc::ESOCKTNOSUPPORT as i64,
        "{r}"
    );
    assert_ok(&r["stream_pair"], "a connected stream pair");
    let mut buf = [0u8; 64];
    assert!(
        dgram.recv(&mut buf).is_err(),
        "the host's datagram socket got a message"
    );
    for l in [&abstract_listener, &path_listener] {
        match l.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a host socket got a connection: {other:?}"),
        }
    }
}

fn signals_cannot_reach_the_caller(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let me = std::process::id();
    let run = fx.call("probe", "signal", json!({"pid": me}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["self_0"], "signalling itself");
    assert_ok(&r["own_child_term"], "signalling its own child");
    assert_eq!(r["own_child_termsig"], libc::SIGTERM, "{r}");
    // The test's pid does not exist in the plugin's PID namespace.
    for k in ["test_0", "test_term", "test_pidfd"] {
        assert_eq!(errno(&r[k]), ESRCH, "{k}: {r}");
    }
    // (Had SIGTERM arrived, this test process would be dead.)
}

fn dangerous_syscalls_are_refused(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "syscalls", json!({}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["control_getpid"], "getpid through ctypes");
    for k in [
        "ptrace_traceme",
        "ptrace_attach_parent",
        "mount_tmpfs_on_cwd",
        "unshare_user",
        "unshare_mount",
        "unshare_net",
        "clone_newuser",
        "chroot",
        "inotify_init1",
    ] {
        assert_eq!(errno(&r[k]), EPERM, "{k}: {r}");
    }
    // setuid(0): in the call's user namespace (root's upm too) uid 0 is not even mapped.
    assert_eq!(errno(&r["setuid_0"]), libc::EINVAL as i64, "{r}");
    assert_eq!(errno(&r["io_uring_setup"]), ENOSYS, "{r}");
    // SysV IPC, whose memory escapes memory_bytes: refused even though the default
    // profile (like Docker's) allows it.
    for k in ["shmget", "msgget", "semget", "shmat"] {
        assert_eq!(errno(&r[k]), ENOSYS, "{k}: {r}");
    }
    let seccomp = &run.json["data"]["sandbox"]["layers"]["seccomp"]["detail"];
    assert_eq!(seccomp["sysv_ipc"], "denied", "{seccomp}");
}

fn no_privileges_and_setuid_does_not_work(who: Who) {
    let mut suid = PathBuf::new();
    let Some(fx) = Fx::new(who, |cfg, dir| {
        suid = dir.join("plugins/suid-id");
        cfg["sandbox"]["read_paths"] = json!([suid]);
    }) else {
        return;
    };
    // A setuid-root copy of id(1), made readable to the plugin by read_paths.
    std::fs::copy("/usr/bin/id", &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    // Control: outside the sandbox, as nobody, it really does make euid 0. (Retried on
    // ETXTBSY: a test thread forking meanwhile can hold the copy's write descriptor
    // until its child execs.)
    let mut tries = 0;
    let out = loop {
        match Command::new(&suid)
            .arg("-u")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
        {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => break r.unwrap(),
        }
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "the setuid control"
    );
    assert_fully_sandboxed(&fx, "probe");

    let run = fx.call("probe", "privileges", json!({"suid": suid}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    let (uid, gid) = who.plugin_ids();
    assert_eq!(r["euid"], uid, "{r}");
    assert_eq!(r["uid"], uid, "{r}");
    assert_eq!(r["egid"], gid, "{r}");
    assert_eq!(r["groups"], json!([]), "{r}");
    assert_eq!(r["capget"], 0, "{r}");
    for set in ["cap_eff", "cap_prm", "cap_inh"] {
        assert_eq!(r[set], 0, "{set}: {r}");
    }
    assert_eq!(r["cap_bnd"], json!([]), "bounding set: {r}");
    assert_eq!(r["cap_amb"], json!([]), "ambient set: {r}");
    assert_eq!(r["no_new_privs"], 1, "{r}");
    assert_eq!(r["seccomp_mode"], 2, "seccomp filter mode: {r}");
    // no_new_privs: the setuid bit is ignored.
    assert_eq!(r["suid_rc"], 0, "{r}");
    assert_eq!(r["suid_euid"], uid.to_string(), "{r}");
    assert_eq!(errno(&r["proc_status"]), EACCES, "{r}");
    // Nor can the plugin make a setuid or setgid file for anyone else to run.
    let m = &r["setid_modes"];
    for refused in ["chmod_4755", "fchmod_2755", "open_creat_4755", "mknod_4755"] {
        assert_eq!(errno(&m[refused]), EPERM, "{refused}: {m}");
    }
    assert_ok(&m["chmod_755"], "a plain chmod");
    assert_eq!(m["mode_after"], "0o755", "{m}");
    assert_eq!(errno(&m["memfd"]), libc::ENOSYS as i64, "{m}");
}

/// Processes whose command line contains `needle`.
fn processes_matching(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

/// Processes whose working directory path contains `needle`: plugins run in
/// `/tmp/upm-<request id>-*/home`, and a script's cmdline names the call's symlink to
/// its verified descriptor, not the script's own path.
fn processes_with_cwd(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) {
            if cwd.to_string_lossy().contains(needle) {
                found.push(format!("{}: cwd {}", name.to_string_lossy(), cwd.display()));
            }
        }
    }
    found
}

fn fork_bomb_is_contained(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["max_processes"] = json!(16);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let script = fx.plugin_path("probe.py").to_str().unwrap().to_owned();
    let run = {
        let _alone = NPROC.write().unwrap_or_else(|e| e.into_inner());
        fx.call_unlocked("probe", "fork_bomb", json!({}), |_| {})
    };
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(errno(r), EAGAIN, "{r}");
    let forked = r["forked"].as_i64().unwrap();
    assert!(
        (1..=16).contains(&forked),
        "forked {forked} under max_processes 16"
    );
    let wall = run.json["data"]["usage"]["wall_ms"].as_f64().unwrap();
    assert!(wall < 5000.0, "upm returned only after {wall} ms");
    // The init's exit killed every bomb process: none is left on the machine.
    let left = processes_matching(&script);
    assert!(
        left.is_empty(),
        "fork bomb processes outlived the call: {left:?}"
    );
    // And the machine still forks.
    assert!(Command::new("/bin/true").status().unwrap().success());
}

fn memory_bomb_is_limit_exceeded(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "pyclass");
    let run = fx.call("pyclass", "memory_bomb", json!({}));
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.code_word(), "limit_exceeded", "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "memory", "{}", ctx(&run));
    assert_eq!(
        run.json["data"]["details"]["type"],
        "MemoryError",
        "{}",
        ctx(&run)
    );
    // RLIMIT_AS of 256 MiB: the plugin never got far past it.
    let rss = run.json["data"]["usage"]["max_rss_kb"].as_i64().unwrap();
    assert!(rss < 300 * 1024, "max RSS {rss} kB under a 256 MiB limit");
}

fn cpu_spin_is_limit_exceeded(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["cpu_seconds"] = json!(1);
        cfg["sandbox"]["limits"]["timeout_ms"] = json!(20000);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "spin", json!({}));
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.code_word(), "limit_exceeded", "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "cpu", "{}", ctx(&run));
    assert_eq!(run.json["data"]["signal"], libc::SIGXCPU, "{}", ctx(&run));
    let cpu = run.json["data"]["usage"]["cpu_user_ms"].as_f64().unwrap()
        + run.json["data"]["usage"]["cpu_system_ms"].as_f64().unwrap();
    assert!(
        (900.0..2500.0).contains(&cpu),
        "cpu {cpu} ms under a 1 s limit"
    );
}

/// The limits the result reports besides time, CPU, memory and processes: each is the
/// configured (or fixed) value inside the plugin, and hitting it fails the operation.
fn file_size_open_files_and_core_limits_hold(who: Who) {
    const FSIZE: u64 = 1 << 20;
    const NOFILE: u64 = 64;
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["file_size_bytes"] = json!(FSIZE);
        cfg["sandbox"]["limits"]["open_files"] = json!(NOFILE);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "file_limits", json!({ "fsize": FSIZE }));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(r["fsize"], json!([FSIZE, FSIZE]), "{r}");
    assert_eq!(r["nofile"], json!([NOFILE, NOFILE]), "{r}");
    assert_eq!(r["core"], json!([0, 0]), "no core dumps: {r}");
    assert_ok(&r["small_write"], "a small write in the working directory");
    assert_eq!(errno(&r["write_past_fsize"]), libc::EFBIG as i64, "{r}");
    assert_eq!(r["big_size"], json!(FSIZE), "{r}");
    assert_eq!(errno(&r["open_many"]), libc::EMFILE as i64, "{r}");
    let opened = r["opened"].as_u64().unwrap();
    assert!(
        opened < NOFILE,
        "opened {opened} descriptors under open_files {NOFILE}"
    );
    let limits = &run.json["data"]["sandbox"]["layers"]["limits"]["detail"];
    assert_eq!(limits["file_size_bytes"], json!(FSIZE), "{limits}");
    assert_eq!(limits["open_files"], json!(NOFILE), "{limits}");
    // Queued signals: each call has a user namespace of its own, so without this limit
    // the host's (~96,000 here) would apply to every call.
    let pending = limits["pending_signals"].as_u64().unwrap();
    assert!((1..=1024).contains(&pending), "{limits}");
    assert_eq!(r["sigpending"], json!([pending, pending]), "{r}");
    assert_eq!(errno(&r["queue_many"]), libc::EAGAIN as i64, "{r}");
    let queued = r["queued"].as_u64().unwrap();
    assert!(queued <= pending, "queued {queued} signals under {pending}");
}

/// Message queues, real-time scheduling and the nice ceiling are fixed per call, never
/// the host's: a host (a service manager, a container) may grant upm more. This machine
/// withholds CAP_SYS_RESOURCE even from root, so the test cannot hand upm a generous
/// host; the unit test `limits::tests::host_grants_are_pinned` checks the plan. Here upm
/// gets a *smaller* message queue allowance than the fixed one: the call must report and
/// enforce what really holds, not the figure it asked for.
#[test]
fn fixed_limits_are_what_the_plugin_gets() {
    let Some(fx) = Fx::new(Who::Root, |_, _| {}) else {
        return;
    };
    const MSGQUEUE: u64 = 200_000;
    let small_host = |cmd: &mut Command| {
        // SAFETY: setrlimit is async-signal-safe; the values are on the closure's stack.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: MSGQUEUE,
                    rlim_max: MSGQUEUE,
                };
                if libc::setrlimit(libc::RLIMIT_MSGQUEUE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    let run = fx.call_with("probe", "host_grants", json!({}), small_host);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    let limits = &run.json["data"]["sandbox"]["layers"]["limits"]["detail"];
    assert_eq!(limits["message_queue_bytes"], json!(MSGQUEUE), "{limits}");
    assert_eq!(limits["realtime_priority"], json!(0), "{limits}");
    assert_eq!(limits["raise_priority"], json!(false), "{limits}");
    assert_eq!(r["msgqueue"], json!([MSGQUEUE, MSGQUEUE]), "{r}");
    assert_eq!(r["rtprio"], json!([0, 0]), "{r}");
    assert_eq!(r["nice"], json!([0, 0]), "{r}");
    assert_eq!(errno(&r["sched_fifo"]), libc::EPERM as i64, "{r}");
    assert_eq!(errno(&r["nice_down"]), libc::EACCES as i64, "{r}");
    // Landlock refuses every POSIX queue: its file lives on mqueue's internal mount, under
    // no allowed path (checked by hand: with "/" allowed, still EACCES). The rlimit backs
    // that up where Landlock is allowed to degrade.
    assert_eq!(errno(&r["mq_open_many"]), libc::EACCES as i64, "{r}");
    assert_eq!(r["mq_opened"], json!(0), "{r}");
}

/// The calls' directories go under `<fixture>/work`, where a test can find them.
fn with_own_workdir_root(cfg: &mut Value, dir: &Path) {
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    cfg["workdir_root"] = json!(work);
}

fn left_in(fx: &Fx) -> Vec<PathBuf> {
    std::fs::read_dir(fx.dir.join("work"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// However deep a plugin nests its directories, upm removes them, with no descriptor
/// per level (upm runs here with 256 descriptors: the depth needs more) and no stack
/// per level (std's recursive removal aborted upm past ~17,000 levels: the unit test
/// `files::tests::a_deep_tree_is_removed_with_a_small_stack` covers that depth), and
/// without following the plugin's links out of it.
#[test]
fn a_deep_litter_is_removed_without_following_links() {
    let Some(fx) = Fx::new(Who::Root, with_own_workdir_root) else {
        return;
    };
    let outside = fx.dir.write("outside/keep", "x", false);
    let few_descriptors = |cmd: &mut Command| {
        // SAFETY: getrlimit/setrlimit are async-signal-safe; no allocation.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = 256;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    let args = json!({"depth": 1000, "outside": outside.parent().unwrap()});
    let run = fx.call_with("probe", "litter", args, few_descriptors);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(run.result()["depth"], 1000);
    assert!(run.json["data"].get("warnings").is_none(), "{}", ctx(&run));
    assert_eq!(left_in(&fx), Vec::<PathBuf>::new(), "the directory stayed");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "x");
    let events: Vec<Value> = fx
        .dir
        .audit_lines()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(events, [json!("started"), json!("finished")]);
}

/// Landlock does not check metadata changes by path: without the call's read-only
/// mounts, a plugin could chmod any file its uid owns (an unprivileged upm's plugin:
/// every file of the user running upm, `~/.bashrc` made world-writable, say), reset the
/// times of any world-writable file, or tag files with xattrs. Only its home is writable.
fn host_files_cannot_be_changed_by_path(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    let (uid, gid) = who.plugin_ids();
    let mine = fx.dir.write("outside/mine", "x", false);
    std::os::unix::fs::chown(&mine, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o600)).unwrap();
    let open = fx.dir.write("outside/open", "x", false);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = |p: &Path| std::fs::metadata(p).unwrap();
    let (mine_before, open_before) = (before(&mine), before(&open));
    let args = json!({
        "make": ["f"],
        "paths": {"mine": mine, "open": open, "home": "f", "call_dir": ".."},
    });
    let run = fx.call("probe", "meta", args);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    for key in ["mine", "open", "call_dir"] {
        for op in ["chmod", "utime", "utime_now", "setxattr"] {
            assert_eq!(r[key][op], EROFS, "{key} {op}: {}", ctx(&run));
        }
    }
    for op in ["chmod", "utime", "utime_now", "setxattr"] {
        assert_eq!(r["home"][op], 0, "home {op}: {}", ctx(&run));
    }
    for (p, b) in [(&mine, mine_before), (&open, open_before)] {
        let after = std::fs::metadata(p).unwrap();
        assert_eq!(after.mode(), b.mode(), "{}", p.display());
        assert_eq!(after.mtime(), b.mtime(), "{}", p.display());
    }
    let ns = &run.json["data"]["sandbox"]["layers"]["namespaces"]["detail"];
    assert_eq!(ns["host_files"], "read-only mounts", "{ns}");
    assert!(
        ns["created"].as_array().unwrap().contains(&json!("mount")),
        "{ns}"
    );
}

/// The executable upm verified is opened before the call's mount namespace exists, on
/// the host's writable mount; the init opens it again through the read-only mounts, so a
/// script run through that descriptor (a symlink named like it to `/proc/self/fd/N`)
/// cannot change its own file's metadata through it either. (Only an unprivileged upm's plugin owns its own file: as root,
/// plugin files are root's, and the plugin's uid gets EPERM anyway.)
#[test]
fn the_plugins_own_file_cannot_be_changed_through_its_descriptor() {
    let Some(fx) = Fx::new(Who::User, |cfg, _| {
        cfg["plugins"]["own"] = json!({"command": ["plugins/own.py"], "allowed_methods": ["meta"]});
    }) else {
        return;
    };
    let own = fx.dir.write("plugins/own.py", PROBE, true);
    std::os::unix::fs::chown(&own, Some(USER.0), Some(USER.1)).unwrap();
    let before = std::fs::metadata(&own).unwrap();
    let run = fx.call("own", "meta", json!({"self": true}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = &run.result()["self"];
    assert!(r["argv0"].as_str().unwrap().ends_with("/own.py"), "{r}");
    assert!(
        r["link"].as_str().unwrap().starts_with("/proc/self/fd/"),
        "{r}"
    );
    assert_eq!(r["chmod_path"], EROFS, "{r}");
    assert_eq!(r["utime_path"], EROFS, "{r}");
    assert_eq!(r["fchmod_fd"], EBADF, "{r}");
    let after = std::fs::metadata(&own).unwrap();
    assert_eq!(after.mode(), before.mode());
    assert_eq!(after.mtime(), before.mtime());
}

/// An unprivileged upm's plugin runs as upm's own uid, so it can take upm's access to
/// its directories away (`chmod 000`, or no write or search permission); upm, their
/// owner, gives itself access back and removes the tree all the same. (Root is never
/// stopped by a mode: the same call as root checks nothing is lost on the way.)
fn a_locked_litter_is_removed(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, dir| {
        with_own_workdir_root(cfg, dir);
        if who == Who::User {
            std::os::unix::fs::chown(dir.join("work"), Some(USER.0), Some(USER.1)).unwrap();
        }
    }) else {
        return;
    };
    // home, d, d/d, d/d/d, d/d/d/d (which holds a file).
    let args = json!({"depth": 4, "modes": [0o500, 0o000, 0o300, 0o100, 0o400]});
    let run = fx.call("probe", "litter", args);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert!(run.json["data"].get("warnings").is_none(), "{}", ctx(&run));
    assert_eq!(left_in(&fx), Vec::<PathBuf>::new(), "the directory stayed");
}

/// A directory that cannot be removed is not passed over in silence: the caller is
/// told where it stays, and the audit log records it against the call.
#[test]
fn a_directory_left_behind_is_audited_and_told() {
    let Some(fx) = Fx::new(Who::Root, with_own_workdir_root) else {
        return;
    };
    let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
    let child = fx.start(&request(
        "probe",
        "litter",
        json!({"depth": 1, "sleep": 1.0}),
    ));
    // While the plugin sleeps, mount a filesystem in its tree: removal must not enter it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let home = loop {
        let bottom = left_in(&fx).first().map(|d| d.join("home/d"));
        if let Some(b) = bottom.filter(|b| b.join("bottom").exists()) {
            break b;
        }
        assert!(Instant::now() < deadline, "the plugin never made its tree");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mnt = home.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    nix::mount::umount(&mnt).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let left = left_in(&fx);
    for d in &left {
        std::fs::remove_dir_all(d).unwrap();
    }
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let json: Value = serde_json::from_str(stdout.trim()).unwrap();
    let warnings = json["data"]["warnings"].to_string();
    assert_eq!(left.len(), 1);
    assert!(
        warnings.contains("could not be removed") && warnings.contains(left[0].to_str().unwrap()),
        "{stdout}"
    );
    let entries = fx.dir.audit_lines();
    let last = entries.last().unwrap();
    assert_eq!(last["event"], "cleanup_failed", "{entries:#?}");
    assert_eq!(last["call_id"], json["data"]["call_id"]);
    assert_eq!(last["path"], left[0].to_str().unwrap());
    assert!(
        last["error"].as_str().unwrap().contains("mounted"),
        "{last}"
    );
}

fn sleeping_past_the_timeout_is_killed(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["timeout_ms"] = json!(1500);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let started = Instant::now();
    let run = fx.call("probe", "sleep", json!({}));
    let took = started.elapsed();
    assert_eq!(run.code, 12, "{}", ctx(&run));
    assert_eq!(run.code_word(), "timeout", "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "timeout", "{}", ctx(&run));
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(
        took < Duration::from_millis(5000),
        "upm returned after {took:?}"
    );
    let script = fx.plugin_path("probe.py").to_str().unwrap().to_owned();
    assert!(processes_matching(&script).is_empty());
}

fn daemonized_grandchild_does_not_outlive_the_call(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    // sleep(1) takes a fractional argument: a unique one marks the daemon in /proc.
    let marker = format!("977.{}", fx.nonce);
    let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
    // Control: while the call runs, the daemon is there to be seen.
    let (child, seen) = start_daemon_call(&fx, &marker, 1.5);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !seen.is_empty(),
        "the daemon never appeared; upm said {stdout}"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let json: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["data"]["result"]["daemon_started"], true, "{stdout}");
    // It held the stdout pipe open, yet upm returned right after the plugin exited.
    let wall = json["data"]["usage"]["wall_ms"].as_f64().unwrap();
    assert!(wall < 4000.0, "upm waited {wall} ms");
    let left = processes_matching(&marker);
    assert!(
        left.is_empty(),
        "the daemon outlived the call: {left:?} (seen during it: {seen:?})"
    );
}

/// Starts a `daemon` probe call and waits until its daemon shows up in /proc.
fn start_daemon_call(fx: &Fx, marker: &str, linger: f64) -> (std::process::Child, Vec<String>) {
    let child = fx.start(
        &serde_json::to_vec(&json!({
            "plugin": "probe", "method": "daemon", "request_id": format!("sandbox-test-{marker}"),
            "args": {"marker": marker, "linger": linger}
        }))
        .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut seen = Vec::new();
    while seen.is_empty() && Instant::now() < deadline {
        seen = processes_matching(marker);
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, seen)
}

fn killing_upm_kills_the_plugin_tree(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["timeout_ms"] = json!(30000);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let marker = format!("978.{}", fx.nonce);
    let workdirs = format!("upm-sandbox-test-{}", marker.replace('.', "_"));
    let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
    let (mut child, seen) = start_daemon_call(&fx, &marker, 30.0);
    assert!(!seen.is_empty(), "the daemon never appeared");
    assert!(
        !processes_with_cwd(&workdirs).is_empty(),
        "the plugin is not running"
    );
    // upm dies without any chance to clean up: the init's parent-death signal does it.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = processes_matching(&marker);
    left.extend(processes_with_cwd(&workdirs));
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = processes_matching(&marker);
        left.extend(processes_with_cwd(&workdirs));
    }
    assert!(left.is_empty(), "the plugin tree outlived upm: {left:?}");
    // The killed upm could not remove its working directory: do it for it.
    let prefix = format!("upm-sandbox-test-{}", marker.replace('.', "_"));
    for entry in std::fs::read_dir("/tmp").unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Calls `spew`'s `method` through `/usr/bin/time`; returns the run and the peak RSS (kB)
/// of upm and everything it reaped.
fn spew_with_peak_rss(fx: &Fx, method: &str) -> (Run, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "this test measures upm's memory with /usr/bin/time"
    );
    let rss_file = fx.dir.join(&format!("rss-{method}"));
    let mut cmd = fx.command(time);
    cmd.args(["-f", "%M", "-o", rss_file.to_str().unwrap()])
        .arg(common::upm_bin());
    fx.upm_args(&mut cmd);
    let run = {
        let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
        run_command(cmd, &request("spew", method, json!({})))
    };
    let peak_kb: u64 = std::fs::read_to_string(&rss_file)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    (run, peak_kb)
}

/// Runs a flood through `/usr/bin/time` to learn the peak RSS of upm and its tree.
fn flood(who: Who, method: &str) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "spew");
    let started = Instant::now();
    let (run, peak_kb) = spew_with_peak_rss(&fx, method);
    let took = started.elapsed();
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.code_word(), "limit_exceeded", "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "output", "{}", ctx(&run));
    let (flooded, quiet) = if method == "stdout" {
        ("stdout", "stderr")
    } else {
        ("stderr", "stdout")
    };
    let s = &run.json["data"][flooded];
    assert_eq!(s["truncated"], true, "{}", ctx(&run));
    assert_eq!(
        s["text"].as_str().unwrap().len(),
        1 << 20,
        "kept exactly the cap"
    );
    assert!(s["bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(run.json["data"][quiet]["truncated"], false);
    assert!(took < Duration::from_secs(4), "stopped only after {took:?}");
    if std::env::var_os("UPM_SANDBOX_TEST_VERBOSE").is_some() {
        eprintln!("{who:?} {method} flood: upm tree peak RSS {peak_kb} kB, took {took:?}");
    }
    // A 1 MiB cap, kept once in the capture and once in the JSON: far below 64 MiB.
    assert!(peak_kb < 64 * 1024, "upm peaked at {peak_kb} kB");
}

fn stdout_flood_is_capped(who: Who) {
    flood(who, "stdout")
}

fn stderr_flood_is_capped(who: Who) {
    flood(who, "stderr")
}

/// Issue 7's memory bound: a plugin flooding stdout and stderr at once under a 32 MiB cap;
/// upm (with everything it reaped: the init and the `yes` processes, a few MB each) peaks
/// at no more than the cap plus 10 MB, and keeps exactly the cap.
fn both_streams_flooding_keep_upm_within_the_cap_plus_10_mb(who: Who) {
    const CAP: u64 = 32 << 20;
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["output_bytes"] = json!(CAP);
    }) else {
        return;
    };
    let (run, peak_kb) = spew_with_peak_rss(&fx, "both");
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "output", "{}", ctx(&run));
    let kept: u64 = ["stdout", "stderr"]
        .iter()
        .map(|s| run.json["data"][s]["text"].as_str().unwrap().len() as u64)
        .sum();
    assert_eq!(kept, CAP, "kept exactly the cap, across both streams");
    assert!(
        run.json["data"]["stderr"]["bytes"].as_u64().unwrap() > 0,
        "stderr flooded too: {}",
        ctx(&run)
    );
    if std::env::var_os("UPM_SANDBOX_TEST_VERBOSE").is_some() {
        eprintln!("{who:?} both-streams flood: upm tree peak RSS {peak_kb} kB");
    }
    assert!(
        peak_kb * 1024 <= CAP + 10_000_000,
        "upm peaked at {peak_kb} kB under a {} MiB cap",
        CAP >> 20
    );
}

/// A plugin stopped past the output cap is killed before its tree, so its init reaps
/// it: the usage is the plugin's own. (Read off the init instead, which shares upm's
/// memory, it would show upm holding the 192 MiB it kept, and almost no CPU.)
fn stopped_plugin_reports_its_own_usage(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["output_bytes"] = json!(192u64 << 20);
        cfg["sandbox"]["limits"]["memory_bytes"] = json!(1u64 << 30);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "spew");
    let run = fx.call("spew", "stdout", json!({}));
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "output", "{}", ctx(&run));
    assert_eq!(run.json["data"]["signal"], libc::SIGKILL, "{}", ctx(&run));
    let usage = &run.json["data"]["usage"];
    let rss = usage["max_rss_kb"].as_i64().unwrap_or(-1);
    assert!(
        (1..64 * 1024).contains(&rss),
        "`yes` peaked at {rss} kB? usage {usage}"
    );
    let cpu = usage["cpu_user_ms"].as_f64().unwrap_or(0.0)
        + usage["cpu_system_ms"].as_f64().unwrap_or(0.0);
    assert!(
        cpu >= 10.0,
        "writing 192 MiB took {cpu} ms of CPU? usage {usage}"
    );
}

/// `max_processes` is each call's own: concurrent calls running as the same uid do not
/// share one budget (each call has a user namespace of its own, and the kernel counts
/// processes per user per user namespace). Twelve calls of three processes each under a
/// limit of four: as one budget for the uid, most of them would fail to fork.
fn process_limit_is_per_call(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, dir| {
        std::fs::write(
            dir.join("plugins/crowd.sh"),
            "#!/bin/sh\nread -r _\n/bin/sleep 0.4 & /bin/sleep 0.4 & wait\necho '{\"ok\": true}'\n",
        )
        .unwrap();
        std::fs::set_permissions(
            dir.join("plugins/crowd.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        cfg["plugins"]["crowd"] =
            json!({"command": ["plugins/crowd.sh"], "allowed_methods": ["gather"]});
        cfg["sandbox"]["limits"]["max_processes"] = json!(4);
    }) else {
        return;
    };
    // The same sandbox settings as the probe's (crowd.sh has no control method).
    assert_fully_sandboxed(&fx, "probe");
    let runs: Vec<Run> = {
        let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
        std::thread::scope(|s| {
            let calls: Vec<_> = (0..12)
                .map(|_| s.spawn(|| fx.call_unlocked("crowd", "gather", json!({}), |_| {})))
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        })
    };
    let failed: Vec<String> = runs.iter().filter(|r| r.code != 0).map(ctx).collect();
    assert!(
        failed.is_empty(),
        "{} of 12 calls failed: {failed:?}",
        failed.len()
    );
    let ns = &runs[0].json["data"]["sandbox"]["layers"]["namespaces"]["detail"];
    assert_eq!(
        ns["created"].as_array().map(|a| a.contains(&json!("user"))),
        Some(true),
        "{ns}"
    );
}

/// A root upm's call has a user namespace owned by a uid of its own, never by root nor
/// by the plugin's uid: the kernel charges a namespace's per-user quotas (inotify
/// instances, queued signals, nested namespaces) to its owner, and every host process
/// running as the owner holds all capabilities over the namespace (it could join the
/// call's network namespace and bring up `lo`, or trace the plugin). Unprivileged, the
/// owner is upm's own uid, which the plugin runs as anyway.
fn user_namespace_has_an_owner_of_its_own(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let mut owners = Vec::new();
    for round in 0..2 {
        let marker = format!("979{round}.{}", fx.nonce);
        let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
        let (child, seen) = start_daemon_call(&fx, &marker, 2.0);
        let owner = seen.first().map(|p| {
            let pid = p.split(':').next().unwrap_or_default();
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).unwrap();
            let mut uid: libc::uid_t = u32::MAX;
            const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
            // SAFETY: the ioctl writes one uid_t into `uid`.
            let rc = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            let host = std::fs::read_link("/proc/self/ns/user").unwrap();
            let own = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
            assert_ne!(own, host, "the plugin is in upm's own user namespace");
            // Seen from outside, where an id the namespace does not map is not disguised
            // as the overflow id: the plugin's tree really runs as its uid and gid.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = |key: &str| {
                let l = status.lines().find(|l| l.starts_with(key)).unwrap();
                l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
            };
            let (u, g) = who.plugin_ids();
            assert_eq!(line("Uid:"), format!("{u} {u} {u} {u}"), "{status}");
            assert_eq!(line("Gid:"), format!("{g} {g} {g} {g}"), "{status}");
            assert_eq!(line("Groups:"), "", "{status}");
            assert_eq!(line("CapEff:"), "0000000000000000", "{status}");
            uid
        });
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        let json: Value = serde_json::from_str(stdout.trim()).unwrap();
        let detail = &json["data"]["sandbox"]["layers"]["namespaces"]["detail"];
        let Some(owner) = owner else {
            panic!("the daemon never appeared: {stdout}");
        };
        match who {
            Who::Root => {
                assert!(owner >= 0x8000_0000, "owner {owner}");
                assert_eq!(detail["user_namespace_owner"], owner, "{detail}");
            }
            Who::User => {
                assert_eq!(owner, USER.0);
                assert!(detail.get("user_namespace_owner").is_none(), "{detail}");
            }
        }
        owners.push(owner);
    }
    if who == Who::Root {
        assert_ne!(owners[0], owners[1], "two calls, one owner");
    }
}

/// A policy limit above upm's own hard limit: the init cannot raise it from inside the
/// call's user namespace, so upm does, from outside, if it holds CAP_SYS_RESOURCE;
/// otherwise the call is refused, never run with a limit other than the one reported.
/// A limit below upm's is set as usual.
fn hard_limit_above_upms_own_is_raised_or_refused(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, dir| {
        with_sentinel(cfg, dir);
        cfg["sandbox"]["limits"]["open_files"] = json!(256);
        cfg["plugins"]["probe"]["sandbox"] = json!({"limits": {"open_files": 128}});
    }) else {
        return;
    };
    let nofile_200 = |cmd: &mut Command| {
        // SAFETY: setrlimit is async-signal-safe; the values are on the closure's stack.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 200,
                    rlim_max: 200,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    let below = fx.call_with("probe", "control", json!({}), nofile_200);
    assert_eq!(below.code, 0, "{}", ctx(&below));
    assert_eq!(
        below.result()["nofile"],
        json!([128, 128]),
        "{}",
        ctx(&below)
    );

    let run = fx.call_with("sentinel", "run", json!({}), nofile_200);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    const CAP_SYS_RESOURCE: u32 = 24;
    let may_raise = who == Who::Root && cap_eff & (1 << CAP_SYS_RESOURCE) != 0;
    if may_raise {
        assert_eq!(run.code, 0, "{}", ctx(&run));
        return;
    }
    eprintln!("upm lacks CAP_SYS_RESOURCE here ({who:?}): checking that it refuses");
    assert_refused(
        &fx,
        &run,
        &["the limits layer", "open_files needs a hard limit of 256"],
    );
}

fn inherited_descriptors_are_closed(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let secret = fx
        .dir
        .write("leaked-secret", "the caller's secret\n", false);
    let file = std::fs::File::open(&secret).unwrap();
    // A high descriptor without FD_CLOEXEC: upm (and with it the plugin) would inherit it.
    // SAFETY: F_DUPFD on a valid descriptor we own; the result is closed below.
    let leaked = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_DUPFD, 300) };
    assert!(leaked >= 300);
    struct CloseOnDrop(i32);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            // SAFETY: closing the descriptor this test made.
            unsafe { libc::close(self.0) };
        }
    }
    let _close = CloseOnDrop(leaked);
    // Control: a process the test starts this way does inherit it, and so does upm.
    let mut cmd = fx.command(Path::new("/usr/bin/readlink"));
    cmd.arg(format!("/proc/self/fd/{leaked}"));
    let out = cmd.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        secret.to_str().unwrap(),
        "the control did not inherit the descriptor"
    );
    let run = fx.call("probe", "fd", json!({"fd": leaked}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["control_stdin"], "fstat on its stdin");
    assert_eq!(errno(&r["fstat"]), EBADF, "{r}");
    assert_eq!(errno(&r["read"]), EBADF, "{r}");
    assert!(!run.stdout.contains("the caller's secret"));
}

fn caller_environment_is_not_passed(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call_with("probe", "env", json!({}), |cmd| {
        cmd.env("UPM_TEST_SECRET", "hunter2-sandbox")
            .env("LD_PRELOAD", "/tmp/evil.so")
            .env("PYTHONPATH", "/tmp/evil");
    });
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let env = run.result();
    // Controls: what the config sets, and the allowlisted LANG from the caller.
    assert_eq!(env["PATH"], "/usr/bin:/bin", "{env}");
    assert_eq!(env["UPM_PROBE"], "set-by-config", "{env}");
    assert_eq!(env["LANG"], "C.UTF-8", "{env}");
    for k in ["UPM_TEST_SECRET", "LD_PRELOAD", "PYTHONPATH", "HOME"] {
        assert!(env.get(k).is_none(), "{k} leaked into the plugin: {env}");
    }
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
}

/// A seccomp filter the test puts on upm itself, as a container runtime would,
/// so that one of upm's layers cannot be had.
struct HostRestriction {
    syscall: i64,
    /// `Some((arg0 mask, value))` to match only some calls.
    arg0: Option<(u64, u64)>,
    errno: u32,
}

fn restrict_upm(cmd: &mut Command, r: HostRestriction) {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };
    let rules = match r.arg0 {
        None => vec![],
        Some((mask, value)) => vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(mask),
            value,
        )
        .unwrap()])
        .unwrap()],
    };
    let filter = SeccompFilter::new(
        [(r.syscall, rules)].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(r.errno),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let prog: BpfProgram = filter.try_into().unwrap();
    // SAFETY: apply_filter only makes prctl and seccomp system calls on a program
    // built before the fork; it does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&prog).map_err(std::io::Error::other)?;
            Ok(())
        });
    }
}

/// Refused before the plugin ran: exit 14, `sandbox_unavailable`, an error naming every
/// one of `says`, and no trace of the plugin.
fn assert_refused(fx: &Fx, run: &Run, says: &[&str]) {
    assert_eq!(run.code, 14, "{says:?}: {}", ctx(run));
    assert_eq!(
        run.code_word(),
        "sandbox_unavailable",
        "{says:?}: {}",
        ctx(run)
    );
    let msg = run.json["data"]["error"].as_str().unwrap_or("");
    for s in says {
        assert!(msg.contains(s), "{s:?} not in: {msg}");
    }
    assert_not_run(fx, run);
}

/// The plugin must not have run: no result, no output, `ran: false` in the audit,
/// and no trace in the directory it would have written.
fn assert_not_run(fx: &Fx, run: &Run) {
    assert!(run.json["data"].get("result").is_none(), "{}", ctx(run));
    assert!(!fx.dir.join("sentinel/ran").exists(), "the plugin ran");
    // Its audit trail: one `refused` entry, or `started` then `finished` with `ran: false`.
    let id = &run.json["request_id"];
    let audit: Vec<Value> = fx
        .dir
        .audit_lines()
        .into_iter()
        .filter(|e| &e["request_id"] == id)
        .collect();
    let last = audit
        .last()
        .unwrap_or_else(|| panic!("no audit entry for {id}"));
    let not_run =
        last["event"] == "refused" || (last["event"] == "finished" && last["ran"] == false);
    assert!(not_run, "{audit:?}");
}

fn with_sentinel(cfg: &mut Value, dir: &Path) {
    let sentinel = dir.join("sentinel");
    std::fs::create_dir_all(&sentinel).unwrap();
    std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o777)).unwrap();
    cfg["plugins"]["sentinel"] = json!({
        "command": ["plugins/sentinel.sh"],
        "allowed_methods": ["run"],
        "sandbox": {
            "write_paths": [sentinel],
            "env": {"set": {"PATH": "/usr/bin:/bin", "UPM_SENTINEL_DIR": sentinel}}
        }
    });
}

fn layer_that_cannot_be_applied_fails_closed(who: Who) {
    let Some(fx) = Fx::new(who, with_sentinel) else {
        return;
    };
    // Control: unrestricted, the sentinel runs and leaves its mark.
    let run = fx.call("sentinel", "run", json!({}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert!(fx.dir.join("sentinel/ran").exists());
    std::fs::remove_file(fx.dir.join("sentinel/ran")).unwrap();

    let cases = [
        // Like a kernel without Landlock (or a container whose profile hides it).
        (
            "landlock",
            HostRestriction {
                syscall: libc::SYS_landlock_create_ruleset,
                arg0: None,
                errno: libc::ENOSYS as u32,
            },
        ),
        // Like a container runtime that refuses new PID namespaces.
        ("namespaces", no_pid_namespaces()),
        // Like a kernel without seccomp filtering: PR_GET_SECCOMP answers EINVAL.
        (
            "seccomp",
            HostRestriction {
                syscall: libc::SYS_prctl,
                arg0: Some((u64::MAX, libc::PR_GET_SECCOMP as u64)),
                errno: libc::EINVAL as u32,
            },
        ),
    ];
    for (layer, restriction) in cases {
        let run = fx.call_with("sentinel", "run", json!({}), |cmd| {
            restrict_upm(cmd, restriction)
        });
        assert_refused(&fx, &run, &[&format!("the {layer} layer")]);
    }
}

/// With `fs.suid_dumpable` at 1, a root upm refuses to switch to the plugin's uid: the
/// switch would make the init, which shares upm's memory, traceable by that uid. The
/// setting is faked for upm alone: a file bound over it in a mount namespace of its own.
#[test]
fn suid_dumpable_1_stops_a_root_upm_before_the_plugin_runs() {
    let Some(fx) = Fx::new(Who::Root, with_sentinel) else {
        return;
    };
    let fake = fx.dir.join("suid_dumpable");
    for (value, refused) in [("1\n", true), ("0\n", false)] {
        std::fs::write(&fake, value).unwrap();
        let run = fx.call_with("sentinel", "run", json!({}), |cmd| {
            common::bind_over(cmd, &fake, "/proc/sys/fs/suid_dumpable")
        });
        if !refused {
            assert_eq!(run.code, 0, "{value}: {}", ctx(&run));
            std::fs::remove_file(fx.dir.join("sentinel/ran")).unwrap();
            continue;
        }
        assert_refused(
            &fx,
            &run,
            &["the credentials layer", "fs.suid_dumpable is 1"],
        );
    }
}

/// `upm doctor` shows `fs.suid_dumpable`, and at 1 says that a root upm's calls would be
/// refused (faked for upm alone, as above).
#[test]
fn doctor_reports_suid_dumpable() {
    if !is_root() {
        eprintln!("SKIPPED doctor_reports_suid_dumpable: needs root");
        return;
    }
    let d = TestDir::new();
    let fake = d.write("suid_dumpable", "", false);
    for (value, available) in [(1, false), (0, true)] {
        std::fs::write(&fake, format!("{value}\n")).unwrap();
        let mut cmd = Command::new(common::upm_bin());
        cmd.args(["doctor", "--json"]);
        common::bind_over(&mut cmd, &fake, "/proc/sys/fs/suid_dumpable");
        let out = cmd.output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["host"]["suid_dumpable"], value, "{v}");
        let layers = v["layers"].as_array().unwrap();
        let creds = layers.iter().find(|l| l["layer"] == "credentials").unwrap();
        assert_eq!(creds["available"], available, "{creds}");
        if !available {
            let detail = creds["detail"].as_str().unwrap();
            assert!(detail.contains("fs.suid_dumpable is 1"), "{creds}");
        }
    }
}

/// `allow_degraded` lets the call run without the layer, and the guard must then refuse.
#[test]
#[should_panic(expected = "GUARD: refusing to run hostile probes")]
fn guard_refuses_a_degraded_sandbox() {
    let Some(fx) = Fx::new(Who::Root, |cfg, _| {
        cfg["sandbox"]["allow_degraded"] = json!(["namespaces"]);
    }) else {
        panic!("GUARD: refusing to run hostile probes (not root: nothing to check)");
    };
    let run = fx.call_with("probe", "control", json!({}), |cmd| {
        restrict_upm(cmd, no_pid_namespaces())
    });
    // The degraded call itself succeeds, and says so.
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let ns = &run.json["data"]["sandbox"]["layers"]["namespaces"];
    assert_eq!(ns["state"], "degraded", "{}", ctx(&run));
    check_layers(&fx, "probe", &run);
}

/// A root upm that may not create the call's user namespace, or not as the plugin's uid,
/// still runs the plugin as its uid in the other namespaces, and says that
/// `max_processes` is then the uid's.
#[test]
fn root_without_a_user_namespace_says_the_process_limit_is_shared() {
    let Some(fx) = Fx::new(Who::Root, |_, _| {}) else {
        return;
    };
    let cases = [
        // Like a runtime whose profile refuses new user namespaces.
        (
            HostRestriction {
                syscall: libc::SYS_clone,
                arg0: Some((libc::CLONE_NEWUSER as u64, libc::CLONE_NEWUSER as u64)),
                errno: libc::EPERM as u32,
            },
            "not created: Operation not permitted",
        ),
        // Like one that refuses changing securebits: upm cannot take the plugin's uid.
        (
            HostRestriction {
                syscall: libc::SYS_prctl,
                arg0: Some((u64::MAX, libc::PR_SET_SECUREBITS as u64)),
                errno: libc::EPERM as u32,
            },
            "cannot create it as uid",
        ),
    ];
    for (restriction, why) in cases {
        let run = fx.call_with("probe", "control", json!({}), |cmd| {
            restrict_upm(cmd, restriction)
        });
        assert_eq!(run.code, 0, "{}", ctx(&run));
        let ns = &run.json["data"]["sandbox"]["layers"]["namespaces"];
        assert_eq!(ns["state"], "enforced", "{ns}");
        assert_eq!(
            ns["detail"]["created"],
            json!(["pid", "ipc", "mount", "net"]),
            "{ns}"
        );
        let count = ns["detail"]["process_count"].as_str().unwrap_or("");
        assert!(count.contains("other calls"), "{ns}");
        assert!(
            ns["detail"]["user_namespace"]
                .as_str()
                .is_some_and(|r| r.contains(why)),
            "{why}: {ns}"
        );
        assert_eq!(run.result()["uid"], 65534, "{}", ctx(&run));
    }
}

fn no_pid_namespaces() -> HostRestriction {
    HostRestriction {
        syscall: libc::SYS_clone,
        arg0: Some((libc::CLONE_NEWPID as u64, libc::CLONE_NEWPID as u64)),
        errno: libc::EPERM as u32,
    }
}

fn unreadable_read_path_fails_closed(who: Who) {
    // A namespace file: it exists and opens, but Landlock cannot put a rule on it.
    let Some(fx) = Fx::new(who, |cfg, dir| {
        with_sentinel(cfg, dir);
        cfg["plugins"]["sentinel"]["sandbox"]["read_paths"] = json!(["/proc/self/ns/net"]);
    }) else {
        return;
    };
    let run = fx.call("sentinel", "run", json!({}));
    assert_refused(&fx, &run, &["landlock", "/proc/self/ns/net"]);
}

/// The init shares upm's memory until the call ends. Even under a seccomp profile that
/// allows ptrace and process_vm_* (Docker's, on kernels >= 4.8), the plugin — in a
/// Landlock domain the init is outside of — cannot trace it or read its memory.
fn the_plugin_cannot_reach_into_its_init(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["plugins"]["probe"]["sandbox"]["seccomp"] = json!("policies/docker.json");
    }) else {
        return;
    };
    std::fs::copy(
        common::repo().join("tests/fixtures/seccomp/docker-default.json"),
        fx.dir.join("policies/docker.json"),
    )
    .unwrap();
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "reach_init", json!({}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(
        r["ppid"], 1,
        "the init is pid 1 of the plugin's namespace: {r}"
    );
    assert_eq!(r["own_child_vm_read"]["value"], 8, "control: {r}");
    assert_ok(
        &r["own_child_ptrace_attach"],
        "control: ptrace of its own child",
    );
    assert_eq!(
        errno(&r["init_vm_read"]),
        EPERM,
        "process_vm_readv of the init: {r}"
    );
    assert_eq!(
        errno(&r["init_ptrace_attach"]),
        EPERM,
        "ptrace of the init: {r}"
    );
    errno(&r["init_mem"]);
}

/// upm's caller may leave signals ignored or blocked; the sandbox's init resets every
/// disposition and the mask, so the plugin starts clean (and no handler of upm's runs
/// in a process that shares its memory).
fn signal_dispositions_and_mask_are_reset(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call_with("probe", "signal_state", json!({}), |cmd| {
        // SAFETY: only sigaction and sigprocmask between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                libc::signal(libc::SIGUSR1, libc::SIG_IGN);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigaddset(&mut set, libc::SIGUSR2);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
    });
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(r["blocked"], json!([]), "{r}");
    assert_eq!(r["sighup"], 0, "SIG_DFL: {r}");
    assert_eq!(r["sigusr1"], 0, "SIG_DFL: {r}");
}

fn unknown_syscall_in_profile_is_config_error(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, dir| {
        with_sentinel(cfg, dir);
        cfg["plugins"]["sentinel"]["sandbox"]["seccomp"] = json!("policies/unknown.json");
    }) else {
        return;
    };
    let mut profile: Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("policies/default.json")).unwrap(),
    )
    .unwrap();
    profile["syscalls"]
        .as_array_mut()
        .unwrap()
        .push(json!({"names": ["no_such_syscall_upm"], "action": "SCMP_ACT_ALLOW"}));
    std::fs::write(
        fx.dir.join("policies/unknown.json"),
        serde_json::to_vec_pretty(&profile).unwrap(),
    )
    .unwrap();
    let run = fx.call("sentinel", "run", json!({}));
    assert_eq!(run.code, 5, "{}", ctx(&run));
    assert_eq!(run.code_word(), "config_error", "{}", ctx(&run));
    let msg = run.json["data"]["error"].as_str().unwrap_or("");
    assert!(msg.contains("no_such_syscall_upm"), "{msg}");
    assert!(!fx.dir.join("sentinel/ran").exists(), "the plugin ran");
}
