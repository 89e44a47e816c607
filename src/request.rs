//! The call a parent process hands upm: parsed from bounded stdin or from argv.
//!
//! Everything here runs before the config is trusted to look at the request,
//! so it is strict: a size cap enforced while reading, UTF-8 checked, JSON depth
//! bounded by serde_json's recursion limit, unknown fields refused. Plugin and
//! method names are checked against their fixed patterns by the whitelist, in
//! UPM's order (see `pipeline::authorize`).

use serde::Deserialize;
use serde_json::Value;
use std::io::Read;

/// Default cap on the request read from stdin.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1024 * 1024;
/// The most a config may allow. Re-serialised, args can grow (`1e15` prints as
/// `1000000000000000.0`, 3.8 × its size), and an audit entry that records them must stay
/// well under what the audit writer scans back for the last complete entry (64 MiB).
pub const MAX_MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the request is larger than the {cap}-byte limit")]
    TooLarge { cap: u64 },
    #[error("the request could not be read from stdin: {0}")]
    Read(#[source] std::io::Error),
    #[error("the request is empty")]
    Empty,
    #[error("the request is not valid UTF-8 (invalid byte at offset {offset})")]
    Utf8 { offset: usize },
    #[error("the {0} argument is not valid UTF-8")]
    ArgvUtf8(&'static str),
    #[error("the request is nested too deeply (the limit is 128 levels)")]
    TooDeep,
    #[error("the request is not valid JSON: {0}")]
    Json(String),
    /// The argv form's args (UPM's sentence is added by the pipeline).
    #[error("{0}")]
    ArgsJson(String),
    #[error("the request holds the integer {0}, which does not fit in 64 bits: JSON parsing would pass the plugin a rounded float instead; send it as a string")]
    WideInteger(String),
    #[error("the request is not a valid call: {0}")]
    Shape(String),
    #[error("request_id must match ^[A-Za-z0-9_.:-]{{1,128}}$")]
    BadRequestId,
}

/// One call, as the caller sent it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub plugin: String,
    pub method: String,
    #[serde(default = "empty_object")]
    pub args: Value,
    #[serde(default)]
    pub request_id: Option<String>,
    /// Set by `upm migrate` only, never by a caller: instead of calling a method, the
    /// runner reports the signatures of these methods.
    #[serde(skip)]
    pub introspect: Option<Vec<String>>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Reads at most `cap` bytes, not counting one final newline (as a batch line's is
/// not counted); one byte more means the request is refused without reading the
/// rest into memory.
pub fn read_bounded(mut input: impl Read, cap: u64) -> Result<Vec<u8>, RequestError> {
    let mut buf = Vec::new();
    input
        .by_ref()
        .take(cap.saturating_add(2))
        .read_to_end(&mut buf)
        .map_err(RequestError::Read)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    if buf.len() as u64 > cap {
        return Err(RequestError::TooLarge { cap });
    }
    Ok(buf)
}

/// Parses JSON text from bytes with clear errors for the cases callers hit.
pub fn parse_json(bytes: &[u8], what_is_args: bool) -> Result<Value, RequestError> {
    let text = std::str::from_utf8(bytes).map_err(|e| RequestError::Utf8 {
        offset: e.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(RequestError::Empty);
    }
    let value = serde_json::from_str(text).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            RequestError::TooDeep
        } else if what_is_args {
            RequestError::ArgsJson(clipped(e.to_string()))
        } else {
            RequestError::Json(clipped(e.to_string()))
        }
    })?;
    match wide_integer(text) {
        Some(literal) => Err(RequestError::WideInteger(noted(literal))),
        None => Ok(value),
    }
}

/// The first integer literal of (valid) JSON text that fits neither i64 nor u64.
/// serde_json reads one as the nearest f64 without a word (18446744073709551616 becomes
/// 1.8446744073709552e19), so a plugin would be handed a number its caller never sent.
pub(crate) fn wide_integer(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let literal = &text[start..i];
                let integer = !literal.contains(['.', 'e', 'E']);
                if integer && literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                    return Some(literal);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The caller's request_id if the document carries a valid one, even when the
/// rest of the request is refused: the error result must echo it.
pub fn peek_request_id(doc: &Value) -> Option<String> {
    doc.get("request_id")
        .and_then(Value::as_str)
        .filter(|id| valid_request_id(id))
        .map(str::to_owned)
}

/// Turns a parsed document into a checked request.
pub fn from_value(doc: Value) -> Result<Request, RequestError> {
    if !doc.is_object() {
        return Err(RequestError::Shape(
            "expected a JSON object with plugin, method, args and an optional request_id".into(),
        ));
    }
    let req: Request =
        serde_json::from_value(doc).map_err(|e| RequestError::Shape(clipped(e.to_string())))?;
    req.check()?;
    Ok(req)
}

impl Request {
    /// The request_id, echoed in every answer, is checked first; the names are the
    /// whitelist's to judge.
    pub fn check(&self) -> Result<(), RequestError> {
        if let Some(id) = &self.request_id {
            if !valid_request_id(id) {
                return Err(RequestError::BadRequestId);
            }
        }
        Ok(())
    }
}

/// A parser's message about a request: it can quote the request (an unknown field's
/// name, in full), so it is cut at 512 characters like a refused name.
fn clipped(message: String) -> String {
    crate::error::clip(message, 512)
}

/// Longest name kept from a request that may be refused; valid names have at most 64.
const MAX_NOTED_CHARS: usize = 128;

/// A caller's plugin or method name as responses and audit entries repeat it: cut at
/// 128 characters (marked with '…'), so that one request's names cannot make an entry
/// or a response larger than the request itself, however they are escaped.
pub fn noted(name: &str) -> String {
    crate::error::clip(name.to_owned(), MAX_NOTED_CHARS)
}

/// `^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `^_[A-Za-z0-9_.-]{0,63}$`: a private method's name (`_x`, `__introspect__`), which
/// UPM's `allowed_methods` may list but nobody may call.
pub fn valid_private_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.first() == Some(&b'_')
        && b.len() <= 64
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `^[A-Za-z0-9_.:-]{1,128}$`
pub fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_fields_name_is_not_repeated_in_full() {
        let key = "k".repeat(100_000);
        let doc = serde_json::json!({"plugin": "p", "method": "m", key: 1});
        let e = from_value(doc).unwrap_err().to_string();
        assert!(e.len() < 1_000, "{} bytes", e.len());
    }

    #[test]
    fn integers_wider_than_64_bits_are_found_outside_strings_only() {
        let wide = |t: &str| wide_integer(t).map(str::to_owned);
        assert_eq!(
            wide(r#"{"a": 18446744073709551615, "b": -9223372036854775808}"#),
            None
        );
        assert_eq!(
            wide(r#"{"a": [1, 18446744073709551616]}"#).as_deref(),
            Some("18446744073709551616")
        );
        assert_eq!(
            wide(r#"{"a":-9223372036854775809}"#).as_deref(),
            Some("-9223372036854775809")
        );
        assert_eq!(wide(r#"{"a": 1.8446744073709552e19, "b": 1e30}"#), None);
        assert_eq!(
            wide(r#"{"12345678901234567890123": "x\"99999999999999999999"}"#),
            None
        );
        assert!(matches!(
            parse_json(br#"{"n": 123456789012345678901234567890}"#, true),
            Err(RequestError::WideInteger(_))
        ));
    }

    #[test]
    fn names() {
        for ok in ["a", "Text_tools.v2-1", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "../x", "a/b", "a\0b", "_p", ".x", &"x".repeat(65), "é"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn request_ids() {
        assert!(valid_request_id("req-1:a_b.c"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id(&"a".repeat(129)));
    }

    #[test]
    fn bounded_read_refuses_one_byte_over() {
        assert!(read_bounded(&b"12345"[..], 5).is_ok());
        assert_eq!(read_bounded(&b"12345\n"[..], 5).unwrap(), b"12345");
        for over in [&b"123456"[..], b"123456\n", b"12345\n\n", b"1234567"] {
            assert!(
                matches!(
                    read_bounded(over, 5),
                    Err(RequestError::TooLarge { cap: 5 })
                ),
                "{over:?}"
            );
        }
    }

    #[test]
    fn deep_json_is_a_clear_error() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(matches!(
            parse_json(deep.as_bytes(), false),
            Err(RequestError::TooDeep)
        ));
    }

    #[test]
    fn unknown_fields_and_private_names() {
        let doc = serde_json::json!({"plugin": "p", "method": "m", "extra": 1});
        assert!(matches!(from_value(doc), Err(RequestError::Shape(_))));
        // The caller cannot ask for an introspection: the field is not part of the wire.
        let doc = serde_json::json!({"plugin": "p", "method": "m", "introspect": ["m"]});
        assert!(matches!(from_value(doc), Err(RequestError::Shape(_))));
        for ok in ["_x", "__introspect__", "_", &format!("_{}", "a".repeat(63))] {
            assert!(valid_private_name(ok), "{ok}");
        }
        for bad in ["x", "", "_a b", "_/", &format!("_{}", "a".repeat(64))] {
            assert!(!valid_private_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn invalid_utf8_names_offset() {
        assert!(matches!(
            parse_json(b"{\"a\": \"\xff\"}", false),
            Err(RequestError::Utf8 { offset: 7 })
        ));
    }
}
