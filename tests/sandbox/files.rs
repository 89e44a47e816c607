//! Landlock and the mounts: what the plugin may read, write and change on the host.

use super::*;

both!(
    a_pinned_python_tree_runs_from_its_snapshot,
    host_files_cannot_be_changed_by_path,
    reads_outside_the_allowed_paths_are_denied,
    writes_outside_the_workdir_are_denied,
);

/// A pinned Python tree runs from its verified snapshot: for a root upm, a tmpfs of its
/// own that upm fills and seals, attached over the call's `verified/` in the call's mount
/// namespace (never on the host's disk); for an unprivileged upm, which may not make a
/// tmpfs outside a user namespace, files in the call's own directory, as before.
fn a_pinned_python_tree_runs_from_its_snapshot(who: Who) {
    let pin = |cfg: &mut Value, found: &str| {
        cfg["plugins"]["pyclass"]["manifest_sha256"] = json!(found);
    };
    let Some(fx) = Fx::new(who, |cfg, _| pin(cfg, &"0".repeat(64))) else {
        return;
    };
    // The digest the tree has, from the refusal of a wrong pin.
    let run = fx.call("pyclass", "control", json!({}));
    assert_eq!(run.code_word(), "integrity_mismatch", "{}", ctx(&run));
    let err = run.json["data"]["error"].as_str().unwrap().to_owned();
    let found = err
        .split("found ")
        .nth(1)
        .and_then(|s| s.get(..64))
        .unwrap();
    let mut cfg = base_config();
    pin(&mut cfg, found);
    fx.dir.config(&cfg);

    let run = fx.call("pyclass", "control", json!({}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let (uid, _) = who.plugin_ids();
    assert_eq!(run.result()["uid"], uid, "{}", ctx(&run));
    let snapshot = run.json["data"]["sandbox"]["python_path"]["snapshot"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let verified = &run.json["data"]["sandbox"]["layers"]["namespaces"]["detail"]["verified"];
    match who {
        Who::Root => {
            assert!(snapshot.ends_with("/verified/tree/0"), "{}", ctx(&run));
            let at = verified["at"].as_str().unwrap();
            assert!(at.ends_with("/verified/tree"), "in memory: {}", ctx(&run));
        }
        Who::User => {
            assert!(snapshot.ends_with("/verified/0"), "{}", ctx(&run));
            assert!(verified.is_null(), "on disk: {}", ctx(&run));
        }
    }
}

fn reads_outside_the_allowed_paths_are_denied(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    // A world-readable file under /root (0700): only the DAC of /root and Landlock stand in the way.
    let root_file = PathBuf::from(format!("/root/upm-sandbox-test-{}", fx.nonce));
    std::fs::write(&root_file, "secret under /root\n").unwrap();
    std::fs::set_permissions(&root_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _cleanup = RemoveOnDrop(root_file.clone());

    let config = fx.config.to_str().unwrap().to_owned();
    let own = fx.plugin_path("probe.py").to_str().unwrap().to_owned();
    let sibling = fx.plugin_path("spew.sh").to_str().unwrap().to_owned();
    let audit = fx.dir.join("entrypoint.log").to_str().unwrap().to_owned();
    let root_s = root_file.to_str().unwrap().to_owned();
    let run = fx.call(
        "probe",
        "read",
        json!({"paths": [own, "/etc/ld.so.conf", "/usr/lib/os-release",
                          "/etc/shadow", "/etc/passwd", root_s, config, sibling, audit,
                          "/proc/1/environ"]}),
    );
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    // Controls: the plugin's own file and the base system are readable.
    assert_ok(&r[own.as_str()], "reading its own file");
    assert_ok(&r["/etc/ld.so.conf"], "reading /etc/ld.so.conf");
    assert_ok(&r["/usr/lib/os-release"], "reading under /usr");
    // /etc/passwd, the config, a sibling plugin and the audit log are world-readable:
    // EACCES there is Landlock's answer, not the file mode's.
    for p in [
        "/etc/shadow",
        "/etc/passwd",
        &root_s,
        &config,
        &sibling,
        &audit,
        "/proc/1/environ",
    ] {
        assert_eq!(errno(&r[p]), EACCES, "reading {p}: {r}");
    }

    let plugins_dir = fx.dir.join("plugins").to_str().unwrap().to_owned();
    let dir_s = fx.dir.path.to_str().unwrap().to_owned();
    let run = fx.call(
        "probe",
        "listdir",
        json!({"paths": [".", "/usr", "/root", dir_s, plugins_dir, "/tmp", "/"]}),
    );
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["."], "listing its working directory");
    assert_ok(&r["/usr"], "listing /usr");
    for p in ["/root", &dir_s, &plugins_dir, "/tmp", "/"] {
        assert_eq!(errno(&r[p]), EACCES, "listing {p}: {r}");
    }
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn writes_outside_the_workdir_are_denied(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let escape_tmp = format!("/tmp/upm-escape-{}", fx.nonce);
    let escape_cfgdir = fx.dir.join("escaped.txt").to_str().unwrap().to_owned();
    let config = fx.config.to_str().unwrap().to_owned();
    let own = fx.plugin_path("probe.py").to_str().unwrap().to_owned();
    let config_before = std::fs::read(&fx.config).unwrap();
    let probe_before = std::fs::read(&own).unwrap();
    let _c1 = RemoveOnDrop(PathBuf::from(&escape_tmp));
    let run = fx.call(
        "probe",
        "write",
        json!({"paths": ["inside.txt", "/dev/null", escape_tmp, escape_cfgdir, config, own,
                          "/etc/upm-escape", "/dev/shm/upm-escape"]}),
    );
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["inside.txt"], "writing in its working directory");
    assert_ok(&r["/dev/null"], "writing /dev/null");
    for p in [
        &escape_tmp,
        &escape_cfgdir,
        &config,
        &own,
        "/etc/upm-escape",
        "/dev/shm/upm-escape",
    ] {
        // Landlock refuses (EACCES), or the read-only mounts before it (EROFS).
        let e = errno(&r[AsRef::<str>::as_ref(p)]);
        assert!(e == EACCES || e == EROFS, "writing {p}: {r}");
    }
    assert!(!Path::new(&escape_tmp).exists());
    assert!(!Path::new(&escape_cfgdir).exists());
    assert!(!Path::new("/etc/upm-escape").exists());
    assert_eq!(std::fs::read(&fx.config).unwrap(), config_before);
    assert_eq!(std::fs::read(&own).unwrap(), probe_before);
    // The private working directory was the call's alone: gone once it returns.
    let control = fx.call("probe", "control", json!({}));
    let cwd = control.result()["cwd"].as_str().unwrap().to_owned();
    assert!(cwd.starts_with("/tmp/upm-"), "{cwd}");
    assert!(
        !Path::new(&cwd).exists(),
        "the workdir {cwd} outlived the call"
    );
}

/// Landlock does not check metadata changes by path: without the call's read-only
/// mounts, a plugin could chmod any file its uid owns (an unprivileged upm's plugin:
/// every file of the user running upm, `~/.bashrc` made world-writable, say), reset the
/// times of any world-writable file, or tag files with xattrs. Only its home is writable.
fn host_files_cannot_be_changed_by_path(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    let (uid, gid) = who.plugin_ids();
    let mine = fx.dir.write("outside/mine", "x", false);
    std::os::unix::fs::chown(&mine, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o600)).unwrap();
    let open = fx.dir.write("outside/open", "x", false);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = |p: &Path| std::fs::metadata(p).unwrap();
    let (mine_before, open_before) = (before(&mine), before(&open));
    let args = json!({
        "make": ["f"],
        "paths": {"mine": mine, "open": open, "home": "f", "call_dir": ".."},
    });
    let run = fx.call("probe", "meta", args);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    for key in ["mine", "open", "call_dir"] {
        for op in ["chmod", "utime", "utime_now", "setxattr"] {
            assert_eq!(r[key][op], EROFS, "{key} {op}: {}", ctx(&run));
        }
    }
    for op in ["chmod", "utime", "utime_now", "setxattr"] {
        assert_eq!(r["home"][op], 0, "home {op}: {}", ctx(&run));
    }
    for (p, b) in [(&mine, mine_before), (&open, open_before)] {
        let after = std::fs::metadata(p).unwrap();
        assert_eq!(after.mode(), b.mode(), "{}", p.display());
        assert_eq!(after.mtime(), b.mtime(), "{}", p.display());
    }
    let ns = &run.json["data"]["sandbox"]["layers"]["namespaces"]["detail"];
    assert_eq!(ns["host_files"], "read-only mounts", "{ns}");
    assert!(
        ns["created"].as_array().unwrap().contains(&json!("mount")),
        "{ns}"
    );
}

/// The executable upm verified is opened before the call's mount namespace exists, on
/// the host's writable mount; the init opens it again through the read-only mounts, so a
/// script run through that descriptor (a symlink named like it to `/proc/self/fd/N`)
/// cannot change its own file's metadata through it either. (Only an unprivileged upm's plugin owns its own file: as root,
/// plugin files are root's, and the plugin's uid gets EPERM anyway.)
#[test]
fn the_plugins_own_file_cannot_be_changed_through_its_descriptor() {
    let Some(fx) = Fx::new(Who::User, |cfg, _| {
        cfg["plugins"]["own"] = json!({"command": ["plugins/own.py"], "allowed_methods": ["meta"]});
    }) else {
        return;
    };
    let own = fx.dir.write("plugins/own.py", PROBE, true);
    std::os::unix::fs::chown(&own, Some(USER.0), Some(USER.1)).unwrap();
    let before = std::fs::metadata(&own).unwrap();
    let run = fx.call("own", "meta", json!({"self": true}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = &run.result()["self"];
    assert!(r["argv0"].as_str().unwrap().ends_with("/own.py"), "{r}");
    assert!(
        r["link"].as_str().unwrap().starts_with("/proc/self/fd/"),
        "{r}"
    );
    assert_eq!(r["chmod_path"], EROFS, "{r}");
    assert_eq!(r["utime_path"], EROFS, "{r}");
    assert_eq!(r["fchmod_fd"], EBADF, "{r}");
    let after = std::fs::metadata(&own).unwrap();
    assert_eq!(after.mode(), before.mode());
    assert_eq!(after.mtime(), before.mtime());
}
