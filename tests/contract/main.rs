//! upm's call contract, end to end: the real binary, real configs, real plugins.
//!
//! Every assertion about a call checks the process exit code AND the result's
//! `data.code` word AND the fields that matter for that case, and every result
//! goes through [`envelope`], which checks what `data` must always carry.
//!
//! One binary, one module per topic (mostly by exit code); the helpers every topic
//! uses are here, the config builder and the runners in `tests/common`.

#[path = "../common/mod.rs"]
mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

/// A TestDir holding copies of the repository's schemas plus a few of our own.
fn setup() -> TestDir {
    let d = TestDir::new();
    for f in [
        "text.json",
        "empty.json",
        "echo.json",
        "greeter_greet.json",
        "greeter_greet_later.json",
        "defs/name.json",
    ] {
        let text = std::fs::read_to_string(repo().join("schemas").join(f)).unwrap();
        d.write(&format!("schemas/{f}"), &text, false);
    }
    d.write(
        "schemas/strict.json",
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "name": { "type": "string", "maxLength": 3 },
    "count": { "type": "integer", "minimum": 0 }
  },
  "required": ["name", "count", "flag"],
  "additionalProperties": false
}"#,
        false,
    );
    d
}

/// The Rust example plugin, with the copies of the repository's schemas.
fn texttools() -> Value {
    texttools_plugin(Path::new("schemas"))
}

/// Writes `plugins/<name>.sh` (a `/bin/sh` script) and returns its absolute path.
fn sh(d: &TestDir, name: &str, body: &str) -> String {
    let p = d.write(
        &format!("plugins/{name}.sh"),
        &format!("#!/bin/sh\n{body}\n"),
        true,
    );
    p.to_string_lossy().into_owned()
}

/// A command plugin whitelisting `methods` without schemas.
fn cmd(path: &str, methods: &[&str]) -> Value {
    command_plugin(path, methods)
}

/// Writes the config: `top` merged over `require_schemas: false` and a short timeout.
fn cfg(d: &TestDir, top: Value) -> PathBuf {
    TestConfig::new().timeout_ms(5000).merge(top).write(d)
}

/// The usual config: TextTools plus whatever else `plugins` adds.
fn tt_cfg(d: &TestDir, more: Value) -> PathBuf {
    TestConfig::new()
        .timeout_ms(5000)
        .plugin("TextTools", texttools())
        .plugins(more)
        .write(d)
}

const PROBE_PY: &str = r#"
import asyncio
import sys


class Probe:
    def __init__(self, project_root, cache_dir, policy):
        self.project_root = project_root
        self.cache_dir = cache_dir
        self.policy = policy

    def echo(self, *args, **kwargs):
        return {"args": list(args), "kwargs": kwargs}

    async def later(self, x, delay_ms=5):
        await asyncio.sleep(delay_ms / 1000)
        return {"later": x}

    def boom(self, what):
        raise ValueError("boom: " + what)

    def noisy(self):
        print('NOISE-OUT {"result": "forged"}')
        print("NOISE-ERR", file=sys.stderr)
        sys.stdout.write("{")
        return {"clean": True}

    def show_policy(self):
        return {"policy": self.policy}
"#;

/// Python class plugins in `py/`: `Probe` (everything works) and `Broken` (import fails).
fn py_cfg(d: &TestDir) -> PathBuf {
    d.write("py/probe.py", PROBE_PY, false);
    d.write(
        "py/broken.py",
        "raise ImportError('frobnicate is not installed')\n",
        false,
    );
    cfg(
        d,
        json!({
            "policy": { "mode": "strict", "n": 3 },
            "plugins": {
                "Probe": {
                    "module": "probe",
                    "python_path": ["py"],
                    "allowed_methods": ["echo", "later", "boom", "noisy", "show_policy", "missing"]
                },
                "Broken": { "module": "broken", "class": "Broken", "python_path": ["py"], "allowed_methods": ["x"] }
            }
        }),
    )
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, exactly, and a real instant close to now.
fn assert_timestamp(ts: &str) {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    assert_eq!(ts.len(), shape.len(), "timestamp {ts:?}");
    for (c, s) in ts.chars().zip(shape.chars()) {
        match s {
            'd' => assert!(c.is_ascii_digit(), "timestamp {ts:?}"),
            _ => assert_eq!(c, s, "timestamp {ts:?}"),
        }
    }
    let t = chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339");
    let skew = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    assert!((0..120).contains(&skew), "timestamp {ts} is {skew} s off");
}

fn assert_uuid_v7(id: &str) {
    let u = uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("{id:?} is not a UUID"));
    assert_eq!(u.get_version_num(), 7, "{id} is not a UUIDv7");
    assert_eq!(u.hyphenated().to_string(), id, "canonical lowercase form");
}

/// What every result carries, success or error.
fn envelope(r: &Run) {
    assert!(
        r.json.is_object(),
        "stdout must be one JSON document; got {:?} (stderr {:?})",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout.trim().lines().count(), 1, "one line: {}", r.stdout);
    let d = &r.json["data"];
    let id = r.json["request_id"].as_str().expect("request_id");
    assert_eq!(d["request_id"], id);
    assert_uuid_v7(d["call_id"].as_str().expect("call_id"));
    assert_ne!(d["call_id"], id, "upm's own id, never the caller's");
    assert_timestamp(d["timestamp"].as_str().expect("timestamp"));
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(d["hostname"], host);
    let pid = d["pid"].as_u64().expect("pid");
    assert!(pid > 0 && pid != u64::from(std::process::id()), "pid {pid}");
    let ms = d["duration_ms"].as_f64().expect("duration_ms");
    assert!((0.0..60_000.0).contains(&ms), "duration_ms {ms}");
    let ok = r.json["success"].as_bool().expect("success");
    assert_eq!(r.json["status"], if ok { "success" } else { "error" });
    assert_eq!(ok, d.get("code").is_none(), "code iff error: {}", r.json);
    // `details`: an object or absent, and no null in it.
    if let Some(details) = d.get("details") {
        let fields = details
            .as_object()
            .unwrap_or_else(|| panic!("details {details}"));
        assert!(
            fields.values().all(|v| !v.is_null()),
            "null in details: {details}"
        );
    }
}

/// A successful call: exit 0, no code word; returns `data.result`.
fn ok(r: &Run) -> &Value {
    envelope(r);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["success"], true);
    assert!(r.json["data"].get("code").is_none());
    assert!(r.json["data"].get("error").is_none());
    r.result()
}

/// A failed call: this exit code, this code word, a readable message; returns `data`.
fn err<'a>(r: &'a Run, exit: i32, code: &str) -> &'a Value {
    envelope(r);
    assert_eq!(
        (r.code, r.code_word()),
        (exit, code),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.json["success"], false);
    let msg = r.json["data"]["error"].as_str().expect("error message");
    assert!(msg.len() > 10, "a sentence, not a token: {msg:?}");
    &r.json["data"]
}

fn error_text(r: &Run) -> &str {
    r.json["data"]["error"].as_str().unwrap_or("")
}

fn call(config: &Path, plugin: &str, method: &str, args: Value) -> Run {
    run_stdin(config, &request(plugin, method, args))
}

/// The audit lines of one request.
fn audit_of(d: &TestDir, id: &str) -> Vec<Value> {
    d.audit_lines()
        .into_iter()
        .filter(|l| l["request_id"] == id)
        .collect()
}

// ---------------------------------------------------------------- shared by the topics

fn config_problems(r: &Run) -> Vec<String> {
    r.json["data"]["details"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("data.details.problems: {}", r.stdout))
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

mod audit;
mod cancel;
mod commands;
mod config;
mod plugin_failures;
mod python;
mod requests;
mod success;
mod validation;
mod whitelist;
