//! Exits 6-9 and 12: a plugin that cannot start, a method not allowed or not found, a plugin that fails, one past its timeout.

use super::*;

#[test]
fn a_command_deleted_after_the_config_was_written_fails_to_start() {
    let d = setup();
    let p = sh(&d, "vanishing", "echo '{}'");
    let c = cfg(&d, json!({"plugins": {"Gone": cmd(&p, &["go"])}}));
    std::fs::remove_file(&p).unwrap();
    let r = call(&c, "Gone", "go", json!({}));
    let data = err(&r, 6, "plugin_start_failed");
    assert!(error_text(&r).contains("No such file"), "{}", r.stdout);
    assert!(data.get("result").is_none());
}

/// A plugin that cannot be started is named, with the reason: not executable for the
/// plugin's uid, under a directory it cannot search, on a `noexec` mount, or a script
/// whose `#!` interpreter is missing.
#[test]
fn a_start_failure_names_the_file_and_the_reason() {
    use std::os::unix::process::CommandExt;
    let d = setup();
    let not_exec = d.write("plugins/not_exec.sh", "#!/bin/sh\necho 1\n", false);
    let no_interp = d.write(
        "plugins/no_interp.sh",
        "#!/usr/bin/upm-no-such-shell\n",
        true,
    );
    let owner_only = d.write("plugins/owner_only.sh", "#!/bin/sh\necho 1\n", true);
    std::fs::set_permissions(&owner_only, std::fs::Permissions::from_mode(0o744)).unwrap();
    let hidden = d.write("hidden/tool.sh", "#!/bin/sh\necho 1\n", true);
    std::fs::set_permissions(d.join("hidden"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let noexec = d.write("noexec/tool.sh", "#!/bin/sh\necho 1\n", true);
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let c = cfg(
        &d,
        json!({ "plugins": {
            "NotExec": cmd(&path(&not_exec), &["m"]),
            "NoInterp": cmd(&path(&no_interp), &["m"]),
            "OwnerOnly": cmd(&path(&owner_only), &["m"]),
            "Hidden": cmd(&path(&hidden), &["m"]),
            "NoExec": cmd(&path(&noexec), &["m"]),
        }}),
    );
    let started = |plugin: &str, needles: &[&str]| {
        let r = call(&c, plugin, "m", json!({}));
        err(&r, 6, "plugin_start_failed");
        for n in needles {
            assert!(
                error_text(&r).contains(n),
                "{plugin}: {n:?} in {}",
                r.stdout
            );
        }
    };
    started(
        "NotExec",
        &[
            &format!("exec of {}", not_exec.display()),
            "(mode 0644",
            "is not executable by uid",
        ],
    );
    started(
        "NoInterp",
        &[
            "its #! interpreter cannot be run",
            "/usr/bin/upm-no-such-shell",
        ],
    );
    if !is_root() {
        eprintln!("SKIPPED (not root): another uid's view and a noexec mount");
        return;
    }
    started(
        "OwnerOnly",
        &["(mode 0744, owner 0:0) is not executable by uid 65534"],
    );
    started(
        "Hidden",
        &[
            &format!("exec of {}", hidden.display()),
            "cannot be searched by uid 65534",
        ],
    );
    // upm alone sees d/noexec mounted noexec: a bind mount in a mount namespace of its own.
    let dir = std::ffi::CString::new(path(&d.join("noexec"))).unwrap();
    let mut command = Command::new(upm_bin());
    command.args(["run", "--config", c.to_str().unwrap()]);
    // SAFETY: unshare and mount are async-signal-safe; the string was made before the fork.
    unsafe {
        command.pre_exec(move || {
            let null = std::ptr::null();
            let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                && libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    null.cast(),
                ) == 0
                && libc::mount(dir.as_ptr(), dir.as_ptr(), null, libc::MS_BIND, null.cast()) == 0
                && libc::mount(
                    null,
                    dir.as_ptr(),
                    null,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOEXEC,
                    null.cast(),
                ) == 0;
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let r = run_command(command, &request("NoExec", "m", json!({})));
    err(&r, 6, "plugin_start_failed");
    assert!(error_text(&r).contains("mounted noexec"), "{}", r.stdout);
}

/// A script's interpreter knows it by its name, not as `/dev/fd/N`: its `$0`, its
/// `__file__` and its own error messages name the script.
#[test]
fn a_scripts_own_messages_name_the_script() {
    let d = setup();
    let shell = sh(
        &d,
        "named",
        "echo \"I am $0\" >&2\nnosuchcommand-upm\necho '{}'",
    );
    let py = d.write(
        "plugins/named.py",
        "#!/usr/bin/python3\nimport sys\nprint('I am', __file__, file=sys.stderr)\nprint('{}')\n",
        true,
    );
    let c = cfg(
        &d,
        json!({ "plugins": {
            "Sh": cmd(&shell, &["m"]),
            "Py": cmd(py.to_str().unwrap(), &["m"]),
            // Pinned: what runs is the call's verified copy, and still named so.
            "Pinned": { "command": [shell], "allowed_methods": ["m"],
                        "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&shell).unwrap())) }
        }}),
    );
    for plugin in ["Sh", "Py", "Pinned"] {
        let r = call(&c, plugin, "m", json!({}));
        ok(&r);
        let stderr = r.json["data"]["stderr"]["text"].as_str().unwrap();
        assert!(!stderr.contains("/dev/fd/"), "{plugin}: {stderr}");
        let name = if plugin == "Py" {
            "named.py"
        } else {
            "named.sh"
        };
        assert!(stderr.contains(&format!("/{name}\n")), "{plugin}: {stderr}");
        if plugin != "Py" {
            assert!(
                stderr.contains(&format!("/{name}: 3: nosuchcommand-upm: not found")),
                "{stderr}"
            );
        }
    }
}

#[test]
fn a_python_module_that_fails_to_import_fails_to_start() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Broken", "x", json!({}));
    let data = err(&r, 6, "plugin_start_failed");
    assert_eq!(data["details"]["type"], "ImportError");
    assert_eq!(data["details"]["message"], "frobnicate is not installed");
    let tb = data["details"]["traceback"].as_str().unwrap();
    assert!(tb.contains("broken.py"), "{tb}");
    assert!(error_text(&r).contains("frobnicate"), "{}", r.stdout);
}

#[test]
fn methods_outside_the_whitelist_are_not_allowed() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    // UPM's order: the whitelist first, so an unlisted private name is "not allowed".
    let cases = [
        ("lower", "Method 'lower' not allowed for plugin 'TextTools'"),
        ("Upper", "Method 'Upper' not allowed for plugin 'TextTools'"),
        ("_x", "Method '_x' not allowed for plugin 'TextTools'"),
        (
            "__init__",
            "Method '__init__' not allowed for plugin 'TextTools'",
        ),
        ("a b", "not a valid method name"),
        ("../upper", "not a valid method name"),
        ("", "not a valid method name"),
    ];
    for (method, says) in cases {
        let r = call(&c, "TextTools", method, json!({"text": "x"}));
        err(&r, 7, "method_not_allowed");
        assert!(error_text(&r).contains(says), "{method:?}: {}", r.stdout);
    }
    let r = run_argv(&c, &["TextTools", "_x", "{}"]);
    err(&r, 7, "method_not_allowed");
    // Listed in UPM's allowed_methods: not a config error, and still never callable.
    let c = tt_cfg(
        &d,
        json!({"P": cmd("/bin/true", &["ok", "_x", "__introspect__"])}),
    );
    for m in ["_x", "__introspect__"] {
        let r = call(&c, "P", m, json!({}));
        err(&r, 7, "method_not_allowed");
        assert!(
            error_text(&r).starts_with(&format!(
                "Method '{m}' is private and cannot be called directly"
            )),
            "{m}: {}",
            r.stdout
        );
    }
}

#[test]
fn a_whitelisted_method_the_class_lacks_is_not_found() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Probe", "missing", json!({}));
    let data = err(&r, 8, "method_not_found");
    assert_eq!(
        error_text(&r),
        "Method 'missing' not found in plugin 'Probe'",
        "{}",
        r.stdout
    );
    assert!(data["details"]["message"]
        .as_str()
        .unwrap()
        .contains("Probe has no method"));
}

#[test]
fn a_non_zero_exit_is_a_plugin_failure() {
    let d = setup();
    let p = sh(&d, "fails", "echo 'it broke' >&2; exit 3");
    let c = cfg(&d, json!({"plugins": {"Fails": cmd(&p, &["go"])}}));
    let r = call(&c, "Fails", "go", json!({}));
    let data = err(&r, 9, "plugin_failed");
    assert_eq!(data["exit_code"], 3);
    assert!(error_text(&r).contains("status 3"), "{}", r.stdout);
    assert_eq!(data["stderr"]["text"], "it broke\n");
    assert!(data.get("result").is_none());
}

#[test]
fn a_plugin_killed_by_a_signal_is_a_plugin_failure() {
    let d = setup();
    let p = sh(&d, "segv", "kill -SEGV $$");
    let c = cfg(&d, json!({"plugins": {"Segv": cmd(&p, &["go"])}}));
    let r = call(&c, "Segv", "go", json!({}));
    let data = err(&r, 9, "plugin_failed");
    assert_eq!(data["signal"], libc::SIGSEGV);
    assert!(data.get("exit_code").is_none(), "{data}");
    assert!(error_text(&r).contains("SIGSEGV"), "{}", r.stdout);
}

#[test]
fn processes_the_plugin_leaves_behind_do_not_delay_the_answer() {
    let d = setup();
    let p = sh(&d, "bg", "sleep 5 &\necho '{\"done\": true}'");
    let c = cfg(&d, json!({"plugins": {"Bg": cmd(&p, &["go"])}}));
    let t = Instant::now();
    let r = call(&c, "Bg", "go", json!({}));
    assert_eq!(ok(&r), &json!({"done": true}));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn stdout_that_is_not_one_json_value_is_a_plugin_failure() {
    let d = setup();
    let p = sh(&d, "chatty", "echo 'hello there'");
    let p2 = sh(&d, "two", "echo '{}'; echo '{}'");
    let c = cfg(
        &d,
        json!({"plugins": {"Chatty": cmd(&p, &["go"]), "Two": cmd(&p2, &["go"])}}),
    );
    let r = call(&c, "Chatty", "go", json!({}));
    let data = err(&r, 9, "plugin_failed");
    assert!(
        error_text(&r).contains("not one JSON value"),
        "{}",
        r.stdout
    );

    assert_eq!(
        data["stdout"]["text"], "hello there\n",
        "kept for diagnosis"
    );
    assert_eq!(data["exit_code"], 0);
    let r = call(&c, "Two", "go", json!({}));
    err(&r, 9, "plugin_failed");
    // Plain text with what looks like a wide integer (a date) is still just not JSON.
    let dated = sh(&d, "dated", "echo 'build 2024-01-01 failed'");
    let c2 = cfg(&d, json!({"plugins": {"Dated": cmd(&dated, &["go"])}}));
    let r2 = call(&c2, "Dated", "go", json!({}));
    err(&r2, 9, "plugin_failed");
    assert!(
        error_text(&r2).contains("not one JSON value"),
        "{}",
        r2.stdout
    );
}

/// JSON is UTF-8: a string holding other bytes is not silently turned into U+FFFD and
/// passed off as the plugin's value.
#[test]
fn stdout_that_is_not_utf8_is_a_plugin_failure() {
    let d = setup();
    let p = sh(&d, "latin1", r#"printf '{"name": "caf\351"}'"#);
    let c = cfg(&d, json!({"plugins": {"Latin1": cmd(&p, &["go"])}}));
    let r = call(&c, "Latin1", "go", json!({}));
    let data = err(&r, 9, "plugin_failed");
    assert!(
        error_text(&r).contains("not UTF-8 (at byte 13)"),
        "{}",
        r.stdout
    );
    assert_eq!(data["stdout"]["text"], "{\"name\": \"caf\u{fffd}\"}");
    assert_eq!(data["stdout"]["invalid_utf8_at"], 13);
    assert_eq!(data["stdout"]["bytes"], 16);
    assert!(data.get("result").is_none(), "{data}");
}

#[test]
fn a_python_exception_is_a_plugin_failure_with_its_traceback() {
    let d = setup();
    let c = py_cfg(&d);
    let r = call(&c, "Probe", "boom", json!({"args": ["kaput"]}));
    let data = err(&r, 9, "plugin_failed");
    assert!(error_text(&r).contains("ValueError"), "{}", r.stdout);
    assert!(error_text(&r).contains("boom: kaput"), "{}", r.stdout);
    let det = &data["details"];
    assert_eq!(det["type"], "ValueError");
    assert_eq!(det["message"], "boom: kaput");
    let tb = det["traceback"].as_str().unwrap();
    assert!(tb.starts_with("Traceback (most recent call last)"), "{tb}");
    assert!(tb.contains("raise ValueError"), "{tb}");
    assert!(tb.contains("probe.py"), "{tb}");
}

#[test]
fn a_plugin_past_its_timeout_is_killed() {
    let d = setup();
    let p = sh(&d, "sleeper", "echo started >&2; sleep 5; echo '{}'");
    let c = cfg(
        &d,
        json!({
            "sandbox": { "limits": { "timeout_ms": 300 } },
            "plugins": { "Sleeper": cmd(&p, &["go"]) }
        }),
    );
    let t = Instant::now();
    let r = call(&c, "Sleeper", "go", json!({}));
    let took = t.elapsed();
    let data = err(&r, 12, "timeout");
    assert_eq!(data["limit"], "timeout");
    assert!(error_text(&r).contains("300 ms"), "{}", r.stdout);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(data.get("result").is_none());
    assert_eq!(data["stderr"]["text"], "started\n", "output so far is kept");
}

/// A result's integer wider than 64 bits would reach the caller as the nearest float
/// (2**64 as 1.8446744073709552e19): refused, as in a request, never changed silently.
#[test]
fn an_integer_wider_than_64_bits_in_a_result_is_a_plugin_failure() {
    let d = setup();
    d.write(
        "py/wide.py",
        "class Wide:\n    def __init__(self, **kw):\n        pass\n    def big(self):\n        return {\"id\": 12345678901234567890123}\n    def edge(self):\n        return {\"max\": 2**64 - 1, \"min\": -2**63}\n",
        false,
    );
    let p = sh(
        &d,
        "wide",
        r#"echo '{"n": -9223372036854775809, "s": "18446744073709551616"}'"#,
    );
    let c = cfg(
        &d,
        json!({"plugins": {
            "Wide": {"module": "wide", "python_path": ["py"], "allowed_methods": ["big", "edge"]},
            "Cmd": cmd(&p, &["go"]),
        }}),
    );
    for (plugin, method, literal) in [
        ("Wide", "big", "12345678901234567890123"),
        ("Cmd", "go", "-9223372036854775809"),
    ] {
        let r = call(&c, plugin, method, json!({}));
        err(&r, 9, "plugin_failed");
        let text = error_text(&r);
        assert!(
            text.contains(literal) && text.contains("does not fit in 64 bits"),
            "{}",
            r.stdout
        );
    }
    // The widest integers that fit pass exactly; a digit string inside a string is text.
    let r = call(&c, "Wide", "edge", json!({}));
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains(r#""max":18446744073709551615"#)
            && r.stdout.contains(r#""min":-9223372036854775808"#),
        "{}",
        r.stdout
    );
}

/// A method that ends its process (`sys.exit(0)`) returns nothing: said so, not blamed on
/// upm's runner.
#[test]
fn a_method_that_exits_its_process_is_named_as_the_cause() {
    let d = setup();
    d.write(
        "py/leaver.py",
        "import sys\nclass Leaver:\n    def __init__(self, **kw):\n        pass\n    def leave(self):\n        sys.exit(0)\n",
        false,
    );
    let c = cfg(
        &d,
        json!({"plugins": {
            "Leaver": {"module": "leaver", "python_path": ["py"], "allowed_methods": ["leave"]},
        }}),
    );
    let r = call(&c, "Leaver", "leave", json!({}));
    err(&r, 9, "plugin_failed");
    assert!(error_text(&r).contains("sys.exit()"), "{}", r.stdout);
}

/// A python_path the plugin's uid cannot read makes Python say only "No module named";
/// the error adds why (as `upm check` says it).
#[test]
fn an_unreadable_python_path_is_named_in_the_import_error() {
    let d = setup();
    d.write(
        "priv/src/tool.py",
        "class Tool:\n    def __init__(self, **kw):\n        pass\n    def ping(self):\n        return 'pong'\n",
        false,
    );
    d.write(
        "dep/needs.py",
        "import upm_test_no_such_dependency\n",
        false,
    );
    let c = cfg(
        &d,
        json!({"plugins": {
            "Tool": {"module": "tool", "python_path": ["priv/src"], "allowed_methods": ["ping"]},
            "Needs": {"module": "needs", "python_path": ["dep", "priv/src"], "allowed_methods": ["x"]},
        }}),
    );
    assert_eq!(call(&c, "Tool", "ping", json!({})).code, 0);
    std::fs::set_permissions(d.join("priv"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let r = call(&c, "Tool", "ping", json!({}));
    err(&r, 6, "plugin_start_failed");
    let text = error_text(&r);
    assert!(
        text.starts_with("Cannot import plugin module 'tool'")
            && text.contains("(mode 0700, owner 0:0) cannot be searched by uid"),
        "{text}"
    );
    // A dependency the module lacks is not blamed on an unreadable directory.
    let r = call(&c, "Needs", "x", json!({}));
    err(&r, 6, "plugin_start_failed");
    let text = error_text(&r);
    assert!(
        text.contains("upm_test_no_such_dependency") && !text.contains("cannot be searched"),
        "{text}"
    );
}
