//! The proxy as a process of its own, beside upm, for each call that has a list.

use super::*;

/// Processes named `upm-egress` whose parent is `parent`: (pid, uid).
pub(super) fn proxies_of(parent: u32) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        };
        if field("Name:").as_deref() == Some("upm-egress")
            && field("PPid:").as_deref() == Some(parent.to_string().as_str())
        {
            found.push((pid, field("Uid:").unwrap().parse().unwrap()));
        }
    }
    found
}

#[test]
fn the_proxy_is_a_process_of_its_own_with_a_uid_of_its_own() {
    // The proxy parses what the plugin sends: it runs apart from upm, as neither root nor
    // the plugin's uid, and only while the call runs.
    let hold = Server::start(Reply::Hold);
    let Some(fx) = fixture(json!({"allow": [at(hold.port)], "idle_timeout_ms": 1500})) else {
        return;
    };
    let raw = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", hold.port);
    let mut cmd = fx.command();
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut upm = cmd.spawn().unwrap();
    upm.stdin
        .take()
        .unwrap()
        .write_all(&request("probe", "probe", json!({"raw": raw, "hold": 10})))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.is_empty() && Instant::now() < deadline {
        seen = proxies_of(upm.id());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = upm.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(seen.len(), 1, "one proxy process for the call: {seen:?}");
    let (pid, uid) = seen[0];
    assert!(
        uid >= 0x8000_0000,
        "a uid of its own, not root nor the plugin's: {uid}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the proxy outlived its call"
    );
}

#[test]
fn without_its_proxy_beside_it_upm_refuses_an_allowlist_call() {
    let server = Server::start(files(&[("/", b"x")]));
    let Some(fx) = fixture(allow(&[at(server.port)])) else {
        return;
    };
    // upm alone, without upm-egress beside it.
    let lone = fx.dir.join("bin/upm");
    std::fs::create_dir_all(lone.parent().unwrap()).unwrap();
    std::fs::copy(common::upm_bin(), &lone).unwrap();
    let mut cmd = Command::new(&lone);
    cmd.env_clear().env("PATH", "/usr/bin:/bin").args([
        "run",
        "--config",
        fx.config.to_str().unwrap(),
    ]);
    let run = run_command(
        cmd,
        &request("fetch", "get", json!({"urls": [server.url("/")]})),
    );
    assert_eq!(run.code, 14, "{}", run.stdout);
    assert_eq!(run.code_word(), "sandbox_unavailable");
    assert!(
        run.stdout.contains("upm-egress cannot be used"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.json["data"].get("result"),
        None,
        "the plugin must not have run"
    );
    assert_eq!(server.accepted(), 0);
    let check = Command::new(&lone)
        .args(["check", "--config", fx.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(5));
    let doc: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(doc["plugins"]["fetch"]["ok"], false, "{doc}");
    assert!(doc["problems"].to_string().contains("upm-egress"), "{doc}");
    // upm doctor says so too, and says yes where the proxy is beside upm.
    for (bin, available) in [(lone, false), (common::upm_bin(), true)] {
        let out = Command::new(&bin)
            .args(["doctor", "--json"])
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let row = doc["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["layer"] == "egress_allowlist")
            .cloned()
            .unwrap_or_default();
        assert_eq!(row["available"], available, "{}: {row}", bin.display());
    }
}

#[test]
fn an_unprivileged_upm_runs_the_proxy_too() {
    let server = Server::start(files(&[("/", b"as uid 4242\n")]));
    let other = Server::start(files(&[("/", b"secret\n")]));
    let Some(fx) = fixture(allow(&[at(server.port)])) else {
        return;
    };
    std::os::unix::fs::chown(&fx.dir.path, Some(4242), Some(4242)).unwrap();
    let mut cmd = fx.command();
    cmd.uid(4242).gid(4242);
    let run = run_command(
        cmd,
        &request(
            "fetch",
            "get",
            json!({"urls": [server.url("/"), other.url("/")]}),
        ),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let creds = &run.json["data"]["sandbox"]["layers"]["credentials"]["detail"]["mode"];
    assert_eq!(creds, "caller_uid_in_user_namespace");
    assert_eq!(run.result()[0]["body"], "as uid 4242\n", "{}", run.stdout);
    assert_eq!(run.result()[1]["status"], 403);
    assert_eq!(other.accepted(), 0);
}

#[test]
fn a_batch_runs_a_proxy_per_call() {
    let server = Server::start(files(&[("/", b"batch")]));
    let Some(fx) = fixture(allow(&[at(server.port)])) else {
        return;
    };
    let mut lines = Vec::new();
    for i in 0..4 {
        let mut r: Value =
            serde_json::from_slice(&request("fetch", "get", json!({"urls": [server.url("/")]})))
                .unwrap();
        r["request_id"] = json!(format!("b{i}"));
        lines.extend_from_slice(r.to_string().as_bytes());
        lines.push(b'\n');
    }
    let mut cmd = Command::new(common::upm_bin());
    cmd.env_clear().env("PATH", "/usr/bin:/bin").args([
        "run",
        "--jsonl",
        "--parallel",
        "2",
        "--config",
        fx.config.to_str().unwrap(),
    ]);
    let run = run_command(cmd, &lines);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let results: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 4);
    for r in &results {
        assert_eq!(r["data"]["result"][0]["body"], "batch", "{r}");
        assert_eq!(r["data"]["egress"]["allowed"], 1, "{r}");
    }
    assert_eq!(server.accepted(), 4);
    assert_eq!(fx.connections().len(), 4);
    fx.verify_log();
}
