//! `upm migrate`: from a UPM config that runs as it is to a strict upm config.
//!
//! For each Python class plugin it writes in the import path the call would use
//! (the caller's `PYTHONPATH`, made absolute), pins it with `manifest_sha256`, drops
//! the private names UPM's `allowed_methods` listed, and gives every method a JSON
//! Schema derived from its Python signature and type hints. The signatures are read
//! by upm's own runner inside the sandbox, as an audited call: importing a module
//! runs its code. What the runner reports is the plugin's word, so it is read as
//! data in a small fixed vocabulary and upm writes the schemas itself.
//!
//! Nothing is written unless everything can be: the new config (beside the old one,
//! so that its relative paths keep their meaning) and `schemas/<plugin>.<method>.json`.

use crate::config::{Config, PluginKind, PythonPathFrom};
use crate::error::Code;
use crate::pipeline::Session;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where the derived schemas go, relative to the new config.
const SCHEMA_DIR: &str = "schemas";
/// Deeper type hints than this become "anything".
const MAX_TYPE_DEPTH: usize = 16;
/// A signature with more parameters than this is not believed.
const MAX_PARAMS: usize = 256;
/// What a migrated method's `project_root` is granted when its plugin sets
/// `grants_within`: UPM's package-manager plugins install into the project.
const PROJECT_ROOT_GRANT: &str = "write";

/// What one plugin became.
struct Migrated {
    name: String,
    /// The config's entry for it, rewritten.
    entry: Value,
    /// Schema files to write: (path relative to the config's directory, document).
    schemas: Vec<(String, Value)>,
    report: Value,
}

/// Runs `upm migrate`; prints a JSON report on stdout; returns the exit code.
pub fn run(config_path: &Path, out: &Path) -> i32 {
    let (code, report) = match migrate(config_path, out) {
        Ok(report) => (0, report),
        Err((code, problems)) => {
            for p in &problems {
                eprintln!("problem: {p}");
            }
            (
                code.exit_code(),
                json!({ "ok": false, "code": code.as_str(), "problems": problems }),
            )
        }
    };
    println!("{report}");
    code
}

type Problems = (Code, Vec<String>);

fn migrate(config_path: &Path, out: &Path) -> Result<Value, Problems> {
    let config_err = |p: Vec<String>| (Code::ConfigError, p);
    let session = Session::load(config_path);
    let config = session
        .config()
        .map_err(|e| config_err(vec![crate::compat::config_load(config_path, e)]))?;
    let source: Value = std::fs::read(&config.path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            config_err(vec![format!(
                "{} cannot be read again",
                config.path.display()
            )])
        })?;
    let out = output_path(config, out).map_err(|p| config_err(vec![p]))?;

    let mut problems: Vec<String> = Vec::new();
    let mut first_code = None;
    let mut migrated = Vec::new();
    // Plugins no call can reach (an invalid name, no method whitelisted): a UPM config
    // lives with them, a strict one would refuse them, so they are left out and listed.
    let mut dropped = Map::new();
    for name in &config.plugin_order {
        let Some(raw) = source["plugins"].get(name) else {
            continue;
        };
        match config.plugins.get(name) {
            None => {
                dropped.insert(name.clone(), json!("not a valid plugin name"));
                continue;
            }
            Some(p) if p.methods.is_empty() => {
                dropped.insert(name.clone(), json!("whitelists no method"));
                continue;
            }
            Some(_) => {}
        }
        match migrate_plugin(&session, config, name, raw) {
            Ok(m) => migrated.push(m),
            Err((code, p)) => {
                first_code.get_or_insert(code);
                problems.extend(p);
            }
        }
    }
    let dir = out.parent().unwrap_or(Path::new("/")).to_path_buf();
    for m in &migrated {
        for (rel, _) in &m.schemas {
            if dir.join(rel).exists() {
                problems.push(format!(
                    "{} exists already: not overwritten",
                    dir.join(rel).display()
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err((first_code.unwrap_or(Code::ConfigError), problems));
    }

    let mut doc = source.clone();
    doc["require_schemas"] = json!(true);
    if doc.get("$comment").is_none() {
        doc["$comment"] = json!(format!(
            "written by upm migrate from {}: python_path written in and pinned (where it does \
             not hold this config), private methods dropped, one schema per method derived \
             from its Python signature (review them)",
            config.path.display()
        ));
    }
    let mut reports = Map::new();
    for m in &migrated {
        doc["plugins"][&m.name] = m.entry.clone();
        reports.insert(m.name.clone(), m.report.clone());
    }
    if let Some(plugins) = doc["plugins"].as_object_mut() {
        plugins.retain(|name, _| !dropped.contains_key(name));
    }
    let written =
        write_all(&dir, &out, &doc, &migrated).map_err(|p| (Code::ConfigError, vec![p]))?;
    Ok(json!({
        "ok": true,
        "from": config.path,
        "config": out,
        "written": written,
        "plugins": reports,
        "dropped_plugins": dropped,
        "next": format!("upm check --config {}", out.display()),
    }))
}

/// The new config's path: beside the old one (its relative paths keep their meaning),
/// never over an existing file.
fn output_path(config: &Config, out: &Path) -> Result<PathBuf, String> {
    let out = std::path::absolute(out).map_err(|e| format!("--out {}: {e}", out.display()))?;
    let dir = out.parent().unwrap_or(Path::new("/"));
    let same = std::fs::canonicalize(dir).ok() == std::fs::canonicalize(&config.dir).ok();
    if !same {
        return Err(format!(
            "--out {} must be in the directory of the config it migrates ({}): its relative \
             paths are relative to that directory",
            out.display(),
            config.dir.display()
        ));
    }
    if out.exists() || out.symlink_metadata().is_ok() {
        return Err(format!(
            "--out {} exists already: not overwritten",
            out.display()
        ));
    }
    Ok(out)
}

fn migrate_plugin(
    session: &Session,
    config: &Config,
    name: &str,
    raw: &Value,
) -> Result<Migrated, Problems> {
    let at = format!("plugin \"{name}\"");
    let plugin = &config.plugins[name];
    let mut entry = raw.clone();
    let mut report = Map::new();
    if let Some(o) = entry.as_object_mut() {
        o.remove("allowed_methods");
    }
    if !plugin.private_methods.is_empty() {
        report.insert("dropped_private".into(), json!(plugin.private_methods));
    }
    // Names upm can never call (its config's warnings said so).
    let invalid: Vec<&str> = raw
        .get("allowed_methods")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|m| {
            !plugin.methods.contains_key(*m) && !plugin.private_methods.iter().any(|p| p == m)
        })
        .collect();
    if !invalid.is_empty() {
        report.insert("dropped_invalid_name".into(), json!(invalid));
    }
    let needing: Vec<String> = plugin
        .methods
        .iter()
        .filter(|(_, m)| m.schema.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let mut methods: Map<String, Value> = raw
        .get("methods")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut schemas = Vec::new();

    match &plugin.kind {
        PluginKind::Command { .. } => {
            if !needing.is_empty() {
                return Err((
                    Code::ConfigError,
                    vec![format!(
                        "{at}: a command plugin has no signature to derive a schema from: write \
                         one for {}",
                        needing.join(", ")
                    )],
                ));
            }
        }
        PluginKind::PythonClass {
            python_path,
            python_path_from,
            ..
        } => {
            if let PythonPathFrom::Environment(env) = python_path_from {
                if let Some(p) = &env.problem {
                    return Err((Code::PluginStartFailed, vec![format!("{at}: {p}")]));
                }
                if python_path.is_empty() {
                    return Err((
                        Code::PluginStartFailed,
                        vec![format!(
                            "{at}: the config has no python_path and PYTHONPATH gives no \
                             directory: set PYTHONPATH as the plugin's callers do"
                        )],
                    ));
                }
                entry["python_path"] = json!(python_path);
                report.insert("python_path_from".into(), env.report());
            }
            report.insert("python_path".into(), json!(python_path));
            if !needing.is_empty() {
                let resp = session.introspect(name, &needing);
                if !resp.success {
                    let code = resp
                        .data
                        .code
                        .and_then(Code::from_word)
                        .unwrap_or(Code::Internal);
                    let error = resp.data.error.clone().unwrap_or_default();
                    return Err((
                        code,
                        vec![format!("{at}: its signatures could not be read: {error}")],
                    ));
                }
                let found = resp.data.result.clone().unwrap_or(Value::Null);
                if let Some(e) = found.get("init_error").and_then(Value::as_str) {
                    report.insert(
                        "note".into(),
                        json!(format!(
                            "the class could not be instantiated in the sandbox ({e}): the \
                             signatures were read from the class"
                        )),
                    );
                }
                let mut not_found = Vec::new();
                for m in &needing {
                    let desc = &found["methods"][m];
                    if desc["found"] != Value::Bool(true) {
                        not_found.push(m.clone());
                        continue;
                    }
                    let mut schema = schema_for(name, m, desc).map_err(|e| {
                        (
                            Code::PluginFailed,
                            vec![format!("{at}, method \"{m}\": {e}")],
                        )
                    })?;
                    // UPM's package managers write into the project: with roots to bound
                    // it, the project_root a call names becomes its grant (issue 24).
                    if !plugin.grants_within.is_empty() {
                        schema["properties"]["project_root"][crate::schema::GRANT_KEYWORD] =
                            json!(PROJECT_ROOT_GRANT);
                        report.insert(
                            "project_root".into(),
                            json!(format!(
                                "\"{}\": \"{PROJECT_ROOT_GRANT}\" (the plugin sets \"grants_within\"): \
                                 a call's project_root under those roots is opened to the plugin",
                                crate::schema::GRANT_KEYWORD
                            )),
                        );
                    }
                    let rel = format!("{SCHEMA_DIR}/{name}.{m}.json");
                    methods.insert(m.clone(), json!({ "schema": rel }));
                    schemas.push((rel, schema));
                }
                if !not_found.is_empty() {
                    report.insert("dropped_not_found".into(), json!(not_found));
                }
            }
            match (&plugin.manifest_sha256, unpinnable(python_path, config)) {
                (Some(_), _) => {}
                (None, Some(why)) => {
                    report.insert("not_pinned".into(), json!(why));
                }
                (None, None) => {
                    let m = crate::integrity::manifest(python_path).map_err(|e| {
                        let f = crate::error::Failure::from(e);
                        (f.code, vec![format!("{at}: {}", f.message)])
                    })?;
                    entry["manifest_sha256"] = json!(m.digest);
                    report.insert("manifest_sha256".into(), json!(m.digest));
                }
            }
        }
    }
    if methods.is_empty() {
        return Err((
            Code::ConfigError,
            vec![format!("{at}: no method is left to whitelist")],
        ));
    }
    report.insert("methods".into(), json!(methods.keys().collect::<Vec<_>>()));
    report.insert(
        "schemas_derived".into(),
        json!(schemas.iter().map(|(r, _)| r).collect::<Vec<_>>()),
    );
    entry["methods"] = Value::Object(methods);
    Ok(Migrated {
        name: name.to_owned(),
        entry,
        schemas,
        report: Value::Object(report),
    })
}

/// Why a `python_path` cannot be pinned, if it cannot: a root that holds the config's
/// directory holds what changes after the pin (the new config and schemas migrate writes
/// there, the audit log every call appends to by default, any later edit of the config),
/// so the pin would refuse every call. Such a tree stays unpinned, and the report says so.
fn unpinnable(python_path: &[PathBuf], config: &Config) -> Option<String> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let log_dir = config.audit_path.parent().map(real);
    for root in python_path {
        let root_real = real(root);
        let holds = if real(&config.dir).starts_with(&root_real) {
            "this config (and the schemas written beside it)"
        } else if log_dir.as_ref().is_some_and(|d| d.starts_with(&root_real)) {
            "the audit log, which every call appends to"
        } else {
            continue;
        };
        return Some(format!(
            "{} holds {holds}: a pin of it would refuse every call once they change. Move the \
             plugin's code into a directory of its own, point python_path there and run \
             migrate again (or pin it by hand with manifest_sha256)",
            root.display()
        ));
    }
    None
}

/// Writes the schemas, checks each compiles, then the config; on any failure removes
/// what it wrote. Returns the files written.
fn write_all(
    dir: &Path,
    out: &Path,
    doc: &Value,
    migrated: &[Migrated],
) -> Result<Vec<PathBuf>, String> {
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let schema_dir = dir.join(SCHEMA_DIR);
        if migrated.iter().any(|m| !m.schemas.is_empty()) && !schema_dir.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&schema_dir)
                .map_err(|e| format!("{}: {e}", schema_dir.display()))?;
        }
        for m in migrated {
            for (rel, schema) in &m.schemas {
                let path = dir.join(rel);
                write_new(&path, &pretty(schema))?;
                written.push(path.clone());
                crate::schema::MethodSchema::load(&path).map_err(|e| {
                    format!("the derived schema {} is not usable: {e}", path.display())
                })?;
            }
        }
        write_new(out, &pretty(doc))?;
        written.push(out.to_path_buf());
        Ok(())
    })();
    match result {
        Ok(()) => Ok(written),
        Err(e) => {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            Err(e)
        }
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// A new file (never through a link, never over one), 0644, made durable.
fn write_new(path: &Path, text: &str) -> Result<(), String> {
    let mut f =
        crate::files::create_new(path, 0o644).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The JSON Schema of a call's args, `{"args": [...], "kwargs": {...}}` (and UPM's
/// `project_root` and `cache_dir`), from the runner's description of the signature:
/// each parameter typed by its hint, and every parameter without a default required,
/// passed by position or by name as Python allows it.
pub fn schema_for(plugin: &str, method: &str, desc: &Value) -> Result<Value, String> {
    let params = desc["params"]
        .as_array()
        .ok_or("the runner described no parameters")?;
    if params.len() > MAX_PARAMS {
        return Err(format!("more than {MAX_PARAMS} parameters"));
    }
    let mut positional = Vec::new();
    let mut rest_positional = None;
    let mut keywords = Map::new();
    let mut rest_keywords = None;
    let mut required = Vec::new();
    for p in params {
        let name = p["name"].as_str().ok_or("a parameter without a name")?;
        let ty = type_schema(&p["type"], 0);
        let has_default = p["default"] == Value::Bool(true);
        match p["kind"].as_str().unwrap_or("") {
            "positional_only" => {
                positional.push(ty);
                if !has_default {
                    required.push(by_position(positional.len()));
                }
            }
            "positional_or_keyword" => {
                positional.push(ty.clone());
                keywords.insert(name.to_owned(), ty);
                if !has_default {
                    required
                        .push(json!({ "anyOf": [by_position(positional.len()), by_name(name)] }));
                }
            }
            "keyword_only" => {
                keywords.insert(name.to_owned(), ty);
                if !has_default {
                    required.push(by_name(name));
                }
            }
            "var_positional" => rest_positional = Some(ty),
            "var_keyword" => rest_keywords = Some(ty),
            other => return Err(format!("parameter {name:?} of unknown kind {other:?}")),
        }
    }
    // UPM renamed a `version` kwarg to `version_constraint` before the call.
    if let Some(v) = keywords.get("version_constraint").cloned() {
        keywords.entry("version").or_insert(v);
        for r in &mut required {
            if *r == by_name("version_constraint") {
                *r = json!({ "anyOf": [by_name("version_constraint"), by_name("version")] });
            } else if let Some(alts) = r["anyOf"].as_array_mut() {
                if alts.contains(&by_name("version_constraint")) {
                    alts.push(by_name("version"));
                }
            }
        }
    }
    let mut args = json!({ "type": "array" });
    if !positional.is_empty() {
        args["prefixItems"] = Value::Array(positional);
    }
    args["items"] = rest_positional.unwrap_or(Value::Bool(false));
    let mut kwargs = json!({ "type": "object", "properties": keywords });
    kwargs["additionalProperties"] = rest_keywords.unwrap_or(Value::Bool(false));
    let signature =
        crate::error::clip(desc["signature"].as_str().unwrap_or(method).to_owned(), 500);
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("{plugin}.{method}"),
        "description": format!("Derived by upm migrate from the signature {signature}: review it."),
        "type": "object",
        "properties": {
            "args": args,
            "kwargs": kwargs,
            "project_root": { "type": ["string", "null"] },
            "cache_dir": { "type": ["string", "null"] }
        },
        "additionalProperties": false
    });
    if !required.is_empty() {
        schema["allOf"] = Value::Array(required);
    }
    Ok(schema)
}

/// At least `n` positional args.
fn by_position(n: usize) -> Value {
    json!({ "required": ["args"], "properties": { "args": { "minItems": n } } })
}

/// The kwarg `name`.
fn by_name(name: &str) -> Value {
    json!({ "required": ["kwargs"], "properties": { "kwargs": { "required": [name] } } })
}

/// One type of the runner's vocabulary (`{"t": ...}`) as a JSON Schema. Anything it
/// does not know, or nests too deep, accepts any value.
fn type_schema(t: &Value, depth: usize) -> Value {
    if depth > MAX_TYPE_DEPTH {
        return json!({});
    }
    let sub = |v: &Value| type_schema(v, depth + 1);
    match t["t"].as_str().unwrap_or("any") {
        simple @ ("string" | "integer" | "number" | "boolean" | "null") => {
            json!({ "type": simple })
        }
        "array" => json!({ "type": "array", "items": sub(&t["items"]) }),
        "tuple" => match t["items"].as_array() {
            Some(a) if !a.is_empty() => {
                let items: Vec<Value> = a.iter().map(sub).collect();
                let n = items.len();
                json!({ "type": "array", "prefixItems": items, "items": false, "minItems": n })
            }
            _ => json!({ "type": "array" }),
        },
        "object" => json!({ "type": "object", "additionalProperties": sub(&t["values"]) }),
        "union" => {
            let of: Vec<Value> = t["of"]
                .as_array()
                .map_or(Vec::new(), |a| a.iter().map(sub).collect());
            if of.is_empty() || of.iter().any(|s| *s == json!({})) {
                json!({})
            } else {
                json!({ "anyOf": of })
            }
        }
        "enum" => match t["values"].as_array() {
            Some(v) if !v.is_empty() && v.iter().all(|x| !x.is_object() && !x.is_array()) => {
                json!({ "enum": v })
            }
            _ => json!({}),
        },
        _ => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(params: Value) -> Value {
        json!({ "found": true, "signature": "install(...)", "params": params })
    }

    fn valid(schema: &Value, args: Value) -> bool {
        jsonschema::validator_for(schema).unwrap().is_valid(&args)
    }

    #[test]
    fn required_parameters_are_required_by_position_or_by_name() {
        let s = schema_for(
            "P",
            "install",
            &desc(json!([
                {"name": "package_name", "kind": "positional_or_keyword", "default": false, "type": {"t": "string"}},
                {"name": "version_constraint", "kind": "positional_or_keyword", "default": true,
                 "type": {"t": "union", "of": [{"t": "string"}, {"t": "null"}]}},
                {"name": "verbose", "kind": "keyword_only", "default": true, "type": {"t": "boolean"}},
            ])),
        )
        .unwrap();
        assert!(valid(&s, json!({"args": ["requests"]})));
        assert!(valid(
            &s,
            json!({"kwargs": {"package_name": "requests", "version": "1.0"}})
        ));
        assert!(valid(
            &s,
            json!({"args": ["r", null], "kwargs": {"verbose": true}, "project_root": "/p", "cache_dir": null})
        ));
        assert!(!valid(&s, json!({})), "package_name is required");
        assert!(!valid(&s, json!({"args": [1]})), "a string");
        assert!(
            !valid(&s, json!({"args": ["a", "b", "c"]})),
            "two positional at most"
        );
        assert!(!valid(&s, json!({"args": ["a"], "kwargs": {"nope": 1}})));
        assert!(!valid(&s, json!({"args": ["a"], "extra": 1})));
    }

    #[test]
    fn variadic_and_keyword_only_parameters() {
        let s = schema_for(
            "P",
            "m",
            &desc(json!([
                {"name": "a", "kind": "positional_only", "default": false, "type": {"t": "integer"}},
                {"name": "rest", "kind": "var_positional", "default": false, "type": {"t": "any"}},
                {"name": "k", "kind": "keyword_only", "default": false,
                 "type": {"t": "array", "items": {"t": "enum", "values": ["x", "y"]}}},
                {"name": "more", "kind": "var_keyword", "default": false, "type": {"t": "any"}},
            ])),
        )
        .unwrap();
        assert!(valid(
            &s,
            json!({"args": [1, "anything", {}], "kwargs": {"k": ["x"], "z": 2}})
        ));
        assert!(
            !valid(&s, json!({"kwargs": {"k": ["x"]}})),
            "a is positional only"
        );
        assert!(!valid(&s, json!({"args": [1], "kwargs": {"k": ["q"]}})));
        assert!(!valid(&s, json!({"args": [1]})), "k is required");
    }

    #[test]
    fn unknown_or_hostile_descriptions_become_permissive_types_or_errors() {
        assert_eq!(type_schema(&json!({"t": "$ref", "items": 1}), 0), json!({}));
        let mut deep = json!({"t": "string"});
        for _ in 0..100 {
            deep = json!({"t": "array", "items": deep});
        }
        let s = type_schema(&deep, 0).to_string();
        assert!(s.matches("array").count() <= MAX_TYPE_DEPTH + 1, "{s}");
        assert!(schema_for("P", "m", &json!({"params": "x"})).is_err());
        let many: Vec<Value> = (0..300)
            .map(|i| json!({"name": format!("p{i}"), "kind": "keyword_only", "default": true}))
            .collect();
        assert!(schema_for("P", "m", &desc(json!(many))).is_err());
    }
}
