//! `upm mcp` with an allowlist: a tool call runs its proxy as `upm run` does, its
//! connections are audited with the MCP request they belong to, and cancelling the call
//! ends its connections and its proxy.

use super::process::proxies_of;
use super::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};

/// `upm mcp`, spoken to line by line.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
}

impl Session {
    fn start(fx: &Fx) -> Session {
        let mut child = Command::new(common::upm_bin())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["mcp", "--config", fx.config.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        let mut s = Session {
            child,
            stdin,
            lines,
        };
        s.send(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                      "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                 "clientInfo": {"name": "egress-test", "version": "1"}}}));
        assert!(s.answer(0)["result"]["serverInfo"].is_object());
        s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        s
    }

    fn send(&mut self, msg: Value) {
        let w = self.stdin.as_mut().unwrap();
        writeln!(w, "{msg}").unwrap();
        w.flush().unwrap();
    }

    fn call(&mut self, id: u64, tool: &str, arguments: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                         "params": {"name": tool, "arguments": arguments}}));
    }

    fn answer(&mut self, id: u64) -> Value {
        loop {
            let m = self.lines.recv_timeout(Duration::from_secs(30)).unwrap();
            if m["id"] == id {
                return m;
            }
        }
    }
}

impl Session {
    /// EOF on stdin: upm finishes what runs and exits 0.
    fn end(mut self) {
        self.stdin = None;
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "upm mcp: {status}");
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "upm mcp did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_mcp_tool_call_goes_through_its_proxy_and_is_audited() {
    let allowed = Server::start(files(&[("/", b"through mcp\n")]));
    let other = Server::start(files(&[("/", b"secret\n")]));
    let Some(fx) = fixture(allow(&[at(allowed.port)])) else {
        return;
    };
    let mut s = Session::start(&fx);
    s.call(
        7,
        "fetch__get",
        json!({"urls": [allowed.url("/"), other.url("/")]}),
    );
    let r = &s.answer(7)["result"];
    assert_eq!(r["isError"], false, "{r}");
    let got = &r["structuredContent"]["result"];
    assert_eq!(got[0]["body"], "through mcp\n", "{r}");
    assert_eq!(got[1]["status"], 403, "{r}");
    let egress = &r["_meta"]["upm/call"]["egress"];
    assert_eq!(egress["allowed"], 1, "{r}");
    assert_eq!(egress["refused"], 1, "{r}");
    s.end();
    assert_eq!(other.accepted(), 0);
    let c = fx.connections();
    assert_eq!(c.len(), 2, "{c:#?}");
    for e in &c {
        assert_eq!(e["mcp"]["jsonrpc_id"], 7, "{e}");
    }
    assert_eq!(c[0]["verdict"], "allowed");
    assert_eq!(c[1]["verdict"], "refused");
    fx.verify_log();
}

#[test]
fn cancelling_an_mcp_call_ends_its_connections_and_its_proxy() {
    // The plugin holds a tunnel open (the idle timeout is 30 s): the cancellation kills
    // the plugin, and the call's end closes the host's side and stops the proxy.
    let hold = Server::start(Reply::Hold);
    let Some(fx) = fixture(allow(&[at(hold.port)])) else {
        return;
    };
    let mut s = Session::start(&fx);
    let raw = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", hold.port);
    s.call(3, "probe__probe", json!({"raw": raw, "hold": 60}));
    let t0 = Instant::now();
    while hold.accepted() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the tunnel never opened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let proxies = proxies_of(s.child.id());
    assert_eq!(proxies.len(), 1, "{proxies:?}");
    s.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                  "params": {"requestId": 3, "reason": "test"}}),
    );
    let cancelled = Instant::now();
    while hold.closed.lock().unwrap().is_empty() {
        assert!(
            cancelled.elapsed() < Duration::from_secs(5),
            "the host's side is still open after the cancellation"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    while std::path::Path::new(&format!("/proc/{}", proxies[0].0)).exists() {
        assert!(
            cancelled.elapsed() < Duration::from_secs(5),
            "the proxy outlived its cancelled call"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The session goes on, and the cancelled call's connection is in the log.
    s.send(json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}));
    assert_eq!(s.answer(4)["result"], json!({}));
    s.end();
    let c = fx.connections();
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0]["verdict"], "allowed");
    assert_eq!(c[0]["mcp"]["jsonrpc_id"], 3);
    let finished: Vec<Value> = fx
        .dir
        .audit_lines()
        .into_iter()
        .filter(|e| e["event"] == "finished")
        .collect();
    assert_eq!(finished[0]["code"], "cancelled", "{finished:?}");
    fx.verify_log();
}
