//! TEMPORARY STUB: replaced by the schema worktree's implementation at merge.
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("schema {path} cannot be loaded: {message}")]
    Load { path: PathBuf, message: String },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Violation {
    pub instance_path: String,
    pub schema_path: String,
    pub message: String,
}

pub struct MethodSchema {
    doc: Value,
    validator: jsonschema::Validator,
    files: Vec<PathBuf>,
}

impl MethodSchema {
    pub fn load(path: &Path) -> Result<MethodSchema, SchemaError> {
        let err = |message: String| SchemaError::Load {
            path: path.into(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&doc)
            .map_err(|e| err(e.to_string()))?;
        Ok(MethodSchema {
            doc,
            validator,
            files: vec![path.into()],
        })
    }
    pub fn document(&self) -> &Value {
        &self.doc
    }
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
    pub fn validate(&self, args: &Value) -> Result<(), Vec<Violation>> {
        if self.validator.is_valid(args) {
            return Ok(());
        }
        Err(self
            .validator
            .iter_errors(args)
            .map(|e| Violation {
                instance_path: e.instance_path().to_string(),
                schema_path: e.schema_path().to_string(),
                message: e.to_string(),
            })
            .collect())
    }
    pub fn redact(&self, args: &Value) -> Value {
        args.clone()
    }
}

pub fn canonical_json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub fn digest_hex(v: &Value) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(canonical_json(v).as_bytes()))
}
