//! Signed configs: what runs is what the operator signed.
//!
//! `upm sign` writes `<config>.sig`, a detached ed25519 signature over the
//! config's digest and the digests of every file it references: schemas (and
//! the files their `$ref`s reach), seccomp profiles, pinned executables and the
//! Python interpreter of Python class plugins. Before a call runs, upm checks the
//! signature with a trusted key and the digests of the very bytes the call uses:
//! schemas and profiles as loaded, executables as copied for the exec.
//!
//! Trust settings: if the environment sets `UPM_TRUST_MODE`,
//! `UPM_TRUSTED_KEYS_DIR` or `UPM_TRUST_MIN_SIGNED_AT` (non-empty), the
//! environment alone decides and the config's `"trust"` block is ignored
//! entirely; otherwise the config's `"trust": {"mode", "keys_dir"}` applies.
//! Without a mode, a keys directory (or a minimum signing time) means `strict`;
//! strict or warn without a keys directory fails closed. A signature older than
//! `UPM_TRUST_MIN_SIGNED_AT` is refused (a rolled-back config). A "verified"
//! verdict lists what the call runs that nothing pins (`unpinned`). Settings that
//! cannot be read (an unknown mode, or one that is not UTF-8) mean `strict`, never
//! open. A config's own `trust` block can be edited by whoever edits the config,
//! so real protection comes from the environment (e.g. the container image's
//! ENV), which an attacker who changes files cannot change.

use crate::config::{Config, Plugin};
use crate::keys;
use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Strict,
    Warn,
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Warn => "warn",
            Mode::Off => "off",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub keys_dir: Option<PathBuf>,
    /// Why the settings fell back to strict, if they did.
    pub problem: Option<String>,
    /// The environment set them (the config's `trust` block was ignored).
    pub from_env: bool,
    /// `UPM_TRUST_MIN_SIGNED_AT`: older signatures are refused (a rolled-back config).
    pub min_signed_at: Option<chrono::DateTime<chrono::FixedOffset>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("the config is not signed: {0} does not exist")]
    Unsigned(PathBuf),
    #[error("signature file {path} cannot be used: {reason}")]
    BadSigFile { path: PathBuf, reason: String },
    #[error("no trusted key is configured: {0}")]
    NoKeysDir(&'static str),
    #[error("trusted keys directory {dir} cannot be used: {reason}")]
    KeysDir { dir: PathBuf, reason: String },
    #[error("the signature was made with key {key_id}, which is not in the trusted keys directory {dir}")]
    UnknownKey { key_id: String, dir: PathBuf },
    #[error("the signature does not verify with trusted key {key_id}")]
    BadSignature { key_id: String },
    #[error("{file} changed since the config was signed")]
    Changed { file: String },
    #[error("{file} is referenced by the config but is not covered by the signature")]
    NotCovered { file: String },
    #[error("{file} cannot be read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{} is not a UTF-8 path: the signature names only UTF-8 paths (rename it)", .0.display())]
    NotUtf8(PathBuf),
    #[error("{first} and {second} would both be named {file:?} in the signature")]
    DuplicateLabel {
        file: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("the config was signed at {signed_at}, before UPM_TRUST_MIN_SIGNED_AT ({min}): an older signed config is not accepted")]
    TooOld { signed_at: String, min: String },
    #[error("trust settings cannot be read ({0}); treated as strict")]
    Settings(String),
    #[error("plugin \"{0}\" takes its python_path from the caller's PYTHONPATH, which no signature covers (write \"python_path\" into the config, e.g. with upm migrate)")]
    EnvironmentPythonPath(String),
    #[error("{0}")]
    Key(#[from] keys::KeyError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The environment's trust settings. Setting any of them (non-empty) makes the
/// environment the only source: the config's `trust` block is then ignored entirely.
pub const ENV_MODE: &str = "UPM_TRUST_MODE";
pub const ENV_KEYS_DIR: &str = "UPM_TRUSTED_KEYS_DIR";
/// The oldest `signed_at` accepted (RFC 3339): an older signed config, put back, is refused.
pub const ENV_MIN_SIGNED_AT: &str = "UPM_TRUST_MIN_SIGNED_AT";

/// Resolves the trust settings: the environment if it sets any, else the config, else off.
pub fn settings(config: &Config) -> Settings {
    let env = |name| std::env::var_os(name).filter(|s| !s.is_empty());
    let env_min = env(ENV_MIN_SIGNED_AT);
    let mut s = resolve_settings(
        env(ENV_MODE),
        env(ENV_KEYS_DIR),
        env_min.is_some(),
        config.trust.as_ref(),
        &config.dir,
    );
    if let Some(min) = env_min {
        match min.to_str().map(chrono::DateTime::parse_from_rfc3339) {
            Some(Ok(t)) => s.min_signed_at = Some(t),
            _ => {
                s.problem.get_or_insert_with(|| {
                    format!("{ENV_MIN_SIGNED_AT} {min:?} is not an RFC 3339 time")
                });
            }
        }
    }
    s
}

/// `env_min`: the environment sets `UPM_TRUST_MIN_SIGNED_AT` (which counts like the
/// other two: the environment then decides alone).
fn resolve_settings(
    env_mode: Option<std::ffi::OsString>,
    env_dir: Option<std::ffi::OsString>,
    env_min: bool,
    config_block: Option<&Value>,
    config_dir: &Path,
) -> Settings {
    let mut problem = None;
    let from_env = env_mode.is_some() || env_dir.is_some() || env_min;
    let (mode, keys_dir) = if from_env {
        // Whoever can edit the config can edit its `trust` block: once the environment
        // speaks, the config can neither lower the mode nor choose the keys.
        let mode = match env_mode {
            None => Mode::Strict,
            Some(m) => match m.to_str() {
                Some("strict") => Mode::Strict,
                Some("warn") => Mode::Warn,
                Some("off") => Mode::Off,
                _ => {
                    problem = Some(format!("unknown trust mode {m:?} in {ENV_MODE}"));
                    Mode::Strict
                }
            },
        };
        let keys_dir = env_dir.map(|d| crate::config::absolute(Path::new(&d)));
        (mode, keys_dir)
    } else {
        match config_trust(config_block, config_dir) {
            Ok((cfg_mode, cfg_dir)) => {
                let mode = match cfg_mode.as_deref() {
                    Some("strict") => Mode::Strict,
                    Some("warn") => Mode::Warn,
                    Some("off") => Mode::Off,
                    Some(other) => {
                        problem = Some(format!("unknown trust mode {other:?}"));
                        Mode::Strict
                    }
                    None if cfg_dir.is_some() => Mode::Strict,
                    None => Mode::Off,
                };
                (mode, cfg_dir)
            }
            Err(e) => {
                problem = Some(e);
                (Mode::Strict, None)
            }
        }
    };
    Settings {
        mode,
        keys_dir,
        problem,
        from_env,
        min_signed_at: None,
    }
}

fn config_trust(
    v: Option<&Value>,
    dir: &Path,
) -> Result<(Option<String>, Option<PathBuf>), String> {
    let Some(v) = v else { return Ok((None, None)) };
    let obj = v.as_object().ok_or("\"trust\" must be an object")?;
    let mut mode = None;
    let mut keys_dir = None;
    for (k, val) in obj {
        match (k.as_str(), val) {
            ("mode", Value::String(s)) => mode = Some(s.clone()),
            ("keys_dir", Value::String(s)) => keys_dir = Some(dir.join(s)),
            _ => return Err(format!("\"trust\": unexpected {k:?}")),
        }
    }
    Ok((mode, keys_dir))
}

/// Path of the detached signature of a config.
pub fn sig_path(config_path: &Path) -> PathBuf {
    let mut s = config_path.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// How a file is named in the signature: relative to the config's directory when inside it.
/// Only UTF-8 paths are named: a lossy conversion could give two files one name, and
/// the signature would then cover only one of them.
fn label(config: &Config, p: &Path) -> Result<String, TrustError> {
    label_in(&config.dir, p)
}

fn label_in(dir: &Path, p: &Path) -> Result<String, TrustError> {
    p.strip_prefix(dir)
        .unwrap_or(p)
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| TrustError::NotUtf8(p.to_path_buf()))
}

/// A file's name for a message (never for the signature).
fn shown(config: &Config, p: &Path) -> String {
    p.strip_prefix(&config.dir)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// Digests by signature label. Two different paths never share a label: one would
/// silently stand for the other.
#[derive(Default)]
struct FileList {
    digests: BTreeMap<String, String>,
    paths: BTreeMap<String, PathBuf>,
}

impl FileList {
    fn add(&mut self, dir: &Path, path: &Path, digest: String) -> Result<(), TrustError> {
        let file = label_in(dir, path)?;
        match self.paths.get(&file) {
            Some(first) if first != path => {
                return Err(TrustError::DuplicateLabel {
                    file,
                    first: first.clone(),
                    second: path.to_path_buf(),
                })
            }
            // The same file, referenced twice (a profile shared by plugins, say).
            Some(_) if self.digests.get(&file) != Some(&digest) => {
                return Err(TrustError::Unreadable {
                    file,
                    reason: "it changed while it was being read".into(),
                })
            }
            Some(_) => {}
            None => {
                self.paths.insert(file.clone(), path.to_path_buf());
                self.digests.insert(file, digest);
            }
        }
        Ok(())
    }
}

/// The files one plugin depends on, with their current digests (`sha256:<hex>`), for signing and `check`.
///
/// Each file is read the way a call reads it (never by a plain path open that a FIFO or
/// a device would block): schemas and profiles as they load, executables through
/// [`crate::integrity`]'s checked descriptor.
pub fn plugin_files(
    config: &Config,
    plugin: &Plugin,
) -> Result<BTreeMap<String, String>, TrustError> {
    let mut out = FileList::default();
    add_plugin_files(config, plugin, &mut out)?;
    Ok(out.digests)
}

fn add_plugin_files(
    config: &Config,
    plugin: &Plugin,
    out: &mut FileList,
) -> Result<(), TrustError> {
    let unreadable = |p: &Path, reason: String| TrustError::Unreadable {
        file: shown(config, p),
        reason,
    };
    for m in plugin.methods.values() {
        for schema in m.schema.iter().chain(&m.output_schema) {
            // Every file the schema's $refs reach is covered too.
            let s = crate::schema::MethodSchema::load(schema)
                .map_err(|e| unreadable(schema, e.to_string()))?;
            for (path, hex) in s.file_digests() {
                out.add(&config.dir, path, format!("sha256:{hex}"))?;
            }
        }
    }
    // The built-in profile is part of upm itself, not a file the config references.
    if let Some(file) = plugin.seccomp_profile.file() {
        let profile = crate::sandbox::seccomp::Profile::load(file)
            .map_err(|e| unreadable(file, e.to_string()))?;
        out.add(&config.dir, file, profile.digest)?;
    }
    for exe in signed_executables(plugin) {
        let e = crate::integrity::open_executable(exe, None)
            .map_err(|e| unreadable(exe, e.to_string()))?;
        out.add(&config.dir, exe, format!("sha256:{}", e.sha256))?;
    }
    Ok(())
}

fn python_path_from_env(plugin: &Plugin) -> bool {
    matches!(
        plugin.kind,
        crate::config::PluginKind::PythonClass {
            python_path_from: crate::config::PythonPathFrom::Environment(_),
            ..
        }
    )
}

/// The executables of a plugin the signature lists: a pinned command's executable
/// (its pin is in the signed config too) and a Python class plugin's interpreter.
pub fn signed_executables(plugin: &Plugin) -> Vec<&Path> {
    match &plugin.kind {
        crate::config::PluginKind::Command { argv } if plugin.sha256.is_some() => {
            vec![Path::new(&argv[0])]
        }
        crate::config::PluginKind::Command { .. } => Vec::new(),
        crate::config::PluginKind::PythonClass { python, .. } => vec![python.exe.as_path()],
    }
}

/// What a plugin runs that neither a pin nor the signature vouches for: an executable
/// without `sha256` or `manifest_sha256`, a script's `#!` interpreter (never pinned),
/// a `python_path` without `manifest_sha256`, a virtualenv's packages, and the Python
/// interpreter unless `interpreter_signed` (trust is on: the signature lists it). The base system
/// (`/usr`, `/lib`: shared libraries, the loader) is never pinned and not listed.
pub fn unpinned(
    plugin: &Plugin,
    interpreter_signed: bool,
    script_interpreter: Option<&Path>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |p: &Path| out.push(p.display().to_string());
    match &plugin.kind {
        crate::config::PluginKind::Command { argv } => {
            if plugin.sha256.is_none() && plugin.manifest_sha256.is_none() {
                push(Path::new(&argv[0]));
            }
            if let Some(i) = script_interpreter {
                push(i);
            }
        }
        crate::config::PluginKind::PythonClass {
            python_path,
            python,
            ..
        } => {
            if !interpreter_signed {
                push(&python.exe);
            }
            if plugin.manifest_sha256.is_none() {
                python_path.iter().for_each(|p| push(p));
            }
            // A virtualenv's packages: no pin covers them.
            if let Some(venv) = &python.venv {
                push(venv);
            }
        }
    }
    out
}

/// Checks an executable a call is about to run (`digest`: SHA-256 hex of the very
/// bytes that will be exec'd) against the signature, when the signature lists it.
pub fn check_executable(
    config: &Config,
    signed: &Signed,
    path: &Path,
    digest: &str,
) -> Result<(), TrustError> {
    let file = label(config, path)?;
    match signed.files.get(&file) {
        Some(d) if d.strip_prefix("sha256:") == Some(digest) => Ok(()),
        Some(_) => Err(TrustError::Changed { file }),
        None => Err(TrustError::NotCovered { file }),
    }
}

/// Every file the config references, and the config itself.
pub fn all_files(config: &Config) -> Result<BTreeMap<String, String>, TrustError> {
    let mut files = FileList::default();
    files.add(&config.dir, &config.path, config.digest.clone())?;
    for p in config.plugins.values() {
        add_plugin_files(config, p, &mut files)?;
    }
    Ok(files.digests)
}

/// `upm sign`: writes `<config>.sig` with the given secret key; returns its path and
/// its `signed_at` (what `UPM_TRUST_MIN_SIGNED_AT` is compared with).
pub fn sign(config: &Config, secret: &Path) -> Result<(PathBuf, String), TrustError> {
    let key = keys::load_signing_key(secret)?;
    let key_id = keys::key_id(&key.verifying_key());
    let mut body = Map::new();
    body.insert("version".into(), json!(1));
    body.insert("key_id".into(), json!(key_id));
    let signed_at = crate::response::timestamp_now();
    body.insert("signed_at".into(), json!(signed_at));
    body.insert("files".into(), json!(all_files(config)?));
    let signed = crate::canonical::canonical_json(&Value::Object(body.clone()));
    let signature = key.sign(signed.as_bytes());
    body.insert("signature".into(), json!(hex::encode(signature.to_bytes())));
    let path = sig_path(&config.path);
    let text = serde_json::to_string_pretty(&Value::Object(body)).unwrap_or_default() + "\n";
    // A signature is public: 0644 whatever the umask.
    crate::files::replace_file(&path, text.as_bytes(), 0o644).map_err(|source| {
        TrustError::Write {
            path: path.clone(),
            source,
        }
    })?;
    Ok((path, signed_at))
}

/// A verified signature: which key, and the signed digests.
#[derive(Debug, Clone)]
pub struct Signed {
    pub key_id: String,
    /// When it was signed, as the signer's clock said (inside the signed body).
    pub signed_at: Option<String>,
    pub files: BTreeMap<String, String>,
}

/// Checks `<config>.sig` against the trusted keys and the config's own digest.
pub fn verify_signature(config: &Config, keys_dir: Option<&Path>) -> Result<Signed, TrustError> {
    let path = sig_path(&config.path);
    // A signature file lists a digest per file: small.
    const MAX_SIG_BYTES: u64 = 1 << 20;
    let bytes = match crate::files::read_regular(&path, MAX_SIG_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(TrustError::Unsigned(path)),
        Err(e) => {
            return Err(TrustError::BadSigFile {
                path,
                reason: e.to_string(),
            })
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(TrustError::BadSigFile {
            path,
            reason: "not UTF-8 text".into(),
        });
    };
    let bad = |reason: &str| TrustError::BadSigFile {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    let mut doc: Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let sig_hex = doc
        .remove("signature")
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| bad("no \"signature\""))?;
    if doc.get("version") != Some(&json!(1)) {
        return Err(bad("unsupported version"));
    }
    let key_id = doc
        .get("key_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no \"key_id\""))?
        .to_owned();
    let files: BTreeMap<String, String> = doc
        .get("files")
        .cloned()
        .and_then(|f| serde_json::from_value(f).ok())
        .ok_or_else(|| bad("no \"files\" map"))?;
    let sig_bytes: [u8; 64] = hex::decode(&sig_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the signature is not 64 bytes of hex"))?;
    let dir = keys_dir.ok_or(TrustError::NoKeysDir("set UPM_TRUSTED_KEYS_DIR"))?;
    let key = find_key(dir, &key_id)?;
    let signed_at = doc
        .get("signed_at")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let signed = crate::canonical::canonical_json(&Value::Object(doc));
    key.verify(signed.as_bytes(), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| TrustError::BadSignature {
            key_id: key_id.clone(),
        })?;
    let me = label(config, &config.path)?;
    match files.get(&me) {
        Some(d) if *d == config.digest => {}
        Some(_) => return Err(TrustError::Changed { file: me }),
        None => return Err(TrustError::NotCovered { file: me }),
    }
    Ok(Signed {
        key_id,
        signed_at,
        files,
    })
}

/// Finds the trusted key with this id; any `.pub`/`.pem` file that does not parse fails closed.
fn find_key(dir: &Path, key_id: &str) -> Result<VerifyingKey, TrustError> {
    let refuse = |reason: String| TrustError::KeysDir {
        dir: dir.to_path_buf(),
        reason,
    };
    // Whoever could add a file here could add a key of their own (each key's file is
    // checked likewise when it is read).
    let meta = std::fs::metadata(dir).map_err(|e| refuse(e.to_string()))?;
    crate::files::rules_safe(&meta).map_err(|e| refuse(e.to_string()))?;
    let entries = std::fs::read_dir(dir).map_err(|e| TrustError::KeysDir {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| TrustError::KeysDir {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let p = entry.path();
        let is_key = p.extension().is_some_and(|e| e == "pub" || e == "pem");
        if !is_key {
            continue;
        }
        let key = keys::load_verifying_key(&p).map_err(|e| TrustError::KeysDir {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        if keys::key_id(&key) == key_id {
            return Ok(key);
        }
    }
    Err(TrustError::UnknownKey {
        key_id: key_id.to_owned(),
        dir: dir.to_path_buf(),
    })
}

/// Checks that every file in `current` is covered by the signature with the same digest.
pub fn compare(signed: &Signed, current: &BTreeMap<String, String>) -> Result<(), TrustError> {
    for (file, digest) in current {
        match signed.files.get(file) {
            Some(d) if d == digest => {}
            Some(_) => return Err(TrustError::Changed { file: file.clone() }),
            None => return Err(TrustError::NotCovered { file: file.clone() }),
        }
    }
    Ok(())
}

/// The trust verdict for one call (or for `check` when `plugin` is None).
pub struct Verdict {
    pub mode: Mode,
    pub result: Result<Signed, TrustError>,
    /// What the call runs that neither a pin nor the signature vouches for (see
    /// [`unpinned`]); "verified" says nothing about those.
    pub unpinned: Vec<String>,
}

impl Verdict {
    /// For the result and the audit entry.
    pub fn to_json(&self) -> Value {
        let mut v = match &self.result {
            Ok(signed) => {
                json!({ "mode": self.mode.as_str(), "status": "verified", "key_id": signed.key_id })
            }
            Err(e) => {
                json!({ "mode": self.mode.as_str(), "status": "failed", "reason": e.to_string() })
            }
        };
        if !self.unpinned.is_empty() {
            v["unpinned"] = json!(self.unpinned);
        }
        v
    }
}

/// What one call uses, already loaded: their digests are of the very bytes in use,
/// so a file swapped after this check cannot be used unverified.
pub struct CallFiles<'a> {
    pub plugin: &'a Plugin,
    pub schema: Option<&'a crate::schema::MethodSchema>,
    /// The method's `output_schema`, which the plugin's result is checked against.
    pub output_schema: Option<&'a crate::schema::MethodSchema>,
    pub seccomp: &'a crate::sandbox::seccomp::Profile,
}

fn call_files(
    config: &Config,
    call: &CallFiles<'_>,
) -> Result<BTreeMap<String, String>, TrustError> {
    let mut out = FileList::default();
    for schema in call.schema.into_iter().chain(call.output_schema) {
        for (path, hex) in schema.file_digests() {
            out.add(&config.dir, path, format!("sha256:{hex}"))?;
        }
    }
    if let Some(file) = call.plugin.seccomp_profile.file() {
        out.add(&config.dir, file, call.seccomp.digest.clone())?;
    }
    // The executables the signature lists are checked later, by
    // [`check_executable`], on the digest of the very bytes that are exec'd.
    Ok(out.digests)
}

/// Verifies the config and the files a call (or every plugin) depends on.
pub fn check(config: &Config, call: Option<&CallFiles<'_>>) -> Option<Verdict> {
    let s = settings(config);
    if s.mode == Mode::Off {
        return None;
    }
    let result = (|| {
        if let Some(p) = &s.problem {
            return Err(TrustError::Settings(p.clone()));
        }
        if s.keys_dir.is_none() {
            return Err(TrustError::NoKeysDir(if s.from_env {
                "the environment sets trust (UPM_TRUST_MODE or UPM_TRUST_MIN_SIGNED_AT) but not \
                 UPM_TRUSTED_KEYS_DIR, and the config's \"trust\" block (keys_dir included) is \
                 ignored whenever the environment sets any of them"
            } else {
                "set UPM_TRUSTED_KEYS_DIR (or the config's trust.keys_dir)"
            }));
        }
        let signed = verify_signature(config, s.keys_dir.as_deref())?;
        if let Some(min) = s.min_signed_at {
            let at = signed.signed_at.as_deref().unwrap_or("");
            let older = chrono::DateTime::parse_from_rfc3339(at).map_or(true, |t| t < min);
            if older {
                return Err(TrustError::TooOld {
                    signed_at: if at.is_empty() { "an unknown time" } else { at }.to_owned(),
                    min: min.to_rfc3339(),
                });
            }
        }
        let current = match call {
            Some(files) => call_files(config, files)?,
            None => all_files(config)?,
        };
        compare(&signed, &current)?;
        // What the environment decides is not signed: UPM's module lookup.
        let mut plugins: Vec<&Plugin> = match call {
            Some(files) => vec![files.plugin],
            None => config.plugins.values().collect(),
        };
        plugins.retain(|p| python_path_from_env(p));
        if let Some(p) = plugins.first() {
            return Err(TrustError::EnvironmentPythonPath(p.name.clone()));
        }
        Ok(signed)
    })();
    Some(Verdict {
        mode: s.mode,
        result,
        unpinned: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn resolve(mode: Option<&[u8]>, dir: Option<&str>, block: Value) -> Settings {
        resolve_settings(
            mode.map(|m| OsString::from_vec(m.to_vec())),
            dir.map(OsString::from),
            false,
            Some(&block),
            Path::new("/cfg"),
        )
    }

    /// Once the environment sets either variable, the config's block counts for nothing:
    /// it can neither lower the mode nor choose the keys.
    #[test]
    fn the_environment_alone_decides_once_it_sets_anything() {
        let lax = json!({ "mode": "off", "keys_dir": "mine" });
        let s = resolve(None, Some("/keys"), lax.clone());
        assert_eq!(s.mode, Mode::Strict);
        assert_eq!(s.keys_dir.as_deref(), Some(Path::new("/keys")));
        assert!(s.problem.is_none() && s.from_env);

        let s = resolve(Some(b"strict"), None, lax.clone());
        assert_eq!(s.mode, Mode::Strict);
        assert_eq!(s.keys_dir, None, "the config may not choose the keys");
        let s = resolve(
            Some(b"warn"),
            None,
            json!({ "mode": "strict", "keys_dir": "k" }),
        );
        assert_eq!((s.mode, s.keys_dir), (Mode::Warn, None));
        let s = resolve(Some(b"off"), None, json!({ "mode": "strict" }));
        assert_eq!(s.mode, Mode::Off);
        // A block the config got wrong does not matter either.
        let s = resolve(Some(b"strict"), Some("/keys"), json!({ "keyz": 1 }));
        assert!(s.problem.is_none());
    }

    #[test]
    fn an_unknown_or_non_utf8_mode_from_the_environment_is_strict() {
        for mode in [&b"str\xffict"[..], b"permissive", b"STRICT", b"off "] {
            let s = resolve(Some(mode), Some("/keys"), json!({ "mode": "off" }));
            assert_eq!(s.mode, Mode::Strict, "{mode:?}");
            assert!(s.problem.is_some(), "{mode:?}");
        }
    }

    /// No lossy names: two non-UTF-8 names would merge into one label, and the map
    /// would keep one digest for two files.
    #[test]
    fn labels_are_utf8_and_never_shared_by_two_paths() {
        use std::os::unix::ffi::OsStrExt;
        let dir = Path::new("/cfg");
        let ff = dir.join(std::ffi::OsStr::from_bytes(b"schemas/a\xff.json"));
        let mut files = FileList::default();
        assert!(matches!(
            files.add(dir, &ff, "sha256:1".into()),
            Err(TrustError::NotUtf8(_))
        ));
        files
            .add(dir, Path::new("/cfg/schemas/a.json"), "sha256:1".into())
            .unwrap();
        // The same file again: fine if it read the same.
        files
            .add(dir, Path::new("/cfg/schemas/a.json"), "sha256:1".into())
            .unwrap();
        assert!(files
            .add(dir, Path::new("/cfg/schemas/a.json"), "sha256:2".into())
            .is_err());
        // Another path with the same label.
        files
            .paths
            .insert("x".into(), PathBuf::from("/elsewhere/x"));
        assert!(matches!(
            files.add(dir, Path::new("/cfg/x"), "sha256:3".into()),
            Err(TrustError::DuplicateLabel { .. })
        ));
        assert_eq!(files.digests.len(), 1);
    }

    #[test]
    fn without_the_environment_the_config_block_applies() {
        let s = resolve(None, None, json!({ "keys_dir": "k" }));
        assert_eq!(s.mode, Mode::Strict);
        assert_eq!(s.keys_dir.as_deref(), Some(Path::new("/cfg/k")));
        assert!(!s.from_env);
        let s = resolve(None, None, json!({ "mode": "warn" }));
        assert_eq!((s.mode, s.keys_dir), (Mode::Warn, None));
        let s = resolve(None, None, json!({ "mode": "nope" }));
        assert_eq!(s.mode, Mode::Strict);
        assert!(s.problem.is_some());
        let s = resolve_settings(None, None, false, None, Path::new("/cfg"));
        assert_eq!(s.mode, Mode::Off);
        // A minimum signing time alone is the environment speaking too: strict, and
        // keys from the environment only.
        let block = json!({ "mode": "off", "keys_dir": "k" });
        let s = resolve_settings(None, None, true, Some(&block), Path::new("/cfg"));
        assert_eq!((s.mode, s.keys_dir, s.from_env), (Mode::Strict, None, true));
    }
}
