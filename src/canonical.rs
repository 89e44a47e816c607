//! Canonical JSON and its digest: one serialisation of a value, whatever the key order
//! it was read in, for what is hashed or signed (args digests in results and the audit,
//! redacted secrets, the config signature). A leaf: it imports nothing of the crate.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// Canonical JSON: object keys sorted (by code point), no whitespace, strings escaped as
/// serde_json does. Used for args digests in results and the audit.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

/// SHA-256 of [`canonical_json`], lowercase hex.
pub fn digest_hex(v: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(v).as_bytes()))
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                use fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let v: Value = serde_json::from_str(
            r#"{ "b": 1, "a": { "z": [1, 2.5, null], "y": "x\n\"" }, "A": true }"#,
        )
        .expect("json");
        assert_eq!(
            canonical_json(&v),
            r#"{"A":true,"a":{"y":"x\n\"","z":[1,2.5,null]},"b":1}"#
        );
        assert_eq!(canonical_json(&json!("\u{1}é")), "\"\\u0001é\"");
    }

    #[test]
    fn canonical_json_round_trips_through_serde() {
        let v = json!({ "k": ["\u{7f}", "\t", -0.5, 1e300, u64::MAX, i64::MIN, {}] });
        let text = canonical_json(&v);
        let back: Value = serde_json::from_str(&text).expect("canonical JSON parses");
        assert_eq!(back, v);
    }

    #[test]
    fn digest_is_stable_and_order_independent() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":[true,null]}"#).expect("json");
        let b: Value =
            serde_json::from_str(r#"{ "a" : [ true , null ] , "b" : 1 }"#).expect("json");
        // sha256 of `{"a":[true,null],"b":1}`, computed independently.
        let expected = "51705a2c9eb3e7e410a58f696a770c3ac3885a0cf43eb7fc88f5e47c11d4d30d";
        assert_eq!(digest_hex(&a), digest_hex(&b));
        assert_eq!(digest_hex(&a).len(), 64);
        assert_eq!(digest_hex(&a), expected);
        assert_ne!(
            digest_hex(&a),
            digest_hex(&json!({ "a": [true, null], "b": 2 }))
        );
    }
}
