//! Output caps: floods of stdout and stderr stop the plugin, and upm's memory stays bounded.

use super::*;

both!(
    stdout_flood_is_capped,
    stderr_flood_is_capped,
    both_streams_flooding_keep_upm_within_the_cap_plus_10_mb,
    stopped_plugin_reports_its_own_usage,
);

/// Calls `spew`'s `method` through `/usr/bin/time`; returns the run and the peak RSS (kB)
/// of upm and everything it reaped.
fn spew_with_peak_rss(fx: &Fx, method: &str) -> (Run, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "this test measures upm's memory with /usr/bin/time"
    );
    let rss_file = fx.dir.join(&format!("rss-{method}"));
    let mut cmd = fx.command(time);
    cmd.args(["-f", "%M", "-o", rss_file.to_str().unwrap()])
        .arg(common::upm_bin());
    fx.upm_args(&mut cmd);
    let run = {
        let _shared = NPROC.read().unwrap_or_else(|e| e.into_inner());
        run_command(cmd, &request("spew", method, json!({})))
    };
    let peak_kb: u64 = std::fs::read_to_string(&rss_file)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    (run, peak_kb)
}

/// Runs a flood through `/usr/bin/time` to learn the peak RSS of upm and its tree.
fn flood(who: Who, method: &str) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "spew");
    let started = Instant::now();
    let (run, peak_kb) = spew_with_peak_rss(&fx, method);
    let took = started.elapsed();
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.code_word(), "limit_exceeded", "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "output", "{}", ctx(&run));
    let (flooded, quiet) = if method == "stdout" {
        ("stdout", "stderr")
    } else {
        ("stderr", "stdout")
    };
    let s = &run.json["data"][flooded];
    assert_eq!(s["truncated"], true, "{}", ctx(&run));
    assert_eq!(
        s["text"].as_str().unwrap().len(),
        1 << 20,
        "kept exactly the cap"
    );
    assert!(s["bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(run.json["data"][quiet]["truncated"], false);
    assert!(took < Duration::from_secs(4), "stopped only after {took:?}");
    if std::env::var_os("UPM_SANDBOX_TEST_VERBOSE").is_some() {
        eprintln!("{who:?} {method} flood: upm tree peak RSS {peak_kb} kB, took {took:?}");
    }
    // A 1 MiB cap, kept once in the capture and once in the JSON: far below 64 MiB.
    assert!(peak_kb < 64 * 1024, "upm peaked at {peak_kb} kB");
}

fn stdout_flood_is_capped(who: Who) {
    flood(who, "stdout")
}

fn stderr_flood_is_capped(who: Who) {
    flood(who, "stderr")
}

/// Issue 7's memory bound: a plugin flooding stdout and stderr at once under a 32 MiB cap;
/// upm (with everything it reaped: the init and the `yes` processes, a few MB each) peaks
/// at no more than the cap plus 10 MB, and keeps exactly the cap.
fn both_streams_flooding_keep_upm_within_the_cap_plus_10_mb(who: Who) {
    const CAP: u64 = 32 << 20;
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["output_bytes"] = json!(CAP);
    }) else {
        return;
    };
    let (run, peak_kb) = spew_with_peak_rss(&fx, "both");
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "output", "{}", ctx(&run));
    let kept: u64 = ["stdout", "stderr"]
        .iter()
        .map(|s| run.json["data"][s]["text"].as_str().unwrap().len() as u64)
        .sum();
    assert_eq!(kept, CAP, "kept exactly the cap, across both streams");
    assert!(
        run.json["data"]["stderr"]["bytes"].as_u64().unwrap() > 0,
        "stderr flooded too: {}",
        ctx(&run)
    );
    if std::env::var_os("UPM_SANDBOX_TEST_VERBOSE").is_some() {
        eprintln!("{who:?} both-streams flood: upm tree peak RSS {peak_kb} kB");
    }
    assert!(
        peak_kb * 1024 <= CAP + 10_000_000,
        "upm peaked at {peak_kb} kB under a {} MiB cap",
        CAP >> 20
    );
}

/// A plugin stopped past the output cap is killed before its tree, so its init reaps
/// it: the usage is the plugin's own. (Read off the init instead, which shares upm's
/// memory, it would show upm holding the 192 MiB it kept, and almost no CPU.)
fn stopped_plugin_reports_its_own_usage(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        cfg["sandbox"]["limits"]["output_bytes"] = json!(192u64 << 20);
        cfg["sandbox"]["limits"]["memory_bytes"] = json!(1u64 << 30);
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "spew");
    let run = fx.call("spew", "stdout", json!({}));
    assert_eq!(run.code, 13, "{}", ctx(&run));
    assert_eq!(run.json["data"]["limit"], "output", "{}", ctx(&run));
    assert_eq!(run.json["data"]["signal"], libc::SIGKILL, "{}", ctx(&run));
    let usage = &run.json["data"]["usage"];
    let rss = usage["max_rss_kb"].as_i64().unwrap_or(-1);
    assert!(
        (1..64 * 1024).contains(&rss),
        "`yes` peaked at {rss} kB? usage {usage}"
    );
    let cpu = usage["cpu_user_ms"].as_f64().unwrap_or(0.0)
        + usage["cpu_system_ms"].as_f64().unwrap_or(0.0);
    assert!(
        cpu >= 10.0,
        "writing 192 MiB took {cpu} ms of CPU? usage {usage}"
    );
}
