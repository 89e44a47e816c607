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
//! The seccomp profile the engine gets is the plugin's with upm's own rules merged in
//! ([`seccomp::Profile::engine_profile`]); limits the engine would silently drop
//! (rootless podman on cgroup v1) refuse the call unless `allow_degraded` names `limits`.
//!
//! Whether the container really started is told by podman's `--pidfile`
//! (written by the runtime once the container process exists): without it, a
//! non-zero exit is the engine's failure, not the plugin's. Docker has no such
//! file; there its documented codes 125 (engine) and 126/127 (command) decide.

pub mod image;

use crate::config::{Plugin, PluginKind};
use crate::request::Request;
use crate::sandbox::policy::{Layer, Network, Policy};
use crate::sandbox::{limits, seccomp};
use crate::spawn::{self, Exit, Io, Outcome, Pipes, Stream};
use serde_json::{json, Value};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where engines and runtimes are looked up: fixed, never the caller's PATH.
pub const ENGINE_PATH: [&str; 6] = [
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/sbin",
];
/// Each engine client's own settings (rootless podman needs its XDG ones); the plugin never
/// sees them, and neither engine gets the other's: podman reads `DOCKER_CONFIG` too (as its
/// auth file's directory) and refuses to run when that has no `config.json`.
const PODMAN_ENV: [&str; 6] = [
    "HOME",
    "USER",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CONTAINER_HOST",
];
const DOCKER_ENV: [&str; 4] = ["HOME", "USER", "DOCKER_HOST", "DOCKER_CONFIG"];
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
    #[error("cannot ask the container engine {engine} {what}: {message}")]
    Info {
        engine: &'static str,
        what: &'static str,
        message: String,
    },
    #[error(
        "the limits layer cannot be applied here: the engine {engine} ({detail}) would ignore {} \
         (only a warning on its stderr); \"allow_degraded\": [\"limits\"] runs the call without them, reported as degraded",
        .unenforced.join(", ")
    )]
    LimitsUnenforced {
        engine: &'static str,
        detail: String,
        unenforced: Vec<&'static str>,
    },
    #[error(
        "the image declares VOLUME {volumes}: docker would give the plugin a writable, unbounded \
         anonymous volume on the host's disk despite --read-only; rebuild the image without VOLUME"
    )]
    ImageVolumes { volumes: String },
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
    match &policy.network {
        Network::None => {}
        Network::Host => out.push("the container backend always runs with --network=none; \"network\": true is not supported".into()),
        // issue 22: the egress proxy needs the listener the native init creates in the
        // call's own network namespace; a container's namespace is the engine's.
        Network::Allow(_) => out.push(
            "the container backend runs with --network=none and has no egress proxy: \
             \"network\": {\"allow\": [...]} needs the native backend"
                .into(),
        ),
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
        let own: &[&str] = match self.kind {
            EngineKind::Podman => &PODMAN_ENV,
            EngineKind::Docker => &DOCKER_ENV,
        };
        for name in own {
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

/// Where podman's init (catatonit) is looked for: podman's own helper directories, then the fixed PATH.
const PODMAN_INIT: [&str; 4] = [
    "/usr/libexec/podman/catatonit",
    "/usr/local/libexec/podman/catatonit",
    "/usr/lib/podman/catatonit",
    "/usr/local/lib/podman/catatonit",
];

/// The init the container runs as PID 1, so the plugin is PID 2 as natively (a PID 1
/// ignores every signal it has no handler for, those it sends itself included).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Init {
    /// podman `--init --init-path <path>`.
    Path(PathBuf),
    /// docker `--init`: the daemon's docker-init.
    Daemon,
    /// podman without catatonit: the plugin is PID 1.
    None,
}

impl Init {
    fn find(kind: EngineKind) -> Init {
        match kind {
            EngineKind::Docker => Init::Daemon,
            EngineKind::Podman => PODMAN_INIT
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .or_else(|| find_on_path("catatonit"))
                .map_or(Init::None, Init::Path),
        }
    }

    fn report(&self) -> Value {
        match self {
            Init::Path(p) => json!(p),
            Init::Daemon => json!("docker-init (the daemon's)"),
            Init::None => json!("none (no catatonit found): the plugin is PID 1 and ignores signals it has no handler for, even its own"),
        }
    }
}

/// The cgroup controllers behind --memory/--memory-swap, --pids-limit and --cpus.
const NEEDED_CONTROLLERS: [(&str, &str); 3] = [
    ("memory", "memory_bytes (--memory)"),
    ("pids", "max_processes (--pids-limit)"),
    ("cpu", "the CPU share (--cpus)"),
];

/// What the engine can enforce, found once per engine and process (a local podman's
/// from the host's cgroup file system, else `podman info` / `docker info`): rootless podman on cgroup v1, or without delegated controllers,
/// drops --memory, --pids-limit and --cpus with a warning and runs the container anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EngineInfo {
    rootless: bool,
    cgroup_version: String,
    /// Controllers the engine says it can use, among [`NEEDED_CONTROLLERS`].
    controllers: Vec<String>,
    /// The daemon's default runtime (docker, which upm does not pass `--runtime`).
    default_runtime: Option<String>,
}

impl EngineInfo {
    /// `podman info --format '{{.Host.Security.Rootless}}|{{.Host.CgroupsVersion}}|{{range ...}}{{.}},{{end}}'`.
    fn parse_podman(out: &str) -> Option<EngineInfo> {
        let mut f = out.trim().split('|');
        let rootless = f.next()?.parse::<bool>().ok()?;
        let cgroup_version = f.next()?.to_owned();
        let controllers = f
            .next()?
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        Some(EngineInfo {
            rootless,
            cgroup_version,
            controllers,
            default_runtime: None,
        })
    }

    /// `docker info --format '{{json .}}'`: the Engine API's `/info` object, read by its
    /// documented JSON keys (the template field names differ: `.CPUCfsQuota`, not
    /// `.CpuCfsQuota`, and vary with the client's version).
    fn parse_docker(out: &str) -> Option<EngineInfo> {
        let v: Value = serde_json::from_str(out.trim()).ok()?;
        let flag = |key: &str| v.get(key)?.as_bool();
        let mut controllers = Vec::new();
        if flag("MemoryLimit")? && flag("SwapLimit")? {
            controllers.push("memory".to_owned());
        }
        if flag("PidsLimit")? {
            controllers.push("pids".to_owned());
        }
        if flag("CpuCfsQuota")? {
            controllers.push("cpu".to_owned());
        }
        let version = v.get("CgroupVersion")?.as_str()?;
        let rootless = v
            .get("SecurityOptions")?
            .as_array()?
            .iter()
            .any(|o| o.as_str().is_some_and(|o| o.contains("name=rootless")));
        Some(EngineInfo {
            rootless,
            cgroup_version: format!("v{}", version.trim_start_matches('v')),
            controllers,
            default_runtime: v
                .get("DefaultRuntime")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    /// The limits this engine would silently drop.
    fn unenforced(&self) -> Vec<&'static str> {
        NEEDED_CONTROLLERS
            .iter()
            .filter(|(c, _)| !self.controllers.iter().any(|x| x == c))
            .map(|(_, what)| *what)
            .collect()
    }

    fn detail(&self) -> String {
        format!(
            "{}, cgroup {}",
            if self.rootless { "rootless" } else { "rootful" },
            self.cgroup_version
        )
    }

    /// What a local podman (no `CONTAINER_HOST`) can use, read the way podman itself
    /// decides it, without the half second `podman info` costs every one-shot call:
    /// rootless is upm's euid; cgroup v2 when /sys/fs/cgroup is cgroup2 (a hybrid host
    /// is v1 to podman); rootful v1 uses the mounted controllers, rootful v2 those of
    /// the root cgroup, rootless v1 none, rootless v2 those systemd delegates to the user.
    fn local_podman() -> EngineInfo {
        let uid = nix::unistd::geteuid();
        let rootless = !uid.is_root();
        let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        let listed = |file: &str| -> Vec<String> {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let controllers = match (v2, rootless) {
            (true, false) => listed("/sys/fs/cgroup/cgroup.controllers"),
            (true, true) => listed(&format!(
                "/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers"
            )),
            (false, false) => NEEDED_CONTROLLERS
                .iter()
                .map(|(c, _)| *c)
                .filter(|c| Path::new("/sys/fs/cgroup").join(c).is_dir())
                .map(str::to_owned)
                .collect(),
            (false, true) => Vec::new(),
        };
        EngineInfo {
            rootless,
            cgroup_version: if v2 { "v2" } else { "v1" }.to_owned(),
            controllers,
            default_runtime: None,
        }
    }

    fn ask(engine: &Engine) -> Result<EngineInfo, ContainerError> {
        static CACHE: std::sync::Mutex<Vec<(PathBuf, EngineInfo)>> =
            std::sync::Mutex::new(Vec::new());
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, i)) = cache.iter().find(|(p, _)| *p == engine.path) {
            return Ok(i.clone());
        }
        if engine.kind == EngineKind::Podman && std::env::var_os("CONTAINER_HOST").is_none() {
            let local = EngineInfo::local_podman();
            cache.push((engine.path.clone(), local.clone()));
            return Ok(local);
        }
        let format = match engine.kind {
            EngineKind::Podman => "{{.Host.Security.Rootless}}|{{.Host.CgroupsVersion}}|{{range .Host.CgroupControllers}}{{.}},{{end}}",
            EngineKind::Docker => "{{json .}}",
        };
        let mut args = engine.global_args();
        args.extend(["info".into(), "--format".into(), format.into()]);
        let what = "what it enforces (rootless, cgroup version and controllers)";
        let text = engine_answer(engine, &args, what)?;
        let fail = |message: String| ContainerError::Info {
            engine: engine.kind.as_str(),
            what,
            message,
        };
        let parsed = match engine.kind {
            EngineKind::Podman => EngineInfo::parse_podman(&text),
            EngineKind::Docker => EngineInfo::parse_docker(&text),
        }
        .ok_or_else(|| fail(format!("unexpected answer {:?}", text.trim())))?;
        cache.push((engine.path.clone(), parsed.clone()));
        Ok(parsed)
    }
}

/// Whether the call may run given what the engine enforces: `Ok(None)` every limit is in
/// force; `Ok(Some(list))` some are not and `allow_degraded` names `limits`; else refused.
fn limits_decision(
    kind: EngineKind,
    info: &EngineInfo,
    allow_degraded: bool,
) -> Result<Option<Vec<&'static str>>, ContainerError> {
    let unenforced = info.unenforced();
    if unenforced.is_empty() {
        Ok(None)
    } else if allow_degraded {
        Ok(Some(unenforced))
    } else {
        Err(ContainerError::LimitsUnenforced {
            engine: kind.as_str(),
            detail: info.detail(),
            unenforced,
        })
    }
}

/// Docker gives each image VOLUME a writable anonymous volume whatever --read-only says
/// (podman has --image-volume=ignore): such images are refused. `Config.Volumes` as JSON.
fn check_docker_volumes(json_volumes: &str) -> Result<(), ContainerError> {
    let v: Value = serde_json::from_str(json_volumes.trim()).unwrap_or(Value::Null);
    match v {
        Value::Null => Ok(()),
        Value::Object(m) if m.is_empty() => Ok(()),
        Value::Object(m) => Err(ContainerError::ImageVolumes {
            volumes: m.keys().cloned().collect::<Vec<_>>().join(", "),
        }),
        other => Err(ContainerError::ImageVolumes {
            volumes: format!("(unreadable: {other})"),
        }),
    }
}

fn docker_image_volumes(engine: &Engine, image: &str) -> Result<(), ContainerError> {
    let args: Vec<String> = vec![
        "image".into(),
        "inspect".into(),
        "--format".into(),
        "{{json .Config.Volumes}}".into(),
        image.into(),
    ];
    check_docker_volumes(&engine_answer(
        engine,
        &args,
        "which VOLUMEs the image declares",
    )?)
}

/// What the engine prints for a question (`info`, `image inspect`), or why it would not say.
fn engine_answer(
    engine: &Engine,
    args: &[String],
    what: &'static str,
) -> Result<String, ContainerError> {
    let fail = |message: String| ContainerError::Info {
        engine: engine.kind.as_str(),
        what,
        message,
    };
    let out = engine
        .command(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// RLIMIT_NPROC counts every process of the uid on the host (rootful engines give the
/// container no user namespace), so it is not the call's process limit: the pids cgroup is.
/// It is set as high as the runtime can set it: upm's own hard limit, at most pid_max.
fn nproc_ceiling() -> u64 {
    let mut own = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 on upm itself, writing into a valid rlimit64 on our stack.
    let rc = unsafe { libc::prlimit64(0, libc::RLIMIT_NPROC, std::ptr::null(), &mut own) };
    let own = if rc == 0 { own.rlim_max } else { u64::MAX };
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(32_768);
    own.min(pid_max)
}

/// podman's --timeout is a signed 32-bit number of seconds.
const MAX_ENGINE_TIMEOUT_S: u64 = i32::MAX as u64;

fn engine_timeout_s(timeout_ms: u64) -> u64 {
    timeout_ms
        .div_ceil(1000)
        .saturating_add(2)
        .min(MAX_ENGINE_TIMEOUT_S)
}

/// The call's private directory (engine seccomp profile, pidfile) under `workdir_root`,
/// named like the container, so `<workdir_root>/upm-*` sweeps cover it; removed on drop.
struct CallDir(PathBuf);

impl Drop for CallDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    /// Private directory for the pidfile and the engine's profile, removed with this value.
    dir: CallDir,
    summary: Value,
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
        self.dir.0.join("container.pid")
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
    init: Init,
    /// RLIMIT_NPROC: not the call's process limit (see [`nproc_ceiling`]).
    nproc: u64,
    /// The limits the engine will not enforce (`allow_degraded: ["limits"]`), if any.
    degraded: Option<Vec<&'static str>>,
}

/// Picks the engine, loads the seccomp profile and builds the engine's argv.
pub fn prepare(
    plugin: &Plugin,
    profile: &seccomp::Profile,
    req: &Request,
    request_id: &str,
    workdir_root: &Path,
) -> Result<Prepared, ContainerError> {
    let policy = &plugin.policy;
    let (PluginKind::Command { argv }, Some(image)) = (&plugin.kind, &policy.image) else {
        return Err(ContainerError::NotContainer(plugin.name.clone()));
    };
    let engine = Engine::find(policy.engine.as_deref())?;
    let info = EngineInfo::ask(&engine)?;
    let degraded = limits_decision(
        engine.kind,
        &info,
        policy.allow_degraded.contains(&Layer::Limits),
    )?;
    if engine.kind == EngineKind::Docker {
        docker_image_volumes(&engine, image)?;
    }
    // upm's own seccomp rules, merged into the profile the engine is handed.
    let engine_profile = profile.engine_profile()?;
    let name = container_name(request_id);
    let dir_path = workdir_root.join(&name);
    // create_dir fails on anything already there, so the directory is ours.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir_path)
        .map_err(|source| ContainerError::Workdir {
            path: dir_path.clone(),
            source,
        })?;
    // From here on, an error return removes it.
    let dir = CallDir(dir_path);
    let mut env: Vec<String> = policy
        .env
        .allow
        .iter()
        .filter(|n| !policy.env.set.contains_key(*n) && std::env::var_os(n).is_some())
        .map(|n| format!("{n}={}", std::env::var(n).unwrap_or_default()))
        .collect();
    env.extend(policy.env.set.iter().map(|(k, v)| format!("{k}={v}")));
    env.push(format!("TMPDIR={TMP}"));
    let pidfile = dir.0.join("container.pid");
    // The engine reads the profile itself: hand it a private file made from the bytes
    // upm verified (plus upm's rules), so a swap of the config's file changes nothing.
    let seccomp_copy = dir.0.join("seccomp.json");
    std::fs::write(&seccomp_copy, &engine_profile.bytes).map_err(|source| {
        ContainerError::Workdir {
            path: seccomp_copy.clone(),
            source,
        }
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
        init: Init::find(engine.kind),
        nproc: nproc_ceiling(),
        degraded,
    };
    let args = run_args(&spec);
    let summary = summary(&spec, profile, &engine_profile, &info);
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
        // A private IPC namespace without /dev/shm (64 MiB of writable tmpfs otherwise).
        "--ipc=none",
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
        // The pids cgroup counts the init too, as the native limit does.
        ("--pids-limit", pids_limit(s).to_string()),
        ("--memory", l.memory_bytes.to_string()),
        ("--memory-swap", l.memory_bytes.to_string()),
        ("--tmpfs", tmpfs_option(l)),
        ("--ulimit", format!("nofile={0}:{0}", l.open_files)),
        ("--ulimit", format!("nproc={0}:{0}", s.nproc)),
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
    match &s.init {
        Init::Path(p) => {
            a.push("--init".into());
            a.push("--init-path".into());
            a.push(p.to_string_lossy().into_owned());
        }
        Init::Daemon => a.push("--init".into()),
        Init::None => {}
    }
    if s.engine.kind == EngineKind::Podman {
        // No extra writable tmpfs on /run and /var/tmp; no anonymous volume for an image
        // VOLUME (writable and unbounded on the host's disk); the pidfile tells a started
        // container from an engine failure; --timeout kills it even if upm dies.
        a.push("--read-only-tmpfs=false".into());
        a.push("--image-volume=ignore".into());
        a.push("--pidfile".into());
        a.push(s.pidfile.to_string_lossy().into_owned());
        a.push("--timeout".into());
        a.push(engine_timeout_s(l.timeout_ms).to_string());
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

fn pids_limit(s: &Spec<'_>) -> u64 {
    let l = s.policy.limits.max_processes;
    match s.init {
        Init::None => l,
        _ => l.saturating_add(1),
    }
}

fn summary(
    s: &Spec<'_>,
    profile: &seccomp::Profile,
    engine_profile: &seccomp::EngineProfile,
    info: &EngineInfo,
) -> Value {
    let l = &s.policy.limits;
    let u = &s.policy.user;
    let mut limits = json!({
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
        "process_count": format!(
            "the container's pids cgroup (--pids-limit {}, its init included); RLIMIT_NPROC is {} (it would count every process of the uid on the host)",
            pids_limit(s),
            s.nproc
        ),
    });
    let cgroup = match &s.degraded {
        None => json!({
            "state": "enforced",
            "engine": info.detail(),
            "controllers": NEEDED_CONTROLLERS.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        }),
        Some(unenforced) => {
            // Say plainly which numbers above are not in force.
            for (key, what) in [
                ("memory_bytes", NEEDED_CONTROLLERS[0].1),
                ("max_processes", NEEDED_CONTROLLERS[1].1),
            ] {
                if unenforced.contains(&what) {
                    limits[key] = json!(format!(
                        "not enforced (degraded): {} requested",
                        limits[key]
                    ));
                }
            }
            json!({
                "state": "degraded",
                "engine": info.detail(),
                "not_enforced": unenforced,
            })
        }
    };
    let mut writable = vec![json!({"path": TMP, "tmpfs": tmpfs_option(l)})];
    writable.push(json!({
        "path": "/dev/mqueue",
        "what": "POSIX message queues, at most message_queue_bytes for the uid (shared with the uid's host processes: no user namespace)",
    }));
    json!({
        "backend": "container",
        "engine": s.engine.kind.as_str(),
        "engine_path": s.engine.path,
        "runtime": match (&s.engine.runtime, &info.default_runtime) {
            (Some(path), _) => json!(path),
            (None, Some(name)) => json!(format!("{name} (the daemon's default)")),
            (None, None) => Value::Null,
        },
        "image": s.image,
        "command": s.argv,
        "container_name": s.name,
        "network": "none",
        "ipc": "private, no /dev/shm",
        "image_volumes": match s.engine.kind {
            EngineKind::Podman => "ignored (--image-volume=ignore)",
            EngineKind::Docker => "none (an image with VOLUME is refused)",
        },
        "init": s.init.report(),
        "user": format!("{}:{}", u.uid, u.gid),
        "read_only_rootfs": true,
        "writable": writable,
        "capabilities": "none",
        "no_new_privileges": true,
        "seccomp": {
            "profile": profile.name,
            "file": s.policy.seccomp,
            "digest": profile.digest,
            "engine_profile_digest": engine_profile.digest,
            "path": s.seccomp,
            "upm_rules": engine_profile.upm_rules,
        },
        "cgroup_limits": cgroup,
        "limits": limits,
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
    // -v: an anonymous volume goes with the container (podman makes none with
    // --image-volume=ignore; docker refuses such images; a second guard either way).
    args.extend(["rm".into(), "-f".into(), "-v".into()]);
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
    use crate::error::Failure;

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
            init: match kind {
                EngineKind::Podman => Init::Path(PathBuf::from("/usr/libexec/podman/catatonit")),
                EngineKind::Docker => Init::Daemon,
            },
            nproc: 32768,
            degraded: None,
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
            "--image-volume=ignore",
            "--ipc=none",
            "--init",
        ] {
            assert!(a.iter().any(|x| x == f), "missing {f}: {a:?}");
        }
        assert_eq!(value_after(&a, "--user"), ["65534:65534"]);
        assert_eq!(
            value_after(&a, "--security-opt"),
            ["seccomp=/cfg/policies/default.json"]
        );
        // The init is one of the processes the pids cgroup counts.
        assert_eq!(value_after(&a, "--pids-limit"), ["65"]);
        assert_eq!(
            value_after(&a, "--init-path"),
            ["/usr/libexec/podman/catatonit"]
        );
        assert_eq!(value_after(&a, "--memory"), ["1073741824"]);
        assert_eq!(
            value_after(&a, "--ulimit"),
            [
                "nofile=256:256",
                // Not the call's limit: RLIMIT_NPROC counts the uid's host processes.
                "nproc=32768:32768",
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
            "--image-volume=ignore",
            "--init-path",
            "--runtime",
        ] {
            assert!(!a.iter().any(|x| x == f), "{f} in {a:?}");
        }
    }

    #[test]
    fn docker_gets_init_and_ipc_none() {
        let a = spec_args(EngineKind::Docker, &["/bin/plugin"]);
        for f in ["--init", "--ipc=none"] {
            assert!(a.iter().any(|x| x == f), "missing {f}: {a:?}");
        }
    }

    /// Rootless podman on cgroup v1 (this decision is unit-tested: the tests run rootful).
    #[test]
    fn unenforceable_limits_refuse_unless_degraded_is_allowed() {
        let rootless_v1 = EngineInfo::parse_podman("true|v1|\n").unwrap();
        assert!(rootless_v1.rootless);
        assert_eq!(rootless_v1.unenforced().len(), 3);
        let e = limits_decision(EngineKind::Podman, &rootless_v1, false).unwrap_err();
        assert!(matches!(e, ContainerError::LimitsUnenforced { .. }));
        let msg = e.to_string();
        for needle in [
            "rootless, cgroup v1",
            "--memory",
            "--pids-limit",
            "--cpus",
            "allow_degraded",
        ] {
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
        assert_eq!(
            Failure::from(e).code,
            crate::error::Code::SandboxUnavailable
        );
        let allowed = limits_decision(EngineKind::Podman, &rootless_v1, true).unwrap();
        assert_eq!(allowed.map(|v| v.len()), Some(3));
        // Rootless v2 with only some controllers delegated: those missing are named.
        let partial = EngineInfo::parse_podman("true|v2|cpu,pids,").unwrap();
        assert_eq!(partial.unenforced(), ["memory_bytes (--memory)"]);
        // Rootful (this host): everything in force.
        let rootful = EngineInfo::parse_podman(
            "false|v1|cpuset,cpu,cpuacct,blkio,memory,devices,freezer,pids,",
        )
        .unwrap();
        assert_eq!(
            limits_decision(EngineKind::Podman, &rootful, false).unwrap(),
            None
        );
        // docker info's JSON (the Engine API's /info keys).
        let d = EngineInfo::parse_docker(
            r#"{"CgroupVersion": "1", "MemoryLimit": true, "SwapLimit": false, "PidsLimit": true,
                "CpuCfsQuota": true, "SecurityOptions": ["name=seccomp,profile=builtin", "name=rootless"]}"#,
        )
        .unwrap();
        assert!(d.rootless);
        assert_eq!(d.unenforced(), ["memory_bytes (--memory)"]);
        let d = EngineInfo::parse_docker(
            r#"{"CgroupVersion": "2", "MemoryLimit": true, "SwapLimit": true, "PidsLimit": true,
                "CpuCfsQuota": true, "SecurityOptions": ["name=seccomp,profile=builtin"],
                "DefaultRuntime": "runc"}"#,
        )
        .unwrap();
        assert!(!d.rootless && d.unenforced().is_empty());
        assert_eq!(d.cgroup_version, "v2");
        assert_eq!(d.default_runtime.as_deref(), Some("runc"));
        assert!(EngineInfo::parse_podman("garbage").is_none());
        assert!(EngineInfo::parse_docker("1|yes").is_none());
        assert!(EngineInfo::parse_docker(r#"{"CgroupVersion": "1"}"#).is_none());
    }

    /// The local reading agrees with `podman info` where podman is installed.
    #[test]
    fn local_podman_reading_matches_podman_info() {
        let Some(path) = find_on_path("podman") else {
            eprintln!("SKIPPED: no podman");
            return;
        };
        let engine = Engine {
            kind: EngineKind::Podman,
            path,
            runtime: runtime_for_podman().ok().flatten(),
        };
        let mut args = engine.global_args();
        args.extend([
            "info".into(),
            "--format".into(),
            "{{.Host.Security.Rootless}}|{{.Host.CgroupsVersion}}|{{range .Host.CgroupControllers}}{{.}},{{end}}".into(),
        ]);
        let Ok(out) = engine.command(&args).stdin(Stdio::null()).output() else {
            return;
        };
        let Some(info) = EngineInfo::parse_podman(&String::from_utf8_lossy(&out.stdout)) else {
            eprintln!("SKIPPED: podman info answered {out:?}");
            return;
        };
        let local = EngineInfo::local_podman();
        assert_eq!(
            (local.rootless, &local.cgroup_version, local.unenforced()),
            (info.rootless, &info.cgroup_version, info.unenforced())
        );
    }

    #[test]
    fn docker_images_with_volumes_are_refused() {
        assert!(check_docker_volumes("null\n").is_ok());
        assert!(check_docker_volumes("{}").is_ok());
        let e = check_docker_volumes(r#"{"/data":{}}"#).unwrap_err();
        assert!(e.to_string().contains("/data"), "{e}");
        assert!(check_docker_volumes("[1]").is_err());
    }

    #[test]
    fn engine_timeout_is_capped_for_podman() {
        assert_eq!(engine_timeout_s(10_000), 12);
        assert_eq!(engine_timeout_s(u64::MAX), i32::MAX as u64);
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
            network: Network::Host,
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
        // issue 22: no egress proxy in a container: refused, saying so.
        let allowlist = Policy {
            image: Some(format!("localhost/x@sha256:{}", "a".repeat(64))),
            network: Network::Allow(
                serde_json::from_value(serde_json::json!({"allow": ["pypi.org"]})).unwrap(),
            ),
            ..Policy::default()
        };
        let kind = PluginKind::Command {
            argv: vec!["/bin/plugin".into()],
        };
        let p = config_problems(&allowlist, &kind, false);
        assert!(
            p.len() == 1 && p[0].contains("needs the native backend"),
            "{p:?}"
        );
        let ok = Policy {
            image: Some(format!("localhost/x@sha256:{}", "a".repeat(64))),
            ..Policy::default()
        };
        assert!(config_problems(&ok, &kind, false).is_empty());
    }
}
