//! The config's `"network": {"allow": [...]}`: parsed when the config loads, matched
//! for every connection the proxy is asked for.
//!
//! Entries: `HOST[:PORT]`, `*.DOMAIN[:PORT]` (any name under DOMAIN, not DOMAIN itself),
//! `IP[:PORT]` and `CIDR[:PORT]` (an IPv6 address or network with a port in brackets:
//! `[2001:db8::1]:8443`, `[2001:db8::/32]:443`). An entry without a port allows 80 and 443.
//!
//! Names and addresses are matched separately, and only names on the list are ever
//! resolved: resolving whatever name a plugin asks for would let it tell any DNS
//! server anything (`<secret>.attacker.example`). A name on the list may lead only to
//! public (globally reachable) addresses; a loopback, private, link-local, shared,
//! unspecified, multicast, documentation, benchmarking or other special-purpose one
//! needs an IP or CIDR entry that contains it ([`super::address`]), and so does an
//! address of this host's own interfaces whatever its class; a cloud metadata address
//! is refused always: a config that lists one does not load.

use super::address::{classify, Class, Local, OWN_ADDRESS};
use ipnet::IpNet;
use std::net::IpAddr;

/// The ports an entry without one allows.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// One entry of the list, as written and as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    text: String,
    pattern: Pattern,
    /// `None`: [`DEFAULT_PORTS`].
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// A host name, lowercase, without a trailing dot.
    Name(String),
    /// `*.DOMAIN`: names ending in `.DOMAIN` (stored with its leading dot).
    Suffix(String),
    /// An IP literal (a /32 or /128) or a network.
    Net(IpNet),
}

/// The whole list, in the config's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist(Vec<Entry>);

/// What a plugin asked to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Lowercase, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Entry {
    /// Parses one entry; the error is a sentence for the config's problem list.
    pub fn parse(text: &str) -> Result<Entry, String> {
        let bad = |why: &str| Err(format!("{text:?} {why}"));
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("is not HOST[:PORT], *.DOMAIN[:PORT], IP[:PORT] or CIDR[:PORT]");
        }
        let (host, port) = match split_host_port(text) {
            Ok(hp) => hp,
            Err(why) => return bad(&why),
        };
        let pattern = if host.contains('/') {
            let net: IpNet = match host.parse() {
                Ok(n) => n,
                Err(_) => return bad("is not a valid CIDR network (e.g. 10.0.0.0/8)"),
            };
            if net.trunc() != net {
                return bad(&format!(
                    "has bits set past its prefix length: did you mean {}?",
                    net.trunc()
                ));
            }
            Pattern::Net(canonical_net(net))
        } else if let Some(domain) = host.strip_prefix("*.") {
            match normalize_name(domain) {
                Ok(d) => Pattern::Suffix(format!(".{d}")),
                Err(why) => return bad(&why),
            }
        } else if host.contains('*') {
            return bad("has a wildcard that is not a leading \"*.\"");
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            Pattern::Net(canonical_net(IpNet::from(ip)))
        } else if crate::metadata::parse_ipv4_loose(host).is_some() {
            return bad("spells an IPv4 address in a short or numeric form: write it as a dotted quad (a.b.c.d)");
        } else {
            match normalize_name(host) {
                Ok(n) => Pattern::Name(n),
                Err(why) => return bad(&why),
            }
        };
        let metadata = match &pattern {
            Pattern::Name(n) => crate::metadata::is_metadata_host(n),
            Pattern::Suffix(_) => false,
            Pattern::Net(net) => overlaps_metadata(net),
        };
        if metadata {
            return bad(
                "is or contains a cloud metadata address (169.254.0.0/16, 100.100.100.200, \
                 fd00:ec2::254, fe80::/10, metadata.google.internal, ...), which no plugin may reach",
            );
        }
        Ok(Entry {
            text: text.to_owned(),
            pattern,
            port,
        })
    }

    /// The entry as the config wrote it.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn allows_port(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => DEFAULT_PORTS.contains(&port),
        }
    }

    fn names(&self, name: &str) -> bool {
        match &self.pattern {
            Pattern::Name(n) => n == name,
            Pattern::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
            Pattern::Net(_) => false,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        matches!(&self.pattern, Pattern::Net(net) if net.contains(&ip.to_canonical()))
    }
}

impl Allowlist {
    /// Parses every entry; the errors, one per bad entry, when any is bad.
    pub fn parse(texts: &[String]) -> Result<Allowlist, Vec<String>> {
        if texts.is_empty() {
            return Err(vec![
                "\"allow\" is empty: to give the plugin no network, write \"network\": false"
                    .into(),
            ]);
        }
        let (ok, bad): (Vec<_>, Vec<_>) = texts
            .iter()
            .map(|t| Entry::parse(t))
            .partition(Result::is_ok);
        if bad.is_empty() {
            Ok(Allowlist(ok.into_iter().filter_map(Result::ok).collect()))
        } else {
            Err(bad.into_iter().filter_map(Result::err).collect())
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.0
    }

    fn by_name(&self, name: &str, port: u16) -> Option<&Entry> {
        self.0.iter().find(|e| e.names(name) && e.allows_port(port))
    }

    fn by_address(&self, ip: IpAddr, port: u16) -> Option<&Entry> {
        self.0
            .iter()
            .find(|e| e.contains(ip) && e.allows_port(port))
    }

    /// Whether `host:port` may be asked for at all, before anything is resolved: the
    /// entry that allows it, or why not.
    pub fn check(&self, host: &Host, port: u16) -> Result<&Entry, String> {
        let target = format!("{host}:{port}");
        match host {
            Host::Ip(ip) => {
                if classify(*ip) == Class::Metadata {
                    return Err(format!(
                        "{target} is a cloud metadata address, never reachable"
                    ));
                }
                self.by_address(*ip, port)
                    .ok_or_else(|| not_listed(&target))
            }
            Host::Name(name) => {
                if crate::metadata::is_metadata_host(name) {
                    return Err(format!(
                        "{target} is a cloud metadata name, never reachable"
                    ));
                }
                self.by_name(name, port).ok_or_else(|| not_listed(&target))
            }
        }
    }

    /// The addresses a listed name resolved to that the proxy may connect to, in their
    /// order, or why none: special addresses, and this host's own (`local`) whatever
    /// their class, need an IP or CIDR entry of their own.
    pub fn usable(
        &self,
        name: &str,
        port: u16,
        resolved: &[IpAddr],
        local: &Local,
    ) -> Result<Vec<IpAddr>, String> {
        let mut usable = Vec::new();
        let mut refused = Vec::new();
        for &ip in resolved {
            let class = match classify(ip) {
                Class::Public if local.contains(ip) => Class::Special(OWN_ADDRESS),
                class => class,
            };
            match class {
                Class::Public => usable.push(ip),
                Class::Special(_) if self.by_address(ip, port).is_some() => usable.push(ip),
                Class::Special(kind) => refused.push(format!("{ip} ({kind})")),
                Class::Metadata => refused.push(format!("{ip} (cloud metadata)")),
            }
        }
        if !usable.is_empty() {
            return Ok(usable);
        }
        Err(format!(
            "{name}:{port} resolves only to addresses a name may not lead to: {}; an address \
             that is not globally reachable (loopback, private, link-local, shared, \
             unspecified, multicast, reserved, documentation, benchmarking, or another block \
             of the IANA special-purpose registries) or that is this host's own needs an IP \
             or CIDR entry of its own on the allowlist",
            refused.join(", ")
        ))
    }
}

fn not_listed(target: &str) -> String {
    format!("{target} is not on the plugin's network allowlist")
}

/// Splits `host[:port]`, `[v6][:port]` and a bare IPv6 address or network.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("opens a '[' it does not close")?;
        return match after {
            "" => Ok((host, None)),
            p => match p.strip_prefix(':') {
                Some(p) => Ok((host, Some(parse_port(p)?))),
                None => Err("has something after ']' that is not \":PORT\"".into()),
            },
        };
    }
    if s.matches(':').count() > 1 {
        // An IPv6 address or network without a port (a port needs the brackets).
        return Ok((s, None));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((s, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "has port {p:?}, which is not a number from 1 to 65535"
        )),
    }
}

/// A host name as the proxy compares it: lowercase, without a trailing dot, made of
/// labels of letters, digits, `-` and `_` (at most 63 bytes each, 253 in all). A
/// name in another script must be written in its ASCII (`xn--`) form.
pub fn normalize_name(s: &str) -> Result<String, String> {
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err("is not a host name (1 to 253 characters)".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty label or one longer than 63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(
                "is not a host name (letters, digits, '-' and '_'; a name in another script in its xn-- form)"
                    .into(),
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label that starts or ends with '-'".into());
        }
    }
    Ok(name)
}

/// A host as a client asked for it: an address in any spelling an IP parser
/// accepts (`127.1` is 127.0.0.1, as the C library would read it) or a host name.
/// Brackets around an IPv6 address are already removed.
pub fn parse_host(s: &str) -> Result<Host, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Host::Ip(ip.to_canonical()));
    }
    if let Some(v4) = crate::metadata::parse_ipv4_loose(s) {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    normalize_name(s)
        .map(Host::Name)
        .map_err(|why| format!("{s:?} {why}"))
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it is, so
/// that it matches the IPv4 addresses the proxy compares.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// Two networks overlap when one contains the other's first address.
fn overlaps_metadata(net: &IpNet) -> bool {
    crate::metadata::RANGES.iter().any(|&(addr, len)| {
        let Ok(m) = IpNet::new(addr, len).map(|m| m.trunc()) else {
            return false;
        };
        let m = canonical_net(m);
        net.contains(&m.network()) || m.contains(&net.network())
    }) || crate::metadata::is_metadata_ip(net.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn host(s: &str) -> Host {
        parse_host(s).unwrap()
    }

    fn allowed(l: &Allowlist, h: &str, port: u16) -> bool {
        l.check(&host(h), port).is_ok()
    }

    #[test]
    fn entries_parse_with_and_without_ports() {
        for ok in [
            "pypi.org",
            "files.pythonhosted.org:443",
            "*.npmjs.org",
            "*.example.com:8443",
            "127.0.0.1:8080",
            "10.0.0.0/8",
            "10.0.0.0/8:5000",
            "2001:db8::1",
            "[2001:db8::1]:8443",
            "2001:db8::/32",
            "[2001:db8::/32]:443",
            "Registry.Example.",
            "my_host.internal",
        ] {
            assert!(Entry::parse(ok).is_ok(), "{ok}: {:?}", Entry::parse(ok));
        }
    }

    #[test]
    fn bad_entries_say_why() {
        for (bad, says) in [
            ("", "is not HOST"),
            ("pypi.org:0", "not a number from 1 to 65535"),
            ("pypi.org:70000", "not a number"),
            ("pypi.org:+1", "not a number"),
            ("pypi .org", "is not HOST"),
            ("*", "wildcard"),
            ("*.", "not a host name"),
            ("a.*.org", "wildcard"),
            ("*pypi.org", "wildcard"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("10.0.0.0/33", "not a valid CIDR"),
            ("127.1", "dotted quad"),
            ("2852039166:80", "dotted quad"),
            ("[::1", "does not close"),
            ("[::1]x", "not \":PORT\""),
            ("bücher.example", "xn--"),
            ("-a.example", "starts or ends with '-'"),
            ("a..example", "empty label"),
        ] {
            let e = Entry::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_metadata_address_on_the_list_is_an_error() {
        for bad in [
            "169.254.169.254",
            "169.254.169.254:80",
            "169.254.0.0/16",
            "169.0.0.0/8",
            "0.0.0.0/0",
            "100.100.100.200",
            "100.64.0.0/10",
            "fd00:ec2::254",
            "[fd00:ec2::254]:80",
            "fe80::/10",
            "fe80::1",
            "::/0",
            "::ffff:169.254.169.254",
            "::ffff:0:0/96",
            "metadata.google.internal",
            "metadata.google.internal:80",
            "METADATA",
        ] {
            let e = Entry::parse(bad).unwrap_err();
            assert!(e.contains("metadata"), "{bad:?}: {e}");
        }
        // Near misses load.
        for ok in [
            "169.253.0.0/16",
            "100.100.100.201",
            "100.64.0.0/11",
            "fd00:ec2::/120",
        ] {
            assert!(Entry::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn an_empty_list_is_an_error_and_every_bad_entry_is_named() {
        assert!(Allowlist::parse(&[]).unwrap_err()[0].contains("\"network\": false"));
        let errs = Allowlist::parse(&["ok.example".into(), "a:b".into(), "169.254.1.1".into()])
            .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn names_match_exactly_and_wildcards_match_below_their_domain() {
        let l = list(&["pypi.org", "*.pythonhosted.org", "registry.example:8443"]);
        assert!(allowed(&l, "pypi.org", 443));
        assert!(allowed(&l, "PyPI.org.", 80));
        assert!(!allowed(&l, "pypi.org", 8080), "no port: only 80 and 443");
        assert!(!allowed(&l, "www.pypi.org", 443));
        assert!(!allowed(&l, "pypi.org.evil.example", 443));
        assert!(!allowed(&l, "evilpypi.org", 443));
        assert!(allowed(&l, "files.pythonhosted.org", 443));
        assert!(allowed(&l, "a.b.pythonhosted.org", 443));
        assert!(!allowed(&l, "pythonhosted.org", 443), "*.d does not name d");
        assert!(!allowed(&l, "xpythonhosted.org", 443));
        assert!(allowed(&l, "registry.example", 8443));
        assert!(!allowed(&l, "registry.example", 443));
        let e = l.check(&host("evil.example"), 443).unwrap_err();
        assert!(
            e.contains("evil.example:443 is not on the plugin's network allowlist"),
            "{e}"
        );
    }

    #[test]
    fn addresses_match_only_address_entries() {
        let l = list(&[
            "127.0.0.1:8080",
            "10.0.0.0/8",
            "[2001:db8::/32]:443",
            "localhost:80",
        ]);
        assert!(allowed(&l, "127.0.0.1", 8080));
        assert!(allowed(&l, "::ffff:127.0.0.1", 8080));
        assert!(allowed(&l, "127.1", 8080), "the C library's spelling");
        assert!(allowed(&l, "2130706433", 8080));
        assert!(
            !allowed(&l, "127.0.0.1", 80),
            "localhost:80 names a name, not 127.0.0.1"
        );
        assert!(!allowed(&l, "127.0.0.2", 8080));
        assert!(allowed(&l, "10.200.3.4", 443));
        assert!(!allowed(&l, "10.200.3.4", 22));
        assert!(allowed(&l, "2001:db8::5", 443));
        assert!(!allowed(&l, "2001:db9::5", 443));
        // A name is never matched by an address entry: it would have to be resolved first.
        assert!(!allowed(&l, "vm", 8080));
    }

    #[test]
    fn metadata_is_refused_even_through_a_wide_entry() {
        let l = list(&["*.internal", "*.google.internal"]);
        let e = l.check(&host("metadata.google.internal"), 80).unwrap_err();
        assert!(e.contains("metadata"), "{e}");
        let l = list(&["*.example"]);
        let e = l.check(&host("169.254.169.254"), 80).unwrap_err();
        assert!(e.contains("metadata"), "{e}");
    }

    #[test]
    fn a_listed_name_leads_only_to_public_addresses_unless_an_address_entry_allows() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = Local::default();
        let l = list(&["localhost:8080", "mirror.corp:8080", "10.1.0.0/16:8080"]);
        let e = l
            .usable("localhost", 8080, &[ip("127.0.0.1")], &none)
            .unwrap_err();
        assert!(e.contains("127.0.0.1 (loopback)"), "{e}");
        assert!(e.contains("not globally reachable"), "{e}");
        // The special-purpose blocks a name once reached (the red team's 192.0.2.2).
        let e = l
            .usable(
                "mirror.corp",
                8080,
                &[ip("192.0.2.2"), ip("2001:db8::2")],
                &none,
            )
            .unwrap_err();
        assert!(
            e.contains("192.0.2.2 (documentation (192.0.2.0/24))")
                && e.contains("2001:db8::2 (documentation (2001:db8::/32))"),
            "{e}"
        );
        assert_eq!(
            l.usable("mirror.corp", 8080, &[ip("10.1.2.3")], &none)
                .unwrap(),
            vec![ip("10.1.2.3")]
        );
        let e = l
            .usable("mirror.corp", 8080, &[ip("10.2.0.1")], &none)
            .unwrap_err();
        assert!(e.contains("10.2.0.1 (private)"), "{e}");
        // Mixed answers: only what may be used, in order.
        assert_eq!(
            l.usable(
                "mirror.corp",
                8080,
                &[
                    ip("169.254.169.254"),
                    ip("192.168.0.1"),
                    ip("93.184.216.34")
                ],
                &none
            )
            .unwrap(),
            vec![ip("93.184.216.34")]
        );
        let e = l
            .usable("mirror.corp", 8080, &[ip("169.254.169.254")], &none)
            .unwrap_err();
        assert!(e.contains("cloud metadata"), "{e}");
        // The address entry must allow the port too.
        let l = list(&["localhost:8080", "127.0.0.1:9090"]);
        assert!(l
            .usable("localhost", 8080, &[ip("127.0.0.1")], &none)
            .is_err());
        let l = list(&["localhost:8080", "127.0.0.1:8080"]);
        assert!(l
            .usable("localhost", 8080, &[ip("127.0.0.1")], &none)
            .is_ok());
    }

    #[test]
    fn a_listed_name_may_not_lead_to_this_hosts_own_address_unless_an_address_entry_allows() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Public addresses on this host's interfaces, and its loopback.
        let local = Local::from_addresses([ip("44.0.0.7"), ip("2a00:1450::7"), ip("127.0.0.1")]);
        let l = list(&["mirror.example", "other.example", "44.0.0.0/8:443"]);
        for (found, shown) in [
            ("44.0.0.7", "44.0.0.7"),
            ("::ffff:44.0.0.7", "::ffff:44.0.0.7"),
            ("64:ff9b::2c00:7", "64:ff9b::2c00:7"),
            ("2002:2c00:7::1", "2002:2c00:7::1"),
            ("2a00:1450::7", "2a00:1450::7"),
        ] {
            let e = l
                .usable("mirror.example", 80, &[ip(found)], &local)
                .unwrap_err();
            assert!(
                e.contains(&format!("{shown} (this host's own address)")),
                "{found}: {e}"
            );
            assert!(e.contains("this host's own needs an IP"), "{e}");
            // Without it among the host's addresses, it is public.
            assert_eq!(
                l.usable("mirror.example", 80, &[ip(found)], &Local::default())
                    .unwrap(),
                vec![ip(found)],
                "{found}"
            );
        }
        // Its own kind stays first: loopback is loopback.
        let e = l
            .usable("mirror.example", 80, &[ip("127.0.0.1")], &local)
            .unwrap_err();
        assert!(e.contains("127.0.0.1 (loopback)"), "{e}");
        // The rest of a mixed answer is used, in order.
        assert_eq!(
            l.usable(
                "mirror.example",
                80,
                &[ip("44.0.0.7"), ip("1.1.1.1")],
                &local
            )
            .unwrap(),
            vec![ip("1.1.1.1")]
        );
        // An IP or CIDR entry that contains it allows it, with its port only.
        assert_eq!(
            l.usable("other.example", 443, &[ip("44.0.0.7")], &local)
                .unwrap(),
            vec![ip("44.0.0.7")]
        );
        assert!(l
            .usable("other.example", 80, &[ip("44.0.0.7")], &local)
            .is_err());
    }
}
