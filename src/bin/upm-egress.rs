//! upm's egress proxy for one call with a network allowlist (docs/egress.md). upm starts
//! it beside a plugin and talks to it over its stdin, stdout and descriptor 3; it is not
//! meant to be run by hand.

use upm::egress::Handover;

fn main() {
    std::process::exit(upm::egress::process::main(|| {
        let channel = upm::spawn::ListenerChannel::inherited()?;
        let handover: Handover<'static> = Box::new(move |limit| channel.receive(limit));
        Ok(handover)
    }));
}
