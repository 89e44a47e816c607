//! upm as the filter's user-notification supervisor: the calls the profile (and upm's
//! own rules) answer with an errno reach upm, which answers each with that same errno
//! and records it as a denial. Every other answer of the filter stays in the kernel.
//!
//! The plugin installs [`super::CompiledFilter::apply_notifying`]'s program, whose
//! ERRNO returns are USER_NOTIF (`bpf::notifying`). A notification does not carry the
//! filter's return data, so the errno is found by running the *original* program on
//! the notification's `seccomp_data` (`CompiledFilter::errno_for`): the same program
//! the kernel would have run, on the same data, so the same errno by construction.
//!
//! What a supervisor must not do, and does not:
//! - read the plugin's memory or `/proc/<pid>`: everything recorded comes from the
//!   `seccomp_data` the kernel copied (the number and the six arguments), so there is
//!   nothing to re-check with `SECCOMP_IOCTL_NOTIF_ID_VALID` (a pid or a pointer could
//!   be stale by the time it is read, an argument value cannot);
//! - answer with CONTINUE: a denied call never runs, whatever happens here;
//! - wait on the plugin: RECV is called only when the listener polls readable (so a
//!   notification is pending), SEND does not block, and a notification whose plugin
//!   thread died or was interrupted meanwhile fails with ENOENT and is not counted
//!   (an interrupted call is restarted and notified again; with
//!   `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` only a fatal signal interrupts it once
//!   received).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::rules::{ALWAYS_ENOSYS, MODE_SETTERS, SYSV_IPC};
use super::syscalls::NATIVE;
use super::CompiledFilter;
use crate::denials::{Allow, Denial, Layer};

/// The kernel's `struct seccomp_notif` fits in this many bytes; [`supported`] checks
/// the running kernel's sizes against it.
const NOTIF_BUF: usize = 256;

/// Whether this kernel can notify upm of denied calls: the USER_NOTIF action exists
/// and its structures have the sizes upm knows. `Err` says why not.
pub fn supported() -> Result<(), String> {
    let action = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 from a valid pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if r != 0 {
        return Err(format!(
            "this kernel has no seccomp user notification ({})",
            std::io::Error::last_os_error()
        ));
    }
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: SECCOMP_GET_NOTIF_SIZES fills the struct it is given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    let fits = usize::from(sizes.seccomp_notif) <= NOTIF_BUF
        && usize::from(sizes.seccomp_notif_resp) == std::mem::size_of::<libc::seccomp_notif_resp>()
        && sizes.seccomp_data == 64;
    if r != 0 || !fits {
        return Err(format!(
            "this kernel's seccomp notification structures are not the ones upm knows \
             ({} / {} / {} bytes)",
            sizes.seccomp_notif, sizes.seccomp_notif_resp, sizes.seccomp_data
        ));
    }
    Ok(())
}

/// What makes a denial's "what" and says which setting would allow it.
#[derive(Debug, Clone)]
pub struct Context {
    /// The profile's name.
    pub profile: String,
    /// upm's no-network socket rules are in the filter.
    pub deny_sockets: bool,
}

/// The listener of one call's filter, and what answers it.
pub struct Supervisor {
    listener: OwnedFd,
    filter: Arc<CompiledFilter>,
    context: Context,
}

/// What one [`Supervisor::answer`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered {
    /// Answered; the denial to record.
    Denied(Box<DenialOf>),
    /// Nothing to count: the notification went away (its thread died or was
    /// interrupted), or a transient error.
    Nothing,
    /// The listener is unusable.
    Broken(i32),
}

/// A denial and the notification's raw facts, for tests.
#[derive(Debug, PartialEq, Eq)]
pub struct DenialOf {
    pub nr: i64,
    pub errno: u32,
    pub what: String,
}

impl Supervisor {
    pub fn new(listener: OwnedFd, filter: Arc<CompiledFilter>, context: Context) -> Supervisor {
        // Linux 6.6: the plugin's thread and the supervisor hand over to each other on
        // one CPU instead of waking one another across CPUs, which is most of a round
        // trip's cost. Best effort: without it, answers are only slower.
        // SAFETY: SET_FLAGS reads a u64 flags value passed by value.
        unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                SYNC_WAKE_UP,
            )
        };
        Supervisor {
            listener,
            filter,
            context,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Receives one pending notification and answers it with the filter's errno. Call
    /// only when the listener polls readable: RECV waits for a notification otherwise.
    pub fn answer(&self) -> Answered {
        // u64s: 8-byte alignment for the struct's u64 fields.
        let mut buf = [0u64; NOTIF_BUF / 8];
        // SAFETY: a zeroed buffer at least as large as the kernel's seccomp_notif
        // (`supported` checked), which RECV fills.
        let r = unsafe {
            libc::ioctl(
                self.fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV,
                buf.as_mut_ptr().cast::<libc::c_void>(),
            )
        };
        if r != 0 {
            return match crate::sandbox::errno() {
                libc::ENOENT | libc::EINTR | libc::EAGAIN => Answered::Nothing,
                e => Answered::Broken(e),
            };
        }
        // struct seccomp_notif { u64 id; u32 pid; u32 flags; struct seccomp_data data; }
        let id = buf[0];
        let mut data = [0u8; 64];
        for (i, word) in buf[2..10].iter().enumerate() {
            data[i * 8..i * 8 + 8].copy_from_slice(&word.to_ne_bytes());
        }
        // The same program the kernel ran, on the same data. It answers with an errno
        // wherever the notifying one notifies; should it not, refuse all the same.
        let errno = self
            .filter
            .errno_for(&data)
            .unwrap_or(libc::EPERM as u32)
            .min(MAX_ERRNO);
        let resp = libc::seccomp_notif_resp {
            id,
            val: 0,
            error: -(errno as i32),
            flags: 0,
        };
        // SAFETY: a valid response struct; the kernel only reads it.
        let r = unsafe {
            libc::ioctl(
                self.fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &resp as *const libc::seccomp_notif_resp,
            )
        };
        if r != 0 {
            return match crate::sandbox::errno() {
                libc::ENOENT | libc::EINTR => Answered::Nothing,
                e => Answered::Broken(e),
            };
        }
        let nr = i64::from(i32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
        let arg = |i: usize| {
            let o = 16 + 8 * i;
            u64::from_ne_bytes(data[o..o + 8].try_into().unwrap_or([0; 8]))
        };
        let args = [arg(0), arg(1), arg(2), arg(3), arg(4), arg(5)];
        Answered::Denied(Box::new(DenialOf {
            nr,
            errno,
            what: describe(nr, &args),
        }))
    }

    /// The denial as the result lists it. Its subject is the errno's text, which is
    /// what a plugin's own error message quotes of a refused call (`[Errno 97] Address
    /// family not supported by protocol`).
    pub fn denial(&self, d: &DenialOf) -> Denial {
        let denial = Denial::new(Layer::Seccomp, d.what.clone(), self.allow(d))
            .with_errno(errno_name(d.errno));
        match i32::try_from(d.errno).map(nix::errno::Errno::from_raw) {
            Ok(nix::errno::Errno::UnknownErrno) | Err(_) => denial,
            Ok(e) => denial.with_subject(e.desc()),
        }
    }

    /// Which setting would allow the call: upm's own rules are known by number (they
    /// win over the profile for their calls), the rest is the profile's.
    fn allow(&self, d: &DenialOf) -> Allow {
        let own = |rule: &str| -> &'static str {
            super::rules::OWN_RULE_NAMES
                .iter()
                .find(|(name, _)| *name == rule)
                .map_or("upm's own rule", |(_, what)| what)
        };
        if self.context.deny_sockets && d.nr == libc::SYS_socket {
            return Allow::Setting("network");
        }
        if self.context.deny_sockets
            && d.nr == libc::SYS_socketpair
            && d.errno == libc::ESOCKTNOSUPPORT as u32
        {
            return Allow::Never(own("no_datagram_socketpair"));
        }
        if SYSV_IPC.contains(&d.nr) || ALWAYS_ENOSYS.contains(&d.nr) {
            return Allow::Never(own("enosys"));
        }
        if d.what.ends_with(SETUID_MODE) {
            return Allow::Never(own("no_setuid_setgid_modes"));
        }
        Allow::Profile(self.context.profile.clone())
    }
}

/// A `struct seccomp_data` for a native call (instruction pointer 0), as the filter sees it.
pub fn seccomp_data(nr: i64, args: [u64; 6]) -> [u8; 64] {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&(nr as i32).to_ne_bytes());
    data[4..8].copy_from_slice(&super::bpf::NATIVE_AUDIT_ARCH.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    data
}

/// The first of `calls` (number, arguments) that the filter answers with an errno, by
/// name. The plugin's process makes these calls after it installs the filter and before
/// its exec, while the init that would hand the listener over to upm waits for that
/// exec: a notification then would wait for an answer that never comes.
pub fn refused_before_exec(filter: &CompiledFilter, calls: &[(i64, [u64; 6])]) -> Option<String> {
    calls
        .iter()
        .find(|(nr, args)| filter.errno_for(&seccomp_data(*nr, *args)).is_some())
        .map(|(nr, _)| syscall_name(*nr))
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (linux/seccomp.h).
const SYNC_WAKE_UP: libc::c_ulong = 1;

/// The kernel clamps a filter's errno to MAX_ERRNO; so does upm's answer.
const MAX_ERRNO: u32 = 4095;

/// Suffix of a mode setter's "what" when its mode has the setuid or setgid bit.
const SETUID_MODE: &str = "(a setuid/setgid mode)";

/// The syscall by name; `socket` and `socketpair` with their family and type, a call
/// that sets a mode with a setuid or setgid bit says so.
pub fn describe(nr: i64, args: &[u64; 6]) -> String {
    let name = syscall_name(nr);
    if nr == libc::SYS_socket || nr == libc::SYS_socketpair {
        return format!("{name}({}, {})", family_name(args[0]), type_name(args[1]));
    }
    if let Some((_, mode_arg, flags_arg)) = MODE_SETTERS.iter().find(|(n, _, _)| *n == nr) {
        let mode = args[usize::from(*mode_arg)];
        let creating = flags_arg.is_none_or(|f| {
            let flags = args[usize::from(f)];
            flags & libc::O_CREAT as u64 != 0
                || flags & (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64 != 0
        });
        if creating && mode & u64::from(libc::S_ISUID | libc::S_ISGID) != 0 {
            return format!("{name} {SETUID_MODE}");
        }
    }
    name
}

fn syscall_name(nr: i64) -> String {
    NATIVE
        .iter()
        .find(|(_, n)| *n == nr)
        .map_or_else(|| format!("syscall {nr}"), |(name, _)| (*name).to_owned())
}

fn family_name(family: u64) -> String {
    let name = match i32::try_from(family).unwrap_or(-1) {
        libc::AF_UNIX => "AF_UNIX",
        libc::AF_INET => "AF_INET",
        libc::AF_INET6 => "AF_INET6",
        libc::AF_NETLINK => "AF_NETLINK",
        libc::AF_PACKET => "AF_PACKET",
        libc::AF_VSOCK => "AF_VSOCK",
        libc::AF_ALG => "AF_ALG",
        libc::AF_BLUETOOTH => "AF_BLUETOOTH",
        libc::AF_CAN => "AF_CAN",
        libc::AF_KEY => "AF_KEY",
        libc::AF_XDP => "AF_XDP",
        libc::AF_TIPC => "AF_TIPC",
        _ => return format!("family {family}"),
    };
    name.to_owned()
}

fn type_name(ty: u64) -> String {
    // The low bits are the type; SOCK_NONBLOCK and SOCK_CLOEXEC are flags.
    let base = ty & 0xf;
    let name = match i32::try_from(base).unwrap_or(-1) {
        libc::SOCK_STREAM => "SOCK_STREAM",
        libc::SOCK_DGRAM => "SOCK_DGRAM",
        libc::SOCK_RAW => "SOCK_RAW",
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET",
        libc::SOCK_RDM => "SOCK_RDM",
        _ => return format!("type {base}"),
    };
    name.to_owned()
}

/// `EPERM`, or the number when it has no name here.
pub fn errno_name(errno: u32) -> String {
    match i32::try_from(errno) {
        Ok(0) => "0 (success, the call not made)".to_owned(),
        Ok(e) => match nix::errno::Errno::from_raw(e) {
            nix::errno::Errno::UnknownErrno => format!("errno {e}"),
            known => format!("{known:?}"),
        },
        Err(_) => format!("errno {errno}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_named_with_what_matters_about_them() {
        let none = [0u64; 6];
        assert_eq!(describe(libc::SYS_memfd_create, &none), "memfd_create");
        let tcp = [
            libc::AF_INET as u64,
            (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ];
        assert_eq!(
            describe(libc::SYS_socket, &tcp),
            "socket(AF_INET, SOCK_STREAM)"
        );
        let pair = [libc::AF_UNIX as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0];
        assert_eq!(
            describe(libc::SYS_socketpair, &pair),
            "socketpair(AF_UNIX, SOCK_DGRAM)"
        );
        let odd = [77, 12, 0, 0, 0, 0];
        assert_eq!(
            describe(libc::SYS_socket, &odd),
            "socket(family 77, type 12)"
        );
        assert_eq!(describe(100_000, &none), "syscall 100000");
        #[cfg(target_arch = "x86_64")]
        {
            let chmod = [0, 0o4755, 0, 0, 0, 0];
            assert_eq!(
                describe(libc::SYS_chmod, &chmod),
                "chmod (a setuid/setgid mode)"
            );
            let plain = [0, 0o755, 0, 0, 0, 0];
            assert_eq!(describe(libc::SYS_chmod, &plain), "chmod");
        }
        // openat's mode counts only when it creates.
        let open = [0, 0, libc::O_RDONLY as u64, 0o4755, 0, 0];
        assert_eq!(describe(libc::SYS_openat, &open), "openat");
        let create = [0, 0, libc::O_CREAT as u64, 0o2755, 0, 0];
        assert_eq!(
            describe(libc::SYS_openat, &create),
            "openat (a setuid/setgid mode)"
        );
    }

    #[test]
    fn errnos_are_named() {
        assert_eq!(errno_name(1), "EPERM");
        assert_eq!(errno_name(38), "ENOSYS");
        assert_eq!(errno_name(97), "EAFNOSUPPORT");
        assert_eq!(errno_name(4000), "errno 4000");
    }

    #[test]
    fn this_kernel_supports_user_notification() {
        // The machines upm is developed and tested on do (Linux 6.18); say so loudly
        // rather than pass vacuously where one does not.
        if let Err(why) = supported() {
            panic!("seccomp user notification is not available here: {why}");
        }
    }
}
