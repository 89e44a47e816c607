//! The sandbox's own processes, up to the plugin's exec.
//!
//! ```text
//! upm ──clone(CLONE_VM | NEWPID | NEWNET | NEWIPC | NEWNS [| NEWUSER])──▶ init (pid 1 of its PID namespace)
//!                  signals reset, stdio, setsid; waits for the id maps;
//!                  read-only mounts and the home tmpfs, chdir; [waits for the go;]
//!                  rlimits, credentials, no_new_privs
//!                                     └──clone(CLONE_VM | CLONE_VFORK)──▶ plugin:
//!                                          Landlock, [waits for the go;] seccomp, execveat
//! ```
//!
//! The go (upm's word that the call's `started` entry is durable) is waited for as
//! late as it can be, so that the set-up runs while upm waits for the disk: by the
//! plugin when the call has a user namespace of its own, by the init otherwise.
//!
//! Both processes share upm's memory until the plugin's exec: no page tables are
//! copied, which is what made a fork of upm cost more than the rest of the spawn.
//! The price is discipline. Everything in this file
//! - runs on a stack of its own ([`Stacks`]), reads only what the parent prepared and
//!   leaves untouched until the init is reaped, and writes only to that stack;
//! - makes raw system calls only, which hand back their error instead of writing
//!   `errno` (glibc's `errno` lives in the thread-local storage of the upm thread that
//!   cloned, and that thread runs on concurrently);
//! - never allocates, locks, panics or unwinds.

use crate::sandbox::{sys, Prepared, Step};
use ::syscalls::{syscall, Sysno};
use std::ffi::c_void;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

/// Where the report pipe and the go pipe sit in the init, above the plugin's 0..=3.
pub(super) const REPORT_FD: RawFd = 4;
pub(super) const SYNC_FD: RawFd = 5;
/// upm's words to the init on the sync pipe, in this order: the id maps are written
/// (the mounts may start), and the go (the `started` entry is durable).
pub(super) const MAPPED: u8 = b'm';
pub(super) const GO: u8 = b'g';

/// What the children read: built by the parent, unchanged until the init is reaped.
pub(super) struct Ctx {
    /// Sources of the plugin's descriptors 0..=3 (-1: leave 3 closed). All >= 10.
    pub stdio: [RawFd; 4],
    pub report: RawFd,
    pub sync: RawFd,
    /// A pidfd of the thread that clones the init (its parent); >= 10.
    pub parent: RawFd,
    /// The verified executable; a script keeps it open across the exec. Opened in upm's
    /// mount namespace: with read-only mounts, the init replaces it by the same file
    /// opened again at `exec_path` in the call's, checked to be `exec_id` (dev, ino);
    /// null for a sealed memfd.
    pub exec_fd: RawFd,
    pub exec_path: *const libc::c_char,
    pub exec_id: (u64, u64),
    pub keep_exec_fd: bool,
    /// A script's name for its interpreter (a symlink to `/proc/self/fd/<exec_fd>`), or null.
    pub script_name: *const libc::c_char,
    pub workdir: *const libc::c_char,
    pub argv: *const *const libc::c_char,
    pub envp: *const *const libc::c_char,
    pub sandbox: *const Prepared,
    pub plugin_stack: *mut u8,
    /// issue 23: the init's end of the channel the seccomp listener goes to upm over,
    /// or -1 (upm does not supervise the errnos). >= 10.
    pub observe_channel: RawFd,
    /// issue 23: the listener the plugin's filter install gave (or `-errno`), written by
    /// the plugin before its exec, read by the init after it (`observe`).
    pub listener: AtomicI32,
    /// The init's end of the egress listener's channel (issue 22), or -1. >= 10.
    pub egress_channel: RawFd,
    /// Whether the plugin, not the init, waits for the go, just before its seccomp
    /// filter and exec: only in a user namespace of the call's own, where the init and
    /// the waiting plugin count against no one else's RLIMIT_NPROC.
    pub go_in_plugin: bool,
}

/// The path execveat is given with AT_EMPTY_PATH (one address, which the parent's
/// check of the plugin's calls before its exec uses too).
pub(super) static EMPTY_PATH: &std::ffi::CStr = c"";

/// What the init (or the plugin, when its exec fails) tells the parent.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct Record {
    pub kind: u32,
    pub step: u32,
    pub errno: i32,
    pub status: i32,
    pub utime_us: i64,
    pub stime_us: i64,
    pub maxrss_kb: i64,
    /// Bytes used in the call's home tmpfs when the plugin ended (-1: no tmpfs).
    pub disk_used: i64,
    /// 1 when the tmpfs's bytes or inodes had run out.
    pub disk_full: u32,
}
pub(super) const RECORD_SIZE: usize = std::mem::size_of::<Record>();
pub(super) const SETUP_FAILED: u32 = 1;
pub(super) const EXITED: u32 = 3;

/// Two stacks with a guard page below each: the init's and the plugin's (until exec).
pub(super) struct Stacks {
    base: *mut c_void,
    len: usize,
}

const STACK: usize = 256 * 1024;
const GUARD: usize = 64 * 1024;

// SAFETY: the mapping is owned by one Stacks at a time (taken from the pool, or made,
// and given back once its init is reaped); the pointer is never shared while in use.
unsafe impl Send for Stacks {}

/// Stacks whose init was reaped, kept for the next call (a batch's or server's): a
/// mapping, two guards and the stack pages' first-touch faults less per spawn.
static KEPT: std::sync::Mutex<Vec<Stacks>> = std::sync::Mutex::new(Vec::new());
const KEEP_AT_MOST: usize = 16;

/// A call's stacks: back to [`KEPT`] when dropped (which its owner does only after
/// reaping the init that ran on them), if [`Pooled::keep_after_reap`] says so.
pub(super) struct Pooled {
    stacks: Option<Stacks>,
    keep: bool,
}

impl Pooled {
    pub fn take() -> io::Result<Pooled> {
        let kept = KEPT.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match kept {
            Some(s) => Ok(Pooled {
                stacks: Some(s),
                keep: true,
            }),
            None => Stacks::new().map(|s| Pooled {
                stacks: Some(s),
                keep: true,
            }),
        }
    }

    /// Whether the init's reaping proves nothing runs on these stacks any more: only
    /// when the init was the PID namespace's init (its end kills the plugin, which runs
    /// on the second stack until its exec); otherwise they are unmapped.
    pub fn keep_after_reap(&mut self, keep: bool) {
        self.keep = keep;
    }
}

impl std::ops::Deref for Pooled {
    type Target = Stacks;
    fn deref(&self) -> &Stacks {
        match &self.stacks {
            Some(s) => s,
            None => unreachable!("taken only by Drop"),
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(s) = self.stacks.take().filter(|_| self.keep) {
            let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() < KEEP_AT_MOST {
                kept.push(s);
            }
        }
    }
}

impl Stacks {
    fn new() -> io::Result<Stacks> {
        let len = 2 * (GUARD + STACK);
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stacks = Stacks { base, len };
        for guard in [0, GUARD + STACK] {
            // SAFETY: within the mapping just made, page-aligned (GUARD and STACK are).
            if unsafe { libc::mprotect(stacks.at(guard).cast(), GUARD, libc::PROT_NONE) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(stacks)
    }

    fn at(&self, offset: usize) -> *mut u8 {
        self.base.cast::<u8>().wrapping_add(offset)
    }

    /// Tops (stacks grow down), 16-byte aligned as both ABIs want at a call.
    pub fn init_top(&self) -> *mut u8 {
        self.at(GUARD + STACK)
    }
    pub fn plugin_top(&self) -> *mut u8 {
        self.at(self.len)
    }
}

impl Drop for Stacks {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the owner drops it only after reaping the init.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Starts the init on its stack, in the namespaces `ns_flags` asks for.
///
/// # Safety
/// `ctx` and `stacks` must stay valid and unchanged until the init has been reaped.
pub(super) unsafe fn clone_init(
    ns_flags: libc::c_int,
    stacks: &Stacks,
    ctx: &Ctx,
) -> Result<libc::pid_t, i32> {
    let flags = (libc::CLONE_VM | ns_flags | libc::SIGCHLD) as usize;
    clone_on(flags, stacks.init_top(), init_main, ctx)
}

/// clone(2) onto a fresh stack: the child calls `main(ctx)`, which never returns.
/// (A raw clone without a new stack would have the child return into the parent's
/// frames, which it shares.)
///
/// # Safety
/// `stack_top` is the 16-byte aligned top of a mapping, and `ctx` a value, both valid
/// for as long as the child runs on them.
#[cfg(target_arch = "x86_64")]
unsafe fn clone_on(
    flags: usize,
    stack_top: *mut u8,
    main: extern "C" fn(*const Ctx) -> !,
    ctx: *const Ctx,
) -> Result<libc::pid_t, i32> {
    let ret: isize;
    // SAFETY: clone(flags, stack, NULL, NULL, 0). In the child (rax == 0) rsp is the
    // new stack's top, which is 16-byte aligned, so `call` enters `main` with the
    // alignment the ABI requires; r12/r13 survive the syscall in both processes.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone as isize => ret,
            in("rdi") flags,
            in("rsi") stack_top,
            in("rdx") 0usize,
            in("r10") 0usize,
            in("r8") 0usize,
            in("r12") ctx,
            in("r13") main,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        Err(-ret as i32)
    } else {
        Ok(ret as libc::pid_t)
    }
}

#[cfg(not(target_arch = "x86_64"))]
compile_error!("upm's spawn needs a clone-onto-a-new-stack trampoline for this architecture");

/// The init: sets the plugin's descriptors and every layer up, starts the plugin (one
/// of them waits for the go first), reaps it and reports how it ended.
extern "C" fn init_main(ctx: *const Ctx) -> ! {
    // SAFETY: the parent passed a Ctx that outlives this process.
    let ctx = unsafe { &*ctx };
    // First, so that no handler of upm's (std's SIGSEGV/SIGBUS) can ever run here, on
    // upm's memory: every disposition back to default, nothing blocked. The plugin
    // inherits this clean slate (an ignored SIGPIPE, say, would survive its exec).
    reset_signals();
    if let Err((step, errno)) = init(ctx) {
        fail(step, errno);
    }
    // init() returns only on failure: it ends by exiting with the plugin's report.
    exit(1)
}

fn init(ctx: &Ctx) -> Result<(), (Step, i32)> {
    // The report pipe first, so that every later failure can be told.
    if let Err(e) = dup_to(ctx.report, REPORT_FD, libc::O_CLOEXEC) {
        write_record_to(ctx.report, &setup_failed(Step::Stdio, e));
        exit(127);
    }
    for (to, from) in ctx.stdio.iter().enumerate() {
        let to = to as RawFd;
        if *from >= 0 {
            dup_to(*from, to, 0).map_err(|e| (Step::Stdio, e))?;
        } else {
            // SAFETY: closing one of our own descriptors; EBADF is harmless.
            let _ = unsafe { syscall!(Sysno::close, to) };
        }
    }
    dup_to(ctx.sync, SYNC_FD, libc::O_CLOEXEC).map_err(|e| (Step::Sync, e))?;
    // SAFETY: the parent built the plan and keeps it unchanged until we are reaped.
    let sandbox = unsafe { &*ctx.sandbox };
    // Whatever else upm had open (another call's pipes, in a batch) is none of ours.
    let ruleset = sandbox.landlock.as_ref().map_or(-1, |l| l.fd());
    let verified = sandbox.mounts.as_ref().map_or(-1, |m| m.verified_fd());
    close_except(&mut [
        0,
        1,
        2,
        3,
        REPORT_FD,
        SYNC_FD,
        ctx.parent,
        ctx.exec_fd,
        ruleset,
        ctx.observe_channel,
        ctx.egress_channel,
        verified,
    ])
    .map_err(|e| (Step::Stdio, e))?;
    // SAFETY: setsid takes no arguments.
    sys(unsafe { syscall!(Sysno::setsid) }).map_err(|e| (Step::Session, e))?;
    // issue 22: the egress listener, made while the init still has its capabilities in
    // the call's namespaces and before the plugin exists; upm accepts on it from outside.
    if let Some(egress) = &sandbox.egress {
        egress
            .listen_in_init(ctx.egress_channel)
            .map_err(|e| (Step::Egress, e))?;
        // SAFETY: our own descriptor, no longer needed.
        let _ = unsafe { syscall!(Sysno::close, ctx.egress_channel) };
    }
    // Meanwhile, as upm writes the id maps: nothing the bounding set holds is needed.
    sandbox
        .credentials
        .drop_bounding_set()
        .map_err(|e| (Step::Credentials, e))?;
    // The mounts wait for upm's word that the id maps are written (until then the
    // private directory's owner is unmapped here, and root's capabilities do not reach
    // it), not for the go: they are done while upm makes the `started` entry durable.
    wait_for(MAPPED)?;
    // Before any path the plugin uses is resolved (its cwd), and with the capabilities
    // the init still has in the call's namespaces.
    let mut home = -1;
    if let Some(m) = &sandbox.mounts {
        home = m.apply()?;
        if let Some(l) = &sandbox.landlock {
            l.allow_home(home).map_err(|e| (Step::Landlock, e))?;
        }
        // (A sealed memfd is no file of the host: nothing to reopen.)
        if !ctx.exec_path.is_null() {
            reopen_exec(ctx).map_err(|e| (Step::ReopenExec, e))?;
        }
    }
    // SAFETY: a NUL-terminated path prepared by the parent.
    sys(unsafe { syscall!(Sysno::chdir, ctx.workdir) }).map_err(|e| (Step::Workdir, e))?;
    // Without a PID namespace (only if allowed), orphans still come back to the init.
    // SAFETY: plain prctl with integer arguments.
    sys(unsafe { syscall!(Sysno::prctl, libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
        .map_err(|e| (Step::Session, e))?;
    // Without a user namespace of the call's own, the rest waits for the go (the
    // `started` entry durable): an init already switched to the plugin's uid would
    // count against that uid's RLIMIT_NPROC on the host while it waits.
    if !ctx.go_in_plugin {
        wait_for(GO)?;
    }
    sandbox.apply_in_init(ctx.parent, SYNC_FD)?;
    if let Some(m) = &sandbox.mounts {
        m.make_home_dirs(home).map_err(|e| (Step::Workdir, e))?;
    }
    // issue 23: with CLONE_FILES the seccomp listener the plugin makes lands in this
    // table too, where its exec (which unshares the plugin's table) leaves it.
    let shared_files = if ctx.observe_channel >= 0 {
        libc::CLONE_FILES
    } else {
        0
    };
    let flags = (libc::CLONE_VM | libc::CLONE_VFORK | shared_files | libc::SIGCHLD) as usize;
    // SAFETY: the plugin's stack and ctx outlive the init, which outlives the plugin's
    // use of them: CLONE_VFORK suspends the init until the plugin execs or exits.
    let plugin = unsafe { clone_on(flags, ctx.plugin_stack, plugin_main, ctx) }
        .map_err(|e| (Step::Fork, e))?;
    if ctx.observe_channel >= 0 {
        super::observe::hand_over(ctx.observe_channel, ctx.listener.load(Ordering::Relaxed));
    }
    // The init keeps nothing but its report pipe: no end of the plugin's pipes, so they
    // reach EOF when the plugin's tree closes them. (Failing here would leave the
    // plugin running unreported: close what can be closed and go on.)
    let _ = close_except(&mut [REPORT_FD, home]);
    reap_and_report(plugin, home)
}

/// Puts in place of `ctx.exec_fd` the same file opened through the call's read-only
/// mounts (`O_PATH`: execveat takes it, and an exec-only file needs no read access).
fn reopen_exec(ctx: &Ctx) -> Result<(), i32> {
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path prepared by the parent.
    let fd =
        sys(unsafe { syscall!(Sysno::openat, libc::AT_FDCWD, ctx.exec_path, flags) })? as RawFd;
    // SAFETY: zeroed stat is a valid value; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer on our stack.
    sys(unsafe { syscall!(Sysno::fstat, fd, &mut st as *mut libc::stat) })?;
    if (st.st_dev, st.st_ino) != ctx.exec_id {
        return Err(libc::ESTALE);
    }
    dup_to(fd, ctx.exec_fd, libc::O_CLOEXEC)?;
    // SAFETY: our own descriptor, now duplicated.
    let _ = unsafe { syscall!(Sysno::close, fd) };
    Ok(())
}

/// The plugin's last steps before its exec, still in the init's (and upm's) memory.
extern "C" fn plugin_main(ctx: *const Ctx) -> ! {
    // SAFETY: as in init_main.
    let ctx = unsafe { &*ctx };
    // Dies with the init, PID namespace or not (a fork clears the init's own).
    // SAFETY: plain prctl with integer arguments.
    let set = unsafe { syscall!(Sysno::prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if let Err(e) = sys(set) {
        fail(Step::ParentDeath, e);
    }
    // Nothing of the plugin's own runs before the go (its exec); the filter comes after
    // the wait, which a profile could otherwise refuse.
    let go = || match ctx.go_in_plugin {
        true => wait_for(GO),
        false => Ok(()),
    };
    // SAFETY: the parent keeps the plan unchanged until the init is reaped.
    if let Err((step, e)) = unsafe { &*ctx.sandbox }.apply_in_plugin(&ctx.listener, go) {
        fail(step, e);
    }
    if ctx.keep_exec_fd {
        // SAFETY: fcntl on the verified descriptor, which stays open in this process.
        if let Err(e) = sys(unsafe { syscall!(Sysno::fcntl, ctx.exec_fd, libc::F_SETFD, 0) }) {
            fail(Step::Exec, e);
        }
    }
    // SAFETY: exec of the verified descriptor; argv/envp are NULL-terminated arrays of
    // NUL-terminated strings prepared by the parent; "" with AT_EMPTY_PATH names the fd.
    // A script's name is a symlink to this very descriptor (/proc/self/fd/N), resolved
    // by the kernel to the open file, never to whatever a path names now.
    let e = unsafe {
        if ctx.script_name.is_null() {
            syscall!(
                Sysno::execveat,
                ctx.exec_fd,
                EMPTY_PATH.as_ptr(),
                ctx.argv,
                ctx.envp,
                libc::AT_EMPTY_PATH
            )
        } else {
            syscall!(Sysno::execve, ctx.script_name, ctx.argv, ctx.envp)
        }
    };
    fail(Step::Exec, sys(e).err().unwrap_or(libc::EINVAL))
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 both have `sa_restorer`).
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

fn reap_and_report(plugin: libc::pid_t, home: RawFd) -> ! {
    loop {
        let mut status = 0i32;
        // SAFETY: zeroed rusage is a valid value; wait4 fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointers on our stack.
        let r = sys(unsafe {
            syscall!(
                Sysno::wait4,
                -1isize,
                &mut status as *mut i32,
                libc::__WALL,
                &mut usage as *mut libc::rusage
            )
        });
        match r {
            Ok(pid) if pid as libc::pid_t == plugin => {
                let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
                let (disk_used, disk_full) = match home {
                    h if h >= 0 => crate::sandbox::mounts::fill(h)
                        .map_or((-1, 0), |(used, full)| (used as i64, full as u32)),
                    _ => (-1, 0),
                };
                write_record_to(
                    REPORT_FD,
                    &Record {
                        kind: EXITED,
                        status,
                        utime_us: us(usage.ru_utime),
                        stime_us: us(usage.ru_stime),
                        maxrss_kb: usage.ru_maxrss,
                        disk_used,
                        disk_full,
                        ..Record::default()
                    },
                );
                // The kernel now kills the rest of the namespace.
                exit(0)
            }
            Ok(_) | Err(libc::EINTR) => {}
            Err(_) => exit(1),
        }
    }
}

fn reset_signals() {
    let dfl = KernelSigaction::default();
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: a valid kernel sigaction on our stack; the old one is not asked for.
            let _ = unsafe {
                syscall!(
                    Sysno::rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    0,
                    8
                )
            };
        }
    }
    let none: u64 = 0;
    // SAFETY: an empty kernel sigset on our stack.
    let _ = unsafe {
        syscall!(
            Sysno::rt_sigprocmask,
            libc::SIG_SETMASK,
            &none as *const u64,
            0,
            8
        )
    };
}

/// Reads upm's next word on the sync pipe, which must be `word`.
fn wait_for(word: u8) -> Result<(), (Step, i32)> {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads one byte into a stack variable.
        match sys(unsafe { syscall!(Sysno::read, SYNC_FD, &mut byte as *mut u8, 1) }) {
            Ok(1) if byte == word => return Ok(()),
            Ok(1) => return Err((Step::Sync, libc::EPROTO)),
            // upm closed the pipe without a go: it gave the call up (or died).
            Ok(_) => return Err((Step::Sync, libc::EPIPE)),
            Err(libc::EINTR) => {}
            Err(e) => return Err((Step::Sync, e)),
        }
    }
}

fn dup_to(from: RawFd, to: RawFd, flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: dup3 between descriptors; the sources are >= 10, so no target clobbers one.
    sys(unsafe { syscall!(Sysno::dup3, from, to, flags) }).map(|_| ())
}

/// Closes every descriptor but `keep` (negative entries are ignored).
fn close_except(keep: &mut [RawFd]) -> Result<(), i32> {
    keep.sort_unstable();
    let mut next: u32 = 0;
    for &fd in keep.iter().filter(|&&fd| fd >= 0) {
        let fd = fd as u32;
        if fd > next {
            close_range(next, fd - 1)?;
        }
        next = next.max(fd + 1);
    }
    close_range(next, u32::MAX)
}

fn close_range(first: u32, last: u32) -> Result<(), i32> {
    // SAFETY: closes only this process's own descriptors.
    sys(unsafe { syscall!(Sysno::close_range, first, last, 0) }).map(|_| ())
}

fn setup_failed(step: Step, errno: i32) -> Record {
    Record {
        kind: SETUP_FAILED,
        step: step as u32,
        errno,
        ..Record::default()
    }
}

fn write_record_to(fd: RawFd, rec: &Record) {
    // SAFETY: writes RECORD_SIZE bytes from a valid repr(C) struct; a pipe write of
    // less than PIPE_BUF bytes is atomic.
    let _ = unsafe { syscall!(Sysno::write, fd, rec as *const Record, RECORD_SIZE) };
}

fn fail(step: Step, errno: i32) -> ! {
    write_record_to(REPORT_FD, &setup_failed(step, errno));
    exit(127)
}

/// Ends this process (not upm: the children are processes of their own).
fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes an integer and does not return.
        let _ = unsafe { syscall!(Sysno::exit_group, code) };
    }
}
