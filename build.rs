//! Lays out the release binary's code in the order a one-shot call first runs it.
//!
//! A one-shot call pays upm's start-up every time, and the kernel maps its code in 64 KiB
//! windows as it faults: with the code a call runs spread over the 8 MB text, each call
//! mapped ~6 MB of it. `link/text-order.txt` (written by `bench/text_order.py`, which
//! records the functions a real call enters) puts those first and together. It is only a
//! layout hint: a name it lists that the binary no longer has is skipped, so a stale list
//! costs speed, never correctness (`bench/text_order.py --check` says how stale it is).
//!
//! Only LLD reads such a list (GNU ld and gold refuse the option), and whether LLD links
//! depends on the toolchain's build and the flags in force, not on rustc's version: an
//! empty program is linked with the list first, with the same flags and linker, and the
//! hint is left out when that fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/text-order.txt");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if !order.is_file() {
        return;
    }
    println!("cargo:rerun-if-changed={}", order.display());
    let args = [
        format!("--symbol-ordering-file={}", order.display()),
        "--no-warn-symbol-ordering".to_string(),
    ];
    if !links_with(&args) {
        println!("cargo:warning=the linker takes no symbol ordering file (not LLD?): left out");
        return;
    }
    for arg in args {
        println!("cargo:rustc-link-arg-bin=upm=-Xlinker");
        println!("cargo:rustc-link-arg-bin=upm={arg}");
    }
}

/// Whether an empty program links with `args` passed to the linker.
fn links_with(args: &[String]) -> bool {
    let (Some(out), Some(rustc), Some(target)) = (
        std::env::var_os("OUT_DIR").map(PathBuf::from),
        std::env::var_os("RUSTC"),
        std::env::var_os("TARGET"),
    ) else {
        return false;
    };
    let src = out.join("probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let mut cmd = Command::new(rustc);
    cmd.arg("--target")
        .arg(target)
        .arg("--crate-type=bin")
        .arg("-o")
        .arg(out.join("probe"))
        .arg(&src);
    // The flags the real link gets: static glibc, a linker or its flavour chosen there.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        let mut flag = std::ffi::OsString::from("-Clinker=");
        flag.push(linker);
        cmd.arg(flag);
    }
    for arg in args {
        cmd.arg("-Clink-arg=-Xlinker")
            .arg(format!("-Clink-arg={arg}"));
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
