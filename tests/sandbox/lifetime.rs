//! Nothing outlives the call: timeouts, daemonized grandchildren, a killed upm, the init.

use super::*;

both!(
    sleeping_past_the_timeout_is_killed,
    daemonized_grandchild_does_not_outlive_the_call,
    killing_upm_kills_the_plugin_tree,
    the_plugin_cannot_reach_into_its_init,
);

/// Processes whose working directory path contains `needle`: plugins run in
/// `/tmp/upm-<request id>-*/home`, and a script's cmdline names the call's symlink to
/// its verified descriptor, not the script's own path.
fn processes_with_cwd(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) {
            if cwd.to_string_lossy().contains(needle) {
                found.push(format!("{}: cwd {}", name.to_string_lossy(), cwd.display()));
            }
        }
    }
    found
}

fn sleeping_past_the_timeout_is_killed(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["timeout_ms"] = json!(1500);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let started = Instant::now();
    let run = fx.call("probe", "sleep", json!({}));
    let took = started.elapsed();
    assert_eq!(run.code, 12, "{}", ctx(&run));
    assert_eq!(run.code_word(), "timeout", "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "timeout", "{}", ctx(&run));
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(
        took < Duration::from_millis(5000),
        "upm returned after {took:?}"
    );
    let script = fx.plugin_path("probe.py").to_str().unwrap().to_owned();
    assert!(processes_matching(&script).is_empty());
}

fn daemonized_grandchild_does_not_outlive_the_call(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    // sleep(1) takes a fractional argument: a unique one marks the daemon in /proc.
    let marker = format!("977.{}", fx.nonce);
    let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
    // Control: while the call runs, the daemon is there to be seen.
    let (child, seen) = start_daemon_call(&fx, &marker, 1.5);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !seen.is_empty(),
        "the daemon never appeared; upm said {stdout}"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let json: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["data"]["result"]["daemon_started"], true, "{stdout}");
    // It held the stdout pipe open, yet upm returned right after the plugin exited.
    let wall = json["data"]["usage"]["wall_ms"].as_f64().unwrap();
    assert!(wall < 4000.0, "upm waited {wall} ms");
    let left = processes_matching(&marker);
    assert!(
        left.is_empty(),
        "the daemon outlived the call: {left:?} (seen during it: {seen:?})"
    );
}

fn killing_upm_kills_the_plugin_tree(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["timeout_ms"] = json!(30000);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let marker = format!("978.{}", fx.nonce);
    let workdirs = format!("upm-sandbox-test-{}", marker.replace('.', "_"));
    let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
    let (mut child, seen) = start_daemon_call(&fx, &marker, 30.0);
    assert!(!seen.is_empty(), "the daemon never appeared");
    assert!(
        !processes_with_cwd(&workdirs).is_empty(),
        "the plugin is not running"
    );
    // upm dies without any chance to clean up: the init's parent-death signal does it.
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = processes_matching(&marker);
    left.extend(processes_with_cwd(&workdirs));
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = processes_matching(&marker);
        left.extend(processes_with_cwd(&workdirs));
    }
    assert!(left.is_empty(), "the plugin tree outlived upm: {left:?}");
    // The killed upm could not remove its working directory: do it for it.
    let prefix = format!("upm-sandbox-test-{}", marker.replace('.', "_"));
    for entry in std::fs::read_dir("/tmp").unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The init shares upm's memory until the call ends. Even under a seccomp profile that
/// allows ptrace and process_vm_* (Docker's, on kernels >= 4.8), the plugin — in a
/// Landlock domain the init is outside of — cannot trace it or read its memory.
fn the_plugin_cannot_reach_into_its_init(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["plugins"]["probe"]["sandbox"]["seccomp"] = json!("policies/docker.json");
    }) else {
        return;
    };
    std::fs::copy(
        common::repo().join("tests/fixtures/seccomp/docker-default.json"),
        fx.dir.join("policies/docker.json"),
    )
    .unwrap();
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "reach_init", json!({}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(
        r["ppid"], 1,
        "the init is pid 1 of the plugin's namespace: {r}"
    );
    assert_eq!(r["own_child_vm_read"]["value"], 8, "control: {r}");
    assert_ok(
        &r["own_child_ptrace_attach"],
        "control: ptrace of its own child",
    );
    assert_eq!(
        errno(&r["init_vm_read"]),
        EPERM,
        "process_vm_readv of the init: {r}"
    );
    assert_eq!(
        errno(&r["init_ptrace_attach"]),
        EPERM,
        "ptrace of the init: {r}"
    );
    errno(&r["init_mem"]);
}
