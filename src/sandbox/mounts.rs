//! The host's files, read-only: the call's own mount namespace.
//!
//! Landlock decides what a plugin may open, not what it may change by path without
//! opening: `chmod`, `chown`, `utime` and `setxattr` reach every file the plugin's uid
//! owns (for an unprivileged upm, every file of the user running it) and `utime` every
//! world-writable one, wherever the plugin can name them. So the init, in a mount
//! namespace of the call's own, first clones the mounts of what the plugin may write
//! (its directory, the `write_paths`), then makes every mount read-only and private
//! (nothing it does propagates to the host), and puts the writable clones back on top.
//! Everywhere else those calls fail with EROFS. Writes to device nodes (`/dev/null`)
//! are not stopped by a read-only mount; Landlock still decides which are allowed.
//!
//! The namespace is created by the init's clone, inside the call's user namespace, so
//! the host's read-only mounts arrive locked read-only and none can be made writable.

use super::{sys, Step};
use ::syscalls::{syscall, Sysno};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How many paths may be writable (the call's directory and the `write_paths`): the
/// init keeps one descriptor per path in an array on its stack.
pub const MAX_WRITABLE: usize = 64;

// The new mount API's flags (not all in the libc crate), shared with `grants`.
pub(super) const OPEN_TREE_CLONE: usize = 1;
pub(super) const AT_RECURSIVE: usize = 0x8000;
pub(super) const MOVE_MOUNT_F_EMPTY_PATH: usize = 0x4;
pub(super) const MOVE_MOUNT_T_EMPTY_PATH: usize = 0x40;
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// The kernel's `struct mount_attr` (its first version).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[derive(Debug)]
pub struct Plan {
    /// The call's directory first. Paths that do not exist are left out, as Landlock
    /// leaves them out; one that disappears before the init clones it has nothing to
    /// write to. Any other failure stops the call: the report names these as writable.
    writable: Vec<CString>,
    /// The call's write grants: each cloned from, and attached onto, the init's own
    /// descriptor for it, proven to be upm's inode (see `grants`).
    grants: Vec<super::grants::Mount>,
}

/// Plans the read-only view with `writable` (the call's directory first) and the
/// call's write grants on top.
pub fn prepare(
    workdir: &Path,
    write_paths: &[PathBuf],
    grants: &[super::grants::Grant],
) -> Result<Plan, String> {
    let paths = std::iter::once(workdir).chain(
        write_paths
            .iter()
            .map(PathBuf::as_path)
            .filter(|p| p.exists()),
    );
    let writable = paths
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "a writable path holds a NUL byte".to_string())?;
    if writable.len() > MAX_WRITABLE {
        return Err(format!(
            "at most {} write_paths can be kept writable",
            MAX_WRITABLE - 1
        ));
    }
    // The call's write grants (sandbox::grants).
    let grants = grants
        .iter()
        .filter(|g| g.access == super::grants::Access::Write)
        .map(super::grants::Mount::of)
        .collect::<Result<Vec<_>, _>>()?;
    if grants.len() > MAX_GRANTS {
        return Err(format!("at most {MAX_GRANTS} write grants per call"));
    }
    Ok(Plan { writable, grants })
}

/// The write grants the init keeps descriptors for (on its stack).
const MAX_GRANTS: usize = 16;

impl Plan {
    /// In the init, in its fresh mount namespace, with its capabilities there (before
    /// the uid switch) and before anything resolves a path the plugin will use (its
    /// cwd). Raw system calls only, no allocation: see `spawn::child`.
    pub fn apply(&self) -> Result<(), (Step, i32)> {
        let mounts = |e| (Step::Mounts, e);
        let mut trees = [-1 as libc::c_int; MAX_WRITABLE];
        for (i, path) in self.writable.iter().enumerate() {
            // SAFETY: a NUL-terminated path prepared by the parent; returns a descriptor.
            let r = sys(unsafe {
                syscall!(
                    Sysno::open_tree,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as usize
                )
            });
            match r {
                Ok(fd) => trees[i] = fd as libc::c_int,
                Err(libc::ENOENT) if i > 0 => {}
                Err(e) => return Err(mounts(e)),
            }
        }
        // The call's write grants, cloned while their mounts are still writable.
        let mut granted = [(-1 as libc::c_int, -1 as libc::c_int); MAX_GRANTS];
        for (slot, g) in granted.iter_mut().zip(&self.grants) {
            *slot = g.clone_in_init().map_err(|e| (Step::Grants, e))?;
        }
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: libc::MS_PRIVATE,
            userns_fd: 0,
        };
        // SAFETY: a valid mount_attr on our stack, its size, and a static path.
        sys(unsafe {
            syscall!(
                Sysno::mount_setattr,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>()
            )
        })
        .map_err(mounts)?;
        for (path, &tree) in self.writable.iter().zip(&trees) {
            if tree < 0 {
                continue;
            }
            // SAFETY: attaches our detached clone at a NUL-terminated path.
            sys(unsafe {
                syscall!(
                    Sysno::move_mount,
                    tree,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH
                )
            })
            .map_err(mounts)?;
            // SAFETY: our own descriptor.
            let _ = unsafe { syscall!(Sysno::close, tree) };
        }
        // And put back by descriptor, onto the very place each was cloned from.
        for &(at, tree) in &granted[..self.grants.len()] {
            super::grants::Mount::attach(at, tree).map_err(|e| (Step::Grants, e))?;
        }
        Ok(())
    }

    pub fn writable(&self) -> Vec<String> {
        self.writable
            .iter()
            .chain(self.grants.iter().map(|g| &g.path))
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }
}
