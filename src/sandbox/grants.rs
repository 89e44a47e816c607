//! Per-call grants: a path a call's own (validated) argument names, opened once, that
//! this call's plugin may read (or read and write), and nothing else follows from it.
//!
//! Names play no tricks here:
//! - the path must be absolute (relative to nothing the caller controls: not upm's
//!   working directory, which the caller picks) and hold no `..`;
//! - it must lie under one of the plugin's `grants_within` roots, by its components;
//! - it is opened once, `O_PATH`, with `openat2(root, rest, RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS)`: a symlink that stays under the root is followed, one that
//!   leads out of it (or any `/proc` magic link) refuses the grant;
//! - the Landlock rule is made from that descriptor (rules hold inodes, not names);
//! - a write grant's writable mount is made in the call's own mount namespace, where
//!   upm's descriptor cannot be used (its mount is the host's: `open_tree` and
//!   `move_mount` refuse it with EINVAL). The init opens the kernel's name for that
//!   descriptor there with `RESOLVE_NO_SYMLINKS`, checks it is the very same inode
//!   (device and inode number: upm's descriptor keeps the inode alive, so its number
//!   cannot be reused meanwhile), then clones the mount from *that* descriptor and
//!   attaches the clone onto it, by descriptor. A path renamed or swapped after upm's
//!   check either still leads to the same inode or stops the call: it never widens it.
//!
//! A path that does not exist is refused: a grant is for an existing file or
//! directory (to let a plugin create a file, grant the directory it goes in).

use super::mounts::{
    AT_RECURSIVE, MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH, OPEN_TREE_CLONE,
};
use super::sys;
use ::syscalls::{syscall, Sysno};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use serde_json::{json, Value};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What a grant allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read (and execute), as `read_paths`.
    Read,
    /// Read and write, as `write_paths`.
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// One granted path, opened.
#[derive(Debug)]
pub struct Grant {
    /// The argument, as a JSON Pointer into the args (`/project_root`).
    pub argument: String,
    /// The value as the caller wrote it.
    pub path: String,
    /// What was opened, as the kernel names it (symlinks under the root resolved).
    pub real: PathBuf,
    /// The `grants_within` root it fell under.
    pub root: PathBuf,
    pub access: Access,
    pub dir: bool,
    /// `O_PATH`, opened once: the Landlock rule is made from it.
    pub fd: OwnedFd,
    /// Device and inode, which the init checks on what it opens in the call's namespace.
    pub id: (u64, u64),
}

/// Why a path cannot be granted.
#[derive(Debug, thiserror::Error)]
pub enum Why {
    #[error("the value is not a string")]
    NotString,
    #[error("it holds a NUL byte")]
    Nul,
    #[error("it is not an absolute path (a relative one would be relative to upm's working directory, which the caller picks)")]
    Relative,
    #[error("it holds \"..\"")]
    DotDot,
    #[error("it is not under any of the roots")]
    Outside,
    #[error("it does not exist (a grant is for an existing file or directory: grant the directory a new file is to be made in)")]
    Missing,
    #[error("a symlink on the way leads out of its root {0}")]
    SymlinkOut(String),
    /// ELOOP: a `/proc` magic link (`RESOLVE_NO_MAGICLINKS`), or too many symlinks.
    #[error(
        "a symlink on the way leads out of its root {0} (a /proc magic link) or round in a loop"
    )]
    SymlinkLoop(String),
    #[error("it is neither a regular file nor a directory")]
    NotFileOrDir,
    /// The kernel answers ENOTDIR for `file/`: granted as the file, it would mean what
    /// the plugin's own open of it never could.
    #[error("it ends with \"/\", which names a directory, but it is a file")]
    FileAsDirectory,
    #[error("it cannot be opened: {0}")]
    Open(std::io::Error),
    /// The config's root itself cannot be used now (the config checked it at load).
    #[error("its root {root} cannot be opened: {error}")]
    Root { root: String, error: std::io::Error },
}

/// A refused grant: which argument, what it said, the roots it had to be under.
#[derive(Debug, thiserror::Error)]
#[error(
    "the argument \"{argument}\" (\"x-upm-grant\": \"{access}\") {path:?} cannot be granted: {why}; \
     this plugin's grants must be under {roots:?} (\"grants_within\")",
    access = access.as_str()
)]
pub struct GrantError {
    pub argument: String,
    pub access: Access,
    /// The value, clipped (it is the caller's).
    pub path: String,
    pub roots: Vec<String>,
    pub why: Why,
}

impl GrantError {
    /// For the error result's `details`.
    pub fn details(&self) -> Value {
        json!({ "grant": {
            "argument": self.argument,
            "access": self.access.as_str(),
            "path": self.path,
            "roots": self.roots,
            "reason": self.why.to_string(),
        }})
    }
}

/// Longest value repeated in an error or a report.
const MAX_REPORTED_CHARS: usize = 1024;

/// Opens the path `value` of `argument` for `access`, under one of `roots`, or says why not.
pub fn open(
    argument: &str,
    value: &Value,
    access: Access,
    roots: &[PathBuf],
) -> Result<Grant, GrantError> {
    let refuse = |why| GrantError {
        argument: argument.to_owned(),
        access,
        path: crate::error::clip(
            value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned),
            MAX_REPORTED_CHARS,
        ),
        roots: roots.iter().map(|r| r.display().to_string()).collect(),
        why,
    };
    let text = value.as_str().ok_or_else(|| refuse(Why::NotString))?;
    let (root, rest) = place(text, roots).map_err(refuse)?;
    let (fd, real) = open_beneath(root, &rest).map_err(refuse)?;
    let st = rustix::fs::fstat(&fd).map_err(|e| refuse(Why::Open(e.into())))?;
    let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
    let dir = match kind {
        rustix::fs::FileType::Directory => true,
        rustix::fs::FileType::RegularFile => false,
        _ => return Err(refuse(Why::NotFileOrDir)),
    };
    if !dir && (text.ends_with('/') || text.ends_with("/.")) {
        return Err(refuse(Why::FileAsDirectory));
    }
    Ok(Grant {
        argument: argument.to_owned(),
        path: text.to_owned(),
        real,
        root: root.to_path_buf(),
        access,
        dir,
        fd,
        id: (st.st_dev, st.st_ino),
    })
}

/// The root `text` lies under (the longest that matches) and the rest of it, by the
/// path's components alone: absolute, no `..`, `.` and repeated slashes dropped.
fn place<'r>(text: &str, roots: &'r [PathBuf]) -> Result<(&'r Path, PathBuf), Why> {
    if text.contains('\0') {
        return Err(Why::Nul);
    }
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(Why::Relative);
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Why::DotDot);
    }
    let path: PathBuf = path.components().collect();
    let root = roots
        .iter()
        .filter(|r| path.starts_with(r))
        .max_by_key(|r| r.components().count())
        .ok_or(Why::Outside)?;
    let rest = path.strip_prefix(root).map_err(|_| Why::Outside)?;
    Ok((root, rest.to_path_buf()))
}

/// `rest` opened under `root`, never out of it, and the kernel's name for what was opened.
fn open_beneath(root: &Path, rest: &Path) -> Result<(OwnedFd, PathBuf), Why> {
    let root_error = |error: std::io::Error| Why::Root {
        root: root.display().to_string(),
        error,
    };
    // The root as the config names it: its own symlinks are the operator's.
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| root_error(e.into()))?;
    let root_real = fd_path(root_fd.as_fd()).map_err(root_error)?;
    let rest = if rest.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rest
    };
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    let fd = loop {
        let opened = rustix::fs::openat2(
            &root_fd,
            rest,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            resolve,
        );
        match opened {
            Ok(fd) => break fd,
            // A rename elsewhere on the file system during the walk: try again.
            Err(rustix::io::Errno::AGAIN) if tries < 16 => tries += 1,
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {
                return Err(Why::Missing)
            }
            Err(rustix::io::Errno::XDEV) => {
                return Err(Why::SymlinkOut(root.display().to_string()))
            }
            Err(rustix::io::Errno::LOOP) => {
                return Err(Why::SymlinkLoop(root.display().to_string()))
            }
            Err(e) => return Err(Why::Open(e.into())),
        }
    };
    let real = fd_path(fd.as_fd()).map_err(Why::Open)?;
    // RESOLVE_BENEATH already saw to it; the name says so too, or nothing is granted.
    if !real.starts_with(&root_real) {
        return Err(Why::SymlinkOut(root.display().to_string()));
    }
    Ok((fd, real))
}

/// What the kernel calls an open file (its path in upm's mount namespace).
fn fd_path(fd: BorrowedFd<'_>) -> Result<PathBuf, std::io::Error> {
    let p = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if !p.is_absolute() {
        return Err(std::io::Error::other(format!(
            "the kernel names it {}",
            p.display()
        )));
    }
    Ok(p)
}

/// The grants as the result's sandbox report and the audit entries list them.
pub fn report(grants: &[Grant]) -> Value {
    Value::Array(
        grants
            .iter()
            .map(|g| {
                let mut r = json!({
                    "argument": g.argument,
                    "path": crate::error::clip(g.path.clone(), MAX_REPORTED_CHARS),
                    "access": g.access.as_str(),
                    "root": g.root,
                    "kind": if g.dir { "directory" } else { "file" },
                });
                if g.real != Path::new(&g.path) {
                    r["resolved"] = json!(g.real);
                }
                r
            })
            .collect(),
    )
}

// ------------------------------------------------------------- the writable mounts

/// A write grant's mount, for the sandbox's init: the kernel's name for upm's
/// descriptor, and the inode it must lead to.
#[derive(Debug)]
pub struct Mount {
    pub path: CString,
    pub id: (u64, u64),
}

impl Mount {
    pub fn of(g: &Grant) -> Result<Mount, String> {
        let path = CString::new(g.real.as_os_str().as_bytes())
            .map_err(|_| "a granted path holds a NUL byte".to_owned())?;
        Ok(Mount { path, id: g.id })
    }
}

/// The kernel's `struct open_how`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

impl Mount {
    /// In the init, in the call's mount namespace, before its mounts turn read-only:
    /// the grant opened there (no symlink followed), proven to be upm's inode, and a
    /// detached writable clone of it. Returns (where it goes, the clone). Raw system
    /// calls only, no allocation (see `spawn::child`).
    pub fn clone_in_init(&self) -> Result<(libc::c_int, libc::c_int), i32> {
        let at = open_proven(&self.path, self.id)?;
        // SAFETY: clones the mount under our own descriptor; "" with AT_EMPTY_PATH names it.
        let tree = sys(unsafe {
            syscall!(
                Sysno::open_tree,
                at,
                c"".as_ptr(),
                OPEN_TREE_CLONE
                    | AT_RECURSIVE
                    | libc::AT_EMPTY_PATH as usize
                    | libc::O_CLOEXEC as usize
            )
        })? as libc::c_int;
        Ok((at, tree))
    }

    /// After the read-only remount: the clone attached onto the very place it was
    /// cloned from (or, for a pinned tree's copy, the tree's own directory), both by
    /// descriptor.
    pub fn attach(at: libc::c_int, tree: libc::c_int) -> Result<(), i32> {
        // SAFETY: our own two descriptors; "" with the EMPTY_PATH flags names them.
        sys(unsafe {
            syscall!(
                Sysno::move_mount,
                tree,
                c"".as_ptr(),
                at,
                c"".as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
            )
        })?;
        // SAFETY: our own descriptors.
        let _ = unsafe { syscall!(Sysno::close, tree) };
        // SAFETY: as above.
        let _ = unsafe { syscall!(Sysno::close, at) };
        Ok(())
    }
}

/// In the init, in the call's mount namespace: `path` opened there (`O_PATH`, no symlink
/// followed), proven to be the inode upm saw (`id`: device and inode number), else
/// ESTALE. Raw system calls only, no allocation (see `spawn::child`).
pub(super) fn open_proven(path: &std::ffi::CStr, id: (u64, u64)) -> Result<libc::c_int, i32> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: a NUL-terminated path prepared by the parent and an open_how on our stack.
    let at = sys(unsafe {
        syscall!(
            Sysno::openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>()
        )
    })? as libc::c_int;
    // SAFETY: zeroed stat is a valid value; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer on our stack.
    sys(unsafe { syscall!(Sysno::fstat, at, &mut st as *mut libc::stat) })?;
    if (st.st_dev, st.st_ino) != id {
        // SAFETY: our own descriptor.
        let _ = unsafe { syscall!(Sysno::close, at) };
        return Err(libc::ESTALE);
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_placed_by_their_components_only() {
        let roots = [PathBuf::from("/srv/p"), PathBuf::from("/srv/p/inner")];
        let ok = |t: &str| place(t, &roots).map(|(r, rest)| (r.to_path_buf(), rest));
        assert_eq!(
            ok("/srv/p/a//b/./c/").unwrap(),
            (PathBuf::from("/srv/p"), PathBuf::from("a/b/c"))
        );
        assert_eq!(
            ok("/srv/p/inner/x").unwrap(),
            (PathBuf::from("/srv/p/inner"), PathBuf::from("x"))
        );
        assert_eq!(ok("/srv/p").unwrap().1, PathBuf::new());
        assert!(matches!(ok("/srv/p/../etc"), Err(Why::DotDot)));
        assert!(matches!(ok("/srv/p/a/.."), Err(Why::DotDot)));
        assert!(matches!(ok("srv/p/a"), Err(Why::Relative)));
        assert!(matches!(ok("./a"), Err(Why::Relative)));
        assert!(matches!(ok(""), Err(Why::Relative)));
        // A sibling whose name starts like a root is not under it.
        assert!(matches!(ok("/srv/pp/a"), Err(Why::Outside)));
        assert!(matches!(ok("/etc/passwd"), Err(Why::Outside)));
        assert!(matches!(ok("/srv/p/a\0b"), Err(Why::Nul)));
    }

    #[test]
    fn opens_beneath_the_root_and_never_out_of_it() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let out = d.path().join("out");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(root.join("a/f"), "x").unwrap();
        std::os::unix::fs::symlink("a/b", root.join("inside")).unwrap();
        std::os::unix::fs::symlink(&out, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../out", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", root.join("magic")).unwrap();
        let roots = [root.clone()];
        let at = |rest: &str| Value::String(format!("{}/{rest}", root.display()));
        let g = open("/p", &at("a/f"), Access::Read, &roots).unwrap();
        assert!(!g.dir);
        assert_eq!(g.real, root.join("a/f"));
        let g = open("/p", &at("inside"), Access::Write, &roots).unwrap();
        assert!(g.dir);
        assert_eq!(g.real, root.join("a/b"));
        for escape in ["abs", "rel", "magic", "rel/x"] {
            let e = open("/p", &at(escape), Access::Read, &roots).unwrap_err();
            assert!(matches!(e.why, Why::SymlinkOut(_)), "{escape}: {e}");
        }
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        for escape in ["loop", "loop/x"] {
            let e = open("/p", &at(escape), Access::Read, &roots).unwrap_err();
            assert!(matches!(e.why, Why::SymlinkLoop(_)), "{escape}: {e}");
        }
        let e = open("/p", &at("none"), Access::Read, &roots).unwrap_err();
        assert!(matches!(e.why, Why::Missing), "{e}");
        let e = open("/kwargs/p", &json!(7), Access::Read, &roots).unwrap_err();
        assert!(matches!(e.why, Why::NotString), "{e}");
        let msg = open("/p", &json!("/etc"), Access::Write, &roots)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/p")
                && msg.contains(&root.display().to_string())
                && msg.contains("write"),
            "{msg}"
        );
    }
}
