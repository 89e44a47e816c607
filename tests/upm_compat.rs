//! Drop-in for UPM: the original entrypoint's config, environment, arguments and
//! answers, with only the command changed (`python entrypoint.py ARGS` → `upm ARGS`).
//!
//! A UPM-style package of the tests' own (`upm/plugins/...`, a base class built as
//! `(project_root, cache_dir, policy, fernet_lib=None)`, sync and async methods) is
//! driven in the argv form with `UPM_CONFIG_PATH`, `UPM_LOG_FILE` and `PYTHONPATH`
//! set as UPM's callers set them, from the caller's own working directory. There is
//! no `policies/` beside the config (the built-in seccomp profile is used).

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// UPM's own test config, as the issue quotes it.
const UPM_CONFIG: &str = r#"{"plugins": {"MockPlugin": {"module": "upm.plugins.mock",
                            "allowed_methods": ["install", "async_install", "version", "info", "meta", "__introspect__"]},
             "PipPlugin": {"module": "upm.plugins.pip", "allowed_methods": ["install", "uninstall", "list"]}},
 "policy": {"blocked_packages": [], "pinned_versions": {}, "require_signatures": false, "allow_prerelease": false}}
"#;

const BASE_PY: &str = r#"
class EcosystemPlugin:
    def __init__(self, project_root: str, cache_dir: str, policy, fernet_lib=None):
        self.project_root = project_root
        self.cache_dir = cache_dir
        self.policy = policy
        self.fernet_lib = fernet_lib
"#;

/// `MARKER` is replaced by a path: importing the module tries to write there, which
/// only a module imported outside the sandbox can do.
const MOCK_PY: &str = r#"
import asyncio
import os
from typing import Any, Dict, List, Optional
from upm.plugins.base import EcosystemPlugin

try:
    with open("MARKER", "w") as f:
        f.write("imported outside the sandbox")
except OSError:
    pass


class MockPlugin(EcosystemPlugin):
    def install(self, package_name: str, version_constraint: Optional[str] = None,
                verbose: bool = False, fail: bool = False) -> Dict[str, Any]:
        if fail:
            raise RuntimeError(f"Install failed for {package_name}")
        print(f"Mock install output: {package_name}")
        return {"status": "installed", "package": package_name, "version": version_constraint,
                "project_root": self.project_root, "cache_dir": self.cache_dir,
                "policy": self.policy, "fernet_lib": self.fernet_lib}

    async def async_install(self, package_name: str, version_constraint: Optional[str] = None,
                            verbose: bool = False) -> Dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"status": "async_installed", "package": package_name,
                "version": version_constraint, "loop": asyncio.get_running_loop() is not None}

    def version(self) -> Dict[str, str]:
        return {"version": "1.0.0"}

    def info(self, names: List[str] = ()) -> Dict[str, Any]:
        out = {"cwd": os.getcwd()}
        try:
            out["project_root"] = sorted(os.listdir(self.project_root))
        except OSError as e:
            out["project_root"] = "denied: " + type(e).__name__
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            with open(os.path.join(self.cache_dir, "entry"), "w") as f:
                f.write("cached")
            out["cache"] = "written " + os.path.abspath(self.cache_dir)
        except OSError as e:
            out["cache"] = "denied: " + type(e).__name__
        return out

    def __introspect__(self) -> Dict[str, Any]:
        return {"capabilities": ["install"]}
"#;

const PIP_PY: &str = r#"
from typing import List, Literal, Optional
from upm.plugins.base import EcosystemPlugin


class PipPlugin(EcosystemPlugin):
    async def install(self, package_name: str, version_constraint: Optional[str] = None, *,
                      verbose: bool = False) -> bool:
        return True

    def uninstall(self, package_name: str, verbose: bool = False) -> bool:
        return True

    def list(self, mode: Literal["all", "outdated"] = "all", limit: int | None = None) -> List[str]:
        return [mode]
"#;

/// A caller's project: `pkg/` holds the package, `proj/` is the caller's working
/// directory, `upm_config.json` is UPM's config, `upm.log` the log UPM_LOG_FILE names.
struct Upm {
    d: TestDir,
    cfg: PathBuf,
    log: PathBuf,
    pkg: PathBuf,
    proj: PathBuf,
}

impl Upm {
    fn new() -> Upm {
        Upm::with_config(UPM_CONFIG)
    }

    fn with_config(config: &str) -> Upm {
        let d = TestDir::new();
        d.write("pkg/upm/__init__.py", "", false);
        d.write("pkg/upm/plugins/__init__.py", "", false);
        d.write("pkg/upm/plugins/base.py", BASE_PY, false);
        let marker = d.join("imported-outside-the-sandbox");
        d.write(
            "pkg/upm/plugins/mock.py",
            &MOCK_PY.replace("MARKER", marker.to_str().unwrap()),
            false,
        );
        d.write(
            "pkg/upm/plugins/nocls.py",
            "class Other:\n    pass\n",
            false,
        );
        d.write(
            "pkg/upm/plugins/badinit.py",
            "class BadInit:\n    def __init__(self, project_root, cache_dir, policy):\n        raise ConnectionError('no database')\n",
            false,
        );
        d.write("proj/secret.txt", "the caller's files", false);
        let cfg = d.write("upm_config.json", config, false);
        Upm {
            cfg,
            log: d.join("upm.log"),
            pkg: d.join("pkg"),
            proj: d.join("proj"),
            d,
        }
    }

    fn marker(&self) -> PathBuf {
        self.d.join("imported-outside-the-sandbox")
    }

    /// The environment UPM's callers set.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("UPM_CONFIG_PATH".into(), self.cfg.display().to_string()),
            ("UPM_LOG_FILE".into(), self.log.display().to_string()),
            ("PYTHONPATH".into(), self.pkg.display().to_string()),
        ]
    }

    /// `upm ARGS` from the caller's project, with UPM's environment changed by `env`
    /// (an empty value unsets the variable).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(upm_bin());
        cmd.args(args).current_dir(&self.proj);
        for v in [
            "UPM_CONFIG_PATH",
            "UPM_LOG_FILE",
            "PYTHONPATH",
            "UPM_TRUST_MODE",
            "UPM_TRUSTED_KEYS_DIR",
            "UPM_TRUST_MIN_SIGNED_AT",
        ] {
            cmd.env_remove(v);
        }
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        run_command(cmd, b"")
    }

    fn call(&self, plugin: &str, method: &str, args: &str) -> Run {
        self.run(&[plugin, method, args], &[])
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn ctx(r: &Run) -> String {
    format!("exit {}\nstdout {}\nstderr {}", r.code, r.stdout, r.stderr)
}

/// An error answer with UPM's exit code and a sentence that starts with UPM's.
fn says(r: &Run, exit: i32, sentence: &str) -> Value {
    assert_eq!(r.code, exit, "{}", ctx(r));
    let data = &r.json["data"];
    assert_eq!(r.json["success"], false, "{}", ctx(r));
    assert_eq!(r.json["status"], "error", "{}", ctx(r));
    let error = data["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(sentence),
        "expected {sentence:?} at the start of {error:?}"
    );
    for field in ["timestamp", "hostname", "pid", "request_id"] {
        assert!(!data[field].is_null(), "{field}: {}", ctx(r));
    }
    data.clone()
}

fn sha256_of(p: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
    )
}

// ---------------------------------------------------------------- success

#[test]
fn a_upm_config_runs_unchanged_with_only_the_command_changed() {
    let u = Upm::new();
    assert!(
        !u.d.join("policies").exists(),
        "no policies/ beside the config"
    );
    let r = u.call(
        "MockPlugin",
        "install",
        r#"{"args": ["requests"], "kwargs": {"version": ">=2"}}"#,
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(r.json["success"], true);
    assert_eq!(r.json["status"], "success");
    let data = &r.json["data"];
    // UPM's data fields.
    for field in ["result", "timestamp", "hostname", "pid", "request_id"] {
        assert!(!data[field].is_null(), "{field}: {}", ctx(&r));
    }
    let result = &data["result"];
    assert_eq!(result["status"], "installed");
    assert_eq!(result["package"], "requests");
    assert_eq!(
        result["version"], ">=2",
        "version became version_constraint"
    );
    // The constructor got what UPM gave it: the caller's cwd, ".cache", the policy.
    assert_eq!(result["project_root"], json!(u.proj));
    assert_eq!(result["cache_dir"], ".cache");
    assert_eq!(result["policy"]["blocked_packages"], json!([]));
    assert_eq!(result["fernet_lib"], Value::Null);
    assert!(data["stdout"]["text"]
        .as_str()
        .unwrap()
        .contains("Mock install output: requests"));
    // No schema checked it, and the answer says so.
    assert!(
        data["no_schema"]
            .as_str()
            .unwrap()
            .contains("whitelisted only through UPM's \"allowed_methods\""),
        "{}",
        ctx(&r)
    );
    // The module came from the caller's PYTHONPATH, and the sandbox report says so.
    let pp = &data["sandbox"]["python_path"];
    assert_eq!(pp["from"], "environment", "{}", ctx(&r));
    assert_eq!(pp["PYTHONPATH"], json!(u.pkg));
    assert_eq!(pp["paths"], json!([u.pkg]));
    let read = data["sandbox"]["layers"]["landlock"]["detail"]["read"].to_string();
    assert!(read.contains(u.pkg.to_str().unwrap()), "{read}");
    // The built-in seccomp profile is the readable one in the repository.
    let seccomp = &data["sandbox"]["layers"]["seccomp"]["detail"];
    assert_eq!(seccomp["profile"], "default");
    // Built into upm: no file of that name was read.
    assert_eq!(seccomp["file"], Value::Null, "{seccomp}");
    assert_eq!(seccomp["built_in"], true, "{seccomp}");
    assert_eq!(
        seccomp["digest"],
        json!(sha256_of(&repo().join("policies/default.json")))
    );

    // Audited in UPM_LOG_FILE: the environment's path and the missing schema.
    let lines = u.audit();
    let started = lines.iter().find(|l| l["event"] == "started").unwrap();
    assert_eq!(
        started["sandbox_requested"]["python_path"]["from"],
        "environment"
    );
    assert_eq!(
        started["sandbox_requested"]["python_path"]["paths"],
        json!([u.pkg])
    );
    assert!(started["no_schema"].is_string(), "{started}");
    let finished = lines.iter().find(|l| l["event"] == "finished").unwrap();
    assert!(finished["no_schema"].is_string(), "{finished}");

    // An async method, awaited inside an event loop as UPM did.
    let r = u.call(
        "MockPlugin",
        "async_install",
        r#"{"kwargs": {"package_name": "x"}}"#,
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(
        r.json["data"]["result"],
        json!({"status": "async_installed", "package": "x", "version": null, "loop": true})
    );
    let r = u.call("MockPlugin", "version", "{}");
    assert_eq!(
        r.json["data"]["result"],
        json!({"version": "1.0.0"}),
        "{}",
        ctx(&r)
    );
}

/// `project_root` and `cache_dir` reach the constructor as strings: the sandbox grants
/// nothing for them (until the config's paths cover them); UPM's default ".cache" lies
/// in the call's private directory, which is writable.
#[test]
fn project_root_and_cache_dir_are_passed_through_and_grant_nothing() {
    let u = Upm::new();
    let r = u.call("MockPlugin", "info", "{}");
    assert_eq!(r.code, 0, "{}", ctx(&r));
    let result = &r.json["data"]["result"];
    assert_eq!(
        result["project_root"],
        "denied: PermissionError",
        "the caller's cwd is not opened to the plugin: {}",
        ctx(&r)
    );
    let cache = result["cache"].as_str().unwrap();
    let cwd = result["cwd"].as_str().unwrap();
    assert_eq!(cache, format!("written {cwd}/.cache"), "{}", ctx(&r));

    let elsewhere = u.d.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(
        &elsewhere,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let args = json!({"project_root": u.d.path, "cache_dir": elsewhere}).to_string();
    let r = u.call("MockPlugin", "info", &args);
    assert_eq!(r.code, 0, "{}", ctx(&r));
    let result = &r.json["data"]["result"];
    assert_eq!(result["project_root"], "denied: PermissionError");
    // Landlock refuses the write; the read-only mount answers first for a directory.
    assert!(
        result["cache"].as_str().unwrap().starts_with("denied: "),
        "{}",
        ctx(&r)
    );
    assert!(!elsewhere.join("entry").exists());
    let r = u.call(
        "MockPlugin",
        "install",
        &json!({"args": ["p"], "project_root": "/p", "cache_dir": "c"}).to_string(),
    );
    assert_eq!(
        r.json["data"]["result"]["project_root"],
        "/p",
        "{}",
        ctx(&r)
    );
    assert_eq!(r.json["data"]["result"]["cache_dir"], "c");
}

// ---------------------------------------------------------------- every answer

#[test]
fn every_exit_code_and_sentence_of_the_original() {
    let u = Upm::new();
    // 2: the argument count.
    for args in [
        &["MockPlugin", "install"][..],
        &["MockPlugin", "install", "{}", "x"],
    ] {
        let r = u.run(args, &[]);
        says(
            &r,
            2,
            "Usage: python entrypoint.py <plugin_class> <method> <json_args>",
        );
    }
    // 3: the args.
    let r = u.call("MockPlugin", "install", "{not json");
    says(&r, 3, "Error parsing JSON args: ");
    // 4: the plugin, with the config's plugins in its own order.
    let r = u.call("Nope", "install", "{}");
    let data = says(
        &r,
        4,
        "Plugin class 'Nope' not in config: ['MockPlugin', 'PipPlugin']",
    );
    assert_eq!(data["code"], "not_whitelisted");
    // 5: the config, named as the caller named it.
    let missing = u.d.join("missing.json");
    let r = u.run(
        &["MockPlugin", "install", "{}"],
        &[("UPM_CONFIG_PATH", missing.to_str().unwrap())],
    );
    says(
        &r,
        5,
        &format!("Failed to load config from {}: ", missing.display()),
    );
    let broken = u.d.write("broken.json", "{\"plugins\": ", false);
    let r = u.run(
        &["MockPlugin", "install", "{}"],
        &[("UPM_CONFIG_PATH", "../broken.json")],
    );
    says(&r, 5, "Failed to load config from ../broken.json: ");
    assert!(broken.exists());
    // 6: the module cannot be imported (its exception's own words).
    let r = u.call("PipPlugin", "install", "{}");
    let data = says(
        &r,
        6,
        "Cannot import plugin module 'upm.plugins.pip'. Error: No module named 'upm.plugins.pip'",
    );
    assert_eq!(data["code"], "plugin_start_failed");
    // 7: the whitelist first, then the private name.
    let r = u.call("MockPlugin", "uninstall", "{}");
    says(
        &r,
        7,
        "Method 'uninstall' not allowed for plugin 'MockPlugin'",
    );
    let r = u.call("MockPlugin", "_audit", "{}");
    says(&r, 7, "Method '_audit' not allowed for plugin 'MockPlugin'");
    let r = u.call("MockPlugin", "__introspect__", "{}");
    says(
        &r,
        7,
        "Method '__introspect__' is private and cannot be called directly",
    );
    // 8: whitelisted, but the class has no such method.
    let r = u.call("MockPlugin", "meta", "{}");
    says(&r, 8, "Method 'meta' not found in plugin 'MockPlugin'");
    // 9: the method raised: UPM's details and traceback.
    let r = u.call(
        "MockPlugin",
        "install",
        r#"{"args": ["pkg"], "kwargs": {"fail": true}}"#,
    );
    let data = says(&r, 9, "Method execution failed: Install failed for pkg");
    assert_eq!(data["code"], "plugin_failed");
    assert_eq!(data["details"]["message"], "Install failed for pkg");
    assert_eq!(data["details"]["type"], "RuntimeError");
    let tb = data["traceback"].as_str().unwrap();
    assert!(tb.contains("mock.py") && tb.contains("in install"), "{tb}");
    assert_eq!(data["details"]["traceback"], data["traceback"]);
    // 11: UPM_LOG_FILE cannot be opened: nothing runs, whatever else is wrong.
    for args in [
        &["MockPlugin", "install", r#"{"args": ["x"]}"#][..],
        &["MockPlugin"],
    ] {
        let r = u.run(args, &[("UPM_LOG_FILE", "/nonexistent-upm-dir/upm.log")]);
        let data = says(&r, 11, "Logging configuration failed: ");
        assert_eq!(data["code"], "audit_error");
        assert!(data.get("result").is_none() && data.get("stdout").is_none());
    }
    // Every call above that got past the log was audited in UPM_LOG_FILE.
    let events: Vec<String> = u
        .audit()
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events.iter().filter(|e| *e == "refused").count(),
        9,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "started").count(),
        3,
        "{events:?}"
    );
}

#[test]
fn a_class_that_is_missing_or_fails_to_build_is_exit_6() {
    let u = Upm::with_config(
        r#"{"plugins": {"NoClass": {"module": "upm.plugins.nocls", "allowed_methods": ["x"]},
                        "BadInit": {"module": "upm.plugins.badinit", "allowed_methods": ["x"]}}}"#,
    );
    let r = u.call("NoClass", "x", "{}");
    says(
        &r,
        6,
        "Plugin class 'NoClass' not found in module upm.plugins.nocls",
    );
    let r = u.call("BadInit", "x", "{}");
    let data = says(&r, 6, "Plugin 'BadInit' instantiation failed: no database");
    assert_eq!(data["details"]["type"], "ConnectionError");
}

// ---------------------------------------------------------------- PYTHONPATH

/// Relative entries are resolved against the caller's working directory, an empty
/// entry is ignored rather than opening the whole working directory, and the report
/// lists what was ignored.
#[test]
fn pythonpath_entries_are_made_absolute_and_reported() {
    let u = Upm::new();
    // From proj/: "../pkg" is the package, "" would be proj/ itself.
    let r = u.run(
        &["MockPlugin", "info", "{}"],
        &[("PYTHONPATH", ":../pkg:/nonexistent-upm-dir")],
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    let pp = &r.json["data"]["sandbox"]["python_path"];
    assert_eq!(pp["paths"], json!([u.pkg]), "{pp}");
    assert_eq!(pp["cwd"], json!(u.proj));
    let ignored = pp["ignored"].to_string();
    assert!(ignored.contains("an empty entry"), "{ignored}");
    assert!(
        ignored.contains("/nonexistent-upm-dir: does not exist"),
        "{ignored}"
    );
    let read = r.json["data"]["sandbox"]["layers"]["landlock"]["detail"]["read"].to_string();
    assert!(
        !read.contains(&format!("\"{}\"", u.proj.display())),
        "{read}"
    );
    assert_eq!(
        r.json["data"]["result"]["project_root"],
        "denied: PermissionError"
    );

    // Without PYTHONPATH the module is not found, as in UPM.
    let r = u.run(&["MockPlugin", "version", "{}"], &[("PYTHONPATH", "")]);
    says(
        &r,
        6,
        "Cannot import plugin module 'upm.plugins.mock'. Error: No module named 'upm'",
    );
}

/// A PYTHONPATH that would open every call's private directory to the plugin refuses
/// the call; the config stays valid for everything else.
#[test]
fn a_pythonpath_over_the_calls_directories_is_refused() {
    let u = Upm::new();
    // ... also one that names it through a link: the directory is what counts.
    let link = u.d.join("to-root");
    std::os::unix::fs::symlink("/", &link).unwrap();
    for entry in ["/", link.to_str().unwrap()] {
        let r = u.run(&["MockPlugin", "version", "{}"], &[("PYTHONPATH", entry)]);
        let data = says(
            &r,
            6,
            "Cannot import plugin module 'upm.plugins.mock'. Error: ",
        );
        assert!(
            data["error"].as_str().unwrap().contains("workdir_root"),
            "PYTHONPATH={entry}: {}",
            ctx(&r)
        );
    }
}

/// The environment is not signed: strict trust refuses a path taken from it.
#[test]
fn strict_trust_refuses_a_python_path_from_the_environment() {
    let u = Upm::new();
    let keys = u.d.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let secret = u.d.join("secret.pem");
    let kg = u.run(
        &[
            "keygen",
            "--secret",
            secret.to_str().unwrap(),
            "--public",
            keys.join("k.pub").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(kg.code, 0, "{}", ctx(&kg));
    let sg = u.run(&["sign", "--key", secret.to_str().unwrap()], &[]);
    assert_eq!(sg.code, 0, "{}", ctx(&sg));
    let strict = [
        ("UPM_TRUST_MODE", "strict"),
        ("UPM_TRUSTED_KEYS_DIR", keys.to_str().unwrap()),
    ];
    let r = u.run(&["MockPlugin", "version", "{}"], &strict);
    assert_eq!(r.code, 5, "{}", ctx(&r));
    assert_eq!(r.json["data"]["code"], "untrusted_config");
    assert!(
        r.json["data"]["error"]
            .as_str()
            .unwrap()
            .contains("takes its python_path from the caller's PYTHONPATH"),
        "{}",
        ctx(&r)
    );
    // warn runs it, and says why it should not have.
    let r = u.run(
        &["MockPlugin", "version", "{}"],
        &[
            ("UPM_TRUST_MODE", "warn"),
            ("UPM_TRUSTED_KEYS_DIR", keys.to_str().unwrap()),
        ],
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert!(r.json["data"]["warnings"]
        .to_string()
        .contains("PYTHONPATH"));
    // upm check, strict: a problem, not only a warning.
    let r = u.run(&["check"], &strict);
    assert_eq!(r.code, 5, "{}", ctx(&r));
    assert!(
        r.json["problems"].to_string().contains("PYTHONPATH"),
        "{}",
        ctx(&r)
    );
}

// ---------------------------------------------------------------- schemas and check

#[test]
fn check_warns_about_what_upm_would_not_do_for_a_upm_config() {
    let u = Upm::new();
    u.d.write("pkg/upm/plugins/pip.py", PIP_PY, false);
    let r = u.run(&["check"], &[]);
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(r.json["ok"], true);
    let warnings = r.json["warnings"].to_string();
    for needle in [
        "plugin \\\"MockPlugin\\\": no \\\"python_path\\\" in the config",
        "PYTHONPATH",
        "method \\\"install\\\" has no schema",
        "\\\"__introspect__\\\" in \\\"allowed_methods\\\" is private",
    ] {
        assert!(warnings.contains(needle), "{needle}: {warnings}");
    }
    assert!(r.stderr.contains("warning: "), "{}", r.stderr);
}

/// A UPM config runs unchanged; a upm config stays strict.
#[test]
fn require_schemas_true_refuses_schema_less_methods_everywhere() {
    let strict = UPM_CONFIG.replacen('{', "{\"require_schemas\": true, ", 1);
    let u = Upm::with_config(&strict);
    let r = u.call("MockPlugin", "version", "{}");
    let data = says(&r, 5, "Failed to load config from ");
    let problems = data["details"]["problems"].to_string();
    assert!(
        problems.contains(
            "\\\"version\\\" has no schema, and the config sets \\\"require_schemas\\\": true"
        ),
        "{problems}"
    );
    // upm's own "methods" need a schema without being told.
    let own = r#"{"plugins": {"MockPlugin": {"module": "upm.plugins.mock", "methods": {"version": {}}}}}"#;
    let u = Upm::with_config(own);
    let r = u.call("MockPlugin", "version", "{}");
    let data = says(&r, 5, "Failed to load config from ");
    assert!(
        data["details"]["problems"]
            .to_string()
            .contains("has no schema"),
        "{}",
        ctx(&r)
    );
}

// ---------------------------------------------------------------- seccomp

/// `"seccomp": "default"` names the built-in profile; a path names a file, even one
/// called `default` (`./default`).
#[test]
fn the_seccomp_profile_is_built_in_unless_a_path_names_a_file() {
    let builtin = sha256_of(&repo().join("policies/default.json"));
    let mut own = std::fs::read_to_string(repo().join("policies/default.json")).unwrap();
    own.push('\n');
    for (value, file) in [
        ("default", None),
        ("./default", Some("default")),
        ("profiles/mine.json", Some("profiles/mine.json")),
    ] {
        let config = UPM_CONFIG.replacen(
            '{',
            &format!("{{\"sandbox\": {{\"seccomp\": \"{value}\"}}, "),
            1,
        );
        let u = Upm::with_config(&config);
        if let Some(f) = file {
            u.d.write(f, &own, false);
        }
        let r = u.call("MockPlugin", "version", "{}");
        assert_eq!(r.code, 0, "{value}: {}", ctx(&r));
        let digest = &r.json["data"]["sandbox"]["layers"]["seccomp"]["detail"]["digest"];
        match file {
            None => assert_eq!(*digest, json!(builtin), "{value}"),
            Some(f) => assert_eq!(*digest, json!(sha256_of(&u.d.join(f))), "{value}"),
        }
        let detail = &r.json["data"]["sandbox"]["layers"]["seccomp"]["detail"];
        assert_eq!(detail["built_in"], file.is_none(), "{value}: {detail}");
        match file {
            None => assert_eq!(detail["file"], Value::Null, "{value}"),
            Some(f) => assert_eq!(detail["file"], json!(u.d.join(f)), "{value}"),
        }
    }
    // A path that names nothing is a config error, never the built-in one instead.
    let config = UPM_CONFIG.replacen('{', "{\"sandbox\": {\"seccomp\": \"./nope.json\"}, ", 1);
    let u = Upm::with_config(&config);
    let r = u.call("MockPlugin", "version", "{}");
    assert_eq!(r.code, 5, "{}", ctx(&r));
}

/// UPM refused a plugin it could never call one call at a time, never the config: an
/// entry with no `allowed_methods` (or an empty list), a name upm cannot take, a method
/// name upm cannot call. The other plugins run; `upm check` warns; migrate leaves them out.
#[test]
fn a_plugin_no_call_can_reach_leaves_the_others_running() {
    let config = UPM_CONFIG.replacen(
        "\"plugins\": {",
        r#""plugins": {"NpmPlugin": {"module": "upm.plugins.npm", "allowed_methods": []},
                       "Gone": {"module": "upm.plugins.gone"},
                       "Plügin": {"module": "upm.plugins.mock", "allowed_methods": ["version"]},
                       "Spaced": {"module": "upm.plugins.mock", "class": "MockPlugin",
                                  "allowed_methods": ["version", "list installed"]},"#,
        1,
    );
    let u = Upm::with_config(&config);
    u.d.write("pkg/upm/plugins/pip.py", PIP_PY, false);
    let r = u.call("MockPlugin", "version", "{}");
    assert_eq!(r.code, 0, "{}", ctx(&r));
    let r = u.call("Spaced", "version", "{}");
    assert_eq!(r.code, 0, "{}", ctx(&r));
    for plugin in ["NpmPlugin", "Gone"] {
        says(
            &u.call(plugin, "info", "{}"),
            7,
            &format!("Method 'info' not allowed for plugin '{plugin}'"),
        );
    }
    let r = u.run(&["check"], &[]);
    assert_eq!(r.code, 0, "{}", ctx(&r));
    let warnings = r.json["warnings"].to_string();
    for w in [
        "\\\"NpmPlugin\\\": whitelists no method",
        "\\\"Gone\\\": whitelists no method",
        "\\\"Plügin\\\": not a valid plugin name",
        "method \\\"list installed\\\" can never be called",
    ] {
        assert!(warnings.contains(w), "{w} not in {warnings}");
    }
    let r = u.run(&["migrate", "--out", "../strict.json"], &[]);
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(
        r.json["dropped_plugins"],
        json!({"NpmPlugin": "whitelists no method", "Gone": "whitelists no method",
               "Plügin": "not a valid plugin name"})
    );
    assert_eq!(
        r.json["plugins"]["Spaced"]["dropped_invalid_name"],
        json!(["list installed"])
    );
    let cfg = u.d.join("strict.json");
    let r = u.run(
        &["check"],
        &[
            ("UPM_CONFIG_PATH", cfg.to_str().unwrap()),
            ("PYTHONPATH", ""),
        ],
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(r.json["warnings"], json!([]), "{}", ctx(&r));
}

// ---------------------------------------------------------------- upm migrate

#[test]
fn migrate_writes_a_strict_config_that_check_passes_without_warnings() {
    let u = Upm::new();
    u.d.write("pkg/upm/plugins/pip.py", PIP_PY, false);
    let r = u.run(&["migrate", "--out", "../strict.json"], &[]);
    assert_eq!(r.code, 0, "{}", ctx(&r));
    let report = &r.json;
    let mock = &report["plugins"]["MockPlugin"];
    assert_eq!(mock["dropped_private"], json!(["__introspect__"]));
    assert_eq!(mock["dropped_not_found"], json!(["meta"]));
    assert_eq!(mock["python_path"], json!([u.pkg]));
    // The module's code ran in the sandbox, not on the host, and the run was audited.
    assert!(
        !u.marker().exists(),
        "migrate imported the module outside the sandbox"
    );
    let lines = u.audit();
    let introspections: Vec<_> = lines
        .iter()
        .filter(|l| l["method"] == "(upm migrate)")
        .collect();
    assert_eq!(introspections.len(), 4, "{lines:?}");
    assert!(introspections
        .iter()
        .any(|l| l["sandbox_requested"]["layers"]["landlock"]["state"] == "enforced"));

    let strict_path = u.d.join("strict.json");
    let strict: Value =
        serde_json::from_str(&std::fs::read_to_string(&strict_path).unwrap()).unwrap();
    assert_eq!(strict["require_schemas"], true);
    let p = &strict["plugins"]["MockPlugin"];
    assert_eq!(p["python_path"], json!([u.pkg]));
    assert!(p.get("allowed_methods").is_none());
    assert_eq!(p["manifest_sha256"].as_str().unwrap().len(), 64);
    let methods: Vec<&String> = p["methods"].as_object().unwrap().keys().collect();
    assert_eq!(methods, ["async_install", "info", "install", "version"]);

    // Signatures and type hints became schemas.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(u.d.join("schemas/PipPlugin.install.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        schema["properties"]["kwargs"]["properties"]["package_name"],
        json!({"type": "string"})
    );
    assert_eq!(
        schema["properties"]["kwargs"]["properties"]["verbose"],
        json!({"type": "boolean"})
    );
    let list: Value = serde_json::from_str(
        &std::fs::read_to_string(u.d.join("schemas/PipPlugin.list.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        list["properties"]["args"]["prefixItems"][0],
        json!({"enum": ["all", "outdated"]})
    );

    // upm check on it: no problem, no warning, and no PYTHONPATH needed any more.
    let cfg = strict_path.to_str().unwrap();
    let r = u.run(&["check"], &[("UPM_CONFIG_PATH", cfg), ("PYTHONPATH", "")]);
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(r.json["warnings"], json!([]), "{}", ctx(&r));
    assert_eq!(r.json["problems"], json!([]));

    // Calls through it: validated by the derived schema, from the pinned tree.
    let env = [("UPM_CONFIG_PATH", cfg), ("PYTHONPATH", "")];
    let r = u.run(
        &[
            "MockPlugin",
            "install",
            r#"{"args": ["x"], "kwargs": {"version": "1"}}"#,
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(r.json["data"]["result"]["version"], "1");
    assert!(r.json["data"].get("no_schema").is_none());
    assert_eq!(r.json["data"]["sandbox"]["python_path"]["from"], "config");
    let r = u.run(&["MockPlugin", "install", r#"{"args": [1]}"#], &env);
    assert_eq!(r.code, 10, "{}", ctx(&r));
    let r = u.run(&["MockPlugin", "install", "{}"], &env);
    assert_eq!(r.code, 10, "package_name is required: {}", ctx(&r));
    let r = u.run(&["PipPlugin", "list", r#"{"args": ["some"]}"#], &env);
    assert_eq!(r.code, 10, "{}", ctx(&r));
    let r = u.run(
        &["PipPlugin", "list", r#"{"kwargs": {"mode": "outdated"}}"#],
        &env,
    );
    assert_eq!(r.json["data"]["result"], json!(["outdated"]), "{}", ctx(&r));
    let r = u.run(&["MockPlugin", "__introspect__", "{}"], &env);
    says(
        &r,
        7,
        "Method '__introspect__' not allowed for plugin 'MockPlugin'",
    );
    // The pin holds.
    u.d.write(
        "pkg/upm/plugins/pip.py",
        &format!("{PIP_PY}\n# changed\n"),
        false,
    );
    let r = u.run(&["MockPlugin", "version", "{}"], &env);
    assert_eq!(r.code, 6, "{}", ctx(&r));
    assert_eq!(r.json["data"]["code"], "integrity_mismatch");

    // Nothing is overwritten.
    let r = u.run(&["migrate", "--out", "../strict.json"], &[]);
    assert_eq!(r.code, 5, "{}", ctx(&r));
    assert!(r.json["problems"].to_string().contains("exists already"));
}

/// UPM's flat layout: the module beside the config, `PYTHONPATH=.`. That tree holds the
/// config, the schemas migrate writes and the default audit log: pinned, every call
/// would be refused once they change, so it stays unpinned and the report says why.
#[test]
fn migrate_leaves_unpinned_a_python_path_that_holds_the_config() {
    let d = TestDir::new();
    d.write(
        "myplug.py",
        "class MyPlug:\n    def __init__(self, project_root=None, cache_dir=None, policy=None):\n        pass\n    def peek(self, word: str) -> str:\n        return word\n",
        false,
    );
    d.write(
        "upm_config.json",
        r#"{"plugins": {"MyPlug": {"module": "myplug", "allowed_methods": ["peek"]}}}"#,
        false,
    );
    let r = run_in(
        &d.path,
        &["migrate", "--out", "strict.json"],
        b"",
        &[("PYTHONPATH", ".")],
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    let report = &r.json["plugins"]["MyPlug"];
    assert!(
        report["not_pinned"]
            .as_str()
            .unwrap()
            .contains("holds this config"),
        "{report}"
    );
    let strict: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("strict.json")).unwrap()).unwrap();
    assert!(strict["plugins"]["MyPlug"].get("manifest_sha256").is_none());
    // Calls (each appending to the log beside the config) and check pass.
    for word in ["one", "two"] {
        let args = json!({ "args": [word] }).to_string();
        let r = run_in(
            &d.path,
            &["--config", "strict.json", "MyPlug", "peek", &args],
            b"",
            &[("PYTHONPATH", "")],
        );
        assert_eq!(r.code, 0, "{}", ctx(&r));
        assert_eq!(r.json["data"]["result"], word);
    }
    let r = run_in(&d.path, &["check", "--config", "strict.json"], b"", &[]);
    assert_eq!(r.code, 0, "{}", ctx(&r));
}

#[test]
fn migrate_writes_nothing_when_a_plugin_cannot_be_read() {
    let u = Upm::new();
    // No pip.py: PipPlugin cannot be imported.
    let r = u.run(&["migrate", "--out", "../strict.json"], &[]);
    assert_eq!(r.code, 6, "{}", ctx(&r));
    assert!(
        r.json["problems"]
            .to_string()
            .contains("Cannot import plugin module 'upm.plugins.pip'"),
        "{}",
        ctx(&r)
    );
    assert!(!u.d.join("strict.json").exists());
    assert!(!u.d.join("schemas").exists());
    // Elsewhere than beside the config: refused (its relative paths would change meaning).
    let r = u.run(&["migrate", "--out", "strict.json"], &[]);
    assert_eq!(r.code, 5, "{}", ctx(&r));
    assert!(r.json["problems"]
        .to_string()
        .contains("must be in the directory"));
}

/// Writes, through Python's `logging` as UPM's `configure_logging` set it up (a
/// `FileHandler` in append mode), what UPM's entrypoint left at `UPM_LOG_FILE`: lines
/// in the shape of its JSON formatter (`timestamp`, `level`, `user`, `operation`,
/// `message`, `logger`) and of its human-readable one. Returns the file's bytes.
fn write_upm_log(path: &Path) -> Vec<u8> {
    let script = r#"
import json, logging, sys, time
class Json(logging.Formatter):
    def format(self, r):
        return json.dumps({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.created)),
                           "level": r.levelname, "user": "svc", "operation": "UNKNOWN",
                           "message": r.getMessage(), "logger": r.name})
class Text(logging.Formatter):
    def format(self, r):
        return f"{time.strftime('%H:%M:%S')} - {r.levelname:<8} - {r.threadName:<10} - {r.getMessage()}"
log = logging.getLogger("upm.entrypoint")
log.setLevel(logging.DEBUG)
for fmt in (Json(), Text()):
    h = logging.FileHandler(sys.argv[1], mode="a")
    h.setFormatter(fmt)
    log.addHandler(h)
    log.info("Starting plugin execution, request_id=5f0c2a51-9a0e-4f5e-8d0b-3f1f0c9c6a11")
    log.error('{"success": false, "status": "error", "data": {"error": "Method \'x\' not allowed"}}')
    log.removeHandler(h)
    h.close()
"#;
    python3(script, &[path.to_str().unwrap()]);
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 4);
    bytes
}

/// Exit 11: the log refused the call's entry, saying `why`, so nothing ran.
fn refused_by_the_log(r: &Run, why: &str) {
    assert_eq!((r.code, r.code_word()), (11, "audit_error"), "{}", ctx(r));
    assert!(r.json["data"].get("result").is_none(), "{}", ctx(r));
    let error = r.json["data"]["error"].as_str().unwrap();
    assert!(error.contains("the plugin was not run"), "{}", ctx(r));
    assert!(error.contains(why), "{why:?}: {}", ctx(r));
}

/// The entries upm wrote after the adopted lines `old`.
fn entries_after(log: &Path, old: &[u8]) -> Vec<Value> {
    let bytes = std::fs::read(log).unwrap();
    assert!(
        bytes.starts_with(old),
        "the old lines are kept as they were"
    );
    String::from_utf8(bytes[old.len()..].to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The log UPM wrote at `UPM_LOG_FILE` is adopted on the first call: upm appends an
/// `adopted` entry recording the old lines' length and SHA-256 as the first link of its
/// chain, then audits as always. `verify` says so, and finds a changed byte in them.
#[test]
fn a_log_upm_wrote_is_adopted_and_its_lines_stay_tamper_evident() {
    let u = Upm::new();
    let old = write_upm_log(&u.log);
    let r = u.call("MockPlugin", "version", "{}");
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(r.result()["version"], "1.0.0");
    let adopted = &r.json["data"]["audit_adopted"];
    assert_eq!(adopted["bytes"], old.len(), "{}", ctx(&r));
    assert_eq!(adopted["adopted_by"], "UPM_LOG_FILE");
    let ours = entries_after(&u.log, &old);
    let events: Vec<&str> = ours.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["adopted", "started", "finished"]);
    let a = &ours[0];
    assert_eq!(
        (a["seq"].as_u64(), a["prev"].as_str()),
        (Some(1), Some(&"0".repeat(64)[..]))
    );
    assert_eq!(a["foreign_bytes"], old.len());
    assert_eq!(a["foreign_sha256"], hex::encode(Sha256::digest(&old)));
    assert_eq!(a["adopted_by"], "UPM_LOG_FILE");
    assert_eq!(a["request_id"], r.json["data"]["request_id"]);
    // The next call chains on; nothing is adopted again, and its result says nothing.
    let r = u.call("MockPlugin", "version", "{}");
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert!(r.json["data"].get("audit_adopted").is_none(), "{}", ctx(&r));
    assert_eq!(entries_after(&u.log, &old).len(), 5);

    let v = u.run(&["audit", "verify"], &[]);
    assert_eq!(v.code, 0, "{}", ctx(&v));
    assert!(v.stdout.starts_with("intact: 5 entries"), "{}", v.stdout);
    assert!(
        v.stdout
            .contains(&format!("lines 1-4: {} bytes upm did not write", old.len())),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("allowed by UPM_LOG_FILE"), "{}", v.stdout);
    // show lists upm's entries only, and says what it skipped.
    let s = u.run(&["audit", "show"], &[]);
    assert_eq!(s.code, 0, "{}", ctx(&s));
    assert_eq!(s.stdout.lines().count(), 5, "{}", s.stdout);
    assert!(
        !s.stdout.contains("Starting plugin execution"),
        "{}",
        s.stdout
    );
    assert!(
        s.stderr.contains("skipped 4 lines that are not entries"),
        "{}",
        s.stderr
    );

    // One byte of UPM's old lines changed: found.
    let mut bytes = std::fs::read(&u.log).unwrap();
    let at = bytes.windows(4).position(|w| w == b"INFO").unwrap();
    bytes[at] = b'W';
    std::fs::write(&u.log, &bytes).unwrap();
    let v = u.run(&["audit", "verify"], &[]);
    assert_eq!(v.code, 1, "{}", ctx(&v));
    assert!(v.stdout.contains("BROKEN"), "{}", v.stdout);
    assert!(
        v.stdout.contains("the adopted lines were altered"),
        "{}",
        v.stdout
    );
    // A line added in front of them: found too.
    let mut added = b"09:00:00 - INFO     - MainThread - nothing to see\n".to_vec();
    added.extend_from_slice(&old);
    added.extend_from_slice(&std::fs::read(&u.log).unwrap()[old.len()..]);
    std::fs::write(&u.log, &added).unwrap();
    let v = u.run(&["audit", "verify"], &[]);
    assert_eq!(v.code, 1, "{}", ctx(&v));
}

/// Lines that are not upm's after its entries are not a log to adopt: still refused
/// (exit 11, nothing runs), and the file is left as it was.
#[test]
fn lines_upm_did_not_write_after_its_entries_are_still_refused() {
    let u = Upm::new();
    let old = write_upm_log(&u.log);
    assert_eq!(u.call("MockPlugin", "version", "{}").code, 0);
    // UPM (or anything else) wrote to the log again after the switch.
    let more = write_upm_log(&u.d.join("more.log"));
    let mut bytes = std::fs::read(&u.log).unwrap();
    assert!(bytes.starts_with(&old));
    bytes.extend_from_slice(&more);
    std::fs::write(&u.log, &bytes).unwrap();
    let r = u.call("MockPlugin", "version", "{}");
    refused_by_the_log(&r, "lines after the last entry are not entries");
    assert_eq!(std::fs::read(&u.log).unwrap(), bytes);
    assert_eq!(u.run(&["audit", "verify"], &[]).code, 1);
}

/// Adoption is the UPM switch: it happens for the log `UPM_LOG_FILE` names, when that
/// holds UPM's logging output. A log the config names is adopted only when the config
/// says `"adopt_foreign": true`, and `false` refuses it even for `UPM_LOG_FILE`.
#[test]
fn only_upm_log_file_or_the_config_lets_a_foreign_log_be_adopted() {
    let with_audit = |audit: Value| {
        let mut c: Value = serde_json::from_str(UPM_CONFIG).unwrap();
        c["audit"] = audit;
        Upm::with_config(&c.to_string())
    };
    // Named by the config: refused, with the way out in the sentence.
    let u = with_audit(json!({"path": "cfg.log"}));
    let log = u.d.join("cfg.log");
    let old = write_upm_log(&log);
    let r = u.run(&["MockPlugin", "version", "{}"], &[("UPM_LOG_FILE", "")]);
    refused_by_the_log(&r, "adopt_foreign");
    assert_eq!(std::fs::read(&log).unwrap(), old);
    // The config allows it.
    let u = with_audit(json!({"path": "cfg.log", "adopt_foreign": true}));
    let log = u.d.join("cfg.log");
    let old = write_upm_log(&log);
    let r = u.run(&["MockPlugin", "version", "{}"], &[("UPM_LOG_FILE", "")]);
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(
        entries_after(&log, &old)[0]["adopted_by"],
        "audit.adopt_foreign"
    );
    // UPM_LOG_FILE naming a file UPM's logging did not write (a shell's profile, say):
    // not adopted, not touched.
    let u = Upm::new();
    let profile = "export PATH=/usr/bin:/bin\nalias ll='ls -l'\n";
    std::fs::write(&u.log, profile).unwrap();
    let r = u.call("MockPlugin", "version", "{}");
    refused_by_the_log(&r, "not UPM's logging output");
    assert_eq!(std::fs::read_to_string(&u.log).unwrap(), profile);
    // The config forbids it, UPM_LOG_FILE or not.
    let u = with_audit(json!({"adopt_foreign": false}));
    let old = write_upm_log(&u.log);
    let r = u.call("MockPlugin", "version", "{}");
    refused_by_the_log(&r, "UPM_LOG_FILE");
    assert_eq!(std::fs::read(&u.log).unwrap(), old);
}

/// The first calls after the switch, started together: the log's lock makes exactly
/// one of them adopt the old lines, and every call is audited on one intact chain.
#[test]
fn first_calls_racing_adopt_the_old_log_once() {
    let u = Upm::new();
    let old = write_upm_log(&u.log);
    let n = 6;
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| u.call("MockPlugin", "version", "{}")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &runs {
        assert_eq!(r.code, 0, "{}", ctx(r));
    }
    let adopters = runs
        .iter()
        .filter(|r| r.json["data"].get("audit_adopted").is_some())
        .count();
    assert_eq!(adopters, 1, "exactly one call adopted the old lines");
    let ours = entries_after(&u.log, &old);
    let adopted: Vec<&Value> = ours.iter().filter(|e| e["event"] == "adopted").collect();
    assert_eq!(adopted.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["event"], "adopted");
    assert_eq!(ours.len(), 1 + 2 * n);
    let v = u.run(&["audit", "verify"], &[]);
    assert_eq!(v.code, 0, "{}", ctx(&v));
    assert!(
        v.stdout
            .starts_with(&format!("intact: {} entries", 1 + 2 * n)),
        "{}",
        v.stdout
    );
}
