//! The byte layout of one line: sealing (writer side) and the fast
//! prefix/suffix scan (verify side), and how a logged string is shown on a terminal
//! ([`printable`], for `show` and `verify`). See the module doc of `audit`.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::AuditError;

/// `prev` of the very first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const SEQ_PREFIX: &[u8] = b"{\"seq\":";
const PREV_KEY: &[u8] = b",\"prev\":\"";
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// `,"hash":"` + 64 hex + `"}`.
pub const SUFFIX_LEN: usize = HASH_KEY.len() + 64 + 2;

/// Keys the log owns; the pipeline may not supply them.
pub const RESERVED: [&str; 3] = ["seq", "prev", "hash"];

/// One structurally valid line (without its `\n`), borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Parsed<'a> {
    pub seq: u64,
    pub prev: &'a [u8],
    pub hash: &'a [u8],
    line: &'a [u8],
}

impl Parsed<'_> {
    /// SHA-256 of the line's own bytes (the line with the hash suffix → `}`).
    pub fn computed_hash(&self) -> [u8; 64] {
        let mut h = Sha256::new();
        h.update(&self.line[..self.line.len() - SUFFIX_LEN]);
        h.update(b"}");
        let mut out = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(h.finalize(), &mut out);
        out
    }

    pub fn hash_matches(&self) -> bool {
        self.computed_hash()[..] == *self.hash
    }

    pub fn hash_str(&self) -> String {
        String::from_utf8_lossy(self.hash).into_owned()
    }
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Scans `line` (no trailing `\n`) for the fixed `seq`/`prev` prefix and the
/// `hash` suffix. `None` means the bytes are not an entry at all.
pub fn parse(line: &[u8]) -> Option<Parsed<'_>> {
    let min = SEQ_PREFIX.len() + 1 + PREV_KEY.len() + 64 + 1 + SUFFIX_LEN;
    if line.len() < min || !line.starts_with(SEQ_PREFIX) {
        return None;
    }
    let rest = &line[SEQ_PREFIX.len()..];
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let mut seq: u64 = 0;
    for &d in &rest[..digits] {
        seq = seq.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    let rest = rest[digits..].strip_prefix(PREV_KEY)?;
    let prev = rest.get(..64)?;
    if !is_lower_hex(prev) || rest.get(64) != Some(&b'"') {
        return None;
    }
    let prev_end = SEQ_PREFIX.len() + digits + PREV_KEY.len() + 65;
    let suffix_start = line.len() - SUFFIX_LEN;
    if prev_end > suffix_start || line[prev_end] != b',' {
        return None;
    }
    let suffix = &line[suffix_start..];
    let hash = &suffix[HASH_KEY.len()..HASH_KEY.len() + 64];
    if !suffix.starts_with(HASH_KEY) || !suffix.ends_with(b"\"}") || !is_lower_hex(hash) {
        return None;
    }
    Some(Parsed {
        seq,
        prev,
        hash,
        line,
    })
}

/// Builds the sealed line (with its `\n`) and returns it with its hash.
pub fn seal(
    seq: u64,
    prev: &str,
    fields: &Map<String, Value>,
) -> Result<(Vec<u8>, String), AuditError> {
    for key in RESERVED {
        if fields.contains_key(key) {
            return Err(AuditError::Entry {
                field: key,
                reason: "is reserved for the audit log itself".into(),
            });
        }
    }
    let inner = serde_json::to_vec(fields)?;
    let mut line = Vec::with_capacity(inner.len() + 180);
    line.extend_from_slice(SEQ_PREFIX);
    line.extend_from_slice(seq.to_string().as_bytes());
    line.extend_from_slice(PREV_KEY);
    line.extend_from_slice(prev.as_bytes());
    line.push(b'"');
    if inner.len() > 2 {
        line.push(b',');
        line.extend_from_slice(&inner[1..inner.len() - 1]);
    }
    line.push(b'}');
    let hash = hex::encode(Sha256::digest(&line));
    line.pop();
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

/// RFC 3339 UTC, milliseconds, `Z`.
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The exact bytes a checkpoint signs. `sign_every` is signed too, so the
/// cadence verify enforces on the unsigned tail cannot be edited.
pub fn checkpoint_message(seq: u64, hash: &str, sign_every: u64) -> Vec<u8> {
    format!("upm-audit-checkpoint:v1:{seq}:{hash}:{sign_every}").into_bytes()
}

/// A caller chose some of these strings (a refused call's plugin and method are logged as
/// sent), and whoever can write the log any of them: control characters and bidirectional
/// overrides are shown escaped, so that no entry can print a row (or a `verify` verdict)
/// of its own, hide the rest of one, or reorder it on a terminal. `show --format table`
/// and `verify` print through this one function.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Map<String, Value> {
        let v: Value = serde_json::json!({"request_id": "r1", "event": "started", "ts": "2026-01-01T00:00:00.000Z"});
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sealed_line_parses_and_hash_matches() {
        let (line, hash) = seal(7, GENESIS, &fields()).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        let p = parse(body).expect("parses");
        assert_eq!(p.seq, 7);
        assert_eq!(p.prev, GENESIS.as_bytes());
        assert_eq!(p.hash, hash.as_bytes());
        assert!(p.hash_matches());
        // Valid JSON with the expected fields, readable by any JSON tool.
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["hash"], hash.as_str());
        assert_eq!(v["request_id"], "r1");
    }

    #[test]
    fn hash_covers_the_bytes_without_the_suffix() {
        let (line, hash) = seal(1, GENESIS, &fields()).unwrap();
        let body = &line[..line.len() - 1 - SUFFIX_LEN];
        let mut own = body.to_vec();
        own.push(b'}');
        assert_eq!(hex::encode(Sha256::digest(&own)), hash);
    }

    #[test]
    fn any_edit_breaks_the_hash() {
        let (line, _) = seal(3, GENESIS, &fields()).unwrap();
        let mut edited = line[..line.len() - 1].to_vec();
        let pos = edited.windows(7).position(|w| w == b"started").unwrap();
        edited[pos] = b'S';
        assert!(!parse(&edited).unwrap().hash_matches());
    }

    #[test]
    fn reserved_keys_are_refused() {
        let mut f = fields();
        f.insert("seq".into(), Value::from(1));
        assert!(matches!(
            seal(1, GENESIS, &f),
            Err(AuditError::Entry { field: "seq", .. })
        ));
    }

    #[test]
    fn non_entries_do_not_parse() {
        let (line, _) = seal(3, GENESIS, &fields()).unwrap();
        let body = &line[..line.len() - 1];
        assert!(parse(&body[..body.len() - 1]).is_none(), "torn");
        assert!(parse(&body[1..]).is_none());
        assert!(parse(b"").is_none());
        assert!(parse(b"{\"seq\":01,\"prev\":\"").is_none());
        let upper = String::from_utf8(body.to_vec())
            .unwrap()
            .replace("\"seq\":3", "\"seq\":x");
        assert!(parse(upper.as_bytes()).is_none());
    }

    #[test]
    fn timestamp_is_rfc3339_ms_utc() {
        let ts = now_ts();
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z'));
        assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok());
    }
}
