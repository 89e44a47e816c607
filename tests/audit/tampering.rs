//! Edits, deletions, insertions and reorderings are found and named; signed checkpoints.

use super::*;

/// A log of 5 calls (10 lines) to tamper with.
fn tamper_fixture() -> (TestDir, Vec<String>) {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    for i in 0..5 {
        let r = call(
            &config,
            "TextTools",
            "upper",
            json!({"text": format!("t{i}")}),
        );
        assert_eq!(r.code, 0, "{r:?}");
    }
    let lines = raw_lines(&log_of(&dir));
    assert_eq!(lines.len(), 10);
    (dir, lines)
}

fn write_log(dir: &TestDir, name: &str, lines: &[String]) -> PathBuf {
    let mut text = lines.join("\n");
    text.push('\n');
    dir.write(name, &text, false)
}

#[test]
fn editing_deleting_inserting_or_reordering_a_line_is_found_and_named() {
    let (dir, orig) = tamper_fixture();
    let (code, report) = verify(&write_log(&dir, "control.log", &orig), None);
    assert_eq!(code, 0, "the untouched copy verifies: {report}");

    // A valid entry from another log, with the seq the insertion point expects.
    let (_other, foreign) = tamper_fixture();

    let edit = |n: usize, from: &str, to: &str| {
        let mut l = orig.clone();
        assert!(l[n - 1].contains(from), "{}", l[n - 1]);
        l[n - 1] = l[n - 1].replacen(from, to, 1);
        l
    };
    let delete = |n: usize| {
        let mut l = orig.clone();
        l.remove(n - 1);
        l
    };
    let insert = |n: usize, line: &str| {
        let mut l = orig.clone();
        l.insert(n - 1, line.to_owned());
        l
    };
    let swap = |a: usize, b: usize| {
        let mut l = orig.clone();
        l.swap(a - 1, b - 1);
        l
    };
    let cases: Vec<(&str, Vec<String>, usize)> = vec![
        (
            "edit an arg digest",
            edit(3, "\"args_digest\":\"sha256:", "\"args_digest\":\"sha256:0"),
            3,
        ),
        (
            "edit the outcome",
            edit(6, "\"code\":\"ok\"", "\"code\":\"no\""),
            6,
        ),
        (
            "edit the first line",
            edit(1, "\"event\":\"started\"", "\"event\":\"startet\""),
            1,
        ),
        ("delete a middle line", delete(4), 4),
        ("delete the first line", delete(1), 1),
        ("insert a duplicate", insert(3, &orig[1]), 3),
        ("insert a foreign entry", insert(3, &foreign[2]), 3),
        (
            "insert a non-entry",
            insert(7, "{\"event\":\"started\",\"note\":\"hi\"}"),
            7,
        ),
        ("swap neighbours", swap(5, 6), 5),
        ("swap distant lines", swap(2, 8), 2),
    ];
    for (what, lines, line) in cases {
        let name = format!("{}.log", what.replace(' ', "-"));
        let path = write_log(&dir, &name, &lines);
        let (code, report) = verify(&path, None);
        assert_eq!(code, 1, "{what}: {report}");
        assert!(report.contains("BROKEN"), "{what}: {report}");
        assert!(
            names_line(&report, line),
            "{what}: line {line} not named in: {report}"
        );
    }
}

#[test]
fn signed_checkpoints_through_the_binary() {
    let dir = TestDir::new();
    let (secret, public) = (dir.join("audit.pem"), dir.join("audit.pub"));
    let r = run_with(
        &[
            "audit",
            "keygen",
            secret.to_str().unwrap(),
            public.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let r = run_with(
        &[
            "audit",
            "keygen",
            secret.to_str().unwrap(),
            dir.join("x.pub").to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_ne!(r.code, 0, "keygen never overwrites a key");

    let config = texttools_config(
        &dir,
        json!({ "signing_key": secret, "sign_every": 5 }),
        json!({}),
    );
    for _ in 0..20 {
        assert_eq!(call(&config, "TextTools", "noop", json!({})).code, 0);
    }
    let entries = dir.audit_lines();
    let checkpoints = entries
        .iter()
        .filter(|e| e["event"] == "checkpoint")
        .count();
    assert!(checkpoints >= 8, "{checkpoints} checkpoints for 40 entries");
    for e in &entries {
        assert!(e["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }

    let log = log_of(&dir);
    let (code, report) = verify(&log, Some(&public));
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains(&format!("{checkpoints} checkpoint signature(s) verified")),
        "{report}"
    );
    assert!(!report.contains("not checked"), "{report}");
    // Without the key the chain is intact, and the report says what went unchecked.
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(report.starts_with("intact"), "{report}");
    assert!(
        report.contains(&format!(
            "note: {checkpoints} checkpoint signature(s) not checked: no --key given"
        )),
        "{report}"
    );

    let other = TestDir::new();
    let (s2, p2) = (other.join("o.pem"), other.join("o.pub"));
    assert_eq!(
        run_with(
            &[
                "audit",
                "keygen",
                s2.to_str().unwrap(),
                p2.to_str().unwrap()
            ],
            b"",
            &[]
        )
        .code,
        0
    );
    let (code, report) = verify(&log, Some(&p2));
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("signature does not verify"), "{report}");
}

/// A log whose signing key was changed: each key alone fails at the other's checkpoints;
/// both given (`--key` twice) check every checkpoint.
#[test]
fn a_changed_signing_key_verifies_with_both_keys() {
    let dir = TestDir::new();
    let keys = TestDir::new();
    let (a, a_pub) = (keys.join("a.pem"), keys.join("a.pub"));
    let (b, b_pub) = (keys.join("b.pem"), keys.join("b.pub"));
    keygen(&a, &a_pub);
    keygen(&b, &b_pub);
    for secret in [&a, &b] {
        let config = texttools_config(
            &dir,
            json!({ "signing_key": secret, "sign_every": 2 }),
            json!({}),
        );
        for _ in 0..3 {
            assert_eq!(call(&config, "TextTools", "noop", json!({})).code, 0);
        }
    }
    let log = log_of(&dir);
    let checkpoints = dir
        .audit_lines()
        .iter()
        .filter(|e| e["event"] == "checkpoint")
        .count();
    for one in [&a_pub, &b_pub] {
        let (code, report) = verify(&log, Some(one));
        assert_eq!(code, 1, "{report}");
        assert!(report.contains("signature does not verify"), "{report}");
    }
    let argv = [
        "audit",
        "verify",
        log.to_str().unwrap(),
        "--key",
        a_pub.to_str().unwrap(),
        "--key",
        b_pub.to_str().unwrap(),
    ];
    let r = run_with(&argv, b"", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("intact"), "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("{checkpoints} checkpoint signature(s) verified")),
        "{r:?}"
    );
}
