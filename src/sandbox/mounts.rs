//! The host's files, read-only: the call's own mount namespace.
//!
//! Landlock decides what a plugin may open, not what it may change by path without
//! opening: `chmod`, `chown`, `utime` and `setxattr` reach every file the plugin's uid
//! owns (for an unprivileged upm, every file of the user running it) and `utime` every
//! world-writable one, wherever the plugin can name them. So the init, in a mount
//! namespace of the call's own, first clones the mounts of what the plugin may write
//! (its directory, the `write_paths`), then makes every mount read-only and private
//! (nothing it does propagates to the host), and puts the writable clones back on top.
//! Everywhere else those calls fail with EROFS. The call's home is not a clone but a
//! tmpfs of its own ([`Tmpfs`]). Writes to device nodes (`/dev/null`)
//! are not stopped by a read-only mount; Landlock still decides which are allowed.
//!
//! The namespace is created by the init's clone, inside the call's user namespace, so
//! the mounts that were already read-only on the host arrive locked read-only. The rest
//! are made read-only by the init, and stay so because the plugin has no capability to
//! change a mount (nor, in a user namespace of its own, over these: the kernel locks a
//! copied mount's flags there). A pinned tree's snapshot ([`Verified`]) is attached, not
//! copied: its read-only flag is not locked in the call's namespace, and holds the same way.

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
const MOUNT_ATTR_NOSUID: usize = 0x2;
const MOUNT_ATTR_NODEV: usize = 0x4;
const FSOPEN_CLOEXEC: usize = 0x1;
const FSMOUNT_CLOEXEC: usize = 0x1;
const FSCONFIG_SET_STRING: usize = 1;
const FSCONFIG_CMD_CREATE: usize = 6;

/// The kernel's `struct mount_attr` (its first version).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The call's private home: a size-limited tmpfs made by the init in the call's own
/// mount namespace and mounted over the (empty) `home` directory upm made on the host.
/// What the plugin writes lives in memory, never on the host's disk, is bounded as a
/// whole (not only file by file, as RLIMIT_FSIZE does), and goes with the namespace
/// when the call's last process ends, whether upm removed anything or was killed.
#[derive(Debug)]
pub struct Tmpfs {
    /// fsconfig's (key, value) pairs, NUL-terminated, prepared here: the init allocates nothing.
    options: Vec<(CString, CString)>,
    pub bytes: u64,
    pub inodes: u64,
    /// Directories the plugin expects in its home (a Python plugin's `.cache`),
    /// made by the init once it has the plugin's uid.
    dirs: Vec<CString>,
}

/// One inode for each 4 KiB of the bound, but never fewer than 1,024: a tmpfs's
/// inodes and dentries are kernel memory its `size` does not count, so a bound on
/// bytes alone would let a plugin make millions of empty files.
pub fn inodes_for(bytes: u64) -> u64 {
    (bytes / 4096).max(1024)
}

impl Tmpfs {
    pub fn new(bytes: u64, uid: u32, gid: u32, dirs: &[&str]) -> Tmpfs {
        let inodes = inodes_for(bytes);
        let c = |s: String| CString::new(s).unwrap_or_default();
        let options = vec![
            (c("size".into()), c(bytes.to_string())),
            (c("nr_inodes".into()), c(inodes.to_string())),
            (c("mode".into()), c("0700".into())),
            (c("uid".into()), c(uid.to_string())),
            (c("gid".into()), c(gid.to_string())),
        ];
        Tmpfs {
            options,
            bytes,
            inodes,
            dirs: dirs.iter().map(|d| c((*d).to_string())).collect(),
        }
    }
}

/// A tmpfs that upm makes and fills itself, detached (mounted nowhere on the host), for
/// the verified copy of a pinned plugin tree: written through its descriptor, then made
/// read-only, then attached by the init in the call's own mount namespace
/// ([`Plan::attach_verified`]). The copy lives in memory, bounded by the tree's own size,
/// is never on the host's disk, and goes when upm closes the descriptor and the call's
/// namespace ends, whether upm removed anything or was killed.
#[derive(Debug)]
pub struct Verified {
    fd: std::os::fd::OwnedFd,
    /// Its bound, and the files and directories it holds (for the report).
    pub bytes: u64,
    pub inodes: u64,
    /// Where the init attaches it: an empty directory of upm's on the host.
    at: PathBuf,
    /// The trees' own directories, where the init attaches each root's copy as well
    /// ([`Verified::also_at`]).
    originals: Vec<Original>,
}

/// A pinned tree's own directory (root `index` of the copy), by its resolved path and
/// the inode it led to when upm looked: a `#!` line or a file named by its absolute path
/// then finds the verified copy in the call's namespace, never the original (which
/// Landlock would refuse anyway). The init opens the path there with no symlink followed
/// and attaches the copy only if it leads to that same inode (see `grants`).
#[derive(Debug)]
pub struct Original {
    pub index: usize,
    pub path: PathBuf,
    pub id: (u64, u64),
}

/// The trees' own directories the init attaches copies over (on its stack).
pub const MAX_ORIGINALS: usize = 16;

impl Verified {
    /// A detached tmpfs of `bytes` at most, for `inodes` files and directories, to be
    /// attached at `at` (nosuid, nodev; executable: a Python tree may hold native
    /// extensions), its root 0755, at a descriptor >= 10 (the init's descriptors 0..=5 are
    /// its own). Its inodes are not bounded (some kernels charge a security module's
    /// labels to that bound) and its pages are small ones (a huge page would take a small
    /// file's share of the bound): nothing but upm writes it, and only until it is sealed.
    pub fn new(bytes: u64, inodes: u64, at: PathBuf) -> std::io::Result<Verified> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let os = |e: i32| std::io::Error::from_raw_os_error(e);
        let c = |s: String| CString::new(s).unwrap_or_default();
        // SAFETY: a static, NUL-terminated file system name; returns a descriptor.
        let fs = sys(unsafe { syscall!(Sysno::fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) })
            .map_err(os)? as libc::c_int;
        // SAFETY: fs is a fresh descriptor nobody else owns.
        let fs = unsafe { OwnedFd::from_raw_fd(fs) };
        use std::os::fd::AsRawFd;
        let options = [
            (c("size".into()), c(bytes.to_string())),
            (c("nr_inodes".into()), c("0".into())),
            (c("huge".into()), c("never".into())),
            (c("mode".into()), c("0755".into())),
        ];
        for (key, value) in &options {
            // SAFETY: NUL-terminated key and value that outlive the call.
            sys(unsafe {
                syscall!(
                    Sysno::fsconfig,
                    fs.as_raw_fd(),
                    FSCONFIG_SET_STRING,
                    key.as_ptr(),
                    value.as_ptr(),
                    0
                )
            })
            .map_err(os)?;
        }
        // SAFETY: no pointers.
        sys(unsafe {
            syscall!(
                Sysno::fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_CMD_CREATE,
                0,
                0,
                0
            )
        })
        .map_err(os)?;
        // SAFETY: returns a descriptor of the new, detached mount.
        let m = sys(unsafe {
            syscall!(
                Sysno::fsmount,
                fs.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
            )
        })
        .map_err(os)? as libc::c_int;
        // SAFETY: m is a fresh descriptor nobody else owns.
        let m = unsafe { OwnedFd::from_raw_fd(m) };
        // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor returns a new one we then own.
        let high = unsafe { libc::fcntl(m.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if high < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: high is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(high) };
        Ok(Verified {
            fd,
            bytes,
            inodes,
            at,
            originals: Vec::new(),
        })
    }

    /// Where the init attaches it.
    pub fn at(&self) -> &Path {
        &self.at
    }

    /// Has the init also attach root `index`'s copy over the tree's own directory
    /// (at most [`MAX_ORIGINALS`]; the rest only at [`at`](Self::at)).
    pub fn also_at(&mut self, original: Original) {
        if self.originals.len() < MAX_ORIGINALS {
            self.originals.push(original);
        }
    }

    /// The trees' own directories where the init attaches their copies.
    pub fn originals(&self) -> &[Original] {
        &self.originals
    }

    /// Its root, to write the copy through (before [`seal`](Self::seal)).
    pub fn root(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Makes the whole mount read-only: the copy can no longer be changed through any
    /// path or descriptor, short of clearing the flag again, which takes `CAP_SYS_ADMIN`
    /// over the mount's namespace (upm's root; in the call's namespace, where it is
    /// attached and not copied, the flag is not locked: the plugin, which has no
    /// capabilities, cannot clear it, and in any user namespace it makes, the kernel locks it).
    ///
    /// The kernel refuses (EBUSY) while a file of it is open for writing anywhere: in a
    /// batch, another call's init cloned while a file was being written holds a copy of
    /// that descriptor until it closes what it does not need, a moment later. So EBUSY is
    /// tried again, for a bounded while.
    pub fn seal(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let mut tries = 0;
        loop {
            // SAFETY: a valid mount_attr on our stack, its size, and an empty static path
            // with AT_EMPTY_PATH: the descriptor's own mount.
            let r = sys(unsafe {
                syscall!(
                    Sysno::mount_setattr,
                    self.fd.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>()
                )
            });
            match r {
                Err(libc::EBUSY) if tries < SEAL_TRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                other => return other.map(|_| ()).map_err(std::io::Error::from_raw_os_error),
            }
        }
    }
}

/// How often [`Verified::seal`] tries again, 1 ms apart.
const SEAL_TRIES: u32 = 500;

#[derive(Debug)]
pub struct Plan {
    /// The call's home, where the tmpfs goes.
    home: CString,
    tmpfs: Tmpfs,
    /// A verified copy's tmpfs (upm's descriptor, kept open by upm until the init is
    /// reaped) and where the init attaches it.
    verified: Option<(libc::c_int, CString)>,
    /// Each of its roots' copies (`<at>/<index>`), attached over the tree's own directory
    /// if that is still the inode upm saw ([`Original`]).
    originals: Vec<(CString, CString, (u64, u64))>,
    /// The `write_paths`. Paths that do not exist are left out, as Landlock leaves them
    /// out; one that disappears before the init clones it has nothing to write to. Any
    /// other failure stops the call: the report names these as writable.
    writable: Vec<CString>,
    /// The call's write grants: each cloned from, and attached onto, the init's own
    /// descriptor for it, proven to be upm's inode (see `grants`).
    grants: Vec<super::grants::Mount>,
}

/// Plans the read-only view, with the call's home as `tmpfs`, `write_paths` writable and
/// the call's write grants on top.
pub fn prepare(
    home: &Path,
    tmpfs: Tmpfs,
    write_paths: &[PathBuf],
    grants: &[super::grants::Grant],
) -> Result<Plan, String> {
    let nul = |_| "a writable path holds a NUL byte".to_string();
    let writable = write_paths
        .iter()
        .filter(|p| p.exists())
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(nul)?;
    if writable.len() >= MAX_WRITABLE {
        return Err(format!(
            "at most {} write_paths can be kept writable",
            MAX_WRITABLE - 1
        ));
    }
    let home = CString::new(home.as_os_str().as_bytes()).map_err(nul)?;
    // The call's write grants (sandbox::grants).
    let grants = grants
        .iter()
        .filter(|g| g.access == super::grants::Access::Write)
        .map(super::grants::Mount::of)
        .collect::<Result<Vec<_>, _>>()?;
    if grants.len() > MAX_GRANTS {
        return Err(format!("at most {MAX_GRANTS} write grants per call"));
    }
    Ok(Plan {
        home,
        tmpfs,
        verified: None,
        originals: Vec::new(),
        writable,
        grants,
    })
}

/// The write grants the init keeps descriptors for (on its stack).
const MAX_GRANTS: usize = 16;

impl Plan {
    /// Has the init attach `verified` where it says (an empty directory of upm's on the
    /// host). upm keeps `verified` open until the init is reaped.
    pub fn attach_verified(&mut self, verified: &Verified) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let at = CString::new(verified.at.as_os_str().as_bytes())
            .map_err(|_| "the verified copy's path holds a NUL byte".to_string())?;
        let cstr = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| format!("{} holds a NUL byte", p.display()))
        };
        self.originals = verified
            .originals
            .iter()
            .map(|o| {
                let copy = cstr(&verified.at.join(o.index.to_string()))?;
                Ok((copy, cstr(&o.path)?, o.id))
            })
            .collect::<Result<_, String>>()?;
        self.verified = Some((verified.fd.as_raw_fd(), at));
        Ok(())
    }

    /// The verified copy's descriptor, which the init keeps until it attaches it (-1: none).
    pub fn verified_fd(&self) -> libc::c_int {
        self.verified.as_ref().map_or(-1, |(fd, _)| *fd)
    }

    /// In the init, in its fresh mount namespace, with its capabilities there (before
    /// the uid switch) and before anything resolves a path the plugin will use (its
    /// cwd). Raw system calls only, no allocation: see `spawn::child`. Returns the
    /// home tmpfs's mount descriptor (close-on-exec), which the init keeps to tell how
    /// full it was when the plugin ended.
    pub fn apply(&self) -> Result<libc::c_int, (Step, i32)> {
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
                Err(libc::ENOENT) => {}
                Err(e) => return Err(mounts(e)),
            }
        }
        let home = self.make_tmpfs().map_err(mounts)?;
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
        let placed = self
            .writable
            .iter()
            .zip(&trees)
            .filter(|(_, &tree)| tree >= 0)
            .chain(std::iter::once((&self.home, &home)));
        for (path, &tree) in placed {
            // SAFETY: attaches our detached mount at a NUL-terminated path.
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
            if tree != home {
                // SAFETY: our own descriptor.
                let _ = unsafe { syscall!(Sysno::close, tree) };
            }
        }
        // And put back by descriptor, onto the very place each was cloned from.
        for &(at, tree) in &granted[..self.grants.len()] {
            super::grants::Mount::attach(at, tree).map_err(|e| (Step::Grants, e))?;
        }
        // The verified copy, read-only already (upm sealed it), over its empty directory.
        if let Some((tree, path)) = &self.verified {
            // SAFETY: attaches upm's detached mount (a descriptor it keeps open until we
            // are reaped) at a NUL-terminated path prepared by the parent.
            sys(unsafe {
                syscall!(
                    Sysno::move_mount,
                    *tree,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH
                )
            })
            .map_err(mounts)?;
            // SAFETY: our copy of upm's descriptor; the plugin must not inherit it.
            let _ = unsafe { syscall!(Sysno::close, *tree) };
            // And each root's copy over the tree's own directory, every one opened and
            // proven before any is covered (one root may lie inside another).
            let mut targets = [-1 as libc::c_int; MAX_ORIGINALS];
            for (slot, (_, path, id)) in targets.iter_mut().zip(&self.originals) {
                *slot = super::grants::open_proven(path, *id).map_err(mounts)?;
            }
            for ((copy, _, _), &target) in self.originals.iter().zip(&targets) {
                // SAFETY: clones the copy's root directory (a NUL-terminated path
                // prepared by the parent, on the tmpfs just attached) as a detached mount.
                let tree = sys(unsafe {
                    syscall!(
                        Sysno::open_tree,
                        libc::AT_FDCWD,
                        copy.as_ptr(),
                        OPEN_TREE_CLONE | libc::O_CLOEXEC as usize
                    )
                })
                .map_err(mounts)? as libc::c_int;
                super::grants::Mount::attach(target, tree).map_err(mounts)?;
            }
        }
        Ok(home)
    }

    /// A detached tmpfs with the plan's options: nosuid, nodev.
    fn make_tmpfs(&self) -> Result<libc::c_int, i32> {
        // SAFETY: a static, NUL-terminated file system name; returns a descriptor.
        let fs = sys(unsafe { syscall!(Sysno::fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) })?
            as libc::c_int;
        let made = (|| {
            for (key, value) in &self.tmpfs.options {
                // SAFETY: NUL-terminated key and value prepared by the parent.
                sys(unsafe {
                    syscall!(
                        Sysno::fsconfig,
                        fs,
                        FSCONFIG_SET_STRING,
                        key.as_ptr(),
                        value.as_ptr(),
                        0
                    )
                })?;
            }
            // SAFETY: no pointers.
            sys(unsafe { syscall!(Sysno::fsconfig, fs, FSCONFIG_CMD_CREATE, 0, 0, 0) })?;
            // SAFETY: returns a descriptor of the new, detached mount.
            sys(unsafe {
                syscall!(
                    Sysno::fsmount,
                    fs,
                    FSMOUNT_CLOEXEC,
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                )
            })
        })();
        // SAFETY: our own descriptor.
        let _ = unsafe { syscall!(Sysno::close, fs) };
        made.map(|fd| fd as libc::c_int)
    }

    /// In the init, with the plugin's uid: the directories the plugin expects in its home.
    pub fn make_home_dirs(&self, home: libc::c_int) -> Result<(), i32> {
        for d in &self.tmpfs.dirs {
            // SAFETY: a NUL-terminated name prepared by the parent, under our descriptor.
            sys(unsafe { syscall!(Sysno::mkdirat, home, d.as_ptr(), 0o700) })?;
        }
        Ok(())
    }

    /// Everything the plugin may write: its home first.
    pub fn writable(&self) -> Vec<String> {
        std::iter::once(&self.home)
            .chain(&self.writable)
            .chain(self.grants.iter().map(|g| &g.path))
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    pub fn tmpfs(&self) -> &Tmpfs {
        &self.tmpfs
    }
}

/// How full the home tmpfs is (async-signal-safe): bytes used, and whether its bytes
/// or its inodes ran out.
pub fn fill(home: libc::c_int) -> Option<(u64, bool)> {
    // SAFETY: zeroed statfs is a valid value; fstatfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer on our stack.
    sys(unsafe { syscall!(Sysno::fstatfs, home, &mut st as *mut libc::statfs) }).ok()?;
    let bsize = st.f_bsize as u64;
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * bsize;
    Some((used, st.f_bfree == 0 || st.f_ffree == 0))
}
