//! What a grant opens, and nothing beside it.

use super::*;

both!(
    a_read_grant_reads_that_file_and_nothing_beside_it,
    a_read_grant_of_a_directory_reads_beneath_it_and_writes_nothing,
    a_write_grant_writes_inside_that_directory_only,
    a_write_grant_of_a_file_writes_that_file_only,
);

fn a_read_grant_reads_that_file_and_nothing_beside_it(who: Who) {
    let Some(fx) = Fx::new(who) else { return };
    fx.guard();
    let a = fx.join("roots/proj/a.txt");
    let b = fx.join("roots/proj/b.txt");
    let ops = |read: &Path| {
        json!({ "read": read, "ops": [
            ["read", a], ["read", b], ["list", fx.join("roots/proj")], ["write", a],
            ["read", fx.join("outside/secret.txt")]
        ]})
    };
    let run = fx.call(ops(&a));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(op(&run, 0)["value"], "alpha", "{}", ctx(&run));
    assert_eq!(errno(op(&run, 1)), EACCES, "the file beside it");
    assert_eq!(errno(op(&run, 2)), EACCES, "its directory's listing");
    // Read-only (the file is 0666: the sandbox refuses it, not the mode).
    assert!(
        [EACCES, EROFS].contains(&errno(op(&run, 3))),
        "writing the granted file: {}",
        op(&run, 3)
    );
    assert_eq!(errno(op(&run, 4)), EACCES, "outside the roots");
    // The control: the same call granting b reads b (so b's denial above was the grant's).
    let run = fx.call(ops(&b));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(errno(op(&run, 0)), EACCES, "a, now beside the grant");
    assert_eq!(op(&run, 1)["value"], "beta", "{}", ctx(&run));
    // And without any grant, neither.
    let run = fx.call(json!({ "ops": [["read", a]] }));
    assert_eq!(errno(op(&run, 0)), EACCES, "{}", ctx(&run));
}

fn a_read_grant_of_a_directory_reads_beneath_it_and_writes_nothing(who: Who) {
    let Some(fx) = Fx::new(who) else { return };
    let proj = fx.join("roots/proj");
    // Through the $ref'd argument /kwargs/more.
    let run = fx.call(json!({ "kwargs": { "more": proj }, "ops": [
        ["list", proj], ["read", proj.join("b.txt")], ["write", proj.join("new.txt")],
        ["mkdir", proj.join("d")], ["list", fx.join("roots")]
    ]}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_ok(op(&run, 0), "listing the granted directory");
    assert_eq!(op(&run, 1)["value"], "beta");
    for (i, what) in [
        (2, "creating a file in a read grant"),
        (3, "mkdir in a read grant"),
    ] {
        assert!(
            [EACCES, EROFS].contains(&errno(op(&run, i))),
            "{what}: {}",
            op(&run, i)
        );
    }
    assert_eq!(errno(op(&run, 4)), EACCES, "the root above it");
    assert!(!proj.join("new.txt").exists() && !proj.join("d").exists());
}

fn a_write_grant_writes_inside_that_directory_only(who: Who) {
    let Some(fx) = Fx::new(who) else { return };
    let out = fx.join("roots/proj/out");
    let proj = fx.join("roots/proj");
    let run = fx.call(json!({ "write": out, "ops": [
        ["write", out.join("result.txt")],
        ["mkdir", out.join("sub")],
        ["write", out.join("sub/deeper.txt")],
        ["write", proj.join("beside.txt")],
        ["write", fx.join("outside/x.txt")],
        ["read", proj.join("a.txt")],
        // Landlock does not decide chmod: the read-only mount beside the grant does.
        ["chmod", proj.join("mine.txt")],
        ["chmod", out.join("result.txt")]
    ]}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_ok(op(&run, 0), "writing inside the granted directory");
    assert_ok(op(&run, 1), "mkdir inside it");
    assert_ok(op(&run, 2), "writing deeper inside it");
    assert!(
        [EACCES, EROFS].contains(&errno(op(&run, 3))),
        "writing beside it: {}",
        op(&run, 3)
    );
    assert!(
        [EACCES, EROFS].contains(&errno(op(&run, 4))),
        "writing outside the roots: {}",
        op(&run, 4)
    );
    assert_eq!(errno(op(&run, 5)), EACCES, "reading beside it");
    assert_eq!(
        errno(op(&run, 6)),
        EROFS,
        "chmod of the plugin's own file beside the grant: the mount there is read-only"
    );
    assert_ok(op(&run, 7), "chmod inside the writable grant");
    // It is on the host, where the caller asked for it.
    assert_eq!(
        std::fs::read_to_string(out.join("result.txt")).unwrap(),
        "written by the plugin"
    );
    assert!(out.join("sub/deeper.txt").exists());
    assert!(!proj.join("beside.txt").exists() && !fx.join("outside/x.txt").exists());
    // The same write without the grant: refused (so the write above was the grant's).
    let run = fx.call(json!({ "ops": [["write", out.join("again.txt")]] }));
    assert!(
        [EACCES, EROFS].contains(&errno(op(&run, 0))),
        "{}",
        ctx(&run)
    );
}

fn a_write_grant_of_a_file_writes_that_file_only(who: Who) {
    let Some(fx) = Fx::new(who) else { return };
    let b = fx.join("roots/proj/b.txt");
    let run = fx.call(json!({ "write": b, "ops": [
        ["write", b], ["read", b], ["write", fx.join("roots/proj/a.txt")],
        ["write", fx.join("roots/proj/new.txt")]
    ]}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_ok(op(&run, 0), "writing the granted file");
    assert_eq!(op(&run, 1)["value"], "written by the plugin");
    assert!(
        [EACCES, EROFS].contains(&errno(op(&run, 2))),
        "{}",
        op(&run, 2)
    );
    assert!(
        [EACCES, EROFS].contains(&errno(op(&run, 3))),
        "{}",
        op(&run, 3)
    );
    assert_eq!(
        std::fs::read_to_string(&b).unwrap(),
        "written by the plugin"
    );
    let report = &run.json["data"]["sandbox"]["grants"][0];
    assert_eq!(report["kind"], "file", "{report}");
}
