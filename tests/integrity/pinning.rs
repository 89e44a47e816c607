//! Pinned plugins (`sha256`, `manifest_sha256`): what runs is what was pinned, or nothing.

use super::*;

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

/// A pinned executable runs from a sealed memfd holding exactly the bytes its digest
/// was computed from: nothing of it is written to the host's disk, and nothing (not
/// even upm, nor anyone with its descriptor) can change it any more.
#[test]
fn a_pinned_executable_runs_from_a_sealed_memfd() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let probe = d.write(
        "bin/probe.py",
        "#!/usr/bin/python3\nimport json, os, sys\nsys.stdin.read()\n\
         link = os.readlink(sys.argv[0])\n\
         print(json.dumps({'script': link, 'file': os.readlink(link)}))\n",
        true,
    );
    let tt = texttools_copy(&d, "bin/tt");
    let mut p = cmd_plugin(&tt, &["wordcount"]);
    p["sha256"] = json!(sha256_of(&tt));
    let mut s = cmd_plugin(&probe, &["go"]);
    s["sha256"] = json!(sha256_of(&probe));
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    let cfg = d.config(
        &TestConfig::new()
            .plugins(json!({ "T": p, "S": s }))
            .set("workdir_root", json!(work))
            .value(),
    );
    let run = call(&cfg, "T", "wordcount", json!({"text": "a b"}), &[]);
    assert_ok(&run);
    assert!(words(&run), "{}", ctx(&run));
    let started = &audit_of(&d, &run)[0];
    assert_eq!(started["plugin_files"]["exec"], "memfd:tt", "{started}");
    assert_eq!(started["plugin_files"]["exec_source"], json!(tt));
    assert_eq!(
        started["plugin_files"]["exec_sha256"],
        sha256_of(&tt).as_str()
    );
    // A pinned script too: its interpreter reads the memfd through the script's link.
    let run = call(&cfg, "S", "go", json!({}), &[]);
    assert_ok(&run);
    let script = run.result()["script"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(script.starts_with("/proc/self/fd/"), "{}", ctx(&run));
    assert_eq!(
        run.result()["file"],
        "/memfd:probe.py (deleted)",
        "{}",
        ctx(&run)
    );
    let started = &audit_of(&d, &run)[0];
    assert_eq!(
        started["plugin_files"]["exec"], "memfd:probe.py",
        "{started}"
    );
    assert!(
        left_under(&work).is_empty(),
        "a call left files under {}",
        work.display()
    );
}

/// What the in-memory snapshot's test runs: where its module is, what writing there
/// gave, what it sees there; and it takes a second, while the test looks at the host.
const LOOKING_PY: &str = "import ctypes, errno, os, time\n\nclass A(ctypes.Structure):\n    _fields_ = [('set', ctypes.c_uint64), ('clr', ctypes.c_uint64), ('prop', ctypes.c_uint64), ('ns', ctypes.c_uint64)]\n\nclass P:\n    def __init__(self, project_root, cache_dir, policy):\n        pass\n\n    def who(self):\n        here = os.path.dirname(os.path.abspath(__file__))\n        try:\n            open(os.path.join(here, 'new.py'), 'w').close()\n            wrote = 'written'\n        except OSError as e:\n            wrote = errno.errorcode.get(e.errno, str(e.errno))\n        libc = ctypes.CDLL(None, use_errno=True)\n        clear = A(0, 1, 0, 0)\n        r = libc.syscall(442, -100, os.path.dirname(here).encode(), 0, ctypes.byref(clear), ctypes.sizeof(clear))\n        remount = 'cleared' if r == 0 else errno.errorcode.get(ctypes.get_errno(), '?')\n        time.sleep(1.0)\n        return {'who': 'good', 'here': here, 'write': wrote, 'remount': remount, 'listed': sorted(os.listdir(here))}\n";

/// A pinned Python tree runs from a snapshot in memory: a tmpfs upm fills and seals,
/// attached over the call's `verified/tree/` in the call's own mount namespace. Nothing of
/// it is ever on the host's disk (there `verified/` holds no file while the plugin runs),
/// and the plugin cannot change it: not by writing, nor by clearing the mount's read-only
/// flag (attached, not copied, the flag is not locked there: the plugin's empty capability
/// set is what refuses it, so the profile here lets `mount_setattr` through).
#[test]
fn a_pinned_python_trees_snapshot_is_in_memory_and_read_only() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    d.write("py/mod.py", LOOKING_PY, false);
    d.write("py/pkg/helper.py", "X = 1\n", false);
    let work = work_dir(&d);
    let with_pin = |pin: Option<&str>| {
        let mut p = py_plugin("py");
        if let Some(pin) = pin {
            p["manifest_sha256"] = json!(pin);
        }
        TestConfig::new()
            .set("python", json!("/usr/bin/python3"))
            .set("workdir_root", json!(work))
            .set(
                "sandbox",
                json!({ "seccomp": "policies/allow.json", "limits": { "timeout_ms": 10000 } }),
            )
            .plugins(json!({ "P": p }))
            .write(&d)
    };
    let allow = r#"{ "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": [] }"#;
    let unpinned = with_pin(None);
    d.write("policies/allow.json", allow, false);
    let c = check(&unpinned, &[]);
    assert_eq!(c.code, 0, "{}", ctx(&c));
    let digest = c.json["plugins"]["P"]["pins"]["manifest"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let cfg = with_pin(Some(&digest));
    let running = std::thread::spawn(move || call(&cfg, "P", "who", json!({}), &[]));
    let (run, seen, on_host) = verified_on_host_while(running, &work);
    assert_ok(&run);
    let r = run.result();
    assert!(
        seen > 0,
        "no call's verified/ was seen while the plugin ran: {}",
        ctx(&run)
    );
    assert!(
        on_host.is_empty(),
        "the snapshot is on the host's disk: {on_host:?}"
    );
    // In the call's namespace it is there, whole, under verified/0, and read-only.
    assert!(
        r["here"].as_str().unwrap().ends_with("/verified/tree/0"),
        "{r}"
    );
    assert_eq!(r["listed"], json!(["mod.py", "pkg"]), "{r}");
    // Read-only before Landlock is asked (which would say EACCES).
    assert_eq!(r["write"], "EROFS", "{r}");
    assert_eq!(r["remount"], "EPERM", "{r}");
    assert_eq!(
        run.json["data"]["sandbox"]["layers"]["seccomp"]["detail"]["profile"],
        "allow",
        "{}",
        ctx(&run)
    );
    // The report says where it was attached, and its bound.
    let v = &run.json["data"]["sandbox"]["layers"]["namespaces"]["detail"]["verified"];
    assert!(v["at"].as_str().unwrap().ends_with("/verified/tree"), "{v}");
    assert!(v["tmpfs_bytes"].as_u64().unwrap() > 0, "{v}");
    let started = &audit_of(&d, &run)[0];
    assert_eq!(started["plugin_files"]["manifest_sha256"], digest.as_str());
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
    let found = found_manifest(&c, "S");
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

/// The call's directories a plugin must traverse are 0755 whatever upm's umask: under 077
/// a pinned command's snapshot and a pinned Python tree's (both in memory, under
/// `verified/tree/`) were out of the plugin's reach.
#[test]
fn pinned_trees_run_under_a_restrictive_umask() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    d.write("py/mod.py", GOOD_PY, false);
    let script = d.write(
        "tool/go.sh",
        "#!/bin/sh\necho '{\"script\":\"ok\"}'\n",
        true,
    );
    let found =
        |plugins: Value, name: &str| found_manifest(&check(&config_with(&d, plugins), &[]), name);
    let mut py = py_plugin("py");
    py["manifest_sha256"] = json!("a".repeat(64));
    let mut cmd = cmd_plugin(&script, &["go"]);
    cmd["manifest_sha256"] = json!("a".repeat(64));
    py["manifest_sha256"] = json!(found(json!({ "P": py.clone() }), "P"));
    cmd["manifest_sha256"] = json!(found(json!({ "S": cmd.clone() }), "S"));
    let cfg = config_with(&d, json!({ "P": py, "S": cmd }));
    let under_077 = |plugin: &str, method: &str| {
        let mut c = Command::new("sh");
        c.args(["-c", "umask 077 && exec \"$0\" \"$@\""])
            .arg(upm_bin())
            .args(["run", "--config", cfg.to_str().unwrap()]);
        run_command(with_trust_env(c, &[]), &request(plugin, method, json!({})))
    };
    let run = under_077("P", "who");
    assert_ok(&run);
    assert_eq!(run.result()["who"], "good", "{}", ctx(&run));
    let run = under_077("S", "go");
    assert_ok(&run);
    assert_eq!(run.result()["script"], "ok", "{}", ctx(&run));
}

/// A command pinned by its directory runs from a snapshot in memory, as a pinned Python
/// tree does: nothing of it on the host's disk, read-only where the plugin finds it.
#[test]
fn a_pinned_commands_directory_is_snapshotted_in_memory() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let work = work_dir(&d);
    let script = d.write(
        "tool/run.sh",
        "#!/bin/sh\ncat >/dev/null\nsleep 0.5\nd=$(dirname \"$0\")/verified/tree/0\n\
         w=$(mkdir \"$d/new\" 2>&1 | grep -c 'Read-only file system')\n\
         echo \"{\\\"listed\\\":\\\"$(ls \"$d\" | tr '\\n' ' ')\\\",\\\"data\\\":\\\"$(cat \"$d/data.txt\")\\\",\\\"wrote\\\":\\\"$w\\\"}\"\n",
        true,
    );
    d.write("tool/data.txt", "some data\n", false);
    let with_pin = |pin: &str| {
        let mut p = cmd_plugin(&script, &["go"]);
        p["manifest_sha256"] = json!(pin);
        TestConfig::new()
            .set("workdir_root", json!(work))
            .timeout_ms(10000)
            .plugins(json!({ "S": p }))
            .write(&d)
    };
    let found = found_manifest(&check(&with_pin(&"a".repeat(64)), &[]), "S");
    let cfg = with_pin(&found);
    let running = std::thread::spawn(move || call(&cfg, "S", "go", json!({}), &[]));
    let (run, seen, on_host) = verified_on_host_while(running, &work);
    assert_ok(&run);
    assert!(seen > 0, "no call's verified/ was seen: {}", ctx(&run));
    assert!(
        on_host.is_empty(),
        "the snapshot is on the host's disk: {on_host:?}"
    );
    let r = run.result();
    assert_eq!(r["listed"], "data.txt run.sh ", "{r}");
    assert_eq!(r["data"], "some data", "{r}");
    // Read-only before Landlock or the files' owner is asked (which would say EACCES).
    assert_eq!(r["wrote"], "1", "{r}");
    let v = &run.json["data"]["sandbox"]["layers"]["namespaces"]["detail"]["verified"];
    assert!(v["at"].as_str().unwrap().ends_with("/verified/tree"), "{v}");
    let started = &audit_of(&d, &run)[0];
    let files = &started["plugin_files"];
    assert_eq!(files["manifest_sha256"], found.as_str());
    assert!(
        files["exec"]
            .as_str()
            .unwrap()
            .ends_with("/verified/tree/0/run.sh"),
        "{files}"
    );
    assert_eq!(files["exec_source"], script.to_str().unwrap(), "{files}");
    assert_eq!(files["exec_sha256"], sha256_of(&script).as_str());
}

/// A pinned tree is also found at its own path, in the call's namespace: a `#!` line
/// naming an interpreter in the tree by its path, and a file of the tree named by its
/// absolute path, reach the verified copy (before, Landlock refused the original with
/// EACCES), and the original's later changes are not seen.
#[test]
fn a_pinned_tree_is_found_at_its_own_path() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let work = work_dir(&d);
    let tool = d.join("tool");
    let sh = echo_copy(&d, "tool/sh");
    std::fs::copy("/bin/dash", &sh).unwrap();
    let data = d.write("tool/data.txt", "some data\n", false);
    let script = d.write(
        "tool/run.sh",
        &format!(
            "#!{}\ncat >/dev/null\nsleep 1\necho \"{{\\\"data\\\":\\\"$(cat {})\\\"}}\"\n",
            sh.display(),
            data.display()
        ),
        true,
    );
    let with_pin = |pin: &str| {
        let mut p = cmd_plugin(&script, &["go"]);
        p["manifest_sha256"] = json!(pin);
        TestConfig::new()
            .set("workdir_root", json!(work))
            .timeout_ms(10000)
            .plugins(json!({ "S": p }))
            .write(&d)
    };
    let found = found_manifest(&check(&with_pin(&"a".repeat(64)), &[]), "S");
    let cfg = with_pin(&found);
    let running = std::thread::spawn(move || call(&cfg, "S", "go", json!({}), &[]));
    // Once the call's snapshot is made, the original changes; the plugin reads after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let snapshotted = || {
        std::fs::read_dir(&work)
            .unwrap()
            .flatten()
            .any(|e| e.path().join("verified/tree").is_dir())
    };
    while !snapshotted() && !running.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::fs::write(&data, "changed\n").unwrap();
    let run = running.join().unwrap();
    assert_ok(&run);
    assert_eq!(run.result()["data"], "some data", "{}", ctx(&run));
    let v = &run.json["data"]["sandbox"]["layers"]["namespaces"]["detail"]["verified"];
    assert_eq!(v["also_at"], json!([tool]), "{v}");
}

/// While `running` runs (at most 20 s), looks into every call's `verified/` under `work`
/// on the host: the call's run, how many looks found a `verified/`, and every file seen
/// under one (a snapshot in memory leaves none).
fn verified_on_host_while(
    running: std::thread::JoinHandle<Run>,
    work: &Path,
) -> (Run, usize, std::collections::BTreeSet<PathBuf>) {
    let (mut seen, mut on_host) = (0, std::collections::BTreeSet::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !running.is_finished() && std::time::Instant::now() < deadline {
        for call_dir in std::fs::read_dir(work).unwrap().flatten() {
            let mut dirs = vec![call_dir.path().join("verified")];
            if dirs[0].is_dir() {
                seen += 1;
            }
            while let Some(dir) = dirs.pop() {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    match e.file_type() {
                        Ok(t) if t.is_dir() => dirs.push(e.path()),
                        _ => {
                            on_host.insert(e.path());
                        }
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (running.join().unwrap(), seen, on_host)
}
