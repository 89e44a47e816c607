//! What this kernel and this invoker can enforce, probed cheaply once per call.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub euid: u32,
    pub egid: u32,
    /// Root with CAP_SYS_ADMIN/CAP_SETUID: namespaces and uid changes work without a user namespace.
    pub privileged: bool,
    /// 0 when Landlock is unsupported or disabled.
    pub landlock_abi: i32,
    pub seccomp: bool,
    /// issue 23: seccomp can notify upm of the calls it refuses (SECCOMP_RET_USER_NOTIF).
    pub seccomp_user_notif: bool,
    /// Highest capability number, for dropping the bounding set.
    pub cap_last_cap: u32,
}

impl Host {
    pub fn probe() -> Host {
        let euid = nix::unistd::geteuid().as_raw();
        let privileged = euid == 0
            && caps::has_cap(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_ADMIN,
            )
            .unwrap_or(false)
            && caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETUID)
                .unwrap_or(false);
        Host {
            euid,
            egid: nix::unistd::getegid().as_raw(),
            privileged,
            landlock_abi: landlock_abi(),
            seccomp: seccomp_available(),
            seccomp_user_notif: super::seccomp::notify::supported().is_ok(),
            cap_last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(40),
        }
    }
}

/// `fs.suid_dumpable`: what a process's memory becomes on a change of credentials, the
/// sandbox's init (which shares upm's memory) included. Read at every call, not once per
/// session: an operator may change it while a batch runs. `None` when unreadable.
pub fn suid_dumpable() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/fs/suid_dumpable")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: a query with a null attribute pointer and size 0; the kernel reads nothing.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 0 {
        0
    } else {
        abi as i32
    }
}

fn seccomp_available() -> bool {
    // SAFETY: PR_GET_SECCOMP only reads the calling thread's seccomp mode.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    // 0: not filtered yet, 2: already filtered (filters stack). -1/EINVAL: no seccomp.
    mode == 0 || mode == 2
}

/// `upm doctor`: which layers this kernel and this invoker can enforce.
pub fn doctor() -> serde_json::Value {
    use serde_json::json;
    let host = Host::probe();
    let userns = try_unshare(libc::CLONE_NEWUSER);
    let netns = try_unshare(
        libc::CLONE_NEWNET
            | if host.privileged {
                0
            } else {
                libc::CLONE_NEWUSER
            },
    );
    let pidns = try_unshare(
        libc::CLONE_NEWPID
            | if host.privileged {
                0
            } else {
                libc::CLONE_NEWUSER
            },
    );
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cgroup_mode = if cgroup.lines().all(|l| l.starts_with("0::")) && !cgroup.is_empty() {
        "v2"
    } else if cgroup.lines().any(|l| l.starts_with("0::")) {
        "hybrid"
    } else {
        "v1"
    };
    let row = |layer: &str, available: bool, detail: String| json!({ "layer": layer, "available": available, "detail": detail });
    let switch = super::credentials::Mode::Switch;
    let credentials = if host.privileged {
        match super::credentials::switch_refused(switch, suid_dumpable) {
            None => row(
                "credentials",
                true,
                "root: plugins run as the configured uid/gid".into(),
            ),
            Some(why) => row(
                "credentials",
                false,
                format!("root, but every call that switches uid is refused: {why}"),
            ),
        }
    } else if userns {
        row(
            "credentials",
            true,
            format!(
                "unprivileged: uid {} kept, inside a user namespace",
                host.euid
            ),
        )
    } else {
        row(
            "credentials",
            true,
            format!("unprivileged: uid {} kept, no user namespace", host.euid),
        )
    };
    // issue 23: whether a call's result can say what the sandbox refused.
    let seccomp_denials = match super::seccomp::notify::supported() {
        Ok(()) => row(
            "seccomp_denials",
            true,
            "observable: upm answers the profile's errnos as the filter's user-notification supervisor".into(),
        ),
        Err(why) => row("seccomp_denials", false, format!("not observable: {why}")),
    };
    let landlock_denials = match super::landlock_audit::observable(host.euid, host.landlock_abi) {
        Ok(how) => row("landlock_denials", true, format!("observable: {how}")),
        Err(why) => row("landlock_denials", false, format!("not observable: {why}")),
    };
    let mut host_json = json!(host);
    host_json["suid_dumpable"] = json!(suid_dumpable());
    json!({
        "host": host_json,
        "layers": [
            credentials,
            row("landlock", host.landlock_abi >= 6, format!("ABI {} (upm handles ABI 6 rights)", host.landlock_abi)),
            row("seccomp", host.seccomp, "seccomp filter mode".into()),
            row("user_namespace", userns, String::new()),
            row("network_namespace", netns, String::new()),
            row("pid_namespace", pidns, "kills the whole process tree".into()),
            row("cgroups", false, format!("{cgroup_mode}; upm relies on rlimits and a PID namespace, not cgroups")),
            seccomp_denials,
            landlock_denials,
        ],
    })
}

/// Tries to create namespaces in a throwaway child process.
fn try_unshare(flags: libc::c_int) -> bool {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/bin/true");
    // SAFETY: the closure only calls unshare(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
