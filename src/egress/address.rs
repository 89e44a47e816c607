//! Which addresses a name on the allowlist may never lead to: the host itself, the
//! networks behind it, and cloud metadata. A name resolves to whatever its DNS says,
//! so "pypi.org" on the list must not become a way to reach 127.0.0.1 or 10.0.0.5:
//! only an IP or CIDR entry that contains such an address allows it, and a metadata
//! address is never allowed (a config that lists one is refused).
//!
//! "Public" means globally reachable as the IANA IPv4 and IPv6 Special-Purpose Address
//! Registries say: every block they mark not globally reachable is [`Class::Special`],
//! and so are multicast, 240.0.0.0/4 and IPv4-compatible IPv6. Whatever its class, an
//! address of one of this host's own interfaces ([`Local`]) is refused the same way: a
//! service bound to 0.0.0.0 answers on every one of them, a public one included.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address is, for the proxy's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A globally routable address: a name on the list may lead there.
    Public,
    /// Reachable only if an IP or CIDR entry contains it; the kind, for the reason.
    Special(&'static str),
    /// A cloud metadata endpoint: never.
    Metadata,
}

/// The kind of this host's own addresses, in a refusal.
pub const OWN_ADDRESS: &str = "this host's own address";

/// Classifies an address as the proxy would connect to it. IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`)
/// addresses are judged by the IPv4 address they lead to ([`leads_to`]).
pub fn classify(ip: IpAddr) -> Class {
    if crate::metadata::is_metadata_ip(ip) {
        return Class::Metadata;
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match leads_to(ip) {
            IpAddr::V4(v4) => classify(IpAddr::V4(v4)),
            IpAddr::V6(_) => classify_v6(v6),
        },
    }
}

pub use crate::metadata::leads_to;

fn classify_v4(ip: Ipv4Addr) -> Class {
    let o = ip.octets();
    let kind = if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "shared address space (100.64.0.0/10)"
    } else if o[0] == 0 {
        // 0.0.0.0/8: "this network"; a connect to 0.0.0.0 reaches the host itself.
        "unspecified"
    } else if ip.is_multicast() {
        "multicast"
    } else if o[0] >= 240 {
        "reserved (240.0.0.0/4, broadcast)"
    } else if o[..3] == [192, 0, 0] && !matches!(o[3], 9 | 10) {
        // 192.0.0.9 (PCP anycast) and 192.0.0.10 (TURN anycast) are globally reachable.
        "IETF protocol assignments (192.0.0.0/24)"
    } else if o[..3] == [192, 0, 2] {
        "documentation (192.0.2.0/24)"
    } else if o[..3] == [198, 51, 100] {
        "documentation (198.51.100.0/24)"
    } else if o[..3] == [203, 0, 113] {
        "documentation (203.0.113.0/24)"
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        "benchmarking (198.18.0.0/15)"
    } else if o[..3] == [192, 88, 99] {
        "deprecated 6to4 relay anycast (192.88.99.0/24)"
    } else {
        return Class::Public;
    };
    Class::Special(kind)
}

/// The blocks of 2001::/23 (IETF protocol assignments) the IPv6 registry marks globally
/// reachable: PCP, TURN and DNS-SD SRP anycast, AMT, AS112-v6, ORCHIDv2, drone DETs.
const GLOBAL_IN_2001_23: [(Ipv6Addr, u32); 7] = [
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 1), 128),
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 2), 128),
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 3), 128),
    (Ipv6Addr::new(0x2001, 3, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x2001, 4, 0x112, 0, 0, 0, 0, 0), 48),
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28),
    (Ipv6Addr::new(0x2001, 0x30, 0, 0, 0, 0, 0, 0), 28),
];

/// The IPv6 registry's blocks that are not globally reachable, beyond loopback,
/// unspecified, unique local, link-local and the IPv4-mapped block; the first that
/// contains an address names it (the more specific blocks of 2001::/23 first).
const SPECIAL_V6: [(Ipv6Addr, u32, &str); 10] = [
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64 (64:ff9b:1::/48)",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only (100::/64)",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),
        64,
        "dummy prefix (100:0:0:1::/64)",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        "Teredo (2001::/32)",
    ),
    (
        Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0),
        48,
        "benchmarking (2001:2::/48)",
    ),
    (
        Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0),
        28,
        "deprecated ORCHID (2001:10::/28)",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments (2001::/23)",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation (2001:db8::/32)",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation (3fff::/20)",
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        "segment routing SIDs (5f00::/16)",
    ),
];

/// Whether `net/len` contains `ip`.
fn within(ip: Ipv6Addr, net: Ipv6Addr, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    ip.to_bits() & mask == net.to_bits() & mask
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    let s = ip.segments();
    let kind = if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "private (unique local, fc00::/7)"
    } else if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if s[..6] == [0; 6] {
        // ::a.b.c.d, IPv4-compatible (deprecated): routed nowhere sensible.
        "reserved (IPv4-compatible)"
    } else if GLOBAL_IN_2001_23
        .iter()
        .any(|&(net, len)| within(ip, net, len))
    {
        return Class::Public;
    } else if let Some(&(_, _, kind)) = SPECIAL_V6
        .iter()
        .find(|&&(net, len, _)| within(ip, net, len))
    {
        kind
    } else {
        return Class::Public;
    };
    Class::Special(kind)
}

/// This host's own addresses, in the network namespace the proxy connects from: those of
/// its network interfaces, and (asked of the kernel) any other it answers on itself, such
/// as a local route's (`ip route add local 203.0.113.0/24`, what cloud agents add for load
/// balancers' addresses). A listed name must not lead to one of them without an IP or
/// CIDR entry that contains it, whatever its class: a service bound to 0.0.0.0 or `::`
/// answers on a public address of the host as it does on 127.0.0.1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    seen: HashSet<IpAddr>,
    /// Per family (IPv4, IPv6): whether a `bind` tells this host's addresses from others,
    /// which it does not where `ip_nonlocal_bind` lets any address be bound.
    ask_kernel: (bool, bool),
}

impl Local {
    /// The interfaces' addresses now (getifaddrs(3): one netlink dump of the links and
    /// one of the addresses), IPv4-mapped ones as their IPv4 address; and the kernel is
    /// asked about the rest ([`Local::contains`]).
    pub fn read() -> Result<Local, String> {
        let found = nix::ifaddrs::getifaddrs()
            .map_err(|e| format!("cannot read this host's interface addresses: {e}"))?;
        let mut local = Local::from_addresses(found.filter_map(|ifa| {
            let a = ifa.address?;
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        }));
        let off = |family: &str| {
            std::fs::read_to_string(format!("/proc/sys/net/{family}/ip_nonlocal_bind"))
                .is_ok_and(|v| v.trim() == "0")
        };
        local.ask_kernel = (off("ipv4"), off("ipv6"));
        Ok(local)
    }

    pub fn from_addresses(addresses: impl IntoIterator<Item = IpAddr>) -> Local {
        Local {
            seen: addresses.into_iter().map(|ip| ip.to_canonical()).collect(),
            ask_kernel: (false, false),
        }
    }

    /// Adds what `other` holds: an address once seen stays this host's for the call.
    pub fn extend(&mut self, other: Local) {
        self.seen.extend(other.seen);
        self.ask_kernel = other.ask_kernel;
    }

    /// Whether `ip` is one of these addresses, or leads to one ([`leads_to`]: an
    /// IPv4-mapped address is compared as its IPv4 address, and so are NAT64 and 6to4
    /// ones, which a gateway would carry back to this host); for a `read` set, also
    /// whether the kernel would answer on it itself.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let to = leads_to(ip);
        self.seen.contains(&ip)
            || self.seen.contains(&to)
            || self.answers(ip)
            || (to != ip && self.answers(to))
    }

    /// Whether a socket may be bound to `ip` (port 0, nothing sent): the kernel allows
    /// that for its own addresses only, local routes' included, unless nonlocal binds are
    /// on. Any other failure than "not available" counts as this host's (refused).
    fn answers(&self, ip: IpAddr) -> bool {
        let ask = if ip.is_ipv4() {
            self.ask_kernel.0
        } else {
            self.ask_kernel.1
        };
        if !ask {
            return false;
        }
        match std::net::UdpSocket::bind(std::net::SocketAddr::new(ip, 0)) {
            Ok(_) => true,
            // (No such family here: nothing of it is this host's, nor reachable.)
            Err(e) => !matches!(
                e.raw_os_error(),
                Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Class {
        classify(s.parse().unwrap())
    }

    #[test]
    fn special_ranges() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared address space (100.64.0.0/10)"),
            ("100.127.255.255", "shared address space (100.64.0.0/10)"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved (240.0.0.0/4, broadcast)"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "private (unique local, fc00::/7)"),
            ("fd12:3456::1", "private (unique local, fc00::/7)"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a00:1", "private"),
            ("::127.0.0.1", "reserved (IPv4-compatible)"),
        ] {
            assert_eq!(class(ip), Class::Special(kind), "{ip}");
        }
    }

    /// The blocks of the IANA Special-Purpose Address Registries that are not globally
    /// reachable, at their edges.
    #[test]
    fn registry_blocks_that_are_not_globally_reachable() {
        for (ip, kind) in [
            ("192.0.0.0", "IETF protocol assignments (192.0.0.0/24)"),
            ("192.0.0.8", "IETF protocol assignments (192.0.0.0/24)"),
            ("192.0.0.11", "IETF protocol assignments (192.0.0.0/24)"),
            ("192.0.0.170", "IETF protocol assignments (192.0.0.0/24)"),
            ("192.0.0.255", "IETF protocol assignments (192.0.0.0/24)"),
            ("192.0.2.0", "documentation (192.0.2.0/24)"),
            ("192.0.2.2", "documentation (192.0.2.0/24)"),
            ("192.0.2.255", "documentation (192.0.2.0/24)"),
            ("198.51.100.7", "documentation (198.51.100.0/24)"),
            ("203.0.113.255", "documentation (203.0.113.0/24)"),
            ("198.18.0.0", "benchmarking (198.18.0.0/15)"),
            ("198.19.255.255", "benchmarking (198.18.0.0/15)"),
            (
                "192.88.99.1",
                "deprecated 6to4 relay anycast (192.88.99.0/24)",
            ),
            ("::ffff:192.0.2.2", "documentation (192.0.2.0/24)"),
            ("64:ff9b::c000:202", "documentation (192.0.2.0/24)"),
            ("2001:db8::1", "documentation (2001:db8::/32)"),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                "documentation (2001:db8::/32)",
            ),
            ("3fff::1", "documentation (3fff::/20)"),
            ("3fff:fff:ffff::1", "documentation (3fff::/20)"),
            ("100::1", "discard-only (100::/64)"),
            ("100::ffff:ffff:ffff:ffff", "discard-only (100::/64)"),
            ("100:0:0:1::1", "dummy prefix (100:0:0:1::/64)"),
            ("64:ff9b:1::a00:1", "local-use NAT64 (64:ff9b:1::/48)"),
            ("64:ff9b:1:ffff::1", "local-use NAT64 (64:ff9b:1::/48)"),
            ("2001::1", "Teredo (2001::/32)"),
            ("2001:0:ffff::1", "Teredo (2001::/32)"),
            ("2001:1::", "IETF protocol assignments (2001::/23)"),
            ("2001:1::4", "IETF protocol assignments (2001::/23)"),
            ("2001:2::1", "benchmarking (2001:2::/48)"),
            ("2001:4::1", "IETF protocol assignments (2001::/23)"),
            ("2001:4:113::1", "IETF protocol assignments (2001::/23)"),
            ("2001:10::1", "deprecated ORCHID (2001:10::/28)"),
            ("2001:40::1", "IETF protocol assignments (2001::/23)"),
            ("2001:1ff:ffff::1", "IETF protocol assignments (2001::/23)"),
            ("5f00::1", "segment routing SIDs (5f00::/16)"),
            ("5f00:ffff::1", "segment routing SIDs (5f00::/16)"),
            // 6to4 is judged by the IPv4 address it is tunnelled to.
            ("2002:7f00:1::1", "loopback"),
            ("2002:a00:1::1", "private"),
            ("2002:c000:202::1", "documentation (192.0.2.0/24)"),
            ("2002::1", "unspecified"),
        ] {
            assert_eq!(class(ip), Class::Special(kind), "{ip}");
        }
        assert_eq!(class("2002:a9fe:a9fe::1"), Class::Metadata);
    }

    /// What the registries mark globally reachable, inside or next to a special block.
    #[test]
    fn globally_reachable_registry_blocks_and_neighbours_stay_public() {
        for ip in [
            "192.0.0.9",
            "192.0.0.10",
            "191.255.255.255",
            "192.0.1.1",
            "192.0.3.0",
            "192.31.196.1",
            "192.52.193.1",
            "192.88.98.255",
            "192.88.100.0",
            "192.175.48.1",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "2001:1::1",
            "2001:1::2",
            "2001:1::3",
            "2001:3::1",
            "2001:3:ffff::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:2f:ffff::1",
            "2001:30::1",
            "2001:200::1",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "3fff:1000::1",
            "5eff:ffff::1",
            "5f01::1",
            "64:ff9b::101:101",
            "64:ff9b:2::1",
            "100:0:0:2::1",
            "2620:4f:8000::1",
            "2002:101:101::1",
        ] {
            assert_eq!(class(ip), Class::Public, "{ip}");
        }
    }

    #[test]
    fn metadata_whatever_the_spelling() {
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "100.100.100.200",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert_eq!(class(ip), Class::Metadata, "{ip}");
        }
    }

    #[test]
    fn public_addresses() {
        for ip in [
            "1.1.1.1",
            "151.101.0.223",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2a04:4e42::223",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(class(ip), Class::Public, "{ip}");
        }
    }
    #[test]
    fn this_hosts_addresses_are_compared_as_the_ipv4_address_they_lead_to() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An interface's IPv4-mapped address is its IPv4 address.
        let local = Local::from_addresses([ip("44.0.0.7"), ip("::ffff:44.0.0.8"), ip("2a00::7")]);
        for own in [
            "44.0.0.7",
            "::ffff:44.0.0.7",
            "44.0.0.8",
            "::ffff:44.0.0.8",
            "64:ff9b::2c00:7",
            "2002:2c00:7::1",
            "2a00::7",
        ] {
            assert!(local.contains(ip(own)), "{own}");
        }
        for other in ["44.0.0.9", "::ffff:44.0.0.9", "2a00::8", "::44.0.0.7"] {
            assert!(!local.contains(ip(other)), "{other}");
        }
        // What was seen stays.
        let mut seen = Local::from_addresses([ip("44.0.0.7")]);
        seen.extend(Local::from_addresses([ip("44.0.0.9")]));
        assert!(seen.contains(ip("44.0.0.7")) && seen.contains(ip("44.0.0.9")));
    }

    #[test]
    fn this_hosts_addresses_can_be_read() {
        let local = Local::read().unwrap();
        // Every address the kernel lists for lo is there (none if lo has none here).
        let lo: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
            .unwrap()
            .filter(|i| i.interface_name == "lo")
            .filter_map(|i| i.address?.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())))
            .collect();
        for ip in lo {
            assert!(local.contains(ip), "{ip}");
        }
    }
}
