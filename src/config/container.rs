//! A container plugin's config, checked when the config loads: what the container
//! backend ([`crate::container`]) will be asked to run, refused here before any call.

use super::image;
use super::PluginKind;
use crate::sandbox::policy::{EngineKind, Network, Policy};

/// Why a container plugin can have no per-call grants (`grants_within`, `x-upm-grant`).
pub const NO_GRANTS: &str = "the container backend grants no per-call paths (\"grants_within\", \
     \"x-upm-grant\"): the engine would resolve a bind mount's source by its path itself, \
     after upm's check, so a path swapped in between could widen the grant; use the native \
     backend for methods with grant arguments (docs/grants.md)";

/// Problems with a container plugin's config, one sentence each (for `Config::load`
/// and so `upm check`). Only command plugins: the runner of Python class plugins
/// needs a result channel that engines do not pass.
pub fn problems(policy: &Policy, kind: &PluginKind, pinned_files: bool) -> Vec<String> {
    let mut out = Vec::new();
    match &policy.image {
        None => out.push("the container backend needs \"sandbox\": {\"image\": ...}".into()),
        Some(i) => {
            if let Err(e) = image::validate(i, policy.allow_tags) {
                out.push(format!("image {i:?} {e}"));
            }
        }
    }
    if let Some(e) = &policy.engine {
        if let Err(e) = EngineKind::parse(e) {
            out.push(e.to_string());
        }
    }
    match kind {
        PluginKind::Command { argv } if !argv[0].starts_with('/') => out.push(format!(
            "the container backend needs an absolute \"command\" path inside the image, not {:?}",
            argv[0]
        )),
        PluginKind::Command { .. } => {}
        PluginKind::PythonClass { .. } => out.push(
            "the container backend runs \"command\" plugins only (a Python class plugin needs upm's runner)"
                .into(),
        ),
    }
    match &policy.network {
        Network::None => {}
        Network::Host => out.push("the container backend always runs with --network=none; \"network\": true is not supported".into()),
        // issue 22: the egress proxy needs the listener the native init creates in the
        // call's own network namespace; a container's namespace is the engine's.
        Network::Allow(_) => out.push(
            "the container backend runs with --network=none and has no egress proxy: \
             \"network\": {\"allow\": [...]} needs the native backend"
                .into(),
        ),
    }
    if !policy.read_paths.is_empty() || !policy.write_paths.is_empty() {
        out.push("the container backend mounts nothing from the host: remove \"read_paths\"/\"write_paths\"".into());
    }
    if policy.user.uid == 0 || policy.user.gid == 0 {
        out.push("the container backend never runs a plugin as root (uid/gid 0)".into());
    }
    if pinned_files {
        out.push(
            "a container plugin is pinned by its image digest, not \"sha256\"/\"manifest_sha256\""
                .into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems_name_each_mistake() {
        let mut policy = Policy {
            image: Some("busybox:latest".into()),
            engine: Some("lxc".into()),
            network: Network::Host,
            ..Policy::default()
        };
        policy.user.uid = 0;
        let kind = PluginKind::Command {
            argv: vec!["plugin".into()],
        };
        let p = problems(&policy, &kind, true);
        for needle in [
            "not pinned",
            "lxc",
            "absolute",
            "network",
            "root",
            "image digest",
        ] {
            assert!(p.iter().any(|x| x.contains(needle)), "{needle}: {p:?}");
        }
        let kind = PluginKind::Command {
            argv: vec!["/bin/plugin".into()],
        };
        // issue 22: no egress proxy in a container: refused, saying so.
        let allowlist = Policy {
            image: Some(format!("localhost/x@sha256:{}", "a".repeat(64))),
            network: Network::Allow(
                serde_json::from_value(serde_json::json!({"allow": ["pypi.org"]})).unwrap(),
            ),
            ..Policy::default()
        };
        let p = problems(&allowlist, &kind, false);
        assert!(
            p.len() == 1 && p[0].contains("needs the native backend"),
            "{p:?}"
        );
        let ok = Policy {
            image: Some(format!("localhost/x@sha256:{}", "a".repeat(64))),
            ..Policy::default()
        };
        assert!(problems(&ok, &kind, false).is_empty());
    }
}
