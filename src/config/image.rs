//! Image references: what upm accepts before it hands one to an engine.
//!
//! The reference becomes one argument of the engine's command line, so it is
//! checked by character (no whitespace, no shell metacharacters, never a
//! leading `-` that would read as a flag), pinned by digest unless the config
//! says `allow_tags`, and refused when its registry host is a cloud metadata
//! endpoint (in any spelling an IP parser accepts), which an engine that pulls
//! would otherwise contact from the host's network.

use crate::metadata::is_metadata_host;
use std::net::Ipv6Addr;

const MAX_LEN: usize = 512;

/// Why a reference is refused: one sentence, for the config problem list.
pub fn validate(image: &str, allow_tags: bool) -> Result<(), String> {
    if image.is_empty() {
        return Err("is empty".into());
    }
    if image.len() > MAX_LEN {
        return Err(format!("is longer than {MAX_LEN} characters"));
    }
    if let Some(c) = image.chars().find(|c| !allowed_char(*c)) {
        return Err(format!(
            "contains {c:?}: only letters, digits and . _ - / : @ [ ] are allowed"
        ));
    }
    if image.starts_with(['-', '/', ':', '@', '.']) {
        return Err("must start with a letter, a digit or '['".into());
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if name.is_empty() {
        return Err("has no image name before '@'".into());
    }
    match digest {
        Some(d) if !is_sha256_digest(d) => {
            return Err("has a digest that is not sha256:<64 lowercase hex digits>".into())
        }
        None if !allow_tags => {
            return Err(
                "is not pinned by digest (name@sha256:<64 hex>); set \"allow_tags\": true to accept a tag"
                    .into(),
            )
        }
        _ => {}
    }
    if let Some(host) = registry_host(name) {
        if is_metadata_host(&host) {
            return Err(format!(
                "names the cloud metadata address {host:?} as its registry"
            ));
        }
    }
    Ok(())
}

fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '[' | ']')
}

fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The host part of `host[:port]/path`, `[v6]:port/path`; without a `/`, the
/// name itself is checked too (refusing more is the safe side).
fn registry_host(name: &str) -> Option<String> {
    let first = name.split('/').next()?;
    let host = if let Some(rest) = first.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if first.parse::<Ipv6Addr>().is_ok() {
        first
    } else {
        first.split(':').next().unwrap_or(first)
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:9fd545957dcb80de7234685454ada60f439ec623fa3f149319ed5d64eead2b5a";

    fn pinned(name: &str) -> String {
        format!("{name}@{D}")
    }

    #[test]
    fn digest_pinned_references_pass() {
        for n in [
            "busybox",
            "localhost/upm-test",
            "localhost:5000/a/b",
            "registry.example.com/team/img:1.2",
            "[::1]:5000/x",
        ] {
            assert_eq!(validate(&pinned(n), false), Ok(()), "{n}");
        }
    }

    #[test]
    fn tags_need_allow_tags() {
        assert!(validate("busybox:latest", false)
            .unwrap_err()
            .contains("not pinned"));
        assert!(validate("busybox", false).is_err());
        assert_eq!(validate("busybox:latest", true), Ok(()));
    }

    #[test]
    fn bad_digests_are_refused_even_with_tags() {
        for bad in [
            "busybox@sha256:abc",
            "busybox@sha512:9fd545957dcb80de7234685454ada60f439ec623fa3f149319ed5d64eead2b5a",
            "busybox@sha256:9FD545957DCB80DE7234685454ADA60F439EC623FA3F149319ED5D64EEAD2B5A",
            "@sha256:9fd545957dcb80de7234685454ada60f439ec623fa3f149319ed5d64eead2b5a",
        ] {
            assert!(validate(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn metacharacters_and_flags_are_refused() {
        for bad in [
            "busybox;rm -rf /",
            "busybox $(id)",
            "busy\nbox",
            "-v/:/host",
            "--privileged",
            "a|b",
            "a`b`",
            "",
        ] {
            assert!(validate(&pinned(bad), true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_registries_are_refused_in_any_spelling() {
        for host in [
            "169.254.169.254",
            "169.254.170.2:80",
            "2852039166",
            "0xa9fea9fe",
            "0251.0376.0251.0376",
            "169.254.43518",
            "metadata.google.internal",
            "METADATA.google.internal.",
            "100.100.100.200",
            "[fd00:ec2::254]",
            "[fd00:ec2::254]:80",
            "[::ffff:169.254.169.254]",
            "[fe80::1]",
        ] {
            let r = validate(&pinned(&format!("{host}/img")), true);
            assert!(
                r.as_ref().is_err_and(|e| e.contains("metadata")),
                "{host}: {r:?}"
            );
        }
    }
}
