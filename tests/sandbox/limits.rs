//! Hard limits: processes, memory, CPU, file size, descriptors, each per call.

use super::*;

both!(
    fork_bomb_is_contained,
    memory_bomb_is_limit_exceeded,
    cpu_spin_is_limit_exceeded,
    file_size_open_files_and_core_limits_hold,
    process_limit_is_per_call,
    user_namespace_has_an_owner_of_its_own,
    hard_limit_above_upms_own_is_raised_or_refused,
);

fn fork_bomb_is_contained(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["max_processes"] = json!(16);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let script = fx.plugin_path("probe.py").to_str().unwrap().to_owned();
    let run = {
        let _alone = NPROC.write().unwrap_or_else(|e| e.into_inner());
        fx.call_unlocked("probe", "fork_bomb", json!({}), |_| {})
    };
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(errno(r), EAGAIN, "{r}");
    let forked = r["forked"].as_i64().unwrap();
    assert!(
        (1..=16).contains(&forked),
        "forked {forked} under max_processes 16"
    );
    let wall = run.json["data"]["usage"]["wall_ms"].as_f64().unwrap();
    assert!(wall < 5000.0, "upm returned only after {wall} ms");
    // The init's exit killed every bomb process: none is left on the machine.
    let left = processes_matching(&script);
    assert!(
        left.is_empty(),
        "fork bomb processes outlived the call: {left:?}"
    );
    // And the machine still forks.
    assert!(Command::new("/bin/true").status().unwrap().success());
}

fn memory_bomb_is_limit_exceeded(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "pyclass");
    let run = fx.call("pyclass", "memory_bomb", json!({}));
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.code_word(), "limit_exceeded", "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "memory", "{}", ctx(&run));
    assert_eq!(
        run.json["data"]["details"]["type"],
        "MemoryError",
        "{}",
        ctx(&run)
    );
    // RLIMIT_AS of 256 MiB: the plugin never got far past it.
    let rss = run.json["data"]["usage"]["max_rss_kb"].as_i64().unwrap();
    assert!(rss < 300 * 1024, "max RSS {rss} kB under a 256 MiB limit");
}

fn cpu_spin_is_limit_exceeded(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["cpu_seconds"] = json!(1);
        cfg["sandbox"]["limits"]["timeout_ms"] = json!(20000);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "spin", json!({}));
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.code_word(), "limit_exceeded", "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "cpu", "{}", ctx(&run));
    assert_eq!(run.json["data"]["signal"], libc::SIGXCPU, "{}", ctx(&run));
    let cpu = run.json["data"]["usage"]["cpu_user_ms"].as_f64().unwrap()
        + run.json["data"]["usage"]["cpu_system_ms"].as_f64().unwrap();
    assert!(
        (900.0..2500.0).contains(&cpu),
        "cpu {cpu} ms under a 1 s limit"
    );
}

/// The limits the result reports besides time, CPU, memory and processes: each is the
/// configured (or fixed) value inside the plugin, and hitting it fails the operation.
fn file_size_open_files_and_core_limits_hold(who: Who) {
    const FSIZE: u64 = 1 << 20;
    const NOFILE: u64 = 64;
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["file_size_bytes"] = json!(FSIZE);
        cfg["sandbox"]["limits"]["open_files"] = json!(NOFILE);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "file_limits", json!({ "fsize": FSIZE }));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(r["fsize"], json!([FSIZE, FSIZE]), "{r}");
    assert_eq!(r["nofile"], json!([NOFILE, NOFILE]), "{r}");
    assert_eq!(r["core"], json!([0, 0]), "no core dumps: {r}");
    assert_ok(&r["small_write"], "a small write in the working directory");
    assert_eq!(errno(&r["write_past_fsize"]), libc::EFBIG as i64, "{r}");
    assert_eq!(r["big_size"], json!(FSIZE), "{r}");
    assert_eq!(errno(&r["open_many"]), libc::EMFILE as i64, "{r}");
    let opened = r["opened"].as_u64().unwrap();
    assert!(
        opened < NOFILE,
        "opened {opened} descriptors under open_files {NOFILE}"
    );
    let limits = &run.json["data"]["sandbox"]["layers"]["limits"]["detail"];
    assert_eq!(limits["file_size_bytes"], json!(FSIZE), "{limits}");
    assert_eq!(limits["open_files"], json!(NOFILE), "{limits}");
    // Queued signals: each call has a user namespace of its own, so without this limit
    // the host's (~96,000 here) would apply to every call.
    let pending = limits["pending_signals"].as_u64().unwrap();
    assert!((1..=1024).contains(&pending), "{limits}");
    assert_eq!(r["sigpending"], json!([pending, pending]), "{r}");
    assert_eq!(errno(&r["queue_many"]), libc::EAGAIN as i64, "{r}");
    let queued = r["queued"].as_u64().unwrap();
    assert!(queued <= pending, "queued {queued} signals under {pending}");
}

/// Message queues, real-time scheduling and the nice ceiling are fixed per call, never
/// the host's: a host (a service manager, a container) may grant upm more. This machine
/// withholds CAP_SYS_RESOURCE even from root, so the test cannot hand upm a generous
/// host; the unit test `limits::tests::host_grants_are_pinned` checks the plan. Here upm
/// gets a *smaller* message queue allowance than the fixed one: the call must report and
/// enforce what really holds, not the figure it asked for.
#[test]
fn fixed_limits_are_what_the_plugin_gets() {
    let Some(fx) = Fx::new(Who::Root, |_, _| {}) else {
        return;
    };
    const MSGQUEUE: u64 = 200_000;
    let small_host = |cmd: &mut Command| {
        // SAFETY: setrlimit is async-signal-safe; the values are on the closure's stack.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: MSGQUEUE,
                    rlim_max: MSGQUEUE,
                };
                if libc::setrlimit(libc::RLIMIT_MSGQUEUE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    let run = fx.call_with("probe", "host_grants", json!({}), small_host);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    let limits = &run.json["data"]["sandbox"]["layers"]["limits"]["detail"];
    assert_eq!(limits["message_queue_bytes"], json!(MSGQUEUE), "{limits}");
    assert_eq!(limits["realtime_priority"], json!(0), "{limits}");
    assert_eq!(limits["raise_priority"], json!(false), "{limits}");
    assert_eq!(r["msgqueue"], json!([MSGQUEUE, MSGQUEUE]), "{r}");
    assert_eq!(r["rtprio"], json!([0, 0]), "{r}");
    assert_eq!(r["nice"], json!([0, 0]), "{r}");
    assert_eq!(errno(&r["sched_fifo"]), libc::EPERM as i64, "{r}");
    assert_eq!(errno(&r["nice_down"]), libc::EACCES as i64, "{r}");
    // Landlock refuses every POSIX queue: its file lives on mqueue's internal mount, under
    // no allowed path (checked by hand: with "/" allowed, still EACCES). The rlimit backs
    // that up where Landlock is allowed to degrade.
    assert_eq!(errno(&r["mq_open_many"]), libc::EACCES as i64, "{r}");
    assert_eq!(r["mq_opened"], json!(0), "{r}");
}

/// `max_processes` is each call's own: concurrent calls running as the same uid do not
/// share one budget (each call has a user namespace of its own, and the kernel counts
/// processes per user per user namespace). Twelve calls of three processes each under a
/// limit of four: as one budget for the uid, most of them would fail to fork.
fn process_limit_is_per_call(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, dir| {
        std::fs::write(
            dir.join("plugins/crowd.sh"),
            "#!/bin/sh\nread -r _\n/bin/sleep 0.4 & /bin/sleep 0.4 & wait\necho '{\"ok\": true}'\n",
        )
        .unwrap();
        std::fs::set_permissions(
            dir.join("plugins/crowd.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        cfg["plugins"]["crowd"] =
            json!({"command": ["plugins/crowd.sh"], "allowed_methods": ["gather"]});
        cfg["sandbox"]["limits"]["max_processes"] = json!(4);
    }) else {
        return;
    };
    // The same sandbox settings as the probe's (crowd.sh has no control method).
    assert_fully_sandboxed(&fx, "probe");
    let runs: Vec<Run> = {
        let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
        std::thread::scope(|s| {
            let calls: Vec<_> = (0..12)
                .map(|_| s.spawn(|| fx.call_unlocked("crowd", "gather", json!({}), |_| {})))
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        })
    };
    let failed: Vec<String> = runs.iter().filter(|r| r.code != 0).map(ctx).collect();
    assert!(
        failed.is_empty(),
        "{} of 12 calls failed: {failed:?}",
        failed.len()
    );
    let ns = &runs[0].json["data"]["sandbox"]["layers"]["namespaces"]["detail"];
    assert_eq!(
        ns["created"].as_array().map(|a| a.contains(&json!("user"))),
        Some(true),
        "{ns}"
    );
}

/// A root upm's call has a user namespace owned by a uid of its own, never by root nor
/// by the plugin's uid: the kernel charges a namespace's per-user quotas (inotify
/// instances, queued signals, nested namespaces) to its owner, and every host process
/// running as the owner holds all capabilities over the namespace (it could join the
/// call's network namespace and bring up `lo`, or trace the plugin). Unprivileged, the
/// owner is upm's own uid, which the plugin runs as anyway.
fn user_namespace_has_an_owner_of_its_own(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let mut owners = Vec::new();
    for round in 0..2 {
        let marker = format!("979{round}.{}", fx.nonce);
        let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
        let (child, seen) = start_daemon_call(&fx, &marker, 2.0);
        let owner = seen.first().map(|p| {
            let pid = p.split(':').next().unwrap_or_default();
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).unwrap();
            let mut uid: libc::uid_t = u32::MAX;
            const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
            // SAFETY: the ioctl writes one uid_t into `uid`.
            let rc = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            let host = std::fs::read_link("/proc/self/ns/user").unwrap();
            let own = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
            assert_ne!(own, host, "the plugin is in upm's own user namespace");
            // Seen from outside, where an id the namespace does not map is not disguised
            // as the overflow id: the plugin's tree really runs as its uid and gid.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let line = |key: &str| {
                let l = status.lines().find(|l| l.starts_with(key)).unwrap();
                l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
            };
            let (u, g) = who.plugin_ids();
            assert_eq!(line("Uid:"), format!("{u} {u} {u} {u}"), "{status}");
            assert_eq!(line("Gid:"), format!("{g} {g} {g} {g}"), "{status}");
            assert_eq!(line("Groups:"), "", "{status}");
            assert_eq!(line("CapEff:"), "0000000000000000", "{status}");
            uid
        });
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        let json: Value = serde_json::from_str(stdout.trim()).unwrap();
        let detail = &json["data"]["sandbox"]["layers"]["namespaces"]["detail"];
        let Some(owner) = owner else {
            panic!("the daemon never appeared: {stdout}");
        };
        match who {
            Who::Root => {
                assert!(owner >= 0x8000_0000, "owner {owner}");
                assert_eq!(detail["user_namespace_owner"], owner, "{detail}");
            }
            Who::User => {
                assert_eq!(owner, USER.0);
                assert!(detail.get("user_namespace_owner").is_none(), "{detail}");
            }
        }
        owners.push(owner);
    }
    if who == Who::Root {
        assert_ne!(owners[0], owners[1], "two calls, one owner");
    }
}

/// A policy limit above upm's own hard limit: the init cannot raise it from inside the
/// call's user namespace, so upm does, from outside, if it holds CAP_SYS_RESOURCE;
/// otherwise the call is refused, never run with a limit other than the one reported.
/// A limit below upm's is set as usual.
fn hard_limit_above_upms_own_is_raised_or_refused(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, dir| {
        with_sentinel(cfg, dir);
        cfg["sandbox"]["limits"]["open_files"] = json!(256);
        cfg["plugins"]["probe"]["sandbox"] = json!({"limits": {"open_files": 128}});
    }) else {
        return;
    };
    let nofile_200 = |cmd: &mut Command| {
        // SAFETY: setrlimit is async-signal-safe; the values are on the closure's stack.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 200,
                    rlim_max: 200,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    let below = fx.call_with("probe", "control", json!({}), nofile_200);
    assert_eq!(below.code, 0, "{}", ctx(&below));
    assert_eq!(
        below.result()["nofile"],
        json!([128, 128]),
        "{}",
        ctx(&below)
    );

    let run = fx.call_with("sentinel", "run", json!({}), nofile_200);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    const CAP_SYS_RESOURCE: u32 = 24;
    let may_raise = who == Who::Root && cap_eff & (1 << CAP_SYS_RESOURCE) != 0;
    if may_raise {
        assert_eq!(run.code, 0, "{}", ctx(&run));
        return;
    }
    eprintln!("upm lacks CAP_SYS_RESOURCE here ({who:?}): checking that it refuses");
    assert_refused(
        &fx,
        &run,
        &["the limits layer", "open_files needs a hard limit of 256"],
    );
}
