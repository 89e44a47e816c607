//! The auditor's tools: audit show and verify, what they read and how they find it.

use super::*;

#[test]
fn show_prints_one_call_and_filters() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let up = call_with_id(
        &config,
        "TextTools",
        "upper",
        json!({"text": "a"}),
        "show-up",
    );
    assert_eq!(up.code, 0, "{up:?}");
    let wc = call_with_id(
        &config,
        "TextTools",
        "wordcount",
        json!({"text": "a b"}),
        "show-wc",
    );
    assert_eq!(wc.code, 0, "{wc:?}");
    let bad = call_with_id(
        &config,
        "TextTools",
        "reverse",
        json!({"text": 1}),
        "show-bad",
    );
    assert_eq!(bad.code_word(), "invalid_args", "{bad:?}");
    let lines = raw_lines(&log_of(&dir));
    assert_eq!(lines.len(), 5);

    let show = |extra: &[&str]| {
        let mut argv = vec!["--config", config.to_str().unwrap(), "audit", "show"];
        argv.extend_from_slice(extra);
        let r = run_with(&argv, b"", &[]);
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout
    };
    assert_eq!(
        show(&["--request-id", "show-wc"]),
        format!("{}\n{}\n", lines[2], lines[3]),
        "the call's own lines, unchanged"
    );
    let count = |out: String| out.lines().count();
    assert_eq!(
        count(show(&["--plugin", "TextTools", "--method", "upper"])),
        2
    );
    assert_eq!(
        count(show(&["--outcome", "ok"])),
        2,
        "the two finished entries"
    );
    let refused = show(&["--outcome", "invalid_args"]);
    assert_eq!(refused, format!("{}\n", lines[4]));
    assert_eq!(count(show(&["--plugin", "Other"])), 0);
    let explicit = {
        let r = run_with(
            &[
                "audit",
                "show",
                log_of(&dir).to_str().unwrap(),
                "--method",
                "reverse",
            ],
            b"",
            &[],
        );
        r.stdout
    };
    assert_eq!(explicit, refused);

    let table = show(&["--format", "table", "--request-id", "show-up"]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].contains("REQUEST_ID") && rows[0].contains("EVENT"),
        "{table}"
    );
    assert!(
        rows[1].contains("show-up") && rows[1].contains("started"),
        "{table}"
    );
    assert!(
        rows[2].contains("finished") && rows[2].contains("ok"),
        "{table}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_verify_and_show_quietly() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    for _ in 0..2 {
        assert_eq!(call(&config, "TextTools", "noop", json!({})).code, 0);
    }
    let log = log_of(&dir);
    for sub in ["verify", "show"] {
        // `upm audit verify | head -0`: the pipe's read end is closed before upm writes.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(upm_bin())
            .args(["audit", sub, log.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{sub}: {stderr}");
        assert!(stderr.is_empty(), "{sub}: {stderr}");
    }
}

/// Without a PATH, `audit verify` and `audit show` read the config's log, found as a
/// call finds its config (`--config`, `UPM_CONFIG_PATH`, `./upm_config.json`), and
/// name the file(s) they read; with no config to find it in, they fail instead of
/// reading some `./entrypoint.log`.
#[test]
fn verify_and_show_read_the_configs_log_and_name_it() {
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("logs")).unwrap();
    let config = texttools_config(&dir, json!({ "path": "logs/audit.log" }), json!({}));
    let ok = call(&config, "TextTools", "upper", json!({"text": "a"}));
    assert_eq!(ok.code, 0, "{ok:?}");
    let log = dir.join("logs/audit.log");
    let c = config.to_str().unwrap();
    let env = [("UPM_CONFIG_PATH", c)];
    for (cwd, argv, env) in [
        (PathBuf::from("/"), vec!["--config", c], &[][..]),
        (PathBuf::from("/"), vec![], &env[..]),
        (dir.path.clone(), vec![], &[][..]),
    ] {
        let mut verify = argv.clone();
        verify.extend(["audit", "verify"]);
        let r = run_in(&cwd, &verify, b"", env);
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.starts_with("intact: 2 entries"), "{}", r.stdout);
        assert!(
            r.stdout.contains(&format!("checked: {}", log.display())),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout.contains(&format!("config {}", config.display())),
            "{}",
            r.stdout
        );
        let mut show = argv.clone();
        show.extend(["audit", "show", "--outcome", "success"]);
        let r = run_in(&cwd, &show, b"", env);
        assert_eq!(r.code, 0, "{r:?}");
        assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
        assert!(
            r.stderr.contains(&format!("read: {}", log.display())),
            "{}",
            r.stderr
        );
    }
    // No config where one is looked for: no log, however many entrypoint.logs lie about.
    let stray = TestDir::new();
    std::fs::copy(&log, stray.join("entrypoint.log")).unwrap();
    for sub in ["verify", "show"] {
        let r = run_in(&stray.path, &["audit", sub], b"", &[]);
        assert_eq!(r.code, 2, "{sub}: {r:?}");
        assert!(r.stdout.is_empty(), "{sub}: {}", r.stdout);
        assert!(r.stderr.contains("none to be found"), "{sub}: {}", r.stderr);
        assert!(
            r.stderr.contains("upm_config.json does not exist"),
            "{sub}: {}",
            r.stderr
        );
    }
    // UPM_LOG_FILE names the log of calls, so of these tools too.
    let r = run_in(
        &stray.path,
        &["audit", "verify"],
        b"",
        &[("UPM_LOG_FILE", "entrypoint.log")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("UPM_LOG_FILE"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "checked: {}",
            stray.join("entrypoint.log").display()
        )),
        "{}",
        r.stdout
    );
}

/// A call refused because its config is invalid is audited in the config's own log
/// (when the config reads that far), not in a second file beside it.
#[test]
fn a_refusal_for_an_invalid_config_goes_to_its_own_log() {
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("logs")).unwrap();
    let config = dir.config(&json!({
        "audit": { "path": "logs/audit.log" },
        "plugins": { "P": { "command": ["/bin/true"], "methods": { "m": { "schema": "missing.json" } } } }
    }));
    let r = call(&config, "P", "m", json!({}));
    assert_eq!((r.code, r.code_word()), (5, "config_error"), "{r:?}");
    let lines = raw_lines(&dir.join("logs/audit.log"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    let entry: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        (entry["event"].as_str(), entry["code"].as_str()),
        (Some("refused"), Some("config_error"))
    );
    assert!(!log_of(&dir).exists(), "no second log beside the config");
    // Invalid in itself (an unknown key, no plugins): its audit block still reads.
    dir.config(&json!({ "audit": { "path": "logs/audit.log" }, "plugns": {} }));
    let r = call(&config, "P", "m", json!({}));
    assert_eq!((r.code, r.code_word()), (5, "config_error"), "{r:?}");
    assert_eq!(raw_lines(&dir.join("logs/audit.log")).len(), 2);
    assert!(!log_of(&dir).exists(), "no second log beside the config");
    let r = run_with(
        &["--config", config.to_str().unwrap(), "audit", "verify"],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.starts_with("intact: 2 entries"), "{}", r.stdout);
}

/// `--outcome` takes the words results use, and refuses any other with the list.
#[test]
fn show_outcome_takes_result_words_and_refuses_others() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    assert_eq!(
        call(&config, "TextTools", "upper", json!({"text": "a"})).code,
        0
    );
    assert_eq!(
        call(&config, "TextTools", "upper", json!({"text": 1})).code,
        10
    );
    let c = config.to_str().unwrap();
    let show = |word: &str| {
        run_with(
            &["--config", c, "audit", "show", "--outcome", word],
            b"",
            &[],
        )
    };
    let r = show("success");
    assert_eq!((r.code, r.stdout.lines().count()), (0, 1), "{r:?}");
    assert!(r.stdout.contains("\"event\":\"finished\""), "{}", r.stdout);
    let r = show("invalid_args");
    assert_eq!((r.code, r.stdout.lines().count()), (0, 1), "{r:?}");
    let r = show("sucess");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stdout.is_empty());
    for word in ["success", "invalid_args", "plugin_failed", "timeout"] {
        assert!(r.stderr.contains(word), "{word}: {}", r.stderr);
    }
}

/// Every line of the log set (rotated files first, by name, then the log), as JSON.
fn log_set_entries(dir: &TestDir) -> Vec<Value> {
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(&dir.path)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("entrypoint.log.")
        })
        .collect();
    rotated.sort();
    rotated.push(log_of(dir));
    rotated
        .iter()
        .flat_map(|f| raw_lines(f))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

/// Waits until the log set holds `n` `started` entries for `rid`.
fn wait_for_started(dir: &TestDir, rid: &str, n: usize) {
    let started = || {
        log_set_entries(dir)
            .iter()
            .filter(|e| e["event"] == "started" && e["request_id"] == rid)
            .count()
    };
    for _ in 0..500 {
        if started() >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no started entry for {rid}");
}

/// A call whose upm was SIGKILLed mid-call has `started` and nothing more: `show
/// --unfinished` finds it (and only it: not a finished call with the same request_id,
/// nor one cancelled by SIGTERM, which has its `finished`), across rotated files, and
/// `verify` counts it without changing its exit code.
#[test]
fn show_unfinished_finds_the_calls_that_never_finished_and_verify_counts_them() {
    let dir = TestDir::new();
    let napper = dir.write(
        "napper.py",
        "#!/usr/bin/python3 -IS\nimport json, sys, time\n\
         req = json.load(sys.stdin)\ntime.sleep(req[\"args\"][\"ms\"] / 1000.0)\nprint(\"{}\")\n",
        true,
    );
    // Every append rotates: a call's `started` and `finished` are in different files.
    let config = dir.config(&json!({
        "require_schemas": false,
        "audit": {"rotate": {"max_bytes": 1}},
        "plugins": { "Napper": { "command": [napper], "allowed_methods": ["nap"] } }
    }));
    let nap = |ms: u64, rid: &str| {
        serde_json::to_vec(&json!({"plugin": "Napper", "method": "nap",
            "args": {"ms": ms}, "request_id": rid}))
        .unwrap()
    };
    // The killed upm cannot remove its private directory (/tmp/upm-<request_id>-...).
    let k = format!("unfinished{}", std::process::id());
    let k = k.as_str();
    assert_eq!(run_stdin(&config, &nap(0, k)).code, 0);

    // SIGKILL once its `started` is durable: no `finished` is ever written.
    let mut killed = start_call(&config, &nap(60_000, k));
    wait_for_started(&dir, k, 2);
    killed.kill().unwrap();
    killed.wait().unwrap();

    // SIGTERM: the call ends `cancelled`, with its `finished` entry.
    let mut stopped = start_call(&config, &nap(60_000, "c"));
    wait_for_started(&dir, "c", 1);
    // SAFETY: a plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(stopped.id() as i32, libc::SIGTERM) }, 0);
    stopped.wait().unwrap();

    let entries = log_set_entries(&dir);
    let cancelled: Vec<&Value> = entries
        .iter()
        .filter(|e| e["request_id"] == "c" && e["event"] == "finished")
        .collect();
    assert_eq!(cancelled.len(), 1, "{entries:?}");
    assert_eq!(cancelled[0]["code"], "cancelled");
    let finished_ids: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e["event"] == "finished")
        .map(|e| e["call_id"].as_str().unwrap())
        .collect();
    let never: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["event"] == "started" && !finished_ids.contains(e["call_id"].as_str().unwrap())
        })
        .collect();
    assert_eq!(never.len(), 1, "{entries:?}");
    assert_eq!(never[0]["request_id"], k);
    assert!(
        std::fs::read_dir(&dir.path)
            .unwrap()
            .flatten()
            .filter(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("entrypoint.log."))
            .count()
            >= 4,
        "rotated at every append: {:?}",
        std::fs::read_dir(&dir.path)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );

    let show = |extra: &[&str]| {
        let mut argv = vec!["--config", config.to_str().unwrap(), "audit", "show"];
        argv.extend_from_slice(extra);
        let r = run_with(&argv, b"", &[]);
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout
    };
    let out = show(&["--unfinished"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, [never[0].clone()], "{out}");
    // Combined with the other filters.
    assert_eq!(show(&["--unfinished", "--request-id", k]), out);
    assert_eq!(show(&["--unfinished", "--plugin", "Napper"]), out);
    assert_eq!(show(&["--unfinished", "--request-id", "c"]), "");
    assert_eq!(show(&["--unfinished", "--outcome", "ok"]), "");
    let id = never[0]["call_id"].as_str().unwrap();
    assert_eq!(show(&["--unfinished", "--call-id", id]), out);

    let (code, report) = verify(&log_of(&dir), None);
    assert_eq!(code, 0, "{report}");
    assert!(report.starts_with("intact"), "{report}");
    assert!(
        report.contains("1 call started and did not finish") && report.contains("still running"),
        "{report}"
    );
    for e in std::fs::read_dir("/tmp").unwrap().flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(&format!("upm-{k}-"))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A batch may repeat a request_id: the table's call_id column tells its calls apart.
#[test]
fn the_table_shows_each_calls_call_id() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let req = json!({"plugin": "TextTools", "method": "upper", "args": {"text": "a"},
                     "request_id": "dup"});
    let input = format!("{req}\n{req}\n");
    let r = run_with(
        &["run", "--jsonl", "--config", config.to_str().unwrap()],
        input.as_bytes(),
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let ids: Vec<String> = r
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["data"]["call_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    let t = run_with(
        &[
            "--config",
            config.to_str().unwrap(),
            "audit",
            "show",
            "--format",
            "table",
            "--request-id",
            "dup",
        ],
        b"",
        &[],
    );
    assert_eq!(t.code, 0, "{t:?}");
    let rows: Vec<&str> = t.stdout.lines().collect();
    assert_eq!(rows.len(), 5, "{}", t.stdout);
    assert!(rows[0].contains("CALL_ID"), "{}", t.stdout);
    for id in &ids {
        let of_call: Vec<&&str> = rows.iter().filter(|r| r.contains(id.as_str())).collect();
        assert_eq!(
            of_call.len(),
            2,
            "started and finished of {id}: {}",
            t.stdout
        );
    }
}

/// `upm audit keygen` takes `upm keygen`'s `--secret S --public P`, and still its
/// positional form; mixing the two is a usage error.
#[test]
fn audit_keygen_takes_the_same_options_as_keygen() {
    let dir = TestDir::new();
    let path = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let (s, p) = (path("a.key"), path("a.pub"));
    let r = run_with(
        &["audit", "keygen", "--secret", &s, "--public", &p],
        b"",
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(std::fs::read_to_string(&p).unwrap().contains("PUBLIC KEY"));
    let mode = std::fs::metadata(&s).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (s2, p2) = (path("b.key"), path("b.pub"));
    let r = run_with(&["audit", "keygen", &s2, &p2], b"", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(std::fs::read_to_string(&p2).unwrap().contains("PUBLIC KEY"));
    let r = run_with(
        &[
            "audit",
            "keygen",
            &path("c.key"),
            "--secret",
            &path("d.key"),
            &path("c.pub"),
        ],
        b"",
        &[],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!dir.join("c.key").exists() && !dir.join("d.key").exists());
}
