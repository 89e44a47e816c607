//! `upm_config.json`: loaded, checked as a whole, and refused as a whole.
//!
//! A superset of the original UPM config. Loading never stops at the first
//! problem: an operator gets every problem at once. Anything unknown is a
//! problem too, because a misspelt sandbox key must not silently loosen it.
//! Schemas are compiled on demand (`run` compiles only the called method's;
//! `check` compiles all of them).

mod container;
mod image;

pub use container::NO_GRANTS as NO_CONTAINER_GRANTS;

use crate::audit::AuditSettings;
use crate::compat::EnvPythonPath;
use crate::request::valid_name;
use crate::sandbox::policy::{merge_json, Backend, Policy, SeccompSource};
use crate::unknown_keys;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "upm_config.json";
pub const DEFAULT_PYTHON: &str = "/usr/bin/python3";
/// Bare command names are looked up here, never in the caller's PATH.
const SAFE_PATH: [&str; 3] = ["/usr/local/bin", "/usr/bin", "/bin"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("config file {path} cannot be read: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("config file {path} is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("config file {path} is not safe to use: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("config file {path} is not valid JSON: {message}")]
    NotJson { path: PathBuf, message: String },
    #[error("config file {path} is invalid: {}", problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl ConfigError {
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems, .. } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// How a plugin is started.
#[derive(Debug, Clone)]
pub enum PluginKind {
    /// Any executable speaking the stdin/stdout JSON protocol. argv[0] is absolute.
    Command { argv: Vec<String> },
    /// A UPM-style Python class, run by upm's embedded runner.
    PythonClass {
        module: String,
        class: String,
        python_path: Vec<PathBuf>,
        python_path_from: PythonPathFrom,
        python: Python,
    },
}

/// Where a Python class plugin's import path comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonPathFrom {
    /// The config's `python_path`.
    Config,
    /// UPM compatibility: the config names none, so the caller's `PYTHONPATH` (see
    /// [`EnvPythonPath`]), which the result and the audit say, strict trust refuses
    /// and `upm check` warns about.
    Environment(Box<EnvPythonPath>),
}

/// A Python class plugin's interpreter: the plugin's `"python"`, else the top-level one,
/// else `/usr/bin/python3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Python {
    /// As configured (resolved like a command): the plugin's `sys.executable` (its
    /// argv[0]), so that a virtualenv's `bin/python` finds its `pyvenv.cfg`.
    pub path: PathBuf,
    /// The file that is opened, verified and exec'd: `path`, or for a virtualenv's
    /// `bin/python` (a symlink to the system interpreter) the interpreter it leads to.
    pub exe: PathBuf,
    /// The virtualenv `path` belongs to (where its `pyvenv.cfg` is): readable to the
    /// plugin, its `site-packages` on `sys.path`.
    pub venv: Option<PathBuf>,
}

impl Python {
    /// Python's own rule: a `pyvenv.cfg` beside the executable or one directory up
    /// makes it a virtualenv's. Its interpreter is then the file its symlinks lead to
    /// (one that cannot be resolved is left for the call to report).
    pub fn new(path: PathBuf) -> Python {
        let venv = path
            .parent()
            .into_iter()
            .flat_map(|bin| [Some(bin), bin.parent()])
            .flatten()
            .find(|d| d.join("pyvenv.cfg").is_file())
            .map(Path::to_path_buf);
        let exe = match &venv {
            Some(_) => std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone()),
            None => path.clone(),
        };
        Python { path, exe, venv }
    }

    /// A `python` that is a symlink out of its own directory and no virtualenv's is
    /// refused (as any plugin file reached that way is): what to write instead.
    pub fn symlink_problem(&self) -> Option<String> {
        if self.venv.is_some() {
            return None;
        }
        let is_link = std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.is_symlink());
        let target = std::fs::canonicalize(&self.path).ok()?;
        let dir = self
            .path
            .parent()
            .and_then(|d| std::fs::canonicalize(d).ok())?;
        (is_link && !target.starts_with(&dir)).then(|| {
            format!(
                "\"python\" {} is a symlink to {}, outside its directory, and not a \
                 virtualenv's interpreter (no pyvenv.cfg beside it or above it): write \
                 \"python\": \"{}\", or make a virtualenv ({} -m venv DIR) and write \
                 \"python\": \"DIR/bin/python\"",
                self.path.display(),
                target.display(),
                target.display(),
                target.display()
            )
        })
    }
}

#[derive(Debug, Clone)]
pub struct Method {
    /// Absolute path of the method's JSON Schema, if it has one.
    pub schema: Option<PathBuf>,
    /// Whitelisted only through UPM's `allowed_methods` (not upm's `methods`).
    pub upm_whitelist_only: bool,
    /// What the method does, for `upm list` (and a client's tool definition).
    pub description: Option<String>,
    /// Absolute path of the JSON Schema the plugin's result must match, if any: a
    /// result that does not is `plugin_failed` (and `upm mcp`'s `outputSchema`).
    pub output_schema: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Plugin {
    pub name: String,
    pub kind: PluginKind,
    pub description: Option<String>,
    pub methods: BTreeMap<String, Method>,
    /// Private names (`_x`, `__introspect__`) UPM's `allowed_methods` lists: not a
    /// config error, as in UPM, and never callable (refused with exit 7).
    pub private_methods: Vec<String>,
    pub policy: Policy,
    /// The seccomp profile named by the policy.
    pub seccomp_profile: SeccompSource,
    /// Pin of the executable (`command[0]`).
    pub sha256: Option<String>,
    /// Pin of the plugin's tree: a Python class plugin's `python_path`, or the directory of `command[0]`.
    pub manifest_sha256: Option<String>,
    /// The roots under which a call's `x-upm-grant` arguments may name paths (absolute,
    /// as written, `.` dropped): none, and a schema that asks for grants is a config error.
    pub grants_within: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub dir: PathBuf,
    /// `sha256:<hex>` of the config file's bytes.
    pub digest: String,
    /// As written: absent, methods under `methods` need a schema and those only in
    /// UPM's `allowed_methods` run without one; `true`, every method needs one;
    /// `false`, none does.
    pub require_schemas: Option<bool>,
    pub max_request_bytes: u64,
    pub policy: Value,
    pub python: PathBuf,
    /// The config's `project_root`, if it sets one; else a call's constructor gets the
    /// caller's working directory, as UPM passed it.
    pub project_root: Option<PathBuf>,
    pub audit: AuditSettings,
    /// Where the audit log goes: `UPM_LOG_FILE`, else `audit.path`, else `entrypoint.log` beside the config.
    pub audit_path: PathBuf,
    /// Where each native call's private directory is made (`/tmp` unless set).
    pub workdir_root: PathBuf,
    pub plugins: BTreeMap<String, Plugin>,
    /// The plugins' names in the file's order (UPM's "not in config" sentence lists them so).
    pub plugin_order: Vec<String>,
    /// What `upm check` warns about and calls live with: plugins of a UPM config that can
    /// never be called (UPM refused their calls one by one; it never refused the config).
    pub warnings: Vec<String>,
    /// The config's `trust` block, read by [`crate::trust`] (which fails closed on it).
    pub trust: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    module: Option<String>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    python_path: Option<Vec<PathBuf>>,
    /// This plugin's interpreter (e.g. a virtualenv's `bin/python`).
    #[serde(default)]
    python: Option<PathBuf>,
    #[serde(default)]
    allowed_methods: Vec<String>,
    #[serde(default)]
    methods: BTreeMap<String, RawMethod>,
    #[serde(default)]
    sandbox: Option<Value>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    manifest_sha256: Option<String>,
    #[serde(default)]
    description: Option<String>,
    /// Per-call grants: see `Plugin::grants_within`.
    #[serde(default)]
    grants_within: Option<Vec<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMethod {
    #[serde(default)]
    schema: Option<PathBuf>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    output_schema: Option<PathBuf>,
}

const TOP_LEVEL_KEYS: [&str; 11] = [
    "trust",
    "workdir_root",
    "plugins",
    "policy",
    "require_schemas",
    "max_request_bytes",
    "python",
    "project_root",
    "audit",
    "sandbox",
    "$comment",
];

/// Where the config is: `--config`, else `UPM_CONFIG_PATH`, else `./upm_config.json`.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("UPM_CONFIG_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_CONFIG),
    }
}

/// Where the audit log goes even when the config cannot be loaded, so that a refused
/// call is audited too: in the config's own log when the file reads that far (its
/// `audit` block, with the settings it gives when they are valid), else in
/// `entrypoint.log` beside where the config was looked for.
pub fn fallback_audit(config_path: &Path) -> (PathBuf, AuditSettings) {
    audit_of_document(config_path).unwrap_or_else(|_| {
        let path = env_log_file().unwrap_or_else(|| {
            let dir = located(config_path);
            let dir = dir.parent().unwrap_or(Path::new("/"));
            dir.join("entrypoint.log")
        });
        let settings = AuditSettings {
            named_by_env: env_log_file().is_some(),
            ..AuditSettings::default()
        };
        (path, settings)
    })
}

/// The audit log a config names, read only as far as its `audit` block: for the
/// auditor's tools, which need no more of it, and for refusals of a config that is
/// otherwise invalid. `UPM_LOG_FILE` wins, as it does for calls.
pub fn audit_of_document(config_path: &Path) -> Result<(PathBuf, AuditSettings), ConfigError> {
    let path = located(config_path);
    let bytes = read_config(&path);
    let bytes = match (env_log_file(), bytes) {
        (Some(log), Err(_)) => {
            let settings = AuditSettings {
                named_by_env: true,
                ..AuditSettings::default()
            };
            return Ok((log, settings));
        }
        (_, b) => b?,
    };
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| ConfigError::NotJson {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let block = doc.get("audit");
    let mut settings: AuditSettings = block
        .and_then(|b| serde_json::from_value(b.clone()).ok())
        .filter(|s: &AuditSettings| s.validate().is_ok())
        .unwrap_or_default();
    let named = block
        .and_then(|b| b.get("path"))
        .and_then(Value::as_str)
        .map(PathBuf::from);
    settings.signing_key = settings.signing_key.map(|k| resolve_in(dir, &k));
    settings.named_by_env = env_log_file().is_some();
    Ok((audit_path(dir, named.as_deref()), settings))
}

/// `UPM_LOG_FILE`, else the config's `audit.path`, else `entrypoint.log` beside it.
fn audit_path(dir: &Path, named: Option<&Path>) -> PathBuf {
    env_log_file().unwrap_or_else(|| resolve_in(dir, named.unwrap_or(Path::new("entrypoint.log"))))
}

/// A path the caller gave (a flag, an environment variable) means what it means where
/// upm was started: made absolute at once, so that everything after, and every report,
/// names one file.
pub fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The config file as the kernel finds it: absolute, with `..` and symlinks resolved
/// (those of its directory too, and a symlink to the file itself), so that the paths it
/// holds are relative to where the file really is, however the caller named it: through
/// `../`, a "current release" symlink, or a link to the file. Its signature is looked
/// for beside it there. A file that is not there keeps its directory resolved, for the
/// fallback log and the error.
pub fn located(p: &Path) -> PathBuf {
    let p = absolute(p);
    if let Ok(real) = std::fs::canonicalize(&p) {
        return real;
    }
    match (p.parent().map(std::fs::canonicalize), p.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => p,
    }
}

/// `UPM_LOG_FILE`, made absolute against upm's working directory.
fn env_log_file() -> Option<PathBuf> {
    std::env::var_os("UPM_LOG_FILE")
        .filter(|p| !p.is_empty())
        .map(|p| absolute(Path::new(&p)))
}

/// A config is a few KB; anything this large is not one.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads the config (see [`crate::files`]).
fn read_config(path: &Path) -> Result<Vec<u8>, ConfigError> {
    crate::files::read_rules(path, MAX_CONFIG_BYTES).map_err(|e| {
        let path = path.to_path_buf();
        match e {
            e if e.is_not_found() => ConfigError::Missing { path },
            crate::files::ReadError::NotAFile => ConfigError::NotAFile { path },
            crate::files::ReadError::TooLarge(_) => ConfigError::TooLarge { path },
            e @ crate::files::ReadError::Unsafe { .. } => ConfigError::Unsafe {
                path,
                why: e.to_string(),
            },
            crate::files::ReadError::Io(source) => ConfigError::Unreadable { path, source },
        }
    })
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let path = located(path);
        let bytes = read_config(&path)?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| ConfigError::NotJson {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let mut problems = Vec::new();
        let config = build(&path, digest, &doc, &mut problems).map(|mut c| {
            c.plugin_order = crate::compat::plugin_names_in_file_order(&bytes);
            c
        });
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid { path, problems }),
        }
    }

    /// Resolves a path from the config: relative paths are relative to the config's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        resolve_in(&self.dir, p)
    }
}

/// `p` against `dir`, with its `.` components dropped (`..` stays: only the kernel knows
/// where it leads through a symlink).
fn resolve_in(dir: &Path, p: &Path) -> PathBuf {
    dir.join(p).components().collect()
}

fn field<T: for<'de> Deserialize<'de>>(
    obj: &Map<String, Value>,
    key: &str,
    default: T,
    problems: &mut Vec<String>,
) -> T {
    match obj.get(key) {
        None => default,
        Some(v) => serde_json::from_value(v.clone()).unwrap_or_else(|e| {
            problems.push(format!("\"{key}\": {e}"));
            default
        }),
    }
}

fn build(path: &Path, digest: String, doc: &Value, problems: &mut Vec<String>) -> Option<Config> {
    let Some(obj) = doc.as_object() else {
        problems.push("the config must be a JSON object".into());
        return None;
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    for key in obj.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            let hint = unknown_keys::nearest(key, TOP_LEVEL_KEYS)
                .map(|near| format!(" (did you mean \"{near}\"?)"))
                .unwrap_or_default();
            problems.push(format!("unknown top-level key \"{key}\"{hint}"));
        }
    }
    let require_schemas = field(obj, "require_schemas", None, problems);
    let max_request_bytes = field(
        obj,
        "max_request_bytes",
        crate::request::DEFAULT_MAX_REQUEST_BYTES,
        problems,
    );
    if max_request_bytes == 0 {
        problems.push("\"max_request_bytes\" must be positive".into());
    }
    if max_request_bytes > crate::request::MAX_MAX_REQUEST_BYTES {
        problems.push(format!(
            "\"max_request_bytes\" must be at most {} (8 MiB): a larger request could make \
             an audit entry too large for the log to chain from",
            crate::request::MAX_MAX_REQUEST_BYTES
        ));
    }
    // UPM's registry handed its plugins this policy when the config had none.
    let policy = obj.get("policy").cloned().unwrap_or_else(|| {
        serde_json::json!({"blocked_packages": [], "pinned_versions": {},
                           "require_signatures": false, "allow_prerelease": false})
    });
    if !policy.is_object() {
        problems.push("\"policy\" must be an object".into());
    }
    let python = resolve_command(
        &dir,
        &field(obj, "python", PathBuf::from(DEFAULT_PYTHON), problems),
    );
    let project_root =
        field::<Option<PathBuf>>(obj, "project_root", None, problems).map(|p| resolve_in(&dir, &p));
    let mut audit_block = obj.get("audit").cloned();
    if let Some(a) = &mut audit_block {
        strip_audit(a, problems);
    }
    let mut audit: AuditSettings = match audit_block {
        None => AuditSettings::default(),
        Some(a) => serde_json::from_value(a).unwrap_or_else(|e| {
            problems.push(format!("\"audit\": {e}"));
            AuditSettings::default()
        }),
    };
    if let Err(e) = audit.validate() {
        problems.push(format!("\"audit\": {e}"));
    }
    audit.signing_key = audit.signing_key.map(|k| resolve_in(&dir, &k));
    audit.named_by_env = env_log_file().is_some();
    let audit_path = audit_path(&dir, audit.path.as_deref());

    let workdir_root = match obj.get("workdir_root") {
        None => PathBuf::from(DEFAULT_WORKDIR_ROOT),
        // Checked only once it is a path: a wrong type is one problem, not two.
        Some(v) => match serde_json::from_value::<PathBuf>(v.clone()) {
            Err(e) => {
                problems.push(format!("\"workdir_root\": {e}"));
                PathBuf::from(DEFAULT_WORKDIR_ROOT)
            }
            Ok(p) => check_workdir_root(&p).unwrap_or_else(|e| {
                problems.push(format!("\"workdir_root\" {}: {e}", p.display()));
                p
            }),
        },
    };

    let mut sandbox_defaults = obj
        .get("sandbox")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    strip_policy(&mut sandbox_defaults, "", problems);
    let sandbox_defaults_ok = match serde_json::from_value::<Policy>(sandbox_defaults.clone()) {
        Ok(_) => true,
        Err(e) => {
            problems.push(format!("\"sandbox\": {e}"));
            false
        }
    };

    let mut plugins = BTreeMap::new();
    let mut warnings = Vec::new();
    match obj.get("plugins") {
        None => problems.push("\"plugins\" is missing".into()),
        Some(Value::Object(raw)) => {
            for (name, value) in raw {
                let ctx = PluginCtx {
                    dir: &dir,
                    require_schemas,
                    sandbox_defaults: &sandbox_defaults,
                    workdir_root: &workdir_root,
                    sandbox_defaults_ok,
                    python: &python,
                };
                if let Some(p) = build_plugin(&ctx, name, value, problems, &mut warnings) {
                    plugins.insert(name.clone(), p);
                }
            }
        }
        Some(_) => problems.push("\"plugins\" must be an object".into()),
    }

    for problem in workdir_root_overlaps(&workdir_root, &plugins) {
        problems.push(problem);
    }
    let keys_dir = obj
        .get("trust")
        .and_then(|t| t.get("keys_dir"))
        .and_then(Value::as_str)
        .map(|k| resolve_in(&dir, Path::new(k)));
    let guarded = guarded_files(path, &audit_path, &audit, keys_dir, &plugins);
    for problem in grant_roots_overlap(&guarded, &plugins) {
        problems.push(problem);
    }

    Some(Config {
        path: path.to_path_buf(),
        dir,
        digest,
        require_schemas,
        max_request_bytes,
        policy,
        python,
        project_root,
        audit,
        audit_path,
        workdir_root,
        plugins,
        plugin_order: Vec::new(),
        warnings,
        trust: obj.get("trust").cloned(),
    })
}

const DEFAULT_WORKDIR_ROOT: &str = "/tmp";

/// Every unknown key of a `sandbox` block (and of its `limits`, `env` and `user`);
/// `prefix` names the plugin whose block it is.
fn strip_policy(v: &mut Value, prefix: &str, problems: &mut Vec<String>) {
    use crate::sandbox::policy::{EnvSettings, Limits, UserSpec};
    let at = format!("{prefix}\"sandbox\"");
    unknown_keys::strip(v, unknown_keys::fields_of::<Policy>(), &at, problems);
    for (key, known) in [
        ("limits", unknown_keys::fields_of::<Limits>()),
        ("env", unknown_keys::fields_of::<EnvSettings>()),
        ("user", unknown_keys::fields_of::<UserSpec>()),
    ] {
        if let Some(inner) = v.get_mut(key) {
            let at = format!("{prefix}\"sandbox.{key}\"");
            unknown_keys::strip(inner, known, &at, problems);
        }
    }
}

/// Every unknown key of the `audit` block (and of its `rotate`).
fn strip_audit(v: &mut Value, problems: &mut Vec<String>) {
    unknown_keys::strip(
        v,
        unknown_keys::fields_of::<AuditSettings>(),
        "\"audit\"",
        problems,
    );
    if let Some(r) = v.get_mut("rotate") {
        let known = unknown_keys::fields_of::<crate::audit::Rotation>();
        unknown_keys::strip(r, known, "\"audit.rotate\"", problems);
    }
}

/// What a call's grant must never reach, whichever plugin it is for: what decides what
/// every call may do (the config, its schemas and seccomp profiles, the trusted keys),
/// what records it (the audit log and its key), what runs outside the sandbox (upm and
/// its egress helper) and what runs or is read as any plugin's own (executables, the
/// files their commands name, interpreters, Python trees, `read_paths`: a call that could
/// write one would run its code, or feed its data, to later calls, other plugins'
/// included). `true` marks a tree, which may not hold a root either. The files a
/// schema's `$ref`s reach are checked where schemas are read (`preflight::check`).
fn guarded_files(
    config: &Path,
    audit_path: &Path,
    audit: &AuditSettings,
    keys_dir: Option<PathBuf>,
    plugins: &BTreeMap<String, Plugin>,
) -> Vec<(String, PathBuf, bool)> {
    let mut out = vec![
        ("the config".to_owned(), config.to_path_buf(), false),
        ("the audit log".to_owned(), audit_path.to_path_buf(), false),
    ];
    if let Some(k) = &audit.signing_key {
        out.push(("the audit signing key".into(), k.clone(), false));
    }
    if let Some(k) = keys_dir {
        out.push(("the trusted keys directory".into(), k, true));
    }
    // The caller's keys directory wins over the config's for its calls (crate::trust).
    if let Some(k) = std::env::var_os("UPM_TRUSTED_KEYS_DIR").filter(|k| !k.is_empty()) {
        out.push((
            "the trusted keys directory (UPM_TRUSTED_KEYS_DIR)".into(),
            absolute(Path::new(&k)),
            true,
        ));
    }
    if let Ok(me) = std::env::current_exe() {
        out.push(("upm's own executable".into(), me.clone(), false));
        out.push((
            "upm's egress helper".into(),
            me.with_file_name(crate::egress::HELPER),
            false,
        ));
    }
    for (name, p) in plugins {
        // read_paths are readable and executable by every call of the plugin, without
        // any grant: code or data one call wrote there would serve the next.
        for r in &p.policy.read_paths {
            out.push((
                format!("plugin \"{name}\"'s read_paths entry"),
                r.clone(),
                true,
            ));
        }
        if let SeccompSource::File(f) = &p.seccomp_profile {
            out.push((
                format!("plugin \"{name}\"'s seccomp profile"),
                f.clone(),
                false,
            ));
        }
        for (m, method) in &p.methods {
            for s in [&method.schema, &method.output_schema]
                .into_iter()
                .flatten()
            {
                out.push((format!("the schema of {name}.{m}"), s.clone(), false));
            }
        }
        match &p.kind {
            PluginKind::Command { argv } => {
                if let Some(exe) = argv.first() {
                    out.push((format!("plugin \"{name}\"'s executable"), exe.into(), false));
                }
                // What its arguments name runs too (`["/usr/bin/python3", "/srv/tool.py"]`):
                // every absolute path that exists, whole or after `--option=`.
                for arg in argv.iter().skip(1) {
                    let named = arg.split_once('=').map_or(arg.as_str(), |(_, v)| v);
                    let path = Path::new(named);
                    if let (true, Ok(meta)) = (path.is_absolute(), std::fs::metadata(path)) {
                        out.push((
                            format!("a file plugin \"{name}\"'s command names"),
                            path.to_path_buf(),
                            meta.is_dir(),
                        ));
                    }
                }
            }
            PluginKind::PythonClass {
                python_path,
                python_path_from,
                python,
                ..
            } => {
                out.push((
                    format!("plugin \"{name}\"'s interpreter"),
                    python.path.clone(),
                    false,
                ));
                if let Some(venv) = &python.venv {
                    // Its site-packages are on the plugin's sys.path: a .pth there runs.
                    out.push((
                        format!("plugin \"{name}\"'s virtualenv"),
                        venv.clone(),
                        true,
                    ));
                }
                // Only the config's: a caller's PYTHONPATH cannot make the config invalid.
                if *python_path_from == PythonPathFrom::Config {
                    for root in python_path {
                        out.push((
                            format!("plugin \"{name}\"'s python_path"),
                            root.clone(),
                            true,
                        ));
                    }
                }
            }
        }
    }
    out
}

/// A caller picks a grant's path anywhere under a plugin's `grants_within`: no root may
/// hold what [`guarded_files`] lists, which Landlock and the read-only mounts otherwise
/// keep from every plugin, whenever the file's mode lets the plugin's uid in (as when upm
/// runs unprivileged).
fn grant_roots_overlap(
    guarded: &[(String, PathBuf, bool)],
    plugins: &BTreeMap<String, Plugin>,
) -> Vec<String> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.into());
    let mut problems = Vec::new();
    for (name, plugin) in plugins {
        for root in &plugin.grants_within {
            let root_real = real(root);
            for (what, file, tree) in guarded {
                // As named (its directory resolved: a symlink such as a virtualenv's
                // bin/python counts where it is) and as what it leads to; a file that
                // does not exist yet (a new audit log) by its directory alone.
                let named = match (file.parent(), file.file_name()) {
                    (Some(dir), Some(name)) => real(dir).join(name),
                    _ => real(file),
                };
                let target = real(file);
                if named.starts_with(&root_real) || target.starts_with(&root_real) {
                    problems.push(format!(
                        "plugin \"{name}\": \"grants_within\" {} contains {what} {}: a call \
                         could have it granted to the plugin",
                        root.display(),
                        file.display()
                    ));
                } else if *tree && (root_real.starts_with(&named) || root_real.starts_with(&target))
                {
                    problems.push(format!(
                        "plugin \"{name}\": \"grants_within\" {} lies inside {what} {}: a \
                         call could have part of it granted to the plugin",
                        root.display(),
                        file.display()
                    ));
                }
            }
        }
    }
    problems
}

/// Every call's plugin runs as the same uid, so only Landlock keeps one call out of
/// another's private directory: no path a plugin may read or write may contain them.
fn workdir_root_overlaps(root: &Path, plugins: &BTreeMap<String, Plugin>) -> Vec<String> {
    let mut problems = Vec::new();
    let ancestry = Ancestry::of(root);
    for base in crate::sandbox::landlock::BASE_READ_PATHS {
        if ancestry.is_within(Path::new(base)) {
            problems.push(format!(
                "\"workdir_root\" {} is inside {base}, which every plugin may read: \
                 plugins could read other calls' private directories",
                root.display()
            ));
        }
    }
    for (name, plugin) in plugins {
        // A path from the caller's PYTHONPATH refuses that plugin's calls instead
        // (see `env_python_path`): the caller's environment cannot break the config.
        let python: Vec<&PathBuf> = match &plugin.kind {
            PluginKind::PythonClass {
                python_path,
                python_path_from,
                python,
                ..
            } => {
                let from_config: &[PathBuf] = match python_path_from {
                    PythonPathFrom::Config => python_path,
                    PythonPathFrom::Environment(_) => &[],
                };
                from_config.iter().chain(&python.venv).collect()
            }
            PluginKind::Command { .. } => Vec::new(),
        };
        let granted: Vec<&PathBuf> = plugin
            .policy
            .read_paths
            .iter()
            .chain(&plugin.policy.write_paths)
            .chain(&plugin.grants_within)
            .chain(python)
            .collect();
        for p in granted {
            match ancestry.place(p) {
                Place::Contains => problems.push(format!(
                    "plugin \"{name}\": {} contains \"workdir_root\" {}: the plugin could reach \
                     other calls' private directories",
                    p.display(),
                    root.display()
                )),
                Place::UpmsOwn(own) => problems.push(format!(
                    "plugin \"{name}\": {} is in {}, which upm keeps for itself under \
                     \"workdir_root\" (the homes' mount point, digests, compiled programs, the audit's \
                     answer): \
                     no plugin may reach it",
                    p.display(),
                    own.display()
                )),
                Place::Elsewhere => {}
            }
        }
    }
    problems
}

/// `root` and the directories above it, to tell whether a path contains it: the path's
/// own name, or the directory it names with links followed being one of them. Compared by
/// identity: one stat a path where resolving the path took a readlink a component (25 a
/// call), and a bind mount of one of them counts too. The directories above `root` as
/// its links resolve count as well (the default `/tmp` is taken as written). Also what
/// upm keeps under `root`, to tell whether a path is in one of those directories.
struct Ancestry {
    roots: Vec<PathBuf>,
    /// (device, inode) of each; `None` when one could not be read, and then paths are
    /// resolved and compared by name instead.
    ids: Option<Vec<Id>>,
    /// upm's own kept directories under `root` that exist, by identity, each with the
    /// directory a refusal names: read once a path needs them (see [`Ancestry::kept`]).
    kept: std::cell::OnceCell<Vec<(Id, PathBuf)>>,
}

/// A directory's (device, inode).
type Id = (u64, u64);

/// Where a path a plugin may reach is, for [`workdir_root_overlaps`].
enum Place {
    /// It is `root` or a directory above it.
    Contains,
    /// It is in this directory that upm keeps for itself under `root`.
    UpmsOwn(PathBuf),
    Elsewhere,
}

/// What upm keeps under `workdir_root` between calls is named `upm-homes-<uid>`,
/// `upm-digests-<uid>`, `upm-seccomp-<uid>` or `upm-audit-<uid>`.
fn is_kept_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    ["upm-homes-", "upm-digests-", "upm-seccomp-", "upm-audit-"]
        .iter()
        .any(|kept| {
            name.strip_prefix(kept)
                .is_some_and(|uid| !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()))
        })
}

impl Ancestry {
    fn of(root: &Path) -> Self {
        let mut roots = vec![root.to_path_buf()];
        match std::fs::canonicalize(root) {
            Ok(real) if real != root => roots.push(real),
            _ => {}
        }
        let ids = roots
            .iter()
            .flat_map(|r| r.ancestors())
            .map(|a| std::fs::metadata(a).ok().map(|m| identity(&m)))
            .collect();
        Ancestry {
            roots,
            ids,
            kept: std::cell::OnceCell::new(),
        }
    }

    /// The directory upm keeps under `root` between calls (`upm-homes-<uid>`,
    /// `upm-digests-<uid>`, `upm-seccomp-0`, `upm-audit-0`) that `p`, by name, is in.
    fn upms_own(&self, p: &Path) -> Option<PathBuf> {
        let p = crate::compat::lexically_normal(p);
        self.roots.iter().find_map(|r| {
            let first = p.strip_prefix(r).ok()?.components().next()?;
            is_kept_name(first.as_os_str()).then(|| r.join(first))
        })
    }

    fn is_within(&self, p: &Path) -> bool {
        matches!(self.place_of(p, false), Place::Contains)
    }

    /// Whether `p` contains `root` or is in one of upm's kept directories: by name, then
    /// by identity (see [`Ancestry::upms_own_by_identity`]).
    fn place(&self, p: &Path) -> Place {
        self.place_of(p, true)
    }

    fn place_of(&self, p: &Path, own: bool) -> Place {
        if self.roots.iter().any(|r| r.starts_with(p)) {
            return Place::Contains;
        }
        if let Some(kept) = own.then(|| self.upms_own(p)).flatten() {
            return Place::UpmsOwn(kept);
        }
        let Some(ids) = &self.ids else {
            let contains = std::fs::canonicalize(p)
                .is_ok_and(|real| self.roots.iter().any(|r| r.starts_with(&real)));
            return if contains {
                Place::Contains
            } else {
                Place::Elsewhere
            };
        };
        let found = std::fs::metadata(p).ok();
        if found.as_ref().is_some_and(|m| ids.contains(&identity(m))) {
            return Place::Contains;
        }
        match own {
            true => self
                .upms_own_by_identity(p, found, ids)
                .map_or(Place::Elsewhere, Place::UpmsOwn),
            false => Place::Elsewhere,
        }
    }

    /// The kept directory `p` is in where its name does not say so (a link, a bind mount
    /// of that directory, of `root` or of one above it): `p`'s directory (`p` itself when
    /// it is one) and each one above it as the kernel resolves them (`dir/..`), compared
    /// with those kept directories that exist, up to `root` or one above it. A stat a
    /// directory walked (no readlink a component), and one readlink for a path that is
    /// no directory (a link to a file in a kept directory). A path that does not exist
    /// yet is taken from its first existing directory; when that is `root` (by another
    /// name), the next name decides.
    fn upms_own_by_identity(
        &self,
        p: &Path,
        mut found: Option<std::fs::Metadata>,
        ids: &[Id],
    ) -> Option<PathBuf> {
        let root = *ids.first()?;
        let mut dir = p.to_path_buf();
        let mut next = None;
        let mut links = 0;
        let mut meta = loop {
            match found.take() {
                Some(m) if m.is_dir() => break m,
                Some(_) => match std::fs::read_link(&dir) {
                    Ok(target) if links < 40 => {
                        links += 1;
                        dir = dir.parent()?.join(target);
                    }
                    _ => {
                        next = None;
                        if !dir.pop() {
                            return None;
                        }
                    }
                },
                None => {
                    next = dir.file_name().map(std::ffi::OsStr::to_os_string);
                    if !dir.pop() {
                        return None;
                    }
                }
            }
            found = std::fs::metadata(&dir).ok();
        };
        // Bounded: `/..` is `/`, which is above `root`.
        for step in 0..256 {
            let id = identity(&meta);
            if id == root {
                let name = next.filter(|n| step == 0 && is_kept_name(n))?;
                return Some(self.roots[0].join(name));
            }
            if let Some((_, kept)) = self.kept().iter().find(|(k, _)| *k == id) {
                return Some(kept.clone());
            }
            if ids.contains(&id) {
                return None;
            }
            dir.push("..");
            meta = std::fs::metadata(&dir).ok()?;
        }
        None
    }

    /// This upm's kept directories under `root` that exist (`upm-homes-<euid>` and its
    /// `home`, `upm-digests-<euid>`, a root upm's `upm-seccomp-0` and `upm-audit-0`), by
    /// identity. Another
    /// user's are matched by name only: finding them would take a listing of `root`.
    fn kept(&self) -> &[(Id, PathBuf)] {
        self.kept.get_or_init(|| {
            let root = &self.roots[0];
            let euid = nix::unistd::geteuid();
            let homes = root.join(format!("upm-homes-{euid}"));
            let digests = root.join(format!("upm-digests-{euid}"));
            let seccomp = root.join("upm-seccomp-0");
            let audit = root.join("upm-audit-0");
            [
                (homes.join("home"), &homes),
                (homes.clone(), &homes),
                (digests.clone(), &digests),
                (seccomp.clone(), &seccomp),
                (audit.clone(), &audit),
            ]
            .into_iter()
            .filter_map(|(dir, kept)| {
                let m = std::fs::metadata(dir).ok()?;
                Some((identity(&m), kept.clone()))
            })
            .collect()
        })
    }
}

fn identity(m: &std::fs::Metadata) -> Id {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

/// The directory and each one above it must belong to root or to upm's own user, and
/// one that others may write to must be sticky (as `/tmp` is): otherwise another user
/// could rename a call's directory away and put one of their own in its place. Returns
/// the path with symlinks resolved, which is then used as it is.
fn check_workdir_root(p: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    if !p.is_absolute() {
        return Err("must be an absolute path".into());
    }
    let real = std::fs::canonicalize(p).map_err(|e| e.to_string())?;
    if !real.is_dir() {
        return Err("is not a directory".into());
    }
    let euid = nix::unistd::geteuid().as_raw();
    for dir in real.ancestors() {
        let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if m.uid() != 0 && m.uid() != euid {
            return Err(format!(
                "{} belongs to uid {}, neither root nor upm's user",
                dir.display(),
                m.uid()
            ));
        }
        if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
            return Err(format!(
                "{} is writable by others but not sticky (chmod +t, or 0755)",
                dir.display()
            ));
        }
    }
    Ok(real)
}

struct PluginCtx<'a> {
    dir: &'a Path,
    require_schemas: Option<bool>,
    sandbox_defaults: &'a Value,
    workdir_root: &'a Path,
    sandbox_defaults_ok: bool,
    /// The top-level `python`: a Python class plugin's unless it names its own.
    python: &'a Path,
}

fn build_plugin(
    ctx: &PluginCtx<'_>,
    name: &str,
    value: &Value,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Plugin> {
    let at = format!("plugin \"{name}\"");
    let bad_name = (!valid_name(name)).then(|| {
        format!("{at}: not a valid plugin name (must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$)")
    });
    let mut value = value.clone();
    unknown_keys::strip(
        &mut value,
        unknown_keys::fields_of::<RawPlugin>(),
        &at,
        problems,
    );
    if let Some(methods) = value.get_mut("methods").and_then(Value::as_object_mut) {
        for (m, spec) in methods {
            let at = format!("{at}, method \"{m}\"");
            unknown_keys::strip(spec, unknown_keys::fields_of::<RawMethod>(), &at, problems);
        }
    }
    if let Some(sandbox) = value.get_mut("sandbox") {
        strip_policy(sandbox, &format!("{at}: "), problems);
    }
    // A UPM config's entry (a Python class with no upm `methods`, schemas not required):
    // what makes it uncallable refuses its calls, as UPM did, not every plugin's.
    let upm_form = value.get("methods").is_none()
        && value.get("command").is_none()
        && ctx.require_schemas != Some(true);
    let raw: RawPlugin = match serde_json::from_value(value) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            return None;
        }
    };
    if let Some(bad) = bad_name {
        if upm_form {
            warnings.push(format!(
                "{bad}: it can never be called (upm refuses the name in a request); the \
                 config's other plugins run"
            ));
            return None;
        }
        problems.push(bad);
    }
    let mut kind = match (&raw.command, &raw.module) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{at}: has both \"command\" and \"module\"; choose one"
            ));
            return None;
        }
        (None, None) => {
            problems.push(format!(
                "{at}: needs \"command\" (an executable) or \"module\" (a Python class)"
            ));
            return None;
        }
        (Some(argv), None) => {
            let Some(first) = argv.first() else {
                problems.push(format!("{at}: \"command\" is empty"));
                return None;
            };
            if raw.python.is_some() {
                problems.push(format!(
                    "{at}: \"python\" is the interpreter of a Python class plugin (\"module\"); \
                     a command plugin names its own in \"command\" or its #! line"
                ));
            }
            let mut argv = argv.clone();
            argv[0] = resolve_command(ctx.dir, Path::new(first))
                .to_string_lossy()
                .into_owned();
            PluginKind::Command { argv }
        }
        (None, Some(module)) => {
            let class = raw.class.clone().unwrap_or_else(|| name.to_owned());
            if !is_python_dotted(module) {
                problems.push(format!(
                    "{at}: \"module\" {module:?} is not a Python module path"
                ));
            }
            if !is_python_dotted(&class) || class.contains('.') {
                problems.push(format!(
                    "{at}: class {class:?} is not a Python identifier (set \"class\")"
                ));
            }
            // The import path becomes the plugin's readable tree. Never a silent default
            // of the config's own directory (that would expose the config and the audit
            // log): the config's list, else, as in UPM, the caller's PYTHONPATH, which
            // every call then reports.
            let (python_path, python_path_from) = match &raw.python_path {
                Some(v) if !v.is_empty() => (
                    v.iter().map(|p| resolve_in(ctx.dir, p)).collect(),
                    PythonPathFrom::Config,
                ),
                Some(_) => {
                    problems.push(format!(
                        "{at}: \"python_path\" is empty: list the directories that hold its module \
                         (they become readable to the plugin), or leave it out to use the caller's \
                         PYTHONPATH as UPM did"
                    ));
                    (Vec::new(), PythonPathFrom::Config)
                }
                None => {
                    let env = env_python_path(ctx.workdir_root);
                    (
                        env.paths.clone(),
                        PythonPathFrom::Environment(Box::new(env)),
                    )
                }
            };
            let python = match &raw.python {
                Some(p) => resolve_command(ctx.dir, p),
                None => ctx.python.to_path_buf(),
            };
            PluginKind::PythonClass {
                module: module.clone(),
                class,
                python_path,
                python_path_from,
                python: Python::new(python),
            }
        }
    };

    let mut methods = BTreeMap::new();
    for (m, spec) in &raw.methods {
        methods.insert(
            m.clone(),
            Method {
                schema: spec.schema.as_ref().map(|s| resolve_in(ctx.dir, s)),
                upm_whitelist_only: false,
                description: spec.description.clone(),
                output_schema: spec.output_schema.as_ref().map(|s| resolve_in(ctx.dir, s)),
            },
        );
    }
    let mut private_methods = Vec::new();
    for m in &raw.allowed_methods {
        if crate::request::valid_private_name(m) {
            // As in UPM: listed, never callable.
            if !private_methods.contains(m) {
                private_methods.push(m.clone());
            }
            continue;
        }
        methods.entry(m.clone()).or_insert(Method {
            schema: None,
            upm_whitelist_only: true,
            description: None,
            output_schema: None,
        });
    }
    if upm_form {
        methods.retain(|m, _| {
            let ok = !m.starts_with('_') && valid_name(m);
            if !ok {
                warnings.push(format!(
                    "{at}: method {m:?} can never be called (not a valid method name); its \
                     other methods run"
                ));
            }
            ok
        });
    }
    if methods.is_empty() {
        if upm_form {
            warnings.push(format!(
                "{at}: whitelists no method: every call to it is refused (exit 7), as in UPM"
            ));
        } else {
            problems.push(format!("{at}: whitelists no method"));
        }
    }
    for (m, spec) in &methods {
        if m.starts_with('_') || !valid_name(m) {
            problems.push(format!(
                "{at}: method {m:?} can never be called (private or not a valid name)"
            ));
        }
        if spec.schema.is_some() {
            continue;
        }
        // A UPM config runs unchanged; a upm config stays strict.
        match (ctx.require_schemas, spec.upm_whitelist_only) {
            (Some(true), _) => problems.push(format!(
                "{at}: method \"{m}\" has no schema, and the config sets \"require_schemas\": true"
            )),
            (None, false) => problems.push(format!(
                "{at}: method \"{m}\" has no schema (give it one, or set \"require_schemas\": false)"
            )),
            (Some(false), _) | (None, true) => {}
        }
    }

    let mut merged = ctx.sandbox_defaults.clone();
    if let Some(over) = &raw.sandbox {
        merge_json(&mut merged, over);
    }
    let mut policy: Policy = match serde_json::from_value(merged) {
        Ok(p) => p,
        Err(e) => {
            // A problem of the top-level block was reported once, above: this plugin
            // reports only its own block's.
            match raw.sandbox.clone().map(serde_json::from_value::<Policy>) {
                Some(Err(own)) => problems.push(format!("{at}: \"sandbox\": {own}")),
                Some(Ok(_)) if ctx.sandbox_defaults_ok => {
                    problems.push(format!("{at}: \"sandbox\": {e}"))
                }
                _ => {}
            }
            Policy::default()
        }
    };
    for p in policy.limits.problems() {
        problems.push(format!("{at}: {p}"));
    }
    // issue 22: an egress allowlist's limits (its entries were checked as it was read).
    if let Some(egress) = policy.network.allowlist() {
        for p in egress.problems() {
            problems.push(format!("{at}: {p}"));
        }
    }
    for (key, pin) in [
        ("sha256", &raw.sha256),
        ("manifest_sha256", &raw.manifest_sha256),
    ] {
        if let Some(h) = pin {
            if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                problems.push(format!("{at}: \"{key}\" must be 64 hex digits"));
            }
        }
    }
    if raw.sha256.is_some() && matches!(kind, PluginKind::PythonClass { .. }) {
        problems.push(format!(
            "{at}: a Python class plugin is pinned with \"manifest_sha256\" (over its python_path), not \"sha256\""
        ));
    }
    if policy.backend == Backend::Container {
        // The command is a path inside the image, never resolved on the host.
        if let (PluginKind::Command { argv }, Some(raw_argv)) = (&mut kind, &raw.command) {
            argv.clone_from(raw_argv);
        }
        let pinned = raw.sha256.is_some() || raw.manifest_sha256.is_some();
        for p in container::problems(&policy, &kind, pinned) {
            problems.push(format!("{at}: {p}"));
        }
    } else if policy.user.uid == 0 || policy.user.gid == 0 {
        // Root owns what upm keeps between calls (a root upm's compiled seccomp programs
        // among them): without capabilities, a plugin as uid 0 could still write those.
        problems.push(format!(
            "{at}: \"user\" is root (uid/gid 0): a plugin never runs as root; name another user"
        ));
    }
    // Every path means one file, whoever calls upm from wherever.
    for p in policy.read_paths.iter_mut().chain(&mut policy.write_paths) {
        *p = resolve_in(ctx.dir, p);
    }
    let seccomp_profile = SeccompSource::from_config(&policy.seccomp, ctx.dir);
    if let SeccompSource::File(file) = &seccomp_profile {
        policy.seccomp = file.clone();
    }
    let grants_within = grant_roots(
        ctx.dir,
        raw.grants_within.as_deref(),
        &policy,
        &at,
        problems,
    );
    Some(Plugin {
        name: name.to_owned(),
        kind,
        description: raw.description,
        methods,
        private_methods,
        policy,
        seccomp_profile,
        sha256: raw.sha256.map(|h| h.to_ascii_lowercase()),
        manifest_sha256: raw.manifest_sha256.map(|h| h.to_ascii_lowercase()),
        grants_within,
    })
}

/// A plugin's `grants_within`: each root resolved like every path of the config, and
/// an existing directory (a root that is not one could never grant anything, so it is
/// a mistake to say now, not at a call). The container backend grants nothing.
fn grant_roots(
    dir: &Path,
    raw: Option<&[PathBuf]>,
    policy: &Policy,
    at: &str,
    problems: &mut Vec<String>,
) -> Vec<PathBuf> {
    let Some(raw) = raw else {
        return Vec::new();
    };
    if raw.is_empty() {
        problems.push(format!(
            "{at}: \"grants_within\" is empty: list the directories under which a call's \
             \"x-upm-grant\" arguments may name paths, or leave it out"
        ));
    }
    if policy.backend == Backend::Container {
        problems.push(format!("{at}: {}", container::NO_GRANTS));
    }
    let mut roots = Vec::new();
    for r in raw {
        let root = resolve_in(dir, r);
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => problems.push(format!(
                "{at}: \"grants_within\" {} is not a directory",
                root.display()
            )),
            Err(e) => problems.push(format!("{at}: \"grants_within\" {}: {e}", root.display())),
        }
        if root
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            problems.push(format!(
                "{at}: \"grants_within\" {} holds \"..\": write the directory itself",
                root.display()
            ));
        }
        if !roots.contains(&root) {
            roots.push(root);
        }
    }
    roots
}

/// The caller's PYTHONPATH as a plugin's import path. A directory that contains
/// `workdir_root` would open other calls' private directories to the plugin: the
/// plugin's calls are then refused (the config itself stays valid).
fn env_python_path(workdir_root: &Path) -> EnvPythonPath {
    let mut env = EnvPythonPath::from_env();
    let ancestry = Ancestry::of(workdir_root);
    let found = env.paths.iter().find_map(|p| match ancestry.place(p) {
        Place::Contains => Some(format!(
            "the PYTHONPATH entry {} contains upm's \"workdir_root\" {}: the plugin could \
             reach other calls' private directories",
            p.display(),
            workdir_root.display()
        )),
        Place::UpmsOwn(own) => Some(format!(
            "the PYTHONPATH entry {} is in {}, which upm keeps for itself under \
             \"workdir_root\": no plugin may reach it",
            p.display(),
            own.display()
        )),
        Place::Elsewhere => None,
    });
    if let Some(problem) = found {
        env.problem.get_or_insert(problem);
    }
    env
}

/// `./x` and `dir/x` are relative to the config; a bare name is looked up in a fixed
/// safe PATH. A bare name found nowhere stays relative, which [`command_not_found`]
/// refuses: it never names a file in the caller's working directory.
fn resolve_command(dir: &Path, cmd: &Path) -> PathBuf {
    if cmd.is_absolute() || cmd.as_os_str().as_encoded_bytes().contains(&b'/') {
        return resolve_in(dir, cmd);
    }
    SAFE_PATH
        .iter()
        .map(|d| Path::new(d).join(cmd))
        .find(|c| c.is_file())
        .unwrap_or_else(|| cmd.to_path_buf())
}

/// Why an executable from the config cannot be used before it is even opened: a bare
/// name that is in none of the safe PATH's directories.
pub fn command_not_found(exe: &Path) -> Option<String> {
    (!exe.is_absolute()).then(|| {
        format!(
            "{} is not found in {} (a bare name is looked up there only, never in the \
             caller's PATH or working directory)",
            exe.display(),
            SAFE_PATH.join(":")
        )
    })
}

fn is_python_dotted(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
                && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root taken as written (the default `/tmp`) may be a link: the directories
    /// above where it leads contain it too.
    #[test]
    fn a_directory_above_where_a_linked_root_leads_contains_it() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("var").join("tmp");
        std::fs::create_dir_all(&real).unwrap();
        let link = d.path().join("tmp");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let other = d.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let a = Ancestry::of(&link);
        assert!(
            a.is_within(&d.path().join("var")),
            "the link's target's parent"
        );
        assert!(a.is_within(&real), "the target itself");
        assert!(a.is_within(d.path()), "by name");
        assert!(!a.is_within(&other), "a sibling");
        assert!(!a.is_within(&real.join("below")), "missing, below");
    }

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    #[test]
    fn lists_every_problem() {
        let err = load_str(
            r#"{"plugins": {"../x": {"command": ["/bin/true"], "methods": {"_p": {}}},
                            "B": {"module": "a.b", "methods": {}}}, "sandox": {}}"#,
        )
        .unwrap_err();
        let problems = err.problems();
        assert!(
            problems.iter().any(|p| p.contains("sandox")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("\"../x\": not a valid")));
        assert!(problems.iter().any(|p| p.contains("\"_p\" can never")));
        assert!(problems
            .iter()
            .any(|p| p.contains("\"B\": whitelists no method")));
        assert!(problems.iter().any(|p| p.contains("has no schema")));
    }

    /// A UPM config runs unchanged; a upm config stays strict.
    #[test]
    fn schemas_are_required_by_where_a_method_is_declared() {
        let cfg = |require: &str| {
            format!(
                r#"{{{require} "plugins": {{"P": {{"command": ["/bin/true"],
                     "allowed_methods": ["upm", "_private", "__introspect__", "_private"],
                     "methods": {{"strict": {{}}}}}}}}}}"#
            )
        };
        let err = load_str(&cfg("")).unwrap_err().problems();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].contains("\"strict\" has no schema"), "{err:?}");

        let c = load_str(&cfg(r#""require_schemas": false,"#)).unwrap();
        let p = &c.plugins["P"];
        assert!(p.methods["upm"].upm_whitelist_only && p.methods["upm"].schema.is_none());
        assert!(!p.methods["strict"].upm_whitelist_only);
        assert_eq!(p.private_methods, ["_private", "__introspect__"]);
        assert!(!p.methods.contains_key("_private"));

        let err = load_str(&cfg(r#""require_schemas": true,"#))
            .unwrap_err()
            .problems();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err.iter().all(|p| p.contains("\"require_schemas\": true")),
            "{err:?}"
        );

        let c =
            load_str(r#"{"plugins": {"P": {"command": ["/bin/true"], "allowed_methods": ["m"]}}}"#)
                .unwrap();
        assert_eq!(c.require_schemas, None);
        assert_eq!(c.plugins["P"].seccomp_profile, SeccompSource::Builtin);
        assert_eq!(c.policy["blocked_packages"], serde_json::json!([]));
        assert_eq!(c.project_root, None);
    }

    #[test]
    fn plugin_sandbox_overrides_merge() {
        let c = load_str(
            r#"{"require_schemas": false, "sandbox": {"limits": {"timeout_ms": 500, "cpu_seconds": 3}},
                "plugins": {"P": {"command": ["/bin/true"], "allowed_methods": ["m"],
                                  "sandbox": {"limits": {"timeout_ms": 900}, "network": true}}}}"#,
        )
        .unwrap();
        let p = &c.plugins["P"].policy;
        assert_eq!(p.limits.timeout_ms, 900);
        assert_eq!(p.limits.cpu_seconds, 3);
        assert!(p.network.is_host());
    }

    #[test]
    fn zero_limits_that_leave_nothing_runnable_are_refused() {
        let err = load_str(
            r#"{"require_schemas": false, "sandbox": {"limits": {"cpu_seconds": 0}},
                "plugins": {"P": {"command": ["/bin/true"], "allowed_methods": ["m"],
                "sandbox": {"limits": {"timeout_ms": 0, "memory_bytes": 0, "max_processes": 0,
                                       "open_files": 0, "output_bytes": 0, "file_size_bytes": 0}}}}}"#,
        )
        .unwrap_err();
        let problems = err.problems();
        let zero: Vec<_> = problems
            .iter()
            .filter(|p| p.contains("at least 1"))
            .collect();
        assert_eq!(zero.len(), 5, "{problems:#?}");
        // No output and no files written are limits, not broken sandboxes.
        assert!(!problems
            .iter()
            .any(|p| p.contains("output_bytes") || p.contains("file_size")));
    }

    #[test]
    fn unknown_sandbox_key_is_refused() {
        let err = load_str(
            r#"{"require_schemas": false, "plugins": {"P": {"command": ["/bin/true"],
                 "allowed_methods": ["m"], "sandbox": {"netwrk": true}}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("netwrk"), "{err}");
    }
}
