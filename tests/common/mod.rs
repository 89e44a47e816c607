//! Shared support for the integration tests: they run the real `upm` binary.
#![allow(dead_code)]

mod config;
mod who;

// Not every test binary uses every helper (hence also `dead_code` above).
#[allow(unused_imports)]
pub use config::{command_plugin, texttools_plugin, TestConfig};
#[allow(unused_imports)]
pub(crate) use who::{both, errno, Who, NOBODY, USER};

use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn upm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_upm"))
}

pub fn texttools_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_upm-texttools"))
}

/// The repository root (where the example config, schemas and policies live).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `/usr/bin/python3 -c script args...`, which must succeed; its stdout.
pub fn python3(script: &str, args: &[&str]) -> String {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A scratch directory that an unprivileged plugin (uid 65534) can read:
/// under /tmp, mode 0755, removed on drop.
pub struct TestDir {
    pub path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        let tmp = tempfile::Builder::new()
            .prefix("upm-test-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        TestDir {
            path: tmp.path().to_path_buf(),
            _tmp: tmp,
        }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// Writes a file (parents created 0755), mode 0644 or 0755 when `exec`.
    pub fn write(&self, rel: &str, content: &str, exec: bool) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
            let mut d = parent.to_path_buf();
            while d.starts_with(&self.path) {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
                if !d.pop() {
                    break;
                }
            }
        }
        std::fs::write(&p, content).unwrap();
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Writes `upm_config.json` with the given JSON and returns its path.
    /// Copies the repository's `policies/` beside it unless the config names others.
    pub fn config(&self, config: &Value) -> PathBuf {
        let policies = self.path.join("policies");
        if !policies.exists() {
            std::fs::create_dir_all(&policies).unwrap();
            std::fs::set_permissions(&policies, std::fs::Permissions::from_mode(0o755)).unwrap();
            for entry in std::fs::read_dir(repo().join("policies")).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), policies.join(entry.file_name())).unwrap();
            }
        }
        self.write(
            "upm_config.json",
            &serde_json::to_string_pretty(config).unwrap(),
            false,
        )
    }

    pub fn audit_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path.join("entrypoint.log")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
}

/// The outcome of one upm invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(out: Output) -> Run {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        Run {
            code: out.status.code().unwrap_or(-1),
            json,
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn code_word(&self) -> &str {
        self.json["data"]["code"].as_str().unwrap_or("")
    }

    pub fn result(&self) -> &Value {
        &self.json["data"]["result"]
    }
}

/// `upm run --config CONFIG` with `input` on stdin.
pub fn run_stdin(config: &Path, input: &[u8]) -> Run {
    run_with(&["run", "--config", config.to_str().unwrap()], input, &[])
}

/// `upm --config CONFIG <plugin> <method> <args>` (the UPM argv form).
pub fn run_argv(config: &Path, args: &[&str]) -> Run {
    let mut v = vec!["--config", config.to_str().unwrap()];
    v.extend_from_slice(args);
    run_with(&v, b"", &[])
}

/// Runs upm with the given argv, stdin and extra environment.
pub fn run_with(argv: &[&str], input: &[u8], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(upm_bin());
    cmd.args(argv)
        .env_remove("UPM_CONFIG_PATH")
        .env_remove("UPM_LOG_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn upm");
    {
        let mut stdin = child.stdin.take().unwrap();
        // upm may refuse before reading everything: a broken pipe is fine.
        let _ = stdin.write_all(input);
    }
    Run::from_output(child.wait_with_output().expect("wait upm"))
}

/// `upm keygen --secret S --public P`: a fresh key pair, or the test fails.
pub fn keygen(secret: &Path, public: &Path) {
    let argv = [
        "keygen",
        "--secret",
        secret.to_str().unwrap(),
        "--public",
        public.to_str().unwrap(),
    ];
    let r = run_with(&argv, b"", &[]);
    assert_eq!(r.code, 0, "keygen: {}", r.stderr);
}

/// A request document.
pub fn request(plugin: &str, method: &str, args: Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"plugin": plugin, "method": method, "args": args}))
        .unwrap()
}

/// Like [`run_with`], from the working directory `cwd` (for `./upm_config.json`
/// and relative `--config` paths).
pub fn run_in(cwd: &Path, argv: &[&str], input: &[u8], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(upm_bin());
    cmd.args(argv)
        .current_dir(cwd)
        .env_remove("UPM_CONFIG_PATH")
        .env_remove("UPM_LOG_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn upm");
    {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
    }
    Run::from_output(child.wait_with_output().expect("wait upm"))
}

/// Runs a `Command` the caller prepared (uid, environment, wrapper...) with `input`
/// on stdin; for upm invocations `run_with` cannot express.
pub fn run_command(mut cmd: Command, input: &[u8]) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn upm");
    {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
    }
    Run::from_output(child.wait_with_output().expect("wait upm"))
}

/// Makes `cmd`'s process (alone) see `file` in place of `target`: a bind mount in a mount
/// namespace of its own, made between fork and exec. Needs root. How tests fake a
/// kernel setting such as `/proc/sys/fs/suid_dumpable` for upm without touching the host.
pub fn bind_over(cmd: &mut Command, file: &Path, target: &str) {
    use std::ffi::CString;
    use std::os::unix::process::CommandExt;
    let src = CString::new(file.to_str().unwrap()).unwrap();
    let dst = CString::new(target).unwrap();
    let root = CString::new("/").unwrap();
    // SAFETY: unshare and mount are async-signal-safe; the strings were made before the
    // fork and are only read.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let null = std::ptr::null();
            let private = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(null, root.as_ptr(), null, private, std::ptr::null()) != 0 {
                return fail();
            }
            let bind = libc::MS_BIND;
            if libc::mount(src.as_ptr(), dst.as_ptr(), null, bind, std::ptr::null()) != 0 {
                return fail();
            }
            Ok(())
        });
    }
}

/// Waits up to `limit` for `child` to end; `None` if it is still running then.
pub fn wait_at_most(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `upm run [extra] --config C`, stdin and stdout piped, not waited for: for tests that
/// signal upm or watch it mid-call.
pub fn spawn_run(config: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(upm_bin())
        .arg("run")
        .args(extra)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn upm")
}

/// [`spawn_run`] with `request` written and stdin closed.
pub fn start_call(config: &Path, request: &[u8]) -> std::process::Child {
    let mut child = spawn_run(config, &[]);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(request).expect("write the request");
    child
}

/// What calls left under a `workdir_root`: everything but what upm keeps there by
/// design, the calls' shared mount point (`upm-homes-<euid>/home`), which must itself
/// be empty, the executables' digests (`upm-digests-<euid>`, no plugin's files), a root
/// upm's compiled programs (`upm-seccomp-0`) and the audit's answer (`upm-audit-0`).
pub fn left_under(dir: &Path) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        // upm's euid, which need not be this process's (the sandbox suites' `as_user`).
        let name = e.file_name().to_string_lossy().into_owned();
        let digests = name
            .strip_prefix("upm-digests-")
            .is_some_and(|uid| !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()));
        // What upm keeps between processes: executables' digests, a root upm's programs
        // and its audit's answer.
        if digests || name == "upm-seccomp-0" || name == "upm-audit-0" {
            // Entries only: a temporary file left would be a half-kept entry.
            let temporary = std::fs::read_dir(e.path())
                .unwrap()
                .flatten()
                .any(|f| f.file_name().to_string_lossy().starts_with('.'));
            if temporary {
                left.push(e.path());
            }
            continue;
        }
        let shared = e.file_name().to_string_lossy().starts_with("upm-homes-");
        let only_home = || {
            let inside: Vec<_> = std::fs::read_dir(e.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            inside == ["home"]
                && std::fs::read_dir(e.path().join("home")).is_ok_and(|mut r| r.next().is_none())
        };
        if !(shared && only_home()) {
            left.push(e.path());
        }
    }
    left
}
