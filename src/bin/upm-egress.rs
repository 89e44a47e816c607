//! upm's egress proxy for one call with a network allowlist (docs/egress.md). upm starts
//! it beside a plugin and talks to it over its stdin, stdout and descriptor 3; it is not
//! meant to be run by hand.

fn main() {
    std::process::exit(upm::egress::process::main());
}
