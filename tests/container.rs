//! The container backend with the real engine (rootful podman), and the image
//! built from the top-level Dockerfile.
//!
//! Needs root, podman, runc, catatonit and busybox-static (`.ci/run` installs them). Without
//! them these tests FAIL when `CI` is set and print a loud SKIPPED otherwise.
//! Test images are built locally: a busybox tarball imported with `podman import`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
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
    IMAGE.get_or_init(|| import_busybox("localhost/upm-test-busybox:latest", &[]))
}

/// The same root file system, with `VOLUME /data` in its config.
fn volume_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        import_busybox(
            "localhost/upm-test-busybox-volume:latest",
            &["--change", "VOLUME=/data"],
        )
    })
}

fn import_busybox(name: &str, changes: &[&str]) -> String {
    let d = TestDir::new();
    let root = d.join("rootfs");
    for dir in ["bin", "tmp", "etc", "plugins"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    // runc gives the tmpfs upm mounts on /tmp the mode of the image's /tmp.
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "id", "sleep", "touch", "tail", "cut", "tr", "chmod", "nc", "ls",
    ] {
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
    // The previous run's image goes, so repeated runs leave nothing dangling.
    podman(&["rmi", "-f", name]);
    let mut args = vec!["import"];
    args.extend(changes);
    args.extend([tar.to_str().unwrap(), name]);
    let out = podman(&args);
    assert!(out.status.success(), "podman import: {out:?}");
    let out = podman(&["image", "inspect", "--format", "{{.Digest}}", name]);
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(digest.starts_with("sha256:"), "digest: {out:?}");
    let repo_name = name.rsplit_once(':').map_or(name, |(n, _)| n);
    format!("{repo_name}@{digest}")
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
    assert_eq!(s["ipc"], "private, no /dev/shm");
    assert_eq!(s["image_volumes"], "ignored (--image-volume=ignore)");
    // Rootful podman here: every cgroup limit is in force.
    assert_eq!(s["cgroup_limits"]["state"], "enforced", "{s}");
    assert_eq!(s["limits"]["memory_bytes"], 1u64 << 30);
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

/// The plugin's stdout as text, whatever the call's outcome.
fn stdout_text(r: &Run) -> String {
    r.json["data"]["stdout"]["text"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| r.json["data"]["result"].to_string())
}

/// An image `VOLUME`: podman mounts nothing there (`--image-volume=ignore`), where it
/// would otherwise make a writable, unbounded anonymous volume on the host's disk despite
/// `--read-only`; and nothing is left behind, not even after a timeout (`rm -f -v`).
#[test]
fn image_volume_is_neither_mounted_nor_left_behind() {
    if !engine_ready("image_volume_is_neither_mounted_nor_left_behind") {
        return;
    }
    let image = volume_image();
    let volumes = || String::from_utf8_lossy(&podman(&["volume", "ls", "-q"]).stdout).into_owned();
    let before = volumes();
    let d = TestDir::new();
    let c = config(
        &d,
        json!({"V": container_plugin(image, json!(["/bin/sh", "-c", "echo x > /data/f && echo wrote; sleep 60"]), 2000)}),
    );
    let r = run_stdin(&c, &request("V", "m", json!({})));
    assert_eq!(r.code, 12, "{}", r.stdout);
    assert!(!stdout_text(&r).contains("wrote"), "{}", r.stdout);
    let s = &r.json["data"]["sandbox"];
    assert_eq!(s["image_volumes"], "ignored (--image-volume=ignore)");
    let name = s["container_name"].as_str().unwrap();
    assert!(!container_exists(name), "{name} is still there");
    assert_eq!(volumes(), before, "a volume was left behind");
}

/// upm's own seccomp rules (refused setuid/setgid modes, sockets without network, SysV
/// IPC, ...) are merged into the profile the engine gets, and the result says so.
#[test]
fn upms_own_seccomp_rules_hold_in_the_container() {
    if !engine_ready("upms_own_seccomp_rules_hold_in_the_container") {
        return;
    }
    let d = TestDir::new();
    let script = "touch /tmp/f 2>&1; chmod 4755 /tmp/f 2>&1; chmod 2755 /tmp/f 2>&1; \
                  chmod 755 /tmp/f && echo plain-chmod-ok; nc 127.0.0.1 1 </dev/null 2>&1; echo end";
    let c = config(
        &d,
        json!({"S": container_plugin(busybox_image(), json!(["/bin/sh", "-c", script]), 10_000)}),
    );
    let r = run_stdin(&c, &request("S", "m", json!({})));
    let out = stdout_text(&r);
    assert!(out.contains("end"), "{}", r.stdout);
    assert_eq!(
        out.matches("Operation not permitted").count(),
        2,
        "setuid and setgid chmod must fail: {out}"
    );
    assert!(out.contains("plain-chmod-ok"), "{out}");
    // Even loopback (the container has its own): socket() answers EAFNOSUPPORT.
    assert!(out.contains("Address family not supported"), "{out}");
    let seccomp = &r.json["data"]["sandbox"]["seccomp"];
    let rules = seccomp["upm_rules"].as_object().unwrap();
    for rule in [
        "no_sockets",
        "no_datagram_socketpair",
        "enosys",
        "no_setuid_setgid_modes",
    ] {
        assert!(
            rules[rule].as_str().unwrap().starts_with("enforced"),
            "{rule}: {seccomp}"
        );
    }
    // The config's profile is named by its own digest; the engine's file by its own.
    assert_ne!(seccomp["digest"], seccomp["engine_profile_digest"]);
}

/// Kills the processes it holds when dropped, a failed assertion included.
struct Procs(Vec<std::process::Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Rootful podman gives the container no user namespace: RLIMIT_NPROC would count every
/// host process of the plugin's uid. The call's limit is the container's pids cgroup.
#[test]
fn host_processes_of_the_plugins_uid_do_not_starve_a_call() {
    use std::os::unix::process::CommandExt;
    if !engine_ready("host_processes_of_the_plugins_uid_do_not_starve_a_call") {
        return;
    }
    let _host = Procs(
        (0..12)
            .map(|_| {
                Command::new("/bin/sleep")
                    .arg("60")
                    .uid(65534)
                    .gid(65534)
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let d = TestDir::new();
    let mut forks = container_plugin(
        busybox_image(),
        json!(["/bin/sh", "-c", r#"printf '{"n":"%s"}' "$(echo a | cat)""#]),
        10_000,
    );
    forks["sandbox"]["limits"]["max_processes"] = json!(8);
    // And the limit still holds: 20 children under max_processes 8.
    let mut many = container_plugin(
        busybox_image(),
        json!([
            "/bin/sh",
            "-c",
            "for i in $(seq 20); do sleep 5 & done 2>&1; echo end"
        ]),
        10_000,
    );
    many["sandbox"]["limits"]["max_processes"] = json!(8);
    let c = config(&d, json!({"F": forks, "Many": many}));
    let r = run_stdin(&c, &request("F", "m", json!({})));
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.result(), &json!({"n": "a"}));
    let limits = &r.json["data"]["sandbox"]["limits"];
    assert_eq!(limits["max_processes"], 8);
    assert!(
        limits["process_count"]
            .as_str()
            .unwrap()
            .contains("pids cgroup (--pids-limit 9"),
        "{limits}"
    );
    let r = run_stdin(&c, &request("Many", "m", json!({})));
    let out = stdout_text(&r) + r.json["data"]["stderr"]["text"].as_str().unwrap_or("");
    assert!(out.contains("can't fork"), "{}", r.stdout);
}

/// With an init as PID 1 (catatonit), the plugin is PID 2 as natively: a signal it sends
/// itself is not ignored.
#[test]
fn a_plugin_that_signals_itself_dies_as_natively() {
    if !engine_ready("a_plugin_that_signals_itself_dies_as_natively") {
        return;
    }
    let d = TestDir::new();
    let c = config(
        &d,
        json!({"K": container_plugin(busybox_image(), json!(["/bin/sh", "-c", "kill -TERM $$; echo survived"]), 10_000)}),
    );
    let r = run_stdin(&c, &request("K", "m", json!({})));
    assert_eq!(r.code, 9, "{}", r.stdout);
    assert_eq!(r.json["data"]["signal"], 15, "{}", r.stdout);
    assert!(!stdout_text(&r).contains("survived"), "{}", r.stdout);
    let init = r.json["data"]["sandbox"]["init"].as_str().unwrap();
    assert!(init.ends_with("catatonit"), "{init}");
}

/// `--ipc=none`: no /dev/shm (64 MiB of writable tmpfs otherwise); what stays writable
/// (/tmp, and /dev/mqueue within message_queue_bytes) is reported.
#[test]
fn dev_shm_is_absent_and_what_stays_writable_is_reported() {
    if !engine_ready("dev_shm_is_absent_and_what_stays_writable_is_reported") {
        return;
    }
    let d = TestDir::new();
    let c = config(
        &d,
        json!({"W": container_plugin(busybox_image(), json!(["/bin/sh", "-c", "echo x > /dev/shm/a && echo shm-writable; echo end"]), 10_000)}),
    );
    let r = run_stdin(&c, &request("W", "m", json!({})));
    let out = stdout_text(&r);
    assert!(out.contains("end"), "{}", r.stdout);
    assert!(!out.contains("shm-writable"), "{}", r.stdout);
    let s = &r.json["data"]["sandbox"];
    assert_eq!(s["ipc"], "private, no /dev/shm");
    let paths: Vec<&str> = s["writable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/tmp", "/dev/mqueue"]);
}

/// The engine's seccomp profile and the pidfile live in a directory under `workdir_root`
/// (swept like the native backend's after a SIGKILL), gone after the call.
#[test]
fn the_calls_private_files_live_under_workdir_root_and_go() {
    if !engine_ready("the_calls_private_files_live_under_workdir_root_and_go") {
        return;
    }
    let d = TestDir::new();
    let root = d.join("work");
    std::fs::create_dir(&root).unwrap();
    let root = std::fs::canonicalize(&root).unwrap();
    let c = d.config(&json!({
        "require_schemas": false,
        "workdir_root": root,
        "plugins": {"E": container_plugin(busybox_image(), json!(["/plugins/echo.sh"]), 10_000)},
    }));
    let r = run_stdin(&c, &request("E", "m", json!({})));
    assert_eq!(r.code, 0, "{}", r.stdout);
    let path = Path::new(
        r.json["data"]["sandbox"]["seccomp"]["path"]
            .as_str()
            .unwrap(),
    );
    assert!(path.starts_with(&root), "{}", path.display());
    assert!(!path.exists(), "{} is left", path.display());
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

/// The largest timeout a config may give still runs: podman's --timeout is capped.
#[test]
fn the_largest_timeout_still_runs() {
    if !engine_ready("the_largest_timeout_still_runs") {
        return;
    }
    let d = TestDir::new();
    let c = config(
        &d,
        json!({"E": container_plugin(busybox_image(), json!(["/plugins/echo.sh"]), u64::MAX)}),
    );
    let r = run_stdin(&c, &request("E", "m", json!({"x": 1})));
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        r.json["data"]["sandbox"]["limits"]["timeout_ms"],
        json!(u64::MAX)
    );
}
