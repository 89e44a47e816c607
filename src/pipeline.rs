//! One call, top-down: parse → authorize → validate → prepare sandbox →
//! audit `started` → spawn → capture → audit `finished` → respond.
//!
//! Every step either hands the next one what it needs or returns a
//! [`Failure`]; whichever way a call ends, it ends in `finish_refused` or
//! `finish_with`, which write the audit entry and build the one response.
//! Nothing runs before its `started` entry is durable.
//!
//! A [`Session`] holds what does not change between calls — the config, the
//! host probe, compiled schemas, seccomp profiles with their BPF, the open
//! audit log — so that `upm run --jsonl` loads them once for a whole batch,
//! while each call still gets its own sandbox and its own audit entries.

use crate::audit::GroupCommit;
use crate::compat;
use crate::config::{Config, ConfigError, Plugin, PluginKind, PythonPathFrom};
use crate::container;
use crate::error::{Code, Failure};
use crate::launch::{self, Workdir};
use crate::outcome::{self, Ran};
use crate::request::{self, Request};
use crate::response::{Captured, Response};
use crate::sandbox::seccomp::Profile;
use crate::sandbox::{self, host::Host, policy::Backend, policy::SeccompSource};
use crate::schema::MethodSchema;
use crate::spawn::{self, Exit};
use crate::trust;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where the call comes from.
pub enum Input<R: Read> {
    /// `upm run`: one JSON request on this reader.
    Stdin(R),
    /// `upm run --jsonl`: one line, already read (at most the size cap).
    Line(Vec<u8>),
    /// `upm run --jsonl`: a line longer than the size cap, skipped without being kept.
    TooLong,
    /// `upm <plugin> <method> <json_args>`: the original UPM entrypoint's argv form.
    /// As the OS gave them: not being UTF-8 is the request's fault, answered in JSON.
    Argv {
        plugin: OsString,
        method: OsString,
        args: OsString,
    },
}

/// What is known about the call so far, for the response and the audit entry.
struct Call {
    started: Instant,
    request_id: String,
    /// Made by upm, unique per call: the caller's `request_id` need not be (a batch
    /// may repeat one, two processes may share one), and an auditor must still pair
    /// each `started` entry with its own `finished`.
    call_id: String,
    plugin: Option<String>,
    method: Option<String>,
    /// The signature verdict, when trust is not off (as JSON: `trust`).
    verdict: Option<trust::Verdict>,
    trust: Option<Value>,
    /// The sandbox recorded in the `started` entry, so `finished` need not repeat it.
    sandbox_started: Option<Value>,
    /// Why no schema checked the args, when none did.
    no_schema: Option<String>,
    warnings: Vec<String>,
}

impl Call {
    fn new() -> Call {
        Call {
            started: Instant::now(),
            request_id: uuid::Uuid::now_v7().to_string(),
            call_id: uuid::Uuid::now_v7().to_string(),
            plugin: None,
            method: None,
            verdict: None,
            trust: None,
            sandbox_started: None,
            no_schema: None,
            warnings: Vec::new(),
        }
    }
}

/// What calls share: loaded once per process (once per batch in `--jsonl` mode).
pub struct Session {
    /// As the caller named it (UPM's "Failed to load config from PATH" repeats it so).
    config_path: PathBuf,
    config: Result<Config, ConfigError>,
    host: Host,
    schemas: Mutex<HashMap<(String, String), Arc<MethodSchema>>>,
    profiles: Mutex<HashMap<SeccompSource, Arc<Profile>>>,
    /// Opened on first use; concurrent calls share its fsyncs.
    audit: GroupCommit,
    /// One call per process: overlap its two fsyncs with other work on extra threads.
    /// (A batch has its calls to overlap instead, and no CPU to spare for threads.)
    overlap: bool,
}

/// Runs one call and returns its response (whose `exit_code` is the process's).
pub fn run<R: Read>(config_path: &Path, input: Input<R>) -> Response {
    let mut session = Session::load(config_path);
    session.overlap = true;
    session.call(input)
}

/// A call refused before it could even be read (the argv form's usage error):
/// audited like every other refusal (after the log, as in UPM, which set up its
/// logging before it looked at its arguments).
pub fn refuse(config_path: &Path, failure: Failure) -> Response {
    let session = Session::load(config_path);
    let call = Call::new();
    if let Err(f) = session.open_log() {
        return respond(&call, f.into());
    }
    session.finish_refused(&call, failure)
}

impl Session {
    pub fn load(config_path: &Path) -> Session {
        // Where this session's audit entries go, even when the config is invalid: its own
        // log when it can be read that far.
        let loaded = Config::load(config_path);
        let (audit_path, audit_settings) = match &loaded {
            Ok(c) => (c.audit_path.clone(), c.audit.clone()),
            Err(_) => crate::config::fallback_audit(config_path),
        };
        // An invalid config runs nothing: its schemas and profiles are checked as a whole.
        let (config, profiles) = match loaded.map(|c| (crate::preflight::check(&c), c)) {
            Ok((checked, c)) if checked.problems.is_empty() => (Ok(c), checked.profiles),
            Ok((checked, c)) => (
                Err(ConfigError::Invalid {
                    path: c.path,
                    problems: checked.problems,
                }),
                HashMap::new(),
            ),
            Err(e) => (Err(e), HashMap::new()),
        };
        let host = Host::probe();
        if host.privileged {
            // A root upm's calls change the spawning thread's euid (see AsOwner).
            sandbox::namespaces::hold_parent_death_signal();
        }
        Session {
            config_path: config_path.to_path_buf(),
            config,
            host,
            schemas: Mutex::new(HashMap::new()),
            profiles: Mutex::new(profiles),
            audit: GroupCommit::new(audit_path, audit_settings),
            overlap: false,
        }
    }

    pub fn config(&self) -> Result<&Config, &ConfigError> {
        self.config.as_ref()
    }

    pub fn max_request_bytes(&self) -> u64 {
        self.config
            .as_ref()
            .map_or(request::DEFAULT_MAX_REQUEST_BYTES, |c| c.max_request_bytes)
    }

    /// One call, top-down, its refusals in UPM's order: log, args (3), config (5),
    /// plugin (4), method (7), then upm's own checks (trust, schema).
    pub fn call<R: Read>(&self, input: Input<R>) -> Response {
        let mut call = Call::new();
        let cap = self.max_request_bytes();

        // the audit log first: nothing runs, or is refused, unaudited
        if let Err(f) = self.open_log() {
            // Whatever the call named is in the answer all the same.
            let _ = parse(input, cap, &mut call);
            return respond(&call, f.into());
        }

        // parse
        let req = match parse(input, cap, &mut call) {
            Ok(r) => r,
            Err(f) => return self.finish_refused(&call, f),
        };
        let config = match self.loaded_config() {
            Ok(c) => c,
            Err(f) => return self.finish_refused(&call, f),
        };
        phase(&call, "request parsed");

        // authorize, verify the signed config, validate
        let authorized = authorize(config, &req).and_then(|plugin| {
            let schema = self.schema(plugin, &req.method)?;
            phase(&call, "schema loaded");
            if schema.is_none() {
                call.no_schema = Some(no_schema(config, plugin, &req.method));
            }
            let seccomp = self.checked_files(config, plugin, schema.as_deref(), &mut call)?;
            validate(schema.as_deref(), &req.args)?;
            check_python_args(plugin, &req.args)?;
            Ok((plugin, schema, seccomp))
        });
        let (plugin, schema, seccomp) = match authorized {
            Ok(ok) => ok,
            Err(f) => return self.finish_refused(&call, f),
        };
        phase(&call, "authorized and validated");
        self.execute(config, plugin, schema.as_deref(), &seccomp, &req, &mut call)
    }

    /// `upm migrate`: the signatures of `methods`, read by upm's runner from the
    /// plugin's class inside the sandbox (importing a module runs its code), as an
    /// audited call of its own (method `(upm migrate)`).
    pub fn introspect(&self, plugin: &str, methods: &[String]) -> Response {
        let mut call = Call::new();
        call.plugin = Some(plugin.to_owned());
        call.method = Some(INTROSPECT_METHOD.to_owned());
        if let Err(f) = self.open_log() {
            return respond(&call, f.into());
        }
        let config = match self.loaded_config() {
            Ok(c) => c,
            Err(f) => return self.finish_refused(&call, f),
        };
        let Some(p) = config.plugins.get(plugin) else {
            let f = Failure::new(
                Code::NotWhitelisted,
                compat::not_in_config(plugin, &config.plugin_order),
            );
            return self.finish_refused(&call, f);
        };
        let req = Request {
            plugin: plugin.to_owned(),
            method: INTROSPECT_METHOD.to_owned(),
            args: json!({ "methods": methods }),
            request_id: None,
            introspect: Some(methods.to_vec()),
        };
        let seccomp = match self.checked_files(config, p, None, &mut call) {
            Ok(s) => s,
            Err(f) => return self.finish_refused(&call, f),
        };
        self.execute(config, p, None, &seccomp, &req, &mut call)
    }

    /// The config, or UPM's sentence for why it did not load (exit 5).
    fn loaded_config(&self) -> Result<&Config, Failure> {
        self.config.as_ref().map_err(|e| {
            Failure::new(Code::ConfigError, compat::config_load(&self.config_path, e))
                .with_details(json!({ "problems": e.problems() }))
        })
    }

    /// The audit log, opened (once per session), or UPM's sentence (exit 11).
    fn open_log(&self) -> Result<(), Failure> {
        self.audit.ensure_open().map_err(|e| {
            Failure::new(
                Code::AuditError,
                format!(
                    "{}; the plugin was not run (nothing runs unaudited)",
                    compat::logging_failed(&e)
                ),
            )
        })
    }

    /// The seccomp profile, loaded, and the signature checked over what the call uses.
    fn checked_files(
        &self,
        config: &Config,
        plugin: &Plugin,
        schema: Option<&MethodSchema>,
        call: &mut Call,
    ) -> Result<Arc<Profile>, Failure> {
        // A profile that does not load is a config error, never a degradation.
        let seccomp = self.profile(&plugin.seccomp_profile)?;
        phase(call, "seccomp profile loaded");
        let files = trust::CallFiles {
            plugin,
            schema,
            seccomp: &seccomp,
        };
        verify_trust(config, &files, call)?;
        Ok(seccomp)
    }

    /// From the authorized, validated request to its answer, on the plugin's backend.
    fn execute(
        &self,
        config: &Config,
        plugin: &Plugin,
        schema: Option<&MethodSchema>,
        seccomp: &Profile,
        req: &Request,
        call: &mut Call,
    ) -> Response {
        if crate::spawn::stop::requested() {
            return self.finish_refused(call, cancelled_before_start());
        }
        match plugin.policy.backend {
            Backend::Native => self.execute_native(config, plugin, schema, seccomp, req, call),
            Backend::Container => {
                self.execute_container(config, plugin, schema, seccomp, req, call)
            }
        }
    }

    /// The method's schema, compiled once per session.
    fn schema(&self, plugin: &Plugin, method: &str) -> Result<Option<Arc<MethodSchema>>, Failure> {
        let Some(path) = plugin.methods.get(method).and_then(|m| m.schema.as_ref()) else {
            return Ok(None);
        };
        let key = (plugin.name.clone(), method.to_owned());
        if let Some(s) = lock(&self.schemas).get(&key) {
            return Ok(Some(s.clone()));
        }
        let schema =
            Arc::new(MethodSchema::load(path).map_err(|e| {
                Failure::new(Code::ConfigError, format!("the config is invalid: {e}"))
            })?);
        lock(&self.schemas).insert(key, schema.clone());
        Ok(Some(schema))
    }

    /// A seccomp profile, parsed once per session (its compiled BPF is cached inside it).
    fn profile(&self, source: &SeccompSource) -> Result<Arc<Profile>, Failure> {
        if let Some(p) = lock(&self.profiles).get(source) {
            return Ok(p.clone());
        }
        let profile =
            Arc::new(source.load().map_err(|e| {
                Failure::new(Code::ConfigError, format!("the config is invalid: {e}"))
            })?);
        lock(&self.profiles).insert(source.clone(), profile.clone());
        Ok(profile)
    }

    fn append(&self, entry: Map<String, Value>) -> Result<String, Arc<crate::audit::AuditError>> {
        self.audit.append(entry)
    }
}

/// A poisoned lock only means another call panicked; the data is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn cancelled_before_start() -> Failure {
    Failure::new(
        Code::Cancelled,
        "upm was asked to stop (SIGTERM, SIGINT or SIGHUP); the plugin was not run",
    )
}

fn parse<R: Read>(input: Input<R>, cap: u64, call: &mut Call) -> Result<Request, Failure> {
    let bad = |e: request::RequestError| {
        let code = match e {
            request::RequestError::Read(ref io) if crate::spawn::stop::Stopped::is(io) => {
                Code::Cancelled
            }
            request::RequestError::TooLarge { .. } => Code::RequestTooLarge,
            _ => Code::BadRequest,
        };
        Failure::new(code, e.to_string())
    };
    let req = match input {
        Input::Stdin(reader) => {
            let bytes = request::read_bounded(reader, cap).map_err(bad)?;
            parse_document(&bytes, call).map_err(bad)?
        }
        Input::TooLong => return Err(bad(request::RequestError::TooLarge { cap })),
        Input::Line(bytes) => parse_document(&bytes, call).map_err(bad)?,
        Input::Argv {
            plugin,
            method,
            args,
        } => {
            call.plugin = Some(request::noted(&plugin.to_string_lossy()));
            call.method = Some(request::noted(&method.to_string_lossy()));
            let utf8 = |s: OsString, which| {
                s.into_string()
                    .map_err(|_| bad(request::RequestError::ArgvUtf8(which)))
            };
            let (plugin, method) = (utf8(plugin, "plugin")?, utf8(method, "method")?);
            // UPM's sentence for anything wrong with json_args, upm's reason after it.
            let args_bad = |e| {
                let mut f = bad(e);
                f.message = compat::json_args(&f.message);
                f
            };
            let args = args
                .into_string()
                .map_err(|_| args_bad(request::RequestError::ArgvUtf8("args")))?;
            if args.len() as u64 > cap {
                return Err(args_bad(request::RequestError::TooLarge { cap }));
            }
            let args = request::parse_json(args.as_bytes(), true).map_err(args_bad)?;
            let req = Request {
                plugin,
                method,
                args,
                request_id: None,
                introspect: None,
            };
            req.check().map_err(bad)?;
            req
        }
    };
    Ok(req)
}

/// A request document; whatever it names is noted for the response and the audit,
/// even when the request is then refused.
fn parse_document(bytes: &[u8], call: &mut Call) -> Result<Request, request::RequestError> {
    let doc = request::parse_json(bytes, false)?;
    if let Some(id) = request::peek_request_id(&doc) {
        call.request_id = id;
    }
    if let Some(o) = doc.as_object() {
        call.plugin = o.get("plugin").and_then(Value::as_str).map(request::noted);
        call.method = o.get("method").and_then(Value::as_str).map(request::noted);
    }
    request::from_value(doc)
}

/// The method an introspection by `upm migrate` is audited under (no method can be
/// named so: parentheses are not allowed in a method's name).
pub const INTROSPECT_METHOD: &str = "(upm migrate)";

/// The whitelist: the plugin, then the method, then whether it is private (UPM's
/// order and sentences, upm's reason after them where it has one).
fn authorize<'c>(config: &'c Config, req: &Request) -> Result<&'c Plugin, Failure> {
    let plugin = config
        .plugins
        .get(&req.plugin)
        .filter(|_| request::valid_name(&req.plugin))
        .ok_or_else(|| {
            let mut text = compat::not_in_config(&req.plugin, &config.plugin_order);
            if !request::valid_name(&req.plugin) {
                text.push_str(
                    " (not a valid plugin name: it must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$)",
                );
            }
            Failure::new(Code::NotWhitelisted, text)
        })?;
    let listed =
        plugin.methods.contains_key(&req.method) || plugin.private_methods.contains(&req.method);
    if !listed {
        let mut text = compat::not_allowed(&req.method, &req.plugin);
        if !request::valid_name(&req.method) && !request::valid_private_name(&req.method) {
            text.push_str(
                " (not a valid method name: it must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$)",
            );
        }
        return Err(Failure::new(Code::MethodNotAllowed, text));
    }
    if req.method.starts_with('_') {
        return Err(Failure::new(
            Code::MethodNotAllowed,
            format!(
                "{} (methods starting with '_' are never callable)",
                compat::private(&req.method)
            ),
        ));
    }
    Ok(plugin)
}

/// Why no schema checks a method's args (the config allows that: see `config`).
fn no_schema(config: &Config, plugin: &Plugin, method: &str) -> String {
    let why = match plugin.methods.get(method) {
        Some(m) if m.upm_whitelist_only => "is whitelisted only through UPM's \"allowed_methods\"",
        _ if config.require_schemas == Some(false) => {
            "has none, and the config sets \"require_schemas\": false"
        }
        _ => "has none",
    };
    format!(
        "no schema checked the args: method \"{method}\" of plugin \"{}\" {why}",
        plugin.name
    )
}

/// A Python class plugin is called as UPM called it, `method(*args, **kwargs)`: the
/// args must have that shape (UPM would have failed on anything else, later and less
/// clearly).
fn check_python_args(plugin: &Plugin, args: &Value) -> Result<(), Failure> {
    if !matches!(plugin.kind, PluginKind::PythonClass { .. }) {
        return Ok(());
    }
    let shape = match args {
        Value::Object(o) => {
            o.get("args").is_none_or(|a| a.is_array())
                && o.get("kwargs").is_none_or(|k| k.is_object())
        }
        _ => false,
    };
    if shape {
        return Ok(());
    }
    Err(Failure::new(
        Code::BadRequest,
        "the args of a Python class plugin must be an object {\"args\": [...], \"kwargs\": {...}} \
         (each optional, with \"project_root\" and \"cache_dir\" if the caller sets them)",
    ))
}

/// Where the time goes, for `UPM_DIAG_LEVEL=debug`.
fn phase(call: &Call, what: &str) {
    tracing::debug!(
        request_id = %call.request_id,
        elapsed_us = call.started.elapsed().as_micros() as u64,
        "{what}"
    );
}

/// Strict: a config that is unsigned, badly signed or changed stops here.
/// Warn: the call goes on, and the result and the audit say why it should not have.
fn verify_trust(
    config: &Config,
    files: &trust::CallFiles<'_>,
    call: &mut Call,
) -> Result<(), Failure> {
    let Some(verdict) = trust::check(config, Some(files)) else {
        return Ok(());
    };
    call.trust = Some(verdict.to_json());
    let outcome = match (&verdict.result, verdict.mode) {
        (Ok(_), _) => Ok(()),
        (Err(e), trust::Mode::Warn) => {
            call.warnings
                .push(format!("the config is not trusted: {e}"));
            Ok(())
        }
        (Err(e), _) => Err(Failure::new(
            Code::UntrustedConfig,
            format!("the config is not trusted: {e}; nothing was run"),
        )),
    };
    call.verdict = Some(verdict);
    outcome
}

/// The executable about to run, against the signature when it lists it (a pinned
/// command, the Python interpreter): its digest is of the very bytes that are exec'd.
/// Strict refuses a mismatch; warn records it.
fn verify_executable(
    config: &Config,
    plugin: &Plugin,
    runnable: &launch::Runnable,
    call: &mut Call,
) -> Result<(), Failure> {
    let Some(verdict) = call.verdict.as_mut() else {
        return Ok(());
    };
    let Ok(signed) = &verdict.result else {
        // Already failed (warn mode): recorded once.
        return Ok(());
    };
    let exe = &runnable.exe;
    if !trust::signed_executables(plugin).contains(&exe.source.as_path()) {
        return Ok(());
    }
    let Err(e) = trust::check_executable(config, signed, &exe.source, &exe.sha256) else {
        return Ok(());
    };
    let failure = Failure::new(
        Code::UntrustedConfig,
        format!("the config is not trusted: {e}; nothing was run"),
    );
    let warning = format!("the config is not trusted: {e}");
    verdict.result = Err(e);
    call.trust = Some(verdict.to_json());
    if verdict.mode == trust::Mode::Warn {
        call.warnings.push(warning);
        return Ok(());
    }
    Err(failure)
}

fn validate(schema: Option<&MethodSchema>, args: &Value) -> Result<(), Failure> {
    let Some(schema) = schema else { return Ok(()) };
    schema.validate(args).map_err(|r| {
        let n = r.total;
        let listed = if n > r.violations.len() {
            format!("; the first {} are listed", r.violations.len())
        } else {
            String::new()
        };
        Failure::new(
            Code::InvalidArgs,
            format!(
                "the args do not match the method's schema ({n} violation{}{listed})",
                if n == 1 { "" } else { "s" }
            ),
        )
        .with_details(json!({ "violations": r.violations, "violation_count": n }))
    })
}

impl Session {
    fn execute_native(
        &self,
        config: &Config,
        plugin: &Plugin,
        schema: Option<&MethodSchema>,
        seccomp: &Profile,
        req: &Request,
        call: &mut Call,
    ) -> Response {
        let host = &self.host;
        let policy = &plugin.policy;
        let owner = host
            .privileged
            .then_some((policy.user.uid, policy.user.gid));

        // prepare: private directory, verified plugin files, launch, sandbox layers
        let python = matches!(plugin.kind, crate::config::PluginKind::PythonClass { .. });
        let workdir = match Workdir::create(&config.workdir_root, &call.request_id, owner, python) {
            Ok(w) => w,
            Err(e) => {
                let f = Failure::new(
                    Code::SandboxUnavailable,
                    format!("cannot create the call's private directory: {e}"),
                );
                return self.finish_refused(call, f);
            }
        };
        phase(call, "workdir created");
        let copy_interpreter = call.verdict.is_some();
        let prepared = launch::resolve(plugin, &workdir, copy_interpreter)
            .and_then(|runnable| {
                phase(call, "plugin resolved and hashed");
                if let Some(v) = call.verdict.as_mut() {
                    let script = runnable.exe.interpreter.as_deref();
                    v.unpinned = trust::unpinned(plugin, copy_interpreter, script);
                    call.trust = Some(v.to_json());
                }
                verify_executable(config, plugin, &runnable, call)?;
                launch::check_pin(plugin, &runnable)?;
                Ok(runnable)
            })
            .and_then(|runnable| {
                let launch =
                    launch::build(config, plugin, &runnable, req, &call.request_id, &workdir)?;
                let paths = sandbox::Paths {
                    workdir: &workdir.home,
                    plugin_files: runnable.readable.clone(),
                    seccomp,
                };
                let sandbox = sandbox::prepare(policy, &paths, host)?;
                Ok((runnable, launch, sandbox))
            });
        let (runnable, launch, mut sandbox) = match prepared {
            Ok(p) => p,
            Err(f) => return self.finish_refused(call, f),
        };
        phase(call, "sandbox prepared");
        if crate::spawn::stop::requested() {
            return self.finish_refused(call, cancelled_before_start());
        }

        // spawn the sandbox's init (creating its namespaces is the slow part of a spawn)
        // while another thread makes the `started` entry durable: the init waits for
        // the go, so the plugin still does not exist before its entry does.
        let mut files = json!({
            "exec": runnable.exe.path,
            "exec_sha256": runnable.exe.sha256,
            "manifest_sha256": runnable.manifest_sha256,
        });
        if runnable.exe.source != runnable.exe.path {
            files["exec_source"] = json!(runnable.exe.source);
        }
        let requested = with_python_path(sandbox.summary(), plugin, &runnable);
        let started = Started {
            config,
            schema,
            req,
            files,
            sandbox: requested.clone(),
        };
        let (audited, spawned) = if self.overlap {
            std::thread::scope(|s| {
                let audit = s.spawn(|| self.audit_started(call, started));
                let spawned = spawn::start(&launch, &mut sandbox);
                let audited = audit.join().unwrap_or_else(|_| {
                    Err(Failure::new(
                        Code::AuditError,
                        "the audit writer failed; the plugin was not run".to_owned(),
                    ))
                });
                (audited, spawned)
            })
        } else {
            let spawned = spawn::start(&launch, &mut sandbox);
            (self.audit_started(call, started), spawned)
        };
        let spawned = match (audited, spawned) {
            // Dropping the init (if it started) kills it: nothing ran.
            (Err(f), _) => return respond(call, f.into()),
            (Ok(()), Err(e)) => {
                return self.finish_with(call, Some(requested), Failure::from(e).into())
            }
            (Ok(()), Ok(spawned)) => spawned,
        };
        phase(call, "sandbox started, started entry durable");
        // What is really in force: namespaces may have been given up (only if allowed).
        let summary = with_python_path(spawned.sandbox().summary(), plugin, &runnable);

        // go, capture (and what the sandbox refused meanwhile: issue 23)
        let (outcome, denials) = spawned.run_observed();
        phase(call, "plugin finished");
        let mut ran = outcome::interpret(outcome, plugin, Some(&runnable.exe));
        ran.denials = Some(denials);
        // the `finished` entry's fsync and the private directory's removal overlap too
        let dir = workdir.root.clone();
        let (resp, removed) = if self.overlap {
            std::thread::scope(|s| {
                let removal = s.spawn(move || workdir.remove());
                let resp = self.finish_with(call, Some(summary), ran);
                let removed = removal
                    .join()
                    .unwrap_or(Err(crate::files::RemoveError::Sys(nix::Error::EIO)));
                (resp, removed)
            })
        } else {
            let removed = workdir.remove();
            (self.finish_with(call, Some(summary), ran), removed)
        };
        match removed {
            Ok(()) => resp,
            Err(e) => self.cleanup_failed(call, resp, &dir, &e),
        }
    }

    /// The plugin's directory (some of it) stayed on disk: whatever the plugin left
    /// there outlives the call. Audited in an entry of its own, after `finished`
    /// (whose fsync overlaps the removal), and told to the caller.
    fn cleanup_failed(
        &self,
        call: &Call,
        mut resp: Response,
        dir: &Path,
        err: &crate::files::RemoveError,
    ) -> Response {
        let warning = format!(
            "the call's private directory could not be removed ({err}): it is left at {}",
            dir.display()
        );
        tracing::error!(request_id = %call.request_id, "{warning}");
        let mut e = base_entry("cleanup_failed", call);
        e.insert("path".into(), json!(dir.display().to_string()));
        e.insert("error".into(), json!(err.to_string()));
        resp.data.warnings.push(match self.append(e) {
            Ok(_) => warning,
            Err(a) => format!("{warning}; and the audit log could not record it: {a}"),
        });
        resp
    }

    /// The same steps through a container engine: prepare, audit `started`, run, interpret.
    fn execute_container(
        &self,
        config: &Config,
        plugin: &Plugin,
        schema: Option<&MethodSchema>,
        seccomp: &Profile,
        req: &Request,
        call: &mut Call,
    ) -> Response {
        let prepared = match container::prepare(
            plugin,
            seccomp,
            req,
            &call.request_id,
            &config.workdir_root,
        ) {
            Ok(p) => p,
            Err(e) => return self.finish_refused(call, e.into()),
        };
        let files = json!({ "image": plugin.policy.image, "command": prepared.command() });
        let started = Started {
            config,
            schema,
            req,
            files,
            sandbox: prepared.summary(),
        };
        if let Err(f) = self.audit_started(call, started) {
            return respond(call, f.into());
        }
        let ran = match container::run(&prepared) {
            Ok(o) => {
                let usage = container::usage(&o);
                let mut ran = outcome::interpret(o, plugin, None);
                ran.usage = Some(usage);
                ran.denials = Some(crate::denials::in_container());
                ran
            }
            Err(e) => Failure::from(e).into(),
        };
        self.finish_with(call, Some(prepared.summary()), ran)
    }
}

/// A Python class plugin's import path in the sandbox report: the directories the
/// plugin may read its modules from, and where they came from (the config, or the
/// caller's `PYTHONPATH`, with what of it was ignored).
fn with_python_path(mut summary: Value, plugin: &Plugin, runnable: &launch::Runnable) -> Value {
    if let PluginKind::PythonClass {
        python_path,
        python_path_from,
        ..
    } = &plugin.kind
    {
        let mut report = match python_path_from {
            PythonPathFrom::Config => json!({ "from": "config", "paths": python_path }),
            PythonPathFrom::Environment(env) => env.report(),
        };
        if runnable.python_path != *python_path {
            report["snapshot"] = json!(runnable.python_path);
        }
        summary["python_path"] = report;
    }
    summary
}

/// What the `started` entry records.
struct Started<'a> {
    config: &'a Config,
    schema: Option<&'a MethodSchema>,
    req: &'a Request,
    /// What will be exec'd, and its digests (or the image, for a container).
    files: Value,
    /// The sandbox requested.
    sandbox: Value,
}

impl Session {
    /// Makes the `started` entry durable, or answers `audit_error`: nothing runs unaudited.
    fn audit_started(&self, call: &mut Call, s: Started<'_>) -> Result<(), Failure> {
        let entry = started_entry(call, &s);
        call.sandbox_started = Some(s.sandbox);
        self.append(entry)
            .map(|_| ())
            .map_err(|e| Failure::new(Code::AuditError, format!("{e}; the plugin was not run")))
    }
}

fn started_entry(call: &Call, s: &Started<'_>) -> Map<String, Value> {
    let mut e = base_entry("started", call);
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
        json!(crate::audit::args_digest(&s.req.args)),
    );
    if s.config.audit.include_args {
        let args = s
            .schema
            .map_or_else(|| s.req.args.clone(), |schema| schema.redact(&s.req.args));
        // Redaction can make args many times larger (each secret becomes a 76-byte
        // digest object): past a bound, the entry keeps only their digest, so that it
        // stays far below what the audit writer accepts.
        let size = serde_json::to_vec(&args).map_or(usize::MAX, |v| v.len());
        if size <= MAX_LOGGED_ARGS_BYTES {
            e.insert("args".into(), args);
        } else {
            e.insert(
                "args_omitted".into(),
                json!(format!(
                    "{size} bytes as logged, over the {MAX_LOGGED_ARGS_BYTES} an entry records; see args_digest"
                )),
            );
        }
    }
    e.insert("config_sha256".into(), json!(s.config.digest));
    e.insert("plugin_files".into(), s.files.clone());
    e.insert("sandbox_requested".into(), s.sandbox.clone());
    e
}

/// The most of a call's (redacted) args a `started` entry records.
const MAX_LOGGED_ARGS_BYTES: usize = 4 << 20;

fn base_entry(event: &str, call: &Call) -> Map<String, Value> {
    let mut e = Map::new();
    e.insert("event".into(), json!(event));
    e.insert("request_id".into(), json!(call.request_id));
    e.insert("call_id".into(), json!(call.call_id));
    e.insert("hostname".into(), json!(crate::response::hostname()));
    e.insert("pid".into(), json!(std::process::id()));
    e.insert("plugin".into(), json!(call.plugin));
    e.insert("method".into(), json!(call.method));
    if let Some(t) = &call.trust {
        e.insert("trust".into(), t.clone());
    }
    if let Some(n) = &call.no_schema {
        e.insert("no_schema".into(), json!(n));
    }
    if !call.warnings.is_empty() {
        e.insert("warnings".into(), json!(call.warnings));
    }
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

impl Session {
    /// A refusal before any plugin was prepared: one `refused` entry.
    fn finish_refused(&self, call: &Call, f: Failure) -> Response {
        let resp = respond(call, f.into());
        let mut e = base_entry("refused", call);
        outcome_fields(&mut e, &resp);
        if let Ok(c) = &self.config {
            e.insert("config_sha256".into(), json!(c.digest));
        }
        match self.append(e) {
            Ok(_) => resp,
            Err(err) => audit_failed(call, resp, &err.to_string()),
        }
    }

    /// After the sandbox was prepared (and maybe a plugin ran): one `finished` entry.
    fn finish_with(&self, call: &Call, sandbox: Option<Value>, mut ran: Ran) -> Response {
        let did_run = ran.ran;
        let stdout_bytes = ran.stdout_bytes;
        // issue 23: a failure after denials names the first one and what would allow it.
        let denials = ran.denials.take();
        if let (Some(d), Some(f)) = (&denials, ran.failure.as_mut()) {
            let stderr = ran.stderr.as_ref().map_or("", |c| c.text.as_str());
            if let Some(why) = d.explain(&[&f.message, stderr]) {
                f.message = format!("{}; {why}", f.message);
            }
        }
        let mut resp = respond(call, ran);
        resp.data.sandbox = sandbox.clone();
        if let Some(d) = &denials {
            resp.data.denials = Some(d.list_json());
            resp.data.denials_summary = Some(d.summary_json());
        }
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
        if let (Some(d), Some(s)) = (&resp.data.denials, &resp.data.denials_summary) {
            e.insert("denials".into(), d.clone());
            e.insert("denials_summary".into(), s.clone());
        }
        if let Some(u) = &resp.data.usage {
            e.insert("usage".into(), u.clone());
        }
        let bytes = |c: &Option<Captured>| c.as_ref().map(|c| c.bytes);
        e.insert(
        "output_bytes".into(),
        json!({ "stdout": stdout_bytes.or(bytes(&resp.data.stdout)), "stderr": bytes(&resp.data.stderr) }),
    );
        // What was really in force; when it is exactly what `started` recorded (the chain
        // ties the two lines together), say so instead of repeating ~1 KB.
        let in_force = match (&sandbox, &call.sandbox_started) {
            (Some(s), Some(requested)) if s == requested => json!({ "same_as_started": true }),
            _ => json!(sandbox),
        };
        e.insert("sandbox".into(), in_force);
        match self.append(e) {
            Ok(_) => resp,
            Err(err) if did_run => withheld(call, &err.to_string()),
            Err(err) => audit_failed(call, resp, &err.to_string()),
        }
    }
}

/// The plugin ran but its `finished` entry could not be made durable: the caller gets
/// nothing of what the plugin produced (result, output, exit status, not even sizes),
/// only that it ran, so that no caller holds a result the log lacks.
fn withheld(call: &Call, err: &str) -> Response {
    let f = Failure::new(
        Code::AuditError,
        format!(
            "the audit log could not be written: {err}; the plugin ran, and what it \
             returned is withheld because the log does not record it"
        ),
    )
    .with_details(json!({ "ran": true }));
    respond(call, Ran::default()).fail(&f)
}

/// The audit entry of a call whose plugin did not run could not be made durable: the
/// caller must know, with upm's own outcome code (not its message, which can quote what
/// a container engine or a plugin printed).
fn audit_failed(call: &Call, resp: Response, err: &str) -> Response {
    let original = json!({ "code": resp.data.code.unwrap_or("ok") });
    let f = Failure::new(
        Code::AuditError,
        format!("the audit log could not be written: {err}"),
    )
    .with_details(json!({ "outcome": original }));
    respond(call, Ran::default()).fail(&f)
}

fn respond(call: &Call, ran: Ran) -> Response {
    let mut r = Response::new(&call.request_id, call.started);
    r.data.call_id = call.call_id.clone();
    r.data.plugin = call.plugin.clone();
    r.data.method = call.method.clone();
    r.data.trust = call.trust.clone();
    r.data.no_schema = call.no_schema.clone();
    r.data.warnings = call.warnings.clone();
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
