//! Egress allowlist: a plugin reaches the hosts its config names, through a proxy
//! upm runs for the call, and nothing else (docs/egress.md).
//!
//! ```text
//!  call's network namespace (only lo)           │  upm-egress, on the host's network
//!  plugin ──TCP──▶ 127.0.0.1:3128 (listener) ───┼──▶ accept ─▶ allowlist ─▶ resolve ─▶ address
//!   HTTP_PROXY, HTTPS_PROXY, ALL_PROXY          │             policy ─▶ connect ─▶ relay
//!                                               │      records (stdout) ─▶ upm ─▶ audit log
//! ```
//!
//! - The call keeps a network namespace of its own, with only `lo`, which its init
//!   brings up. The init creates a listening socket at `127.0.0.1:`[`PORT`] there
//!   before the plugin starts and hands that one descriptor over a socketpair
//!   (`sandbox::network`, `spawn`); a socket stays in the namespace it was made in, so
//!   the proxy accepts the plugin's connections from outside and opens its own
//!   connections on the host's network. Nothing else in the namespace leads anywhere.
//! - The plugin may create TCP sockets over IPv4 and IPv6 only (seccomp), connect only
//!   to [`PORT`] and bind none (Landlock): no UDP, so no DNS from inside; the proxy
//!   resolves ([`resolve`]).
//! - The proxy ([`proxy`]) speaks HTTP CONNECT, plain HTTP in absolute form
//!   ([`http`]) and SOCKS5 with names resolved by the proxy ([`socks`]). Each
//!   connection is checked against the allowlist ([`allowlist`]) and the address
//!   policy ([`address`]), answered clearly when refused, relayed within the call's
//!   limits, and audited as an entry of its own ([`record`]); the call's result carries
//!   a summary.
//! - It runs in a process of its own, `upm-egress` ([`process`]), which upm starts only
//!   for a call with an allowlist and stops with it (`spawn::egress`): the parser of the
//!   plugin's traffic runs apart from upm, and upm's executable does not carry the
//!   runtime and resolver that calls without an allowlist do not need.
//!
//! This module uses nothing of the crate but [`crate::metadata`]: the sandbox's policy
//! takes its [`Settings`], and `spawn` starts and talks to its process.

pub mod address;
pub mod allowlist;

mod http;
pub mod process;
mod proxy;
pub mod record;
mod resolve;
mod socks;

pub use allowlist::Allowlist;
pub use proxy::Handover;
pub use record::{Record, Summary, Verdict};

/// The helper's file name, beside upm's own executable (where upm runs it from, and
/// what a config's grant roots may not contain).
pub const HELPER: &str = "upm-egress";

use serde::{Deserialize, Serialize};

/// Where the plugin finds the proxy.
pub fn proxy_address() -> String {
    format!("127.0.0.1:{PORT}")
}

/// Where the proxy listens inside the call's network namespace. The namespace is the
/// call's own and empty, so a fixed port cannot clash with anything.
pub const PORT: u16 = 3128;

/// The config's `"network": {"allow": [...], ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(with = "allow_list")]
    pub allow: Allowlist,
    /// Connections the plugin may open to the proxy in one call, refused ones included.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Bytes relayed in both directions together, for the whole call.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// A connection with nothing to relay either way for this long is closed (also the
    /// time a client has to send its request, and the bound on resolving and connecting).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;

fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_idle_timeout_ms() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}

impl Settings {
    /// Values that leave the proxy nothing to do: a config error, like a zero limit.
    pub fn problems(&self) -> Vec<String> {
        [
            ("max_connections", u64::from(self.max_connections)),
            ("max_bytes", self.max_bytes),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ]
        .into_iter()
        .filter(|(_, v)| *v == 0)
        .map(|(k, _)| format!("\"sandbox.network.{k}\" must be at least 1"))
        .collect()
    }

    /// The limits, as the result's `limits` layer reports them.
    pub fn limits_json(&self) -> serde_json::Value {
        serde_json::json!({
            "max_connections": self.max_connections,
            "max_bytes": self.max_bytes,
            "idle_timeout_ms": self.idle_timeout_ms,
        })
    }
}

/// The allowlist in the config is a list of strings, parsed (and refused, naming
/// every bad entry) when the config loads.
mod allow_list {
    use super::Allowlist;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &Allowlist, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.entries().iter().map(|e| e.text()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Allowlist, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        Allowlist::parse(&texts).map_err(|errs| serde::de::Error::custom(errs.join("; ")))
    }
}

/// The plugin's environment: every proxy variable a client may read points at the
/// proxy, upper and lower case (curl reads only `http_proxy` in lower case); `ALL_PROXY`
/// asks for SOCKS5 with names resolved by the proxy, for clients that only speak SOCKS.
/// `NO_PROXY` is removed: nothing is reachable around the proxy.
pub fn proxy_env() -> Vec<(String, String)> {
    let http = format!("http://127.0.0.1:{PORT}");
    let socks = format!("socks5h://127.0.0.1:{PORT}");
    let mut env = Vec::new();
    for (name, value) in [
        ("HTTP_PROXY", &http),
        ("HTTPS_PROXY", &http),
        ("ALL_PROXY", &socks),
    ] {
        env.push((name.to_owned(), value.clone()));
        env.push((name.to_ascii_lowercase(), value.clone()));
    }
    env
}

/// Variables that would send a client around the proxy (removed from the plugin's environment).
pub const BYPASS_ENV: [&str; 2] = ["NO_PROXY", "no_proxy"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_defaults_and_refuse_zero_and_unknown_keys() {
        let s: Settings =
            serde_json::from_value(serde_json::json!({"allow": ["pypi.org"]})).unwrap();
        assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(s.problems().is_empty());
        let s: Settings = serde_json::from_value(
            serde_json::json!({"allow": ["pypi.org"], "max_bytes": 0, "idle_timeout_ms": 0}),
        )
        .unwrap();
        assert_eq!(s.problems().len(), 2);
        let e =
            serde_json::from_value::<Settings>(serde_json::json!({"allow": ["a"], "max_byte": 1}))
                .unwrap_err();
        assert!(e.to_string().contains("max_byte"), "{e}");
        let e = serde_json::from_value::<Settings>(
            serde_json::json!({"allow": ["a:x", "169.254.169.254"]}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"a:x\"") && e.contains("metadata"), "{e}");
        // Written back as the config wrote it.
        let s: Settings =
            serde_json::from_value(serde_json::json!({"allow": ["PyPI.org", "10.0.0.0/8:80"]}))
                .unwrap();
        assert_eq!(
            serde_json::to_value(&s).unwrap()["allow"],
            serde_json::json!(["PyPI.org", "10.0.0.0/8:80"])
        );
    }
}
