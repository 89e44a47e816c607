//! upm's own rules, added to every profile (see the module doc, "upm's own rules"):
//! what they refuse, why, and the names results report them under.

use seccompiler::SeccompCmpOp;

use super::model::{Action, Cond};
use super::resolve::ResolvedRule;
use super::CompileOptions;

/// upm's own rules, on top of any profile (see the module doc), in ranking order.
pub(super) fn own_rules(opts: &CompileOptions) -> Vec<ResolvedRule> {
    let enosys = Action::Errno(libc::ENOSYS as u32);
    let mut rules = Vec::new();
    if opts.deny_sockets && opts.allow_tcp {
        rules.extend(tcp_only_socket_rules());
    } else if opts.deny_sockets {
        rules.push(always(
            libc::SYS_socket,
            Action::Errno(libc::EAFNOSUPPORT as u32),
        ));
        // A stream socketpair's end needs no address; bound to an abstract name it would
        // be a signal between calls that share a network namespace (issue 25: a batch's
        // calls without network share one), whose abstract names are common to them all.
        rules.push(always(libc::SYS_bind, Action::Errno(libc::EPERM as u32)));
    }
    if opts.deny_sockets {
        // A datagram pair can still sendto() or connect() any pathname socket.
        rules.push(ResolvedRule {
            nr: libc::SYS_socketpair,
            action: Action::Errno(libc::ESOCKTNOSUPPORT as u32),
            conds: vec![Cond {
                index: 1,
                op: SeccompCmpOp::MaskedEq(0xf),
                value: libc::SOCK_DGRAM as u64,
            }],
        });
    }
    for nr in SYSV_IPC.into_iter().chain(ALWAYS_ENOSYS) {
        rules.push(always(nr, enosys));
    }
    let bit_set = |index: u8, bit: u64| Cond {
        index,
        op: SeccompCmpOp::MaskedEq(bit),
        value: bit,
    };
    for (nr, mode_arg, flags_arg) in MODE_SETTERS {
        // open(at) reads its mode only when it creates: O_CREAT, or O_TMPFILE's own bit.
        let creating: Vec<Option<Cond>> = match flags_arg {
            Some(f) => vec![
                Some(bit_set(f, libc::O_CREAT as u64)),
                Some(bit_set(f, O_TMPFILE_BIT)),
            ],
            None => vec![None],
        };
        for when in creating {
            for bit in [libc::S_ISUID, libc::S_ISGID] {
                let mut conds: Vec<Cond> = when.iter().cloned().collect();
                conds.push(bit_set(mode_arg, u64::from(bit)));
                rules.push(ResolvedRule {
                    nr,
                    action: Action::Errno(libc::EPERM as u32),
                    conds,
                });
            }
        }
    }
    rules
}

/// `socket()` with an egress allowlist (issue 22): TCP over IPv4/IPv6 only. Each rule
/// refuses one way of asking for something else; arguments are compared on all 64 bits,
/// so stray high bits are refused too.
fn tcp_only_socket_rules() -> Vec<ResolvedRule> {
    let errno = |e: i32| Action::Errno(e as u32);
    let arg = |index: u8, op: SeccompCmpOp, value: u64| Cond { index, op, value };
    // Ranked in this order, so that where several match the last one's errno wins:
    // a wrong family says so before a wrong type, a wrong type before a wrong protocol.
    // SOCK_STREAM over IP could also be SCTP or MPTCP: only protocol 0 or IPPROTO_TCP.
    let mut rules = vec![ResolvedRule {
        nr: libc::SYS_socket,
        action: errno(libc::EPROTONOSUPPORT),
        conds: vec![
            arg(2, SeccompCmpOp::Ne, 0),
            arg(2, SeccompCmpOp::Ne, libc::IPPROTO_TCP as u64),
        ],
    }];
    // The type is the low 4 bits (SOCK_TYPE_MASK; the rest are SOCK_NONBLOCK and
    // SOCK_CLOEXEC, or an EINVAL from the kernel), and SOCK_STREAM is 1: any other type
    // is 0 or has bit 1, 2 or 3 set.
    const _: () = assert!(libc::SOCK_STREAM == 1);
    for (mask, value) in [(0xf, 0), (0x2, 0x2), (0x4, 0x4), (0x8, 0x8)] {
        rules.push(ResolvedRule {
            nr: libc::SYS_socket,
            action: errno(libc::ESOCKTNOSUPPORT),
            conds: vec![arg(1, SeccompCmpOp::MaskedEq(mask), value)],
        });
    }
    rules.push(ResolvedRule {
        nr: libc::SYS_socket,
        action: errno(libc::EAFNOSUPPORT),
        conds: vec![
            arg(0, SeccompCmpOp::Ne, libc::AF_INET as u64),
            arg(0, SeccompCmpOp::Ne, libc::AF_INET6 as u64),
        ],
    });
    rules
}

/// `__O_TMPFILE`: `O_TMPFILE` is this bit with `O_DIRECTORY`.
const O_TMPFILE_BIT: u64 = (libc::O_TMPFILE & !libc::O_DIRECTORY) as u64;

/// fchmodat2 has the same number on every arch (added in Linux 6.6).
const SYS_FCHMODAT2: i64 = 452;

/// Refused whatever the profile says, as if this kernel lacked them (callers fall back):
/// - `io_uring_setup`: io_uring opens files (with any mode) and creates sockets without
///   a syscall seccomp sees;
/// - `memfd_create`: its pages are charged to no rlimit, so a plugin could hold any
///   amount of memory past `memory_bytes` (an address-space limit);
/// - `openat2`: its mode is in a struct seccomp cannot read (see [`MODE_SETTERS`]).
pub const ALWAYS_ENOSYS: [i64; 3] = [
    libc::SYS_io_uring_setup,
    libc::SYS_memfd_create,
    libc::SYS_openat2,
];

/// Calls that set a file's mode: (number, mode argument, flags argument when the mode
/// counts only with O_CREAT or O_TMPFILE). A mode with the setuid or setgid bit answers
/// EPERM. Otherwise a plugin could leave a setuid copy of a shell in its directory, and
/// any local user could run it as the plugin's uid (and reach other calls' directories,
/// or signal their plugins). (`mkdir` drops both bits itself.)
#[cfg(target_arch = "x86_64")]
pub const MODE_SETTERS: [(i64, u8, Option<u8>); 9] = [
    (libc::SYS_chmod, 1, None),
    (libc::SYS_fchmod, 1, None),
    (libc::SYS_fchmodat, 2, None),
    (SYS_FCHMODAT2, 2, None),
    (libc::SYS_creat, 1, None),
    (libc::SYS_open, 2, Some(1)),
    (libc::SYS_openat, 3, Some(2)),
    (libc::SYS_mknod, 1, None),
    (libc::SYS_mknodat, 2, None),
];
#[cfg(target_arch = "aarch64")]
pub const MODE_SETTERS: [(i64, u8, Option<u8>); 5] = [
    (libc::SYS_fchmod, 1, None),
    (libc::SYS_fchmodat, 2, None),
    (SYS_FCHMODAT2, 2, None),
    (libc::SYS_openat, 3, Some(2)),
    (libc::SYS_mknodat, 2, None),
];

/// SysV shared memory, message queues and semaphores. Refused whatever the profile
/// says: their memory is the IPC namespace's, which no rlimit counts (a plugin could
/// attach, fill and detach segment after segment past `memory_bytes`); and where the
/// IPC namespace was given up (`allow_degraded`), the host's objects would be in reach.
pub const SYSV_IPC: [i64; 12] = [
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_msgget,
    libc::SYS_msgsnd,
    libc::SYS_msgrcv,
    libc::SYS_msgctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semctl,
    libc::SYS_semtimedop,
];

/// upm's own rule for every call of `nr`, whatever its arguments.
fn always(nr: i64, action: Action) -> ResolvedRule {
    ResolvedRule {
        nr,
        action,
        conds: Vec::new(),
    }
}

/// upm's own rules by the name results report them under, and their syscalls.
pub(super) const OWN_RULE_NAMES: [(&str, &str); 4] = [
    (
        "no_sockets",
        "socket() of every family answers EAFNOSUPPORT",
    ),
    (
        "no_datagram_socketpair",
        "a datagram socketpair() answers ESOCKTNOSUPPORT",
    ),
    (
        "enosys",
        "SysV IPC, memfd_create, io_uring_setup and openat2 answer ENOSYS",
    ),
    (
        "no_setuid_setgid_modes",
        "a mode with the setuid or setgid bit answers EPERM",
    ),
];
