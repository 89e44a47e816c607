//! The config builder every test binary shares: a test says what differs from the
//! usual test config, and [`TestConfig::write`] puts it beside the test's files.

use super::{texttools_bin, TestDir};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A config document: `"require_schemas": false` (most tests whitelist methods
/// without writing schemas for them), plus what the test adds. Every setter replaces
/// its key whole, as writing the key in a JSON literal would.
#[derive(Debug, Clone)]
pub struct TestConfig(Value);

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig(json!({ "require_schemas": false }))
    }
}

impl TestConfig {
    pub fn new() -> TestConfig {
        TestConfig::default()
    }

    /// A top-level key.
    pub fn set(mut self, key: &str, value: Value) -> TestConfig {
        self.0[key] = value;
        self
    }

    /// Each top-level key of the object `top`.
    pub fn merge(mut self, top: Value) -> TestConfig {
        for (k, v) in top.as_object().expect("top-level keys as an object") {
            self.0[k] = v.clone();
        }
        self
    }

    /// The top-level `sandbox` with only `limits.timeout_ms`, every plugin's clock
    /// unless it sets its own.
    pub fn timeout_ms(self, ms: u64) -> TestConfig {
        self.set("sandbox", json!({ "limits": { "timeout_ms": ms } }))
    }

    /// A plugin, added (or replacing one of the same name).
    pub fn plugin(mut self, name: &str, plugin: Value) -> TestConfig {
        if !self.0["plugins"].is_object() {
            self.0["plugins"] = json!({});
        }
        self.0["plugins"][name] = plugin;
        self
    }

    /// Each plugin of the object `{name: plugin}` (an empty object gives an empty,
    /// deny-all `plugins`).
    pub fn plugins(mut self, plugins: Value) -> TestConfig {
        if !self.0["plugins"].is_object() {
            self.0["plugins"] = json!({});
        }
        for (name, p) in plugins.as_object().expect("plugins as an object") {
            self.0["plugins"][name] = p.clone();
        }
        self
    }

    pub fn value(self) -> Value {
        self.0
    }

    /// Writes `upm_config.json` in `dir` (see [`TestDir::config`]) and returns its path.
    pub fn write(&self, dir: &TestDir) -> PathBuf {
        dir.config(&self.0)
    }
}

/// A command plugin whitelisting `methods`, with no schema for them.
pub fn command_plugin(command: impl serde::Serialize, methods: &[&str]) -> Value {
    json!({ "command": [command], "allowed_methods": methods })
}

/// The example plugin (`upm-texttools`), each method checked by its schema in `schemas`
/// (the repository's `schemas/`, or a copy of it).
pub fn texttools_plugin(schemas: &Path) -> Value {
    json!({
        "command": [texttools_bin()],
        "methods": {
            "wordcount": { "schema": schemas.join("text.json") },
            "upper": { "schema": schemas.join("text.json") },
            "reverse": { "schema": schemas.join("text.json") },
            "noop": { "schema": schemas.join("empty.json") }
        }
    })
}
