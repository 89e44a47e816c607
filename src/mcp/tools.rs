//! One tool per whitelisted method: its name, description and schemas, for `tools/list`
//! and for `upm list --format mcp|openai`, and the way back from a tool to its method.
//!
//! **Names.** A tool is `<plugin>__<method>` with every `.` written `-`: valid for MCP
//! (SEP-986, `[A-Za-z0-9_.-]{1,128}`) and for OpenAI function names
//! (`^[A-Za-z0-9_-]{1,64}$`) alike, and stable, since it depends on the two names only.
//! A name longer than 64 characters keeps its first 55 and ends in `-` and 8 hex digits
//! of the SHA-256 of `<plugin>/<method>`. Two methods whose names would be the same
//! (`a.b` and `a-b`, or plugin `a__b` method `c` and plugin `a` method `b__c`) make the
//! config unusable as tools: refused, naming both. The original names are in each
//! tool's `title` (`Plugin.method`) and `_meta` (`upm/plugin`, `upm/method`).
//!
//! **Input schemas.** MCP wants an object schema at the root. A method whose schema's
//! root says `"type": "object"` gets it as it is, bundled into one document (its files'
//! `$ref`s turned into local pointers, see [`MethodSchema::bundled`]), and the tool's
//! arguments are the call's args. Any other schema (an array, a string, `anyOf`, ...) is
//! nested as the one required property `args` of an object schema, and the call's args
//! are `arguments.args`. A method without a schema (the config allows that, see the
//! README: `allowed_methods` only, or `"require_schemas": false`) is a tool that accepts
//! any object, passed on as it is (a Python class plugin's: the `args`/`kwargs` shape
//! upm checks), and its `_meta` says `upm/no_schema`.
//!
//! **Results.** A method with an `output_schema` that is an object schema has it as the
//! tool's `outputSchema`, and its results (checked against it) are `structuredContent`
//! as they are; any other `output_schema` is nested as the property `result`, and so is
//! every result. Without an `output_schema`, an object result is `structuredContent` as
//! it is and anything else is wrapped as `{"result": ...}`.

use crate::config::{Config, Plugin, PluginKind};
use crate::schema::MethodSchema;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Longest tool name OpenAI accepts (MCP allows 128).
const MAX_NAME: usize = 64;
/// The property a non-object schema's instance is put under.
pub const ARGS_KEY: &str = "args";
pub const RESULT_KEY: &str = "result";

/// How a tool's `arguments` become the call's args.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgsShape {
    /// The arguments object is the args.
    AsIs,
    /// The args are `arguments.args` (the method's schema is not an object schema).
    Nested,
}

/// How a result becomes `structuredContent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultShape {
    /// No output schema: an object as it is, anything else as `{"result": ...}`.
    Auto,
    /// An object output schema: the (checked) result as it is.
    AsIs,
    /// A non-object output schema: always `{"result": ...}`.
    Nested,
}

/// One tool: the method it calls and how it is described.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub plugin: String,
    pub method: String,
    pub description: String,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub args: ArgsShape,
    pub result: ResultShape,
    /// Why no schema checks this tool's arguments, when none does.
    pub no_schema: Option<String>,
}

impl Tool {
    /// The MCP `Tool` object (`tools/list`).
    pub fn to_mcp(&self) -> Value {
        let mut meta = json!({ "upm/plugin": self.plugin, "upm/method": self.method });
        if let Some(why) = &self.no_schema {
            meta["upm/no_schema"] = json!(why);
        }
        let mut t = json!({
            "name": self.name,
            "title": format!("{}.{}", self.plugin, self.method),
            "description": self.description,
            "inputSchema": self.input_schema,
            "_meta": meta,
        });
        if let Some(o) = &self.output_schema {
            t["outputSchema"] = o.clone();
        }
        t
    }

    /// An OpenAI function tool (Chat Completions' `tools` entry).
    pub fn to_openai(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_schema,
            }
        })
    }

    /// The call's args from a `tools/call`'s `arguments` (absent: `{}`), or why they do
    /// not fit the tool's wrapper.
    pub fn args(&self, arguments: Option<Value>) -> Result<Value, String> {
        let arguments = arguments.unwrap_or_else(|| json!({}));
        match self.args {
            ArgsShape::AsIs => Ok(arguments),
            ArgsShape::Nested => match arguments {
                Value::Object(mut m) if m.len() == 1 && m.contains_key(ARGS_KEY) => {
                    Ok(m.remove(ARGS_KEY).unwrap_or(Value::Null))
                }
                _ => Err(format!(
                    "the arguments of tool \"{}\" must be an object with the one property \
                     \"{ARGS_KEY}\", which holds the method's args",
                    self.name
                )),
            },
        }
    }

    /// A result as `structuredContent` (always an object).
    pub fn structured(&self, result: Value) -> Value {
        match (self.result, result) {
            (ResultShape::AsIs | ResultShape::Auto, Value::Object(m)) => Value::Object(m),
            (_, other) => json!({ RESULT_KEY: other }),
        }
    }
}

/// Every tool of a config, by name.
#[derive(Debug, Default)]
pub struct Tools {
    pub by_name: BTreeMap<String, Tool>,
    /// Tools taken out of the list, and why: a call of one is told so.
    pub left_out: BTreeMap<String, String>,
}

impl Tools {
    /// The tools of a (valid) config, or every reason it cannot be offered as tools.
    pub fn of(config: &Config) -> Result<Tools, Vec<String>> {
        let mut problems = Vec::new();
        let mut by_name: BTreeMap<String, Tool> = BTreeMap::new();
        for (pname, plugin) in &config.plugins {
            for (mname, method) in &plugin.methods {
                let tool = match tool(plugin, mname, method) {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                if let Some(other) = by_name.get(&tool.name) {
                    problems.push(format!(
                        "plugin \"{pname}\", method \"{mname}\" and plugin \"{}\", method \"{}\" \
                         would both be the tool \"{}\": rename one of them",
                        other.plugin, other.method, tool.name
                    ));
                    continue;
                }
                by_name.insert(tool.name.clone(), tool);
            }
        }
        if problems.is_empty() {
            Ok(Tools {
                by_name,
                left_out: BTreeMap::new(),
            })
        } else {
            Err(problems)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.by_name.get(name)
    }

    /// Leaves out the tools of `plugin` (`upm mcp`: one `upm check` finds a problem
    /// with, which every call of it would fail on), keeping `why` for a call of one of
    /// them; their names.
    pub fn leave_out(&mut self, plugin: &str, why: &str) -> Vec<String> {
        let names: Vec<String> = self
            .by_name
            .values()
            .filter(|t| t.plugin == plugin)
            .map(|t| t.name.clone())
            .collect();
        for n in &names {
            self.by_name.remove(n);
            self.left_out.insert(n.clone(), why.to_owned());
        }
        names
    }

    /// The result of `tools/list`.
    pub fn to_mcp(&self) -> Value {
        json!({ "tools": self.by_name.values().map(Tool::to_mcp).collect::<Vec<_>>() })
    }

    pub fn to_openai(&self) -> Value {
        Value::Array(self.by_name.values().map(Tool::to_openai).collect())
    }
}

/// The tool name of a plugin's method (see the module's doc).
pub fn tool_name(plugin: &str, method: &str) -> String {
    let name = format!("{}__{}", plugin.replace('.', "-"), method.replace('.', "-"));
    if name.len() <= MAX_NAME {
        return name;
    }
    let digest = hex::encode(Sha256::digest(format!("{plugin}/{method}").as_bytes()));
    // The names are ASCII (checked when the config loads), so any cut is a char boundary.
    let keep = MAX_NAME - 9;
    format!("{}-{}", &name[..keep], &digest[..8])
}

fn tool(plugin: &Plugin, name: &str, method: &crate::config::Method) -> Result<Tool, String> {
    let at = format!("plugin \"{}\", method \"{name}\"", plugin.name);
    let load = |path: &std::path::Path| MethodSchema::load(path).map_err(|e| format!("{at}: {e}"));
    let unbundled = |e: crate::schema::SchemaError| {
        format!("{at}: {e}: a tool's schema must be one document that stands alone")
    };
    let (input_schema, args, no_schema) = match &method.schema {
        Some(path) => {
            let s = load(path)?;
            if s.is_object_schema() {
                (s.bundled().map_err(unbundled)?, ArgsShape::AsIs, None)
            } else {
                let nested = s.bundled_under(ARGS_KEY).map_err(unbundled)?;
                (nested, ArgsShape::Nested, None)
            }
        }
        None => {
            let schema = match plugin.kind {
                PluginKind::PythonClass { .. } => json!({
                    "type": "object",
                    "properties": { "args": { "type": "array" }, "kwargs": { "type": "object" } }
                }),
                PluginKind::Command { .. } => json!({ "type": "object" }),
            };
            let why = if method.upm_whitelist_only {
                "the method is whitelisted only through UPM's \"allowed_methods\""
            } else {
                "the config sets \"require_schemas\": false"
            };
            let why = format!("no schema checks this tool's arguments: {why}");
            (schema, ArgsShape::AsIs, Some(why))
        }
    };
    let (output_schema, result) = match &method.output_schema {
        None => (None, ResultShape::Auto),
        Some(path) => {
            let s = load(path)?;
            if s.is_object_schema() {
                (Some(s.bundled().map_err(unbundled)?), ResultShape::AsIs)
            } else {
                let nested = s.bundled_under(RESULT_KEY).map_err(unbundled)?;
                (Some(nested), ResultShape::Nested)
            }
        }
    };
    let description = method
        .description
        .clone()
        .or_else(|| plugin.description.clone())
        .unwrap_or_else(|| format!("Calls method \"{name}\" of plugin \"{}\".", plugin.name));
    Ok(Tool {
        name: tool_name(&plugin.name, name),
        plugin: plugin.name.clone(),
        method: name.to_owned(),
        description,
        input_schema,
        output_schema,
        args,
        result,
        no_schema,
    })
}

/// `^[A-Za-z0-9_-]{1,64}$`: an OpenAI function name, also a valid MCP tool name.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The tool names of a config, for `upm check`: what `upm mcp` would refuse.
pub fn problems(config: &Config) -> Vec<String> {
    Tools::of(config).err().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_everywhere_stable_and_short() {
        assert_eq!(tool_name("TextTools", "wordcount"), "TextTools__wordcount");
        assert_eq!(tool_name("acme.tools", "v1.run"), "acme-tools__v1-run");
        let long = tool_name(&"p".repeat(64), &"m".repeat(64));
        assert_eq!(long.len(), 64);
        assert_eq!(long, tool_name(&"p".repeat(64), &"m".repeat(64)), "stable");
        assert_ne!(long, tool_name(&"p".repeat(64), &"m".repeat(63)));
        // Every valid pair of names gives a valid name.
        for (p, m) in [
            ("a", "b"),
            ("A-9_.", "x.y-z_"),
            (&*"z".repeat(64), "q"),
            ("0", &*"9".repeat(64)),
        ] {
            let n = tool_name(p, m);
            assert!(valid_tool_name(&n), "{n}");
        }
    }

    #[test]
    fn a_nested_tool_takes_exactly_its_wrapper() {
        let t = Tool {
            name: "p__m".into(),
            plugin: "p".into(),
            method: "m".into(),
            description: String::new(),
            input_schema: json!({}),
            output_schema: None,
            args: ArgsShape::Nested,
            result: ResultShape::Nested,
            no_schema: None,
        };
        assert_eq!(t.args(Some(json!({ "args": [1] }))).unwrap(), json!([1]));
        assert!(t.args(Some(json!({ "args": 1, "x": 2 }))).is_err());
        assert!(t.args(None).is_err());
        assert_eq!(
            t.structured(json!({ "a": 1 })),
            json!({ "result": { "a": 1 } })
        );
        let auto = Tool {
            result: ResultShape::Auto,
            args: ArgsShape::AsIs,
            ..t
        };
        assert_eq!(auto.args(None).unwrap(), json!({}));
        assert_eq!(auto.structured(json!({ "a": 1 })), json!({ "a": 1 }));
        assert_eq!(auto.structured(json!([1])), json!({ "result": [1] }));
        assert_eq!(auto.structured(Value::Null), json!({ "result": null }));
    }
}
