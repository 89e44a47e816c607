//! Per-call grants (`"x-upm-grant"`, `"grants_within"`) through the real binary.
//!
//! A probe plugin (tests/fixtures/grants/probe.py) does what its args ask and reports
//! what the kernel answered; its schema (probe.json) marks `/read` as a read grant,
//! `/write` as a write grant and `/kwargs/more` (through a `$ref`) as a read grant.
//! Each call's files live under a fresh directory:
//!
//! ```text
//! roots/              grants_within (0755)
//!   proj/             0777: a.txt ("alpha"), b.txt ("beta") 0666, out/ (0777), mine.txt (the plugin's uid's)
//!   race/             the race test's
//! outside/            0777: secret.txt; never granted
//! sentinel/           write_paths: the plugin leaves a marker there when it runs
//! ```
//!
//! The file-access checks run twice, with upm as root (the plugin becomes 65534) and
//! as uid 4242 (upm then uses a user namespace), like tests/sandbox; the rest as root.

#[path = "../common/mod.rs"]
mod common;

use common::{both, errno, is_root, request, run_command, Run, TestConfig, TestDir, Who, USER};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROBE: &str = include_str!("../fixtures/grants/probe.py");
const SCHEMA: &str = include_str!("../fixtures/grants/probe.json");

const EACCES: i64 = 13;
const EROFS: i64 = 30;

struct Fx {
    dir: TestDir,
    config: PathBuf,
    who: Who,
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    chmod(p, mode);
}

/// The probe plugin "G" (method "probe") with `roots/` as its grant root.
fn base_config(dir: &Path) -> TestConfig {
    TestConfig::new()
        .set(
            "sandbox",
            json!({ "env": { "set": { "PATH": "/usr/bin:/bin" } } }),
        )
        .plugin(
            "G",
            json!({
                "command": ["plugins/probe.py"],
                "methods": { "probe": { "schema": "schemas/probe.json" } },
                "grants_within": ["roots"],
                "sandbox": { "write_paths": [dir.join("sentinel")] }
            }),
        )
}

impl Fx {
    /// `None` (and a loud SKIPPED) where this cannot run: it needs root.
    fn new(who: Who) -> Option<Fx> {
        Fx::with(who, |c, _| c)
    }

    fn with(who: Who, tweak: impl FnOnce(TestConfig, &Path) -> TestConfig) -> Option<Fx> {
        if !is_root() {
            eprintln!(
                "SKIPPED: the grant tests start upm as root and as uid 4242; run them as root"
            );
            return None;
        }
        let dir = TestDir::new();
        dir.write("plugins/probe.py", PROBE, true);
        dir.write("schemas/probe.json", SCHEMA, false);
        let proj = dir.join("roots/proj");
        // World-writable, like the directories: every denial below is the sandbox's,
        // never the file mode's. (`TestDir::write` makes a file's parents 0755, so the
        // directories' modes are set after the files are written.)
        chmod(&dir.write("roots/proj/a.txt", "alpha", false), 0o666);
        chmod(&dir.write("roots/proj/b.txt", "beta", false), 0o666);
        dir.write("roots/proj/mine.txt", "the plugin's own", false);
        std::os::unix::fs::chown(proj.join("mine.txt"), Some(who.plugin_ids().0), None).unwrap();
        chmod(&dir.write("outside/secret.txt", "secret", false), 0o666);
        mkdir(&dir.join("roots"), 0o755);
        mkdir(&proj.join("out"), 0o777);
        chmod(&proj, 0o777);
        mkdir(&dir.join("outside"), 0o777);
        mkdir(&dir.join("sentinel"), 0o777);
        let cfg = tweak(base_config(&dir.path), &dir.path);
        let config = cfg.write(&dir);
        if who == Who::User {
            // upm writes its audit log beside the config.
            std::os::unix::fs::chown(&dir.path, Some(USER.0), Some(USER.1)).unwrap();
        }
        Some(Fx { dir, config, who })
    }

    fn join(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn upm(&self) -> Command {
        let mut cmd = Command::new(common::upm_bin());
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .args(["run", "--config", self.config.to_str().unwrap()]);
        if self.who == Who::User {
            cmd.uid(USER.0).gid(USER.1);
        }
        cmd
    }

    /// One call of G.probe with `args`.
    fn call(&self, args: Value) -> Run {
        run_command(self.upm(), &request("G", "probe", args))
    }

    /// Every audit entry of this run's call.
    fn audit_of(&self, run: &Run) -> Vec<Value> {
        let id = &run.json["request_id"];
        self.dir
            .audit_lines()
            .into_iter()
            .filter(|e| &e["request_id"] == id)
            .collect()
    }

    /// A control call that must report every layer enforced and the expected uid, so
    /// that no denial below can come from a sandbox that was not there.
    fn guard(&self) {
        let run = self.call(json!({ "ops": [] }));
        assert_eq!(run.code, 0, "control call: {}", ctx(&run));
        let layers = run.json["data"]["sandbox"]["layers"].as_object().unwrap();
        for (name, layer) in layers {
            assert_eq!(layer["state"], "enforced", "layer {name}: {}", ctx(&run));
        }
        assert_eq!(
            run.result()["uid"],
            self.who.plugin_ids().0,
            "{}",
            ctx(&run)
        );
    }
}

fn ctx(run: &Run) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        run.code, run.stdout, run.stderr
    )
}

/// The probe's answer to its `i`th op.
fn op(run: &Run, i: usize) -> &Value {
    &run.result()["results"][i]
}

fn assert_ok(v: &Value, what: &str) {
    assert_eq!(v["ok"], true, "{what} should work: {v}");
}

mod config;
mod files;
mod race;
mod refusals;
mod report;
mod upm;
