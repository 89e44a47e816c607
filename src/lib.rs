//! upm: a one-shot secure plugin entrypoint.
//!
//! The pipeline, top-down, lives in [`pipeline`]: parse → authorize (whitelist)
//! → validate (schema) → prepare sandbox → spawn → capture → audit → respond.
//! Each concern has its own module:
//!
//! - [`request`] / [`response`]: the wire types of one call.
//! - [`config`]: `upm_config.json`, loaded and checked as a whole (fail closed);
//!   [`unknown_keys`] reports every key it does not know.
//! - [`schema`]: per-method JSON Schemas, compiled once, local `$ref`s only.
//! - [`sandbox`]: one file per layer, behind `Policy → LayerReport`.
//! - [`container`]: the container backend (podman/docker) for plugins that ask for it.
//! - [`spawn`]: fork, exec and capture of the plugin under the prepared sandbox.
//! - [`audit`]: the tamper-evident audit log.
//! - [`error`]: the one place where errors become result codes and exit codes.
//! - [`compat`]: what keeps the original UPM entrypoint's callers working (its
//!   sentences, its module lookup through `PYTHONPATH`); [`migrate`] takes a UPM
//!   config on to a strict upm config.

pub mod access;
pub mod audit;
pub mod batch;
pub mod cli;
pub mod compat;
pub mod config;
pub mod container;
pub mod denials;
pub mod diagnostics;
pub mod error;
pub mod files;
pub mod integrity;
pub mod keys;
pub mod launch;
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
