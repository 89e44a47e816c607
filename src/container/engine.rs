//! The engines: finding podman or docker on a fixed PATH, calling their client with a
//! fixed environment, and asking once per process what each can enforce (rootless or
//! not, cgroup version and controllers) and whether an image declares a VOLUME.

use super::ContainerError;
use crate::sandbox::policy::EngineKind;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
pub(super) const PODMAN_ENV: [&str; 6] = [
    "HOME",
    "USER",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CONTAINER_HOST",
];

pub(super) const DOCKER_ENV: [&str; 4] = ["HOME", "USER", "DOCKER_HOST", "DOCKER_CONFIG"];

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
    pub(super) fn global_args(&self) -> Vec<String> {
        match &self.runtime {
            Some(r) => vec!["--runtime".into(), r.to_string_lossy().into_owned()],
            None => Vec::new(),
        }
    }

    /// The engine's client, with a fixed environment and in its own process group.
    pub(super) fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(args)
            .env_clear()
            .env("PATH", ENGINE_PATH.join(":"))
            .process_group(0);
        crate::spawn::default_sigxfsz_on_exec(&mut cmd);
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
pub(super) fn runtime_for_podman() -> Result<Option<PathBuf>, ContainerError> {
    match std::env::var("UPM_CONTAINER_RUNTIME") {
        Ok(name) if name == "default" => Ok(None),
        Ok(name) if !name.is_empty() => find_on_path(&name)
            .map(Some)
            .ok_or(ContainerError::NoRuntime(name)),
        _ => Ok(find_on_path("runc")),
    }
}

pub(super) fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return None;
    }
    ENGINE_PATH
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Where podman's init (catatonit) is looked for: podman's own helper directories, then the fixed PATH.
pub(super) const PODMAN_INIT: [&str; 4] = [
    "/usr/libexec/podman/catatonit",
    "/usr/local/libexec/podman/catatonit",
    "/usr/lib/podman/catatonit",
    "/usr/local/lib/podman/catatonit",
];

/// The init the container runs as PID 1, so the plugin is not PID 1, as natively (a PID 1
/// ignores every signal it has no handler for, those it sends itself included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Init {
    /// podman `--init --init-path <path>`.
    Path(PathBuf),
    /// docker `--init`: the daemon's docker-init.
    Daemon,
    /// podman without catatonit: the plugin is PID 1.
    None,
}

impl Init {
    pub(super) fn find(kind: EngineKind) -> Init {
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

    pub(super) fn report(&self) -> Value {
        match self {
            Init::Path(p) => json!(p),
            Init::Daemon => json!("docker-init (the daemon's)"),
            Init::None => json!("none (no catatonit found): the plugin is PID 1 and ignores signals it has no handler for, even its own"),
        }
    }
}

/// The cgroup controllers behind --memory/--memory-swap, --pids-limit and --cpus.
pub(super) const NEEDED_CONTROLLERS: [(&str, &str); 3] = [
    ("memory", "memory_bytes (--memory)"),
    ("pids", "max_processes (--pids-limit)"),
    ("cpu", "the CPU share (--cpus)"),
];

/// What the engine can enforce, found once per engine and process (a local podman's
/// from the host's cgroup file system, else `podman info` / `docker info`): rootless podman on cgroup v1, or without delegated controllers,
/// drops --memory, --pids-limit and --cpus with a warning and runs the container anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EngineInfo {
    pub(super) rootless: bool,
    pub(super) cgroup_version: String,
    /// Controllers the engine says it can use, among [`NEEDED_CONTROLLERS`].
    pub(super) controllers: Vec<String>,
    /// The daemon's default runtime (docker, which upm does not pass `--runtime`).
    pub(super) default_runtime: Option<String>,
}

impl EngineInfo {
    /// `podman info --format '{{.Host.Security.Rootless}}|{{.Host.CgroupsVersion}}|{{range ...}}{{.}},{{end}}'`.
    pub(super) fn parse_podman(out: &str) -> Option<EngineInfo> {
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
    pub(super) fn parse_docker(out: &str) -> Option<EngineInfo> {
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
    pub(super) fn unenforced(&self) -> Vec<&'static str> {
        NEEDED_CONTROLLERS
            .iter()
            .filter(|(c, _)| !self.controllers.iter().any(|x| x == c))
            .map(|(_, what)| *what)
            .collect()
    }

    pub(super) fn detail(&self) -> String {
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
    pub(super) fn local_podman() -> EngineInfo {
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

    pub(super) fn ask(engine: &Engine) -> Result<EngineInfo, ContainerError> {
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
pub(super) fn limits_decision(
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
pub(super) fn check_docker_volumes(json_volumes: &str) -> Result<(), ContainerError> {
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

pub(super) fn docker_image_volumes(engine: &Engine, image: &str) -> Result<(), ContainerError> {
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
pub(super) fn engine_answer(
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

/// How long `upm check` waits for each of an engine's answers: a hung daemon must not hang it.
pub const CHECK_WAIT: Duration = Duration::from_secs(5);

/// What the engine said to a question asked within a deadline.
pub(super) enum Answer {
    /// Exit 0.
    Yes,
    /// Another exit: its code (none when killed by a signal) and stderr.
    No(Option<i32>, String),
    /// It could not be started at all (not executable, a bad binary): no call can run.
    Unstartable(String),
    /// It did not answer in time (killed, with its process group).
    Silent(String),
}

/// Runs the engine's client with `args` for at most `wait`.
pub(super) fn ask_within(engine: &Engine, args: &[String], wait: Duration) -> Answer {
    let started = std::time::Instant::now();
    let mut child = match engine
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Answer::Unstartable(format!(
                "cannot start the container engine {}: {e}",
                engine.path.display()
            ))
        }
    };
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = std::io::Read::read_to_end(&mut r, &mut buf);
            }
            String::from_utf8_lossy(&buf).trim().to_owned()
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let status = super::run::wait_until(&mut child, started + wait);
    if status.is_none() {
        // Its whole group goes, so nothing holds the pipes the readers wait on.
        super::run::kill_client(&mut child);
    }
    let _ = out.join();
    let err = err.join().unwrap_or_default();
    match status {
        None => Answer::Silent(format!(
            "{} did not answer in {} s",
            engine.kind.as_str(),
            wait.as_secs()
        )),
        Some(s) if s.success() => Answer::Yes,
        Some(s) => Answer::No(s.code(), err),
    }
}

/// Whether the engine has `image` (the config's digest reference) in its local store:
/// `Ok(false)` the engine answered that it has not (every call would fail: calls run
/// with `--pull=never`); `Err` it could not say, with why.
pub(super) fn has_image(engine: &Engine, image: &str, wait: Duration) -> Result<bool, Unsure> {
    let mut args = engine.global_args();
    match engine.kind {
        // Documented: 0 present, 1 absent, 125 any other failure.
        EngineKind::Podman => {
            args.extend(["image".into(), "exists".into(), image.into()]);
            match ask_within(engine, &args, wait) {
                Answer::Yes => Ok(true),
                Answer::No(Some(1), _) => Ok(false),
                Answer::No(code, err) => Err(Unsure::NoAnswer(exit_message(code, &err))),
                Answer::Silent(why) => Err(Unsure::NoAnswer(why)),
                Answer::Unstartable(why) => Err(Unsure::Unstartable(why)),
            }
        }
        // `image inspect` exits 1 for an absent image and for an unreachable daemon alike:
        // when it fails, whether the daemon answers at all tells the two apart.
        EngineKind::Docker => {
            args.extend(["image", "inspect", "--format", "{{.Id}}", image].map(String::from));
            match ask_within(engine, &args, wait) {
                Answer::Yes => Ok(true),
                Answer::Silent(why) => Err(Unsure::NoAnswer(why)),
                Answer::Unstartable(why) => Err(Unsure::Unstartable(why)),
                Answer::No(_, inspect_err) => {
                    let version = ["version", "--format", "{{.Server.Version}}"].map(String::from);
                    match ask_within(engine, &version, wait) {
                        Answer::Yes => Ok(false),
                        Answer::No(code, err) => Err(Unsure::NoAnswer(exit_message(code, &err))),
                        Answer::Silent(why) => {
                            Err(Unsure::NoAnswer(format!("{why} ({inspect_err})")))
                        }
                        Answer::Unstartable(why) => Err(Unsure::Unstartable(why)),
                    }
                }
            }
        }
    }
}

/// Why the engine could not say whether it has an image.
pub(super) enum Unsure {
    /// Its client cannot be started: every call fails the same way.
    Unstartable(String),
    /// It ran but gave no answer (its daemon is down, hung, or failed otherwise).
    NoAnswer(String),
}

fn exit_message(code: Option<i32>, stderr: &str) -> String {
    let code = code.map_or_else(|| "a signal".to_owned(), |c| format!("exit {c}"));
    if stderr.is_empty() {
        code
    } else {
        format!("{stderr} ({code})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Failure;

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
}
