//! Paths that cannot be granted are refused before anything runs: exit 10,
//! `invalid_args`, an error naming the argument and the roots, one `refused` entry.

use super::*;

/// Refused before anything ran, with a sentence that names `argument`, the roots and `why`.
fn assert_refused_before_running(fx: &Fx, run: &Run, argument: &str, why: &str) {
    assert_eq!(run.code, 10, "{}", ctx(run));
    assert_eq!(run.code_word(), "invalid_args", "{}", ctx(run));
    let error = run.json["data"]["error"].as_str().unwrap();
    let root = fx.join("roots").display().to_string();
    for needle in [
        argument,
        root.as_str(),
        "grants_within",
        why,
        "nothing was run",
    ] {
        assert!(error.contains(needle), "{needle:?} not in: {error}");
    }
    let details = &run.json["data"]["details"]["grant"];
    assert_eq!(details["argument"], argument, "{details}");
    assert_eq!(details["roots"], json!([root]), "{details}");
    assert!(run.json["data"].get("result").is_none());
    assert!(!fx.join("sentinel/ran").exists(), "the plugin ran");
    // Audited as a refusal: one entry, no `started`.
    let audit = fx.audit_of(run);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["event"], "refused");
    assert_eq!(audit[0]["code"], "invalid_args");
    assert_eq!(audit[0]["error"], error);
}

#[test]
fn paths_outside_the_roots_dotdot_relative_or_missing_are_refused_before_anything_runs() {
    let Some(fx) = Fx::new(Who::Root) else { return };
    let marker = fx.join("sentinel/ran");
    let roots = fx.join("roots").display().to_string();
    let cases = [
        (
            "/read",
            json!(fx.join("outside/secret.txt")),
            "not under any of the roots",
        ),
        (
            "/read",
            json!(format!("{roots}/proj/../../outside/secret.txt")),
            "\"..\"",
        ),
        ("/write", json!(format!("{roots}/proj/out/..")), "\"..\""),
        ("/write", json!("roots/proj/out"), "not an absolute path"),
        ("/read", json!("a.txt"), "not an absolute path"),
        ("/read", json!(""), "not an absolute path"),
        // A name that only starts like the root.
        (
            "/read",
            json!(format!("{roots}-other/a.txt")),
            "not under any of the roots",
        ),
        (
            "/write",
            json!(format!("{roots}/proj/none")),
            "does not exist",
        ),
        (
            "/kwargs/more",
            json!("/etc/passwd"),
            "not under any of the roots",
        ),
        // A file named as a directory: the kernel would answer ENOTDIR.
        (
            "/read",
            json!(format!("{roots}/proj/a.txt/")),
            "ends with \"/\", which names a directory, but it is a file",
        ),
        (
            "/write",
            json!(format!("{roots}/proj/a.txt/.")),
            "ends with \"/\", which names a directory, but it is a file",
        ),
    ];
    for (argument, value, why) in cases {
        let mut args = json!({ "marker": marker, "ops": [] });
        match argument {
            "/kwargs/more" => args["kwargs"] = json!({ "more": value }),
            _ => args[&argument[1..]] = value.clone(),
        }
        let run = fx.call(args);
        assert_refused_before_running(&fx, &run, argument, why);
    }
    // The control: the same call with a granted path runs (and leaves its marker).
    let run = fx.call(json!({ "marker": marker, "read": fx.join("roots/proj/a.txt") }));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert!(marker.exists());
}

#[test]
fn a_symlink_inside_a_root_that_leads_out_of_it_is_refused() {
    let Some(fx) = Fx::new(Who::Root) else { return };
    let proj = fx.join("roots/proj");
    let outside = fx.join("outside");
    std::os::unix::fs::symlink(&outside, proj.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../outside", proj.join("rel")).unwrap();
    std::os::unix::fs::symlink("/proc/self/root/etc", proj.join("magic")).unwrap();
    std::os::unix::fs::symlink("rel/secret.txt", proj.join("chain")).unwrap();
    for (value, argument) in [
        (proj.join("abs"), "/write"),
        (proj.join("rel"), "/write"),
        (proj.join("rel/secret.txt"), "/read"),
        (proj.join("magic"), "/read"),
        (proj.join("chain"), "/read"),
    ] {
        let mut args = json!({ "marker": fx.join("sentinel/ran") });
        args[&argument[1..]] = json!(value);
        let run = fx.call(args);
        assert_refused_before_running(&fx, &run, argument, "leads out of its root");
    }
    // A symlink that stays under the root is followed, and the report says where to.
    std::os::unix::fs::symlink("out", proj.join("current")).unwrap();
    let run = fx.call(json!({ "write": proj.join("current"), "ops": [
        ["write", proj.join("current/via-link.txt")]
    ]}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_ok(
        op(&run, 0),
        "writing through a symlink that stays under the root",
    );
    assert!(proj.join("out/via-link.txt").exists());
    let grant = &run.json["data"]["sandbox"]["grants"][0];
    assert_eq!(grant["path"], json!(proj.join("current")), "{grant}");
    assert_eq!(grant["resolved"], json!(proj.join("out")), "{grant}");
}

#[test]
fn only_files_and_directories_can_be_granted() {
    let Some(fx) = Fx::new(Who::Root) else { return };
    let fifo = fx.join("roots/proj/fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let run = fx.call(json!({ "read": fifo }));
    assert_refused_before_running(&fx, &run, "/read", "neither a regular file nor a directory");
}
