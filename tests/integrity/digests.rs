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
