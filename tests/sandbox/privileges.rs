//! Credentials and seccomp: no signal to the caller, no dangerous syscall, no privilege gained.

use super::*;

both!(
    signals_cannot_reach_the_caller,
    dangerous_syscalls_are_refused,
    no_privileges_and_setuid_does_not_work,
);

fn signals_cannot_reach_the_caller(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let me = std::process::id();
    let run = fx.call("probe", "signal", json!({"pid": me}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["self_0"], "signalling itself");
    assert_ok(&r["own_child_term"], "signalling its own child");
    assert_eq!(r["own_child_termsig"], libc::SIGTERM, "{r}");
    // The test's pid does not exist in the plugin's PID namespace.
    for k in ["test_0", "test_term", "test_pidfd"] {
        assert_eq!(errno(&r[k]), ESRCH, "{k}: {r}");
    }
    // (Had SIGTERM arrived, this test process would be dead.)
}

fn dangerous_syscalls_are_refused(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "syscalls", json!({}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["control_getpid"], "getpid through ctypes");
    for k in [
        "ptrace_traceme",
        "ptrace_attach_parent",
        "mount_tmpfs_on_cwd",
        "unshare_user",
        "unshare_mount",
        "unshare_net",
        "clone_newuser",
        "chroot",
        "inotify_init1",
    ] {
        assert_eq!(errno(&r[k]), EPERM, "{k}: {r}");
    }
    // setuid(0): in the call's user namespace (root's upm too) uid 0 is not even mapped.
    assert_eq!(errno(&r["setuid_0"]), libc::EINVAL as i64, "{r}");
    assert_eq!(errno(&r["io_uring_setup"]), ENOSYS, "{r}");
    // SysV IPC, whose memory escapes memory_bytes: refused even though the default
    // profile (like Docker's) allows it.
    for k in ["shmget", "msgget", "semget", "shmat"] {
        assert_eq!(errno(&r[k]), ENOSYS, "{k}: {r}");
    }
    let seccomp = &run.json["data"]["sandbox"]["layers"]["seccomp"]["detail"];
    assert_eq!(seccomp["sysv_ipc"], "denied", "{seccomp}");
}

fn no_privileges_and_setuid_does_not_work(who: Who) {
    let mut suid = PathBuf::new();
    let Some(fx) = Fx::new(who, |cfg, dir| {
        suid = dir.join("plugins/suid-id");
        cfg["sandbox"]["read_paths"] = json!([suid]);
    }) else {
        return;
    };
    // A setuid-root copy of id(1), made readable to the plugin by read_paths.
    std::fs::copy("/usr/bin/id", &suid).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    // Control: outside the sandbox, as nobody, it really does make euid 0. (Retried on
    // ETXTBSY: a test thread forking meanwhile can hold the copy's write descriptor
    // until its child execs.)
    let mut tries = 0;
    let out = loop {
        match Command::new(&suid)
            .arg("-u")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
        {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => break r.unwrap(),
        }
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "the setuid control"
    );
    assert_fully_sandboxed(&fx, "probe");

    let run = fx.call("probe", "privileges", json!({"suid": suid}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    let (uid, gid) = who.plugin_ids();
    assert_eq!(r["euid"], uid, "{r}");
    assert_eq!(r["uid"], uid, "{r}");
    assert_eq!(r["egid"], gid, "{r}");
    assert_eq!(r["groups"], json!([]), "{r}");
    assert_eq!(r["capget"], 0, "{r}");
    for set in ["cap_eff", "cap_prm", "cap_inh"] {
        assert_eq!(r[set], 0, "{set}: {r}");
    }
    assert_eq!(r["cap_bnd"], json!([]), "bounding set: {r}");
    assert_eq!(r["cap_amb"], json!([]), "ambient set: {r}");
    assert_eq!(r["no_new_privs"], 1, "{r}");
    assert_eq!(r["seccomp_mode"], 2, "seccomp filter mode: {r}");
    // no_new_privs: the setuid bit is ignored.
    assert_eq!(r["suid_rc"], 0, "{r}");
    assert_eq!(r["suid_euid"], uid.to_string(), "{r}");
    assert_eq!(errno(&r["proc_status"]), EACCES, "{r}");
    // Nor can the plugin make a setuid or setgid file for anyone else to run.
    let m = &r["setid_modes"];
    for refused in ["chmod_4755", "fchmod_2755", "open_creat_4755", "mknod_4755"] {
        assert_eq!(errno(&m[refused]), EPERM, "{refused}: {m}");
    }
    assert_ok(&m["chmod_755"], "a plain chmod");
    assert_eq!(m["mode_after"], "0o755", "{m}");
    assert_eq!(errno(&m["memfd"]), libc::ENOSYS as i64, "{m}");
}
