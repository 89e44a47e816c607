//! The command line: `upm run`, the UPM argv form, and the operator commands.

use crate::codes::Coded;
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
    override_usage = "upm [--config PATH] <COMMAND>\n       upm [--config PATH] <plugin> <method> <json_args>",
    allow_external_subcommands = true,
    arg_required_else_help = true
)]
struct Cli {
    /// The config, optional: else $UPM_CONFIG_PATH, else ./upm_config.json. Relative paths in it are relative to its directory.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ListFormat {
    Json,
    Mcp,
    Openai,
}

#[derive(Subcommand)]
enum Command {
    /// Run one call read as JSON from stdin: {"plugin", "method", "args", "request_id"?}.
    #[command(override_usage = "upm run [--config PATH] [--jsonl [--parallel N]]")]
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
    #[command(override_usage = "upm list [--config PATH] [--format json|mcp|openai]")]
    List {
        /// json: upm's own listing; mcp: the tools/list result of `upm mcp`; openai:
        /// the same tools as OpenAI function definitions.
        #[arg(long, value_enum, default_value_t = ListFormat::Json)]
        format: ListFormat,
    },
    /// Serve the whitelisted methods as MCP tools on stdin/stdout (JSON-RPC 2.0, one
    /// message per line); every tool call is a sandboxed, audited call. See docs/mcp.md.
    #[command(override_usage = "upm mcp [--config PATH] [--parallel N]")]
    Mcp {
        /// Run up to N tool calls at a time (answered as they finish).
        #[arg(long, value_name = "N", default_value_t = 4,
              value_parser = clap::value_parser!(u16).range(1..=256))]
        parallel: u16,
    },
    /// Validate the config, every schema, policy and plugin command; list every problem.
    #[command(override_usage = "upm check [--config PATH]")]
    Check,
    /// Report which sandbox layers this kernel and this invoker can enforce.
    Doctor {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make an ed25519 key pair (PEM) for signing configs and audit checkpoints.
    #[command(override_usage = "upm keygen --secret PATH --public PATH")]
    Keygen {
        /// Where the secret key goes (PKCS#8 PEM, created 0600; must not exist).
        #[arg(long, value_name = "PATH")]
        secret: PathBuf,
        /// Where the public key goes (SPKI PEM; must not exist): for UPM_TRUSTED_KEYS_DIR or `audit verify --key`.
        #[arg(long, value_name = "PATH")]
        public: PathBuf,
    },
    /// Sign the config: writes <config>.sig over it and every file it references.
    #[command(override_usage = "upm sign --key SECRET [--config PATH]")]
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
    /// Verify or query the audit log (by default the config's), or make a key pair for its checkpoints.
    #[command(subcommand)]
    Audit(crate::audit::AuditCommand),
    #[command(external_subcommand)]
    Legacy(Vec<OsString>),
}

/// `upm run` with at most `--config PATH`, read without clap: building clap's whole
/// command (every subcommand, every help text) cost a one-shot call ~0.12 ms here, an
/// eighth of what upm adds to the kernel's share (issue 25). Anything else (another flag,
/// `--config=PATH`, a value that is not UTF-8, empty or looks like a flag) goes to clap,
/// and a test checks that both read these forms alike.
fn one_shot_run(args: &[OsString]) -> Option<Cli> {
    let args: Vec<&str> = args.iter().map(|a| a.to_str()).collect::<Option<_>>()?;
    let config = match args.as_slice() {
        ["run"] => None,
        ["run", "--config", p] | ["--config", p, "run"] if !p.is_empty() && !p.starts_with('-') => {
            Some(PathBuf::from(p))
        }
        _ => return None,
    };
    Some(Cli {
        config,
        command: Command::Run {
            jsonl: false,
            parallel: 1,
        },
    })
}

/// Parses argv, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    ignore_write_signals();
    ensure_std_fds();
    crate::diagnostics::init();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let cli = match one_shot_run(&args).map_or_else(|| Cli::try_parse_from(std::env::args_os()), Ok)
    {
        Ok(c) => c,
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidUtf8 => return invalid_utf8(e),
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return 0;
        }
        Err(e) => return usage_error(&e),
    };
    let config_path = config::resolve_path(cli.config.as_deref());
    if matches!(
        cli.command,
        Command::Run { .. } | Command::Legacy(_) | Command::Mcp { .. }
    ) {
        if let Err(e) = stop::install() {
            tracing::warn!(
                "cannot handle SIGTERM, SIGINT and SIGHUP ({e}): they will kill upm mid-call"
            );
        }
    }
    match cli.command {
        Command::Run { jsonl: false, .. } => one_shot(
            &config_path,
            Input::Stdin(Stoppable(std::io::stdin().lock())),
        ),
        Command::Run {
            jsonl: true,
            parallel,
        } => {
            let session = pipeline::Session::load(&config_path);
            // Fired when stdout fails: the batch then reads no more (see batch::run).
            let output_gone = stop::Cancel::new().ok();
            let watch = output_gone
                .as_ref()
                .map_or_else(stop::Watch::default, |c| stop::Watch::with(c.clone()));
            crate::batch::run(
                &session,
                std::io::BufReader::with_capacity(
                    64 * 1024,
                    stop::Watched(std::io::stdin(), watch),
                ),
                std::io::stdout(),
                usize::from(parallel),
                output_gone,
                Some(libc::STDOUT_FILENO),
            )
        }
        Command::Legacy(argv) => legacy(&config_path, argv),
        Command::List {
            format: ListFormat::Json,
        } => list(&config_path),
        Command::List { format } => list_tools(&config_path, format),
        Command::Mcp { parallel } => crate::mcp::run(&config_path, usize::from(parallel)),
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
        Command::Audit(cmd) => crate::audit::run(cmd, &default_log(&config_path)),
    }
}

/// The log `upm audit` reads when given none: the config's (`--config`,
/// `UPM_CONFIG_PATH`, `./upm_config.json`), read only as far as its `audit` block, so
/// that the log of a config broken elsewhere can still be checked; `UPM_LOG_FILE` wins,
/// as it does for calls. No config, no default: never some `./entrypoint.log`.
fn default_log(config_path: &Path) -> crate::audit::DefaultLog {
    let shown = config::located(config_path);
    let from_env = std::env::var_os("UPM_LOG_FILE").is_some_and(|v| !v.is_empty());
    match config::audit_of_document(config_path) {
        Ok((path, _)) if from_env => Ok((path, "the log UPM_LOG_FILE names".to_owned())),
        Ok((path, _)) => Ok((path, format!("the audit log of config {}", shown.display()))),
        Err(e) => Err(format!(
            "no log given, and none to be found: {e}; pass the log's PATH, or the config with --config"
        )),
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

/// A command line clap refused. Where a result is expected (`upm run`, whose caller
/// reads one JSON result; `list` and `check`, which print a JSON document), the error is
/// that same JSON with code `usage` (a call's is audited like any refusal), and one
/// `upm: ...` line on stderr; elsewhere, clap's own text. Exit 2 either way (for `run`,
/// the refusal's own code and exit: 11 `audit_error` when it could not be logged).
fn usage_error(e: &clap::Error) -> i32 {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (config, command) = scan_args(&args);
    // clap's sentence, up to its usage and tips, on one line.
    let rendered = e.render().to_string();
    let sentence: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let sentence = sentence.join(" ");
    let what = sentence.strip_prefix("error: ").unwrap_or(&sentence);
    let command = command.unwrap_or_default();
    let message = format!("usage: {what}; see upm {command} --help");
    match command.as_str() {
        "run" => {
            eprintln!("upm: {message}");
            let path = config::resolve_path(config.as_deref());
            let f = Failure::new(Code::Usage, message);
            // The response's own exit code: `audit_error` (11) when the refusal could not
            // be logged, as for every other refusal.
            return respond(pipeline::refuse(&path, f));
        }
        "list" | "check" => {
            eprintln!("upm: {message}");
            print_json_line(
                &json!({ "ok": false, "code": Code::Usage.as_str(), "error": message }).to_string(),
            );
        }
        _ => {
            let _ = e.print();
        }
    }
    Code::Usage.exit_code()
}

/// The `--config` value and the subcommand of a command line clap could not parse.
fn scan_args(args: &[String]) -> (Option<PathBuf>, Option<String>) {
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            config = it.next().map(PathBuf::from);
        } else if let Some(v) = a.strip_prefix("--config=") {
            config = Some(PathBuf::from(v));
        } else if !a.starts_with('-') {
            // What follows the subcommand may still name the config.
            let rest: Vec<String> = it.cloned().collect();
            let (later, _) = scan_args(&rest);
            return (later.or(config), Some(a.clone()));
        }
    }
    (config, None)
}

/// `upm <plugin> <method> <json_args>`, as UPM's `entrypoint.py` took it.
fn legacy(config_path: &Path, mut argv: Vec<OsString>) -> i32 {
    if argv.len() != 3 {
        let word = argv.first().map(|w| w.to_string_lossy().into_owned());
        let f = Failure::new(
            Code::Usage,
            legacy_usage(config_path, word.as_deref(), argv.len()),
        );
        eprintln!("upm: {}", f.message);
        return respond(pipeline::refuse(config_path, f));
    }
    let args = argv.pop().unwrap_or_default();
    let method = argv.pop().unwrap_or_default();
    let plugin = argv.pop().unwrap_or_default();
    one_shot(
        config_path,
        Input::<std::io::Empty>::Argv {
            plugin,
            method,
            args,
        },
    )
}

/// The argv form's usage error; a first word that is no plugin of the config but
/// close to a subcommand (`upm lsit`) was most likely that subcommand, mistyped.
fn legacy_usage(config_path: &Path, word: Option<&str>, n: usize) -> String {
    use clap::CommandFactory;
    // UPM's own sentence first: its callers' scripts match the start of `data.error`.
    let usage = format!(
        "usage: upm <plugin> <method> <json_args> (got {n} argument{}); see upm --help",
        if n == 1 { "" } else { "s" }
    );
    let upm = match word {
        None => usage,
        Some(word) => {
            let is_plugin = Config::load(config_path).is_ok_and(|c| c.plugins.contains_key(word));
            let cli = Cli::command();
            let commands = cli.get_subcommands().map(|c| c.get_name());
            match crate::unknown_keys::nearest(word, commands) {
                Some(near) if !is_plugin => {
                    format!("unknown command \"{word}\": did you mean `upm {near}`? ({usage})")
                }
                _ => usage,
            }
        }
    };
    format!("{} (upm: {upm})", crate::compat::USAGE)
}

/// One call, its response, then the process's end, with nothing freed first: the
/// caller waits for that end (its stdout's EOF), which freeing the session, the
/// response and the call's buffers would only delay. Everything the call had to do
/// (its `finished` entry durable, its processes reaped) is done before the response.
fn one_shot<R: std::io::Read>(config_path: &Path, input: Input<R>) -> ! {
    let session = pipeline::one_shot(config_path);
    let resp = session.call(input);
    let _ = resp.write_line(&mut std::io::stdout().lock());
    std::process::exit(resp.exit_code)
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
    let code = e.code();
    print_json_line(
        &json!({ "ok": false, "code": code.as_str(), "error": e.to_string(), "problems": e.problems() })
            .to_string(),
    );
    code.exit_code()
}

fn list(config_path: &Path) -> i32 {
    let config = match crate::preflight::load(config_path) {
        Ok((c, _)) => c,
        Err(e) => return config_failure(&e),
    };
    let mut plugins = serde_json::Map::new();
    let mut problems = Vec::new();
    for (name, p) in &config.plugins {
        let mut methods = serde_json::Map::new();
        for (m, spec) in &p.methods {
            let mut entry = json!({ "description": spec.description, "schema": null });
            // Each schema printed stands alone: its $refs' files bundled into it.
            let schemas = [
                ("schema", "bundle_error", &spec.schema),
                (
                    "output_schema",
                    "output_schema_bundle_error",
                    &spec.output_schema,
                ),
            ];
            for (key, error_key, path) in schemas {
                let Some(path) = path else { continue };
                match MethodSchema::load(path).map(|s| (s.bundled(), s)) {
                    Ok((Ok(bundled), _)) => entry[key] = bundled,
                    Ok((Err(e), s)) => {
                        entry[key] = s.document().clone();
                        entry[error_key] = json!(e.to_string());
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
            methods.insert(m.clone(), entry);
        }
        let kind = match p.kind {
            PluginKind::Command { .. } => "command",
            PluginKind::PythonClass { .. } => "python_class",
        };
        let mut entry = json!({ "kind": kind, "description": p.description, "network": p.policy.network, "methods": methods });
        // Where a method's x-upm-grant paths must lie (issue 24).
        if !p.grants_within.is_empty() {
            entry["grants_within"] = json!(p.grants_within);
        }
        plugins.insert(name.clone(), entry);
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

/// `upm list --format mcp|openai`: the tools `upm mcp` serves, for other clients.
fn list_tools(config_path: &Path, format: ListFormat) -> i32 {
    let config = match crate::preflight::load(config_path) {
        Ok((c, _)) => c,
        Err(e) => return config_failure(&e),
    };
    let tools = match crate::mcp::Tools::of(&config) {
        Ok(t) => t,
        Err(problems) => {
            let e = config::ConfigError::Invalid {
                path: config.path.clone(),
                problems,
            };
            return config_failure(&e);
        }
    };
    let doc = match format {
        ListFormat::Openai => tools.to_openai(),
        _ => tools.to_mcp(),
    };
    print_json_line(&doc.to_string());
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
    let crate::check::Report {
        mut problems,
        mut warnings,
        plugins,
        signature,
        signature_problem,
        ..
    } = crate::check::check(&config);
    // What `upm mcp` (and `upm list --format mcp|openai`) would refuse: no call fails on it.
    if problems.is_empty() {
        for p in crate::mcp::tools::problems(&config) {
            warnings.push(format!("upm mcp would refuse this config: {p}"));
        }
    }
    problems.extend(signature_problem);
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
    let config = match crate::preflight::load(config_path) {
        Ok((c, _)) => c,
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

fn doctor(as_json: bool) -> i32 {
    let mut report = crate::sandbox::host::doctor();
    let egress = egress_row(&report);
    if let Some(rows) = report["layers"].as_array_mut() {
        rows.push(egress);
    }
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

/// issue 22: whether an egress allowlist can be had here: Landlock's TCP rules (ABI 4),
/// seccomp, a network namespace, and the proxy process beside upm.
fn egress_row(report: &Value) -> Value {
    let row = |available: bool, detail: String| json!({ "layer": "egress_allowlist", "available": available, "detail": detail });
    let has = |layer: &str| {
        report["layers"].as_array().is_some_and(|rows| {
            rows.iter()
                .any(|r| r["layer"] == layer && r["available"] == true)
        })
    };
    let abi = report["host"]["landlock_abi"].as_i64().unwrap_or(0);
    match crate::spawn::egress::open() {
        Err(e) => row(false, e),
        Ok(_) if abi < 4 || !has("seccomp") || !has("network_namespace") => row(
            false,
            "needs Landlock ABI 4 (TCP rules), seccomp and a network namespace".into(),
        ),
        Ok((_, path)) => row(
            true,
            format!(
                "\"network\": {{\"allow\": [...]}} through {}",
                path.display()
            ),
        ),
    }
}

/// A write to a reader that is gone fails with EPIPE, which upm handles (a batch stops,
/// a response that cannot be written is an error), instead of killing upm mid-call.
/// Rust's own entry did this; upm's (`main.rs`) does not run it.
///
/// Likewise a write past the caller's `ulimit -f` (RLIMIT_FSIZE) fails with EFBIG instead
/// of killing upm by SIGXFSZ halfway through an audit line: the audit writer cuts the
/// file back and the call ends `audit_error`. Every process upm starts gets SIGXFSZ's
/// default back (the sandbox's init resets every signal; [`crate::spawn::helper`] and
/// the container engine's client, [`crate::spawn::default_sigxfsz_on_exec`]).
fn ignore_write_signals() {
    // SAFETY: SIG_IGN installs no handler; only SIGPIPE's and SIGXFSZ's dispositions change.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    /// The one-shot forms read without clap mean what clap reads them as; the rest is
    /// left to clap.
    #[test]
    fn the_one_shot_run_is_read_as_clap_reads_it() {
        for form in [
            &["run"][..],
            &["run", "--config", "c.json"],
            &["--config", "/etc/upm/c.json", "run"],
            &["--config", "run", "run"],
        ] {
            let fast = one_shot_run(&args(form)).expect("a one-shot form");
            let mut argv = vec!["upm"];
            argv.extend_from_slice(form);
            let clap = Cli::try_parse_from(argv).expect("clap reads it");
            assert_eq!(fast.config, clap.config, "{form:?}");
            for cli in [fast, clap] {
                assert!(
                    matches!(
                        cli.command,
                        Command::Run {
                            jsonl: false,
                            parallel: 1
                        }
                    ),
                    "{form:?}"
                );
            }
        }
        for form in [
            &[][..],
            &["run", "--jsonl"],
            &["run", "--config=c.json"],
            &["run", "--config", ""],
            &["run", "--config", "--jsonl"],
            &["run", "--help"],
            &["run", "extra"],
            &["list"],
            &["Plugin", "method", "{}"],
        ] {
            assert!(one_shot_run(&args(form)).is_none(), "{form:?}");
        }
        use std::os::unix::ffi::OsStringExt;
        let not_utf8 = vec![
            OsString::from("run"),
            OsString::from("--config"),
            OsString::from_vec(vec![0xff]),
        ];
        assert!(one_shot_run(&not_utf8).is_none());
    }
}
