//! One call, top-down: parse → authorize → validate → prepare sandbox →
//! audit `started` → spawn → capture → audit `finished` → respond.
//!
//! Every step either hands the next one what it needs or returns a
//! [`Failure`]; whichever way a call ends, it ends in [`finish`], which writes
//! the audit entry and builds the one response. Nothing runs before its
//! `started` entry is durable.

use crate::audit::AuditLog;
use crate::config::{Config, Plugin, PluginKind};
use crate::error::{Code, Failure};
use crate::request::{self, Request};
use crate::response::{round_ms, Captured, Response};
use crate::sandbox::{self, host::Host, Step};
use crate::schema::MethodSchema;
use crate::spawn::{self, Exit, Launch, Outcome, Stop};
use serde_json::{json, Map, Value};
use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PYTHON_RUNNER: &str = include_str!("../python/upm_runner.py");

/// Where the call comes from.
pub enum Input<R: Read> {
    /// `upm run`: one JSON request on this reader.
    Stdin(R),
    /// `upm <plugin> <method> <json_args>`: the original UPM entrypoint's argv form.
    Argv {
        plugin: String,
        method: String,
        args: String,
    },
}

/// What is known about the call so far, for the response and the audit entry.
struct Call {
    started: Instant,
    request_id: String,
    plugin: Option<String>,
    method: Option<String>,
}

/// Runs one call and returns its response (whose `exit_code` is the process's).
pub fn run<R: Read>(config_path: &Path, input: Input<R>) -> Response {
    let mut call = Call {
        started: Instant::now(),
        request_id: uuid::Uuid::now_v7().to_string(),
        plugin: None,
        method: None,
    };
    let loaded = Config::load(config_path);
    let cap = loaded
        .as_ref()
        .map_or(request::DEFAULT_MAX_REQUEST_BYTES, |c| c.max_request_bytes);

    // parse
    let req = parse(input, cap, &mut call);
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            let failure = Failure::new(Code::ConfigError, e.to_string())
                .with_details(json!({ "problems": e.problems() }));
            let audit_path = crate::config::fallback_audit_path(config_path);
            return finish_refused(&call, None, &audit_path, failure);
        }
    };
    let req = match req {
        Ok(r) => r,
        Err(f) => return finish_refused(&call, Some(&config), &config.audit_path, f),
    };

    // authorize, validate
    let (plugin, schema) = match authorize(&config, &req).and_then(|(p, s)| {
        validate(s.as_ref(), &req.args)?;
        Ok((p, s))
    }) {
        Ok(ok) => ok,
        Err(f) => return finish_refused(&call, Some(&config), &config.audit_path, f),
    };

    // audit log open before anything is prepared: nothing runs unaudited
    let mut audit = match AuditLog::open(&config.audit_path, &config.audit) {
        Ok(a) => a,
        Err(e) => {
            let f = Failure::new(Code::AuditError, format!("{e}; the plugin was not run"));
            return respond(&call, f.into());
        }
    };
    execute(
        &config,
        plugin,
        schema.as_ref(),
        &req,
        &mut call,
        &mut audit,
    )
}

fn parse<R: Read>(input: Input<R>, cap: u64, call: &mut Call) -> Result<Request, Failure> {
    let bad = |e: request::RequestError| {
        let code = match e {
            request::RequestError::TooLarge { .. } => Code::RequestTooLarge,
            request::RequestError::BadPluginName(_) => Code::NotWhitelisted,
            request::RequestError::PrivateMethod(_) | request::RequestError::BadMethodName(_) => {
                Code::MethodNotAllowed
            }
            _ => Code::BadRequest,
        };
        Failure::new(code, e.to_string())
    };
    let req = match input {
        Input::Stdin(reader) => {
            let bytes = request::read_bounded(reader, cap).map_err(bad)?;
            let doc = request::parse_json(&bytes, false).map_err(bad)?;
            if let Some(id) = request::peek_request_id(&doc) {
                call.request_id = id;
            }
            if let Some(o) = doc.as_object() {
                call.plugin = o.get("plugin").and_then(Value::as_str).map(str::to_owned);
                call.method = o.get("method").and_then(Value::as_str).map(str::to_owned);
            }
            request::from_value(doc).map_err(bad)?
        }
        Input::Argv {
            plugin,
            method,
            args,
        } => {
            call.plugin = Some(plugin.clone());
            call.method = Some(method.clone());
            if args.len() as u64 > cap {
                return Err(bad(request::RequestError::TooLarge { cap }));
            }
            let args = request::parse_json(args.as_bytes(), true).map_err(bad)?;
            let req = Request {
                plugin,
                method,
                args,
                request_id: None,
            };
            req.check().map_err(bad)?;
            req
        }
    };
    Ok(req)
}

fn authorize<'c>(
    config: &'c Config,
    req: &Request,
) -> Result<(&'c Plugin, Option<MethodSchema>), Failure> {
    let plugin = config.plugins.get(&req.plugin).ok_or_else(|| {
        Failure::new(
            Code::NotWhitelisted,
            format!("plugin \"{}\" is not whitelisted in the config", req.plugin),
        )
    })?;
    let method = plugin.methods.get(&req.method).ok_or_else(|| {
        Failure::new(
            Code::MethodNotAllowed,
            format!(
                "method \"{}\" is not allowed for plugin \"{}\"",
                req.method, req.plugin
            ),
        )
    })?;
    let schema =
        match &method.schema {
            None => None,
            Some(path) => Some(MethodSchema::load(path).map_err(|e| {
                Failure::new(Code::ConfigError, format!("the config is invalid: {e}"))
            })?),
        };
    Ok((plugin, schema))
}

fn validate(schema: Option<&MethodSchema>, args: &Value) -> Result<(), Failure> {
    let Some(schema) = schema else { return Ok(()) };
    schema.validate(args).map_err(|violations| {
        let n = violations.len();
        Failure::new(
            Code::InvalidArgs,
            format!(
                "the args do not match the method's schema ({n} violation{})",
                if n == 1 { "" } else { "s" }
            ),
        )
        .with_details(json!({ "violations": violations }))
    })
}

/// The call's private working directory, removed when the call ends.
struct Workdir(PathBuf);

impl Workdir {
    fn create(request_id: &str, owner: Option<(u32, u32)>) -> std::io::Result<Workdir> {
        use std::os::unix::fs::DirBuilderExt;
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
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let path = PathBuf::from("/tmp").join(format!("upm-{safe}-{}", &suffix[20..]));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let dir = Workdir(path);
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.0.join("cache"))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.0.join("cache"), Some(uid), Some(gid))?;
        }
        Ok(dir)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn execute(
    config: &Config,
    plugin: &Plugin,
    schema: Option<&MethodSchema>,
    req: &Request,
    call: &mut Call,
    audit: &mut AuditLog,
) -> Response {
    let host = Host::probe();
    let policy = &plugin.policy;
    let owner = host
        .privileged
        .then_some((policy.user.uid, policy.user.gid));

    // prepare sandbox
    let workdir = match Workdir::create(&call.request_id, owner) {
        Ok(w) => w,
        Err(e) => {
            let f = Failure::new(
                Code::SandboxUnavailable,
                format!("cannot create the private working directory: {e}"),
            );
            return finish_refused(call, Some(config), &config.audit_path, f);
        }
    };
    let launch = match build_launch(config, plugin, req, &call.request_id, &workdir.0) {
        Ok(l) => l,
        Err(f) => return finish_refused(call, Some(config), &config.audit_path, f),
    };
    let paths = sandbox::Paths {
        workdir: &workdir.0,
        plugin_files: plugin_files(config, plugin),
        seccomp_profile: &plugin.seccomp_profile,
    };
    let mut prepared = match sandbox::prepare(policy, &paths, &host) {
        Ok(p) => p,
        Err(e) => {
            let code = match e {
                sandbox::SandboxError::Profile(_) => Code::ConfigError,
                _ => Code::SandboxUnavailable,
            };
            let f = Failure::new(code, format!("{e}; the plugin was not run"));
            return finish_refused(call, Some(config), &config.audit_path, f);
        }
    };

    // audit `started`, durably, before the plugin exists
    let started = started_entry(config, plugin, schema, req, call, &prepared);
    if let Err(e) = audit.append(started) {
        let f = Failure::new(Code::AuditError, format!("{e}; the plugin was not run"));
        return respond(call, f.into());
    }

    // spawn, capture
    let outcome = match spawn::run(&launch, &mut prepared) {
        Ok(o) => o,
        Err(e) => {
            let code = match e {
                spawn::SpawnError::Sandbox(_) => Code::SandboxUnavailable,
                spawn::SpawnError::IdMap(_) => Code::SandboxUnavailable,
                _ => Code::PluginStartFailed,
            };
            let f = Failure::new(code, format!("{e}; the plugin was not run"));
            let summary = prepared.summary();
            return finish_with(call, audit, Some(summary), f.into());
        }
    };
    drop(workdir);
    let ran = interpret(&outcome, plugin);
    finish_with(call, audit, Some(prepared.summary()), ran)
}

fn build_launch(
    config: &Config,
    plugin: &Plugin,
    req: &Request,
    request_id: &str,
    workdir: &Path,
) -> Result<Launch, Failure> {
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| {
            Failure::new(
                Code::ConfigError,
                format!(
                    "plugin \"{}\": a command or setting contains a NUL byte",
                    plugin.name
                ),
            )
        })
    };
    let stdin = serde_json::to_vec(&json!({
        "method": req.method,
        "args": req.args,
        "request_id": request_id,
    }))
    .map_err(|e| Failure::new(Code::Internal, e.to_string()))?;

    let (program, argv, result_channel) = match &plugin.kind {
        PluginKind::Command { argv } => (argv[0].clone(), argv.clone(), false),
        PluginKind::PythonClass {
            module,
            class,
            python_path,
        } => {
            let settings = json!({
                "module": module,
                "class": class,
                "python_path": python_path,
                "project_root": config.project_root,
                "cache_dir": workdir.join("cache"),
                "policy": config.policy,
            });
            let python = config.python.to_string_lossy().into_owned();
            let argv = vec![
                python.clone(),
                "-I".into(),
                "-c".into(),
                PYTHON_RUNNER.into(),
                settings.to_string(),
            ];
            (python, argv, true)
        }
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for name in &plugin.policy.env.allow {
        if let Ok(v) = std::env::var(name) {
            env.push((name.clone(), v));
        }
    }
    for (k, v) in &plugin.policy.env.set {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    let workdir_s = workdir.to_string_lossy().into_owned();
    env.retain(|(name, _)| name != "TMPDIR");
    env.push(("TMPDIR".into(), workdir_s.clone()));
    if result_channel {
        env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
    }
    Ok(Launch {
        program: cstr(&program)?,
        argv: argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|(k, v)| cstr(&format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        workdir: cstr(&workdir_s)?,
        stdin,
        result_channel,
        timeout: Duration::from_millis(plugin.policy.limits.timeout_ms),
        output_cap: plugin.policy.limits.output_bytes,
    })
}

/// What the plugin needs to read besides the base system: its own files.
fn plugin_files(config: &Config, plugin: &Plugin) -> Vec<PathBuf> {
    match &plugin.kind {
        PluginKind::Command { argv } => vec![PathBuf::from(&argv[0])],
        PluginKind::PythonClass { python_path, .. } => {
            let mut v = python_path.clone();
            v.push(config.python.clone());
            v
        }
    }
}

/// Turns how the plugin ended into the call's outcome.
fn interpret(o: &Outcome, plugin: &Plugin) -> Ran {
    let limits = &plugin.policy.limits;
    let mut ran = Ran::from_outcome(o);
    if let Some((step, errno)) = o.start_failure {
        let err = std::io::Error::from_raw_os_error(errno);
        ran.failure = Some(match (step, step.layer()) {
            (Step::Exec, _) => Failure::new(
                Code::PluginStartFailed,
                format!("the plugin could not be started: exec failed: {err}"),
            ),
            (_, Some(layer)) => Failure::new(
                Code::SandboxUnavailable,
                format!(
                    "the {} layer could not be applied ({} failed: {err}); the plugin was not run",
                    layer.as_str(),
                    step.as_str()
                ),
            ),
            _ => Failure::new(
                Code::SandboxUnavailable,
                format!(
                    "the sandbox could not be set up ({} failed: {err}); the plugin was not run",
                    step.as_str()
                ),
            ),
        });
        return ran;
    }
    let cpu_ms = o.usage.user_ms + o.usage.sys_ms;
    let limit = match (o.stopped_by, o.exit) {
        (Some(Stop::Timeout), _) => Some("timeout"),
        (Some(Stop::Output), _) => Some("output"),
        (_, Some(Exit::Signal(libc::SIGXCPU))) => Some("cpu"),
        (_, Some(Exit::Signal(libc::SIGKILL))) if cpu_ms >= limits.cpu_seconds as f64 * 1000.0 => {
            Some("cpu")
        }
        (_, Some(Exit::Signal(libc::SIGXFSZ))) => Some("file_size"),
        _ => None,
    };
    ran.limit = limit;
    ran.failure = match limit {
        Some("timeout") => Some(Failure::new(
            Code::Timeout,
            format!(
                "the plugin did not finish within {} ms and was killed with its whole process tree",
                limits.timeout_ms
            ),
        )),
        Some("output") => Some(Failure::new(
            Code::LimitExceeded,
            format!(
                "the plugin printed more than {} bytes and was stopped",
                limits.output_bytes
            ),
        )),
        Some("cpu") => Some(Failure::new(
            Code::LimitExceeded,
            format!(
                "the plugin used more than {} CPU seconds and was stopped",
                limits.cpu_seconds
            ),
        )),
        Some(l) => Some(Failure::new(
            Code::LimitExceeded,
            format!("the plugin went past its {l} limit and was stopped"),
        )),
        None => None,
    };
    if ran.failure.is_some() {
        return ran;
    }
    match &plugin.kind {
        PluginKind::Command { .. } => interpret_command(o, &mut ran),
        PluginKind::PythonClass { .. } => interpret_python(o, &mut ran),
    }
    ran
}

fn exit_failure(o: &Outcome) -> Option<Failure> {
    match o.exit {
        Some(Exit::Code(0)) => None,
        Some(Exit::Code(n)) => Some(Failure::new(
            Code::PluginFailed,
            format!("the plugin exited with status {n}"),
        )),
        Some(Exit::Signal(s)) => Some(Failure::new(
            Code::PluginFailed,
            format!("the plugin was killed by signal {s} ({})", signal_name(s)),
        )),
        None => Some(Failure::new(
            Code::PluginFailed,
            "the plugin ended without an exit status",
        )),
    }
}

fn interpret_command(o: &Outcome, ran: &mut Ran) {
    if let Some(f) = exit_failure(o) {
        ran.failure = Some(f);
        return;
    }
    let text = String::from_utf8_lossy(&o.stdout.data);
    if text.trim().is_empty() {
        ran.result = Some(Value::Null);
        return;
    }
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v) => {
            ran.result = Some(v);
            // The result is the stdout; do not echo it twice.
            ran.stdout = None;
        }
        Err(e) => {
            ran.failure = Some(Failure::new(
                Code::PluginFailed,
                format!("the plugin printed something that is not one JSON value: {e}"),
            ))
        }
    }
}

fn interpret_python(o: &Outcome, ran: &mut Ran) {
    let envelope: Option<Value> = serde_json::from_slice(&o.result.data).ok();
    let Some(env) = envelope else {
        ran.failure = Some(exit_failure(o).unwrap_or_else(|| {
            Failure::new(Code::PluginFailed, "the Python runner returned no result")
        }));
        return;
    };
    if env["ok"] == Value::Bool(true) {
        ran.result = Some(env["result"].clone());
        return;
    }
    let message = env["message"].as_str().unwrap_or("").to_owned();
    let details = json!({
        "type": env["type"],
        "message": env["message"],
        "traceback": env["traceback"],
    });
    let (code, text) = match env["kind"].as_str() {
        Some("method_not_found") => (Code::MethodNotFound, message.clone()),
        Some("import_error") => (
            Code::PluginStartFailed,
            format!("the plugin's module could not be loaded: {message}"),
        ),
        Some("exception") if env["type"] == "MemoryError" => {
            ran.limit = Some("memory");
            (
                Code::LimitExceeded,
                "the plugin ran out of memory under its memory limit".to_owned(),
            )
        }
        Some("bad_result") => (
            Code::PluginFailed,
            format!("the plugin returned a value that is not JSON: {message}"),
        ),
        _ => (
            Code::PluginFailed,
            format!(
                "the plugin raised {}: {message}",
                env["type"].as_str().unwrap_or("an exception")
            ),
        ),
    };
    ran.failure = Some(Failure::new(code, text).with_details(details));
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSYS => "SIGSYS",
        libc::SIGBUS => "SIGBUS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

/// A call's outcome, whether or not a plugin ran.
#[derive(Default)]
struct Ran {
    failure: Option<Failure>,
    result: Option<Value>,
    stdout: Option<Captured>,
    stderr: Option<Captured>,
    exit: Option<Exit>,
    limit: Option<&'static str>,
    usage: Option<Value>,
    ran: bool,
    /// What the plugin printed on stdout, kept for the audit entry even when
    /// the output became the result and `stdout` was dropped.
    stdout_bytes: Option<u64>,
}

impl From<Failure> for Ran {
    fn from(f: Failure) -> Ran {
        Ran {
            failure: Some(f),
            ..Ran::default()
        }
    }
}

impl Ran {
    fn from_outcome(o: &Outcome) -> Ran {
        let cap = |s: &spawn::Stream| Captured {
            text: String::from_utf8_lossy(&s.data).into_owned(),
            bytes: s.total,
            truncated: o.truncated(s),
        };
        Ran {
            stdout: Some(cap(&o.stdout)),
            stderr: Some(cap(&o.stderr)),
            exit: o.exit,
            usage: Some(json!({
                "wall_ms": round_ms(o.wall.as_secs_f64() * 1000.0),
                "cpu_user_ms": round_ms(o.usage.user_ms),
                "cpu_system_ms": round_ms(o.usage.sys_ms),
                "max_rss_kb": o.usage.max_rss_kb,
            })),
            ran: o.start_failure.is_none(),
            stdout_bytes: Some(o.stdout.total),
            ..Ran::default()
        }
    }
}

fn started_entry(
    config: &Config,
    plugin: &Plugin,
    schema: Option<&MethodSchema>,
    req: &Request,
    call: &Call,
    prepared: &sandbox::Prepared,
) -> Map<String, Value> {
    let mut e = base_entry("started", call);
    // SAFETY-free getters via nix.
    let ppid = nix::unistd::getppid().as_raw();
    e.insert(
        "caller".into(),
        json!({
            "uid": nix::unistd::getuid().as_raw(),
            "gid": nix::unistd::getgid().as_raw(),
            "ppid": ppid,
            "parent_exe": std::fs::read_link(format!("/proc/{ppid}/exe")).ok(),
        }),
    );
    e.insert(
        "args_digest".into(),
        json!(crate::audit::args_digest(&req.args)),
    );
    if config.audit.include_args {
        let args = schema.map_or_else(|| req.args.clone(), |s| s.redact(&req.args));
        e.insert("args".into(), args);
    }
    e.insert("config_sha256".into(), json!(config.digest));
    if let PluginKind::Command { argv } = &plugin.kind {
        e.insert(
            "plugin_sha256".into(),
            json!(file_digest(Path::new(&argv[0]))),
        );
    }
    e.insert("sandbox_requested".into(), prepared.summary());
    e
}

fn file_digest(p: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(p).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    Some(hex::encode(h.finalize()))
}

fn base_entry(event: &str, call: &Call) -> Map<String, Value> {
    let mut e = Map::new();
    e.insert("event".into(), json!(event));
    e.insert("request_id".into(), json!(call.request_id));
    e.insert("hostname".into(), json!(crate::response::hostname()));
    e.insert("pid".into(), json!(std::process::id()));
    e.insert("plugin".into(), json!(call.plugin));
    e.insert("method".into(), json!(call.method));
    e
}

fn outcome_fields(e: &mut Map<String, Value>, resp: &Response) {
    e.insert("code".into(), json!(resp.data.code.unwrap_or("ok")));
    e.insert("exit_code".into(), json!(resp.exit_code));
    e.insert("duration_ms".into(), json!(resp.data.duration_ms));
    if let Some(err) = &resp.data.error {
        e.insert("error".into(), json!(err));
    }
}

/// A refusal before any plugin was prepared: one `refused` entry.
fn finish_refused(call: &Call, config: Option<&Config>, audit_path: &Path, f: Failure) -> Response {
    let resp = respond(call, f.into());
    let mut e = base_entry("refused", call);
    outcome_fields(&mut e, &resp);
    if let Some(c) = config {
        e.insert("config_sha256".into(), json!(c.digest));
    }
    let settings = config.map(|c| c.audit.clone()).unwrap_or_default();
    let written = AuditLog::open(audit_path, &settings).and_then(|mut log| log.append(e));
    match written {
        Ok(_) => resp,
        Err(err) => audit_failed(call, resp, &err.to_string()),
    }
}

/// After the sandbox was prepared (and maybe a plugin ran): one `finished` entry.
fn finish_with(call: &Call, audit: &mut AuditLog, sandbox: Option<Value>, ran: Ran) -> Response {
    let did_run = ran.ran;
    let stdout_bytes = ran.stdout_bytes;
    let mut resp = respond(call, ran);
    resp.data.sandbox = sandbox.clone();
    let mut e = base_entry("finished", call);
    outcome_fields(&mut e, &resp);
    e.insert("ran".into(), json!(did_run));
    if let Some(x) = resp.data.exit_code {
        e.insert("plugin_exit_code".into(), json!(x));
    }
    if let Some(s) = resp.data.signal {
        e.insert("plugin_signal".into(), json!(s));
    }
    e.insert("limit".into(), json!(resp.data.limit));
    if let Some(u) = &resp.data.usage {
        e.insert("usage".into(), u.clone());
    }
    let bytes = |c: &Option<Captured>| c.as_ref().map(|c| c.bytes);
    e.insert(
        "output_bytes".into(),
        json!({ "stdout": stdout_bytes.or(bytes(&resp.data.stdout)), "stderr": bytes(&resp.data.stderr) }),
    );
    e.insert("sandbox".into(), json!(sandbox));
    match audit.append(e) {
        Ok(_) => resp,
        Err(err) => audit_failed(call, resp, &err.to_string()),
    }
}

/// The audit entry could not be made durable: the caller must know.
fn audit_failed(call: &Call, resp: Response, err: &str) -> Response {
    let original = json!({
        "code": resp.data.code.unwrap_or("ok"),
        "error": resp.data.error,
        "result": resp.data.result,
    });
    let f = Failure::new(
        Code::AuditError,
        format!("the audit log could not be written: {err}"),
    )
    .with_details(json!({ "outcome": original }));
    let mut r = respond(call, Ran::default());
    r.data.result = resp.data.result;
    r.data.stdout = resp.data.stdout;
    r.data.stderr = resp.data.stderr;
    r.data.exit_code = resp.data.exit_code;
    r.fail(&f)
}

fn respond(call: &Call, ran: Ran) -> Response {
    let mut r = Response::new(&call.request_id, call.started);
    r.data.plugin = call.plugin.clone();
    r.data.method = call.method.clone();
    r.data.result = ran.result;
    r.data.stdout = ran.stdout;
    r.data.stderr = ran.stderr;
    match ran.exit {
        Some(Exit::Code(c)) => r.data.exit_code = Some(c),
        Some(Exit::Signal(s)) => r.data.signal = Some(s),
        None => {}
    }
    r.data.usage = ran.usage;
    r.data.limit = ran.limit;
    match ran.failure {
        Some(f) => r.fail(&f),
        None => r,
    }
}
