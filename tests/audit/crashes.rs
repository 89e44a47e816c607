//! kill -9 at any moment, and torn or foreign tails: the log stays verifiable, and nothing is chained onto what was not a crash.

use super::*;

#[test]
fn kill_9_at_random_moments_leaves_a_verifiable_log() {
    let dir = TestDir::new();
    let napper = dir.write(
        "napper.py",
        "#!/usr/bin/python3 -IS\nimport json, sys, time\n\
         req = json.load(sys.stdin)\ntime.sleep(req[\"args\"][\"ms\"] / 1000.0)\nprint(\"{}\")\n",
        true,
    );
    let config = dir.config(&json!({
        "require_schemas": false,
        "plugins": { "Napper": { "command": [napper], "allowed_methods": ["nap"] } }
    }));
    let seed_rng = Rng::from_env("kill -9 test");
    let tag = format!("k9{}", std::process::id());
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 75;

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let config = config.clone();
            let tag = tag.clone();
            let mut rng = Rng(seed_rng
                .0
                .wrapping_add(t.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                | 1);
            std::thread::spawn(move || {
                let mut calls = Vec::new();
                for i in 0..PER_THREAD {
                    let rid = format!("{tag}-{t}-{i}");
                    let ms = rng.below(15);
                    let req = json!({"plugin": "Napper", "method": "nap",
                                     "args": {"ms": ms}, "request_id": rid});
                    let mut child = spawn_upm(&config, &serde_json::to_vec(&req).unwrap());
                    // Half the calls are killed: some in the first 20 ms (before or
                    // around `started`), some later (while the plugin runs, or after).
                    if rng.below(2) == 0 {
                        let delay = if rng.below(2) == 0 {
                            rng.below(21)
                        } else {
                            20 + rng.below(130)
                        };
                        std::thread::sleep(Duration::from_millis(delay));
                        let _ = child.kill();
                    }
                    let out = child.wait_with_output().expect("wait upm");
                    let killed = out.status.signal() == Some(libc::SIGKILL);
                    calls.push((rid, killed, out.status.code(), out.stdout));
                }
                calls
            })
        })
        .collect();
    let calls: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();

    // Killed upm processes cannot remove their private working directories.
    let cleanup = || {
        if let Ok(rd) = std::fs::read_dir("/tmp") {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("upm-{tag}-"))
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    };

    // No plugin (nor sandbox init) outlives its killed upm: parent-death signal.
    let marker = dir.path.to_string_lossy().into_owned();
    let mut left = processes_mentioning(&marker);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = processes_mentioning(&marker);
    }
    assert!(left.is_empty(), "processes outlived upm: {left:?}");

    let log = log_of(&dir);
    let bytes = std::fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut entries = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str::<Value>(l.trim_end_matches('\n')) {
            Ok(v) => entries.push(v),
            Err(_) => {
                // A torn write is allowed only as the very last bytes, or when
                // the next line is the recovery entry that seals it.
                let is_last = i + 1 == lines.len() && !l.ends_with('\n');
                let recovered = lines
                    .get(i + 1)
                    .and_then(|n| serde_json::from_str::<Value>(n.trim_end()).ok())
                    .is_some_and(|n| n["event"] == "recovered");
                assert!(
                    is_last || recovered,
                    "torn line {} not recovered: {l:?}",
                    i + 1
                );
            }
        }
    }
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");

    let by_rid = events_by_request(&entries);
    let (mut killed, mut before, mut during, mut after) = (0, 0, 0, 0);
    for (rid, was_killed, exit, stdout) in &calls {
        // A call whose own append found a torn tail (left by a killed call) seals it
        // first with a `recovered` entry under its own request_id: not one of its events.
        let ev: Vec<&str> = by_rid
            .get(rid)
            .map(|v| {
                v.iter()
                    .map(String::as_str)
                    .filter(|e| *e != "recovered")
                    .collect()
            })
            .unwrap_or_default();
        if *was_killed {
            killed += 1;
            match ev.as_slice() {
                [] => before += 1,
                ["started"] => during += 1,
                ["started", "finished"] => after += 1,
                other => panic!("killed call {rid}: events {other:?}"),
            }
        } else {
            assert_eq!(
                *exit,
                Some(0),
                "call {rid} was not killed but failed: {}",
                String::from_utf8_lossy(stdout)
            );
            assert_eq!(ev, ["started", "finished"], "call {rid}");
        }
    }
    let ours: BTreeSet<&String> = calls.iter().map(|c| &c.0).collect();
    for rid in by_rid.keys() {
        assert!(ours.contains(rid), "unknown request_id {rid} in the log");
    }
    eprintln!(
        "kill -9: {} calls, {killed} killed ({before} before `started`, {during} between \
         `started` and `finished`, {after} after `finished`)",
        calls.len()
    );
    assert!(killed > 0, "no call was killed: the test proved nothing");

    // A later append seals whatever a kill left at the end; the log stays valid.
    let r = call(&config, "Napper", "nap", json!({"ms": 0}));
    assert_eq!(r.code, 0, "{r:?}");
    let bytes = std::fs::read(&log).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'));
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(!report.contains("torn write"), "{report}");
    cleanup();
}

#[test]
fn a_torn_tail_is_reported_then_sealed_by_the_next_call() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    for _ in 0..2 {
        assert_eq!(call(&config, "TextTools", "noop", json!({})).code, 0);
    }
    let log = log_of(&dir);
    let fragment = b"{\"seq\":5,\"prev\":\"0123456789abcdef";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(fragment)
        .unwrap();
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "a crash artifact is not tampering: {report}");
    assert!(
        report.contains("torn write") && names_line(&report, 5),
        "{report}"
    );

    let r = call(&config, "TextTools", "noop", json!({}));
    assert_eq!(r.code, 0, "{r:?}");
    let lines = raw_lines(&log);
    assert_eq!(lines.len(), 8, "{lines:#?}");
    assert_eq!(lines[4].as_bytes(), fragment);
    let rec: Value = serde_json::from_str(&lines[5]).unwrap();
    assert_eq!(rec["event"], "recovered");
    assert_eq!(rec["seq"], 5);
    assert_eq!(rec["torn_bytes"], fragment.len());
    assert_eq!(rec["torn_sha256"], sha256_hex(fragment));
    assert_eq!(rec["request_id"], r.json["request_id"]);
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("torn bytes"), "{report}");
}

#[test]
fn lines_appended_after_the_last_entry_are_broken_and_stop_every_call() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    assert_eq!(call(&config, "TextTools", "noop", json!({})).code, 0);
    let log = log_of(&dir);
    let forged = b"{\"seq\":3,\"event\":\"finished\",\"plugin\":\"Bank\",\"code\":\"ok\"}\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(forged)
        .unwrap();
    let (code, report) = verify(&log, None);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("lines after the last entry that are not entries")
            && names_line(&report, 3),
        "{report}"
    );
    let before = std::fs::read(&log).unwrap();
    let r = call(&config, "TextTools", "upper", json!({"text": "hi"}));
    assert_eq!(r.code, 11, "{r:?}");
    assert!(r.result().is_null(), "{r:?}");
    assert_eq!(std::fs::read(&log).unwrap(), before, "nothing sealed them");
}
