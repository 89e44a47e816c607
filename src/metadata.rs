//! Cloud metadata endpoints: the names and addresses from which a cloud hands out an
//! instance's credentials. Nothing upm starts may reach them: the container backend
//! refuses an image whose registry is one, and the egress proxy refuses every connection
//! to one, whatever its allowlist says (a config that lists one is refused).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names of cloud metadata services (compared lowercase, without a trailing dot).
pub const NAMES: [&str; 5] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// The metadata address ranges, as (network, prefix length): link-local 169.254.0.0/16
/// (AWS, GCP, Azure, OCI, ECS task metadata), Alibaba's 100.100.100.200, AWS's IPv6
/// fd00:ec2::254, IPv6 link-local fe80::/10, and the IPv4 ones again as IPv4-mapped IPv6.
pub const RANGES: [(IpAddr, u8); 6] = [
    (IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
    (IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), 32),
    (
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
        128,
    ),
    (IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
    (
        IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xa9fe, 0)),
        112,
    ),
    (
        IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x6464, 0x64c8)),
        128,
    ),
];

/// Whether `ip` lies in one of [`RANGES`], or leads to one ([`leads_to`]: a NAT64 or 6to4
/// spelling of 169.254.169.254 is one too).
pub fn is_metadata_ip(ip: IpAddr) -> bool {
    [ip, leads_to(ip)]
        .into_iter()
        .any(|ip| RANGES.iter().any(|&(net, len)| within(ip, net, len)))
}

/// The IPv4 address an IPv6 address leads to: the one inside an IPv4-mapped
/// (`::ffff:0:0/96`), NAT64 (`64:ff9b::/96`: a NAT64 gateway carries the connection on
/// to it) or 6to4 (`2002::/16`: a 6to4 relay tunnels it there) address; else the address
/// itself.
pub fn leads_to(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6
            .to_ipv4_mapped()
            .or_else(|| nat64(v6))
            .or_else(|| six_to_four(v6))
        {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
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

/// The IPv4 address a 6to4 address (2002:AABB:CCDD::/48, RFC 3056) is tunnelled to.
fn six_to_four(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    (o[..2] == [0x20, 0x02]).then(|| Ipv4Addr::new(o[2], o[3], o[4], o[5]))
}

fn within(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether a host, as a name or an address in any spelling an IP parser accepts
/// (`2852039166`, `0xa9.0xfe.43518`, `::ffff:169.254.169.254`), is a metadata endpoint.
pub fn is_metadata_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if NAMES.contains(&host.as_str()) {
        return true;
    }
    if let Some(v4) = parse_ipv4_loose(&host) {
        return is_metadata_ip(IpAddr::V4(v4));
    }
    if let Ok(v6) = host.parse::<Ipv6Addr>() {
        return is_metadata_ip(IpAddr::V6(v6));
    }
    false
}

/// IPv4 as `inet_aton` reads it: 1 to 4 parts, each decimal, octal (`0..`) or
/// hex (`0x..`), so `2852039166` and `0xa9.0xfe.43518` are 169.254.169.254.
pub fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u64> = s
        .split('.')
        .map(parse_c_number)
        .collect::<Option<Vec<_>>>()?;
    let (last, init) = parts.split_last()?;
    if init.len() > 3 || init.iter().any(|p| *p > 255) {
        return None;
    }
    let last_bits = 8 * (4 - init.len() as u32);
    if last_bits < 64 && *last >= 1u64 << last_bits {
        return None;
    }
    let mut v: u64 = 0;
    for p in init {
        v = (v << 8) | p;
    }
    v = (v << last_bits) | last;
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

fn parse_c_number(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if p.len() > 1 && p.starts_with('0') {
        return u64::from_str_radix(&p[1..], 8).ok();
    }
    p.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_in_every_spelling() {
        for h in [
            "169.254.169.254",
            "169.254.170.2",
            "2852039166",
            "0xa9.0xfe.0xa9.0xfe",
            "0251.0376.0251.0376",
            "169.254.43518",
            "100.100.100.200",
            "metadata.google.internal",
            "METADATA.google.internal.",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::ffff:100.100.100.200",
        ] {
            assert!(is_metadata_host(h), "{h}");
        }
        for h in [
            "registry.example",
            "10.0.0.1",
            "100.100.100.201",
            "fd00:ec2::255",
            "::1",
            "169.253.255.255",
        ] {
            assert!(!is_metadata_host(h), "{h}");
        }
    }

    #[test]
    fn loose_ipv4_matches_inet_aton() {
        assert_eq!(parse_ipv4_loose("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(parse_ipv4_loose("256.1.1.1"), None);
        assert_eq!(parse_ipv4_loose("1.2.3.4.5"), None);
        assert_eq!(parse_ipv4_loose("example"), None);
        assert_eq!(parse_ipv4_loose("4294967296"), None);
    }
}
