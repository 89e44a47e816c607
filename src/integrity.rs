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
//! Manifest format (documented in docs/integrity.md): for every regular file under
//! the roots, in order of `<root index>/<relative path>` (bytewise), the line
//! `<root index>/<relative path>\0<sha256 hex of contents>\n`; the manifest
//! digest is the SHA-256 of those lines. `__pycache__` directories and `.pyc`
//! files are caches: not hashed, never copied into a snapshot, and checked like every
//! other file where the tree runs in place (Python may load them there).

mod digest_store;

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

/// The most bytes upm reads from one plugin file (to hash it, copy it or snapshot it):
/// a file that keeps growing while it is read is refused past this.
pub const MAX_PLUGIN_FILE_BYTES: u64 = 1 << 30;

/// An executable opened once, hashed through its descriptor.
pub struct Executable {
    /// What is exec'd: read-only, and for a copy, a descriptor of the copy.
    pub fd: OwnedFd,
    /// The path of what is exec'd (the copy's, when the file was copied).
    pub path: PathBuf,
    /// The file named by the config (`path` itself unless it was copied).
    pub source: PathBuf,
    /// SHA-256 (hex) of exactly the bytes `fd` holds.
    pub sha256: String,
    /// Starts with `#!`: the kernel hands the interpreter `/dev/fd/N`, so the
    /// descriptor must survive the exec.
    pub script: bool,
    /// A script's interpreter, as its `#!` line names it.
    pub interpreter: Option<PathBuf>,
    /// Held in memory, sealed: a sealed memfd ([`seal_executable`]; `path` is its name,
    /// `memfd:NAME`) or a file of a read-only snapshot in memory ([`open_in_snapshot`];
    /// `path` is where the call's namespace has it). Not a file of the host's mounts, so
    /// not reopened through the call's read-only ones, and no Landlock rule of its own.
    pub sealed: bool,
}

impl Executable {
    /// Compares the digest of the bytes held with a pin.
    pub fn check_pin(&self, pin: Option<&str>) -> Result<(), IntegrityError> {
        match pin {
            Some(expected) if !expected.eq_ignore_ascii_case(&self.sha256) => {
                Err(IntegrityError::Mismatch {
                    path: self.source.clone(),
                    expected: expected.to_owned(),
                    actual: self.sha256.clone(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Opens `path`, checks it is safe, hashes it through the descriptor and compares with `pin`.
///
/// The descriptor is the file itself: whoever may write the file could still rewrite it
/// in place before it is exec'd. Where that matters (a pin or a signature vouches for
/// the bytes), use [`copy_executable`]. The bytes are always read now (for a pin, a
/// signature, a snapshot); a call's unpinned executable is [`open_unpinned`].
pub fn open_executable(path: &Path, pin: Option<&str>) -> Result<Executable, IntegrityError> {
    let mut file = open_plugin_file(path)?;
    let (sha256, head) = read_hashing(&mut file, path, None)?;
    opened(file, path, sha256, &head, pin)
}

/// An executable of a snapshot upm made in memory ([`Manifest::snapshot_into`]), opened
/// beneath the snapshot's root descriptor (its path in upm's namespace would name
/// nothing: the snapshot is attached only in the call's) and hashed from its descriptor.
/// `shown` is where the plugin finds it, `source` the file of the host it copies.
pub fn open_in_snapshot(
    root: std::os::fd::BorrowedFd<'_>,
    rel: &Path,
    shown: &Path,
    source: &Path,
) -> Result<Executable, IntegrityError> {
    use nix::fcntl::{openat, OFlag};
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = openat(root, rel, flags, nix::sys::stat::Mode::empty()).map_err(|e| {
        IntegrityError::Open {
            path: shown.to_path_buf(),
            source: e.into(),
        }
    })?;
    let mut file = File::from(fd);
    let (sha256, head) = read_hashing(&mut file, shown, None)?;
    let mut exe = opened(file, shown, sha256, &head, None)?;
    exe.source = source.to_path_buf();
    exe.sealed = true;
    Ok(exe)
}

/// A call's executable that nothing vouches for: its digest (for the audit) may be one
/// computed earlier for the same unchanged file ([`digest_of`]).
pub fn open_unpinned(path: &Path) -> Result<Executable, IntegrityError> {
    let mut file = open_plugin_file(path)?;
    let (sha256, head) = digest_of(&mut file, path)?;
    opened(file, path, sha256, &head, None)
}

fn opened(
    file: File,
    path: &Path,
    sha256: String,
    head: &[u8],
    pin: Option<&str>,
) -> Result<Executable, IntegrityError> {
    let exe = Executable {
        fd: file.into(),
        path: path.to_path_buf(),
        source: path.to_path_buf(),
        sha256,
        script: head.starts_with(b"#!"),
        interpreter: interpreter(head),
        sealed: false,
    };
    exe.check_pin(pin)?;
    Ok(exe)
}

/// What identifies an opened file's content on a filesystem of [`KEPT_FILESYSTEMS`]: a
/// write, truncate or `chmod` moves its ctime (which only the kernel sets; the kernel makes
/// it fine-grained once it has been read, as here), and a replaced file is another inode.
/// A write through a shared mapping moves it only when the page faults, that is once the
/// page is clean again: see [`written_back`].
type Identity = (u64, u64, i64, i64, i64, i64, i64);

/// The digests of unpinned executables this process has read, by [`Identity`] (issue 25):
/// a batch's or `upm mcp`'s calls of a Python plugin hashed the interpreter, 6.8 MB, at
/// every call (8–9 ms here). Later processes find them in [`digest_store`].
static DIGESTS: std::sync::Mutex<Vec<(Identity, String, Vec<u8>)>> =
    std::sync::Mutex::new(Vec::new());
/// How many first bytes of an executable are kept (for its `#!` line).
const HEAD: usize = 256;
/// Distinct executables remembered at most (a config names a few).
const MAX_DIGESTS: usize = 64;
/// How old a file's last change must be before its identity stands for its bytes: a
/// write within the same clock tick as the hash could leave the ctime as it was on a
/// filesystem with coarse timestamps (git's "racy" rule).
const SETTLED_SECS: i64 = 2;

/// Filesystems where a file's [`Identity`], taken after [`written_back`], stands for its bytes:
/// ext2/3/4, XFS, Btrfs, whose ctimes the kernel keeps and where a write through a
/// shared mapping to a clean page faults and moves the ctime (checked on each, data=journal
/// ext4 too, 2026-12-08). Not tmpfs or ramfs: a write through a mapping there moves no
/// timestamp at all. Not overlayfs: its upper layer may be a tmpfs (its `fstatfs` says
/// overlayfs whatever the layers are), and a flush through it leaves a lower layer's pages
/// dirty. Not FUSE or NFS (their server decides the ctime), nor squashfs (its inodes and
/// times come from the image, which a reused loop device can change), nor F2FS or ZFS
/// (not checked). A file elsewhere is hashed at every call.
const KEPT_FILESYSTEMS: [i64; 3] = [0xEF53, 0x5846_5342, 0x9123_683E];

/// `file`'s metadata, an error naming `path`.
fn metadata_of(file: &File, path: &Path) -> Result<std::fs::Metadata, IntegrityError> {
    file.metadata().map_err(|source| IntegrityError::Open {
        path: path.to_path_buf(),
        source,
    })
}

fn identity_of(file: &File, path: &Path) -> Result<Identity, IntegrityError> {
    use std::os::unix::fs::MetadataExt;
    let m = metadata_of(file, path)?;
    Ok((
        m.dev(),
        m.ino(),
        m.size() as i64,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// On a filesystem of [`KEPT_FILESYSTEMS`].
fn on_kept_filesystem(file: &File) -> bool {
    nix::sys::statfs::fstatfs(file)
        .is_ok_and(|fs| KEPT_FILESYSTEMS.contains(&{ fs.filesystem_type().0 }))
}

/// Writes back `file`'s dirty pages, which write-protects every mapping of them: the next
/// write through any mapping faults and moves the ctime. Without it, a writer that mapped
/// the file and wrote once (moving the ctime) could write again through its still-dirty
/// page, moving nothing, after the digest was kept. Done before the identity a kept digest
/// is filed under is taken, once per identity: whether it succeeded. `sync_file_range`
/// over the whole file, waiting before and after: the writeback of
/// `fdatasync` without its journal commit and device cache flush, which cost ~4 ms a
/// file here (6.5 s for a tree of 1,671 files) against ~4 µs. Enough on the filesystems of
/// [`KEPT_FILESYSTEMS`] (not on overlayfs, whose own pages are none: not kept).
fn written_back(file: &File) -> bool {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a system call on a descriptor borrowed for its duration; no memory passed.
    unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) == 0 }
}

/// A last change at least [`SETTLED_SECS`] old.
fn settled_since(id: &Identity) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    id.5 + SETTLED_SECS <= now
}

/// The SHA-256 and first bytes of an unpinned executable: remembered (by this process,
/// or an earlier one) while the file's [`Identity`] is the same, else read. What is read
/// is remembered only if the file is on a filesystem of [`KEPT_FILESYSTEMS`] and was
/// [`written_back`] first, its identity (taken after that) did not change while it was
/// read, and is settled. Off those filesystems nothing is looked up either.
fn digest_of(file: &mut File, path: &Path) -> Result<(String, Vec<u8>), IntegrityError> {
    let kept_fs = on_kept_filesystem(file);
    if kept_fs {
        let id = identity_of(file, path)?;
        let lock = || DIGESTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, sha, head)) = lock().iter().find(|(i, _, _)| *i == id) {
            return Ok((sha.clone(), head.clone()));
        }
        // Kept by an earlier upm process: only the head is read (for a `#!` line).
        if let Some(sha) = digest_store::recall(&id) {
            let head = read_head(file, path)?;
            remember(id, &sha, &head);
            return Ok((sha, head));
        }
    }
    let keep = kept_fs && written_back(file);
    let id = identity_of(file, path)?;
    let (sha, head) = read_hashing(file, path, None)?;
    if keep && settled_since(&id) && identity_of(file, path)? == id {
        digest_store::remember(&id, &sha);
        remember(id, &sha, &head);
    }
    Ok((sha, head))
}

fn remember(id: Identity, sha: &str, head: &[u8]) {
    let mut known = DIGESTS.lock().unwrap_or_else(|e| e.into_inner());
    known.retain(|(i, _, _)| (i.0, i.1) != (id.0, id.1));
    if known.len() == MAX_DIGESTS {
        known.remove(0);
    }
    known.push((id, sha.to_owned(), head.to_vec()));
}

/// Where this process keeps unpinned executables' digests for later upm processes:
/// under the config's `workdir_root` (see `integrity/digest_store.rs`).
pub fn keep_digests_under(workdir_root: &Path) {
    digest_store::keep_under(workdir_root);
}

/// The first bytes of `file` (as [`read_hashing`] keeps them), read at offset 0.
fn read_head(file: &File, path: &Path) -> Result<Vec<u8>, IntegrityError> {
    use std::os::unix::fs::FileExt;
    let mut head = vec![0u8; HEAD];
    let mut got = 0;
    while got < HEAD {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(IntegrityError::Open {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    head.truncate(got);
    Ok(head)
}

/// The plugin file, opened as [`open_plugin_file`] does, and the permission bits a copy
/// of it may keep (at most 0755: never setuid, setgid or writable by others).
fn open_with_copy_mode(path: &Path) -> Result<(File, u32), IntegrityError> {
    let file = open_plugin_file(path)?;
    let mode = metadata_of(&file, path)?.permissions().mode() & 0o755;
    Ok((file, mode))
}

/// Copies the executable at `path` into `dest_dir` (made 0755 if missing, in a
/// directory only upm may write to), hashing exactly the bytes it copies, and
/// returns a read-only descriptor of the copy: rewriting the original in place, even
/// during the call, cannot change what runs. The copy keeps at most the original's
/// permission bits (`mode & 0o755`). No pin is checked here: see
/// [`Executable::check_pin`].
pub fn copy_executable(path: &Path, dest_dir: &Path) -> Result<Executable, IntegrityError> {
    let (mut file, mode) = open_with_copy_mode(path)?;
    let snap = |p: &Path, source| IntegrityError::Snapshot {
        path: p.to_path_buf(),
        source,
    };
    // The copy's directory and `verified/` above it, whatever upm's umask.
    crate::files::make_dir_0755(dest_dir, 1).map_err(|e| snap(dest_dir, e))?;
    let name = path.file_name().unwrap_or(std::ffi::OsStr::new("exec"));
    let target = dest_dir.join(name);
    let mut out = crate::files::create_new(&target, mode).map_err(|e| snap(&target, e))?;
    let (sha256, head) = read_hashing(&mut file, path, Some((&mut out, &target)))?;
    // Exactly the original's bits (at most 0755), whatever upm's umask took away.
    out.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| snap(&target, e))?;
    // A read-only descriptor of the very inode written, not a second lookup of the
    // path; the writable one is closed before the exec (else ETXTBSY).
    let fd = std::fs::File::open(format!("/proc/self/fd/{}", out.as_raw_fd()))
        .map_err(|e| snap(&target, e))?;
    drop(out);
    Ok(Executable {
        fd: fd.into(),
        path: target,
        source: path.to_path_buf(),
        sha256,
        script: head.starts_with(b"#!"),
        interpreter: interpreter(&head),
        sealed: false,
    })
}

/// Copies the executable at `path` into a sealed memfd and returns a read-only
/// descriptor of it, hashed from the sealed memfd's own contents: nothing can change
/// them any more (no write, no resize, no new seal), rewriting the original even during
/// the call cannot change what runs, and nothing is written to the host's disk. The
/// memfd keeps at most the original's permission bits (`mode & 0o755`). `None` when
/// this kernel refuses executable memfds (`vm.memfd_noexec` = 2): the caller copies to
/// disk instead ([`copy_executable`]). No pin is checked here: see
/// [`Executable::check_pin`].
pub fn seal_executable(path: &Path) -> Result<Option<Executable>, IntegrityError> {
    use std::os::unix::ffi::OsStrExt;
    let (mut file, mode) = open_with_copy_mode(path)?;
    let name = path.file_name().unwrap_or(std::ffi::OsStr::new("exec"));
    let shown = PathBuf::from(format!("memfd:{}", name.to_string_lossy()));
    let snap = |source| IntegrityError::Snapshot {
        path: shown.clone(),
        source,
    };
    let cname = std::ffi::CString::new(name.as_bytes()).map_err(|e| snap(io::Error::other(e)))?;
    const MFD_EXEC: libc::c_uint = 0x10;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a NUL-terminated name; returns a new descriptor or -1.
    let mut fd = unsafe { libc::memfd_create(cname.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && crate::sandbox::errno() == libc::EINVAL {
        // A kernel older than 6.3 knows no MFD_EXEC: its memfds are executable.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    }
    if fd < 0 {
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
            return Ok(None);
        }
        return Err(snap(e));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let mut out = unsafe { File::from_raw_fd(fd) };
    let copied =
        io::copy(&mut (&mut file).take(MAX_PLUGIN_FILE_BYTES + 1), &mut out).map_err(|source| {
            IntegrityError::Open {
                path: path.to_path_buf(),
                source,
            }
        })?;
    if copied > MAX_PLUGIN_FILE_BYTES {
        return Err(unsafe_file(
            path,
            &format!("larger than {MAX_PLUGIN_FILE_BYTES} bytes"),
        ));
    }
    out.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(snap)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS on our own memfd.
    if unsafe { libc::fcntl(out.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(snap(io::Error::last_os_error()));
    }
    // A read-only descriptor of the sealed memfd, read from its start; the writable one
    // is closed before the exec (else ETXTBSY).
    let mut sealed = File::open(format!("/proc/self/fd/{}", out.as_raw_fd())).map_err(snap)?;
    drop(out);
    let (sha256, head) = read_hashing(&mut sealed, &shown, None)?;
    Ok(Some(Executable {
        fd: sealed.into(),
        path: shown,
        source: path.to_path_buf(),
        sha256,
        script: head.starts_with(b"#!"),
        interpreter: interpreter(&head),
        sealed: true,
    }))
}

/// Whether this kernel runs executable memfds: `vm.memfd_noexec` = 2 refuses them
/// (read once).
pub fn memfd_exec() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/memfd_noexec").map_or(true, |v| v.trim() != "2")
    })
}

/// A virtualenv a Python class plugin's interpreter belongs to: its directory, its
/// `pyvenv.cfg` and every `lib/python*/site-packages` must be safe (owned by root or
/// upm's user, writable by nobody else), since the plugin imports what they hold. Its
/// files are not read or pinned (a `manifest_sha256` covers `python_path` only).
pub fn check_venv(venv: &Path) -> Result<(), IntegrityError> {
    let check = |p: &Path| {
        let meta = std::fs::metadata(p).map_err(|source| IntegrityError::Open {
            path: p.to_path_buf(),
            source,
        })?;
        check_owner_and_mode(p, &meta)
    };
    check(venv)?;
    check(&venv.join("pyvenv.cfg"))?;
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(venv.join(lib)) else {
            continue;
        };
        check(&venv.join(lib))?;
        for entry in entries.flatten() {
            let site = entry.path().join("site-packages");
            if entry.file_name().to_string_lossy().starts_with("python") && site.is_dir() {
                check(&entry.path())?;
                check(&site)?;
            }
        }
    }
    Ok(())
}

/// An executable's file opened for reading through every check: a symlink only if it
/// stays in the file's directory, that directory and the file safe (owner, mode),
/// a regular file (checked on the descriptor: never a FIFO or a device, which would
/// block upm or never end), opened without following a link and without blocking.
/// Opens a file upm runs as it opens a plugin's (see [`open_plugin_file`]), for upm's own
/// helper (the egress proxy, `spawn::egress`).
pub fn open_checked(path: &Path) -> Result<File, IntegrityError> {
    open_plugin_file(path)
}

fn open_plugin_file(path: &Path) -> Result<File, IntegrityError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let resolved = check_symlink(path, dir)?;
    let file = open_regular(path, &resolved)?;
    let dmeta = std::fs::metadata(dir).map_err(|source| IntegrityError::Open {
        path: dir.to_path_buf(),
        source,
    })?;
    check_owner_and_mode(dir, &dmeta)?;
    Ok(file)
}

/// Opens `resolved` (what `path` names, links resolved) without following a link or
/// blocking, and checks on the descriptor that it is a safe regular file.
fn open_regular(path: &Path, resolved: &Path) -> Result<File, IntegrityError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(resolved)
        .map_err(|source| IntegrityError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = metadata_of(&file, path)?;
    if !meta.is_file() {
        return Err(unsafe_file(path, "not a regular file"));
    }
    check_owner_and_mode(path, &meta)?;
    Ok(file)
}

/// Reads `file` to its end (at most [`MAX_PLUGIN_FILE_BYTES`]), hashing every byte and
/// writing it to `copy` if given; returns the SHA-256 hex and the first bytes.
fn read_hashing(
    file: &mut File,
    path: &Path,
    mut copy: Option<(&mut File, &Path)>,
) -> Result<(String, Vec<u8>), IntegrityError> {
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(IntegrityError::Open {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_PLUGIN_FILE_BYTES {
            return Err(unsafe_file(
                path,
                &format!("larger than {MAX_PLUGIN_FILE_BYTES} bytes"),
            ));
        }
        let chunk = &buf[..n];
        if head.len() < HEAD {
            let take = (HEAD - head.len()).min(n);
            head.extend_from_slice(&chunk[..take]);
        }
        hasher.update(chunk);
        if let Some((out, target)) = copy.as_mut() {
            io::Write::write_all(*out, chunk).map_err(|source| IntegrityError::Snapshot {
                path: target.to_path_buf(),
                source,
            })?;
        }
    }
    Ok((hex::encode(hasher.finalize()), head))
}

/// The interpreter a `#!` line names (its first word), if the head is a script's.
fn interpreter(head: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next().unwrap_or(line);
    let word = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|w| !w.is_empty())?;
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(word)))
}

fn unsafe_file(path: &Path, reason: &str) -> IntegrityError {
    IntegrityError::Unsafe {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

/// Says why an unsafe bytecode cache matters, and how to mend it.
fn cache_hint(e: IntegrityError) -> IntegrityError {
    match e {
        IntegrityError::Unsafe { path, reason } => IntegrityError::Unsafe {
            path,
            reason: format!(
                "{reason}; it is a Python bytecode cache, which Python may load instead of its \
                 source in a tree run in place (unpinned): let only its owner write it \
                 (`chmod -R go-w`), remove it, or pin the tree"
            ),
        },
        other => other,
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

/// A symlink is fine only while its target stays inside `root`. Returns what to open:
/// `path` itself, or a symlink's resolved target.
fn check_symlink(path: &Path, root: &Path) -> Result<PathBuf, IntegrityError> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(path.to_path_buf());
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
    Ok(target)
}

/// Every file of a plugin tree, read once.
pub struct Manifest {
    pub digest: String,
    files: Vec<ManifestFile>,
    /// Every directory (roots included, as `rel` ""), with its permission bits.
    dirs: Vec<(usize, PathBuf, u32)>,
}

struct ManifestFile {
    root: usize,
    rel: PathBuf,
    mode: u32,
    bytes: Vec<u8>,
}

/// The digest of an unpinned tree ([`manifest`]'s, for the audit), read from the tree only
/// when its fingerprint is not known: every file's root, path, [`Identity`] and mode,
/// taken through the same checked walk (issue 25: a Python plugin's `python_path`, which
/// the caller's `PYTHONPATH` may fill with a whole `site-packages`, was read and hashed at
/// every call; 26 MB cost a call ~55 ms here). Known means remembered by this process or
/// kept by an earlier one ([`digest_store`]), and used only when every file is settled
/// on a filesystem of [`KEPT_FILESYSTEMS`], and kept only when each was [`written_back`] before
/// its identity was taken, as for executables. A pinned tree never comes here: it is read.
pub fn tree_digest(roots: &[PathBuf]) -> Result<String, IntegrityError> {
    let looked = tree_walk(roots, false)?;
    let memo = || TREES.lock().unwrap_or_else(|e| e.into_inner());
    if looked.stable {
        if let Some((_, d)) = memo().iter().find(|(f, _)| *f == looked.fingerprint) {
            return Ok(d.clone());
        }
        if let Some(d) = digest_store::recall_tree(&looked.fingerprint) {
            return Ok(d);
        }
    }
    // Read, each file's identity and bytes through one descriptor: what is kept is the
    // digest of exactly the files the fingerprint names.
    let mut read = tree_walk(roots, true)?;
    let digest = files_digest(&mut read.hashed);
    if read.stable {
        digest_store::remember_tree(&read.fingerprint, &digest);
        let mut known = memo();
        if known.len() == MAX_TREES {
            known.remove(0);
        }
        known.push((read.fingerprint, digest.clone()));
    }
    Ok(digest)
}

/// Unpinned trees' digests this process has read, by fingerprint.
static TREES: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
const MAX_TREES: usize = 16;

/// One checked walk of a tree ([`tree_digest`]).
struct TreeWalk {
    /// Every file's root, path, [`Identity`] and mode, hashed.
    fingerprint: String,
    /// Every file on a filesystem of [`KEPT_FILESYSTEMS`] and settled, and (when read)
    /// written back before its identity was taken, and that identity the same after the
    /// read.
    stable: bool,
    /// When read: every file's root, path and SHA-256, read through the descriptor its
    /// identity was taken from.
    hashed: Vec<(usize, PathBuf, String)>,
}

fn tree_walk(roots: &[PathBuf], read: bool) -> Result<TreeWalk, IntegrityError> {
    use std::os::unix::fs::MetadataExt;
    let mut lines = Vec::new();
    let mut hashed = Vec::new();
    let mut stable = true;
    // Whether each device seen is of a kept filesystem (one `fstatfs` a device, not a file).
    let mut kept_fs: Vec<(u64, bool)> = Vec::new();
    walk(
        roots,
        Caches::Check,
        &mut |root, rel, path, resolved| {
            let mut file = open_regular(path, resolved)?;
            let dev = metadata_of(&file, path)?.dev();
            let kept = match kept_fs.iter().find(|(d, _)| *d == dev) {
                Some(&(_, k)) => k,
                None => {
                    let k = on_kept_filesystem(&file);
                    kept_fs.push((dev, k));
                    k
                }
            };
            // To be kept, written back before the identity is taken (see `written_back`).
            stable &= kept && (!read || written_back(&file));
            let mode = metadata_of(&file, path)?.mode();
            let id = identity_of(&file, path)?;
            stable &= id.0 == dev && settled_since(&id);
            if read {
                let (sha, _) = read_hashing(&mut file, path, None)?;
                stable &= identity_of(&file, path)? == id;
                hashed.push((root, rel.to_path_buf(), sha));
            }
            let mut line = format!("{root}/").into_bytes();
            line.extend_from_slice(rel.as_os_str().as_encoded_bytes());
            let (dev, ino, size, mtime, mtime_ns, ctime, ctime_ns) = id;
            line.extend_from_slice(
                format!("\0{dev} {ino} {size} {mtime}.{mtime_ns} {ctime}.{ctime_ns} {mode:o}\n")
                    .as_bytes(),
            );
            lines.push(line);
            Ok(())
        },
        &mut |_, _, _| {},
    )?;
    lines.sort();
    let mut h = Sha256::new();
    h.update(TREE_FINGERPRINT.as_bytes());
    for l in &lines {
        h.update(l);
    }
    Ok(TreeWalk {
        fingerprint: hex::encode(h.finalize()),
        stable,
        hashed,
    })
}

/// What a fingerprint is made of (a change of it must change this name).
const TREE_FINGERPRINT: &str = "upm-tree-fingerprint-1\n";

/// A tree's digest from its files' digests (root index, path, SHA-256): what pins
/// (`manifest_sha256`) and the audit name.
fn files_digest(files: &mut [(usize, PathBuf, String)]) -> String {
    files.sort_by(|a, b| {
        (a.0, a.1.as_os_str().as_encoded_bytes()).cmp(&(b.0, b.1.as_os_str().as_encoded_bytes()))
    });
    let mut h = Sha256::new();
    for (root, rel, sha) in files.iter() {
        h.update(format!("{root}/").as_bytes());
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        h.update(sha.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Checks a tree that runs in place (unpinned) is safe, its bytecode caches included,
/// without reading file contents.
pub fn check_tree(roots: &[PathBuf]) -> Result<(), IntegrityError> {
    walk(
        roots,
        Caches::Check,
        &mut |_, _, _, _| Ok(()),
        &mut |_, _, _| {},
    )
}

/// Reads, checks and hashes every file under `roots`.
pub fn manifest(roots: &[PathBuf]) -> Result<Manifest, IntegrityError> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut on_dir = |root, rel: &Path, mode| dirs.push((root, rel.to_path_buf(), mode));
    walk(
        roots,
        Caches::Skip,
        &mut |root, rel, path, resolved| {
            // Through the checked descriptor: a file swapped for a FIFO or a device since
            // the walk looked at it is refused, never read (or waited on).
            let mut file = open_regular(path, resolved)?;
            let meta = metadata_of(&file, path)?;
            let mut bytes = Vec::new();
            (&mut file)
                .take(MAX_PLUGIN_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| IntegrityError::Open {
                    path: path.to_path_buf(),
                    source,
                })?;
            if bytes.len() as u64 > MAX_PLUGIN_FILE_BYTES {
                return Err(unsafe_file(
                    path,
                    &format!("larger than {MAX_PLUGIN_FILE_BYTES} bytes"),
                ));
            }
            files.push(ManifestFile {
                root,
                rel: rel.to_path_buf(),
                mode: meta.permissions().mode() & 0o777,
                bytes,
            });
            Ok(())
        },
        &mut on_dir,
    )?;
    files.sort_by(|a, b| {
        (a.root, a.rel.as_os_str().as_encoded_bytes())
            .cmp(&(b.root, b.rel.as_os_str().as_encoded_bytes()))
    });
    let mut digests: Vec<(usize, PathBuf, String)> = files
        .iter()
        .map(|f| (f.root, f.rel.clone(), hex::encode(Sha256::digest(&f.bytes))))
        .collect();
    let digest = files_digest(&mut digests);
    dirs.sort_by(|a, b| {
        (a.0, a.1.as_os_str().as_encoded_bytes()).cmp(&(b.0, b.1.as_os_str().as_encoded_bytes()))
    });
    Ok(Manifest {
        digest,
        files,
        dirs,
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
    ///
    /// Each file and directory keeps at most its original permission bits
    /// (`mode & 0o755`): a snapshot never makes readable to the plugin what the
    /// original did not let it read. Directories are made 0700 while they are filled
    /// and given their modes last.
    pub fn snapshot(&self, roots: usize, dest: &Path) -> Result<Vec<PathBuf>, IntegrityError> {
        use std::os::unix::fs::DirBuilderExt;
        let err = |path: &Path, source| IntegrityError::Snapshot {
            path: path.to_path_buf(),
            source,
        };
        let new_roots: Vec<PathBuf> = (0..roots).map(|i| dest.join(i.to_string())).collect();
        // `dest` itself: upm's, 0755, so that the plugin may reach what it may read.
        crate::files::make_dir_0755(dest, 0).map_err(|e| err(dest, e))?;
        let private = |d: &Path| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| err(d, e))
        };
        for r in &new_roots {
            private(r)?;
        }
        // Sorted: every parent before its children.
        for (root, rel, _) in &self.dirs {
            private(&new_roots[*root].join(rel))?;
        }
        for f in &self.files {
            let target = new_roots[f.root].join(&f.rel);
            if let Some(parent) = target.parent() {
                private(parent)?;
            }
            let mode = f.mode & 0o755;
            let mut out = crate::files::create_new(&target, mode).map_err(|e| err(&target, e))?;
            io::Write::write_all(&mut out, &f.bytes).map_err(|e| err(&target, e))?;
            // Exactly the original's bits, whatever upm's umask took away.
            out.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| err(&target, e))?;
        }
        for (root, rel, mode) in self.dirs.iter().rev() {
            let d = new_roots[*root].join(rel);
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode & 0o755))
                .map_err(|e| err(&d, e))?;
        }
        Ok(new_roots)
    }
}

impl Manifest {
    /// What a copy of the tree takes on a tmpfs: bytes (every file's pages) and inodes
    /// (every file and directory, and the mount's root), with a little room to spare.
    pub fn footprint(&self) -> (u64, u64) {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as u64);
        let bytes: u64 = self
            .files
            .iter()
            .map(|f| (f.bytes.len() as u64).div_ceil(page) * page)
            .sum();
        let inodes = (self.files.len() + self.dirs.len()) as u64 + 1;
        (bytes + 16 * page, inodes)
    }

    /// [`snapshot`](Self::snapshot) into the directory `dest` (a tmpfs of upm's own that
    /// nothing else can reach yet: see `sandbox::mounts::Verified`), through its
    /// descriptor: `<root index>/...`, each file and directory with at most its original
    /// permission bits (`mode & 0o755`). Errors name the files under `shown`, where the
    /// tmpfs will be.
    pub fn snapshot_into(
        &self,
        roots: usize,
        dest: std::os::fd::BorrowedFd<'_>,
        shown: &Path,
    ) -> Result<(), IntegrityError> {
        use nix::fcntl::{openat, OFlag};
        use nix::sys::stat::{fchmod, fchmodat, mkdirat, FchmodatFlags, Mode};
        let err = |path: &Path, e: nix::errno::Errno| IntegrityError::Snapshot {
            path: shown.join(path),
            source: e.into(),
        };
        let private = Mode::from_bits_truncate(0o700);
        let rel = |root: usize, p: &Path| PathBuf::from(root.to_string()).join(p);
        for r in 0..roots {
            let d = rel(r, Path::new(""));
            mkdirat(dest, &d, private).map_err(|e| err(&d, e))?;
        }
        // Sorted: every parent before its children (the roots, as "", are made above).
        for (root, p, _) in self
            .dirs
            .iter()
            .filter(|(_, p, _)| !p.as_os_str().is_empty())
        {
            let d = rel(*root, p);
            mkdirat(dest, &d, private).map_err(|e| err(&d, e))?;
        }
        for f in &self.files {
            let target = rel(f.root, &f.rel);
            let mode = Mode::from_bits_truncate(f.mode & 0o755);
            let flags = OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let out = openat(dest, &target, flags, mode).map_err(|e| err(&target, e))?;
            let mut out = File::from(out);
            io::Write::write_all(&mut out, &f.bytes).map_err(|source| {
                IntegrityError::Snapshot {
                    path: shown.join(&target),
                    source,
                }
            })?;
            // Exactly the original's bits, whatever upm's umask took away.
            fchmod(&out, mode).map_err(|e| err(&target, e))?;
        }
        // Given their modes last, deepest first: the tree is upm's alone until sealed.
        for (root, p, mode) in self.dirs.iter().rev() {
            let d = rel(*root, p);
            let mode = Mode::from_bits_truncate(mode & 0o755);
            fchmodat(dest, &d, mode, FchmodatFlags::FollowSymlink).map_err(|e| err(&d, e))?;
        }
        Ok(())
    }
}

/// `(root index, relative path, path, what to open: the path or its link's target)`.
type Visit<'a> = dyn FnMut(usize, &Path, &Path, &Path) -> Result<(), IntegrityError> + 'a;

/// What the walk does with Python's bytecode caches (`__pycache__` and what is beneath
/// it, `.pyc` files), which it never visits nor lists: no digest covers them and no
/// snapshot holds them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caches {
    /// The tree runs in place (unpinned), where Python may load a cache instead of its
    /// source: each is checked like the tree's other files.
    Check,
    /// The tree runs from its snapshot, which leaves them out: they never run.
    Skip,
}

/// Walks every root: checks each directory and file, refuses escaping symlinks,
/// and calls `visit` for each regular file and `on_dir` for each directory, roots
/// included (bytecode caches: see [`Caches`]).
fn walk(
    roots: &[PathBuf],
    caches: Caches,
    visit: &mut Visit<'_>,
    on_dir: &mut dyn FnMut(usize, &Path, u32),
) -> Result<(), IntegrityError> {
    for (i, root) in roots.iter().enumerate() {
        let meta = std::fs::metadata(root).map_err(|source| IntegrityError::Open {
            path: root.clone(),
            source,
        })?;
        check_owner_and_mode(root, &meta)?;
        on_dir(i, Path::new(""), meta.permissions().mode() & 0o777);
        // Each directory with the identities of those it was reached through: a symlink
        // back to one of them would make the tree endless.
        let mut stack = vec![(PathBuf::new(), false, vec![(meta.dev(), meta.ino())])];
        while let Some((rel, in_cache, above)) = stack.pop() {
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
                let resolved = check_symlink(&path, root)?;
                let meta = std::fs::metadata(&resolved).map_err(|source| IntegrityError::Open {
                    path: path.clone(),
                    source,
                })?;
                let cache = in_cache
                    || if meta.is_dir() {
                        name == "__pycache__"
                    } else {
                        path.extension().is_some_and(|e| e == "pyc")
                    };
                if cache {
                    if caches == Caches::Skip {
                        continue;
                    }
                    check_owner_and_mode(&path, &meta).map_err(cache_hint)?;
                } else {
                    check_owner_and_mode(&path, &meta)?;
                }
                if meta.is_dir() {
                    let id = (meta.dev(), meta.ino());
                    if above.contains(&id) {
                        return Err(unsafe_file(
                            &path,
                            &format!(
                                "a symlink to {}, a directory that holds it: the tree would \
                                 never end (link a directory beside it, not above it)",
                                resolved.display()
                            ),
                        ));
                    }
                    if !cache {
                        on_dir(i, &rel_child, meta.permissions().mode() & 0o777);
                    }
                    let mut chain = above.clone();
                    chain.push(id);
                    stack.push((rel_child, cache, chain));
                } else if meta.is_file() && !cache {
                    visit(i, &rel_child, &path, &resolved)?;
                }
            }
        }
    }
    Ok(())
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

    /// An unpinned executable's digest is remembered only while the file is the same:
    /// rewritten in place to the same size with its mtime put back, it is read again
    /// (its ctime moved), and the digest is the new content's.
    #[test]
    fn a_remembered_digest_is_never_a_rewritten_files() {
        use std::os::unix::fs::MetadataExt;
        let d = dir();
        let p = d.path().join("tool");
        std::fs::write(&p, b"#!/bin/sh\necho A\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let first = open_unpinned(&p).unwrap().sha256;
        // Just written, so not settled: nothing was remembered of it.
        let id = identity_of(&std::fs::File::open(&p).unwrap(), &p).unwrap();
        assert!(!DIGESTS.lock().unwrap().iter().any(|(i, _, _)| *i == id));
        // As a settled file's hash would be.
        remember(id, &first, b"#!/bin/sh\n");
        assert_eq!(open_unpinned(&p).unwrap().sha256, first);
        assert_eq!(open_executable(&p, None).unwrap().sha256, first);
        let before = std::fs::metadata(&p).unwrap();
        std::fs::write(&p, b"#!/bin/sh\necho B\n").unwrap();
        let times = std::fs::FileTimes::new()
            .set_accessed(before.accessed().unwrap())
            .set_modified(before.modified().unwrap());
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_times(times)
            .unwrap();
        let after = std::fs::metadata(&p).unwrap();
        assert_eq!(
            (after.size(), after.mtime(), after.mtime_nsec()),
            (before.size(), before.mtime(), before.mtime_nsec())
        );
        let second = open_unpinned(&p).unwrap().sha256;
        assert_ne!(second, first, "the old content's digest was reused");
        assert_eq!(second, hex::encode(Sha256::digest(b"#!/bin/sh\necho B\n")));
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
    fn a_symlink_back_up_the_tree_is_refused_and_one_beside_it_walked() {
        let d = dir();
        let root = d.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/m.py"), b"M = 1\n").unwrap();
        symlink("src", root.join("lib")).unwrap();
        let roots = vec![root.to_path_buf()];
        check_tree(&roots).unwrap();
        let m = manifest(&roots).unwrap();
        assert_eq!(m.files.len(), 2, "src/m.py and lib/m.py");
        // Straight back up, and round two directories that link to each other.
        for (link, to) in [("src/loop", ".."), ("src/up", "../lib")] {
            symlink(to, root.join(link)).unwrap();
            for err in [check_tree(&roots).err(), manifest(&roots).err()] {
                let err = err.unwrap().to_string();
                assert!(err.contains("a directory that holds it"), "{err}");
            }
            std::fs::remove_file(root.join(link)).unwrap();
        }
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(root.join("c")).unwrap();
        symlink("../c", root.join("a/b")).unwrap();
        symlink("../a", root.join("c/d")).unwrap();
        let err = check_tree(&roots).err().unwrap().to_string();
        assert!(err.contains("a directory that holds it"), "{err}");
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

    /// A snapshot never widens a file's or a directory's permissions: a 0600 file the
    /// plugin could not read stays unreadable to it once pinned.
    #[test]
    fn a_snapshot_keeps_at_most_the_original_permissions() {
        let d = dir();
        std::fs::create_dir_all(d.path().join("private")).unwrap();
        let files = [
            ("secret.txt", 0o600),
            ("mod.py", 0o644),
            ("tool", 0o750),
            ("setuid", 0o4755),
            ("private/inner.py", 0o644),
        ];
        for (name, mode) in files {
            let p = d.path().join(name);
            std::fs::write(&p, name).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::fs::set_permissions(
            d.path().join("private"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let roots = vec![d.path().to_path_buf()];
        let m = manifest(&roots).unwrap();
        let out = dir();
        let snap = m.snapshot(1, &out.path().join("verified")).unwrap();
        let mode = |rel: &str| {
            std::fs::metadata(snap[0].join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        for (name, orig) in files {
            assert_eq!(mode(name), orig & 0o755, "{name}");
        }
        assert_eq!(mode("private"), 0o700);
        assert_eq!(mode(""), 0o755);
        assert_eq!(
            std::fs::read(snap[0].join("private/inner.py")).unwrap(),
            b"private/inner.py"
        );
        assert_eq!(manifest(&snap).unwrap().digest, m.digest);
    }

    /// What is exec'd is a copy of exactly the bytes hashed, no wider than the original.
    #[test]
    fn an_executable_is_copied_with_the_digest_of_the_bytes_copied() {
        let d = dir();
        let p = d.path().join("tool.sh");
        std::fs::write(&p, b"#!/bin/sh -e\necho hi\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o750)).unwrap();
        let out = dir();
        let exe = copy_executable(&p, &out.path().join("exec")).unwrap();
        assert_eq!(exe.source, p);
        assert!(exe.path.starts_with(out.path()));
        assert_eq!(
            exe.sha256,
            hex::encode(Sha256::digest(b"#!/bin/sh -e\necho hi\n"))
        );
        assert!(exe.script);
        assert_eq!(exe.interpreter.as_deref(), Some(Path::new("/bin/sh")));
        let meta = std::fs::metadata(&exe.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
        // The descriptor is the copy's, read-only.
        let mut text = String::new();
        File::from(exe.fd.try_clone().unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "#!/bin/sh -e\necho hi\n");
        // Rewriting the original changes nothing the call holds.
        std::fs::write(&p, b"#!/bin/sh -e\necho XX\n").unwrap();
        assert_eq!(
            std::fs::read(&exe.path).unwrap(),
            b"#!/bin/sh -e\necho hi\n"
        );
        assert!(exe.check_pin(Some(&exe.sha256)).is_ok());
        assert!(matches!(
            exe.check_pin(Some(&"0".repeat(64))),
            Err(IntegrityError::Mismatch { .. })
        ));
    }

    /// A FIFO or a device where a plugin file should be is refused, not read (a FIFO
    /// would block upm forever).
    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let d = dir();
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        let err = open_executable(&fifo, None).err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let out = dir();
        let err = copy_executable(&fifo, out.path()).err().unwrap();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // In a tree, too.
        let tree = dir();
        std::fs::write(tree.path().join("a.py"), b"").unwrap();
        nix::unistd::mkfifo(
            &tree.path().join("b.py"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(
            manifest(&[tree.path().to_path_buf()]).is_ok(),
            "a FIFO is no file of the tree"
        );
        let link = d.path().join("zero");
        symlink("/dev/zero", &link).unwrap();
        assert!(open_executable(&link, None).is_err());
    }
}
