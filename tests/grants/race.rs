//! No check-then-use race: swapping a granted directory for a symlink out of its root,
//! between upm's check and the plugin's start (and during the plugin's run), never
//! lets the plugin write outside the directory upm checked.
//!
//! `roots/race/proj` (the real directory) and `roots/race/spare` (a symlink to
//! `outside/`) are exchanged with `renameat2(RENAME_EXCHANGE)`, atomically, while calls
//! grant `roots/race/proj` for writing. Each plugin writes into the granted path and,
//! directly, into `outside/`. Two races:
//!
//! - **right after the check**: a fanotify permission hook holds upm's first open of
//!   the plugin file (it hashes it just after it opened the grants, before it builds
//!   the Landlock ruleset and starts the init), swaps the names, and only then lets
//!   the open go on: every later look at the granted name finds the symlink, or, in
//!   every other call, another directory under the same root. The init, opening the
//!   name again in the call's namespace, finds a symlink or another inode, and the call
//!   fails before the plugin exists. Deterministic: no timing involved.
//! - **at any time**: a thread swaps the names again and again during the calls.
//!
//! A call runs (its writes land in the directory upm checked), is refused at upm's
//! check (it saw the symlink), or fails at the init's; `outside/` gets nothing.
//!
//! Checked against a build that re-resolves the granted path by its name (the Landlock
//! rule from `PathFd::new(path)`, the mount from `openat2(path)` following symlinks,
//! no inode check): the first race then fails (the plugin writes outside, or into the
//! other directory); see docs/grants.md.

use super::*;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TARGETED_CALLS: usize = 40;
const RANDOM_CALLS: usize = 120;
const WRITES_PER_CALL: usize = 40;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// `renameat2(a, b, RENAME_EXCHANGE)`.
fn exchange(a: &CString, b: &CString) {
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
}

/// The race's files: `roots/race/proj` (a directory) and `roots/race/spare` (a symlink
/// to `outside/`), and a control call that shows the grant works without a race.
fn race_fixture(fx: &Fx) -> (PathBuf, PathBuf, PathBuf) {
    let race = fx.join("roots/race");
    mkdir(&race, 0o755);
    let proj = race.join("proj");
    mkdir(&proj, 0o777);
    let spare = race.join("spare");
    let outside = fx.join("outside");
    std::os::unix::fs::symlink(&outside, &spare).unwrap();
    let ok = fx.call(json!({ "write": proj, "ops": [["hammer", proj, 2, "control"]] }));
    assert_eq!(ok.code, 0, "{}", ctx(&ok));
    assert_eq!(op(&ok, 0)["landed"], 2, "{}", ctx(&ok));
    (proj, spare, outside)
}

/// What the calls of one race did.
#[derive(Default)]
struct Tally {
    ran: AtomicUsize,
    refused: AtomicUsize,
    failed_at_start: AtomicUsize,
    landed: AtomicUsize,
}

impl Tally {
    /// One call that granted `proj` for writing, hammered it and wrote into `outside`.
    fn call(&self, fx: &Fx, proj: &Path, outside: &Path, tag: &str) {
        let run = fx.call(json!({
            "write": proj,
            "ops": [["hammer", proj, WRITES_PER_CALL, tag], ["hammer", outside, 2, tag]]
        }));
        let error = run.json["data"]["error"].as_str().unwrap_or("");
        match (run.code, run.code_word()) {
            (0, _) => {
                self.ran.fetch_add(1, Ordering::Relaxed);
                let n = op(&run, 0)["landed"].as_u64().unwrap_or(0);
                self.landed.fetch_add(n as usize, Ordering::Relaxed);
            }
            (10, "invalid_args") if error.contains("leads out of its root") => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
            (10, "invalid_args") if error.contains("renamed, removed or replaced") => {
                self.failed_at_start.fetch_add(1, Ordering::Relaxed);
                // Audited: the grant in `started`, then a `finished` that did not run.
                let audit = fx.audit_of(&run);
                let events: Vec<&Value> = audit.iter().map(|e| &e["event"]).collect();
                assert_eq!(events, ["started", "finished"], "{audit:?}");
                assert_eq!(
                    audit[0]["sandbox_requested"]["grants"][0]["argument"],
                    "/write"
                );
                assert_eq!(audit[1]["ran"], false, "{audit:?}");
            }
            _ => panic!(
                "call {tag}: neither ran, refused nor failed at start: {}",
                ctx(&run)
            ),
        }
    }

    /// Nothing outside; every write that landed is in the directory upm checked.
    fn check(&self, what: &str, calls: usize, proj: &Path, spare: &Path, outside: &Path) {
        let leaked: Vec<String> = std::fs::read_dir(outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "secret.txt")
            .collect();
        let real = if proj.join("h-control-0").exists() {
            proj
        } else {
            spare
        };
        let in_dir = std::fs::read_dir(real).unwrap().count();
        let landed = self.landed.load(Ordering::Relaxed);
        let (ran, refused, failed) = (
            self.ran.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.failed_at_start.load(Ordering::Relaxed),
        );
        println!(
            "{what}: {calls} calls: {ran} ran ({landed} writes landed, {in_dir} files in the \
             checked directory), {refused} refused at upm's check, {failed} failed at the \
             init's; {} files outside",
            leaked.len()
        );
        assert!(
            leaked.is_empty(),
            "{what}: the plugin wrote outside the granted directory: {} files, e.g. {:?}",
            leaked.len(),
            &leaked[..leaked.len().min(5)]
        );
        assert_eq!(
            in_dir,
            landed + 2,
            "{what}: every write the plugins made is in the directory upm checked"
        );
        assert_eq!(ran + refused + failed, calls, "{what}");
    }
}

/// A fanotify permission hook on one file: each open of it waits for [`Hook::serve`].
struct Hook(OwnedFd);

impl Hook {
    fn new(file: &Path) -> Hook {
        // SAFETY: plain syscalls; the descriptor is checked and owned at once.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC,
                (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        assert!(
            fd >= 0,
            "fanotify_init: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: as above.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let f = cstr(file);
        // SAFETY: a NUL-terminated path and our descriptor.
        let r = unsafe {
            libc::fanotify_mark(
                fd.as_raw_fd(),
                libc::FAN_MARK_ADD,
                libc::FAN_OPEN_PERM,
                libc::AT_FDCWD,
                f.as_ptr(),
            )
        };
        assert_eq!(r, 0, "fanotify_mark: {}", std::io::Error::last_os_error());
        Hook(fd)
    }

    /// Waits up to 50 ms for opens; runs `before` for each, then lets it go on.
    fn serve(&self, mut before: impl FnMut()) {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on our stack.
        if unsafe { libc::poll(&mut p, 1, 50) } <= 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        // SAFETY: a buffer on our stack and its length.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let size = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut at = 0;
        while n > 0 && at + size <= n as usize {
            // SAFETY: the kernel wrote whole events; read_unaligned copes with the buffer.
            let ev: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            before();
            let answer = libc::fanotify_response {
                fd: ev.fd,
                response: libc::FAN_ALLOW,
            };
            // SAFETY: our descriptor and a response on our stack; then the event's fd.
            unsafe {
                libc::write(
                    self.0.as_raw_fd(),
                    (&answer as *const libc::fanotify_response).cast(),
                    std::mem::size_of::<libc::fanotify_response>(),
                );
                libc::close(ev.fd);
            }
            at += ev.event_len as usize;
        }
    }
}

/// Where the targeted race stands: armed before a call with what to swap the granted
/// name with, swapped by the hook, put back by the caller after the call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Race {
    Idle,
    Armed(usize),
    Swapped(usize),
}

#[test]
fn swapping_a_granted_directory_right_after_the_check_never_widens_the_grant() {
    let Some(fx) = Fx::new(Who::Root) else { return };
    let (proj, spare, outside) = race_fixture(&fx);
    // Another directory under the same root: a swap that stays inside the roots.
    let other = fx.join("roots/race/other");
    mkdir(&other, 0o777);
    let a = cstr(&proj);
    let with = [cstr(&spare), cstr(&other)];
    let state = Arc::new(Mutex::new(Race::Idle));
    let stop = Arc::new(AtomicBool::new(false));
    let hook = Hook::new(&fx.join("plugins/probe.py"));
    let server = {
        let (state, stop, a, with) = (state.clone(), stop.clone(), a.clone(), with.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                hook.serve(|| {
                    let mut s = state.lock().unwrap();
                    if let Race::Armed(k) = *s {
                        exchange(&a, &with[k]);
                        *s = Race::Swapped(k);
                    }
                });
            }
        })
    };
    let tally = Tally::default();
    let mut swapped = 0;
    for i in 0..TARGETED_CALLS {
        *state.lock().unwrap() = Race::Armed(i % 2);
        tally.call(&fx, &proj, &outside, &format!("t{i}"));
        let mut s = state.lock().unwrap();
        if let Race::Swapped(k) = *s {
            exchange(&a, &with[k]);
            swapped += 1;
        }
        *s = Race::Idle;
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    println!("right after the check: {swapped} of {TARGETED_CALLS} calls swapped under upm");
    tally.check(
        "right after the check",
        TARGETED_CALLS,
        &proj,
        &spare,
        &outside,
    );
    let in_other = std::fs::read_dir(&other).unwrap().count();
    assert_eq!(
        in_other, 0,
        "the plugin wrote into the directory swapped in"
    );
    // Every call was swapped under upm, after its check and before the init looked:
    // each stopped before the plugin existed.
    assert_eq!(swapped, TARGETED_CALLS, "the hook missed calls");
    assert_eq!(
        tally.failed_at_start.load(Ordering::Relaxed),
        TARGETED_CALLS,
        "a call swapped under upm ran or was refused at the check"
    );
}

/// Exchanges two names until stopped, the granted name a directory for a short while
/// and the symlink for longer (so that a call that passed upm's check is likely to
/// meet the symlink later); returns how many times it did.
struct Swapper {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b) = (cstr(a), cstr(b));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let spin = |d: Duration| {
                let t = Instant::now();
                while t.elapsed() < d {
                    std::hint::spin_loop();
                }
            };
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                exchange(&a, &b);
                spin(Duration::from_micros(60));
                exchange(&a, &b);
                spin(Duration::from_micros(30));
                n += 2;
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
fn swapping_a_granted_directory_at_any_time_never_widens_the_grant() {
    let Some(fx) = Fx::new(Who::Root) else { return };
    let (proj, spare, outside) = race_fixture(&fx);
    let swapper = Swapper::start(&proj, &spare);
    let tally = Tally::default();
    for i in 0..RANDOM_CALLS {
        tally.call(&fx, &proj, &outside, &format!("r{i}"));
    }
    let swaps = swapper.stop();
    println!("at any time: {swaps} swaps");
    tally.check("at any time", RANDOM_CALLS, &proj, &spare, &outside);
    let (ran, refused, failed) = (
        tally.ran.into_inner(),
        tally.refused.into_inner(),
        tally.failed_at_start.into_inner(),
    );
    assert!(
        ran > 0 && refused + failed > 0,
        "the race was not exercised (ran {ran}, refused {refused}, failed at start {failed})"
    );
}
