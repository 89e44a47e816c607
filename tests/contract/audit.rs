//! Exit 11 (an audit log that cannot be written) and what every call leaves in the log: forms, request ids, args.

use super::*;

#[test]
fn an_unwritable_audit_log_refuses_the_call_before_the_plugin_runs() {
    let d = setup();
    // If the plugin ran, the call would take 5 s (timeout_ms is 10 s).
    let p = sh(&d, "slow", "sleep 5; echo '{}'");
    let c = cfg(
        &d,
        json!({
            "sandbox": { "limits": { "timeout_ms": 10000 } },
            "plugins": { "Slow": cmd(&p, &["go"]) }
        }),
    );
    let req = request("Slow", "go", json!({}));
    let c_s = c.to_str().unwrap();
    for log in ["/nonexistent-upm-dir/audit.log", "/proc/version"] {
        let t = Instant::now();
        let r = run_with(&["run", "--config", c_s], &req, &[("UPM_LOG_FILE", log)]);
        let took = t.elapsed();
        let data = err(&r, 11, "audit_error");
        assert!(error_text(&r).contains(log), "{log}: {}", r.stdout);
        assert!(error_text(&r).contains("not run"), "{log}: {}", r.stdout);
        assert!(
            took < Duration::from_secs(4),
            "{log}: the plugin ran ({took:?})"
        );
        assert!(data.get("result").is_none() && data.get("exit_code").is_none());
    }
    assert!(
        d.audit_lines().is_empty(),
        "UPM_LOG_FILE overrides the config's log"
    );
}

/// The log opens but the refusal's entry cannot be written (here: past a file-size
/// limit, with SIGXFSZ ignored, so that the write fails with EFBIG): the caller is told,
/// with the outcome upm would have answered.
#[test]
fn a_refusal_that_cannot_be_audited_is_an_audit_error() {
    use std::os::unix::process::CommandExt;
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let first = call(&c, "Nope", "upper", json!({}));
    err(&first, 4, "not_whitelisted");
    let size = std::fs::metadata(d.join("entrypoint.log")).unwrap().len();
    let mut cmd = Command::new(upm_bin());
    cmd.args(["run", "--config", c.to_str().unwrap()])
        .env_remove("UPM_CONFIG_PATH")
        .env_remove("UPM_LOG_FILE");
    // SAFETY: signal and setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: size,
                rlim_max: size,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let r = run_command(cmd, &request("Nope", "upper", json!({})));
    let data = err(&r, 11, "audit_error");
    assert_eq!(data["details"]["outcome"]["code"], "not_whitelisted");
    assert!(
        error_text(&r).contains("could not be written"),
        "{}",
        r.stdout
    );
}

#[test]
fn stdin_and_argv_forms_give_the_same_result() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let cases = [
        ("TextTools", "wordcount", json!({"text": "one two\nthree"})),
        ("TextTools", "upper", json!({"text": 5})),
        ("TextTools", "lower", json!({"text": "x"})),
        ("Nope", "upper", json!({})),
    ];
    for (plugin, method, args) in cases {
        let a = call(&c, plugin, method, args.clone());
        let b = run_argv(&c, &[plugin, method, &args.to_string()]);
        envelope(&a);
        envelope(&b);
        assert_eq!(a.code, b.code, "{plugin}.{method}");
        for key in ["success", "status"] {
            assert_eq!(a.json[key], b.json[key], "{plugin}.{method} {key}");
        }
        for key in ["code", "result", "error", "details", "plugin", "method"] {
            assert_eq!(
                a.json["data"].get(key),
                b.json["data"].get(key),
                "{plugin}.{method} data.{key}"
            );
        }
        assert_ne!(a.json["request_id"], b.json["request_id"]);
    }
}

#[test]
fn the_request_id_round_trips_through_result_plugin_and_audit() {
    let d = setup();
    let echo = d.write(
        "plugins/echo.sh",
        &std::fs::read_to_string(repo().join("plugins/echo.sh")).unwrap(),
        true,
    );
    let c = cfg(
        &d,
        json!({"plugins": {"Echo": cmd(echo.to_str().unwrap(), &["echo"])}}),
    );
    let id = "req-42:a_b.c";
    let input = serde_json::to_vec(&json!({
        "plugin": "Echo", "method": "echo", "args": {"k": [1, "two"]}, "request_id": id
    }))
    .unwrap();
    let r = run_stdin(&c, &input);
    let result = ok(&r);
    assert_eq!(r.json["request_id"], id);
    assert_eq!(r.json["data"]["request_id"], id);
    // What the plugin received on stdin.
    assert_eq!(
        result,
        &json!({"method": "echo", "args": {"k": [1, "two"]}, "request_id": id})
    );
    let lines = audit_of(&d, id);
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["started", "finished"]);
    assert!(lines
        .iter()
        .all(|l| l["call_id"] == r.json["data"]["call_id"]));

    // Echoed on a refusal too.
    let input = br#"{"plugin":"Nope","method":"echo","request_id":"refused-1"}"#;
    let r = run_stdin(&c, input);
    err(&r, 4, "not_whitelisted");
    assert_eq!(r.json["data"]["request_id"], "refused-1");
    let refused = audit_of(&d, "refused-1");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["call_id"], r.json["data"]["call_id"]);

    // Absent: a fresh UUIDv7 per call, on success and on error, also in the audit.
    let mut seen = Vec::new();
    for input in [
        request("Echo", "echo", json!({})),
        request("Echo", "nope", json!({})),
        b"not json".to_vec(),
    ] {
        let r = run_stdin(&c, &input);
        envelope(&r);
        let id = r.json["request_id"].as_str().unwrap().to_owned();
        assert_uuid_v7(&id);
        assert!(!audit_of(&d, &id).is_empty(), "{id} not audited");
        assert!(!seen.contains(&id));
        seen.push(id);
    }
}

#[test]
fn every_invocation_is_audited_with_its_outcome() {
    let d = setup();
    let fail = sh(&d, "fail", "exit 4");
    let c = tt_cfg(&d, json!({"Fail": cmd(&fail, &["go"])}));
    let secret = "s3cr3t-payload-123";
    let runs = vec![
        call(&c, "TextTools", "upper", json!({"text": secret})),
        call(&c, "TextTools", "noop", json!({})),
        call(&c, "Nope", "upper", json!({"text": secret})),
        call(&c, "TextTools", "lower", json!({"text": secret})),
        call(&c, "TextTools", "upper", json!({"text": 1, "x": secret})),
        call(&c, "Fail", "go", json!({"why": secret})),
        run_stdin(&c, b"{oops"),
        run_argv(
            &c,
            &["TextTools", "reverse", &json!({"text": secret}).to_string()],
        ),
        run_stdin(
            &d.join("missing.json"),
            &request("TextTools", "upper", json!({})),
        ),
    ];
    let raw = std::fs::read_to_string(d.join("entrypoint.log")).unwrap();
    assert!(
        !raw.contains(secret),
        "raw args reached the audit log:\n{raw}"
    );
    for r in &runs {
        envelope(r);
        let id = r.json["request_id"].as_str().unwrap();
        let lines = audit_of(&d, id);
        let last = lines.last().unwrap_or_else(|| panic!("{id} not audited"));
        let code = r.json["data"]["code"].as_str().unwrap_or("ok");
        assert_eq!(last["code"], code, "{last}");
        assert_eq!(last["exit_code"], r.code, "{last}");
        for key in ["plugin", "method"] {
            assert!(last.get(key).is_some(), "{key} missing: {last}");
            if let Some(v) = r.json["data"].get(key) {
                assert_eq!(&last[key], v, "{last}");
            }
        }
        for l in &lines {
            assert!(l.get("args").is_none(), "raw args present: {l}");
            if l["event"] == "started" {
                let sha = l["args_digest"].as_str().expect("args digest");
                assert!(sha.starts_with("sha256:") && sha.len() == 71, "{l}");
            }
        }
        let ran = lines.iter().any(|l| l["event"] == "started");
        assert_eq!(
            ran,
            r.json["data"].get("exit_code").is_some(),
            "a started entry iff a plugin ran: {lines:?}"
        );
    }
    // The digest is the canonical digest of the args the plugin got.
    let id = runs[0].json["request_id"].as_str().unwrap();
    let started = &audit_of(&d, id)[0];
    assert_eq!(started["event"], "started");
    assert_eq!(
        started["args_digest"],
        format!(
            "sha256:{}",
            upm::canonical::digest_hex(&json!({"text": secret}))
        )
    );
    assert_eq!(audit_of(&d, id).len(), 2);
}

#[test]
fn include_args_puts_the_args_in_the_started_entry() {
    let d = setup();
    cfg(
        &d,
        json!({"audit": {"include_args": true}, "plugins": {"TextTools": texttools()}}),
    );
    let r = call(
        &d.join("upm_config.json"),
        "TextTools",
        "upper",
        json!({"text": "visible"}),
    );
    ok(&r);
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert_eq!(lines[0]["event"], "started");
    assert_eq!(lines[0]["args"], json!({"text": "visible"}));
}

/// Redaction can make args far larger than the request (each secret becomes a 76-byte
/// digest object: a 300 KB request grew into a 40 MB entry at the 1 MiB cap, which the
/// writer refused, so the call could not run): past 4 MiB the entry keeps only the
/// args' digest, and the call runs.
#[test]
fn args_too_large_to_log_are_logged_by_digest_only() {
    let d = setup();
    let p = sh(&d, "ok", "read -r _; echo '{}'");
    d.write(
        "schemas/secrets.json",
        r#"{"type": "object", "properties": {"a": {"type": "array", "items": {"writeOnly": true}}}}"#,
        false,
    );
    let c = cfg(
        &d,
        json!({"audit": {"include_args": true}, "plugins": {"Sec": {
            "command": [p], "methods": {"m": {"schema": "schemas/secrets.json"}}
        }}}),
    );
    let r = call(&c, "Sec", "m", json!({ "a": vec![0; 100_000] }));
    ok(&r);
    let lines = audit_of(&d, r.json["request_id"].as_str().unwrap());
    assert_eq!(lines[0]["event"], "started");
    assert!(lines[0].get("args").is_none());
    assert!(
        lines[0]["args_omitted"]
            .as_str()
            .unwrap()
            .contains("over the 4194304"),
        "{}",
        lines[0]["args_omitted"]
    );
    assert!(lines[0]["args_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(lines[1]["event"], "finished");
}
