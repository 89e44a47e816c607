//! The native sandbox: one file per layer, behind `Policy → LayerReport`.
//!
//! [`prepare`] turns a plugin's [`policy::Policy`] into a [`Prepared`]
//! sandbox: every ruleset, BPF program, rlimit and id is computed in the
//! parent, and each layer says what it will enforce in a [`LayerReport`].
//! [`Prepared::apply_in_init`] and [`Prepared::apply_in_plugin`] then run in
//! the sandbox's init and in the plugin before its exec, and make only
//! async-signal-safe system calls, in the one order that works: read-only
//! mounts (which need the init's capabilities in its namespaces) → rlimits →
//! bounding set and credentials → parent-death signal → no_new_privs →
//! Landlock → seccomp (last, so it need not allow the setup).
//!
//! A layer that cannot be applied stops the call (exit 14) unless the policy
//! lists it in `allow_degraded`; then its report says `degraded` and why.

pub mod credentials;
pub mod grants;
pub mod host;
pub mod landlock;
pub mod landlock_audit;
pub mod limits;
pub mod mounts;
pub mod namespaces;
pub mod network;
pub mod policy;
pub mod seccomp;
pub mod shared_net;

use ::syscalls::{syscall, Sysno};
use host::Host;
use policy::{Layer, Policy};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the {} layer cannot be applied here: {reason}", layer.as_str())]
    Unavailable { layer: Layer, reason: String },
    #[error("seccomp profile: {0}")]
    Profile(#[from] seccomp::SeccompError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerState {
    /// Applied, as the detail says.
    Enforced,
    /// Could not be applied here and was skipped because `allow_degraded` names it.
    Degraded,
    /// Switched off by the config (only `network: true` does this).
    Lifted,
}

/// What one layer really puts in force for this call.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub layer: Layer,
    pub state: LayerState,
    pub detail: Value,
}

impl LayerReport {
    pub fn enforced(layer: Layer, detail: Value) -> Self {
        LayerReport {
            layer,
            state: LayerState::Enforced,
            detail,
        }
    }
    pub fn degraded(layer: Layer, reason: &str) -> Self {
        LayerReport {
            layer,
            state: LayerState::Degraded,
            detail: json!({ "reason": reason }),
        }
    }
}

/// The files a call needs besides the base system.
pub struct Paths<'a> {
    /// The call's private, writable working directory (its home), where the init
    /// mounts the call's tmpfs.
    pub workdir: &'a Path,
    /// Directories the plugin expects in its home (a Python plugin's `.cache`).
    pub home_dirs: &'a [&'a str],
    /// What the plugin must read and execute: its executable or module tree, the interpreter.
    pub plugin_files: Vec<PathBuf>,
    /// The seccomp profile, loaded once: the bytes the trust check hashed are the ones enforced.
    pub seccomp: &'a seccomp::Profile,
    /// This call's grants (its `x-upm-grant` arguments), opened.
    pub grants: &'a [grants::Grant],
    /// A pinned tree's snapshot in memory, which the init attaches where it says: see
    /// [`mounts::Verified`].
    pub verified: Option<&'a mounts::Verified>,
}

/// Everything the child needs, computed in the parent.
pub struct Prepared {
    pub namespaces: Option<namespaces::Plan>,
    /// The read-only view of the host, in the call's mount namespace.
    pub mounts: Option<mounts::Plan>,
    pub credentials: credentials::Plan,
    pub landlock: Option<landlock::Plan>,
    pub seccomp: Option<std::sync::Arc<seccomp::CompiledFilter>>,
    pub limits: limits::Plan,
    /// The egress listener the init sets up (issue 22; only with an allowlist).
    pub egress: Option<network::Plan>,
    pub reports: Vec<LayerReport>,
    pub allow_degraded: Vec<Layer>,
    /// issue 23: whose refusals the call reports.
    pub observe: Observe,
}

/// issue 23: which layers' refusals a call reports (`crate::denials`), or why not.
pub struct Observe {
    /// seccomp: the errnos are answered by upm as the filter's user-notification
    /// supervisor, with this context for the result.
    pub seccomp: Result<seccomp::notify::Context, String>,
    /// Landlock: the kernel's audit records of the call's domain (the token is in the
    /// Landlock plan); whether the audit is on is asked while the plugin runs.
    pub landlock: Result<(), String>,
}

/// Which step of the child's setup failed, for the error result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Sync = 1,
    Session,
    Stdio,
    Mounts,
    /// A write grant's mount (issue 24): its path no longer leads to upm's inode, or
    /// the clone failed.
    Grants,
    ReopenExec,
    Workdir,
    Limits,
    Credentials,
    ParentDeath,
    NoNewPrivs,
    Landlock,
    Seccomp,
    Fork,
    Exec,
    /// The egress listener in the call's network namespace (issue 22).
    Egress,
}

impl Step {
    pub fn from_u32(v: u32) -> Option<Step> {
        use Step::*;
        [
            Sync,
            Session,
            Stdio,
            Mounts,
            Grants,
            ReopenExec,
            Workdir,
            Limits,
            Credentials,
            ParentDeath,
            NoNewPrivs,
            Landlock,
            Seccomp,
            Fork,
            Exec,
            Egress,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }

    /// The layer a failing step belongs to, if any.
    pub fn layer(self) -> Option<Layer> {
        match self {
            Step::Mounts | Step::Grants | Step::ReopenExec => Some(Layer::Namespaces),
            Step::Limits => Some(Layer::Limits),
            Step::Credentials => Some(Layer::Credentials),
            Step::Landlock => Some(Layer::Landlock),
            Step::Seccomp => Some(Layer::Seccomp),
            Step::Egress => Some(Layer::Network),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Sync => "sync",
            Step::Session => "setsid",
            Step::Stdio => "stdio",
            Step::Mounts => "read_only_mounts",
            Step::Grants => "grant_mounts",
            Step::ReopenExec => "reopen_executable",
            Step::Workdir => "chdir",
            Step::Limits => "rlimits",
            Step::Credentials => "credentials",
            Step::ParentDeath => "parent_death_signal",
            Step::NoNewPrivs => "no_new_privs",
            Step::Landlock => "landlock",
            Step::Seccomp => "seccomp",
            Step::Fork => "fork",
            Step::Exec => "exec",
            Step::Egress => "egress_listener",
        }
    }
}

/// Builds every layer the policy asks for, or says which one cannot be had.
pub fn prepare(policy: &Policy, paths: &Paths<'_>, host: &Host) -> Result<Prepared, SandboxError> {
    let degradable = |layer: Layer| policy.allow_degraded.contains(&layer);
    let mut reports = Vec::new();

    let (credentials, cred_report) = credentials::prepare(&policy.user, host);
    if let Some(reason) = credentials::switch_refused(credentials.mode, host::suid_dumpable) {
        return Err(SandboxError::Unavailable {
            layer: Layer::Credentials,
            reason,
        });
    }
    reports.push(cred_report);

    let (ns_plan, mut ns_report) = namespaces::prepare(policy.network.is_host(), credentials.mode);
    let tmpfs = mounts::Tmpfs::new(
        policy.limits.disk_bytes,
        credentials.uid,
        credentials.gid,
        paths.home_dirs,
    );
    let mut mounts = mounts::prepare(paths.workdir, tmpfs, &policy.write_paths, paths.grants)
        .map_err(|reason| SandboxError::Unavailable {
            layer: Layer::Namespaces,
            reason,
        })?;
    if let Some(v) = paths.verified {
        mounts
            .attach_verified(v)
            .map_err(|reason| SandboxError::Unavailable {
                layer: Layer::Namespaces,
                reason,
            })?;
        ns_report.detail["verified"] = json!({
            "at": v.at(),
            "also_at": v.originals().iter().map(|o| &o.path).collect::<Vec<_>>(),
            "tmpfs_bytes": v.bytes,
            "inodes": v.inodes,
        });
    }
    ns_report.detail["host_files"] = json!("read-only mounts");
    ns_report.detail["writable_mounts"] = json!(mounts.writable());
    ns_report.detail["home"] = json!({
        "tmpfs_bytes": mounts.tmpfs().bytes,
        "inodes": mounts.tmpfs().inodes,
    });
    reports.push(ns_report);

    let mut read: Vec<PathBuf> = landlock::BASE_READ_PATHS
        .iter()
        .map(PathBuf::from)
        .collect();
    read.extend(paths.plugin_files.iter().cloned());
    read.extend(policy.read_paths.iter().cloned());
    let mut write = vec![paths.workdir.to_path_buf()];
    write.extend(policy.write_paths.iter().cloned());
    let landlock_observed = landlock_audit::can_read(host.euid, host.landlock_abi);
    let egress = network::Plan::for_policy(&policy.network);
    let spec = landlock::Spec {
        read,
        write,
        grants: paths.grants,
        verified: paths.verified,
        network: policy.network.is_host(),
        tcp_connect: egress.map(|e| e.port),
        host,
        best_effort: false,
        log_token: landlock_observed.is_ok().then(landlock_audit::new_token),
    };
    let landlock = match landlock::prepare(&spec) {
        Ok((plan, report)) => {
            reports.push(report);
            Some(plan)
        }
        Err(SandboxError::Unavailable { reason, .. }) if degradable(Layer::Landlock) => {
            reports.push(LayerReport::degraded(Layer::Landlock, &reason));
            None
        }
        Err(e) => return Err(e),
    };

    let seccomp = if !host.seccomp {
        let reason = "seccomp filtering is not available in this kernel";
        if !degradable(Layer::Seccomp) {
            return Err(SandboxError::Unavailable {
                layer: Layer::Seccomp,
                reason: reason.into(),
            });
        }
        reports.push(LayerReport::degraded(Layer::Seccomp, reason));
        None
    } else {
        let profile = paths.seccomp;
        let filter = profile.compiled(&seccomp::CompileOptions {
            deny_sockets: !policy.network.is_host(),
            allow_tcp: egress.is_some(),
        })?;
        let sockets = match (&policy.network, egress) {
            (policy::Network::Host, _) => "allowed",
            (_, Some(_)) => {
                "TCP over IPv4/IPv6 only (egress allowlist; stream socketpairs allowed)"
            }
            _ => "denied (stream socketpairs allowed)",
        };
        reports.push(LayerReport::enforced(
            Layer::Seccomp,
            json!({
                "profile": profile.name,
                // The built-in profile is no file: naming `default` here read as a path.
                "file": policy.seccomp_file(),
                "built_in": policy.seccomp_file().is_none(),
                "digest": profile.digest,
                "instructions": filter.instruction_count(),
                "sockets": sockets,
                "sysv_ipc": "denied",
                "io_uring_memfd_openat2": "denied",
                "setuid_setgid_modes": "denied",
            }),
        ));
        Some(filter)
    };

    if landlock.is_none() {
        // Landlock's ptrace scoping is what keeps the plugin out of host processes'
        // /proc/<pid>/root and /proc/<pid>/cwd, which lead to their writable mounts.
        for r in reports.iter_mut().filter(|r| r.layer == Layer::Namespaces) {
            r.detail["host_files"] = json!(
                "read-only mounts, but reachable writable through /proc/<pid>/root of host \
                 processes of the plugin's uid: Landlock, which keeps the plugin out of them, \
                 is degraded"
            );
        }
    }
    // The process's shared empty network namespace, where nothing can reach anything:
    // only with no network at all (an egress allowlist has its own, with the proxy's
    // listener) and while seccomp refuses sockets and Landlock scopes abstract unix sockets.
    let no_network = matches!(policy.network, policy::Network::None);
    let shared_net =
        shared_net::get().filter(|_| no_network && landlock.is_some() && seccomp.is_some());
    let mut ns_plan = ns_plan;
    if shared_net.is_some() {
        ns_plan.clone_flags &= !libc::CLONE_NEWNET;
        ns_plan.shared_net = true;
        for r in reports.iter_mut().filter(|r| r.layer == Layer::Namespaces) {
            if let Some(created) = r.detail["created"].as_array_mut() {
                created.retain(|n| n != "net");
            }
            r.detail["joined"] = json!(["net"]);
        }
    }
    let mut net_report = network::report(&policy.network, landlock.is_some(), seccomp.is_some());
    if !policy.network.is_host() {
        net_report.detail["namespace"] = match shared_net {
            Some(s) => json!({ "kind": "shared", "inode": s.inode }),
            None => json!({ "kind": "own" }),
        };
    }
    reports.push(net_report);
    // An egress allowlist is never degraded: without seccomp's socket rule or Landlock's
    // port rule the plugin could reach more than its list (see `network`).
    if egress.is_some() && (landlock.is_none() || seccomp.is_none()) {
        return Err(SandboxError::Unavailable {
            layer: Layer::Network,
            reason: "an egress allowlist needs both seccomp's socket rule and Landlock's TCP \
                     port rule, and is never degraded"
                .into(),
        });
    }
    if !policy.network.is_host()
        && (landlock.is_none() || seccomp.is_none())
        && !degradable(Layer::Network)
    {
        return Err(SandboxError::Unavailable {
            layer: Layer::Network,
            reason: "no network needs both the seccomp socket rule and Landlock's TCP denial"
                .into(),
        });
    }

    let (limits, mut limits_report) = limits::prepare(&policy.limits);
    limits_report.detail["disk_inodes"] = json!(mounts.tmpfs().inodes);
    if let Some(settings) = policy.network.allowlist() {
        limits_report.detail["network"] = settings.limits_json();
    }
    reports.push(limits_report);

    let observe = Observe {
        seccomp: match &seccomp {
            None => Err("the seccomp layer is degraded".into()),
            Some(_) if !host.seccomp_user_notif => Err(seccomp::notify::supported()
                .err()
                .unwrap_or_else(|| "no seccomp user notification here".into())),
            Some(f) if !f.can_notify() => Err("the filter is a stack of programs".into()),
            Some(_) => Ok(seccomp::notify::Context {
                profile: paths.seccomp.name.clone(),
                deny_sockets: !policy.network.is_host(),
            }),
        },
        landlock: match &landlock {
            None => Err("the Landlock layer is degraded".into()),
            Some(_) => landlock_observed,
        },
    };

    Ok(Prepared {
        namespaces: Some(ns_plan),
        mounts: Some(mounts),
        credentials,
        landlock,
        seccomp,
        limits,
        egress,
        reports,
        allow_degraded: policy.allow_degraded.clone(),
        observe,
    })
}

impl Prepared {
    /// Called when a root upm cannot create the call's user namespace: the plugin still
    /// gets its uid and the other namespaces, but `max_processes` then counts every
    /// process of that uid, and the report says so.
    pub fn without_user_namespace(&mut self, reason: &str) {
        if let Some(n) = &mut self.namespaces {
            n.clone_flags &= !libc::CLONE_NEWUSER;
            n.user_namespace = false;
        }
        for r in &mut self.reports {
            if r.layer != Layer::Namespaces {
                continue;
            }
            if let Some(d) = r.detail.as_object_mut() {
                if let Some(created) = d.get_mut("created").and_then(Value::as_array_mut) {
                    created.retain(|n| n != "user");
                }
                d.remove("user_namespace_owner");
                d.insert("process_count".into(), json!(namespaces::PER_UID));
                d.insert("user_namespace".into(), json!(reason));
            }
        }
    }

    /// Called when the cloning thread cannot join the shared network namespace: the
    /// call creates one of its own, and the report says so.
    pub fn own_network_namespace(&mut self, reason: &str) {
        if let Some(n) = self.namespaces.as_mut().filter(|n| n.shared_net) {
            n.shared_net = false;
            n.clone_flags |= libc::CLONE_NEWNET;
        } else {
            return;
        }
        for r in &mut self.reports {
            if r.layer == Layer::Namespaces {
                if let Some(d) = r.detail.as_object_mut() {
                    d.remove("joined");
                    if let Some(created) = d.get_mut("created").and_then(Value::as_array_mut) {
                        created.push(json!("net"));
                    }
                }
            }
            if r.layer == Layer::Network {
                r.detail["namespace"] = json!({ "kind": "own", "shared": reason });
            }
        }
    }

    /// Called when the namespaces cannot be created: allowed only if degradable.
    pub fn without_namespaces(&mut self, reason: &str) -> Result<(), SandboxError> {
        // The egress listener would be on the host's loopback, and the plugin on the
        // host's network: an allowlist never goes on without its namespace.
        if self.egress.is_some() {
            return Err(SandboxError::Unavailable {
                layer: Layer::Network,
                reason: format!("an egress allowlist needs the call's network namespace: {reason}"),
            });
        }
        if !self.allow_degraded.contains(&Layer::Namespaces) {
            return Err(SandboxError::Unavailable {
                layer: Layer::Namespaces,
                reason: reason.into(),
            });
        }
        self.namespaces = None;
        self.mounts = None;
        if self.credentials.mode == credentials::Mode::UserNamespace {
            self.credentials.mode = credentials::Mode::KeepCaller;
        }
        for r in &mut self.reports {
            if r.layer == Layer::Namespaces {
                *r = LayerReport::degraded(Layer::Namespaces, reason);
            }
            if r.layer == Layer::Network {
                if let Some(d) = r.detail.as_object_mut() {
                    d.insert("network_namespace".into(), json!(false));
                }
            }
            if r.layer == Layer::Limits {
                if let Some(d) = r.detail.as_object_mut() {
                    // The home tmpfs needs the call's mount namespace.
                    d.insert(
                        "disk_bytes".into(),
                        json!("not enforced: no mount namespace (the home is on the host's disk)"),
                    );
                    d.remove("disk_inodes");
                }
            }
            if r.layer == Layer::Credentials {
                if let Some(d) = r.detail.as_object_mut() {
                    if self.credentials.mode == credentials::Mode::KeepCaller {
                        d.insert("mode".into(), json!("caller_uid"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The sandbox as the result and the audit report it.
    pub fn summary(&self) -> Value {
        let mut layers = serde_json::Map::new();
        for r in &self.reports {
            // The detail cloned, not serialized anew (`json!` would: ~2 % of a call).
            let mut layer = serde_json::Map::new();
            layer.insert("state".into(), json!(r.state));
            layer.insert("detail".into(), r.detail.clone());
            layers.insert(r.layer.as_str().into(), Value::Object(layer));
        }
        let mut summary = serde_json::Map::new();
        summary.insert("backend".into(), json!("native"));
        summary.insert("layers".into(), Value::Object(layers));
        Value::Object(summary)
    }

    /// The first half, in the sandbox's init: limits, credentials, parent-death
    /// signal, no_new_privs. Async-signal-safe only, and through raw system calls that
    /// never write `errno` (the init shares upm's memory): every plan was built in the
    /// parent and applies itself.
    pub fn apply_in_init(
        &self,
        parent_pidfd: libc::c_int,
        go_pipe: libc::c_int,
    ) -> Result<(), (Step, i32)> {
        self.limits.apply().map_err(|e| (Step::Limits, e))?;
        self.credentials
            .apply()
            .map_err(|e| (Step::Credentials, e))?;
        // The credential change cleared any earlier parent-death signal: set it now, then
        // make sure the parent did not die before it was set. Two signs, either enough:
        // the pidfd of the spawning thread turns readable only after the kernel has
        // reparented its children (a signal set in between is never sent), and the go
        // pipe hangs up when upm's last thread closes its files, before that; but in a
        // batch another call's init may briefly hold a copy of the pipe's write end.
        // SAFETY: plain prctl with integer arguments.
        sys(unsafe { syscall!(Sysno::prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })
            .map_err(|e| (Step::ParentDeath, e))?;
        if parent_gone(parent_pidfd) || pipe_hung_up(go_pipe) {
            return Err((Step::ParentDeath, libc::ESRCH));
        }
        // SAFETY: plain prctl with integer arguments.
        sys(unsafe { syscall!(Sysno::prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
            .map_err(|e| (Step::NoNewPrivs, e))?;
        Ok(())
    }

    /// The second half, in the plugin's own process just before its exec: Landlock,
    /// `before_seccomp` (where the plugin may wait for upm's go), then seccomp. Not in
    /// the init: the init shares upm's memory, and a plugin in a
    /// Landlock domain the init is outside of can neither trace it (ptrace,
    /// process_vm_*, /proc/PID/mem) nor signal it. Same rules as [`Self::apply_in_init`].
    ///
    /// issue 23: when upm supervises the call's seccomp errnos, the filter's listener
    /// (or `-errno` of why there is none) is stored in `listener` for the init to hand
    /// over to upm.
    pub fn apply_in_plugin(
        &self,
        listener: &std::sync::atomic::AtomicI32,
        before_seccomp: impl FnOnce() -> Result<(), (Step, i32)>,
    ) -> Result<(), (Step, i32)> {
        if let Some(l) = &self.landlock {
            l.apply().map_err(|e| (Step::Landlock, e))?;
        }
        before_seccomp()?;
        if let Some(s) = &self.seccomp {
            let applied = if self.observe.seccomp.is_ok() {
                s.apply_notifying(listener)
            } else {
                s.apply()
            };
            applied.map_err(|e| (Step::Seccomp, e))?;
        }
        Ok(())
    }
}

/// A pidfd of the parent thread turns readable when it has exited.
pub(crate) fn parent_gone(fd: libc::c_int) -> bool {
    poll_now(fd) != 0
}

/// The read end of a pipe whose every write end has closed.
fn pipe_hung_up(fd: libc::c_int) -> bool {
    poll_now(fd) & !libc::POLLIN != 0
}

/// The events `fd` has right now (POLLIN, POLLHUP, POLLNVAL...); an error counts as
/// POLLERR, so that callers fail closed. Async-signal-safe.
fn poll_now(fd: libc::c_int) -> libc::c_short {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: one valid pollfd and a zero timeout on our stack; no signal mask.
    let n = unsafe {
        syscall!(
            Sysno::ppoll,
            &mut p as *mut libc::pollfd,
            1,
            &zero as *const libc::timespec,
            0,
            0
        )
    };
    match n {
        Ok(0) => 0,
        Ok(_) => p.revents,
        Err(_) => libc::POLLERR,
    }
}

/// A raw system call's result with its errno as a plain number, for code that must
/// not touch `errno` (see [`Prepared::apply_in_init`]).
pub fn sys(r: Result<usize, ::syscalls::Errno>) -> Result<usize, i32> {
    r.map_err(::syscalls::Errno::into_raw)
}

/// The calling thread's errno, without allocating.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
