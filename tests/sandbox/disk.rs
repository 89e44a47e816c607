//! The call's total disk bound: its home is a size-limited tmpfs in the call's own
//! mount namespace, so what a plugin writes never reaches the host's disk, and all of
//! it together (not only each file) is bounded by `limits.disk_bytes`.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};

both!(a_plugin_cannot_fill_the_hosts_disk,);

/// Bytes allocated on disk for everything under `dir` (what `du` counts).
fn disk_used(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// The hostile case: many files, each under the file-size limit, adding up to far more
/// than the bound. The plugin gets ENOSPC at the bound, the host's disk under
/// `workdir_root` never holds its files (measured while it holds them), and the result
/// says the bound was reached.
fn a_plugin_cannot_fill_the_hosts_disk(who: Who) {
    const BOUND: u64 = 8 << 20;
    let Some(fx) = Fx::new(who, |cfg, dir| {
        let work = dir.join("work");
        std::fs::create_dir(&work).unwrap();
        if who == Who::User {
            std::os::unix::fs::chown(&work, Some(USER.0), Some(USER.1)).unwrap();
        }
        cfg["workdir_root"] = json!(work);
        cfg["sandbox"]["limits"]["disk_bytes"] = json!(BOUND);
        cfg["sandbox"]["limits"]["file_size_bytes"] = json!(2u64 << 20);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let work = fx.dir.join("work");
    let done = AtomicBool::new(false);
    // 48 files of 1 MiB (under the 2 MiB file-size limit): 48 MiB asked for, 8 allowed.
    let args = json!({"count": 48, "size": 1u64 << 20, "hold": 0.5});
    let (run, peak) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(disk_used(&work));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        let run = fx.call("probe", "fill_disk", args);
        done.store(true, Ordering::Relaxed);
        (run, watcher.join().unwrap())
    });
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(r["errno"], ENOSPC, "{r}");
    let written = r["written"].as_u64().unwrap();
    assert!(
        written <= BOUND,
        "{written} bytes written under a bound of {BOUND}"
    );
    assert!(r["files"].as_u64().unwrap() < 9, "{r}");
    assert!(
        peak < 1 << 20,
        "the plugin's files reached the host's disk: {peak} bytes under {}",
        work.display()
    );
    let data = &run.json["data"];
    assert_eq!(
        data["usage"]["disk"]["limit_reached"],
        true,
        "{}",
        ctx(&run)
    );
    assert_eq!(data["usage"]["disk"]["used_bytes"], BOUND, "{}", ctx(&run));
    let limits = &data["sandbox"]["layers"]["limits"]["detail"];
    assert_eq!(limits["disk_bytes"], BOUND, "{}", ctx(&run));
    // The plugin coped with ENOSPC: the call succeeded, and no limit stopped it.
    assert!(data.get("limit").is_none(), "{}", ctx(&run));

    // The same plugin failing on ENOSPC: the bound is named as the call's limit.
    let args = json!({"count": 48, "size": 1u64 << 20, "fail": true});
    let run = fx.call("probe", "fill_disk", args);
    assert_eq!(run.code_word(), "plugin_failed", "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "disk_bytes", "{}", ctx(&run));
    let error = run.json["data"]["error"].as_str().unwrap();
    assert!(error.contains("disk_bytes"), "{error}");

    // The same, removing its files before it fails (pip does): the home is empty at
    // the end, so the bound is not the call's limit, but the error names it from the
    // plugin's ENOSPC text.
    let args = json!({"count": 48, "size": 1u64 << 20, "fail": true, "clean": true});
    let run = fx.call("probe", "fill_disk", args);
    assert_eq!(run.code_word(), "plugin_failed", "{}", ctx(&run));
    assert!(run.json["data"].get("limit").is_none(), "{}", ctx(&run));
    assert_eq!(
        run.json["data"]["usage"]["disk"]["limit_reached"],
        false,
        "{}",
        ctx(&run)
    );
    let error = run.json["data"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("disk_bytes ({BOUND}) and may have been full")),
        "{error}"
    );

    // A small write: the bound is not reached, and the call says so.
    let run = fx.call("probe", "fill_disk", json!({"count": 2, "size": 65536}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let disk = &run.json["data"]["usage"]["disk"];
    assert_eq!(disk["limit_reached"], false, "{}", ctx(&run));
    assert_eq!(disk["used_bytes"], 2 * 65536, "{}", ctx(&run));

    // Nothing of any of the calls stayed behind.
    let left = left_under(&work);
    assert!(left.is_empty(), "left under {}: {left:?}", work.display());
}
