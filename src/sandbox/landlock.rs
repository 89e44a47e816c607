//! Filesystem and network access control with Landlock.
//!
//! The ruleset is built and every path opened in the parent; the child only
//! calls `landlock_restrict_self` on the ruleset's descriptor. The crate is
//! used with `HardRequirement`, so a kernel that cannot enforce every handled
//! right makes `prepare` fail instead of silently downgrading.

use super::host::Host;
use super::policy::Layer;
use super::{sys, LayerReport, SandboxError};
use ::syscalls::{syscall, Sysno};
use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};
use serde_json::json;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// The ABI whose rights upm handles: V6 brings TCP rules (V4), device ioctl (V5) and scoping (V6).
const TARGET_ABI: ABI = ABI::V6;

/// Paths every dynamic executable (and upm's Python runner) needs to read.
pub const BASE_READ_PATHS: [&str; 9] = [
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
];

pub struct Spec<'a> {
    /// Read (and execute) access.
    pub read: Vec<PathBuf>,
    /// Full access: the private working directory and any configured write paths.
    pub write: Vec<PathBuf>,
    /// The call's grants: each rule made from the descriptor upm opened.
    pub grants: &'a [super::grants::Grant],
    /// A pinned tree's snapshot in memory (read access), attached in the call's namespace
    /// at its `verified/` path and over the trees' own directories. The rules must be on
    /// the copy's own directories: Landlock skips a covered mount point's own rules, and
    /// a path through a root's copy attached over its tree never passes the tmpfs's root.
    pub verified: Option<&'a super::mounts::Verified>,
    pub network: bool,
    /// With an egress allowlist (issue 22): the one TCP port the plugin may connect to
    /// (the proxy's, in its own network namespace); still no bind.
    pub tcp_connect: Option<u16>,
    pub host: &'a Host,
    pub best_effort: bool,
    /// issue 23: the name the plugin's process takes just before it restricts itself,
    /// by which upm finds the call's domain in the kernel's audit records
    /// (`landlock_audit`); `None` when upm does not read them.
    pub log_token: Option<[u8; 16]>,
}

pub struct Plan {
    pub ruleset: OwnedFd,
    /// The rights on the call's home, for the rule the init adds on its tmpfs (whose
    /// root is a new inode: a rule on the directory it covers does not reach it).
    home_access: u64,
    /// `landlock_restrict_self`'s flags: with ABI 7, denials after the exec are logged.
    restrict_flags: u32,
    log_token: Option<[u8; 16]>,
}

const LANDLOCK_RULE_PATH_BENEATH: usize = 1;

/// The kernel's `struct landlock_path_beneath_attr` (packed).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

pub fn prepare(spec: &Spec<'_>) -> Result<(Plan, LayerReport), SandboxError> {
    let unavailable = |reason: String| SandboxError::Unavailable {
        layer: Layer::Landlock,
        reason,
    };
    if spec.host.landlock_abi == 0 {
        return Err(unavailable(
            "Landlock is not supported or not enabled by this kernel".into(),
        ));
    }
    let level = if spec.best_effort {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(|e| unavailable(e.to_string()))?;
    if !spec.network {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(TARGET_ABI))
            .map_err(|e| unavailable(e.to_string()))?
            .scope(Scope::AbstractUnixSocket)
            .map_err(|e| unavailable(e.to_string()))?;
    }
    ruleset = ruleset
        .scope(Scope::Signal)
        .map_err(|e| unavailable(e.to_string()))?;
    let mut created = ruleset.create().map_err(|e| unavailable(e.to_string()))?;

    let read_dir = AccessFs::from_read(TARGET_ABI);
    let mut readable = Vec::new();
    for p in &spec.read {
        if add_rule(&mut created, p, read_dir)? {
            readable.push(reported(p));
        }
    }
    if let Some(v) = spec.verified {
        let at = v.at();
        created
            .as_mut()
            .add_rule(PathBeneath::new(v.root(), read_dir))
            .map_err(|e| unavailable(format!("rule for {}: {e}", at.display())))?;
        readable.push(at.display().to_string());
        for o in v.originals() {
            let copy = at.join(o.index.to_string());
            let rule = |e: String| unavailable(format!("rule for {}: {e}", copy.display()));
            let dir = rustix::fs::openat(
                v.root(),
                o.index.to_string(),
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| rule(e.to_string()))?;
            created
                .as_mut()
                .add_rule(PathBeneath::new(&dir, read_dir))
                .map_err(|e| rule(e.to_string()))?;
            readable.push(o.path.display().to_string());
        }
    }
    if let (Some(port), false) = (spec.tcp_connect, spec.network) {
        created
            .as_mut()
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|e| unavailable(format!("rule for TCP port {port}: {e}")))?;
    }
    let mut writable = Vec::new();
    for p in &spec.write {
        if add_rule(&mut created, p, AccessFs::from_all(TARGET_ABI))? {
            writable.push(p.display().to_string());
        }
    }
    let mut granted = Vec::new();
    for g in spec.grants {
        let access = match g.access {
            super::grants::Access::Read => read_dir,
            super::grants::Access::Write => AccessFs::from_all(TARGET_ABI),
        };
        add_fd_rule(&mut created, g, access)?;
        granted.push(json!({ "path": g.real, "access": g.access.as_str() }));
    }
    // /dev/null is where well-behaved programs send what they discard.
    add_rule(
        &mut created,
        Path::new("/dev/null"),
        AccessFs::ReadFile | AccessFs::WriteFile,
    )?;
    let fd: Option<OwnedFd> = created.into();
    let ruleset = fd.ok_or_else(|| unavailable("the kernel refused to create a ruleset".into()))?;
    // At 10 or above, where the child's dup2s onto its standard descriptors cannot land.
    let ruleset = nix::fcntl::fcntl(&ruleset, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nothing else owns.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .map_err(|e| unavailable(format!("cannot move the ruleset descriptor: {e}")))?;
    let abi = spec.host.landlock_abi.min(TARGET_ABI as i32);
    let report = LayerReport::enforced(
        Layer::Landlock,
        json!({
            "abi": spec.host.landlock_abi,
            "handled_abi": abi,
            "fully_enforced": !spec.best_effort || spec.host.landlock_abi >= TARGET_ABI as i32,
            "read": readable,
            "write": writable,
            "grants": granted,
            "tcp_bind_connect": match (spec.network, spec.tcp_connect) {
                (true, _) => "allowed".to_owned(),
                (false, Some(port)) => format!("connect to port {port} only (the egress proxy), no bind"),
                (false, None) => "denied".to_owned(),
            },
            "scopes": if spec.network { json!(["signal"]) } else { json!(["abstract_unix_socket", "signal"]) },
        }),
    );
    // Denials after the plugin's exec go to the kernel's audit (when it is on).
    let restrict_flags = if spec.host.landlock_abi >= super::landlock_audit::LOGGING_ABI {
        super::landlock_audit::LOG_NEW_EXEC_ON
    } else {
        0
    };
    let plan = Plan {
        ruleset,
        home_access: AccessFs::from_all(TARGET_ABI).bits(),
        restrict_flags,
        log_token: spec.log_token,
    };
    Ok((plan, report))
}

/// A rule on one of upm's descriptors (the verified plugin file) is reported by the
/// file's path: `/proc/self/fd/6` would tell an auditor nothing.
fn reported(p: &Path) -> String {
    match p
        .starts_with("/proc/self/fd")
        .then(|| std::fs::read_link(p))
    {
        Some(Ok(target)) => target.display().to_string(),
        _ => p.display().to_string(),
    }
}

/// Adds a path rule; a path that does not exist is skipped (`false`), any other failure is an error.
fn add_rule(
    created: &mut landlock::RulesetCreated,
    path: &Path,
    access: landlock::BitFlags<AccessFs>,
) -> Result<bool, SandboxError> {
    let fd = match PathFd::new(path) {
        Ok(fd) => fd,
        Err(_) if !path.exists() => return Ok(false),
        Err(e) => {
            return Err(SandboxError::Unavailable {
                layer: Layer::Landlock,
                reason: format!("cannot open {}: {e}", path.display()),
            })
        }
    };
    // The kind of what was opened, not of whatever the path names by now.
    let is_dir = nix::sys::stat::fstat(fd.as_fd()).is_ok_and(|st| {
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
            == nix::sys::stat::SFlag::S_IFDIR
    });
    let access = if is_dir {
        access
    } else {
        access & AccessFs::from_file(TARGET_ABI)
    };
    created
        .as_mut()
        .add_rule(PathBeneath::new(fd, access))
        .map_err(|e| SandboxError::Unavailable {
            layer: Layer::Landlock,
            reason: format!("rule for {}: {e}", path.display()),
        })?;
    Ok(true)
}

/// A grant's rule, on upm's own descriptor for it (never its name again).
fn add_fd_rule(
    created: &mut landlock::RulesetCreated,
    g: &super::grants::Grant,
    access: landlock::BitFlags<AccessFs>,
) -> Result<(), SandboxError> {
    let access = if g.dir {
        access
    } else {
        access & AccessFs::from_file(TARGET_ABI)
    };
    created
        .as_mut()
        .add_rule(PathBeneath::new(g.fd.as_fd(), access))
        .map_err(|e| SandboxError::Unavailable {
            layer: Layer::Landlock,
            reason: format!("rule for the grant {}: {e}", g.real.display()),
        })?;
    Ok(())
}

impl Plan {
    /// Async-signal-safe: one raw syscall on a descriptor opened in the parent.
    /// no_new_privs must already be set.
    pub fn apply(&self) -> Result<(), i32> {
        if let Some(token) = &self.log_token {
            // The domain's audit record names its creator's task as it is now; the
            // exec then renames the task after the program. A failure only costs the
            // call its Landlock denials.
            // SAFETY: a NUL-terminated 16-byte name owned by this plan.
            let _ = unsafe { syscall!(Sysno::prctl, libc::PR_SET_NAME, token.as_ptr(), 0, 0, 0) };
        }
        // SAFETY: the descriptor is a valid Landlock ruleset owned by this plan.
        sys(unsafe {
            syscall!(
                Sysno::landlock_restrict_self,
                self.ruleset.as_raw_fd(),
                self.restrict_flags
            )
        })?;
        Ok(())
    }

    /// In the init: full access beneath `home` (the call's tmpfs, just mounted) in this
    /// call's own ruleset, before the plugin restricts itself with it. Async-signal-safe.
    pub fn allow_home(&self, home: RawFd) -> Result<(), i32> {
        let attr = PathBeneathAttr {
            allowed_access: self.home_access,
            parent_fd: home,
        };
        // SAFETY: a valid, packed path_beneath attribute on our stack; the ruleset is
        // this call's alone (built per call in the parent).
        sys(unsafe {
            syscall!(
                Sysno::landlock_add_rule,
                self.ruleset.as_raw_fd(),
                LANDLOCK_RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32
            )
        })?;
        Ok(())
    }

    /// The name under which the call's domain shows in the kernel's audit, if upm reads it.
    pub fn log_token(&self) -> Option<&[u8; 16]> {
        self.log_token.as_ref()
    }

    /// The ruleset's descriptor, which the child must keep open until it applies it.
    pub fn fd(&self) -> RawFd {
        self.ruleset.as_raw_fd()
    }
}
