//! What the config asks of the sandbox, per plugin: the `Policy` the layers
//! are prepared from. Defaults are the strict ones; every relaxation is explicit.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A sandbox layer, by the name used in `allow_degraded`, results and the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Credentials,
    Network,
    Landlock,
    Seccomp,
    Namespaces,
    Limits,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Credentials => "credentials",
            Layer::Network => "network",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::Namespaces => "namespaces",
            Layer::Limits => "limits",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    #[default]
    Native,
    Container,
}

/// A container engine, as the config's `"engine"` (or `UPM_CONTAINER_ENGINE`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Podman,
    Docker,
}

/// A name that is no container engine upm knows.
#[derive(Debug, thiserror::Error)]
#[error("unknown container engine {0:?} (use \"podman\" or \"docker\")")]
pub struct UnknownEngine(pub String);

impl EngineKind {
    pub fn parse(name: &str) -> Result<EngineKind, UnknownEngine> {
        match name {
            "podman" => Ok(EngineKind::Podman),
            "docker" => Ok(EngineKind::Docker),
            other => Err(UnknownEngine(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
}

impl Default for UserSpec {
    fn default() -> Self {
        UserSpec {
            uid: 65534,
            gid: 65534,
        }
    }
}

/// Hard limits on one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall clock; the whole process tree is killed when it runs out.
    pub timeout_ms: u64,
    pub cpu_seconds: u64,
    /// Address space (RLIMIT_AS) of each process.
    pub memory_bytes: u64,
    /// Processes and threads of the plugin's uid (RLIMIT_NPROC).
    pub max_processes: u64,
    pub file_size_bytes: u64,
    /// Everything the plugin writes together: the size of its private home, a tmpfs in
    /// the call's own mount namespace (memory, not the host's disk).
    pub disk_bytes: u64,
    pub open_files: u64,
    /// stdout + stderr (+ the Python result channel) together; past it the plugin is stopped.
    pub output_bytes: u64,
}

impl Limits {
    /// Values that cannot give a working sandbox: zero, for the limits where it means
    /// "nothing may run" rather than "nothing may be written or printed". (Past the
    /// top, `u64::MAX` is the kernel's "unlimited".)
    pub fn problems(&self) -> Vec<String> {
        [
            ("timeout_ms", self.timeout_ms),
            ("cpu_seconds", self.cpu_seconds),
            ("memory_bytes", self.memory_bytes),
            ("max_processes", self.max_processes),
            ("open_files", self.open_files),
            // A tmpfs of size 0 would be unlimited.
            ("disk_bytes", self.disk_bytes),
        ]
        .into_iter()
        .filter(|(_, v)| *v == 0)
        .map(|(name, _)| format!("\"sandbox.limits.{name}\" must be at least 1"))
        .collect()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 10_000,
            cpu_seconds: 10,
            memory_bytes: 1 << 30,
            max_processes: 64,
            file_size_bytes: 16 << 20,
            disk_bytes: 64 << 20,
            open_files: 256,
            output_bytes: 4 << 20,
        }
    }
}

/// The plugin's environment: nothing of the caller's unless allowed by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvSettings {
    /// Variables copied from upm's own environment when present.
    pub allow: Vec<String>,
    /// Variables set to fixed values (win over `allow`).
    pub set: BTreeMap<String, String>,
}

impl Default for EnvSettings {
    fn default() -> Self {
        EnvSettings {
            allow: vec!["LANG".into(), "LC_ALL".into(), "TZ".into()],
            // HOME is the call's home unless `set` names one (see `launch`).
            set: BTreeMap::from([("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())]),
        }
    }
}

/// The config's `sandbox` block (top-level defaults merged with a plugin's overrides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub backend: Backend,
    /// Who the plugin runs as when upm is root.
    pub user: UserSpec,
    /// `false` (none), `true` (every network layer lifted, explicitly and visibly), or
    /// an egress allowlist (`{"allow": [...]}`: only through upm's proxy).
    pub network: Network,
    /// OCI/Docker seccomp profile: `"default"`, the one built into upm
    /// ([`BUILTIN_SECCOMP`]), or a file, relative to the config directory.
    pub seccomp: PathBuf,
    /// Extra paths the plugin may read and execute.
    pub read_paths: Vec<PathBuf>,
    /// Extra paths the plugin may write (besides its private working directory).
    pub write_paths: Vec<PathBuf>,
    pub limits: Limits,
    pub env: EnvSettings,
    /// Layers that may be skipped where this kernel or invoker cannot apply them.
    pub allow_degraded: Vec<Layer>,
    /// Container backend: image reference (digest-pinned unless `allow_tags`).
    pub image: Option<String>,
    pub engine: Option<String>,
    pub allow_tags: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            backend: Backend::Native,
            user: UserSpec::default(),
            network: Network::None,
            seccomp: PathBuf::from(BUILTIN_SECCOMP_NAME),
            read_paths: Vec::new(),
            write_paths: Vec::new(),
            limits: Limits::default(),
            env: EnvSettings::default(),
            allow_degraded: Vec::new(),
            image: None,
            engine: None,
            allow_tags: false,
        }
    }
}

impl Policy {
    /// The seccomp profile's file; `None` for the built-in profile (the config is
    /// loaded, so a file's path is absolute and never the bare name `default`).
    pub fn seccomp_file(&self) -> Option<&Path> {
        (self.seccomp != Path::new(BUILTIN_SECCOMP_NAME)).then_some(self.seccomp.as_path())
    }
}

/// The config's `"network"`: `false`, `true`, or `{"allow": [...], ...}` (issue 22).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Network {
    /// Nothing: no socket but stream socketpairs, an empty network namespace.
    #[default]
    None,
    /// The host's network, every network layer lifted.
    Host,
    /// Only the hosts on the list, through the call's egress proxy ([`crate::egress`]).
    Allow(crate::egress::Settings),
}

impl Network {
    /// Whether every network layer is lifted (`"network": true`).
    pub fn is_host(&self) -> bool {
        matches!(self, Network::Host)
    }

    /// The egress allowlist and its limits, when the config gives one.
    pub fn allowlist(&self) -> Option<&crate::egress::Settings> {
        match self {
            Network::Allow(s) => Some(s),
            _ => None,
        }
    }
}

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Network::None => s.serialize_bool(false),
            Network::Host => s.serialize_bool(true),
            Network::Allow(settings) => settings.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(false) => Ok(Network::None),
            serde_json::Value::Bool(true) => Ok(Network::Host),
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(Network::Allow)
                .map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom(
                "\"network\" is false, true, or {\"allow\": [\"HOST[:PORT]\", ...]}",
            )),
        }
    }
}

/// The default seccomp profile, built into the binary as Docker builds in its own, so
/// that a config written anywhere runs without a `policies/` directory beside it.
/// `policies/default.json` is its readable source (a test checks they are the same).
pub const BUILTIN_SECCOMP: &[u8] = include_bytes!("../../policies/default.json");
/// How a config names the built-in profile, and the profile's name in reports.
pub const BUILTIN_SECCOMP_NAME: &str = "default";

/// Where a plugin's seccomp profile comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SeccompSource {
    /// `"seccomp": "default"` (or nothing): [`BUILTIN_SECCOMP`].
    Builtin,
    /// Any other value: a profile file (absolute once the config is loaded). A file
    /// named `default` beside the config is `"./default"`.
    File(PathBuf),
}

impl SeccompSource {
    /// `value` as the config wrote it; a relative path is relative to `dir`.
    pub fn from_config(value: &Path, dir: &Path) -> SeccompSource {
        if value == Path::new(BUILTIN_SECCOMP_NAME) {
            SeccompSource::Builtin
        } else {
            // Components collected: `./default` is reported as `DIR/default`.
            SeccompSource::File(dir.join(value).components().collect())
        }
    }

    pub fn load(&self) -> Result<super::seccomp::Profile, super::seccomp::SeccompError> {
        match self {
            SeccompSource::Builtin => {
                super::seccomp::Profile::from_json(BUILTIN_SECCOMP_NAME, BUILTIN_SECCOMP)
            }
            SeccompSource::File(path) => super::seccomp::Profile::load(path),
        }
    }

    /// [`load`](Self::load), parsed only when first needed (see
    /// [`Profile::deferred`](super::seccomp::Profile::deferred)).
    pub fn load_deferred(&self) -> Result<super::seccomp::Profile, super::seccomp::SeccompError> {
        match self {
            SeccompSource::Builtin => Ok(super::seccomp::Profile::deferred(
                BUILTIN_SECCOMP_NAME,
                BUILTIN_SECCOMP,
            )),
            SeccompSource::File(path) => super::seccomp::Profile::load_deferred(path),
        }
    }

    /// The file, when there is one (the signature covers files, not upm's own profile).
    pub fn file(&self) -> Option<&Path> {
        match self {
            SeccompSource::Builtin => None,
            SeccompSource::File(p) => Some(p),
        }
    }
}

/// Overlays `over` on `base`: objects merge key by key, anything else replaces.
pub fn merge_json(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge_json(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}
