//! What the sandbox refused during one call: `data.denials` and the `finished` entry.
//!
//! Each layer that can see its refusals feeds one [`Denials`] per call: seccomp (upm
//! answers the errnos as the filter's user-notification supervisor), Landlock (the
//! kernel's audit records of the call's domain), and the egress proxy (`network`).
//! Refusals of the same thing are folded into one [`Denial`] with a `count`; the
//! first [`MAX_LISTED`] distinct ones are kept, in the order they were first seen,
//! and the totals say how many there were. A layer in force whose refusals cannot be
//! seen here says so, with why, in the summary's `not_observable`: an empty list then
//! does not mean that nothing was refused.
//!
//! This module is a leaf: it knows nothing of how a layer observes, only what a
//! refusal is and which config setting would allow it.

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// At most this many distinct denials are listed in a result (the totals count all).
pub const MAX_LISTED: usize = 100;

/// The layer that refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Seccomp,
    Landlock,
    Network,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Seccomp => "seccomp",
            Layer::Landlock => "landlock",
            Layer::Network => "network",
        }
    }
}

/// What would allow a refused access, for the result and the failure's sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allow {
    /// A config setting: `read_paths`, `write_paths`, `network`, `network.allow`.
    Setting(&'static str),
    /// A seccomp profile that allows the syscall (the profile's name).
    Profile(String),
    /// Nothing in the config: upm refuses it whatever the config says (why).
    Never(&'static str),
}

/// One refused thing, folded: `count` times.
#[derive(Debug, Clone)]
pub struct Denial {
    pub layer: Layer,
    /// `fs.read_file /srv/secret`, `socket(AF_INET, SOCK_STREAM)`, `example.com:443`.
    pub what: String,
    /// seccomp: the errno the plugin got (`EPERM`).
    pub errno: Option<String>,
    /// The network layer's reason (the proxy's words).
    pub reason: Option<String>,
    /// The path or target refused, when there is one: what a plugin's own error message
    /// would quote (`PermissionError: ... '/srv/secret'`).
    pub subject: Option<String>,
    pub allow: Allow,
    pub count: u64,
}

impl Denial {
    pub fn new(layer: Layer, what: impl Into<String>, allow: Allow) -> Denial {
        Denial {
            layer,
            what: what.into(),
            errno: None,
            reason: None,
            subject: None,
            allow,
            count: 1,
        }
    }

    pub fn with_errno(mut self, errno: impl Into<String>) -> Denial {
        self.errno = Some(errno.into());
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Denial {
        self.reason = Some(reason.into());
        self
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Denial {
        self.subject = Some(subject.into());
        self
    }

    pub fn with_count(mut self, count: u64) -> Denial {
        self.count = count;
        self
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "layer": self.layer, "what": self.what, "count": self.count });
        if let Some(e) = &self.errno {
            v["errno"] = json!(e);
        }
        if let Some(r) = &self.reason {
            v["reason"] = json!(r);
        }
        match &self.allow {
            Allow::Setting(s) => v["setting"] = json!(s),
            Allow::Profile(p) => v["setting"] = json!(format!("seccomp (profile {p})")),
            Allow::Never(why) => v["allowed_by"] = json!(format!("nothing: {why}")),
        }
        v
    }

    /// "fs.read_file /srv/secret (landlock): add it to read_paths to allow it".
    fn sentence(&self) -> String {
        let errno = self
            .errno
            .as_deref()
            .map_or(String::new(), |e| format!(", {e}"));
        let why = match &self.allow {
            Allow::Setting("read_paths") => {
                "read_paths would allow it (the path or a directory above it)".to_owned()
            }
            Allow::Setting("write_paths") => {
                "write_paths would allow it (the path or a directory above it)".to_owned()
            }
            Allow::Setting("network") => {
                "the plugin has no network; \"network\" in the config would allow it".to_owned()
            }
            Allow::Setting(s) => format!("{s} would allow it"),
            Allow::Profile(p) => format!("the seccomp profile {p} refuses it"),
            Allow::Never(why) => format!("upm refuses it whatever the config says ({why})"),
        };
        let reason = self
            .reason
            .as_deref()
            .map_or(String::new(), |r| format!(": {r}"));
        format!(
            "the sandbox refused {} ({}{errno}{reason}); {why}",
            self.what,
            self.layer.as_str()
        )
    }
}

/// A call's denials: folded, the first [`MAX_LISTED`] kept, totals counted.
#[derive(Debug, Default, Clone)]
pub struct Denials {
    listed: Vec<Denial>,
    /// (layer, what) → index in `listed`; also remembers unlisted keys (`None`) so that
    /// `distinct` counts each once, up to a bound (see [`Denials::record`]).
    seen: HashMap<(Layer, String), Option<usize>>,
    distinct: u64,
    events: u64,
    observed: Vec<Layer>,
    not_observable: BTreeMap<Layer, String>,
}

/// Keys remembered past the listed ones, so that `distinct` stays exact for a while;
/// beyond that a plugin making up ever new paths cannot grow upm's memory, and
/// `distinct` becomes a lower bound (the summary says so).
const MAX_REMEMBERED: usize = 10_000;

impl Denials {
    pub fn new() -> Denials {
        Denials::default()
    }

    /// One refusal (or `d.count` of them) of `d.what` by `d.layer`.
    pub fn record(&mut self, d: Denial) {
        self.events = self.events.saturating_add(d.count);
        let key = (d.layer, d.what.clone());
        match self.seen.get(&key) {
            Some(Some(i)) => {
                let listed = &mut self.listed[*i];
                listed.count = listed.count.saturating_add(d.count);
            }
            Some(None) => {}
            None => {
                self.distinct += 1;
                if self.listed.len() < MAX_LISTED {
                    self.seen.insert(key, Some(self.listed.len()));
                    self.listed.push(d);
                } else if self.seen.len() < MAX_REMEMBERED {
                    self.seen.insert(key, None);
                }
            }
        }
    }

    /// This layer's refusals are being reported.
    pub fn observed(&mut self, layer: Layer) {
        if !self.observed.contains(&layer) {
            self.observed.push(layer);
        }
        self.not_observable.remove(&layer);
    }

    /// This layer is in force but its refusals cannot be seen here: why.
    pub fn not_observable(&mut self, layer: Layer, why: impl Into<String>) {
        self.observed.retain(|l| *l != layer);
        self.not_observable.insert(layer, why.into());
    }

    /// The egress proxy's refusal of `target` (as the plugin asked for it), `count`
    /// times, for `reason` (issue 22's proxy folds its refusals by target).
    pub fn network(&mut self, target: &str, reason: &str, count: u64) {
        // The proxy also refuses past the call's limits: those words are its own
        // (egress::proxy), and listing the target would not allow it.
        let setting = if reason.contains("connection limit") {
            "network.max_connections"
        } else if reason.contains("byte limit") {
            "network.max_bytes"
        } else {
            "network.allow"
        };
        self.record(
            Denial::new(Layer::Network, target, Allow::Setting(setting))
                .with_subject(target)
                .with_reason(reason)
                .with_count(count),
        );
    }

    /// Refusals an observer counted but did not pass on one by one (past its own
    /// list): they count in the totals only.
    pub fn unlisted(&mut self, distinct: u64, events: u64) {
        self.distinct = self.distinct.saturating_add(distinct);
        self.events = self.events.saturating_add(events);
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    pub fn listed(&self) -> &[Denial] {
        &self.listed
    }

    /// `data.denials`.
    pub fn list_json(&self) -> Value {
        Value::Array(self.listed.iter().map(Denial::to_json).collect())
    }

    /// `data.denials_summary`: totals, and what was observed or not.
    pub fn summary_json(&self) -> Value {
        let mut observed = self.observed.clone();
        observed.sort();
        let mut v = json!({
            "distinct": self.distinct,
            "events": self.events,
            "listed": self.listed.len(),
            "observed": observed,
        });
        if self.seen.len() >= MAX_REMEMBERED {
            v["distinct_is_lower_bound"] = json!(true);
        }
        if !self.not_observable.is_empty() {
            v["not_observable"] = json!(self.not_observable);
        }
        v
    }

    /// For a call that failed: the denial that most likely made it fail, and what would
    /// allow it. That is the first one whose path or target the failure's own words
    /// (`output`: the error, the plugin's stderr) quote; else, when those words say
    /// "Read-only file system", the read-only view of the host (a refusal of the mounts,
    /// which no kernel log records); else the first denial that is not ENOSYS (which
    /// says "this kernel lacks it": callers are written to fall back, and glibc's
    /// clone3, say, is answered so by design); an ENOSYS one only when quoted (its
    /// subject is the errno's text, "Function not implemented"). Programs refuse
    /// themselves harmless things as they start (Python lists its script's directory),
    /// so the very first denial is often not the one that mattered. `None` when there
    /// is nothing to say.
    pub fn explain(&self, output: &[&str]) -> Option<String> {
        // A plugin says why it failed last: its output can be the whole cap, of which
        // the end is searched, at most 100 times.
        let output: Vec<&str> = output.iter().map(|o| tail(o, EXPLAIN_TAIL)).collect();
        let says = |s: &str| output.iter().any(|o| o.contains(s));
        let quoted = |d: &&Denial| {
            d.subject
                .as_deref()
                .is_some_and(|s| !s.is_empty() && says(s))
        };
        if let Some(d) = self.listed.iter().find(quoted) {
            return Some(self.with_others(d));
        }
        if says(EROFS_TEXT) {
            return Some(EROFS_HINT.to_owned());
        }
        // Landlock's refusals are EACCES, and unlisted when the kernel's audit is off:
        // without a word here, one reads as the plugin's own bug.
        if self.listed.is_empty()
            && self.not_observable.contains_key(&Layer::Landlock)
            && says(EACCES_TEXT)
        {
            return Some(EACCES_HINT.to_owned());
        }
        // glibc's resolver asks nscd over an AF_UNIX socket before DNS: when a network
        // socket was refused too, that is the one that mattered.
        let local_probe = |d: &&Denial| d.what.starts_with("socket(AF_UNIX");
        // ENOSYS is answered by design (glibc's clone3 falls back to clone): such a
        // refusal is named only when the plugin's words quote it ("Function not
        // implemented", above), never because it is all there is (every thread makes one).
        let enosys = |d: &&Denial| d.errno.as_deref() == Some("ENOSYS");
        let first = self
            .listed
            .iter()
            .find(|d| !enosys(d) && !local_probe(d))
            .or_else(|| self.listed.iter().find(|d| !enosys(d)))?;
        Some(self.with_others(first))
    }

    /// `d`'s sentence, and how many other denials the list has.
    fn with_others(&self, d: &Denial) -> String {
        let more = self.distinct.saturating_sub(1);
        if more == 0 {
            return d.sentence();
        }
        let s = if more == 1 { "" } else { "s" };
        format!("{} ({more} other denial{s} in data.denials)", d.sentence())
    }
}

/// How much of the end of each text [`Denials::explain`] reads.
const EXPLAIN_TAIL: usize = 16 * 1024;

/// The last `max` bytes of `s` (at a character boundary).
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// strerror(EROFS), as plugins print it.
const EROFS_TEXT: &str = "Read-only file system";
const EROFS_HINT: &str = "the sandbox shows the plugin the host's files read-only, except \
    the call's own directory and write_paths: write_paths would allow writing there";

/// strerror(EACCES), as plugins print it.
const EACCES_TEXT: &str = "Permission denied";
const EACCES_HINT: &str = "the plugin met \"Permission denied\": Landlock lets it read only \
    its own files, the system's libraries and read_paths (and write only its home, \
    write_paths and grants), and this host's kernel audit is off, so upm cannot name the \
    path it refused; read_paths (or write_paths) would allow one outside them, unless the \
    file's own mode refuses the plugin's uid";

/// The container backend: the engine applies the seccomp profile (and has no Landlock
/// or proxy of upm's), and tells upm nothing of what it refused.
pub fn in_container() -> Denials {
    let mut d = Denials::new();
    d.not_observable(
        Layer::Seccomp,
        "the container engine applies the seccomp profile and does not report what it \
         refused: a refused call gets its errno, unrecorded",
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(what: &str) -> Denial {
        Denial::new(Layer::Landlock, what, Allow::Setting("read_paths"))
    }

    #[test]
    fn duplicates_fold_with_a_count_in_first_seen_order() {
        let mut d = Denials::new();
        d.record(fs("fs.read_file /a"));
        d.record(fs("fs.read_file /b"));
        d.record(fs("fs.read_file /a"));
        d.record(
            Denial::new(Layer::Seccomp, "memfd_create", Allow::Never("x")).with_errno("ENOSYS"),
        );
        let list = d.list_json();
        assert_eq!(list[0]["what"], "fs.read_file /a");
        assert_eq!(list[0]["count"], 2);
        assert_eq!(list[1]["count"], 1);
        assert_eq!(list[2]["errno"], "ENOSYS");
        let s = d.summary_json();
        assert_eq!(s["distinct"], 3);
        assert_eq!(s["events"], 4);
    }

    #[test]
    fn the_first_hundred_are_listed_and_the_totals_count_all() {
        let mut d = Denials::new();
        for i in 0..250 {
            d.record(fs(&format!("fs.read_file /f{i}")));
            d.record(fs(&format!("fs.read_file /f{i}")));
        }
        assert_eq!(d.listed().len(), MAX_LISTED);
        let s = d.summary_json();
        assert_eq!(s["distinct"], 250);
        assert_eq!(s["events"], 500);
        assert_eq!(s["listed"], 100);
        // Unlisted repeats are not listed later either.
        assert_eq!(d.list_json()[99]["what"], "fs.read_file /f99");
    }

    #[test]
    fn memory_stays_bounded_however_many_distinct_refusals() {
        let mut d = Denials::new();
        for i in 0..(MAX_REMEMBERED + 500) {
            d.record(fs(&format!("fs.read_file /g{i}")));
        }
        assert!(d.seen.len() <= MAX_REMEMBERED);
        assert_eq!(d.summary_json()["distinct_is_lower_bound"], true);
    }

    #[test]
    fn the_explanation_names_the_first_real_refusal_and_its_setting() {
        let mut d = Denials::new();
        assert_eq!(d.explain(&[""]), None);
        d.record(
            Denial::new(Layer::Seccomp, "clone3", Allow::Profile("default".into()))
                .with_errno("ENOSYS")
                .with_subject("Function not implemented"),
        );
        // ENOSYS is answered by design (callers fall back): not a cause unless quoted.
        assert_eq!(d.explain(&["my own error"]), None);
        let s = d.explain(&["[Errno 38] Function not implemented"]).unwrap();
        assert!(s.starts_with("the sandbox refused clone3"), "{s}");
        d.record(fs("fs.read_file /srv/secret").with_subject("/srv/secret"));
        let s = d.explain(&[""]).unwrap();
        assert!(
            s.starts_with("the sandbox refused fs.read_file /srv/secret (landlock)"),
            "{s}"
        );
        assert!(s.contains("read_paths"), "{s}");
        assert!(s.contains("1 other denial in data.denials"), "{s}");
        // A harmless refusal came first; the error quotes the one that mattered.
        let mut d = Denials::new();
        d.record(fs("fs.read_file /etc/locale.alias").with_subject("/etc/locale.alias"));
        d.record(fs("fs.read_file /srv/secret").with_subject("/srv/secret"));
        let s = d
            .explain(&["PermissionError: [Errno 13] Permission denied: '/srv/secret'"])
            .unwrap();
        assert!(
            s.starts_with("the sandbox refused fs.read_file /srv/secret"),
            "{s}"
        );
        let s = d.explain(&["no path in here"]).unwrap();
        assert!(
            s.starts_with("the sandbox refused fs.read_file /etc/locale.alias"),
            "{s}"
        );
        // Only the end of a long output is read.
        let long = format!("/srv/secret{}", "x".repeat(EXPLAIN_TAIL));
        let s = d.explain(&[&long]).unwrap();
        assert!(
            s.starts_with("the sandbox refused fs.read_file /etc/locale.alias"),
            "{s}"
        );
    }

    /// A name lookup: glibc's nscd probe (AF_UNIX) is refused before the DNS socket;
    /// the DNS one is named. Alone, the AF_UNIX one still is.
    #[test]
    fn a_network_socket_is_named_before_the_resolvers_local_probe() {
        let sock = |what: &str| {
            Denial::new(Layer::Seccomp, what, Allow::Profile("default".into()))
                .with_errno("EAFNOSUPPORT")
        };
        let mut d = Denials::new();
        d.record(sock("socket(AF_UNIX, SOCK_STREAM)"));
        let s = d.explain(&["no answer"]).unwrap();
        assert!(s.contains("socket(AF_UNIX, SOCK_STREAM)"), "{s}");
        d.record(sock("socket(AF_INET, SOCK_DGRAM)"));
        let s = d
            .explain(&["Temporary failure in name resolution"])
            .unwrap();
        assert!(s.contains("socket(AF_INET, SOCK_DGRAM)"), "{s}");
    }

    /// A write outside the call's directory and write_paths fails with EROFS on the
    /// read-only mounts, before Landlock is asked: no denial is logged, and the failure
    /// still points at write_paths.
    #[test]
    fn a_read_only_file_system_error_points_at_write_paths() {
        let erofs = "OSError: [Errno 30] Read-only file system: '/srv/out'";
        // With no denial at all.
        let s = Denials::new().explain(&[erofs]);
        assert_eq!(s.as_deref(), Some(EROFS_HINT));
        assert!(EROFS_HINT.contains("write_paths would allow"));
        // With harmless denials that the error does not quote: the mounts' refusal wins.
        let mut d = Denials::new();
        d.record(fs("fs.read_dir /srv/plugins").with_subject("/srv/plugins"));
        assert_eq!(d.explain(&["", erofs]).as_deref(), Some(EROFS_HINT));
        // A denial the error quotes still comes first.
        d.record(fs("fs.read_file /srv/out").with_subject("/srv/out"));
        let s = d.explain(&[erofs]).unwrap();
        assert!(
            s.starts_with("the sandbox refused fs.read_file /srv/out"),
            "{s}"
        );
        // Only the error's words count: no EROFS, no hint.
        assert_eq!(Denials::new().explain(&["Permission denied"]), None);
    }

    #[test]
    fn the_proxys_refusals_name_the_setting_that_would_allow_them() {
        let mut d = Denials::new();
        d.network(
            "evil.example:443",
            "evil.example:443 is not on the allowlist",
            2,
        );
        d.network(
            "a.example:443",
            "the call's connection limit (8) is reached",
            1,
        );
        d.network(
            "b.example:443",
            "the call's byte limit (10 bytes) is reached",
            1,
        );
        let list = d.list_json();
        assert_eq!(list[0]["layer"], "network");
        assert_eq!(list[0]["count"], 2);
        assert_eq!(list[0]["setting"], "network.allow");
        assert_eq!(list[1]["setting"], "network.max_connections");
        assert_eq!(list[2]["setting"], "network.max_bytes");
        let s = d
            .explain(&["HTTP Error 403: Forbidden (upm: evil.example:443 is not on ...)"])
            .unwrap();
        assert!(
            s.starts_with("the sandbox refused evil.example:443 (network: "),
            "{s}"
        );
        assert!(s.contains("network.allow would allow it"), "{s}");
    }

    #[test]
    fn observability_is_reported_per_layer() {
        let mut d = Denials::new();
        d.observed(Layer::Seccomp);
        d.not_observable(Layer::Landlock, "the kernel's audit is off");
        let s = d.summary_json();
        assert_eq!(s["observed"], json!(["seccomp"]));
        assert_eq!(s["not_observable"]["landlock"], "the kernel's audit is off");
    }
}
