//! Loading a schema and every local file it reaches through `$ref`, before the validator
//! is built: the validator then only ever sees documents we already hold, so no reference
//! can reach the network, and the redactor can follow the same references.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use jsonschema::{Draft, Uri};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::SchemaError;

/// A schema file larger than this is refused: schemas are small, and reading must not
/// be turned into a memory exhaustion.
const MAX_SCHEMA_FILE_BYTES: u64 = 4 << 20;
/// Refuse reference graphs that fan out absurdly.
const MAX_SCHEMA_FILES: usize = 256;

/// Keywords whose values are data, never subschemas: a `$ref` inside them is not a reference.
pub(super) const DATA_KEYWORDS: &[&str] = &["const", "enum", "examples", "default"];
/// Keywords whose values map names to subschemas (the names are not keywords).
pub(super) const SCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
];
/// Keywords that point at another schema by URI.
pub(super) const REF_KEYWORDS: &[&str] = &["$ref", "$dynamicRef", "$recursiveRef"];

/// One schema file.
pub(super) struct Doc {
    pub path: PathBuf,
    /// Normalized `file://` URI, as the validator's registry spells it.
    pub uri: String,
    pub value: Value,
    pub draft: Draft,
    /// SHA-256 hex of the exact bytes that were parsed.
    pub sha256: String,
}

/// A place inside one of the documents.
#[derive(Clone, Debug)]
pub(super) struct Target {
    pub doc: usize,
    /// JSON Pointer from the document root.
    pub pointer: String,
}

/// Every document a schema is made of, with its resources (`$id`s and files) and anchors.
pub(super) struct Index {
    pub docs: Vec<Doc>,
    /// Resource URI (no fragment) → where it lives.
    pub resources: HashMap<String, Target>,
    /// `"<resource URI>#<anchor name>"` → where it lives.
    pub anchors: HashMap<String, Target>,
    /// Every `patternProperties` pattern, so the redactor can compile them once.
    pub patterns: Vec<String>,
    /// Whether any subschema marks a value secret.
    pub has_secrets: bool,
    /// Every subschema that carries `x-upm-grant` (see `grants`).
    pub grant_sites: Vec<Target>,
}

/// A reference met while scanning, resolved once all files are loaded.
struct PendingRef {
    referrer: usize,
    reference: String,
    base: String,
}

impl Index {
    /// Loads `path` and, transitively, every local file its references reach.
    pub fn load(path: &Path) -> Result<Index, SchemaError> {
        let abs = std::fs::canonicalize(path).map_err(|source| SchemaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (value, sha256) = read_json(&abs)?;
        let draft = detect_draft(&abs, &value, Draft::default())?;
        let mut index = Index {
            docs: Vec::new(),
            resources: HashMap::new(),
            anchors: HashMap::new(),
            patterns: Vec::new(),
            has_secrets: false,
            grant_sites: Vec::new(),
        };
        let mut pending = index.add_doc(abs, value, draft, sha256)?;
        let mut deferred = Vec::new();
        while let Some(r) = pending.pop() {
            let target = resolve(&r.base, &r.reference)
                .map_err(|message| index.bad_uri(r.referrer, "$ref", &r.reference, message))?;
            if index
                .resources
                .contains_key(target.strip_fragment().as_str())
            {
                continue;
            }
            match local_path(&target) {
                Some(file) => pending.extend(index.load_referenced(&r, file)?),
                // An embedded `$id` in a file not loaded yet may still define it.
                None => deferred.push((r, target)),
            }
        }
        for (r, target) in deferred {
            if !index
                .resources
                .contains_key(target.strip_fragment().as_str())
            {
                return Err(SchemaError::NonLocalReference {
                    path: index.docs[r.referrer].path.clone(),
                    reference: r.reference,
                    target: target.as_str().to_owned(),
                });
            }
        }
        Ok(index)
    }

    /// Every file, root first, in load order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.docs.iter().map(|d| d.path.clone()).collect()
    }

    fn load_referenced(
        &mut self,
        r: &PendingRef,
        file: PathBuf,
    ) -> Result<Vec<PendingRef>, SchemaError> {
        let referrer = &self.docs[r.referrer];
        let (value, sha256) = read_json(&file).map_err(|e| match e {
            SchemaError::Read { path, source } => SchemaError::ReferenceUnreadable {
                path: referrer.path.clone(),
                reference: r.reference.clone(),
                target: path,
                source,
            },
            other => other,
        })?;
        if self.docs.len() >= MAX_SCHEMA_FILES {
            return Err(SchemaError::TooManyFiles {
                path: self.docs[0].path.clone(),
                limit: MAX_SCHEMA_FILES,
            });
        }
        // A referenced file without `$schema` is read with its referrer's draft.
        let draft = detect_draft(&file, &value, referrer.draft)?;
        self.add_doc(file, value, draft, sha256)
    }

    /// Checks one document against its draft's meta-schema and indexes it.
    fn add_doc(
        &mut self,
        path: PathBuf,
        value: Value,
        draft: Draft,
        sha256: String,
    ) -> Result<Vec<PendingRef>, SchemaError> {
        meta_validate(&path, &value, draft)?;
        let uri = resolve(&file_uri(&path), "").map_err(|message| SchemaError::BadUri {
            path: path.clone(),
            keyword: "file path".to_owned(),
            value: path.display().to_string(),
            message,
        })?;
        let uri = uri.as_str().to_owned();
        let doc = self.docs.len();
        self.resources.insert(
            uri.clone(),
            Target {
                doc,
                pointer: String::new(),
            },
        );
        let mut scanner = Scanner {
            doc,
            draft,
            index: self,
            refs: Vec::new(),
        };
        let scanned = scanner.schema(&value, "", &uri);
        let refs = scanner.refs;
        self.docs.push(Doc {
            path,
            uri,
            value,
            draft,
            sha256,
        });
        scanned
            .map_err(|(keyword, value, message)| self.bad_uri(doc, &keyword, &value, message))?;
        Ok(refs)
    }

    fn bad_uri(&self, doc: usize, keyword: &str, value: &str, message: String) -> SchemaError {
        SchemaError::BadUri {
            path: self.docs[doc].path.clone(),
            keyword: keyword.to_owned(),
            value: value.to_owned(),
            message,
        }
    }
}

/// Walks one document, recording resources, anchors, patterns, secrets and references.
struct Scanner<'a> {
    doc: usize,
    draft: Draft,
    index: &'a mut Index,
    refs: Vec<PendingRef>,
}

/// (keyword, its value, why it is wrong)
type ScanError = (String, String, String);

impl Scanner<'_> {
    fn schema(&mut self, value: &Value, pointer: &str, base: &str) -> Result<(), ScanError> {
        let Value::Object(map) = value else {
            return Ok(());
        };
        let base = self.enter_resource(map, pointer, base)?;
        for keyword in ["$anchor", "$dynamicAnchor"] {
            if let Some(Value::String(name)) = map.get(keyword) {
                self.anchor(&base, name, pointer);
            }
        }
        if is_secret(map) {
            self.index.has_secrets = true;
        }
        if map.contains_key(super::grants::KEYWORD) {
            let site = self.target(pointer);
            self.index.grant_sites.push(site);
        }
        for keyword in REF_KEYWORDS {
            if let Some(Value::String(reference)) = map.get(*keyword) {
                self.refs.push(PendingRef {
                    referrer: self.doc,
                    reference: reference.clone(),
                    base: base.clone(),
                });
            }
        }
        for (keyword, child) in map {
            let child_pointer = format!("{pointer}/{}", escape_pointer(keyword));
            if DATA_KEYWORDS.contains(&keyword.as_str()) {
                continue;
            }
            if SCHEMA_MAPS.contains(&keyword.as_str()) {
                if let Value::Object(named) = child {
                    for (name, sub) in named {
                        if keyword == "patternProperties" {
                            self.index.patterns.push(name.clone());
                        }
                        let sub_pointer = format!("{child_pointer}/{}", escape_pointer(name));
                        self.schema(sub, &sub_pointer, &base)?;
                    }
                }
                continue;
            }
            match child {
                Value::Object(_) => self.schema(child, &child_pointer, &base)?,
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.schema(item, &format!("{child_pointer}/{i}"), &base)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies this subschema's `$id` (or draft 4's `id`), returning the base URI inside it.
    fn enter_resource(
        &mut self,
        map: &Map<String, Value>,
        pointer: &str,
        base: &str,
    ) -> Result<String, ScanError> {
        let keyword = id_keyword(self.draft);
        let Some(Value::String(id)) = map.get(keyword) else {
            return Ok(base.to_owned());
        };
        // Drafts 4-7: an `$id` of "#name" is a plain-name anchor, not a new resource.
        if let Some(name) = id.strip_prefix('#') {
            self.anchor(base, name, pointer);
            return Ok(base.to_owned());
        }
        let uri = resolve(base, id).map_err(|message| (keyword.to_owned(), id.clone(), message))?;
        let resource = uri.strip_fragment().as_str().to_owned();
        self.index
            .resources
            .insert(resource.clone(), self.target(pointer));
        if let Some(fragment) = uri.fragment() {
            self.anchor(&resource, &fragment.decode().to_string_lossy(), pointer);
        }
        Ok(resource)
    }

    fn anchor(&mut self, base: &str, name: &str, pointer: &str) {
        if !name.is_empty() {
            let target = self.target(pointer);
            self.index.anchors.insert(format!("{base}#{name}"), target);
        }
    }

    fn target(&self, pointer: &str) -> Target {
        Target {
            doc: self.doc,
            pointer: pointer.to_owned(),
        }
    }
}

/// Whether this subschema marks its value secret. Anything but an explicit `false` counts:
/// when in doubt, redact.
pub(super) fn is_secret(map: &Map<String, Value>) -> bool {
    ["writeOnly", "x-upm-secret"]
        .iter()
        .any(|k| map.get(*k).is_some_and(|v| *v != Value::Bool(false)))
}

pub(super) fn id_keyword(draft: Draft) -> &'static str {
    if draft == Draft::Draft4 {
        "id"
    } else {
        "$id"
    }
}

/// Resolves `reference` against `base` exactly as the validator's registry does.
pub(super) fn resolve(base: &str, reference: &str) -> Result<Uri<String>, String> {
    let base = jsonschema::uri::from_str(base).map_err(|e| e.to_string())?;
    jsonschema::uri::resolve_against(&base.borrow(), reference).map_err(|e| e.to_string())
}

/// The file a `file:` URI names, or `None` for anything else (http, urn, a remote host...).
fn local_path(uri: &Uri<String>) -> Option<PathBuf> {
    if uri.scheme().as_str() != "file" {
        return None;
    }
    if let Some(authority) = uri.authority() {
        let host = authority.as_str();
        if !host.is_empty() && host != "localhost" {
            return None;
        }
    }
    let bytes = uri.path().decode().to_bytes().into_owned();
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// A `file://` URI for an absolute path, percent-encoding all but unreserved bytes.
fn file_uri(path: &Path) -> String {
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(char::from(b));
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri
}

pub(super) fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Reads one schema file (a regular file of bounded size holding JSON) and digests the
/// bytes read, so integrity checks cover exactly what was compiled.
fn read_json(path: &Path) -> Result<(Value, String), SchemaError> {
    let read_error = |source| SchemaError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = crate::files::read_rules(path, MAX_SCHEMA_FILE_BYTES).map_err(|e| match e {
        crate::files::ReadError::Io(source) => read_error(source),
        crate::files::ReadError::NotAFile => SchemaError::NotAFile {
            path: path.to_path_buf(),
        },
        crate::files::ReadError::TooLarge(limit) => SchemaError::TooLarge {
            path: path.to_path_buf(),
            limit,
        },
        e @ crate::files::ReadError::Unsafe { .. } => SchemaError::Unsafe {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
    })?;
    let value = serde_json::from_slice(&bytes).map_err(|source| SchemaError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((value, hex::encode(Sha256::digest(&bytes))))
}

/// The draft a document declares with `$schema`, else `default`; custom meta-schemas
/// are refused since they would have to be fetched.
fn detect_draft(path: &Path, value: &Value, default: Draft) -> Result<Draft, SchemaError> {
    match default.detect(value) {
        Draft::Unknown => Err(SchemaError::UnsupportedDraft {
            path: path.to_path_buf(),
            declared: value
                .get("$schema")
                .map(Value::to_string)
                .unwrap_or_default(),
        }),
        draft => Ok(draft),
    }
}

pub(super) fn draft_name(draft: Draft) -> &'static str {
    match draft {
        Draft::Draft4 => "draft-04",
        Draft::Draft6 => "draft-06",
        Draft::Draft7 => "draft-07",
        Draft::Draft201909 => "draft 2019-09",
        Draft::Draft202012 => "draft 2020-12",
        _ => "unknown draft",
    }
}

/// Checks a document against its draft's meta-schema (the validator only checks the root).
fn meta_validate(path: &Path, value: &Value, draft: Draft) -> Result<(), SchemaError> {
    let result = match draft {
        Draft::Draft4 => jsonschema::draft4::meta::validate(value),
        Draft::Draft6 => jsonschema::draft6::meta::validate(value),
        Draft::Draft7 => jsonschema::draft7::meta::validate(value),
        Draft::Draft201909 => jsonschema::draft201909::meta::validate(value),
        _ => jsonschema::draft202012::meta::validate(value),
    };
    result.map_err(|e| SchemaError::Invalid {
        path: path.to_path_buf(),
        draft: draft_name(draft),
        location: e.instance_path().as_str().to_owned(),
        message: e.to_string(),
    })
}
