//! One self-contained document for a schema made of several files: what a client that
//! turns a method's schema into a tool definition needs (`upm list`, an MCP server).
//!
//! Every other file the schema reaches through `$ref` is put under the root's `$defs`
//! (`definitions` before draft 2019-09), keyed by its file name, and every reference,
//! in the root and in those files alike, becomes a JSON Pointer into the one document
//! (`#/$defs/name/...`): the form tool-definition consumers resolve, with no base URI
//! and no file path left in it. Anchors and nested `$id`s, whose only use was to be
//! referenced, are dropped (two files may reuse one anchor name; a nested `$id` would
//! change what a pointer is relative to). `$dynamicRef` and `$recursiveRef` become plain
//! `$ref`s to their static target: a bundle does not extend a recursive schema.

use std::collections::HashSet;
use std::fmt::Write as _;

use jsonschema::Draft;
use serde_json::{Map, Value};

use super::index::{
    draft_name, escape_pointer, id_keyword, resolve, Index, Target, DATA_KEYWORDS, REF_KEYWORDS,
    SCHEMA_MAPS,
};
use super::SchemaError;

/// Keywords that only name a place to be referenced: gone once every reference is a pointer.
const NAMING_KEYWORDS: &[&str] = &["$anchor", "$dynamicAnchor", "$recursiveAnchor"];

pub(super) fn bundle(index: &Index) -> Result<Value, SchemaError> {
    let root = &index.docs[0];
    let defs = if matches!(root.draft, Draft::Draft4 | Draft::Draft6 | Draft::Draft7) {
        "definitions"
    } else {
        "$defs"
    };
    let mut taken: HashSet<String> = root
        .value
        .get(defs)
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    // Where each document lands: the root at "", each other under the root's defs.
    let mut prefixes = vec![String::new()];
    let mut keys = Vec::new();
    for doc in &index.docs[1..] {
        if doc.draft != root.draft {
            return Err(SchemaError::Bundle {
                path: root.path.clone(),
                message: format!(
                    "{} is a {} schema and the root a {} one: one document cannot hold both",
                    doc.path.display(),
                    draft_name(doc.draft),
                    draft_name(root.draft)
                ),
            });
        }
        let stem = doc
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut key = if stem.is_empty() {
            "schema".to_owned()
        } else {
            stem
        };
        let base = key.clone();
        let mut n = 2;
        while !taken.insert(key.clone()) {
            key = format!("{base}_{n}");
            n += 1;
        }
        prefixes.push(format!("/{defs}/{}", escape_pointer(&key)));
        keys.push(key);
    }

    let rewrite = |doc: usize| -> Result<Value, SchemaError> {
        let d = &index.docs[doc];
        let mut value = d.value.clone();
        let mut w = Rewriter {
            index,
            prefixes: &prefixes,
            draft: d.draft,
            error: None,
        };
        w.schema(&mut value, &d.uri, true, doc == 0);
        match w.error {
            Some(message) => Err(SchemaError::Bundle {
                path: d.path.clone(),
                message,
            }),
            None => Ok(value),
        }
    };
    let mut out = rewrite(0)?;
    if keys.is_empty() {
        return Ok(out);
    }
    let mut embedded = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut v = rewrite(i + 1)?;
        if let Some(m) = v.as_object_mut() {
            m.remove("$schema");
        }
        embedded.push((key.clone(), v));
    }
    let Some(obj) = out.as_object_mut() else {
        // A boolean root references nothing.
        return Ok(out);
    };
    let slot = obj.entry(defs).or_insert_with(|| Value::Object(Map::new()));
    if let Some(m) = slot.as_object_mut() {
        m.extend(embedded);
    }
    Ok(out)
}

struct Rewriter<'a> {
    index: &'a Index,
    prefixes: &'a [String],
    draft: Draft,
    error: Option<String>,
}

impl Rewriter<'_> {
    /// Rewrites the references of one subschema (and those below it) in place.
    fn schema(&mut self, value: &mut Value, base: &str, doc_root: bool, keep_id: bool) {
        let Value::Object(map) = value else {
            return;
        };
        let base = self.enter(map, base, doc_root && keep_id);
        for keyword in REF_KEYWORDS {
            let Some(Value::String(reference)) = map.remove(*keyword) else {
                continue;
            };
            match self.pointer(&base, &reference) {
                Ok(p) => {
                    map.insert("$ref".to_owned(), Value::String(p));
                }
                Err(e) => {
                    self.error.get_or_insert(e);
                    map.insert((*keyword).to_owned(), Value::String(reference));
                }
            }
        }
        for k in NAMING_KEYWORDS {
            map.remove(*k);
        }
        for (keyword, child) in map.iter_mut() {
            if DATA_KEYWORDS.contains(&keyword.as_str()) {
                continue;
            }
            if SCHEMA_MAPS.contains(&keyword.as_str()) {
                if let Value::Object(named) = child {
                    for sub in named.values_mut() {
                        self.schema(sub, &base, false, false);
                    }
                }
                continue;
            }
            match child {
                Value::Object(_) => self.schema(child, &base, false, false),
                Value::Array(items) => {
                    for item in items {
                        self.schema(item, &base, false, false);
                    }
                }
                _ => {}
            }
        }
    }

    /// The base URI inside this subschema; its `$id` (or draft 4's `id`) is dropped
    /// unless it is the root document's own.
    fn enter(&mut self, map: &mut Map<String, Value>, base: &str, keep: bool) -> String {
        let keyword = id_keyword(self.draft);
        let Some(Value::String(id)) = map.get(keyword).cloned() else {
            return base.to_owned();
        };
        if !keep {
            map.remove(keyword);
        }
        if id.starts_with('#') {
            // Drafts 4-7: a plain-name anchor, not a new base.
            return base.to_owned();
        }
        match resolve(base, &id) {
            Ok(uri) => uri.strip_fragment().as_str().to_owned(),
            Err(e) => {
                self.error.get_or_insert(e);
                base.to_owned()
            }
        }
    }

    /// `#<pointer>` into the bundle for a reference met at `base`.
    fn pointer(&self, base: &str, reference: &str) -> Result<String, String> {
        let target = resolve(base, reference)?;
        let resource = target.strip_fragment().as_str().to_owned();
        let fragment = target
            .fragment()
            .map(|f| f.decode().to_string_lossy().into_owned())
            .unwrap_or_default();
        let unresolved = || format!("$ref {reference:?} reaches nothing upm loaded");
        let at: Target = if fragment.is_empty() || fragment.starts_with('/') {
            let t = self.index.resources.get(&resource).ok_or_else(unresolved)?;
            Target {
                doc: t.doc,
                pointer: format!("{}{fragment}", t.pointer),
            }
        } else {
            self.anchor(&resource, &fragment).ok_or_else(unresolved)?
        };
        let pointer = format!("{}{}", self.prefixes[at.doc], at.pointer);
        Ok(format!("#{}", encode_fragment(&pointer)))
    }
}

impl Rewriter<'_> {
    /// An anchor of a resource. A file whose root declares an `$id` is one resource
    /// known by two URIs (its file's and its `$id`): its anchors are under the latter.
    fn anchor(&self, resource: &str, name: &str) -> Option<Target> {
        if let Some(t) = self.index.anchors.get(&format!("{resource}#{name}")) {
            return Some(t.clone());
        }
        let at = self.index.resources.get(resource)?;
        self.index.anchors.iter().find_map(|(key, t)| {
            let (base, anchor) = key.rsplit_once('#')?;
            let same = self
                .index
                .resources
                .get(base)
                .is_some_and(|r| r.doc == at.doc && r.pointer == at.pointer);
            (anchor == name && same).then(|| t.clone())
        })
    }
}

/// A JSON Pointer as a URI fragment: what a fragment may not hold, percent-encoded.
fn encode_fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A bundled schema made the one property `key` of an object schema: for a client that
/// wants an object at the root (an MCP tool's `inputSchema` and `outputSchema`) of a
/// method whose args or result are not objects. `$schema` and the definitions move up
/// to the new root (so every `#/$defs/...` pointer still holds, and clients that only
/// resolve definitions at the root find them), the old root's `$id` is dropped, and
/// every other reference into the old root now points under the property.
pub(super) fn nest(bundled: Value, key: &str) -> Value {
    let mut root = Map::new();
    let mut inner = bundled;
    let mut defs = Vec::new();
    if let Value::Object(m) = &mut inner {
        if let Some(s) = m.remove("$schema") {
            root.insert("$schema".to_owned(), s);
        }
        let draft4 = root
            .get("$schema")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("draft-04"));
        m.remove("$id");
        if draft4 {
            m.remove("id");
        }
        for k in ["$defs", "definitions"] {
            if let Some(d) = m.remove(k) {
                defs.push((k, d));
            }
        }
    }
    let under = format!("#/properties/{}", super::index::escape_pointer(key));
    repoint(&mut inner, &under);
    for (_, d) in &mut defs {
        if let Value::Object(named) = d {
            for sub in named.values_mut() {
                repoint(sub, &under);
            }
        }
    }
    root.insert("type".to_owned(), Value::from("object"));
    let mut props = Map::new();
    props.insert(key.to_owned(), inner);
    root.insert("properties".to_owned(), Value::Object(props));
    root.insert("required".to_owned(), Value::from(vec![key.to_owned()]));
    root.insert("additionalProperties".to_owned(), Value::Bool(false));
    for (k, d) in defs {
        root.insert(k.to_owned(), d);
    }
    Value::Object(root)
}

/// Every `$ref` of a bundled subschema (all are `#<pointer>`) that pointed into the old
/// root, other than into its definitions (moved up with it), now points under `under`.
fn repoint(value: &mut Value, under: &str) {
    let Value::Object(map) = value else { return };
    if let Some(Value::String(r)) = map.get_mut("$ref") {
        let into_defs = ["#/$defs", "#/definitions"].iter().any(|d| {
            r.strip_prefix(d)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if let (Some(pointer), false) = (r.strip_prefix('#'), into_defs) {
            *r = format!("{under}{pointer}");
        }
    }
    for (keyword, child) in map.iter_mut() {
        if DATA_KEYWORDS.contains(&keyword.as_str()) || keyword == "$ref" {
            continue;
        }
        if SCHEMA_MAPS.contains(&keyword.as_str()) {
            if let Value::Object(named) = child {
                for sub in named.values_mut() {
                    repoint(sub, under);
                }
            }
            continue;
        }
        match child {
            Value::Object(_) => repoint(child, under),
            Value::Array(items) => {
                for item in items {
                    repoint(item, under);
                }
            }
            _ => {}
        }
    }
}
