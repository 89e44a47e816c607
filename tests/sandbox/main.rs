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
//!
//! One binary, one module per layer or guarantee; each module declares its
//! two-variant tests with `both!`. The fixture (config, hostile plugins, the guard)
//! is here.

#[path = "../common/mod.rs"]
mod common;

use common::{
    both, command_plugin, errno, is_root, left_under, request, run_command, Run, TestConfig,
    TestDir, Who, NOBODY, USER,
};
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant};

const PROBE: &str = include_str!("../fixtures/sandbox/probe.py");

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

const PROBE_METHODS: [&str; 24] = [
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
    "fill_disk",
    "netns",
];

const EPERM: i64 = 1;
const EAGAIN: i64 = 11;
const EBADF: i64 = 9;
const EACCES: i64 = 13;
const ESRCH: i64 = 3;
const ENOSYS: i64 = 38;
const EAFNOSUPPORT: i64 = 97;
const EROFS: i64 = 30;
const ENOSPC: i64 = 28;

/// Fork bombs run alone (other calls take this lock shared), so that their timing is
/// not disturbed. (RLIMIT_NPROC itself is per call: each has its own user namespace.)
static NPROC: RwLock<()> = RwLock::new(());

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
    TestConfig::new()
        .set("python", json!("/usr/bin/python3"))
        .set(
            "sandbox",
            json!({
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
            }),
        )
        .plugin("probe", command_plugin("plugins/probe.py", &PROBE_METHODS))
        .plugin(
            "spew",
            command_plugin("plugins/spew.sh", &["control", "stdout", "stderr", "both"]),
        )
        .plugin(
            "pyclass",
            json!({
                "module": "hostile_cls",
                "class": "Hostile",
                "python_path": ["plugins/pyclass"],
                "allowed_methods": ["control", "memory_bomb"]
            }),
        )
        .value()
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
    let has = |list: &Value, ns: &str| list.as_array().is_some_and(|a| a.contains(&json!(ns)));
    for ns in ["pid", "ipc", "mount"] {
        if !has(created, ns) {
            fail(format!("namespace {ns} was not created: {created}"));
        }
    }
    // A network namespace of the call's own, or the process's shared empty one.
    let kind = &map["network"]["detail"]["namespace"]["kind"];
    let joined = &map["namespaces"]["detail"]["joined"];
    let own = has(created, "net") && kind == "own";
    let shared = has(joined, "net") && !has(created, "net") && kind == "shared";
    if !own && !shared {
        fail(format!(
            "no network namespace: created {created}, joined {joined}, kind {kind}"
        ));
    }
    // Check rather than trust: the plugin itself must see the unprivileged identity.
    let r = run.result();
    if r["uid"] != uid || r["euid"] != uid || r["gid"] != gid {
        fail(format!("the plugin runs as {r}, want uid/gid {uid}/{gid}"));
    }
}

fn assert_ok(v: &Value, what: &str) {
    assert_eq!(v["ok"], true, "{what} should work inside the sandbox: {v}");
}

// ---------------------------------------------------------------- shared by the topics

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

mod disk;
mod fail_closed;
mod files;
mod inheritance;
mod kept_programs;
mod lifetime;
mod limits;
mod network;
mod output;
mod privileges;
mod workdir;
