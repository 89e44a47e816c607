//! How a plugin's end becomes the call's outcome: result, failure code, limit.

use crate::compat;
use crate::config::{Plugin, PluginKind};
use crate::error::{Code, Failure};
use crate::integrity::Executable;
use crate::response::{round_ms, Captured};
use crate::sandbox::Step;
use crate::spawn::{self, Exit, Outcome, Stop};
use serde_json::{json, Value};

/// "exec of FILE failed: ERR: why", the why found from the file and the plugin's uid
/// (its mode, a directory above it, a noexec mount, a script's missing interpreter).
fn why_not_started(exe: Option<&Executable>, plugin: &Plugin, err: &std::io::Error) -> String {
    let Some(exe) = exe else {
        return format!("exec failed: {err}");
    };
    let shown = if exe.source == exe.path {
        exe.path.display().to_string()
    } else {
        format!(
            "{} (the verified copy of {})",
            exe.path.display(),
            exe.source.display()
        )
    };
    let who = crate::access::Who::plugin(&plugin.policy.user);
    let want = crate::access::EXEC | if exe.script { crate::access::READ } else { 0 };
    // A memfd's name is no path: what it copied is.
    let checked = if exe.sealed { &exe.source } else { &exe.path };
    let mut why = crate::access::denied(checked, &who, want);
    if why.is_none() && exe.path != exe.source {
        why = crate::access::denied(&exe.source, &who, crate::access::EXEC);
    }
    if why.is_none() {
        if let Some(interp) = &exe.interpreter {
            why = crate::access::denied(interp, &who, crate::access::EXEC)
                .map(|w| format!("its #! interpreter cannot be run: {w}"));
        }
    }
    match why {
        Some(why) => format!("exec of {shown} failed: {err}: {why}"),
        None => format!("exec of {shown} failed: {err}"),
    }
}

/// Turns how the plugin ended into the call's outcome. Takes the outcome so that the
/// captured bytes move into the result instead of being copied (they can be the whole cap).
///
/// `exe` is what was to be exec'd (natively), so that a failed start names the file
/// and says why the plugin's uid could not run it.
pub fn interpret(mut o: Outcome, plugin: &Plugin, exe: Option<&Executable>) -> Ran {
    let limits = &plugin.policy.limits;
    let mut ran = Ran::from_outcome(&mut o);
    let o = &o;
    if let Some((step, errno)) = o.start_failure {
        let err = std::io::Error::from_raw_os_error(errno);
        // The init reopens the executable as the plugin's uid sees the host: a
        // permission error there is the file's, not the namespaces layer's.
        let file_access = step == Step::ReopenExec && matches!(errno, libc::EACCES | libc::EPERM);
        ran.failure = Some(match (step, step.layer()) {
            (Step::Exec, _) => Failure::new(
                Code::PluginStartFailed,
                format!(
                    "the plugin could not be started: {}",
                    why_not_started(exe, plugin, &err)
                ),
            ),
            (Step::ReopenExec, _) if file_access => Failure::new(
                Code::PluginStartFailed,
                format!(
                    "the plugin could not be started: {}; the plugin was not run",
                    why_not_started(exe, plugin, &err)
                ),
            ),
            // A grant's path leads elsewhere than when upm checked it (issue 24).
            (Step::Grants, _)
                if matches!(
                    errno,
                    libc::ESTALE | libc::ELOOP | libc::ENOENT | libc::ENOTDIR | libc::EXDEV
                ) =>
            {
                Failure::new(
                    Code::InvalidArgs,
                    format!(
                        "a granted path was renamed, removed or replaced after upm checked it \
                         ({err}): nothing was granted; the plugin was not run"
                    ),
                )
            }
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
    if let Some(Stop::Cancelled(why)) = o.stopped_by {
        ran.failure = Some(Failure::new(Code::Cancelled, why.killed()));
        return ran;
    }
    let cpu_ms = o.usage.map_or(0.0, |u| u.user_ms + u.sys_ms);
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
        PluginKind::PythonClass { .. } => interpret_python(o, &mut ran, plugin),
    }
    disk_full(o, &mut ran, limits.disk_bytes);
    ran
}

/// A plugin whose private home filled up got ENOSPC: that alone does not fail the call
/// (the plugin may have coped), but `usage.disk` says so, and a call that failed names
/// the bound as its `limit` and in its error.
///
/// `usage.disk` is the home's state when the plugin ended (no kernel counter keeps a
/// tmpfs's peak): a plugin that filled it, deleted its file and failed (pip does) leaves
/// it empty. Such a failure's stderr says ENOSPC's text: the error then names the bound
/// as the likely cause, without claiming it as the `limit`, since a write_path's disk
/// says the same.
fn disk_full(o: &Outcome, ran: &mut Ran, disk_bytes: u64) {
    let disk = o.usage.map(|u| u.disk);
    if !disk.flatten().is_some_and(|d| d.full) {
        // Natively without a mount namespace the home is not bounded (no `usage.disk`).
        let bounded = !matches!(disk, Some(None));
        let stderr = ran
            .stderr
            .as_ref()
            .map_or("", |c| tail(&c.text, ENOSPC_TAIL));
        if let Some(f) = ran.failure.as_mut() {
            if bounded && stderr.contains(ENOSPC_TEXT) {
                f.message = format!(
                    "{}; the plugin met \"{ENOSPC_TEXT}\": its private home holds at most \
                     disk_bytes ({disk_bytes}) and may have been full during the call \
                     (usage.disk is its state at the end); a larger disk_bytes would allow more",
                    f.message
                );
            }
        }
        return;
    }
    if let Some(f) = ran.failure.as_mut() {
        if ran.limit.is_none() {
            ran.limit = Some("disk_bytes");
        }
        f.message = format!(
            "{}; its private home was full (disk_bytes: {disk_bytes}), so its writes failed with ENOSPC",
            f.message
        );
    }
}

/// strerror(ENOSPC), as plugins print it.
const ENOSPC_TEXT: &str = "No space left on device";

/// How much of the end of stderr is searched for [`ENOSPC_TEXT`]: a plugin says why it
/// failed last.
const ENOSPC_TAIL: usize = 16 * 1024;

/// The last `max` bytes of `s` (at a character boundary).
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
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
    // Not UTF-8, not JSON: the text shown is a lossy rendering, never the plugin's value.
    if let Some(at) = ran.stdout.as_ref().and_then(|c| c.invalid_utf8_at) {
        ran.failure = Some(Failure::new(
            Code::PluginFailed,
            format!(
                "the plugin printed bytes that are not UTF-8 (at byte {at}), so not a JSON value"
            ),
        ));
        return;
    }
    let text = ran.stdout.as_ref().map_or("", |c| c.text.as_str());
    if text.trim().is_empty() {
        ran.result = Some(Value::Null);
        return;
    }
    match serde_json::from_str::<Value>(text.trim()) {
        // (Checked once parsed: the scan reads JSON text, and plain text has dates.)
        Ok(v) => match wide_result(text) {
            Some(f) => ran.failure = Some(f),
            None => {
                ran.result = Some(v);
                // The result is the stdout; do not echo it twice.
                ran.stdout = None;
            }
        },
        Err(e) => {
            ran.failure = Some(Failure::new(
                Code::PluginFailed,
                format!("the plugin printed something that is not one JSON value: {e}"),
            ))
        }
    }
}

/// Why the plugin's uid cannot read its `python_path`, when it cannot and Python's
/// "No module named ..." names the plugin's own module or a package above it (not a
/// dependency the module imports): Python says only that, as if it were missing.
fn unreachable_python_path(plugin: &Plugin, module: &str, message: &str) -> String {
    let PluginKind::PythonClass { python_path, .. } = &plugin.kind else {
        return String::new();
    };
    let mut prefix = String::new();
    let own = module.split('.').any(|part| {
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(part);
        message.contains(&format!("No module named '{prefix}'"))
    });
    if !own {
        return String::new();
    }
    let who = crate::access::Who::plugin(&plugin.policy.user);
    python_path
        .iter()
        .find_map(|dir| crate::access::denied(dir, &who, crate::access::READ | crate::access::EXEC))
        .map(|why| format!(" (python_path: {why})"))
        .unwrap_or_default()
}

/// A result holding an integer wider than 64 bits: upm's JSON would pass it on as the
/// nearest float (2**64 as 1.8446744073709552e19), a number the plugin never returned.
/// Refused, as a request holding one is, rather than changed without a word.
fn wide_result(text: &str) -> Option<Failure> {
    crate::request::wide_integer(text).map(|literal| {
        let shown: String = literal.chars().take(40).collect();
        let cut = if shown.len() < literal.len() {
            "…"
        } else {
            ""
        };
        Failure::new(
            Code::PluginFailed,
            format!(
                "the plugin's result holds the integer {shown}{cut}, which does not fit in 64 \
                 bits: JSON parsing would pass it on as a rounded float; return it as a string"
            ),
        )
    })
}

/// The runner's envelope (see `python/upm_runner.py`), each failure in UPM's sentence.
fn interpret_python(o: &Outcome, ran: &mut Ran, plugin: &Plugin) {
    let envelope: Option<Value> = serde_json::from_slice(&o.result.data).ok();
    let Some(env) = envelope else {
        ran.failure = Some(exit_failure(o).unwrap_or_else(|| {
            Failure::new(
                Code::PluginFailed,
                "the plugin's process ended with status 0 before its method returned a result \
                 (sys.exit() or os._exit() in the plugin?)",
            )
        }));
        return;
    };
    if env["ok"] == Value::Bool(true) {
        match wide_result(&String::from_utf8_lossy(&o.result.data)) {
            Some(f) => ran.failure = Some(f),
            None => ran.result = Some(env["result"].clone()),
        }
        return;
    }
    let (module, class) = match &plugin.kind {
        PluginKind::PythonClass { module, class, .. } => (module.as_str(), class.as_str()),
        PluginKind::Command { .. } => ("", ""),
    };
    let message = env["message"].as_str().unwrap_or("").to_owned();
    let kind = env["type"].as_str().unwrap_or("an exception");
    // Only what the runner sent: `details` never holds a null.
    let mut details = serde_json::Map::new();
    for key in ["type", "message", "traceback"] {
        if let Some(v) = env.get(key).filter(|v| v.is_string()) {
            details.insert(key.into(), v.clone());
        }
    }
    let traceback = env["traceback"].as_str().map(str::to_owned);
    let (code, text) = match env["kind"].as_str() {
        Some("import_error") => (
            Code::PluginStartFailed,
            format!(
                "{}{}",
                compat::cannot_import(module, &message),
                unreachable_python_path(plugin, module, &message)
            ),
        ),
        Some("class_not_found") => (
            Code::PluginStartFailed,
            compat::class_not_found(class, module),
        ),
        Some("instantiation_failed") => (
            Code::PluginStartFailed,
            format!(
                "{} ({kind} raised by the constructor)",
                compat::instantiation_failed(&plugin.name, &message)
            ),
        ),
        Some("method_not_found") => (
            Code::MethodNotFound,
            compat::not_found(env["method"].as_str().unwrap_or_default(), &plugin.name),
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
            format!(
                "{}; the method returned a value that is not JSON",
                compat::execution_failed(&message)
            ),
        ),
        Some("bad_request") => (
            Code::BadRequest,
            format!("the Python runner could not read the call: {message}"),
        ),
        _ => (
            Code::PluginFailed,
            format!(
                "{}; the plugin raised {kind}",
                compat::execution_failed(&message)
            ),
        ),
    };
    let failure = Failure::new(code, text).with_traceback(traceback);
    ran.failure = Some(if details.is_empty() {
        failure
    } else {
        failure.with_details(Value::Object(details))
    });
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
pub struct Ran {
    pub failure: Option<Failure>,
    pub result: Option<Value>,
    pub stdout: Option<Captured>,
    pub stderr: Option<Captured>,
    pub exit: Option<Exit>,
    pub limit: Option<&'static str>,
    pub usage: Option<Value>,
    /// Bytes the plugin wrote on stdout, kept even when that output became the result.
    pub stdout_bytes: Option<u64>,
    /// A plugin process really ran (the sandbox was applied and exec succeeded).
    pub ran: bool,
    /// issue 23: what the sandbox refused, when a sandbox was started.
    pub denials: Option<crate::denials::Denials>,
    /// The egress proxy's summary, when the plugin had an allowlist (issue 22).
    pub egress: Option<Value>,
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
    fn from_outcome(o: &mut Outcome) -> Ran {
        // Moved, not copied: valid UTF-8 becomes the text as it is.
        let cap = |s: &mut spawn::Stream| {
            let truncated = s.total > s.data.len() as u64;
            let (text, invalid_utf8_at) = match String::from_utf8(std::mem::take(&mut s.data)) {
                Ok(text) => (text, None),
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(at))
                }
            };
            Captured {
                text,
                bytes: s.total,
                truncated,
                invalid_utf8_at,
            }
        };
        Ran {
            stdout: Some(cap(&mut o.stdout)),
            stdout_bytes: Some(o.stdout.total),
            stderr: Some(cap(&mut o.stderr)),
            // An exec that failed is not an exit of the plugin.
            exit: o.exit.filter(|_| o.start_failure.is_none()),
            usage: Some(usage_json(o)),
            ran: o.start_failure.is_none(),
            ..Ran::default()
        }
    }
}

/// Wall time always; the plugin's CPU time and peak memory when its init reaped it (a
/// plugin killed with its tree on timeout or past the output cap may not have been).
fn usage_json(o: &Outcome) -> Value {
    let mut u = json!({ "wall_ms": round_ms(o.wall.as_secs_f64() * 1000.0) });
    if let (Some(plugin), Some(m)) = (o.usage, u.as_object_mut()) {
        m.insert("cpu_user_ms".into(), json!(round_ms(plugin.user_ms)));
        m.insert("cpu_system_ms".into(), json!(round_ms(plugin.sys_ms)));
        m.insert("max_rss_kb".into(), json!(plugin.max_rss_kb));
        if let Some(d) = plugin.disk {
            m.insert(
                "disk".into(),
                json!({ "used_bytes": d.used_bytes, "limit_reached": d.full }),
            );
        }
    }
    u
}
