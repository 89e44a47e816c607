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

    fn connections(&self) -> Vec<Value> {
        self.dir
            .audit_lines()
            .into_iter()
            .filter(|e| e["event"] == "connection")
            .collect()
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

// ---------------------------------------------------------------------------

#[test]
fn urllib_reaches_the_listed_host_and_nothing_else() {
    let allowed = Server::start(files(&[("/", b"hello from the allowed host\n")]));
    let other = Server::start(files(&[("/", b"secret\n")]));
    let Some(fx) = fixture(allow(&[at(allowed.port)])) else {
        return;
    };
    let (result, egress) = fx.ok(
        "fetch",
        "get",
        json!({"urls": [allowed.url("/"), other.url("/"), allowed.url("/missing")]}),
    );
    assert_eq!(result[0]["status"], 200, "{result}");
    assert_eq!(result[0]["body"], "hello from the allowed host\n");
    // The refusal reaches the plugin's own error, with the reason.
    assert_eq!(result[1]["status"], 403, "{result}");
    let why = result[1]["error"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "127.0.0.1:{} is not on the plugin's network allowlist",
            other.port
        )),
        "{why}"
    );
    assert_eq!(
        result[2]["status"], 404,
        "the allowed host's own answer: {result}"
    );
    assert_eq!(other.accepted(), 0, "the unlisted server was reached");
    assert_eq!(allowed.accepted(), 2);
    assert_eq!(
        (egress["allowed"].as_u64(), egress["refused"].as_u64()),
        (Some(2), Some(1)),
        "{egress}"
    );
    assert_eq!(egress["refused_targets"][0]["target"], at(other.port));
    assert_eq!(egress["proxy"], PROXY);
}

#[test]
fn curl_plain_tunnelled_and_over_socks() {
    let allowed = Server::start(files(&[("/", b"via curl\n")]));
    let other = Server::start(files(&[("/", b"secret\n")]));
    let Some(fx) = fixture(allow(&[at(allowed.port)])) else {
        return;
    };
    let socks = "socks5h://127.0.0.1:3128";
    let (result, egress) = fx.ok(
        "curl",
        "run",
        json!({"runs": [
            [allowed.url("/")],
            ["-p", allowed.url("/")],
            ["-x", socks, allowed.url("/")],
            [other.url("/")],
            ["-p", other.url("/")],
            ["-x", socks, other.url("/")],
            // Around the proxy: nothing.
            ["--noproxy", "*", allowed.url("/")],
        ]}),
    );
    for i in 0..3 {
        assert_eq!(result[i]["exit"], 0, "run {i}: {result}");
        assert_eq!(result[i]["stdout"], "via curl\n", "run {i}");
    }
    // Plain: curl prints the proxy's 403 body (no -f); -p: the tunnel's 403; SOCKS: code 2.
    assert!(
        result[3]["stdout"]
            .as_str()
            .unwrap()
            .contains("is not on the plugin's network allowlist"),
        "{result}"
    );
    assert_eq!(result[4]["exit"], 56, "{result}");
    assert!(
        result[4]["stderr"].as_str().unwrap().contains("403"),
        "{result}"
    );
    assert_eq!(result[5]["exit"], 97, "{result}");
    assert!(
        result[5]["stderr"].as_str().unwrap().contains("(2)"),
        "{result}"
    );
    assert_eq!(
        result[6]["exit"], 7,
        "a direct connection must fail: {result}"
    );
    assert_eq!(other.accepted(), 0, "the unlisted server was reached");
    assert_eq!(allowed.accepted(), 3, "only the three proxied requests");
    assert_eq!(egress["allowed"], 3, "{egress}");
    assert_eq!(egress["refused"], 3, "{egress}");
    let protocols: Vec<Value> = fx
        .connections()
        .iter()
        .map(|c| c["protocol"].clone())
        .collect();
    for p in ["http", "http_connect", "socks5"] {
        assert_eq!(
            protocols.iter().filter(|x| *x == p).count(),
            2,
            "{p}: {protocols:?}"
        );
    }
}

#[test]
fn every_connection_is_an_audit_entry_of_its_own() {
    let allowed = Server::start(files(&[("/", b"12345")]));
    let other = Server::start(files(&[("/", b"secret\n")]));
    let Some(fx) = fixture(allow(&[at(allowed.port)])) else {
        return;
    };
    let run = fx.call(
        "fetch",
        "get",
        json!({"urls": [allowed.url("/"), other.url("/x?token=1")]}),
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let call_id = run.json["data"]["call_id"].as_str().unwrap();
    let entries = fx.dir.audit_lines();
    let events: Vec<&str> = entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["started", "connection", "connection", "finished"],
        "{entries:#?}"
    );
    let (ok, refused) = (&entries[1], &entries[2]);
    for c in [ok, refused] {
        assert_eq!(c["call_id"], call_id);
        assert_eq!(c["plugin"], "fetch");
        assert_eq!(c["protocol"], "http");
        assert!(c["duration_ms"].as_f64().is_some(), "{c}");
        assert!(
            c["hash"].is_string() && c["prev"].is_string(),
            "chained: {c}"
        );
    }
    assert_eq!(ok["verdict"], "allowed");
    assert_eq!(ok["target"], at(allowed.port));
    assert_eq!(ok["address"], at(allowed.port));
    assert_eq!(ok["entry"], at(allowed.port));
    assert!(ok["bytes_up"].as_u64().unwrap() > 50, "{ok}");
    assert!(ok["bytes_down"].as_u64().unwrap() >= 5, "{ok}");
    assert_eq!(ok["end"], "closed");
    assert_eq!(refused["verdict"], "refused");
    assert_eq!(refused["target"], at(other.port));
    assert_eq!(refused["address"], Value::Null);
    assert!(refused["reason"]
        .as_str()
        .unwrap()
        .contains("not on the plugin's network allowlist"));
    assert_eq!(refused["bytes_down"], 0);
    // The `finished` entry carries the summary, and the started one the list.
    assert_eq!(entries[3]["egress"]["allowed"], 1);
    assert_eq!(entries[3]["egress"]["refused"], 1);
    assert_eq!(
        entries[0]["sandbox_requested"]["layers"]["network"]["detail"]["allow"],
        json!([at(allowed.port)])
    );
    fx.verify_log();
}

#[test]
fn a_direct_connection_around_the_proxy_fails_and_sockets_are_tcp_only() {
    let target = Server::start(files(&[("/", b"x")]));
    let Some(fx) = fixture(allow(&[at(target.port)])) else {
        return;
    };
    let (r, _) = fx.ok("probe", "probe", json!({"port": target.port}));
    // Landlock: connect only to the proxy's port (without its port rule the empty
    // namespace would answer ECONNREFUSED instead).
    assert_eq!(r["direct_v4"]["errno"], EACCES, "{r}");
    assert_eq!(r["direct_v6"]["errno"], EACCES, "{r}");
    assert_eq!(r["bind"]["errno"], EACCES, "{r}");
    assert_eq!(r["proxy_port"]["ok"], true, "{r}");
    // seccomp: TCP over IPv4/IPv6 only.
    assert_eq!(r["tcp6"]["ok"], true, "{r}");
    assert_eq!(r["tcp_nonblock_cloexec"]["ok"], true, "{r}");
    assert_eq!(
        r["udp"]["errno"], ESOCKTNOSUPPORT,
        "no DNS from inside: {r}"
    );
    assert_eq!(r["udp6"]["errno"], ESOCKTNOSUPPORT, "{r}");
    assert_eq!(r["unix"]["errno"], EAFNOSUPPORT, "{r}");
    assert_eq!(r["netlink"]["errno"], EAFNOSUPPORT, "{r}");
    assert_eq!(r["raw_ip"]["errno"], ESOCKTNOSUPPORT, "{r}");
    assert_eq!(r["sctp"]["errno"], EPROTONOSUPPORT, "{r}");
    assert_eq!(target.accepted(), 0, "reached around the proxy");
}

#[test]
fn the_proxy_port_leads_to_upm_not_to_the_hosts_port() {
    // A host process listening at 127.0.0.1:3128 must stay out of reach: the plugin's
    // 127.0.0.1 is its own namespace's, where only upm's listener is.
    let Ok(host_side) = TcpListener::bind(PROXY) else {
        eprintln!("SKIPPED: 127.0.0.1:3128 is taken on this host, the test needs it free");
        return;
    };
    let squatter = Server::on(host_side, Reply::Hold);
    let target = Server::start(files(&[("/", b"through upm\n")]));
    let Some(fx) = fixture(allow(&[at(target.port)])) else {
        return;
    };
    let raw = format!(
        "GET http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n",
        p = target.port
    );
    let (r, _) = fx.ok("probe", "probe", json!({"raw": raw}));
    let reply = r["raw"]["ok"]["reply"].as_str().unwrap_or_default();
    assert!(reply.ends_with("through upm\n"), "{r}");
    assert_eq!(
        squatter.accepted(),
        0,
        "the host's 127.0.0.1:3128 was reached"
    );
}

#[test]
fn a_name_resolving_to_loopback_is_refused_unless_its_address_is_listed() {
    // "localhost" is in /etc/hosts (127.0.0.1): the proxy's resolver reads it.
    let server = Server::start(files(&[("/", b"local mirror\n")]));
    let name = format!("localhost:{}", server.port);
    let url = format!("http://localhost:{}/", server.port);
    let Some(fx) = fixture(allow(std::slice::from_ref(&name))) else {
        return;
    };
    let (r, egress) = fx.ok("fetch", "get", json!({"urls": [url]}));
    assert_eq!(r[0]["status"], 403, "{r}");
    let why = r[0]["error"].as_str().unwrap();
    assert!(why.contains("127.0.0.1 (loopback)"), "{why}");
    assert_eq!(egress["refused"], 1);
    assert_eq!(server.accepted(), 0);
    // The same name, with its address listed as an IP entry: allowed.
    let Some(fx) = fixture(allow(&[name, at(server.port)])) else {
        return;
    };
    let (r, _) = fx.ok("fetch", "get", json!({"urls": [url]}));
    assert_eq!(r[0]["body"], "local mirror\n", "{r}");
    let c = &fx.connections()[0];
    assert_eq!(c["target"], format!("localhost:{}", server.port));
    assert_eq!(
        c["address"],
        at(server.port),
        "the address checked is the one used"
    );
    assert_eq!(c["entry"], format!("localhost:{}", server.port));
}

#[test]
fn a_metadata_address_on_the_list_is_a_config_error() {
    for entry in [
        "169.254.169.254",
        "169.254.0.0/16:80",
        "[fd00:ec2::254]:80",
        "metadata.google.internal",
    ] {
        let Some(fx) = fixture(allow(&["pypi.org".into(), entry.into()])) else {
            return;
        };
        let run = fx.call("fetch", "get", json!({"urls": []}));
        assert_eq!(run.code, 5, "{entry}: {}", run.stdout);
        assert_eq!(run.code_word(), "config_error");
        assert!(
            run.stdout.contains("cloud metadata"),
            "{entry}: {}",
            run.stdout
        );
        let check = Command::new(common::upm_bin())
            .args(["check", "--config", fx.config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(5), "{entry}");
        assert!(String::from_utf8_lossy(&check.stdout).contains("metadata"));
    }
}

#[test]
fn pip_installs_a_wheel_from_a_local_index_through_the_proxy() {
    let wheels = TestDir::new();
    let made = Command::new("/usr/bin/python3")
        .args(["-c", MAKE_WHEEL])
        .arg(&wheels.path)
        .status()
        .unwrap();
    assert!(made.success());
    let wheel = "upmdemo-1.0-py3-none-any.whl";
    let index = std::fs::read(wheels.join("index.html")).unwrap();
    let bytes = std::fs::read(wheels.join(wheel)).unwrap();
    let server = Server::start(files(&[
        ("/simple/upmdemo/", &index),
        (&format!("/packages/{wheel}"), &bytes),
    ]));
    let index_url = server.url("/simple/");
    let Some(fx) = fixture(allow(&[at(server.port)])) else {
        return;
    };
    let (r, egress) = fx.ok("pip", "install", json!({"index": index_url}));
    assert_eq!(r["exit"], 0, "{}", r["stderr"]);
    assert_eq!(r["greeting"], "installed through upm", "{r}");
    assert_eq!(
        egress["allowed"], 2,
        "the index page and the wheel: {egress}"
    );
    assert_eq!(egress["refused"], 0, "{egress}");
    assert!(egress["bytes_down"].as_u64().unwrap() > bytes.len() as u64);
    // Without the index on the list, pip fails, and its log (-v) says why.
    let Some(fx) = fixture(allow(&["pypi.org".into()])) else {
        return;
    };
    let (r, egress) = fx.ok("pip", "install", json!({"index": index_url}));
    assert_ne!(r["exit"], 0, "{r}");
    let said = r["proxy_said"].to_string();
    assert!(
        said.contains(&format!(
            "127.0.0.1:{} is not on the plugin's network allowlist",
            server.port
        )),
        "{r}"
    );
    assert!(egress["refused"].as_u64().unwrap() >= 1, "{egress}");
}

#[test]
fn the_connection_limit_refuses_the_rest_and_audits_only_up_to_it() {
    let server = Server::start(files(&[("/", b"ok")]));
    let Some(fx) = fixture(json!({"allow": [at(server.port)], "max_connections": 2})) else {
        return;
    };
    let url = server.url("/");
    let (r, egress) = fx.ok("fetch", "get", json!({"urls": [url, url, url]}));
    assert_eq!(r[0]["status"], 200);
    assert_eq!(r[1]["status"], 200);
    assert_eq!(r[2]["status"], 403, "{r}");
    assert!(
        r[2]["error"]
            .as_str()
            .unwrap()
            .contains("connection limit (2)"),
        "{r}"
    );
    assert_eq!(egress["connections"], 3);
    assert_eq!(egress["refused_past_limit"], 1, "{egress}");
    assert_eq!(egress["limits_reached"], json!(["max_connections"]));
    assert_eq!(
        fx.connections().len(),
        2,
        "past the limit: counted, not audited one by one"
    );
    assert_eq!(server.accepted(), 2);
}

#[test]
fn the_byte_limit_ends_the_transfer_and_refuses_what_follows() {
    let big = vec![b'x'; 200_000];
    let server = Server::start(files(&[("/big", &big), ("/small", b"small")]));
    let Some(fx) = fixture(json!({"allow": [at(server.port)], "max_bytes": 50_000})) else {
        return;
    };
    let (r, egress) = fx.ok(
        "fetch",
        "get",
        json!({"urls": [server.url("/big"), server.url("/small")]}),
    );
    assert!(r[0]["error"].is_string(), "the big download must fail: {r}");
    assert_eq!(r[1]["status"], 403, "{r}");
    assert!(
        r[1]["error"].as_str().unwrap().contains("byte limit"),
        "{r}"
    );
    assert_eq!(egress["limits_reached"], json!(["max_bytes"]), "{egress}");
    let relayed = egress["bytes_down"].as_u64().unwrap() + egress["bytes_up"].as_u64().unwrap();
    assert!(relayed <= 50_000, "{egress}");
    let c = fx.connections();
    assert!(
        c[0]["end"].as_str().unwrap().contains("byte limit"),
        "{c:?}"
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let hold = Server::start(Reply::Hold);
    let Some(fx) = fixture(json!({"allow": [at(hold.port)], "idle_timeout_ms": 500})) else {
        return;
    };
    let raw = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", hold.port);
    let (r, _) = fx.ok("probe", "probe", json!({"raw": raw, "hold": 20}));
    let seconds = r["raw"]["ok"]["seconds"].as_f64().unwrap();
    assert!(
        (0.4..5.0).contains(&seconds),
        "closed after {seconds} s: {r}"
    );
    assert!(r["raw"]["ok"]["reply"]
        .as_str()
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    let c = fx.connections();
    assert_eq!(c[0]["end"], "idle timeout (500 ms)", "{c:?}");
    assert_eq!(
        hold.closed.lock().unwrap().len(),
        1,
        "the host's side was closed too"
    );
}

#[test]
fn every_connection_ends_with_its_call() {
    // The plugin holds a tunnel open past its timeout: upm kills it, and the proxy
    // closes the host's side when the call ends, not at the 30 s idle timeout.
    let hold = Server::start(Reply::Hold);
    let Some(fx) = fixture_with(json!({"allow": [at(hold.port)]}), |cfg| {
        cfg["sandbox"]["limits"]["timeout_ms"] = json!(1500);
    }) else {
        return;
    };
    let raw = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", hold.port);
    let started = Instant::now();
    let run = fx.call("probe", "probe", json!({"raw": raw, "hold": 60}));
    assert_eq!(run.code_word(), "timeout", "{}", run.stdout);
    let ended = Instant::now();
    assert!(
        ended - started < Duration::from_secs(10),
        "{:?}",
        ended - started
    );
    let closed = hold.closed.lock().unwrap().clone();
    assert_eq!(
        closed.len(),
        1,
        "the host's side is still open after the call"
    );
    assert!(closed[0] <= ended, "closed after upm returned");
    let c = fx.connections();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["verdict"], "allowed");
    assert!(c[0]["end"].is_string(), "{c:?}");
    assert_eq!(run.json["data"]["egress"]["allowed"], 1);
}

#[test]
fn a_connection_that_asks_for_nothing_is_audited_too() {
    let Some(fx) = fixture(allow(&["pypi.org".into()])) else {
        return;
    };
    let (r, egress) = fx.ok("probe", "probe", json!({"silent": 5}));
    assert_eq!(r["silent"], 5);
    let c = fx.connections();
    assert_eq!(c.len(), 5, "{c:#?}");
    for e in &c {
        assert_eq!(e["verdict"], "refused");
        assert_eq!(e["target"], Value::Null);
        let why = e["reason"].as_str().unwrap();
        assert!(
            why.contains("no request") || why.contains("before the proxy took"),
            "{why}"
        );
    }
    assert_eq!(egress["connections"], 5);
    assert_eq!(egress["refused"], 5);
}

/// Processes named `upm-egress` whose parent is `parent`: (pid, uid).
fn proxies_of(parent: u32) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        };
        if field("Name:").as_deref() == Some("upm-egress")
            && field("PPid:").as_deref() == Some(parent.to_string().as_str())
        {
            found.push((pid, field("Uid:").unwrap().parse().unwrap()));
        }
    }
    found
}

#[test]
fn the_proxy_is_a_process_of_its_own_with_a_uid_of_its_own() {
    // The proxy parses what the plugin sends: it runs apart from upm, as neither root nor
    // the plugin's uid, and only while the call runs.
    let hold = Server::start(Reply::Hold);
    let Some(fx) = fixture(json!({"allow": [at(hold.port)], "idle_timeout_ms": 1500})) else {
        return;
    };
    let raw = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", hold.port);
    let mut cmd = fx.command();
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut upm = cmd.spawn().unwrap();
    upm.stdin
        .take()
        .unwrap()
        .write_all(&request("probe", "probe", json!({"raw": raw, "hold": 10})))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.is_empty() && Instant::now() < deadline {
        seen = proxies_of(upm.id());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = upm.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(seen.len(), 1, "one proxy process for the call: {seen:?}");
    let (pid, uid) = seen[0];
    assert!(
        uid >= 0x8000_0000,
        "a uid of its own, not root nor the plugin's: {uid}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the proxy outlived its call"
    );
}

#[test]
fn without_its_proxy_beside_it_upm_refuses_an_allowlist_call() {
    let server = Server::start(files(&[("/", b"x")]));
    let Some(fx) = fixture(allow(&[at(server.port)])) else {
        return;
    };
    // upm alone, without upm-egress beside it.
    let lone = fx.dir.join("bin/upm");
    std::fs::create_dir_all(lone.parent().unwrap()).unwrap();
    std::fs::copy(common::upm_bin(), &lone).unwrap();
    let mut cmd = Command::new(&lone);
    cmd.env_clear().env("PATH", "/usr/bin:/bin").args([
        "run",
        "--config",
        fx.config.to_str().unwrap(),
    ]);
    let run = run_command(
        cmd,
        &request("fetch", "get", json!({"urls": [server.url("/")]})),
    );
    assert_eq!(run.code, 14, "{}", run.stdout);
    assert_eq!(run.code_word(), "sandbox_unavailable");
    assert!(
        run.stdout.contains("upm-egress cannot be used"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.json["data"].get("result"),
        None,
        "the plugin must not have run"
    );
    assert_eq!(server.accepted(), 0);
    let check = Command::new(&lone)
        .args(["check", "--config", fx.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(5));
    let doc: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(doc["plugins"]["fetch"]["ok"], false, "{doc}");
    assert!(doc["problems"].to_string().contains("upm-egress"), "{doc}");
    // upm doctor says so too, and says yes where the proxy is beside upm.
    for (bin, available) in [(lone, false), (common::upm_bin(), true)] {
        let out = Command::new(&bin)
            .args(["doctor", "--json"])
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let row = doc["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["layer"] == "egress_allowlist")
            .cloned()
            .unwrap_or_default();
        assert_eq!(row["available"], available, "{}: {row}", bin.display());
    }
}

#[test]
fn check_and_list_show_each_plugins_list() {
    let Some(fx) = fixture_with(
        allow(&["pypi.org".into(), "*.pythonhosted.org".into()]),
        |cfg| {
            cfg["plugins"]["probe"]["sandbox"] = json!({"network": false});
        },
    ) else {
        return;
    };
    for cmd in ["check", "list"] {
        let out = Command::new(common::upm_bin())
            .args([cmd, "--config", fx.config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let network = &doc["plugins"]["fetch"]["network"];
        assert_eq!(
            network["allow"],
            json!(["pypi.org", "*.pythonhosted.org"]),
            "{cmd}: {doc}"
        );
        assert_eq!(
            network["max_connections"], 256,
            "{cmd}: the defaults are shown"
        );
        assert_eq!(doc["plugins"]["probe"]["network"], false, "{cmd}");
    }
}

#[test]
fn the_container_backend_refuses_an_allowlist_with_a_config_error() {
    let Some(fx) = fixture_with(allow(&["pypi.org".into()]), |cfg| {
        cfg["plugins"]["boxed"] = json!({
            "command": ["/bin/true"], "allowed_methods": ["m"],
            "sandbox": {"backend": "container", "read_paths": [],
                        "image": format!("localhost/x@sha256:{}", "a".repeat(64))}
        });
    }) else {
        return;
    };
    let run = fx.call("boxed", "m", json!({}));
    assert_eq!(run.code, 5, "{}", run.stdout);
    assert!(
        run.stdout.contains("needs the native backend"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_config_without_an_allowlist_gives_no_proxy_and_no_sockets() {
    let server = Server::start(files(&[("/", b"x")]));
    let Some(fx) = fixture(json!(false)) else {
        return;
    };
    let (r, egress) = fx.ok("probe", "probe", json!({"port": server.port}));
    assert_eq!(egress, Value::Null, "no proxy without an allowlist");
    assert_eq!(r["proxy_port"]["errno"], EAFNOSUPPORT, "{r}");
    assert_eq!(r["tcp6"]["errno"], EAFNOSUPPORT, "{r}");
    let (r, _) = fx.ok("fetch", "get", json!({"urls": [server.url("/")]}));
    assert!(r[0]["error"].is_string(), "{r}");
    assert_eq!(server.accepted(), 0);
}

#[test]
fn an_unprivileged_upm_runs_the_proxy_too() {
    let server = Server::start(files(&[("/", b"as uid 4242\n")]));
    let other = Server::start(files(&[("/", b"secret\n")]));
    let Some(fx) = fixture(allow(&[at(server.port)])) else {
        return;
    };
    std::os::unix::fs::chown(&fx.dir.path, Some(4242), Some(4242)).unwrap();
    let mut cmd = fx.command();
    cmd.uid(4242).gid(4242);
    let run = run_command(
        cmd,
        &request(
            "fetch",
            "get",
            json!({"urls": [server.url("/"), other.url("/")]}),
        ),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let creds = &run.json["data"]["sandbox"]["layers"]["credentials"]["detail"]["mode"];
    assert_eq!(creds, "caller_uid_in_user_namespace");
    assert_eq!(run.result()[0]["body"], "as uid 4242\n", "{}", run.stdout);
    assert_eq!(run.result()[1]["status"], 403);
    assert_eq!(other.accepted(), 0);
}

#[test]
fn a_batch_runs_a_proxy_per_call() {
    let server = Server::start(files(&[("/", b"batch")]));
    let Some(fx) = fixture(allow(&[at(server.port)])) else {
        return;
    };
    let mut lines = Vec::new();
    for i in 0..4 {
        let mut r: Value =
            serde_json::from_slice(&request("fetch", "get", json!({"urls": [server.url("/")]})))
                .unwrap();
        r["request_id"] = json!(format!("b{i}"));
        lines.extend_from_slice(r.to_string().as_bytes());
        lines.push(b'\n');
    }
    let mut cmd = Command::new(common::upm_bin());
    cmd.env_clear().env("PATH", "/usr/bin:/bin").args([
        "run",
        "--jsonl",
        "--parallel",
        "2",
        "--config",
        fx.config.to_str().unwrap(),
    ]);
    let run = run_command(cmd, &lines);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let results: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 4);
    for r in &results {
        assert_eq!(r["data"]["result"][0]["body"], "batch", "{r}");
        assert_eq!(r["data"]["egress"]["allowed"], 1, "{r}");
    }
    assert_eq!(server.accepted(), 4);
    assert_eq!(fx.connections().len(), 4);
    fx.verify_log();
}
