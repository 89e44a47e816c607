//! Supply-chain integrity, end to end: pinned plugins, no check-then-use race,
//! unsafe plugin files, and signed configs.
//!
//! Every refusal is checked by exit code AND `data.code`, and "nothing ran" is
//! checked in the audit log (no `started` entry for the call).

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
    d.config(&json!({
        "require_schemas": false,
        "python": "/usr/bin/python3",
        "sandbox": { "limits": { "timeout_ms": 10000 } },
        "plugins": plugins
    }))
}

fn cmd_plugin(path: &Path, methods: &[&str]) -> Value {
    json!({ "command": [path], "allowed_methods": methods })
}

fn py_plugin(root: &str) -> Value {
    json!({ "module": "mod", "class": "P", "python_path": [root], "allowed_methods": ["who"] })
}

fn words(run: &Run) -> bool {
    run.code == 0 && run.result()["words"] == 2
}

fn skip_unless_root() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: the integrity tests need root (plugins run as uid 65534)");
        return true;
    }
    false
}

// ---------------------------------------------------------------- pinning

#[test]
fn a_pinned_binary_runs_and_a_wrong_pin_is_refused_before_any_fork() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let tt = texttools_copy(&d, "bin/tt");
    let digest = sha256_of(&tt);
    let mut good = cmd_plugin(&tt, &["wordcount"]);
    good["sha256"] = json!(digest.to_uppercase()); // hex case does not matter
    let mut bad = cmd_plugin(&tt, &["wordcount"]);
    bad["sha256"] = json!("0".repeat(64));
    let cfg = config_with(&d, json!({ "Good": good, "Bad": bad }));

    let run = call(&cfg, "Good", "wordcount", json!({"text": "a b"}), &[]);
    assert_ok(&run);
    assert!(words(&run), "{}", ctx(&run));
    let started = &audit_of(&d, &run)[0];
    assert_eq!(started["event"], "started");
    assert_eq!(started["plugin_files"]["exec_sha256"], digest.as_str());

    let run = call(&cfg, "Bad", "wordcount", json!({"text": "a b"}), &[]);
    assert_refused(&d, &run, 6, "integrity_mismatch");
    let err = run.json["data"]["error"].as_str().unwrap();
    assert!(
        err.contains(&digest),
        "the error names what was found: {err}"
    );
}

#[test]
fn a_pinned_python_tree_runs_and_any_module_change_is_refused() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let module = d.write("py/mod.py", GOOD_PY, false);
    d.write("py/pkg/helper.py", "X = 1\n", false);
    let cfg = config_with(&d, json!({ "P": py_plugin("py") }));
    // The digest to pin comes from `upm check`.
    let c = check(&cfg, &[]);
    assert_eq!(c.code, 0, "{}", ctx(&c));
    let m = &c.json["plugins"]["P"]["pins"]["manifest"];
    assert_eq!(m["ok"], true, "{}", ctx(&c));
    assert!(m["pinned"].is_null(), "{m}");
    let digest = m["sha256"].as_str().unwrap().to_owned();
    assert_eq!(digest.len(), 64);

    let mut p = py_plugin("py");
    p["manifest_sha256"] = json!(digest);
    let cfg = config_with(&d, json!({ "P": p }));
    let c = check(&cfg, &[]);
    assert_eq!(c.code, 0, "{}", ctx(&c));
    let m = &c.json["plugins"]["P"]["pins"]["manifest"];
    assert_eq!(m["pinned"], digest.as_str(), "{m}");
    assert_eq!(m["ok"], true, "{m}");

    let run = call(&cfg, "P", "who", json!({}), &[]);
    assert_ok(&run);
    assert_eq!(run.result()["who"], "good", "{}", ctx(&run));
    let started = &audit_of(&d, &run)[0];
    assert_eq!(started["plugin_files"]["manifest_sha256"], digest.as_str());

    // One byte of the module, of a nested module, or one more file: refused.
    let helper = d.join("py/pkg/helper.py");
    for (path, bytes) in [
        (&module, GOOD_PY.replace("good", "gooD").into_bytes()),
        (&helper, b"X = 2\n".to_vec()),
    ] {
        let orig = std::fs::read(path).unwrap();
        std::fs::write(path, &bytes).unwrap();
        let run = call(&cfg, "P", "who", json!({}), &[]);
        assert_refused(&d, &run, 6, "integrity_mismatch");
        let c = check(&cfg, &[]);
        assert_eq!(c.code, 5, "check reports a broken pin: {}", ctx(&c));
        assert_eq!(c.json["plugins"]["P"]["pins"]["manifest"]["ok"], false);
        std::fs::write(path, orig).unwrap();
    }
    let extra = d.write("py/extra.py", "", false);
    let run = call(&cfg, "P", "who", json!({}), &[]);
    assert_refused(&d, &run, 6, "integrity_mismatch");
    std::fs::remove_file(extra).unwrap();

    // Caches do not matter.
    d.write("py/__pycache__/mod.cpython-311.pyc", "junk", false);
    d.write("py/pkg/__pycache__/helper.cpython-311.pyc", "junk", false);
    let run = call(&cfg, "P", "who", json!({}), &[]);
    assert_ok(&run);
    assert_eq!(run.result()["who"], "good", "{}", ctx(&run));
}

#[test]
fn a_script_pinned_by_its_directory_runs_and_changes_are_refused() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let script = d.write(
        "tool/run.sh",
        "#!/bin/sh\ncat >/dev/null\necho '{\"script\":\"ok\"}'\n",
        true,
    );
    let data = d.write("tool/data.txt", "some data\n", false);
    let cfg = config_with(&d, json!({ "S": cmd_plugin(&script, &["go"]) }));
    let c = check(&cfg, &[]);
    assert_eq!(c.code, 0, "{}", ctx(&c));
    let pins = &c.json["plugins"]["S"]["pins"];
    assert!(
        pins.get("manifest").is_none(),
        "no tree pin, no manifest: {pins}"
    );
    assert_eq!(pins["exec"]["sha256"], sha256_of(&script).as_str());
    assert!(pins["exec"]["pinned"].is_null());

    // The manifest digest of the directory: pin something wrong, read it from check.
    let mut p = cmd_plugin(&script, &["go"]);
    p["manifest_sha256"] = json!("a".repeat(64));
    let cfg = config_with(&d, json!({ "S": p.clone() }));
    let c = check(&cfg, &[]);
    assert_eq!(c.code, 5, "{}", ctx(&c));
    let m = &c.json["plugins"]["S"]["pins"]["manifest"];
    assert_eq!(m["ok"], false, "{m}");
    let err = m["error"].as_str().unwrap();
    let found = err
        .split("found ")
        .nth(1)
        .and_then(|s| s.get(..64))
        .unwrap()
        .to_owned();
    p["manifest_sha256"] = json!(found);
    p["sha256"] = json!(sha256_of(&script));
    let cfg = config_with(&d, json!({ "S": p }));
    let c = check(&cfg, &[]);
    assert_eq!(c.code, 0, "{}", ctx(&c));
    let pins = &c.json["plugins"]["S"]["pins"];
    assert_eq!(pins["manifest"]["ok"], true, "{pins}");
    assert_eq!(pins["manifest"]["sha256"], found.as_str());
    assert_eq!(pins["exec"]["ok"], true, "{pins}");
    assert_eq!(pins["exec"]["pinned"], sha256_of(&script).as_str());

    let run = call(&cfg, "S", "go", json!({}), &[]);
    assert_ok(&run);
    assert_eq!(run.result()["script"], "ok", "{}", ctx(&run));
    let started = &audit_of(&d, &run)[0];
    assert_eq!(started["plugin_files"]["manifest_sha256"], found.as_str());
    // It ran from the call's verified snapshot, not from the original path.
    let exec = started["plugin_files"]["exec"].as_str().unwrap();
    assert!(exec.contains("/verified/"), "{exec}");

    // A change to the data file (not the script itself) is refused too.
    std::fs::write(&data, "other data\n").unwrap();
    let run = call(&cfg, "S", "go", json!({}), &[]);
    assert_refused(&d, &run, 6, "integrity_mismatch");
    std::fs::write(&data, "some data\n").unwrap();
    assert_ok(&call(&cfg, "S", "go", json!({}), &[]));
    d.write("tool/new.sh", "#!/bin/sh\n", true);
    let run = call(&cfg, "S", "go", json!({}), &[]);
    assert_refused(&d, &run, 6, "integrity_mismatch");
}

// ---------------------------------------------------------------- no check-then-use race

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

/// Runs `n` calls on two threads while the swapper runs; every call must have
/// run the verified content or been refused. Returns (ran, refused).
fn race(
    what: &str,
    n: usize,
    start: impl FnOnce() -> Swapper,
    call: impl Fn() -> Run + Sync,
    is_good: impl Fn(&Run) -> bool + Sync,
) -> (usize, usize) {
    // One swapper at a time: each one keeps a core busy.
    static ONE_RACE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_RACE.lock().unwrap_or_else(|e| e.into_inner());
    let swapper = start();
    let ran = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let run = call();
                    let printed = run.json["data"]["stdout"]["text"].as_str().unwrap_or("");
                    assert!(
                        run.result()["evil"].is_null() && !printed.contains("evil"),
                        "{what}: the evil content ran: {}",
                        ctx(&run)
                    );
                    if is_good(&run) {
                        ran.fetch_add(1, Ordering::Relaxed);
                    } else if run.code == 6 && run.code_word() == "integrity_mismatch" {
                        refused.fetch_add(1, Ordering::Relaxed);
                    } else {
                        panic!(
                            "{what}: neither the verified plugin nor a refusal: {}",
                            ctx(&run)
                        );
                    }
                }
            });
        }
    });
    let swaps = swapper.stop();
    let (ran, refused) = (ran.into_inner(), refused.into_inner());
    println!("{what}: {n} calls during {swaps} swaps: {ran} ran the verified plugin, {refused} refused (integrity_mismatch), 0 evil");
    assert_eq!(ran + refused, n);
    assert!(
        ran > 0 && refused > 0,
        "{what}: the race was not exercised (ran {ran}, refused {refused})"
    );
    (ran, refused)
}

#[test]
fn swapping_a_pinned_binary_never_runs_the_swapped_in_file() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let good = echo_copy(&d, "stash/good");
    let evil = sh_printing(&d, "stash/evil", r#"{"evil":true}"#);
    let target = d.join("bin/echo");
    std::fs::create_dir_all(d.join("bin")).unwrap();
    chmod(&d.join("bin"), 0o755);
    std::fs::hard_link(&good, &target).unwrap();
    let p = json!({
        "command": [target, r#"{"who":"good"}"#],
        "allowed_methods": ["go"],
        "sha256": sha256_of(&good),
    });
    let cfg = config_with(&d, json!({ "E": p }));
    race(
        "pinned binary",
        200,
        || Swapper::start(target, good, evil, d.join("bin/.tmp")),
        || call(&cfg, "E", "go", json!({}), &[]),
        |r| r.code == 0 && r.result()["who"] == "good",
    );
}

#[test]
fn swapping_a_pinned_script_never_runs_the_swapped_in_script() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let good = sh_printing(&d, "stash/good.sh", r#"{"who":"good"}"#);
    let evil = sh_printing(&d, "stash/evil.sh", r#"{"evil":true}"#);
    std::fs::create_dir_all(d.join("bin")).unwrap();
    chmod(&d.join("bin"), 0o755);
    let target = d.join("bin/tool.sh");
    std::fs::hard_link(&good, &target).unwrap();
    let mut p = cmd_plugin(&target, &["go"]);
    p["sha256"] = json!(sha256_of(&good));
    let cfg = config_with(&d, json!({ "S": p }));
    race(
        "pinned script",
        200,
        || Swapper::start(target, good, evil, d.join("bin/.tmp")),
        || call(&cfg, "S", "go", json!({}), &[]),
        |r| r.code == 0 && r.result()["who"] == "good",
    );
}

/// The pinned file itself rewritten in place (no rename: the same inode the check
/// read): a script's interpreter reads the script again when it runs, so what runs
/// must be a copy of exactly the bytes that were hashed.
#[test]
fn rewriting_a_pinned_script_in_place_never_runs_the_rewritten_bytes() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let good = "#!/bin/sh\ncat >/dev/null\necho '{\"who\":\"good\"}'\n";
    let evil = "#!/bin/sh\ncat >/dev/null\necho '{\"evil\":1}'\n###\n";
    assert_eq!(good.len(), evil.len());
    let target = d.write("bin/tool.sh", good, true);
    let mut p = cmd_plugin(&target, &["go"]);
    p["sha256"] = json!(sha256_of(&target));
    let cfg = config_with(&d, json!({ "S": p }));
    let run = call(&cfg, "S", "go", json!({}), &[]);
    assert_ok(&run);
    // What ran is the call's own copy, hashed while it was copied.
    let started = &audit_of(&d, &run)[0];
    let exec = started["plugin_files"]["exec"].as_str().unwrap();
    assert!(exec.contains("/verified/exec/"), "{started}");
    assert_eq!(started["plugin_files"]["exec_source"], json!(target));
    race(
        "pinned script rewritten in place",
        120,
        || Swapper::in_place(target, good.into(), evil.into()),
        || call(&cfg, "S", "go", json!({}), &[]),
        |r| r.code == 0 && r.result()["who"] == "good",
    );
}

#[test]
fn swapping_a_pinned_python_module_never_imports_the_swapped_in_module() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let good = d.write("stash/good.py", GOOD_PY, false);
    let evil = d.write("stash/evil.py", EVIL_PY, false);
    d.write("py/mod.py", GOOD_PY, false);
    let cfg = config_with(&d, json!({ "P": py_plugin("py") }));
    let digest = check(&cfg, &[]).json["plugins"]["P"]["pins"]["manifest"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut p = py_plugin("py");
    p["manifest_sha256"] = json!(digest);
    let cfg = config_with(&d, json!({ "P": p }));
    // The temporary link lives outside the pinned tree, on the same file system.
    race(
        "pinned python module",
        80,
        || Swapper::start(d.join("py/mod.py"), good, evil, d.join("stash/.tmp")),
        || call(&cfg, "P", "who", json!({}), &[]),
        |r| r.code == 0 && r.result()["who"] == "good",
    );
}

// ---------------------------------------------------------------- unsafe plugin files

#[test]
fn writable_or_foreign_plugin_files_are_refused() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let script = sh_printing(&d, "plugins/tool.sh", r#"{"who":"tool"}"#);
    let tt = texttools_copy(&d, "plugins/tt");
    let cfg = config_with(
        &d,
        json!({ "S": cmd_plugin(&script, &["go"]), "T": cmd_plugin(&tt, &["wordcount"]) }),
    );
    let go = |plugin: &str| {
        let args = json!({"text": "a b"});
        let method = if plugin == "S" { "go" } else { "wordcount" };
        call(&cfg, plugin, method, args, &[])
    };
    assert_ok(&go("S"));
    assert!(words(&go("T")));

    for mode in [0o666, 0o777, 0o775] {
        chmod(&script, mode);
        let run = go("S");
        assert_refused(&d, &run, 6, "unsafe_plugin_file");
        assert!(
            run.json["data"]["error"]
                .as_str()
                .unwrap()
                .contains("writable by group or others"),
            "{}",
            ctx(&run)
        );
    }
    chmod(&script, 0o755);
    chmod(&tt, 0o777);
    assert_refused(&d, &go("T"), 6, "unsafe_plugin_file");
    chmod(&tt, 0o755);

    // A group-writable directory holding it.
    chmod(&d.join("plugins"), 0o775);
    assert_refused(&d, &go("S"), 6, "unsafe_plugin_file");
    chmod(&d.join("plugins"), 0o777);
    assert_refused(&d, &go("T"), 6, "unsafe_plugin_file");
    chmod(&d.join("plugins"), 0o755);

    // Owned by another uid.
    std::os::unix::fs::chown(&script, Some(1234), Some(1234)).unwrap();
    let run = go("S");
    assert_refused(&d, &run, 6, "unsafe_plugin_file");
    assert!(
        run.json["data"]["error"]
            .as_str()
            .unwrap()
            .contains("owned by uid 1234"),
        "{}",
        ctx(&run)
    );
    std::os::unix::fs::chown(&script, Some(0), Some(0)).unwrap();
    assert_ok(&go("S"));
}

#[test]
fn symlinks_must_stay_inside_the_plugin_directory() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let outside = sh_printing(&d, "elsewhere/tool.sh", r#"{"who":"outside"}"#);
    sh_printing(&d, "plugins/real.sh", r#"{"who":"inside"}"#);
    let escape = d.join("plugins/escape.sh");
    std::os::unix::fs::symlink(&outside, &escape).unwrap();
    let inside = d.join("plugins/inside.sh");
    std::os::unix::fs::symlink("real.sh", &inside).unwrap();
    let system = d.join("plugins/true");
    std::os::unix::fs::symlink("/bin/true", &system).unwrap();
    let cfg = config_with(
        &d,
        json!({
            "Escape": cmd_plugin(&escape, &["go"]),
            "Inside": cmd_plugin(&inside, &["go"]),
            "System": cmd_plugin(&system, &["go"]),
            "Direct": cmd_plugin(&outside, &["go"]),
        }),
    );
    // The target itself is fine: only the escaping link is refused.
    let run = call(&cfg, "Direct", "go", json!({}), &[]);
    assert_ok(&run);
    assert_eq!(run.result()["who"], "outside");

    for plugin in ["Escape", "System"] {
        let run = call(&cfg, plugin, "go", json!({}), &[]);
        assert_refused(&d, &run, 6, "unsafe_plugin_file");
        let err = run.json["data"]["error"].as_str().unwrap();
        assert!(err.contains("outside the plugin's directory"), "{err}");
    }
    let run = call(&cfg, "Inside", "go", json!({}), &[]);
    assert_ok(&run);
    assert_eq!(run.result()["who"], "inside", "{}", ctx(&run));
}

#[test]
fn unsafe_files_in_a_python_path_are_refused() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let module = d.write("py/mod.py", GOOD_PY, false);
    let helper = d.write("py/pkg/helper.py", "X = 1\n", false);
    let outside = d.write("elsewhere/helper.py", "X = 1\n", false);
    let cfg = config_with(&d, json!({ "P": py_plugin("py") }));
    let run = call(&cfg, "P", "who", json!({}), &[]);
    assert_ok(&run);

    chmod(&module, 0o666);
    assert_refused(
        &d,
        &call(&cfg, "P", "who", json!({}), &[]),
        6,
        "unsafe_plugin_file",
    );
    chmod(&module, 0o644);
    // Deep in the tree too, and the tree's directories.
    chmod(&helper, 0o646);
    assert_refused(
        &d,
        &call(&cfg, "P", "who", json!({}), &[]),
        6,
        "unsafe_plugin_file",
    );
    chmod(&helper, 0o644);
    chmod(&d.join("py/pkg"), 0o777);
    assert_refused(
        &d,
        &call(&cfg, "P", "who", json!({}), &[]),
        6,
        "unsafe_plugin_file",
    );
    chmod(&d.join("py/pkg"), 0o755);
    std::os::unix::fs::chown(&helper, Some(1234), None).unwrap();
    assert_refused(
        &d,
        &call(&cfg, "P", "who", json!({}), &[]),
        6,
        "unsafe_plugin_file",
    );
    std::os::unix::fs::chown(&helper, Some(0), None).unwrap();
    assert_ok(&call(&cfg, "P", "who", json!({}), &[]));

    // An escaping symlink anywhere in the python_path.
    let link = d.join("py/pkg/link.py");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let run = call(&cfg, "P", "who", json!({}), &[]);
    assert_refused(&d, &run, 6, "unsafe_plugin_file");
    assert!(
        run.json["data"]["error"]
            .as_str()
            .unwrap()
            .contains("outside the plugin's directory"),
        "{}",
        ctx(&run)
    );
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("../elsewhere", d.join("py/dirlink")).unwrap();
    assert_refused(
        &d,
        &call(&cfg, "P", "who", json!({}), &[]),
        6,
        "unsafe_plugin_file",
    );
    std::fs::remove_file(d.join("py/dirlink")).unwrap();
    // A link that stays inside is fine.
    std::os::unix::fs::symlink("helper.py", d.join("py/pkg/alias.py")).unwrap();
    assert_ok(&call(&cfg, "P", "who", json!({}), &[]));
}

// ---------------------------------------------------------------- signed configs

#[test]
fn keygen_writes_a_key_pair_once_and_never_half_of_one() {
    let d = TestDir::new();
    std::fs::create_dir(d.join("keys")).unwrap();
    let secret = d.join("secret.pem");
    let public = d.join("keys/k.pub");
    let kg = |s: &Path, p: &Path| {
        upm(
            &[
                "keygen",
                "--secret",
                s.to_str().unwrap(),
                "--public",
                p.to_str().unwrap(),
            ],
            b"",
            &[],
        )
    };
    let run = kg(&secret, &public);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let s_text = std::fs::read_to_string(&secret).unwrap();
    let p_text = std::fs::read_to_string(&public).unwrap();
    assert!(s_text.contains("BEGIN PRIVATE KEY"), "{s_text}");
    assert!(p_text.contains("BEGIN PUBLIC KEY"), "{p_text}");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Never overwrites either file.
    let run = kg(&secret, &public);
    assert_ne!(run.code, 0, "{}", ctx(&run));
    let other = d.join("other.pem");
    let run = kg(&other, &public);
    assert_ne!(run.code, 0, "{}", ctx(&run));
    assert!(
        !other.exists(),
        "no half key pair when the public key exists"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), s_text);
    assert_eq!(std::fs::read_to_string(&public).unwrap(), p_text);

    // The public key's directory does not exist: no secret key is left behind.
    let s2 = d.join("s2.pem");
    let run = kg(&s2, &d.join("nope/k.pub"));
    assert_ne!(run.code, 0, "{}", ctx(&run));
    assert!(!s2.exists(), "half a key pair was left behind");
}

/// A signed setup: a pinned texttools, a schema with a `$ref`, the default
/// seccomp profile, a key pair (public key in `keys/`) and `upm_config.json.sig`.
struct Signed {
    d: TestDir,
    cfg: PathBuf,
    keys: String,
    tt: PathBuf,
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

fn signed_ran(run: &Run) -> bool {
    run.code == 0 && run.result()["echo"] == "signed"
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

#[test]
fn a_signed_config_runs_verified() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let run = s.wc(&s.strict_env());
    assert_ok(&run);
    assert!(signed_ran(&run), "{}", ctx(&run));
    let trust = &run.json["data"]["trust"];
    assert_eq!(trust["status"], "verified", "{}", ctx(&run));
    assert_eq!(trust["mode"], "strict", "{}", ctx(&run));
    assert!(trust["key_id"].as_str().is_some_and(|k| !k.is_empty()));
    // A pinned ELF: nothing it runs is left unvouched for.
    assert!(trust.get("unpinned").is_none(), "{}", ctx(&run));
    let lines = audit_of(&s.d, &run);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["trust"]["status"], "verified", "{l}");
    }
    // The signature names every file it covers.
    let sig: Value =
        serde_json::from_str(&std::fs::read_to_string(trust_sig(&s.cfg)).unwrap()).unwrap();
    let files = sig["files"].as_object().unwrap();
    for f in [
        "upm_config.json",
        "schemas/text.json",
        "schemas/defs/text.json",
        "policies/default.json",
        "bin/echo",
    ] {
        assert!(files.contains_key(f), "{f} not signed: {sig}");
    }
}

#[test]
fn tampering_with_any_signed_file_is_refused_in_strict_and_reported_in_warn() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let warn = [
        ("UPM_TRUSTED_KEYS_DIR", s.keys.as_str()),
        ("UPM_TRUST_MODE", "warn"),
    ];
    let targets = [
        ("upm_config.json", "upm_config.json changed"),
        ("schemas/text.json", "schemas/text.json changed"),
        ("schemas/defs/text.json", "schemas/defs/text.json changed"),
        ("policies/default.json", "policies/default.json changed"),
        ("bin/echo", "bin/echo changed"),
    ];
    for (rel, reason) in targets {
        let path = s.d.join(rel);
        let orig = std::fs::read(&path).unwrap();
        // Still valid, still the same meaning: only the bytes changed.
        let mut tampered = orig.clone();
        tampered.push(b'\n');
        std::fs::write(&path, &tampered).unwrap();

        let run = s.wc(&s.strict_env());
        s.assert_untrusted(&run, reason);

        let run = s.wc(&warn);
        let data = &run.json["data"];
        assert_eq!(data["trust"]["status"], "failed", "{rel}: {}", ctx(&run));
        assert_eq!(data["trust"]["mode"], "warn", "{rel}: {}", ctx(&run));
        assert!(
            data["trust"]["reason"].as_str().unwrap().contains(reason),
            "{rel}: {}",
            ctx(&run)
        );
        let warnings = data["warnings"].as_array().expect("warnings");
        assert!(
            warnings
                .iter()
                .any(|w| w.as_str().unwrap().contains(reason)),
            "{rel}: {}",
            ctx(&run)
        );
        if rel == "bin/echo" {
            // The pin is a separate layer: a changed pinned binary never runs.
            assert_eq!(run.code, 6, "{rel}: {}", ctx(&run));
            assert_eq!(run.code_word(), "integrity_mismatch");
        } else {
            assert_ok(&run);
            assert!(signed_ran(&run), "{rel}: {}", ctx(&run));
            let lines = audit_of(&s.d, &run);
            let events: Vec<_> = lines.iter().map(|l| l["event"].clone()).collect();
            assert_eq!(events, [json!("started"), json!("finished")], "{rel}");
            for l in &lines {
                assert_eq!(l["trust"]["status"], "failed", "{rel}: {l}");
                assert!(
                    l["warnings"][0].as_str().unwrap().contains(reason),
                    "{rel}: {l}"
                );
            }
        }
        let audited = audit_of(&s.d, &run);
        assert!(audited.iter().all(|l| l["trust"]["status"] == "failed"));

        std::fs::write(&path, &orig).unwrap();
        // Restored: verified again (the config's bytes are restored exactly).
        let run = s.wc(&s.strict_env());
        assert_ok(&run);
        assert_eq!(run.json["data"]["trust"]["status"], "verified");
    }
}

#[test]
fn unsigned_foreign_and_corrupted_signatures_are_refused() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let sig = trust_sig(&s.cfg);
    let good_sig = std::fs::read_to_string(&sig).unwrap();

    // Unsigned.
    std::fs::remove_file(&sig).unwrap();
    s.assert_untrusted(&s.wc(&s.strict_env()), "not signed");

    // Signed by a key that is not trusted.
    let other = s.d.join("other.pem");
    keygen(&other, &s.d.join("other.pub"));
    sign(&s.cfg, &other);
    s.assert_untrusted(&s.wc(&s.strict_env()), "not in the trusted keys directory");

    // A flipped signature digit, a changed key id, garbage.
    let doc: Value = serde_json::from_str(&good_sig).unwrap();
    let hexsig = doc["signature"].as_str().unwrap();
    let flipped = format!(
        "{}{}",
        if hexsig.starts_with('0') { "1" } else { "0" },
        &hexsig[1..]
    );
    let mut bad = doc.clone();
    bad["signature"] = json!(flipped);
    std::fs::write(&sig, bad.to_string()).unwrap();
    s.assert_untrusted(&s.wc(&s.strict_env()), "does not verify");
    // A signed digest edited to match a tampered file: the signature no longer verifies.
    let mut bad = doc.clone();
    bad["files"]["bin/echo"] = json!(format!("sha256:{}", "0".repeat(64)));
    std::fs::write(&sig, bad.to_string()).unwrap();
    s.assert_untrusted(&s.wc(&s.strict_env()), "does not verify");
    for garbage in [
        "",
        "{",
        "null",
        "{\"version\":1}",
        &good_sig[..good_sig.len() / 2],
    ] {
        std::fs::write(&sig, garbage).unwrap();
        s.assert_untrusted(&s.wc(&s.strict_env()), "cannot be used");
    }

    std::fs::write(&sig, &good_sig).unwrap();
    assert_ok(&s.wc(&s.strict_env()));
}

#[test]
fn trust_modes_keys_dirs_and_their_precedence() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);

    // Off: runs, no trust field, even unsigned.
    std::fs::rename(trust_sig(&s.cfg), s.d.join("saved.sig")).unwrap();
    let run = s.wc(&[("UPM_TRUST_MODE", "off"), ("UPM_TRUSTED_KEYS_DIR", &s.keys)]);
    assert_ok(&run);
    assert!(run.json["data"].get("trust").is_none(), "{}", ctx(&run));
    assert!(audit_of(&s.d, &run)
        .iter()
        .all(|l| l.get("trust").is_none()));
    // No settings at all: off.
    let run = s.wc(&[]);
    assert_ok(&run);
    assert!(run.json["data"].get("trust").is_none(), "{}", ctx(&run));
    std::fs::rename(s.d.join("saved.sig"), trust_sig(&s.cfg)).unwrap();

    // Strict without a usable keys dir fails, never open.
    let nowhere = s.d.join("nowhere").to_string_lossy().into_owned();
    s.assert_untrusted(
        &s.wc(&[("UPM_TRUSTED_KEYS_DIR", &nowhere)]),
        "cannot be used",
    );
    s.assert_untrusted(&s.wc(&[("UPM_TRUST_MODE", "strict")]), "no trusted key");
    s.d.write("keys/garbage.pub", "not a key\n", false);
    s.assert_untrusted(&s.wc(&s.strict_env()), "cannot be used");
    std::fs::remove_file(s.d.join("keys/garbage.pub")).unwrap();
    assert_ok(&s.wc(&s.strict_env()));

    // An invalid mode means strict, even with a good signature.
    for mode in ["permissive", "WARN", "Off "] {
        let run = s.wc(&[("UPM_TRUST_MODE", mode), ("UPM_TRUSTED_KEYS_DIR", &s.keys)]);
        s.assert_untrusted(&run, "unknown trust mode");
    }
}

#[test]
fn trust_settings_from_the_config_and_the_environment_winning() {
    if skip_unless_root() {
        return;
    }
    // keys_dir with no mode: strict.
    let s = signed_setup(Some(json!({ "keys_dir": "keys" })));
    let run = s.wc(&[]);
    assert_ok(&run);
    assert_eq!(run.json["data"]["trust"]["mode"], "strict");
    assert_eq!(run.json["data"]["trust"]["status"], "verified");
    let sig = trust_sig(&s.cfg);
    let good_sig = std::fs::read(&sig).unwrap();
    std::fs::remove_file(&sig).unwrap();
    s.assert_untrusted(&s.wc(&[]), "not signed");
    // The environment wins: warn runs the unsigned config, with a warning.
    let run = s.wc(&[("UPM_TRUST_MODE", "warn")]);
    assert_ok(&run);
    assert_eq!(run.json["data"]["trust"]["mode"], "warn");
    assert_eq!(run.json["data"]["trust"]["status"], "failed");
    assert!(!run.json["data"]["warnings"].as_array().unwrap().is_empty());
    // ... and so does the environment's keys dir.
    std::fs::write(&sig, &good_sig).unwrap();
    let empty = s.d.join("empty-keys");
    std::fs::create_dir(&empty).unwrap();
    s.assert_untrusted(
        &s.wc(&[("UPM_TRUSTED_KEYS_DIR", empty.to_str().unwrap())]),
        "not in the trusted keys directory",
    );

    // Config says strict; the environment says warn: warn.
    let s = signed_setup(Some(json!({ "mode": "strict", "keys_dir": "keys" })));
    std::fs::remove_file(trust_sig(&s.cfg)).unwrap();
    s.assert_untrusted(&s.wc(&[]), "not signed");
    let run = s.wc(&[("UPM_TRUST_MODE", "warn")]);
    assert_ok(&run);
    assert_eq!(run.json["data"]["trust"]["mode"], "warn");

    // A trust block that cannot be read means strict.
    let s = signed_setup(Some(json!({ "mode": "off", "keyz_dir": "keys" })));
    let run = s.wc(&[]);
    s.assert_untrusted(&run, "trust settings cannot be read");
}

/// Once the environment sets UPM_TRUST_MODE or UPM_TRUSTED_KEYS_DIR, the config's own
/// `trust` block (which whoever edits the config controls) is ignored entirely.
#[test]
fn the_config_trust_block_is_ignored_once_the_environment_sets_trust() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    // The attacker rewrites the config: another command, trust off, their own keys.
    let attacker_keys = s.d.join("attacker-keys");
    std::fs::create_dir(&attacker_keys).unwrap();
    let attacker = s.d.join("attacker.pem");
    keygen(&attacker, &attacker_keys.join("a.pub"));
    let evil = sh_printing(&s.d, "bin/evil.sh", r#"{"evil":true}"#);
    for block in [
        json!({ "mode": "off" }),
        json!({ "mode": "warn" }),
        json!({ "keys_dir": "attacker-keys" }),
        json!({ "mode": "off", "keys_dir": "attacker-keys" }),
    ] {
        s.d.config(&json!({
            "require_schemas": false,
            "trust": block,
            "plugins": { "T": { "command": [evil], "allowed_methods": ["wordcount"] } }
        }));
        sign(&s.cfg, &attacker);
        // The operator set only the keys directory: strict.
        s.assert_untrusted(&s.wc(&s.strict_env()), "not in the trusted keys directory");
        // The operator set only the mode: no keys from the config, fail closed.
        let run = s.wc(&[("UPM_TRUST_MODE", "strict")]);
        s.assert_untrusted(&run, "no trusted key");
        assert!(
            run.json["data"]["error"]
                .as_str()
                .unwrap()
                .contains("but not UPM_TRUSTED_KEYS_DIR"),
            "{}",
            ctx(&run)
        );
        // A mode that is not UTF-8 is unknown, so strict, whatever the config says.
        let mut cmd = Command::new(upm_bin());
        cmd.args(["run", "--config", s.cfg.to_str().unwrap()])
            .env_remove("UPM_TRUSTED_KEYS_DIR")
            .env_remove("UPM_LOG_FILE")
            .env(
                "UPM_TRUST_MODE",
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"str\xffict"),
            );
        let run = run_command(cmd, &request("T", "wordcount", json!({"text": "a b"})));
        s.assert_untrusted(&run, "unknown trust mode");
    }
}

/// Two schema files whose names differ only in bytes that are not UTF-8 would share one
/// lossy label, so the signature would cover only one: such names are refused.
#[test]
fn signing_refuses_paths_that_are_not_utf8() {
    let s = signed_setup(None);
    let dir = s.d.join("schemas");
    s.d.write(
        "schemas/text.json",
        r#"{"allOf": [{"$ref": "a%FF.json"}, {"$ref": "a%FE.json"}]}"#,
        false,
    );
    for (byte, field) in [(0xff_u8, "x"), (0xfe, "y")] {
        let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&[
            b'a', byte, b'.', b'j', b's', b'o', b'n',
        ])
        .to_owned();
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(r#"{{"type": "object", "required": ["{field}"]}}"#),
        )
        .unwrap();
        chmod(&p, 0o644);
    }
    let secret = s.d.join("secret.pem");
    let run = upm(
        &[
            "sign",
            "--key",
            secret.to_str().unwrap(),
            "--config",
            s.cfg.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(run.code, 5, "{}", ctx(&run));
    assert!(run.stderr.contains("not a UTF-8 path"), "{}", ctx(&run));
    // The old signature does not cover the new files either: refused, with the reason.
    let run = s.wc(&s.strict_env());
    s.assert_untrusted(&run, "not a UTF-8 path");
}

/// `upm sign` never writes through a symlink planted at `<config>.sig`: it replaces
/// the link with the signature, and the link's target is left as it was.
#[test]
fn signing_replaces_a_planted_symlink_and_never_writes_through_it() {
    let s = signed_setup(None);
    let sig = trust_sig(&s.cfg);
    let victim = s.d.join("victim");
    std::fs::write(&victim, "important root data\n").unwrap();
    chmod(&victim, 0o600);
    std::fs::remove_file(&sig).unwrap();
    std::os::unix::fs::symlink(&victim, &sig).unwrap();
    sign(&s.cfg, &s.d.join("secret.pem"));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "important root data\n"
    );
    let meta = std::fs::symlink_metadata(&sig).unwrap();
    assert!(meta.file_type().is_file(), "{meta:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    // No temporary file left behind, and the new signature verifies.
    let left: Vec<_> = std::fs::read_dir(&s.d.path)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let c = check(&s.cfg, &s.strict_env());
    assert_eq!(c.json["signature"]["status"], "verified", "{}", ctx(&c));
}

/// A signature covers the config, which holds the pins: an executable without a pin is
/// covered by nothing, and "verified" must not hide it. The verdict lists it.
#[test]
fn a_verified_verdict_lists_what_ran_unpinned() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let script = sh_printing(&s.d, "bin/tool.sh", r#"{"who":"unpinned"}"#);
    let pinned = sh_printing(&s.d, "bin/pinned.sh", r#"{"who":"pinned"}"#);
    s.d.config(&json!({
        "require_schemas": false,
        "plugins": {
            "U": { "command": [script], "allowed_methods": ["go"] },
            "P": { "command": [pinned], "sha256": sha256_of(&pinned), "allowed_methods": ["go"] }
        }
    }));
    sign(&s.cfg, &s.d.join("secret.pem"));
    let run = call(&s.cfg, "U", "go", json!({}), &s.strict_env());
    assert_ok(&run);
    let trust = &run.json["data"]["trust"];
    assert_eq!(trust["status"], "verified", "{}", ctx(&run));
    assert_eq!(
        trust["unpinned"],
        json!([script.to_str().unwrap(), "/bin/sh"]),
        "{}",
        ctx(&run)
    );
    for l in audit_of(&s.d, &run) {
        assert_eq!(l["trust"]["unpinned"], trust["unpinned"], "{l}");
    }
    // A pinned script: only its interpreter, which nothing pins.
    let run = call(&s.cfg, "P", "go", json!({}), &s.strict_env());
    assert_ok(&run);
    assert_eq!(
        run.json["data"]["trust"]["unpinned"],
        json!(["/bin/sh"]),
        "{}",
        ctx(&run)
    );
    // `upm check` tells before any call.
    let c = check(&s.cfg, &s.strict_env());
    assert_eq!(c.code, 0, "{}", ctx(&c));
    assert_eq!(
        c.json["plugins"]["U"]["pins"]["unpinned"],
        json!([script.to_str().unwrap(), "/bin/sh"]),
        "{}",
        ctx(&c)
    );
}

/// A signed config and its signature put back after the operator signed a newer one
/// still verify (the key signed them); UPM_TRUST_MIN_SIGNED_AT refuses them.
#[test]
fn a_minimum_signing_time_refuses_a_rolled_back_config() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let sig = trust_sig(&s.cfg);
    let (old_cfg, old_sig) = (std::fs::read(&s.cfg).unwrap(), std::fs::read(&sig).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(20));
    // The operator tightens the config and signs again.
    let mut c: Value = serde_json::from_slice(&old_cfg).unwrap();
    c["sandbox"]["limits"]["timeout_ms"] = json!(5000);
    s.d.config(&c);
    sign(&s.cfg, &s.d.join("secret.pem"));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&sig).unwrap()).unwrap();
    let signed_at = doc["signed_at"].as_str().unwrap().to_owned();
    let env = [
        ("UPM_TRUSTED_KEYS_DIR", s.keys.as_str()),
        ("UPM_TRUST_MIN_SIGNED_AT", signed_at.as_str()),
    ];
    assert_ok(&s.wc(&env));
    // Without the setting, the old pair verifies: a signature does not say it is the newest.
    std::fs::write(&s.cfg, &old_cfg).unwrap();
    std::fs::write(&sig, &old_sig).unwrap();
    assert_ok(&s.wc(&s.strict_env()));
    s.assert_untrusted(&s.wc(&env), "before UPM_TRUST_MIN_SIGNED_AT");
    // A minimum that is not a time: strict, refused.
    let env = [
        ("UPM_TRUSTED_KEYS_DIR", s.keys.as_str()),
        ("UPM_TRUST_MIN_SIGNED_AT", "yesterday"),
    ];
    s.assert_untrusted(&s.wc(&env), "not an RFC 3339 time");
    // On its own it is the environment speaking: strict, keys from the environment only.
    s.assert_untrusted(
        &s.wc(&[("UPM_TRUST_MIN_SIGNED_AT", "2000-01-01T00:00:00Z")]),
        "no trusted key",
    );
}

#[test]
fn check_reports_the_signature() {
    let s = signed_setup(None);
    let c = check(&s.cfg, &s.strict_env());
    assert_eq!(c.code, 0, "{}", ctx(&c));
    assert_eq!(c.json["signature"]["status"], "verified", "{}", ctx(&c));
    assert_eq!(c.json["signature"]["mode"], "strict");
    let pins = &c.json["plugins"]["T"]["pins"]["exec"];
    assert_eq!(pins["ok"], true, "{pins}");
    assert_eq!(pins["pinned"], sha256_of(&s.tt).as_str());
    assert_eq!(pins["sha256"], sha256_of(&s.tt).as_str());

    let c = check(&s.cfg, &[]);
    assert_eq!(c.json["signature"]["mode"], "off", "{}", ctx(&c));

    let schema = s.d.join("schemas/defs/text.json");
    let orig = std::fs::read(&schema).unwrap();
    std::fs::write(&schema, [orig.as_slice(), b" "].concat()).unwrap();
    let c = check(&s.cfg, &s.strict_env());
    assert_eq!(c.code, 5, "{}", ctx(&c));
    assert_eq!(c.json["signature"]["status"], "failed", "{}", ctx(&c));
    assert!(c.json["signature"]["reason"]
        .as_str()
        .unwrap()
        .contains("schemas/defs/text.json changed"));
    assert!(c.json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p.as_str().unwrap().starts_with("signature:")));
    // Warn: reported, not a problem.
    let c = check(
        &s.cfg,
        &[
            ("UPM_TRUST_MODE", "warn"),
            ("UPM_TRUSTED_KEYS_DIR", &s.keys),
        ],
    );
    assert_eq!(c.code, 0, "{}", ctx(&c));
    assert_eq!(c.json["signature"]["status"], "failed");
    assert_eq!(c.json["signature"]["mode"], "warn");
}

/// upm run/check/sign with a deadline: a FIFO or a device read as if it were a file
/// would hold upm forever.
fn upm_bounded(argv: &[&str], input: &[u8], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "20"]).arg(upm_bin()).args(argv);
    run_command(with_trust_env(cmd, env), input)
}

/// A pinned executable replaced by a symlink to /dev/zero or by a FIFO: refused at once,
/// with an audit entry, by run (trust on or off), check and sign alike; never read.
#[test]
fn a_pinned_executable_replaced_by_a_device_or_a_fifo_is_refused_not_read() {
    if skip_unless_root() {
        return;
    }
    let s = signed_setup(None);
    let cfg = s.cfg.to_str().unwrap();
    let secret = s.d.join("secret.pem");
    let saved = s.d.join("saved-echo");
    std::fs::rename(&s.tt, &saved).unwrap();
    for (what, reason) in [
        ("symlink", "outside the plugin's directory"),
        ("fifo", "not a regular file"),
    ] {
        match what {
            "symlink" => std::os::unix::fs::symlink("/dev/zero", &s.tt).unwrap(),
            _ => {
                nix::unistd::mkfifo(&s.tt, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap()
            }
        }
        for env in [&s.strict_env()[..], &[]] {
            let run = upm_bounded(
                &["run", "--config", cfg],
                &request("T", "wordcount", json!({"text": "a b"})),
                env,
            );
            assert_refused(&s.d, &run, 6, "unsafe_plugin_file");
            let err = run.json["data"]["error"].as_str().unwrap();
            assert!(err.contains(reason), "{what}: {}", ctx(&run));
        }
        let c = upm_bounded(&["check", "--config", cfg], b"", &s.strict_env());
        assert_eq!(c.code, 5, "{what}: {}", ctx(&c));
        let c = upm_bounded(
            &["sign", "--key", secret.to_str().unwrap(), "--config", cfg],
            b"",
            &[],
        );
        assert_eq!(c.code, 5, "{what}: {}", ctx(&c));
        assert!(c.stderr.contains(reason), "{what}: {}", ctx(&c));
        std::fs::remove_file(&s.tt).unwrap();
    }
    std::fs::rename(&saved, &s.tt).unwrap();
    assert_ok(&s.wc(&s.strict_env()));
}

/// A Python class plugin's interpreter is listed by the signature; with trust on, what
/// runs is a copy of it hashed while copied, and a changed interpreter is refused.
#[test]
fn the_python_interpreter_is_signed_and_a_changed_one_never_runs() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    d.write("py/mod.py", GOOD_PY, false);
    let python = d.join("interp/python3");
    std::fs::create_dir_all(python.parent().unwrap()).unwrap();
    chmod(python.parent().unwrap(), 0o755);
    std::fs::copy(std::fs::canonicalize("/usr/bin/python3").unwrap(), &python).unwrap();
    chmod(&python, 0o755);
    let cfg = d.config(&json!({
        "require_schemas": false,
        "python": "interp/python3",
        "plugins": { "P": py_plugin("py") }
    }));
    std::fs::create_dir(d.join("keys")).unwrap();
    let secret = d.join("secret.pem");
    keygen(&secret, &d.join("keys/k.pub"));
    sign(&cfg, &secret);
    let sig: Value =
        serde_json::from_str(&std::fs::read_to_string(trust_sig(&cfg)).unwrap()).unwrap();
    assert_eq!(
        sig["files"]["interp/python3"],
        format!("sha256:{}", sha256_of(&python)).as_str(),
        "{sig}"
    );
    let keys = d.join("keys");
    let strict = [("UPM_TRUSTED_KEYS_DIR", keys.to_str().unwrap())];
    let run = call(&cfg, "P", "who", json!({}), &strict);
    assert_ok(&run);
    assert_eq!(run.result()["who"], "good", "{}", ctx(&run));
    assert_eq!(
        run.json["data"]["trust"]["status"],
        "verified",
        "{}",
        ctx(&run)
    );
    let started = &audit_of(&d, &run)[0];
    let exec = started["plugin_files"]["exec"].as_str().unwrap();
    assert!(exec.contains("/verified/exec/"), "{started}");
    assert_eq!(
        started["plugin_files"]["exec_sha256"],
        sha256_of(&python).as_str()
    );

    // Another interpreter in its place: refused before anything runs, in strict.
    let saved = d.join("saved-python");
    std::fs::rename(&python, &saved).unwrap();
    d.write("interp/python3", "#!/bin/sh\necho '{\"evil\":1}'\n", true);
    let run = call(&cfg, "P", "who", json!({}), &strict);
    assert_refused(&d, &run, 5, "untrusted_config");
    let err = run.json["data"]["error"].as_str().unwrap();
    assert!(err.contains("interp/python3 changed"), "{}", ctx(&run));
    assert_eq!(
        run.json["data"]["trust"]["status"],
        "failed",
        "{}",
        ctx(&run)
    );
    // `upm check` says so too.
    let c = check(&cfg, &strict);
    assert_eq!(c.code, 5, "{}", ctx(&c));
    std::fs::rename(&saved, &python).unwrap();
    assert_ok(&call(&cfg, "P", "who", json!({}), &strict));
}

// ---------------------------------------------------------------- signed files swapped during calls

/// A signed file swapped in a loop between its signed content and another one:
/// whatever a call uses must be what was verified.
fn race_signed_file(
    what: &str,
    rel: &str,
    evil: &str,
    args: Value,
    classify: impl Fn(&Run, &str) -> Outcome + Sync,
) {
    let s = signed_setup(None);
    let target = s.d.join(rel);
    let good_text = std::fs::read_to_string(&target).unwrap();
    let good_digest = format!("sha256:{}", sha256_of(&target));
    let good = s.d.write("stash/good", &good_text, false);
    let evil = s.d.write("stash/evil", evil, false);
    static ONE_RACE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_RACE.lock().unwrap_or_else(|e| e.into_inner());
    let swapper = Swapper::start(target, good, evil, s.d.join("stash/.tmp"));
    let n = 150;
    let counts = [0, 1, 2].map(|_| AtomicUsize::new(0));
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let run = call(&s.cfg, "T", "wordcount", args.clone(), &s.strict_env());
                    match classify(&run, &good_digest) {
                        Outcome::Verified => counts[0].fetch_add(1, Ordering::Relaxed),
                        Outcome::Refused => counts[1].fetch_add(1, Ordering::Relaxed),
                        Outcome::Unverified => {
                            counts[2].fetch_add(1, Ordering::Relaxed);
                            eprintln!("{what}: used an unsigned file: {}", ctx(&run));
                            0
                        }
                    };
                }
            });
        }
    });
    let swaps = swapper.stop();
    let [ok, refused, bad] = counts.map(AtomicUsize::into_inner);
    println!("{what}: {n} calls during {swaps} swaps: {ok} used the signed file, {refused} refused, {bad} used the unsigned one");
    assert_eq!(
        bad, 0,
        "{what}: {bad} calls used a file that was not signed"
    );
    assert!(refused > 0, "{what}: the race was not exercised");
}

enum Outcome {
    /// Ran (or was refused by the schema) with the signed file.
    Verified,
    /// `untrusted_config`.
    Refused,
    /// Used a file the signature does not cover.
    Unverified,
}

#[test]
fn swapping_a_signed_schema_never_validates_with_the_unsigned_one() {
    if skip_unless_root() {
        return;
    }
    // Signed: text at most 1000 characters. Swapped in: no limit.
    race_signed_file(
        "signed schema",
        "schemas/defs/text.json",
        r#"{ "type": "string" }"#,
        json!({"text": "x".repeat(2000)}),
        |run, _| match (run.code, run.code_word()) {
            (10, "invalid_args") => Outcome::Verified,
            (5, "untrusted_config") => Outcome::Refused,
            _ => Outcome::Unverified,
        },
    );
}

#[test]
fn swapping_a_signed_seccomp_profile_never_enforces_the_unsigned_one() {
    if skip_unless_root() {
        return;
    }
    let profile = std::fs::read_to_string(repo().join("policies/default.json")).unwrap();
    let mut evil: Value = serde_json::from_str(&profile).unwrap();
    evil["defaultErrnoRet"] = json!(38);
    race_signed_file(
        "signed seccomp profile",
        "policies/default.json",
        &evil.to_string(),
        json!({"text": "a b"}),
        |run, signed| {
            let used = &run.json["data"]["sandbox"]["layers"]["seccomp"]["detail"]["digest"];
            match (run.code, run.code_word()) {
                (0, _) if used == signed => Outcome::Verified,
                (5, "untrusted_config") => Outcome::Refused,
                _ => Outcome::Unverified,
            }
        },
    );
}
