//! The command line: `upm run`, the UPM argv form, and the operator commands.

use crate::config::{self, Config, PluginKind};
use crate::error::{Code, Failure};
use crate::pipeline::{self, Input};
use crate::response::Response;
use crate::schema::MethodSchema;
use crate::spawn::stop::{self, Stoppable};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "upm",
    version,
    about = "A one-shot secure plugin entrypoint: one JSON call in, one JSON result out.",
    long_about = "A one-shot secure plugin entrypoint. `upm run` reads one JSON call on stdin, checks it \
against the whitelist and the method's JSON Schema, runs the plugin under Landlock, seccomp, a \
non-root user, no network and hard limits, and prints one JSON result.\n\n\
The argv form of the original UPM entrypoint also works: `upm <plugin> <method> <json_args>`.",
    allow_external_subcommands = true,
    arg_required_else_help = true
)]
struct Cli {
    /// Config file (else $UPM_CONFIG_PATH, else ./upm_config.json).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one call read as JSON from stdin: {"plugin", "method", "args", "request_id"?}.
    Run {
        /// Batch: one request per line on stdin, one result per line on stdout.
        #[arg(long)]
        jsonl: bool,
        /// With --jsonl: run up to N calls at a time.
        #[arg(long, value_name = "N", default_value_t = 1, requires = "jsonl",
              value_parser = clap::value_parser!(u16).range(1..=256))]
        parallel: u16,
    },
    /// Print the whitelisted plugins and methods with their schemas, as JSON.
    List,
    /// Validate the config, every schema, policy and plugin command; list every problem.
    Check,
    /// Report which sandbox layers this kernel and this invoker can enforce.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make an ed25519 key pair (PEM) for signing configs and audit checkpoints.
    Keygen {
        #[arg(long, value_name = "PATH")]
        secret: PathBuf,
        #[arg(long, value_name = "PATH")]
        public: PathBuf,
    },
    /// Sign the config: writes <config>.sig over it and every file it references.
    Sign {
        /// The secret key (PKCS#8 PEM, from `upm keygen`).
        #[arg(long, value_name = "SECRET")]
        key: PathBuf,
    },
    /// From a UPM config (and the caller's PYTHONPATH) to a strict upm config: python_path
    /// written in and pinned, private methods dropped, one JSON Schema per method derived
    /// from its Python signature inside the sandbox.
    Migrate {
        /// The new config, in the same directory as the one migrated (never overwritten);
        /// the schemas go to schemas/ beside it.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
    /// Verify, query or sign the audit log.
    #[command(subcommand)]
    Audit(crate::audit::AuditCommand),
    #[command(external_subcommand)]
    Legacy(Vec<OsString>),
}

/// Parses argv, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    ensure_std_fds();
    crate::diagnostics::init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidUtf8 => return invalid_utf8(e),
        Err(e) => {
            let code = if e.use_stderr() {
                Code::Usage.exit_code()
            } else {
                0
            };
            let _ = e.print();
            return code;
        }
    };
    let config_path = config::resolve_path(cli.config.as_deref());
    if matches!(cli.command, Command::Run { .. } | Command::Legacy(_)) {
        if let Err(e) = stop::install() {
            tracing::warn!(
                "cannot handle SIGTERM, SIGINT and SIGHUP ({e}): they will kill upm mid-call"
            );
        }
    }
    match cli.command {
        Command::Run { jsonl: false, .. } => respond(pipeline::run(
            &config_path,
            Input::Stdin(Stoppable(std::io::stdin().lock())),
        )),
        Command::Run {
            jsonl: true,
            parallel,
        } => {
            let session = pipeline::Session::load(&config_path);
            crate::batch::run(
                &session,
                std::io::BufReader::with_capacity(64 * 1024, Stoppable(std::io::stdin())),
                std::io::stdout(),
                usize::from(parallel),
            )
        }
        Command::Legacy(argv) => legacy(&config_path, argv),
        Command::List => list(&config_path),
        Command::Check => check(&config_path),
        Command::Doctor { json } => doctor(json),
        Command::Keygen { secret, public } => match crate::keys::keygen(&secret, &public) {
            Ok(()) => {
                println!(
                    "wrote {} (secret, 0600) and {}",
                    secret.display(),
                    public.display()
                );
                0
            }
            Err(e) => {
                eprintln!("upm keygen: {e}");
                1
            }
        },
        Command::Sign { key } => sign(&config_path, &key),
        Command::Migrate { out } => crate::migrate::run(&config_path, &out),
        Command::Audit(cmd) => {
            // The default log is the config's, even when the config itself is broken.
            let default_log = match Config::load(&config_path) {
                Ok(c) => c.audit_path,
                Err(_) => config::fallback_audit_path(&config_path),
            };
            crate::audit::run(cmd, Some(&default_log))
        }
    }
}

/// clap wants a subcommand's name in UTF-8, so `upm <plugin> ...` with a plugin name
/// that is not lands here. The argv form answers it as a refused call, in JSON and
/// audited; a lossy copy of argv tells whether it is that form, and under which config.
fn invalid_utf8(e: clap::Error) -> i32 {
    let lossy = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    match Cli::try_parse_from(lossy) {
        Ok(Cli {
            config,
            command: Command::Legacy(argv),
        }) => {
            let path = config::resolve_path(config.as_deref());
            if argv.len() != 3 {
                return legacy(&path, argv); // the usage error
            }
            let f = Failure::new(Code::BadRequest, "the plugin argument is not valid UTF-8");
            respond(pipeline::refuse(&path, f))
        }
        _ => {
            let _ = e.print();
            Code::Usage.exit_code()
        }
    }
}

/// `upm <plugin> <method> <json_args>`, as UPM's `entrypoint.py` took it.
fn legacy(config_path: &Path, mut argv: Vec<OsString>) -> i32 {
    if argv.len() != 3 {
        let f = Failure::new(
            Code::Usage,
            format!(
                "{} (upm: usage: upm <plugin> <method> <json_args>, got {} argument{}; see upm --help)",
                crate::compat::USAGE,
                argv.len(),
                if argv.len() == 1 { "" } else { "s" }
            ),
        );
        eprintln!("upm: {}", f.message);
        return respond(pipeline::refuse(config_path, f));
    }
    let args = argv.pop().unwrap_or_default();
    let method = argv.pop().unwrap_or_default();
    let plugin = argv.pop().unwrap_or_default();
    respond(pipeline::run(
        config_path,
        Input::<std::io::Empty>::Argv {
            plugin,
            method,
            args,
        },
    ))
}

fn respond(resp: Response) -> i32 {
    let _ = resp.write_line(&mut std::io::stdout().lock());
    resp.exit_code
}

fn print_json_line(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

fn config_failure(e: &config::ConfigError) -> i32 {
    print_json_line(
        &json!({ "ok": false, "code": Code::ConfigError.as_str(), "error": e.to_string(), "problems": e.problems() })
            .to_string(),
    );
    Code::ConfigError.exit_code()
}

fn list(config_path: &Path) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return config_failure(&e),
    };
    let mut plugins = serde_json::Map::new();
    let mut problems = Vec::new();
    for (name, p) in &config.plugins {
        let mut methods = serde_json::Map::new();
        for (m, spec) in &p.methods {
            let schema = match &spec.schema {
                None => Value::Null,
                Some(path) => match MethodSchema::load(path) {
                    Ok(s) => s.document().clone(),
                    Err(e) => {
                        problems.push(e.to_string());
                        Value::Null
                    }
                },
            };
            methods.insert(m.clone(), json!({ "schema": schema }));
        }
        let kind = match p.kind {
            PluginKind::Command { .. } => "command",
            PluginKind::PythonClass { .. } => "python_class",
        };
        plugins.insert(
            name.clone(),
            json!({ "kind": kind, "description": p.description, "network": p.policy.network, "methods": methods }),
        );
    }
    if !problems.is_empty() {
        let e = config::ConfigError::Invalid {
            path: config.path.clone(),
            problems,
        };
        return config_failure(&e);
    }
    print_json_line(&json!({ "config": config.path, "plugins": plugins }).to_string());
    0
}

fn check(config_path: &Path) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            for p in e.problems() {
                eprintln!("problem: {p}");
            }
            return config_failure(&e);
        }
    };
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut plugins = serde_json::Map::new();
    for (name, p) in &config.plugins {
        let at = format!("plugin \"{name}\"");
        let before = problems.len();
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
            check_module(&at, module, python_path, &mut problems);
        }
        for (m, spec) in &p.methods {
            if let Some(path) = &spec.schema {
                if let Err(e) = MethodSchema::load(path) {
                    problems.push(format!("{at}, method \"{m}\": {e}"));
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
        match p.seccomp_profile.load().and_then(|prof| {
            prof.compile(&crate::sandbox::seccomp::CompileOptions {
                deny_sockets: !p.policy.network.is_host(),
                allow_tcp: p.policy.network.allowlist().is_some(),
            })
        }) {
            Ok(_) => {}
            Err(e) => problems.push(format!("{at}: seccomp profile: {e}")),
        }
        // A container plugin's files live in its image, pinned by digest.
        let pins = match p.policy.backend {
            crate::sandbox::policy::Backend::Container => json!({ "image": p.policy.image }),
            crate::sandbox::policy::Backend::Native => pins(&config, p, &mut problems),
        };
        plugins.insert(
            name.clone(),
            json!({ "ok": problems.len() == before, "methods": p.methods.keys().collect::<Vec<_>>(), "pins": pins, "network": p.policy.network }),
        );
    }
    let signature = match crate::trust::check(&config, None) {
        None => json!({ "mode": "off" }),
        Some(v) => {
            if let (Err(e), crate::trust::Mode::Strict) = (&v.result, v.mode) {
                problems.push(format!("signature: {e}"));
            }
            v.to_json()
        }
    };
    for p in &problems {
        eprintln!("problem: {p}");
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let ok = problems.is_empty();
    print_json_line(
        &json!({ "ok": ok, "config": config.path, "audit_log": config.audit_path, "signature": signature, "plugins": plugins, "problems": problems, "warnings": warnings })
            .to_string(),
    );
    if ok {
        0
    } else {
        Code::ConfigError.exit_code()
    }
}

fn sign(config_path: &Path, key: &Path) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return config_failure(&e),
    };
    match crate::trust::sign(&config, key) {
        Ok((path, signed_at)) => {
            println!(
                "signed {} -> {} (signed_at {signed_at})",
                config.path.display(),
                path.display()
            );
            0
        }
        Err(e) => {
            eprintln!("upm sign: {e}");
            Code::ConfigError.exit_code()
        }
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
        PluginKind::PythonClass { python_path, .. } => (config.python.clone(), python_path.clone()),
    };
    let interpreter_signed = crate::trust::settings(config).mode != crate::trust::Mode::Off;
    let mut script = None;
    match crate::integrity::open_executable(&exe, p.sha256.as_deref()) {
        Ok(e) => {
            script = e.interpreter.clone();
            check_executable(&at, &exe, problems);
            out.insert(
                "exec".into(),
                json!({ "path": exe, "sha256": e.sha256, "pinned": p.sha256, "ok": true }),
            );
        }
        Err(e) => {
            problems.push(format!("{at}: {e}"));
            out.insert(
                "exec".into(),
                json!({ "path": exe, "pinned": p.sha256, "ok": false, "error": e.to_string() }),
            );
        }
    }
    if p.manifest_sha256.is_some() || matches!(p.kind, PluginKind::PythonClass { .. }) {
        let m = crate::integrity::manifest(&roots).and_then(|m| {
            if let Some(pin) = &p.manifest_sha256 {
                m.check(&roots, pin)?;
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
    let unpinned = crate::trust::unpinned(config, p, interpreter_signed, script.as_deref());
    out.insert("unpinned".into(), json!(unpinned));
    Value::Object(out)
}

fn check_executable(at: &str, path: &Path, problems: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(e) => problems.push(format!(
            "{at}: command {} cannot be used: {e}",
            path.display()
        )),
        Ok(m) if !m.is_file() => {
            problems.push(format!("{at}: command {} is not a file", path.display()))
        }
        Ok(m) if m.permissions().mode() & 0o111 == 0 => problems.push(format!(
            "{at}: command {} is not executable",
            path.display()
        )),
        Ok(_) => {}
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

fn check_module(at: &str, module: &str, python_path: &[PathBuf], problems: &mut Vec<String>) {
    let rel: PathBuf = module.split('.').collect();
    let found = python_path.iter().any(|dir| {
        dir.join(&rel).with_extension("py").is_file()
            || dir.join(&rel).join("__init__.py").is_file()
    });
    if !found {
        problems.push(format!(
            "{at}: module \"{module}\" is not found in its python_path ({})",
            python_path
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

fn doctor(as_json: bool) -> i32 {
    let report = crate::sandbox::host::doctor();
    if as_json {
        print_json_line(&report.to_string());
        return 0;
    }
    println!("{:<22} {:<10} detail", "layer", "available");
    if let Some(rows) = report["layers"].as_array() {
        for row in rows {
            println!(
                "{:<22} {:<10} {}",
                row["layer"].as_str().unwrap_or(""),
                if row["available"] == Value::Bool(true) {
                    "yes"
                } else {
                    "NO"
                },
                row["detail"].as_str().unwrap_or("")
            );
        }
    }
    0
}

/// A caller may start upm with 0, 1 or 2 closed; pipes must never land there.
fn ensure_std_fds() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only queries a descriptor number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            if let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::IntoRawFd;
                let raw = f.into_raw_fd();
                if raw != fd {
                    // SAFETY: dup2 onto a closed std descriptor, then closing our temporary.
                    unsafe {
                        libc::dup2(raw, fd);
                        libc::close(raw);
                    }
                }
            }
        }
    }
}
