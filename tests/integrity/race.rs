//! No check-then-use race: a pinned file swapped or rewritten during the call never runs.

use super::*;

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
    // What ran is the call's own copy, a sealed memfd, hashed from the sealed bytes.
    let started = &audit_of(&d, &run)[0];
    let exec = started["plugin_files"]["exec"].as_str().unwrap();
    assert_eq!(exec, "memfd:tool.sh", "{started}");
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
