//! upm: a one-shot secure plugin entrypoint.
//!
//! The pipeline, top-down, lives in [`pipeline`]: parse → authorize (whitelist)
//! → validate (schema) → prepare → audit `started` → run → capture → audit
//! `finished` → respond.
//! Each concern has its own module:
//!
//! - [`request`] / [`response`]: the wire types of one call.
//! - [`config`]: `upm_config.json`, loaded and checked as a whole (fail closed);
//!   [`unknown_keys`] reports every key it does not know.
//! - [`schema`]: per-method JSON Schemas, compiled once, local `$ref`s only;
//!   [`canonical`]: the one serialisation of a value that is hashed or signed.
//! - [`sandbox`]: one file per layer, behind `Policy → LayerReport`.
//! - [`container`]: the container backend (podman/docker) for plugins that ask for it.
//! - [`egress`]: a plugin's network allowlist and the per-call filtering proxy that
//!   enforces it (run as `upm-egress`, started by [`spawn`]); [`metadata`]: the cloud
//!   metadata endpoints nothing upm starts may reach.
//! - [`spawn`]: fork, exec and capture of the plugin under the prepared sandbox.
//! - [`denials`]: what the sandbox refused during a call (`data.denials`).
//! - [`audit`]: the tamper-evident audit log.
//! - [`error`]: result codes, exit codes and the `Failure` a call ends on (a leaf);
//!   [`codes`]: the one place where each module's error becomes a result code.
//! - [`check`]: what `upm check` finds in a config, which `upm mcp` heeds at start.
//! - [`mcp`]: `upm mcp`, an MCP server whose every tool call is one pipeline call.
//! - [`compat`]: what keeps the original UPM entrypoint's callers working (its
//!   sentences, its module lookup through `PYTHONPATH`); [`migrate`] takes a UPM
//!   config on to a strict upm config.
//!
//! Dependencies point one way, each module using only those on lines above its own
//! (no module imports one below it, so there is no cycle):
//!
//! ```text
//! error  canonical  files  integrity  diagnostics  unknown_keys   leaves: nothing of the crate
//!   metadata  denials
//! egress                                                         the allowlist and the proxy
//! request  response  schema  sandbox  keys
//! spawn  audit  compat  access
//! config
//! container  launch  outcome  trust  preflight
//! codes                                                          every error -> its result code
//! pipeline                                                       one call, top-down
//! batch  migrate  check
//! mcp                                                            tools/call -> pipeline (batch's line reader)
//! cli
//! ```

pub mod access;
pub mod audit;
pub mod batch;
pub mod canonical;
pub mod check;
pub mod cli;
pub mod codes;
pub mod compat;
pub mod config;
pub mod container;
pub mod denials;
pub mod diagnostics;
pub mod egress;
pub mod error;
pub mod files;
pub mod integrity;
pub mod keys;
pub mod launch;
pub mod mcp;
pub mod metadata;
pub mod migrate;
pub mod outcome;
pub mod pipeline;
pub mod preflight;
pub mod request;
pub mod response;
pub mod sandbox;
pub mod schema;
pub mod spawn;
pub mod trust;
pub mod unknown_keys;
