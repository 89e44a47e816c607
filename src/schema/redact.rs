//! Replacing secret values by their digest before args reach the audit log.
//!
//! The walk is static (it reads the schema, it does not evaluate it), so it also works on
//! args that failed validation, and it errs towards redacting: every branch of
//! `anyOf`/`oneOf`/`if` counts, `contains` and `unevaluated*` count for every item or key,
//! and anything it cannot follow redacts the whole value.

use std::collections::{HashMap, HashSet};

use jsonschema::{Draft, Validator};
use serde_json::{Map, Value};

use super::index::{id_keyword, is_secret, resolve, Index, REF_KEYWORDS};
use crate::canonical::digest_hex;

/// Deeper args are digested whole rather than walked.
const MAX_INSTANCE_DEPTH: usize = 256;
/// More subschemas than this applying to one value (a `$ref` cycle, or a blow-up) is doubt.
const MAX_SCHEMAS_PER_VALUE: usize = 1024;

/// One subschema, with the base URI its relative references resolve against.
#[derive(Clone, Copy)]
pub(super) struct Loc<'s> {
    pub node: &'s Value,
    pub base: &'s str,
    pub draft: Draft,
}

impl<'s> Loc<'s> {
    pub fn at(self, node: &'s Value) -> Loc<'s> {
        Loc { node, ..self }
    }
}

pub(super) struct Redactor<'s> {
    pub index: &'s Index,
    /// `patternProperties` pattern → its compiled matcher (`None`: could not compile).
    pub patterns: &'s HashMap<String, Option<Validator>>,
}

/// What stands in for a secret: its digest, so equal secrets can still be correlated.
pub(super) fn redacted(value: &Value) -> Value {
    let mut map = Map::new();
    map.insert("sha256".to_owned(), Value::String(digest_hex(value)));
    Value::Object(map)
}

impl<'s> Redactor<'s> {
    pub fn redact_root(&self, args: &Value) -> Value {
        let Some(root) = self.index.docs.first() else {
            return redacted(args);
        };
        let loc = Loc {
            node: &root.value,
            base: &root.uri,
            draft: root.draft,
        };
        self.redact(args, vec![loc], 0)
    }

    fn redact(&self, value: &Value, schemas: Vec<Loc<'s>>, depth: usize) -> Value {
        if schemas.is_empty() {
            return value.clone();
        }
        let Some(applied) = self.expand(value, schemas) else {
            return redacted(value);
        };
        if depth >= MAX_INSTANCE_DEPTH {
            return redacted(value);
        }
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let sub = self.property_schemas(&applied, k);
                        (k.clone(), self.redact(v, sub, depth + 1))
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.redact(v, item_schemas(&applied, i), depth + 1))
                    .collect(),
            ),
            _ => value.clone(),
        }
    }

    /// Every subschema that applies to `instance` in place (through references and
    /// in-place applicators), or `None` if one marks it secret or cannot be followed.
    fn expand(&self, instance: &Value, start: Vec<Loc<'s>>) -> Option<Vec<Loc<'s>>> {
        let mut stack = start;
        let mut seen = HashSet::new();
        let mut applied = Vec::new();
        while let Some(loc) = stack.pop() {
            if !seen.insert(std::ptr::from_ref(loc.node)) {
                continue;
            }
            if seen.len() > MAX_SCHEMAS_PER_VALUE {
                return None;
            }
            let Value::Object(map) = loc.node else {
                continue; // boolean schemas carry no annotations
            };
            if is_secret(map) {
                return None;
            }
            let loc = self.rebase(loc, map);
            for keyword in REF_KEYWORDS {
                match map.get(*keyword) {
                    None => {}
                    Some(Value::String(reference)) => stack.push(self.follow(loc, reference)?),
                    Some(_) => return None,
                }
            }
            for keyword in ["allOf", "anyOf", "oneOf"] {
                if let Some(Value::Array(branches)) = map.get(keyword) {
                    stack.extend(branches.iter().map(|b| loc.at(b)));
                }
            }
            for keyword in ["if", "then", "else"] {
                if let Some(sub) = map.get(keyword) {
                    stack.push(loc.at(sub));
                }
            }
            if let Value::Object(present) = instance {
                for keyword in ["dependentSchemas", "dependencies"] {
                    if let Some(Value::Object(deps)) = map.get(keyword) {
                        let triggered = deps.iter().filter(|(k, _)| present.contains_key(*k));
                        stack.extend(triggered.map(|(_, sub)| loc.at(sub)));
                    }
                }
            }
            applied.push(loc);
        }
        Some(applied)
    }

    /// Moves into the resource a subschema's `$id` declares, as the scan at load did.
    pub fn rebase(&self, loc: Loc<'s>, map: &Map<String, Value>) -> Loc<'s> {
        let Some(Value::String(id)) = map.get(id_keyword(loc.draft)) else {
            return loc;
        };
        if id.starts_with('#') {
            return loc;
        }
        let Ok(uri) = resolve(loc.base, id) else {
            return loc;
        };
        match self
            .index
            .resources
            .get_key_value(uri.strip_fragment().as_str())
        {
            Some((key, _)) => Loc { base: key, ..loc },
            None => loc,
        }
    }

    /// The subschema a reference points at, if it can be found among the loaded documents.
    pub fn follow(&self, loc: Loc<'s>, reference: &str) -> Option<Loc<'s>> {
        let uri = resolve(loc.base, reference).ok()?;
        let (resource, target) = self
            .index
            .resources
            .get_key_value(uri.strip_fragment().as_str())?;
        let doc = self.index.docs.get(target.doc)?;
        let root = doc.value.pointer(&target.pointer)?;
        let fragment = uri
            .fragment()
            .map(|f| f.decode().to_string_lossy().into_owned())
            .unwrap_or_default();
        let node = if fragment.is_empty() {
            root
        } else if fragment.starts_with('/') {
            root.pointer(&fragment)?
        } else {
            let anchor = self.index.anchors.get(&format!("{resource}#{fragment}"))?;
            self.index
                .docs
                .get(anchor.doc)?
                .value
                .pointer(&anchor.pointer)?
        };
        Some(Loc {
            node,
            base: resource,
            draft: doc.draft,
        })
    }

    fn property_schemas(&self, applied: &[Loc<'s>], key: &str) -> Vec<Loc<'s>> {
        let mut out = Vec::new();
        for loc in applied {
            let Value::Object(map) = loc.node else {
                continue;
            };
            let mut matched = false;
            if let Some(sub) = map.get("properties").and_then(|p| p.get(key)) {
                out.push(loc.at(sub));
                matched = true;
            }
            if let Some(Value::Object(patterns)) = map.get("patternProperties") {
                for (pattern, sub) in patterns {
                    if self.pattern_matches(pattern, key) {
                        out.push(loc.at(sub));
                        matched = true;
                    }
                }
            }
            if !matched {
                for keyword in ["additionalProperties", "unevaluatedProperties"] {
                    if let Some(sub) = map.get(keyword) {
                        out.push(loc.at(sub));
                    }
                }
            }
        }
        out
    }

    /// A pattern we cannot evaluate counts as matching.
    fn pattern_matches(&self, pattern: &str, key: &str) -> bool {
        match self.patterns.get(pattern) {
            Some(Some(matcher)) => matcher.is_valid(&Value::String(key.to_owned())),
            _ => true,
        }
    }
}

fn item_schemas<'s>(applied: &[Loc<'s>], i: usize) -> Vec<Loc<'s>> {
    let mut out = Vec::new();
    for loc in applied {
        let Value::Object(map) = loc.node else {
            continue;
        };
        let mut covered = 0;
        if let Some(Value::Array(prefix)) = map.get("prefixItems") {
            if let Some(sub) = prefix.get(i) {
                out.push(loc.at(sub));
            }
            covered = prefix.len();
        }
        match map.get("items") {
            // Drafts before 2020-12: an array of `items` is a tuple.
            Some(Value::Array(tuple)) => match tuple.get(i) {
                Some(sub) => out.push(loc.at(sub)),
                None => out.extend(map.get("additionalItems").map(|s| loc.at(s))),
            },
            Some(sub) if i >= covered => out.push(loc.at(sub)),
            _ => {}
        }
        for keyword in ["contains", "unevaluatedItems"] {
            if let Some(sub) = map.get(keyword) {
                out.push(loc.at(sub));
            }
        }
    }
    out
}
