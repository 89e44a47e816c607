//! `upm mcp`: upm as a Model Context Protocol server on stdin/stdout, every whitelisted
//! method a tool, every tool call a sandboxed, audited upm call.
//!
//! The transport is MCP's stdio one: JSON-RPC 2.0, one message per line, only MCP
//! messages on stdout and diagnostics on stderr; revisions 2025-06-18 and 2025-11-25,
//! negotiated in `initialize`. The config, compiled schemas, seccomp BPF and the audit
//! log are loaded once, as for `upm run --jsonl`; each `tools/call` then goes through
//! the very pipeline of `upm run` ([`Session::call_in`]) with its own request_id, its
//! own sandbox and its own audit entries, which also record the call's JSON-RPC id.
//!
//! Hand-written on serde_json rather than on the official Rust SDK (`rmcp`): upm is
//! synchronous and threaded, rmcp is built on tokio (a runtime and its dependencies in a
//! static binary for a few hundred lines of framing), and its stdio transport behaves
//! otherwise than upm must: it ignores a line that is not JSON (upm answers a parse
//! error and goes on) and drops an over-long line without a word (upm answers it), and
//! its server accepts the 2026 stateless revision's requests without `initialize`
//! (upm refuses any request before it). See docs/mcp.md.

mod jsonrpc;
mod server;
pub mod tools;

pub use server::PROTOCOL_VERSIONS;
pub use tools::{tool_name, Tool, Tools};

use crate::pipeline::Session;
use crate::spawn::stop::{Cancel, Watch, Watched};
use std::path::Path;

/// Runs the server until its client goes away; returns the exit code: 0 at EOF, 15
/// when asked to stop by a signal, 1 when stdout failed, 5 when the config cannot be
/// served (invalid, or its methods' tool names collide: nothing is served).
pub fn run(config_path: &Path, parallel: usize) -> i32 {
    let session = Session::load(config_path);
    let config_error = crate::error::Code::ConfigError.exit_code();
    let config = match session.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("upm mcp: {e}");
            for p in e.problems() {
                eprintln!("problem: {p}");
            }
            return config_error;
        }
    };
    let tools = match Tools::of(config) {
        Ok(t) => t,
        Err(problems) => {
            eprintln!(
                "upm mcp: config {} cannot be served as MCP tools:",
                config.path.display()
            );
            for p in problems {
                eprintln!("problem: {p}");
            }
            return config_error;
        }
    };
    let reading = match Cancel::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("upm mcp: cannot set up: {e}");
            return 1;
        }
    };
    crate::sandbox::shared_net::enable();
    let stdin = Watched(std::io::stdin(), Watch::with(reading.clone()));
    let input = std::io::BufReader::with_capacity(64 * 1024, stdin);
    let server = server::Server::new(&session, &tools, Box::new(std::io::stdout()), reading);
    server.serve(input, parallel)
}
