//! Exit 2 and 3: a command line or request upm cannot read (usage, bad_request, request_too_large).

use super::*;

#[test]
fn argv_form_with_the_wrong_argument_count_is_a_usage_error() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    for argv in [
        vec!["TextTools"],
        vec!["TextTools", "upper"],
        vec!["TextTools", "upper", "{}", "extra"],
    ] {
        let r = run_argv(&c, &argv);
        err(&r, 2, "usage");
        assert!(error_text(&r).contains("usage: upm"), "{}", r.stdout);
        assert!(r.stderr.contains("usage"), "also on stderr: {}", r.stderr);
        let id = r.json["request_id"].as_str().unwrap();
        assert_uuid_v7(id);
        // A refusal like any other: audited.
        let lines = audit_of(&d, id);
        assert_eq!(lines.len(), 1, "usage error not audited: {lines:?}");
        assert_eq!(lines[0]["event"], "refused");
        assert_eq!(lines[0]["code"], "usage");
        assert_eq!(lines[0]["exit_code"], 2);
    }
}

#[test]
fn malformed_requests_are_bad_requests() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    let deep_args = format!(r#"{{"plugin":"TextTools","method":"upper","args":{deep}}}"#);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"plugin=TextTools".to_vec(), "not valid JSON"),
        (
            "truncated JSON",
            br#"{"plugin": "TextTools""#.to_vec(),
            "not valid JSON",
        ),
        ("empty", b"".to_vec(), "empty"),
        (
            "bad UTF-8",
            b"{\"plugin\": \"Text\xffTools\", \"method\": \"upper\"}".to_vec(),
            "not valid UTF-8",
        ),
        (
            "10,000-deep array",
            deep.clone().into_bytes(),
            "nested too deeply",
        ),
        (
            "10,000-deep args",
            deep_args.into_bytes(),
            "nested too deeply",
        ),
        (
            "an integer JSON parsing would round",
            br#"{"plugin": "TextTools", "method": "upper", "args": {"text": "x", "n": 18446744073709551616}}"#.to_vec(),
            "18446744073709551616, which does not fit in 64 bits",
        ),
        (
            "unknown top-level field",
            br#"{"plugin":"TextTools","method":"upper","args":{"text":"x"},"user":"root"}"#
                .to_vec(),
            "unknown field `user`",
        ),
        ("an array", b"[1, 2]".to_vec(), "expected a JSON object"),
        (
            "unknown field, valid id",
            br#"{"plugin":"TextTools","method":"upper","request_id":"keep-me","x":1}"#.to_vec(),
            "unknown field `x`",
        ),
        (
            "a string",
            b"\"TextTools upper\"".to_vec(),
            "expected a JSON object",
        ),
        ("null", b"null".to_vec(), "expected a JSON object"),
        (
            "plugin missing",
            br#"{"method":"upper","args":{}}"#.to_vec(),
            "missing field `plugin`",
        ),
        (
            "plugin not a string",
            br#"{"plugin":7,"method":"upper"}"#.to_vec(),
            "not a valid call",
        ),
    ];
    for (what, input, says) in cases {
        let r = run_stdin(&c, &input);
        err(&r, 3, "bad_request");
        assert!(
            error_text(&r).contains(says),
            "{what}: expected {says:?} in {}",
            r.stdout
        );
        assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
        if what.contains("valid id") {
            assert_eq!(r.json["request_id"], "keep-me", "a valid id is echoed");
        }
    }
    // The argv form's args are checked the same way.
    let r = run_argv(&c, &["TextTools", "upper", "{not json"]);
    err(&r, 3, "bad_request");
    assert!(
        error_text(&r).starts_with("Error parsing JSON args: "),
        "{}",
        r.stdout
    );
    let r = run_argv(&c, &["TextTools", "upper", &deep]);
    err(&r, 3, "bad_request");
    assert!(error_text(&r).contains("nested too deeply"), "{}", r.stdout);
}

/// The argv form as the OS hands it: an argument that is not UTF-8 is a refused call,
/// answered in JSON and audited, wherever it is (clap would print plain text).
#[test]
fn argv_form_arguments_that_are_not_utf8_are_bad_requests() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let bad = OsStr::from_bytes(b"up\xffper");
    for (i, argv) in [
        [bad, OsStr::new("upper"), OsStr::new("{}")],
        [OsStr::new("TextTools"), bad, OsStr::new("{}")],
        [
            OsStr::new("TextTools"),
            OsStr::new("upper"),
            OsStr::from_bytes(b"{\"text\": \"\xff\"}"),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = std::process::Command::new(upm_bin());
        cmd.arg("--config")
            .arg(&c)
            .args(argv)
            .env_remove("UPM_LOG_FILE");
        let r = run_command(cmd, b"");
        err(&r, 3, "bad_request");
        assert!(
            error_text(&r).contains("not valid UTF-8"),
            "{i}: {}",
            r.stdout
        );
        let id = r.json["request_id"].as_str().unwrap();
        let lines = audit_of(&d, id);
        assert_eq!(lines.len(), 1, "{i}: {lines:?}");
        assert_eq!(lines[0]["event"], "refused");
        assert_eq!(lines[0]["code"], "bad_request");
    }
}

#[test]
fn bad_request_ids_are_refused_and_replaced_by_a_fresh_one() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let long = "a".repeat(129);
    for bad in [
        json!("a b"),
        json!(long),
        json!(""),
        json!("id/../x"),
        json!(42),
    ] {
        let input = serde_json::to_vec(&json!({
            "plugin": "TextTools", "method": "upper", "args": {"text": "x"}, "request_id": bad
        }))
        .unwrap();
        let r = run_stdin(&c, &input);
        err(&r, 3, "bad_request");
        let id = r.json["request_id"].as_str().unwrap();
        assert_ne!(Some(id), bad.as_str(), "an invalid id is never echoed");
        assert_uuid_v7(id);
    }
    // 128 characters is the longest valid id.
    let max = "b".repeat(128);
    let input = serde_json::to_vec(&json!({
        "plugin": "TextTools", "method": "upper", "args": {"text": "x"}, "request_id": max
    }))
    .unwrap();
    let r = run_stdin(&c, &input);
    ok(&r);
    assert_eq!(r.json["request_id"], max.as_str());
}

#[test]
fn stdin_over_a_small_cap_is_too_large_and_the_cap_itself_is_fine() {
    let d = setup();
    let c = cfg(
        &d,
        json!({"max_request_bytes": 64, "plugins": {"TextTools": texttools()}}),
    );
    let base = br#"{"plugin":"TextTools","method":"upper","args":{"text":"x"}}"#;
    let pad = |n: usize| {
        let mut v = base.to_vec();
        v.resize(n, b' ');
        v
    };
    let r = run_stdin(&c, &pad(64));
    assert_eq!(ok(&r), &json!({"text": "X"}), "exactly at the cap");
    let mut with_newline = pad(64);
    with_newline.push(b'\n');
    let r = run_stdin(&c, &with_newline);
    assert_eq!(
        ok(&r),
        &json!({"text": "X"}),
        "a final newline is not counted"
    );
    let r = run_stdin(&c, &pad(65));
    err(&r, 3, "request_too_large");
    assert!(error_text(&r).contains("64-byte limit"), "{}", r.stdout);
    let r = run_stdin(&c, &pad(10_000));
    err(&r, 3, "request_too_large");

    // The argv form's args count against the same cap.
    let args = json!({"text": "y".repeat(80)}).to_string();
    let r = run_argv(&c, &["TextTools", "upper", &args]);
    err(&r, 3, "request_too_large");
    assert_eq!(r.json["data"]["plugin"], "TextTools");
}

/// Default 1 MiB cap, ~2 MiB offered on a pipe that is never closed: upm must
/// answer after reading one byte past the cap, neither waiting for EOF nor
/// draining the rest.
#[test]
fn stdin_over_the_default_cap_is_refused_without_reading_everything() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let mut child = Command::new(upm_bin())
        .args(["run", "--config", c.to_str().unwrap()])
        .env_remove("UPM_CONFIG_PATH")
        .env_remove("UPM_LOG_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let mut input = br#"{"plugin":"TextTools","method":"upper","args":{"text":""#.to_vec();
        input.resize(2 * 1024 * 1024, b'z');
        let written = stdin.write_all(&input);
        // Keep the pipe open (no EOF) until the test is done.
        let _ = done_rx.recv_timeout(Duration::from_secs(20));
        written
    });
    let status = common::wait_at_most(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    let _ = done_tx.send(());
    let written = writer.join().unwrap();
    let status = status.expect("upm must answer without waiting for EOF");
    let json: Value = serde_json::from_str(out.trim()).expect("one JSON result");
    let r = Run {
        code: status.code().unwrap_or(-1),
        json,
        stdout: out,
        stderr: String::new(),
    };
    err(&r, 3, "request_too_large");
    assert!(
        error_text(&r).contains("1048576-byte limit"),
        "{}",
        r.stdout
    );
    assert!(
        written.is_err(),
        "upm must not have drained all 2 MiB (the writer should hit a closed pipe)"
    );
}
