//! What the proxy tells about each connection (one audit entry each) and about the
//! call as a whole (the result's `data.egress` and the `finished` entry).
//!
//! A refused connection is a sandbox denial: [`Record::denial`] gives it in the shape
//! the results' list of denials takes (`layer`, `what`, `reason`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How the plugin asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `CONNECT host:port` (a tunnel, for TLS).
    HttpConnect,
    /// A plain HTTP request in absolute form (`GET http://host/path`).
    Http,
    Socks5,
    /// Nothing the proxy could read as a request.
    Unknown,
}

/// The proxy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Allowed and connected.
    Allowed,
    /// Refused by the allowlist, the address policy, a limit, or as malformed.
    Refused,
    /// Allowed, but the name could not be resolved or the host not reached.
    Failed,
}

/// One connection, as audited when it ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The call's n-th connection to the proxy (from 1).
    pub connection: u32,
    pub protocol: Protocol,
    /// `host:port` as the plugin asked for it (host lowercased, IPv6 in brackets).
    pub target: Option<String>,
    /// The address connected to, `ip:port` (only the one that was checked).
    pub address: Option<String>,
    pub verdict: Verdict,
    /// Why: the allowlist entry that allowed it, or what refused it.
    pub reason: String,
    /// The allowlist entry that matched, as the config wrote it.
    pub entry: Option<String>,
    /// Plugin → host, bytes relayed (for plain HTTP, the request as forwarded).
    pub bytes_up: u64,
    /// Host → plugin.
    pub bytes_down: u64,
    pub duration_ms: f64,
    /// How an allowed connection ended: `closed`, `idle timeout`, `byte limit`,
    /// `call ended`, or the error.
    pub end: Option<String>,
}

impl Record {
    pub fn new(connection: u32) -> Record {
        Record {
            connection,
            protocol: Protocol::Unknown,
            target: None,
            address: None,
            verdict: Verdict::Refused,
            reason: "the client sent no request".into(),
            entry: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0.0,
            end: None,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// A refusal as a sandbox denial (layer `network`); `None` for allowed and failed
    /// connections, which the sandbox did not refuse.
    pub fn denial(&self) -> Option<Value> {
        (self.verdict == Verdict::Refused).then(|| {
            json!({
                "layer": "network",
                "what": self.target.clone().unwrap_or_else(|| "(no target)".into()),
                "reason": self.reason,
            })
        })
    }
}

/// One line of the proxy process's output to upm (see `spawn::egress`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    Record(Record),
    Summary(Summary),
}

/// At most this many distinct refused targets are listed in a summary.
const MAX_LISTED: usize = 100;

/// Refused connections to one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refused {
    pub target: String,
    /// The first refusal's reason.
    pub reason: String,
    pub count: u32,
}

/// The call's connections, summed up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Where the plugin found the proxy (`HTTP_PROXY` and the others point there).
    pub proxy: String,
    /// Connections the plugin opened to the proxy (past `max_connections` included).
    pub connections: u32,
    pub allowed: u32,
    pub refused: u32,
    pub failed: u32,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Distinct refused targets (the first 100), each with its count.
    pub refused_targets: Vec<Refused>,
    /// How many distinct targets were refused, listed or not.
    pub refused_targets_total: usize,
    /// Connections past `max_connections`: refused and counted here, not audited one
    /// by one (a plugin must not be able to flood the audit log).
    pub refused_past_limit: u32,
    /// The limits this call reached: `max_connections`, `max_bytes`.
    pub limits_reached: Vec<String>,
    /// What went wrong with the proxy itself (it then refused everything after).
    pub error: Option<String>,
}

impl Summary {
    pub fn new(proxy: String) -> Summary {
        Summary {
            proxy,
            connections: 0,
            allowed: 0,
            refused: 0,
            failed: 0,
            bytes_up: 0,
            bytes_down: 0,
            refused_targets: Vec::new(),
            refused_targets_total: 0,
            refused_past_limit: 0,
            limits_reached: Vec::new(),
            error: None,
        }
    }

    pub fn add(&mut self, r: &Record) {
        self.bytes_up += r.bytes_up;
        self.bytes_down += r.bytes_down;
        match r.verdict {
            Verdict::Allowed => self.allowed += 1,
            Verdict::Failed => self.failed += 1,
            Verdict::Refused => {
                self.refused += 1;
                // Requests refused before they named a target (malformed, or none at all)
                // are folded by their reason instead: each says what was wrong.
                let target = r.target.clone().unwrap_or_else(|| "(no target)".into());
                let same = |t: &&mut Refused| {
                    t.target == target && (r.target.is_some() || t.reason == r.reason)
                };
                match self.refused_targets.iter_mut().find(same) {
                    Some(t) => t.count += 1,
                    None => {
                        self.refused_targets_total += 1;
                        if self.refused_targets.len() < MAX_LISTED {
                            self.refused_targets.push(Refused {
                                target,
                                reason: r.reason.clone(),
                                count: 1,
                            });
                        }
                    }
                }
            }
        }
    }

    pub fn limit_reached(&mut self, which: &str) {
        if !self.limits_reached.iter().any(|l| l == which) {
            self.limits_reached.push(which.to_owned());
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The call's refusals as sandbox denials (layer `network`), folded by target with
    /// a `count`, the first 100 targets ([`Record::denial`] is one connection's).
    pub fn denials(&self) -> Vec<Value> {
        self.refused_targets
            .iter()
            .map(|t| {
                json!({
                    "layer": "network",
                    "what": t.target,
                    "reason": t.reason,
                    "count": t.count,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u32, verdict: Verdict, target: &str) -> Record {
        Record {
            verdict,
            target: Some(target.into()),
            reason: format!("why {n}"),
            bytes_up: 10,
            bytes_down: 100,
            ..Record::new(n)
        }
    }

    #[test]
    fn refusals_without_a_target_are_folded_by_their_reason() {
        let mut s = Summary::new("127.0.0.1:3128".into());
        let none = |n: u32, reason: &str| Record {
            reason: reason.into(),
            ..Record::new(n)
        };
        s.add(&none(1, "the client sent no request"));
        s.add(&none(2, "two Host headers"));
        s.add(&none(3, "the client sent no request"));
        let folded: Vec<_> = s
            .refused_targets
            .iter()
            .map(|t| (t.target.as_str(), t.reason.as_str(), t.count))
            .collect();
        assert_eq!(
            folded,
            [
                ("(no target)", "the client sent no request", 2),
                ("(no target)", "two Host headers", 1)
            ]
        );
        assert_eq!(s.refused_targets_total, 2);
    }

    #[test]
    fn the_summary_counts_and_folds_refused_targets() {
        let mut s = Summary::new("127.0.0.1:3128".into());
        s.add(&rec(1, Verdict::Allowed, "a:443"));
        s.add(&rec(2, Verdict::Refused, "b:443"));
        s.add(&rec(3, Verdict::Refused, "b:443"));
        s.add(&rec(4, Verdict::Failed, "c:443"));
        assert_eq!((s.allowed, s.refused, s.failed), (1, 2, 1));
        assert_eq!((s.bytes_up, s.bytes_down), (40, 400));
        assert_eq!(s.refused_targets.len(), 1);
        assert_eq!(s.refused_targets[0].count, 2);
        assert_eq!(s.refused_targets[0].reason, "why 2");
        for n in 0..150 {
            s.add(&rec(10 + n, Verdict::Refused, &format!("t{n}:80")));
        }
        assert_eq!(s.refused_targets.len(), MAX_LISTED);
        assert_eq!(s.refused_targets_total, 151);
        let d = s.denials();
        assert_eq!(d.len(), MAX_LISTED);
        assert_eq!(
            d[0],
            json!({"layer": "network", "what": "b:443", "reason": "why 2", "count": 2})
        );
    }

    #[test]
    fn only_refusals_are_denials() {
        let d = rec(1, Verdict::Refused, "evil.example:443")
            .denial()
            .unwrap();
        assert_eq!(d["layer"], "network");
        assert_eq!(d["what"], "evil.example:443");
        assert!(rec(1, Verdict::Allowed, "a:1").denial().is_none());
        assert!(rec(1, Verdict::Failed, "a:1").denial().is_none());
    }
}
