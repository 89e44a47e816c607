//! Exit 5: a config that is missing, unreadable or invalid, every problem listed; what its paths mean.

use super::*;

#[test]
fn missing_unreadable_and_non_json_configs_are_config_errors() {
    let d = setup();
    let req = request("TextTools", "upper", json!({"text": "x"}));

    let missing = d.join("nope.json");
    let r = run_stdin(&missing, &req);
    err(&r, 5, "config_error");
    let problems = config_problems(&r);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("does not exist"), "{problems:?}");
    assert!(problems[0].contains("nope.json"), "{problems:?}");
    // Audited beside where the config should have been.
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["code"], "config_error");

    // In a directory that does not exist, even the refusal cannot be audited (its log
    // would be beside it): the caller is told so, and nothing else is done.
    let r = run_stdin(&d.join("nodir/upm_config.json"), &req);
    err(&r, 11, "audit_error");
    assert!(
        error_text(&r).starts_with("Logging configuration failed: ")
            && error_text(&r).contains("nodir/entrypoint.log"),
        "{}",
        r.stdout
    );

    // A directory is not a config, not even for root.
    std::fs::create_dir(d.join("dir.json")).unwrap();
    let r = run_stdin(&d.join("dir.json"), &req);
    err(&r, 5, "config_error");
    assert!(
        config_problems(&r)[0].contains("not a regular file"),
        "{}",
        r.stdout
    );
    // Nor a FIFO, which upm once waited on forever (a watchdog fails the test instead).
    let fifo = d.join("fifo.json");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut child = start_call(&fifo, &req);
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("upm waited on a FIFO config");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Nor 5 MB of anything.
    let big = d.write("big.json", &" ".repeat(5 << 20), false);
    let r = run_stdin(&big, &req);
    err(&r, 5, "config_error");
    assert!(
        config_problems(&r)[0].contains("larger than 4194304 bytes"),
        "{}",
        r.stdout
    );

    let p = d.write("broken.json", "{ \"plugins\": ", false);
    let r = run_stdin(&p, &req);
    err(&r, 5, "config_error");
    assert!(
        config_problems(&r)[0].contains("not valid JSON"),
        "{}",
        r.stdout
    );

    // The request is still parsed: its id is echoed on the config error.
    let input = br#"{"plugin":"TextTools","method":"upper","request_id":"cfg-1"}"#;
    let r = run_stdin(&missing, input);
    err(&r, 5, "config_error");
    assert_eq!(r.json["request_id"], "cfg-1");
}

#[test]
fn an_invalid_config_lists_every_problem() {
    let d = setup();
    let c = d.config(&json!({
        "require_schemas": true,
        "max_request_bytes": 8 * 1024 * 1024 + 1,
        "plugins_typo": {},
        "plugins": {
            "../x": { "command": ["/bin/true"], "methods": { "_p": {} } },
            "Both": { "command": ["/bin/true"], "module": "m", "allowed_methods": ["a"] },
            "Nothing": { "command": ["/bin/true"] },
            "Py": { "module": "some_mod", "python_path": [], "allowed_methods": ["a"] },
            "Loose": { "command": ["/bin/true"], "allowed_methods": ["a"], "sandbox": { "netwrk": true } },
            "Zero": { "command": ["/bin/true"], "allowed_methods": ["a"],
                      "sandbox": { "limits": { "open_files": 0, "timeout_ms": 0 } } }
        }
    }));
    let r = call(&c, "Py", "a", json!({}));
    err(&r, 5, "config_error");
    let problems = config_problems(&r);
    for needle in [
        "unknown top-level key \"plugins_typo\"",
        "\"max_request_bytes\" must be at most 8388608",
        "plugin \"../x\": not a valid plugin name",
        "\"_p\" can never be called",
        "plugin \"Both\": has both",
        "plugin \"Nothing\": whitelists no method",
        "plugin \"Py\": \"python_path\" is empty",
        "has no schema",
        "netwrk",
        "plugin \"Zero\": \"sandbox.limits.timeout_ms\" must be at least 1",
        "plugin \"Zero\": \"sandbox.limits.open_files\" must be at least 1",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "missing problem {needle:?} in {problems:#?}"
        );
    }
    // The sentence names them too.
    assert!(error_text(&r).contains("plugins_typo"), "{}", r.stdout);
    assert!(error_text(&r).contains("netwrk"), "{}", r.stdout);
}

#[test]
fn a_missing_method_schema_file_is_a_config_error() {
    let d = setup();
    let c = cfg(
        &d,
        json!({"plugins": {"TextTools": {
            "command": [texttools_bin()],
            "methods": { "upper": { "schema": "schemas/missing.json" } }
        }}}),
    );
    let r = call(&c, "TextTools", "upper", json!({"text": "x"}));
    err(&r, 5, "config_error");
    assert!(error_text(&r).contains("missing.json"), "{}", r.stdout);
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert!(
        lines.iter().all(|l| l["event"] != "started"),
        "nothing ran: {lines:?}"
    );
}

/// One broken file of the config stops every method, not only the one that uses it:
/// `run`, `list` and `check` agree that the config is invalid.
/// The files that decide what plugins may do (the config, its schemas, its seccomp
/// profiles) are refused when anyone but root or upm's user could change them: a config
/// in a directory others write to, or one they own, would otherwise choose the plugins'
/// user, paths and filter for a root upm.
#[test]
fn files_others_could_change_are_not_taken_as_rules() {
    if !is_root() {
        eprintln!("SKIPPED: needs root (to give files to other users)");
        return;
    }
    let d = setup();
    d.config(&json!({})); // copies the repository's policies/ beside it
    let chown = |p: &Path, uid: u32| std::os::unix::fs::chown(p, Some(uid), None).unwrap();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let plugins = json!({ "TextTools": { "command": [texttools_bin()], "methods": {
        "upper": { "schema": "schemas/text.json" } },
        "sandbox": { "seccomp": "policies/default.json" } } });
    let c = cfg(&d, json!({ "plugins": plugins }));
    let ok = || call(&c, "TextTools", "upper", json!({"text": "x"}));
    assert_eq!(ok().code, 0, "{}", ok().stdout);
    let refused = |needle: &str| {
        let r = ok();
        err(&r, 5, "config_error");
        assert!(
            config_problems(&r)
                .iter()
                .any(|p| p.contains(needle) && p.contains("others could change it")),
            "{needle}: {}",
            r.stdout
        );
        let r = run_with(&["check", "--config", c.to_str().unwrap()], b"", &[]);
        assert_eq!(r.code, 5, "check {needle}: {}", r.stdout);
        assert!(r.stdout.contains("others could change it"), "{}", r.stdout);
    };
    for (file, uid, mode) in [
        (c.clone(), 4243, 0o644),
        (c.clone(), 0, 0o666),
        (d.join("schemas/text.json"), 0, 0o664),
        (d.join("policies/default.json"), 4243, 0o644),
    ] {
        chown(&file, uid);
        chmod(&file, mode);
        refused(file.file_name().unwrap().to_str().unwrap());
        chown(&file, 0);
        chmod(&file, 0o644);
        assert_eq!(ok().code, 0, "{}", ok().stdout);
    }
}

#[test]
fn a_broken_schema_or_profile_stops_every_method_and_check_and_list_agree() {
    let d = setup();
    d.write("schemas/not_a_schema.json", r#"{"type": "strng"}"#, false);
    d.write("schemas/not_json.json", "{", false);
    d.config(&json!({})); // copies the repository's policies/ beside it
    d.write(
        "policies/broken.json",
        r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
        false,
    );
    let good = json!({ "upper": { "schema": "schemas/text.json" } });
    for (broken, needle) in [
        (
            json!({ "TextTools": { "command": [texttools_bin()], "methods": {
            "upper": { "schema": "schemas/text.json" },
            "other": { "schema": "schemas/missing.json" } } } }),
            "missing.json",
        ),
        (
            json!({ "B": { "command": ["/bin/true"], "methods": { "m": { "schema": "schemas/not_a_schema.json" } } } }),
            "not_a_schema.json",
        ),
        (
            json!({ "B": { "command": ["/bin/true"], "methods": { "m": { "schema": "schemas/not_json.json" } } } }),
            "not_json.json",
        ),
        (
            json!({ "B": { "command": ["/bin/true"], "allowed_methods": ["m"],
                        "sandbox": { "seccomp": "policies/broken.json" } } }),
            "broken.json",
        ),
    ] {
        let mut plugins = json!({ "TextTools": { "command": [texttools_bin()], "methods": good } });
        for (k, v) in broken.as_object().unwrap() {
            plugins[k] = v.clone();
        }
        let c = cfg(&d, json!({ "plugins": plugins }));
        let r = call(&c, "TextTools", "upper", json!({"text": "x"}));
        err(&r, 5, "config_error");
        assert!(
            config_problems(&r).iter().any(|p| p.contains(needle)),
            "{needle}: {}",
            r.stdout
        );
        let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["event"], "refused");
        for cmd in ["check", "list"] {
            let r = run_with(&[cmd, "--config", c.to_str().unwrap()], b"", &[]);
            assert_eq!(r.code, 5, "{cmd} {needle}: {}", r.stdout);
            assert!(r.stdout.contains(needle), "{cmd}: {}", r.stdout);
        }
    }
}

/// Every unknown key is reported, not only the first of each block; one in the
/// top-level `sandbox` block is reported once, not again for every plugin.
#[test]
fn every_unknown_key_is_reported_once() {
    let d = setup();
    let c = cfg(
        &d,
        json!({
            "sandbox": { "netwrok": true, "read_path": [], "limits": { "timeout": 5 } },
            "audit": { "pth": "x.log" },
            "plugins": {
                "A": { "command": ["/bin/true"], "allowed_methods": ["m"],
                       "sandbox": { "network": false, "write_path": [] },
                       "methods": { "n": { "shema": "schemas/empty.json" } } },
                "B": { "command": ["/bin/true"], "allowed_methods": ["m"], "sandbox": { "network": false } },
                "C": { "command": ["/bin/true"], "allowed_methods": ["m"], "comand": [] }
            }
        }),
    );
    let r = call(&c, "A", "m", json!({}));
    err(&r, 5, "config_error");
    let problems = config_problems(&r);
    for (needle, hint) in [
        ("\"sandbox\": unknown key \"netwrok\"", "network"),
        ("\"sandbox\": unknown key \"read_path\"", "read_paths"),
        ("\"sandbox.limits\": unknown key \"timeout\"", "timeout_ms"),
        ("\"audit\": unknown key \"pth\"", "path"),
        (
            "plugin \"A\": \"sandbox\": unknown key \"write_path\"",
            "write_paths",
        ),
        (
            "plugin \"A\", method \"n\": unknown key \"shema\"",
            "schema",
        ),
        ("plugin \"C\": unknown key \"comand\"", "command"),
    ] {
        let found: Vec<_> = problems.iter().filter(|p| p.contains(needle)).collect();
        assert_eq!(found.len(), 1, "{needle}: {problems:#?}");
        assert!(
            found[0].contains(&format!("did you mean \"{hint}\"")),
            "{found:?}"
        );
    }
    for typo in ["netwrok", "read_path", "timeout\""] {
        let n = problems.iter().filter(|p| p.contains(typo)).count();
        assert_eq!(n, 1, "{typo} reported {n} times: {problems:#?}");
    }
    assert_eq!(problems.len(), 7, "{problems:#?}");
}

/// `upm check` finds what every call, or every call of a plugin, would fail on: an audit
/// log that cannot be written, a write path the plugin's uid cannot write, a command
/// it cannot execute (not executable for it, or under a directory it cannot search).
#[test]
fn check_finds_what_calls_would_fail_on() {
    let d = setup();
    d.write("plugins/not_exec.sh", "#!/bin/sh\necho 1\n", false);
    let root_only = d.write("plugins/owner_only", "#!/bin/sh\necho 1\n", true);
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o744)).unwrap();
    let hidden = d.write("hidden/tool.sh", "#!/bin/sh\necho 1\n", true);
    std::fs::set_permissions(d.join("hidden"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(d.join("rootdir")).unwrap();
    let c = cfg(
        &d,
        json!({
            "audit": { "path": "no/such/dir/audit.log" },
            "plugins": {
                "NotExec": cmd("plugins/not_exec.sh", &["m"]),
                "OwnerOnly": cmd(root_only.to_str().unwrap(), &["m"]),
                "Hidden": cmd(hidden.to_str().unwrap(), &["m"]),
                "Writes": { "command": ["/bin/true"], "allowed_methods": ["m"],
                            "sandbox": { "write_paths": ["rootdir", "does-not-exist"] } }
            }
        }),
    );
    let r = run_with(&["check", "--config", c.to_str().unwrap()], b"", &[]);
    assert_eq!(r.code, 5, "{}", r.stdout);
    let problems: Vec<&str> = r.json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
    assert!(has("audit log") && has("no/such/dir"), "{problems:#?}");
    assert!(
        has("plugin \"NotExec\": command cannot be started"),
        "{problems:#?}"
    );
    assert!(has("not_exec.sh (mode 0644"), "{problems:#?}");
    let warnings = r.json["warnings"].to_string();
    assert!(
        warnings.contains("does-not-exist does not exist"),
        "{warnings}"
    );
    // The rest is about another uid than upm's own: only a root upm switches.
    if !is_root() {
        eprintln!(
            "SKIPPED (not root): uid-specific checks of check_finds_what_calls_would_fail_on"
        );
        return;
    }
    assert!(
        has("plugin \"OwnerOnly\": command cannot be started"),
        "{problems:#?}"
    );
    assert!(
        has("(mode 0744, owner 0:0) is not executable by uid 65534"),
        "{problems:#?}"
    );
    assert!(
        has("plugin \"Hidden\": command cannot be started: the directory"),
        "{problems:#?}"
    );
    assert!(has("cannot be searched by uid 65534"), "{problems:#?}");
    assert!(has("plugin \"Writes\": write_paths:"), "{problems:#?}");
    assert!(
        has("rootdir (mode 0755, owner 0:0) is not writable by uid 65534"),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 5, "{problems:#?}");
    // And those calls do fail (the audit log is moved where it can be written).
    let c = cfg(
        &d,
        json!({ "plugins": {
            "OwnerOnly": cmd(root_only.to_str().unwrap(), &["m"]),
            "Writes": { "command": ["/bin/sh"], "allowed_methods": ["m"],
                        "sandbox": { "write_paths": ["rootdir"] } }
        }}),
    );
    err(
        &call(&c, "OwnerOnly", "m", json!({})),
        6,
        "plugin_start_failed",
    );
}

#[test]
fn the_config_is_found_by_flag_env_or_cwd() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let req = request("TextTools", "reverse", json!({"text": "abc"}));
    let c_s = c.to_str().unwrap();
    let want = json!({"text": "cba"});

    // UPM_CONFIG_PATH, from an unrelated cwd.
    let r = run_in(Path::new("/"), &["run"], &req, &[("UPM_CONFIG_PATH", c_s)]);
    assert_eq!(ok(&r), &want);
    // --config wins over UPM_CONFIG_PATH.
    let missing = d.join("missing.json");
    let env = [("UPM_CONFIG_PATH", missing.to_str().unwrap())];
    let r = run_in(Path::new("/"), &["run", "--config", c_s], &req, &env);
    assert_eq!(ok(&r), &want);
    // And the env var really is read: pointing it at nothing fails.
    let r = run_in(Path::new("/"), &["run"], &req, &env);
    err(&r, 5, "config_error");
    assert!(
        config_problems(&r)[0].contains("missing.json"),
        "{}",
        r.stdout
    );
    // Neither: ./upm_config.json.
    let r = run_in(&d.path, &["run"], &req, &[]);
    assert_eq!(ok(&r), &want);
    // The argv form finds it the same way.
    let r = run_in(
        &d.path,
        &["TextTools", "reverse", r#"{"text":"abc"}"#],
        b"",
        &[],
    );
    assert_eq!(ok(&r), &want);
}

#[test]
fn relative_paths_in_the_config_are_relative_to_its_directory() {
    let d = setup();
    sh(&d, "rel", r#"echo '{"from": "rel.sh"}'"#);
    cfg(
        &d,
        json!({
            "audit": { "path": "audit-rel.log" },
            "sandbox": { "seccomp": "policies/default.json", "limits": { "timeout_ms": 5000 } },
            "plugins": { "Rel": {
                "command": ["plugins/rel.sh"],
                "methods": { "go": { "schema": "schemas/empty.json" } }
            }}
        }),
    );
    std::fs::create_dir(d.join("elsewhere")).unwrap();
    let req = request("Rel", "go", json!({}));
    for (cwd, config) in [
        (d.join("elsewhere"), "../upm_config.json".to_owned()),
        (
            PathBuf::from("/"),
            d.join("upm_config.json").to_string_lossy().into_owned(),
        ),
    ] {
        let r = run_in(&cwd, &["run", "--config", &config], &req, &[]);
        assert_eq!(ok(&r), &json!({"from": "rel.sh"}), "cwd {}", cwd.display());
        // The schema was found relative to the config too: it is enforced.
        let bad = request("Rel", "go", json!({"x": 1}));
        let r = run_in(&cwd, &["run", "--config", &config], &bad, &[]);
        err(&r, 10, "invalid_args");
    }
    let log = std::fs::read_to_string(d.join("audit-rel.log")).expect("audit beside the config");
    assert_eq!(log.lines().count(), 2 * 3, "{log}");
    assert!(!d.join("elsewhere/audit-rel.log").exists());
    assert!(!Path::new("/audit-rel.log").exists());
}

/// Every path-valued field of the config names one file whoever calls upm from
/// wherever: `read_paths`, `write_paths`, the seccomp profile, the command, the schema,
/// the audit log and its signing key. Run from the config's directory, from a directory
/// that holds decoys under the same relative names, and from `/`.
#[test]
fn every_relative_path_means_the_same_from_any_working_directory() {
    let d = setup();
    let decoy = TestDir::new();
    for t in [&d, &decoy] {
        t.write(
            "data/allowed.txt",
            &format!("from {}", t.path.display()),
            false,
        );
        std::fs::create_dir(t.join("out")).unwrap();
        // The plugin's uid must be able to write there: only the sandbox decides.
        std::fs::set_permissions(t.join("out"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::create_dir(t.join("keys")).unwrap();
        keygen(&t.join("keys/audit.pem"), &t.join("keys/audit.pub"));
    }
    let (mine, theirs) = (d.join("data/allowed.txt"), decoy.join("data/allowed.txt"));
    sh(
        &d,
        "paths",
        &format!(
            r#"mine=$(cat {} 2>/dev/null || echo denied)
theirs=$(cat {} 2>/dev/null || echo denied)
echo x > {}/out/w 2>/dev/null && wrote=yes || wrote=no
echo x > {}/out/w 2>/dev/null && wrote_decoy=yes || wrote_decoy=no
printf '{{"mine": "%s", "theirs": "%s", "wrote": "%s", "wrote_decoy": "%s"}}\n' "$mine" "$theirs" "$wrote" "$wrote_decoy""#,
            mine.display(),
            theirs.display(),
            d.path.display(),
            decoy.path.display()
        ),
    );
    cfg(
        &d,
        json!({
            "audit": { "path": "logs/audit.log", "signing_key": "keys/audit.pem", "sign_every": 1 },
            "sandbox": {
                "seccomp": "policies/default.json",
                "read_paths": ["data/allowed.txt"],
                "write_paths": ["out"],
                "limits": { "timeout_ms": 5000 }
            },
            "plugins": { "Paths": {
                "command": ["plugins/paths.sh"],
                "methods": { "go": { "schema": "schemas/empty.json" } }
            }}
        }),
    );
    std::fs::create_dir(d.join("logs")).unwrap();
    let config = d.join("upm_config.json");
    let config = config.to_str().unwrap();
    for cwd in [d.path.clone(), decoy.path.clone(), PathBuf::from("/")] {
        let r = run_in(&cwd, &["--config", config, "Paths", "go", "{}"], b"", &[]);
        let result = ok(&r);
        assert_eq!(
            result["mine"],
            format!("from {}", d.path.display()),
            "cwd {}",
            cwd.display()
        );
        assert_eq!(result["theirs"], "denied", "cwd {}", cwd.display());
        assert_eq!(
            (&result["wrote"], &result["wrote_decoy"]),
            (&json!("yes"), &json!("no")),
            "cwd {}",
            cwd.display()
        );
        // What the result reports is absolute, and is the config's.
        let layers = &r.json["data"]["sandbox"]["layers"];
        let landlock = &layers["landlock"]["detail"];
        let has = |list: &Value, p: &Path| {
            list.as_array()
                .unwrap()
                .iter()
                .any(|x| x == p.to_str().unwrap())
        };
        assert!(has(&landlock["read"], &mine), "{landlock}");
        assert!(has(&landlock["write"], &d.join("out")), "{landlock}");
        assert!(
            has(
                &layers["namespaces"]["detail"]["writable_mounts"],
                &d.join("out")
            ),
            "{layers}"
        );
        for list in [&landlock["read"], &landlock["write"]] {
            for p in list.as_array().unwrap() {
                assert!(p.as_str().unwrap().starts_with('/'), "not absolute: {p}");
            }
        }
        assert!(
            layers["seccomp"]["detail"]["file"]
                == d.join("policies/default.json").to_str().unwrap(),
            "{layers}"
        );
    }
    // The audit log is the config's, every entry of it signed with the config's key:
    // the decoy's key, and a key found from `/`, would not verify.
    assert!(!decoy.join("logs").exists() && !Path::new("/logs/audit.log").exists());
    let log = d.join("logs/audit.log");
    let public = d.join("keys/audit.pub");
    let r = run_with(
        &[
            "audit",
            "verify",
            log.to_str().unwrap(),
            "--key",
            public.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("intact: "), "{}", r.stdout);
    assert!(r.stdout.contains("checkpoint"), "{}", r.stdout);
}

/// The config's directory is where the file really is: named through `../`, through a
/// symlinked directory (a "current release" link) or by a symlink to the file, the same
/// config finds the same schema and seccomp files, the same grant roots and the same log,
/// and its signature verifies (it names files relative to that directory).
#[test]
fn the_config_means_the_same_however_it_is_named() {
    let d = setup();
    d.write("data/f.txt", "granted\n", false);
    d.write(
        "schemas/grant.json",
        r#"{"type": "object", "properties": {"p": {"type": "string", "x-upm-grant": "read"}},
            "additionalProperties": false}"#,
        false,
    );
    sh(&d, "ok", r#"echo '{"ok": 1}'"#);
    cfg(
        &d,
        json!({
            "sandbox": { "seccomp": "policies/default.json" },
            "plugins": { "G": {
                "command": ["plugins/ok.sh"],
                "grants_within": ["data"],
                "methods": { "go": { "schema": "schemas/grant.json" } }
            }}
        }),
    );
    std::fs::create_dir(d.join("keys")).unwrap();
    let secret = d.join("sign.pem");
    keygen(&secret, &d.join("keys/k.pub"));
    let config = d.join("upm_config.json");
    let r = run_with(
        &[
            "sign",
            "--key",
            secret.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    let elsewhere = TestDir::new();
    std::fs::create_dir(elsewhere.join("cwd")).unwrap();
    std::os::unix::fs::symlink(&d.path, elsewhere.join("current")).unwrap();
    std::fs::create_dir(elsewhere.join("etc")).unwrap();
    std::os::unix::fs::symlink(&config, elsewhere.join("etc/upm_config.json")).unwrap();
    let dir_name = d.path.file_name().unwrap().to_str().unwrap();
    let up = format!("../{dir_name}/upm_config.json");
    let keys = d.join("keys");
    let env = [
        ("UPM_TRUST_MODE", "strict"),
        ("UPM_TRUSTED_KEYS_DIR", keys.to_str().unwrap()),
    ];
    let granted = d.join("data/f.txt");
    let args = json!({ "p": granted }).to_string();
    // `../dir/upm_config.json` from a sibling directory of the config's.
    assert_eq!(d.path.parent(), elsewhere.path.parent());
    let named = [
        (d.path.clone(), config.to_str().unwrap().to_owned()),
        (elsewhere.path.clone(), up),
        (
            elsewhere.join("cwd"),
            elsewhere
                .join("current/upm_config.json")
                .display()
                .to_string(),
        ),
        (
            elsewhere.join("cwd"),
            elsewhere.join("etc/upm_config.json").display().to_string(),
        ),
    ];
    for (cwd, given) in &named {
        let r = run_in(cwd, &["--config", given, "G", "go", &args], b"", &env);
        let result = ok(&r);
        assert_eq!(result["ok"], 1, "{given}");
        let data = &r.json["data"];
        assert_eq!(data["trust"]["status"], "verified", "{given}: {data}");
        let grants = &data["sandbox"]["layers"]["landlock"]["detail"]["grants"];
        assert_eq!(
            grants[0]["path"],
            granted.to_str().unwrap(),
            "{given}: {grants}"
        );
        assert_eq!(
            data["sandbox"]["layers"]["seccomp"]["detail"]["file"],
            d.join("policies/default.json").to_str().unwrap(),
            "{given}"
        );
    }
    // One log, beside the real file: none beside the links.
    assert_eq!(
        std::fs::read_to_string(d.join("entrypoint.log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"finished\""))
            .count(),
        named.len()
    );
    for stray in ["etc/entrypoint.log", "entrypoint.log"] {
        assert!(!elsewhere.join(stray).exists(), "{stray}");
    }
}

/// A bare command name is looked up in /usr/local/bin:/usr/bin:/bin only: one found
/// nowhere there does not fall back on a file of that name in the caller's directory.
#[test]
fn a_bare_command_is_never_found_in_the_working_directory() {
    let d = setup();
    let name = "upm-test-no-such-command";
    d.write(name, "#!/bin/sh\necho '\"ran from the cwd\"'\n", true);
    let c = cfg(&d, json!({ "plugins": { "Bare": cmd(name, &["go"]) } }));
    let r = run_in(
        &d.path,
        &["--config", c.to_str().unwrap(), "Bare", "go", "{}"],
        b"",
        &[],
    );
    err(&r, 6, "plugin_start_failed");
    assert!(
        error_text(&r).contains("/usr/local/bin:/usr/bin:/bin"),
        "{}",
        r.stdout
    );
    let r = run_in(
        &d.path,
        &["check", "--config", c.to_str().unwrap()],
        b"",
        &[],
    );
    assert_eq!(r.code, 5, "{}", r.stdout);
    assert!(
        r.stdout.contains("is not found in /usr/local/bin"),
        "{}",
        r.stdout
    );
}

/// A mistyped --config whose directory does not exist: the fallback log cannot be opened
/// either, and the answer says both (it used to name only the log).
#[test]
fn a_config_in_a_missing_directory_is_named_beside_the_log() {
    let r = run_with(
        &["run", "--config", "/nonexistent-upm-dir/upm_config.json"],
        br#"{"plugin": "A", "method": "b", "args": {}}"#,
        &[],
    );
    assert_eq!(r.code, 11, "{}", r.stdout);
    let error = r.json["data"]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot open audit log /nonexistent-upm-dir/entrypoint.log")
            && error.contains("the config did not load either")
            && error.contains("/nonexistent-upm-dir/upm_config.json"),
        "{error}"
    );
}
