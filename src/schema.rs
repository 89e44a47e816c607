//! Per-method JSON Schemas (stub: being written in the schema worktree).
