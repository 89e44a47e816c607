use super::*;

fn lines(p: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(p).unwrap();
    data.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(p: &Path, l: &[Vec<u8>]) {
    std::fs::write(p, l.concat()).unwrap();
}

fn log(n: u64) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("entrypoint.log");
    write_synthetic_log(&p, n).unwrap();
    (d, p)
}

fn broken(r: &VerifyReport) -> &Finding {
    match &r.outcome {
        Outcome::Broken(f) => f,
        o => panic!("expected broken, got {o:?}"),
    }
}

/// The report says broken at `line` (when given), with `text` in its message.
fn assert_broken(r: &VerifyReport, line: Option<u64>, text: &str) {
    let f = broken(r);
    if let Some(line) = line {
        assert_eq!(f.line, line, "{}", f.message);
    }
    assert!(f.message.contains(text), "{}", f.message);
}

/// Re-seals one line's fields at the given seq/prev (what an attacker who
/// edits an entry and recomputes its hash would write).
fn reseal(line: &[u8], seq: u64, prev: &str) -> (Vec<u8>, String) {
    let mut m: Map<String, Value> = serde_json::from_slice(line).unwrap();
    for k in ["seq", "prev", "hash"] {
        m.remove(k);
    }
    m.insert("code".into(), "forged".into());
    seal(seq, prev, &m).unwrap()
}

#[test]
fn intact_log_verifies() {
    let (_d, p) = log(30);
    let r = verify(&p, None);
    assert_eq!(r.outcome, Outcome::Intact, "{r}");
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.entries, 30);
    assert_eq!(r.last_seq, Some(30));
    assert!(r.to_string().starts_with("intact: 30 entries"), "{r}");
}

#[test]
fn empty_log_is_intact_and_missing_log_is_unreadable() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("e.log");
    std::fs::write(&p, b"").unwrap();
    assert_eq!(verify(&p, None).exit_code(), 0);
    let r = verify(&d.path().join("none.log"), None);
    assert_eq!(r.exit_code(), 2, "{r}");
    assert!(r.to_string().contains("none.log"), "{r}");
}

#[test]
fn edited_line_is_named_as_altered() {
    let (_d, p) = log(30);
    let mut l = lines(&p);
    let s = String::from_utf8(l[16].clone())
        .unwrap()
        .replace("\"ok\"", "\"no\"");
    l[16] = s.into_bytes();
    write_lines(&p, &l);
    let r = verify(&p, None);
    let f = broken(&r);
    assert_eq!((f.line, f.seq), (17, Some(17)));
    assert_eq!(
        f.message,
        "line 17 (seq 17): hash does not match its contents (altered)"
    );
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn edited_and_rehashed_line_breaks_the_next_link() {
    let (_d, p) = log(30);
    let mut l = lines(&p);
    let prev16 =
        String::from_utf8_lossy(parse(&l[15][..l[15].len() - 1]).unwrap().hash).into_owned();
    l[16] = reseal(&l[16][..l[16].len() - 1], 17, &prev16).0;
    write_lines(&p, &l);
    let f = broken(&verify(&p, None)).clone();
    assert_eq!(f.line, 18);
    assert!(
        f.message
            .starts_with("line 18 (seq 18): prev does not match the hash of line 17 (seq 17)"),
        "{}",
        f.message
    );
}

#[test]
fn deleted_line_is_named_as_removed() {
    let (_d, p) = log(30);
    let mut l = lines(&p);
    l.remove(16);
    write_lines(&p, &l);
    let f = broken(&verify(&p, None)).clone();
    assert_eq!((f.line, f.seq), (17, Some(18)));
    assert!(
        f.message
            .starts_with("line 17: seq 18 follows seq 16 (entry removed?"),
        "{}",
        f.message
    );
}

#[test]
fn inserted_copy_is_named_as_inserted() {
    let (_d, p) = log(30);
    let mut l = lines(&p);
    let copy = l[4].clone();
    l.insert(16, copy);
    write_lines(&p, &l);
    let f = broken(&verify(&p, None)).clone();
    assert_eq!((f.line, f.seq), (17, Some(5)));
    assert!(
        f.message
            .contains("line 17: seq 5 follows seq 16 (entry inserted"),
        "{}",
        f.message
    );
}

#[test]
fn inserted_forgery_is_caught_by_the_following_entry() {
    let (_d, p) = log(30);
    let mut l = lines(&p);
    let prev16 =
        String::from_utf8_lossy(parse(&l[15][..l[15].len() - 1]).unwrap().hash).into_owned();
    let forged = reseal(&l[16][..l[16].len() - 1], 17, &prev16).0;
    l.insert(16, forged);
    write_lines(&p, &l);
    assert_broken(
        &verify(&p, None),
        Some(18),
        "seq 17 follows seq 17 (entry inserted",
    );
}

#[test]
fn swapped_lines_are_named_as_reordered() {
    let (_d, p) = log(30);
    let mut l = lines(&p);
    l.swap(16, 17);
    write_lines(&p, &l);
    let f = broken(&verify(&p, None)).clone();
    assert_eq!(f.line, 17);
    assert_eq!(
        f.message,
        "line 17 (seq 18) and line 18 (seq 17) are out of order (reordered)"
    );
}

#[test]
fn torn_last_line_is_reported_as_a_crash_not_tampering() {
    let (_d, p) = log(10);
    let mut data = std::fs::read(&p).unwrap();
    data.extend_from_slice(b"{\"seq\":11,\"prev\":\"abc");
    std::fs::write(&p, &data).unwrap();
    let r = verify(&p, None);
    assert!(
        matches!(
            r.outcome,
            Outcome::TornTail {
                line: 11,
                bytes: 21,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.last_seq, Some(10));
    let text = r.to_string();
    assert!(
        text.contains("torn write") && text.contains("not tampering"),
        "{text}"
    );
}

#[test]
fn torn_fragment_without_recovery_entry_is_broken() {
    let (_d, p) = log(10);
    let mut l = lines(&p);
    l.insert(5, b"{\"seq\":6,\"prev\":\"ab\n".to_vec());
    write_lines(&p, &l);
    assert_broken(&verify(&p, None), Some(6), "not a valid audit entry");
}

/// The hash of the last line of `p`.
fn last_hash(p: &Path) -> String {
    let l = lines(p);
    let last = l.last().unwrap();
    parse(&last[..last.len() - 1]).unwrap().hash_str()
}

#[test]
fn lines_after_the_last_entry_are_not_a_torn_write() {
    for tail in [
        &b"{\"seq\":11,\"event\":\"finished\",\"plugin\":\"Bank\"}\n"[..],
        b"{\n",
        b"forged\n{\"seq\":11,\"prev\":\"ab",
    ] {
        let (_d, p) = log(10);
        let mut data = std::fs::read(&p).unwrap();
        data.extend_from_slice(tail);
        std::fs::write(&p, &data).unwrap();
        let r = verify(&p, None);
        let f = broken(&r);
        assert_eq!(f.line, 11);
        assert!(
            f.message
                .contains("line 11: lines after the last entry that are not entries"),
            "{}",
            f.message
        );
        assert_eq!(r.exit_code(), 1);
    }
}

#[test]
fn a_recovery_entry_cannot_vouch_for_whole_lines() {
    // What the writer did before refusing such tails: seal them, newline added or not.
    for (tail, added) in [
        (
            &b"{\"event\":\"finished\",\"plugin\":\"Bank\"}\n{\"seq\":11,\"pr"[..],
            true,
        ),
        (b"{\"event\":\"finished\",\"plugin\":\"Bank\"}\n", false),
    ] {
        let (_d, p) = log(10);
        let mut m = Map::new();
        m.insert("event".into(), "recovered".into());
        m.insert("request_id".into(), "r".into());
        m.insert("ts".into(), "2026-11-22T04:40:00.000Z".into());
        m.insert("torn_bytes".into(), tail.len().into());
        m.insert(
            "torn_sha256".into(),
            hex::encode(Sha256::digest(tail)).into(),
        );
        let (rec, _) = seal(11, &last_hash(&p), &m).unwrap();
        let mut data = std::fs::read(&p).unwrap();
        data.extend_from_slice(tail);
        if added {
            data.push(b'\n');
        }
        data.extend_from_slice(&rec);
        std::fs::write(&p, &data).unwrap();
        let r = verify(&p, None);
        assert_broken(&r, Some(11), "as if a crash had torn them");
    }
}

#[test]
fn a_fifo_or_a_symlink_in_the_log_set_is_refused_without_hanging() {
    let (d, p) = log(3);
    let fifo = d.path().join("entrypoint.log.29991231T000000Z");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let q = p.clone();
    std::thread::spawn(move || {
        let _ = tx.send(verify(&q, None));
    });
    let Ok(r) = rx.recv_timeout(std::time::Duration::from_secs(10)) else {
        // Let the stuck open return before failing.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        panic!("verify hung on a FIFO");
    };
    assert_eq!(r.exit_code(), 2, "{r}");
    assert!(r.to_string().contains("not a regular file"), "{r}");
    // A symlink at a rotated name is not followed (it could name /dev/zero).
    std::fs::remove_file(&fifo).unwrap();
    let other = d.path().join("elsewhere.log");
    write_synthetic_log(&other, 3).unwrap();
    std::os::unix::fs::symlink(&other, &fifo).unwrap();
    let r = verify(&p, None);
    assert_eq!(r.exit_code(), 2, "{r}");
    assert!(r.to_string().contains("not a regular file"), "{r}");
}

#[test]
fn a_line_longer_than_any_entry_is_not_read_whole() {
    let (_d, p) = log(3);
    let mut data = std::fs::read(&p).unwrap();
    data.resize(data.len() + MAX_ENTRY_BYTES + 1, b'x');
    std::fs::write(&p, &data).unwrap();
    let r = verify(&p, None);
    assert_broken(&r, Some(4), "longer than any entry");
}

#[test]
fn missing_and_altered_prefix_of_the_log_is_detected() {
    let (_d, p) = log(10);
    let mut l = lines(&p);
    l.remove(0);
    write_lines(&p, &l);
    assert_broken(&verify(&p, None), None, "first entry has seq 2, not 1");
}

#[test]
fn a_rotated_file_given_directly_is_checked_alone() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.log.20261122T044000Z");
    write_synthetic_log(&p, 5).unwrap();
    std::fs::write(d.path().join("x.log"), b"garbage\n").unwrap();
    let r = verify(&p, None);
    assert_eq!(r.files, vec![p.clone()]);
    assert_eq!(r.outcome, Outcome::Intact, "{r}");
}

/// A signed log of three entries (and its first checkpoint) with key `k.pub`.
fn signed_log(d: &Path) -> (PathBuf, PathBuf) {
    let (sk, pk) = (d.join("k.pem"), d.join("k.pub"));
    crate::audit::keygen(&sk, &pk).unwrap();
    let p = d.join("s.log");
    let settings = crate::audit::AuditSettings {
        signing_key: Some(sk),
        sign_every: 4,
        ..crate::audit::AuditSettings::default()
    };
    let mut log = crate::audit::AuditLog::open(&p, &settings).unwrap();
    for i in 0..3 {
        let v = serde_json::json!({"request_id": format!("r{i}"), "event": "started"});
        log.append(v.as_object().cloned().unwrap()).unwrap();
    }
    assert_eq!(verify(&p, Some(&pk)).outcome, Outcome::Intact);
    (p, pk)
}

/// A line sealed over exactly `fields` (the JSON text between the `prev` and `hash`
/// keys), for spellings `seal` would not produce.
fn seal_raw(seq: u64, prev: &str, fields: &str) -> Vec<u8> {
    let body = format!("{{\"seq\":{seq},\"prev\":\"{prev}\",{fields}}}");
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]).into_bytes()
}

#[test]
fn what_the_log_chose_is_printed_escaped() {
    let d = tempfile::tempdir().unwrap();
    let (p, pk) = signed_log(d.path());
    let l = lines(&p);
    let seq = parse(&l[l.len() - 1][..l[l.len() - 1].len() - 1])
        .unwrap()
        .seq;
    let head = last_hash(&p);
    // A forged checkpoint whose key_id would redraw the report as "intact".
    let mut m = Map::new();
    m.insert("event".into(), "checkpoint".into());
    let key_id = format!("\r\u{1b}[2Kintact: {seq} entries, head {head}\u{1b}[8m\u{202e}");
    m.insert("key_id".into(), key_id.into());
    m.insert("request_id".into(), "x".into());
    m.insert("sig".into(), "00".repeat(64).into());
    m.insert("sign_every".into(), 4.into());
    m.insert("signed_hash".into(), head.clone().into());
    m.insert("signed_seq".into(), seq.into());
    let (line, _) = seal(seq + 1, &head, &m).unwrap();
    let mut data = std::fs::read(&p).unwrap();
    data.extend_from_slice(&line);
    std::fs::write(&p, &data).unwrap();
    let r = verify(&p, Some(&pk));
    assert!(
        broken(&r).message.contains("signature does not verify"),
        "{r}"
    );
    let text = r.to_string();
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{text:?}"
    );
    assert!(text.starts_with("BROKEN: "), "{text:?}");
    assert!(
        text.contains("\\u{d}\\u{1b}[2Kintact") && text.contains("\\u{202e}"),
        "{text}"
    );
}

#[test]
fn a_checkpoint_spelled_with_escapes_is_still_checked() {
    let d = tempfile::tempdir().unwrap();
    let (p, pk) = signed_log(d.path());
    let l = lines(&p);
    let seq = parse(&l[l.len() - 1][..l[l.len() - 1].len() - 1])
        .unwrap()
        .seq;
    let head = last_hash(&p);
    // jq reads `"event":"checkpoint"`; the signature is garbage.
    let fields = format!(
        "\"event\":\"\\u0063heckpoint\",\"request_id\":\"x\",\"sig\":\"{}\",\
         \"sign_every\":4,\"signed_hash\":\"{head}\",\"signed_seq\":{seq}",
        "ab".repeat(64)
    );
    let line = seal_raw(seq + 1, &head, &fields);
    let v: Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["event"], "checkpoint");
    let mut data = std::fs::read(&p).unwrap();
    data.extend_from_slice(&line);
    std::fs::write(&p, &data).unwrap();
    let r = verify(&p, Some(&pk));
    assert!(
        broken(&r).message.contains("signature does not verify"),
        "{r}"
    );
}

/// `cargo test --release --lib audit::verify::tests::verify_speed -- --ignored --nocapture`
#[test]
#[ignore]
fn verify_speed() {
    let (_d, p) = log(100_000);
    let t = std::time::Instant::now();
    let r = verify(&p, None);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.outcome, Outcome::Intact);
    println!(
        "verify: 100000 entries in {secs:.3} s = {:.0} entries/s",
        100_000.0 / secs
    );
    // With --key every line is also scanned for a checkpoint.
    let (sk, pk) = (p.with_extension("pem"), p.with_extension("pub"));
    crate::audit::keygen(&sk, &pk).unwrap();
    let t = std::time::Instant::now();
    let r = verify(&p, Some(&pk));
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.entries, 100_000);
    println!("verify --key: {:.0} entries/s", 100_000.0 / secs);
}
