//! Exit 15: upm asked to stop (SIGTERM, SIGINT, SIGHUP) mid-call or mid-batch.

use super::*;

fn signal(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own, not yet reaped child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// Waits until upm handles `sig` (before, the signal would simply kill it).
fn wait_for_handler(child: &std::process::Child, sig: libc::c_int) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap();
        if caught & (1 << (sig - 1)) != 0 {
            return;
        }
        assert!(Instant::now() < deadline, "upm never handled signal {sig}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the audit log has `n` entries of `event`.
fn wait_for_events(d: &TestDir, event: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while d
        .audit_lines()
        .iter()
        .filter(|e| e["event"] == event)
        .count()
        < n
    {
        assert!(Instant::now() < deadline, "no {n} {event} entries");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A slow plugin's config, its private directories under `work`.
fn slow_config(d: &TestDir) -> (PathBuf, PathBuf) {
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
    let slow = sh(
        d,
        "slow",
        "read -r _; echo left-behind > ./file; sleep 30; echo '{}'",
    );
    let c = cfg(
        d,
        json!({ "workdir_root": work,
                "sandbox": { "limits": { "timeout_ms": 60000 } },
                "plugins": { "Slow": cmd(&slow, &["m"]) } }),
    );
    (c, work)
}

/// SIGTERM (a caller's timeout, `docker stop`) mid-call: the plugin's tree is killed,
/// and the call still ends properly: `cancelled` (exit 15), its `finished` entry
/// written, its directory removed. Before, upm died: a `started` entry with no
/// `finished` one, and the plugin's files left on disk.
#[test]
fn sigterm_mid_call_ends_it_cancelled_audited_and_cleaned_up() {
    let d = setup();
    let (c, work) = slow_config(&d);
    let child = start_call(
        &c,
        br#"{"plugin": "Slow", "method": "m", "request_id": "term-1"}"#,
    );
    wait_for_events(&d, "started", 1);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(15));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["code"], "cancelled", "{r}");
    assert_eq!(r["data"]["signal"], libc::SIGKILL, "{r}");
    let events: Vec<Value> = audit_of(&d, "term-1");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["event"], "finished");
    assert_eq!(events[1]["code"], "cancelled");
    let left = left_under(&work);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Asked to stop before its request arrived (stdin still open): refused as
/// `cancelled`, audited, nothing run.
#[test]
fn sigint_while_waiting_for_the_request_refuses_it() {
    let d = setup();
    let (c, _) = slow_config(&d);
    let mut child = spawn_run(&c, &[]);
    let stdin = child.stdin.take().unwrap();
    wait_for_handler(&child, libc::SIGINT);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(15));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["data"]["code"], "cancelled", "{r}");
    let lines = d.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "refused");
    assert_eq!(lines[0]["code"], "cancelled");
}

/// A batch asked to stop: the calls running end `cancelled`, and so do the calls
/// prepared and waiting for a slot (`--parallel 2` prepares four: two run, two wait
/// with their `started` entry durable) without their plugin ever running. No further
/// line is read, every `started` entry has its `finished` one, and the batch exits 15.
#[test]
fn sighup_mid_batch_cancels_the_running_calls_and_reads_no_more() {
    let d = setup();
    let (c, work) = slow_config(&d);
    let mut child = spawn_run(&c, &["--jsonl", "--parallel", "2"]);
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..8 {
        writeln!(
            stdin,
            r#"{{"plugin": "Slow", "method": "m", "request_id": "hup-{i}"}}"#
        )
        .unwrap();
    }
    wait_for_events(&d, "started", 4);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGHUP);
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(15));
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 4, "{results:?}");
    let (mut killed, mut not_run) = (0, 0);
    for r in &results {
        assert_eq!(r["data"]["code"], "cancelled", "{r}");
        assert!(matches!(r["line"].as_u64(), Some(1..=4)), "{r}");
        let error = r["data"]["error"].as_str().unwrap();
        if error.contains("killed the plugin") {
            assert_eq!(r["data"]["signal"], libc::SIGKILL, "{r}");
            killed += 1;
        } else {
            assert!(error.ends_with("the plugin was not run"), "{r}");
            not_run += 1;
        }
    }
    assert_eq!((killed, not_run), (2, 2), "{results:?}");
    let lines = d.audit_lines();
    let count = |e: &str| lines.iter().filter(|l| l["event"] == e).count();
    assert_eq!((count("started"), count("finished")), (4, 4), "{lines:?}");
    let left = left_under(&work);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// How many processes run `sleep ARG` (a duration only one test uses).
fn sleeping(arg: &str) -> usize {
    let want = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()))
        .count()
}

/// A batch of three calls of a plugin that sleeps `arg` seconds at `--parallel 2`:
/// returned once two plugins run and the third call waits for a slot. `stdout`: upm's.
fn gone_batch(d: &TestDir, arg: &str, stdout: Stdio) -> (std::process::Child, PathBuf) {
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
    let slow = sh(d, "slow", &format!("read -r _; exec sleep {arg}"));
    let c = cfg(
        d,
        json!({ "workdir_root": work,
                "sandbox": { "limits": { "timeout_ms": 60000 } },
                "plugins": { "Slow": cmd(&slow, &["m"]) } }),
    );
    let mut child = Command::new(upm_bin())
        .args(["run", "--jsonl", "--parallel", "2", "--config"])
        .arg(&c)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.as_mut().unwrap();
    for i in 0..3 {
        writeln!(
            stdin,
            r#"{{"plugin": "Slow", "method": "m", "request_id": "gone-{i}"}}"#
        )
        .unwrap();
    }
    // Two running, the third waiting for a slot (its `started` entry durable).
    wait_for_events(d, "started", 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sleeping(arg) < 2 {
        assert!(Instant::now() < deadline, "the two plugins never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, work)
}

/// What a batch whose results can no longer be written must have done: stopped within
/// `bound` (its plugins sleep 30 s), exit 1, its two running calls killed and the
/// waiting one not run, each audited `cancelled` for that reason, nothing left behind.
fn gone_batch_stopped(d: &TestDir, mut child: std::process::Child, work: &Path, t: Instant) {
    while child.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "upm went on running calls whose results cannot be delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child.stdin.take());
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let mut errors = Vec::new();
    for i in 0..3 {
        let events = audit_of(d, &format!("gone-{i}"));
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[1]["event"], "finished", "{events:?}");
        assert_eq!(events[1]["code"], "cancelled", "{events:?}");
        errors.push(events[1].to_string());
    }
    let killed = errors
        .iter()
        .filter(|e| e.contains("killed the plugin"))
        .count();
    let not_run = errors
        .iter()
        .filter(|e| e.contains("the plugin was not run"))
        .count();
    assert_eq!((killed, not_run), (2, 1), "{errors:#?}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("stdout could not be written")),
        "{errors:#?}"
    );
    let left = left_under(work);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A batch whose reader closes stdout while no result is due (upm watches stdout):
/// its running calls are killed and the waiting one is not run, at once.
#[test]
fn a_batch_whose_reader_leaves_stops_its_running_and_waiting_calls() {
    let d = setup();
    let (mut child, work) = gone_batch(&d, "29.71", Stdio::piped());
    let t = Instant::now();
    drop(child.stdout.take());
    gone_batch_stopped(&d, child, &work, t);
}

/// The same when writing a result fails where nothing could be watched (stdout is
/// /dev/full: ENOSPC): a refused line's result, answered at once, fails to be written.
#[test]
fn a_batch_whose_result_cannot_be_written_stops_its_running_and_waiting_calls() {
    let d = setup();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (mut child, work) = gone_batch(&d, "29.72", Stdio::from(full));
    let t = Instant::now();
    writeln!(child.stdin.as_mut().unwrap(), "not json").unwrap();
    gone_batch_stopped(&d, child, &work, t);
}

/// A stop is bounded even where upm is blocked and no poll watches for it: here,
/// writing a large result its caller does not read. upm ends within its 5 s grace,
/// exit 15, the call's `finished` entry already durable.
#[test]
fn a_stop_is_bounded_when_the_result_cannot_be_written() {
    let d = setup();
    let big = sh(
        &d,
        "big",
        r#"read -r _; printf '{"x": "'; yes a | head -c 600000 | tr -d '\n'; printf '"}'"#,
    );
    let c = cfg(&d, json!({ "plugins": { "Big": cmd(&big, &["m"]) } }));
    let mut child = start_call(
        &c,
        br#"{"plugin": "Big", "method": "m", "request_id": "stuck-1"}"#,
    );
    // Nobody reads upm's stdout: it blocks writing the result, after the entry.
    wait_for_events(&d, "finished", 1);
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    signal(&child, libc::SIGTERM);
    while child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(15), "upm did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(15), "{status:?}");
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    let events = audit_of(&d, "stuck-1");
    assert_eq!(events.len(), 2, "{events:?}");
}

/// The deadline does not end upm silently: stuck waiting for another process's lock on
/// the audit log, a stopped upm says on stderr why it ends, and what may be missing.
#[test]
fn a_stop_deadline_says_why_on_stderr() {
    use std::os::fd::AsRawFd;
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let r = run_stdin(&c, &request("TextTools", "upper", json!({"text": "hi"})));
    assert_eq!(r.code, 0, "{r:?}");
    // Another process (here, this one) holds the log's lock: upm waits for it.
    let log = std::fs::File::open(d.join("entrypoint.log")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(log.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut child = Command::new(upm_bin())
        .args(["run", "--config", c.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&request("TextTools", "upper", json!({"text": "hi"})))
        .unwrap();
    wait_for_handler(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(15), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("still not done 5 s after the stop signal")
            && stderr.contains("may lack its `finished` audit entry"),
        "{stderr}"
    );
    drop(log);
}
