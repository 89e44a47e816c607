//! `upm mcp` through the real binary: raw JSON-RPC lines for the protocol's edges (bad
//! input, the lifecycle, cancellation with no answer, EOF and SIGTERM), and real MCP
//! clients for the rest: the official Python SDK's (`tests/mcp/client.py`, in the
//! virtualenv `.ci/run` makes at target/mcp-clients/venv) and the MCP Inspector's CLI
//! (target/mcp-clients/node). Without them those tests say SKIPPED; with
//! UPM_TEST_REQUIRE_MCP=1 (as `.ci/run` sets) a missing client fails them.

#[path = "../common/mod.rs"]
mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- fixture

/// The test plugin: one Python executable, its behaviour by method.
const TOOL: &str = r#"#!/usr/bin/python3
import json, os, sys, time
req = json.load(sys.stdin)
m, a = req["method"], req["args"]
if m == "add":
    print(json.dumps({"sum": a["a"] + a["b"]}))
elif m == "bad_output":
    print(json.dumps({"sum": "not a number"}))
elif m == "list":
    print(json.dumps(a))
elif m == "sleep":
    time.sleep(a["seconds"])
    print(json.dumps({"slept": a["seconds"]}))
elif m == "fail":
    sys.stderr.write(a.get("stderr", ""))
    sys.exit(3)
elif m == "flood":
    sys.stdout.write("x" * a["bytes"])
elif m == "hang":
    os.execv("/bin/sh", ["/bin/sh", "-c", "sleep %s & sleep %s; wait" % (a["marker"], a["marker"])])
else:
    print(json.dumps({"got": a}))
"#;

/// A config of three plugins: `Calc` (schemas, output schemas, a non-object schema
/// made of two files, slow methods), `Loose` (a UPM-style method without a schema) and
/// `acme.calc` (a dotted name).
fn fixture(d: &TestDir, top: Value) -> PathBuf {
    d.write("plugins/tool.py", TOOL, true);
    let schemas = [
        (
            "add",
            json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"], "additionalProperties": false}),
        ),
        (
            "add_out",
            json!({"type": "object", "properties": {"sum": {"type": "integer"}}, "required": ["sum"]}),
        ),
        (
            "list",
            json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array",
                   "items": {"$ref": "item.json"}, "maxItems": 10}),
        ),
        ("item", json!({"type": "integer", "minimum": 0})),
        (
            "sleep",
            json!({"type": "object", "properties": {"seconds": {"type": "number", "maximum": 60}},
                   "required": ["seconds"]}),
        ),
        (
            "hang",
            json!({"type": "object", "properties": {"marker": {"type": "string", "pattern": "^[0-9.]+$"}},
                   "required": ["marker"]}),
        ),
    ];
    for (name, s) in schemas {
        d.write(&format!("schemas/{name}.json"), &s.to_string(), false);
    }
    let mut c = json!({"plugins": {
        "Calc": {"command": ["plugins/tool.py"], "description": "Arithmetic",
            "sandbox": {"limits": {"timeout_ms": 60000}},
            "methods": {
                "add": {"schema": "schemas/add.json", "output_schema": "schemas/add_out.json",
                        "description": "Adds a and b"},
                "bad_output": {"schema": "schemas/add.json", "output_schema": "schemas/add_out.json"},
                "list": {"schema": "schemas/list.json", "output_schema": "schemas/list.json"},
                "sleep": {"schema": "schemas/sleep.json"},
                "hang": {"schema": "schemas/hang.json"}}},
        "Loose": {"command": ["plugins/tool.py"], "allowed_methods": ["anything"]},
        "acme.calc": {"command": ["plugins/tool.py"], "methods": {"add": {"schema": "schemas/add.json"}}}
    }});
    for (k, v) in top.as_object().unwrap() {
        c[k] = v.clone();
    }
    d.config(&c)
}

/// A number no other process's command line holds: the `hang` plugin's sleeps show it.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("40.{}{nanos}", std::process::id())
}

/// Host processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

fn finished(d: &TestDir, method: &str) -> Vec<Value> {
    d.audit_lines()
        .into_iter()
        .filter(|e| e["event"] == "finished" && e["method"] == method)
        .collect()
}

// ---------------------------------------------------------------- a raw client

/// `upm mcp` spoken to line by line.
struct Raw {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// Messages read while waiting for another.
    early: VecDeque<Value>,
}

impl Raw {
    fn start(config: &Path, extra: &[&str]) -> Raw {
        let mut child = Command::new(upm_bin())
            .args(["mcp", "--config", config.to_str().unwrap()])
            .args(extra)
            .env_remove("UPM_CONFIG_PATH")
            .env_remove("UPM_LOG_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn upm mcp");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout holds only JSON-RPC lines: {e}: {line}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Raw {
            child,
            stdin,
            lines,
            early: VecDeque::new(),
        }
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().expect("stdin open");
        w.write_all(bytes).unwrap();
        w.write_all(b"\n").unwrap();
        w.flush().unwrap();
    }

    fn send(&mut self, msg: Value) {
        self.send_bytes(msg.to_string().as_bytes());
    }

    fn request(&mut self, id: Value, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
    }

    /// The next message, whatever it answers.
    fn next(&mut self, limit: Duration) -> Option<Value> {
        if let Some(m) = self.early.pop_front() {
            return Some(m);
        }
        self.lines.recv_timeout(limit).ok()
    }

    /// The answer to request `id` (others read meanwhile are kept for later).
    fn answer(&mut self, id: &Value, limit: Duration) -> Value {
        if let Some(i) = self.early.iter().position(|m| &m["id"] == id) {
            return self.early.remove(i).unwrap();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to {id} within {limit:?}"));
            if &m["id"] == id {
                assert_eq!(m["jsonrpc"], "2.0", "{m}");
                return m;
            }
            self.early.push_back(m);
        }
    }

    fn call(&mut self, id: Value, method: &str, params: Value) -> Value {
        self.request(id.clone(), method, params);
        self.answer(&id, Duration::from_secs(20))
    }

    fn initialize(&mut self, version: &str) -> Value {
        let r = self.call(
            json!(0),
            "initialize",
            json!({"protocolVersion": version, "capabilities": {},
                   "clientInfo": {"name": "raw-test", "version": "1"}}),
        );
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        r
    }

    fn tool(&mut self, id: Value, name: &str, arguments: Value) -> Value {
        self.call(
            id,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        )
    }

    /// Starts a `Calc__hang` call under `id` and waits until its plugin (a shell and its
    /// two sleeps) runs; the marker that finds its processes.
    fn hang(&mut self, id: Value) -> String {
        let m = marker();
        self.request(
            id,
            "tools/call",
            json!({"name": "Calc__hang", "arguments": {"marker": m}}),
        );
        wait_for("the plugin runs", Duration::from_secs(20), || {
            processes_with(&m).len() >= 3
        });
        m
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait(&mut self, limit: Duration) -> i32 {
        let status = wait_at_most(&mut self.child, limit).expect("upm mcp exits");
        status.code().unwrap_or(-1)
    }
}

impl Drop for Raw {
    /// EOF first, so that upm ends the calls still running as it should (audited, their
    /// directories removed); killed only if it does not within 10 s. A SIGKILL mid-call
    /// left a call's directory in /tmp about once per full run of the suites.
    fn drop(&mut self) {
        self.stdin = None;
        if wait_at_most(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------- real clients

fn require_clients() -> bool {
    std::env::var("UPM_TEST_REQUIRE_MCP").is_ok_and(|v| v == "1")
}

fn clients_dir() -> PathBuf {
    repo().join("target/mcp-clients")
}

/// The virtualenv's Python with the MCP SDK, or `None` (the test is skipped, loudly).
fn sdk_python(test: &str) -> Option<PathBuf> {
    let python = clients_dir().join("venv/bin/python");
    let ok = python.exists()
        && Command::new(&python)
            .args(["-c", "import mcp"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let why = format!(
        "{test}: SKIPPED: no MCP Python SDK at {} (.ci/run installs it: python3 -m venv \
         target/mcp-clients/venv && target/mcp-clients/venv/bin/pip install 'mcp>=2,<3')",
        python.display()
    );
    assert!(!require_clients(), "{why}, and UPM_TEST_REQUIRE_MCP=1");
    eprintln!("{why}");
    None
}

/// Runs a scenario of `tests/mcp/client.py`; what the client saw.
fn sdk(python: &Path, scenario: &str, config: &Path, args: &[&str]) -> Value {
    let out = Command::new(python)
        .arg(repo().join("tests/mcp/client.py"))
        .arg(scenario)
        .arg(upm_bin())
        .arg(config)
        .args(args)
        .env_remove("UPM_CONFIG_PATH")
        .env_remove("UPM_LOG_FILE")
        .output()
        .expect("run the SDK client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client.py {scenario}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn valid_tool_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[test]
fn sdk_initializes_lists_calls_and_reads_tool_errors() {
    let Some(python) = sdk_python("sdk_initializes_lists_calls_and_reads_tool_errors") else {
        return;
    };
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let seen = sdk(&python, "basic", &config, &[]);

    assert_eq!(seen["protocol_version"], "2025-11-25");
    assert_eq!(seen["server_name"], "upm");
    assert!(seen["capabilities"]["tools"].is_object(), "{seen}");

    let tools = seen["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "Calc__add",
            "Calc__bad_output",
            "Calc__hang",
            "Calc__list",
            "Calc__sleep",
            "Loose__anything",
            "acme-calc__add"
        ]
    );
    assert!(names.iter().all(|n| valid_tool_name(n)));
    let tool = |n: &str| tools.iter().find(|t| t["name"] == n).unwrap();
    let add = tool("Calc__add");
    assert_eq!(add["description"], "Adds a and b");
    assert_eq!(add["title"], "Calc.add");
    assert_eq!(add["_meta"]["upm/plugin"], "Calc");
    assert_eq!(add["outputSchema"]["properties"]["sum"]["type"], "integer");
    // No description of its own: the plugin's.
    assert_eq!(tool("Calc__sleep")["description"], "Arithmetic");
    // A non-object schema of two files: nested under "args", bundled into one document.
    let list = tool("Calc__list");
    assert_eq!(list["inputSchema"]["required"], json!(["args"]));
    assert_eq!(
        list["inputSchema"]["properties"]["args"]["items"]["$ref"],
        "#/$defs/item"
    );
    assert_eq!(list["inputSchema"]["$defs"]["item"]["minimum"], 0);
    assert_eq!(list["outputSchema"]["required"], json!(["result"]));
    // Without a schema: any object, and the tool says so.
    let loose = tool("Loose__anything");
    assert_eq!(loose["inputSchema"], json!({"type": "object"}));
    assert!(loose["_meta"]["upm/no_schema"]
        .as_str()
        .unwrap()
        .contains("allowed_methods"));

    // A call: the result as structuredContent and as text, checked by the SDK against
    // the outputSchema (it raises otherwise).
    let r = &seen["add"];
    assert_eq!(r["isError"], false, "{r}");
    assert_eq!(r["structuredContent"], json!({"sum": 5}));
    assert_eq!(text(r), r#"{"sum":5}"#);
    let call = &r["_meta"]["upm/call"];
    assert_eq!(call["sandbox"]["backend"], "native");
    assert!(call["request_id"].is_string() && call["call_id"].is_string());
    // Nested args and result, through the SDK's own output validation.
    assert_eq!(
        seen["list"]["structuredContent"],
        json!({"result": [1, 2, 3]})
    );
    assert_eq!(
        seen["loose"]["structuredContent"],
        json!({"got": {"x": [1]}})
    );
    assert_eq!(seen["dotted"]["structuredContent"], json!({"sum": 2}));

    // Tool errors the model can read: upm's code and sentence, the violations.
    let e = &seen["schema_error"];
    assert_eq!(e["isError"], true, "{e}");
    assert!(
        text(e).starts_with("invalid_args: the args do not match"),
        "{e}"
    );
    assert!(text(e).contains("\"instance_path\":\"/a\""), "{e}");
    assert!(e.get("structuredContent").is_none());
    let e = &seen["bad_output"];
    assert_eq!(e["isError"], true, "{e}");
    assert!(
        text(e).starts_with(
            "plugin_failed: the plugin's result does not match the method's output_schema"
        ),
        "{e}"
    );
    // An unknown tool is a JSON-RPC error.
    assert!(
        seen["unknown_tool"]
            .as_str()
            .unwrap()
            .contains("Unknown tool: No__such"),
        "{seen}"
    );

    // Every call audited, with its own request_id and the JSON-RPC id.
    let audit = d.audit_lines();
    let started: Vec<&Value> = audit.iter().filter(|e| e["event"] == "started").collect();
    assert_eq!(started.len(), 5, "five calls ran");
    let mut ids: Vec<&str> = started
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "a request_id per call");
    for e in audit.iter().filter(|e| e["mcp"].is_object()) {
        assert_eq!(e["mcp"]["client"]["name"], "mcp", "{e}");
    }
    let add_done = &finished(&d, "add")
        .into_iter()
        .find(|e| e["plugin"] == "Calc")
        .unwrap();
    assert_eq!(add_done["code"], "ok");
    assert_eq!(add_done["mcp"]["tool"], "Calc__add");
    assert!(add_done["mcp"]["jsonrpc_id"].is_number(), "{add_done}");
    let refused: Vec<&Value> = audit.iter().filter(|e| e["event"] == "refused").collect();
    let codes: Vec<&str> = refused
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"invalid_args") && codes.contains(&"not_whitelisted"),
        "{codes:?}"
    );
    assert_eq!(finished(&d, "bad_output")[0]["code"], "plugin_failed");
}

#[test]
fn sdk_offering_2025_06_18_gets_it() {
    let Some(python) = sdk_python("sdk_offering_2025_06_18_gets_it") else {
        return;
    };
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let seen = sdk(&python, "legacy", &config, &["2025-06-18"]);
    assert_eq!(seen["protocol_version"], "2025-06-18");
    assert_eq!(seen["tool_count"], 7);
    assert_eq!(seen["add"]["structuredContent"], json!({"sum": 42}));
}

#[test]
fn sdk_three_calls_in_flight_run_side_by_side() {
    let Some(python) = sdk_python("sdk_three_calls_in_flight_run_side_by_side") else {
        return;
    };
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let seen = sdk(&python, "parallel", &config, &["1"]);
    let calls = seen["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3);
    for c in calls {
        assert_eq!(
            c["result"]["structuredContent"],
            json!({"slept": 1.0}),
            "{c}"
        );
    }
    // One after the other they would take 3 s and more.
    let total = seen["total"].as_f64().unwrap();
    assert!(
        total < 2.5,
        "three 1 s calls took {total:.2} s: they did not overlap"
    );
    // And the log proves it whatever the clock: all three started before one finished.
    let audit = d.audit_lines();
    let pos = |event: &str| -> Vec<usize> {
        audit
            .iter()
            .enumerate()
            .filter(|(_, e)| e["event"] == event && e["method"] == "sleep")
            .map(|(i, _)| i)
            .collect()
    };
    let (started, done) = (pos("started"), pos("finished"));
    assert_eq!((started.len(), done.len()), (3, 3));
    assert!(
        started.iter().max() < done.iter().min(),
        "{started:?} {done:?}"
    );
}

#[test]
fn sdk_cancelling_a_call_kills_its_plugin_tree_and_audits_cancelled() {
    let Some(python) =
        sdk_python("sdk_cancelling_a_call_kills_its_plugin_tree_and_audits_cancelled")
    else {
        return;
    };
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let m = marker();
    let seen = sdk(&python, "cancel", &config, &[&m]);
    // The plugin's shell and its two sleeps ran, then were gone within a second, while
    // the session was still open.
    let before = seen["running_before"].as_array().unwrap();
    assert!(before.len() >= 3, "{seen}");
    let gone = seen["gone_after"].as_f64().unwrap_or(f64::MAX);
    assert!(
        gone < 1.0,
        "the plugin's processes outlived the cancel: {seen}"
    );
    assert!(
        seen.get("answer").is_none(),
        "a cancelled call gets no answer"
    );
    assert_eq!(seen["after"]["structuredContent"], json!({"sum": 3}));
    assert!(processes_with(&m).is_empty());
    let hang = finished(&d, "hang");
    assert_eq!(hang.len(), 1, "{hang:?}");
    assert_eq!(hang[0]["code"], "cancelled");
    assert!(
        hang[0]["error"]
            .as_str()
            .unwrap()
            .contains("notifications/cancelled"),
        "{}",
        hang[0]
    );
}

// ---------------------------------------------------------------- the MCP Inspector

#[test]
fn inspector_cli_lists_and_calls() {
    let inspector = clients_dir().join("node/node_modules/.bin/mcp-inspector");
    if !inspector.exists() {
        let why = format!(
            "inspector_cli_lists_and_calls: SKIPPED: no MCP Inspector at {} (.ci/run installs \
             @modelcontextprotocol/inspector with npm)",
            inspector.display()
        );
        assert!(!require_clients(), "{why}, and UPM_TEST_REQUIRE_MCP=1");
        eprintln!("{why}");
        return;
    }
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let inspect = |args: &[&str]| -> Value {
        let out = Command::new(&inspector)
            .arg("--cli")
            .args(args)
            .arg("--")
            .arg(upm_bin())
            .args(["mcp", "--config", config.to_str().unwrap()])
            .env("MCP_CATALOG_PATH", d.join("catalog.json"))
            .output()
            .expect("run the inspector");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "inspector {args:?}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let listed = inspect(&["--method", "tools/list"]);
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Calc__add") && names.len() == 7,
        "{names:?}"
    );
    let called = inspect(&[
        "--method",
        "tools/call",
        "--tool-name",
        "Calc__add",
        "--tool-arg",
        "a=4",
        "b=5",
    ]);
    assert_eq!(called["structuredContent"], json!({"sum": 9}), "{called}");
    assert_eq!(finished(&d, "add")[0]["code"], "ok");
}

// ---------------------------------------------------------------- the protocol's edges

#[test]
fn lifecycle_negotiation_and_bad_input() {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let mut s = Raw::start(&config, &[]);

    // Before initialize: ping only.
    let r = s.call(json!(1), "tools/list", json!({}));
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not initialized"));
    let r = s.call(json!("p"), "ping", json!({}));
    assert_eq!(r["result"], json!({}));
    // A tools/call before initialize runs nothing.
    let r = s.tool(json!(2), "Calc__add", json!({"a": 1, "b": 2}));
    assert_eq!(r["error"]["code"], -32600, "{r}");

    // A line that is not JSON: a parse error, and the server goes on.
    s.send_bytes(b"{not json");
    let r = s.next(Duration::from_secs(10)).unwrap();
    assert_eq!(r["error"]["code"], -32700, "{r}");
    assert_eq!(r["id"], Value::Null);

    // A revision upm does not speak: it answers with its newest.
    let r = s.initialize("2099-01-01");
    assert_eq!(r["result"]["protocolVersion"], "2025-11-25", "{r}");
    assert_eq!(
        r["result"]["capabilities"],
        json!({"tools": {"listChanged": false}})
    );
    assert_eq!(r["result"]["serverInfo"]["name"], "upm");
    let r = s.initialize("2025-11-25");
    assert_eq!(r["error"]["code"], -32600, "initialize twice: {r}");

    // Not requests upm knows, or not requests at all.
    let r = s.call(json!(3), "resources/list", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    s.send(json!([{"jsonrpc": "2.0", "id": 4, "method": "ping"}]));
    let r = s.next(Duration::from_secs(10)).unwrap();
    assert_eq!(r["error"]["code"], -32600, "a batch: {r}");
    s.send(json!({"jsonrpc": "1.0", "id": 5, "method": "ping"}));
    let r = s.answer(&json!(5), Duration::from_secs(10));
    assert_eq!(r["error"]["code"], -32600, "{r}");
    let r = s.call(json!(6), "tools/call", json!({"arguments": {}}));
    assert_eq!(r["error"]["code"], -32602, "no name: {r}");
    let r = s.tool(json!(7), "Calc__add", json!([1, 2]));
    assert_eq!(r["error"]["code"], -32602, "arguments not an object: {r}");
    let r = s.tool(json!(8), "Nope__nope", json!({}));
    assert_eq!(r["error"]["code"], -32602, "{r}");

    // A nested tool's arguments must be its wrapper: a tool error, like a schema's.
    let r = s.tool(json!(9), "Calc__list", json!({"a": 1}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(text(&r["result"]).starts_with("invalid_args: the arguments of tool \"Calc__list\""));
    // An integer JSON parsing would round: refused under its request's id.
    s.send_bytes(
        br#"{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"Calc__add","arguments":{"a":18446744073709551616,"b":1}}}"#,
    );
    let r = s.answer(&json!(11), Duration::from_secs(10));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not fit in 64 bits"));
    // And the session still works.
    let r = s.tool(json!("ten"), "Calc__add", json!({"a": 4, "b": 6}));
    assert_eq!(r["result"]["structuredContent"], json!({"sum": 10}), "{r}");

    s.close_stdin();
    assert_eq!(s.wait(Duration::from_secs(10)), 0, "EOF: exit 0");

    // Audited: the unreadable line (as a call it may have been) and every tools/call
    // of the initialized session; not the protocol noise, nor calls before initialize.
    let audit = d.audit_lines();
    let refused: Vec<(&str, &Value)> = audit
        .iter()
        .filter(|e| e["event"] == "refused")
        .map(|e| (e["code"].as_str().unwrap(), &e["mcp"]["jsonrpc_id"]))
        .collect();
    assert_eq!(
        refused,
        [
            ("bad_request", &Value::Null),
            ("bad_request", &json!(6)),
            ("bad_request", &json!(7)),
            ("not_whitelisted", &json!(8)),
            ("invalid_args", &json!(9)),
            ("bad_request", &json!(11)),
        ]
    );
    let ok = finished(&d, "add");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["mcp"]["jsonrpc_id"], "ten");
    assert_eq!(
        ok[0]["mcp"]["client"],
        json!({"name": "raw-test", "version": "1"})
    );
}

#[test]
fn each_revision_is_answered_as_asked() {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    for v in ["2025-06-18", "2025-11-25"] {
        let mut s = Raw::start(&config, &[]);
        let r = s.initialize(v);
        assert_eq!(r["result"]["protocolVersion"], v, "{r}");
        // 2025-11-25's Implementation has a description; 2025-06-18's has none.
        assert_eq!(
            r["result"]["serverInfo"].get("description").is_some(),
            v == "2025-11-25"
        );
    }
    let mut s = Raw::start(&config, &[]);
    let r = s.call(json!(1), "initialize", json!({"capabilities": {}}));
    assert_eq!(r["error"]["code"], -32602, "no protocolVersion: {r}");
}

#[test]
fn an_oversized_message_is_refused_unread() {
    let d = TestDir::new();
    let config = fixture(&d, json!({"max_request_bytes": 4096}));
    let mut s = Raw::start(&config, &[]);
    s.initialize("2025-11-25");
    // 64 MiB on one line: refused, never held (upm's peak memory stays far below it).
    let huge = vec![b'x'; 64 << 20];
    s.send_bytes(&huge);
    let r = s.next(Duration::from_secs(30)).unwrap();
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("4096-byte limit"));
    let r = s.call(json!(1), "ping", json!({}));
    assert_eq!(r["result"], json!({}), "the server goes on");
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        hwm_kb < 32 * 1024,
        "upm's peak memory {hwm_kb} kB: the line was buffered"
    );
    // A message within the cap is served.
    let args = json!({"a": 1, "b": 2});
    let r = s.tool(json!(2), "Calc__add", args);
    assert_eq!(r["result"]["structuredContent"], json!({"sum": 3}));
    drop(s);
    let refused: Vec<Value> = d
        .audit_lines()
        .into_iter()
        .filter(|e| e["event"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["code"], "request_too_large");
}

#[test]
fn a_cancelled_call_is_killed_refused_if_queued_and_never_answered() {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    // One worker: the second call waits behind the first.
    let mut s = Raw::start(&config, &["--parallel", "1"]);
    s.initialize("2025-11-25");
    let m = s.hang(json!(1));
    s.request(
        json!(2),
        "tools/call",
        json!({"name": "Calc__add", "arguments": {"a": 1, "b": 1}}),
    );
    let cancel = |s: &mut Raw, id: Value| {
        s.send(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": id, "reason": "test"}}),
        )
    };
    cancel(&mut s, json!(2));
    cancel(&mut s, json!(1));
    // An unknown id is ignored.
    cancel(&mut s, json!(99));
    let gone = wait_for("the plugin's tree is gone", Duration::from_secs(5), || {
        processes_with(&m).is_empty()
    });
    assert!(gone < Duration::from_secs(1), "gone after {gone:?}");
    // No answer to either: the next message is the ping's.
    let r = s.call(json!(3), "ping", json!({}));
    assert_eq!(r["result"], json!({}));
    assert!(
        s.early.is_empty(),
        "answered a cancelled call: {:?}",
        s.early
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.next(Duration::from_millis(200)).is_none());
    // The session goes on, and the ids are free again.
    let r = s.tool(json!(1), "Calc__add", json!({"a": 2, "b": 2}));
    assert_eq!(r["result"]["structuredContent"], json!({"sum": 4}));
    drop(s);

    let hang = finished(&d, "hang");
    assert_eq!(hang[0]["code"], "cancelled", "{hang:?}");
    assert_eq!(hang[0]["mcp"]["jsonrpc_id"], 1);
    let queued: Vec<Value> = d
        .audit_lines()
        .into_iter()
        .filter(|e| e["event"] == "refused" && e["mcp"]["jsonrpc_id"] == 2)
        .collect();
    assert_eq!(queued.len(), 1, "the queued call is refused, audited");
    assert_eq!(queued[0]["code"], "cancelled");
    assert!(queued[0]["error"]
        .as_str()
        .unwrap()
        .contains("the plugin was not run"));
}

#[test]
fn an_id_in_flight_cannot_be_reused() {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let mut s = Raw::start(&config, &[]);
    s.initialize("2025-11-25");
    let m = s.hang(json!(5));
    let r = s.tool(json!(5), "Calc__add", json!({"a": 1, "b": 1}));
    assert_eq!(r["error"]["code"], -32600, "{r}");
    s.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}}),
    );
    wait_for("the plugin's tree is gone", Duration::from_secs(5), || {
        processes_with(&m).is_empty()
    });
}

#[test]
fn refusals_are_answered_at_once_while_a_call_runs() {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    // One worker, busy for 3 s: a refusal queued behind it would be answered after it.
    let mut s = Raw::start(&config, &["--parallel", "1"]);
    s.initialize("2025-11-25");
    let slow = json!({"name": "Calc__sleep", "arguments": {"seconds": 3}});
    s.request(json!(1), "tools/call", slow.clone());
    s.request(
        json!(2),
        "tools/call",
        json!({"name": "Nope__nope", "arguments": {}}),
    );
    s.request(json!(3), "tools/call", json!({"arguments": {}}));
    s.request(
        json!(4),
        "tools/call",
        json!({"name": "Calc__add", "arguments": [1]}),
    );
    s.request(json!(1), "tools/call", slow);
    s.request(
        json!(5),
        "tools/call",
        json!({"name": "Calc__list", "arguments": {"a": 1}}),
    );
    // In order of arrival, all before the slow call's result.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let m = s.next(Duration::from_secs(20)).expect("an answer");
        let what = if m["result"]["isError"] == true {
            format!(
                "{}:{}",
                m["id"],
                text(&m["result"]).split(':').next().unwrap()
            )
        } else if m.get("error").is_some() {
            format!("{}:{}", m["id"], m["error"]["code"])
        } else {
            format!("{}:{}", m["id"], m["result"]["structuredContent"])
        };
        seen.push(what);
    }
    assert_eq!(
        seen,
        [
            "2:-32602",
            "3:-32602",
            "4:-32602",
            "1:-32600",
            "5:invalid_args",
            r#"1:{"slept":3}"#,
        ]
    );
    drop(s);
    // Each refusal audited as before, under its id.
    let refused: Vec<(String, Value)> = d
        .audit_lines()
        .into_iter()
        .filter(|e| e["event"] == "refused")
        .map(|e| {
            (
                e["code"].as_str().unwrap().to_owned(),
                e["mcp"]["jsonrpc_id"].clone(),
            )
        })
        .collect();
    let refused: Vec<(&str, &Value)> = refused.iter().map(|(c, i)| (c.as_str(), i)).collect();
    assert_eq!(
        refused,
        [
            ("not_whitelisted", &json!(2)),
            ("bad_request", &json!(3)),
            ("bad_request", &json!(4)),
            ("bad_request", &json!(1)),
            ("invalid_args", &json!(5)),
        ]
    );
    assert_eq!(finished(&d, "sleep")[0]["code"], "ok");
}

#[test]
fn a_failed_calls_error_ends_with_the_plugins_stderr() {
    let d = TestDir::new();
    d.write("plugins/tool.py", TOOL, true);
    let config = d.config(&json!({"require_schemas": false, "plugins": {
        "P": {"command": ["plugins/tool.py"], "allowed_methods": ["fail"]}
    }}));
    let mut s = Raw::start(&config, &[]);
    s.initialize("2025-11-25");
    let r = s.tool(
        json!(1),
        "P__fail",
        json!({"stderr": "something went wrong\n"}),
    );
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_eq!(
        text(&r["result"]),
        "plugin_failed: the plugin exited with status 3\nstderr:\nsomething went wrong"
    );
    // A long stderr: its last 2 KB, cut at a character, marked.
    let long = format!("{}the real reason", "é".repeat(3000));
    let r = s.tool(json!(2), "P__fail", json!({"stderr": long}));
    let t = text(&r["result"]);
    let (head, tail) = t.split_once("\nstderr (truncated: its last ").expect(t);
    assert_eq!(head, "plugin_failed: the plugin exited with status 3");
    assert!(tail.ends_with("éthe real reason"), "{tail}");
    let shown = tail.split_once("):\n…").expect(tail).1;
    assert!(shown.len() <= 2048 && shown.len() > 2000, "{}", shown.len());
    // No stderr: nothing added.
    let r = s.tool(json!(3), "P__fail", json!({}));
    assert_eq!(
        text(&r["result"]),
        "plugin_failed: the plugin exited with status 3"
    );
}

#[test]
fn a_failed_calls_meta_holds_at_most_16_kib_of_output() {
    let d = TestDir::new();
    d.write("plugins/tool.py", TOOL, true);
    let config = d.config(&json!({"require_schemas": false, "plugins": {
        "P": {"command": ["plugins/tool.py"], "allowed_methods": ["flood"],
              "sandbox": {"limits": {"output_bytes": 100000}}}
    }}));
    let mut s = Raw::start(&config, &[]);
    s.initialize("2025-11-25");
    // Past the output cap: _meta holds the first 16 KiB of what upm kept, marked.
    let r = s.tool(json!(4), "P__flood", json!({"bytes": 300000}));
    assert!(text(&r["result"]).starts_with("limit_exceeded"), "{r}");
    let out = &r["result"]["_meta"]["upm/call"]["stdout"];
    assert_eq!(
        out["text"].as_str().unwrap().len(),
        16 * 1024,
        "{}",
        out["bytes"]
    );
    assert_eq!(out["truncated"], true);
    assert!(out["bytes"].as_u64().unwrap() >= 100000, "{out:?}");
}

/// EOF or SIGTERM while a call runs: the plugin's tree is killed, the call ends
/// `cancelled` in the log (and is answered, if anyone still reads), and upm exits.
fn ends_running_calls(signal: bool) {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let mut s = Raw::start(&config, &[]);
    s.initialize("2025-11-25");
    let m = s.hang(json!(1));
    let t0 = Instant::now();
    if signal {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(s.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    } else {
        s.close_stdin();
    }
    let r = s.answer(&json!(1), Duration::from_secs(5));
    let code = s.wait(Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(code, if signal { 15 } else { 0 });
    assert!(processes_with(&m).is_empty());
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(text(&r["result"]).starts_with("cancelled: "), "{r}");
    let hang = finished(&d, "hang");
    assert_eq!(hang[0]["code"], "cancelled");
    let why = if signal {
        "SIGTERM"
    } else {
        "closed the connection"
    };
    assert!(
        hang[0]["error"].as_str().unwrap().contains(why),
        "{}",
        hang[0]
    );
}

#[test]
fn eof_ends_the_running_calls_cleanly() {
    ends_running_calls(false);
}

#[test]
fn sigterm_ends_the_running_calls_cleanly() {
    ends_running_calls(true);
}

// ---------------------------------------------------------------- configs and listings

#[test]
fn colliding_tool_names_are_refused() {
    let d = TestDir::new();
    d.write("plugins/tool.py", TOOL, true);
    let config = d.config(&json!({"require_schemas": false, "plugins": {
        "a.b": {"command": ["plugins/tool.py"], "allowed_methods": ["m"]},
        "a-b": {"command": ["plugins/tool.py"], "allowed_methods": ["m"]}
    }}));
    let c = config.to_str().unwrap();
    let r = run_with(&["mcp", "--config", c], b"", &[]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stdout.is_empty(), "nothing on stdout: {r:?}");
    assert!(
        r.stderr.contains("plugin \"a.b\", method \"m\"")
            && r.stderr.contains("plugin \"a-b\", method \"m\"")
            && r.stderr.contains("the tool \"a-b__m\""),
        "{}",
        r.stderr
    );
    let r = run_with(&["list", "--config", c, "--format", "mcp"], b"", &[]);
    assert_eq!(r.code, 5);
    assert_eq!(r.json["ok"], false);
    // A config upm run can use all the same: check warns.
    let r = run_with(&["check", "--config", c], b"", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("upm mcp would refuse this config"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_audit_log_that_cannot_be_opened_stops_the_server_at_start() {
    let d = TestDir::new();
    let config = fixture(&d, json!({"audit": {"path": "logs/audit.log"}}));
    let c = config.to_str().unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                      "params": {"protocolVersion": "2025-11-25"}});
    let r = run_with(&["mcp", "--config", c], format!("{init}\n").as_bytes(), &[]);
    assert_eq!(r.code, 11, "audit_error, as a call would: {r:?}");
    assert!(r.stdout.is_empty(), "nothing served: {r:?}");
    assert!(
        r.stderr.contains("every call would fail")
            && r.stderr.contains("logs/audit.log: its directory"),
        "{}",
        r.stderr
    );
    // What upm check says of the same config.
    let r = run_with(&["check", "--config", c], b"", &[]);
    assert_eq!(r.json["ok"], false, "{r:?}");
}

#[test]
fn a_plugin_with_a_problem_is_left_out_and_the_others_served() {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["plugins"]["Gone"] = json!({"command": ["plugins/missing.py"], "allowed_methods": ["go"]});
    // A module not in its python_path may be in the interpreter's own site-packages (a
    // virtualenv's, a pip-installed one): upm check only warns, and the tool is served.
    d.write("py/.keep", "", false);
    c["plugins"]["Installed"] =
        json!({"module": "acme.pipx", "python_path": ["py"], "allowed_methods": ["info"]});
    let config = d.config(&c);
    let cs = config.to_str().unwrap();
    let lines = [
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
               "params": {"protocolVersion": "2025-11-25"}}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "Gone__go", "arguments": {}}}),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let r = run_with(&["mcp", "--config", cs], input.as_bytes(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let answers: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = answers[1]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Calc__add")
            && !names.contains(&"Gone__go")
            && names.contains(&"Installed__info"),
        "{names:?}"
    );
    assert!(
        r.stderr.contains("warning: plugin \"Gone\" is not served")
            && r.stderr.contains("Gone__go")
            && r.stderr.contains("missing.py cannot be opened"),
        "{}",
        r.stderr
    );
    let e = &answers[2]["error"];
    assert_eq!(e["code"], -32602, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("left it out at start")
            && e["message"].as_str().unwrap().contains("missing.py"),
        "{e}"
    );
    let refused: Vec<Value> = d
        .audit_lines()
        .into_iter()
        .filter(|e| e["event"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["code"], "config_error");
    assert_eq!(refused[0]["mcp"]["jsonrpc_id"], 2);
    // The other plugins' tools run.
    let mut s = Raw::start(&config, &[]);
    s.initialize("2025-11-25");
    let r = s.tool(json!(1), "Calc__add", json!({"a": 2, "b": 3}));
    assert_eq!(r["result"]["structuredContent"], json!({"sum": 5}), "{r}");
    drop(s);

    // Every plugin with a problem: nothing left to serve.
    let only = d.config(&json!({"require_schemas": false, "plugins": {
        "Gone": {"command": ["plugins/missing.py"], "allowed_methods": ["go"]}}}));
    let r = run_with(
        &["mcp", "--config", only.to_str().unwrap()],
        input.as_bytes(),
        &[],
    );
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(r.stderr.contains("every tool was left out"), "{}", r.stderr);
}

#[test]
fn list_prints_the_tools_for_mcp_and_openai() {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let c = config.to_str().unwrap();
    let mcp = run_with(&["list", "--config", c, "--format", "mcp"], b"", &[]);
    assert_eq!(mcp.code, 0, "{mcp:?}");
    let mut s = Raw::start(&config, &[]);
    s.initialize("2025-11-25");
    let listed = s.call(json!(1), "tools/list", json!({}));
    assert_eq!(listed["result"], mcp.json, "the same definitions");
    let openai = run_with(&["list", "--config", c, "--format", "openai"], b"", &[]);
    assert_eq!(openai.code, 0);
    let fns = openai.json.as_array().unwrap();
    assert_eq!(fns.len(), 7);
    for (f, t) in fns.iter().zip(mcp.json["tools"].as_array().unwrap()) {
        assert_eq!(f["type"], "function");
        assert!(valid_tool_name(f["function"]["name"].as_str().unwrap()));
        assert_eq!(f["function"]["name"], t["name"]);
        assert_eq!(f["function"]["parameters"], t["inputSchema"]);
        assert_eq!(f["function"]["parameters"]["type"], "object");
    }
    // upm's own listing shows the output schemas.
    let own = run_with(&["list", "--config", c], b"", &[]);
    let add = &own.json["plugins"]["Calc"]["methods"]["add"];
    assert_eq!(add["output_schema"]["required"], json!(["sum"]));
}

#[test]
fn upm_run_checks_results_against_the_output_schema() {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    let r = run_stdin(
        &config,
        &request("Calc", "bad_output", json!({"a": 1, "b": 2})),
    );
    assert_eq!(r.code, 9, "{r:?}");
    assert_eq!(r.code_word(), "plugin_failed");
    assert_eq!(
        r.json["data"]["details"]["violations"][0]["instance_path"],
        "/sum"
    );
    assert!(
        r.json["data"].get("result").is_none(),
        "an invalid result is not passed on"
    );
    let r = run_stdin(&config, &request("Calc", "add", json!({"a": 1, "b": 2})));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.result(), &json!({"sum": 3}));
    // A non-object output schema checks non-object results.
    let r = run_stdin(&config, &request("Calc", "list", json!([1, 2])));
    assert_eq!(r.result(), &json!([1, 2]));
    let audit = finished(&d, "bad_output");
    assert_eq!(audit[0]["code"], "plugin_failed");
    assert!(audit[0].get("mcp").is_none());
}

#[test]
fn a_signature_covers_the_output_schemas() {
    let d = TestDir::new();
    let config = fixture(&d, json!({}));
    std::fs::create_dir(d.join("keys")).unwrap();
    let secret = d.join("secret.pem");
    keygen(&secret, &d.join("keys/k.pub"));
    let c = config.to_str().unwrap();
    let r = run_with(
        &["sign", "--key", secret.to_str().unwrap(), "--config", c],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let keys = d.join("keys");
    let env = [("UPM_TRUSTED_KEYS_DIR", keys.to_str().unwrap())];
    let add = request("Calc", "add", json!({"a": 1, "b": 2}));
    let r = run_with(&["run", "--config", c], &add, &env);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json["data"]["trust"]["status"], "verified");
    // The output schema changed after signing: nothing runs.
    d.write(
        "schemas/add_out.json",
        &json!({"type": "object"}).to_string(),
        false,
    );
    let r = run_with(&["run", "--config", c], &add, &env);
    assert_eq!(r.code, 5, "{r:?}");
    assert_eq!(r.code_word(), "untrusted_config");
    assert!(
        r.json["data"]["error"]
            .as_str()
            .unwrap()
            .contains("add_out.json"),
        "{r:?}"
    );
}
