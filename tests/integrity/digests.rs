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
    let work = d.join("work");
    std::fs::create_dir(&work).unwrap();
    chmod(&work, 0o755);
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

    assert_eq!(exec_sha256(&d, &run()), real);
    let store = work.join("upm-digests-0");
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
    let text = std::fs::read_to_string(entry).unwrap();
    std::fs::write(entry, text.replace(&real, &other)).unwrap();
    assert_eq!(exec_sha256(&d, &run()), other, "the kept digest is used");
    // A pinned plugin's file is always read.
    assert_eq!(
        exec_sha256(&d, &call(&cfg, "Pinned", "m", json!({}), &[])),
        real
    );

    // Any change to the file (here a chmod, which leaves its bytes alone) moves its
    // ctime: the entry no longer matches, the file is hashed again and the entry renewed.
    chmod(&exe, 0o755);
    assert_eq!(exec_sha256(&d, &run()), real);
    assert!(std::fs::read_to_string(entry)
        .unwrap()
        .ends_with(&format!(" {real}\n")));

    // A store others may write to is not used (nor written).
    std::fs::write(entry, text.replace(&real, &other)).unwrap();
    chmod(&store, 0o757);
    assert_eq!(
        exec_sha256(&d, &run()),
        real,
        "a store others may write is ignored"
    );
    chmod(&store, 0o700);
    // An entry others may read is not used either.
    chmod(entry, 0o644);
    assert_eq!(exec_sha256(&d, &run()), real);
}
