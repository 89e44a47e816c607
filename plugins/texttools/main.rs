//! `upm-texttools`: a small executable plugin speaking upm's plugin protocol.
//!
//! It reads `{"method", "args", "request_id"}` as JSON on stdin and writes one
//! JSON value on stdout; diagnostics go to stderr; exit 0 means success.
//! `noop` prints nothing (result `null`): the benchmarks use it.

use serde_json::{json, Value};
use std::io::{Read, Write};

fn main() {
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("texttools: cannot read the request: {e}");
        std::process::exit(2);
    }
    let request: Value = match serde_json::from_str(&input) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("texttools: the request is not JSON: {e}");
            std::process::exit(2);
        }
    };
    let method = request["method"].as_str().unwrap_or_default();
    let text = request["args"]["text"].as_str().unwrap_or_default();
    let result = match method {
        "noop" => return,
        "wordcount" => json!({
            "lines": text.lines().count(),
            "words": text.split_whitespace().count(),
            "chars": text.chars().count(),
        }),
        "upper" => json!({ "text": text.to_uppercase() }),
        "reverse" => json!({ "text": text.chars().rev().collect::<String>() }),
        other => {
            eprintln!("texttools: unknown method {other:?}");
            std::process::exit(3);
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{result}").is_err() {
        std::process::exit(2);
    }
}
