//! The tamper-evident audit log.
//!
//! Auditors must be able to prove that no entry is missing, altered, inserted
//! or reordered. The log is JSON Lines (one object per line, readable with
//! `jq`), hash-chained, optionally signed, and appended durably by many
//! concurrent upm processes.
//!
//! # Line format
//!
//! Every line is one compact JSON object, written as
//!
//! ```text
//! {"seq":17,"prev":"<64 hex>",<the entry's other fields, sorted by key>,"hash":"<64 hex>"}\n
//! ```
//!
//! - `seq` (first key): 1 for the very first entry, then +1 per line, across
//!   rotated files.
//! - `prev` (second key): the `hash` of the previous entry, or
//!   [`GENESIS`] (64 zeros) for the first entry ever.
//! - `hash` (last key): lowercase hex SHA-256 of the line's *own bytes without
//!   the hash*: the line with the exact 75-byte suffix `,"hash":"<64 hex>"}`
//!   replaced by `}`. Verification hashes bytes, never a re-serialisation, so
//!   there is no canonicalisation ambiguity; the fixed positions of `seq`,
//!   `prev` and `hash` let [`verify`] check a line with a prefix/suffix scan
//!   and one SHA-256, without parsing JSON.
//! - `ts`: RFC 3339 UTC with milliseconds and `Z` (added when absent).
//! - `request_id`: on every line (checkpoint and recovery lines carry the id of
//!   the request whose append wrote them).
//! - `event`: `started` | `finished` | `refused` | `cleanup_failed` | `connection` (one per
//!   connection to a call's egress proxy, see [`crate::egress`]) (from the pipeline), plus the
//!   log's own `checkpoint`, `recovered` and `adopted`. Other fields (`plugin`, `method`,
//!   `code`, `exit_code`, `args_sha256`, ...) are the pipeline's.
//!
//! # Crash recovery
//!
//! A crash can leave a torn last line: bytes after the last complete entry's
//! newline that hold no newline themselves (a crash tears at most the line
//! being written). [`verify`] reports that as [`Outcome::TornTail`], not as
//! tampering. The next append terminates the fragment with `\n` and first
//! writes a `recovered` entry with `torn_bytes` and `torn_sha256` (the length
//! and SHA-256 of the fragment), chained from the last complete entry.
//! [`verify`] accepts non-entry bytes only when they are one such fragment,
//! immediately followed by a recovery entry naming exactly them.
//!
//! Anything else after the last entry (a whole line, or lines before a
//! fragment) was not left by a crash: [`verify`] reports it as broken, and the
//! writer refuses to seal it, so every append fails (exit 11, nothing runs)
//! until someone has looked at the log. That includes a second crash while a
//! fragment was being sealed: it cannot be told from a line added in front of
//! a fragment.
//!
//! # Adoption
//!
//! A file that holds lines but no entry at all (the log UPM wrote at `UPM_LOG_FILE`)
//! is adopted when [`AuditSettings::adoption`] allows it (`UPM_LOG_FILE` named it and
//! it holds only UPM's logging output, or the config's `adopt_foreign`): the first append writes an `adopted` entry as seq 1
//! with `foreign_bytes` and `foreign_sha256`, the length and SHA-256 of every byte
//! before it (a `\n` the writer adds to an unterminated last line included, and said in
//! `newline_added`), and chains on from it. Nothing is rewritten. [`verify`] accepts
//! non-entry bytes before an `adopted` entry only at the start of the oldest file, with
//! seq 1 and exactly the recorded length and digest. A file whose lines could be
//! entries, one with rotated siblings, or one with a line longer than any entry is not
//! adopted; foreign lines after entries stay tampering. With rotation on, the adopted
//! file is rotated at once, so that every later file begins with an entry.
//!
//! # Rotation
//!
//! By size and/or daily. The current file is hard-linked to
//! `<name>.YYYYMMDDTHHMMSSZ` (`.N` appended on a name clash) and atomically
//! replaced by a new file that already holds its first entry, chained to the
//! last entry of the rotated file. [`verify`] walks `<name>.*` rotated files in
//! name order, then the current file, and reports a missing file as a seq gap.
//! Rotating is best effort: when it fails before anything was moved (no inode for
//! the new file, say), the entries go into the current file with a warning, chained
//! exactly as they would have been in the new one, and the next append tries again;
//! a call that already ran never loses its result for want of a new file.
//!
//! Whoever can write the log's directory can plant names in it. The log path
//! is never opened through a symlink, the temporary `.<name>.rotate` is always
//! created anew (`O_EXCL`, `O_NOFOLLOW`; a leftover name is removed first), and
//! only regular files are read, without blocking and a line of at most 32 MiB
//! (the largest entry) at a time: a symlink, FIFO or device there fails the
//! append (exit 11) or `verify`, never redirects or hangs them.
//!
//! # Checkpoints
//!
//! With a signing key, whenever an append's seq range crosses a multiple of
//! `sign_every` (and for the very first entry) the writer appends, in the same
//! `write` as those entries, a `checkpoint` entry with `signed_seq`, `signed_hash` (the head it signs),
//! `sign_every`, `key_id` and `sig`: an ed25519 signature over
//! `upm-audit-checkpoint:v1:<signed_seq>:<signed_hash>:<sign_every>`. A
//! signature covers every entry before it through the chain. `verify --key`
//! (repeatable: after a key change, a checkpoint may verify with any key given)
//! checks every checkpoint, fails when there is none, and fails when more than
//! `2 × sign_every + 2` entries follow the last one (checkpoints stripped by a
//! rewrite; one lost when a crash tears its write after the entries is tolerated).
//! See [`keys`] for the key files.
//!
//! # Concurrency and durability
//!
//! Each append: `flock(LOCK_EX)` on the log, re-check that the locked inode
//! is still the one at the path (reopen if another process rotated it), read
//! the head from the tail, one `write` on the `O_APPEND` fd, `fdatasync`,
//! unlock. A failed write is truncated back and reported: the entry is not
//! durable and the caller must not run the plugin.
//!
//! # Limits
//!
//! Against someone who can write the files: the chain is plain SHA-256, so
//! well-formed entries can be appended (with a key they form the unsigned tail,
//! and upm's next checkpoint signs them); and cutting the log back to a
//! checkpoint, deleting it, or restoring an older copy all verify, with a key
//! too. Only copies shipped elsewhere (`mirror`) bound that. `verify` exits 0
//! for a torn tail (part of one line), since it is a crash artifact; the report
//! says so.

mod cli;
mod files;
mod format;
mod group;
mod query;
mod settings;
mod verify;
mod writer;

use std::path::PathBuf;

pub use crate::keys::keygen;
pub use cli::{run, AuditCommand, DefaultLog};
pub use format::GENESIS;
pub use group::GroupCommit;
pub use query::{show, Filter, ShowFormat, Shown};
pub use settings::{AuditSettings, Mirror, Rotation};
pub use verify::{verify, verify_with_keys, Finding, Outcome, VerifyReport};
pub use writer::AuditLog;

#[doc(hidden)]
pub use verify::write_synthetic_log;

/// Everything that can go wrong while writing or reading the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path} for append: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path} is not a regular file (a symlink, FIFO or device is refused)")]
    NotRegular { path: PathBuf },
    #[error("cannot lock audit log {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read audit log {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write audit log {path} (the entry is not durable): {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot rotate audit log {path}: {source}")]
    Rotate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path} cannot be appended to: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("audit entry field `{field}` {reason}")]
    Entry { field: &'static str, reason: String },
    /// Writing what `audit show` prints failed (e.g. its reader went away).
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("cannot serialise audit entry: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("invalid audit settings: {0}")]
    Settings(String),
    #[error("the audit writer failed unexpectedly (a bug in upm); the entry is not durable")]
    WriterPanicked,
    #[error("key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("key file {path}: {source}")]
    KeyIo {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Digest logged instead of the arguments when `include_args` is false:
/// `sha256:<hex>` of the compact JSON (object keys sorted by serde_json).
pub fn args_digest(args: &serde_json::Value) -> String {
    format!("sha256:{}", crate::canonical::digest_hex(args))
}

impl From<crate::keys::KeyError> for AuditError {
    fn from(e: crate::keys::KeyError) -> Self {
        match e {
            crate::keys::KeyError::Format { path, reason } => AuditError::Key { path, reason },
            crate::keys::KeyError::Io { path, source } => AuditError::KeyIo { path, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_digest_is_key_order_independent() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":[1,2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"a":[1,2],"b":1}"#).unwrap();
        let c: serde_json::Value = serde_json::from_str(r#"{"a":[2,1],"b":1}"#).unwrap();
        assert_eq!(args_digest(&a), args_digest(&b));
        assert_ne!(args_digest(&a), args_digest(&c));
        assert!(args_digest(&a).starts_with("sha256:"));
    }
}
