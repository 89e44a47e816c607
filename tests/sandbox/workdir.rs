//! The call's private directory: removed whatever the plugin left in it, or audited and told.

use super::*;

both!(a_locked_litter_is_removed,);

/// The calls' directories go under `<fixture>/work`, where a test can find them.
fn with_own_workdir_root(cfg: &mut Value, dir: &Path) {
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    cfg["workdir_root"] = json!(work);
}

fn left_in(fx: &Fx) -> Vec<PathBuf> {
    left_under(&fx.dir.join("work"))
}

/// However deep a plugin nests its directories, upm removes them, with no descriptor
/// per level (upm runs here with 256 descriptors: the depth needs more) and no stack
/// per level (std's recursive removal aborted upm past ~17,000 levels: the unit test
/// `files::tests::a_deep_tree_is_removed_with_a_small_stack` covers that depth), and
/// without following the plugin's links out of it.
#[test]
fn a_deep_litter_is_removed_without_following_links() {
    let Some(fx) = Fx::new(Who::Root, with_own_workdir_root) else {
        return;
    };
    let outside = fx.dir.write("outside/keep", "x", false);
    let few_descriptors = |cmd: &mut Command| {
        // SAFETY: getrlimit/setrlimit are async-signal-safe; no allocation.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = 256;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    };
    let args = json!({"depth": 1000, "outside": outside.parent().unwrap()});
    let run = fx.call_with("probe", "litter", args, few_descriptors);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(run.result()["depth"], 1000);
    assert!(run.json["data"].get("warnings").is_none(), "{}", ctx(&run));
    assert_eq!(left_in(&fx), Vec::<PathBuf>::new(), "the directory stayed");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "x");
    let events: Vec<Value> = fx
        .dir
        .audit_lines()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(events, [json!("started"), json!("finished")]);
}

/// An unprivileged upm's plugin runs as upm's own uid, so it can take upm's access to
/// its directories away (`chmod 000`, or no write or search permission); upm, their
/// owner, gives itself access back and removes the tree all the same. (Root is never
/// stopped by a mode: the same call as root checks nothing is lost on the way.)
fn a_locked_litter_is_removed(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, dir| {
        with_own_workdir_root(cfg, dir);
        if who == Who::User {
            std::os::unix::fs::chown(dir.join("work"), Some(USER.0), Some(USER.1)).unwrap();
        }
    }) else {
        return;
    };
    // home, d, d/d, d/d/d, d/d/d/d (which holds a file).
    let args = json!({"depth": 4, "modes": [0o500, 0o000, 0o300, 0o100, 0o400]});
    let run = fx.call("probe", "litter", args);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert!(run.json["data"].get("warnings").is_none(), "{}", ctx(&run));
    assert_eq!(left_in(&fx), Vec::<PathBuf>::new(), "the directory stayed");
}

/// A directory that cannot be removed is not passed over in silence: the caller is
/// told where it stays, and the audit log records it against the call.
#[test]
fn a_directory_left_behind_is_audited_and_told() {
    let Some(fx) = Fx::new(Who::Root, with_own_workdir_root) else {
        return;
    };
    let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
    let child = fx.start(&request(
        "probe",
        "litter",
        json!({"depth": 1, "sleep": 1.0}),
    ));
    // While the plugin sleeps, mount a filesystem in the call's directory as the host
    // sees it (the plugin's own files are in its tmpfs, out of the host's sight):
    // removal must not enter it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let home = loop {
        let home = left_in(&fx).first().map(|d| d.join("home"));
        if let Some(h) = home.filter(|h| h.exists()) {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "the call's directory never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mnt = home.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    nix::mount::umount(&mnt).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let left = left_in(&fx);
    for d in &left {
        std::fs::remove_dir_all(d).unwrap();
    }
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let json: Value = serde_json::from_str(stdout.trim()).unwrap();
    let warnings = json["data"]["warnings"].to_string();
    assert_eq!(left.len(), 1);
    assert!(
        warnings.contains("could not be removed") && warnings.contains(left[0].to_str().unwrap()),
        "{stdout}"
    );
    let entries = fx.dir.audit_lines();
    let last = entries.last().unwrap();
    assert_eq!(last["event"], "cleanup_failed", "{entries:#?}");
    assert_eq!(last["call_id"], json["data"]["call_id"]);
    assert_eq!(last["path"], left[0].to_str().unwrap());
    assert!(
        last["error"].as_str().unwrap().contains("mounted"),
        "{last}"
    );
}

/// A plugin that needs nothing of its own on the host's disk (an executable, no pin):
/// `/bin/sh` prints its cwd and what it sees there, then writes a file in it.
fn with_shell_plugin(cfg: &mut Value, dir: &Path) {
    with_own_workdir_root(cfg, dir);
    let script = r#"printf '{"cwd":"%s","seen":"%s"}' "$(pwd)" "$(ls -A)"; echo x > mine"#;
    cfg["plugins"]["sh"] = json!({
        "command": ["/bin/sh", "-c", script],
        "allowed_methods": ["show"]
    });
}

/// The calls that need nothing of their own on the host's disk mount their home tmpfs
/// over one kept, empty mount point (issue 25): no directory is made or removed per
/// call, and a killed upm leaves nothing. Each call sees only its own files there.
#[test]
fn calls_share_one_empty_mount_point_and_see_only_their_own_home() {
    let Some(fx) = Fx::new(Who::Root, with_shell_plugin) else {
        return;
    };
    let shared = fx.dir.join("work/upm-homes-0");
    for _ in 0..2 {
        let run = fx.call("sh", "show", json!({}));
        assert_eq!(run.code, 0, "{}", ctx(&run));
        let r = run.result();
        assert_eq!(r["cwd"], json!(shared.join("home")), "{}", ctx(&run));
        // The previous call's file is not there: each call has its own tmpfs.
        assert_eq!(r["seen"], "", "{}", ctx(&run));
    }
    let meta = std::fs::symlink_metadata(shared.join("home")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), 0);
    assert_eq!(left_in(&fx), Vec::<PathBuf>::new(), "a call left files");
}

/// The shared mount point is 0755 whatever the umask of the upm that made it: one made
/// under umask 077 (0700) kept every later call's plugin from its home, whatever their
/// umask; one left so by an earlier upm is set back to 0755.
#[test]
fn the_shared_mount_point_serves_calls_made_under_any_umask() {
    use std::os::unix::fs::PermissionsExt;
    let Some(fx) = Fx::new(Who::Root, with_shell_plugin) else {
        return;
    };
    let shared = fx.dir.join("work/upm-homes-0");
    let with_umask = |mask: libc::mode_t| {
        move |cmd: &mut Command| {
            // SAFETY: umask is async-signal-safe; no allocation.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
    };
    for mask in [0o077, 0o022] {
        let run = fx.call_with("sh", "show", json!({}), with_umask(mask));
        assert_eq!(run.code, 0, "umask {mask:o}: {}", ctx(&run));
        assert_eq!(
            run.result()["cwd"],
            json!(shared.join("home")),
            "{}",
            ctx(&run)
        );
        let mode = std::fs::symlink_metadata(&shared).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755, "umask {mask:o}");
    }
    // Left 0700 by an earlier upm: repaired, and used.
    std::fs::set_permissions(&shared, PermissionsExt::from_mode(0o700)).unwrap();
    let run = fx.call_with("sh", "show", json!({}), with_umask(0o022));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(
        run.result()["cwd"],
        json!(shared.join("home")),
        "{}",
        ctx(&run)
    );
    assert_eq!(
        std::fs::symlink_metadata(&shared).unwrap().mode() & 0o7777,
        0o755
    );
}

/// A mount point that is not upm's own (a link, another user's, writable by others) is
/// never used: the call makes its own directory, and what was planted is untouched.
#[test]
fn a_planted_shared_mount_point_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    type Plant = fn(&Path, &Path);
    let plants: [(&str, Plant); 3] = [
        ("a link", |shared, elsewhere| {
            std::os::unix::fs::symlink(elsewhere, shared).unwrap();
        }),
        ("another user's", |shared, _| {
            std::fs::create_dir_all(shared.join("home")).unwrap();
            std::os::unix::fs::chown(shared, Some(USER.0), Some(USER.1)).unwrap();
        }),
        ("writable by others", |shared, _| {
            std::fs::create_dir_all(shared.join("home")).unwrap();
            std::fs::set_permissions(shared.join("home"), PermissionsExt::from_mode(0o777))
                .unwrap();
        }),
    ];
    for (what, plant) in plants {
        let Some(fx) = Fx::new(Who::Root, with_shell_plugin) else {
            return;
        };
        let shared = fx.dir.join("work/upm-homes-0");
        let elsewhere = fx.dir.join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("home")).unwrap();
        plant(&shared, &elsewhere);
        let run = fx.call("sh", "show", json!({}));
        assert_eq!(run.code, 0, "{what}: {}", ctx(&run));
        let cwd = run.result()["cwd"].as_str().unwrap().to_owned();
        assert!(!cwd.contains("upm-homes"), "{what}: the call used {cwd}");
        assert!(!Path::new(&cwd).exists(), "{what}: {cwd} outlived the call");
        let in_elsewhere = std::fs::read_dir(elsewhere.join("home")).unwrap().count();
        assert_eq!(in_elsewhere, 0, "{what}: the plant was written to");
    }
}
