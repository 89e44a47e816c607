use super::*;
use crate::audit::verify::{verify, Outcome};
use crate::audit::{keygen, Rotation};

fn entry(rid: &str, event: &str) -> Map<String, Value> {
    let v = serde_json::json!({"request_id": rid, "event": event, "plugin": "texttools", "method": "upper", "code": "ok", "exit_code": 0});
    v.as_object().cloned().unwrap_or_default()
}

fn values(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_intact(p: &Path, key: Option<&Path>) -> crate::audit::VerifyReport {
    let r = verify(p, key);
    assert_eq!(r.outcome, Outcome::Intact, "{r}");
    r
}

#[test]
fn appends_chained_jsonl_with_required_fields() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("entrypoint.log");
    let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
    let h1 = log.append(entry("r1", "started")).unwrap();
    let h2 = log.append(entry("r1", "finished")).unwrap();
    assert_ne!(h1, h2);
    let v = values(&p);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["seq"], 1);
    assert_eq!(v[0]["prev"], GENESIS);
    assert_eq!(v[0]["hash"], h1.as_str());
    assert_eq!(v[1]["prev"], h1.as_str());
    assert_eq!(v[1]["request_id"], "r1");
    let ts = v[0]["ts"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second handle (another process) continues the same chain.
    let mut other = AuditLog::open(&p, &AuditSettings::default()).unwrap();
    other.append(entry("r2", "refused")).unwrap();
    assert_eq!(assert_intact(&p, None).entries, 3);
}

#[test]
fn caller_supplied_ts_is_kept_and_bad_entries_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.log");
    let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
    let mut e = entry("r", "started");
    e.insert("ts".into(), "2020-01-01T00:00:00.000Z".into());
    log.append(e).unwrap();
    assert_eq!(values(&p)[0]["ts"], "2020-01-01T00:00:00.000Z");
    let mut e = entry("r", "started");
    e.remove("request_id");
    assert!(matches!(
        log.append(e),
        Err(AuditError::Entry {
            field: "request_id",
            ..
        })
    ));
    let mut e = entry("r", "started");
    e.insert("hash".into(), "x".into());
    assert!(matches!(
        log.append(e),
        Err(AuditError::Entry { field: "hash", .. })
    ));
    assert_eq!(values(&p).len(), 1, "refused entries leave nothing behind");
}

#[test]
fn concurrent_appenders_never_interleave() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.log");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
                for i in 0..50 {
                    log.append(entry(&format!("t{t}-{i}"), "started")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let v = values(&p);
    assert_eq!(v.len(), 400);
    assert_eq!(assert_intact(&p, None).entries, 400);
}

#[test]
fn concurrent_appenders_with_rotation_keep_one_chain() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("r.log");
    let settings = AuditSettings {
        rotate: Some(Rotation {
            max_bytes: Some(4000),
            daily: false,
        }),
        ..AuditSettings::default()
    };
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (p, s) = (p.clone(), settings.clone());
            std::thread::spawn(move || {
                let mut log = AuditLog::open(&p, &s).unwrap();
                for i in 0..25 {
                    log.append(entry(&format!("t{t}-{i}"), "finished")).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = assert_intact(&p, None);
    assert_eq!(r.entries, 100);
    assert!(r.files.len() > 3, "{:?}", r.files);
    for f in &r.files {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 4000,
            "{}",
            f.display()
        );
    }
}

#[test]
fn rotation_links_files_and_a_missing_file_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("entrypoint.log");
    let settings = AuditSettings {
        rotate: Some(Rotation {
            max_bytes: Some(600),
            daily: false,
        }),
        ..AuditSettings::default()
    };
    let mut log = AuditLog::open(&p, &settings).unwrap();
    for i in 0..12 {
        log.append(entry(&format!("r{i}"), "started")).unwrap();
    }
    let r = assert_intact(&p, None);
    assert_eq!(r.entries, 12);
    assert!(r.files.len() >= 4, "{:?}", r.files);
    assert_eq!(r.files.last(), Some(&p));
    // The first line of each file links to the last line of the previous one.
    let second = values(&r.files[1]);
    let first = values(&r.files[0]);
    assert_eq!(second[0]["prev"], first.last().unwrap()["hash"]);
    std::fs::remove_file(&r.files[1]).unwrap();
    let r2 = verify(&p, None);
    let Outcome::Broken(f) = &r2.outcome else {
        panic!("{r2}")
    };
    assert!(
        f.message.contains("a rotated file removed?"),
        "{}",
        f.message
    );
    assert_eq!(r2.exit_code(), 1);
}

#[test]
fn daily_rotation_starts_a_new_file_on_a_new_day() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("day.log");
    let settings = AuditSettings {
        rotate: Some(Rotation {
            max_bytes: None,
            daily: true,
        }),
        ..AuditSettings::default()
    };
    let mut log = AuditLog::open(&p, &settings).unwrap();
    let mut old = entry("r0", "started");
    old.insert("ts".into(), "2020-01-01T23:59:59.999Z".into());
    log.append(old).unwrap();
    log.append(entry("r1", "started")).unwrap();
    log.append(entry("r2", "started")).unwrap();
    let r = assert_intact(&p, None);
    assert_eq!(r.files.len(), 2, "{:?}", r.files);
    assert_eq!(values(&p).len(), 2, "today's entries share the new file");
}

#[test]
fn crash_between_link_and_rename_leaves_no_duplicate() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("s.log");
    let settings = AuditSettings {
        rotate: Some(Rotation {
            max_bytes: Some(400),
            daily: false,
        }),
        ..AuditSettings::default()
    };
    let mut log = AuditLog::open(&p, &settings).unwrap();
    log.append(entry("r0", "started")).unwrap();
    // What a crash right after `link` leaves: a rotated name for the live file.
    std::fs::hard_link(&p, d.path().join("s.log.20200101T000000Z")).unwrap();
    // Before any append finishes it, the file is read once, not as a duplicate.
    let r = assert_intact(&p, None);
    assert_eq!(r.entries, 1);
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("rotation was interrupted")),
        "{r}"
    );
    log.append(entry("r1", "started")).unwrap();
    log.append(entry("r2", "started")).unwrap();
    assert_eq!(assert_intact(&p, None).entries, 3);
}

fn small_rotation() -> AuditSettings {
    AuditSettings {
        rotate: Some(Rotation {
            max_bytes: Some(400),
            daily: false,
        }),
        ..AuditSettings::default()
    }
}

#[test]
fn rotation_never_writes_through_a_name_planted_at_its_temp_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("r.log");
    let tmp = d.path().join(".r.log.rotate");
    let mut log = AuditLog::open(&p, &small_rotation()).unwrap();
    log.append(entry("r0", "started")).unwrap();
    // Someone who can write the directory aims the temp name at a file of root's.
    let victim = d.path().join("passwd");
    std::fs::write(&victim, "root:x:0:0::/root:/bin/bash\n").unwrap();
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    log.append(entry("r1", "started")).unwrap();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root:x:0:0::/root:/bin/bash\n"
    );
    assert!(std::fs::symlink_metadata(&p).unwrap().is_file());
    assert_eq!(rotated_siblings(&p).unwrap().len(), 1, "it did rotate");
    // A dangling one would have made upm create the file it names.
    let named = d.path().join("ld.so.preload");
    std::os::unix::fs::symlink(&named, &tmp).unwrap();
    log.append(entry("r2", "started")).unwrap();
    assert!(std::fs::symlink_metadata(&named).is_err(), "created");
    assert_eq!(rotated_siblings(&p).unwrap().len(), 2);
    assert!(std::fs::symlink_metadata(&p).unwrap().is_file());
    assert_eq!(assert_intact(&p, None).entries, 3);
    // What cannot be removed keeps the log from rotating: nothing is written through
    // it, the entry goes into the current file, and the next append rotates.
    std::fs::create_dir(&tmp).unwrap();
    let before = std::fs::metadata(&p).unwrap().len();
    log.append(entry("r3", "started")).unwrap();
    assert!(std::fs::metadata(&p).unwrap().len() > before, "appended");
    assert_eq!(rotated_siblings(&p).unwrap().len(), 2, "not rotated");
    assert!(tmp.is_dir());
    std::fs::remove_dir(&tmp).unwrap();
    log.append(entry("r4", "started")).unwrap();
    assert_eq!(rotated_siblings(&p).unwrap().len(), 3, "rotated again");
    assert_eq!(assert_intact(&p, None).entries, 5);
}

#[test]
fn a_symlink_at_the_log_path_is_refused_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim.conf");
    std::fs::write(&victim, "KEY=value").unwrap();
    let p = d.path().join("l.log");
    std::os::unix::fs::symlink(&victim, &p).unwrap();
    let err = AuditLog::open(&p, &AuditSettings::default())
        .err()
        .expect("opened through a symlink");
    assert!(matches!(err, AuditError::NotRegular { .. }), "{err}");
    // Dangling: nothing is created where it points.
    let q = d.path().join("m.log");
    std::os::unix::fs::symlink(d.path().join("made"), &q).unwrap();
    let err = AuditLog::open(&q, &AuditSettings::default())
        .err()
        .expect("opened through a dangling symlink");
    assert!(matches!(err, AuditError::NotRegular { .. }), "{err}");
    assert!(!d.path().join("made").exists());
    // A log replaced by a symlink after it was opened: the next append refuses too.
    let r = d.path().join("n.log");
    let mut log = AuditLog::open(&r, &AuditSettings::default()).unwrap();
    log.append(entry("r0", "started")).unwrap();
    std::fs::remove_file(&r).unwrap();
    std::os::unix::fs::symlink(&victim, &r).unwrap();
    let err = log.append(entry("r1", "started")).unwrap_err();
    assert!(matches!(err, AuditError::NotRegular { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "KEY=value");
}

#[test]
fn a_fifo_at_a_rotated_name_fails_the_append_instead_of_hanging() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("f.log");
    // An empty current file: the head is the newest rotated file's last entry.
    let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
    let fifo = d.path().join("f.log.29991231T000000Z");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(log.append(entry("r0", "started")));
    });
    let res = rx.recv_timeout(std::time::Duration::from_secs(10));
    if res.is_err() {
        // Let the stuck open return before failing.
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        panic!("the append hung on a FIFO");
    }
    let err = res.unwrap().unwrap_err();
    assert!(matches!(err, AuditError::Read { .. }), "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
}

#[test]
fn torn_tail_is_recovered_by_the_next_append() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.log");
    let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
    for i in 0..3 {
        log.append(entry(&format!("r{i}"), "started")).unwrap();
    }
    let fragment = b"{\"seq\":4,\"prev\":\"0123";
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(fragment).unwrap();
    assert!(matches!(
        verify(&p, None).outcome,
        Outcome::TornTail { line: 4, .. }
    ));
    let h = log.append(entry("r3", "finished")).unwrap();
    let r = assert_intact(&p, None);
    assert_eq!(r.entries, 5);
    assert_eq!(r.head.as_deref(), Some(h.as_str()));
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains(&format!("line 4: {} torn bytes", fragment.len()))),
        "{:?}",
        r.notes
    );
    let text = std::fs::read_to_string(&p).unwrap();
    let rec: Value = serde_json::from_str(text.lines().nth(4).unwrap()).unwrap();
    assert_eq!(rec["event"], "recovered");
    assert_eq!(rec["seq"], 4);
    assert_eq!(rec["torn_bytes"], fragment.len());
    assert_eq!(rec["torn_sha256"], hex::encode(Sha256::digest(fragment)));
    // A recovery entry that names other bytes does not excuse the fragment. (Edited on
    // line 4 alone: "0123" may turn up in an earlier line's hash or timestamp too.)
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    assert!(
        lines[3].starts_with("{\"seq\":4,\"prev\":\"0123"),
        "{}",
        lines[3]
    );
    lines[3] = lines[3].replacen("0123", "0124", 1);
    let forged = lines.concat();
    std::fs::write(&p, forged).unwrap();
    let r = verify(&p, None);
    let Outcome::Broken(f) = &r.outcome else {
        panic!("{r}")
    };
    assert!(
        f.message.contains("line 4: not a valid audit entry"),
        "{}",
        f.message
    );
}

#[test]
fn torn_tail_is_recovered_when_that_append_rotates() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tr.log");
    let mut log = AuditLog::open(&p, &small_rotation()).unwrap();
    log.append(entry("r0", "started")).unwrap();
    let fragment = b"{\"seq\":2,\"prev\":\"ab";
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(fragment).unwrap();
    log.append(entry("r1", "started")).unwrap();
    let r = assert_intact(&p, None);
    assert_eq!((r.entries, r.files.len()), (3, 2), "{r}");
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains(&format!("line 2: {} torn bytes", fragment.len()))),
        "{:?}",
        r.notes
    );
    assert_eq!(values(&p)[0]["request_id"], "r1");
}

/// Whole lines after the last entry: a crash cannot leave them, so the writer does not
/// seal them with a recovery entry that a later checkpoint would sign.
#[test]
fn lines_after_the_last_entry_are_not_sealed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t2.log");
    let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
    log.append(entry("r0", "started")).unwrap();
    let before = std::fs::read(&p).unwrap();
    for tail in [
        &b"{\"event\":\"finished\",\"plugin\":\"Bank\",\"request_id\":\"forged\"}\n"[..],
        b"{\n",
        // Also what a crash while sealing a torn tail would leave: refused as well
        // (it cannot be told from a line added in front of a fragment).
        b"{\"seq\":2,\"pr\n{\"seq\":2,\"prev\":\"",
    ] {
        let mut bytes = before.clone();
        bytes.extend_from_slice(tail);
        std::fs::write(&p, &bytes).unwrap();
        let err = log.append(entry("r1", "started")).unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("lines after the last entry are not entries"),
            "{err}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "nothing appended");
    }
}

#[test]
fn a_file_that_is_not_an_audit_log_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("notes.txt");
    std::fs::write(&p, "hello\nworld\n").unwrap();
    let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
    let err = log.append(entry("r", "started")).unwrap_err();
    assert!(matches!(err, AuditError::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "hello\nworld\n");
}

/// A fresh key pair under `dir`, and settings that sign a log there (`s.log`) with it.
fn signed(dir: &Path, sign_every: u64) -> (PathBuf, PathBuf, AuditSettings) {
    let (sk, pk) = (dir.join("k.pem"), dir.join("k.pub"));
    keygen(&sk, &pk).unwrap();
    let settings = AuditSettings {
        signing_key: Some(sk),
        sign_every,
        ..AuditSettings::default()
    };
    (dir.join("s.log"), pk, settings)
}

#[test]
fn checkpoints_are_signed_and_checked() {
    let d = tempfile::tempdir().unwrap();
    let (p, pk, settings) = signed(d.path(), 5);
    let mut log = AuditLog::open(&p, &settings).unwrap();
    for i in 0..12 {
        log.append(entry(&format!("r{i}"), "started")).unwrap();
    }
    let v = values(&p);
    let cps: Vec<&Value> = v.iter().filter(|e| e["event"] == "checkpoint").collect();
    assert!(cps.len() >= 3, "{} checkpoints", cps.len());
    assert_eq!(cps[0]["signed_seq"], 1);
    let r = assert_intact(&p, Some(&pk));
    assert_eq!(r.checkpoints_verified, cps.len() as u64);
    // Without a key the chain is still checked; with another key it fails.
    assert_intact(&p, None);
    let (sk2, pk2) = (d.path().join("k2.pem"), d.path().join("k2.pub"));
    keygen(&sk2, &pk2).unwrap();
    let r = verify(&p, Some(&pk2));
    let Outcome::Broken(f) = &r.outcome else {
        panic!("{r}")
    };
    assert!(
        f.message.contains("checkpoint signature does not verify"),
        "{}",
        f.message
    );
}

/// A group of entries that makes a checkpoint due is written with it, in one `write`:
/// no crash between two transactions can leave them durable and unsigned (verify
/// tolerates only `2 × sign_every + 2` unsigned entries, fewer than a batch's group).
#[test]
fn a_checkpoint_is_written_with_the_entries_it_signs() {
    let d = tempfile::tempdir().unwrap();
    let (p, pk, settings) = signed(d.path(), 1);
    let mut log = AuditLog::open(&p, &settings).unwrap();
    log.append(entry("first", "started")).unwrap();
    let group: Vec<_> = (0..8).map(|i| entry(&format!("g{i}"), "started")).collect();
    let written = log.transact("g0", group).unwrap();
    let events: Vec<Value> = written
        .lines
        .iter()
        .map(|l| serde_json::from_slice::<Value>(l).unwrap()["event"].clone())
        .collect();
    assert_eq!(
        events.len(),
        9,
        "the group and its checkpoint, in one transaction"
    );
    assert_eq!(events[8], "checkpoint");
    let last = values(&p).pop().unwrap();
    assert_eq!(last["event"], "checkpoint");
    assert_eq!(
        last["signed_seq"], 10,
        "first, its checkpoint, then the 8 entries"
    );
    assert_intact(&p, Some(&pk));
}

#[test]
fn a_log_rewritten_without_checkpoints_fails_with_a_key() {
    let d = tempfile::tempdir().unwrap();
    let (sk, pk) = (d.path().join("k.pem"), d.path().join("k.pub"));
    keygen(&sk, &pk).unwrap();
    let p = d.path().join("w.log");
    crate::audit::write_synthetic_log(&p, 20).unwrap();
    assert_intact(&p, None);
    let r = verify(&p, Some(&pk));
    let Outcome::Broken(f) = &r.outcome else {
        panic!("{r}")
    };
    assert!(f.message.contains("no signed checkpoint"), "{}", f.message);

    // Signed for a while, then rewritten (seals recomputed, no checkpoints).
    let settings = AuditSettings {
        signing_key: Some(sk),
        sign_every: 2,
        ..AuditSettings::default()
    };
    let q = d.path().join("w2.log");
    let mut log = AuditLog::open(&q, &settings).unwrap();
    log.append(entry("r0", "started")).unwrap();
    drop(log);
    let mut log = AuditLog::open(&q, &AuditSettings::default()).unwrap();
    for i in 0..10 {
        log.append(entry(&format!("x{i}"), "started")).unwrap();
    }
    let r = verify(&q, Some(&pk));
    let Outcome::Broken(f) = &r.outcome else {
        panic!("{r}")
    };
    assert!(f.message.contains("checkpoints missing"), "{}", f.message);
}

#[test]
fn open_fails_where_the_log_cannot_be_written() {
    let err = AuditLog::open(
        Path::new("/nonexistent-dir/x/entrypoint.log"),
        &AuditSettings::default(),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("/nonexistent-dir/x/entrypoint.log"),
        "{err}"
    );
    // procfs lets root open it for writing; the append itself must fail.
    if let Ok(mut log) = AuditLog::open(Path::new("/proc/version"), &AuditSettings::default()) {
        assert!(matches!(
            log.append(entry("r", "started")),
            Err(AuditError::Write { .. })
        ));
    }
    assert!(AuditLog::open(Path::new("/dev/null"), &AuditSettings::default()).is_err());
}

/// Clears the immutable flag even when the test fails.
struct Immutable<'a>(&'a Path);

impl Drop for Immutable<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(self.0)
            .status();
    }
}

fn make_immutable(p: &Path) -> Option<Immutable<'_>> {
    let ok = std::process::Command::new("chattr")
        .arg("+i")
        .arg(p)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(Immutable(p))
    } else {
        eprintln!("SKIP: chattr +i is not available on this file system");
        None
    }
}

#[test]
fn immutable_log_fails_open_and_append_even_as_root() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("ro.log");
    let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
    log.append(entry("r0", "started")).unwrap();
    let before = std::fs::read(&p).unwrap();
    let Some(_guard) = make_immutable(&p) else {
        return;
    };
    assert!(matches!(
        AuditLog::open(&p, &AuditSettings::default()),
        Err(AuditError::Open { .. })
    ));
    let err = log.append(entry("r1", "started")).unwrap_err();
    assert!(err.to_string().contains("not durable"), "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

/// Runs inside a mount namespace where the log's directory is a read-only
/// bind mount; `read_only_bind_mount_refuses_open` drives it.
#[test]
#[ignore]
fn read_only_mount_inner() {
    let Ok(dir) = std::env::var("UPM_AUDIT_RO_DIR") else {
        return;
    };
    let p = Path::new(&dir).join("ro.log");
    let err = AuditLog::open(&p, &AuditSettings::default()).err().unwrap();
    assert!(err.to_string().contains("Read-only file system"), "{err}");
}

#[test]
fn read_only_bind_mount_refuses_open() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().display().to_string();
    std::fs::write(d.path().join("ro.log"), b"").unwrap();
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "mount --bind -o ro '{dir}' '{dir}' || exit 77; exec '{}' --exact audit::writer::tests::read_only_mount_inner --ignored",
        exe.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("UPM_AUDIT_RO_DIR", &dir)
        .output();
    match out {
        Ok(o) if o.status.code() == Some(77) => eprintln!("SKIP: cannot bind-mount read-only here"),
        Ok(o) => assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("1 passed"),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("SKIP: unshare not available: {e}"),
    }
}

/// One appender process of `concurrent_processes_never_interleave`.
#[test]
#[ignore]
fn process_appender_inner() {
    let Ok(path) = std::env::var("UPM_AUDIT_MP_LOG") else {
        return;
    };
    let settings = AuditSettings {
        rotate: Some(Rotation {
            max_bytes: Some(20_000),
            daily: false,
        }),
        ..AuditSettings::default()
    };
    let mut log = AuditLog::open(Path::new(&path), &settings).unwrap();
    for i in 0..50 {
        log.append(entry(&format!("p{}-{i}", std::process::id()), "started"))
            .unwrap();
    }
}

#[test]
fn concurrent_processes_never_interleave() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("mp.log");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "audit::writer::tests::process_appender_inner",
                    "--ignored",
                ])
                .env("UPM_AUDIT_MP_LOG", &p)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let r = assert_intact(&p, None);
    assert_eq!(r.entries, 400);
    assert!(r.files.len() > 1, "rotation happened under contention");
}

/// Rewrites a log as an attacker without the key would: edit, re-seal and
/// re-chain every line, pointing checkpoints at the new hashes.
fn rewrite(p: &Path, edit: impl Fn(u64, &mut Map<String, Value>)) {
    let mut prev = GENESIS.to_string();
    let mut out = Vec::new();
    for (i, l) in std::fs::read_to_string(p).unwrap().lines().enumerate() {
        let mut m: Map<String, Value> = serde_json::from_str(l).unwrap();
        for k in ["seq", "prev", "hash"] {
            m.remove(k);
        }
        let seq = i as u64 + 1;
        edit(seq, &mut m);
        if m["event"] == "checkpoint" {
            m.insert("signed_hash".into(), prev.clone().into());
        }
        let (line, hash) = crate::audit::format::seal(seq, &prev, &m).unwrap();
        out.extend(line);
        prev = hash;
    }
    std::fs::write(p, out).unwrap();
}

#[test]
fn rechained_edits_are_caught_only_by_signatures() {
    let d = tempfile::tempdir().unwrap();
    let (p, pk, settings) = signed(d.path(), 3);
    let mut log = AuditLog::open(&p, &settings).unwrap();
    for i in 0..6 {
        log.append(entry(&format!("r{i}"), "finished")).unwrap();
    }
    assert_intact(&p, Some(&pk));
    // Editing an old entry and re-chaining fools the hash chain alone...
    rewrite(&p, |seq, m| {
        if seq == 3 {
            m.insert("code".into(), "timeout".into());
        }
    });
    assert_intact(&p, None);
    // ...but not the checkpoint that signed the original head.
    let r = verify(&p, Some(&pk));
    let Outcome::Broken(f) = &r.outcome else {
        panic!("{r}")
    };
    assert!(
        f.message.contains("signature does not verify"),
        "{}",
        f.message
    );

    // Raising the signed cadence to hide a long unsigned tail fails too.
    let q = d.path().join("g.log");
    let mut log = AuditLog::open(&q, &settings).unwrap();
    log.append(entry("r", "started")).unwrap();
    rewrite(&q, |_, m| {
        if m["event"] == "checkpoint" {
            m.insert("sign_every".into(), 1_000_000.into());
        }
    });
    let r = verify(&q, Some(&pk));
    let Outcome::Broken(f) = &r.outcome else {
        panic!("{r}")
    };
    assert!(
        f.message.contains("signature does not verify"),
        "{}",
        f.message
    );
}

/// `cargo test --release --lib audit::writer::tests::append_speed -- --ignored --nocapture`
#[test]
#[ignore]
fn append_speed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("speed.log");
    let mut log = AuditLog::open(&p, &AuditSettings::default()).unwrap();
    let n = 2000;
    let t = std::time::Instant::now();
    for i in 0..n {
        log.append(entry(&format!("r{i}"), "started")).unwrap();
    }
    let per = t.elapsed().as_secs_f64() / f64::from(n);
    println!("append: {:.1} us per durable entry", per * 1e6);
    assert_intact(&p, None);
}

/// Lines as UPM's `configure_logging` writes them (its JSON and its text formatter).
const UPM_LINES: &str = concat!(
    "{\"timestamp\": \"2026-11-20T09:14:02Z\", \"level\": \"INFO\", \"user\": \"svc\", ",
    "\"operation\": \"INSTALL\", \"message\": \"Installed requests\", \"logger\": \"unipkg_audit\"}\n",
    "09:14:03 - INFO     - MainThread - Starting plugin execution, request_id=5f0c\n",
);

fn adopting() -> AuditSettings {
    AuditSettings {
        named_by_env: true,
        ..AuditSettings::default()
    }
}

#[test]
fn a_foreign_log_is_adopted_once_and_verifies() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("upm.log");
    std::fs::write(&p, UPM_LINES).unwrap();
    let mut log = AuditLog::open(&p, &adopting()).unwrap();
    log.append(entry("r1", "started")).unwrap();
    let mut other = AuditLog::open(&p, &adopting()).unwrap();
    other.append(entry("r2", "started")).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.starts_with(UPM_LINES), "appended, never rewritten");
    let ours: Vec<Value> = text[UPM_LINES.len()..]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ours.len(), 3, "one adoption, then the entries");
    assert_eq!(ours[0]["event"], "adopted");
    assert_eq!(ours[0]["seq"], 1);
    assert_eq!(ours[0]["prev"], GENESIS);
    assert_eq!(ours[0]["foreign_bytes"], UPM_LINES.len());
    assert_eq!(
        ours[0]["foreign_sha256"],
        hex::encode(Sha256::digest(UPM_LINES))
    );
    assert_eq!(ours[0]["adopted_by"], "UPM_LOG_FILE");
    assert_eq!(ours[0]["newline_added"], false);
    assert_eq!(ours[0]["request_id"], "r1");
    assert_eq!(ours[1]["request_id"], "r1");
    let r = assert_intact(&p, None);
    assert_eq!(r.entries, 3);
    assert!(
        r.to_string().contains("adopted by the entry on line 3"),
        "{r}"
    );
    // One byte of the old lines changed: found.
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let r = verify(&p, None);
    assert!(matches!(r.outcome, Outcome::Broken(_)), "{r}");
    assert!(r.to_string().contains("adopted lines were altered"), "{r}");
}

#[test]
fn a_foreign_log_is_refused_unless_the_settings_allow_adoption() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("upm.log");
    std::fs::write(&p, UPM_LINES).unwrap();
    for settings in [
        AuditSettings::default(),
        AuditSettings {
            adopt_foreign: Some(false),
            ..adopting()
        },
    ] {
        let mut log = AuditLog::open(&p, &settings).unwrap();
        let err = log.append(entry("r", "started")).unwrap_err();
        assert!(err.to_string().contains("adopt_foreign"), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), UPM_LINES);
    }
    let settings = AuditSettings {
        adopt_foreign: Some(true),
        ..AuditSettings::default()
    };
    AuditLog::open(&p, &settings)
        .unwrap()
        .append(entry("r", "started"))
        .unwrap();
    assert_eq!(
        values_after(&p, UPM_LINES)[0]["adopted_by"],
        "audit.adopt_foreign"
    );
    assert_intact(&p, None);
}

fn values_after(p: &Path, prefix: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(p).unwrap();
    text[prefix.len()..]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_foreign_log_that_held_entries_or_has_rotated_files_is_not_adopted() {
    let d = tempfile::tempdir().unwrap();
    // An entry's shape among the foreign lines, further back than the writer's tail
    // scan looks (the scan of the whole file finds it).
    let p = d.path().join("mixed.log");
    let (line, _) = seal(1, GENESIS, &entry("r0", "started")).unwrap();
    let mut bytes = line.clone();
    let mut filler = vec![b'x'; 1 << 20];
    filler.push(b'\n');
    for _ in 0..(MAX_TAIL_SCAN >> 20) + 1 {
        bytes.extend_from_slice(&filler);
    }
    std::fs::write(&p, &bytes).unwrap();
    let err = AuditLog::open(&p, &adopting())
        .unwrap()
        .append(entry("r", "started"))
        .unwrap_err();
    assert!(err.to_string().contains("shape of an audit entry"), "{err}");
    assert_eq!(std::fs::read(&p).unwrap(), bytes);
    // Foreign lines after upm's entries: still refused.
    let p = d.path().join("after.log");
    let mut log = AuditLog::open(&p, &adopting()).unwrap();
    log.append(entry("r0", "started")).unwrap();
    let mut after = std::fs::read(&p).unwrap();
    after.extend_from_slice(UPM_LINES.as_bytes());
    std::fs::write(&p, &after).unwrap();
    let err = log.append(entry("r1", "started")).unwrap_err();
    assert!(
        err.to_string().contains("lines after the last entry"),
        "{err}"
    );
    // A current file without entries beside rotated files lost them: not adopted.
    let p = d.path().join("rot.log");
    let mut log = AuditLog::open(&p, &small_rotation()).unwrap();
    for i in 0..6 {
        log.append(entry(&format!("r{i}"), "started")).unwrap();
    }
    std::fs::write(&p, UPM_LINES).unwrap();
    let settings = AuditSettings {
        named_by_env: true,
        ..small_rotation()
    };
    let err = AuditLog::open(&p, &settings)
        .unwrap()
        .append(entry("r", "started"))
        .unwrap_err();
    assert!(err.to_string().contains("rotated files"), "{err}");
}

/// The environment can name any file upm may write: through `UPM_LOG_FILE`, only what
/// UPM's logging wrote is adopted; the config may allow any file.
#[test]
fn through_upm_log_file_only_upms_own_logging_is_adopted() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("profile.sh");
    let script = "export PATH=/usr/bin\n# 09:14:03 - INFO - not first\n";
    for other in [
        script,
        "{\"name\": \"a config\"}\n",
        "hello\n09:14:03 - INFO     - MainThread - after\n",
    ] {
        std::fs::write(&p, other).unwrap();
        let err = AuditLog::open(&p, &adopting())
            .unwrap()
            .append(entry("r", "started"))
            .unwrap_err();
        assert!(
            err.to_string().contains("not UPM's logging output"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), other);
    }
    // UPM's three formatters, and a text message that held newlines.
    let upm = concat!(
        "09:14:03 - WARNING  - MainThread - a message\n",
        "that went on\n",
        "{\"timestamp\": \"2026-11-20T09:14:02Z\", \"level\": \"ERROR\", \"message\": \"x\"}\n",
        "{\"error\": \"JSON serialization failed: x\", \"original_message\": \"y\"}\n",
        "gAAAAABnZ3x0aGVfdG9rZW4tXz0=\n",
        "12:00:00 - INFO     - Thread-1   - torn"
    );
    std::fs::write(&p, upm).unwrap();
    AuditLog::open(&p, &adopting())
        .unwrap()
        .append(entry("r", "started"))
        .unwrap();
    assert_intact(&p, None);
    // The config can allow any file.
    std::fs::write(&p, script).unwrap();
    let settings = AuditSettings {
        adopt_foreign: Some(true),
        ..AuditSettings::default()
    };
    AuditLog::open(&p, &settings)
        .unwrap()
        .append(entry("r", "started"))
        .unwrap();
    assert_intact(&p, None);
}

#[test]
fn a_foreign_log_without_a_final_newline_gets_one_and_the_digest_covers_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("upm.log");
    let old = &UPM_LINES[..UPM_LINES.len() - 1];
    std::fs::write(&p, old).unwrap();
    AuditLog::open(&p, &adopting())
        .unwrap()
        .append(entry("r", "started"))
        .unwrap();
    let a = &values_after(&p, UPM_LINES)[0];
    assert_eq!(a["newline_added"], true);
    assert_eq!(a["foreign_bytes"], UPM_LINES.len());
    assert_eq!(a["foreign_sha256"], hex::encode(Sha256::digest(UPM_LINES)));
    assert_intact(&p, None);
}

#[test]
fn an_adopted_log_with_rotation_moves_the_old_lines_to_a_rotated_file_at_once() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("upm.log");
    std::fs::write(&p, UPM_LINES).unwrap();
    let settings = AuditSettings {
        named_by_env: true,
        rotate: Some(Rotation {
            max_bytes: None,
            daily: true,
        }),
        ..AuditSettings::default()
    };
    let mut log = AuditLog::open(&p, &settings).unwrap();
    log.append(entry("r1", "started")).unwrap();
    log.append(entry("r1", "finished")).unwrap();
    let rotated = rotated_siblings(&p).unwrap();
    assert_eq!(rotated.len(), 1, "one rotation, at adoption");
    let old = values_after(&rotated[0], UPM_LINES);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0]["event"], "adopted");
    let cur = values(&p);
    assert_eq!((cur[0]["seq"].as_u64(), cur.len()), (Some(2), 2));
    let r = assert_intact(&p, None);
    assert_eq!(r.files.len(), 2);
    assert!(r.to_string().contains("adopted by"), "{r}");
}

#[test]
fn an_adopted_signed_log_verifies_with_the_key_and_the_signature_covers_the_old_lines() {
    let d = tempfile::tempdir().unwrap();
    let (p, pk, mut settings) = signed(d.path(), 100);
    settings.named_by_env = true;
    std::fs::write(&p, UPM_LINES).unwrap();
    let mut log = AuditLog::open(&p, &settings).unwrap();
    log.append(entry("r1", "started")).unwrap();
    let ours = values_after(&p, UPM_LINES);
    let events: Vec<&str> = ours.iter().map(|v| v["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["adopted", "started", "checkpoint"]);
    let r = assert_intact(&p, Some(&pk));
    assert_eq!(r.checkpoints_verified, 1);
    // The old lines removed: the adopted entry says there were some.
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, &text[UPM_LINES.len()..]).unwrap();
    let r = verify(&p, Some(&pk));
    assert!(matches!(r.outcome, Outcome::Broken(_)), "{r}");
    assert!(r.to_string().contains("were removed"), "{r}");
}
