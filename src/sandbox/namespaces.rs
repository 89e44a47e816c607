//! Namespaces, created by the clone that starts the sandbox.
//!
//! A PID namespace makes the whole process tree killable: its first process
//! is upm's small init, and when that exits the kernel kills everything else
//! in the namespace — daemonized grandchildren included. A network namespace
//! leaves the plugin only a `lo` that is down. IPC is isolated too. An
//! unprivileged upm creates a user namespace first so that it may create them.

use super::credentials::Mode;
use super::policy::Layer;
use super::LayerReport;
use serde_json::json;

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub clone_flags: libc::c_int,
    pub user_namespace: bool,
}

pub fn prepare(network_allowed: bool, cred_mode: Mode) -> (Plan, LayerReport) {
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWIPC;
    if !network_allowed {
        flags |= libc::CLONE_NEWNET;
    }
    let user_namespace = cred_mode == Mode::UserNamespace;
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
    let report = LayerReport::enforced(Layer::Namespaces, json!({ "created": names }));
    (
        Plan {
            clone_flags: flags,
            user_namespace,
        },
        report,
    )
}
