//! upm's call contract, end to end: the real binary, real configs, real plugins.
//!
//! Every assertion about a call checks the process exit code AND the result's
//! `data.code` word AND the fields that matter for that case, and every result
//! goes through [`envelope`], which checks what `data` must always carry.

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

/// The Rust example plugin, with the repository's schemas.
fn texttools() -> Value {
    json!({
        "command": [texttools_bin()],
        "methods": {
            "wordcount": { "schema": "schemas/text.json" },
            "upper": { "schema": "schemas/text.json" },
            "reverse": { "schema": "schemas/text.json" },
            "noop": { "schema": "schemas/empty.json" }
        }
    })
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
    json!({ "command": [path], "allowed_methods": methods })
}

/// Writes the config: `top` merged over `require_schemas: false` and a short timeout.
fn cfg(d: &TestDir, top: Value) -> PathBuf {
    let mut c = json!({
        "require_schemas": false,
        "sandbox": { "limits": { "timeout_ms": 5000 } }
    });
    for (k, v) in top.as_object().unwrap() {
        c[k] = v.clone();
    }
    d.config(&c)
}

/// The usual config: TextTools plus whatever else `plugins` adds.
fn tt_cfg(d: &TestDir, more: Value) -> PathBuf {
    let mut plugins = json!({ "TextTools": texttools() });
    for (k, v) in more.as_object().unwrap() {
        plugins[k] = v.clone();
    }
    cfg(d, json!({ "plugins": plugins }))
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

// ---------------------------------------------------------------- 0 success

#[test]
fn success_runs_the_plugin_and_parses_its_stdout() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let r = call(&c, "TextTools", "upper", json!({"text": "héllo world"}));
    assert_eq!(ok(&r), &json!({"text": "HÉLLO WORLD"}));
    let data = &r.json["data"];
    assert_eq!(data["plugin"], "TextTools");
    assert_eq!(data["method"], "upper");
    assert_eq!(data["exit_code"], 0);
    // The result is the stdout: it is not echoed a second time.
    assert!(data.get("stdout").is_none(), "{data}");
    assert_eq!(data["stderr"]["text"], "");
    assert_eq!(data["stderr"]["truncated"], false);
    assert_uuid_v7(r.json["request_id"].as_str().unwrap());

    let r = call(&c, "TextTools", "wordcount", json!({"text": "a b\nc"}));
    assert_eq!(ok(&r), &json!({"lines": 2, "words": 3, "chars": 5}));
}

#[test]
fn empty_stdout_is_a_null_result() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let r = call(&c, "TextTools", "noop", json!({}));
    assert_eq!(ok(&r), &Value::Null);
    assert!(
        r.json["data"].as_object().unwrap().contains_key("result"),
        "result: null must be present, not omitted: {}",
        r.stdout
    );
}

#[test]
fn plugin_stderr_is_captured_beside_the_result() {
    let d = setup();
    let p = sh(&d, "diag", r#"echo "diagnostic line" >&2; echo '{"n": 1}'"#);
    let c = cfg(&d, json!({"plugins": {"Diag": cmd(&p, &["go"])}}));
    let r = call(&c, "Diag", "go", json!({}));
    assert_eq!(ok(&r), &json!({"n": 1}));
    let e = &r.json["data"]["stderr"];
    assert_eq!(e["text"], "diagnostic line\n");
    assert_eq!(e["bytes"], 16);
    assert_eq!(e["truncated"], false);
}

#[test]
fn output_caps_truncate_and_flag_each_stream() {
    let d = setup();
    // 5000 bytes on one stream, then a JSON result.
    let loud = |fd: &str| {
        format!(
            "i=0; while [ $i -lt 100 ]; do printf '%s' \
             xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx >&{fd}; i=$((i+1)); done; echo '{{}}'"
        )
    };
    let err_p = sh(&d, "loud_err", &loud("2"));
    let out_p = sh(&d, "loud_out", &loud("1"));
    let c = cfg(
        &d,
        json!({
            "sandbox": { "limits": { "timeout_ms": 5000, "output_bytes": 1000 } },
            "plugins": { "LoudErr": cmd(&err_p, &["go"]), "LoudOut": cmd(&out_p, &["go"]) }
        }),
    );
    for (plugin, stream) in [("LoudErr", "stderr"), ("LoudOut", "stdout")] {
        let r = call(&c, plugin, "go", json!({}));
        let data = err(&r, 13, "limit_exceeded");
        assert_eq!(data["limit"], "output", "{plugin}");
        let s = &data[stream];
        assert_eq!(s["truncated"], true, "{plugin}: {s}");
        let kept = s["text"].as_str().unwrap().len() as u64;
        assert!(kept <= 1000, "{plugin}: kept {kept} bytes past the cap");
        assert!(
            s["bytes"].as_u64().unwrap() > 1000,
            "{plugin}: bytes counts what was printed: {s}"
        );
        assert!(data.get("result").is_none(), "{plugin}: no result");
    }
}

/// Megabytes on both streams at once, in odd-sized writes, under the cap: kept byte for
/// byte, through each buffer's growth (and the faulting-in of its pages between reads).
#[test]
fn megabytes_on_both_streams_are_kept_exactly() {
    let d = setup();
    let writer = r#"#!/usr/bin/python3
import os, sys
sys.stdin.read()
def pattern(seed, n):
    block, x = bytearray(), seed
    for _ in range(4093):
        x = (x * 1103515245 + 12345) % 2**31
        block.append(97 + x % 26)
    return (bytes(block) * (n // 4093 + 1))[:n]
err = pattern(7, 2_500_001)
body = pattern(3, 3_300_007)
out = b'{"s": "' + body + b'"}'
i = j = 0
step = 1
while i < len(out) or j < len(err):
    step = step * 7 % 200_003 + 1
    if i < len(out):
        i += os.write(1, out[i:i + step])
    if j < len(err):
        j += os.write(2, err[j:j + step // 2 + 1])
"#;
    let p = d.write("plugins/both.py", writer, true);
    let c = cfg(
        &d,
        json!({
            "sandbox": { "limits": { "timeout_ms": 20000, "output_bytes": 8u64 << 20 } },
            "plugins": { "Both": cmd(p.to_str().unwrap(), &["go"]) }
        }),
    );
    let r = call(&c, "Both", "go", json!({}));
    let result = ok(&r).clone();
    // The same generator, here: a 4093-byte block (a prime, so no page lines up) repeated.
    let pattern = |seed: u64, n: usize| {
        let mut x = seed;
        let block: String = (0..4093)
            .map(|_| {
                x = (x * 1103515245 + 12345) % (1 << 31);
                (b'a' + (x % 26) as u8) as char
            })
            .collect();
        block.repeat(n / 4093 + 1)[..n].to_owned()
    };
    assert!(
        result["s"] == pattern(3, 3_300_007),
        "stdout's 3.3 MB came back altered"
    );
    let e = &r.json["data"]["stderr"];
    assert_eq!(e["bytes"], 2_500_001);
    assert_eq!(e["truncated"], false);
    assert!(
        e["text"] == pattern(7, 2_500_001),
        "stderr's 2.5 MB came back altered"
    );
}

// ---------------------------------------------------------------- 2 usage

#[test]
fn argv_form_with_the_wrong_argument_count_is_a_usage_error() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    for argv in [
        vec!["TextTools"],
        vec!["TextTools", "upper"],
        vec!["TextTools", "upper", "{}", "extra"],
    ] {
        let r = run_argv(&c, &argv);
        err(&r, 2, "usage");
        assert!(error_text(&r).contains("usage: upm"), "{}", r.stdout);
        assert!(r.stderr.contains("usage"), "also on stderr: {}", r.stderr);
        let id = r.json["request_id"].as_str().unwrap();
        assert_uuid_v7(id);
        // A refusal like any other: audited.
        let lines = audit_of(&d, id);
        assert_eq!(lines.len(), 1, "usage error not audited: {lines:?}");
        assert_eq!(lines[0]["event"], "refused");
        assert_eq!(lines[0]["code"], "usage");
        assert_eq!(lines[0]["exit_code"], 2);
    }
}

// ---------------------------------------------------------------- 3 bad_request, request_too_large

#[test]
fn malformed_requests_are_bad_requests() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let deep_args = format!(r#"{{"plugin":"TextTools","method":"upper","args":{deep}}}"#);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"plugin=TextTools".to_vec(), "not valid JSON"),
        (
            "truncated JSON",
            br#"{"plugin": "TextTools""#.to_vec(),
            "not valid JSON",
        ),
        ("empty", b"".to_vec(), "empty"),
        (
            "bad UTF-8",
            b"{\"plugin\": \"Text\xffTools\", \"method\": \"upper\"}".to_vec(),
            "not valid UTF-8",
        ),
        (
            "10,000-deep array",
            deep.clone().into_bytes(),
            "nested too deeply",
        ),
        (
            "10,000-deep args",
            deep_args.into_bytes(),
            "nested too deeply",
        ),
        (
            "an integer JSON parsing would round",
            br#"{"plugin": "TextTools", "method": "upper", "args": {"text": "x", "n": 18446744073709551616}}"#.to_vec(),
            "18446744073709551616, which does not fit in 64 bits",
        ),
        (
            "unknown top-level field",
            br#"{"plugin":"TextTools","method":"upper","args":{"text":"x"},"user":"root"}"#
                .to_vec(),
            "unknown field `user`",
        ),
        ("an array", b"[1, 2]".to_vec(), "expected a JSON object"),
        (
            "unknown field, valid id",
            br#"{"plugin":"TextTools","method":"upper","request_id":"keep-me","x":1}"#.to_vec(),
            "unknown field `x`",
        ),
        (
            "a string",
            b"\"TextTools upper\"".to_vec(),
            "expected a JSON object",
        ),
        ("null", b"null".to_vec(), "expected a JSON object"),
        (
            "plugin missing",
            br#"{"method":"upper","args":{}}"#.to_vec(),
            "missing field `plugin`",
        ),
        (
            "plugin not a string",
            br#"{"plugin":7,"method":"upper"}"#.to_vec(),
            "not a valid call",
        ),
    ];
    for (what, input, says) in cases {
        let r = run_stdin(&c, &input);
        err(&r, 3, "bad_request");
        assert!(
            error_text(&r).contains(says),
            "{what}: expected {says:?} in {}",
            r.stdout
        );
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
        if what.contains("valid id") {
            assert_eq!(r.json["request_id"], "keep-me", "a valid id is echoed");
        }
    }
    // The argv form's args are checked the same way.
    let r = run_argv(&c, &["TextTools", "upper", "{not json"]);
    err(&r, 3, "bad_request");
    assert!(
        error_text(&r).starts_with("Error parsing JSON args: "),
        "{}",
        r.stdout
    );
    let r = run_argv(&c, &["TextTools", "upper", &deep]);
    err(&r, 3, "bad_request");
    assert!(error_text(&r).contains("nested too deeply"), "{}", r.stdout);
}

/// The argv form as the OS hands it: an argument that is not UTF-8 is a refused call,
/// answered in JSON and audited, wherever it is (clap would print plain text).
#[test]
fn argv_form_arguments_that_are_not_utf8_are_bad_requests() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let bad = OsStr::from_bytes(b"up\xffper");
    for (i, argv) in [
        [bad, OsStr::new("upper"), OsStr::new("{}")],
        [OsStr::new("TextTools"), bad, OsStr::new("{}")],
        [
            OsStr::new("TextTools"),
            OsStr::new("upper"),
            OsStr::from_bytes(b"{\"text\": \"\xff\"}"),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = std::process::Command::new(upm_bin());
        cmd.arg("--config")
            .arg(&c)
            .args(argv)
            .env_remove("UPM_LOG_FILE");
        let r = run_command(cmd, b"");
        err(&r, 3, "bad_request");
        assert!(
            error_text(&r).contains("not valid UTF-8"),
            "{i}: {}",
            r.stdout
        );
        let id = r.json["request_id"].as_str().unwrap();
        let lines = audit_of(&d, id);
        assert_eq!(lines.len(), 1, "{i}: {lines:?}");
        assert_eq!(lines[0]["event"], "refused");
        assert_eq!(lines[0]["code"], "bad_request");
    }
}

#[test]
fn bad_request_ids_are_refused_and_replaced_by_a_fresh_one() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let long = "a".repeat(129);
    for bad in [
        json!("a b"),
        json!(long),
        json!(""),
        json!("id/../x"),
        json!(42),
    ] {
        let input = serde_json::to_vec(&json!({
            "plugin": "TextTools", "method": "upper", "args": {"text": "x"}, "request_id": bad
        }))
        .unwrap();
        let r = run_stdin(&c, &input);
        err(&r, 3, "bad_request");
        let id = r.json["request_id"].as_str().unwrap();
        assert_ne!(Some(id), bad.as_str(), "an invalid id is never echoed");
        assert_uuid_v7(id);
    }
    // 128 characters is the longest valid id.
    let max = "b".repeat(128);
    let input = serde_json::to_vec(&json!({
        "plugin": "TextTools", "method": "upper", "args": {"text": "x"}, "request_id": max
    }))
    .unwrap();
    let r = run_stdin(&c, &input);
    ok(&r);
    assert_eq!(r.json["request_id"], max.as_str());
}

#[test]
fn stdin_over_a_small_cap_is_too_large_and_the_cap_itself_is_fine() {
    let d = setup();
    let c = cfg(
        &d,
        json!({"max_request_bytes": 64, "plugins": {"TextTools": texttools()}}),
    );
    let base = br#"{"plugin":"TextTools","method":"upper","args":{"text":"x"}}"#;
    let pad = |n: usize| {
        let mut v = base.to_vec();
        v.resize(n, b' ');
        v
    };
    let r = run_stdin(&c, &pad(64));
    assert_eq!(ok(&r), &json!({"text": "X"}), "exactly at the cap");
    let mut with_newline = pad(64);
    with_newline.push(b'\n');
    let r = run_stdin(&c, &with_newline);
    assert_eq!(
        ok(&r),
        &json!({"text": "X"}),
        "a final newline is not counted"
    );
    let r = run_stdin(&c, &pad(65));
    err(&r, 3, "request_too_large");
    assert!(error_text(&r).contains("64-byte limit"), "{}", r.stdout);
    let r = run_stdin(&c, &pad(10_000));
    err(&r, 3, "request_too_large");

    // The argv form's args count against the same cap.
    let args = json!({"text": "y".repeat(80)}).to_string();
    let r = run_argv(&c, &["TextTools", "upper", &args]);
    err(&r, 3, "request_too_large");
    assert_eq!(r.json["data"]["plugin"], "TextTools");
}

/// Default 1 MiB cap, ~2 MiB offered on a pipe that is never closed: upm must
/// answer after reading one byte past the cap, neither waiting for EOF nor
/// draining the rest.
#[test]
fn stdin_over_the_default_cap_is_refused_without_reading_everything() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let mut child = Command::new(upm_bin())
        .args(["run", "--config", c.to_str().unwrap()])
        .env_remove("UPM_CONFIG_PATH")
        .env_remove("UPM_LOG_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let mut input = br#"{"plugin":"TextTools","method":"upper","args":{"text":""#.to_vec();
        input.resize(2 * 1024 * 1024, b'z');
        let written = stdin.write_all(&input);
        // Keep the pipe open (no EOF) until the test is done.
        let _ = done_rx.recv_timeout(Duration::from_secs(20));
        written
    });
    let status = common::wait_at_most(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    let _ = done_tx.send(());
    let written = writer.join().unwrap();
    let status = status.expect("upm must answer without waiting for EOF");
    let json: Value = serde_json::from_str(out.trim()).expect("one JSON result");
    let r = Run {
        code: status.code().unwrap_or(-1),
        json,
        stdout: out,
        stderr: String::new(),
    };
    err(&r, 3, "request_too_large");
    assert!(
        error_text(&r).contains("1048576-byte limit"),
        "{}",
        r.stdout
    );
    assert!(
        written.is_err(),
        "upm must not have drained all 2 MiB (the writer should hit a closed pipe)"
    );
}

// ---------------------------------------------------------------- 4 not_whitelisted

#[test]
fn unknown_and_malformed_plugin_names_are_not_whitelisted() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let invalid = ["../x", "a/b", "a\u{0}b", "/bin/sh", ".hidden", "é"];
    let long65 = "p".repeat(65);
    for name in invalid.iter().copied().chain([long65.as_str()]) {
        let r = call(&c, name, "upper", json!({"text": "x"}));
        err(&r, 4, "not_whitelisted");
        assert!(
            error_text(&r).contains("not in config: ['TextTools'] (not a valid plugin name"),
            "{name:?}: {}",
            r.stdout
        );
    }
    // Syntactically fine, merely unknown: UPM's sentence alone, same code.
    let long64 = "p".repeat(64);
    for name in ["Nope", "texttools", long64.as_str()] {
        let r = call(&c, name, "upper", json!({"text": "x"}));
        err(&r, 4, "not_whitelisted");
        assert_eq!(
            error_text(&r),
            format!("Plugin class '{name}' not in config: ['TextTools']"),
            "{name:?}: {}",
            r.stdout
        );
        assert_eq!(r.json["data"]["plugin"], name);
    }
    let r = run_argv(&c, &["../x", "upper", "{}"]);
    err(&r, 4, "not_whitelisted");
}

/// A refused name is repeated in the response and the audit entry, escaped (U+0085 takes
/// six bytes as `\u{85}`): only its first 128 characters are, so one request's names
/// cannot make an entry many times its own size (enough of them once made a 72 MB entry
/// past which the audit writer could no longer chain).
#[test]
fn a_refused_name_is_repeated_only_in_part() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let name = "\u{85}".repeat(200_000);
    let r = call(&c, &name, "upper", json!({"text": "x"}));
    err(&r, 4, "not_whitelisted");
    assert!(
        r.stdout.len() < 10_000,
        "{} bytes of response",
        r.stdout.len()
    );
    let kept = format!("{}…", "\u{85}".repeat(128));
    assert_eq!(r.json["data"]["plugin"], kept.as_str());
    let lines = d.audit_lines();
    let last = lines.last().unwrap();
    assert_eq!(last["plugin"], kept.as_str(), "{last}");
    assert!(last.to_string().len() < 10_000, "{last}");
}

/// `workdir_root` moves each call's private directory (an operator's tmpfs, say); it is
/// made there, is the plugin's cwd and `$TMPDIR`, and is gone when the call ends.
#[test]
fn the_private_directory_is_made_under_workdir_root() {
    let d = setup();
    let root = d.join("work");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pwd = sh(
        &d,
        "pwd",
        r#"read -r _; printf '{"cwd": "%s", "tmp": "%s"}' "$(pwd)" "$TMPDIR""#,
    );
    let config = cfg(
        &d,
        json!({ "workdir_root": root, "plugins": { "Pwd": cmd(&pwd, &["where"]) } }),
    );
    let r = run_stdin(&config, &request("Pwd", "where", json!({})));
    let result = ok(&r);
    let cwd = result["cwd"].as_str().unwrap();
    let prefix = format!("{}/upm-", root.display());
    assert!(
        cwd.starts_with(&prefix) && cwd.ends_with("/home"),
        "{result}"
    );
    assert_eq!(result["tmp"], result["cwd"], "{result}");
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A config error whose problems include one that `want` recognizes.
fn refused_with(r: &Run, want: impl Fn(&str) -> bool, what: impl std::fmt::Display) {
    err(r, 5, "config_error");
    assert!(
        config_problems(r).iter().any(|p| want(p)),
        "{what}: {}",
        r.stdout
    );
}

/// A root others may write to without the sticky bit would let another user swap a
/// call's directory for their own: refused, as are relative and missing paths.
#[test]
fn an_unsafe_workdir_root_is_a_config_error() {
    let d = setup();
    let pwd = sh(&d, "pwd", "read -r _; echo '{}'");
    let open = d.join("open");
    std::fs::create_dir(&open).unwrap();
    let with_root = |root: Value| {
        let config = cfg(
            &d,
            json!({ "workdir_root": root, "plugins": { "Pwd": cmd(&pwd, &["where"]) } }),
        );
        run_stdin(&config, &request("Pwd", "where", json!({})))
    };
    for (mode, refused) in [(0o777, true), (0o1777, false), (0o755, false)] {
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
        let r = with_root(json!(open));
        if refused {
            err(&r, 5, "config_error");
            let problems = config_problems(&r);
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("workdir_root") && p.contains("sticky")),
                "{problems:?}"
            );
        } else {
            ok(&r);
        }
    }
    if is_root() {
        // Another user's directory: they could rename entries in it, sticky or not.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::os::unix::fs::chown(&open, Some(4242), Some(4242)).unwrap();
        let r = with_root(json!(open));
        refused_with(&r, |p| p.contains("uid 4242"), "another user's root");
        // ... also when it is only an ancestor.
        let inner = open.join("inner");
        std::fs::create_dir(&inner).unwrap();
        let r = with_root(json!(inner));
        err(&r, 5, "config_error");
    } else {
        eprintln!("SKIPPED: another user's workdir_root (needs root to chown)");
    }
    // Where plugins may read, they could read other calls' directories.
    let r = with_root(json!("/usr/local"));
    refused_with(&r, |p| p.contains("inside /usr"), "/usr/local");
    let config = cfg(
        &d,
        json!({ "plugins": { "Pwd": {
            "command": [pwd], "allowed_methods": ["where"],
            "sandbox": { "read_paths": ["/tmp"] }
        } } }),
    );
    let r = run_stdin(&config, &request("Pwd", "where", json!({})));
    refused_with(
        &r,
        |p| p.contains("plugin \"Pwd\"") && p.contains("workdir_root"),
        "read_paths [/tmp]",
    );
    for bad in [json!("relative/dir"), json!(d.join("missing")), json!(pwd)] {
        let r = with_root(bad.clone());
        refused_with(&r, |p| p.contains("workdir_root"), &bad);
    }
    // Not a path at all: one problem, not a second one about the path it is not.
    let r = with_root(json!(42));
    refused_with(&r, |p| p.contains("workdir_root"), "42");
    let about_root = config_problems(&r)
        .into_iter()
        .filter(|p| p.contains("workdir_root"))
        .collect::<Vec<_>>();
    assert_eq!(about_root.len(), 1, "{about_root:?}");
}

// ---------------------------------------------------------------- 5 config_error

fn config_problems(r: &Run) -> Vec<String> {
    r.json["data"]["details"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("data.details.problems: {}", r.stdout))
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn missing_unreadable_and_non_json_configs_are_config_errors() {
    let d = setup();
    let req = request("TextTools", "upper", json!({"text": "x"}));

    let missing = d.join("nope.json");
    let r = run_stdin(&missing, &req);
    err(&r, 5, "config_error");
    let problems = config_problems(&r);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("does not exist"), "{problems:?}");
    assert!(problems[0].contains("nope.json"), "{problems:?}");
    // Audited beside where the config should have been.
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["code"], "config_error");

    // In a directory that does not exist, even the refusal cannot be audited (its log
    // would be beside it): the caller is told so, and nothing else is done.
    let r = run_stdin(&d.join("nodir/upm_config.json"), &req);
    err(&r, 11, "audit_error");
    assert!(
        error_text(&r).starts_with("Logging configuration failed: ")
            && error_text(&r).contains("nodir/entrypoint.log"),
        "{}",
        r.stdout
    );

    // A directory is not a config, not even for root.
    std::fs::create_dir(d.join("dir.json")).unwrap();
    let r = run_stdin(&d.join("dir.json"), &req);
    err(&r, 5, "config_error");
    assert!(
        config_problems(&r)[0].contains("not a regular file"),
        "{}",
        r.stdout
    );
    // Nor a FIFO, which upm once waited on forever (a watchdog fails the test instead).
    let fifo = d.join("fifo.json");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut child = start_call(&fifo, &req);
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("upm waited on a FIFO config");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Nor 5 MB of anything.
    let big = d.write("big.json", &" ".repeat(5 << 20), false);
    let r = run_stdin(&big, &req);
    err(&r, 5, "config_error");
    assert!(
        config_problems(&r)[0].contains("larger than 4194304 bytes"),
        "{}",
        r.stdout
    );

    let p = d.write("broken.json", "{ \"plugins\": ", false);
    let r = run_stdin(&p, &req);
    err(&r, 5, "config_error");
    assert!(
        config_problems(&r)[0].contains("not valid JSON"),
        "{}",
        r.stdout
    );

    // The request is still parsed: its id is echoed on the config error.
    let input = br#"{"plugin":"TextTools","method":"upper","request_id":"cfg-1"}"#;
    let r = run_stdin(&missing, input);
    err(&r, 5, "config_error");
    assert_eq!(r.json["request_id"], "cfg-1");
}

#[test]
fn an_invalid_config_lists_every_problem() {
    let d = setup();
    let c = d.config(&json!({
        "require_schemas": true,
        "max_request_bytes": 8 * 1024 * 1024 + 1,
        "plugins_typo": {},
        "plugins": {
            "../x": { "command": ["/bin/true"], "methods": { "_p": {} } },
            "Both": { "command": ["/bin/true"], "module": "m", "allowed_methods": ["a"] },
            "Nothing": { "command": ["/bin/true"] },
            "Py": { "module": "some_mod", "python_path": [], "allowed_methods": ["a"] },
            "Loose": { "command": ["/bin/true"], "allowed_methods": ["a"], "sandbox": { "netwrk": true } },
            "Zero": { "command": ["/bin/true"], "allowed_methods": ["a"],
                      "sandbox": { "limits": { "open_files": 0, "timeout_ms": 0 } } }
        }
    }));
    let r = call(&c, "Py", "a", json!({}));
    err(&r, 5, "config_error");
    let problems = config_problems(&r);
    for needle in [
        "unknown top-level key \"plugins_typo\"",
        "\"max_request_bytes\" must be at most 8388608",
        "plugin \"../x\": not a valid plugin name",
        "\"_p\" can never be called",
        "plugin \"Both\": has both",
        "plugin \"Nothing\": whitelists no method",
        "plugin \"Py\": \"python_path\" is empty",
        "has no schema",
        "netwrk",
        "plugin \"Zero\": \"sandbox.limits.timeout_ms\" must be at least 1",
        "plugin \"Zero\": \"sandbox.limits.open_files\" must be at least 1",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing problem {needle:?} in {problems:#?}"
        );
    }
    // The sentence names them too.
    assert!(error_text(&r).contains("plugins_typo"), "{}", r.stdout);
    assert!(error_text(&r).contains("netwrk"), "{}", r.stdout);
}

#[test]
fn a_missing_method_schema_file_is_a_config_error() {
    let d = setup();
    let c = cfg(
        &d,
        json!({"plugins": {"TextTools": {
            "command": [texttools_bin()],
            "methods": { "upper": { "schema": "schemas/missing.json" } }
        }}}),
    );
    let r = call(&c, "TextTools", "upper", json!({"text": "x"}));
    err(&r, 5, "config_error");
    assert!(error_text(&r).contains("missing.json"), "{}", r.stdout);
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert!(
        lines.iter().all(|l| l["event"] != "started"),
        "nothing ran: {lines:?}"
    );
}

/// One broken file of the config stops every method, not only the one that uses it:
/// `run`, `list` and `check` agree that the config is invalid.
#[test]
fn a_broken_schema_or_profile_stops_every_method_and_check_and_list_agree() {
    let d = setup();
    d.write("schemas/not_a_schema.json", r#"{"type": "strng"}"#, false);
    d.write("schemas/not_json.json", "{", false);
    d.config(&json!({})); // copies the repository's policies/ beside it
    d.write(
        "policies/broken.json",
        r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
        false,
    );
    let good = json!({ "upper": { "schema": "schemas/text.json" } });
    for (broken, needle) in [
        (
            json!({ "TextTools": { "command": [texttools_bin()], "methods": {
            "upper": { "schema": "schemas/text.json" },
            "other": { "schema": "schemas/missing.json" } } } }),
            "missing.json",
        ),
        (
            json!({ "B": { "command": ["/bin/true"], "methods": { "m": { "schema": "schemas/not_a_schema.json" } } } }),
            "not_a_schema.json",
        ),
        (
            json!({ "B": { "command": ["/bin/true"], "methods": { "m": { "schema": "schemas/not_json.json" } } } }),
            "not_json.json",
        ),
        (
            json!({ "B": { "command": ["/bin/true"], "allowed_methods": ["m"],
                        "sandbox": { "seccomp": "policies/broken.json" } } }),
            "broken.json",
        ),
    ] {
        let mut plugins = json!({ "TextTools": { "command": [texttools_bin()], "methods": good } });
        for (k, v) in broken.as_object().unwrap() {
            plugins[k] = v.clone();
        }
        let c = cfg(&d, json!({ "plugins": plugins }));
        let r = call(&c, "TextTools", "upper", json!({"text": "x"}));
        err(&r, 5, "config_error");
        assert!(
            config_problems(&r).iter().any(|p| p.contains(needle)),
            "{needle}: {}",
            r.stdout
        );
        let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["event"], "refused");
        for cmd in ["check", "list"] {
            let r = run_with(&[cmd, "--config", c.to_str().unwrap()], b"", &[]);
            assert_eq!(r.code, 5, "{cmd} {needle}: {}", r.stdout);
            assert!(r.stdout.contains(needle), "{cmd}: {}", r.stdout);
        }
    }
}

/// Every unknown key is reported, not only the first of each block; one in the
/// top-level `sandbox` block is reported once, not again for every plugin.
#[test]
fn every_unknown_key_is_reported_once() {
    let d = setup();
    let c = cfg(
        &d,
        json!({
            "sandbox": { "netwrok": true, "read_path": [], "limits": { "timeout": 5 } },
            "audit": { "pth": "x.log" },
            "plugins": {
                "A": { "command": ["/bin/true"], "allowed_methods": ["m"],
                       "sandbox": { "network": false, "write_path": [] },
                       "methods": { "n": { "shema": "schemas/empty.json" } } },
                "B": { "command": ["/bin/true"], "allowed_methods": ["m"], "sandbox": { "network": false } },
                "C": { "command": ["/bin/true"], "allowed_methods": ["m"], "comand": [] }
            }
        }),
    );
    let r = call(&c, "A", "m", json!({}));
    err(&r, 5, "config_error");
    let problems = config_problems(&r);
    for (needle, hint) in [
        ("\"sandbox\": unknown key \"netwrok\"", "network"),
        ("\"sandbox\": unknown key \"read_path\"", "read_paths"),
        ("\"sandbox.limits\": unknown key \"timeout\"", "timeout_ms"),
        ("\"audit\": unknown key \"pth\"", "path"),
        (
            "plugin \"A\": \"sandbox\": unknown key \"write_path\"",
            "write_paths",
        ),
        (
            "plugin \"A\", method \"n\": unknown key \"shema\"",
            "schema",
        ),
        ("plugin \"C\": unknown key \"comand\"", "command"),
    ] {
        let found: Vec<_> = problems.iter().filter(|p| p.contains(needle)).collect();
        assert_eq!(found.len(), 1, "{needle}: {problems:#?}");
        assert!(
            found[0].contains(&format!("did you mean \"{hint}\"")),
            "{found:?}"
        );
    }
    for typo in ["netwrok", "read_path", "timeout\""] {
        let n = problems.iter().filter(|p| p.contains(typo)).count();
        assert_eq!(n, 1, "{typo} reported {n} times: {problems:#?}");
    }
    assert_eq!(problems.len(), 7, "{problems:#?}");
}

/// `upm check` finds what every call, or every call of a plugin, would fail on: an audit
/// log that cannot be written, a write path the plugin's uid cannot write, a command
/// it cannot execute (not executable for it, or under a directory it cannot search).
#[test]
fn check_finds_what_calls_would_fail_on() {
    let d = setup();
    d.write("plugins/not_exec.sh", "#!/bin/sh\necho 1\n", false);
    let root_only = d.write("plugins/owner_only", "#!/bin/sh\necho 1\n", true);
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o744)).unwrap();
    let hidden = d.write("hidden/tool.sh", "#!/bin/sh\necho 1\n", true);
    std::fs::set_permissions(d.join("hidden"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(d.join("rootdir")).unwrap();
    let c = cfg(
        &d,
        json!({
            "audit": { "path": "no/such/dir/audit.log" },
            "plugins": {
                "NotExec": cmd("plugins/not_exec.sh", &["m"]),
                "OwnerOnly": cmd(root_only.to_str().unwrap(), &["m"]),
                "Hidden": cmd(hidden.to_str().unwrap(), &["m"]),
                "Writes": { "command": ["/bin/true"], "allowed_methods": ["m"],
                            "sandbox": { "write_paths": ["rootdir", "does-not-exist"] } }
            }
        }),
    );
    let r = run_with(&["check", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 5, "{}", r.stdout);
    let problems: Vec<&str> = r.json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("audit log") && has("no/such/dir"), "{problems:#?}");
    assert!(
        has("plugin \"NotExec\": command cannot be started"),
        "{problems:#?}"
    );
    assert!(has("not_exec.sh (mode 0644"), "{problems:#?}");
    let warnings = r.json["warnings"].to_string();
    assert!(
        warnings.contains("does-not-exist does not exist"),
        "{warnings}"
    );
    // The rest is about another uid than upm's own: only a root upm switches.
    if !is_root() {
        eprintln!(
            "SKIPPED (not root): uid-specific checks of check_finds_what_calls_would_fail_on"
        );
        return;
    }
    assert!(
        has("plugin \"OwnerOnly\": command cannot be started"),
        "{problems:#?}"
    );
    assert!(
        has("(mode 0744, owner 0:0) is not executable by uid 65534"),
        "{problems:#?}"
    );
    assert!(
        has("plugin \"Hidden\": command cannot be started: the directory"),
        "{problems:#?}"
    );
    assert!(has("cannot be searched by uid 65534"), "{problems:#?}");
    assert!(has("plugin \"Writes\": write_paths:"), "{problems:#?}");
    assert!(
        has("rootdir (mode 0755, owner 0:0) is not writable by uid 65534"),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 5, "{problems:#?}");
    // And those calls do fail (the audit log is moved where it can be written).
    let c = cfg(
        &d,
        json!({ "plugins": {
            "OwnerOnly": cmd(root_only.to_str().unwrap(), &["m"]),
            "Writes": { "command": ["/bin/sh"], "allowed_methods": ["m"],
                        "sandbox": { "write_paths": ["rootdir"] } }
        }}),
    );
    err(
        &call(&c, "OwnerOnly", "m", json!({})),
        6,
        "plugin_start_failed",
    );
}

#[test]
fn the_config_is_found_by_flag_env_or_cwd() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let req = request("TextTools", "reverse", json!({"text": "abc"}));
    let c_s = c.to_str().unwrap();
    let want = json!({"text": "cba"});

    // UPM_CONFIG_PATH, from an unrelated cwd.
    let r = run_in(Path::new("/"), &["run"], &req, &[("UPM_CONFIG_PATH", c_s)]);
    assert_eq!(ok(&r), &want);
    // --config wins over UPM_CONFIG_PATH.
    let missing = d.join("missing.json");
    let env = [("UPM_CONFIG_PATH", missing.to_str().unwrap())];
    let r = run_in(Path::new("/"), &["run", "--config", c_s], &req, &env);
    assert_eq!(ok(&r), &want);
    // And the env var really is read: pointing it at nothing fails.
    let r = run_in(Path::new("/"), &["run"], &req, &env);
    err(&r, 5, "config_error");
    assert!(
        config_problems(&r)[0].contains("missing.json"),
        "{}",
        r.stdout
    );
    // Neither: ./upm_config.json.
    let r = run_in(&d.path, &["run"], &req, &[]);
    assert_eq!(ok(&r), &want);
    // The argv form finds it the same way.
    let r = run_in(
        &d.path,
        &["TextTools", "reverse", r#"{"text":"abc"}"#],
        b"",
        &[],
    );
    assert_eq!(ok(&r), &want);
}

#[test]
fn relative_paths_in_the_config_are_relative_to_its_directory() {
    let d = setup();
    sh(&d, "rel", r#"echo '{"from": "rel.sh"}'"#);
    cfg(
        &d,
        json!({
            "audit": { "path": "audit-rel.log" },
            "sandbox": { "seccomp": "policies/default.json", "limits": { "timeout_ms": 5000 } },
            "plugins": { "Rel": {
                "command": ["plugins/rel.sh"],
                "methods": { "go": { "schema": "schemas/empty.json" } }
            }}
        }),
    );
    std::fs::create_dir(d.join("elsewhere")).unwrap();
    let req = request("Rel", "go", json!({}));
    for (cwd, config) in [
        (d.join("elsewhere"), "../upm_config.json".to_owned()),
        (
            PathBuf::from("/"),
            d.join("upm_config.json").to_string_lossy().into_owned(),
        ),
    ] {
        let r = run_in(&cwd, &["run", "--config", &config], &req, &[]);
        assert_eq!(ok(&r), &json!({"from": "rel.sh"}), "cwd {}", cwd.display());
        // The schema was found relative to the config too: it is enforced.
        let bad = request("Rel", "go", json!({"x": 1}));
        let r = run_in(&cwd, &["run", "--config", &config], &bad, &[]);
        err(&r, 10, "invalid_args");
    }
    let log = std::fs::read_to_string(d.join("audit-rel.log")).expect("audit beside the config");
    assert_eq!(log.lines().count(), 2 * 3, "{log}");
    assert!(!d.join("elsewhere/audit-rel.log").exists());
    assert!(!Path::new("/audit-rel.log").exists());
}

/// Every path-valued field of the config names one file whoever calls upm from
/// wherever: `read_paths`, `write_paths`, the seccomp profile, the command, the schema,
/// the audit log and its signing key. Run from the config's directory, from a directory
/// that holds decoys under the same relative names, and from `/`.
#[test]
fn every_relative_path_means_the_same_from_any_working_directory() {
    let d = setup();
    let decoy = TestDir::new();
    for t in [&d, &decoy] {
        t.write(
            "data/allowed.txt",
            &format!("from {}", t.path.display()),
            false,
        );
        std::fs::create_dir(t.join("out")).unwrap();
        // The plugin's uid must be able to write there: only the sandbox decides.
        std::fs::set_permissions(t.join("out"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::create_dir(t.join("keys")).unwrap();
        keygen(&t.join("keys/audit.pem"), &t.join("keys/audit.pub"));
    }
    let (mine, theirs) = (d.join("data/allowed.txt"), decoy.join("data/allowed.txt"));
    sh(
        &d,
        "paths",
        &format!(
            r#"mine=$(cat {} 2>/dev/null || echo denied)
theirs=$(cat {} 2>/dev/null || echo denied)
echo x > {}/out/w 2>/dev/null && wrote=yes || wrote=no
echo x > {}/out/w 2>/dev/null && wrote_decoy=yes || wrote_decoy=no
printf '{{"mine": "%s", "theirs": "%s", "wrote": "%s", "wrote_decoy": "%s"}}\n' "$mine" "$theirs" "$wrote" "$wrote_decoy""#,
            mine.display(),
            theirs.display(),
            d.path.display(),
            decoy.path.display()
        ),
    );
    cfg(
        &d,
        json!({
            "audit": { "path": "logs/audit.log", "signing_key": "keys/audit.pem", "sign_every": 1 },
            "sandbox": {
                "seccomp": "policies/default.json",
                "read_paths": ["data/allowed.txt"],
                "write_paths": ["out"],
                "limits": { "timeout_ms": 5000 }
            },
            "plugins": { "Paths": {
                "command": ["plugins/paths.sh"],
                "methods": { "go": { "schema": "schemas/empty.json" } }
            }}
        }),
    );
    std::fs::create_dir(d.join("logs")).unwrap();
    let config = d.join("upm_config.json");
    let config = config.to_str().unwrap();
    for cwd in [d.path.clone(), decoy.path.clone(), PathBuf::from("/")] {
        let r = run_in(&cwd, &["--config", config, "Paths", "go", "{}"], b"", &[]);
        let result = ok(&r);
        assert_eq!(
            result["mine"],
            format!("from {}", d.path.display()),
            "cwd {}",
            cwd.display()
        );
        assert_eq!(result["theirs"], "denied", "cwd {}", cwd.display());
        assert_eq!(
            (&result["wrote"], &result["wrote_decoy"]),
            (&json!("yes"), &json!("no")),
            "cwd {}",
            cwd.display()
        );
        // What the result reports is absolute, and is the config's.
        let layers = &r.json["data"]["sandbox"]["layers"];
        let landlock = &layers["landlock"]["detail"];
        let has = |list: &Value, p: &Path| {
            list.as_array()
                .unwrap()
                .iter()
                .any(|x| x == p.to_str().unwrap())
        };
        assert!(has(&landlock["read"], &mine), "{landlock}");
        assert!(has(&landlock["write"], &d.join("out")), "{landlock}");
        assert!(
            has(
                &layers["namespaces"]["detail"]["writable_mounts"],
                &d.join("out")
            ),
            "{layers}"
        );
        for list in [&landlock["read"], &landlock["write"]] {
            for p in list.as_array().unwrap() {
                assert!(p.as_str().unwrap().starts_with('/'), "not absolute: {p}");
            }
        }
        assert!(
            layers["seccomp"]["detail"]["file"]
                == d.join("policies/default.json").to_str().unwrap(),
            "{layers}"
        );
    }
    // The audit log is the config's, every entry of it signed with the config's key:
    // the decoy's key, and a key found from `/`, would not verify.
    assert!(!decoy.join("logs").exists() && !Path::new("/logs/audit.log").exists());
    let log = d.join("logs/audit.log");
    let public = d.join("keys/audit.pub");
    let r = run_with(
        &[
            "audit",
            "verify",
            log.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("intact: "), "{}", r.stdout);
    assert!(r.stdout.contains("checkpoint"), "{}", r.stdout);
}

/// A bare command name is looked up in /usr/local/bin:/usr/bin:/bin only: one found
/// nowhere there does not fall back on a file of that name in the caller's directory.
#[test]
fn a_bare_command_is_never_found_in_the_working_directory() {
    let d = setup();
    let name = "upm-test-no-such-command";
    d.write(name, "#!/bin/sh\necho '\"ran from the cwd\"'\n", true);
    let c = cfg(&d, json!({ "plugins": { "Bare": cmd(name, &["go"]) } }));
    let r = run_in(
        &d.path,
        &["--config", c.to_str().unwrap(), "Bare", "go", "{}"],
        b"",
        &[],
    );
    err(&r, 6, "plugin_start_failed");
    assert!(
        error_text(&r).contains("/usr/local/bin:/usr/bin:/bin"),
        "{}",
        r.stdout
    );
    let r = run_in(
        &d.path,
        &["check", "--config", c.to_str().unwrap()],
        b"",
        &[],
    );
    assert_eq!(r.code, 5, "{}", r.stdout);
    assert!(
        r.stdout.contains("is not found in /usr/local/bin"),
        "{}",
        r.stdout
    );
}

// ---------------------------------------------------------------- 6 plugin_start_failed

#[test]
fn a_command_deleted_after_the_config_was_written_fails_to_start() {
    let d = setup();
    let p = sh(&d, "vanishing", "echo '{}'");
    let c = cfg(&d, json!({"plugins": {"Gone": cmd(&p, &["go"])}}));
    std::fs::remove_file(&p).unwrap();
    let r = call(&c, "Gone", "go", json!({}));
    let data = err(&r, 6, "plugin_start_failed");
    assert!(error_text(&r).contains("No such file"), "{}", r.stdout);
    assert!(data.get("result").is_none());
}

/// A plugin that cannot be started is named, with the reason: not executable for the
/// plugin's uid, under a directory it cannot search, on a `noexec` mount, or a script
/// whose `#!` interpreter is missing.
#[test]
fn a_start_failure_names_the_file_and_the_reason() {
    use std::os::unix::process::CommandExt;
    let d = setup();
    let not_exec = d.write("plugins/not_exec.sh", "#!/bin/sh\necho 1\n", false);
    let no_interp = d.write(
        "plugins/no_interp.sh",
        "#!/usr/bin/upm-no-such-shell\n",
        true,
    );
    let owner_only = d.write("plugins/owner_only.sh", "#!/bin/sh\necho 1\n", true);
    std::fs::set_permissions(&owner_only, std::fs::Permissions::from_mode(0o744)).unwrap();
    let hidden = d.write("hidden/tool.sh", "#!/bin/sh\necho 1\n", true);
    std::fs::set_permissions(d.join("hidden"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let noexec = d.write("noexec/tool.sh", "#!/bin/sh\necho 1\n", true);
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let c = cfg(
        &d,
        json!({ "plugins": {
            "NotExec": cmd(&path(&not_exec), &["m"]),
            "NoInterp": cmd(&path(&no_interp), &["m"]),
            "OwnerOnly": cmd(&path(&owner_only), &["m"]),
            "Hidden": cmd(&path(&hidden), &["m"]),
            "NoExec": cmd(&path(&noexec), &["m"]),
        }}),
    );
    let started = |plugin: &str, needles: &[&str]| {
        let r = call(&c, plugin, "m", json!({}));
        err(&r, 6, "plugin_start_failed");
        for n in needles {
            assert!(
                error_text(&r).contains(n),
                "{plugin}: {n:?} in {}",
                r.stdout
            );
        }
    };
    started(
        "NotExec",
        &[
            &format!("exec of {}", not_exec.display()),
            "(mode 0644",
            "is not executable by uid",
        ],
    );
    started(
        "NoInterp",
        &[
            "its #! interpreter cannot be run",
            "/usr/bin/upm-no-such-shell",
        ],
    );
    if !is_root() {
        eprintln!("SKIPPED (not root): another uid's view and a noexec mount");
        return;
    }
    started(
        "OwnerOnly",
        &["(mode 0744, owner 0:0) is not executable by uid 65534"],
    );
    started(
        "Hidden",
        &[
            &format!("exec of {}", hidden.display()),
            "cannot be searched by uid 65534",
        ],
    );
    // upm alone sees d/noexec mounted noexec: a bind mount in a mount namespace of its own.
    let dir = std::ffi::CString::new(path(&d.join("noexec"))).unwrap();
    let mut command = Command::new(upm_bin());
    command.args(["run", "--config", c.to_str().unwrap()]);
    // SAFETY: unshare and mount are async-signal-safe; the string was made before the fork.
    unsafe {
        command.pre_exec(move || {
            let null = std::ptr::null();
            let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    null.cast(),
                ) == 0
                && libc::mount(dir.as_ptr(), dir.as_ptr(), null, libc::MS_BIND, null.cast()) == 0
                && libc::mount(
                    null,
                    dir.as_ptr(),
                    null,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOEXEC,
                    null.cast(),
                ) == 0;
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let r = run_command(command, &request("NoExec", "m", json!({})));
    err(&r, 6, "plugin_start_failed");
    assert!(error_text(&r).contains("mounted noexec"), "{}", r.stdout);
}

/// A script's interpreter knows it by its name, not as `/dev/fd/N`: its `$0`, its
/// `__file__` and its own error messages name the script.
#[test]
fn a_scripts_own_messages_name_the_script() {
    let d = setup();
    let shell = sh(
        &d,
        "named",
        "echo \"I am $0\" >&2\nnosuchcommand-upm\necho '{}'",
    );
    let py = d.write(
        "plugins/named.py",
        "#!/usr/bin/python3\nimport sys\nprint('I am', __file__, file=sys.stderr)\nprint('{}')\n",
        true,
    );
    let c = cfg(
        &d,
        json!({ "plugins": {
            "Sh": cmd(&shell, &["m"]),
            "Py": cmd(py.to_str().unwrap(), &["m"]),
            // Pinned: what runs is the call's verified copy, and still named so.
            "Pinned": { "command": [shell], "allowed_methods": ["m"],
                        "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&shell).unwrap())) }
        }}),
    );
    for plugin in ["Sh", "Py", "Pinned"] {
        let r = call(&c, plugin, "m", json!({}));
        ok(&r);
        let stderr = r.json["data"]["stderr"]["text"].as_str().unwrap();
        assert!(!stderr.contains("/dev/fd/"), "{plugin}: {stderr}");
        let name = if plugin == "Py" {
            "named.py"
        } else {
            "named.sh"
        };
        assert!(stderr.contains(&format!("/{name}\n")), "{plugin}: {stderr}");
        if plugin != "Py" {
            assert!(
                stderr.contains(&format!("/{name}: 3: nosuchcommand-upm: not found")),
                "{stderr}"
            );
        }
    }
}

#[test]
fn a_python_module_that_fails_to_import_fails_to_start() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Broken", "x", json!({}));
    let data = err(&r, 6, "plugin_start_failed");
    assert_eq!(data["details"]["type"], "ImportError");
    assert_eq!(data["details"]["message"], "frobnicate is not installed");
    let tb = data["details"]["traceback"].as_str().unwrap();
    assert!(tb.contains("broken.py"), "{tb}");
    assert!(error_text(&r).contains("frobnicate"), "{}", r.stdout);
}

// ---------------------------------------------------------------- 7 method_not_allowed, 8 method_not_found

#[test]
fn methods_outside_the_whitelist_are_not_allowed() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    // UPM's order: the whitelist first, so an unlisted private name is "not allowed".
    let cases = [
        ("lower", "Method 'lower' not allowed for plugin 'TextTools'"),
        ("Upper", "Method 'Upper' not allowed for plugin 'TextTools'"),
        ("_x", "Method '_x' not allowed for plugin 'TextTools'"),
        (
            "__init__",
            "Method '__init__' not allowed for plugin 'TextTools'",
        ),
        ("a b", "not a valid method name"),
        ("../upper", "not a valid method name"),
        ("", "not a valid method name"),
    ];
    for (method, says) in cases {
        let r = call(&c, "TextTools", method, json!({"text": "x"}));
        err(&r, 7, "method_not_allowed");
        assert!(error_text(&r).contains(says), "{method:?}: {}", r.stdout);
    }
    let r = run_argv(&c, &["TextTools", "_x", "{}"]);
    err(&r, 7, "method_not_allowed");
    // Listed in UPM's allowed_methods: not a config error, and still never callable.
    let c = tt_cfg(
        &d,
        json!({"P": cmd("/bin/true", &["ok", "_x", "__introspect__"])}),
    );
    for m in ["_x", "__introspect__"] {
        let r = call(&c, "P", m, json!({}));
        err(&r, 7, "method_not_allowed");
        assert!(
            error_text(&r).starts_with(&format!(
                "Method '{m}' is private and cannot be called directly"
            )),
            "{m}: {}",
            r.stdout
        );
    }
}

#[test]
fn a_whitelisted_method_the_class_lacks_is_not_found() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Probe", "missing", json!({}));
    let data = err(&r, 8, "method_not_found");
    assert_eq!(
        error_text(&r),
        "Method 'missing' not found in plugin 'Probe'",
        "{}",
        r.stdout
    );
    assert!(data["details"]["message"]
        .as_str()
        .unwrap()
        .contains("Probe has no method"));
}

// ---------------------------------------------------------------- 9 plugin_failed

#[test]
fn a_non_zero_exit_is_a_plugin_failure() {
    let d = setup();
    let p = sh(&d, "fails", "echo 'it broke' >&2; exit 3");
    let c = cfg(&d, json!({"plugins": {"Fails": cmd(&p, &["go"])}}));
    let r = call(&c, "Fails", "go", json!({}));
    let data = err(&r, 9, "plugin_failed");
    assert_eq!(data["exit_code"], 3);
    assert!(error_text(&r).contains("status 3"), "{}", r.stdout);
    assert_eq!(data["stderr"]["text"], "it broke\n");
    assert!(data.get("result").is_none());
}

#[test]
fn a_plugin_killed_by_a_signal_is_a_plugin_failure() {
    let d = setup();
    let p = sh(&d, "segv", "kill -SEGV $$");
    let c = cfg(&d, json!({"plugins": {"Segv": cmd(&p, &["go"])}}));
    let r = call(&c, "Segv", "go", json!({}));
    let data = err(&r, 9, "plugin_failed");
    assert_eq!(data["signal"], libc::SIGSEGV);
    assert!(data.get("exit_code").is_none(), "{data}");
    assert!(error_text(&r).contains("SIGSEGV"), "{}", r.stdout);
}

#[test]
fn processes_the_plugin_leaves_behind_do_not_delay_the_answer() {
    let d = setup();
    let p = sh(&d, "bg", "sleep 5 &\necho '{\"done\": true}'");
    let c = cfg(&d, json!({"plugins": {"Bg": cmd(&p, &["go"])}}));
    let t = Instant::now();
    let r = call(&c, "Bg", "go", json!({}));
    assert_eq!(ok(&r), &json!({"done": true}));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn stdout_that_is_not_one_json_value_is_a_plugin_failure() {
    let d = setup();
    let p = sh(&d, "chatty", "echo 'hello there'");
    let p2 = sh(&d, "two", "echo '{}'; echo '{}'");
    let c = cfg(
        &d,
        json!({"plugins": {"Chatty": cmd(&p, &["go"]), "Two": cmd(&p2, &["go"])}}),
    );
    let r = call(&c, "Chatty", "go", json!({}));
    let data = err(&r, 9, "plugin_failed");
    assert!(
        error_text(&r).contains("not one JSON value"),
        "{}",
        r.stdout
    );
    assert_eq!(
        data["stdout"]["text"], "hello there\n",
        "kept for diagnosis"
    );
    assert_eq!(data["exit_code"], 0);
    let r = call(&c, "Two", "go", json!({}));
    err(&r, 9, "plugin_failed");
}

/// JSON is UTF-8: a string holding other bytes is not silently turned into U+FFFD and
/// passed off as the plugin's value.
#[test]
fn stdout_that_is_not_utf8_is_a_plugin_failure() {
    let d = setup();
    let p = sh(&d, "latin1", r#"printf '{"name": "caf\351"}'"#);
    let c = cfg(&d, json!({"plugins": {"Latin1": cmd(&p, &["go"])}}));
    let r = call(&c, "Latin1", "go", json!({}));
    let data = err(&r, 9, "plugin_failed");
    assert!(
        error_text(&r).contains("not UTF-8 (at byte 13)"),
        "{}",
        r.stdout
    );
    assert_eq!(data["stdout"]["text"], "{\"name\": \"caf\u{fffd}\"}");
    assert_eq!(data["stdout"]["invalid_utf8_at"], 13);
    assert_eq!(data["stdout"]["bytes"], 16);
    assert!(data.get("result").is_none(), "{data}");
}

#[test]
fn a_python_exception_is_a_plugin_failure_with_its_traceback() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Probe", "boom", json!({"args": ["kaput"]}));
    let data = err(&r, 9, "plugin_failed");
    assert!(error_text(&r).contains("ValueError"), "{}", r.stdout);
    assert!(error_text(&r).contains("boom: kaput"), "{}", r.stdout);
    let det = &data["details"];
    assert_eq!(det["type"], "ValueError");
    assert_eq!(det["message"], "boom: kaput");
    let tb = det["traceback"].as_str().unwrap();
    assert!(tb.starts_with("Traceback (most recent call last)"), "{tb}");
    assert!(tb.contains("raise ValueError"), "{tb}");
    assert!(tb.contains("probe.py"), "{tb}");
}

// ---------------------------------------------------------------- 10 invalid_args

#[test]
fn every_schema_violation_is_listed() {
    let d = setup();
    let p = sh(&d, "never", "echo '{}'");
    let c = cfg(
        &d,
        json!({"plugins": {"Strict": {
            "command": [p],
            "methods": { "go": { "schema": "schemas/strict.json" } }
        }}}),
    );
    let args = json!({"name": "far-too-long-secretish", "count": -1, "bogus": 1});
    let r = call(&c, "Strict", "go", args.clone());
    let data = err(&r, 10, "invalid_args");
    assert!(error_text(&r).contains("4 violations"), "{}", r.stdout);
    let v = data["details"]["violations"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = v
        .iter()
        .map(|x| {
            (
                x["instance_path"].as_str().expect("instance_path"),
                x["schema_path"].as_str().expect("schema_path"),
            )
        })
        .collect();
    for want in [
        ("/name", "/properties/name/maxLength"),
        ("/count", "/properties/count/minimum"),
        ("", "/required"),
        ("", "/additionalProperties"),
    ] {
        assert!(pairs.contains(&want), "missing {want:?} in {pairs:?}");
    }
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(
        !r.stdout.contains("far-too-long-secretish"),
        "violations never quote the value: {}",
        r.stdout
    );
    // Same through the argv form.
    let r2 = run_argv(&c, &["Strict", "go", &args.to_string()]);
    err(&r2, 10, "invalid_args");
    assert_eq!(r2.json["data"]["details"], r.json["data"]["details"]);
    // Nothing ran.
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "refused");
    assert_eq!(data["details"]["violation_count"], 4);
}

/// Half a million violations from a 1 MiB array are counted, not listed: listing them
/// all took ~1 GB of memory and a 60 MB response (four in a batch: 3.7 GB).
#[test]
fn a_flood_of_violations_is_counted_not_listed() {
    let d = setup();
    let p = sh(&d, "never", "echo '{}'");
    d.write(
        "schemas/strings.json",
        r#"{"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}}"#,
        false,
    );
    let c = cfg(
        &d,
        json!({"plugins": {"Arr": {
            "command": [p],
            "methods": { "go": { "schema": "schemas/strings.json" } }
        }}}),
    );
    let n = 500_000;
    let r = call(&c, "Arr", "go", json!({ "a": vec![1; n] }));
    let data = err(&r, 10, "invalid_args");
    assert_eq!(data["details"]["violation_count"], n);
    assert_eq!(data["details"]["violations"].as_array().unwrap().len(), 100);
    assert!(
        error_text(&r).contains("500000 violations; the first 100 are listed"),
        "{}",
        error_text(&r)
    );
    assert!(r.stdout.len() < 100_000, "{} bytes", r.stdout.len());
}

// ---------------------------------------------------------------- 11 audit_error

#[test]
fn an_unwritable_audit_log_refuses_the_call_before_the_plugin_runs() {
    let d = setup();
    // If the plugin ran, the call would take 5 s (timeout_ms is 10 s).
    let p = sh(&d, "slow", "sleep 5; echo '{}'");
    let c = cfg(
        &d,
        json!({
            "sandbox": { "limits": { "timeout_ms": 10000 } },
            "plugins": { "Slow": cmd(&p, &["go"]) }
        }),
    );
    let req = request("Slow", "go", json!({}));
    let c_s = c.to_str().unwrap();
    for log in ["/nonexistent-upm-dir/audit.log", "/proc/version"] {
        let t = Instant::now();
        let r = run_with(&["run", "--config", c_s], &req, &[("UPM_LOG_FILE", log)]);
        let took = t.elapsed();
        let data = err(&r, 11, "audit_error");
        assert!(error_text(&r).contains(log), "{log}: {}", r.stdout);
        assert!(error_text(&r).contains("not run"), "{log}: {}", r.stdout);
        assert!(
            took < Duration::from_secs(4),
            "{log}: the plugin ran ({took:?})"
        );
        assert!(data.get("result").is_none() && data.get("exit_code").is_none());
    }
    assert!(
        d.audit_lines().is_empty(),
        "UPM_LOG_FILE overrides the config's log"
    );
}

/// The log opens but the refusal's entry cannot be written (here: past a file-size
/// limit, with SIGXFSZ ignored, so that the write fails with EFBIG): the caller is told,
/// with the outcome upm would have answered.
#[test]
fn a_refusal_that_cannot_be_audited_is_an_audit_error() {
    use std::os::unix::process::CommandExt;
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let first = call(&c, "Nope", "upper", json!({}));
    err(&first, 4, "not_whitelisted");
    let size = std::fs::metadata(d.join("entrypoint.log")).unwrap().len();
    let mut cmd = Command::new(upm_bin());
    cmd.args(["run", "--config", c.to_str().unwrap()])
        .env_remove("UPM_CONFIG_PATH")
        .env_remove("UPM_LOG_FILE");
    // SAFETY: signal and setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: size,
                rlim_max: size,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = run_command(cmd, &request("Nope", "upper", json!({})));
    let data = err(&r, 11, "audit_error");
    assert_eq!(data["details"]["outcome"]["code"], "not_whitelisted");
    assert!(
        error_text(&r).contains("could not be written"),
        "{}",
        r.stdout
    );
}

// ---------------------------------------------------------------- 12 timeout

#[test]
fn a_plugin_past_its_timeout_is_killed() {
    let d = setup();
    let p = sh(&d, "sleeper", "echo started >&2; sleep 5; echo '{}'");
    let c = cfg(
        &d,
        json!({
            "sandbox": { "limits": { "timeout_ms": 300 } },
            "plugins": { "Sleeper": cmd(&p, &["go"]) }
        }),
    );
    let t = Instant::now();
    let r = call(&c, "Sleeper", "go", json!({}));
    let took = t.elapsed();
    let data = err(&r, 12, "timeout");
    assert_eq!(data["limit"], "timeout");
    assert!(error_text(&r).contains("300 ms"), "{}", r.stdout);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(data.get("result").is_none());
    assert_eq!(data["stderr"]["text"], "started\n", "output so far is kept");
}

// ---------------------------------------------------------------- forms, ids, audit

#[test]
fn stdin_and_argv_forms_give_the_same_result() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let cases = [
        ("TextTools", "wordcount", json!({"text": "one two\nthree"})),
        ("TextTools", "upper", json!({"text": 5})),
        ("TextTools", "lower", json!({"text": "x"})),
        ("Nope", "upper", json!({})),
    ];
    for (plugin, method, args) in cases {
        let a = call(&c, plugin, method, args.clone());
        let b = run_argv(&c, &[plugin, method, &args.to_string()]);
        envelope(&a);
        envelope(&b);
        assert_eq!(a.code, b.code, "{plugin}.{method}");
        for key in ["success", "status"] {
            assert_eq!(a.json[key], b.json[key], "{plugin}.{method} {key}");
        }
        for key in ["code", "result", "error", "details", "plugin", "method"] {
            assert_eq!(
                a.json["data"].get(key),
                b.json["data"].get(key),
                "{plugin}.{method} data.{key}"
            );
        }
        assert_ne!(a.json["request_id"], b.json["request_id"]);
    }
}

#[test]
fn the_request_id_round_trips_through_result_plugin_and_audit() {
    let d = setup();
    let echo = d.write(
        "plugins/echo.sh",
        &std::fs::read_to_string(repo().join("plugins/echo.sh")).unwrap(),
        true,
    );
    let c = cfg(
        &d,
        json!({"plugins": {"Echo": cmd(echo.to_str().unwrap(), &["echo"])}}),
    );
    let id = "req-42:a_b.c";
    let input = serde_json::to_vec(&json!({
        "plugin": "Echo", "method": "echo", "args": {"k": [1, "two"]}, "request_id": id
    }))
    .unwrap();
    let r = run_stdin(&c, &input);
    let result = ok(&r);
    assert_eq!(r.json["request_id"], id);
    assert_eq!(r.json["data"]["request_id"], id);
    // What the plugin received on stdin.
    assert_eq!(
        result,
        &json!({"method": "echo", "args": {"k": [1, "two"]}, "request_id": id})
    );
    let lines = audit_of(&d, id);
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["started", "finished"]);
    assert!(lines
        .iter()
        .all(|l| l["call_id"] == r.json["data"]["call_id"]));

    // Echoed on a refusal too.
    let input = br#"{"plugin":"Nope","method":"echo","request_id":"refused-1"}"#;
    let r = run_stdin(&c, input);
    err(&r, 4, "not_whitelisted");
    assert_eq!(r.json["data"]["request_id"], "refused-1");
    let refused = audit_of(&d, "refused-1");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["call_id"], r.json["data"]["call_id"]);

    // Absent: a fresh UUIDv7 per call, on success and on error, also in the audit.
    let mut seen = Vec::new();
    for input in [
        request("Echo", "echo", json!({})),
        request("Echo", "nope", json!({})),
        b"not json".to_vec(),
    ] {
        let r = run_stdin(&c, &input);
        envelope(&r);
        let id = r.json["request_id"].as_str().unwrap().to_owned();
        assert_uuid_v7(&id);
        assert!(!audit_of(&d, &id).is_empty(), "{id} not audited");
        assert!(!seen.contains(&id));
        seen.push(id);
    }
}

#[test]
fn every_invocation_is_audited_with_its_outcome() {
    let d = setup();
    let fail = sh(&d, "fail", "exit 4");
    let c = tt_cfg(&d, json!({"Fail": cmd(&fail, &["go"])}));
    let secret = "s3cr3t-payload-123";
    let runs = vec![
        call(&c, "TextTools", "upper", json!({"text": secret})),
        call(&c, "TextTools", "noop", json!({})),
        call(&c, "Nope", "upper", json!({"text": secret})),
        call(&c, "TextTools", "lower", json!({"text": secret})),
        call(&c, "TextTools", "upper", json!({"text": 1, "x": secret})),
        call(&c, "Fail", "go", json!({"why": secret})),
        run_stdin(&c, b"{oops"),
        run_argv(
            &c,
            &["TextTools", "reverse", &json!({"text": secret}).to_string()],
        ),
        run_stdin(
            &d.join("missing.json"),
            &request("TextTools", "upper", json!({})),
        ),
    ];
    let raw = std::fs::read_to_string(d.join("entrypoint.log")).unwrap();
    assert!(
        !raw.contains(secret),
        "raw args reached the audit log:\n{raw}"
    );
    for r in &runs {
        envelope(r);
        let id = r.json["request_id"].as_str().unwrap();
        let lines = audit_of(&d, id);
        let last = lines.last().unwrap_or_else(|| panic!("{id} not audited"));
        let code = r.json["data"]["code"].as_str().unwrap_or("ok");
        assert_eq!(last["code"], code, "{last}");
        assert_eq!(last["exit_code"], r.code, "{last}");
        for key in ["plugin", "method"] {
            assert!(last.get(key).is_some(), "{key} missing: {last}");
            if let Some(v) = r.json["data"].get(key) {
                assert_eq!(&last[key], v, "{last}");
            }
        }
        for l in &lines {
            assert!(l.get("args").is_none(), "raw args present: {l}");
            if l["event"] == "started" {
                let sha = l["args_digest"].as_str().expect("args digest");
                assert!(sha.starts_with("sha256:") && sha.len() == 71, "{l}");
            }
        }
        let ran = lines.iter().any(|l| l["event"] == "started");
        assert_eq!(
            ran,
            r.json["data"].get("exit_code").is_some(),
            "a started entry iff a plugin ran: {lines:?}"
        );
    }
    // The digest is the canonical digest of the args the plugin got.
    let id = runs[0].json["request_id"].as_str().unwrap();
    let started = &audit_of(&d, id)[0];
    assert_eq!(started["event"], "started");
    assert_eq!(
        started["args_digest"],
        format!(
            "sha256:{}",
            upm::schema::digest_hex(&json!({"text": secret}))
        )
    );
    assert_eq!(audit_of(&d, id).len(), 2);
}

#[test]
fn include_args_puts_the_args_in_the_started_entry() {
    let d = setup();
    cfg(
        &d,
        json!({"audit": {"include_args": true}, "plugins": {"TextTools": texttools()}}),
    );
    let r = call(
        &d.join("upm_config.json"),
        "TextTools",
        "upper",
        json!({"text": "visible"}),
    );
    ok(&r);
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert_eq!(lines[0]["event"], "started");
    assert_eq!(lines[0]["args"], json!({"text": "visible"}));
}

/// Redaction can make args far larger than the request (each secret becomes a 76-byte
/// digest object: a 300 KB request grew into a 40 MB entry at the 1 MiB cap, which the
/// writer refused, so the call could not run): past 4 MiB the entry keeps only the
/// args' digest, and the call runs.
#[test]
fn args_too_large_to_log_are_logged_by_digest_only() {
    let d = setup();
    let p = sh(&d, "ok", "read -r _; echo '{}'");
    d.write(
        "schemas/secrets.json",
        r#"{"type": "object", "properties": {"a": {"type": "array", "items": {"writeOnly": true}}}}"#,
        false,
    );
    let c = cfg(
        &d,
        json!({"audit": {"include_args": true}, "plugins": {"Sec": {
            "command": [p], "methods": {"m": {"schema": "schemas/secrets.json"}}
        }}}),
    );
    let r = call(&c, "Sec", "m", json!({ "a": vec![0; 100_000] }));
    ok(&r);
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert_eq!(lines[0]["event"], "started");
    assert!(lines[0].get("args").is_none());
    assert!(
        lines[0]["args_omitted"]
            .as_str()
            .unwrap()
            .contains("over the 4194304"),
        "{}",
        lines[0]["args_omitted"]
    );
    assert!(lines[0]["args_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(lines[1]["event"], "finished");
}

// ---------------------------------------------------------------- Python class plugins

#[test]
fn python_sync_and_async_methods_get_args_and_kwargs() {
    let d = setup();
    let c = py_cfg(&d);
    let args = json!({"args": [1, "two", {"three": [3]}], "kwargs": {"k": [true, null], "n": 1.5}});
    let r = call(&c, "Probe", "echo", args);
    assert_eq!(
        ok(&r),
        &json!({"args": [1, "two", {"three": [3]}], "kwargs": {"k": [true, null], "n": 1.5}})
    );
    let r = call(
        &c,
        "Probe",
        "later",
        json!({"args": ["x"], "kwargs": {"delay_ms": 1}}),
    );
    assert_eq!(ok(&r), &json!({"later": "x"}));
    // No args at all: called with none.
    let r = call(&c, "Probe", "echo", json!({}));
    assert_eq!(ok(&r), &json!({"args": [], "kwargs": {}}));
}

#[test]
fn python_print_noise_never_corrupts_the_result() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Probe", "noisy", json!({}));
    assert_eq!(ok(&r), &json!({"clean": true}));
    let data = &r.json["data"];
    assert_eq!(
        data["stdout"]["text"],
        "NOISE-OUT {\"result\": \"forged\"}\n{"
    );
    assert_eq!(data["stderr"]["text"], "NOISE-ERR\n");
}

#[test]
fn the_config_policy_reaches_the_python_constructor() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Probe", "show_policy", json!({}));
    assert_eq!(ok(&r), &json!({"policy": {"mode": "strict", "n": 3}}));
}

/// Writes a wheel of one module, `upm_test_dep` (built here: no network, no build
/// backend), and returns its path.
fn local_wheel(d: &TestDir) -> PathBuf {
    let script = r#"
import base64, hashlib, sys, zipfile
out = sys.argv[1]
files = {
    "upm_test_dep/__init__.py": "def shout(s):\n    return s.upper() + '!'\n",
    "upm_test_dep-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: upm-test-dep\nVersion: 1.0\n",
    "upm_test_dep-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: upm-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(out, "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("upm_test_dep-1.0.dist-info/RECORD,,")
    z.writestr("upm_test_dep-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    std::fs::create_dir_all(d.join("dist")).unwrap();
    let wheel = d.join("dist/upm_test_dep-1.0-py3-none-any.whl");
    let st = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&wheel)
        .status()
        .unwrap();
    assert!(st.success(), "building the wheel");
    wheel
}

/// A Python class plugin with its own packages: a virtualenv made with
/// `python3 -m venv`, a package installed into it by pip (from a local wheel, no
/// index), and `"python": "venv/bin/python"` (a symlink to the system interpreter).
#[test]
fn a_python_plugin_runs_in_its_virtualenv_with_what_pip_installed() {
    let d = setup();
    let venv = d.join("venv");
    let st = Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "python3 -m venv (Debian: apt-get install python3-venv)"
    );
    let wheel = local_wheel(&d);
    let out = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--no-index",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-q",
        ])
        .arg(&wheel)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.write(
        "py/uses_dep.py",
        r#"import sys
import upm_test_dep


class UsesDep:
    def __init__(self, project_root, cache_dir, policy):
        pass

    def go(self, s):
        return {"shout": upm_test_dep.shout(s), "prefix": sys.prefix}
"#,
        false,
    );
    let plugin = |python: Option<&str>| {
        let mut p =
            json!({ "module": "uses_dep", "python_path": ["py"], "allowed_methods": ["go"] });
        if let Some(py) = python {
            p["python"] = json!(py);
        }
        p
    };
    let c = cfg(
        &d,
        json!({ "plugins": {
            "UsesDep": plugin(Some("venv/bin/python")),
            "System": { "module": "uses_dep", "class": "UsesDep", "python_path": ["py"], "allowed_methods": ["go"] }
        }}),
    );
    let args = r#"{"args": ["hi"]}"#;
    let argv = ["--config", c.to_str().unwrap(), "UsesDep", "go", args];
    let r = run_in(Path::new("/"), &argv, b"", &[]);
    let result = ok(&r);
    assert_eq!(result["shout"], "HI!");
    assert_eq!(result["prefix"], venv.to_str().unwrap());
    let read = &r.json["data"]["sandbox"]["layers"]["landlock"]["detail"]["read"];
    assert!(
        read.as_array()
            .unwrap()
            .contains(&json!(venv.to_str().unwrap())),
        "{read}"
    );
    // The system interpreter does not have the package: the venv is what supplied it.
    let r = run_argv(&c, &["System", "go", args]);
    err(&r, 6, "plugin_start_failed");
    assert!(r.stdout.contains("upm_test_dep"), "{}", r.stdout);
    // With trust on, the interpreter that runs is a verified copy of the system one,
    // and it still finds its virtualenv.
    let keys = d.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let env = [
        ("UPM_TRUST_MODE", "warn"),
        ("UPM_TRUSTED_KEYS_DIR", keys.to_str().unwrap()),
    ];
    let r = run_in(Path::new("/"), &argv, b"", &env);
    assert_eq!(ok(&r)["prefix"], venv.to_str().unwrap());
    let line = d
        .audit_lines()
        .into_iter()
        .rfind(|l| l["event"] == "started")
        .unwrap();
    let real = std::fs::canonicalize(venv.join("bin/python")).unwrap();
    assert_eq!(
        line["plugin_files"]["exec_source"],
        real.to_str().unwrap(),
        "{line}"
    );
    // `upm check` is content, and says the venv's packages are pinned by nothing.
    let r = run_with(&["check", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let unpinned = &r.json["plugins"]["UsesDep"]["pins"]["unpinned"];
    assert!(
        unpinned
            .as_array()
            .unwrap()
            .contains(&json!(venv.to_str().unwrap())),
        "{unpinned}"
    );

    // A symlink to an interpreter outside its directory that is no virtualenv's is
    // refused, with what to write instead.
    std::fs::create_dir(d.join("bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", d.join("bin/python")).unwrap();
    let c = cfg(
        &d,
        json!({ "plugins": { "UsesDep": plugin(Some("bin/python")) } }),
    );
    let r = run_argv(&c, &["UsesDep", "go", args]);
    err(&r, 6, "unsafe_plugin_file");
    assert!(
        error_text(&r).contains("write \"python\": \"/usr/bin/python3"),
        "{}",
        r.stdout
    );
    // "python" is a Python class plugin's: a command plugin naming one is a config error.
    let c = cfg(
        &d,
        json!({ "plugins": { "C": { "command": ["/bin/true"], "python": "/usr/bin/python3", "allowed_methods": ["m"] } } }),
    );
    let r = run_argv(&c, &["C", "m", "{}"]);
    err(&r, 5, "config_error");
}

#[test]
fn the_example_configs_greeter_works() {
    let d = TestDir::new();
    let log = d.join("entrypoint.log");
    let example = repo().join("upm_config.json");
    let argv = ["run", "--config", example.to_str().unwrap()];
    let env = [("UPM_LOG_FILE", log.to_str().unwrap())];
    let r = run_with(
        &argv,
        &request(
            "Greeter",
            "greet",
            json!({"args": ["Ada"], "kwargs": {"punctuation": "?"}}),
        ),
        &env,
    );
    assert_eq!(ok(&r), &json!({"greeting": "Hello, Ada?"}));
    assert_eq!(r.json["data"]["stdout"]["text"], "greeting Ada\n");
    let r = run_with(
        &argv,
        &request(
            "Greeter",
            "greet_later",
            json!({"args": ["Bo"], "kwargs": {"delay_ms": 1}}),
        ),
        &env,
    );
    assert_eq!(ok(&r), &json!({"greeting": "Hello, Bo, after 1 ms"}));
    // The example's schemas are enforced.
    let r = run_with(
        &argv,
        &request(
            "Greeter",
            "greet",
            json!({"args": ["Ada"], "kwargs": {"punctuation": "!!!!"}}),
        ),
        &env,
    );
    err(&r, 10, "invalid_args");
    let r = run_with(&argv, &request("Greeter", "_private", json!({})), &env);
    err(&r, 7, "method_not_allowed");
    assert_eq!(
        d.audit_lines().len(),
        2 + 2 + 1 + 1,
        "all audited into UPM_LOG_FILE"
    );
}

// ---------------------------------------------------------------- operator commands

#[test]
fn list_prints_plugins_methods_and_schemas() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    d.write("py/probe.py", PROBE_PY, false);
    let c_s = c.to_str().unwrap().to_owned();
    let mut conf: Value = serde_json::from_str(&std::fs::read_to_string(&c).unwrap()).unwrap();
    conf["plugins"]["Probe"] =
        json!({"module": "probe", "python_path": ["py"], "allowed_methods": ["echo"]});
    d.config(&conf);

    let r = run_with(&["list", "--config", &c_s], b"", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let plugins = &r.json["plugins"];
    assert_eq!(plugins["TextTools"]["kind"], "command");
    assert_eq!(plugins["Probe"]["kind"], "python_class");
    let text_schema: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("schemas/text.json")).unwrap())
            .unwrap();
    let methods = plugins["TextTools"]["methods"].as_object().unwrap();
    let names: Vec<&String> = methods.keys().collect();
    assert_eq!(names, ["noop", "reverse", "upper", "wordcount"]);
    assert_eq!(methods["upper"]["schema"], text_schema);
    assert_eq!(plugins["Probe"]["methods"]["echo"]["schema"], Value::Null);
    assert_eq!(plugins["TextTools"]["network"], false);

    let r = run_with(
        &["list", "--config", d.join("nope.json").to_str().unwrap()],
        b"",
        &[],
    );
    assert_eq!(r.code, 5);
    assert_eq!(r.json["code"], "config_error");
}

/// A config like the example, but with this build's texttools and copies of the plugins.
/// `upm list` shows each method's description, and each schema as one document that
/// stands alone: the files its `$ref`s reach are bundled into it, every reference a
/// pointer inside it.
#[test]
fn list_shows_descriptions_and_schemas_that_stand_alone() {
    let d = setup();
    let c = cfg(
        &d,
        json!({ "plugins": { "Greeter": {
            "module": "greeter", "python_path": ["py"],
            "methods": {
                "greet": { "schema": "schemas/greeter_greet.json", "description": "Greets someone by name." },
                "plain": { "schema": "schemas/text.json" }
            }
        }}}),
    );
    d.write("py/greeter.py", "class Greeter:\n    pass\n", false);
    let r = run_with(&["list", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let methods = &r.json["plugins"]["Greeter"]["methods"];
    assert_eq!(methods["greet"]["description"], "Greets someone by name.");
    assert_eq!(methods["plain"]["description"], Value::Null);
    let schema = &methods["greet"]["schema"];
    // On disk, the schema refers to defs/name.json; listed, it holds it.
    assert_eq!(
        schema["properties"]["args"]["prefixItems"][0]["$ref"],
        "#/$defs/name"
    );
    let name: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("schemas/defs/name.json")).unwrap())
            .unwrap();
    let mut inner = name.clone();
    inner.as_object_mut().unwrap().remove("$schema");
    assert_eq!(schema["$defs"]["name"], inner);
    assert!(!schema.to_string().contains("name.json"), "{schema}");
    // A description that is not a string is a config error like any other.
    let c = cfg(
        &d,
        json!({ "plugins": { "T": { "command": ["/bin/true"], "methods": { "m": { "description": 3 } } } } }),
    );
    let r = run_with(&["list", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 5, "{}", r.stdout);
}

fn example_like(d: &TestDir) -> PathBuf {
    d.write(
        "plugins/echo.sh",
        &std::fs::read_to_string(repo().join("plugins/echo.sh")).unwrap(),
        true,
    );
    d.write(
        "plugins/python/greeter.py",
        &std::fs::read_to_string(repo().join("plugins/python/greeter.py")).unwrap(),
        false,
    );
    let mut conf: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("upm_config.json")).unwrap())
            .unwrap();
    conf["plugins"]["TextTools"]["command"] = json!([texttools_bin()]);
    d.config(&conf)
}

#[test]
fn check_passes_on_a_good_config_and_lists_every_problem_of_a_bad_one() {
    let d = setup();
    let c = example_like(&d);
    let r = run_with(&["check", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["ok"], true);
    assert_eq!(r.json["problems"], json!([]));
    for p in ["TextTools", "Echo", "Greeter"] {
        assert_eq!(r.json["plugins"][p]["ok"], true, "{p}");
    }
    // The same config works for calls.
    let r = call(&c, "TextTools", "upper", json!({"text": "ok"}));
    assert_eq!(ok(&r), &json!({"text": "OK"}));
    let r = call(&c, "Echo", "echo", json!({"a": 1}));
    assert_eq!(ok(&r)["args"], json!({"a": 1}));

    // Loadable, but broken in five independent ways.
    let b = TestDir::new();
    let not_exec = b.write("plugins/not_exec.sh", "#!/bin/sh\n", false);
    b.write("py/.keep", "", false);
    b.config(&json!({
        "require_schemas": false,
        "plugins": {
            "Gone": { "command": [b.join("plugins/gone.sh")], "allowed_methods": ["go"] },
            "NotExec": { "command": [not_exec], "allowed_methods": ["go"] },
            "NoModule": { "module": "nosuchmod", "python_path": ["py"], "allowed_methods": ["go"] },
            "BadSchema": { "command": ["/bin/true"], "methods": { "go": { "schema": "schemas/nope.json" } } },
            "BadSeccomp": { "command": ["/bin/true"], "allowed_methods": ["go"],
                            "sandbox": { "seccomp": "policies/nope.json" } }
        }
    }));
    let r = run_with(
        &[
            "check",
            "--config",
            b.join("upm_config.json").to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 5, "{}", r.stdout);
    assert_eq!(r.json["ok"], false);
    let problems: Vec<&str> = r.json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for needle in [
        "plugin \"Gone\": plugin file",
        "plugin \"NotExec\": command",
        "plugin \"NoModule\": module \"nosuchmod\" is not found",
        "plugin \"BadSchema\", method \"go\"",
        "plugin \"BadSeccomp\": seccomp profile",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert_eq!(r.json["plugins"]["Gone"]["ok"], false);
    for p in &problems {
        assert!(r.stderr.contains(p), "problems also on stderr: {p}");
    }

    // Not loadable at all: every load problem listed.
    b.config(&json!({"plugins": {"x/y": {"command": []}}, "typo": 1}));
    let r = run_with(
        &[
            "check",
            "--config",
            b.join("upm_config.json").to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 5);
    assert_eq!(r.json["code"], "config_error");
    assert!(
        r.json["problems"].as_array().unwrap().len() >= 2,
        "{}",
        r.stdout
    );
}

#[test]
fn check_on_the_repository_example_config() {
    let example = repo().join("upm_config.json");
    let r = run_with(&["check", "--config", example.to_str().unwrap()], b"", &[]);
    if repo()
        .join("target/x86_64-unknown-linux-gnu/release/upm-texttools")
        .exists()
    {
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert_eq!(r.json["ok"], true);
    } else {
        // Only the unbuilt release binary is missing.
        assert_eq!(r.code, 5, "{}", r.stdout);
        let problems = r.json["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0]
            .as_str()
            .unwrap()
            .contains("target/x86_64-unknown-linux-gnu/release/upm-texttools"));
        assert_eq!(r.json["plugins"]["Greeter"]["ok"], true);
        assert_eq!(r.json["plugins"]["Echo"]["ok"], true);
    }
}

#[test]
fn help_and_version() {
    let r = run_with(&["--help"], b"", &[]);
    assert_eq!(r.code, 0);
    for word in [
        "run",
        "list",
        "check",
        "doctor",
        "--config",
        "<plugin> <method> <json_args>",
    ] {
        assert!(
            r.stdout.contains(word),
            "--help lacks {word:?}:\n{}",
            r.stdout
        );
    }
    let r = run_with(&["run", "--help"], b"", &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("stdin"), "{}", r.stdout);
    assert!(r.stdout.contains("--config"), "{}", r.stdout);
    let r = run_with(&["--version"], b"", &[]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout.trim(),
        format!("upm {}", env!("CARGO_PKG_VERSION"))
    );
    // An unknown flag is a usage error (clap's, on stderr).
    let r = run_with(&["run", "--frobnicate"], b"", &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--frobnicate"), "{}", r.stderr);
}

/// Every option and argument of every command says what it is; the usage lines show
/// `--config` as optional; `audit --help` describes the subcommands it has.
#[test]
fn every_option_has_help_and_config_is_optional() {
    let r = run_with(&["--help"], b"", &[]);
    assert!(
        r.stdout.contains("Usage: upm [--config PATH] <COMMAND>"),
        "{}",
        r.stdout
    );
    for cmd in [
        &["run"][..],
        &["list"],
        &["check"],
        &["doctor"],
        &["keygen"],
        &["sign"],
        &["audit"],
        &["audit", "verify"],
        &["audit", "show"],
        &["audit", "keygen"],
    ] {
        let mut argv = cmd.to_vec();
        argv.push("-h");
        let r = run_with(&argv, b"", &[]);
        assert_eq!(r.code, 0, "{cmd:?}");
        // The short help puts each option on one line, its help after two spaces.
        for line in r
            .stdout
            .lines()
            .skip_while(|l| !l.ends_with(':') || l.starts_with("Usage"))
        {
            let t = line.trim();
            if t.starts_with('-') || t.starts_with('[') || t.starts_with('<') {
                assert!(
                    t.contains("  "),
                    "{cmd:?}: {t:?} has no help:\n{}",
                    r.stdout
                );
            }
        }
        if ["run", "list", "check", "sign"].contains(&cmd[0])
            || cmd.len() == 2 && cmd[1] != "keygen"
        {
            assert!(
                r.stdout.contains("[--config PATH]"),
                "{cmd:?}: {}",
                r.stdout
            );
        }
    }
    let r = run_with(&["audit", "--help"], b"", &[]);
    let about = r.stdout.lines().next().unwrap();
    assert!(
        !about.contains("sign"),
        "audit has no sign subcommand: {about}"
    );
    for word in ["Verify", "query", "key pair"] {
        assert!(about.contains(word), "{word}: {about}");
    }
}

/// A usage error gives the JSON a caller expects where it expects one: `run` a call's
/// result (audited), `list` and `check` their document; and one `upm:` line on stderr.
#[test]
fn usage_errors_are_json_where_a_result_is_expected() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let c = c.to_str().unwrap();
    for argv in [
        vec!["run", "--config", c, "--frobnicate"],
        vec!["--config", c, "run", "--parallel", "2"],
        vec!["run", "--jsonl", "--parallel", "999", "--config", c],
    ] {
        let r = run_with(&argv, b"", &[]);
        let data = err(&r, 2, "usage");
        let msg = data["error"].as_str().unwrap();
        assert!(
            msg.starts_with("usage: ") && msg.contains("upm run --help"),
            "{msg}"
        );
        assert_eq!(r.stderr.trim(), format!("upm: {msg}"), "{argv:?}");
        let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
        assert_eq!(lines.len(), 1, "{argv:?}: audited in the config's log");
        assert_eq!(
            (&lines[0]["event"], &lines[0]["code"]),
            (&json!("refused"), &json!("usage"))
        );
    }
    for cmd in ["list", "check"] {
        let r = run_with(&[cmd, "--config", c, "--frobnicate"], b"", &[]);
        assert_eq!(r.code, 2);
        assert_eq!(
            (&r.json["ok"], &r.json["code"]),
            (&json!(false), &json!("usage")),
            "{}",
            r.stdout
        );
        assert!(r.stderr.starts_with("upm: usage: "), "{}", r.stderr);
    }
    // Where no JSON is expected, clap's own text.
    let r = run_with(&["doctor", "--frobnicate"], b"", &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stdout.is_empty() && r.stderr.contains("--frobnicate"),
        "{r:?}"
    );
}

/// A mistyped subcommand that is not a plugin gets a suggestion; a plugin of that
/// name does not.
#[test]
fn a_mistyped_subcommand_gets_did_you_mean() {
    let d = setup();
    let c = tt_cfg(&d, json!({ "lsit": cmd("/bin/true", &["m"]) }));
    let r = run_with(&["lsit"], b"", &[]);
    let data = err(&r, 2, "usage");
    assert!(
        data["error"]
            .as_str()
            .unwrap()
            .contains("did you mean `upm list`?"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("did you mean `upm list`?"),
        "{}",
        r.stderr
    );
    let r = run_with(&["--config", c.to_str().unwrap(), "chekc"], b"", &[]);
    assert!(
        error_text(&r).contains("did you mean `upm check`?"),
        "{}",
        r.stdout
    );
    // "lsit" is a plugin there: only the usage.
    let r = run_argv(&c, &["lsit"]);
    err(&r, 2, "usage");
    assert!(!error_text(&r).contains("did you mean"), "{}", r.stdout);
}

// ---------------------------------------------------------------- 15 cancelled

fn signal(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own, not yet reaped child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// Waits until upm handles `sig` (before, the signal would simply kill it).
fn wait_for_handler(child: &std::process::Child, sig: libc::c_int) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap();
        if caught & (1 << (sig - 1)) != 0 {
            return;
        }
        assert!(Instant::now() < deadline, "upm never handled signal {sig}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the audit log has `n` entries of `event`.
fn wait_for_events(d: &TestDir, event: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while d
        .audit_lines()
        .iter()
        .filter(|e| e["event"] == event)
        .count()
        < n
    {
        assert!(Instant::now() < deadline, "no {n} {event} entries");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A slow plugin's config, its private directories under `work`.
fn slow_config(d: &TestDir) -> (PathBuf, PathBuf) {
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
    let slow = sh(
        d,
        "slow",
        "read -r _; echo left-behind > ./file; sleep 30; echo '{}'",
    );
    let c = cfg(
        d,
        json!({ "workdir_root": work,
                "sandbox": { "limits": { "timeout_ms": 60000 } },
                "plugins": { "Slow": cmd(&slow, &["m"]) } }),
    );
    (c, work)
}

/// SIGTERM (a caller's timeout, `docker stop`) mid-call: the plugin's tree is killed,
/// and the call still ends properly: `cancelled` (exit 15), its `finished` entry
/// written, its directory removed. Before, upm died: a `started` entry with no
/// `finished` one, and the plugin's files left on disk.
#[test]
fn sigterm_mid_call_ends_it_cancelled_audited_and_cleaned_up() {
    let d = setup();
    let (c, work) = slow_config(&d);
    let child = start_call(
        &c,
        br#"{"plugin": "Slow", "method": "m", "request_id": "term-1"}"#,
    );
    wait_for_events(&d, "started", 1);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(15));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["code"], "cancelled", "{r}");
    assert_eq!(r["data"]["signal"], libc::SIGKILL, "{r}");
    let events: Vec<Value> = audit_of(&d, "term-1");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["event"], "finished");
    assert_eq!(events[1]["code"], "cancelled");
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Asked to stop before its request arrived (stdin still open): refused as
/// `cancelled`, audited, nothing run.
#[test]
fn sigint_while_waiting_for_the_request_refuses_it() {
    let d = setup();
    let (c, _) = slow_config(&d);
    let mut child = spawn_run(&c, &[]);
    let stdin = child.stdin.take().unwrap();
    wait_for_handler(&child, libc::SIGINT);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(15));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["code"], "cancelled", "{r}");
    let lines = d.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "refused");
    assert_eq!(lines[0]["code"], "cancelled");
}

/// A batch asked to stop: the calls running end `cancelled`, no further line is read,
/// every `started` entry has its `finished` one, and the batch exits 15.
#[test]
fn sighup_mid_batch_cancels_the_running_calls_and_reads_no_more() {
    let d = setup();
    let (c, work) = slow_config(&d);
    let mut child = spawn_run(&c, &["--jsonl", "--parallel", "2"]);
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..6 {
        writeln!(
            stdin,
            r#"{{"plugin": "Slow", "method": "m", "request_id": "hup-{i}"}}"#
        )
        .unwrap();
    }
    wait_for_events(&d, "started", 2);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGHUP);
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(15));
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    for r in &results {
        assert_eq!(r["data"]["code"], "cancelled", "{r}");
        assert!(matches!(r["line"].as_u64(), Some(1 | 2)), "{r}");
    }
    let lines = d.audit_lines();
    let count = |e: &str| lines.iter().filter(|l| l["event"] == e).count();
    assert_eq!((count("started"), count("finished")), (2, 2), "{lines:?}");
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A stop is bounded even where upm is blocked and no poll watches for it: here,
/// writing a large result its caller does not read. upm ends within its 5 s grace,
/// exit 15, the call's `finished` entry already durable.
#[test]
fn a_stop_is_bounded_when_the_result_cannot_be_written() {
    let d = setup();
    let big = sh(
        &d,
        "big",
        r#"read -r _; printf '{"x": "'; yes a | head -c 600000 | tr -d '\n'; printf '"}'"#,
    );
    let c = cfg(&d, json!({ "plugins": { "Big": cmd(&big, &["m"]) } }));
    let mut child = start_call(
        &c,
        br#"{"plugin": "Big", "method": "m", "request_id": "stuck-1"}"#,
    );
    // Nobody reads upm's stdout: it blocks writing the result, after the entry.
    wait_for_events(&d, "finished", 1);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    signal(&child, libc::SIGTERM);
    while child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(15), "upm did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(15), "{status:?}");
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    let events = audit_of(&d, "stuck-1");
    assert_eq!(events.len(), 2, "{events:?}");
}
