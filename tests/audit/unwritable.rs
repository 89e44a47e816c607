//! A log that cannot be written refuses the call before the plugin runs, or withholds what it returned.

use super::*;

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

#[test]
fn a_rotation_that_cannot_happen_does_not_withhold_a_result() {
    let dir = TestDir::new();
    // Every append to a non-empty file is due to rotate: the call's `started` entry goes
    // into the new, empty file; its `finished` one is the first that rotates.
    let config = texttools_config(&dir, json!({ "rotate": { "max_bytes": 1 } }), json!({}));
    let log = log_of(&dir);
    // A non-empty directory at the rotation's temporary name: upm cannot remove it, so it
    // cannot rotate (as when the filesystem has no inode left for the new file).
    let tmp = dir.join(".entrypoint.log.rotate");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(tmp.join("keep"), "").unwrap();
    let rotated = || {
        std::fs::read_dir(&dir.path)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("entrypoint.log.")
            })
            .count()
    };

    let r = call(&config, "TextTools", "upper", json!({"text": "hi"}));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.result().is_null(), "{r:?}");
    assert!(
        r.stderr.contains("appended to the current file"),
        "the failed rotation is said: {r:?}"
    );
    let events: Vec<String> = raw_lines(&log)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].to_string())
        .collect();
    assert_eq!(events, ["\"started\"", "\"finished\""]);
    assert_eq!(rotated(), 0);
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");

    // Once it can, the next append rotates, and the chain runs on across the files.
    std::fs::remove_dir_all(&tmp).unwrap();
    let r = call(&config, "TextTools", "upper", json!({"text": "hi"}));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(rotated() >= 1);
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("4 entries"), "{report}");
}

/// `upm run --config CONFIG` from a bash that first set `ulimit -f KIB` (its soft and hard
/// RLIMIT_FSIZE, in KiB), the call's request on stdin.
fn run_under_ulimit_f(kib: u64, config: &Path, req: &[u8]) -> Run {
    let mut cmd = Command::new("bash");
    cmd.args([
        "-c",
        &format!("ulimit -f {kib} && exec \"$0\" run --config \"$1\""),
    ])
    .arg(upm_bin())
    .arg(config)
    .env_remove("UPM_CONFIG_PATH")
    .env_remove("UPM_LOG_FILE");
    run_command(cmd, req)
}

#[test]
fn a_callers_file_size_limit_fails_the_append_instead_of_killing_upm() {
    let dir = TestDir::new();
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Writes past its own file size limit (1 MiB) itself, so that SIGXFSZ, by default,
    // ends the plugin's process.
    let big = dir.write("big.sh", "#!/bin/sh\nread -r _\nexec yes > ./big\n", true);
    // TextTools' own file size limit must be below the caller's (upm cannot raise it).
    let mut texttools = texttools_plugin(&repo().join("schemas"));
    texttools["sandbox"] = json!({ "limits": { "file_size_bytes": 1024 } });
    let config = TestConfig::new()
        .set("audit", json!({}))
        .set("workdir_root", json!(work))
        .plugin("TextTools", texttools)
        .plugins(json!({ "Big": {
            "command": [big], "allowed_methods": ["go"],
            "sandbox": { "limits": { "file_size_bytes": 1 << 20 } }
        } }))
        .write(&dir);
    let log = log_of(&dir);
    let size = || std::fs::metadata(&log).unwrap().len();
    let req = |id: &str| {
        let r = json!({"plugin": "TextTools", "method": "upper", "args": {"text": "hi"},
                       "request_id": id});
        serde_json::to_vec(&r).unwrap()
    };

    // upm ignores SIGXFSZ; the plugin does not.
    let r = run_stdin(&config, &request("Big", "go", json!({})));
    assert_eq!(r.json["data"]["signal"], libc::SIGXFSZ, "{r:?}");
    assert_eq!(r.json["data"]["limit"], "file_size", "{r:?}");

    // A limit that lets the next call's `started` entry in, and not its `finished` one
    // (bash's `ulimit -f` counts KiB). The file's size before the call is moved by
    // calls until there is such a limit.
    let margin = 64;
    let mut kib = None;
    for i in 0..20 {
        let r = run_stdin(&config, &req(&format!("warm-{i:02}")));
        assert_eq!(r.code, 0, "{r:?}");
        let lines = raw_lines(&log);
        let started = lines[lines.len() - 2].len() as u64 + 1;
        let finished = lines[lines.len() - 1].len() as u64 + 1;
        let (low, high) = (
            size() + started + margin,
            size() + started + finished - margin,
        );
        let k = low.div_ceil(1024);
        if k * 1024 < high {
            kib = Some(k);
            break;
        }
    }
    let kib = kib.expect("no ulimit -f falls between a started and a finished entry");
    let before = size();

    let r = run_under_ulimit_f(kib, &config, &req("fsize-00"));
    assert_eq!(r.code, 11, "{r:?}");
    assert_eq!(r.code_word(), "audit_error", "{r:?}");
    assert_eq!(r.json["data"]["details"], json!({"ran": true}), "{r:?}");
    assert!(r.result().is_null(), "{r:?}");
    assert!(r.json["data"]["error"]
        .as_str()
        .unwrap()
        .contains("withheld"));
    // Cut back to the `started` entry: no torn line.
    let lines = raw_lines(&log);
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        (&last["event"], &last["request_id"]),
        (&json!("started"), &json!("fsize-00"))
    );
    assert!(size() > before && size() <= kib * 1024);
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(!report.contains("torn"), "{report}");
    // The call's private directory is gone like any other's.
    assert_eq!(left_under(&work), Vec::<PathBuf>::new());
}

#[test]
fn a_usage_error_that_cannot_be_logged_exits_as_audit_error() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let victim = dir.write("victim.conf", "KEY=value", false);
    std::os::unix::fs::symlink(&victim, log_of(&dir)).unwrap();
    let c = config.to_str().unwrap();
    // `upm run` with an unknown flag, and the argv form with too few arguments.
    for argv in [
        vec!["run", "--config", c, "--bogus"],
        vec!["--config", c, "TextTools"],
    ] {
        let r = run_with(&argv, b"", &[]);
        assert_eq!(r.code_word(), "audit_error", "{argv:?}: {r:?}");
        assert_eq!(r.code, 11, "code and exit agree: {argv:?}: {r:?}");
        assert!(r.stderr.contains("usage"), "{r:?}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "KEY=value");
}
