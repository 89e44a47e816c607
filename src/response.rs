//! The one JSON document upm prints on stdout for every call.
//!
//! A superset of UPM's `{"success", "status", "request_id", "data"}`; `data`
//! always carries who answered and when, and on error a stable `code`.

use crate::error::Failure;
use serde::Serialize;
use serde_json::Value;
use std::time::Instant;

/// What a stream of the plugin printed, capped.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Captured {
    pub text: String,
    pub bytes: u64,
    pub truncated: bool,
    /// The bytes were not UTF-8: `text` shows U+FFFD for each invalid sequence, from
    /// this byte offset on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_utf8_at: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Response {
    pub success: bool,
    pub status: &'static str,
    pub request_id: String,
    /// In a batch: the input line this answers (1-based), so that results written in
    /// completion order, and those of lines too malformed to carry a request_id, can
    /// be matched to their requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub data: Data,
    /// The process exit code this response stands for.
    #[serde(skip)]
    pub exit_code: i32,
}

#[derive(Debug, Serialize, Default)]
pub struct Data {
    pub request_id: String,
    /// upm's own id of this call, unique even where request_ids repeat; its audit
    /// entries carry it too.
    pub call_id: String,
    pub timestamp: String,
    pub hostname: String,
    pub pid: u32,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<Captured>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<Captured>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Value>,
    /// With an egress allowlist: the call's connections, summed up (issue 22).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<Value>,
    /// What the sandbox refused (issue 23, `crate::denials`): every result of a call
    /// whose sandbox was started has it, empty when nothing was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denials: Option<Value>,
    /// Totals, and which layers' refusals were observed or not (and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denials_summary: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// A Python plugin's traceback (UPM's field), also in `details.traceback`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// Set when no schema checked the args (a method only in UPM's `allowed_methods`,
    /// or `"require_schemas": false`): says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_schema: Option<String>,
    /// Set on the call whose audit entry adopted the log UPM wrote (the lines already
    /// at `UPM_LOG_FILE`): what the `adopted` entry records. Once per log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_adopted: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// RFC 3339, UTC, milliseconds, `Z`.
pub fn timestamp_now() -> String {
    // chrono's own RFC 3339 writer: a `format("%Y-…")` parses its pattern at each call
    // and brings 17 KB of strftime code into every one-shot call.
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

impl Response {
    /// A response with the envelope filled in; the caller adds the rest.
    pub fn new(request_id: &str, started: Instant) -> Response {
        Response {
            success: true,
            status: "success",
            request_id: request_id.to_owned(),
            line: None,
            data: Data {
                request_id: request_id.to_owned(),
                timestamp: timestamp_now(),
                hostname: hostname(),
                pid: std::process::id(),
                duration_ms: round_ms(started.elapsed().as_secs_f64() * 1000.0),
                ..Data::default()
            },
            exit_code: 0,
        }
    }

    pub fn fail(mut self, failure: &Failure) -> Response {
        self.success = false;
        self.status = "error";
        self.data.error = Some(failure.message.clone());
        self.data.code = Some(failure.code.as_str());
        self.data.details = failure.details.clone();
        self.data.traceback = failure.traceback.clone();
        self.exit_code = failure.code.exit_code();
        self
    }

    /// Writes the response as one line, streaming: the captured output (up to the cap)
    /// is not copied into another string first.
    pub fn write_line(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        use std::io::Write;
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, w);
        serde_json::to_writer(&mut w, self)?;
        w.write_all(b"\n")?;
        w.flush()
    }

    pub fn to_json(&self) -> String {
        // Serializing these plain types cannot fail; fall back to a fixed document anyway.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"success":false,"status":"error","data":{"code":"internal_error"}}"#.to_owned()
        })
    }
}

pub fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    /// The shape UPM's entrypoint wrote and callers parse: `2026-12-07T13:20:52.706Z`.
    #[test]
    fn timestamps_are_rfc3339_utc_milliseconds_with_z() {
        let ts = super::timestamp_now();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z'), "{ts}");
        assert_eq!(&ts[10..11], "T", "{ts}");
        assert_eq!(&ts[19..20], ".", "{ts}");
        assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok(), "{ts}");
    }
}
