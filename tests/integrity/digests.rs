//! Unpinned executables' digests, kept between upm processes (issue 25): used while the
//! file is unchanged and the store is upm's own, and never for a pinned file.

use super::*;

/// The digest the `started` entry names for this call's executable.
fn exec_sha256(d: &TestDir, run: &Run) -> String {
    assert_ok(run);
    let started = &audit_of(d, run)[0];
    started["plugin_files"]["exec_sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn an_unpinned_executables_digest_is_kept_until_the_file_changes() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let work = work_dir(&d);
    let exe = echo_copy(&d, "bin/echo");
    let mut pinned = cmd_plugin(&exe, &["m"]);
    pinned["sha256"] = json!(sha256_of(&exe));
    let cfg = TestConfig::new()
        .set("workdir_root", json!(work))
        .timeout_ms(10000)
        .plugins(json!({ "E": cmd_plugin(&exe, &["m"]), "Pinned": pinned }))
        .write(&d);
    let real = sha256_of(&exe);
    let run = || call(&cfg, "E", "m", json!({}), &[]);
    let store = work.join("upm-digests-0");

    // A file changed in the last 2 s is hashed but not kept (its ctime may not have
    // moved yet on a filesystem with coarse timestamps).
    assert_eq!(exec_sha256(&d, &run()), real);
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0);
    settle();
    assert_eq!(exec_sha256(&d, &run()), real);
    let entries: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let meta = std::fs::metadata(&store).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);

    // The next process takes the digest from the entry, not from the file: one made to
    // say another digest (as only upm's euid could) shows it.
    let other = "ab".repeat(32);
    let plant = || {
        let text = std::fs::read_to_string(entry).unwrap();
        assert!(text.ends_with(&format!(" {real}\n")), "{text}");
        std::fs::write(entry, text.replace(&real, &other)).unwrap();
    };
    plant();
    assert_eq!(exec_sha256(&d, &run()), other, "the kept digest is used");
    // A pinned plugin's file is always read.
    let pinned = call(&cfg, "Pinned", "m", json!({}), &[]);
    assert_eq!(exec_sha256(&d, &pinned), real);

    // Any change to the file (here a chmod, which leaves its bytes alone) moves its
    // ctime: the entry no longer matches, the file is hashed again and, once settled,
    // the entry renewed.
    chmod(&exe, 0o755);
    assert_eq!(exec_sha256(&d, &run()), real);
    settle();
    assert_eq!(exec_sha256(&d, &run()), real);
    plant();
    assert_eq!(exec_sha256(&d, &run()), other, "the renewed entry is used");

    // A store others may write to is not used (nor written); the same entry is, once
    // the store is upm's own again; an entry others may read is not.
    chmod(&store, 0o757);
    let ignored = run();
    assert_eq!(exec_sha256(&d, &ignored), real, "a store others may write");
    chmod(&store, 0o700);
    assert_eq!(exec_sha256(&d, &run()), other);
    chmod(entry, 0o644);
    assert_eq!(exec_sha256(&d, &run()), real, "an entry others may read");
}

/// Past the 2 s after which a file's identity stands for its bytes.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(2100));
}

/// An unpinned Python tree's digest (the audit's `manifest_sha256`) is kept for the tree's
/// fingerprint (every file's path, identity and mode) until a file changes or is added,
/// so that a `python_path` holding a whole `site-packages` is not read at every call; a
/// pinned tree is always read.
#[test]
fn an_unpinned_trees_digest_is_kept_until_a_file_changes() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let work = work_dir(&d);
    let module = d.write("py/mod.py", GOOD_PY, false);
    d.write("py/pkg/helper.py", "X = 1\n", false);
    let config = |plugin: Value| {
        TestConfig::new()
            .set("python", json!("/usr/bin/python3"))
            .set("workdir_root", json!(work))
            .timeout_ms(10000)
            .plugins(json!({ "P": plugin }))
            .write(&d)
    };
    let cfg = config(py_plugin("py"));
    // What `upm check` reads from the tree itself.
    let real = || {
        let c = check(&cfg, &[]);
        assert_eq!(c.code, 0, "{}", ctx(&c));
        c.json["plugins"]["P"]["pins"]["manifest"]["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let digest_of_call = |d: &TestDir| {
        let run = call(&cfg, "P", "who", json!({}), &[]);
        assert_ok(&run);
        audit_of(d, &run)[0]["plugin_files"]["manifest_sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let store = work.join("upm-digests-0");
    let trees = || -> Vec<PathBuf> {
        std::fs::read_dir(&store)
            .map(|r| {
                r.map(|e| e.unwrap().path())
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with("tree-")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = real();
    // Files changed in the last 2 s: read, not kept.
    assert_eq!(digest_of_call(&d), first);
    assert!(trees().is_empty(), "{:?}", trees());
    settle();
    assert_eq!(digest_of_call(&d), first);
    let entries = trees();
    assert_eq!(entries.len(), 1, "{entries:?}");
    // The next process takes the digest from the entry, not from the tree: one made to
    // say another digest (as only upm's euid could) shows it.
    let other = "cd".repeat(32);
    let text = std::fs::read_to_string(&entries[0]).unwrap();
    assert!(text.ends_with(&format!(" {first}\n")), "{text}");
    std::fs::write(&entries[0], text.replace(&first, &other)).unwrap();
    assert_eq!(digest_of_call(&d), other, "the kept digest is used");
    // A pinned tree is always read: its pin holds against the planted entry. (The same
    // config file, rewritten, and then put back.)
    let mut pinned = py_plugin("py");
    pinned["manifest_sha256"] = json!(first);
    let pinned_cfg = config(pinned);
    let run = call(&pinned_cfg, "P", "who", json!({}), &[]);
    assert_ok(&run);
    assert_eq!(
        audit_of(&d, &run)[0]["plugin_files"]["manifest_sha256"],
        first.as_str()
    );
    assert_eq!(config(py_plugin("py")), cfg);
    // One byte of a module (the same size, its mtime put back: the ctime still moves), or
    // a file added: read again, once settled too (and the digest says so).
    let mtime = std::fs::metadata(&module).unwrap().modified().unwrap();
    std::fs::write(&module, GOOD_PY.replace("good", "gooD")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&module)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    settle();
    let changed = real();
    assert_ne!(changed, first);
    assert_eq!(digest_of_call(&d), changed);
    d.write("py/pkg/more.py", "Y = 2\n", false);
    settle();
    let added = real();
    assert_ne!(added, changed);
    assert_eq!(digest_of_call(&d), added);
    // A directory renamed over another (their files keep their identities): read again.
    d.write("py/twin/helper.py", "X = 3\n", false);
    settle();
    assert_eq!(digest_of_call(&d), real());
    std::fs::rename(d.join("py/pkg"), d.join("py/old")).unwrap();
    std::fs::rename(d.join("py/twin"), d.join("py/pkg")).unwrap();
    let swapped = real();
    assert_ne!(swapped, added);
    assert_eq!(digest_of_call(&d), swapped);
}

/// A writable shared mapping of a whole file, held by the test: what a writer of the file
/// may keep across calls.
struct SharedMap {
    ptr: *mut u8,
    len: usize,
    path: PathBuf,
}

impl SharedMap {
    fn of(path: &Path) -> SharedMap {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: a new shared mapping of an open file's whole length, checked below; the
        // mapping holds the file once its descriptor is closed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap {}", path.display());
        SharedMap {
            ptr: ptr.cast(),
            len,
            path: path.to_path_buf(),
        }
    }

    /// Writes `new` over the first `old` (as long), found and written through the
    /// mapping only (read first, as a writer would: on a tmpfs the read maps the page
    /// writable, and the write then faults not at all).
    fn replace(&self, old: &str, new: &str) {
        assert_eq!(old.len(), new.len());
        // SAFETY: the mapping is `len` readable bytes until dropped; only this test
        // writes the file meanwhile.
        let text = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        let at = text
            .windows(old.len())
            .position(|w| w == old.as_bytes())
            .unwrap_or_else(|| panic!("{old} in {}", self.path.display()));
        // SAFETY: `at + new.len()` bytes lie within the mapping, writable until dropped.
        unsafe { std::ptr::copy_nonoverlapping(new.as_ptr(), self.ptr.add(at), new.len()) };
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A tmpfs mounted at a directory for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn at(dir: PathBuf) -> Tmpfs {
        use nix::mount::{mount, MsFlags};
        std::fs::create_dir(&dir).unwrap();
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=755,size=1m"),
        )
        .unwrap();
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A `upm run --jsonl` process answering one request at a time.
struct JsonlBatch {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    n: usize,
}

impl JsonlBatch {
    fn start(config: &Path) -> JsonlBatch {
        let mut child = with_trust_env(Command::new(upm_bin()), &[])
            .args(["run", "--jsonl", "--config", config.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        JsonlBatch { child, out, n: 0 }
    }

    /// Calls `plugin`'s `who` and returns its result line and its `started` audit entry.
    fn call(&mut self, d: &TestDir, plugin: &str) -> (Value, Value) {
        use std::io::{BufRead, Write};
        self.n += 1;
        let id = format!("{plugin}-{}", self.n);
        let mut line = serde_json::to_vec(
            &json!({"plugin": plugin, "method": "who", "args": {}, "request_id": id}),
        )
        .unwrap();
        line.push(b'\n');
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(&line).unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        self.out.read_line(&mut answer).unwrap();
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["request_id"], id.as_str(), "{answer}");
        let started = d
            .audit_lines()
            .into_iter()
            .find(|l| l["request_id"] == id.as_str() && l["event"] == "started")
            .unwrap_or_else(|| panic!("no started entry for {id}: {answer}"));
        (answer, started)
    }
}

impl Drop for JsonlBatch {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A `/bin/sh` plugin answering `{"who": "good-v1"}`, 0755.
const WHO_SH: &str = "#!/bin/sh\ncat >/dev/null\necho '{\"who\": \"good-v1\"}'\n";
/// A Python class plugin answering `{"who": "good-v1"}`.
const WHO_PY: &str = "class P:\n    def __init__(self, project_root, cache_dir, policy):\n        pass\n\n    def who(self):\n        return {\"who\": \"good-v1\"}\n";

/// The `manifest_sha256` of a tree of one file, `mod.py` (docs/integrity.md's format).
fn one_file_tree_digest(module: &Path) -> String {
    let line = format!("0/mod.py\0{}\n", sha256_of(module));
    hex::encode(Sha256::digest(line.as_bytes()))
}

fn identity(p: &Path) -> (u64, u64, u64, i64, i64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    let (dev, ino, size) = (m.dev(), m.ino(), m.size());
    (
        dev,
        ino,
        size,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// On a tmpfs a write through a shared mapping moves no timestamp at all (the file's
/// device, inode, size, mtime and ctime stay as they were): no digest is kept there, and
/// the audit names what runs, in one `run --jsonl` process and across one-shot calls
/// (red team, review 3: the next call ran the new code under the old digest).
#[test]
fn a_file_rewritten_through_a_mapping_on_a_tmpfs_is_hashed_again() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let work = work_dir(&d);
    let tmpfs = Tmpfs::at(d.join("tmpfs"));
    let script = |name: &str| {
        let p = tmpfs.0.join(name);
        std::fs::write(&p, WHO_SH).unwrap();
        chmod(&p, 0o755);
        p
    };
    let (a, b) = (script("a.sh"), script("b.sh"));
    let cfg = TestConfig::new()
        .set("workdir_root", json!(work))
        .timeout_ms(10000)
        .plugins(json!({ "A": cmd_plugin(&a, &["who"]), "B": cmd_plugin(&b, &["who"]) }))
        .write(&d);
    // Settled: a file of a filesystem whose ctimes could be trusted would now be kept.
    settle();
    let who = |answer: &Value| answer["data"]["result"]["who"].clone();

    // One `run --jsonl` process.
    let mut batch = JsonlBatch::start(&cfg);
    let (answer, started) = batch.call(&d, "A");
    assert_eq!(who(&answer), "good-v1", "{answer}");
    assert_eq!(started["plugin_files"]["exec_sha256"], sha256_of(&a));
    let before = identity(&a);
    SharedMap::of(&a).replace("good-v1", "EVIL-v2");
    assert_eq!(
        identity(&a),
        before,
        "tmpfs moved a timestamp: nothing to test"
    );
    let (answer, started) = batch.call(&d, "A");
    assert_eq!(who(&answer), "EVIL-v2", "{answer}");
    assert_eq!(
        started["plugin_files"]["exec_sha256"],
        sha256_of(&a),
        "the audit names the digest of the code before it was rewritten"
    );
    drop(batch);

    // One-shot calls.
    let exec_of = |run: &Run| {
        assert_ok(run);
        audit_of(&d, run)[0]["plugin_files"]["exec_sha256"].clone()
    };
    assert_eq!(
        exec_of(&call(&cfg, "B", "who", json!({}), &[])),
        sha256_of(&b)
    );
    let before = identity(&b);
    SharedMap::of(&b).replace("good-v1", "EVIL-v2");
    assert_eq!(identity(&b), before);
    let run = call(&cfg, "B", "who", json!({}), &[]);
    assert_eq!(run.result()["who"], "EVIL-v2", "{}", ctx(&run));
    assert_eq!(exec_of(&run), sha256_of(&b), "the kept digest was reused");
    let kept = std::fs::read_dir(work.join("upm-digests-0")).map_or(0, |r| r.count());
    assert_eq!(kept, 0, "a digest was kept for a file of a tmpfs");
}

/// On ext4 (XFS, Btrfs) a writer that maps a file and writes to it moves its ctime once;
/// a second write through the still-dirty page faults no more and moves nothing. upm
/// writes the file's dirty pages back before it takes the identity a kept digest is filed
/// under, so the second write faults and moves the ctime: the next call hashes the file
/// again, for an executable and a tree, in one `run --jsonl` process and across one-shot
/// calls (red team, review 3, repro-digest-ext4.sh).
#[test]
fn a_second_write_through_a_held_mapping_is_seen() {
    if skip_unless_root() {
        return;
    }
    let d = TestDir::new();
    let fs = nix::sys::statfs::statfs(&d.path)
        .unwrap()
        .filesystem_type()
        .0;
    if ![0xEF53, 0x5846_5342, 0x9123_683E].contains(&fs) {
        eprintln!(
            "SKIPPED: {} is not on ext4, XFS or Btrfs (fs type {fs:#x}): no held-mapping test",
            d.path.display()
        );
        return;
    }
    let work = work_dir(&d);
    let (t1, t2) = (
        d.write("py1/mod.py", WHO_PY, false),
        d.write("py2/mod.py", WHO_PY, false),
    );
    let (s1, s2) = (
        d.write("bin/s1.sh", WHO_SH, true),
        d.write("bin/s2.sh", WHO_SH, true),
    );
    let cfg = TestConfig::new()
        .set("python", json!("/usr/bin/python3"))
        .set("workdir_root", json!(work))
        .timeout_ms(10000)
        .plugins(json!({
            "T1": py_plugin("py1"), "T2": py_plugin("py2"),
            "S1": cmd_plugin(&s1, &["who"]), "S2": cmd_plugin(&s2, &["who"]),
        }))
        .write(&d);
    // The writer maps each file and writes through the mapping (the page faults: the
    // ctime moves), then waits until the change is settled.
    let maps: Vec<SharedMap> = [&t1, &t2, &s1, &s2]
        .iter()
        .map(|p| {
            let m = SharedMap::of(p);
            m.replace("good-v1", "good-v1");
            m
        })
        .collect();
    settle();
    let tree_of = |started: &Value| started["plugin_files"]["manifest_sha256"].clone();
    let exec_of = |started: &Value| started["plugin_files"]["exec_sha256"].clone();
    let who = |answer: &Value| answer["data"]["result"]["who"].clone();

    // Each is hashed once, its digest kept: the tree's call runs; the script's exec fails
    // (ETXTBSY: the writer holds it open for writing), its digest kept all the same.
    let mut batch = JsonlBatch::start(&cfg);
    let (answer, started) = batch.call(&d, "T1");
    assert_eq!(who(&answer), "good-v1", "{answer}");
    assert_eq!(tree_of(&started), one_file_tree_digest(&t1));
    let (_, started) = batch.call(&d, "S1");
    assert_eq!(exec_of(&started), sha256_of(&s1));
    let run = call(&cfg, "T2", "who", json!({}), &[]);
    assert_eq!(run.result()["who"], "good-v1", "{}", ctx(&run));
    assert_eq!(tree_of(&audit_of(&d, &run)[0]), one_file_tree_digest(&t2));
    let run = call(&cfg, "S2", "who", json!({}), &[]);
    assert_eq!(exec_of(&audit_of(&d, &run)[0]), sha256_of(&s2));

    // The second write, through the same pages; the writer then lets go.
    for m in &maps {
        m.replace("good-v1", "EVIL-v2");
    }
    drop(maps);

    let (answer, started) = batch.call(&d, "T1");
    assert_eq!(who(&answer), "EVIL-v2", "{answer}");
    assert_eq!(
        tree_of(&started),
        one_file_tree_digest(&t1),
        "tree, one process"
    );
    let (answer, started) = batch.call(&d, "S1");
    assert_eq!(who(&answer), "EVIL-v2", "{answer}");
    assert_eq!(exec_of(&started), sha256_of(&s1), "executable, one process");
    drop(batch);
    let run = call(&cfg, "T2", "who", json!({}), &[]);
    assert_eq!(run.result()["who"], "EVIL-v2", "{}", ctx(&run));
    let started = &audit_of(&d, &run)[0];
    assert_eq!(
        tree_of(started),
        one_file_tree_digest(&t2),
        "tree, one-shot"
    );
    let run = call(&cfg, "S2", "who", json!({}), &[]);
    assert_eq!(run.result()["who"], "EVIL-v2", "{}", ctx(&run));
    let started = &audit_of(&d, &run)[0];
    assert_eq!(exec_of(started), sha256_of(&s2), "executable, one-shot");
}
