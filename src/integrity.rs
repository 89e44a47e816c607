//! Supply-chain integrity: what runs is what the operator approved.
//!
//! - An executable is opened once; its digest is computed through that
//!   descriptor and the same descriptor is exec'd (`execveat` with
//!   `AT_EMPTY_PATH`; a script's interpreter gets it as `/dev/fd/N`). Swapping
//!   the file after the check changes nothing: the verified inode runs.
//! - A plugin tree (a Python class plugin's `python_path`, or a script's
//!   directory) is pinned by a manifest digest. With a pin, every file is read
//!   once, hashed, and written into a root-owned snapshot in the call's
//!   directory; the plugin runs from the snapshot, so what was hashed is what
//!   is imported.
//! - Plugin files and directories writable by anyone but their owner, owned by
//!   someone other than root or the invoking user, or reached through a
//!   symlink that leaves the plugin's directory are refused.
//!
//! Manifest format (documented in the README): for every regular file under
//! the roots, in order of `<root index>/<relative path>` (bytewise), the line
//! `<root index>/<relative path>\0<sha256 hex of contents>\n`; the manifest
//! digest is the SHA-256 of those lines. `__pycache__` directories and `.pyc`
//! files are caches: skipped, and never copied into a snapshot.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error("plugin file {path} cannot be opened: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "plugin file {path} does not match its pinned sha256 (pinned {expected}, found {actual})"
    )]
    Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("the files under {roots} do not match the pinned manifest_sha256 (pinned {expected}, found {actual})")]
    ManifestMismatch {
        roots: String,
        expected: String,
        actual: String,
    },
    #[error("unsafe plugin file {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("cannot copy the verified plugin files into {path}: {source}")]
    Snapshot { path: PathBuf, source: io::Error },
}

/// An executable opened once, hashed through its descriptor.
pub struct Executable {
    pub fd: OwnedFd,
    pub path: PathBuf,
    pub sha256: String,
    /// Starts with `#!`: the kernel hands the interpreter `/dev/fd/N`, so the
    /// descriptor must survive the exec.
    pub script: bool,
}

/// Opens `path`, checks it is safe, hashes it through the descriptor and compares with `pin`.
pub fn open_executable(path: &Path, pin: Option<&str>) -> Result<Executable, IntegrityError> {
    check_symlink(path, path.parent().unwrap_or(Path::new("/")))?;
    let mut file = File::open(path).map_err(|source| IntegrityError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().map_err(|source| IntegrityError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(unsafe_file(path, "not a regular file"));
    }
    check_owner_and_mode(path, &meta)?;
    if let Some(dir) = path.parent() {
        let dmeta = std::fs::metadata(dir).map_err(|source| IntegrityError::Open {
            path: dir.to_path_buf(),
            source,
        })?;
        check_owner_and_mode(dir, &dmeta)?;
    }
    let mut hasher = Sha256::new();
    let mut head = [0u8; 2];
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = true;
    loop {
        let n = file.read(&mut buf).map_err(|source| IntegrityError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        if first && n >= 2 {
            head.copy_from_slice(&buf[..2]);
        }
        first = false;
        hasher.update(&buf[..n]);
    }
    let sha256 = hex::encode(hasher.finalize());
    if let Some(expected) = pin {
        if !expected.eq_ignore_ascii_case(&sha256) {
            return Err(IntegrityError::Mismatch {
                path: path.to_path_buf(),
                expected: expected.to_owned(),
                actual: sha256,
            });
        }
    }
    Ok(Executable {
        fd: file.into(),
        path: path.to_path_buf(),
        sha256,
        script: &head == b"#!",
    })
}

fn unsafe_file(path: &Path, reason: &str) -> IntegrityError {
    IntegrityError::Unsafe {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

/// Writable only by its owner; owned by root or by whoever runs upm.
fn check_owner_and_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), IntegrityError> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(unsafe_file(
            path,
            &format!(
                "owned by uid {}, not by root or the invoking user (uid {euid})",
                meta.uid()
            ),
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(unsafe_file(
            path,
            &format!(
                "writable by group or others (mode {:o})",
                meta.permissions().mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A symlink is fine only while its target stays inside `root`.
fn check_symlink(path: &Path, root: &Path) -> Result<(), IntegrityError> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(());
    }
    let target = std::fs::canonicalize(path).map_err(|source| IntegrityError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if !target.starts_with(&root) {
        return Err(unsafe_file(
            path,
            &format!(
                "a symlink to {}, outside the plugin's directory {}",
                target.display(),
                root.display()
            ),
        ));
    }
    Ok(())
}

/// Every file of a plugin tree, read once.
pub struct Manifest {
    pub digest: String,
    files: Vec<ManifestFile>,
}

struct ManifestFile {
    root: usize,
    rel: PathBuf,
    mode: u32,
    bytes: Vec<u8>,
}

/// Checks a plugin tree is safe, without reading file contents.
pub fn check_tree(roots: &[PathBuf]) -> Result<(), IntegrityError> {
    walk(roots, &mut |_, _, _, _| Ok(()))
}

/// Reads, checks and hashes every file under `roots`.
pub fn manifest(roots: &[PathBuf]) -> Result<Manifest, IntegrityError> {
    let mut files = Vec::new();
    walk(roots, &mut |root, rel, path, meta| {
        let bytes = std::fs::read(path).map_err(|source| IntegrityError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        files.push(ManifestFile {
            root,
            rel: rel.to_path_buf(),
            mode: meta.permissions().mode() & 0o777,
            bytes,
        });
        Ok(())
    })?;
    files.sort_by(|a, b| {
        (a.root, a.rel.as_os_str().as_encoded_bytes())
            .cmp(&(b.root, b.rel.as_os_str().as_encoded_bytes()))
    });
    let mut h = Sha256::new();
    for f in &files {
        h.update(format!("{}/", f.root).as_bytes());
        h.update(f.rel.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(hex::encode(Sha256::digest(&f.bytes)).as_bytes());
        h.update(b"\n");
    }
    Ok(Manifest {
        digest: hex::encode(h.finalize()),
        files,
    })
}

impl Manifest {
    pub fn check(&self, roots: &[PathBuf], expected: &str) -> Result<(), IntegrityError> {
        if expected.eq_ignore_ascii_case(&self.digest) {
            return Ok(());
        }
        Err(IntegrityError::ManifestMismatch {
            roots: roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            expected: expected.to_owned(),
            actual: self.digest.clone(),
        })
    }

    /// Writes the verified bytes under `dest/<root index>/...`; returns the new roots.
    pub fn snapshot(&self, roots: usize, dest: &Path) -> Result<Vec<PathBuf>, IntegrityError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let err = |path: &Path, source| IntegrityError::Snapshot {
            path: path.to_path_buf(),
            source,
        };
        let new_roots: Vec<PathBuf> = (0..roots).map(|i| dest.join(i.to_string())).collect();
        for r in &new_roots {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(r)
                .map_err(|e| err(r, e))?;
        }
        for f in &self.files {
            let target = new_roots[f.root].join(&f.rel);
            if let Some(parent) = target.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|e| err(parent, e))?;
            }
            let mode = if f.mode & 0o111 != 0 { 0o755 } else { 0o644 };
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&target)
                .map_err(|e| err(&target, e))?;
            io::Write::write_all(&mut out, &f.bytes).map_err(|e| err(&target, e))?;
        }
        Ok(new_roots)
    }
}

type Visit<'a> =
    dyn FnMut(usize, &Path, &Path, &std::fs::Metadata) -> Result<(), IntegrityError> + 'a;

/// Walks every root: checks each directory and file, refuses escaping symlinks,
/// and calls `visit` for each regular file (caches skipped).
fn walk(roots: &[PathBuf], visit: &mut Visit<'_>) -> Result<(), IntegrityError> {
    for (i, root) in roots.iter().enumerate() {
        let meta = std::fs::metadata(root).map_err(|source| IntegrityError::Open {
            path: root.clone(),
            source,
        })?;
        check_owner_and_mode(root, &meta)?;
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            let entries = std::fs::read_dir(&dir).map_err(|source| IntegrityError::Open {
                path: dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| IntegrityError::Open {
                    path: dir.clone(),
                    source,
                })?;
                let name = entry.file_name();
                let path = entry.path();
                let rel_child = rel.join(&name);
                check_symlink(&path, root)?;
                let meta = std::fs::metadata(&path).map_err(|source| IntegrityError::Open {
                    path: path.clone(),
                    source,
                })?;
                if meta.is_dir() {
                    if name == "__pycache__" {
                        continue;
                    }
                    check_owner_and_mode(&path, &meta)?;
                    stack.push(rel_child);
                } else if meta.is_file() {
                    if path.extension().is_some_and(|e| e == "pyc") {
                        continue;
                    }
                    check_owner_and_mode(&path, &meta)?;
                    visit(i, &rel_child, &path, &meta)?;
                }
            }
        }
    }
    Ok(())
}

/// SHA-256 of a file, hex (for `upm check` and signing).
pub fn file_sha256(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn pin_mismatch_and_match() {
        let d = dir();
        let p = d.path().join("x");
        std::fs::write(&p, b"#!/bin/sh\necho hi\n").unwrap();
        let exe = open_executable(&p, None).unwrap();
        assert!(exe.script);
        assert!(open_executable(&p, Some(&exe.sha256)).is_ok());
        let wrong = "0".repeat(64);
        assert!(matches!(
            open_executable(&p, Some(&wrong)),
            Err(IntegrityError::Mismatch { .. })
        ));
    }

    #[test]
    fn world_writable_and_escaping_symlinks_are_refused() {
        let d = dir();
        let p = d.path().join("x");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            open_executable(&p, None),
            Err(IntegrityError::Unsafe { .. })
        ));
        let link = d.path().join("link");
        symlink("/bin/true", &link).unwrap();
        let err = open_executable(&link, None).err().unwrap();
        assert!(
            err.to_string().contains("outside the plugin's directory"),
            "{err}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let inside = d.path().join("inside");
        symlink(&p, &inside).unwrap();
        assert!(open_executable(&inside, None).is_ok());
    }

    #[test]
    fn manifest_covers_every_file_and_skips_caches() {
        let d = dir();
        std::fs::create_dir_all(d.path().join("pkg/__pycache__")).unwrap();
        std::fs::write(d.path().join("pkg/a.py"), b"A = 1\n").unwrap();
        std::fs::write(d.path().join("b.py"), b"B = 2\n").unwrap();
        std::fs::write(d.path().join("pkg/__pycache__/a.cpython-311.pyc"), b"junk").unwrap();
        let roots = vec![d.path().to_path_buf()];
        let m1 = manifest(&roots).unwrap();
        std::fs::write(d.path().join("pkg/__pycache__/a.cpython-311.pyc"), b"other").unwrap();
        assert_eq!(manifest(&roots).unwrap().digest, m1.digest);
        std::fs::write(d.path().join("pkg/a.py"), b"A = 3\n").unwrap();
        let m2 = manifest(&roots).unwrap();
        assert_ne!(m2.digest, m1.digest);
        assert!(m2.check(&roots, &m1.digest).is_err());
        let out = dir();
        let new_roots = m2.snapshot(1, out.path()).unwrap();
        assert_eq!(
            std::fs::read(new_roots[0].join("pkg/a.py")).unwrap(),
            b"A = 3\n"
        );
        assert!(!new_roots[0].join("pkg/__pycache__").exists());
        assert_eq!(manifest(&new_roots).unwrap().digest, m2.digest);
    }
}
