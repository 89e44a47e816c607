//! Compiled programs kept between the processes of a root upm (issue 25): a one-shot
//! call parsed its profile (9 KB of JSON for the built-in one) and compiled it, cold,
//! every time: ~0.1 ms of a 3 ms call.
//!
//! One file per program in `<workdir_root>/upm-seccomp-0/` (0700, root's own: see
//! [`crate::files::own_dir`]), named by its key: the SHA-256 of the profile's bytes,
//! the options upm adds, the arch and running kernel the rules were resolved for, and
//! this build's compiler (`UPM_SECCOMP_CODE`, a hash of `src/sandbox/seccomp`, from
//! `build.rs`, with `Cargo.lock`). An entry is recalled only if it is a regular file of
//! root's that no one else may read or write, and its header names that same key and the SHA-256 of the
//! program after it; anything else means compiling as before, and the entry replaced.
//!
//! Whoever can write an entry decides the filter of every call that recalls it: root
//! alone, who can as well replace upm or its config. No plugin can: each runs as a
//! user other than root (a config naming uid or gid 0 is refused), without
//! capabilities, so neither the directory nor an
//! entry (root's, 0600) is writable to it, whatever its Landlock rules grant. That is
//! why only a root upm keeps programs: an unprivileged upm's plugins run as its own
//! user, and a config granting one of them the store's directory would hand it the
//! filter of every later call. (A torn entry, after a crash, fails its digest.)

use std::path::Path;

use seccompiler::{sock_filter, BpfProgram};
use sha2::{Digest, Sha256};

use super::resolve::Target;
use super::CompileOptions;

const FORMAT: &str = "upm-seccomp-1";
/// Entries a directory holds at most (one per profile and options; a config has few).
const MAX_ENTRIES: usize = 64;
/// A header line and the largest program the kernel takes (4096 instructions).
const MAX_ENTRY_BYTES: u64 = 256 + 8 * super::bpf::BPF_MAXINSNS as u64;

static STORE: crate::files::KeptDir = crate::files::KeptDir::new("compiled seccomp programs");

/// Where this process keeps programs: a root upm's, under its config's `workdir_root`
/// (the first call wins: a process has one config).
pub fn keep_under(workdir_root: &Path) {
    if nix::unistd::geteuid().is_root() {
        STORE.name(workdir_root.join("upm-seccomp-0"));
    }
}

/// The store; `None` when there is none.
pub(super) fn dir() -> Option<&'static Path> {
    STORE.get()
}

/// What a program is compiled from, as the entry's name.
pub(super) fn key(profile_digest: &str, opts: &CompileOptions, target: &Target) -> String {
    // Taken apart whole: a field added to either must be added here (or the build fails).
    let CompileOptions {
        deny_sockets,
        allow_tcp,
    } = *opts;
    let Target { arch, kernel: k } = *target;
    let mut h = Sha256::new();
    for part in [
        FORMAT.as_bytes(),
        env!("CARGO_PKG_VERSION").as_bytes(),
        env!("UPM_SECCOMP_CODE").as_bytes(),
        profile_digest.as_bytes(),
        &[u8::from(deny_sockets), u8::from(allow_tcp)],
        arch.as_bytes(),
        &[k.0, k.1, k.2].map(u32::to_le_bytes).concat(),
    ] {
        // Each part's length first: no two different lists of parts hash alike.
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// The program kept under `key`, if there is a sound one.
pub(super) fn recall(dir: &Path, key: &str) -> Option<BpfProgram> {
    let bytes = crate::files::read_own_entry(&dir.join(key), MAX_ENTRY_BYTES)?;
    let split = bytes.iter().position(|&b| b == b'\n')?;
    let (header, body) = (
        std::str::from_utf8(&bytes[..split]).ok()?,
        &bytes[split + 1..],
    );
    let n = body.len() / 8;
    let sound = body.len() % 8 == 0
        && (1..=super::bpf::BPF_MAXINSNS).contains(&n)
        && header == self::header(key, body);
    sound.then(|| body.chunks_exact(8).map(decode).collect())
}

/// Keeps `program` under `key`; a failure only costs the next process a compilation.
pub(super) fn remember(dir: &Path, key: &str, program: &[sock_filter]) {
    let body: Vec<u8> = program.iter().flat_map(encode).collect();
    let mut entry = format!("{}\n", header(key, &body)).into_bytes();
    entry.extend_from_slice(&body);
    let path = dir.join(key);
    let kept = match path.exists() {
        true => Ok(()),
        false => crate::files::make_room(dir, MAX_ENTRIES),
    }
    .and_then(|()| crate::files::replace_file(&path, &entry, 0o600));
    if let Err(e) = kept {
        tracing::debug!("a compiled seccomp program was not kept: {e}");
    }
}

fn header(key: &str, body: &[u8]) -> String {
    format!(
        "{FORMAT} {key} {} {}",
        body.len() / 8,
        hex::encode(Sha256::digest(body))
    )
}

fn encode(i: &sock_filter) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..2].copy_from_slice(&i.code.to_le_bytes());
    b[2] = i.jt;
    b[3] = i.jf;
    b[4..].copy_from_slice(&i.k.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> sock_filter {
    sock_filter {
        code: u16::from_le_bytes([b[0], b[1]]),
        jt: b[2],
        jf: b[3],
        k: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::seccomp::resolve::KernelVersion;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    fn program() -> BpfProgram {
        let p = crate::sandbox::seccomp::Profile::from_json(
            "default",
            crate::sandbox::policy::BUILTIN_SECCOMP,
        )
        .unwrap();
        let opts = CompileOptions {
            deny_sockets: true,
            allow_tcp: false,
        };
        p.compile(&opts).unwrap().programs.remove(0)
    }

    fn same(a: &[sock_filter], b: &[sock_filter]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x.code, x.jt, x.jf, x.k) == (y.code, y.jt, y.jf, y.k))
    }

    #[test]
    fn a_kept_program_is_recalled_whole_under_its_key_only() {
        let d = store();
        let prog = program();
        remember(d.path(), "k1", &prog);
        assert!(same(&recall(d.path(), "k1").unwrap(), &prog));
        assert!(recall(d.path(), "k2").is_none());
        // Renamed to another key, it is not that key's program.
        std::fs::rename(d.path().join("k1"), d.path().join("k2")).unwrap();
        assert!(recall(d.path(), "k2").is_none(), "its header names k1");
    }

    #[test]
    fn the_key_changes_with_what_the_program_is_compiled_from() {
        let target = Target::native().unwrap();
        let opts = |deny_sockets, allow_tcp| CompileOptions {
            deny_sockets,
            allow_tcp,
        };
        let other_kernel = Target {
            kernel: KernelVersion(target.kernel.0, target.kernel.1 + 1, 0),
            ..target
        };
        let other_arch = Target {
            arch: "arm64-or-amd64",
            ..target
        };
        let keys = [
            key("sha256:a", &opts(true, false), &target),
            key("sha256:b", &opts(true, false), &target),
            key("sha256:a", &opts(false, false), &target),
            key("sha256:a", &opts(true, true), &target),
            key("sha256:a", &opts(true, false), &other_kernel),
            key("sha256:a", &opts(true, false), &other_arch),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        assert_eq!(keys[0], key("sha256:a", &opts(true, false), &target));
    }

    #[test]
    fn an_entry_others_may_touch_a_link_or_an_altered_one_is_not_used() {
        let d = store();
        let prog = program();
        let entry = d.path().join("k");
        remember(d.path(), "k", &prog);
        let good = std::fs::read(&entry).unwrap();
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(recall(d.path(), "k").is_none(), "readable by others");
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(recall(d.path(), "k").is_some());

        let real = d.path().join("elsewhere");
        std::fs::rename(&entry, &real).unwrap();
        std::os::unix::fs::symlink(&real, &entry).unwrap();
        assert!(recall(d.path(), "k").is_none(), "a link is not followed");
        std::fs::remove_file(&entry).unwrap();

        let split = good.iter().position(|&b| b == b'\n').unwrap();
        let mut flipped = good.clone();
        flipped[split + 5] ^= 1; // the first instruction's operand changed, the header kept
        let mut torn = good.clone();
        torn.truncate(good.len() - 8);
        let mut extra = good.clone();
        extra.extend_from_slice(&good[split + 1..split + 9]);
        let reformatted = [b"upm-seccomp-0".as_slice(), &good[FORMAT.len()..]].concat();
        for (what, bad) in [
            ("a changed instruction", flipped),
            ("a torn entry", torn),
            ("an instruction more", extra),
            ("another format", reformatted),
            ("no header", good[split + 1..].to_vec()),
        ] {
            std::fs::write(&entry, &bad).unwrap();
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(recall(d.path(), "k").is_none(), "{what}");
        }
    }
}
