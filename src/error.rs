//! Result codes and exit codes: the stable `code` words, the one exit code of each,
//! and the [`Failure`] a refused or failed call becomes.
//!
//! Every module has its own `thiserror` enum; which code each of them becomes is
//! decided in `codes`, one exhaustive match per enum. This file sits at the bottom:
//! it imports nothing of the crate. Callers and auditors key on these words and
//! numbers, so they never change meaning.

use serde_json::Value;

/// The stable `code` word of a result. Each code has exactly one exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Usage,
    BadRequest,
    RequestTooLarge,
    NotWhitelisted,
    ConfigError,
    UntrustedConfig,
    PluginStartFailed,
    IntegrityMismatch,
    UnsafePluginFile,
    MethodNotAllowed,
    MethodNotFound,
    PluginFailed,
    InvalidArgs,
    AuditError,
    Timeout,
    LimitExceeded,
    SandboxUnavailable,
    /// upm was asked to stop (SIGTERM, SIGINT, SIGHUP) while the call ran or waited.
    Cancelled,
    Internal,
}

impl Code {
    pub const ALL: [Code; 19] = [
        Code::Usage,
        Code::BadRequest,
        Code::RequestTooLarge,
        Code::NotWhitelisted,
        Code::ConfigError,
        Code::UntrustedConfig,
        Code::PluginStartFailed,
        Code::IntegrityMismatch,
        Code::UnsafePluginFile,
        Code::MethodNotAllowed,
        Code::MethodNotFound,
        Code::PluginFailed,
        Code::InvalidArgs,
        Code::AuditError,
        Code::Timeout,
        Code::LimitExceeded,
        Code::SandboxUnavailable,
        Code::Cancelled,
        Code::Internal,
    ];

    /// The code whose word is `word` (as results and the audit log write it).
    pub fn from_word(word: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == word)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Usage => "usage",
            Code::BadRequest => "bad_request",
            Code::RequestTooLarge => "request_too_large",
            Code::NotWhitelisted => "not_whitelisted",
            Code::ConfigError => "config_error",
            Code::UntrustedConfig => "untrusted_config",
            Code::PluginStartFailed => "plugin_start_failed",
            Code::IntegrityMismatch => "integrity_mismatch",
            Code::UnsafePluginFile => "unsafe_plugin_file",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::MethodNotFound => "method_not_found",
            Code::PluginFailed => "plugin_failed",
            Code::InvalidArgs => "invalid_args",
            Code::AuditError => "audit_error",
            Code::Timeout => "timeout",
            Code::LimitExceeded => "limit_exceeded",
            Code::SandboxUnavailable => "sandbox_unavailable",
            Code::Cancelled => "cancelled",
            Code::Internal => "internal_error",
        }
    }

    /// UPM-compatible exit codes, extended (see README "Exit codes").
    pub fn exit_code(self) -> i32 {
        match self {
            Code::Usage => 2,
            Code::BadRequest | Code::RequestTooLarge => 3,
            Code::NotWhitelisted => 4,
            Code::ConfigError | Code::UntrustedConfig => 5,
            Code::PluginStartFailed | Code::IntegrityMismatch | Code::UnsafePluginFile => 6,
            Code::MethodNotAllowed => 7,
            Code::MethodNotFound => 8,
            Code::PluginFailed => 9,
            Code::InvalidArgs => 10,
            Code::AuditError => 11,
            Code::Timeout => 12,
            Code::LimitExceeded => 13,
            Code::SandboxUnavailable => 14,
            Code::Cancelled => 15,
            Code::Internal => 99,
        }
    }
}

/// `s` cut after `max_chars` characters, marked with '…': for text a caller controls
/// (names, paths, parser messages) that results and audit entries repeat, so that
/// none of them grows with what the caller sent.
pub fn clip(mut s: String, max_chars: usize) -> String {
    if let Some((at, _)) = s.char_indices().nth(max_chars) {
        s.truncate(at);
        s.push('…');
    }
    s
}

/// A refused or failed call, ready to become an error result.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: Code,
    /// A sentence a person understands.
    pub message: String,
    /// Machine-readable specifics (schema violations, config problems, ...).
    pub details: Option<Value>,
    /// A Python plugin's traceback, where UPM put it: `data.traceback`.
    pub traceback: Option<String>,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            details: None,
            traceback: None,
        }
    }

    /// `details` is an object or absent: anything else (a null, say) is left out.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details.is_object().then_some(details);
        self
    }

    pub fn with_traceback(mut self, traceback: Option<String>) -> Self {
        self.traceback = traceback;
        self
    }
}
