//! Per-method JSON Schemas, compiled once, local `$ref`s only.
//!
//! A method's schema is the gate between the caller's args and the plugin, so it fails
//! closed: every file it is made of is read and checked against its draft's meta-schema at
//! load, references may only reach local files (never the network), unknown `format`s are
//! refused and known ones asserted, and the validator only ever sees documents already held.

mod bundle;
mod grants;
mod index;
mod redact;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Kept here for callers that knew it from `schema` (args redaction is its main user).
pub use crate::canonical::{canonical_json, digest_hex};
pub use grants::{GrantArg, KEYWORD as GRANT_KEYWORD, MAX_GRANTS};

use index::Index;
use redact::Redactor;

/// Why a schema could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read schema file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("schema file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("schema file {} is larger than the {limit}-byte limit", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("schema file {} is not safe to use: {why}", path.display())]
    Unsafe { path: PathBuf, why: String },
    #[error("schema file {} is not valid JSON: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "schema file {} declares \"$schema\": {declared}, which is not a JSON Schema draft upm \
         knows (draft-04, -06, -07, 2019-09, 2020-12); custom meta-schemas are not supported",
        path.display()
    )]
    UnsupportedDraft { path: PathBuf, declared: String },
    #[error("schema file {} is not a valid {draft} schema at \"{location}\": {message}", path.display())]
    Invalid {
        path: PathBuf,
        draft: &'static str,
        location: String,
        message: String,
    },
    #[error("schema file {} has an invalid {keyword} {value:?}: {message}", path.display())]
    BadUri {
        path: PathBuf,
        keyword: String,
        value: String,
        message: String,
    },
    #[error(
        "schema file {} references {reference:?} ({target}), which is not a local file: \
         schemas may only reference local files, never the network",
        path.display()
    )]
    NonLocalReference {
        path: PathBuf,
        reference: String,
        target: String,
    },
    #[error(
        "schema file {} references {reference:?}, but {} cannot be read: {source}",
        path.display(),
        target.display()
    )]
    ReferenceUnreadable {
        path: PathBuf,
        reference: String,
        target: PathBuf,
        source: std::io::Error,
    },
    #[error("schema {} reaches more than {limit} files through $ref", path.display())]
    TooManyFiles { path: PathBuf, limit: usize },
    #[error("schema {} cannot be compiled: {message}", path.display())]
    Compile { path: PathBuf, message: String },
    #[error("schema {} cannot be bundled into one document: {message}", path.display())]
    Bundle { path: PathBuf, message: String },
    /// An `x-upm-grant` that cannot be honoured (see `grants`).
    #[error("schema {}: {message}", path.display())]
    Grant { path: PathBuf, message: String },
}

/// One way the args break the schema. Both paths are JSON Pointers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    pub instance_path: String,
    pub schema_path: String,
    /// Never quotes the offending value: it may be a secret, and violations reach the audit.
    pub message: String,
}

/// Why args were rejected: the first violations, and how many there were in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// At most [`MAX_REPORTED`]: a 1 MiB array can break a schema half a million times,
    /// and every violation kept would reach the response and the audit entry.
    pub violations: Vec<Violation>,
    pub total: usize,
}

/// Violations listed in a rejection; the rest are only counted.
pub const MAX_REPORTED: usize = 100;
/// Longest path kept in a violation (an object key can be as long as the request).
const MAX_PATH_CHARS: usize = 1024;

fn bounded(s: String) -> String {
    crate::error::clip(s, MAX_PATH_CHARS)
}

/// A schema file, and every file its `$ref`s reach, read and checked against their
/// draft's meta-schema, not compiled ([`MethodSchema::check_kept`]).
pub struct CheckedSchema {
    index: Index,
    grants: Vec<GrantArg>,
}

impl CheckedSchema {
    /// The arguments it marks `x-upm-grant`.
    pub fn grants(&self) -> &[GrantArg] {
        &self.grants
    }

    /// Its files: the schema's own, then each its `$ref`s reach.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.index.docs.iter().map(|d| d.path.as_path())
    }
}

/// A method's compiled schema.
pub struct MethodSchema {
    index: Index,
    files: Vec<PathBuf>,
    validator: jsonschema::Validator,
    /// Only filled when the schema has secrets: the redactor's `patternProperties` matchers.
    patterns: HashMap<String, Option<jsonschema::Validator>>,
    /// The arguments it marks `x-upm-grant`.
    grants: Vec<GrantArg>,
}

impl fmt::Debug for MethodSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodSchema")
            .field("files", &self.files)
            .field("has_secrets", &self.has_secrets())
            .finish_non_exhaustive()
    }
}

impl MethodSchema {
    /// Reads and compiles the schema file. Draft 2020-12 unless its `$schema` says otherwise;
    /// `format` validated (not just annotated); `$ref` to other local files allowed (relative
    /// refs resolved against the referring file), never the network: http(s) or any non-file
    /// reference is a load-time error naming it. A schema that is not valid for its draft is
    /// an error. An unknown `format` is refused too, rather than silently not checked.
    pub fn load(path: &Path) -> Result<MethodSchema, SchemaError> {
        MethodSchema::compile_checked(MethodSchema::check_kept(path)?)
    }

    /// Compiles a schema [`check_kept`](Self::check_kept) read: nothing is read again.
    pub fn compile_checked(checked: CheckedSchema) -> Result<MethodSchema, SchemaError> {
        let CheckedSchema { index, grants } = checked;
        let validator = compile(&index)?;
        let patterns = if index.has_secrets {
            compile_patterns(&index.patterns)
        } else {
            HashMap::new()
        };
        Ok(MethodSchema {
            files: index.files(),
            index,
            validator,
            patterns,
            grants,
        })
    }

    /// What makes a config invalid, without compiling a validator: the file and every
    /// file its `$ref`s reach are read, parsed and checked against their draft's
    /// meta-schema, and every reference is local. Cheap enough to run on every schema
    /// of a config at each call (see the `phases` benchmark), so that one broken schema
    /// stops every method, not only its own. Returns the arguments it marks as grants.
    pub fn check(path: &Path) -> Result<Vec<GrantArg>, SchemaError> {
        MethodSchema::check_kept(path).map(|c| c.grants)
    }

    /// [`check`](Self::check), keeping what was read for [`compile_checked`](Self::compile_checked):
    /// a one-shot call checks every schema of its config, then compiles its method's
    /// (issue 25: that read and meta-check, twice, was ~0.07 ms of the call).
    pub fn check_kept(path: &Path) -> Result<CheckedSchema, SchemaError> {
        let index = Index::load(path)?;
        let grants = grants::find(&index)?;
        Ok(CheckedSchema { index, grants })
    }

    /// The arguments this schema marks `"x-upm-grant": "read"` or `"write"`: paths the
    /// plugin may use for the call, once the args are valid.
    pub fn grants(&self) -> &[GrantArg] {
        &self.grants
    }

    /// The schema document, for `upm list`.
    pub fn document(&self) -> &Value {
        // `Index::load` always holds the root document first.
        static EMPTY: Value = Value::Null;
        self.index.docs.first().map_or(&EMPTY, |d| &d.value)
    }

    /// The schema as one document that stands alone: every file its `$ref`s reach put
    /// under the root's `$defs`, every reference a JSON Pointer into it (see
    /// [`bundle`](self::bundle)). What `upm list` prints, and what a client turning a
    /// method into a tool definition needs. A schema of one file with no references
    /// comes back as it is.
    pub fn bundled(&self) -> Result<Value, SchemaError> {
        bundle::bundle(&self.index)
    }

    /// [`bundled`](Self::bundled), made the one (required) property `key` of an object
    /// schema, for clients that want an object at the root (see `bundle::nest`).
    pub fn bundled_under(&self, key: &str) -> Result<Value, SchemaError> {
        self.bundled().map(|b| bundle::nest(b, key))
    }

    /// Whether the schema's root says its instances are objects (`"type": "object"`).
    pub fn is_object_schema(&self) -> bool {
        self.document().get("type").and_then(Value::as_str) == Some("object")
    }

    /// Every local file this schema is made of (itself first, then every file reached by
    /// `$ref`, transitively), as the absolute paths that were read, for integrity digests.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// `(path, SHA-256 hex)` of every file in [`files`](Self::files), digesting the bytes
    /// actually compiled: hashing the paths again later could see a file swapped since.
    pub fn file_digests(&self) -> impl Iterator<Item = (&Path, &str)> {
        self.index
            .docs
            .iter()
            .map(|d| (d.path.as_path(), d.sha256.as_str()))
    }

    /// Every violation is counted, not just the first; the first [`MAX_REPORTED`] are kept.
    pub fn validate(&self, args: &Value) -> Result<(), Rejection> {
        // The fast path: no error objects are built for valid args.
        if self.validator.is_valid(args) {
            return Ok(());
        }
        let mut violations = Vec::new();
        let mut total = 0;
        for e in self.validator.iter_errors(args) {
            total += 1;
            if violations.len() < MAX_REPORTED {
                violations.push(Violation {
                    instance_path: bounded(e.instance_path().as_str().to_owned()),
                    schema_path: bounded(e.schema_path().as_str().to_owned()),
                    message: bounded(e.masked().to_string()),
                });
            }
        }
        if violations.is_empty() {
            // The two paths disagreeing must still reject.
            violations.push(Violation {
                instance_path: String::new(),
                schema_path: String::new(),
                message: "args do not match the schema".to_owned(),
            });
            total = 1;
        }
        Err(Rejection { violations, total })
    }

    /// A copy of `args` in which every value the schema marks secret (`"writeOnly": true`
    /// or `"x-upm-secret": true`) is replaced by `{"sha256": "<digest_hex(value)>"}`, so the
    /// audit log never sees secrets. When in doubt, it redacts.
    pub fn redact(&self, args: &Value) -> Value {
        if !self.index.has_secrets {
            return args.clone();
        }
        Redactor {
            index: &self.index,
            patterns: &self.patterns,
        }
        .redact_root(args)
    }

    /// Whether any subschema marks a value secret.
    pub fn has_secrets(&self) -> bool {
        self.index.has_secrets
    }
}

/// Serves the validator the documents already loaded, and nothing else.
struct LoadedDocs(HashMap<String, Value>);

impl jsonschema::Retrieve for LoadedDocs {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        self.0
            .get(uri.strip_fragment().as_str())
            .cloned()
            .ok_or_else(|| format!("{uri} is not a local schema file upm has loaded").into())
    }
}

fn compile(index: &Index) -> Result<jsonschema::Validator, SchemaError> {
    let (root, rest) = index
        .docs
        .split_first()
        .ok_or_else(|| SchemaError::Compile {
            path: PathBuf::new(),
            message: "no schema document".to_owned(),
        })?;
    let docs = rest
        .iter()
        .map(|d| (d.uri.clone(), d.value.clone()))
        .collect();
    jsonschema::options()
        .with_draft(root.draft)
        .with_base_uri(root.uri.clone())
        .with_retriever(LoadedDocs(docs))
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .build(&root.value)
        .map_err(|e| SchemaError::Compile {
            path: root.path.clone(),
            message: e.to_string(),
        })
}

/// Compiles each pattern with the validator's own regex engine, so matching agrees.
fn compile_patterns(patterns: &[String]) -> HashMap<String, Option<jsonschema::Validator>> {
    patterns
        .iter()
        .map(|p| {
            let schema = serde_json::json!({ "pattern": p });
            (p.clone(), jsonschema::options().build(&schema).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests;
