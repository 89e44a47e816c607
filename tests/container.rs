//! The container backend with the real engine (rootful podman), and the image
//! built from the top-level Dockerfile.
//!
//! Needs root, podman, runc and busybox-static (`.ci/run` installs them). Without
//! them these tests FAIL when `CI` is set and print a loud SKIPPED otherwise.
//! Test images are built locally: a busybox tarball imported with `podman import`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const PODMAN: &str = "/usr/bin/podman";
const BUSYBOX: &str = "/bin/busybox";

/// Whether the engine is usable here; otherwise fail (CI) or say SKIPPED loudly.
fn engine_ready(test: &str) -> bool {
    let missing: Vec<&str> = [
        (!Path::new(PODMAN).exists()).then_some("podman (apt-get install podman runc)"),
        (!Path::new(BUSYBOX).exists()).then_some("busybox (apt-get install busybox-static)"),
        (!is_root()).then_some("root (rootful podman)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("container test {test} needs {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg}: required when CI is set");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    false
}

fn podman(args: &[&str]) -> std::process::Output {
    Command::new(PODMAN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run podman")
}

/// `localhost/upm-test-busybox@sha256:...`: a static busybox with /plugins/echo.sh,
/// imported once per test run.
fn busybox_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let d = TestDir::new();
        let root = d.join("rootfs");
        for dir in ["bin", "tmp", "etc", "plugins"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "cat", "id", "sleep", "touch", "tail", "cut", "tr"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        std::fs::copy(repo().join("plugins/echo.sh"), root.join("plugins/echo.sh")).unwrap();
        let tar = d.join("rootfs.tar");
        let ok = Command::new("tar")
            .args([
                "-C",
                root.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar of the test rootfs failed");
        let name = "localhost/upm-test-busybox:latest";
        // The previous run's image goes, so repeated runs leave nothing dangling.
        podman(&["rmi", "-f", name]);
        let out = podman(&["import", tar.to_str().unwrap(), name]);
        assert!(out.status.success(), "podman import: {out:?}");
        let out = podman(&["image", "inspect", "--format", "{{.Digest}}", name]);
        let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(digest.starts_with("sha256:"), "digest: {out:?}");
        format!("localhost/upm-test-busybox@{digest}")
    })
}

fn container_plugin(image: &str, command: Value, timeout_ms: u64) -> Value {
    json!({
        "command": command,
        "allowed_methods": ["m"],
        "sandbox": {"backend": "container", "image": image, "limits": {"timeout_ms": timeout_ms}}
    })
}

fn config(d: &TestDir, plugins: Value) -> std::path::PathBuf {
    d.config(&json!({"require_schemas": false, "plugins": plugins}))
}

/// The container named in a result, if the engine still knows it.
fn container_exists(name: &str) -> bool {
    let out = podman(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=^{name}$"),
        "--format",
        "{{.Names}}",
    ]);
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

const PROBE: &str = r#"printf '{"uid":"%s","ifaces":"%s","rootfs":"%s","sigpending":"%s","fixed":"%s","stdin":%s}' "$(id -u)" "$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ',')" "$(touch /x 2>&1)" "$(awk '/^Max pending signals/ {print $4 ":" $5}' /proc/self/limits)" "$(awk '/^Max (msgqueue size|nice priority|realtime priority)/ {printf "%s:%s ", $4, $5}' /proc/self/limits)" "$(cat)""#;

#[test]
fn container_is_isolated_and_reported() {
    if !engine_ready("container_is_isolated_and_reported") {
        return;
    }
    let d = TestDir::new();
    let c = config(
        &d,
        json!({"Probe": container_plugin(busybox_image(), json!(["/bin/sh", "-c", PROBE]), 10_000)}),
    );
    let r = run_stdin(
        &c,
        br#"{"plugin": "Probe", "method": "m", "args": {"k": 1}, "request_id": "ctr-iso-1"}"#,
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.result();
    assert_eq!(res["uid"], "65534", "{res}");
    assert_eq!(res["ifaces"], "lo,", "only loopback: {res}");
    // The same queued-signal limit as a native call (not the host's ~96,000).
    assert_eq!(res["sigpending"], "1024:1024", "{res}");
    // Message queues, nice ceiling, real-time priority: as a native call gets them.
    assert_eq!(res["fixed"], "819200:819200 0:0 0:0 ", "{res}");
    assert!(
        res["rootfs"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{res}"
    );
    assert_eq!(
        res["stdin"],
        json!({"method": "m", "args": {"k": 1}, "request_id": "ctr-iso-1"})
    );

    let s = &r.json["data"]["sandbox"];
    assert_eq!(s["backend"], "container");
    assert_eq!(s["engine"], "podman");
    assert_eq!(s["image"], busybox_image());
    assert_eq!(s["network"], "none");
    assert_eq!(s["user"], "65534:65534");
    assert_eq!(s["read_only_rootfs"], true);
    assert_eq!(s["seccomp"]["profile"], "default");
    assert!(s["seccomp"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(s["limits"]["timeout_ms"], 10_000);
    assert_eq!(s["limits"]["pending_signals"], 1024);
    assert_eq!(s["limits"]["message_queue_bytes"], 819_200);
    assert_eq!(s["limits"]["realtime_priority"], 0);
    assert_eq!(s["limits"]["raise_priority"], false);
    let name = s["container_name"].as_str().unwrap();
    assert!(name.starts_with("upm-ctr-iso-1-"), "{name}");
    assert!(!container_exists(name), "--rm left {name} behind");

    let audit = d.audit_lines();
    let started = audit.iter().find(|e| e["event"] == "started").unwrap();
    let finished = audit.iter().find(|e| e["event"] == "finished").unwrap();
    assert_eq!(started["sandbox_requested"], *s);
    assert!(
        finished["sandbox"] == *s || finished["sandbox"] == json!({"same_as_started": true}),
        "{finished}"
    );
    assert_eq!(finished["ran"], true);
    assert_eq!(started["plugin_files"]["image"], busybox_image());
}

#[test]
fn timeout_kills_and_removes_the_container() {
    if !engine_ready("timeout_kills_and_removes_the_container") {
        return;
    }
    let d = TestDir::new();
    let c = config(
        &d,
        json!({"Sleep": container_plugin(busybox_image(), json!(["/bin/sleep", "60"]), 1500)}),
    );
    let t = std::time::Instant::now();
    let r = run_stdin(&c, &request("Sleep", "m", json!({})));
    assert_eq!(r.code, 12, "{}", r.stdout);
    assert_eq!(r.code_word(), "timeout");
    assert_eq!(r.json["data"]["limit"], "timeout");
    assert!(t.elapsed().as_secs() < 10, "took {:?}", t.elapsed());
    let name = r.json["data"]["sandbox"]["container_name"]
        .as_str()
        .unwrap();
    assert!(
        !container_exists(name),
        "{name} is still there after the timeout"
    );
}

/// SIGTERM to upm mid-call (`docker stop` on upm as ENTRYPOINT): the container is
/// killed and removed, and the call ends `cancelled` with its `finished` entry.
#[test]
fn sigterm_cancels_and_removes_the_container() {
    if !engine_ready("sigterm_cancels_and_removes_the_container") {
        return;
    }
    let d = TestDir::new();
    let c = config(
        &d,
        json!({"Sleep": container_plugin(busybox_image(), json!(["/bin/sleep", "60"]), 30_000)}),
    );
    let child = start_call(
        &c,
        br#"{"plugin": "Sleep", "method": "m", "request_id": "ctr-term-1"}"#,
    );
    // Until the container runs (its engine is slow to start).
    let t = std::time::Instant::now();
    while !podman(&[
        "ps",
        "--filter",
        "name=^upm-ctr-term-1-",
        "--format",
        "{{.Names}}",
    ])
    .stdout
    .starts_with(b"upm-")
    {
        assert!(t.elapsed().as_secs() < 20, "the container never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own, not yet reaped child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(15));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["code"], "cancelled", "{r}");
    let name = r["data"]["sandbox"]["container_name"].as_str().unwrap();
    assert!(!container_exists(name), "{name} is still there");
    let audit = d.audit_lines();
    let last = audit.last().unwrap();
    assert_eq!(
        (&last["event"], &last["code"]),
        (&json!("finished"), &json!("cancelled"))
    );
}

#[test]
fn output_cap_stops_and_removes_the_container() {
    if !engine_ready("output_cap_stops_and_removes_the_container") {
        return;
    }
    let d = TestDir::new();
    let mut plugin = container_plugin(
        busybox_image(),
        json!([
            "/bin/sh",
            "-c",
            "while true; do echo yyyyyyyyyyyyyyyyyyyy; done"
        ]),
        10_000,
    );
    plugin["sandbox"]["limits"]["output_bytes"] = json!(50_000);
    let c = config(&d, json!({ "Loud": plugin }));
    let r = run_stdin(&c, &request("Loud", "m", json!({})));
    assert_eq!(r.code, 13, "{}", r.stdout);
    assert_eq!(r.json["data"]["limit"], "output");
    assert_eq!(r.json["data"]["stdout"]["truncated"], true);
    let name = r.json["data"]["sandbox"]["container_name"]
        .as_str()
        .unwrap();
    assert!(
        !container_exists(name),
        "{name} is still there after the cap"
    );
}

#[test]
fn same_result_as_the_native_backend() {
    if !engine_ready("same_result_as_the_native_backend") {
        return;
    }
    let d = TestDir::new();
    d.write(
        "plugins/echo.sh",
        &std::fs::read_to_string(repo().join("plugins/echo.sh")).unwrap(),
        true,
    );
    let c = config(
        &d,
        json!({
            "Native": {"command": ["plugins/echo.sh"], "allowed_methods": ["m"]},
            "Boxed": container_plugin(busybox_image(), json!(["/plugins/echo.sh"]), 10_000),
        }),
    );
    let args = json!({"text": "one call in, one result out", "n": [1, 2.5, null, "é"]});
    let req = |p: &str| {
        serde_json::to_vec(
            &json!({"plugin": p, "method": "m", "args": args, "request_id": "same-1"}),
        )
        .unwrap()
    };
    let native = run_stdin(&c, &req("Native"));
    let boxed = run_stdin(&c, &req("Boxed"));
    assert_eq!(native.code, 0, "{}", native.stdout);
    assert_eq!(boxed.code, 0, "{}", boxed.stdout);
    assert_eq!(native.json["data"]["sandbox"]["backend"], "native");
    assert_eq!(boxed.json["data"]["sandbox"]["backend"], "container");
    assert_eq!(native.result(), boxed.result());
    assert_eq!(boxed.result()["args"], args);
}

#[test]
fn undigested_image_is_a_config_error() {
    // No engine needed: the reference is refused when the config is loaded.
    let d = TestDir::new();
    let c = config(
        &d,
        json!({"Tagged": container_plugin("localhost/upm-test-busybox:latest", json!(["/bin/true"]), 1000)}),
    );
    let r = run_stdin(&c, &request("Tagged", "m", json!({})));
    assert_eq!(r.code, 5, "{}", r.stdout);
    assert_eq!(r.code_word(), "config_error");
    assert!(r.stdout.contains("not pinned by digest"), "{}", r.stdout);
    let check = run_with(&["check", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(check.code, 5, "{}", check.stdout);
    assert!(
        check.stderr.contains("not pinned by digest"),
        "{}",
        check.stderr
    );

    let meta = format!("169.254.169.254/img@sha256:{}", "a".repeat(64));
    let c = config(
        &d,
        json!({"Meta": container_plugin(&meta, json!(["/bin/true"]), 1000)}),
    );
    let r = run_stdin(&c, &request("Meta", "m", json!({})));
    assert_eq!(r.code, 5, "{}", r.stdout);
    assert!(r.stdout.contains("metadata"), "{}", r.stdout);
}

#[test]
fn missing_image_is_sandbox_unavailable_with_the_engines_message() {
    if !engine_ready("missing_image_is_sandbox_unavailable_with_the_engines_message") {
        return;
    }
    let d = TestDir::new();
    let image = format!("localhost/upm-test-no-such-image@sha256:{}", "0".repeat(64));
    let c = config(
        &d,
        json!({"Gone": container_plugin(&image, json!(["/bin/true"]), 5000)}),
    );
    let r = run_stdin(&c, &request("Gone", "m", json!({})));
    assert_eq!(r.code, 14, "{}", r.stdout);
    assert_eq!(r.code_word(), "sandbox_unavailable");
    let err = r.json["data"]["error"].as_str().unwrap();
    assert!(
        err.contains("image not known"),
        "the engine's message: {err}"
    );
    let finished = d
        .audit_lines()
        .into_iter()
        .find(|e| e["event"] == "finished")
        .unwrap();
    assert_eq!(finished["ran"], false);
}

#[test]
fn no_engine_is_sandbox_unavailable() {
    // The engine named by UPM_CONTAINER_ENGINE is looked up on a fixed PATH only.
    let d = TestDir::new();
    let image = format!("localhost/x@sha256:{}", "0".repeat(64));
    let mut plugin = container_plugin(&image, json!(["/bin/true"]), 1000);
    plugin["sandbox"]["engine"] = json!("docker");
    let c = config(&d, json!({"P": plugin}));
    if Path::new("/usr/bin/docker").exists() || Path::new("/usr/local/bin/docker").exists() {
        // A docker client without a daemon still cannot start the container.
        let r = run_stdin(&c, &request("P", "m", json!({})));
        assert_eq!(r.code, 14, "{}", r.stdout);
        return;
    }
    let r = run_stdin(&c, &request("P", "m", json!({})));
    assert_eq!(r.code, 14, "{}", r.stdout);
    assert!(r.stdout.contains("no container engine"), "{}", r.stdout);
}

#[test]
fn dockerfile_image_builds_and_answers() {
    if !engine_ready("dockerfile_image_builds_and_answers") {
        return;
    }
    // The binaries of this test build, so the image holds the code under test.
    let bin_dir = upm_bin()
        .parent()
        .unwrap()
        .strip_prefix(repo())
        .expect("target dir inside the repository")
        .to_path_buf();
    let image = "localhost/upm-test-image:latest";
    let base = "localhost/upm-test-base:latest";
    podman(&["rmi", "-f", image]);
    podman(&["rmi", "-f", base]);
    let out = Command::new(repo().join("scripts/build-image.sh"))
        .arg(image)
        .env("UPM_SKIP_CARGO", "1")
        .env("UPM_BIN_DIR", &bin_dir)
        .env("UPM_IMAGE_BASE", base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-image.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = vec![];
    if let Some(runc) = ["/usr/bin/runc", "/usr/sbin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    {
        args.extend(["--runtime", runc]);
    }
    // This machine's hard rlimits are below podman's defaults: give them explicitly.
    args.extend([
        "run",
        "-i",
        "--rm",
        "--network=none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        image,
    ]);
    let mut cmd = Command::new(PODMAN);
    cmd.args(&args);
    let request = std::fs::read(repo().join("examples/wordcount.json")).unwrap();
    let r = run_command(cmd, &request);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.result(), &json!({"chars": 27, "lines": 1, "words": 6}));
    assert_eq!(r.json["request_id"], "example-1");
    // Inside the image upm runs its own native sandbox, every layer in force.
    let layers = r.json["data"]["sandbox"]["layers"].as_object().unwrap();
    for (name, layer) in layers {
        assert_eq!(layer["state"], "enforced", "{name}: {layer}");
    }
}
