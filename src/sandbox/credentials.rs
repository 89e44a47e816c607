//! Credentials: an unprivileged uid/gid, no supplementary groups, no
//! capabilities in any set (bounding and ambient included).
//!
//! As root the plugin becomes the configured uid/gid, inside the call's own user
//! namespace where only that uid/gid is mapped (see `namespaces`). Unprivileged, upm
//! maps the caller's own uid/gid into a fresh user namespace (so the other
//! namespaces can be created) and the plugin keeps that identity. Every
//! capability is cleared explicitly: inside a user namespace the uid change
//! alone would not drop them.

use super::host::Host;
use super::policy::{Layer, UserSpec};
use super::{sys, LayerReport};
use ::syscalls::{syscall, Sysno};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// upm is root: switch to the configured uid/gid.
    Switch,
    /// upm is unprivileged: a user namespace maps the caller's uid/gid onto themselves.
    UserNamespace,
    /// upm is unprivileged and no user namespace can be had (only with `allow_degraded: ["namespaces"]`):
    /// the plugin keeps the caller's uid, with every capability cleared.
    KeepCaller,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub uid: u32,
    pub gid: u32,
    pub cap_last_cap: u32,
}

pub fn prepare(user: &UserSpec, host: &Host) -> (Plan, LayerReport) {
    let (mode, uid, gid) = if host.privileged {
        (Mode::Switch, user.uid, user.gid)
    } else {
        (Mode::UserNamespace, host.euid, host.egid)
    };
    let plan = Plan {
        mode,
        uid,
        gid,
        cap_last_cap: host.cap_last_cap,
    };
    let report = LayerReport::enforced(
        Layer::Credentials,
        json!({
            "uid": uid,
            "gid": gid,
            "supplementary_groups": [],
            "capabilities": [],
            "no_new_privs": true,
            "mode": match mode { Mode::Switch => "switched_from_root", Mode::UserNamespace => "caller_uid_in_user_namespace", Mode::KeepCaller => "caller_uid" },
        }),
    );
    (plan, report)
}

/// Why a root upm may not switch to the plugin's uid here, if it may not.
///
/// The init shares upm's memory, and a change of credentials makes that memory as
/// dumpable as `fs.suid_dumpable` says. At 1 ("debug") any process running as the
/// plugin's uid and gid could then trace the init, and so read and write root upm's
/// memory. At 0 or 2 only a holder of CAP_SYS_PTRACE could. An unknown value is refused
/// too: fail closed. `suid_dumpable` is read only when it matters. (Should the setting
/// become 1 after this check, the init makes the memory undumpable again right after its
/// switch, and so does every other euid change in upm, `AsOwner`'s included; what remains
/// open is the moment between a switch and that, for any call's init running meanwhile.)
pub fn switch_refused(mode: Mode, suid_dumpable: impl FnOnce() -> Option<u8>) -> Option<String> {
    if mode != Mode::Switch {
        return None;
    }
    match suid_dumpable() {
        Some(0 | 2) => None,
        v => Some(format!(
            "fs.suid_dumpable is {}: the sandbox's init, which shares upm's memory, would \
             be traceable by every process of the plugin's uid (set it to 0 or 2)",
            v.map_or("unreadable".to_owned(), |v| v.to_string())
        )),
    }
}

/// The kernel's `__user_cap_header_struct` / `__user_cap_data_struct` (version 3).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

impl Plan {
    /// Async-signal-safe: raw prctl/set*id/capset only. Order matters: the
    /// bounding set needs CAP_SETPCAP, which the uid change takes away.
    ///
    /// Raw system calls, not glibc's wrappers: those broadcast a credential change to
    /// every thread glibc knows of (in a child of a multithreaded upm that means waiting
    /// forever for threads that do not exist there), and they write `errno`, which in a
    /// child sharing upm's memory is a live upm thread's.
    /// Empties the bounding set: in the init before the go, while upm writes the id maps
    /// (it limits what an exec could grant, not the capabilities the init still uses).
    pub fn drop_bounding_set(&self) -> Result<(), i32> {
        for cap in 0..=self.cap_last_cap {
            // Without a user namespace an unprivileged caller cannot drop the bounding set
            // (EPERM); it has no capabilities to gain, and no_new_privs blocks file capabilities.
            match sys(prctl_int(libc::PR_CAPBSET_DROP, cap as usize)) {
                Ok(_) | Err(libc::EINVAL) => {}
                Err(libc::EPERM) if self.mode == Mode::KeepCaller => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// After [`Self::drop_bounding_set`]: the plugin's ids, no capabilities.
    pub fn apply(&self) -> Result<(), i32> {
        if self.mode == Mode::Switch {
            // SAFETY: an empty group list; the pointer is never read for size 0.
            sys(unsafe { syscall!(Sysno::setgroups, 0, 0) })?;
        }
        // SAFETY: set*id with integer arguments; changes only this process.
        sys(unsafe { syscall!(Sysno::setresgid, self.gid, self.gid, self.gid) })?;
        // SAFETY: as above.
        sys(unsafe { syscall!(Sysno::setresuid, self.uid, self.uid, self.uid) })?;
        if self.mode == Mode::Switch {
            // The id changes just made the memory this init shares with root upm as
            // dumpable as `fs.suid_dumpable` is now, which may no longer be what
            // `switch_refused` read: make it undumpable whatever it is.
            sys(prctl_int(libc::PR_SET_DUMPABLE, 0))?;
        }
        sys(prctl_int(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as usize,
        ))?;
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: header and data are valid, correctly laid out kernel structs on our stack.
        sys(unsafe { syscall!(Sysno::capset, &header as *const CapHeader, data.as_ptr()) })?;
        // Check rather than trust: a uid still 0 here would be a silent failure. (Inside the
        // call's user namespace an unmapped id reads back as the overflow id, 65534, so
        // with that uid this cannot tell; the sandbox tests check the ids from outside.)
        let mut ids = [[0u32; 3]; 2];
        let [u, g] = &mut ids;
        let [ru, eu, su] = u.each_mut().map(|p| p as *mut u32);
        let [rg, eg, sg] = g.each_mut().map(|p| p as *mut u32);
        // SAFETY: getres*id write three ids each into arrays on our stack.
        unsafe {
            sys(syscall!(Sysno::getresuid, ru, eu, su))?;
            sys(syscall!(Sysno::getresgid, rg, eg, sg))?;
        }
        if ids != [[self.uid; 3], [self.gid; 3]] {
            return Err(libc::EPERM);
        }
        Ok(())
    }
}

/// prctl with one integer argument (no pointers).
fn prctl_int(option: libc::c_int, arg: usize) -> Result<usize, ::syscalls::Errno> {
    // SAFETY: the options used here take integer arguments only.
    unsafe { syscall!(Sysno::prctl, option, arg, 0, 0, 0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_switch_needs_memory_that_stays_undumpable() {
        for ok in [0, 2] {
            assert_eq!(switch_refused(Mode::Switch, || Some(ok)), None);
        }
        for bad in [Some(1), Some(3), None] {
            let why = switch_refused(Mode::Switch, || bad);
            assert!(
                why.as_deref()
                    .is_some_and(|w| w.contains("fs.suid_dumpable")),
                "{bad:?}: {why:?}"
            );
        }
        // Unprivileged, upm's memory is the caller's own: nothing to protect from it.
        assert_eq!(switch_refused(Mode::UserNamespace, || Some(1)), None);
    }
}
