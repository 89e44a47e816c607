//! JSON-RPC 2.0 as MCP's stdio transport carries it: one message per line, no batches.

use serde_json::{json, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;

/// One message from the client, as far as its envelope goes.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A response to a request of the server's (upm sends none): ignored.
    Response,
    /// Not a JSON-RPC 2.0 message; `id` is the request's when it could be read.
    Invalid { id: Value, why: String },
}

/// Reads a parsed message's envelope.
pub fn classify(msg: Value) -> Incoming {
    let Value::Object(mut m) = msg else {
        let why = if msg.is_array() {
            "a batch (a JSON array): MCP carries one message per line"
        } else {
            "not a JSON-RPC message: expected a JSON object"
        };
        return invalid(Value::Null, why);
    };
    let id = m.remove("id");
    let id_ok = matches!(id, Some(Value::String(_) | Value::Number(_)));
    let shown_id = if id_ok {
        id.clone().unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(shown_id, "\"jsonrpc\" must be \"2.0\"");
    }
    let Some(method) = m.remove("method") else {
        if m.contains_key("result") || m.contains_key("error") {
            return Incoming::Response;
        }
        return invalid(shown_id, "no \"method\"");
    };
    let Value::String(method) = method else {
        return invalid(shown_id, "\"method\" must be a string");
    };
    let params = m.remove("params");
    if params.as_ref().is_some_and(|p| !p.is_object()) {
        return invalid(shown_id, "\"params\" must be an object");
    }
    match id {
        None => Incoming::Notification { method, params },
        Some(id) if id_ok => Incoming::Request { id, method, params },
        Some(_) => invalid(Value::Null, "\"id\" must be a string or a number"),
    }
}

fn invalid(id: Value, why: &str) -> Incoming {
    Incoming::Invalid {
        id,
        why: why.to_owned(),
    }
}

pub fn result(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

pub fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut e = json!({ "code": code, "message": message });
    if let Some(d) = data {
        e["data"] = d;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": e })
}

/// A request id as a key: `1` and `"1"` are different ids.
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        assert_eq!(
            classify(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
            Incoming::Request {
                id: json!(1),
                method: "ping".into(),
                params: None
            }
        );
        assert_eq!(
            classify(json!({"jsonrpc": "2.0", "method": "n", "params": {"a": 1}})),
            Incoming::Notification {
                method: "n".into(),
                params: Some(json!({"a": 1}))
            }
        );
        assert_eq!(
            classify(json!({"jsonrpc": "2.0", "id": "x", "result": {}})),
            Incoming::Response
        );
        let bad = [
            (json!([1]), Value::Null),
            (json!({"id": 1, "method": "m"}), json!(1)),
            (json!({"jsonrpc": "2.0", "id": 2, "method": 3}), json!(2)),
            (
                json!({"jsonrpc": "2.0", "id": 2, "method": "m", "params": [1]}),
                json!(2),
            ),
            (
                json!({"jsonrpc": "2.0", "id": null, "method": "m"}),
                Value::Null,
            ),
            (
                json!({"jsonrpc": "2.0", "id": [1], "method": "m"}),
                Value::Null,
            ),
            (json!({"jsonrpc": "2.0", "id": 5}), json!(5)),
        ];
        for (msg, want) in bad {
            match classify(msg.clone()) {
                Incoming::Invalid { id, .. } => assert_eq!(id, want, "{msg}"),
                other => panic!("{msg}: {other:?}"),
            }
        }
        assert_ne!(id_key(&json!(1)), id_key(&json!("1")));
    }
}
