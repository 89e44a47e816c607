//! One chain across concurrent processes and rotated files.

use super::*;

/// Starts `n` calls before waiting for any; returns each call's request_id and exit code.
fn concurrent_calls(config: &Path, n: usize, tag: &str) -> Vec<(String, Option<i32>, String)> {
    let children: Vec<(String, Child)> = (0..n)
        .map(|i| {
            let rid = format!("{tag}-{i}");
            let req = json!({"plugin": "TextTools", "method": "upper",
                             "args": {"text": rid}, "request_id": rid});
            (rid, spawn_upm(config, &serde_json::to_vec(&req).unwrap()))
        })
        .collect();
    children
        .into_iter()
        .map(|(rid, c)| {
            let out = c.wait_with_output().expect("wait upm");
            (
                rid,
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
        .collect()
}

#[test]
fn two_hundred_concurrent_calls_make_whole_lines_and_one_chain() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({}), json!({}));
    let results = concurrent_calls(&config, 200, "conc");
    for (rid, code, out) in &results {
        assert_eq!(*code, Some(0), "{rid}: {out}");
    }
    let log = log_of(&dir);
    let bytes = std::fs::read(&log).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'));
    let lines = raw_lines(&log);
    assert_eq!(lines.len(), 400);
    let entries: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a whole JSON line"))
        .collect();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
    }
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("400 entries"), "{report}");
    let by_rid = events_by_request(&entries);
    assert_eq!(by_rid.len(), 200);
    for (rid, _, _) in &results {
        assert_eq!(by_rid[rid], ["started", "finished"], "{rid}");
    }
    jq_reads_every_line(&log, 400);
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("entrypoint.log")
        })
        .collect();
    // Oldest first, as verify walks them: rotated files by stamp then
    // numeric counter (`.Z`, `.Z.1`, `.Z.2`, `.Z.10`), then the current file.
    v.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let rest = name.strip_prefix("entrypoint.log").unwrap_or("").to_owned();
        let mut parts = rest.trim_start_matches('.').splitn(2, '.');
        let stamp = parts.next().unwrap_or("").to_owned();
        let counter: u64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        (rest.is_empty(), stamp, counter)
    });
    v
}

#[test]
fn rotation_through_the_binary_is_verified_as_one_set() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({ "rotate": { "max_bytes": 4096 } }), json!({}));
    for i in 0..50 {
        let r = if i % 2 == 0 {
            call(&config, "TextTools", "noop", json!({}))
        } else {
            call(&config, "TextTools", "shout", json!({}))
        };
        assert!(
            r.code == 0 || r.code_word() == "method_not_allowed",
            "{r:?}"
        );
    }
    let files = log_files(&dir.path);
    assert!(files.len() >= 3, "{files:?}");
    let mut total = 0;
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        let n = raw_lines(f).len();
        assert!(n >= 1, "{f:?} is empty");
        assert!(size <= 4096 || n == 1, "{f:?}: {size} bytes in {n} lines");
        total += n;
    }
    assert_eq!(total, 25 * 2 + 25, "every entry is in exactly one file");
    let seqs: Vec<u64> = files
        .iter()
        .flat_map(|f| raw_lines(f))
        .map(|l| {
            serde_json::from_str::<Value>(&l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "files chain in order"
    );

    let log = log_of(&dir);
    let (code, report) = verify(&log, None);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains(&format!("{total} entries in {} file(s)", files.len())),
        "{report}"
    );

    // Removing a rotated file from the middle of the set is found.
    let rotated: Vec<&PathBuf> = files.iter().filter(|f| **f != log).collect();
    let victim = rotated[rotated.len() / 2];
    std::fs::remove_file(victim).unwrap();
    let (code, report) = verify(&log, None);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("rotated file removed"), "{report}");
}

#[test]
fn concurrent_calls_across_rotations_keep_one_chain() {
    let dir = TestDir::new();
    let config = texttools_config(&dir, json!({ "rotate": { "max_bytes": 8192 } }), json!({}));
    let results = concurrent_calls(&config, 40, "rot");
    for (rid, code, out) in &results {
        assert_eq!(*code, Some(0), "{rid}: {out}");
    }
    let files = log_files(&dir.path);
    assert!(files.len() >= 3, "{files:?}");
    let entries: Vec<Value> = files
        .iter()
        .flat_map(|f| raw_lines(f))
        .map(|l| serde_json::from_str(&l).expect("a whole JSON line"))
        .collect();
    assert_eq!(entries.len(), 80);
    let (code, report) = verify(&log_of(&dir), None);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("80 entries"), "{report}");
    let by_rid = events_by_request(&entries);
    for (rid, _, _) in &results {
        assert_eq!(by_rid[rid], ["started", "finished"], "{rid}");
    }
}
