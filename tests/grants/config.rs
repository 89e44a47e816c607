//! Configs that ask for grants they cannot have are refused whole (exit 5), before any call.

use super::*;

/// `upm check` and a call both refuse the config, each naming `needle`.
fn assert_config_refused(fx: &Fx, needle: &str) {
    let mut check = Command::new(common::upm_bin());
    check.args(["check", "--config", fx.config.to_str().unwrap()]);
    let r = run_command(check, b"");
    assert_eq!(r.code, 5, "upm check: {}", ctx(&r));
    let problems = r.json["problems"].to_string();
    assert!(problems.contains(needle), "{needle:?} not in {problems}");
    let run = fx.call(json!({ "read": fx.join("roots/proj/a.txt") }));
    assert_eq!(run.code, 5, "{}", ctx(&run));
    assert_eq!(run.code_word(), "config_error");
    assert!(
        run.json["data"]["details"]["problems"]
            .to_string()
            .contains(needle),
        "{}",
        ctx(&run)
    );
}

fn without(c: TestConfig, key: &str) -> TestConfig {
    let mut v = c.value();
    v["plugins"]["G"].as_object_mut().unwrap().remove(key);
    TestConfig::new().merge(v)
}

#[test]
fn a_schema_that_asks_for_grants_without_grants_within_fails_closed() {
    let Some(fx) = Fx::with(Who::Root, |c, _| without(c, "grants_within")) else {
        return;
    };
    assert_config_refused(&fx, "no \\\"grants_within\\\"");
}

#[test]
fn grants_within_must_name_existing_directories_clear_of_workdir_root() {
    for (roots, needle) in [
        (json!([]), "\\\"grants_within\\\" is empty"),
        (json!(["nowhere"]), "No such file or directory"),
        (json!(["roots/proj/a.txt"]), "is not a directory"),
        (json!(["roots/../outside"]), "holds \\\"..\\\""),
        // Every call's private directory is under /tmp: no root may hold it.
        (json!(["/tmp"]), "contains \\\"workdir_root\\\""),
        // upm's own files: the config and the audit log beside it.
        (json!(["."]), "contains the config"),
        (json!(["."]), "contains the audit log"),
    ] {
        let Some(fx) = Fx::with(Who::Root, |c, _| {
            let mut v = c.value();
            v["plugins"]["G"]["grants_within"] = roots.clone();
            TestConfig::new().merge(v)
        }) else {
            return;
        };
        assert_config_refused(&fx, needle);
    }
}

/// A write grant of what decides, records or runs a later call would let one call
/// change them: upm and its egress helper (which run outside the sandbox), any plugin's
/// executable, interpreter or Python tree, schemas, seccomp profiles, the trusted keys.
#[test]
fn grants_within_may_not_reach_what_runs_or_rules_later_calls() {
    let upm_dir = common::upm_bin().parent().unwrap().to_path_buf();
    for (roots, needle) in [
        (json!([upm_dir]), "contains upm's own executable"),
        (json!(["plugins"]), "contains plugin \\\"G\\\"'s executable"),
        (json!(["schemas"]), "contains the schema of G.probe"),
        (
            json!(["policies"]),
            "contains plugin \\\"S\\\"'s seccomp profile",
        ),
        (json!(["py"]), "contains plugin \\\"P\\\"'s python_path"),
        (
            json!(["py/pkg/data"]),
            "lies inside plugin \\\"P\\\"'s python_path",
        ),
        (json!(["keys"]), "contains the trusted keys directory"),
        // A virtualenv's bin/python leads out of it (to /usr/bin): the venv is guarded
        // as itself, and the interpreter as named.
        (json!(["venv"]), "contains plugin \\\"V\\\"'s virtualenv"),
        (
            json!(["venv/bin"]),
            "contains plugin \\\"V\\\"'s interpreter",
        ),
        // A file a schema's $ref reaches.
        (json!(["schemas/defs"]), "which the schema"),
        // Files a command names (whole, or after `--option=`), and read_paths.
        (
            json!(["tools"]),
            "contains a file plugin \\\"A\\\"'s command names",
        ),
        (
            json!(["tools2"]),
            "contains a file plugin \\\"A\\\"'s command names",
        ),
        (
            json!(["data"]),
            "contains plugin \\\"D\\\"'s read_paths entry",
        ),
        (
            json!(["data/ref/in"]),
            "lies inside plugin \\\"D\\\"'s read_paths entry",
        ),
    ] {
        let Some(fx) = Fx::with(Who::Root, |c, dir| {
            std::fs::create_dir_all(dir.join("venv/bin")).unwrap();
            std::fs::write(dir.join("venv/pyvenv.cfg"), "home = /usr/bin\n").unwrap();
            std::os::unix::fs::symlink("/usr/bin/python3", dir.join("venv/bin/python")).unwrap();
            std::fs::create_dir_all(dir.join("schemas/defs")).unwrap();
            std::fs::write(dir.join("schemas/defs/x.json"), r#"{"type": "object"}"#).unwrap();
            std::fs::write(dir.join("schemas/r.json"), r#"{"$ref": "defs/x.json"}"#).unwrap();
            std::fs::create_dir_all(dir.join("py/pkg/data")).unwrap();
            std::fs::create_dir_all(dir.join("keys")).unwrap();
            std::fs::create_dir_all(dir.join("policies")).unwrap();
            std::fs::write(dir.join("schemas/plain.json"), r#"{"type": "object"}"#).unwrap();
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.json"),
                dir.join("policies/s.json"),
            )
            .unwrap();
            let mut v = c.value();
            v["plugins"]["G"]["grants_within"] = roots.clone();
            v["plugins"]["P"] = json!({"module": "m", "python_path": ["py"],
                                       "methods": {"m": {"schema": "schemas/plain.json"}}});
            v["plugins"]["S"] = json!({"command": ["/bin/true"],
                                       "sandbox": {"seccomp": "policies/s.json"},
                                       "methods": {"m": {"schema": "schemas/plain.json"}}});
            v["trust"] = json!({"keys_dir": "keys"});
            v["plugins"]["V"] = json!({"module": "m", "python_path": ["py"], "python": "venv/bin/python",
                                       "methods": {"m": {"schema": "schemas/plain.json"}}});
            v["plugins"]["R"] = json!({"command": ["/bin/true"],
                                       "methods": {"m": {"schema": "schemas/r.json"}}});
            std::fs::create_dir_all(dir.join("tools")).unwrap();
            std::fs::create_dir_all(dir.join("tools2")).unwrap();
            std::fs::write(dir.join("tools/tool.py"), "").unwrap();
            std::fs::write(dir.join("tools2/conf"), "").unwrap();
            let named = |rel: &str| dir.join(rel).to_str().unwrap().to_owned();
            v["plugins"]["A"] = json!({"command": ["/usr/bin/python3", named("tools/tool.py"),
                                                   format!("--conf={}", named("tools2/conf"))],
                                       "methods": {"m": {"schema": "schemas/plain.json"}}});
            std::fs::create_dir_all(dir.join("data/ref/in")).unwrap();
            v["plugins"]["D"] = json!({"command": ["/bin/true"],
                                       "sandbox": {"read_paths": ["data/ref"]},
                                       "methods": {"m": {"schema": "schemas/plain.json"}}});
            TestConfig::new().merge(v)
        }) else {
            return;
        };
        assert_config_refused(&fx, needle);
    }
}

#[test]
fn a_grant_mark_upm_cannot_honour_is_a_config_error() {
    for (schema, needle) in [
        (
            json!({ "type": "object", "anyOf": [ { "properties": { "p": { "type": "string", "x-upm-grant": "read" } } } ] }),
            "is not on a property",
        ),
        (
            json!({ "type": "object", "properties": { "p": { "type": "array", "items": { "type": "string", "x-upm-grant": "write" } } } }),
            "is not on a property",
        ),
        (
            json!({ "type": "object", "properties": { "p": { "type": "string", "x-upm-grant": "execute" } } }),
            "must be \\\"read\\\" or \\\"write\\\"",
        ),
        (
            json!({ "type": "object", "properties": { "p": { "x-upm-grant": "read" } } }),
            "must say \\\"type\\\": \\\"string\\\"",
        ),
    ] {
        let Some(fx) = Fx::new(Who::Root) else { return };
        fx.dir
            .write("schemas/probe.json", &schema.to_string(), false);
        assert_config_refused(&fx, needle);
    }
}

/// A result grants nothing: an output_schema that marks a property is refused, even
/// with `grants_within`.
#[test]
fn a_grant_mark_in_an_output_schema_is_a_config_error() {
    let Some(fx) = Fx::with(Who::Root, |c, dir| {
        std::fs::write(
            dir.join("schemas/out.json"),
            json!({ "type": "object", "properties": { "p": { "type": "string", "x-upm-grant": "read" } } })
                .to_string(),
        )
        .unwrap();
        let mut v = c.value();
        v["plugins"]["G"]["methods"]["probe"]["output_schema"] = json!("schemas/out.json");
        TestConfig::new().merge(v)
    }) else {
        return;
    };
    assert_config_refused(&fx, "(output_schema): it marks /p with \\\"x-upm-grant\\\"");
}

/// The caller's environment: a keys directory it names under a grant root is refused
/// like the config's own (it is the one the calls trust), and a PYTHONPATH under a root
/// refuses nothing (the caller's environment does not make a config invalid).
#[test]
fn the_callers_keys_directory_is_guarded_and_its_pythonpath_breaks_nothing() {
    let Some(fx) = Fx::with(Who::Root, |c, dir| {
        std::fs::write(dir.join("schemas/plain.json"), r#"{"type": "object"}"#).unwrap();
        let mut v = c.value();
        v["plugins"]["U"] = json!({"module": "m", "allowed_methods": ["m"]});
        TestConfig::new().merge(v)
    }) else {
        return;
    };
    let keys = fx.join("roots/proj/keys");
    mkdir(&keys, 0o755);
    let mut check = Command::new(common::upm_bin());
    check
        .args(["check", "--config", fx.config.to_str().unwrap()])
        .env("UPM_TRUSTED_KEYS_DIR", &keys);
    let r = run_command(check, b"");
    assert_eq!(r.code, 5, "{}", ctx(&r));
    assert!(
        r.json["problems"]
            .to_string()
            .contains("contains the trusted keys directory (UPM_TRUSTED_KEYS_DIR)"),
        "{}",
        ctx(&r)
    );
    let mut cmd = fx.upm();
    cmd.env("PYTHONPATH", fx.join("roots"));
    let run = run_command(
        cmd,
        &request("G", "probe", json!({ "read": fx.join("roots/proj/a.txt") })),
    );
    assert_eq!(run.code, 0, "{}", ctx(&run));
}
