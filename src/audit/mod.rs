//! The audit log (stub: being written in the audit worktree).
