//! A root upm keeps its compiled seccomp programs between processes
//! (`<workdir_root>/upm-seccomp-0/`), and recalls only root's own, unaltered entries.

use super::*;

/// Prints `uname -s`'s exit code: 1 when the kernel refused it its name.
const UNAME: &str = r#"r=$(uname -s 2>/dev/null); echo "{\"rc\": $?}""#;

/// A config whose plugin asks the kernel its name, its calls' directories (and the
/// store) under `<dir>/<work>`; with `profile`, the seccomp profile file it uses.
fn config(dir: &TestDir, work: &str, profile: Option<&Path>) -> PathBuf {
    let root = dir.join(work);
    std::fs::create_dir_all(&root).unwrap();
    let mut plugin = json!({ "command": ["/bin/sh", "-c", UNAME], "allowed_methods": ["m"] });
    if let Some(p) = profile {
        plugin["sandbox"] = json!({ "seccomp": p });
    }
    let cfg = TestConfig::new()
        .plugins(json!({}))
        .plugin("Uname", plugin)
        .set("workdir_root", json!(root))
        .value();
    dir.write(&format!("{work}.json"), &cfg.to_string(), false)
}

fn uname(config: &Path) -> i64 {
    let run = common::run_stdin(config, &request("Uname", "m", json!({})));
    assert_eq!(run.code, 0, "{}", run.stdout);
    run.result()["rc"].as_i64().unwrap()
}

/// The one entry of a store.
fn entry(store: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

/// Writes `program`'s entry (another profile's) under `key`, as root's, header and all.
fn forge(program: &[u8], from_key: &str, to: &Path) {
    let to_key = to.file_name().unwrap().to_str().unwrap();
    let split = program.iter().position(|&b| b == b'\n').unwrap();
    let header = std::str::from_utf8(&program[..split])
        .unwrap()
        .replace(from_key, to_key);
    let mut forged = format!("{header}\n").into_bytes();
    forged.extend_from_slice(&program[split + 1..]);
    std::fs::write(to, forged).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The store is read: a root-owned entry whose program refuses `uname` (compiled from
/// another profile, its header rewritten to the built-in profile's key) is what the
/// built-in profile's calls then run under. An entry that is not root's own, or that
/// others may write, is not recalled (and is replaced by a fresh compilation).
#[test]
fn a_root_upm_recalls_its_own_kept_programs_only() {
    if !is_root() {
        eprintln!("SKIPPED a_root_upm_recalls_its_own_kept_programs_only: needs root");
        return;
    }
    let d = TestDir::new();
    let mut profile: Value =
        serde_json::from_str(include_str!("../../policies/default.json")).unwrap();
    profile["syscalls"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }));
    let denied = d.write("uname-denied.json", &profile.to_string(), false);
    let free = config(&d, "free", None);
    let refusing = config(&d, "refusing", Some(&denied));

    assert!(uname(&free) == 0, "the built-in profile lets uname be");
    assert!(uname(&refusing) == 1, "the changed profile refuses it");
    let kept = entry(&d.join("free/upm-seccomp-0"));
    let other = entry(&d.join("refusing/upm-seccomp-0"));
    let meta = std::fs::metadata(&kept).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    assert!(uname(&free) == 0, "recalled as compiled");

    let other_key = other.file_name().unwrap().to_str().unwrap().to_owned();
    let refusing_program = std::fs::read(&other).unwrap();
    forge(&refusing_program, &other_key, &kept);
    assert!(
        uname(&free) == 1,
        "the kept program is what the call runs under"
    );

    for what in ["not root's", "writable by others"] {
        forge(&refusing_program, &other_key, &kept);
        match what {
            "not root's" => std::os::unix::fs::chown(&kept, Some(NOBODY), None).unwrap(),
            _ => std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o622)).unwrap(),
        }
        assert!(uname(&free) == 0, "an entry {what} was recalled");
        let meta = std::fs::metadata(&kept).unwrap();
        assert_eq!(
            (meta.uid(), meta.mode() & 0o777),
            (0, 0o600),
            "replaced by root's own"
        );
    }
}
