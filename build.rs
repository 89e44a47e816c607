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
//!
//! Also names the seccomp compiler's code (`UPM_SECCOMP_CODE`): a program kept between
//! processes is recalled only by the build whose compiler made it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let seccomp = root.join("src/sandbox/seccomp");
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", seccomp.display());
    println!("cargo:rerun-if-changed={}", lock.display());
    // The compiler's sources and every dependency's version (libc's constants among them).
    let code = code_hash(&seccomp) ^ code_hash(&lock).rotate_left(1);
    println!("cargo:rustc-env=UPM_SECCOMP_CODE={code:016x}");
    let order = root.join("link/text-order.txt");
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

/// FNV-1a over the names and bytes of every file under `dir` (or of the file `dir`), in
/// name order: a change to the compiler's code (its rules and syscall tables included)
/// changes it.
fn code_hash(dir: &Path) -> u64 {
    let mut files = Vec::new();
    if dir.is_file() {
        files.push(dir.to_path_buf());
    }
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let name = f
            .strip_prefix(dir)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        for b in name
            .bytes()
            .chain([0])
            .chain(std::fs::read(&f).unwrap_or_default())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
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
