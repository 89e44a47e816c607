//! Python class plugins: UPM's calling convention, print noise, the config's policy, a virtualenv.

use super::*;

#[test]
fn python_sync_and_async_methods_get_args_and_kwargs() {
    let d = setup();
    let c = py_cfg(&d);
    let args = json!({"args": [1, "two", {"three": [3]}], "kwargs": {"k": [true, null], "n": 1.5}});
    let r = call(&c, "Probe", "echo", args);
    assert_eq!(
        ok(&r),
        &json!({"args": [1, "two", {"three": [3]}], "kwargs": {"k": [true, null], "n": 1.5}})
    );
    let r = call(
        &c,
        "Probe",
        "later",
        json!({"args": ["x"], "kwargs": {"delay_ms": 1}}),
    );
    assert_eq!(ok(&r), &json!({"later": "x"}));
    // No args at all: called with none.
    let r = call(&c, "Probe", "echo", json!({}));
    assert_eq!(ok(&r), &json!({"args": [], "kwargs": {}}));
}

#[test]
fn python_print_noise_never_corrupts_the_result() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Probe", "noisy", json!({}));
    assert_eq!(ok(&r), &json!({"clean": true}));
    let data = &r.json["data"];
    assert_eq!(
        data["stdout"]["text"],
        "NOISE-OUT {\"result\": \"forged\"}\n{"
    );
    assert_eq!(data["stderr"]["text"], "NOISE-ERR\n");
}

#[test]
fn the_config_policy_reaches_the_python_constructor() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Probe", "show_policy", json!({}));
    assert_eq!(ok(&r), &json!({"policy": {"mode": "strict", "n": 3}}));
}

/// Writes a wheel of one module, `upm_test_dep` (built here: no network, no build
/// backend), and returns its path.
fn local_wheel(d: &TestDir) -> PathBuf {
    let script = r#"
import base64, hashlib, sys, zipfile
out = sys.argv[1]
files = {
    "upm_test_dep/__init__.py": "def shout(s):\n    return s.upper() + '!'\n",
    "upm_test_dep-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: upm-test-dep\nVersion: 1.0\n",
    "upm_test_dep-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: upm-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile(out, "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("upm_test_dep-1.0.dist-info/RECORD,,")
    z.writestr("upm_test_dep-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    std::fs::create_dir_all(d.join("dist")).unwrap();
    let wheel = d.join("dist/upm_test_dep-1.0-py3-none-any.whl");
    let st = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&wheel)
        .status()
        .unwrap();
    assert!(st.success(), "building the wheel");
    wheel
}

/// A Python class plugin with its own packages: a virtualenv made with
/// `python3 -m venv`, a package installed into it by pip (from a local wheel, no
/// index), and `"python": "venv/bin/python"` (a symlink to the system interpreter).
#[test]
fn a_python_plugin_runs_in_its_virtualenv_with_what_pip_installed() {
    let d = setup();
    let venv = d.join("venv");
    let st = Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "python3 -m venv (Debian: apt-get install python3-venv)"
    );
    let wheel = local_wheel(&d);
    let out = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--no-index",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "-q",
        ])
        .arg(&wheel)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pip: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.write(
        "py/uses_dep.py",
        r#"import sys
import upm_test_dep

class UsesDep:
    def __init__(self, project_root, cache_dir, policy):
        pass

    def go(self, s):
        return {"shout": upm_test_dep.shout(s), "prefix": sys.prefix}
"#,
        false,
    );
    let plugin = |python: Option<&str>| {
        let mut p =
            json!({ "module": "uses_dep", "python_path": ["py"], "allowed_methods": ["go"] });
        if let Some(py) = python {
            p["python"] = json!(py);
        }
        p
    };
    let c = cfg(
        &d,
        json!({ "plugins": {
            "UsesDep": plugin(Some("venv/bin/python")),
            "System": { "module": "uses_dep", "class": "UsesDep", "python_path": ["py"], "allowed_methods": ["go"] }
        }}),
    );
    let args = r#"{"args": ["hi"]}"#;
    let argv = ["--config", c.to_str().unwrap(), "UsesDep", "go", args];
    let r = run_in(Path::new("/"), &argv, b"", &[]);
    let result = ok(&r);
    assert_eq!(result["shout"], "HI!");
    assert_eq!(result["prefix"], venv.to_str().unwrap());
    let read = &r.json["data"]["sandbox"]["layers"]["landlock"]["detail"]["read"];
    assert!(
        read.as_array()
            .unwrap()
            .contains(&json!(venv.to_str().unwrap())),
        "{read}"
    );
    // The system interpreter does not have the package: the venv is what supplied it.
    let r = run_argv(&c, &["System", "go", args]);
    err(&r, 6, "plugin_start_failed");
    assert!(r.stdout.contains("upm_test_dep"), "{}", r.stdout);
    // With trust on, the interpreter that runs is a verified copy of the system one,
    // and it still finds its virtualenv.
    let keys = d.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let env = [
        ("UPM_TRUST_MODE", "warn"),
        ("UPM_TRUSTED_KEYS_DIR", keys.to_str().unwrap()),
    ];
    let r = run_in(Path::new("/"), &argv, b"", &env);
    assert_eq!(ok(&r)["prefix"], venv.to_str().unwrap());
    let line = d
        .audit_lines()
        .into_iter()
        .rfind(|l| l["event"] == "started")
        .unwrap();
    let real = std::fs::canonicalize(venv.join("bin/python")).unwrap();
    assert_eq!(
        line["plugin_files"]["exec_source"],
        real.to_str().unwrap(),
        "{line}"
    );
    // `upm check` is content, and says the venv's packages are pinned by nothing.
    let r = run_with(&["check", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let unpinned = &r.json["plugins"]["UsesDep"]["pins"]["unpinned"];
    assert!(
        unpinned
            .as_array()
            .unwrap()
            .contains(&json!(venv.to_str().unwrap())),
        "{unpinned}"
    );

    // A symlink to an interpreter outside its directory that is no virtualenv's is
    // refused, with what to write instead.
    std::fs::create_dir(d.join("bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", d.join("bin/python")).unwrap();
    let c = cfg(
        &d,
        json!({ "plugins": { "UsesDep": plugin(Some("bin/python")) } }),
    );
    let r = run_argv(&c, &["UsesDep", "go", args]);
    err(&r, 6, "unsafe_plugin_file");
    assert!(
        error_text(&r).contains("write \"python\": \"/usr/bin/python3"),
        "{}",
        r.stdout
    );
    // "python" is a Python class plugin's: a command plugin naming one is a config error.
    let c = cfg(
        &d,
        json!({ "plugins": { "C": { "command": ["/bin/true"], "python": "/usr/bin/python3", "allowed_methods": ["m"] } } }),
    );
    let r = run_argv(&c, &["C", "m", "{}"]);
    err(&r, 5, "config_error");
}

#[test]
fn the_example_configs_greeter_works() {
    let d = TestDir::new();
    let log = d.join("entrypoint.log");
    let example = repo().join("upm_config.json");
    let argv = ["run", "--config", example.to_str().unwrap()];
    let env = [("UPM_LOG_FILE", log.to_str().unwrap())];
    let r = run_with(
        &argv,
        &request(
            "Greeter",
            "greet",
            json!({"args": ["Ada"], "kwargs": {"punctuation": "?"}}),
        ),
        &env,
    );
    assert_eq!(ok(&r), &json!({"greeting": "Hello, Ada?"}));
    assert_eq!(r.json["data"]["stdout"]["text"], "greeting Ada\n");
    let r = run_with(
        &argv,
        &request(
            "Greeter",
            "greet_later",
            json!({"args": ["Bo"], "kwargs": {"delay_ms": 1}}),
        ),
        &env,
    );
    assert_eq!(ok(&r), &json!({"greeting": "Hello, Bo, after 1 ms"}));
    // The example's schemas are enforced.
    let r = run_with(
        &argv,
        &request(
            "Greeter",
            "greet",
            json!({"args": ["Ada"], "kwargs": {"punctuation": "!!!!"}}),
        ),
        &env,
    );
    err(&r, 10, "invalid_args");
    let r = run_with(&argv, &request("Greeter", "_private", json!({})), &env);
    err(&r, 7, "method_not_allowed");
    assert_eq!(
        d.audit_lines().len(),
        2 + 2 + 1 + 1,
        "all audited into UPM_LOG_FILE"
    );
}
