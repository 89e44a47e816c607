//! What the plugin inherits from upm: no descriptor, no environment, no signal disposition.

use super::*;

both!(
    inherited_descriptors_are_closed,
    caller_environment_is_not_passed,
    signal_dispositions_and_mask_are_reset,
);

fn inherited_descriptors_are_closed(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let secret = fx
        .dir
        .write("leaked-secret", "the caller's secret\n", false);
    let file = std::fs::File::open(&secret).unwrap();
    // A high descriptor without FD_CLOEXEC: upm (and with it the plugin) would inherit it.
    // SAFETY: F_DUPFD on a valid descriptor we own; the result is closed below.
    let leaked = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_DUPFD, 300) };
    assert!(leaked >= 300);
    struct CloseOnDrop(i32);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            // SAFETY: closing the descriptor this test made.
            unsafe { libc::close(self.0) };
        }
    }
    let _close = CloseOnDrop(leaked);
    // Control: a process the test starts this way does inherit it, and so does upm.
    let mut cmd = fx.command(Path::new("/usr/bin/readlink"));
    cmd.arg(format!("/proc/self/fd/{leaked}"));
    let out = cmd.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        secret.to_str().unwrap(),
        "the control did not inherit the descriptor"
    );
    let run = fx.call("probe", "fd", json!({"fd": leaked}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["control_stdin"], "fstat on its stdin");
    assert_eq!(errno(&r["fstat"]), EBADF, "{r}");
    assert_eq!(errno(&r["read"]), EBADF, "{r}");
    assert!(!run.stdout.contains("the caller's secret"));
}

fn caller_environment_is_not_passed(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call_with("probe", "env", json!({}), |cmd| {
        cmd.env("UPM_TEST_SECRET", "hunter2-sandbox")
            .env("LD_PRELOAD", "/tmp/evil.so")
            .env("PYTHONPATH", "/tmp/evil");
    });
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let env = run.result();
    // Controls: what the config sets, and the allowlisted LANG from the caller.
    assert_eq!(env["PATH"], "/usr/bin:/bin", "{env}");
    assert_eq!(env["UPM_PROBE"], "set-by-config", "{env}");
    assert_eq!(env["LANG"], "C.UTF-8", "{env}");
    for k in ["UPM_TEST_SECRET", "LD_PRELOAD", "PYTHONPATH"] {
        assert!(env.get(k).is_none(), "{k} leaked into the plugin: {env}");
    }
    // HOME is never the caller's: the call's own home, as TMPDIR (and its cwd).
    assert_eq!(env["HOME"], env["TMPDIR"], "{env}");
    assert_ne!(env["HOME"], "/root", "the caller's: {env}");
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
}

/// upm's caller may leave signals ignored or blocked; the sandbox's init resets every
/// disposition and the mask, so the plugin starts clean (and no handler of upm's runs
/// in a process that shares its memory).
fn signal_dispositions_and_mask_are_reset(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call_with("probe", "signal_state", json!({}), |cmd| {
        // SAFETY: only sigaction and sigprocmask between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                libc::signal(libc::SIGUSR1, libc::SIG_IGN);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGTERM);
                libc::sigaddset(&mut set, libc::SIGUSR2);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
    });
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(r["blocked"], json!([]), "{r}");
    assert_eq!(r["sighup"], 0, "SIG_DFL: {r}");
    assert_eq!(r["sigusr1"], 0, "SIG_DFL: {r}");
}
