//! Name resolution for the proxy. upm is a static glibc binary: glibc's resolver would
//! need NSS modules it cannot load, so names are resolved by hickory-resolver, which
//! reads `/etc/hosts` and `/etc/resolv.conf` itself. Names are looked up as fully
//! qualified (no search list appended: the name checked against the allowlist is the
//! name resolved), and the caller connects to exactly the addresses returned here,
//! after checking them: there is no second lookup a DNS answer could change.

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use std::net::IpAddr;
use std::time::Duration;

pub struct Resolver {
    /// `None` when no resolver could be built: every lookup then fails, closed.
    inner: Option<TokioResolver>,
    /// Why only part of the system's configuration (or none of it) is in use.
    note: Option<String>,
}

impl Resolver {
    /// The system's configuration; without a readable `/etc/resolv.conf`, `/etc/hosts` only.
    pub fn system() -> Resolver {
        let bare = || {
            TokioResolver::builder_with_config(
                ResolverConfig::default(),
                TokioRuntimeProvider::default(),
            )
        };
        let (mut builder, mut note) = match TokioResolver::builder_tokio() {
            Ok(b) => (b, None),
            Err(e) => (
                bare(),
                Some(format!(
                    "/etc/resolv.conf cannot be used ({e}): only /etc/hosts answers"
                )),
            ),
        };
        tune(builder.options_mut());
        let inner = match builder.build() {
            Ok(r) => Some(r),
            Err(e) => {
                note = Some(format!("the resolver cannot be set up: {e}"));
                None
            }
        };
        Resolver { inner, note }
    }

    /// The addresses of `name` (already normalized: lowercase, no trailing dot).
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        let fail = |e: String| match &self.note {
            Some(note) => format!("cannot resolve {name}: {e} ({note})"),
            None => format!("cannot resolve {name}: {e}"),
        };
        let Some(inner) = &self.inner else {
            return Err(fail("no resolver".into()));
        };
        let fqdn = format!("{name}.");
        let found = inner
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let ips: Vec<IpAddr> = found.iter().map(|ip| ip.to_canonical()).collect();
        if ips.is_empty() {
            return Err(fail("no address".into()));
        }
        Ok(ips)
    }
}

/// `/etc/hosts` first, both address families, and a bounded wait.
fn tune(opts: &mut ResolverOpts) {
    opts.use_hosts_file = ResolveHosts::Always;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = Duration::from_secs(4);
    opts.attempts = 1;
}
