//! UPM's `project_root`: a Python class method whose schema marks it gets it granted,
//! and `upm migrate` marks it when the plugin sets `grants_within`.

use super::*;

const BASE_PY: &str = r#"
class EcosystemPlugin:
    def __init__(self, project_root, cache_dir, policy, fernet_lib=None):
        self.project_root = project_root
        self.cache_dir = cache_dir
"#;

const TOOL_PY: &str = r#"
import os
from upm.plugins.base import EcosystemPlugin


class ToolPlugin(EcosystemPlugin):
    def install(self, package_name: str) -> dict:
        try:
            with open(os.path.join(self.project_root, "installed.txt"), "w") as f:
                f.write(package_name)
            return {"installed": package_name, "into": self.project_root}
        except OSError as e:
            return {"denied": e.errno, "into": self.project_root}
"#;

/// UPM's args, with `project_root` granted for writing.
const INSTALL_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "args": { "type": "array", "prefixItems": [ { "type": "string" } ], "items": false },
    "kwargs": { "type": "object", "additionalProperties": false },
    "project_root": { "type": ["string", "null"], "x-upm-grant": "write" },
    "cache_dir": { "type": ["string", "null"] }
  },
  "additionalProperties": false
}"#;

struct Upm {
    d: TestDir,
    projects: PathBuf,
}

impl Upm {
    fn new(config: Value) -> Upm {
        let d = TestDir::new();
        d.write("pkg/upm/__init__.py", "", false);
        d.write("pkg/upm/plugins/__init__.py", "", false);
        d.write("pkg/upm/plugins/base.py", BASE_PY, false);
        d.write("pkg/upm/plugins/tool.py", TOOL_PY, false);
        d.write("schemas/install.json", INSTALL_SCHEMA, false);
        let projects = d.join("projects");
        mkdir(&projects.join("p1"), 0o777);
        chmod(&projects, 0o755);
        mkdir(&d.join("elsewhere"), 0o777);
        d.config(&config);
        Upm { d, projects }
    }

    /// The argv form, as UPM's callers run it.
    fn argv(&self, config: &str, args: Value, env: &[(&str, &str)]) -> Run {
        let cfg = self.d.join(config);
        let mut env = env.to_vec();
        let cfg = cfg.to_str().unwrap();
        env.push(("UPM_CONFIG_PATH", cfg));
        common::run_with(&["ToolPlugin", "install", &args.to_string()], b"", &env)
    }
}

#[test]
fn a_upm_calls_project_root_is_granted_when_its_schema_marks_it() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    let u = Upm::new(json!({
        "plugins": { "ToolPlugin": {
            "module": "upm.plugins.tool", "python_path": ["pkg"],
            "methods": { "install": { "schema": "schemas/install.json" } },
            "grants_within": ["projects"]
        }}
    }));
    let p1 = u.projects.join("p1");
    let r = u.argv(
        "upm_config.json",
        json!({ "args": ["requests"], "project_root": p1 }),
        &[],
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(r.result()["installed"], "requests", "{}", ctx(&r));
    assert_eq!(
        std::fs::read_to_string(p1.join("installed.txt")).unwrap(),
        "requests"
    );
    assert_eq!(
        r.json["data"]["sandbox"]["grants"],
        json!([{ "argument": "/project_root", "path": p1, "access": "write",
                 "root": u.projects, "kind": "directory" }])
    );
    // Outside the roots: refused before the class is even imported.
    let elsewhere = u.d.join("elsewhere");
    let r = u.argv(
        "upm_config.json",
        json!({ "args": ["x"], "project_root": elsewhere }),
        &[],
    );
    assert_eq!(r.code, 10, "{}", ctx(&r));
    assert!(r.json["data"]["error"]
        .as_str()
        .unwrap()
        .contains("/project_root"));
    assert!(!elsewhere.join("installed.txt").exists());
    // No project_root: UPM's default (the caller's working directory) is a string only.
    let r = u.argv("upm_config.json", json!({ "args": ["x"] }), &[]);
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert!(r.result()["denied"].is_number(), "{}", ctx(&r));
    assert!(r.json["data"]["sandbox"].get("grants").is_none());
}

#[test]
fn migrate_marks_project_root_when_the_plugin_sets_grants_within() {
    if !is_root() {
        eprintln!("SKIPPED: needs root");
        return;
    }
    // A UPM config (no schemas, PYTHONPATH) with upm's grants_within added.
    let u = Upm::new(json!({
        "plugins": { "ToolPlugin": {
            "module": "upm.plugins.tool", "allowed_methods": ["install"],
            "grants_within": ["projects"]
        }}
    }));
    let pythonpath = u.d.join("pkg");
    let pythonpath = pythonpath.to_str().unwrap();
    // The drop-in, schema-less, grants nothing: project_root is a string.
    let p1 = u.projects.join("p1");
    let r = u.argv(
        "upm_config.json",
        json!({ "args": ["x"], "project_root": p1 }),
        &[("PYTHONPATH", pythonpath)],
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert!(r.result()["denied"].is_number(), "{}", ctx(&r));

    let cfg = u.d.join("upm_config.json");
    let r = common::run_with(
        &[
            "migrate",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            u.d.join("strict.json").to_str().unwrap(),
        ],
        b"",
        &[("PYTHONPATH", pythonpath)],
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert!(
        r.json["plugins"]["ToolPlugin"]["project_root"]
            .as_str()
            .unwrap()
            .contains("\"write\""),
        "{}",
        ctx(&r)
    );
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(u.d.join("schemas/ToolPlugin.install.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        schema["properties"]["project_root"],
        json!({ "type": ["string", "null"], "x-upm-grant": "write" })
    );
    let strict: Value =
        serde_json::from_str(&std::fs::read_to_string(u.d.join("strict.json")).unwrap()).unwrap();
    assert_eq!(
        strict["plugins"]["ToolPlugin"]["grants_within"],
        json!(["projects"])
    );
    // upm check on it passes, without warnings, and lists the grant.
    let mut check = Command::new(common::upm_bin());
    check.args([
        "check",
        "--config",
        u.d.join("strict.json").to_str().unwrap(),
    ]);
    let c = run_command(check, b"");
    assert_eq!(c.code, 0, "{}", ctx(&c));
    assert_eq!(c.json["warnings"], json!([]), "{}", ctx(&c));
    assert_eq!(
        c.json["plugins"]["ToolPlugin"]["grants"]["arguments"]["install"],
        json!([{ "argument": "/project_root", "access": "write" }])
    );
    // Through the migrated config, the call's project_root is the plugin's to write.
    let r = u.argv(
        "strict.json",
        json!({ "args": ["pkg-a"], "project_root": p1 }),
        &[("PYTHONPATH", "")],
    );
    assert_eq!(r.code, 0, "{}", ctx(&r));
    assert_eq!(
        std::fs::read_to_string(p1.join("installed.txt")).unwrap(),
        "pkg-a"
    );
}
