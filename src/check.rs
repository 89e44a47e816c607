//! What `upm check` finds in a config, as a [`Report`]: beyond what every call checks
//! as a whole ([`crate::preflight`]), the files each plugin would run (pins), what its
//! user must reach, its module, its egress proxy, the audit log. `upm check` prints it;
//! `upm mcp` refuses to start on a problem that fails every call and leaves out the
//! tools of a plugin with one, so that the two agree on what would fail.

use crate::config::{self, Config, PluginKind};
use crate::schema::MethodSchema;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// What the checks found.
pub struct Report {
    /// Every problem but the signature's, in the order `upm check` prints them.
    pub problems: Vec<String>,
    /// Those of `problems` that fail every call, whatever it names: the audit log's
    /// (it cannot be opened, its signing key cannot be loaded): exit 11, audit_error.
    pub every_call: Vec<String>,
    pub warnings: Vec<String>,
    /// Each plugin's verdict: its methods, pins, network, grants and `ok`.
    pub plugins: Map<String, Value>,
    /// The signature's verdict (`{"mode": "off"}` without trust).
    pub signature: Value,
    /// Strict trust whose signature does not verify over the whole config. Apart, since
    /// a call checks it over its own plugin's files only: it may fail some calls, or all.
    pub signature_problem: Option<String>,
}

impl Report {
    /// The problems that name plugin `name` (`upm check`'s `"ok": false` for it).
    pub fn of_plugin<'r>(&'r self, name: &'r str) -> impl Iterator<Item = &'r String> + 'r {
        self.problems.iter().filter(move |p| names(p, name))
    }
}

/// Each problem names every plugin it concerns, as `plugin "NAME"`.
fn names(problem: &str, plugin: &str) -> bool {
    problem.contains(&format!("plugin \"{plugin}\""))
}

/// Checks what `upm check` checks of a config that loaded.
pub fn check(config: &Config) -> Report {
    // What every call checks (schemas, seccomp profiles): a problem here stops them all.
    let mut problems = crate::preflight::check(config).problems;
    let mut warnings = config.warnings.clone();
    let mut every_call = Vec::new();
    audit_problems(config, &mut every_call);
    problems.extend(every_call.iter().cloned());
    if config.plugins.is_empty() {
        // Valid (deny-all), but more likely a config written under the wrong key.
        warnings.push("the config names no plugins: every call is refused".to_string());
    }
    let mut plugins = serde_json::Map::new();
    for (name, p) in &config.plugins {
        let at = format!("plugin \"{name}\"");
        if p.methods.is_empty() {
            // Never called (`warnings` says so): nothing of it is loaded or run.
            plugins.insert(name.clone(), json!({ "methods": [], "ok": true }));
            continue;
        }
        if let PluginKind::PythonClass {
            module,
            python_path,
            python_path_from,
            ..
        } = &p.kind
        {
            if let config::PythonPathFrom::Environment(env) = python_path_from {
                warnings.push(env_python_path_warning(&at, env));
                if let Some(problem) = &env.problem {
                    problems.push(format!("{at}: every call is refused: {problem}"));
                }
            }
            check_module(&at, module, python_path, &mut warnings);
        }
        for (m, spec) in &p.methods {
            if let Some(path) = &spec.output_schema {
                if let Err(e @ crate::schema::SchemaError::Compile { .. }) =
                    MethodSchema::load(path)
                {
                    problems.push(format!("{at}, method \"{m}\": output_schema: {e}"));
                }
            }
            if let Some(path) = &spec.schema {
                // What the files' check leaves to compiling (e.g. a regex it cannot build),
                // and to bundling for `upm list`.
                match MethodSchema::load(path).map(|s| s.bundled()) {
                    Err(e @ crate::schema::SchemaError::Compile { .. }) => {
                        problems.push(format!("{at}, method \"{m}\": {e}"))
                    }
                    Ok(Err(e)) => warnings.push(format!(
                        "{at}, method \"{m}\": {e}: upm list prints it unbundled (bundle_error)"
                    )),
                    _ => {}
                }
            } else {
                let why = if spec.upm_whitelist_only {
                    "it is whitelisted only through UPM's \"allowed_methods\""
                } else {
                    "the config sets \"require_schemas\": false"
                };
                warnings.push(format!(
                    "{at}: method \"{m}\" has no schema ({why}): no schema checks its args \
                     (upm migrate derives one from its signature)"
                ));
            }
        }
        for m in &p.private_methods {
            warnings.push(format!(
                "{at}: \"{m}\" in \"allowed_methods\" is private: every call to it is refused \
                 (exit 7), as in UPM"
            ));
        }

        // issue 22: an allowlist needs its proxy, installed beside upm.
        if p.policy.network.allowlist().is_some() {
            if let Err(e) = crate::spawn::egress::open() {
                problems.push(format!("{at}: {e}"));
            }
        }
        // A container plugin's files live in its image, pinned by digest.
        let pins = match p.policy.backend {
            crate::sandbox::policy::Backend::Container => {
                match crate::container::check_image(p) {
                    crate::container::ImageCheck::Present => {}
                    crate::container::ImageCheck::Problem(e) => problems.push(format!("{at}: {e}")),
                    crate::container::ImageCheck::Warning(e) => warnings.push(format!("{at}: {e}")),
                }
                json!({ "image": p.policy.image })
            }
            crate::sandbox::policy::Backend::Native => {
                reach_problems(p, &mut problems, &mut warnings);
                pins(config, p, &mut problems)
            }
        };
        let mut entry = json!({
            "methods": p.methods.keys().collect::<Vec<_>>(),
            "pins": pins,
            "network": p.policy.network,
        });
        if let Some(grants) = grants_of(p) {
            entry["grants"] = grants;
        }
        plugins.insert(name.clone(), entry);
    }
    // Each problem names every plugin it concerns.
    for (name, entry) in plugins.iter_mut() {
        entry["ok"] = json!(!problems.iter().any(|p| names(p, name)));
    }
    let mut signature_problem = None;
    let signature = match crate::trust::check(config, None) {
        None => json!({ "mode": "off" }),
        Some(v) => {
            if let (Err(e), crate::trust::Mode::Strict) = (&v.result, v.mode) {
                signature_problem = Some(format!("signature: {e}"));
            }
            v.to_json()
        }
    };
    Report {
        problems,
        every_call,
        warnings,
        plugins,
        signature,
        signature_problem,
    }
}

/// Each pin of a plugin: what is pinned, what is there now.
fn pins(config: &Config, p: &crate::config::Plugin, problems: &mut Vec<String>) -> Value {
    let at = format!("plugin \"{}\"", p.name);
    let mut out = serde_json::Map::new();
    let (exe, roots) = match &p.kind {
        PluginKind::Command { argv } => {
            let exe = PathBuf::from(&argv[0]);
            let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            (exe, vec![dir])
        }
        PluginKind::PythonClass {
            python_path,
            python,
            ..
        } => (python.exe.clone(), python_path.clone()),
    };
    let interpreter_signed = crate::trust::settings(config).mode != crate::trust::Mode::Off;
    let mut script = None;
    let who = crate::access::Who::plugin(&p.policy.user);
    // A Python class plugin's interpreter as a call checks it first.
    let refused = match &p.kind {
        PluginKind::PythonClass { python, .. } => config::command_not_found(&python.path)
            .or_else(|| python.symlink_problem())
            .or_else(|| {
                let venv = python.venv.as_deref()?;
                crate::integrity::check_venv(venv)
                    .err()
                    .map(|e| e.to_string())
            }),
        PluginKind::Command { .. } => None,
    };
    let opened = match refused.or_else(|| config::command_not_found(&exe)) {
        Some(why) => Err(why),
        None => {
            crate::integrity::open_executable(&exe, p.sha256.as_deref()).map_err(|e| e.to_string())
        }
    };
    match opened {
        Ok(e) => {
            script = e.interpreter.clone();
            // A script is read by its interpreter, as the plugin.
            let want = crate::access::EXEC | if e.script { crate::access::READ } else { 0 };
            if let Some(why) = crate::access::denied(&exe, &who, want) {
                let what = match p.kind {
                    PluginKind::Command { .. } => "command",
                    PluginKind::PythonClass { .. } => "the Python interpreter",
                };
                problems.push(format!("{at}: {what} cannot be started: {why}"));
            }
            out.insert(
                "exec".into(),
                json!({ "path": exe, "sha256": e.sha256, "pinned": p.sha256, "ok": true }),
            );
        }
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            out.insert(
                "exec".into(),
                json!({ "path": exe, "pinned": p.sha256, "ok": false, "error": e }),
            );
        }
    }
    if p.manifest_sha256.is_some() || matches!(p.kind, PluginKind::PythonClass { .. }) {
        let m = crate::integrity::manifest(&roots).and_then(|m| {
            match &p.manifest_sha256 {
                Some(pin) => m.check(&roots, pin)?,
                // Run in place: its bytecode caches are checked too.
                None => crate::integrity::check_tree(&roots)?,
            }
            Ok(m)
        });
        match m {
            Ok(m) => out.insert("manifest".into(), json!({ "roots": roots, "sha256": m.digest, "pinned": p.manifest_sha256, "ok": true })),
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                out.insert("manifest".into(), json!({ "roots": roots, "pinned": p.manifest_sha256, "ok": false, "error": e.to_string() }))
            }
        };
    }
    // What a call would run that nothing vouches for (a "verified" signature included).
    let unpinned = crate::trust::unpinned(p, interpreter_signed, script.as_deref());
    out.insert("unpinned".into(), json!(unpinned));
    Value::Object(out)
}

/// The audit log must be writable where a call will write it: else every call exits 11.
fn audit_problems(config: &Config, problems: &mut Vec<String>) {
    use nix::unistd::{faccessat, AccessFlags};
    let log = &config.audit_path;
    let can = |p: &Path, how| {
        faccessat(
            nix::fcntl::AT_FDCWD,
            p,
            how,
            nix::fcntl::AtFlags::AT_EACCESS,
        )
    };
    let dir = log.parent().unwrap_or(Path::new("/"));
    let why = match std::fs::metadata(dir) {
        Err(e) => Some(format!("its directory {}: {e}", dir.display())),
        Ok(m) if !m.is_dir() => Some(format!("{} is not a directory", dir.display())),
        Ok(_) => match std::fs::symlink_metadata(log) {
            Ok(m) if !m.is_file() => Some("it is not a regular file".to_owned()),
            Ok(_) => can(log, AccessFlags::W_OK)
                .err()
                .map(|e| format!("it cannot be written by upm: {e}")),
            Err(_) => can(dir, AccessFlags::W_OK | AccessFlags::X_OK)
                .err()
                .map(|e| {
                    format!(
                        "its directory {} cannot be written by upm: {e}",
                        dir.display()
                    )
                }),
        },
    };
    if let Some(why) = why {
        problems.push(format!(
            "audit log {}: {why}; every call would fail (exit 11, audit_error)",
            log.display()
        ));
    }
    if let Some(key) = &config.audit.signing_key {
        if let Err(e) = crate::keys::load_signing_key(key) {
            problems.push(format!(
                "audit signing key: {e}; every call would fail (exit 11)"
            ));
        }
    }
}

/// A plugin's per-call grants for `upm check` (issue 24): its roots and, per method,
/// the arguments its schema marks `x-upm-grant`; `None` when it has neither.
fn grants_of(p: &crate::config::Plugin) -> Option<Value> {
    let mut arguments = serde_json::Map::new();
    for (m, spec) in &p.methods {
        let Some(Ok(grants)) = spec.schema.as_deref().map(MethodSchema::check) else {
            continue;
        };
        if !grants.is_empty() {
            let listed: Vec<Value> = grants
                .iter()
                .map(|g| json!({ "argument": g.pointer(), "access": g.access() }))
                .collect();
            arguments.insert(m.clone(), json!(listed));
        }
    }
    if arguments.is_empty() && p.grants_within.is_empty() {
        return None;
    }
    Some(json!({ "within": p.grants_within, "arguments": arguments }))
}

/// What the plugin's uid must reach: its interpreter and module tree, its read and
/// write paths. A path that does not exist is left out of the sandbox: a warning.
fn reach_problems(
    p: &crate::config::Plugin,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    use crate::access::{denied, Who, EXEC, READ, WRITE};
    let at = format!("plugin \"{}\"", p.name);
    let who = Who::plugin(&p.policy.user);
    let dir_bit = |path: &Path| if path.is_dir() { EXEC } else { 0 };
    if let PluginKind::PythonClass {
        python_path,
        python,
        ..
    } = &p.kind
    {
        for dir in python_path {
            if let Some(why) = denied(dir, &who, READ | EXEC) {
                problems.push(format!("{at}: python_path: {why}"));
            }
        }
        if let Some(venv) = &python.venv {
            if let Some(why) = denied(&venv.join("pyvenv.cfg"), &who, READ) {
                problems.push(format!("{at}: the virtualenv of \"python\": {why}"));
            }
        }
    }
    for (key, paths, want) in [
        ("read_paths", &p.policy.read_paths, READ),
        ("write_paths", &p.policy.write_paths, WRITE),
    ] {
        for path in paths {
            if !path.exists() {
                warnings.push(format!(
                    "{at}: {key} {} does not exist: it is left out of the sandbox",
                    path.display()
                ));
            } else if let Some(why) = denied(path, &who, want | dir_bit(path)) {
                problems.push(format!("{at}: {key}: {why}"));
            }
        }
    }
}

/// UPM's module lookup, which `upm check` points out: what a call would read depends on
/// who calls, and no signature covers it.
fn env_python_path_warning(at: &str, env: &crate::compat::EnvPythonPath) -> String {
    let now = match &env.raw {
        None => "PYTHONPATH is not set here".to_owned(),
        Some(_) if env.paths.is_empty() => "here it gives no directory".to_owned(),
        Some(_) => format!(
            "here: {}",
            env.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "{at}: no \"python_path\" in the config: its module is looked up in the caller's \
         PYTHONPATH, as UPM did ({now}), which changes from caller to caller, becomes readable \
         to the plugin, and which strict trust refuses (upm migrate writes it in)"
    )
}

/// Whether the plugin's module is in its `python_path`. Only a warning when it is not:
/// the interpreter's own site-packages (a virtualenv's, a pip-installed package's) are on
/// the plugin's `sys.path` too, and looking there would mean running Python outside the
/// sandbox; `upm mcp` serves a plugin with a warning.
fn check_module(at: &str, module: &str, python_path: &[PathBuf], warnings: &mut Vec<String>) {
    let rel: PathBuf = module.split('.').collect();
    let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let extension = |dir: &Path| {
        // A compiled module: `name.so`, `name.cpython-311-x86_64-linux-gnu.so`, ...
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_str().is_some_and(|f| {
                    f.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('.') && rest.ends_with(".so"))
                })
            })
        })
    };
    let found = python_path.iter().any(|dir| {
        let at = dir.join(&rel);
        at.with_extension("py").is_file()
            || at.join("__init__.py").is_file()
            || at.parent().is_some_and(extension)
    });
    if !found {
        warnings.push(format!(
            "{at}: module \"{module}\" is not found in its python_path ({}): a call fails \
             (exit 6) unless the interpreter's own site-packages hold it",
            python_path
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}
