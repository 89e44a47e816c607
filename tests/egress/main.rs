//! The egress allowlist (issue 22), through the real binary, on loopback only: HTTP
//! servers this test starts on 127.0.0.1 (one allowed, one not), real clients inside
//! the sandbox (curl plain, `-p` and SOCKS, Python's urllib, `pip install` from a local
//! index of a wheel the test builds), and the audit log each connection lands in.
//!
//! The plugin's 127.0.0.1 is its own network namespace's: the servers here are reached
//! only through upm's proxy, which runs in the test's (the host's) namespace.
//!
//! Every test needs root (the sandbox's uid switch, as in tests/sandbox.rs): run as
//! another user they say SKIPPED and return.

#[path = "../common/mod.rs"]
mod common;

use common::{is_root, request, run_command, Run, TestDir};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the proxy listens inside the plugin's namespace.
const PROXY: &str = "127.0.0.1:3128";

const FETCH: &str = r#"#!/usr/bin/python3
import json, sys, urllib.request, urllib.error
out = []
for url in json.load(sys.stdin)["args"]["urls"]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            out.append({"status": r.status, "body": r.read().decode("utf-8", "replace")})
    except urllib.error.HTTPError as e:
        out.append({"status": e.code, "error": str(e)})
    except Exception as e:
        out.append({"error": repr(e)})
print(json.dumps(out))
"#;

const CURL: &str = r#"#!/usr/bin/python3
import json, subprocess, sys
out = []
for argv in json.load(sys.stdin)["args"]["runs"]:
    p = subprocess.run(["/usr/bin/curl", "-sS", "-m", "10", *argv], capture_output=True, text=True)
    out.append({"exit": p.returncode, "stdout": p.stdout, "stderr": p.stderr})
print(json.dumps(out))
"#;

/// What a plugin can do with sockets itself, around the proxy.
const PROBE: &str = r#"#!/usr/bin/python3
import json, socket, sys, time
args = json.load(sys.stdin)["args"]
out = {}
def _attempt(name, f):
    try:
        out[name] = {"ok": f()}
    except OSError as e:
        out[name] = {"errno": e.errno, "error": str(e)}
attempt = _attempt
def connect(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(address)
    s.close()
    return True
port = args.get("port", 1)
if "raw" in args or "silent" in args:
    # Only what was asked: no other connection to the proxy.
    attempt = lambda name, f: None if name != "raw" else _attempt(name, f)
attempt("direct_v4", lambda: connect(socket.AF_INET, ("127.0.0.1", port)))
attempt("direct_v6", lambda: connect(socket.AF_INET6, ("::1", port)))
attempt("proxy_port", lambda: connect(socket.AF_INET, ("127.0.0.1", 3128)))
attempt("tcp6", lambda: bool(socket.socket(socket.AF_INET6, socket.SOCK_STREAM)))
attempt("tcp_nonblock_cloexec", lambda: bool(socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, socket.IPPROTO_TCP)))
attempt("udp", lambda: bool(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)))
attempt("udp6", lambda: bool(socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)))
attempt("unix", lambda: bool(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)))
attempt("netlink", lambda: bool(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)))
attempt("raw_ip", lambda: bool(socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)))
attempt("sctp", lambda: bool(socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132)))
attempt("bind", lambda: socket.socket().bind(("127.0.0.1", 0)) or True)
def raw(text, hold=0):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(text.encode())
    start = time.monotonic()
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        if hold and data.startswith(b"HTTP/1.1 200") and b"\r\n\r\n" in data:
            # A tunnel: wait for the proxy to close it, and say when.
            s.settimeout(hold)
    return {"reply": data.decode("utf-8", "replace"), "seconds": time.monotonic() - start}
if "raw" in args:
    attempt("raw", lambda: raw(args["raw"], args.get("hold", 0)))
if "silent" in args:
    # Connections that never send a request, left open as the plugin exits.
    held = [socket.create_connection(("127.0.0.1", 3128)) for _ in range(args["silent"])]
    out["silent"] = len(held)
print(json.dumps(out))
"#;

/// The plugin's environment, as it sees it.
const ENV: &str = r#"#!/usr/bin/python3
import json, os
print(json.dumps(dict(os.environ)))
"#;

/// pip inside the sandbox: installs from the index the test serves, then imports.
const PIP: &str = r#"#!/usr/bin/python3
import json, os, subprocess, sys
args = json.load(sys.stdin)["args"]
site = os.path.join(os.environ["TMPDIR"], "site")
p = subprocess.run(["/usr/bin/python3", "-m", "pip", "install", "--no-cache-dir",
                    "--disable-pip-version-check", "-vvv", "--retries", "0", "--timeout", "10",
                    "--index-url", args["index"], "--target", site, "upmdemo"],
                   capture_output=True, text=True)
out = {"exit": p.returncode, "stderr": p.stderr[-4000:],
       # What pip's log (-vvv) says about the proxy's answers.
       "proxy_said": [l for l in (p.stdout + p.stderr).splitlines() if "(upm: " in l]}
if p.returncode == 0:
    q = subprocess.run(["/usr/bin/python3", "-c", "import upmdemo; print(upmdemo.GREETING)"],
                       capture_output=True, text=True, env={"PYTHONPATH": site})
    out["greeting"] = q.stdout.strip()
print(json.dumps(out))
"#;

/// Builds a minimal wheel by hand (a zip with METADATA, WHEEL and RECORD) and the
/// simple index page that links it, with Debian's Python.
const MAKE_WHEEL: &str = r#"
import base64, hashlib, os, sys, zipfile
root = sys.argv[1]
name, ver = "upmdemo", "1.0"
dist = f"{name}-{ver}.dist-info"
files = {
    f"{name}/__init__.py": b"GREETING = 'installed through upm'\n",
    f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n".encode(),
    f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: upm-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for path, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(data)}")
record.append(f"{dist}/RECORD,,")
files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
wheel = f"{name}-{ver}-py3-none-any.whl"
with zipfile.ZipFile(os.path.join(root, wheel), "w") as z:
    for path, data in files.items():
        z.writestr(path, data)
with open(os.path.join(root, "index.html"), "w") as f:
    f.write(f'<html><body><a href="/packages/{wheel}">{wheel}</a></body></html>\n')
"#;

// ---------------------------------------------------------------------------
// A small HTTP server on 127.0.0.1, in a thread of the test.

#[derive(Clone)]
enum Reply {
    /// GET path → body (200), else 404. One request per connection.
    Files(HashMap<String, Vec<u8>>),
    /// Accepts and holds the connection, answering nothing, until the client closes.
    Hold,
}

struct Server {
    port: u16,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// When each held connection was closed by the other side.
    closed: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(reply: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Server::on(listener, reply)
    }

    fn on(listener: TcpListener, reply: Reply) -> Server {
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, c, s) = (accepted.clone(), closed.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let (reply, c) = (reply.clone(), c.clone());
                std::thread::spawn(move || serve(conn, &reply, &c));
            }
        });
        Server {
            port,
            accepted,
            closed,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut conn: TcpStream, reply: &Reply, closed: &Mutex<Vec<Instant>>) {
    match reply {
        Reply::Hold => {
            let mut buf = [0u8; 4096];
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            closed.lock().unwrap().push(Instant::now());
        }
        Reply::Files(files) => {
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let text = String::from_utf8_lossy(&head);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (status, body) = match files.get(&path) {
                Some(b) => ("200 OK", b.clone()),
                None => ("404 Not Found", b"not here\n".to_vec()),
            };
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = conn.write_all(&body);
        }
    }
}

fn files(entries: &[(&str, &[u8])]) -> Reply {
    Reply::Files(
        entries
            .iter()
            .map(|(p, b)| (p.to_string(), b.to_vec()))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// The fixture: a config whose plugins all share one network setting.

struct Fx {
    dir: TestDir,
    config: PathBuf,
}

/// `None` (and a loud SKIPPED) without root.
fn fixture(network: Value) -> Option<Fx> {
    fixture_with(network, |_| {})
}

fn fixture_with(network: Value, tweak: impl FnOnce(&mut Value)) -> Option<Fx> {
    if !is_root() {
        eprintln!(
            "SKIPPED: the egress tests run upm's sandbox, which needs root here; run them as root"
        );
        return None;
    }
    let dir = TestDir::new();
    for (name, text) in [
        ("fetch.py", FETCH),
        ("curl.py", CURL),
        ("probe.py", PROBE),
        ("pip.py", PIP),
        ("env.py", ENV),
    ] {
        dir.write(&format!("plugins/{name}"), text, true);
    }
    let plugin = |file: &str, methods: &[&str]| json!({"command": [format!("plugins/{file}")], "allowed_methods": methods});
    let mut cfg = json!({
        "require_schemas": false,
        "sandbox": {
            "network": network,
            "limits": {"timeout_ms": 30000, "max_processes": 32},
            // pip reads what distribution it runs on.
            "read_paths": ["/etc/debian_version", "/etc/os-release"]
        },
        "plugins": {
            "fetch": plugin("fetch.py", &["get"]),
            "curl": plugin("curl.py", &["run"]),
            "probe": plugin("probe.py", &["probe"]),
            "pip": plugin("pip.py", &["install"]),
            "env": plugin("env.py", &["show"]),
        }
    });
    tweak(&mut cfg);
    let config = dir.config(&cfg);
    Some(Fx { dir, config })
}

impl Fx {
    fn command(&self) -> Command {
        let mut cmd = Command::new(common::upm_bin());
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/root")
            .args(["run", "--config", self.config.to_str().unwrap()]);
        cmd
    }

    fn call(&self, plugin: &str, method: &str, args: Value) -> Run {
        run_command(self.command(), &request(plugin, method, args))
    }

    /// The call's result, or a panic that shows the whole response.
    fn ok(&self, plugin: &str, method: &str, args: Value) -> (Value, Value) {
        let run = self.call(plugin, method, args);
        assert_eq!(
            run.code, 0,
            "{plugin}.{method}: {}\n{}",
            run.stdout, run.stderr
        );
        (run.result().clone(), run.json["data"]["egress"].clone())
    }

    /// The call's `connection` entries in the order the plugin opened them. The log has
    /// them in the order they ended: a refused second connection can end before the
    /// proxy has seen the first one close.
    fn connections(&self) -> Vec<Value> {
        let mut c: Vec<Value> = self
            .dir
            .audit_lines()
            .into_iter()
            .filter(|e| e["event"] == "connection")
            .collect();
        c.sort_by_key(|e| e["connection"].as_u64());
        c
    }

    fn verify_log(&self) {
        let out = Command::new(common::upm_bin())
            .args(["audit", "verify"])
            .arg(self.dir.join("entrypoint.log"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "audit verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn allow(entries: &[String]) -> Value {
    json!({ "allow": entries })
}

fn at(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

const EACCES: i64 = 13;
const EAFNOSUPPORT: i64 = 97;
const ESOCKTNOSUPPORT: i64 = 94;
const EPROTONOSUPPORT: i64 = 93;

mod audit;
mod clients;
mod host_address;
mod layers;
mod limits;
mod mcp;
mod policy;
mod process;
