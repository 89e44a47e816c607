//! The layout of a call's audit entries: `started`, then `finished`; or one `refused`;
//! and `cleanup_failed` when the call's private directory outlives it. What the fields
//! mean is in the audit docs; the line format around them is `audit`'s.

use super::Call;
use crate::config::Config;
use crate::files::RemoveError;
use crate::request::Request;
use crate::response::{Captured, Response};
use crate::schema::MethodSchema;
use serde_json::{json, Map, Value};
use std::path::Path;

/// What the `started` entry records.
pub(super) struct Started<'a> {
    pub config: &'a Config,
    pub schema: Option<&'a MethodSchema>,
    pub req: &'a Request,
    /// What will be exec'd, and its digests (or the image, for a container).
    pub files: Value,
    /// The sandbox requested.
    pub sandbox: Value,
}

/// The most of a call's (redacted) args a `started` entry records.
const MAX_LOGGED_ARGS_BYTES: usize = 4 << 20;

/// Who called, with what (args or their digest), under which config, to run what in
/// which sandbox: written, and durable, before the plugin can exist.
pub(super) fn started(call: &Call, s: &Started<'_>) -> Map<String, Value> {
    let mut e = base("started", call);
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

/// A refusal before any plugin was prepared.
pub(super) fn refused(call: &Call, resp: &Response, config: Option<&Config>) -> Map<String, Value> {
    let mut e = base("refused", call);
    outcome_fields(&mut e, resp);
    if let Some(c) = config {
        e.insert("config_sha256".into(), json!(c.digest));
    }
    e
}

/// How the call ended, after its sandbox was prepared (and maybe a plugin ran):
/// `sandbox` is what was in force, `stdout_bytes` what the plugin printed on stdout
/// even where that became the result.
pub(super) fn finished(
    call: &Call,
    resp: &Response,
    ran: bool,
    stdout_bytes: Option<u64>,
    sandbox: &Option<Value>,
) -> Map<String, Value> {
    let mut e = base("finished", call);
    outcome_fields(&mut e, resp);
    e.insert("ran".into(), json!(ran));
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
    let in_force = match (sandbox, &call.sandbox_started) {
        (Some(s), Some(requested)) if s == requested => json!({ "same_as_started": true }),
        _ => json!(sandbox),
    };
    e.insert("sandbox".into(), in_force);
    if let Some(egress) = &resp.data.egress {
        e.insert("egress".into(), egress.clone());
    }
    e
}

/// One connection to the call's egress proxy, as it ended (issue 22): the record's
/// fields beside what identifies the call.
pub(super) fn connection(call: &Call, record: &crate::egress::Record) -> Map<String, Value> {
    let mut e = base("connection", call);
    for repeated in ["trust", "no_schema", "warnings"] {
        e.remove(repeated);
    }
    if let Value::Object(fields) = record.to_json() {
        e.extend(fields);
    }
    e
}

/// The call's private directory (some of it) stayed on disk.
pub(super) fn cleanup_failed(call: &Call, dir: &Path, err: &RemoveError) -> Map<String, Value> {
    let mut e = base("cleanup_failed", call);
    e.insert("path".into(), json!(dir.display().to_string()));
    e.insert("error".into(), json!(err.to_string()));
    e
}

/// What every entry of a call carries.
fn base(event: &str, call: &Call) -> Map<String, Value> {
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
    if let Some((key, origin)) = &call.ctx.origin {
        e.insert((*key).into(), origin.clone());
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
