//! The container backend: the plugin runs in a fresh container of a pinned
//! image, started by podman or docker, instead of upm's native sandbox.
//!
//! ```text
//! upm ──spawn (own process group, fixed env)──▶ podman run --rm -i --network=none --read-only
//!      stdin/stdout/stderr: the same capture     --user U:G --cap-drop=ALL ... --entrypoint CMD IMAGE ARGS
//!      loop, cap and clock as the native backend
//! ```
//!
//! Every isolation option is a hard requirement: the engine either applies it
//! or refuses to start the container, and then the call ends with
//! `sandbox_unavailable` and the engine's own message. The argv is built as a
//! list and executed directly, never through a shell. On timeout (or past the
//! output cap) upm kills the engine's client and then removes the container
//! by name, so nothing keeps running after the call. With podman,
//! `--timeout` is a second backstop should upm itself be killed.
//!
//! Whether the container really started is told by podman's `--pidfile`
//! (written by the runtime once the container process exists): without it, a
//! non-zero exit is the engine's failure, not the plugin's. Docker has no such
//! file; there its documented codes 125 (engine) and 126/127 (command) decide.

pub mod image;

use crate::config::{Plugin, PluginKind};
use crate::request::Request;
use crate::sandbox::policy::Policy;
use crate::sandbox::{limits, seccomp};
use crate::spawn::{self, Exit, Io, Outcome, Pipes, Stream};
use serde_json::{json, Value};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where engines and runtimes are looked up: fixed, never the caller's PATH.
const ENGINE_PATH: [&str; 6] = [
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
];
/// The engine client's own settings (rootless podman needs them); the plugin never sees them.
const ENGINE_ENV: [&str; 8] = [
    "HOME",
    "USER",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CONTAINER_HOST",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
];
/// Inside the container the plugin's cwd and $TMPDIR: the only writable place.
const TMP: &str = "/tmp";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("unknown container engine {0:?} (use \"podman\" or \"docker\")")]
    UnknownEngine(String),
    #[error("no container engine ({}) found in {}", .wanted.join(" or "), ENGINE_PATH.join(":"))]
    NoEngine { wanted: Vec<&'static str> },
    #[error("the container runtime {0:?} (UPM_CONTAINER_RUNTIME) is not found in {path}", path = ENGINE_PATH.join(":"))]
    NoRuntime(String),
    #[error("plugin \"{0}\" is not a command plugin with an image: not a container plugin")]
    NotContainer(String),
    #[error("seccomp profile: {0}")]
    Profile(#[from] seccomp::SeccompError),
    #[error("cannot create the call's directory {path}: {source}")]
    Workdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the container engine {path}: {source}")]
    Spawn {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the container engine {engine} could not start the container (exit {status}): {message}"
    )]
    Engine {
        engine: &'static str,
        status: String,
        message: String,
    },
    #[error(
        "the plugin's command could not be started in the container (exit {status}): {message}"
    )]
    Command { status: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Podman,
    Docker,
}

impl EngineKind {
    pub fn parse(name: &str) -> Result<EngineKind, ContainerError> {
        match name {
            "podman" => Ok(EngineKind::Podman),
            "docker" => Ok(EngineKind::Docker),
            other => Err(ContainerError::UnknownEngine(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }
}

/// Problems with a container plugin's config, one sentence each (for `Config::load`
/// and so `upm check`). Only command plugins: the runner of Python class plugins
/// needs a result channel that engines do not pass.
pub fn config_problems(policy: &Policy, kind: &PluginKind, pinned_files: bool) -> Vec<String> {
    let mut out = Vec::new();
    match &policy.image {
        None => out.push("the container backend needs \"sandbox\": {\"image\": ...}".into()),
        Some(i) => {
            if let Err(e) = image::validate(i, policy.allow_tags) {
                out.push(format!("image {i:?} {e}"));
            }
        }
    }
    if let Some(e) = &policy.engine {
        if let Err(e) = EngineKind::parse(e) {
            out.push(e.to_string());
        }
    }
    match kind {
        PluginKind::Command { argv } if !argv[0].starts_with('/') => out.push(format!(
            "the container backend needs an absolute \"command\" path inside the image, not {:?}",
            argv[0]
        )),
        PluginKind::Command { .. } => {}
        PluginKind::PythonClass { .. } => out.push(
            "the container backend runs \"command\" plugins only (a Python class plugin needs upm's runner)"
                .into(),
        ),
    }
    if policy.network {
        out.push("the container backend always runs with --network=none; \"network\": true is not supported".into());
    }
    if !policy.read_paths.is_empty() || !policy.write_paths.is_empty() {
        out.push("the container backend mounts nothing from the host: remove \"read_paths\"/\"write_paths\"".into());
    }
    if policy.user.uid == 0 || policy.user.gid == 0 {
        out.push("the container backend never runs a plugin as root (uid/gid 0)".into());
    }
    if pinned_files {
        out.push(
            "a container plugin is pinned by its image digest, not \"sha256\"/\"manifest_sha256\""
                .into(),
        );
    }
    out
}

/// The engine that will run the call, found on the fixed PATH.
#[derive(Debug, Clone)]
pub struct Engine {
    pub kind: EngineKind,
    pub path: PathBuf,
    /// podman's `--runtime`: `UPM_CONTAINER_RUNTIME`, else runc when installed.
    pub runtime: Option<PathBuf>,
}

impl Engine {
    /// The config's `engine` wins over `UPM_CONTAINER_ENGINE`; with neither, podman then docker.
    pub fn find(configured: Option<&str>) -> Result<Engine, ContainerError> {
        let env = std::env::var("UPM_CONTAINER_ENGINE")
            .ok()
            .filter(|s| !s.is_empty());
        let wanted = match configured.or(env.as_deref()) {
            Some(name) => vec![EngineKind::parse(name)?],
            None => vec![EngineKind::Podman, EngineKind::Docker],
        };
        let (kind, path) = wanted
            .iter()
            .find_map(|k| find_on_path(k.as_str()).map(|p| (*k, p)))
            .ok_or_else(|| ContainerError::NoEngine {
                wanted: wanted.iter().map(|k| k.as_str()).collect(),
            })?;
        let runtime = match kind {
            EngineKind::Docker => None,
            EngineKind::Podman => runtime_for_podman()?,
        };
        Ok(Engine {
            kind,
            path,
            runtime,
        })
    }

    /// Global flags, before the subcommand.
    fn global_args(&self) -> Vec<String> {
        match &self.runtime {
            Some(r) => vec!["--runtime".into(), r.to_string_lossy().into_owned()],
            None => Vec::new(),
        }
    }

    /// The engine's client, with a fixed environment and in its own process group.
    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(args)
            .env_clear()
            .env("PATH", ENGINE_PATH.join(":"))
            .process_group(0);
        for name in ENGINE_ENV {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        cmd
    }
}

/// runc, unless the operator names another runtime: podman's usual default crun
/// refuses hybrid cgroup hosts, and runc works wherever podman does.
fn runtime_for_podman() -> Result<Option<PathBuf>, ContainerError> {
    match std::env::var("UPM_CONTAINER_RUNTIME") {
        Ok(name) if name == "default" => Ok(None),
        Ok(name) if !name.is_empty() => find_on_path(&name)
            .map(Some)
            .ok_or(ContainerError::NoRuntime(name)),
        _ => Ok(find_on_path("runc")),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return None;
    }
    ENGINE_PATH
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Everything one container call needs, decided before the `started` audit entry.
pub struct Prepared {
    pub engine: Engine,
    /// `upm-<request id>-<random>`: how the container is found again to remove it.
    pub name: String,
    /// The engine's full argv after its path.
    pub args: Vec<String>,
    /// The plugin's command inside the image.
    command: Vec<String>,
    pub stdin: Vec<u8>,
    pub timeout: Duration,
    pub output_cap: u64,
    /// Private directory for the pidfile, removed with this value.
    dir: PathBuf,
    summary: Value,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prepared {
    /// What was in force, for `data.sandbox` and both audit entries.
    pub fn summary(&self) -> Value {
        self.summary.clone()
    }

    pub fn command(&self) -> &[String] {
        &self.command
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("container.pid")
    }
}

/// What `run` is built from: pure data, so the argv can be tested.
struct Spec<'a> {
    engine: &'a Engine,
    policy: &'a Policy,
    image: &'a str,
    argv: &'a [String],
    name: &'a str,
    seccomp: &'a Path,
    pidfile: &'a Path,
    env: Vec<String>,
    /// The limits a native call gets whatever the policy says.
    fixed: limits::Fixed,
}

/// Picks the engine, loads the seccomp profile and builds the engine's argv.
pub fn prepare(
    plugin: &Plugin,
    profile: &seccomp::Profile,
    req: &Request,
    request_id: &str,
) -> Result<Prepared, ContainerError> {
    let policy = &plugin.policy;
    let (PluginKind::Command { argv }, Some(image)) = (&plugin.kind, &policy.image) else {
        return Err(ContainerError::NotContainer(plugin.name.clone()));
    };
    let engine = Engine::find(policy.engine.as_deref())?;
    let name = container_name(request_id);
    let dir = std::env::temp_dir().join(&name);
    // create_dir fails on anything already there, so the pidfile's directory is ours.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| ContainerError::Workdir {
            path: dir.clone(),
            source,
        })?;
    let mut env: Vec<String> = policy
        .env
        .allow
        .iter()
        .filter(|n| !policy.env.set.contains_key(*n) && std::env::var_os(n).is_some())
        .map(|n| format!("{n}={}", std::env::var(n).unwrap_or_default()))
        .collect();
    env.extend(policy.env.set.iter().map(|(k, v)| format!("{k}={v}")));
    env.push(format!("TMPDIR={TMP}"));
    let pidfile = dir.join("container.pid");
    // The engine reads the profile itself: hand it a private copy of the bytes upm
    // verified, so a swap of the config's file after the check changes nothing.
    let seccomp_copy = dir.join("seccomp.json");
    std::fs::write(&seccomp_copy, &profile.bytes).map_err(|source| ContainerError::Workdir {
        path: seccomp_copy.clone(),
        source,
    })?;
    let spec = Spec {
        engine: &engine,
        policy,
        image,
        argv,
        name: &name,
        seccomp: &seccomp_copy,
        pidfile: &pidfile,
        env,
        fixed: limits::Fixed::get(),
    };
    let args = run_args(&spec);
    let summary = summary(&spec, profile);
    let stdin = serde_json::to_vec(&json!({
        "method": req.method,
        "args": req.args,
        "request_id": request_id,
    }))
    .unwrap_or_default();
    Ok(Prepared {
        engine,
        name,
        args,
        command: argv.clone(),
        stdin,
        timeout: Duration::from_millis(policy.limits.timeout_ms),
        output_cap: policy.limits.output_bytes,
        dir,
        summary,
    })
}

/// `upm-<request id, made a valid name>-<12 random hex>`.
fn container_name(request_id: &str) -> String {
    let safe: String = request_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let random = uuid::Uuid::now_v7().simple().to_string();
    format!("upm-{safe}-{}", &random[20..])
}

fn tmpfs_option(limits: &crate::sandbox::policy::Limits) -> String {
    format!(
        "{TMP}:rw,noexec,nosuid,nodev,size={}",
        limits.file_size_bytes
    )
}

fn run_args(s: &Spec<'_>) -> Vec<String> {
    let l = &s.policy.limits;
    let u = &s.policy.user;
    let mut a: Vec<String> = s.engine.global_args();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|x| (*x).to_owned()));
    push(&[
        "run",
        "--rm",
        "-i",
        "--pull=never",
        "--log-driver=none",
        "--network=none",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--cpus",
        "1",
        "--workdir",
        TMP,
    ]);
    let pairs: Vec<(&str, String)> = vec![
        ("--user", format!("{}:{}", u.uid, u.gid)),
        (
            "--security-opt",
            format!("seccomp={}", s.seccomp.to_string_lossy()),
        ),
        ("--pids-limit", l.max_processes.to_string()),
        ("--memory", l.memory_bytes.to_string()),
        ("--memory-swap", l.memory_bytes.to_string()),
        ("--tmpfs", tmpfs_option(l)),
        ("--ulimit", format!("nofile={0}:{0}", l.open_files)),
        ("--ulimit", format!("nproc={0}:{0}", l.max_processes)),
        ("--ulimit", "core=0:0".into()),
        ("--ulimit", format!("fsize={0}:{0}", l.file_size_bytes)),
        (
            "--ulimit",
            format!("cpu={}:{}", l.cpu_seconds, l.cpu_seconds.saturating_add(1)),
        ),
        (
            "--ulimit",
            format!("sigpending={0}:{0}", s.fixed.pending_signals),
        ),
        (
            "--ulimit",
            format!("msgqueue={0}:{0}", s.fixed.message_queue_bytes),
        ),
        ("--ulimit", "rtprio=0:0".into()),
        ("--ulimit", "nice=0:0".into()),
        ("--name", s.name.to_owned()),
    ];
    for (k, v) in pairs {
        a.push(k.into());
        a.push(v);
    }
    if s.engine.kind == EngineKind::Podman {
        // No extra writable tmpfs on /run and /var/tmp; the pidfile tells a started
        // container from an engine failure; --timeout kills it even if upm dies.
        a.push("--read-only-tmpfs=false".into());
        a.push("--pidfile".into());
        a.push(s.pidfile.to_string_lossy().into_owned());
        a.push("--timeout".into());
        a.push((l.timeout_ms.div_ceil(1000).saturating_add(2)).to_string());
    }
    for e in &s.env {
        a.push("--env".into());
        a.push(e.clone());
    }
    a.push("--entrypoint".into());
    a.push(s.argv[0].clone());
    a.push(s.image.to_owned());
    a.extend(s.argv[1..].iter().cloned());
    a
}

fn summary(s: &Spec<'_>, profile: &seccomp::Profile) -> Value {
    let l = &s.policy.limits;
    let u = &s.policy.user;
    json!({
        "backend": "container",
        "engine": s.engine.kind.as_str(),
        "engine_path": s.engine.path,
        "runtime": s.engine.runtime,
        "image": s.image,
        "command": s.argv,
        "container_name": s.name,
        "network": "none",
        "user": format!("{}:{}", u.uid, u.gid),
        "read_only_rootfs": true,
        "writable": {"path": TMP, "tmpfs": tmpfs_option(l)},
        "capabilities": "none",
        "no_new_privileges": true,
        "seccomp": {"profile": profile.name, "digest": profile.digest, "path": s.seccomp},
        "limits": {
            "timeout_ms": l.timeout_ms,
            "cpu_seconds": l.cpu_seconds,
            "memory_bytes": l.memory_bytes,
            "max_processes": l.max_processes,
            "file_size_bytes": l.file_size_bytes,
            "open_files": l.open_files,
            "output_bytes": l.output_bytes,
            "core_dumps": false,
            "pending_signals": s.fixed.pending_signals,
            "message_queue_bytes": s.fixed.message_queue_bytes,
            "realtime_priority": 0,
            "raise_priority": false,
        },
    })
}

/// Runs the container and captures it like a native plugin. `Err` means the
/// container never started (the engine refused, or the command is not in the image).
pub fn run(p: &Prepared) -> Result<Outcome, ContainerError> {
    let started = Instant::now();
    let mut child = p
        .engine
        .command(&p.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ContainerError::Spawn {
            path: p.engine.path.clone(),
            source,
        })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        kill_client(&mut child);
        return Err(ContainerError::Spawn {
            path: p.engine.path.clone(),
            source: std::io::Error::other("the engine's pipes are missing"),
        });
    };
    let pipes = Pipes {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
    };
    let io = Io {
        stdin: &p.stdin,
        timeout: p.timeout,
        output_cap: p.output_cap,
    };
    let pgid = child.id();
    let collected = spawn::capture(io, started, pipes, &mut || kill_group(pgid));
    let mut stopped_by = collected.stopped_by;
    // The client may close its pipes and linger: it gets what is left of the clock.
    let status = match wait_until(&mut child, started + p.timeout) {
        Some(s) => s,
        None => {
            stopped_by = stopped_by.or(Some(spawn::Stop::Timeout));
            kill_client(&mut child)
        }
    };
    if stopped_by.is_some() {
        remove(p);
    }
    let outcome = Outcome {
        exit: None,
        start_failure: None,
        stopped_by,
        stdout: collected.stdout,
        stderr: collected.stderr,
        result: Stream {
            closed: true,
            ..Stream::default()
        },
        wall: started.elapsed(),
        usage: None,
    };
    if stopped_by.is_some() {
        return Ok(outcome);
    }
    let container_started = match p.engine.kind {
        EngineKind::Podman => p.pidfile().exists(),
        EngineKind::Docker => !matches!(status.code(), Some(125..=127)),
    };
    classify(p.engine.kind, status, container_started, outcome)
}

/// The engine's exit status as the plugin's, or why the container never ran.
fn classify(
    kind: EngineKind,
    status: ExitStatus,
    container_started: bool,
    mut outcome: Outcome,
) -> Result<Outcome, ContainerError> {
    let shown = status.code().map_or_else(
        || format!("signal {}", status.signal().unwrap_or(0)),
        |c| c.to_string(),
    );
    if !container_started && !status.success() {
        let message = String::from_utf8_lossy(&outcome.stderr.data)
            .trim()
            .to_owned();
        return Err(match status.code() {
            Some(126 | 127) => ContainerError::Command {
                status: shown,
                message,
            },
            _ => ContainerError::Engine {
                engine: kind.as_str(),
                status: shown,
                message,
            },
        });
    }
    // Engines report a container killed by signal n as 128+n.
    outcome.exit = Some(match status.code() {
        Some(c) if (129..=128 + 64).contains(&c) => Exit::Signal(c - 128),
        Some(c) => Exit::Code(c),
        None => Exit::Signal(status.signal().unwrap_or(0)),
    });
    Ok(outcome)
}

/// The usage a container call can honestly report: the engine does not hand back
/// the container's CPU time or memory, so only the wall clock.
pub fn usage(o: &Outcome) -> Value {
    json!({
        "wall_ms": crate::response::round_ms(o.wall.as_secs_f64() * 1000.0),
        "cpu": "not measured by the container backend",
    })
}

fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => return None,
        }
    }
}

fn kill_group(pgid: u32) {
    if let Ok(pid) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn kill_client(child: &mut Child) -> ExitStatus {
    kill_group(child.id());
    let _ = child.kill();
    child
        .wait()
        .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL))
}

/// Kills and removes the container by name: killing the client alone leaves it running.
fn remove(p: &Prepared) {
    let mut args = p.engine.global_args();
    args.extend(["rm".into(), "-f".into()]);
    if p.engine.kind == EngineKind::Podman {
        args.extend(["-t".into(), "0".into()]);
    }
    args.push(p.name.clone());
    let r = p
        .engine
        .command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match r {
        Ok(o) if o.status.success() => {}
        Ok(o) => tracing::warn!(
            container = %p.name,
            stderr = %String::from_utf8_lossy(&o.stderr).trim(),
            "could not remove the container"
        ),
        Err(e) => {
            tracing::warn!(container = %p.name, error = %e, "could not run the engine to remove the container")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_args(kind: EngineKind, argv: &[&str]) -> Vec<String> {
        let engine = Engine {
            kind,
            path: PathBuf::from("/usr/bin/podman"),
            runtime: (kind == EngineKind::Podman).then(|| PathBuf::from("/usr/sbin/runc")),
        };
        let policy = Policy::default();
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        run_args(&Spec {
            engine: &engine,
            policy: &policy,
            image: "localhost/x@sha256:00",
            argv: &argv,
            name: "upm-r-1",
            seccomp: Path::new("/cfg/policies/default.json"),
            pidfile: Path::new("/tmp/upm-r-1/container.pid"),
            env: vec!["PATH=/usr/bin".into()],
            fixed: limits::Fixed {
                pending_signals: 1024,
                message_queue_bytes: 819_200,
            },
        })
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn argv_has_every_isolation_flag() {
        let a = spec_args(EngineKind::Podman, &["/bin/plugin", "--flag", "x y"]);
        assert_eq!(&a[..3], ["--runtime", "/usr/sbin/runc", "run"]);
        for f in [
            "--rm",
            "-i",
            "--pull=never",
            "--network=none",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            "--read-only-tmpfs=false",
        ] {
            assert!(a.iter().any(|x| x == f), "missing {f}: {a:?}");
        }
        assert_eq!(value_after(&a, "--user"), ["65534:65534"]);
        assert_eq!(
            value_after(&a, "--security-opt"),
            ["seccomp=/cfg/policies/default.json"]
        );
        assert_eq!(value_after(&a, "--pids-limit"), ["64"]);
        assert_eq!(value_after(&a, "--memory"), ["1073741824"]);
        assert_eq!(
            value_after(&a, "--ulimit"),
            [
                "nofile=256:256",
                "nproc=64:64",
                "core=0:0",
                "fsize=16777216:16777216",
                "cpu=10:11",
                "sigpending=1024:1024",
                "msgqueue=819200:819200",
                "rtprio=0:0",
                "nice=0:0",
            ]
        );
        assert_eq!(
            value_after(&a, "--tmpfs"),
            ["/tmp:rw,noexec,nosuid,nodev,size=16777216"]
        );
        assert_eq!(value_after(&a, "--timeout"), ["12"]);
        // The command comes last, after the image, as separate arguments.
        let n = a.len();
        assert_eq!(
            &a[n - 5..],
            [
                "--entrypoint",
                "/bin/plugin",
                "localhost/x@sha256:00",
                "--flag",
                "x y"
            ]
        );
    }

    #[test]
    fn docker_gets_no_podman_only_flags() {
        let a = spec_args(EngineKind::Docker, &["/bin/plugin"]);
        assert_eq!(a[0], "run");
        for f in [
            "--pidfile",
            "--timeout",
            "--read-only-tmpfs=false",
            "--runtime",
        ] {
            assert!(!a.iter().any(|x| x == f), "{f} in {a:?}");
        }
    }

    #[test]
    fn container_names_are_valid_and_unique() {
        let a = container_name("req:1/../x y");
        let b = container_name("req:1/../x y");
        assert_ne!(a, b);
        assert!(a.starts_with("upm-req_1_.._x_y-"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    }

    fn outcome(stderr: &str) -> Outcome {
        Outcome {
            exit: None,
            start_failure: None,
            stopped_by: None,
            stdout: Stream::default(),
            stderr: Stream {
                data: stderr.as_bytes().to_vec(),
                total: stderr.len() as u64,
                closed: true,
            },
            result: Stream::default(),
            wall: Duration::ZERO,
            usage: None,
        }
    }

    fn code(c: i32) -> ExitStatus {
        ExitStatus::from_raw(c << 8)
    }

    #[test]
    fn engine_failure_before_start_is_not_a_plugin_exit() {
        let e = classify(
            EngineKind::Podman,
            code(125),
            false,
            outcome("Error: image not known"),
        )
        .unwrap_err();
        assert!(matches!(e, ContainerError::Engine { .. }));
        assert!(e.to_string().contains("image not known"), "{e}");
        let e = classify(EngineKind::Podman, code(127), false, outcome("not found")).unwrap_err();
        assert!(matches!(e, ContainerError::Command { .. }));
    }

    #[test]
    fn started_container_exits_are_the_plugins() {
        let o = classify(EngineKind::Podman, code(125), true, outcome("")).unwrap();
        assert_eq!(o.exit, Some(Exit::Code(125)));
        let o = classify(EngineKind::Podman, code(137), true, outcome("")).unwrap();
        assert_eq!(o.exit, Some(Exit::Signal(libc::SIGKILL)));
        let o = classify(EngineKind::Docker, code(0), true, outcome("")).unwrap();
        assert_eq!(o.exit, Some(Exit::Code(0)));
    }

    #[test]
    fn config_problems_name_each_mistake() {
        let mut policy = Policy {
            image: Some("busybox:latest".into()),
            engine: Some("lxc".into()),
            network: true,
            ..Policy::default()
        };
        policy.user.uid = 0;
        let kind = PluginKind::Command {
            argv: vec!["plugin".into()],
        };
        let p = config_problems(&policy, &kind, true);
        for needle in [
            "not pinned",
            "lxc",
            "absolute",
            "network",
            "root",
            "image digest",
        ] {
            assert!(p.iter().any(|x| x.contains(needle)), "{needle}: {p:?}");
        }
        let ok = Policy {
            image: Some(format!("localhost/x@sha256:{}", "a".repeat(64))),
            ..Policy::default()
        };
        let kind = PluginKind::Command {
            argv: vec!["/bin/plugin".into()],
        };
        assert!(config_problems(&ok, &kind, false).is_empty());
    }
}
