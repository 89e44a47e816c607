//! Supply-chain integrity, end to end: pinned plugins, no check-then-use race,
//! unsafe plugin files, and signed configs.
//!
//! Every refusal is checked by exit code AND `data.code`, and "nothing ran" is
//! checked in the audit log (no `started` entry for the call).
//!
//! One binary, one module per topic: pinning, race, unsafe_files, signing, trust.

#[path = "../common/mod.rs"]
mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

// ---------------------------------------------------------------- helpers

/// Runs upm with a clean trust environment plus `env`.
fn upm(argv: &[&str], input: &[u8], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(upm_bin());
    cmd.args(argv);
    run_command(with_trust_env(cmd, env), input)
}

/// `cmd` with none of upm's own settings from this process's environment, and `env`.
fn with_trust_env(mut cmd: Command, env: &[(&str, &str)]) -> Command {
    for var in [
        "UPM_CONFIG_PATH",
        "UPM_LOG_FILE",
        "UPM_TRUST_MODE",
        "UPM_TRUSTED_KEYS_DIR",
        "UPM_TRUST_MIN_SIGNED_AT",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn call(config: &Path, plugin: &str, method: &str, args: Value, env: &[(&str, &str)]) -> Run {
    upm(
        &["run", "--config", config.to_str().unwrap()],
        &request(plugin, method, args),
        env,
    )
}

fn check(config: &Path, env: &[(&str, &str)]) -> Run {
    upm(&["check", "--config", config.to_str().unwrap()], b"", env)
}

/// The manifest digest `upm check` found for `plugin`'s tree, from its refusal of a
/// wrong pin ("... found <digest>").
fn found_manifest(c: &Run, plugin: &str) -> String {
    c.json["plugins"][plugin]["pins"]["manifest"]["error"]
        .as_str()
        .and_then(|e| e.split("found ").nth(1))
        .and_then(|s| s.get(..64))
        .unwrap_or_else(|| panic!("no digest found: {}", ctx(c)))
        .to_owned()
}

fn ctx(run: &Run) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        run.code, run.stdout, run.stderr
    )
}

/// Asserts the call was refused with `code`/`exit` and that no plugin started for it.
fn assert_refused(d: &TestDir, run: &Run, exit: i32, code: &str) {
    assert_eq!(run.code, exit, "{}", ctx(run));
    assert_eq!(run.code_word(), code, "{}", ctx(run));
    assert!(
        run.result().is_null(),
        "a refused call has no result: {}",
        ctx(run)
    );
    let events = events_of(d, run);
    assert_eq!(events, ["refused"], "nothing may start: {}", ctx(run));
}

fn assert_ok(run: &Run) {
    assert_eq!(run.code, 0, "{}", ctx(run));
    assert_eq!(run.json["success"], true, "{}", ctx(run));
}

/// The audit entries of this call.
fn audit_of(d: &TestDir, run: &Run) -> Vec<Value> {
    let id = run.json["data"]["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned();
    d.audit_lines()
        .into_iter()
        .filter(|l| l["request_id"] == id.as_str())
        .collect()
}

fn events_of(d: &TestDir, run: &Run) -> Vec<String> {
    audit_of(d, run)
        .iter()
        .map(|l| l["event"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn sha256_of(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A copy of the texttools binary at `rel`, root-owned, 0755.
fn texttools_copy(d: &TestDir, rel: &str) -> PathBuf {
    let p = d.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    chmod(p.parent().unwrap(), 0o755);
    std::fs::copy(texttools_bin(), &p).unwrap();
    chmod(&p, 0o755);
    p
}

/// A copy of `/bin/echo` at `rel`, root-owned, 0755: a small compiled plugin
/// (hashing the debug texttools build costs half a second per call).
fn echo_copy(d: &TestDir, rel: &str) -> PathBuf {
    let p = d.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    chmod(p.parent().unwrap(), 0o755);
    std::fs::copy("/bin/echo", &p).unwrap();
    chmod(&p, 0o755);
    p
}

/// A `/bin/sh` plugin printing `json` as its result.
fn sh_printing(d: &TestDir, rel: &str, json: &str) -> PathBuf {
    d.write(
        rel,
        &format!("#!/bin/sh\ncat >/dev/null\necho '{json}'\n"),
        true,
    )
}

const GOOD_PY: &str = "class P:\n    def __init__(self, project_root, cache_dir, policy):\n        pass\n\n    def who(self):\n        return {\"who\": \"good\"}\n";
const EVIL_PY: &str = "class P:\n    def __init__(self, project_root, cache_dir, policy):\n        pass\n\n    def who(self):\n        return {\"evil\": True}\n";

/// A config with the given plugins, no schemas required.
fn config_with(d: &TestDir, plugins: Value) -> PathBuf {
    TestConfig::new()
        .set("python", json!("/usr/bin/python3"))
        .timeout_ms(10000)
        .plugins(plugins)
        .write(d)
}

fn cmd_plugin(path: &Path, methods: &[&str]) -> Value {
    command_plugin(path, methods)
}

fn py_plugin(root: &str) -> Value {
    json!({ "module": "mod", "class": "P", "python_path": [root], "allowed_methods": ["who"] })
}

fn words(run: &Run) -> bool {
    run.code == 0 && run.result()["words"] == 2
}

/// A `workdir_root` of the test's own, `work/` (0755).
fn work_dir(d: &TestDir) -> PathBuf {
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    chmod(&work, 0o755);
    work
}

fn skip_unless_root() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: the integrity tests need root (plugins run as uid 65534)");
        return true;
    }
    false
}

// ---------------------------------------------------------------- shared by the topics

/// Swaps `target` between the contents of `good` and `evil` (hard links renamed
/// over it, so the path always exists) until stopped.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(target: PathBuf, good: PathBuf, evil: PathBuf, tmp: PathBuf) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicUsize::new(0));
        let (s, n) = (stop.clone(), swaps.clone());
        let thread = std::thread::spawn(move || {
            // A failure ends the swapping; `race` then sees no refusals and fails.
            while !s.load(Ordering::Relaxed) {
                for src in [&evil, &good] {
                    let _ = std::fs::remove_file(&tmp);
                    if std::fs::hard_link(src, &tmp).is_err()
                        || std::fs::rename(&tmp, &target).is_err()
                    {
                        return;
                    }
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Swapper {
            stop,
            swaps,
            thread: Some(thread),
        }
    }

    /// Rewrites `target` in place (same inode, same length: open, pwrite, close) with
    /// `evil` then `good`, until stopped: what a writer of the file itself can do.
    fn in_place(target: PathBuf, good: Vec<u8>, evil: Vec<u8>) -> Swapper {
        use std::os::unix::fs::FileExt;
        assert_eq!(good.len(), evil.len());
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicUsize::new(0));
        let (s, n) = (stop.clone(), swaps.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for bytes in [&evil, &good] {
                    let written = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&target)
                        .and_then(|f| f.write_all_at(bytes, 0));
                    if written.is_err() {
                        return;
                    }
                    n.fetch_add(1, Ordering::Relaxed);
                    // Long enough for a call to see either content whole, now and then.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        });
        Swapper {
            stop,
            swaps,
            thread: Some(thread),
        }
    }

    /// Stops swapping; the target is left with the good content.
    fn stop(mut self) -> usize {
        self.halt();
        self.swaps.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.halt();
    }
}

fn signed_setup(trust: Option<Value>) -> Signed {
    let d = TestDir::new();
    let tt = echo_copy(&d, "bin/echo");
    d.write(
        "schemas/text.json",
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": { "text": { "$ref": "defs/text.json" } },
  "required": ["text"],
  "additionalProperties": false
}"#,
        false,
    );
    d.write(
        "schemas/defs/text.json",
        r#"{ "type": "string", "maxLength": 1000 }"#,
        false,
    );
    // The profile named as a file (not the built-in one), so that the signature covers it.
    let mut c = json!({
        "sandbox": { "seccomp": "policies/default.json", "limits": { "timeout_ms": 10000 } },
        "plugins": {
            "T": {
                "command": [tt, r#"{"echo":"signed"}"#],
                "sha256": sha256_of(&tt),
                "methods": { "wordcount": { "schema": "schemas/text.json" } }
            }
        }
    });
    if let Some(t) = trust {
        c["trust"] = t;
    }
    let cfg = d.config(&c);
    std::fs::create_dir(d.join("keys")).unwrap();
    let secret = d.join("secret.pem");
    keygen(&secret, &d.join("keys/k.pub"));
    sign(&cfg, &secret);
    Signed {
        keys: d.join("keys").to_string_lossy().into_owned(),
        d,
        cfg,
        tt,
    }
}

fn sign(cfg: &Path, secret: &Path) {
    let run = upm(
        &[
            "sign",
            "--key",
            secret.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert!(trust_sig(cfg).exists());
}

fn trust_sig(cfg: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sig", cfg.display()))
}

/// A signed setup: a pinned texttools, a schema with a `$ref`, the default
/// seccomp profile, a key pair (public key in `keys/`) and `upm_config.json.sig`.
struct Signed {
    d: TestDir,
    cfg: PathBuf,
    keys: String,
    tt: PathBuf,
}

impl Signed {
    fn wc(&self, env: &[(&str, &str)]) -> Run {
        call(&self.cfg, "T", "wordcount", json!({"text": "a b"}), env)
    }

    fn strict_env(&self) -> [(&str, &str); 1] {
        [("UPM_TRUSTED_KEYS_DIR", self.keys.as_str())]
    }

    /// Refused in strict with `untrusted_config`, nothing started; `reason` in the error.
    fn assert_untrusted(&self, run: &Run, reason: &str) {
        assert_refused(&self.d, run, 5, "untrusted_config");
        let err = run.json["data"]["error"].as_str().unwrap();
        assert!(err.contains(reason), "expected {reason:?} in: {err}");
        assert_eq!(
            run.json["data"]["trust"]["status"],
            "failed",
            "{}",
            ctx(run)
        );
        assert_eq!(run.json["data"]["trust"]["mode"], "strict", "{}", ctx(run));
    }
}

mod digests;
mod pinning;
mod race;
mod signing;
mod trust;
mod unsafe_files;
