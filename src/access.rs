//! Whether the plugin's uid can reach a file, and if not, why, in a sentence.
//!
//! upm opens a plugin's files itself, as root or as its own user; the plugin runs as
//! another uid (root switches to the configured one) with no supplementary groups. A
//! file upm could open may still be out of the plugin's reach: a directory above it it
//! cannot search, a mode that grants it nothing, a `noexec` mount. `upm check` says so
//! before any call, and a call that fails to start on EACCES says which of these it was.
//! Classic mode bits only: ACLs and LSMs other than Landlock are not read.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Who the plugin runs as.
#[derive(Debug, Clone)]
pub struct Who {
    pub uid: u32,
    /// The primary gid first, then any supplementary ones the plugin keeps.
    pub gids: Vec<u32>,
}

impl Who {
    /// The identity a plugin with this configured user gets from this upm: the
    /// configured uid/gid when upm is root, else upm's own (in its user namespace).
    pub fn plugin(user: &crate::sandbox::policy::UserSpec) -> Who {
        let euid = nix::unistd::geteuid();
        if euid.is_root() {
            return Who {
                uid: user.uid,
                gids: vec![user.gid],
            };
        }
        let mut gids = vec![nix::unistd::getegid().as_raw()];
        if let Ok(groups) = nix::unistd::getgroups() {
            gids.extend(groups.iter().map(|g| g.as_raw()));
        }
        Who {
            uid: euid.as_raw(),
            gids,
        }
    }
}

/// What the plugin needs of a file (bits as in a mode's "other" triplet).
pub const READ: u32 = 4;
pub const WRITE: u32 = 2;
pub const EXEC: u32 = 1;

/// `None` when `who` may do `want` with `path` (and search every directory above it),
/// else why not. A file that does not exist is a reason too.
pub fn denied(path: &Path, who: &Who, want: u32) -> Option<String> {
    let mut above: Vec<&Path> = path.ancestors().skip(1).collect();
    above.reverse();
    for dir in above {
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        if !allows(&m, who, EXEC) {
            return Some(format!(
                "the directory {} ({}) cannot be searched by uid {}",
                dir.display(),
                describe(&m),
                who.uid
            ));
        }
    }
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    let mut missing = Vec::new();
    for (bit, word) in [
        (READ, "readable"),
        (WRITE, "writable"),
        (EXEC, "executable"),
    ] {
        if want & bit != 0 && !allows(&m, who, bit) {
            // A directory's x is "searchable".
            missing.push(if bit == EXEC && m.is_dir() {
                "searchable"
            } else {
                word
            });
        }
    }
    if !missing.is_empty() {
        return Some(format!(
            "{} ({}) is not {} by uid {} (gid {})",
            path.display(),
            describe(&m),
            missing.join(" or "),
            who.uid,
            who.gids.first().copied().unwrap_or(who.uid)
        ));
    }
    if want & EXEC != 0 && m.is_file() && noexec(path) {
        return Some(format!(
            "{} is on a filesystem mounted noexec: nothing on it can be executed",
            path.display()
        ));
    }
    None
}

fn noexec(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
}

/// The mode bits the kernel would pick for `who`: owner, else group, else other.
/// Root needs no bit but a file's execute bit (some one of the three).
fn allows(m: &std::fs::Metadata, who: &Who, bit: u32) -> bool {
    let mode = m.mode();
    if who.uid == 0 {
        return bit != EXEC || m.is_dir() || mode & 0o111 != 0;
    }
    let shift = if m.uid() == who.uid {
        6
    } else if who.gids.contains(&m.gid()) {
        3
    } else {
        0
    };
    (mode >> shift) & bit != 0
}

fn describe(m: &std::fs::Metadata) -> String {
    format!(
        "mode {:04o}, owner {}:{}",
        m.mode() & 0o7777,
        m.uid(),
        m.gid()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn says_which_bit_or_directory_is_missing() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let other = Who {
            uid: me + 1,
            gids: vec![4242],
        };
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        set(d.path(), 0o755);
        set(&f, 0o744);
        assert_eq!(denied(&f, &other, READ), None);
        let why = denied(&f, &other, EXEC).unwrap();
        assert!(
            why.contains("mode 0744") && why.contains("not executable by uid"),
            "{why}"
        );
        set(d.path(), 0o700);
        let why = denied(&f, &other, READ).unwrap();
        assert!(why.contains("cannot be searched"), "{why}");
        let why = denied(&d.path().join("none"), &other, READ);
        assert!(why.is_some());
        set(d.path(), 0o755);
        let owner = Who {
            uid: me,
            gids: vec![],
        };
        assert_eq!(denied(&f, &owner, EXEC), None);
        let why = denied(d.path(), &other, WRITE).unwrap();
        assert!(why.contains("not writable"), "{why}");
    }
}
