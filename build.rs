//! Lays out the release binary's code in the order a one-shot call first runs it.
//!
//! A one-shot call pays upm's start-up every time, and the kernel maps its code in 64 KiB
//! windows as it faults: with the code a call runs spread over the 8 MB text, each call
//! mapped ~6 MB of it. `link/text-order.txt` (written by `bench/text_order.py`, which
//! records the functions a real call enters) puts those first and together. It is only a
//! layout hint: a name it lists that the binary no longer has is skipped, so a stale list
//! costs speed, never correctness (`bench/text_order.py --check` says how stale it is).
//!
//! Only LLD reads the list, the linker rustc uses by default for this target since 1.90;
//! with another toolchain the hint is left out.

use std::path::Path;
use std::process::Command;

fn main() {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/text-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu" || !rustc_links_with_lld() || !order.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=upm=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
        order.display()
    );
}

/// Whether rustc is 1.90 or later, whose x86_64 Linux target links with its own LLD.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let mut parts = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
