//! OCI / Docker seccomp profiles (stub: being written in the seccomp worktree).
