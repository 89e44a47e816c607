//! Which addresses a name on the allowlist may never lead to: the host itself, the
//! networks behind it, and cloud metadata. A name resolves to whatever its DNS says,
//! so "pypi.org" on the list must not become a way to reach 127.0.0.1 or 10.0.0.5:
//! only an IP or CIDR entry that contains such an address allows it, and a metadata
//! address is never allowed (a config that lists one is refused).

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

/// Classifies an address as the proxy would connect to it. IPv4-mapped IPv6
/// (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) addresses are judged by the
/// IPv4 address they lead to.
pub fn classify(ip: IpAddr) -> Class {
    if crate::metadata::is_metadata_ip(ip) {
        return Class::Metadata;
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped().or_else(|| nat64(v6)) {
                return classify(IpAddr::V4(v4));
            }
            classify_v6(v6)
        }
    }
}

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
    } else {
        return Class::Public;
    };
    Class::Special(kind)
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
    } else {
        return Class::Public;
    };
    Class::Special(kind)
}

/// The IPv4 address inside the well-known NAT64 prefix 64:ff9b::/96: a NAT64 gateway
/// would carry the connection on to it.
fn nat64(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| {
        let o = ip.octets();
        Ipv4Addr::new(o[12], o[13], o[14], o[15])
    })
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
}
