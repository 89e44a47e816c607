//! TEMPORARY STUB (enforces nothing): replaced by the seccomp worktree's implementation at merge.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("{0}")]
    Load(String),
}
pub struct Profile {
    pub name: String,
    pub digest: String,
}
#[derive(Default, Clone)]
pub struct CompileOptions {
    pub deny_non_unix_sockets: bool,
}
pub struct CompiledFilter;
impl Profile {
    pub fn load(path: &Path) -> Result<Profile, SeccompError> {
        std::fs::read(path).map_err(|e| SeccompError::Load(format!("{}: {e}", path.display())))?;
        Ok(Profile {
            name: "stub".into(),
            digest: String::new(),
        })
    }
    pub fn compile(&self, _o: &CompileOptions) -> Result<CompiledFilter, SeccompError> {
        Ok(CompiledFilter)
    }
}
impl CompiledFilter {
    pub fn apply(&self) -> Result<(), i32> {
        Ok(())
    }
    pub fn instruction_count(&self) -> usize {
        0
    }
}
