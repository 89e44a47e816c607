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
//!
//! Here: [`prepare`], everything decided before the `started` entry. `engine.rs`: which
//! engine, and what it enforces. `args.rs`: its command line and the report of what is in
//! force. `run.rs`: the container's run and its end. The config's side (image
//! references, what a container plugin may ask) is checked in `config::container`.

mod args;
mod engine;
mod run;

pub use crate::sandbox::policy::EngineKind;
pub use engine::{Engine, ENGINE_PATH};
pub use run::{run, usage};

use args::{container_name, nproc_ceiling, run_args, summary, Spec};
use engine::{docker_image_volumes, limits_decision, EngineInfo, Init};

use crate::config::{Plugin, PluginKind};
use crate::request::Request;
use crate::sandbox::policy::Layer;
use crate::sandbox::{limits, seccomp};
use serde_json::{json, Value};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Inside the container the plugin's cwd and $TMPDIR: the only writable place.
const TMP: &str = "/tmp";

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    UnknownEngine(#[from] crate::sandbox::policy::UnknownEngine),
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

/// What `upm check` makes of a container plugin's engine and image.
pub enum ImageCheck {
    /// The engine has the image: nothing to say.
    Present,
    /// Every call would fail: no engine (or runtime) to run it, or no such image.
    Problem(String),
    /// The engine could not say (its daemon does not answer, or not in time): calls fail
    /// until it does, which may be later (a daemon that starts after `upm mcp`).
    Warning(String),
}

/// Asks the engine a call would use whether it has the plugin's pinned image, waiting
/// at most [`engine::CHECK_WAIT`] for each answer.
pub fn check_image(plugin: &Plugin) -> ImageCheck {
    let Some(image) = &plugin.policy.image else {
        return ImageCheck::Present;
    };
    let engine = match Engine::find(plugin.policy.engine.as_deref()) {
        Ok(e) => e,
        Err(e) => {
            return ImageCheck::Problem(format!("every call fails (sandbox_unavailable): {e}"))
        }
    };
    match engine::has_image(&engine, image, engine::CHECK_WAIT) {
        Ok(true) => ImageCheck::Present,
        Ok(false) => ImageCheck::Problem(format!(
            "every call fails (sandbox_unavailable): the container engine {} ({}) has no image {image} (calls never pull: load or pull it first)",
            engine.kind.as_str(),
            engine.path.display()
        )),
        Err(engine::Unsure::Unstartable(why)) => {
            ImageCheck::Problem(format!("every call fails (sandbox_unavailable): {why}"))
        }
        Err(engine::Unsure::NoAnswer(why)) => ImageCheck::Warning(format!(
            "cannot ask the container engine {} ({}) whether it has the image {image}: {why}; calls fail (sandbox_unavailable) until it answers",
            engine.kind.as_str(),
            engine.path.display()
        )),
    }
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
    // HOME is the writable tmpfs, as natively the call's home, unless the config sets
    // one: left to the engine it is the image's (docker: the read-only `/`).
    let fixed_home = !policy.env.set.contains_key("HOME");
    let mut env: Vec<String> = policy
        .env
        .allow
        .iter()
        .filter(|n| !policy.env.set.contains_key(*n) && std::env::var_os(n).is_some())
        .filter(|n| *n != "TMPDIR" && !(fixed_home && *n == "HOME"))
        .map(|n| format!("{n}={}", std::env::var(n).unwrap_or_default()))
        .collect();
    if fixed_home {
        env.push(format!("HOME={TMP}"));
    }
    env.extend(
        policy
            .env
            .set
            .iter()
            .filter(|(k, _)| *k != "TMPDIR")
            .map(|(k, v)| format!("{k}={v}")),
    );
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
