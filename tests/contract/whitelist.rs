//! Exit 4: plugins outside the whitelist; where a call's private directory is made.

use super::*;

#[test]
fn unknown_and_malformed_plugin_names_are_not_whitelisted() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let invalid = ["../x", "a/b", "a\u{0}b", "/bin/sh", ".hidden", "é"];
    let long65 = "p".repeat(65);
    for name in invalid.iter().copied().chain([long65.as_str()]) {
        let r = call(&c, name, "upper", json!({"text": "x"}));
        err(&r, 4, "not_whitelisted");
        assert!(
            error_text(&r).contains("not in config: ['TextTools'] (not a valid plugin name"),
            "{name:?}: {}",
            r.stdout
        );
    }
    // Syntactically fine, merely unknown: UPM's sentence alone, same code.
    let long64 = "p".repeat(64);
    for name in ["Nope", "texttools", long64.as_str()] {
        let r = call(&c, name, "upper", json!({"text": "x"}));
        err(&r, 4, "not_whitelisted");
        assert_eq!(
            error_text(&r),
            format!("Plugin class '{name}' not in config: ['TextTools']"),
            "{name:?}: {}",
            r.stdout
        );
        assert_eq!(r.json["data"]["plugin"], name);
    }
    let r = run_argv(&c, &["../x", "upper", "{}"]);
    err(&r, 4, "not_whitelisted");
}

/// A refused name is repeated in the response and the audit entry, escaped (U+0085 takes
/// six bytes as `\u{85}`): only its first 128 characters are, so one request's names
/// cannot make an entry many times its own size (enough of them once made a 72 MB entry
/// past which the audit writer could no longer chain).
#[test]
fn a_refused_name_is_repeated_only_in_part() {
    let d = setup();
    let c = tt_cfg(&d, json!({}));
    let name = "\u{85}".repeat(200_000);
    let r = call(&c, &name, "upper", json!({"text": "x"}));
    err(&r, 4, "not_whitelisted");
    assert!(
        r.stdout.len() < 10_000,
        "{} bytes of response",
        r.stdout.len()
    );
    let kept = format!("{}…", "\u{85}".repeat(128));
    assert_eq!(r.json["data"]["plugin"], kept.as_str());
    let lines = d.audit_lines();
    let last = lines.last().unwrap();
    assert_eq!(last["plugin"], kept.as_str(), "{last}");
    assert!(last.to_string().len() < 10_000, "{last}");
}

/// `workdir_root` moves each call's private directory (an operator's tmpfs, say); it is
/// made there, is the plugin's cwd and `$TMPDIR`, and is gone when the call ends.
#[test]
fn the_private_directory_is_made_under_workdir_root() {
    let d = setup();
    let root = d.join("work");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pwd = sh(
        &d,
        "pwd",
        r#"read -r _; printf '{"cwd": "%s", "tmp": "%s"}' "$(pwd)" "$TMPDIR""#,
    );
    let config = cfg(
        &d,
        json!({ "workdir_root": root, "plugins": { "Pwd": cmd(&pwd, &["where"]) } }),
    );
    let r = run_stdin(&config, &request("Pwd", "where", json!({})));
    let result = ok(&r);
    let cwd = result["cwd"].as_str().unwrap();
    let prefix = format!("{}/upm-", root.display());
    assert!(
        cwd.starts_with(&prefix) && cwd.ends_with("/home"),
        "{result}"
    );
    assert_eq!(result["tmp"], result["cwd"], "{result}");
    let left = left_under(&root);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A config error whose problems include one that `want` recognizes.
fn refused_with(r: &Run, want: impl Fn(&str) -> bool, what: impl std::fmt::Display) {
    err(r, 5, "config_error");
    assert!(
        config_problems(r).iter().any(|p| want(p)),
        "{what}: {}",
        r.stdout
    );
}

/// A root others may write to without the sticky bit would let another user swap a
/// call's directory for their own: refused, as are relative and missing paths.
#[test]
fn an_unsafe_workdir_root_is_a_config_error() {
    let d = setup();
    let pwd = sh(&d, "pwd", "read -r _; echo '{}'");
    let open = d.join("open");
    std::fs::create_dir(&open).unwrap();
    let with_root = |root: Value| {
        let config = cfg(
            &d,
            json!({ "workdir_root": root, "plugins": { "Pwd": cmd(&pwd, &["where"]) } }),
        );
        run_stdin(&config, &request("Pwd", "where", json!({})))
    };
    for (mode, refused) in [(0o777, true), (0o1777, false), (0o755, false)] {
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
        let r = with_root(json!(open));
        if refused {
            err(&r, 5, "config_error");
            let problems = config_problems(&r);
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("workdir_root") && p.contains("sticky")),
                "{problems:?}"
            );
        } else {
            ok(&r);
        }
    }
    if is_root() {
        // Another user's directory: they could rename entries in it, sticky or not.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::os::unix::fs::chown(&open, Some(4242), Some(4242)).unwrap();
        let r = with_root(json!(open));
        refused_with(&r, |p| p.contains("uid 4242"), "another user's root");
        // ... also when it is only an ancestor.
        let inner = open.join("inner");
        std::fs::create_dir(&inner).unwrap();
        let r = with_root(json!(inner));
        err(&r, 5, "config_error");
    } else {
        eprintln!("SKIPPED: another user's workdir_root (needs root to chown)");
    }
    // Where plugins may read, they could read other calls' directories.
    let r = with_root(json!("/usr/local"));
    refused_with(&r, |p| p.contains("inside /usr"), "/usr/local");
    // A read path over the default root (/tmp), however it names it.
    let with_read_path = |path: Value| {
        let config = cfg(
            &d,
            json!({ "plugins": { "Pwd": {
                "command": [pwd], "allowed_methods": ["where"],
                "sandbox": { "read_paths": [path] }
            } } }),
        );
        run_stdin(&config, &request("Pwd", "where", json!({})))
    };
    let over_root = |p: &str| p.contains("plugin \"Pwd\"") && p.contains("workdir_root");
    let r = with_read_path(json!("/tmp"));
    refused_with(&r, over_root, "read_paths [/tmp]");
    // ... also through a link to it, or to an ancestor of it (`/` holds every root).
    let link = d.join("to-root");
    std::os::unix::fs::symlink("/", &link).unwrap();
    let r = with_read_path(json!(link));
    refused_with(&r, over_root, "read_paths [a link to /]");
    if is_root() {
        // ... and through a bind mount of it, which no name resolves to (made in upm's
        // own mount namespace: nothing of it outlives upm, whatever happens here).
        let mnt = d.join("tmp-again");
        std::fs::create_dir(&mnt).unwrap();
        let config = cfg(
            &d,
            json!({ "plugins": { "Pwd": {
                "command": [pwd], "allowed_methods": ["where"],
                "sandbox": { "read_paths": [mnt] }
            } } }),
        );
        let mut upm = Command::new(upm_bin());
        upm.args(["run", "--config", config.to_str().unwrap()])
            .env_remove("UPM_CONFIG_PATH")
            .env_remove("UPM_LOG_FILE");
        bind_over(&mut upm, Path::new("/tmp"), mnt.to_str().unwrap());
        let r = run_command(upm, &request("Pwd", "where", json!({})));
        refused_with(&r, over_root, "read_paths [a bind mount of /tmp]");
    } else {
        eprintln!("SKIPPED: a bind mount of workdir_root (needs root to mount)");
    }
    for bad in [json!("relative/dir"), json!(d.join("missing")), json!(pwd)] {
        let r = with_root(bad.clone());
        refused_with(&r, |p| p.contains("workdir_root"), &bad);
    }
    // Not a path at all: one problem, not a second one about the path it is not.
    let r = with_root(json!(42));
    refused_with(&r, |p| p.contains("workdir_root"), "42");
    let about_root = config_problems(&r)
        .into_iter()
        .filter(|p| p.contains("workdir_root"))
        .collect::<Vec<_>>();
    assert_eq!(about_root.len(), 1, "{about_root:?}");
}

/// A plugin never runs as root: a non-root user is one of the sandbox's layers, and root
/// owns what upm keeps between calls (a root upm's compiled seccomp programs).
#[test]
fn a_root_plugin_user_is_a_config_error() {
    let d = setup();
    let pwd = sh(&d, "pwd", "read -r _; echo '{}'");
    for user in [
        json!({"uid": 0, "gid": 65534}),
        json!({"uid": 65534, "gid": 0}),
    ] {
        let mut plugin = cmd(&pwd, &["where"]);
        plugin["sandbox"] = json!({ "user": user });
        let config = cfg(&d, json!({ "plugins": { "Pwd": plugin } }));
        let r = run_stdin(&config, &request("Pwd", "where", json!({})));
        refused_with(&r, |p| p.contains("never runs as root"), &user);
    }
    let mut plugin = cmd(&pwd, &["where"]);
    plugin["sandbox"] = json!({ "user": {"uid": 65534, "gid": 65534} });
    let config = cfg(&d, json!({ "plugins": { "Pwd": plugin } }));
    ok(&run_stdin(&config, &request("Pwd", "where", json!({}))));
}

/// What upm keeps for itself under `workdir_root` (the homes' mount point, the digests,
/// the compiled programs) is no plugin's to read or write, however a config or the
/// caller's PYTHONPATH names it; a path beside them is fine (`upm-data` too).
#[test]
fn upms_own_directories_under_workdir_root_are_no_plugins() {
    let d = setup();
    let pwd = sh(&d, "pwd", "read -r _; echo '{}'");
    let root = d.join("work");
    std::fs::create_dir_all(root.join("upm-data")).unwrap();
    let with = |key: &str, path: &Path| {
        let config = cfg(
            &d,
            json!({ "workdir_root": root, "plugins": { "Pwd": {
                "command": [pwd], "allowed_methods": ["where"],
                "sandbox": { key: [path] }
            } } }),
        );
        run_stdin(&config, &request("Pwd", "where", json!({})))
    };
    let own = |p: &str| p.contains("plugin \"Pwd\"") && p.contains("keeps for itself");
    for key in ["read_paths", "write_paths"] {
        for inside in [
            "upm-seccomp-0",
            "upm-audit-0",
            "upm-homes-1000/home",
            "upm-data/../upm-digests-0",
        ] {
            refused_with(
                &with(key, &root.join(inside)),
                own,
                format!("{key} {inside}"),
            );
        }
        ok(&with(key, &root.join("upm-data")));
    }
    python_path_entry_is_refused(&d, &root, &root.join("upm-digests-0"));
}

/// A Python plugin's call with `entry` as the caller's PYTHONPATH is refused: the entry
/// is in a directory upm keeps for itself under `root`.
fn python_path_entry_is_refused(d: &TestDir, root: &Path, entry: &Path) {
    let python = Command::new(upm_bin())
        .arg("--config")
        .arg(cfg(
            d,
            json!({ "workdir_root": root, "plugins": { "Pwd": {
                "module": "m", "methods": { "where": {} }
            } } }),
        ))
        .args(["Pwd", "where", "{}"])
        .env("PYTHONPATH", entry)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&python.stdout);
    assert!(
        out.contains("keeps for itself"),
        "{}: {out}",
        entry.display()
    );
}

/// What a call makes under `workdir_root` that no plugin may reach (see
/// [`upms_own_directories_are_told_by_identity_through_links`]): the root, its homes
/// directory and its digests directory, with one entry of the digests.
struct Kept {
    root: PathBuf,
    homes: PathBuf,
    digests: PathBuf,
    entry: PathBuf,
}

/// Makes upm's kept directories under `<d>/work` with a call, and gives the configs whose
/// plugin `Pwd` has `path` under `key` (`grants_within` is the plugin's, the others its
/// sandbox's).
fn kept_dirs(d: &TestDir) -> (Kept, impl Fn(&str, &Path) -> PathBuf + '_) {
    let root = d.join("work");
    std::fs::create_dir_all(root.join("upm-data")).unwrap();
    let config = move |key: &str, path: &Path| {
        // An executable changed long ago: upm keeps its digest.
        let mut plugin = json!({ "command": ["/bin/echo", "{}"], "allowed_methods": ["where"] });
        match key {
            "grants_within" => plugin[key] = json!([path]),
            _ => plugin["sandbox"] = json!({ key: [path] }),
        }
        cfg(
            d,
            json!({ "workdir_root": d.join("work"), "plugins": { "Pwd": plugin } }),
        )
    };
    let c = config("read_paths", &root.join("upm-data"));
    ok(&run_stdin(&c, &request("Pwd", "where", json!({}))));
    let euid = nix::unistd::geteuid();
    let homes = root.join(format!("upm-homes-{euid}"));
    let digests = root.join(format!("upm-digests-{euid}"));
    assert!(
        homes.join("home").is_dir(),
        "a call made {}",
        homes.display()
    );
    let entry = std::fs::read_dir(&digests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("a call kept a digest in {}", digests.display()));
    let kept = Kept {
        root,
        homes,
        digests,
        entry,
    };
    (kept, config)
}

/// upm's own directories under `workdir_root` reached under another name are told by
/// identity, not by name: a link to one, to a directory or a file in one, or to
/// `workdir_root` itself (then the next name decides, for one not made yet too). A
/// path beside them through the same link is fine.
#[test]
fn upms_own_directories_are_told_by_identity_through_links() {
    let d = setup();
    let (k, config) = kept_dirs(&d);
    let links = d.join("elsewhere");
    std::fs::create_dir(&links).unwrap();
    for (name, target) in [
        ("homes", &k.homes),
        ("home", &k.homes.join("home")),
        ("root", &k.root),
        ("entry", &k.entry),
    ] {
        std::os::unix::fs::symlink(target, links.join(name)).unwrap();
    }
    // A root upm's own stores too (made by the call above).
    let roots_own: Vec<PathBuf> = ["upm-seccomp-0", "upm-audit-0"]
        .iter()
        .map(|name| k.root.join(name))
        .filter(|_| is_root())
        .inspect(|dir| assert!(dir.is_dir(), "a root call made {}", dir.display()))
        .enumerate()
        .map(|(i, dir)| {
            let link = links.join(format!("store{i}"));
            std::os::unix::fs::symlink(dir, &link).unwrap();
            link
        })
        .collect();
    let digests_name = k.digests.file_name().unwrap();
    let own = |p: &str| p.contains("plugin \"Pwd\"") && p.contains("keeps for itself");
    let call =
        |key: &str, path: &Path| run_stdin(&config(key, path), &request("Pwd", "where", json!({})));
    for key in ["read_paths", "write_paths", "grants_within"] {
        let mut paths = vec![
            links.join("homes"),
            links.join("home"),
            links.join("root").join(digests_name),
        ];
        paths.extend(roots_own.iter().cloned());
        if key != "grants_within" {
            // A grant's root is a directory.
            paths.push(links.join("entry"));
            paths.push(links.join("root/upm-homes-4242/home"));
        }
        for p in paths {
            refused_with(&call(key, &p), own, format!("{key} {}", p.display()));
        }
        ok(&call(key, &links.join("root/upm-data")));
    }
    python_path_entry_is_refused(&d, &k.root, &links.join("homes"));
}

/// The same for a bind mount, at another place, of one of them or of `workdir_root`
/// (made in a mount namespace of upm's own, which ends with it).
#[test]
fn upms_own_directories_are_told_by_identity_through_bind_mounts() {
    if !is_root() {
        eprintln!(
            "SKIPPED upms_own_directories_are_told_by_identity_through_bind_mounts: needs root"
        );
        return;
    }
    let d = setup();
    let (k, config) = kept_dirs(&d);
    let mnt = d.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let digests_name = k.digests.file_name().unwrap();
    let own = |p: &str| p.contains("plugin \"Pwd\"") && p.contains("keeps for itself");
    for (source, path, refused) in [
        (&k.homes, mnt.clone(), true),
        (&k.homes, mnt.join("home"), true),
        (&k.digests, mnt.clone(), true),
        (&k.root, mnt.join(digests_name), true),
        (&k.root, mnt.join("upm-homes-4242"), true),
        (&k.root, mnt.join("upm-data"), false),
    ] {
        let mut cmd = Command::new(upm_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(config("read_paths", &path));
        bind_over(&mut cmd, source, mnt.to_str().unwrap());
        let r = run_command(cmd, &request("Pwd", "where", json!({})));
        let what = format!(
            "{} bound at {}: {}",
            source.display(),
            mnt.display(),
            path.display()
        );
        match refused {
            true => refused_with(&r, own, what),
            false => {
                ok(&r);
            }
        }
    }
}
