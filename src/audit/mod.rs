//! TEMPORARY STUB: replaced by the audit worktree's implementation at merge.
use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    pub path: Option<PathBuf>,
    pub include_args: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path} cannot be written: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct AuditLog {
    file: std::fs::File,
    path: PathBuf,
}

impl AuditLog {
    pub fn open(path: &Path, _s: &AuditSettings) -> Result<AuditLog, AuditError> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| AuditError::Io {
                path: path.into(),
                source,
            })?;
        Ok(AuditLog {
            file,
            path: path.into(),
        })
    }
    pub fn append(&mut self, entry: Map<String, Value>) -> Result<String, AuditError> {
        let mut line = serde_json::to_string(&entry).unwrap_or_default();
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|source| AuditError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(String::new())
    }
}
