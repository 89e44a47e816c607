//! Unsafe plugin files: writable by others, foreign-owned, symlinked out, or not regular files.

use super::*;

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
    // A directory linked back above itself would make the tree endless: refused by name.
    std::os::unix::fs::symlink("..", d.join("py/pkg/up")).unwrap();
    let run = call(&cfg, "P", "who", json!({}), &[]);
    assert_refused(&d, &run, 6, "unsafe_plugin_file");
    let err = run.json["data"]["error"].as_str().unwrap();
    assert!(err.contains("a directory that holds it"), "{}", ctx(&run));
    std::fs::remove_file(d.join("py/pkg/up")).unwrap();
    // A link that stays inside is fine, a directory's beside it too.
    std::os::unix::fs::symlink("helper.py", d.join("py/pkg/alias.py")).unwrap();
    std::os::unix::fs::symlink("pkg", d.join("py/pkg2")).unwrap();
    assert_ok(&call(&cfg, "P", "who", json!({}), &[]));
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

/// Writes `code` as CPython's cached bytecode at `pyc`, with a header that makes Python
/// take it for `source` (its size and mtime), or for no source (a sourceless `.pyc`).
fn plant_pyc(source: Option<&Path>, pyc: &Path, code: &str) {
    let script = r#"
import importlib.util, marshal, os, sys
source, pyc, code = sys.argv[1], sys.argv[2], sys.argv[3]
mtime, size = (0, 0)
if source:
    st = os.stat(source)
    mtime, size = int(st.st_mtime), st.st_size
os.makedirs(os.path.dirname(pyc), exist_ok=True)
with open(pyc, "wb") as f:
    f.write(importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
            + mtime.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little")
            + marshal.dumps(compile(code, source or pyc, "exec")))
"#;
    let source = source.map(|s| s.to_str().unwrap()).unwrap_or("");
    python3(script, &[source, pyc.to_str().unwrap(), code]);
}

/// The `py` tree's plugin, pinned to `pin`.
fn pinned(pin: &str) -> Value {
    let mut p = py_plugin("py");
    p["manifest_sha256"] = json!(pin);
    p
}

/// Python may load a `__pycache__` file whose header matches its source, or a
/// sourceless `.pyc`, from a tree it runs in place (at start-up through a `.pth`, by a
/// loader the plugin calls itself, in a spawned interpreter): neither is hashed, so both
/// must at least be files that only root or the invoking user could have written.
#[test]
fn bytecode_caches_in_a_plugin_tree_are_checked_like_its_sources() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    d.write(
        "py/mod.py",
        "class P:\n    def __init__(self, project_root, cache_dir, policy):\n        pass\n\n    \
         def who(self):\n        import helper\n        return {\"helper\": helper.WORD}\n",
        false,
    );
    let helper = d.write("py/helper.py", "WORD = 'source'\n", false);
    let tag = python3("import sys; print(sys.implementation.cache_tag)", &[]);
    let tag = tag.trim();
    let cache = d.join("py/__pycache__");
    let planted = cache.join(format!("helper.{tag}.pyc"));
    plant_pyc(Some(&helper), &planted, "WORD = 'planted'");
    let cfg = config_with(&d, json!({ "P": py_plugin("py") }));
    let refused = |why: &str| {
        let run = call(&cfg, "P", "who", json!({}), &[]);
        assert_refused(&d, &run, 6, "unsafe_plugin_file");
        let err = run.json["data"]["error"].as_str().unwrap();
        assert!(err.contains(why), "{why}: {}", ctx(&run));
    };
    // Anyone may write the cache directory (the error says what to do about it).
    chmod(&cache, 0o777);
    refused("__pycache__");
    refused("chmod -R go-w");
    // Pinned, the tree runs from a snapshot that leaves caches out: not checked.
    let c = check(
        &config_with(&d, json!({ "P": pinned(&"a".repeat(64)) })),
        &[],
    );
    let found = found_manifest(&c, "P");
    let run = call(
        &config_with(&d, json!({ "P": pinned(&found) })),
        "P",
        "who",
        json!({}),
        &[],
    );
    assert_ok(&run);
    assert_eq!(run.result()["helper"], "source", "{}", ctx(&run));
    // (The same config file, unpinned again.)
    assert_eq!(config_with(&d, json!({ "P": py_plugin("py") })), cfg);
    chmod(&cache, 0o755);
    // Another uid's cached module, and its sourceless one.
    std::os::unix::fs::chown(&planted, Some(1234), Some(1234)).unwrap();
    refused("owned by uid 1234");
    std::os::unix::fs::chown(&planted, Some(0), Some(0)).unwrap();
    let stray = d.join("py/stray.pyc");
    plant_pyc(None, &stray, "WORD = 'planted'");
    chmod(&stray, 0o666);
    refused("writable by group or others");
    std::fs::remove_file(&stray).unwrap();
    // Root's own cache is as trusted as root's source, and no digest covers it: the
    // audit's digest is the sources' alone, as `upm check` prints it.
    let run = call(&cfg, "P", "who", json!({}), &[]);
    assert_ok(&run);
    let c = check(&cfg, &[]);
    assert_eq!(
        audit_of(&d, &run)[0]["plugin_files"]["manifest_sha256"],
        c.json["plugins"]["P"]["pins"]["manifest"]["sha256"],
        "{}",
        ctx(&c)
    );
}
