//! Fail closed: a layer that cannot be applied refuses the call, unless the config allows it, and says so.

use super::*;

both!(
    layer_that_cannot_be_applied_fails_closed,
    unreadable_read_path_fails_closed,
    unknown_syscall_in_profile_is_config_error,
);

/// A seccomp filter the test puts on upm itself, as a container runtime would,
/// so that one of upm's layers cannot be had.
struct HostRestriction {
    syscall: i64,
    /// `Some((arg0 mask, value))` to match only some calls.
    arg0: Option<(u64, u64)>,
    errno: u32,
}

fn restrict_upm(cmd: &mut Command, r: HostRestriction) {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };
    let rules = match r.arg0 {
        None => vec![],
        Some((mask, value)) => vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(mask),
            value,
        )
        .unwrap()])
        .unwrap()],
    };
    let filter = SeccompFilter::new(
        [(r.syscall, rules)].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(r.errno),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let prog: BpfProgram = filter.try_into().unwrap();
    // SAFETY: apply_filter only makes prctl and seccomp system calls on a program
    // built before the fork; it does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            seccompiler::apply_filter(&prog).map_err(std::io::Error::other)?;
            Ok(())
        });
    }
}

fn layer_that_cannot_be_applied_fails_closed(who: Who) {
    let Some(fx) = Fx::new(who, with_sentinel) else {
        return;
    };
    // Control: unrestricted, the sentinel runs and leaves its mark.
    let run = fx.call("sentinel", "run", json!({}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert!(fx.dir.join("sentinel/ran").exists());
    std::fs::remove_file(fx.dir.join("sentinel/ran")).unwrap();

    let cases = [
        // Like a kernel without Landlock (or a container whose profile hides it).
        (
            "landlock",
            HostRestriction {
                syscall: libc::SYS_landlock_create_ruleset,
                arg0: None,
                errno: libc::ENOSYS as u32,
            },
        ),
        // Like a container runtime that refuses new PID namespaces.
        ("namespaces", no_pid_namespaces()),
        // Like a kernel without seccomp filtering: PR_GET_SECCOMP answers EINVAL.
        (
            "seccomp",
            HostRestriction {
                syscall: libc::SYS_prctl,
                arg0: Some((u64::MAX, libc::PR_GET_SECCOMP as u64)),
                errno: libc::EINVAL as u32,
            },
        ),
    ];
    for (layer, restriction) in cases {
        let run = fx.call_with("sentinel", "run", json!({}), |cmd| {
            restrict_upm(cmd, restriction)
        });
        assert_refused(&fx, &run, &[&format!("the {layer} layer")]);
    }
}

/// With `fs.suid_dumpable` at 1, a root upm refuses to switch to the plugin's uid: the
/// switch would make the init, which shares upm's memory, traceable by that uid. The
/// setting is faked for upm alone: a file bound over it in a mount namespace of its own.
#[test]
fn suid_dumpable_1_stops_a_root_upm_before_the_plugin_runs() {
    let Some(fx) = Fx::new(Who::Root, with_sentinel) else {
        return;
    };
    let fake = fx.dir.join("suid_dumpable");
    for (value, refused) in [("1\n", true), ("0\n", false)] {
        std::fs::write(&fake, value).unwrap();
        let run = fx.call_with("sentinel", "run", json!({}), |cmd| {
            common::bind_over(cmd, &fake, "/proc/sys/fs/suid_dumpable")
        });
        if !refused {
            assert_eq!(run.code, 0, "{value}: {}", ctx(&run));
            std::fs::remove_file(fx.dir.join("sentinel/ran")).unwrap();
            continue;
        }
        assert_refused(
            &fx,
            &run,
            &["the credentials layer", "fs.suid_dumpable is 1"],
        );
    }
}

/// `upm doctor` shows `fs.suid_dumpable`, and at 1 says that a root upm's calls would be
/// refused (faked for upm alone, as above).
#[test]
fn doctor_reports_suid_dumpable() {
    if !is_root() {
        eprintln!("SKIPPED doctor_reports_suid_dumpable: needs root");
        return;
    }
    let d = TestDir::new();
    let fake = d.write("suid_dumpable", "", false);
    for (value, available) in [(1, false), (0, true)] {
        std::fs::write(&fake, format!("{value}\n")).unwrap();
        let mut cmd = Command::new(common::upm_bin());
        cmd.args(["doctor", "--json"]);
        common::bind_over(&mut cmd, &fake, "/proc/sys/fs/suid_dumpable");
        let out = cmd.output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["host"]["suid_dumpable"], value, "{v}");
        let layers = v["layers"].as_array().unwrap();
        let creds = layers.iter().find(|l| l["layer"] == "credentials").unwrap();
        assert_eq!(creds["available"], available, "{creds}");
        if !available {
            let detail = creds["detail"].as_str().unwrap();
            assert!(detail.contains("fs.suid_dumpable is 1"), "{creds}");
        }
    }
}

/// `allow_degraded` lets the call run without the layer, and the guard must then refuse.
#[test]
#[should_panic(expected = "GUARD: refusing to run hostile probes")]
fn guard_refuses_a_degraded_sandbox() {
    let Some(fx) = Fx::new(Who::Root, |cfg, _| {
        cfg["sandbox"]["allow_degraded"] = json!(["namespaces"]);
    }) else {
        panic!("GUARD: refusing to run hostile probes (not root: nothing to check)");
    };
    let run = fx.call_with("probe", "control", json!({}), |cmd| {
        restrict_upm(cmd, no_pid_namespaces())
    });
    // The degraded call itself succeeds, and says so.
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let ns = &run.json["data"]["sandbox"]["layers"]["namespaces"];
    assert_eq!(ns["state"], "degraded", "{}", ctx(&run));
    check_layers(&fx, "probe", &run);
}

/// A root upm that may not create the call's user namespace, or not as the plugin's uid,
/// still runs the plugin as its uid in the other namespaces, and says that
/// `max_processes` is then the uid's.
#[test]
fn root_without_a_user_namespace_says_the_process_limit_is_shared() {
    let Some(fx) = Fx::new(Who::Root, |_, _| {}) else {
        return;
    };
    let cases = [
        // Like a runtime whose profile refuses new user namespaces.
        (
            HostRestriction {
                syscall: libc::SYS_clone,
                arg0: Some((libc::CLONE_NEWUSER as u64, libc::CLONE_NEWUSER as u64)),
                errno: libc::EPERM as u32,
            },
            "not created: Operation not permitted",
        ),
        // Like one that refuses changing securebits: upm cannot take the plugin's uid.
        (
            HostRestriction {
                syscall: libc::SYS_prctl,
                arg0: Some((u64::MAX, libc::PR_SET_SECUREBITS as u64)),
                errno: libc::EPERM as u32,
            },
            "cannot create it as uid",
        ),
    ];
    for (restriction, why) in cases {
        let run = fx.call_with("probe", "control", json!({}), |cmd| {
            restrict_upm(cmd, restriction)
        });
        assert_eq!(run.code, 0, "{}", ctx(&run));
        let ns = &run.json["data"]["sandbox"]["layers"]["namespaces"];
        assert_eq!(ns["state"], "enforced", "{ns}");
        assert_eq!(
            ns["detail"]["created"],
            json!(["pid", "ipc", "mount", "net"]),
            "{ns}"
        );
        let count = ns["detail"]["process_count"].as_str().unwrap_or("");
        assert!(count.contains("other calls"), "{ns}");
        assert!(
            ns["detail"]["user_namespace"]
                .as_str()
                .is_some_and(|r| r.contains(why)),
            "{why}: {ns}"
        );
        assert_eq!(run.result()["uid"], 65534, "{}", ctx(&run));
    }
}

/// Without a user namespace of the call's own, a batch call waiting for its slot has its
/// init waiting for the go before its limits and credentials: no process of the plugin's
/// uid exists for it yet (one would count against that uid's RLIMIT_NPROC on the host,
/// which the running calls share). With one, the plugin's process waits instead, in the
/// call's own namespace (`spawn::child`).
#[test]
fn without_a_user_namespace_a_waiting_call_has_no_process_of_the_plugins_uid() {
    use std::io::Write;
    let Some(fx) = Fx::new(Who::Root, |cfg, _| {
        cfg["plugins"]["sleeper"] = json!({
            "command": ["/bin/sh", "-c", "read -r _; sleep 3; echo '{}'"],
            "allowed_methods": ["m"]
        });
    }) else {
        return;
    };
    let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
    let mut cmd = fx.command(&common::upm_bin());
    cmd.args(["run", "--jsonl", "--parallel", "2", "--config"])
        .arg(&fx.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    restrict_upm(
        &mut cmd,
        HostRestriction {
            syscall: libc::SYS_clone,
            arg0: Some((libc::CLONE_NEWUSER as u64, libc::CLONE_NEWUSER as u64)),
            errno: libc::EPERM as u32,
        },
    );
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for _ in 0..4 {
        stdin
            .write_all(&request("sleeper", "m", json!({})))
            .unwrap();
        stdin.write_all(b"\n").unwrap();
    }
    // Two calls run (3 s each), two wait for a slot with their `started` entry durable.
    let started = || {
        fx.dir
            .audit_lines()
            .iter()
            .filter(|e| e["event"] == "started")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while started() < 4 {
        assert!(Instant::now() < deadline, "4 calls did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Time for a waiting call's init to go as far as it may.
    std::thread::sleep(Duration::from_millis(300));
    let inits = children_of(child.id());
    let of_plugins_uid = inits.iter().filter(|&&pid| real_uid(pid) == Some(65534));
    // The running calls' inits only (their plugins are their children).
    assert_eq!(of_plugins_uid.count(), 2, "inits {inits:?}");
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // After the comm's closing parenthesis: state, then the parent's pid.
            let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
            after.split_whitespace().nth(1) == Some(parent.to_string().as_str())
        })
        .collect()
}

fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A call's init and its plugin (until its exec) run on two stacks in upm's memory. A
/// batch keeps them for its next call only when the init was its PID namespace's init:
/// its reaping then proves the plugin gone. Without the namespace (given up, as
/// `allow_degraded` lets it) the plugin may still run on them: they are unmapped. Seen
/// in upm's maps after each result line (the stacks are given back before it).
#[test]
fn a_batch_keeps_the_sandbox_stacks_only_with_a_pid_namespace() {
    use std::io::{BufRead, BufReader, Write};
    let Some(fx) = Fx::new(Who::Root, |cfg, _| {
        cfg["sandbox"]["allow_degraded"] = json!(["namespaces"]);
    }) else {
        return;
    };
    let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
    for (pid_namespace, kept) in [(true, 1), (false, 0)] {
        let mut cmd = fx.command(&common::upm_bin());
        cmd.args(["run", "--jsonl", "--config"])
            .arg(&fx.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if !pid_namespace {
            restrict_upm(&mut cmd, no_pid_namespaces());
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        for call in 0..3 {
            stdin
                .write_all(&request("spew", "control", json!({})))
                .unwrap();
            stdin.write_all(b"\n").unwrap();
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let r: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(r["success"], true, "{r}");
            let ns = &r["data"]["sandbox"]["layers"]["namespaces"]["state"];
            let want = if pid_namespace {
                "enforced"
            } else {
                "degraded"
            };
            assert_eq!(ns, want, "{r}");
            assert_eq!(
                call_stacks(child.id()),
                kept,
                "PID namespace {pid_namespace}, after call {call}"
            );
        }
        drop(stdin);
        assert_eq!(child.wait().unwrap().code(), Some(0));
    }
}

/// How many call stacks upm's memory holds: the layout of their mapping, a guard, 256
/// KiB, a 64 KiB guard, then 256 KiB (`spawn::child::Stacks`), found in its maps.
fn call_stacks(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let areas: Vec<(u64, u64, &str)> = maps
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (start, end) = words.next()?.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            Some((start, end, words.next()?))
        })
        .collect();
    areas
        .windows(4)
        .filter(|w| {
            let joined = w.windows(2).all(|p| p[0].1 == p[1].0);
            let perms: Vec<&str> = w.iter().map(|a| a.2).collect();
            joined
                && perms == ["---p", "rw-p", "---p", "rw-p"]
                && w[1].1 - w[1].0 == 256 << 10
                && w[2].1 - w[2].0 == 64 << 10
        })
        .count()
}

fn no_pid_namespaces() -> HostRestriction {
    HostRestriction {
        syscall: libc::SYS_clone,
        arg0: Some((libc::CLONE_NEWPID as u64, libc::CLONE_NEWPID as u64)),
        errno: libc::EPERM as u32,
    }
}

fn unreadable_read_path_fails_closed(who: Who) {
    // A namespace file: it exists and opens, but Landlock cannot put a rule on it.
    let Some(fx) = Fx::new(who, |cfg, dir| {
        with_sentinel(cfg, dir);
        cfg["plugins"]["sentinel"]["sandbox"]["read_paths"] = json!(["/proc/self/ns/net"]);
    }) else {
        return;
    };
    let run = fx.call("sentinel", "run", json!({}));
    assert_refused(&fx, &run, &["landlock", "/proc/self/ns/net"]);
}

fn unknown_syscall_in_profile_is_config_error(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, dir| {
        with_sentinel(cfg, dir);
        cfg["plugins"]["sentinel"]["sandbox"]["seccomp"] = json!("policies/unknown.json");
    }) else {
        return;
    };
    let mut profile: Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("policies/default.json")).unwrap(),
    )
    .unwrap();
    profile["syscalls"]
        .as_array_mut()
        .unwrap()
        .push(json!({"names": ["no_such_syscall_upm"], "action": "SCMP_ACT_ALLOW"}));
    std::fs::write(
        fx.dir.join("policies/unknown.json"),
        serde_json::to_vec_pretty(&profile).unwrap(),
    )
    .unwrap();
    let run = fx.call("sentinel", "run", json!({}));
    assert_eq!(run.code, 5, "{}", ctx(&run));
    assert_eq!(run.code_word(), "config_error", "{}", ctx(&run));
    let msg = run.json["data"]["error"].as_str().unwrap_or("");
    assert!(msg.contains("no_such_syscall_upm"), "{msg}");
    assert!(!fx.dir.join("sentinel/ran").exists(), "the plugin ran");
}
