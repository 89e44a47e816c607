//! Getting a plugin ready to start: its private directory, its verified
//! executable (and verified tree), its argv, environment and stdin.

use crate::config::{Config, Plugin, PluginKind, PythonPathFrom};
use crate::integrity::{self, Executable, IntegrityError};
use crate::request::Request;
use crate::spawn::Launch;
use serde_json::json;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PYTHON_RUNNER: &str = include_str!("../python/upm_runner.py");

/// Why a plugin could not be made ready to start (its result code: `crate::codes`).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot create the call's private directory: {0}")]
    Workdir(#[source] std::io::Error),
    /// A command or interpreter that is not there (or not a file) any more.
    #[error("plugin \"{plugin}\": {why}; the plugin was not run")]
    NotFound { plugin: String, why: String },
    /// The caller's `PYTHONPATH` cannot be used (UPM's sentence for the import).
    #[error("{0} (its python path is the caller's PYTHONPATH); the plugin was not run")]
    PythonPath(String),
    /// A `python` that is a symlink out of its directory and no virtualenv's.
    #[error("plugin \"{plugin}\": {why}; the plugin was not run")]
    PythonSymlink { plugin: String, why: String },
    #[error("plugin \"{0}\": a command or setting contains a NUL byte")]
    Nul(String),
    #[error("the plugin's project_root {0}; the plugin was not run")]
    ProjectRoot(String),
    #[error("{0}")]
    Stdin(#[source] serde_json::Error),
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
}

/// The call's private directory, removed when the call ends:
///
/// ```text
/// <workdir_root>/upm-<request id>-<32 random hex>/   owned by upm, 0755 (`/tmp` unless configured)
///     home/                          the plugin's cwd and $TMPDIR, owned by the plugin's uid, 0700
///     home/.cache/                   a Python class plugin's default cache_dir, ".cache"
///                                    as UPM passed it (only for those)
///     verified/                      owned by upm, read-only to the plugin, only when needed:
///     verified/<root index>/...        the snapshot of a pinned plugin tree, or
///     verified/tree/<root index>/...   a root upm's of a Python tree: a tmpfs attached over
///                                    `verified/tree/` in the call's mount namespace (an
///                                    empty directory on the host)
///     verified/exec/<name>             the copy of a pinned executable (or, with trust
///                                    on, of the Python interpreter) that is exec'd
/// ```
///
/// or, for a call that needs nothing of its own on the host's disk, the kept shared
/// mount point `<workdir_root>/upm-homes-<euid>/home` ([`SHARED_NAME`]). Either way the
/// plugin's home is a tmpfs mounted over `home/` in the call's own mount namespace.
pub struct Workdir {
    pub root: PathBuf,
    pub home: PathBuf,
    pub verified: PathBuf,
    /// The mount point shared by the calls that need nothing of their own on the host's
    /// disk ([`Workdir::shared`]): each call's home tmpfs is mounted over the same empty
    /// `home`, in the call's own mount namespace, so no call sees another's; it is never
    /// removed.
    pub shared: bool,
}

/// The directory every call that needs nothing of its own on the host's disk (no
/// verified copy or snapshot, no script link) mounts its home tmpfs over, in its own
/// mount namespace: `<workdir_root>/upm-homes-<euid>/home`, made once and kept, empty
/// (nothing is ever written on the host's side of the mount). Making and removing two
/// directories per call on a disk such as this machine's ext4 (which walks past every
/// recently freed inode to allocate one) cost a batch more than half its rate and a
/// one-shot call about 0.15 ms; and a killed upm leaves nothing behind.
///
/// An existing one is used only if it is upm's own: both levels real directories (not
/// links), owned by upm's euid, writable by no one else (`home` 0700). In a sticky
/// `/tmp` no other user can then replace either. Otherwise the call makes its own.
const SHARED_NAME: &str = "upm-homes";

/// The last `workdir_root` whose shared mount point was checked, and its directory.
static SHARED: std::sync::Mutex<Option<(PathBuf, PathBuf)>> = std::sync::Mutex::new(None);

impl Workdir {
    /// The shared mount point under `under` (see [`SHARED_NAME`]), made if missing;
    /// `None` (with a warning) when what is there is not upm's own.
    pub fn shared(under: &Path) -> Option<Workdir> {
        let mut known = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let root = match &*known {
            Some((u, root)) if u == under => root.clone(),
            _ => {
                let root = under.join(format!("{SHARED_NAME}-{}", nix::unistd::geteuid()));
                if let Err(why) = shared_mount_point(&root) {
                    tracing::warn!(
                        "not using {} as the calls' shared mount point ({why}): each call makes its own directory",
                        root.display()
                    );
                    return None;
                }
                *known = Some((under.to_path_buf(), root.clone()));
                root
            }
        };
        Some(Workdir {
            home: root.join("home"),
            verified: root.join("verified"),
            root,
            shared: true,
        })
    }

    pub fn create(
        under: &Path,
        request_id: &str,
        owner: Option<(u32, u32)>,
        with_cache: bool,
    ) -> Result<Workdir, LaunchError> {
        Workdir::make(under, request_id, owner, with_cache).map_err(LaunchError::Workdir)
    }

    fn make(
        under: &Path,
        request_id: &str,
        owner: Option<(u32, u32)>,
        with_cache: bool,
    ) -> std::io::Result<Workdir> {
        let safe: String = request_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        // 122 random bits: another call's plugin (same uid) that learnt nothing of the
        // path cannot guess its way to this one (Landlock leaves chmod and stat unchecked).
        let random = uuid::Uuid::new_v4().simple().to_string();
        let root = under.join(format!("upm-{safe}-{random}"));
        std::fs::DirBuilder::new().mode(0o755).create(&root)?;
        // 0755 whatever upm's umask: the plugin must traverse it to its home.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let dir = Workdir {
            home: root.join("home"),
            verified: root.join("verified"),
            root,
            shared: false,
        };
        let b = |mode| {
            let mut b = std::fs::DirBuilder::new();
            b.mode(mode);
            b
        };
        let mut private = vec![dir.home.clone()];
        if with_cache {
            private.push(dir.home.join(DEFAULT_CACHE_DIR));
        }
        for d in &private {
            b(0o700).create(d)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(d, Some(uid), Some(gid))?;
            }
        }
        Ok(dir)
    }
}

/// Makes (if missing) and checks the shared mount point `root`/home: see [`SHARED_NAME`].
fn shared_mount_point(root: &Path) -> Result<(), String> {
    // Exactly 0755 whatever the umask: a plugin's uid must pass through it to its home
    // (one made 0700 under umask 077 broke every later call).
    crate::files::own_dir_exact(root, 0o755)?;
    crate::files::own_dir(&root.join("home"), 0o700, 0o077)
}

impl Workdir {
    /// Removes the directory and all the plugin left in it; an error says why some
    /// of it stays (the caller audits that).
    pub fn remove(mut self) -> Result<(), crate::files::RemoveError> {
        if self.shared {
            return Ok(());
        }
        crate::files::remove_tree(&std::mem::take(&mut self.root))
    }
}

impl Drop for Workdir {
    /// A call refused after its directory was made: nothing ran in it.
    fn drop(&mut self) {
        if !self.shared && !self.root.as_os_str().is_empty() {
            let _ = crate::files::remove_tree(&self.root);
        }
    }
}

/// A plugin resolved to exactly what will run.
pub struct Runnable {
    pub exe: Executable,
    pub argv: Vec<String>,
    /// For a Python class plugin: the import path (the verified snapshot when pinned).
    pub python_path: Vec<PathBuf>,
    /// What the plugin must be able to read besides the base system.
    pub readable: Vec<PathBuf>,
    /// Digest of the plugin's tree, when one was read.
    pub manifest_sha256: Option<String>,
    /// The verified snapshot of a pinned tree (a Python plugin's, or a command's
    /// directory), in memory: attached over the call's `verified/tree/` in its own mount
    /// namespace (kept open until the call has ended).
    pub verified: Option<crate::sandbox::mounts::Verified>,
}

/// A Python class plugin's `cache_dir` when the call names none: UPM's default,
/// relative to the plugin's working directory (the call's private `home/`).
pub const DEFAULT_CACHE_DIR: &str = ".cache";

/// Where, under the call's `verified/` directory, a single vouched-for executable is
/// copied (tree snapshots are `verified/<root index>/` on disk).
const EXEC_DIR: &str = "exec";
/// Where, under the call's `verified/`, a tree's snapshot in memory is attached.
const TREE_DIR: &str = "tree";

/// Verifies the plugin's files and opens what will be exec'd.
///
/// An executable something vouches for is copied into the call's root-owned
/// `verified/` directory, hashed from exactly the bytes copied, and the copy is what
/// runs: a pinned command (`sha256`) and, when `copy_interpreter` (trust is on: the
/// signature lists it), a Python class plugin's interpreter. The `sha256` pin itself is
/// compared by [`check_pin`], after the caller has compared the digest with the
/// signature. A pinned tree's snapshot (a Python plugin's, a command's directory) is
/// made in memory when `in_memory` (the call cannot go on without its own mount
/// namespace, where the init attaches it), on the host's disk under `verified/` otherwise.
pub fn resolve(
    plugin: &Plugin,
    workdir: &Workdir,
    copy_interpreter: bool,
    in_memory: bool,
) -> Result<Runnable, LaunchError> {
    let not_found = |exe: &Path| {
        crate::config::command_not_found(exe).map_or(Ok(()), |why| {
            Err(LaunchError::NotFound {
                plugin: plugin.name.clone(),
                why,
            })
        })
    };
    match &plugin.kind {
        PluginKind::Command { argv } => {
            let original = PathBuf::from(&argv[0]);
            not_found(&original)?;
            let mut verified = None;
            let (exe, readable, manifest_sha256) = match (&plugin.manifest_sha256, &plugin.sha256) {
                (Some(pin), _) => {
                    let roots = vec![original.parent().unwrap_or(Path::new("/")).to_path_buf()];
                    let m = integrity::manifest(&roots)?;
                    m.check(&roots, pin)?;
                    let name = original.file_name().unwrap_or_default();
                    match in_memory
                        .then(|| snapshot_in_memory(&m, &roots, plugin, workdir))
                        .transpose()?
                        .flatten()
                    {
                        // Its rule is on the snapshot's own root (`sandbox::Paths::verified`).
                        Some(v) => {
                            let rel = Path::new("0").join(name);
                            let shown = v.at().join(&rel);
                            let exe =
                                integrity::open_in_snapshot(v.root(), &rel, &shown, &original)?;
                            verified = Some(v);
                            (exe, Vec::new(), Some(m.digest))
                        }
                        None => {
                            let snap = m.snapshot(1, &workdir.verified)?;
                            let mut exe = integrity::open_executable(&snap[0].join(name), None)?;
                            exe.source = original.clone();
                            (exe, snap, Some(m.digest))
                        }
                    }
                }
                (None, Some(_)) => {
                    let exe = verified_copy(&original, workdir)?;
                    // A memfd needs no Landlock rule (nor can have one): it lies on the
                    // kernel's internal mount, which Landlock leaves alone.
                    let readable = if exe.sealed {
                        vec![]
                    } else {
                        vec![exe.path.clone()]
                    };
                    (exe, readable, None)
                }
                (None, None) => {
                    let exe = integrity::open_unpinned(&original)?;
                    // Landlock's rule must name the opened inode, not whatever the path
                    // names by the time the sandbox is prepared (it may have been swapped).
                    let verified = format!("/proc/self/fd/{}", exe.fd.as_raw_fd());
                    (exe, vec![PathBuf::from(verified)], None)
                }
            };
            Ok(Runnable {
                exe,
                argv: argv.clone(),
                python_path: Vec::new(),
                readable,
                manifest_sha256,
                verified,
            })
        }
        PluginKind::PythonClass {
            python_path,
            python_path_from,
            module,
            python,
            ..
        } => {
            if let PythonPathFrom::Environment(env) = python_path_from {
                if let Some(problem) = &env.problem {
                    return Err(LaunchError::PythonPath(crate::compat::cannot_import(
                        module, problem,
                    )));
                }
            }
            // The tree is checked on every call, and its digest goes to the audit log: a
            // pinned one is read whole (the snapshot is made of what was hashed), an
            // unpinned one only while its files' identities are not known.
            let (python_path, verified, digest) = match &plugin.manifest_sha256 {
                Some(pin) => {
                    let m = integrity::manifest(python_path)?;
                    m.check(python_path, pin)?;
                    let n = python_path.len();
                    match in_memory
                        .then(|| snapshot_in_memory(&m, python_path, plugin, workdir))
                        .transpose()?
                    {
                        Some(Some(v)) => {
                            let roots = (0..n).map(|i| v.at().join(i.to_string()));
                            (roots.collect(), Some(v), m.digest)
                        }
                        _ => (m.snapshot(n, &workdir.verified)?, None, m.digest),
                    }
                }
                None => (
                    python_path.clone(),
                    None,
                    integrity::tree_digest(python_path)?,
                ),
            };
            not_found(&python.path)?;
            if let Some(why) = python.symlink_problem() {
                return Err(LaunchError::PythonSymlink {
                    plugin: plugin.name.clone(),
                    why,
                });
            }
            if let Some(venv) = &python.venv {
                integrity::check_venv(venv)?;
            }
            let exe = if copy_interpreter {
                verified_copy(&python.exe, workdir)?
            } else {
                integrity::open_unpinned(&python.exe)?
            };
            // In memory, the snapshot's rule is on its own root (`sandbox::Paths::verified`):
            // its roots exist only in the call's namespace.
            let mut readable = match &verified {
                Some(_) => Vec::new(),
                None => python_path.clone(),
            };
            if !exe.sealed {
                readable.push(exe.path.clone());
            }
            readable.extend(python.venv.iter().cloned());
            Ok(Runnable {
                exe,
                argv: Vec::new(),
                python_path,
                readable,
                manifest_sha256: Some(digest),
                verified,
            })
        }
    }
}

/// A pinned tree's snapshot in a detached tmpfs of its own size, sealed read-only, and the
/// empty directory of upm's on the host (`verified/tree/`, 0755) where the init attaches
/// it (beside `verified/exec/`, where a verified interpreter may be copied on disk), and
/// each root's copy over the root itself. `None` where upm may not make a tmpfs (an
/// unprivileged upm, outside any user namespace of its own): the snapshot is then made on
/// the host's disk, as before, and found at its `verified/` path only.
fn snapshot_in_memory(
    m: &integrity::Manifest,
    tree: &[PathBuf],
    plugin: &Plugin,
    workdir: &Workdir,
) -> Result<Option<crate::sandbox::mounts::Verified>, LaunchError> {
    let roots = tree.len();
    let at = workdir.verified.join(TREE_DIR);
    let snap = |source| IntegrityError::Snapshot {
        path: at.clone(),
        source,
    };
    let (bytes, inodes) = m.footprint();
    let mut v = match crate::sandbox::mounts::Verified::new(bytes, inodes, at.clone()) {
        Ok(v) => v,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(None),
        Err(e) => return Err(snap(e).into()),
    };
    m.snapshot_into(roots, v.root(), &at)?;
    v.seal().map_err(snap)?;
    for (index, root) in tree.iter().enumerate() {
        if let Some(o) = original(index, root, &plugin.policy.write_paths, workdir) {
            v.also_at(o);
        }
    }
    // `verified/tree/` and `verified/` above it, whatever upm's umask.
    crate::files::make_dir_0755(&at, 1).map_err(snap)?;
    Ok(Some(v))
}

/// A pinned tree's root as the init finds it in the call's namespace ([`Original`]):
/// resolved, with the inode it leads to now. None (the copy is then found at its
/// `verified/` path only) for a root that holds the call's own directories or one of its
/// `write_paths`, which its copy would cover, or one that no longer resolves (the call
/// then fails on its own).
///
/// [`Original`]: crate::sandbox::mounts::Original
fn original(
    index: usize,
    root: &Path,
    write_paths: &[PathBuf],
    workdir: &Workdir,
) -> Option<crate::sandbox::mounts::Original> {
    use std::os::unix::fs::MetadataExt;
    let path = std::fs::canonicalize(root).ok()?;
    let resolved = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    let covered = [&workdir.root, &workdir.home]
        .into_iter()
        .cloned()
        .chain(write_paths.iter().map(resolved))
        .any(|p| p.starts_with(&path));
    if covered {
        return None;
    }
    let meta = std::fs::metadata(&path).ok().filter(|m| m.is_dir())?;
    Some(crate::sandbox::mounts::Original {
        index,
        path,
        id: (meta.dev(), meta.ino()),
    })
}

/// The verified copy of an executable that runs: a sealed memfd, or where this kernel
/// refuses executable memfds, a file in the call's `verified/exec/`.
fn verified_copy(path: &Path, workdir: &Workdir) -> Result<Executable, LaunchError> {
    if integrity::memfd_exec() {
        if let Some(exe) = integrity::seal_executable(path)? {
            return Ok(exe);
        }
    }
    if workdir.shared {
        // Chosen because memfds were expected to work: a copy needs a directory of the
        // call's own.
        return Err(LaunchError::Workdir(std::io::Error::other(
            "this kernel refused an executable memfd for the verified copy",
        )));
    }
    Ok(integrity::copy_executable(
        path,
        &workdir.verified.join(EXEC_DIR),
    )?)
}

/// A command plugin's `sha256` pin, against the bytes that will be exec'd.
pub fn check_pin(plugin: &Plugin, runnable: &Runnable) -> Result<(), LaunchError> {
    Ok(runnable.exe.check_pin(plugin.sha256.as_deref())?)
}

/// Builds argv, environment and stdin for the plugin.
pub fn build(
    config: &Config,
    plugin: &Plugin,
    runnable: &Runnable,
    req: &Request,
    request_id: &str,
    workdir: &Workdir,
) -> Result<Launch, LaunchError> {
    let cstr = |s: &str| CString::new(s).map_err(|_| LaunchError::Nul(plugin.name.clone()));
    let stdin = serde_json::to_vec(&json!({
        "method": req.method,
        "args": req.args,
        "request_id": request_id,
    }))
    .map_err(LaunchError::Stdin)?;

    let (argv, result_channel) = match &plugin.kind {
        PluginKind::Command { .. } => (runnable.argv.clone(), false),
        PluginKind::PythonClass {
            module,
            class,
            python,
            ..
        } => {
            // UPM's defaults, for a call whose args name no project_root / cache_dir:
            // the caller's working directory (unless the config sets one) and
            // ".cache". Passed as strings: neither grants the plugin any access.
            let unusable = LaunchError::ProjectRoot;
            let project_root = match &config.project_root {
                Some(p) => p.clone(),
                None => std::env::current_dir().map_err(|e| {
                    unusable(format!(
                        "(by default the caller's working directory, as in UPM) cannot be read: {e}"
                    ))
                })?,
            };
            let project_root = project_root
                .into_os_string()
                .into_string()
                .map_err(|p| unusable(format!("{p:?} is not valid UTF-8")))?;

            let settings = json!({
                "plugin": plugin.name,
                "module": module,
                "class": class,
                "python_path": runnable.python_path,
                "project_root": project_root,
                "cache_dir": DEFAULT_CACHE_DIR,
                "policy": config.policy,
                "introspect": req.introspect,
            });
            // The configured path, not the file exec'd: a virtualenv's python finds its
            // pyvenv.cfg from its argv[0].
            let argv = vec![
                python.path.to_string_lossy().into_owned(),
                "-I".into(),
                "-c".into(),
                PYTHON_RUNNER.into(),
                settings.to_string(),
            ];
            (argv, true)
        }
    };
    let home = workdir.home.to_string_lossy().into_owned();
    let mut env: Vec<(String, String)> = Vec::new();
    for name in &plugin.policy.env.allow {
        if let Ok(v) = std::env::var(name) {
            env.push((name.clone(), v));
        }
    }
    // HOME is the call's home, writable and gone with the call (tools that keep caches
    // under `~` work), unless the config sets one.
    let home_var =
        (!plugin.policy.env.set.contains_key("HOME")).then(|| ("HOME".to_owned(), home.clone()));
    let fixed = home_var
        .into_iter()
        .chain(
            plugin
                .policy
                .env
                .set
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        )
        .chain([("TMPDIR".to_owned(), home.clone())])
        .chain(result_channel.then(|| ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned())));
    for (k, v) in fixed {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    }
    // issue 22: with an egress allowlist every proxy variable points at the call's proxy,
    // whatever the config or the caller set, and nothing says to go around it.
    if plugin.policy.network.allowlist().is_some() {
        env.retain(|(name, _)| !crate::egress::BYPASS_ENV.contains(&name.as_str()));
        for (k, v) in crate::egress::proxy_env() {
            env.retain(|(name, _)| *name != k);
            env.push((k, v));
        }
    }
    // Named like the script, beside home/ and verified/ (which it must not shadow).
    let script_name = runnable.exe.script.then(|| {
        let name = runnable.exe.source.file_name().unwrap_or_default();
        match name.to_str() {
            Some("home" | "verified") | None => workdir.root.join("script"),
            Some(_) => workdir.root.join(name),
        }
    });
    Ok(Launch {
        exec_fd: runnable.exe.fd.as_raw_fd(),
        sealed_exec: runnable.exe.sealed,
        keep_exec_fd: runnable.exe.script,
        script_name,
        argv: argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|(k, v)| cstr(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        workdir: cstr(&home)?,
        stdin,
        result_channel,
        timeout: Duration::from_millis(plugin.policy.limits.timeout_ms),
        output_cap: plugin.policy.limits.output_bytes,
    })
}
