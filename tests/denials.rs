//! What the sandbox refused, in every result (issue 23), through the real binary.
//!
//! - seccomp: the profile's errnos are answered by upm as the filter's user-notification
//!   supervisor; each refused call shows up in `data.denials` and the `finished` entry,
//!   with the same errno the plugin got.
//! - Landlock: read from the kernel's audit, which must be on. The tests that need it on
//!   turn it on for their run (`AUDIT_SET` over netlink) and put back what they found,
//!   also when they fail ([`Audit`]); the tests that need it off turn it off the same
//!   way. Either holds a lock that serializes every test touching the audit state (a
//!   mutex in this process and a `flock` across processes), so that no test sees the
//!   state another one set.
//! - a failure names the denial that made it fail and the setting that would allow it.
//!
//! They run as root (the audit and the uid switch need it); as another user they say
//! SKIPPED.

mod common;

use common::{is_root, request, run_command, upm_bin, Run, TestDir};
use serde_json::{json, Value};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A plugin that does what its method says and prints what the kernel answered.
const PROBE: &str = r#"#!/usr/bin/python3
import json, os, socket, sys

req = json.loads(sys.stdin.read() or "{}")
m, a = req.get("method"), req.get("args") or {}
out = {}

def errno_of(f):
    try:
        f()
        return 0
    except OSError as e:
        return e.errno

if m == "sockets":
    out["inet"] = errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    out["inet_again"] = errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    out["inet6_udp"] = errno_of(lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
    out["memfd"] = errno_of(lambda: os.memfd_create("x"))
elif m == "many_sockets":
    for family in range(1, 47):
        for kind in range(1, 6):
            errno_of(lambda: socket.socket(family, kind))
elif m == "read":
    out["read"] = errno_of(lambda: open(a["path"]).read())
    out["write"] = errno_of(lambda: open(a["write"], "w").write("x"))
elif m == "read_or_fail":
    open(a["path"]).read()
elif m in ("fetch", "fetch_or_fail"):
    import urllib.request, urllib.error
    out = []
    for url in a["urls"]:
        try:
            urllib.request.urlopen(url, timeout=10).read()
            out.append({"status": 200})
        except urllib.error.HTTPError as e:
            if m == "fetch_or_fail":
                raise
            out.append({"status": e.code, "error": str(e)})
elif m == "write_or_fail":
    open(a["path"], "w").write("x")
elif m == "thread_then_fail":
    # A thread (glibc's clone3 is answered ENOSYS, by design), then a failure of its own.
    import threading
    t = threading.Thread(target=lambda: None); t.start(); t.join()
    sys.exit("my own error: the index said 404")
elif m == "memfd_or_fail":
    os.memfd_create("x")
elif m == "connect_or_fail":
    socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(("127.0.0.1", 9))
elif m == "hammer":
    # Threads and processes refused over and over, until the call's timeout.
    import threading
    def loop():
        while True:
            errno_of(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    for _ in range(3):
        if os.fork() == 0:
            for _ in range(3):
                threading.Thread(target=loop, daemon=True).start()
            loop()
    for _ in range(3):
        threading.Thread(target=loop, daemon=True).start()
    loop()
print(json.dumps(out))
"#;

/// Tries nothing the sandbox refuses.
const QUIET: &str = "#!/bin/sh\nread -r line || true\necho '{\"quiet\": true}'\n";

/// Not on the `fetch` plugin's allowlist: the proxy refuses it without resolving it.
const REFUSED_URL: &str = "http://refused.test:8080/";
const REFUSED_TARGET: &str = "refused.test:8080";

const EAFNOSUPPORT: i64 = 97;
const ENOSYS: i64 = 38;
const EACCES: i64 = 13;
const USER: (u32, u32) = (4242, 4242);

struct Fx {
    dir: TestDir,
    config: PathBuf,
}

impl Fx {
    fn new() -> Option<Fx> {
        if !is_root() {
            eprintln!(
                "SKIPPED: the denials tests run upm as root (audit, uid switch); run them as root"
            );
            return None;
        }
        let dir = TestDir::new();
        dir.write("plugins/probe.py", PROBE, true);
        dir.write("plugins/quiet.sh", QUIET, true);
        // Readable by the plugin's uid, but not given to it.
        dir.write("secret/data.txt", "secret\n", false);
        dir.write("elsewhere/.keep", "", false);
        // A workdir_root of the test's own: a root upm keeps the audit's answer there
        // for 250 ms (`upm-audit-0`), which a test that turns the audit on or off must
        // not take from another test's calls.
        std::fs::create_dir(dir.join("work")).unwrap();
        let config = dir.config(&json!({
            "require_schemas": false,
            "workdir_root": dir.join("work"),
            "sandbox": {"limits": {"timeout_ms": 10_000, "cpu_seconds": 10}},
            "plugins": {
                "probe": {"command": ["plugins/probe.py"], "allowed_methods": [
                    "sockets", "many_sockets", "read", "read_or_fail", "write_or_fail",
                    "connect_or_fail", "none", "thread_then_fail", "memfd_or_fail"
                ]},
                "quiet": {"command": ["plugins/quiet.sh"], "allowed_methods": ["m"]},
                "fetch": {"command": ["plugins/probe.py"], "allowed_methods": ["fetch", "fetch_or_fail"],
                          "sandbox": {"network": {"allow": ["allowed.test"]}}},
                "hammer": {"command": ["plugins/probe.py"], "allowed_methods": ["hammer"],
                           "sandbox": {"limits": {"timeout_ms": 1500, "cpu_seconds": 10, "max_processes": 64}}}
            }
        }));
        Some(Fx { dir, config })
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(upm_bin());
        cmd.env_clear().env("PATH", "/usr/bin:/bin").args([
            "run",
            "--config",
            self.config.to_str().unwrap(),
        ]);
        cmd
    }

    fn call(&self, plugin: &str, method: &str, args: Value) -> Run {
        run_command(self.command(), &request(plugin, method, args))
    }

    /// The `finished` entry of the call that answered `run`.
    fn finished(&self, run: &Run) -> Value {
        let id = &run.json["data"]["call_id"];
        self.dir
            .audit_lines()
            .into_iter()
            .find(|e| e["event"] == "finished" && &e["call_id"] == id)
            .unwrap_or_else(|| panic!("no finished entry for {id}"))
    }
}

fn denials(run: &Run) -> Vec<Value> {
    run.json["data"]["denials"]
        .as_array()
        .unwrap_or_else(|| panic!("no data.denials: {}", run.stdout))
        .clone()
}

fn find<'a>(list: &'a [Value], layer: &str, what: &str) -> Option<&'a Value> {
    list.iter()
        .find(|d| d["layer"] == layer && d["what"] == what)
}

fn summary(run: &Run) -> &Value {
    &run.json["data"]["denials_summary"]
}

fn observed(run: &Run, layer: &str) -> bool {
    summary(run)["observed"]
        .as_array()
        .is_some_and(|l| l.iter().any(|x| x == layer))
}

// ---- the kernel's audit, for the tests that need it on or off ----

const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;

/// The tests in this process that touch the audit state, one at a time.
static AUDIT_STATE: Mutex<()> = Mutex::new(());

/// Holds the audit in a state for one test and puts the previous one back on drop
/// (also when the test panics). Serialized with every other such test, here and in
/// other processes (`flock`).
struct Audit {
    previous: u32,
    _lock: std::sync::MutexGuard<'static, ()>,
    _flock: std::fs::File,
}

impl Audit {
    /// The lock alone: the audit stays as it is, but no other test changes it meanwhile
    /// (for tests whose assertions hold either way).
    fn hold() -> Audit {
        let (lock, flock) = Audit::lock();
        Audit {
            previous: 2,
            _lock: lock,
            _flock: flock,
        }
    }

    fn lock() -> (std::sync::MutexGuard<'static, ()>, std::fs::File) {
        let lock = AUDIT_STATE.lock().unwrap_or_else(|e| e.into_inner());
        let flock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/upm-tests-audit-state.lock")
            .unwrap();
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(flock.as_raw_fd(), libc::LOCK_EX) }, 0);
        (lock, flock)
    }

    /// `None` (the test says SKIPPED and returns) when the state cannot be changed: the
    /// audit is locked (enabled = 2) and the test wants it off.
    fn set(enabled: u32) -> Option<Audit> {
        let (lock, flock) = Audit::lock();
        let previous = audit_status()[1];
        if previous == 2 {
            if enabled == 0 {
                eprintln!(
                    "SKIPPED: the kernel's audit is locked on (enabled=2): cannot test it off"
                );
                return None;
            }
        } else if previous != enabled {
            audit_set(enabled);
        }
        assert_eq!(audit_status()[1] != 0, enabled != 0);
        Some(Audit {
            previous,
            _lock: lock,
            _flock: flock,
        })
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        if self.previous != 2 && audit_status()[1] != self.previous {
            audit_set(self.previous);
        }
    }
}

fn netlink() -> OwnedFd {
    // SAFETY: socket(2); the descriptor is ours.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_AUDIT,
        )
    };
    assert!(
        fd >= 0,
        "NETLINK_AUDIT: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fresh and ours.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sends one audit request; returns the answers' (type, payload) until `want` or an error.
fn audit_request(ty: u16, payload: &[u8], want: u16) -> Vec<u8> {
    let sock = netlink();
    let mut msg = Vec::new();
    msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&7u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(payload);
    // SAFETY: a zeroed sockaddr_nl (the kernel) and our buffer.
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as u16;
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    assert!(
        sent > 0,
        "audit request: {}",
        std::io::Error::last_os_error()
    );
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: recv into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(n > 0, "audit answer: {}", std::io::Error::last_os_error());
        let got = u16::from_ne_bytes([buf[4], buf[5]]);
        let body = buf[16..n as usize].to_vec();
        if got == libc::NLMSG_ERROR as u16 {
            let code = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            assert_eq!(code, 0, "audit request {ty}: errno {}", -code);
            if want == libc::NLMSG_ERROR as u16 {
                return body;
            }
            continue;
        }
        if got == want {
            return body;
        }
    }
}

/// `struct audit_status` as eleven words.
fn audit_status() -> [u32; 11] {
    let body = audit_request(AUDIT_GET, &[], AUDIT_GET);
    let mut words = [0u32; 11];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u32::from_ne_bytes(body[4 * i..4 * i + 4].try_into().unwrap());
    }
    words
}

fn audit_set(enabled: u32) {
    let mut status = [0u8; 44];
    status[0..4].copy_from_slice(&1u32.to_ne_bytes()); // AUDIT_STATUS_ENABLED
    status[4..8].copy_from_slice(&enabled.to_ne_bytes());
    audit_request(AUDIT_SET, &status, libc::NLMSG_ERROR as u16);
}

// ---- a call that tries nothing forbidden ----

#[test]
fn a_call_that_tries_nothing_forbidden_has_no_denials() {
    let Some(fx) = Fx::new() else { return };
    let Some(_audit) = Audit::set(1) else { return };
    let run = fx.call("quiet", "m", json!({}));
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.json["data"]["denials"], json!([]), "{}", run.stdout);
    // Both layers were watched: the empty list means nothing was refused.
    assert!(observed(&run, "seccomp"), "{}", run.stdout);
    assert!(observed(&run, "landlock"), "{}", run.stdout);
    assert_eq!(summary(&run)["events"], 0);
    assert!(
        summary(&run).get("not_observable").is_none(),
        "{}",
        run.stdout
    );
    let entry = fx.finished(&run);
    assert_eq!(entry["denials"], json!([]));
    assert_eq!(entry["denials_summary"]["events"], 0);
}

// ---- seccomp ----

#[test]
fn seccomp_denials_are_answered_with_the_profiles_errno_and_reported() {
    let Some(fx) = Fx::new() else { return };
    let _audit = Audit::hold();
    let run = fx.call("probe", "sockets", json!({}));
    assert_eq!(run.code, 0, "{}", run.stdout);
    // What the plugin got: the errnos the profile and upm's rules say.
    let got = run.result();
    assert_eq!(got["inet"], EAFNOSUPPORT, "{}", run.stdout);
    assert_eq!(got["inet_again"], EAFNOSUPPORT);
    assert_eq!(got["inet6_udp"], EAFNOSUPPORT);
    assert_eq!(got["memfd"], ENOSYS);
    let list = denials(&run);
    let inet = find(&list, "seccomp", "socket(AF_INET, SOCK_STREAM)")
        .unwrap_or_else(|| panic!("no socket denial: {list:?}"));
    assert_eq!(inet["count"], 2, "folded: {inet}");
    assert_eq!(inet["errno"], "EAFNOSUPPORT");
    assert_eq!(inet["setting"], "network");
    let udp = find(&list, "seccomp", "socket(AF_INET6, SOCK_DGRAM)").unwrap();
    assert_eq!(udp["count"], 1);
    let memfd = find(&list, "seccomp", "memfd_create").unwrap();
    assert_eq!(memfd["errno"], "ENOSYS");
    assert!(
        memfd["allowed_by"]
            .as_str()
            .unwrap()
            .starts_with("nothing:"),
        "{memfd}"
    );
    assert!(observed(&run, "seccomp"));
    // The finished entry keeps them.
    let entry = fx.finished(&run);
    assert_eq!(entry["denials"], run.json["data"]["denials"]);
    assert_eq!(
        entry["denials_summary"],
        run.json["data"]["denials_summary"]
    );
}

#[test]
fn the_first_hundred_distinct_denials_are_listed_and_all_are_counted() {
    let Some(fx) = Fx::new() else { return };
    // Off: only seccomp's denials are counted (Python refuses itself a directory
    // listing as it starts, which Landlock would log).
    let Some(_audit) = Audit::set(0) else { return };
    let run = fx.call("probe", "many_sockets", json!({}));
    assert_eq!(run.code, 0, "{}", run.stdout);
    let list = denials(&run);
    assert_eq!(list.len(), 100, "{}", run.stdout);
    // 46 families x 5 types, every one refused (socket() is denied whatever its family).
    let s = summary(&run);
    assert_eq!(s["distinct"], 46 * 5, "{s}");
    assert_eq!(s["events"], 46 * 5, "{s}");
    assert_eq!(s["listed"], 100);
    assert_eq!(list[0]["what"], "socket(AF_UNIX, SOCK_STREAM)");
}

#[test]
fn a_failure_after_a_seccomp_denial_names_it_and_the_setting() {
    let Some(fx) = Fx::new() else { return };
    // On: Python's own harmless refusals as it starts come first in the list; the
    // sentence still names the refusal the error quotes.
    let Some(_audit) = Audit::set(1) else { return };
    let run = fx.call("probe", "connect_or_fail", json!({}));
    assert_eq!(run.code_word(), "plugin_failed", "{}", run.stdout);
    let error = run.json["data"]["error"].as_str().unwrap();
    assert!(
        error.contains("the sandbox refused socket(AF_INET, SOCK_STREAM) (seccomp, EAFNOSUPPORT)"),
        "{error}"
    );
    assert!(
        error.contains("\"network\" in the config would allow it"),
        "{error}"
    );
    assert_eq!(fx.finished(&run)["error"], error);
}

/// A thread's clone3 is answered ENOSYS by design (glibc falls back): a failure of the
/// plugin's own is not blamed on it; a failure that quotes ENOSYS's text still names it.
#[test]
fn an_enosys_answered_by_design_is_not_blamed_for_a_failure() {
    let Some(fx) = Fx::new() else { return };
    let run = fx.call("probe", "thread_then_fail", json!({}));
    assert_eq!(run.code_word(), "plugin_failed", "{}", run.stdout);
    assert!(
        find(&denials(&run), "seccomp", "clone3").is_some(),
        "{}",
        run.stdout
    );
    let error = run.json["data"]["error"].as_str().unwrap();
    assert!(!error.contains("clone3"), "{error}");
    let run = fx.call("probe", "memfd_or_fail", json!({}));
    let error = run.json["data"]["error"].as_str().unwrap();
    assert!(
        error.contains("the sandbox refused memfd_create (seccomp, ENOSYS)"),
        "{error}"
    );
}

/// upm itself under a seccomp filter that has a listener (as under a container runtime
/// that supervises its containers): the kernel refuses the call's filter a listener of
/// its own (EBUSY). The plugin then runs under today's filter, gets the same errnos, and
/// the result says that seccomp's denials were not observed, never a bare empty list.
#[test]
fn without_a_listener_the_filter_is_todays_and_the_result_says_why() {
    let Some(fx) = Fx::new() else { return };
    let _audit = Audit::hold();
    // One instruction: SECCOMP_RET_ALLOW for everything, but installed with a listener.
    let prog = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: prog.as_ptr().cast_mut(),
    };
    let fprog_addr = &fprog as *const libc::sock_fprog as usize;
    let mut cmd = fx.command();
    // SAFETY: between fork and exec: raw system calls on memory prepared before the
    // fork (the parent's `prog` and `fprog` outlive the spawn); root has CAP_SYS_ADMIN,
    // so no no_new_privs is needed.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                fprog_addr as *const libc::sock_fprog,
            );
            // The listener, open in upm (it is close-on-exec, and a filter whose
            // listener is closed has none any more).
            if r < 0 || libc::fcntl(r as i32, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let run = run_command(cmd, &request("probe", "sockets", json!({})));
    assert_eq!(run.code, 0, "{}", run.stdout);
    let got = run.result();
    assert_eq!(got["inet"], EAFNOSUPPORT, "{}", run.stdout);
    assert_eq!(got["memfd"], ENOSYS, "{}", run.stdout);
    assert!(
        denials(&run).iter().all(|d| d["layer"] != "seccomp"),
        "{}",
        run.stdout
    );
    assert!(!observed(&run, "seccomp"), "{}", run.stdout);
    let why = summary(&run)["not_observable"]["seccomp"]
        .as_str()
        .unwrap_or_else(|| panic!("no reason: {}", run.stdout));
    assert!(why.contains("no listener"), "{why}");
    assert_eq!(
        fx.finished(&run)["denials_summary"],
        run.json["data"]["denials_summary"]
    );
}

/// Many threads and processes hammering refused calls: upm keeps its clock (the call
/// ends at its timeout, killed), answers what it can, and counts it.
#[test]
fn a_plugin_hammering_refused_calls_cannot_stall_the_call() {
    let Some(fx) = Fx::new() else { return };
    let _audit = Audit::hold();
    let started = Instant::now();
    let run = fx.call("hammer", "hammer", json!({}));
    let took = started.elapsed();
    assert_eq!(run.code_word(), "timeout", "{}", run.stdout);
    assert!(took < Duration::from_millis(1500 + 3000), "took {took:?}");
    let s = summary(&run);
    assert!(s["events"].as_u64().unwrap() > 100, "{s}");
    let inet = find(&denials(&run), "seccomp", "socket(AF_INET, SOCK_STREAM)").cloned();
    assert!(
        inet.is_some_and(|d| d["count"].as_u64().unwrap() > 100),
        "{}",
        run.stdout
    );
}

/// An unprivileged upm still supervises seccomp, and says it cannot read the audit.
#[test]
fn an_unprivileged_upm_reports_seccomp_and_says_why_not_landlock() {
    let Some(fx) = Fx::new() else { return };
    // On: the reason must then be upm's privileges, not the audit.
    let Some(_audit) = Audit::set(1) else { return };
    for dir in [fx.dir.path.clone(), fx.dir.join("work")] {
        std::os::unix::fs::chown(dir, Some(USER.0), Some(USER.1)).unwrap();
    }
    let mut cmd = fx.command();
    cmd.uid(USER.0).gid(USER.1);
    let run = run_command(cmd, &request("probe", "sockets", json!({})));
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(find(&denials(&run), "seccomp", "socket(AF_INET, SOCK_STREAM)").is_some());
    let why = summary(&run)["not_observable"]["landlock"]
        .as_str()
        .unwrap_or("");
    assert!(why.contains("not root"), "{}", run.stdout);
}

// ---- Landlock ----

#[test]
fn landlock_denials_are_read_from_the_audit_and_reported() {
    let Some(fx) = Fx::new() else { return };
    let Some(_audit) = Audit::set(1) else { return };
    // A device node: outside the call's directory and write_paths, other files are on
    // read-only mounts (EROFS) before Landlock is asked.
    let (secret, write) = (fx.path("secret/data.txt"), "/dev/zero".to_owned());
    let run = fx.call("probe", "read", json!({"path": secret, "write": write}));
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.result()["read"], EACCES, "{}", run.stdout);
    assert_eq!(run.result()["write"], EACCES);
    let list = denials(&run);
    let read = find(&list, "landlock", &format!("fs.read_file {secret}"))
        .unwrap_or_else(|| panic!("no read denial: {}", run.stdout));
    assert_eq!(read["setting"], "read_paths");
    assert_eq!(read["count"], 1);
    let wrote = find(&list, "landlock", "fs.write_file /dev/zero")
        .unwrap_or_else(|| panic!("no write denial: {}", run.stdout));
    assert_eq!(wrote["setting"], "write_paths", "{wrote}");
    assert!(observed(&run, "landlock"));
    let entry = fx.finished(&run);
    assert_eq!(entry["denials"], run.json["data"]["denials"]);
}

#[test]
fn a_failure_after_a_landlock_denial_names_the_path_and_read_paths() {
    let Some(fx) = Fx::new() else { return };
    let Some(_audit) = Audit::set(1) else { return };
    let secret = fx.path("secret/data.txt");
    let run = fx.call("probe", "read_or_fail", json!({"path": secret}));
    assert_eq!(run.code_word(), "plugin_failed", "{}", run.stdout);
    let error = run.json["data"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "the sandbox refused fs.read_file {secret} (landlock)"
        )),
        "{error}"
    );
    assert!(error.contains("read_paths would allow it"), "{error}");
}

/// A write outside the call's directory and write_paths fails on the read-only mounts
/// (EROFS) before Landlock is asked, so no layer logs it: the failure's sentence still
/// points at write_paths.
#[test]
fn a_failure_writing_outside_write_paths_points_at_write_paths() {
    let Some(fx) = Fx::new() else { return };
    let _audit = Audit::hold();
    let out = fx.path("elsewhere/out.txt");
    let run = fx.call("probe", "write_or_fail", json!({"path": out}));
    assert_eq!(run.code_word(), "plugin_failed", "{}", run.stdout);
    let error = run.json["data"]["error"].as_str().unwrap();
    assert!(
        error.contains("Read-only file system") || run.stdout.contains("Read-only file system"),
        "{}",
        run.stdout
    );
    assert!(
        error.contains("write_paths would allow writing there"),
        "{error}"
    );
    assert_eq!(fx.finished(&run)["error"], error);
}

/// A root upm keeps the audit's answer to whether it is on
/// (`<workdir_root>/upm-audit-0/status`) for the calls that start within 250 ms of the
/// question, in its later processes too; only a fresh, whole entry of root's own, of
/// this boot, is used.
#[test]
fn a_kept_answer_of_the_audit_serves_only_while_fresh_and_roots_own() {
    use std::os::unix::fs::PermissionsExt;
    let Some(fx) = Fx::new() else { return };
    let Some(_audit) = Audit::set(1) else { return };
    let store = fx.dir.join("work/upm-audit-0");
    let status = store.join("status");
    // Whether the call saw Landlock's denials as observable, and how long it took.
    let landlock_observed = || {
        let t = Instant::now();
        let run = fx.call("quiet", "m", json!({}));
        assert_eq!(run.code, 0, "{}", run.stdout);
        (observed(&run, "landlock"), t.elapsed())
    };
    assert!(landlock_observed().0, "the audit is on");
    let kept = std::fs::read_to_string(&status).unwrap();
    assert!(kept.starts_with("upm-audit-2 1 "), "{kept:?}");
    let mode = |p: &PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&store), mode(&status)), (0o700, 0o600));
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let forge = |age: Duration, boot: &str, mode: u32, torn: bool| {
        forge_answer(&status, false, age, boot, mode, torn)
    };
    // Believed while fresh: the call says the audit is off (a few tries, since upm must
    // start within 250 ms of the forgery).
    let believed = (0..5).any(|_| {
        forge(Duration::ZERO, &boot, 0o600, false);
        !landlock_observed().0
    });
    assert!(believed, "a fresh kept answer was not used");
    // Not once older than 250 ms, nor when anyone else may read or write it, nor torn, nor
    // another boot's: asked anew. Each counts only from a call that took less than 200 ms
    // (so that the entry was still fresh when upm read it).
    let other_boot = "00000000-0000-4000-8000-000000000000";
    for (what, age, boot, mode, torn) in [
        ("stale", Duration::from_secs(1), boot.as_str(), 0o600, false),
        ("0644", Duration::ZERO, boot.as_str(), 0o644, false),
        ("torn", Duration::ZERO, boot.as_str(), 0o600, true),
        ("another boot", Duration::ZERO, other_boot, 0o600, false),
    ] {
        let fast = (0..5).find_map(|_| {
            forge(age, boot, mode, torn);
            let (seen, took) = landlock_observed();
            (took < Duration::from_millis(200)).then_some(seen)
        });
        assert_eq!(
            fast,
            Some(true),
            "{what}: used, or no call fast enough to tell"
        );
    }
}

/// Writes a kept answer of the audit (`on`), asked `age` ago (on CLOCK_BOOTTIME), of boot
/// `boot`, with the given mode; `torn` drops its last bytes.
fn forge_answer(
    status: &std::path::Path,
    on: bool,
    age: Duration,
    boot: &str,
    mode: u32,
    torn: bool,
) {
    use std::os::unix::fs::PermissionsExt;
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) };
    let now = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
    let asked = now - age.as_nanos() as u64;
    let text = format!("upm-audit-2 {} {asked:020} {}", u8::from(on), boot.trim());
    let sum = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut entry = format!("{text} {sum:016x}\n");
    if torn {
        entry.truncate(entry.len() - 3);
        entry.push('\n');
    }
    std::fs::write(status, entry).unwrap();
    std::fs::set_permissions(status, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A kept answer that the audit is on, while it is off (out of date by up to 250 ms):
/// the call's end asks the audit anyway (for its queue) and then says Landlock's
/// denials were not observable, rather than "none".
#[test]
fn a_kept_answer_that_the_audit_is_on_is_corrected_at_the_calls_end() {
    let Some(fx) = Fx::new() else { return };
    let Some(_audit) = Audit::set(0) else { return };
    let status = fx.dir.join("work/upm-audit-0/status");
    let first = fx.call("quiet", "m", json!({}));
    assert_eq!(first.code, 0, "{}", first.stdout);
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let corrected = (0..5).any(|_| {
        forge_answer(&status, true, Duration::ZERO, &boot, 0o600, false);
        let t = Instant::now();
        let run = fx.call("quiet", "m", json!({}));
        assert_eq!(run.code, 0, "{}", run.stdout);
        assert!(!observed(&run, "landlock"), "{}", run.stdout);
        let why = summary(&run)["not_observable"]["landlock"]
            .as_str()
            .unwrap_or("");
        assert!(why.contains("audit is off"), "{}", run.stdout);
        t.elapsed() < Duration::from_millis(200)
    });
    assert!(
        corrected,
        "no call fast enough to have used the kept answer"
    );
}

#[test]
fn with_the_audit_off_the_result_says_landlock_denials_are_not_observable() {
    let Some(fx) = Fx::new() else { return };
    let Some(_audit) = Audit::set(0) else { return };
    let secret = fx.path("secret/data.txt");
    let run = fx.call(
        "probe",
        "read",
        json!({"path": secret, "write": fx.path("elsewhere/x")}),
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.result()["read"], EACCES);
    assert!(
        denials(&run).iter().all(|d| d["layer"] != "landlock"),
        "{}",
        run.stdout
    );
    let why = summary(&run)["not_observable"]["landlock"]
        .as_str()
        .unwrap_or("");
    assert!(why.contains("audit is off"), "{}", run.stdout);
    assert!(!observed(&run, "landlock"));
}

/// With the audit off, a failure that says "Permission denied" is still not left to look
/// like the plugin's own bug: the error names Landlock and read_paths.
#[test]
fn with_the_audit_off_a_permission_denied_failure_points_at_read_paths() {
    let Some(fx) = Fx::new() else { return };
    let Some(_audit) = Audit::set(0) else { return };
    let secret = fx.path("secret/data.txt");
    let run = fx.call("probe", "read_or_fail", json!({"path": secret}));
    assert_eq!(run.code_word(), "plugin_failed", "{}", run.stdout);
    let error = run.json["data"]["error"].as_str().unwrap();
    assert!(
        error.contains("Landlock") && error.contains("read_paths (or write_paths) would allow"),
        "{error}"
    );
    assert_eq!(fx.finished(&run)["error"], error);
}

/// Calls running at once in a batch each get their own Landlock denials (each domain is
/// found by its own token), and their own seccomp ones.
#[test]
fn parallel_calls_in_a_batch_keep_their_own_denials() {
    let Some(fx) = Fx::new() else { return };
    let Some(_audit) = Audit::set(1) else { return };
    for i in 0..4 {
        fx.dir.write(&format!("secret/{i}.txt"), "s\n", false);
    }
    let mut input = Vec::new();
    for i in 0..4 {
        let args = json!({"path": fx.path(&format!("secret/{i}.txt")), "write": fx.path(&format!("elsewhere/{i}"))});
        input.extend(serde_json::to_vec(&json!({"plugin": "probe", "method": "read", "args": args, "request_id": format!("r{i}")})).unwrap());
        input.push(b'\n');
    }
    let mut cmd = Command::new(upm_bin());
    cmd.env_clear().env("PATH", "/usr/bin:/bin").args([
        "run",
        "--jsonl",
        "--parallel",
        "4",
        "--config",
        fx.config.to_str().unwrap(),
    ]);
    let out = run_command(cmd, &input);
    let results: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 4, "{}", out.stdout);
    for r in &results {
        let i = r["request_id"].as_str().unwrap()[1..].to_owned();
        let list = r["data"]["denials"].as_array().unwrap();
        let reads: Vec<&str> = list
            .iter()
            .filter(|d| {
                d["layer"] == "landlock" && d["what"].as_str().unwrap().contains("/secret/")
            })
            .map(|d| d["what"].as_str().unwrap())
            .collect();
        assert_eq!(
            reads,
            vec![format!(
                "fs.read_file {}",
                fx.path(&format!("secret/{i}.txt"))
            )],
            "call {i}: {r}"
        );
    }
}

// ---- network: the egress proxy's refusals ----

/// A call with an allowlist: the proxy refuses a target not on it. The refusal shows up
/// in `data.denials` (layer network, folded by target) and the finished entry, and a
/// failure after it names the target and `network.allow`.
#[test]
fn the_egress_proxys_refusals_are_network_denials() {
    let Some(fx) = Fx::new() else { return };
    let _audit = Audit::hold();
    let run = fx.call(
        "fetch",
        "fetch",
        json!({"urls": [REFUSED_URL, REFUSED_URL]}),
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let got = run.result();
    assert_eq!(got[0]["status"], 403, "{}", run.stdout);
    let list = denials(&run);
    let refused = find(&list, "network", REFUSED_TARGET)
        .unwrap_or_else(|| panic!("no network denial: {}", run.stdout));
    assert_eq!(refused["count"], 2, "folded: {refused}");
    assert_eq!(refused["setting"], "network.allow", "{refused}");
    assert!(
        refused["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{refused}"
    );
    assert!(observed(&run, "network"), "{}", run.stdout);
    let entry = fx.finished(&run);
    assert_eq!(entry["denials"], run.json["data"]["denials"]);
    assert_eq!(
        entry["denials_summary"],
        run.json["data"]["denials_summary"]
    );
}

#[test]
fn a_failure_after_a_network_denial_names_the_target_and_network_allow() {
    let Some(fx) = Fx::new() else { return };
    let _audit = Audit::hold();
    let run = fx.call("fetch", "fetch_or_fail", json!({"urls": [REFUSED_URL]}));
    assert_eq!(run.code_word(), "plugin_failed", "{}", run.stdout);
    let error = run.json["data"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("the sandbox refused {REFUSED_TARGET} (network")),
        "{error}"
    );
    assert!(error.contains("network.allow would allow it"), "{error}");
    assert_eq!(fx.finished(&run)["error"], error);
}

// ---- upm doctor ----

fn doctor_row(layer: &str) -> Value {
    let out = Command::new(upm_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["layer"] == layer)
        .cloned()
        .unwrap_or_else(|| panic!("no {layer} row: {report}"))
}

#[test]
fn doctor_says_whether_landlock_denials_are_observable() {
    if !is_root() {
        eprintln!("SKIPPED: doctor's audit row needs root");
        return;
    }
    {
        let Some(_audit) = Audit::set(1) else { return };
        let row = doctor_row("landlock_denials");
        assert_eq!(row["available"], true, "{row}");
    }
    {
        let Some(_audit) = Audit::set(0) else { return };
        let row = doctor_row("landlock_denials");
        assert_eq!(row["available"], false, "{row}");
        assert!(
            row["detail"].as_str().unwrap().contains("audit is off"),
            "{row}"
        );
    }
    let row = doctor_row("seccomp_denials");
    assert_eq!(row["available"], true, "{row}");
}
