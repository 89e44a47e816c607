//! No check-then-use race: swapping a granted directory for a symlink out of its root,
//! between upm's check and the plugin's start (and during the plugin's run), never
//! lets the plugin write outside the directory upm checked.
//!
//! A swapper thread exchanges `roots/race/proj` (the real directory) with a symlink to
//! `outside/` (`renameat2(RENAME_EXCHANGE)`, atomically, as fast as it can) while two
//! threads make calls that grant `roots/race/proj` for writing; each plugin writes into
//! it again and again. A call sees one of three things: the directory at upm's check
//! and at the init's (it runs, and every write lands in that directory), the symlink at
//! upm's check (refused before anything runs), or the directory at the check and the
//! symlink (or another inode) at the init's (the call fails, nothing granted). Whatever
//! happens, `outside/` gets nothing.
//!
//! A build that re-resolves the granted path by its name (for the Landlock rule and the
//! writable mount) fails this test: `tests/grants/by-path.patch` is such a build (apply
//! it with `git apply`, then `cargo test --release --test grants race`); see docs/grants.md.

use super::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const CALLS: usize = 400;
const WRITES_PER_CALL: usize = 60;

/// Exchanges two names until stopped; returns how many times it did.
struct Swapper {
    stop: std::sync::Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (a, b) = (
            CString::new(a.as_os_str().as_bytes()).unwrap(),
            CString::new(b.as_os_str().as_bytes()).unwrap(),
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: two NUL-terminated paths; renameat2 only reads them.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
                n += 1;
                if n % 64 == 0 {
                    std::thread::yield_now();
                }
            }
            n
        });
        Swapper { stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn swapping_a_granted_directory_for_a_symlink_never_widens_the_grant() {
    let Some(fx) = Fx::new(Who::Root) else { return };
    let race = fx.join("roots/race");
    mkdir(&race, 0o755);
    let proj = race.join("proj");
    mkdir(&proj, 0o777);
    let spare = race.join("spare");
    let outside = fx.join("outside");
    std::os::unix::fs::symlink(&outside, &spare).unwrap();
    // Without the race, the grant works (so a refusal below is the race's).
    let ok = fx.call(json!({ "write": proj, "ops": [["hammer", proj, 2, "control"]] }));
    assert_eq!(ok.code, 0, "{}", ctx(&ok));
    assert_eq!(op(&ok, 0)["landed"], 2, "{}", ctx(&ok));

    let swapper = Swapper::start(&proj, &spare);
    let next = AtomicUsize::new(0);
    let ran = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let failed_at_start = AtomicUsize::new(0);
    let landed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CALLS {
                    break;
                }
                let tag = format!("c{i}");
                let run = fx.call(json!({
                    "write": proj,
                    "ops": [["hammer", proj, WRITES_PER_CALL, tag]]
                }));
                let error = run.json["data"]["error"].as_str().unwrap_or("");
                match (run.code, run.code_word()) {
                    (0, _) => {
                        ran.fetch_add(1, Ordering::Relaxed);
                        let n = op(&run, 0)["landed"].as_u64().unwrap_or(0);
                        landed.fetch_add(n as usize, Ordering::Relaxed);
                    }
                    (10, "invalid_args") if error.contains("leads out of its root") => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    (10, "invalid_args") if error.contains("renamed, removed or replaced") => {
                        failed_at_start.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => panic!("call {i}: neither ran, refused nor failed at start: {}", ctx(&run)),
                }
            });
        }
    });
    let swaps = swapper.stop();
    let leaked: Vec<String> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "secret.txt")
        .collect();
    // Where the writes went: every file is in the directory upm checked.
    let real = if proj.join("h-control-0").exists() {
        proj.clone()
    } else {
        spare.clone()
    };
    let in_dir = std::fs::read_dir(&real).unwrap().count();
    let (ran, refused, failed) = (
        ran.into_inner(),
        refused.into_inner(),
        failed_at_start.into_inner(),
    );
    println!(
        "{CALLS} calls during {swaps} swaps: {ran} ran ({} writes landed, {in_dir} files in the \
         checked directory), {refused} refused at upm's check, {failed} failed at the init's; \
         {} files outside",
        landed.load(Ordering::Relaxed),
        leaked.len()
    );
    assert!(
        leaked.is_empty(),
        "the plugin wrote outside the granted directory: {} files, e.g. {:?}",
        leaked.len(),
        &leaked[..leaked.len().min(5)]
    );
    assert_eq!(
        in_dir,
        landed.load(Ordering::Relaxed) + 2,
        "every write the plugins made is in the directory upm checked"
    );
    assert_eq!(ran + refused + failed, CALLS);
    assert!(
        ran > 0 && refused + failed > 0,
        "the race was not exercised (ran {ran}, refused {refused}, failed at start {failed})"
    );
}
