//! Namespaces, created by the clone that starts the sandbox.
//!
//! A PID namespace makes the whole process tree killable: its first process
//! is upm's small init, and when that exits the kernel kills everything else
//! in the namespace — daemonized grandchildren included. A network namespace
//! leaves the plugin only a `lo` that is down. IPC is isolated too. Every call also
//! gets a user namespace of its own: an unprivileged upm needs it to create the
//! others, and for a root upm it makes RLIMIT_NPROC count this call's processes only
//! (the kernel counts per user *per user namespace*), not those of every call that
//! runs as the same uid.

use super::credentials::Mode;
use super::policy::Layer;
use super::LayerReport;
use serde_json::json;

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub clone_flags: libc::c_int,
    pub user_namespace: bool,
    /// Unprivileged: `setgroups` must be denied before a gid map may be written. Root
    /// leaves it allowed, so that the init can clear root's supplementary groups.
    pub deny_setgroups: bool,
}

/// What `max_processes` counts, with a user namespace of the call's own.
pub const PER_CALL: &str = "the call's own processes (a user namespace of its own)";
/// ... and without one (the kernel refused it).
pub const PER_UID: &str = "every process of the plugin's uid, this call's and other calls'";

pub fn prepare(network_allowed: bool, cred_mode: Mode) -> (Plan, LayerReport) {
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWIPC;
    if !network_allowed {
        flags |= libc::CLONE_NEWNET;
    }
    let user_namespace = matches!(cred_mode, Mode::UserNamespace | Mode::Switch);
    if user_namespace {
        flags |= libc::CLONE_NEWUSER;
    }
    let mut names = vec!["pid", "ipc"];
    if !network_allowed {
        names.push("net");
    }
    if user_namespace {
        names.push("user");
    }
    let report = LayerReport::enforced(
        Layer::Namespaces,
        json!({ "created": names, "process_count": PER_CALL }),
    );
    (
        Plan {
            clone_flags: flags,
            user_namespace,
            deny_setgroups: cred_mode == Mode::UserNamespace,
        },
        report,
    )
}
