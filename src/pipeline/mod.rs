//! One call, top-down, in [`Session::call`]: parse → authorize → validate → prepare →
//! audit `started` → run → capture → audit `finished` → respond.
//!
//! Every step either hands the next one what it needs or returns a [`Failure`];
//! whichever way a call ends, it ends in `finish_refused` or `finish_with`, which write
//! the audit entry and build the one response. Nothing runs before its `started` entry
//! is durable. The native and container backends differ only inside prepare and run
//! (and in what their plugin's end leaves to capture): `backend.rs`. The steps that
//! may refuse a call before that are in `checks.rs`, the audit entries' layout in
//! `entry.rs`.
//!
//! A [`Session`] holds what does not change between calls — the config, the
//! host probe, compiled schemas, seccomp profiles with their BPF, the open
//! audit log — so that `upm run --jsonl` loads them once for a whole batch,
//! while each call still gets its own sandbox and its own audit entries.

mod backend;
mod checks;
mod entry;
mod go;
mod grants;
mod slots;

use crate::audit::GroupCommit;
use crate::codes::Coded;
use crate::compat;
use crate::config::{Config, ConfigError, Plugin};
use crate::error::{Code, Failure};
use crate::files::RemoveError;
use crate::launch::Workdir;
use crate::outcome::Ran;
use crate::request;
use crate::response::Response;
use crate::sandbox::seccomp::Profile;
use crate::sandbox::{self, host::Host, policy::SeccompSource};
use crate::schema::MethodSchema;
use crate::spawn::{self, Exit};
use crate::trust;
use checks::{authorize, check_python_args, no_schema, parse, validate, verify_trust};
use entry::Started;
use serde_json::{json, Map, Value};
pub use slots::Slots;
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
    /// `upm migrate`: upm's own request for the signatures of a plugin's methods, read
    /// by its runner from the class inside the sandbox (importing a module runs its
    /// code), audited as a call of its own under the method [`INTROSPECT_METHOD`].
    Introspect {
        plugin: String,
        methods: Vec<String>,
    },
    /// `upm mcp`: a request already read (a `tools/call`, its tool name mapped back to
    /// plugin and method), checked like any other from here on.
    Parsed(request::Request),
}

/// What a caller adds to a call besides its request (`upm mcp`'s calls; `upm run`'s
/// have the default): what can stop it early, and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// upm's own stop, and the call's own cancellation if it can be cancelled alone.
    pub stop: spawn::stop::Watch,
    /// Recorded in every audit entry of the call under this key (`upm mcp`: the
    /// JSON-RPC id and the tool name).
    pub origin: Option<(&'static str, Value)>,
    /// A batch's bound on the plugins running at a time: the call waits for a slot
    /// between its `started` entry and the go.
    pub slots: Option<Arc<Slots>>,
}

/// Where [`Session::call_staged`] stopped.
// One per call, moved once or twice: not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Staged {
    /// Answered (refused, or its end already audited).
    Done(Response),
    /// Ran: its `finished` entry is still to be made durable ([`Session::complete`]).
    Finishing(Finishing),
}

/// What a ran call's `finished` entry and response are made of.
pub struct Finishing {
    call: Call,
    in_force: Value,
    ran: Ran,
    workdir: Option<Workdir>,
    /// The sandbox's init, reaped once the `finished` entry is durable.
    ending: Option<spawn::Ending>,
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
    /// What the log adopted when this call's `started` entry was appended.
    audit_adopted: Option<Value>,
    /// The method's `output_schema`, which a result must match.
    output_schema: Option<Arc<MethodSchema>>,
    warnings: Vec<String>,
    ctx: Context,
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
            audit_adopted: None,
            output_schema: None,
            warnings: Vec::new(),
            ctx: Context::default(),
        }
    }
}

/// What calls share: loaded once per process (once per batch in `--jsonl` mode).
pub struct Session {
    /// As the caller named it (UPM's "Failed to load config from PATH" repeats it so).
    config_path: PathBuf,
    config: Result<Config, ConfigError>,
    host: Host,
    /// Compiled schemas (args and results alike), by file.
    schemas: Mutex<HashMap<PathBuf, Arc<MethodSchema>>>,
    /// The schemas as the session's preflight read and checked them, each taken by its
    /// first compilation (nothing read twice).
    checked_schemas: Mutex<HashMap<PathBuf, crate::schema::CheckedSchema>>,
    profiles: Mutex<HashMap<SeccompSource, Arc<Profile>>>,
    /// Opened on first use; concurrent calls share its fsyncs.
    audit: GroupCommit,
    /// One call per process: overlap its two fsyncs with other work on extra threads.
    /// (A batch has its calls to overlap instead, and no CPU to spare for threads.)
    overlap: bool,
}

/// The session of a process that makes one call (`upm run`, the argv form): its two
/// fsyncs overlap other work on extra threads.
pub fn one_shot(config_path: &Path) -> Session {
    let mut session = Session::load(config_path);
    session.overlap = true;
    session
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
        if let Ok(c) = &loaded {
            crate::integrity::keep_digests_under(&c.workdir_root);
            crate::sandbox::seccomp::keep_programs_under(&c.workdir_root);
            crate::sandbox::landlock_audit::kept::keep_under(&c.workdir_root);
        }
        let (audit_path, audit_settings) = match &loaded {
            Ok(c) => (c.audit_path.clone(), c.audit.clone()),
            Err(_) => crate::config::fallback_audit(config_path),
        };
        // An invalid config runs nothing: its schemas and profiles are checked as a whole.
        let (config, profiles, checked_schemas) =
            match loaded.map(|c| (crate::preflight::check(&c), c)) {
                Ok((checked, c)) if checked.problems.is_empty() => {
                    (Ok(c), checked.profiles, checked.schemas)
                }
                Ok((checked, c)) => (
                    Err(ConfigError::Invalid {
                        path: c.path,
                        problems: checked.problems,
                    }),
                    HashMap::new(),
                    HashMap::new(),
                ),
                Err(e) => (Err(e), HashMap::new(), HashMap::new()),
            };
        let host = Host::probe();
        // Asked now, so that a one-shot call's answer is in before its plugin ends.
        if crate::sandbox::landlock_audit::can_read(host.euid, host.landlock_abi).is_ok() {
            crate::sandbox::landlock_audit::question();
        }
        if host.privileged {
            // A root upm's calls change the spawning thread's euid (see AsOwner).
            sandbox::namespaces::hold_parent_death_signal();
        }
        Session {
            config_path: config_path.to_path_buf(),
            config,
            host,
            schemas: Mutex::new(HashMap::new()),
            checked_schemas: Mutex::new(checked_schemas),
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
        self.call_in(input, Context::default())
    }

    /// [`call`](Self::call), with what its caller adds (see [`Context`]).
    pub fn call_in<R: Read>(&self, input: Input<R>, ctx: Context) -> Response {
        match self.call_staged(input, ctx) {
            Staged::Done(resp) => resp,
            Staged::Finishing(f) => self.complete(f),
        }
    }

    /// A ran call's last step: its `finished` entry made durable, then its response.
    /// A batch's worker hands it to a thread of its own and reads its next line
    /// meanwhile (the fsync off its path, and shared with the next `started`).
    pub fn complete(&self, f: Finishing) -> Response {
        let Finishing {
            call,
            in_force,
            ran,
            workdir,
            ending,
        } = f;
        let resp = self.finish(&call, in_force, ran, workdir);
        // Its namespaces were torn down meanwhile; no call answers with a process left.
        drop(ending);
        resp
    }

    /// [`call_in`](Self::call_in) up to the `finished` entry: a call that ran (or
    /// whose sandbox was started) returns what its `finished` entry needs.
    pub fn call_staged<R: Read>(&self, input: Input<R>, ctx: Context) -> Staged {
        let mut call = Call::new();
        call.ctx = ctx;
        let cap = self.max_request_bytes();

        // the audit log first: nothing runs, or is refused, unaudited
        if let Err(f) = self.open_log() {
            // Whatever the call named is in the answer all the same.
            let _ = parse(input, cap, &mut call);
            return Staged::Done(respond(&call, f.into()));
        }

        // parse
        let req = match parse(input, cap, &mut call) {
            Ok(r) => r,
            Err(f) => return Staged::Done(self.finish_refused(&call, f)),
        };
        let config = match self.loaded_config() {
            Ok(c) => c,
            Err(f) => return Staged::Done(self.finish_refused(&call, f)),
        };
        phase(&call, "request parsed");

        // authorize (the whitelist, the signed config), validate (the schema)
        let authorized = authorize(config, &req).and_then(|plugin| {
            let schema = self.schema(plugin, &req.method)?;
            call.output_schema = self.output_schema(plugin, &req.method)?;
            phase(&call, "schema loaded");
            if schema.is_none() && req.introspect.is_none() {
                call.no_schema = Some(no_schema(config, plugin, &req.method));
            }
            let seccomp = self.checked_files(config, plugin, schema.as_deref(), &mut call)?;
            validate(schema.as_deref(), &req.args)?;
            check_python_args(plugin, &req.args)?;
            // the args' grants (x-upm-grant), opened once, under the plugin's roots
            let grants = grants::open(plugin, schema.as_deref(), &req.args)?;
            Ok((plugin, schema, seccomp, grants))
        });
        let (plugin, schema, seccomp, grants) = match authorized {
            Ok(ok) => ok,
            Err(f) => return Staged::Done(self.finish_refused(&call, f)),
        };
        phase(&call, "authorized and validated");
        if let Some(why) = call.ctx.stop.stopped() {
            return Staged::Done(self.finish_refused(&call, cancelled_before_start(why)));
        }

        // prepare, on the plugin's backend: everything checked and built, nothing started
        let prepared = backend::prepare(
            &self.host, config, plugin, &seccomp, &req, grants, &mut call,
        );
        let mut prepared = match prepared {
            Ok(p) => p,
            Err(f) => return Staged::Done(self.finish_refused(&call, f)),
        };
        phase(&call, "sandbox prepared");

        // `started`, durable before the plugin can exist (the native sandbox's init is
        // cloned meanwhile, the slow part of a spawn: it waits for the go)
        let started = Started {
            config,
            schema: schema.as_deref(),
            req: &req,
            files: prepared.files(plugin),
            sandbox: prepared.requested(plugin),
        };
        let requested = started.sandbox.clone();
        let (running, in_force) =
            match self.start_audited(&mut call, started, &mut prepared, plugin) {
                // Dropping what started (the init, if any) kills it: nothing ran.
                Err(f) => return Staged::Done(respond(&call, f.into())),
                Ok(Err(f)) => {
                    return Staged::Done(self.finish_with(&call, Some(requested), f.into()))
                }
                Ok(Ok(running)) => running,
            };
        phase(&call, "sandbox started, started entry durable");

        // a slot, in a batch (`--parallel`): stopped while it waits, the call ends
        // without a go (dropping what started kills the init: nothing ran)
        let slots = call.ctx.slots.clone();
        let slot = match slots.as_deref().map(|s| s.take(&call.ctx.stop)) {
            Some(Err(why)) => {
                drop(running);
                let f = cancelled_before_start(why);
                return Staged::Done(self.finish_with(&call, Some(requested), f.into()));
            }
            Some(Ok(slot)) => Some(slot),
            None => None,
        };

        // run (with an egress allowlist, beside the call's proxy, whose every connection
        // is audited as it ends)
        let audit_connection = |record: &crate::egress::Record| {
            self.append(entry::connection(&call, record))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let mut ended = running.run(&call.ctx.stop, &audit_connection);
        // Reaped after the `finished` entry only in a process's one call; here otherwise
        // (`filter` drops it): a batch's or a server's slot and `--parallel` bound the
        // calls whose processes exist at a time.
        let ending = ended
            .as_mut()
            .ok()
            .and_then(backend::Ended::take_ending)
            .filter(|_| self.overlap);
        drop(slot);
        if self.overlap {
            // The process's only call: its observer thread is not kept for another.
            spawn::observe::end_kept();
        }
        phase(&call, "plugin finished");

        // capture
        let ran = prepared.capture(ended, plugin);

        // `finished`, respond
        let workdir = prepared.take_workdir();
        Staged::Finishing(Finishing {
            call,
            in_force,
            ran,
            workdir,
            ending,
        })
    }

    /// A call refused before it became a request (`upm mcp`: a tool that names no
    /// whitelisted method, arguments that do not fit a tool's wrapper): audited like
    /// every other refusal, under what it named.
    pub fn refuse_in(
        &self,
        failure: Failure,
        ctx: Context,
        plugin: Option<&str>,
        method: Option<&str>,
    ) -> Response {
        let mut call = Call::new();
        call.ctx = ctx;
        call.plugin = plugin.map(request::noted);
        call.method = method.map(request::noted);
        if let Err(f) = self.open_log() {
            return respond(&call, f.into());
        }
        self.finish_refused(&call, failure)
    }

    /// `upm migrate`: the signatures of `methods`, read by upm's runner from the
    /// plugin's class inside the sandbox, as an audited call of its own (method
    /// `(upm migrate)`).
    pub fn introspect(&self, plugin: &str, methods: &[String]) -> Response {
        self.call(Input::<std::io::Empty>::Introspect {
            plugin: plugin.to_owned(),
            methods: methods.to_vec(),
        })
    }

    /// Makes the `started` entry durable while what can start before the go does (on
    /// another thread when that is worth it): `Err` when the entry is not durable
    /// (nothing runs unaudited), `Ok(Err)` when the start failed.
    #[allow(clippy::type_complexity)]
    fn start_audited<'p>(
        &self,
        call: &mut Call,
        started: Started<'_>,
        prepared: &'p mut backend::Prepared,
        plugin: &Plugin,
    ) -> Result<Result<(backend::Running<'p>, Value), Failure>, Failure> {
        // A one-shot call has no slot to wait for between its start and its go.
        let (audited, running) =
            if self.overlap && call.ctx.slots.is_none() && prepared.starts_early() {
                // Whichever of the two ends last gives the go: the entry's thread, usually
                // (the disk is slower than the clone), as soon as the entry is durable.
                let gate = go::Gate::default();
                let (audited, mut running) = std::thread::scope(|s| {
                    let audit = s.spawn(|| {
                        let audited = self.audit_started(call, started);
                        if audited.is_ok() {
                            gate.audited();
                        }
                        audited
                    });
                    let running = prepared.start(plugin);
                    if let Some(pipe) = running.as_ref().ok().and_then(|(r, _)| r.go_pipe()) {
                        gate.started(pipe);
                    }
                    let audited = audit.join().unwrap_or_else(|_| {
                        Err(Failure::new(
                            Code::AuditError,
                            "the audit writer failed; the plugin was not run".to_owned(),
                        ))
                    });
                    (audited, running)
                });
                if let (Some(went), Ok((r, _))) = (gate.went(), running.as_mut()) {
                    r.gone_ahead(went);
                }
                (audited, running)
            } else {
                let running = prepared.start(plugin);
                (self.audit_started(call, started), running)
            };
        audited.map(|()| running)
    }

    /// Makes the `started` entry durable, or answers `audit_error`: nothing runs unaudited.
    fn audit_started(&self, call: &mut Call, s: Started<'_>) -> Result<(), Failure> {
        let e = entry::started(call, &s);
        call.sandbox_started = Some(s.sandbox);
        self.append(e)
            .map(|_| call.audit_adopted = self.audit.take_adopted())
            .map_err(|e| Failure::new(e.code(), format!("{e}; the plugin was not run")))
    }

    /// The `finished` entry; the call's private directory is removed meanwhile (on
    /// another thread when that is worth it), and a directory left behind is told.
    fn finish(&self, call: &Call, in_force: Value, ran: Ran, workdir: Option<Workdir>) -> Response {
        let Some(workdir) = workdir else {
            return self.finish_with(call, Some(in_force), ran);
        };
        let dir = workdir.root.clone();
        let (resp, removed) = if self.overlap {
            std::thread::scope(|s| {
                let removal = s.spawn(move || workdir.remove());
                let resp = self.finish_with(call, Some(in_force), ran);
                let removed = removal
                    .join()
                    .unwrap_or(Err(RemoveError::Sys(nix::Error::EIO)));
                (resp, removed)
            })
        } else {
            let removed = workdir.remove();
            (self.finish_with(call, Some(in_force), ran), removed)
        };
        match removed {
            Ok(()) => resp,
            Err(e) => self.cleanup_failed(call, resp, &dir, &e),
        }
    }

    /// The config, or UPM's sentence for why it did not load (exit 5).
    fn loaded_config(&self) -> Result<&Config, Failure> {
        self.config.as_ref().map_err(|e| {
            Failure::new(e.code(), compat::config_load(&self.config_path, e))
                .with_details(json!({ "problems": e.problems() }))
        })
    }

    /// The audit log, opened (once per session), or UPM's sentence (exit 11).
    pub fn open_log(&self) -> Result<(), Failure> {
        self.audit.ensure_open().map_err(|e| {
            // The log of a config that did not load is a guess beside where it was looked
            // for: a mistyped --config shows here first, so say so.
            let config = match &self.config {
                Err(c) => format!("; the config did not load either: {c}"),
                Ok(_) => String::new(),
            };
            Failure::new(
                e.code(),
                format!(
                    "{}{config}; the plugin was not run (nothing runs unaudited)",
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
        let output_schema = call.output_schema.clone();
        let files = trust::CallFiles {
            plugin,
            schema,
            output_schema: output_schema.as_deref(),
            seccomp: &seccomp,
        };
        verify_trust(config, &files, call)?;
        Ok(seccomp)
    }

    /// The method's schema, compiled once per session.
    fn schema(&self, plugin: &Plugin, method: &str) -> Result<Option<Arc<MethodSchema>>, Failure> {
        let path = plugin.methods.get(method).and_then(|m| m.schema.as_ref());
        path.map(|p| self.compiled(p)).transpose()
    }

    /// The schema the method's result must match, if it has one, compiled once per session.
    fn output_schema(
        &self,
        plugin: &Plugin,
        method: &str,
    ) -> Result<Option<Arc<MethodSchema>>, Failure> {
        let path = plugin
            .methods
            .get(method)
            .and_then(|m| m.output_schema.as_ref());
        path.map(|p| self.compiled(p)).transpose()
    }

    fn compiled(&self, path: &Path) -> Result<Arc<MethodSchema>, Failure> {
        if let Some(s) = lock(&self.schemas).get(path) {
            return Ok(s.clone());
        }
        let checked = lock(&self.checked_schemas).remove(path);
        let schema = Arc::new(
            match checked {
                Some(c) => MethodSchema::compile_checked(c),
                None => MethodSchema::load(path),
            }
            .map_err(|e| Failure::new(e.code(), format!("the config is invalid: {e}")))?,
        );
        lock(&self.schemas).insert(path.to_path_buf(), schema.clone());
        Ok(schema)
    }

    /// A seccomp profile, parsed once per session (its compiled BPF is cached inside it).
    fn profile(&self, source: &SeccompSource) -> Result<Arc<Profile>, Failure> {
        if let Some(p) = lock(&self.profiles).get(source) {
            return Ok(p.clone());
        }
        let profile = Arc::new(
            source
                .load()
                .map_err(|e| Failure::new(e.code(), format!("the config is invalid: {e}")))?,
        );
        lock(&self.profiles).insert(source.clone(), profile.clone());
        Ok(profile)
    }

    fn append(&self, entry: Map<String, Value>) -> Result<String, Arc<crate::audit::AuditError>> {
        self.audit.append(entry)
    }

    /// The plugin's directory (some of it) stayed on disk: whatever the plugin left
    /// there outlives the call. Audited in an entry of its own, after `finished`
    /// (whose fsync overlaps the removal), and told to the caller.
    fn cleanup_failed(
        &self,
        call: &Call,
        mut resp: Response,
        dir: &Path,
        err: &RemoveError,
    ) -> Response {
        let warning = format!(
            "the call's private directory could not be removed ({err}): it is left at {}",
            dir.display()
        );
        tracing::error!(request_id = %call.request_id, "{warning}");
        let e = entry::cleanup_failed(call, dir, err);
        resp.data.warnings.push(match self.append(e) {
            Ok(_) => warning,
            Err(a) => format!("{warning}; and the audit log could not record it: {a}"),
        });
        resp
    }

    /// A refusal before any plugin was prepared: one `refused` entry.
    fn finish_refused(&self, call: &Call, f: Failure) -> Response {
        let mut resp = respond(call, f.into());
        let e = entry::refused(call, &resp, self.config.as_ref().ok());
        match self.append(e) {
            Ok(_) => {
                resp.data.audit_adopted = self.audit.take_adopted();
                resp
            }
            Err(err) => audit_failed(call, resp, &err.to_string()),
        }
    }

    /// After the sandbox was prepared (and maybe a plugin ran): one `finished` entry.
    fn finish_with(&self, call: &Call, sandbox: Option<Value>, ran: Ran) -> Response {
        let mut ran = checks::check_result(call.output_schema.as_deref(), ran);
        let did_run = ran.ran;
        let stdout_bytes = ran.stdout_bytes;
        // issue 23: a failure after denials names the one that made it fail, and what
        // would allow it; the result and the entry list them.
        let denials = ran.denials.take();
        if let (Some(d), Some(f)) = (&denials, ran.failure.as_mut()) {
            let stderr = ran.stderr.as_ref().map_or("", |c| c.text.as_str());
            if let Some(why) = d.explain(&[&f.message, stderr]) {
                f.message = format!("{}; {why}", f.message);
            }
        }
        let mut resp = respond(call, ran);
        if let Some(d) = &denials {
            resp.data.denials = Some(d.list_json());
            resp.data.denials_summary = Some(d.summary_json());
        }
        let e = entry::finished(call, &resp, did_run, stdout_bytes, &sandbox);
        resp.data.sandbox = sandbox;
        match self.append(e) {
            Ok(_) => {
                if resp.data.audit_adopted.is_none() {
                    resp.data.audit_adopted = self.audit.take_adopted();
                }
                resp
            }
            Err(err) if did_run => withheld(call, &err.to_string()),
            Err(err) => audit_failed(call, resp, &err.to_string()),
        }
    }
}

/// The method an introspection by `upm migrate` is audited under (no method can be
/// named so: parentheses are not allowed in a method's name).
pub const INTROSPECT_METHOD: &str = "(upm migrate)";

/// A poisoned lock only means another call panicked; the data is still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn cancelled_before_start(why: spawn::stop::Why) -> Failure {
    Failure::new(Code::Cancelled, why.not_run())
}

/// Where the time goes, for `UPM_DIAG_LEVEL=debug`.
fn phase(call: &Call, what: &str) {
    tracing::debug!(
        request_id = %call.request_id,
        elapsed_us = call.started.elapsed().as_micros() as u64,
        "{what}"
    );
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
    r.data.audit_adopted = call.audit_adopted.clone();
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
    r.data.egress = ran.egress;
    match ran.failure {
        Some(f) => r.fail(&f),
        None => r,
    }
}
