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
    std::fs::read_dir(fx.dir.join("work"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
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
