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

use crate::config::Config;
use crate::error::Code;
use crate::pipeline::Session;
use crate::spawn::stop::{Cancel, Watch, Watched};
use std::path::Path;

/// Runs the server until its client goes away; returns the exit code: 0 at EOF, 15
/// when asked to stop by a signal, 1 when stdout failed, 5 when the config cannot be
/// served (invalid, its methods' tool names collide, or every plugin has a problem),
/// 11 when its audit log cannot be opened: nothing is served then, since a server
/// whose every call fails looks healthy to its client until the first call.
pub fn run(config_path: &Path, parallel: usize) -> i32 {
    let session = Session::load(config_path);
    let config_error = Code::ConfigError.exit_code();
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
    let mut tools = match Tools::of(config) {
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
    if let Err(code) = heed_check(&session, config, &mut tools) {
        return code;
    }
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

/// What `upm check` finds, heeded before anything is served: a problem that fails every
/// call (the audit log) stops the server with its exit code; a plugin's own problem
/// (its executable missing, unreadable to its user, a pin that does not match, ...)
/// leaves out that plugin's tools with a warning, so that the others are still served.
/// Nothing left to serve of a config that had tools: exit 5.
fn heed_check(session: &Session, config: &Config, tools: &mut Tools) -> Result<(), i32> {
    let report = crate::check::check(config);
    if !report.every_call.is_empty() {
        eprintln!(
            "upm mcp: every call would fail (upm check --config {} says so): nothing is served",
            config.path.display()
        );
        for p in &report.every_call {
            eprintln!("problem: {p}");
        }
        return Err(Code::AuditError.exit_code());
    }
    // The log itself, opened as every call opens it first: what the check cannot see.
    if let Err(f) = session.open_log() {
        eprintln!("upm mcp: {}: nothing is served", f.message);
        return Err(f.code.exit_code());
    }
    let had_tools = !tools.by_name.is_empty();
    for name in config.plugins.keys() {
        let problems: Vec<&str> = report.of_plugin(name).map(String::as_str).collect();
        if problems.is_empty() {
            continue;
        }
        let left_out = tools.leave_out(name, &problems.join("; "));
        if left_out.is_empty() {
            continue;
        }
        eprintln!(
            "upm mcp: warning: plugin \"{name}\" is not served, every call of it would fail \
             (left out of tools/list: {}):",
            left_out.join(", ")
        );
        for p in &problems {
            eprintln!("problem: {p}");
        }
    }
    if had_tools && tools.by_name.is_empty() {
        eprintln!("upm mcp: every tool was left out: nothing is served");
        return Err(Code::ConfigError.exit_code());
    }
    if let Some(p) = &report.signature_problem {
        // A call checks the signature over its own plugin's files: it may fail some calls.
        eprintln!("upm mcp: warning: {p}: calls whose files it covers are refused");
    }
    Ok(())
}
