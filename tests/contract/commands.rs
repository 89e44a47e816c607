//! The operator's commands: list, check, help, version, usage errors.

use super::*;

#[test]
fn list_prints_plugins_methods_and_schemas() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    d.write("py/probe.py", PROBE_PY, false);
    let c_s = c.to_str().unwrap().to_owned();
    let mut conf: Value = serde_json::from_str(&std::fs::read_to_string(&c).unwrap()).unwrap();
    conf["plugins"]["Probe"] =
        json!({"module": "probe", "python_path": ["py"], "allowed_methods": ["echo"]});
    d.config(&conf);

    let r = run_with(&["list", "--config", &c_s], b"", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let plugins = &r.json["plugins"];
    assert_eq!(plugins["TextTools"]["kind"], "command");
    assert_eq!(plugins["Probe"]["kind"], "python_class");
    let text_schema: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("schemas/text.json")).unwrap())
            .unwrap();
    let methods = plugins["TextTools"]["methods"].as_object().unwrap();
    let names: Vec<&String> = methods.keys().collect();
    assert_eq!(names, ["noop", "reverse", "upper", "wordcount"]);
    assert_eq!(methods["upper"]["schema"], text_schema);
    assert_eq!(plugins["Probe"]["methods"]["echo"]["schema"], Value::Null);
    assert_eq!(plugins["TextTools"]["network"], false);

    let r = run_with(
        &["list", "--config", d.join("nope.json").to_str().unwrap()],
        b"",
        &[],
    );
    assert_eq!(r.code, 5);
    assert_eq!(r.json["code"], "config_error");
}

/// A config like the example, but with this build's texttools and copies of the plugins.
/// `upm list` shows each method's description, and each schema as one document that
/// stands alone: the files its `$ref`s reach are bundled into it, every reference a
/// pointer inside it.
#[test]
fn list_shows_descriptions_and_schemas_that_stand_alone() {
    let d = setup();
    let c = cfg(
        &d,
        json!({ "plugins": { "Greeter": {
            "module": "greeter", "python_path": ["py"],
            "methods": {
                "greet": { "schema": "schemas/greeter_greet.json", "description": "Greets someone by name." },
                "plain": { "schema": "schemas/text.json" }
            }
        }}}),
    );
    d.write("py/greeter.py", "class Greeter:\n    pass\n", false);
    let r = run_with(&["list", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let methods = &r.json["plugins"]["Greeter"]["methods"];
    assert_eq!(methods["greet"]["description"], "Greets someone by name.");
    assert_eq!(methods["plain"]["description"], Value::Null);
    let schema = &methods["greet"]["schema"];
    // On disk, the schema refers to defs/name.json; listed, it holds it.
    assert_eq!(
        schema["properties"]["args"]["prefixItems"][0]["$ref"],
        "#/$defs/name"
    );
    let name: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("schemas/defs/name.json")).unwrap())
            .unwrap();
    let mut inner = name.clone();
    inner.as_object_mut().unwrap().remove("$schema");
    assert_eq!(schema["$defs"]["name"], inner);
    assert!(!schema.to_string().contains("name.json"), "{schema}");
    // A description that is not a string is a config error like any other.
    let c = cfg(
        &d,
        json!({ "plugins": { "T": { "command": ["/bin/true"], "methods": { "m": { "description": 3 } } } } }),
    );
    let r = run_with(&["list", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 5, "{}", r.stdout);
}

fn example_like(d: &TestDir) -> PathBuf {
    d.write(
        "plugins/echo.sh",
        &std::fs::read_to_string(repo().join("plugins/echo.sh")).unwrap(),
        true,
    );
    d.write(
        "plugins/python/greeter.py",
        &std::fs::read_to_string(repo().join("plugins/python/greeter.py")).unwrap(),
        false,
    );
    let mut conf: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("upm_config.json")).unwrap())
            .unwrap();
    conf["plugins"]["TextTools"]["command"] = json!([texttools_bin()]);
    d.config(&conf)
}

#[test]
fn check_passes_on_a_good_config_and_lists_every_problem_of_a_bad_one() {
    let d = setup();
    let c = example_like(&d);
    let r = run_with(&["check", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["ok"], true);
    assert_eq!(r.json["problems"], json!([]));
    for p in ["TextTools", "Echo", "Greeter"] {
        assert_eq!(r.json["plugins"][p]["ok"], true, "{p}");
    }
    // The same config works for calls.
    let r = call(&c, "TextTools", "upper", json!({"text": "ok"}));
    assert_eq!(ok(&r), &json!({"text": "OK"}));
    let r = call(&c, "Echo", "echo", json!({"a": 1}));
    assert_eq!(ok(&r)["args"], json!({"a": 1}));

    assert!(!r.stdout.contains("names no plugins"), "{}", r.stdout);
    // No plugins is a valid deny-all config, and check says what it means.
    let empty = TestDir::new();
    empty.config(&json!({ "plugins": {} }));
    let cfg = empty.join("upm_config.json");
    let r = run_with(&["check", "--config", cfg.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(
        r.json["warnings"],
        json!(["the config names no plugins: every call is refused"])
    );

    // Loadable, but broken in four independent ways, and a module check can only warn
    // about (the interpreter's own site-packages may hold it).
    let b = TestDir::new();
    let not_exec = b.write("plugins/not_exec.sh", "#!/bin/sh\n", false);
    b.write("py/.keep", "", false);
    b.config(&json!({
        "require_schemas": false,
        "plugins": {
            "Gone": { "command": [b.join("plugins/gone.sh")], "allowed_methods": ["go"] },
            "NotExec": { "command": [not_exec], "allowed_methods": ["go"] },
            "NoModule": { "module": "nosuchmod", "python_path": ["py"], "allowed_methods": ["go"] },
            "BadSchema": { "command": ["/bin/true"], "methods": { "go": { "schema": "schemas/nope.json" } } },
            "BadSeccomp": { "command": ["/bin/true"], "allowed_methods": ["go"],
                            "sandbox": { "seccomp": "policies/nope.json" } }
        }
    }));
    let r = run_with(
        &[
            "check",
            "--config",
            b.join("upm_config.json").to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 5, "{}", r.stdout);
    assert_eq!(r.json["ok"], false);
    let problems: Vec<&str> = r.json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for needle in [
        "plugin \"Gone\": plugin file",
        "plugin \"NotExec\": command",
        "plugin \"BadSchema\", method \"go\"",
        "plugin \"BadSeccomp\": seccomp profile",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing {needle:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(
        r.json["warnings"]
            .to_string()
            .contains("plugin \\\"NoModule\\\": module \\\"nosuchmod\\\" is not found"),
        "{}",
        r.stdout
    );
    assert_eq!(r.json["plugins"]["Gone"]["ok"], false);
    for p in &problems {
        assert!(r.stderr.contains(p), "problems also on stderr: {p}");
    }

    // Not loadable at all: every load problem listed.
    b.config(&json!({"plugins": {"x/y": {"command": []}}, "typo": 1}));
    let r = run_with(
        &[
            "check",
            "--config",
            b.join("upm_config.json").to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 5);
    assert_eq!(r.json["code"], "config_error");
    assert!(
        r.json["problems"].as_array().unwrap().len() >= 2,
        "{}",
        r.stdout
    );
}

#[test]
fn check_on_the_repository_example_config() {
    let example = repo().join("upm_config.json");
    let r = run_with(&["check", "--config", example.to_str().unwrap()], b"", &[]);
    if repo()
        .join("target/x86_64-unknown-linux-gnu/release/upm-texttools")
        .exists()
    {
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        assert_eq!(r.json["ok"], true);
    } else {
        // Only the unbuilt release binary is missing.
        assert_eq!(r.code, 5, "{}", r.stdout);
        let problems = r.json["problems"].as_array().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0]
            .as_str()
            .unwrap()
            .contains("target/x86_64-unknown-linux-gnu/release/upm-texttools"));
        assert_eq!(r.json["plugins"]["Greeter"]["ok"], true);
        assert_eq!(r.json["plugins"]["Echo"]["ok"], true);
    }
}

#[test]
fn help_and_version() {
    let r = run_with(&["--help"], b"", &[]);
    assert_eq!(r.code, 0);
    for word in [
        "run",
        "list",
        "check",
        "doctor",
        "--config",
        "<plugin> <method> <json_args>",
    ] {
        assert!(
            r.stdout.contains(word),
            "--help lacks {word:?}:\n{}",
            r.stdout
        );
    }
    let r = run_with(&["run", "--help"], b"", &[]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("stdin"), "{}", r.stdout);
    assert!(r.stdout.contains("--config"), "{}", r.stdout);
    let r = run_with(&["--version"], b"", &[]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.stdout.trim(),
        format!("upm {}", env!("CARGO_PKG_VERSION"))
    );
    // An unknown flag is a usage error (clap's, on stderr).
    let r = run_with(&["run", "--frobnicate"], b"", &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--frobnicate"), "{}", r.stderr);
}

/// Every option and argument of every command says what it is; the usage lines show
/// `--config` as optional; `audit --help` describes the subcommands it has.
#[test]
fn every_option_has_help_and_config_is_optional() {
    let r = run_with(&["--help"], b"", &[]);
    assert!(
        r.stdout.contains("Usage: upm [--config PATH] <COMMAND>"),
        "{}",
        r.stdout
    );
    for cmd in [
        &["run"][..],
        &["list"],
        &["check"],
        &["doctor"],
        &["keygen"],
        &["sign"],
        &["audit"],
        &["audit", "verify"],
        &["audit", "show"],
        &["audit", "keygen"],
    ] {
        let mut argv = cmd.to_vec();
        argv.push("-h");
        let r = run_with(&argv, b"", &[]);
        assert_eq!(r.code, 0, "{cmd:?}");
        // The short help puts each option on one line, its help after two spaces.
        for line in r
            .stdout
            .lines()
            .skip_while(|l| !l.ends_with(':') || l.starts_with("Usage"))
        {
            let t = line.trim();
            if t.starts_with('-') || t.starts_with('[') || t.starts_with('<') {
                assert!(
                    t.contains("  "),
                    "{cmd:?}: {t:?} has no help:\n{}",
                    r.stdout
                );
            }
        }
        if ["run", "list", "check", "sign"].contains(&cmd[0])
            || cmd.len() == 2 && cmd[1] != "keygen"
        {
            assert!(
                r.stdout.contains("[--config PATH]"),
                "{cmd:?}: {}",
                r.stdout
            );
        }
    }
    let r = run_with(&["audit", "--help"], b"", &[]);
    let about = r.stdout.lines().next().unwrap();
    assert!(
        !about.contains("sign"),
        "audit has no sign subcommand: {about}"
    );
    for word in ["Verify", "query", "key pair"] {
        assert!(about.contains(word), "{word}: {about}");
    }
}

/// A usage error gives the JSON a caller expects where it expects one: `run` a call's
/// result (audited), `list` and `check` their document; and one `upm:` line on stderr.
#[test]
fn usage_errors_are_json_where_a_result_is_expected() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let c = c.to_str().unwrap();
    for argv in [
        vec!["run", "--config", c, "--frobnicate"],
        vec!["--config", c, "run", "--parallel", "2"],
        vec!["run", "--jsonl", "--parallel", "999", "--config", c],
    ] {
        let r = run_with(&argv, b"", &[]);
        let data = err(&r, 2, "usage");
        let msg = data["error"].as_str().unwrap();
        assert!(
            msg.starts_with("usage: ") && msg.contains("upm run --help"),
            "{msg}"
        );
        assert_eq!(r.stderr.trim(), format!("upm: {msg}"), "{argv:?}");
        let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
        assert_eq!(lines.len(), 1, "{argv:?}: audited in the config's log");
        assert_eq!(
            (&lines[0]["event"], &lines[0]["code"]),
            (&json!("refused"), &json!("usage"))
        );
    }
    for cmd in ["list", "check"] {
        let r = run_with(&[cmd, "--config", c, "--frobnicate"], b"", &[]);
        assert_eq!(r.code, 2);
        assert_eq!(
            (&r.json["ok"], &r.json["code"]),
            (&json!(false), &json!("usage")),
            "{}",
            r.stdout
        );
        assert!(r.stderr.starts_with("upm: usage: "), "{}", r.stderr);
    }
    // Where no JSON is expected, clap's own text.
    let r = run_with(&["doctor", "--frobnicate"], b"", &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stdout.is_empty() && r.stderr.contains("--frobnicate"),
        "{r:?}"
    );
}

/// A mistyped subcommand that is not a plugin gets a suggestion; a plugin of that
/// name does not.
#[test]
fn a_mistyped_subcommand_gets_did_you_mean() {
    let d = setup();
    let c = tt_cfg(&d, json!({ "lsit": cmd("/bin/true", &["m"]) }));
    let r = run_with(&["lsit"], b"", &[]);
    let data = err(&r, 2, "usage");
    assert!(
        data["error"]
            .as_str()
            .unwrap()
            .contains("did you mean `upm list`?"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("did you mean `upm list`?"),
        "{}",
        r.stderr
    );
    let r = run_with(&["--config", c.to_str().unwrap(), "chekc"], b"", &[]);
    assert!(
        error_text(&r).contains("did you mean `upm check`?"),
        "{}",
        r.stdout
    );
    // "lsit" is a plugin there: only the usage.
    let r = run_argv(&c, &["lsit"]);
    err(&r, 2, "usage");
    assert!(!error_text(&r).contains("did you mean"), "{}", r.stdout);
}

/// A reader gone before upm writes (stdout a pipe with no reader) is an EPIPE upm
/// answers with an exit code, never SIGPIPE killing it: upm sets SIGPIPE to be ignored
/// itself (`cli::main`), since its entry is not Rust's own.
#[test]
fn a_reader_gone_is_an_error_not_a_sigpipe_death() {
    use std::os::unix::process::ExitStatusExt;
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    for argv in [
        vec!["--version".to_owned()],
        vec![
            "run".to_owned(),
            "--config".to_owned(),
            c.display().to_string(),
        ],
    ] {
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        drop(read_end);
        let mut child = Command::new(upm_bin())
            .args(&argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(br#"{"plugin":"TextTools","method":"noop","args":{}}"#);
        drop(stdin);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), None, "{argv:?}: {status:?}");
        assert!(status.code().is_some(), "{argv:?}: {status:?}");
    }
}
