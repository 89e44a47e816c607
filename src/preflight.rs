//! The files a config names that make it valid or not, checked as a whole before any
//! call runs: every method's schema (and output schema) and every seccomp profile. A config whose one schema
//! is missing is invalid, and an invalid config runs nothing — not even the methods
//! whose own files are fine — so that `upm run`, `upm list` and `upm check` agree.
//!
//! Schemas are checked without compiling a validator (read, parsed, checked against
//! their draft's meta-schema, every `$ref` local and readable: about 20 µs a schema on
//! a one-shot call, see the `phases` benchmark); the called method's own is compiled
//! when it is called. Profiles are loaded and compiled here, and a call reuses them.

use crate::config::{Config, ConfigError, Plugin};
use crate::sandbox::policy::SeccompSource;
use crate::sandbox::seccomp::{CompileOptions, Profile};
use crate::schema::{CheckedSchema, MethodSchema};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the check found, and the profiles it loaded (for the calls to reuse).
pub struct Checked {
    pub profiles: HashMap<SeccompSource, Arc<Profile>>,
    /// The schemas as read and checked, for the calls to compile without reading again.
    pub schemas: HashMap<PathBuf, CheckedSchema>,
    pub problems: Vec<String>,
}

/// Loads the config and checks the files it names: either a config every call may
/// use, or one error that lists every problem.
pub fn load(path: &Path) -> Result<(Config, Checked), ConfigError> {
    let config = Config::load(path)?;
    let checked = check(&config);
    if checked.problems.is_empty() {
        Ok((config, checked))
    } else {
        Err(ConfigError::Invalid {
            path: config.path.clone(),
            problems: checked.problems,
        })
    }
}

/// Every schema file (once per file, naming the methods that use it) and every seccomp
/// profile (loaded once per file, compiled as each plugin will use it).
pub fn check(config: &Config) -> Checked {
    let mut problems = Vec::new();
    // Each user of a schema file: the plugin, the method, and whether as its output_schema.
    let mut schemas: BTreeMap<&Path, Vec<(&Plugin, &str, bool)>> = BTreeMap::new();
    for plugin in config.plugins.values() {
        for (method, spec) in &plugin.methods {
            if let Some(path) = &spec.schema {
                schemas
                    .entry(path)
                    .or_default()
                    .push((plugin, method, false));
            }
            if let Some(path) = &spec.output_schema {
                schemas
                    .entry(path)
                    .or_default()
                    .push((plugin, method, true));
            }
        }
    }
    let mut kept = HashMap::new();
    for (path, users) in schemas {
        let named = |(p, m, output): &(&Plugin, &str, bool)| {
            let what = if *output { " (output_schema)" } else { "" };
            format!("plugin \"{}\", method \"{m}\"{what}", p.name)
        };
        let checked = match MethodSchema::check_kept(path) {
            Err(e) => {
                problems.push(format!(
                    "{}: {e}",
                    who(&users.iter().map(named).collect::<Vec<_>>())
                ));
                continue;
            }
            Ok(c) => c,
        };
        let grants = checked.grants().to_vec();
        kept.insert(path.to_path_buf(), checked);
        match grants {
            // Grants need roots to fall under: without them, fail closed.
            grants if !grants.is_empty() => {
                let marked = || {
                    grants
                        .iter()
                        .map(|g| g.pointer())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                // A result grants nothing: a mark there would be read as a promise.
                for user in users.iter().filter(|(_, _, output)| *output) {
                    problems.push(format!(
                        "{}: it marks {} with \"{}\", which only an args schema may hold",
                        named(user),
                        marked(),
                        crate::schema::GRANT_KEYWORD,
                    ));
                }
                let args_users = users.iter().filter(|(_, _, output)| !*output);
                for user in args_users.filter(|(p, _, _)| p.grants_within.is_empty()) {
                    problems.push(format!(
                        "{}: its schema marks {} with \"{}\", but the plugin has no \
                         \"grants_within\": list the directories such paths may be in",
                        named(user),
                        marked(),
                        crate::schema::GRANT_KEYWORD,
                    ));
                }
            }
            _ => {}
        }
    }

    // A schema's `$ref`d files decide what a call may pass, its grant marks included: no
    // grant root may hold one (the schemas themselves, and the rest of what a grant must
    // not reach, are refused with the config: `config::guarded_files`).
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut reached = std::collections::BTreeSet::new();
    for plugin in config.plugins.values() {
        for root in &plugin.grants_within {
            let root_real = real(root);
            for (schema, checked) in &kept {
                for file in checked.files().skip(1) {
                    if real(file).starts_with(&root_real) {
                        reached.insert(format!(
                            "plugin \"{}\": \"grants_within\" {} contains {}, which the \
                             schema {} refers to: a call could have it granted to the plugin",
                            plugin.name,
                            root.display(),
                            file.display(),
                            schema.display()
                        ));
                    }
                }
            }
        }
    }
    problems.extend(reached);

    let mut profiles = HashMap::new();
    let mut broken: HashMap<&SeccompSource, (String, Vec<String>)> = HashMap::new();
    for (name, plugin) in &config.plugins {
        let source = &plugin.seccomp_profile;
        if let Some((_, users)) = broken.get_mut(source) {
            users.push(format!("plugin \"{name}\""));
            continue;
        }
        let loaded = match profiles.get(source) {
            Some(p) => Ok(Arc::clone(p)),
            // Parsed only if a program is to be compiled (a root upm keeps them).
            None => source.load_deferred().map(Arc::new),
        };
        let compiled = loaded.and_then(|p| compile(&p, plugin).map(|()| p));
        match compiled {
            Ok(p) => {
                profiles.insert(source.clone(), p);
            }
            Err(e) => {
                broken.insert(source, (e.to_string(), vec![format!("plugin \"{name}\"")]));
            }
        }
    }
    let mut broken: Vec<_> = broken.into_iter().collect();
    broken.sort_by_key(|(source, _)| source.file().map(Path::to_path_buf));
    for (source, (error, users)) in broken {
        // Name the file, which a profile's own errors name only by its stem.
        let file = match source.file() {
            Some(path) => path.display().to_string(),
            None => "(built in)".to_owned(),
        };
        let file = if error.contains(&file) {
            String::new()
        } else {
            format!(" {file}")
        };
        problems.push(format!("{}: seccomp profile{file}: {error}", who(&users)));
    }
    Checked {
        profiles,
        schemas: kept,
        problems,
    }
}

/// Compiled as the plugin's calls will compile it (the profile caches the filter).
fn compile(
    profile: &Profile,
    plugin: &Plugin,
) -> Result<(), crate::sandbox::seccomp::SeccompError> {
    let options = CompileOptions {
        deny_sockets: !plugin.policy.network.is_host(),
        allow_tcp: plugin.policy.network.allowlist().is_some(),
    };
    profile.compiled(&options).map(drop)
}

/// Every plugin (and method) that uses the file, so that each one's `upm check`
/// verdict can find it.
fn who(users: &[String]) -> String {
    users.join(" and ")
}
