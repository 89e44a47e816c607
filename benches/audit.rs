//! Audit log costs, printed as a markdown table (`cargo bench --bench audit`).
//!
//! - `verify` throughput on 100,000-entry logs: the library's small synthetic
//!   entries, and realistic `started`/`finished` entries (about 2 KB, with the
//!   sandbox summary) written through `AuditLog::append` with a signing key,
//!   verified without and with the public key. Median of several runs.
//! - One durable `AuditLog::append` (lock, read the head, one write,
//!   fdatasync, unlock) next to a bare `write` + `fdatasync` of a line of the
//!   same size to a file in the same directory, interleaved so that disk noise
//!   hits both alike. The machine is shared: compare ratios, not absolutes.
//!
//! Environment: `UPM_BENCH_DIR` (where the durable appends go; default a
//! temporary directory under /tmp), `UPM_BENCH_APPENDS` (default 600).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use upm::audit::{self, AuditLog, AuditSettings, Outcome};

const ENTRIES: u64 = 100_000;
const VERIFY_RUNS: usize = 5;

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("bench audit: {what}: {e}");
    std::process::exit(1);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    percentile(&v, 0.5)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// What the pipeline records about the sandbox (about 1.7 KB), so entries
/// have their real size.
fn sandbox_summary() -> Value {
    json!({"backend":"native","layers":{
        "credentials":{"detail":{"capabilities":[],"gid":65534,"mode":"switched_from_root",
            "no_new_privs":true,"supplementary_groups":[],"uid":65534},"state":"enforced"},
        "landlock":{"detail":{"abi":7,"fully_enforced":true,"handled_abi":6,
            "read":["/usr","/lib","/lib64","/bin","/sbin","/etc/ld.so.cache","/etc/ld.so.conf",
                    "/etc/ld.so.conf.d","/etc/localtime","/opt/upm/bin/upm-texttools"],
            "scopes":["abstract_unix_socket","signal"],"tcp_bind_connect":"denied",
            "write":["/tmp/upm-01a201a8-0e54-7365-8d53-dd696d6ec7b7-dd6a4468efee"]},"state":"enforced"},
        "limits":{"detail":{"core_dumps":false,"cpu_seconds":10,"file_size_bytes":16777216,
            "max_processes":64,"memory_bytes":1073741824,"open_files":256,"output_bytes":4194304,
            "timeout_ms":10000},"state":"enforced"},
        "namespaces":{"detail":{"created":["pid","ipc","net"]},"state":"enforced"},
        "network":{"detail":{"landlock_abstract_unix_scoped":true,"landlock_tcp_denied":true,
            "mode":"none","network_namespace":true,"seccomp_sockets_denied":true},"state":"enforced"},
        "seccomp":{"detail":{"digest":"sha256:ba5742dc97421323b6154c34cb9cd24c806973f918b4108cf2cd6615114b3320",
            "instructions":1555,"sockets":"denied (stream socketpairs allowed)","profile":"default"},"state":"enforced"}}})
}

/// A `started` (even `i`) or `finished` (odd `i`) entry shaped like the pipeline's.
fn realistic_entry(i: u64, sandbox: &Value) -> Map<String, Value> {
    let rid = format!("01a201a8-0e54-7365-8d53-{:012x}", i / 2);
    let mut e = json!({
        "request_id": rid, "hostname": "vm", "pid": 4242 + i / 2,
        "plugin": "TextTools", "method": "upper",
    });
    let fields = if i.is_multiple_of(2) {
        json!({
            "event": "started",
            "caller": {"uid": 1000, "gid": 1000, "ppid": 4000, "parent_exe": "/usr/bin/python3.11"},
            "args_digest": "sha256:015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862",
            "config_sha256": "sha256:aacb01620502b08e7fbde702f77f9856a170eb86156ce82279a25b545cdadb73",
            "plugin_sha256": "bb31b704c152204e4514f0e74b7d5acb8744108c0e4fa3c72b10dd870a66b89f",
            "sandbox_requested": sandbox,
        })
    } else {
        json!({
            "event": "finished", "code": "ok", "exit_code": 0, "plugin_exit_code": 0,
            "duration_ms": 9.511, "ran": true, "limit": null,
            "usage": {"wall_ms": 5.292, "cpu_user_ms": 2.494, "cpu_system_ms": 0.0, "max_rss_kb": 1548},
            "output_bytes": {"stdout": 17, "stderr": 0},
            "sandbox": sandbox,
        })
    };
    if let (Some(o), Some(f)) = (e.as_object_mut(), fields.as_object()) {
        o.extend(f.clone());
    }
    e.as_object().cloned().unwrap_or_default()
}

/// Median wall time of `verify` over several runs; checks the outcome each time.
fn time_verify(log: &Path, key: Option<&Path>, expect_checkpoints: bool) -> (Duration, u64) {
    let mut times = Vec::new();
    let mut entries = 0;
    for _ in 0..VERIFY_RUNS {
        let t = Instant::now();
        let report = audit::verify(log, key);
        times.push(t.elapsed());
        if report.outcome != Outcome::Intact {
            fail("verify", format!("{report}"));
        }
        if expect_checkpoints && report.checkpoints_verified == 0 {
            fail("verify --key", "no checkpoint was verified");
        }
        entries = report.entries;
    }
    (median(times), entries)
}

struct Row {
    what: String,
    value: String,
    note: String,
}

fn verify_rows(scratch: &Path, rows: &mut Vec<Row>) {
    let synthetic = scratch.join("synthetic.log");
    audit::write_synthetic_log(&synthetic, ENTRIES).unwrap_or_else(|e| fail("synthetic log", e));
    let size = std::fs::metadata(&synthetic).map_or(0, |m| m.len());
    let (t, n) = time_verify(&synthetic, None, false);
    rows.push(Row {
        what: "`verify`, synthetic entries".into(),
        value: format!("{:.0} entries/s", n as f64 / t.as_secs_f64()),
        note: format!(
            "{n} entries, {:.0} B/entry, median of {VERIFY_RUNS}: {:.1} ms (goal ≥ 500,000/s)",
            size as f64 / n as f64,
            t.as_secs_f64() * 1e3
        ),
    });

    // Realistic entries, appended through the writer (on tmpfs, where the
    // fdatasync is free: this builds the log, it is not the append timing).
    let keys = scratch.join("keys");
    std::fs::create_dir_all(&keys).unwrap_or_else(|e| fail("mkdir", e));
    let (secret, public) = (keys.join("audit.pem"), keys.join("audit.pub"));
    audit::keygen(&secret, &public).unwrap_or_else(|e| fail("keygen", e));
    let settings = AuditSettings {
        signing_key: Some(secret),
        sign_every: 100,
        ..AuditSettings::default()
    };
    let real = scratch.join("realistic.log");
    let mut log = AuditLog::open(&real, &settings).unwrap_or_else(|e| fail("open", e));
    let sandbox = sandbox_summary();
    let t = Instant::now();
    for i in 0..ENTRIES {
        log.append(realistic_entry(i, &sandbox))
            .unwrap_or_else(|e| fail("append", e));
    }
    let build = t.elapsed();
    let size = std::fs::metadata(&real).map_or(0, |m| m.len());
    let (t, n) = time_verify(&real, None, false);
    rows.push(Row {
        what: "`verify`, realistic entries".into(),
        value: format!("{:.0} entries/s", n as f64 / t.as_secs_f64()),
        note: format!(
            "{n} entries (incl. checkpoints), {:.0} B/entry, {:.0} MB/s, median {:.1} ms",
            size as f64 / n as f64,
            size as f64 / t.as_secs_f64() / 1e6,
            t.as_secs_f64() * 1e3
        ),
    });
    let (tk, n) = time_verify(&real, Some(&public), true);
    rows.push(Row {
        what: "`verify --key`, realistic entries".into(),
        value: format!("{:.0} entries/s", n as f64 / tk.as_secs_f64()),
        note: format!(
            "checkpoint every 100 entries; median {:.1} ms ({:+.1}% vs no key)",
            tk.as_secs_f64() * 1e3,
            (tk.as_secs_f64() / t.as_secs_f64() - 1.0) * 100.0
        ),
    });
    rows.push(Row {
        what: "building that log (tmpfs, no disk sync)".into(),
        value: us(build / ENTRIES as u32),
        note: "per `AuditLog::append`, signing included: the CPU side of an append".into(),
    });
}

/// Durable appends, interleaved with bare write+fdatasync of the same size.
fn append_rows(dir: &Path, appends: usize, rows: &mut Vec<Row>) {
    let log_path = dir.join("durable.log");
    let bare_path = dir.join("bare.log");
    let signed_path = dir.join("signed.log");
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&bare_path);
    let _ = std::fs::remove_file(&signed_path);
    let keys = dir.join("keys");
    let _ = std::fs::remove_dir_all(&keys);
    std::fs::create_dir_all(&keys).unwrap_or_else(|e| fail("mkdir", e));
    let secret = keys.join("audit.pem");
    audit::keygen(&secret, &keys.join("audit.pub")).unwrap_or_else(|e| fail("keygen", e));

    let mut log =
        AuditLog::open(&log_path, &AuditSettings::default()).unwrap_or_else(|e| fail("open", e));
    let signed_settings = AuditSettings {
        signing_key: Some(secret),
        sign_every: 100,
        ..AuditSettings::default()
    };
    let mut signed =
        AuditLog::open(&signed_path, &signed_settings).unwrap_or_else(|e| fail("open", e));
    let mut bare = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&bare_path)
        .unwrap_or_else(|e| fail("open bare", e));
    let sandbox = sandbox_summary();

    let (mut t_log, mut t_bare, mut t_signed) = (Vec::new(), Vec::new(), Vec::new());
    let mut line_len = 0u64;
    for i in 0..appends as u64 {
        let entry = realistic_entry(i, &sandbox);
        let before = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        let t = Instant::now();
        log.append(entry.clone())
            .unwrap_or_else(|e| fail("append", e));
        t_log.push(t.elapsed());
        let after = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        line_len = after - before;

        let mut line = vec![b'x'; line_len as usize - 1];
        line.push(b'\n');
        let t = Instant::now();
        bare.write_all(&line)
            .and_then(|()| bare.sync_data())
            .unwrap_or_else(|e| fail("bare write", e));
        t_bare.push(t.elapsed());

        let t = Instant::now();
        signed
            .append(entry)
            .unwrap_or_else(|e| fail("signed append", e));
        t_signed.push(t.elapsed());
    }
    for v in [&mut t_log, &mut t_bare, &mut t_signed] {
        v.sort();
    }
    let (bm, b90) = (percentile(&t_bare, 0.5), percentile(&t_bare, 0.9));
    let ratio = |m: Duration, p: Duration| {
        format!(
            "×{:.2} median, ×{:.2} p90 vs bare",
            m.as_secs_f64() / bm.as_secs_f64(),
            p.as_secs_f64() / b90.as_secs_f64()
        )
    };
    rows.push(Row {
        what: format!("bare `write`+`fdatasync`, {line_len} B"),
        value: format!("{} median, {} p90", us(bm), us(b90)),
        note: format!("{appends} writes, same directory"),
    });
    let (lm, l90) = (percentile(&t_log, 0.5), percentile(&t_log, 0.9));
    rows.push(Row {
        what: "durable `AuditLog::append`".into(),
        value: format!("{} median, {} p90", us(lm), us(l90)),
        note: format!("{appends} appends; {}", ratio(lm, l90)),
    });
    let (sm, s90) = (percentile(&t_signed, 0.5), percentile(&t_signed, 0.9));
    rows.push(Row {
        what: "durable `AuditLog::append`, signed (every 100)".into(),
        value: format!("{} median, {} p90", us(sm), us(s90)),
        note: format!(
            "{appends} appends, a checkpoint (2nd fdatasync) every 100; {}",
            ratio(sm, s90)
        ),
    });
    let _ = std::fs::remove_file(&log_path);
    let _ = std::fs::remove_file(&bare_path);
    let _ = std::fs::remove_file(&signed_path);
    let _ = std::fs::remove_dir_all(&keys);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let appends: usize = std::env::var("UPM_BENCH_APPENDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600)
        .max(500);
    let shm = Path::new("/dev/shm");
    let scratch_base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let scratch = tempfile::Builder::new()
        .prefix("upm-bench-audit-")
        .tempdir_in(&scratch_base)
        .unwrap_or_else(|e| fail("scratch dir", e));
    let disk_tmp;
    let durable_dir: PathBuf = match std::env::var_os("UPM_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            disk_tmp = tempfile::Builder::new()
                .prefix("upm-bench-audit-")
                .tempdir_in("/tmp")
                .unwrap_or_else(|e| fail("durable dir", e));
            disk_tmp.path().to_path_buf()
        }
    };

    let mut rows = Vec::new();
    verify_rows(scratch.path(), &mut rows);
    append_rows(&durable_dir, appends, &mut rows);

    println!("## upm audit log benchmark\n");
    println!(
        "verify logs in {} (page cache); durable appends in {}\n",
        scratch_base.display(),
        durable_dir.display()
    );
    println!("| measure | result | notes |");
    println!("| --- | --- | --- |");
    for r in &rows {
        println!("| {} | {} | {} |", r.what, r.value, r.note);
    }
    println!("\nproduced by: cargo bench --bench audit");
}
