//! Digests of unpinned executables kept between upm processes (issue 25): a one-shot
//! call of a Python plugin hashed the interpreter (6.8 MB, 8–9 ms) every time.
//!
//! One small file per executable, in `<workdir_root>/upm-digests-<euid>/` (0700, upm's
//! own: see [`crate::files::own_dir`]), named by the file's device and inode and holding
//! its [`Identity`] and SHA-256. An entry is used only while the executable's identity
//! is the same (on the filesystems where one is kept at all, any write, truncation or
//! `chmod` moves its ctime, its pages having been written back before the identity was
//! taken: see `integrity::written_back`; a replaced file is another inode), and only if it is
//! a regular file of upm's euid that no one else may read or write. Anything else (a
//! missing, malformed or foreign entry, a directory that is not upm's own) means the
//! file is read and hashed as before. A pinned executable never comes here: it is always
//! read.
//!
//! Who could write an entry could make the audit name a wrong digest for an unpinned
//! file, never run anything else: that is upm's euid alone (root's, for a root upm).
//!
//! An unpinned tree's digest is kept the same way, as `tree-<fingerprint>` (see
//! `integrity::tree_digest`).

use super::Identity;
use std::path::Path;

/// Entries a directory holds at most: a new one then replaces the one written longest
/// ago (an executable's entry is rewritten in place when its identity changes; a
/// replaced file's old entry stays until then).
const MAX_ENTRIES: usize = 256;
/// An entry's size at most (it is one line of ~120 bytes).
const MAX_ENTRY_BYTES: u64 = 512;
/// `-2`: kept only after a write-back of the file ([`super::written_back`]) and only on
/// ext2/3/4, XFS or Btrfs; a `-1` entry, kept without either, is not used.
const FORMAT: &str = "upm-digest-2";

/// This process's store, named by the session from its config's `workdir_root`.
static STORE: crate::files::KeptDir = crate::files::KeptDir::new("executables' digests");

/// Where this process's digests are kept (the first call wins: a process has one config).
pub fn keep_under(workdir_root: &Path) {
    let euid = nix::unistd::geteuid().as_raw();
    STORE.name(workdir_root.join(format!("upm-digests-{euid}")));
}

fn dir() -> Option<&'static Path> {
    STORE.get()
}

fn name(id: &Identity) -> String {
    format!("{:x}-{:x}", id.0, id.1)
}

fn line(id: &Identity, sha256: &str) -> String {
    format!(
        "{FORMAT} {} {} {} {} {} {sha256}\n",
        id.2, id.3, id.4, id.5, id.6
    )
}

/// The digest kept for an executable of this identity, if there is a sound one.
pub fn recall(id: &Identity) -> Option<String> {
    recall_in(dir()?, id)
}

/// Keeps `sha256` for an executable of this identity; a failure only costs the next
/// process a hash.
pub fn remember(id: &Identity, sha256: &str) {
    if let Some(dir) = dir() {
        if let Err(e) = remember_in(dir, id, sha256) {
            tracing::debug!("an executable's digest was not kept: {e}");
        }
    }
}

fn recall_in(dir: &Path, id: &Identity) -> Option<String> {
    let bytes = crate::files::read_own_entry(&dir.join(name(id)), MAX_ENTRY_BYTES)?;
    let text = String::from_utf8(bytes).ok()?;
    let sha256 = text.strip_suffix('\n')?.rsplit(' ').next()?;
    let sound = sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    // The whole line must be what this identity's entry would be, to the byte.
    (sound && text == line(id, sha256)).then(|| sha256.to_owned())
}

fn remember_in(dir: &Path, id: &Identity, sha256: &str) -> std::io::Result<()> {
    let target = dir.join(name(id));
    if !target.exists() {
        crate::files::make_room(dir, MAX_ENTRIES)?;
    }
    // Written whole under a name of its own, then renamed over the entry: a reader sees
    // the old entry or the new one, never a part.
    crate::files::replace_file(&target, line(id, sha256).as_bytes(), 0o600)
}

/// An unpinned tree's digest kept for its fingerprint (every file's path, identity and
/// mode: see `integrity::tree_digest`), if there is a sound entry.
pub fn recall_tree(fingerprint: &str) -> Option<String> {
    let bytes =
        crate::files::read_own_entry(&dir()?.join(tree_name(fingerprint)), MAX_ENTRY_BYTES)?;
    let text = String::from_utf8(bytes).ok()?;
    let digest = text.strip_suffix('\n')?.rsplit(' ').next()?;
    let sound = is_hex64(fingerprint) && is_hex64(digest);
    (sound && text == tree_line(fingerprint, digest)).then(|| digest.to_owned())
}

/// Keeps an unpinned tree's digest for its fingerprint; a failure only costs the next
/// process a read of the tree.
pub fn remember_tree(fingerprint: &str, digest: &str) {
    let Some(dir) = dir() else { return };
    let target = dir.join(tree_name(fingerprint));
    let kept = (|| {
        if !target.exists() {
            crate::files::make_room(dir, MAX_ENTRIES)?;
        }
        crate::files::replace_file(&target, tree_line(fingerprint, digest).as_bytes(), 0o600)
    })();
    if let Err(e) = kept {
        tracing::debug!("a tree's digest was not kept: {e}");
    }
}

fn tree_name(fingerprint: &str) -> String {
    format!("tree-{}", fingerprint.get(..32).unwrap_or(fingerprint))
}

fn tree_line(fingerprint: &str, digest: &str) -> String {
    format!("{TREE_FORMAT} {fingerprint} {digest}\n")
}

/// As [`FORMAT`]'s `-2`.
const TREE_FORMAT: &str = "upm-tree-2";

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID: Identity = (2049, 77, 6_800_000, 1_700_000_000, 5, 1_700_000_001, 6);

    fn store() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    #[test]
    fn a_kept_digest_is_recalled_for_the_same_identity_only() {
        let d = store();
        remember_in(d.path(), &ID, SHA).unwrap();
        assert_eq!(recall_in(d.path(), &ID).as_deref(), Some(SHA));
        for other in [
            (ID.0, ID.1, ID.2 + 1, ID.3, ID.4, ID.5, ID.6),
            (ID.0, ID.1, ID.2, ID.3, ID.4, ID.5, ID.6 + 1),
            (ID.0, ID.1 + 1, ID.2, ID.3, ID.4, ID.5, ID.6),
        ] {
            assert_eq!(recall_in(d.path(), &other), None, "{other:?}");
        }
        // A new identity of the same inode replaces the entry.
        let changed = (ID.0, ID.1, ID.2, ID.3, ID.4, ID.5 + 1, ID.6);
        remember_in(d.path(), &changed, &SHA.replace('0', "f")).unwrap();
        assert_eq!(recall_in(d.path(), &ID), None);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn an_entry_others_may_touch_a_link_or_a_malformed_one_is_not_used() {
        let d = store();
        let entry = d.path().join(name(&ID));
        remember_in(d.path(), &ID, SHA).unwrap();
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(recall_in(d.path(), &ID), None, "readable by others");
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(recall_in(d.path(), &ID).as_deref(), Some(SHA));

        let real = d.path().join("elsewhere");
        std::fs::rename(&entry, &real).unwrap();
        std::os::unix::fs::symlink(&real, &entry).unwrap();
        assert_eq!(recall_in(d.path(), &ID), None, "a link is not followed");
        std::fs::remove_file(&entry).unwrap();

        for bad in [
            line(&ID, SHA).trim_end().to_owned(),
            line(&ID, &SHA.to_uppercase()),
            line(&ID, &SHA[1..]),
            format!("x{}", line(&ID, SHA)),
            // Kept by an upm that neither wrote the file back nor looked at its filesystem.
            line(&ID, SHA).replace(FORMAT, "upm-digest-1"),
        ] {
            std::fs::write(&entry, &bad).unwrap();
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(recall_in(d.path(), &ID), None, "{bad:?}");
        }
    }

    #[test]
    fn a_full_store_gives_up_the_entry_written_longest_ago() {
        let d = store();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..MAX_ENTRIES as u64 {
            let p = d.path().join(format!("x{i}"));
            std::fs::write(&p, "").unwrap();
            if i == 7 {
                let f = std::fs::File::options().write(true).open(&p).unwrap();
                f.set_modified(old).unwrap();
            }
        }
        remember_in(d.path(), &ID, SHA).unwrap();
        assert_eq!(recall_in(d.path(), &ID).as_deref(), Some(SHA));
        assert!(!d.path().join("x7").exists(), "the oldest entry made room");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), MAX_ENTRIES);
    }
}
