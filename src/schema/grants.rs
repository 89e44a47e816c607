//! Which arguments a method's schema marks as paths the plugin may use for one call:
//! `"x-upm-grant": "read"` or `"write"` on a string property.
//!
//! Found statically, from the schema alone, so that `upm check` and `upm list` can say
//! which arguments are grants before any call: from the root, through `properties`,
//! with `$ref` and `allOf` followed (the subschemas that always apply to the same
//! value). An `x-upm-grant` anywhere else (under `items`, `anyOf`, `patternProperties`,
//! `additionalProperties`, ...) would grant depending on which branch matched, and is a
//! config error rather than a guess. The marked subschema itself must say `"type":
//! "string"` (or `["string", "null"]`: null grants nothing).

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::index::{Index, REF_KEYWORDS};
use super::redact::{Loc, Redactor};
use super::SchemaError;

/// The annotation.
pub const KEYWORD: &str = "x-upm-grant";
/// At most this many grant-bearing arguments per method: the sandbox's init keeps a
/// descriptor per writable grant in a fixed array.
pub const MAX_GRANTS: usize = 16;
/// Deeper than this many nested properties, the walk stops (and a site it did not
/// reach is an error; a recursive schema marks more arguments than [`MAX_GRANTS`]).
const MAX_DEPTH: usize = 32;
/// Subschemas the walk visits at most (a recursive schema branches at every level).
const MAX_VISITS: usize = 4096;

/// One argument the schema marks as a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantArg {
    /// Where the value is in the args: object keys from the root (`["kwargs", "path"]`).
    pub keys: Vec<String>,
    /// `"write"` (read and write) rather than `"read"`.
    pub write: bool,
}

impl GrantArg {
    /// The argument as a JSON Pointer into the args (`/kwargs/path`), as violations name it.
    pub fn pointer(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("/{}", super::index::escape_pointer(k)))
            .collect()
    }

    pub fn access(&self) -> &'static str {
        if self.write {
            "write"
        } else {
            "read"
        }
    }

    /// The value at this argument in `args`, if there is one.
    pub fn value<'a>(&self, args: &'a Value) -> Option<&'a Value> {
        self.keys.iter().try_fold(args, |v, k| v.get(k))
    }
}

/// Every argument the schema marks, or why the marks cannot be honoured.
pub(super) fn find(index: &Index) -> Result<Vec<GrantArg>, SchemaError> {
    if index.grant_sites.is_empty() {
        return Ok(Vec::new());
    }
    let redactor = Redactor {
        index,
        patterns: &std::collections::HashMap::new(),
    };
    let mut walk = Walk {
        redactor: &redactor,
        found: Vec::new(),
        reached: HashSet::new(),
        problem: None,
        budget: MAX_VISITS,
    };
    let root = index
        .docs
        .first()
        .ok_or_else(|| bad(index, "no schema document"))?;
    let loc = Loc {
        node: &root.value,
        base: &root.uri,
        draft: root.draft,
    };
    walk.visit(vec![loc], &mut Vec::new());
    if let Some(p) = walk.problem {
        return Err(bad(index, &p));
    }
    for site in &index.grant_sites {
        let doc = &index.docs[site.doc];
        let node = doc.value.pointer(&site.pointer);
        if !node.is_some_and(|n| walk.reached.contains(&std::ptr::from_ref(n))) {
            return Err(bad(
                index,
                &format!(
                    "\"{KEYWORD}\" at {}#{} is not on a property the args reach from the \
                     schema's root through \"properties\" (with \"$ref\" and \"allOf\"): upm \
                     grants only such arguments, never one under items, anyOf, oneOf, \
                     if/then/else, patternProperties or additionalProperties",
                    doc.path.display(),
                    site.pointer
                ),
            ));
        }
    }
    let mut found: Vec<GrantArg> = Vec::new();
    for g in walk.found {
        match found.iter().find(|f| f.keys == g.keys) {
            Some(f) if f.write != g.write => {
                return Err(bad(
                    index,
                    &format!(
                        "the argument {} is marked both \"read\" and \"write\"",
                        g.pointer()
                    ),
                ))
            }
            Some(_) => {}
            None => found.push(g),
        }
    }
    found.sort_by(|a, b| a.keys.cmp(&b.keys));
    if found.len() > MAX_GRANTS {
        return Err(bad(
            index,
            &format!(
                "{} arguments carry \"{KEYWORD}\"; at most {MAX_GRANTS} can",
                found.len()
            ),
        ));
    }
    Ok(found)
}

fn bad(index: &Index, message: &str) -> SchemaError {
    SchemaError::Grant {
        path: index
            .docs
            .first()
            .map(|d| d.path.clone())
            .unwrap_or_default(),
        message: message.to_owned(),
    }
}

struct Walk<'s, 'r> {
    redactor: &'r Redactor<'s>,
    found: Vec<GrantArg>,
    /// Every subschema met, by address (compared with the index's grant sites).
    reached: HashSet<*const Value>,
    problem: Option<String>,
    /// Subschemas still to visit before the walk gives up.
    budget: usize,
}

impl<'s> Walk<'s, '_> {
    /// The subschemas in `start` apply to the value at `keys`.
    fn visit(&mut self, start: Vec<Loc<'s>>, keys: &mut Vec<String>) {
        if self.problem.is_some() || keys.len() > MAX_DEPTH {
            return;
        }
        let applied = self.expand(start);
        if self.budget == 0 {
            self.problem = Some(format!(
                "the schema is too large or too recursive to find its \"{KEYWORD}\" \
                 arguments (more than {MAX_VISITS} subschemas on the way)"
            ));
            return;
        }
        let mut children: Vec<(String, Vec<Loc<'s>>)> = Vec::new();
        for loc in &applied {
            let Value::Object(map) = loc.node else {
                continue;
            };
            if let Some(mark) = map.get(KEYWORD) {
                let at = GrantArg {
                    keys: keys.clone(),
                    write: false,
                };
                match grant_of(mark, map) {
                    Ok(write) => self.found.push(GrantArg { write, ..at }),
                    Err(why) => {
                        self.problem = Some(format!("the argument {}: {why}", at.pointer()));
                        return;
                    }
                }
            }
            if let Some(Value::Object(props)) = map.get("properties") {
                for (name, sub) in props {
                    match children.iter_mut().find(|(n, _)| n == name) {
                        Some((_, subs)) => subs.push(loc.at(sub)),
                        None => children.push((name.clone(), vec![loc.at(sub)])),
                    }
                }
            }
        }
        for (name, subs) in children {
            keys.push(name);
            self.visit(subs, keys);
            keys.pop();
        }
    }

    /// Every subschema that applies in place: through `$ref`s and `allOf`.
    fn expand(&mut self, start: Vec<Loc<'s>>) -> Vec<Loc<'s>> {
        let mut stack = start;
        let mut seen = HashSet::new();
        let mut applied = Vec::new();
        while let Some(loc) = stack.pop() {
            if !seen.insert(std::ptr::from_ref(loc.node)) {
                continue;
            }
            if self.budget == 0 {
                break;
            }
            self.budget -= 1;
            self.reached.insert(std::ptr::from_ref(loc.node));
            let Value::Object(map) = loc.node else {
                continue;
            };
            let loc = self.redactor.rebase(loc, map);
            for keyword in REF_KEYWORDS {
                if let Some(Value::String(reference)) = map.get(*keyword) {
                    if let Some(target) = self.redactor.follow(loc, reference) {
                        stack.push(target);
                    }
                }
            }
            if let Some(Value::Array(branches)) = map.get("allOf") {
                stack.extend(branches.iter().map(|b| loc.at(b)));
            }
            applied.push(loc);
        }
        applied
    }
}

/// `"read"` or `"write"`, on a subschema that only admits strings (and null).
fn grant_of(mark: &Value, map: &Map<String, Value>) -> Result<bool, String> {
    let write = match mark.as_str() {
        Some("read") => false,
        Some("write") => true,
        _ => {
            return Err(format!(
                "\"{KEYWORD}\" must be \"read\" or \"write\", not {mark}"
            ))
        }
    };
    let string_only = match map.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => {
            ts.iter().any(|t| t == "string") && ts.iter().all(|t| t == "string" || t == "null")
        }
        _ => false,
    };
    if !string_only {
        return Err(format!(
            "a subschema with \"{KEYWORD}\" must say \"type\": \"string\" (or [\"string\", \
             \"null\"]): the argument is a path"
        ));
    }
    Ok(write)
}

#[cfg(test)]
mod tests {
    use super::super::{MethodSchema, SchemaError};
    use serde_json::{json, Value};

    fn grants_of(schema: Value) -> Result<Vec<(String, &'static str)>, String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        std::fs::write(&p, schema.to_string()).unwrap();
        let checked = MethodSchema::check(&p);
        let loaded = MethodSchema::load(&p).map(|s| s.grants().to_vec());
        match (checked, loaded) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "check and load must agree");
                Ok(a.iter().map(|g| (g.pointer(), g.access())).collect())
            }
            (Err(SchemaError::Grant { message, .. }), Err(SchemaError::Grant { .. })) => {
                Err(message)
            }
            (a, b) => panic!("unexpected: {a:?} / {b:?}"),
        }
    }

    #[test]
    fn finds_marked_properties_through_properties_refs_and_all_of() {
        let path = json!({ "type": "string", "x-upm-grant": "read" });
        let found = grants_of(json!({
            "type": "object",
            "$defs": { "out": { "type": ["string", "null"], "x-upm-grant": "write" } },
            "properties": {
                "src": path,
                "kwargs": { "type": "object", "properties": { "dst": { "$ref": "#/$defs/out" } } },
                "plain": { "type": "string" }
            },
            "allOf": [ { "properties": { "a/b": path } } ]
        }))
        .unwrap();
        assert_eq!(
            found,
            [
                ("/a~1b".to_owned(), "read"),
                ("/kwargs/dst".to_owned(), "write"),
                ("/src".to_owned(), "read")
            ]
        );
        assert_eq!(grants_of(json!({"type": "object"})).unwrap(), []);
    }

    #[test]
    fn marks_it_cannot_honour_are_config_errors() {
        let mark = json!({ "type": "string", "x-upm-grant": "read" });
        for (schema, needle) in [
            (
                json!({ "anyOf": [ { "properties": { "p": mark } } ] }),
                "not on a property",
            ),
            (json!({ "items": mark }), "not on a property"),
            (json!({ "additionalProperties": mark }), "not on a property"),
            (
                json!({ "patternProperties": { "^p": mark } }),
                "not on a property",
            ),
            (
                json!({ "properties": { "p": { "type": "string", "x-upm-grant": "rw" } } }),
                "\"read\" or \"write\"",
            ),
            (
                json!({ "properties": { "p": { "x-upm-grant": "read" } } }),
                "\"type\": \"string\"",
            ),
            (
                json!({ "properties": { "p": { "type": ["string", "integer"], "x-upm-grant": "read" } } }),
                "\"type\": \"string\"",
            ),
            (
                json!({ "properties": { "p": mark }, "allOf": [ { "properties": { "p": { "type": "string", "x-upm-grant": "write" } } } ] }),
                "both \"read\" and \"write\"",
            ),
            (
                json!({ "$defs": { "n": { "properties": { "p": mark, "next": { "$ref": "#/$defs/n" } } } }, "$ref": "#/$defs/n" }),
                "at most",
            ),
        ] {
            let e = grants_of(schema.clone()).expect_err(&schema.to_string());
            assert!(e.contains(needle), "{schema}: {e}");
        }
    }
}
