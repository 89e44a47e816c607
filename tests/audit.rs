//! The audit log through the real `upm` binary (issue 4): what each call
//! writes, that secrets stay out, crash and concurrency safety, tamper
//! detection, refusal when the log cannot be written, rotation, signed
//! checkpoints and `upm audit show`.

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

// ---------------------------------------------------------------- helpers

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A config whitelisting texttools (with the repository's schemas) plus `extra` plugins.
fn texttools_config(dir: &TestDir, audit: Value, extra: Value) -> PathBuf {
    let schemas = repo().join("schemas");
    let mut plugins = json!({
        "TextTools": {
            "command": [texttools_bin()],
            "methods": {
                "upper": { "schema": schemas.join("text.json") },
                "wordcount": { "schema": schemas.join("text.json") },
                "reverse": { "schema": schemas.join("text.json") },
                "noop": { "schema": schemas.join("empty.json") }
            }
        }
    });
    if let (Some(p), Some(e)) = (plugins.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    dir.config(&json!({ "require_schemas": false, "audit": audit, "plugins": plugins }))
}

fn log_of(dir: &TestDir) -> PathBuf {
    dir.join("entrypoint.log")
}

fn raw_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

fn call(config: &Path, plugin: &str, method: &str, args: Value) -> Run {
    run_stdin(config, &request(plugin, method, args))
}

fn call_with_id(config: &Path, plugin: &str, method: &str, args: Value, id: &str) -> Run {
    let req = json!({"plugin": plugin, "method": method, "args": args, "request_id": id});
    run_stdin(config, &serde_json::to_vec(&req).unwrap())
}

/// `upm audit verify PATH [--key KEY]`: exit code and everything printed.
fn verify(path: &Path, key: Option<&Path>) -> (i32, String) {
    let mut argv = vec!["audit", "verify", path.to_str().unwrap()];
    if let Some(k) = key {
        argv.extend(["--key", k.to_str().unwrap()]);
    }
    let r = run_with(&argv, b"", &[]);
    (r.code, format!("{}{}", r.stdout, r.stderr))
}

/// Whether `text` mentions `line N` (and not, say, `line N0`).
fn names_line(text: &str, n: usize) -> bool {
    let needle = format!("line {n}");
    text.match_indices(&needle).any(|(i, _)| {
        !text[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn is_rfc3339_utc_ms(ts: &str) -> bool {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
        && chrono::DateTime::parse_from_rfc3339(ts).is_ok()
}

/// Every line's event, grouped by request_id, in log order.
fn events_by_request(entries: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries {
        let rid = e["request_id"].as_str().expect("request_id on every line");
        m.entry(rid.to_owned())
            .or_default()
            .push(e["event"].as_str().unwrap_or("").to_owned());
    }
    m
}

/// Checks the log with `jq`, or says loudly that it could not.
fn jq_reads_every_line(path: &Path, expected: usize) {
    let out = match Command::new("jq").args(["-c", "."]).arg(path).output() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("SKIPPED: the jq check (jq is not runnable here: {e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "jq failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(
        n, expected,
        "jq read {n} objects, the log has {expected} lines"
    );
}

/// A tiny deterministic PRNG (xorshift64*); the seed is printed so a failure
/// can be replayed with `UPM_TEST_SEED=...`.
struct Rng(u64);

impl Rng {
    fn from_env(what: &str) -> Rng {
        let seed = std::env::var("UPM_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{what}: UPM_TEST_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Pids of live processes whose command line mentions `marker` (a test
/// directory: upm's and its sandbox init's argv name the config in it, the
/// plugin's names its script in it).
fn processes_mentioning(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Spawns `upm run --config CONFIG`, writes `input` and closes its stdin.
fn spawn_upm(config: &Path, input: &[u8]) -> Child {
    let mut child = Command::new(upm_bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("UPM_CONFIG_PATH")
        .env_remove("UPM_LOG_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn upm");
    let mut stdin = child.stdin.take().unwrap();
    // upm may be killed before it reads: a broken pipe is fine.
    let _ = stdin.write_all(input);
    child
}

// ---------------------------------------------------------------- entries

#[test]
fn an_executed_call_writes_started_then_finished() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let r = call(&config, "TextTools", "upper", json!({"text": "hello"}));
    assert_eq!(r.code, 0, "{r:?}");
    let rid = r.json["request_id"].as_str().unwrap().to_owned();

    let lines = dir.audit_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let (s, f) = (&lines[0], &lines[1]);
    for e in &lines {
        assert_eq!(e["request_id"], rid.as_str());
        let ts = e["ts"].as_str().unwrap();
        assert!(is_rfc3339_utc_ms(ts), "ts {ts:?}");
    }
    assert_eq!(s["seq"], 1);
    assert_eq!(f["seq"], 2);
    assert_eq!(f["prev"], s["hash"]);

    // started: who asked, what, with which bytes, under which sandbox.
    assert_eq!(s["event"], "started");
    assert_eq!(s["plugin"], "TextTools");
    assert_eq!(s["method"], "upper");
    let caller = &s["caller"];
    assert_eq!(caller["uid"], nix::unistd::getuid().as_raw());
    assert_eq!(caller["gid"], nix::unistd::getgid().as_raw());
    assert_eq!(caller["ppid"], std::process::id());
    assert_eq!(
        caller["parent_exe"].as_str().map(PathBuf::from),
        Some(std::env::current_exe().unwrap()),
        "the parent is this test binary"
    );
    assert_eq!(
        s["args_digest"],
        format!("sha256:{}", sha256_hex(br#"{"text":"hello"}"#)),
    );
    assert!(s.get("args").is_none(), "args are not logged by default");
    assert_eq!(
        s["plugin_files"]["exec_sha256"],
        sha256_hex(&std::fs::read(texttools_bin()).unwrap())
    );
    assert_eq!(
        s["config_sha256"],
        format!("sha256:{}", sha256_hex(&std::fs::read(&config).unwrap()))
    );
    assert!(s["sandbox_requested"]["layers"].is_object(), "{s:#}");

    // finished: how it ended, what it used, what was in force.
    assert_eq!(f["event"], "finished");
    assert_eq!(f["code"], "ok");
    assert_eq!(f["exit_code"], 0);
    assert_eq!(f["plugin_exit_code"], 0);
    assert_eq!(f["ran"], true);
    assert!(f.get("limit").is_some() && f["limit"].is_null(), "{f:#}");
    for k in ["wall_ms", "cpu_user_ms", "cpu_system_ms", "max_rss_kb"] {
        assert!(f["usage"][k].is_number(), "usage.{k} in {f:#}");
    }
    assert!(f["usage"]["max_rss_kb"].as_u64().unwrap() > 0);
    // The plugin printed `{"text":"HELLO"}\n`: 17 bytes, which became the result.
    assert_eq!(
        f["output_bytes"],
        json!({"stdout": 17, "stderr": 0}),
        "{f:#}"
    );
    // The sandbox really in force: in `finished`, or recorded as exactly what `started` said.
    let in_force = if f["sandbox"] == json!({"same_as_started": true}) {
        &s["sandbox_requested"]
    } else {
        &f["sandbox"]
    };
    assert!(in_force["layers"].is_object(), "{f:#}");
    assert_eq!(r.json["data"]["sandbox"], *in_force);

    jq_reads_every_line(&log_of(&dir), 2);
    assert_eq!(verify(&log_of(&dir), None).0, 0);
}

#[test]
fn exit_status_signal_and_limit_are_recorded() {
    let dir = TestDir::new();
    let exit7 = dir.write("exit7.sh", "#!/bin/sh\ncat >/dev/null\nexit 7\n", true);
    let term = dir.write(
        "term.sh",
        "#!/bin/sh\ncat >/dev/null\nkill -TERM $$\nsleep 5\n",
        true,
    );
    let slow = dir.write("slow.sh", "#!/bin/sh\ncat >/dev/null\nsleep 5\n", true);
    let config = texttools_config(
        &dir,
        json!({}),
        json!({
            "Exit7": { "command": [exit7], "allowed_methods": ["go"] },
            "Term": { "command": [term], "allowed_methods": ["go"] },
            "Slow": { "command": [slow], "allowed_methods": ["go"],
                      "sandbox": { "limits": { "timeout_ms": 300 } } }
        }),
    );
    for plugin in ["Exit7", "Term", "Slow"] {
        let r = call(&config, plugin, "go", json!({}));
        assert_ne!(r.code, 0, "{plugin}: {r:?}");
    }
    let lines = dir.audit_lines();
    let finished: Vec<&Value> = lines.iter().filter(|e| e["event"] == "finished").collect();
    assert_eq!(finished.len(), 3, "{lines:#?}");

    assert_eq!(finished[0]["code"], "plugin_failed");
    assert_eq!(finished[0]["plugin_exit_code"], 7);
    assert!(finished[0].get("plugin_signal").is_none());

    assert_eq!(finished[1]["code"], "plugin_failed");
    assert_eq!(finished[1]["plugin_signal"], libc::SIGTERM);
    assert!(finished[1].get("plugin_exit_code").is_none());

    assert_eq!(finished[2]["code"], "timeout");
    assert_eq!(finished[2]["limit"], "timeout");
    assert!(finished[2]["usage"]["wall_ms"].as_f64().unwrap() >= 300.0);
    assert_eq!(verify(&log_of(&dir), None).0, 0);
}

#[test]
fn each_refusal_is_exactly_one_refused_entry() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let cases = [
        ("Nope", "upper", json!({"text": "x"}), "not_whitelisted"),
        (
            "TextTools",
            "shout",
            json!({"text": "x"}),
            "method_not_allowed",
        ),
        ("TextTools", "upper", json!({"text": 5}), "invalid_args"),
    ];
    for (plugin, method, args, code) in cases {
        let before = dir.audit_lines().len();
        let r = call(&config, plugin, method, args);
        assert_eq!(r.code_word(), code, "{r:?}");
        let lines = dir.audit_lines();
        assert_eq!(lines.len(), before + 1, "one entry for {code}: {lines:#?}");
        let e = lines.last().unwrap();
        assert_eq!(e["event"], "refused");
        assert_eq!(e["code"], code);
        assert_eq!(e["exit_code"], r.code);
        assert_eq!(e["request_id"], r.json["request_id"]);
        assert_eq!(e["plugin"], plugin);
        assert_eq!(e["method"], method);
        assert!(is_rfc3339_utc_ms(e["ts"].as_str().unwrap()));
    }

    // A broken config is refused too, into the log beside it.
    let bad = TestDir::new();
    let bad_config = bad.config(&json!({ "plugins": {}, "sandbox": { "netwrok": true } }));
    let r = call(&bad_config, "TextTools", "upper", json!({"text": "x"}));
    assert_eq!(r.code_word(), "config_error", "{r:?}");
    let lines = bad.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["event"], "refused");
    assert_eq!(lines[0]["code"], "config_error");
    assert_eq!(lines[0]["request_id"], r.json["request_id"]);

    let total = raw_lines(&log_of(&dir)).len();
    jq_reads_every_line(&log_of(&dir), total);
    assert_eq!(verify(&log_of(&dir), None).0, 0);
    assert_eq!(verify(&log_of(&bad), None).0, 0);
}

// ---------------------------------------------------------------- secrets

#[test]
fn secret_args_never_reach_the_log() {
    let dir = TestDir::new();
    let schema = dir.write(
        "secret.json",
        &json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "user": { "type": "string" },
                "password": { "type": "string", "minLength": 8, "writeOnly": true },
                "token": { "x-upm-secret": true },
                "nested": { "type": "object", "properties": {
                    "api_key": { "type": "string", "writeOnly": true } } }
            },
            "required": ["user", "password"],
            "additionalProperties": false
        })
        .to_string(),
        false,
    );
    let config = dir.config(&json!({
        "audit": { "include_args": true },
        "plugins": { "TextTools": {
            "command": [texttools_bin()],
            "methods": { "noop": { "schema": schema } }
        } }
    }));
    let nonce = std::process::id();
    let password = format!("Pa55-word-{nonce}-zq");
    let token = format!("tok-{nonce}-xy");
    let api_key = format!("ak-{nonce}-vw");
    let user = format!("alice-{nonce}");
    let args = json!({ "user": user, "password": password, "token": {"t": token},
                       "nested": { "api_key": api_key } });

    let r = call(&config, "TextTools", "noop", args.clone());
    assert_eq!(r.code, 0, "{r:?}");
    // The argv form, and a refusal (user is not a string) carrying the same secrets.
    let argv_args = serde_json::to_string(&args).unwrap();
    let r = run_argv(&config, &["TextTools", "noop", &argv_args]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut bad = args.clone();
    bad["user"] = json!(42);
    bad["password"] = json!("zQ7!");
    let r = call(&config, "TextTools", "noop", bad);
    assert_eq!(r.code_word(), "invalid_args", "{r:?}");

    let bytes = std::fs::read(log_of(&dir)).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    for secret in [password.as_str(), token.as_str(), api_key.as_str(), "zQ7!"] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} is in the log:\n{text}"
        );
    }
    assert!(text.contains(&user), "non-secret args are logged");

    let started: Vec<Value> = dir
        .audit_lines()
        .into_iter()
        .filter(|e| e["event"] == "started")
        .collect();
    assert_eq!(started.len(), 2);
    for s in &started {
        let logged = &s["args"];
        assert_eq!(logged["user"], user.as_str());
        let digest = |v: &Value| sha256_hex(serde_json::to_string(v).unwrap().as_bytes());
        assert_eq!(
            logged["password"],
            json!({"sha256": digest(&json!(password))})
        );
        assert_eq!(
            logged["token"],
            json!({"sha256": digest(&json!({"t": token}))})
        );
        assert_eq!(
            logged["nested"]["api_key"],
            json!({"sha256": digest(&json!(api_key))})
        );
    }
    assert_eq!(verify(&log_of(&dir), None).0, 0);
}

// ---------------------------------------------------------------- crashes

#[test]
fn kill_9_at_random_moments_leaves_a_verifiable_log() {
    let dir = TestDir::new();
    let napper = dir.write(
        "napper.py",
        "#!/usr/bin/python3 -IS\nimport json, sys, time\n\
         req = json.load(sys.stdin)\ntime.sleep(req[\"args\"][\"ms\"] / 1000.0)\nprint(\"{}\")\n",
        true,
    );
    let config = dir.config(&json!({
        "require_schemas": false,
        "plugins": { "Napper": { "command": [napper], "allowed_methods": ["nap"] } }
    }));
    let seed_rng = Rng::from_env("kill -9 test");
    let tag = format!("k9{}", std::process::id());
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 75;

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let config = config.clone();
            let tag = tag.clone();
            let mut rng = Rng(seed_rng
                .0
                .wrapping_add(t.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                | 1);
            std::thread::spawn(move || {
                let mut calls = Vec::new();
                for i in 0..PER_THREAD {
                    let rid = format!("{tag}-{t}-{i}");
                    let ms = rng.below(15);
                    let req = json!({"plugin": "Napper", "method": "nap",
                                     "args": {"ms": ms}, "request_id": rid});
                    let mut child = spawn_upm(&config, &serde_json::to_vec(&req).unwrap());
                    // Half the calls are killed: some in the first 20 ms (before or
                    // around `started`), some later (while the plugin runs, or after).
                    if rng.below(2) == 0 {
                        let delay = if rng.below(2) == 0 {
                            rng.below(21)
                        } else {
                            20 + rng.below(130)
                        };
                        std::thread::sleep(Duration::from_millis(delay));
                        let _ = child.kill();
                    }
                    let out = child.wait_with_output().expect("wait upm");
                    let killed = out.status.signal() == Some(libc::SIGKILL);
                    calls.push((rid, killed, out.status.code(), out.stdout));
                }
                calls
            })
        })
        .collect();
    let calls: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();

    // Killed upm processes cannot remove their private working directories.
    let cleanup = || {
        if let Ok(rd) = std::fs::read_dir("/tmp") {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("upm-{tag}-"))
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    };

    // No plugin (nor sandbox init) outlives its killed upm: parent-death signal.
    let marker = dir.path.to_string_lossy().into_owned();
    let mut left = processes_mentioning(&marker);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = processes_mentioning(&marker);
    }
    assert!(left.is_empty(), "processes outlived upm: {left:?}");

    let log = log_of(&dir);
    let bytes = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut entries = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str::<Value>(l.trim_end_matches('\n')) {
            Ok(v) => entries.push(v),
            Err(_) => {
                // A torn write is allowed only as the very last bytes, or when
                // the next line is the recovery entry that seals it.
                let is_last = i + 1 == lines.len() && !l.ends_with('\n');
                let recovered = lines
                    .get(i + 1)
                    .and_then(|n| serde_json::from_str::<Value>(n.trim_end()).ok())
                    .is_some_and(|n| n["event"] == "recovered");
                assert!(
                    is_last || recovered,
                    "torn line {} not recovered: {l:?}",
                    i + 1
                );
            }
        }
    }
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");

    let by_rid = events_by_request(&entries);
    let (mut killed, mut before, mut during, mut after) = (0, 0, 0, 0);
    for (rid, was_killed, exit, stdout) in &calls {
        let ev: Vec<&str> = by_rid
            .get(rid)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if *was_killed {
            killed += 1;
            match ev.as_slice() {
                [] => before += 1,
                ["started"] => during += 1,
                ["started", "finished"] => after += 1,
                other => panic!("killed call {rid}: events {other:?}"),
            }
        } else {
            assert_eq!(
                *exit,
                Some(0),
                "call {rid} was not killed but failed: {}",
                String::from_utf8_lossy(stdout)
            );
            assert_eq!(ev, ["started", "finished"], "call {rid}");
        }
    }
    let ours: BTreeSet<&String> = calls.iter().map(|c| &c.0).collect();
    for rid in by_rid.keys() {
        assert!(ours.contains(rid), "unknown request_id {rid} in the log");
    }
    eprintln!(
        "kill -9: {} calls, {killed} killed ({before} before `started`, {during} between \
         `started` and `finished`, {after} after `finished`)",
        calls.len()
    );
    assert!(killed > 0, "no call was killed: the test proved nothing");

    // A later append seals whatever a kill left at the end; the log stays valid.
    let r = call(&config, "Napper", "nap", json!({"ms": 0}));
    assert_eq!(r.code, 0, "{r:?}");
    let bytes = std::fs::read(&log).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'));
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(!report.contains("torn write"), "{report}");
    cleanup();
}

#[test]
fn a_torn_tail_is_reported_then_sealed_by_the_next_call() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    for _ in 0..2 {
        assert_eq!(call(&config, "TextTools", "noop", json!({})).code, 0);
    }
    let log = log_of(&dir);
    let fragment = b"{\"seq\":5,\"prev\":\"0123456789abcdef";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(fragment)
        .unwrap();
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "a crash artifact is not tampering: {report}");
    assert!(
        report.contains("torn write") && names_line(&report, 5),
        "{report}"
    );

    let r = call(&config, "TextTools", "noop", json!({}));
    assert_eq!(r.code, 0, "{r:?}");
    let lines = raw_lines(&log);
    assert_eq!(lines.len(), 8, "{lines:#?}");
    assert_eq!(lines[4].as_bytes(), fragment);
    let rec: Value = serde_json::from_str(&lines[5]).unwrap();
    assert_eq!(rec["event"], "recovered");
    assert_eq!(rec["seq"], 5);
    assert_eq!(rec["torn_bytes"], fragment.len());
    assert_eq!(rec["torn_sha256"], sha256_hex(fragment));
    assert_eq!(rec["request_id"], r.json["request_id"]);
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("torn bytes"), "{report}");
}

#[test]
fn lines_appended_after_the_last_entry_are_broken_and_stop_every_call() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    assert_eq!(call(&config, "TextTools", "noop", json!({})).code, 0);
    let log = log_of(&dir);
    let forged = b"{\"seq\":3,\"event\":\"finished\",\"plugin\":\"Bank\",\"code\":\"ok\"}\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(forged)
        .unwrap();
    let (code, report) = verify(&log, None);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("lines after the last entry that are not entries")
            && names_line(&report, 3),
        "{report}"
    );
    let before = std::fs::read(&log).unwrap();
    let r = call(&config, "TextTools", "upper", json!({"text": "hi"}));
    assert_eq!(r.code, 11, "{r:?}");
    assert!(r.result().is_null(), "{r:?}");
    assert_eq!(std::fs::read(&log).unwrap(), before, "nothing sealed them");
}

// ---------------------------------------------------------------- concurrency

/// Starts `n` calls before waiting for any; returns each call's request_id and exit code.
fn concurrent_calls(config: &Path, n: usize, tag: &str) -> Vec<(String, Option<i32>, String)> {
    let children: Vec<(String, Child)> = (0..n)
        .map(|i| {
            let rid = format!("{tag}-{i}");
            let req = json!({"plugin": "TextTools", "method": "upper",
                             "args": {"text": rid}, "request_id": rid});
            (rid, spawn_upm(config, &serde_json::to_vec(&req).unwrap()))
        })
        .collect();
    children
        .into_iter()
        .map(|(rid, c)| {
            let out = c.wait_with_output().expect("wait upm");
            (
                rid,
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
        .collect()
}

#[test]
fn two_hundred_concurrent_calls_make_whole_lines_and_one_chain() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let results = concurrent_calls(&config, 200, "conc");
    for (rid, code, out) in &results {
        assert_eq!(*code, Some(0), "{rid}: {out}");
    }
    let log = log_of(&dir);
    let bytes = std::fs::read(&log).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'));
    let lines = raw_lines(&log);
    assert_eq!(lines.len(), 400);
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a whole JSON line"))
        .collect();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
    }
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("400 entries"), "{report}");
    let by_rid = events_by_request(&entries);
    assert_eq!(by_rid.len(), 200);
    for (rid, _, _) in &results {
        assert_eq!(by_rid[rid], ["started", "finished"], "{rid}");
    }
    jq_reads_every_line(&log, 400);
}

// ---------------------------------------------------------------- tampering

/// A log of 5 calls (10 lines) to tamper with.
fn tamper_fixture() -> (TestDir, Vec<String>) {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    for i in 0..5 {
        let r = call(
            &config,
            "TextTools",
            "upper",
            json!({"text": format!("t{i}")}),
        );
        assert_eq!(r.code, 0, "{r:?}");
    }
    let lines = raw_lines(&log_of(&dir));
    assert_eq!(lines.len(), 10);
    (dir, lines)
}

fn write_log(dir: &TestDir, name: &str, lines: &[String]) -> PathBuf {
    let mut text = lines.join("\n");
    text.push('\n');
    dir.write(name, &text, false)
}

#[test]
fn editing_deleting_inserting_or_reordering_a_line_is_found_and_named() {
    let (dir, orig) = tamper_fixture();
    let (code, report) = verify(&write_log(&dir, "control.log", &orig), None);
    assert_eq!(code, 0, "the untouched copy verifies: {report}");

    // A valid entry from another log, with the seq the insertion point expects.
    let (_other, foreign) = tamper_fixture();

    let edit = |n: usize, from: &str, to: &str| {
        let mut l = orig.clone();
        assert!(l[n - 1].contains(from), "{}", l[n - 1]);
        l[n - 1] = l[n - 1].replacen(from, to, 1);
        l
    };
    let delete = |n: usize| {
        let mut l = orig.clone();
        l.remove(n - 1);
        l
    };
    let insert = |n: usize, line: &str| {
        let mut l = orig.clone();
        l.insert(n - 1, line.to_owned());
        l
    };
    let swap = |a: usize, b: usize| {
        let mut l = orig.clone();
        l.swap(a - 1, b - 1);
        l
    };
    let cases: Vec<(&str, Vec<String>, usize)> = vec![
        (
            "edit an arg digest",
            edit(3, "\"args_digest\":\"sha256:", "\"args_digest\":\"sha256:0"),
            3,
        ),
        (
            "edit the outcome",
            edit(6, "\"code\":\"ok\"", "\"code\":\"no\""),
            6,
        ),
        (
            "edit the first line",
            edit(1, "\"event\":\"started\"", "\"event\":\"startet\""),
            1,
        ),
        ("delete a middle line", delete(4), 4),
        ("delete the first line", delete(1), 1),
        ("insert a duplicate", insert(3, &orig[1]), 3),
        ("insert a foreign entry", insert(3, &foreign[2]), 3),
        (
            "insert a non-entry",
            insert(7, "{\"event\":\"started\",\"note\":\"hi\"}"),
            7,
        ),
        ("swap neighbours", swap(5, 6), 5),
        ("swap distant lines", swap(2, 8), 2),
    ];
    for (what, lines, line) in cases {
        let name = format!("{}.log", what.replace(' ', "-"));
        let path = write_log(&dir, &name, &lines);
        let (code, report) = verify(&path, None);
        assert_eq!(code, 1, "{what}: {report}");
        assert!(report.contains("BROKEN"), "{what}: {report}");
        assert!(
            names_line(&report, line),
            "{what}: line {line} not named in: {report}"
        );
    }
}

// ---------------------------------------------------------------- unwritable log

/// A plugin that appends to `out/ran.txt` (a world-writable directory granted
/// through `sandbox.write_paths`): proof of whether it ran. The log lives in `logs/`.
fn witness_setup() -> (TestDir, PathBuf, PathBuf, PathBuf) {
    let dir = TestDir::new();
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ran = out.join("ran.txt");
    std::fs::write(&ran, "").unwrap();
    std::fs::set_permissions(&ran, std::fs::Permissions::from_mode(0o666)).unwrap();
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\necho ran >> {}\necho '{{\"wrote\":true}}'\n",
        ran.display()
    );
    let witness = dir.write("witness.sh", &script, true);
    let config = dir.config(&json!({
        "require_schemas": false,
        "audit": { "path": "logs/entrypoint.log" },
        "plugins": { "Witness": {
            "command": [witness],
            "allowed_methods": ["go"],
            "sandbox": { "write_paths": [out] }
        } }
    }));
    (dir, config, logs, ran)
}

/// `upm run --config CONFIG` inside a private mount namespace, after `setup`
/// (a shell snippet; `$1` is the log directory) has run there.
fn run_in_mount_ns(setup: &str, logs: &Path, config: &Path) -> Run {
    let script = format!("set -e\n{setup}\nshift\nexec \"$@\"");
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(logs)
        .arg(upm_bin())
        .args(["run", "--config"])
        .arg(config);
    run_command(cmd, &request("Witness", "go", json!({})))
}

fn assert_refused_unrun(r: &Run, ran: &Path) {
    assert_eq!(r.code, 11, "{r:?}");
    assert_eq!(r.code_word(), "audit_error", "{r:?}");
    assert!(r.result().is_null(), "no result: {r:?}");
    assert_eq!(
        std::fs::read_to_string(ran).unwrap(),
        "",
        "the plugin ran although its audit entry could not be written"
    );
}

#[test]
fn read_only_log_filesystem_refuses_before_the_plugin_runs() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for mount namespaces");
        return;
    }
    let (dir, config, logs, ran) = witness_setup();
    // Control: the witness does write when the log is writable.
    let r = call(&config, "Witness", "go", json!({}));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran\n");
    std::fs::write(&ran, "").unwrap();
    let log = logs.join("entrypoint.log");
    let before = std::fs::read(&log).unwrap();

    let r = run_in_mount_ns(
        "mount --bind \"$1\" \"$1\"\nmount -o remount,bind,ro \"$1\"",
        &logs,
        &config,
    );
    assert_refused_unrun(&r, &ran);
    assert!(
        r.json["data"]["error"]
            .as_str()
            .unwrap()
            .contains("entrypoint.log"),
        "{r:?}"
    );
    assert_eq!(std::fs::read(&log).unwrap(), before, "the log is untouched");
    assert_eq!(verify(&log, None).0, 0);
    drop(dir);
}

#[test]
fn full_log_filesystem_refuses_before_the_plugin_runs() {
    if !is_root() {
        eprintln!("SKIPPED: needs root for mount namespaces");
        return;
    }
    let (_dir, config, logs, ran) = witness_setup();
    let r = run_in_mount_ns(
        "mount -t tmpfs -o size=64k tmpfs \"$1\"\n\
         dd if=/dev/zero of=\"$1/fill\" bs=4096 2>/dev/null || true\n\
         if printf x > \"$1/probe\" 2>/dev/null; then echo 'tmpfs is not full' >&2; exit 97; fi",
        &logs,
        &config,
    );
    assert_ne!(r.code, 97, "{}", r.stderr);
    assert_refused_unrun(&r, &ran);
    assert!(
        r.json["data"]["error"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{r:?}"
    );
    // The mount was private to that process: the real directory is untouched.
    assert!(!logs.join("entrypoint.log").exists());
}

#[test]
fn a_result_whose_finished_entry_cannot_be_written_is_withheld() {
    let dir = TestDir::new();
    let logs = dir.join("logs");
    std::fs::create_dir(&logs).unwrap();
    // Two seconds to swap the log for a directory once the `started` entry is there.
    let plugin = dir.write(
        "secretive.sh",
        "#!/bin/sh\ncat >/dev/null\nsleep 2\necho stderr-secret >&2\necho '{\"secret\":\"only-in-the-result\"}'\n",
        true,
    );
    let config = dir.config(&json!({
        "require_schemas": false,
        "audit": { "path": "logs/entrypoint.log" },
        "plugins": { "Secretive": { "command": [plugin], "allowed_methods": ["go"] } }
    }));
    let log = logs.join("entrypoint.log");
    let mut child = spawn_upm(&config, &request("Secretive", "go", json!({})));
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"event\":\"started\"")) {
        assert!(std::time::Instant::now() < deadline, "no started entry");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::rename(&log, logs.join("moved.log")).unwrap();
    std::fs::create_dir(&log).unwrap();

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(11), "{stdout}");
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    let data = &r["data"];
    assert_eq!(data["code"], "audit_error", "{r}");
    assert!(data["error"].as_str().unwrap().contains("withheld"), "{r}");
    assert_eq!(data["details"], json!({"ran": true}), "{r}");
    for k in ["result", "stdout", "stderr", "exit_code", "signal", "usage"] {
        assert!(data.get(k).is_none(), "{k} must be withheld: {r}");
    }
    assert!(!stdout.contains("only-in-the-result") && !stdout.contains("stderr-secret"));
    // The log that was swapped out has the call's started entry and nothing after it.
    let entries: Vec<Value> = raw_lines(&logs.join("moved.log"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let events: Vec<&str> = entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["started"], "{entries:?}");
    assert_eq!(entries[0]["request_id"], r["request_id"]);
}

#[test]
fn a_symlink_at_the_log_path_refuses_the_call() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let victim = dir.write("victim.conf", "KEY=value", false);
    std::os::unix::fs::symlink(&victim, log_of(&dir)).unwrap();
    let r = call(&config, "TextTools", "upper", json!({"text": "hi"}));
    assert_eq!(r.code, 11, "{r:?}");
    assert!(r.result().is_null(), "{r:?}");
    assert!(r.stdout.contains("not a regular file"), "{r:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "KEY=value");
}

// ---------------------------------------------------------------- rotation

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("entrypoint.log")
        })
        .collect();
    // Oldest first, as verify walks them: rotated files by stamp then
    // numeric counter (`.Z`, `.Z.1`, `.Z.2`, `.Z.10`), then the current file.
    v.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let rest = name.strip_prefix("entrypoint.log").unwrap_or("").to_owned();
        let mut parts = rest.trim_start_matches('.').splitn(2, '.');
        let stamp = parts.next().unwrap_or("").to_owned();
        let counter: u64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        (rest.is_empty(), stamp, counter)
    });
    v
}

#[test]
fn rotation_through_the_binary_is_verified_as_one_set() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({ "rotate": { "max_bytes": 4096 } }), json!({}));
    for i in 0..50 {
        let r = if i % 2 == 0 {
            call(&config, "TextTools", "noop", json!({}))
        } else {
            call(&config, "TextTools", "shout", json!({}))
        };
        assert!(
            r.code == 0 || r.code_word() == "method_not_allowed",
            "{r:?}"
        );
    }
    let files = log_files(&dir.path);
    assert!(files.len() >= 3, "{files:?}");
    let mut total = 0;
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        let n = raw_lines(f).len();
        assert!(n >= 1, "{f:?} is empty");
        assert!(size <= 4096 || n == 1, "{f:?}: {size} bytes in {n} lines");
        total += n;
    }
    assert_eq!(total, 25 * 2 + 25, "every entry is in exactly one file");
    let seqs: Vec<u64> = files
        .iter()
        .flat_map(|f| raw_lines(f))
        .map(|l| {
            serde_json::from_str::<Value>(&l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "files chain in order"
    );

    let log = log_of(&dir);
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains(&format!("{total} entries in {} file(s)", files.len())),
        "{report}"
    );

    // Removing a rotated file from the middle of the set is found.
    let rotated: Vec<&PathBuf> = files.iter().filter(|f| **f != log).collect();
    let victim = rotated[rotated.len() / 2];
    std::fs::remove_file(victim).unwrap();
    let (code, report) = verify(&log, None);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("rotated file removed"), "{report}");
}

#[test]
fn concurrent_calls_across_rotations_keep_one_chain() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({ "rotate": { "max_bytes": 8192 } }), json!({}));
    let results = concurrent_calls(&config, 40, "rot");
    for (rid, code, out) in &results {
        assert_eq!(*code, Some(0), "{rid}: {out}");
    }
    let files = log_files(&dir.path);
    assert!(files.len() >= 3, "{files:?}");
    let entries: Vec<Value> = files
        .iter()
        .flat_map(|f| raw_lines(f))
        .map(|l| serde_json::from_str(&l).expect("a whole JSON line"))
        .collect();
    assert_eq!(entries.len(), 80);
    let (code, report) = verify(&log_of(&dir), None);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("80 entries"), "{report}");
    let by_rid = events_by_request(&entries);
    for (rid, _, _) in &results {
        assert_eq!(by_rid[rid], ["started", "finished"], "{rid}");
    }
}

// ---------------------------------------------------------------- signatures

#[test]
fn signed_checkpoints_through_the_binary() {
    let dir = TestDir::new();
    let (secret, public) = (dir.join("audit.pem"), dir.join("audit.pub"));
    let r = run_with(
        &[
            "audit",
            "keygen",
            secret.to_str().unwrap(),
            public.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let r = run_with(
        &[
            "audit",
            "keygen",
            secret.to_str().unwrap(),
            dir.join("x.pub").to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_ne!(r.code, 0, "keygen never overwrites a key");

    let config = texttools_config(
        &dir,
        json!({ "signing_key": secret, "sign_every": 5 }),
        json!({}),
    );
    for _ in 0..20 {
        assert_eq!(call(&config, "TextTools", "noop", json!({})).code, 0);
    }
    let entries = dir.audit_lines();
    let checkpoints = entries
        .iter()
        .filter(|e| e["event"] == "checkpoint")
        .count();
    assert!(checkpoints >= 8, "{checkpoints} checkpoints for 40 entries");
    for e in &entries {
        assert!(e["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }

    let log = log_of(&dir);
    let (code, report) = verify(&log, Some(&public));
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains(&format!("{checkpoints} checkpoint signature(s) verified")),
        "{report}"
    );

    let other = TestDir::new();
    let (s2, p2) = (other.join("o.pem"), other.join("o.pub"));
    assert_eq!(
        run_with(
            &[
                "audit",
                "keygen",
                s2.to_str().unwrap(),
                p2.to_str().unwrap()
            ],
            b"",
            &[]
        )
        .code,
        0
    );
    let (code, report) = verify(&log, Some(&p2));
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("signature does not verify"), "{report}");
}

// ---------------------------------------------------------------- show

#[test]
fn show_prints_one_call_and_filters() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let up = call_with_id(
        &config,
        "TextTools",
        "upper",
        json!({"text": "a"}),
        "show-up",
    );
    assert_eq!(up.code, 0, "{up:?}");
    let wc = call_with_id(
        &config,
        "TextTools",
        "wordcount",
        json!({"text": "a b"}),
        "show-wc",
    );
    assert_eq!(wc.code, 0, "{wc:?}");
    let bad = call_with_id(
        &config,
        "TextTools",
        "reverse",
        json!({"text": 1}),
        "show-bad",
    );
    assert_eq!(bad.code_word(), "invalid_args", "{bad:?}");
    let lines = raw_lines(&log_of(&dir));
    assert_eq!(lines.len(), 5);

    let show = |extra: &[&str]| {
        let mut argv = vec!["--config", config.to_str().unwrap(), "audit", "show"];
        argv.extend_from_slice(extra);
        let r = run_with(&argv, b"", &[]);
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout
    };
    assert_eq!(
        show(&["--request-id", "show-wc"]),
        format!("{}\n{}\n", lines[2], lines[3]),
        "the call's own lines, unchanged"
    );
    let count = |out: String| out.lines().count();
    assert_eq!(
        count(show(&["--plugin", "TextTools", "--method", "upper"])),
        2
    );
    assert_eq!(
        count(show(&["--outcome", "ok"])),
        2,
        "the two finished entries"
    );
    let refused = show(&["--outcome", "invalid_args"]);
    assert_eq!(refused, format!("{}\n", lines[4]));
    assert_eq!(count(show(&["--plugin", "Other"])), 0);
    let explicit = {
        let r = run_with(
            &[
                "audit",
                "show",
                log_of(&dir).to_str().unwrap(),
                "--method",
                "reverse",
            ],
            b"",
            &[],
        );
        r.stdout
    };
    assert_eq!(explicit, refused);

    let table = show(&["--format", "table", "--request-id", "show-up"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].contains("REQUEST_ID") && rows[0].contains("EVENT"),
        "{table}"
    );
    assert!(
        rows[1].contains("show-up") && rows[1].contains("started"),
        "{table}"
    );
    assert!(
        rows[2].contains("finished") && rows[2].contains("ok"),
        "{table}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_verify_and_show_quietly() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    for _ in 0..2 {
        assert_eq!(call(&config, "TextTools", "noop", json!({})).code, 0);
    }
    let log = log_of(&dir);
    for sub in ["verify", "show"] {
        // `upm audit verify | head -0`: the pipe's read end is closed before upm writes.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(upm_bin())
            .args(["audit", sub, log.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{sub}: {stderr}");
        assert!(stderr.is_empty(), "{sub}: {stderr}");
    }
}

// ---------------------------------------------------------------- what the tools read

/// Without a PATH, `audit verify` and `audit show` read the config's log, found as a
/// call finds its config (`--config`, `UPM_CONFIG_PATH`, `./upm_config.json`), and
/// name the file(s) they read; with no config to find it in, they fail instead of
/// reading some `./entrypoint.log`.
#[test]
fn verify_and_show_read_the_configs_log_and_name_it() {
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("logs")).unwrap();
    let config = texttools_config(&dir, json!({ "path": "logs/audit.log" }), json!({}));
    let ok = call(&config, "TextTools", "upper", json!({"text": "a"}));
    assert_eq!(ok.code, 0, "{ok:?}");
    let log = dir.join("logs/audit.log");
    let c = config.to_str().unwrap();
    let env = [("UPM_CONFIG_PATH", c)];
    for (cwd, argv, env) in [
        (PathBuf::from("/"), vec!["--config", c], &[][..]),
        (PathBuf::from("/"), vec![], &env[..]),
        (dir.path.clone(), vec![], &[][..]),
    ] {
        let mut verify = argv.clone();
        verify.extend(["audit", "verify"]);
        let r = run_in(&cwd, &verify, b"", env);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.starts_with("intact: 2 entries"), "{}", r.stdout);
        assert!(
            r.stdout.contains(&format!("checked: {}", log.display())),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains(&format!("config {}", config.display())),
            "{}",
            r.stdout
        );
        let mut show = argv.clone();
        show.extend(["audit", "show", "--outcome", "success"]);
        let r = run_in(&cwd, &show, b"", env);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
        assert!(
            r.stderr.contains(&format!("read: {}", log.display())),
            "{}",
            r.stderr
        );
    }
    // No config where one is looked for: no log, however many entrypoint.logs lie about.
    let stray = TestDir::new();
    std::fs::copy(&log, stray.join("entrypoint.log")).unwrap();
    for sub in ["verify", "show"] {
        let r = run_in(&stray.path, &["audit", sub], b"", &[]);
        assert_eq!(r.code, 2, "{sub}: {r:?}");
        assert!(r.stdout.is_empty(), "{sub}: {}", r.stdout);
        assert!(r.stderr.contains("none to be found"), "{sub}: {}", r.stderr);
        assert!(
            r.stderr.contains("upm_config.json does not exist"),
            "{sub}: {}",
            r.stderr
        );
    }
    // UPM_LOG_FILE names the log of calls, so of these tools too.
    let r = run_in(
        &stray.path,
        &["audit", "verify"],
        b"",
        &[("UPM_LOG_FILE", "entrypoint.log")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("UPM_LOG_FILE"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "checked: {}",
            stray.join("entrypoint.log").display()
        )),
        "{}",
        r.stdout
    );
}

/// A call refused because its config is invalid is audited in the config's own log
/// (when the config reads that far), not in a second file beside it.
#[test]
fn a_refusal_for_an_invalid_config_goes_to_its_own_log() {
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("logs")).unwrap();
    let config = dir.config(&json!({
        "audit": { "path": "logs/audit.log" },
        "plugins": { "P": { "command": ["/bin/true"], "methods": { "m": { "schema": "missing.json" } } } }
    }));
    let r = call(&config, "P", "m", json!({}));
    assert_eq!((r.code, r.code_word()), (5, "config_error"), "{r:?}");
    let lines = raw_lines(&dir.join("logs/audit.log"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let entry: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        (entry["event"].as_str(), entry["code"].as_str()),
        (Some("refused"), Some("config_error"))
    );
    assert!(!log_of(&dir).exists(), "no second log beside the config");
    // Invalid in itself (an unknown key, no plugins): its audit block still reads.
    dir.config(&json!({ "audit": { "path": "logs/audit.log" }, "plugns": {} }));
    let r = call(&config, "P", "m", json!({}));
    assert_eq!((r.code, r.code_word()), (5, "config_error"), "{r:?}");
    assert_eq!(raw_lines(&dir.join("logs/audit.log")).len(), 2);
    assert!(!log_of(&dir).exists(), "no second log beside the config");
    let r = run_with(
        &["--config", config.to_str().unwrap(), "audit", "verify"],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("intact: 2 entries"), "{}", r.stdout);
}

/// `--outcome` takes the words results use, and refuses any other with the list.
#[test]
fn show_outcome_takes_result_words_and_refuses_others() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    assert_eq!(
        call(&config, "TextTools", "upper", json!({"text": "a"})).code,
        0
    );
    assert_eq!(
        call(&config, "TextTools", "upper", json!({"text": 1})).code,
        10
    );
    let c = config.to_str().unwrap();
    let show = |word: &str| {
        run_with(
            &["--config", c, "audit", "show", "--outcome", word],
            b"",
            &[],
        )
    };
    let r = show("success");
    assert_eq!((r.code, r.stdout.lines().count()), (0, 1), "{r:?}");
    assert!(r.stdout.contains("\"event\":\"finished\""), "{}", r.stdout);
    let r = show("invalid_args");
    assert_eq!((r.code, r.stdout.lines().count()), (0, 1), "{r:?}");
    let r = show("sucess");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.is_empty());
    for word in ["success", "invalid_args", "plugin_failed", "timeout"] {
        assert!(r.stderr.contains(word), "{word}: {}", r.stderr);
    }
}
