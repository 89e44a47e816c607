//! What each call writes: started then finished, or one refused; statuses and limits; never a secret.

use super::*;

#[test]
fn an_executed_call_writes_started_then_finished() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let r = call(&config, "TextTools", "upper", json!({"text": "hello"}));
    assert_eq!(r.code, 0, "{r:?}");
    let rid = r.json["request_id"].as_str().unwrap().to_owned();

    let lines = dir.audit_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let (s, f) = (&lines[0], &lines[1]);
    for e in &lines {
        assert_eq!(e["request_id"], rid.as_str());
        let ts = e["ts"].as_str().unwrap();
        assert!(is_rfc3339_utc_ms(ts), "ts {ts:?}");
    }
    assert_eq!(s["seq"], 1);
    assert_eq!(f["seq"], 2);
    assert_eq!(f["prev"], s["hash"]);

    // started: who asked, what, with which bytes, under which sandbox.
    assert_eq!(s["event"], "started");
    assert_eq!(s["plugin"], "TextTools");
    assert_eq!(s["method"], "upper");
    let caller = &s["caller"];
    assert_eq!(caller["uid"], nix::unistd::getuid().as_raw());
    assert_eq!(caller["gid"], nix::unistd::getgid().as_raw());
    assert_eq!(caller["ppid"], std::process::id());
    assert_eq!(
        caller["parent_exe"].as_str().map(PathBuf::from),
        Some(std::env::current_exe().unwrap()),
        "the parent is this test binary"
    );
    assert_eq!(
        s["args_digest"],
        format!("sha256:{}", sha256_hex(br#"{"text":"hello"}"#)),
    );
    assert!(s.get("args").is_none(), "args are not logged by default");
    assert_eq!(
        s["plugin_files"]["exec_sha256"],
        sha256_hex(&std::fs::read(texttools_bin()).unwrap())
    );
    assert_eq!(
        s["config_sha256"],
        format!("sha256:{}", sha256_hex(&std::fs::read(&config).unwrap()))
    );
    assert!(s["sandbox_requested"]["layers"].is_object(), "{s:#}");

    // finished: how it ended, what it used, what was in force.
    assert_eq!(f["event"], "finished");
    assert_eq!(f["code"], "ok");
    assert_eq!(f["exit_code"], 0);
    assert_eq!(f["plugin_exit_code"], 0);
    assert_eq!(f["ran"], true);
    assert!(f.get("limit").is_some() && f["limit"].is_null(), "{f:#}");
    for k in ["wall_ms", "cpu_user_ms", "cpu_system_ms", "max_rss_kb"] {
        assert!(f["usage"][k].is_number(), "usage.{k} in {f:#}");
    }
    assert!(f["usage"]["max_rss_kb"].as_u64().unwrap() > 0);
    // The plugin printed `{"text":"HELLO"}\n`: 17 bytes, which became the result.
    assert_eq!(
        f["output_bytes"],
        json!({"stdout": 17, "stderr": 0}),
        "{f:#}"
    );
    // The sandbox really in force: in `finished`, or recorded as exactly what `started` said.
    let in_force = if f["sandbox"] == json!({"same_as_started": true}) {
        &s["sandbox_requested"]
    } else {
        &f["sandbox"]
    };
    assert!(in_force["layers"].is_object(), "{f:#}");
    assert_eq!(r.json["data"]["sandbox"], *in_force);

    jq_reads_every_line(&log_of(&dir), 2);
    assert_eq!(verify(&log_of(&dir), None).0, 0);
}

#[test]
fn exit_status_signal_and_limit_are_recorded() {
    let dir = TestDir::new();
    let exit7 = dir.write("exit7.sh", "#!/bin/sh\ncat >/dev/null\nexit 7\n", true);
    let term = dir.write(
        "term.sh",
        "#!/bin/sh\ncat >/dev/null\nkill -TERM $$\nsleep 5\n",
        true,
    );
    let slow = dir.write("slow.sh", "#!/bin/sh\ncat >/dev/null\nsleep 5\n", true);
    let config = texttools_config(
        &dir,
        json!({}),
        json!({
            "Exit7": { "command": [exit7], "allowed_methods": ["go"] },
            "Term": { "command": [term], "allowed_methods": ["go"] },
            "Slow": { "command": [slow], "allowed_methods": ["go"],
                      "sandbox": { "limits": { "timeout_ms": 300 } } }
        }),
    );
    for plugin in ["Exit7", "Term", "Slow"] {
        let r = call(&config, plugin, "go", json!({}));
        assert_ne!(r.code, 0, "{plugin}: {r:?}");
    }
    let lines = dir.audit_lines();
    let finished: Vec<&Value> = lines.iter().filter(|e| e["event"] == "finished").collect();
    assert_eq!(finished.len(), 3, "{lines:#?}");

    assert_eq!(finished[0]["code"], "plugin_failed");
    assert_eq!(finished[0]["plugin_exit_code"], 7);
    assert!(finished[0].get("plugin_signal").is_none());

    assert_eq!(finished[1]["code"], "plugin_failed");
    assert_eq!(finished[1]["plugin_signal"], libc::SIGTERM);
    assert!(finished[1].get("plugin_exit_code").is_none());

    assert_eq!(finished[2]["code"], "timeout");
    assert_eq!(finished[2]["limit"], "timeout");
    assert!(finished[2]["usage"]["wall_ms"].as_f64().unwrap() >= 300.0);
    assert_eq!(verify(&log_of(&dir), None).0, 0);
}

#[test]
fn each_refusal_is_exactly_one_refused_entry() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let cases = [
        ("Nope", "upper", json!({"text": "x"}), "not_whitelisted"),
        (
            "TextTools",
            "shout",
            json!({"text": "x"}),
            "method_not_allowed",
        ),
        ("TextTools", "upper", json!({"text": 5}), "invalid_args"),
    ];
    for (plugin, method, args, code) in cases {
        let before = dir.audit_lines().len();
        let r = call(&config, plugin, method, args);
        assert_eq!(r.code_word(), code, "{r:?}");
        let lines = dir.audit_lines();
        assert_eq!(lines.len(), before + 1, "one entry for {code}: {lines:#?}");
        let e = lines.last().unwrap();
        assert_eq!(e["event"], "refused");
        assert_eq!(e["code"], code);
        assert_eq!(e["exit_code"], r.code);
        assert_eq!(e["request_id"], r.json["request_id"]);
        assert_eq!(e["plugin"], plugin);
        assert_eq!(e["method"], method);
        assert!(is_rfc3339_utc_ms(e["ts"].as_str().unwrap()));
    }

    // A broken config is refused too, into the log beside it.
    let bad = TestDir::new();
    let bad_config = bad.config(&json!({ "plugins": {}, "sandbox": { "netwrok": true } }));
    let r = call(&bad_config, "TextTools", "upper", json!({"text": "x"}));
    assert_eq!(r.code_word(), "config_error", "{r:?}");
    let lines = bad.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["event"], "refused");
    assert_eq!(lines[0]["code"], "config_error");
    assert_eq!(lines[0]["request_id"], r.json["request_id"]);

    let total = raw_lines(&log_of(&dir)).len();
    jq_reads_every_line(&log_of(&dir), total);
    assert_eq!(verify(&log_of(&dir), None).0, 0);
    assert_eq!(verify(&log_of(&bad), None).0, 0);
}

#[test]
fn secret_args_never_reach_the_log() {
    let dir = TestDir::new();
    let schema = dir.write(
        "secret.json",
        &json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "user": { "type": "string" },
                "password": { "type": "string", "minLength": 8, "writeOnly": true },
                "token": { "x-upm-secret": true },
                "nested": { "type": "object", "properties": {
                    "api_key": { "type": "string", "writeOnly": true } } }
            },
            "required": ["user", "password"],
            "additionalProperties": false
        })
        .to_string(),
        false,
    );
    let config = dir.config(&json!({
        "audit": { "include_args": true },
        "plugins": { "TextTools": {
            "command": [texttools_bin()],
            "methods": { "noop": { "schema": schema } }
        } }
    }));
    let nonce = std::process::id();
    let password = format!("Pa55-word-{nonce}-zq");
    let token = format!("tok-{nonce}-xy");
    let api_key = format!("ak-{nonce}-vw");
    let user = format!("alice-{nonce}");
    let args = json!({ "user": user, "password": password, "token": {"t": token},
                       "nested": { "api_key": api_key } });

    let r = call(&config, "TextTools", "noop", args.clone());
    assert_eq!(r.code, 0, "{r:?}");
    // The argv form, and a refusal (user is not a string) carrying the same secrets.
    let argv_args = serde_json::to_string(&args).unwrap();
    let r = run_argv(&config, &["TextTools", "noop", &argv_args]);
    assert_eq!(r.code, 0, "{r:?}");
    let mut bad = args.clone();
    bad["user"] = json!(42);
    bad["password"] = json!("zQ7!");
    let r = call(&config, "TextTools", "noop", bad);
    assert_eq!(r.code_word(), "invalid_args", "{r:?}");

    let bytes = std::fs::read(log_of(&dir)).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    for secret in [password.as_str(), token.as_str(), api_key.as_str(), "zQ7!"] {
        assert!(
            !text.contains(secret),
            "secret {secret:?} is in the log:\n{text}"
        );
    }
    assert!(text.contains(&user), "non-secret args are logged");

    let started: Vec<Value> = dir
        .audit_lines()
        .into_iter()
        .filter(|e| e["event"] == "started")
        .collect();
    assert_eq!(started.len(), 2);
    for s in &started {
        let logged = &s["args"];
        assert_eq!(logged["user"], user.as_str());
        let digest = |v: &Value| sha256_hex(serde_json::to_string(v).unwrap().as_bytes());
        assert_eq!(
            logged["password"],
            json!({"sha256": digest(&json!(password))})
        );
        assert_eq!(
            logged["token"],
            json!({"sha256": digest(&json!({"t": token}))})
        );
        assert_eq!(
            logged["nested"]["api_key"],
            json!({"sha256": digest(&json!(api_key))})
        );
    }
    assert_eq!(verify(&log_of(&dir), None).0, 0);
}
