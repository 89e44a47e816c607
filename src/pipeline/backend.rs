//! Where the two backends differ: how a call is prepared, started and run, and how
//! what its plugin left becomes an outcome. Everything around these steps (the audit
//! entries, the response, the order) is the pipeline's, the same for both.
//!
//! ```text
//!              prepare                                start           run
//! native       private directory, verified files,    clone the init  the go; the init
//!              argv/env/stdin, the sandbox layers    (waits)         reaps the plugin
//! container    engine, its argv, the merged seccomp  -               the engine's client
//!              profile in a private directory                        to the container's end
//! ```
//!
//! A native call with an egress allowlist also runs the call's proxy beside its plugin
//! (issue 22, [`crate::egress`]): started before the go, stopped once the plugin is gone.

use super::checks::verify_executable;
use super::go;
use super::grants::reported;
use super::{phase, Call};
use crate::config::{Config, Plugin, PluginKind, PythonPathFrom};
use crate::container;
use crate::denials::Denials;
use crate::error::Failure;
use crate::launch::{self, Runnable, Workdir};
use crate::outcome::{self, Ran};
use crate::request::Request;
use crate::sandbox;
use crate::sandbox::grants::Grant;
use crate::sandbox::host::Host;
use crate::sandbox::policy::{Backend, Layer};
use crate::sandbox::seccomp::Profile;
use crate::spawn::{self, Outcome};
use crate::trust;
use serde_json::{json, Value};

/// A call made ready on its backend; nothing of the plugin has started.
// One per call, moved once (out of `prepare`): not worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Prepared {
    Native(Native),
    Container(container::Prepared),
}

/// The native backend's preparation: the call's private directory, the verified
/// plugin, what it is started with, and the sandbox's layers.
pub(super) struct Native {
    /// Taken at the end, to be removed while the `finished` entry is made durable.
    workdir: Option<Workdir>,
    runnable: Runnable,
    launch: spawn::Launch,
    sandbox: sandbox::Prepared,
    /// The call's grants: their descriptors stay open until the call ends (the init
    /// checks that what it opens is still their inode).
    grants: Vec<Grant>,
    /// The egress proxy the call runs beside its plugin, with an allowlist.
    egress: Option<Egress>,
}

/// The call's egress proxy (issue 22): its settings, and the uid of its own it gets
/// under a root upm (as each call's user namespace gets an owner of its own).
pub(super) struct Egress {
    settings: crate::egress::Settings,
    own_uid: Option<u32>,
}

/// Audits one connection of the call's egress proxy (the pipeline's `connection` entry).
pub(super) type ConnectionAudit<'a> =
    dyn Fn(&crate::egress::Record) -> Result<(), String> + Sync + 'a;

/// What a run leaves: how the plugin ended, with an egress allowlist the proxy's
/// summary of the call's connections, and what the sandbox refused (issue 23).
pub(super) struct Ended {
    outcome: Outcome,
    egress: Option<Value>,
    denials: Denials,
    /// The native init, still to be reaped (after the `finished` entry).
    ending: Option<spawn::Ending>,
}

impl Ended {
    pub(super) fn take_ending(&mut self) -> Option<spawn::Ending> {
        self.ending.take()
    }
}

/// A started call, about to run.
// One per call, moved once: not worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Running<'p> {
    /// The sandbox's init exists and waits for the go.
    Native(spawn::Spawned<'p>, Option<&'p Egress>),
    /// The container starts when the engine's client does.
    Container(&'p container::Prepared),
}

/// Everything before `started`: checked, verified, built, nothing running.
pub(super) fn prepare(
    host: &Host,
    config: &Config,
    plugin: &Plugin,
    seccomp: &Profile,
    req: &Request,
    grants: Vec<Grant>,
    call: &mut Call,
) -> Result<Prepared, Failure> {
    match plugin.policy.backend {
        Backend::Native => prepare_native(host, config, plugin, seccomp, req, grants, call),
        // The config refuses grants for a container plugin: never a silent drop.
        Backend::Container if !grants.is_empty() => Err(Failure::new(
            crate::error::Code::ConfigError,
            format!(
                "plugin \"{}\": {}",
                plugin.name,
                crate::config::NO_CONTAINER_GRANTS
            ),
        )),
        Backend::Container => {
            container::prepare(plugin, seccomp, req, &call.request_id, &config.workdir_root)
                .map(Prepared::Container)
                .map_err(Failure::from)
        }
    }
}

/// Private directory, verified plugin files (against the signature and the pins),
/// argv/env/stdin, sandbox layers.
fn prepare_native(
    host: &Host,
    config: &Config,
    plugin: &Plugin,
    seccomp: &Profile,
    req: &Request,
    grants: Vec<Grant>,
    call: &mut Call,
) -> Result<Prepared, Failure> {
    let policy = &plugin.policy;
    let owner = host
        .privileged
        .then_some((policy.user.uid, policy.user.gid));
    let python = matches!(plugin.kind, PluginKind::PythonClass { .. });
    let copy_interpreter = call.verdict.is_some();
    // The shared mount point, for a call that needs nothing of its own on the host's
    // disk (its home is a tmpfs in its own mount namespace): not with verified copies
    // or snapshots, and not where the mount namespace may be given up.
    let copies = plugin.sha256.is_some() || copy_interpreter;
    let own_files = plugin.manifest_sha256.is_some()
        || (copies && !crate::integrity::memfd_exec())
        || policy.allow_degraded.contains(&Layer::Namespaces);
    let own = || Workdir::create(&config.workdir_root, &call.request_id, owner, python);
    let mut workdir = match own_files {
        false => Workdir::shared(&config.workdir_root),
        true => None,
    }
    .map_or_else(own, Ok)?;
    phase(call, "workdir created");
    // A pinned tree's snapshot in memory, attached in the call's mount namespace: only
    // where the call cannot go on without one.
    let in_memory = !policy.allow_degraded.contains(&Layer::Namespaces);
    let runnable = launch::resolve(plugin, &workdir, copy_interpreter, in_memory)?;
    // A script is exec'd through a link in the call's own directory.
    if workdir.shared && runnable.exe.script {
        workdir = own()?;
    }
    phase(call, "plugin resolved and hashed");
    if let Some(v) = call.verdict.as_mut() {
        let script = runnable.exe.interpreter.as_deref();
        v.unpinned = trust::unpinned(plugin, copy_interpreter, script);
        call.trust = Some(v.to_json());
    }
    verify_executable(config, plugin, &runnable, call)?;
    launch::check_pin(plugin, &runnable)?;
    let launch = launch::build(config, plugin, &runnable, req, &call.request_id, &workdir)?;
    let home_dirs: &[&str] = if python {
        &[launch::DEFAULT_CACHE_DIR]
    } else {
        &[]
    };
    let paths = sandbox::Paths {
        workdir: &workdir.home,
        home_dirs,
        plugin_files: runnable.readable.clone(),
        seccomp,
        grants: &grants,
        verified: runnable.verified.as_ref(),
    };
    let sandbox = sandbox::prepare(policy, &paths, host)?;
    let egress = policy.network.allowlist().map(|settings| Egress {
        settings: settings.clone(),
        own_uid: host.privileged.then(sandbox::namespaces::owner_uid),
    });
    // The last moment a stop needs nothing undone: no process exists yet.
    if let Some(why) = call.ctx.stop.stopped() {
        return Err(super::cancelled_before_start(why));
    }
    Ok(Prepared::Native(Native {
        workdir: Some(workdir),
        runnable,
        launch,
        sandbox,
        grants,
        egress,
    }))
}

impl Prepared {
    /// What the `started` entry names as run: the executable and its digests, or the
    /// image and the command in it.
    pub(super) fn files(&self, plugin: &Plugin) -> Value {
        match self {
            Prepared::Native(n) => {
                let exe = &n.runnable.exe;
                let mut files = json!({
                    "exec": exe.path,
                    "exec_sha256": exe.sha256,
                    "manifest_sha256": n.runnable.manifest_sha256,
                });
                if exe.source != exe.path {
                    files["exec_source"] = json!(exe.source);
                }
                files
            }
            Prepared::Container(p) => {
                json!({ "image": plugin.policy.image, "command": p.command() })
            }
        }
    }

    /// The sandbox requested, for the `started` entry (and `finished`, should the start fail).
    pub(super) fn requested(&self, plugin: &Plugin) -> Value {
        match self {
            Prepared::Native(n) => reported(
                with_python_path(n.sandbox.summary(), plugin, &n.runnable),
                &n.grants,
            ),
            Prepared::Container(p) => p.summary(),
        }
    }

    /// Whether starting is worth overlapping with the `started` entry's fsync: cloning
    /// the native init (its namespaces) is most of a spawn's cost.
    pub(super) fn starts_early(&self) -> bool {
        matches!(self, Prepared::Native(_))
    }

    /// Starts what can start before the go (the native init, which waits for it), and
    /// says what is in force: namespaces may have been given up (only if allowed).
    /// Dropping what it returns before [`Running::run`] kills the init: nothing ran.
    pub(super) fn start(&mut self, plugin: &Plugin) -> Result<(Running<'_>, Value), Failure> {
        match self {
            Prepared::Native(n) => {
                let Native {
                    runnable,
                    launch,
                    sandbox,
                    grants,
                    egress,
                    ..
                } = n;
                let spawned = spawn::start(launch, sandbox)?;
                let in_force = reported(
                    with_python_path(spawned.sandbox().summary(), plugin, runnable),
                    grants,
                );
                Ok((Running::Native(spawned, egress.as_ref()), in_force))
            }
            Prepared::Container(p) => Ok((Running::Container(p), p.summary())),
        }
    }

    /// How the plugin's end (or its container's failure to start) becomes the call's
    /// outcome.
    /// With what the sandbox refused meanwhile (issue 23).
    pub(super) fn capture(&self, ended: Result<Ended, Failure>, plugin: &Plugin) -> Ran {
        let Ended {
            outcome,
            egress,
            denials,
            ending: _,
        } = match ended {
            Ok(e) => e,
            Err(f) => return f.into(),
        };
        let mut ran = match self {
            // `exe` names the file when it could not be started.
            Prepared::Native(n) => {
                let mut ran = outcome::interpret(outcome, plugin, Some(&n.runnable.exe));
                ran.egress = egress;
                ran
            }
            Prepared::Container(_) => {
                // The engine does not hand back CPU time or memory: the wall clock only.
                let usage = container::usage(&outcome);
                let mut ran = outcome::interpret(outcome, plugin, None);
                ran.usage = Some(usage);
                ran
            }
        };
        ran.denials = Some(denials);
        ran
    }

    /// The call's private directory, to remove once the plugin is gone (a container
    /// call's own directory goes when it is dropped).
    pub(super) fn take_workdir(&mut self) -> Option<Workdir> {
        match self {
            // The process's shared directory stays.
            Prepared::Native(n) => n.workdir.take().filter(|w| !w.shared),
            Prepared::Container(_) => None,
        }
    }
}

impl Running<'_> {
    /// Where the go can be given from another thread: a native call's without an egress
    /// proxy (which must be started first), `None` otherwise.
    pub(super) fn go_pipe(&self) -> Option<std::os::fd::OwnedFd> {
        match self {
            Running::Native(spawned, None) => spawned.go_pipe().ok(),
            _ => None,
        }
    }

    /// The go was given on [`Running::go_pipe`].
    pub(super) fn gone_ahead(&mut self, (at, went): go::Went) {
        if let Running::Native(spawned, None) = self {
            spawned.gone_ahead(at, went);
        }
    }

    /// The go; returns when the plugin (with its whole process tree) is gone. `Err`:
    /// the container never started (the engine refused, or the command is not in the
    /// image), or the egress proxy could not be started (the plugin did not run).
    /// With what the sandbox refused meanwhile (issue 23): the native sandbox observes
    /// it, the egress proxy adds its refusals; a container engine tells nothing
    /// (`denials::in_container`).
    pub(super) fn run(
        self,
        stop: &spawn::stop::Watch,
        audit: &ConnectionAudit<'_>,
    ) -> Result<Ended, Failure> {
        match self {
            Running::Native(spawned, None) => {
                let (outcome, denials, ending) = spawned.run_observed(stop);
                Ok(Ended {
                    outcome,
                    egress: None,
                    denials,
                    ending,
                })
            }
            Running::Native(spawned, Some(egress)) => run_with_egress(spawned, egress, stop, audit),
            Running::Container(p) => container::run(p, stop)
                .map(|outcome| Ended {
                    outcome,
                    egress: None,
                    denials: crate::denials::in_container(),
                    ending: None,
                })
                .map_err(Failure::from),
        }
    }
}

/// issue 22: the plugin runs beside its call's egress proxy, a process of its own
/// (`spawn::egress`); each connection is audited as it ends, and every one ends with
/// the call, before its `finished` entry. If the proxy cannot be started, the plugin
/// does not run either.
fn run_with_egress(
    mut spawned: spawn::Spawned<'_>,
    egress: &Egress,
    stop: &spawn::stop::Watch,
    audit: &ConnectionAudit<'_>,
) -> Result<Ended, Failure> {
    let Some(channel) = spawned.egress_listener() else {
        return Err(Failure::new(
            crate::error::Code::Internal,
            "the sandbox has no egress listener for the call's allowlist",
        ));
    };
    std::thread::scope(|scope| {
        let helper = spawn::egress::Helper::start(
            scope,
            channel.into_fd(),
            &egress.settings,
            egress.own_uid,
            audit,
        )
        .map_err(|e| {
            Failure::new(
                crate::error::Code::SandboxUnavailable,
                format!("the network layer cannot be applied here: {e}; the plugin was not run"),
            )
        })?;
        tracing::debug!("egress proxy started");
        let (outcome, mut denials, ending) = spawned.run_observed(stop);
        let summary = helper.finish();
        tracing::debug!("egress proxy finished, every connection audited");
        network_denials(&summary, &mut denials);
        Ok(Ended {
            outcome,
            egress: Some(summary.to_json()),
            denials,
            ending,
        })
    })
}

/// issue 23: the proxy's refusals as the call's `network` denials. The proxy folds them
/// by target (the first 100, each with its first reason and a count); the ones past its
/// list count in the totals only. Connections dropped unread past the connection limit
/// are the limit's (`data.egress.refused_past_limit`), not a refused target.
fn network_denials(summary: &crate::egress::Summary, denials: &mut Denials) {
    denials.observed(crate::denials::Layer::Network);
    let mut listed_events = 0u64;
    for t in &summary.refused_targets {
        denials.network(&t.target, &t.reason, u64::from(t.count));
        listed_events += u64::from(t.count);
    }
    let unlisted = summary
        .refused_targets_total
        .saturating_sub(summary.refused_targets.len()) as u64;
    denials.unlisted(
        unlisted,
        u64::from(summary.refused).saturating_sub(listed_events),
    );
}

/// A Python class plugin's import path in the sandbox report: the directories the
/// plugin may read its modules from, and where they came from (the config, or the
/// caller's `PYTHONPATH`, with what of it was ignored).
fn with_python_path(mut summary: Value, plugin: &Plugin, runnable: &Runnable) -> Value {
    if let PluginKind::PythonClass {
        python_path,
        python_path_from,
        ..
    } = &plugin.kind
    {
        let mut report = match python_path_from {
            PythonPathFrom::Config => json!({ "from": "config", "paths": python_path }),
            PythonPathFrom::Environment(env) => env.report(),
        };
        if runnable.python_path != *python_path {
            report["snapshot"] = json!(runnable.python_path);
        }
        summary["python_path"] = report;
    }
    summary
}
