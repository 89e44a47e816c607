//! The network layer: what a call may reach, and what the result reports about it.
//!
//! - `"network": false` (the default): an empty network namespace of the call's own,
//!   no `socket()` at all (seccomp) and no TCP bind/connect (Landlock).
//! - `"network": true`: the host's network, every network layer lifted.
//! - `"network": {"allow": [...]}` (issue 22): the call's namespace with only `lo` up,
//!   TCP over IPv4/IPv6 the only sockets (seccomp), TCP connect to [`egress::PORT`]
//!   the only network right (Landlock), and at that port a listening socket that the
//!   call's init creates inside the namespace before the plugin starts and hands to
//!   upm ([`Plan::listen_in_init`]): upm's egress proxy ([`crate::egress`]) accepts on
//!   it from outside. A socket stays in the namespace it was made in.
//!
//! An allowlist is never degraded: without the namespace, seccomp's socket rule and
//! Landlock's port rule, the plugin would reach more than its list, so the call stops.

use super::policy::{Layer, Network};
use super::{sys, LayerReport, LayerState};
use crate::egress;
use ::syscalls::{syscall, Sysno};
use serde_json::json;
use std::os::fd::RawFd;

/// The egress listener the call's init sets up (only with an allowlist).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub port: u16,
}

/// Connections the listener queues before upm accepts them.
const BACKLOG: i32 = 128;

impl Plan {
    pub fn for_policy(network: &Network) -> Option<Plan> {
        network.allowlist().map(|_| Plan { port: egress::PORT })
    }

    /// In the call's init, in its new network namespace and with the capabilities it
    /// has there, before the plugin exists: brings `lo` up, listens at
    /// 127.0.0.1:`port`, and sends the listening socket to upm over `channel`
    /// (SCM_RIGHTS). Raw, async-signal-safe system calls only (see `spawn::child`).
    pub fn listen_in_init(&self, channel: RawFd) -> Result<(), i32> {
        // SAFETY: socket() with integer arguments returns a new descriptor or an error.
        let fd = sys(unsafe {
            syscall!(
                Sysno::socket,
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0
            )
        })? as RawFd;
        let done = self.listen_on(fd).and_then(|()| send_fd(channel, fd));
        // SAFETY: our own descriptor; upm holds its own copy once sent.
        let _ = unsafe { syscall!(Sysno::close, fd) };
        done
    }

    fn listen_on(&self, fd: RawFd) -> Result<(), i32> {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        // SAFETY: SIOCGIFFLAGS fills the ifreq on our stack.
        sys(unsafe {
            syscall!(
                Sysno::ioctl,
                fd,
                libc::SIOCGIFFLAGS,
                &mut ifr as *mut libc::ifreq
            )
        })?;
        // SAFETY: the flags member of the union, which SIOCGIFFLAGS just set.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads the ifreq on our stack.
        sys(unsafe {
            syscall!(
                Sysno::ioctl,
                fd,
                libc::SIOCSIFFLAGS,
                &ifr as *const libc::ifreq
            )
        })?;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: self.port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid sockaddr_in on our stack and its size.
        sys(unsafe {
            syscall!(
                Sysno::bind,
                fd,
                &addr as *const libc::sockaddr_in,
                std::mem::size_of::<libc::sockaddr_in>()
            )
        })?;
        // SAFETY: listen() with integer arguments.
        sys(unsafe { syscall!(Sysno::listen, fd, BACKLOG) })?;
        Ok(())
    }
}

/// One control message carrying one descriptor: `CMSG_SPACE(sizeof(int))` bytes, with
/// the header's alignment.
#[repr(C)]
struct FdMessage {
    header: libc::cmsghdr,
    fd: libc::c_int,
}

/// Sends `fd` over the Unix socket `channel`, with one byte of data.
fn send_fd(channel: RawFd, fd: RawFd) -> Result<(), i32> {
    // SAFETY: plain old data; all-zero is a valid value of both.
    let mut control: FdMessage = unsafe { std::mem::zeroed() };
    control.header.cmsg_len =
        std::mem::offset_of!(FdMessage, fd) + std::mem::size_of::<libc::c_int>();
    control.header.cmsg_level = libc::SOL_SOCKET;
    control.header.cmsg_type = libc::SCM_RIGHTS;
    control.fd = fd;
    let mut byte = [b'L'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut control as *mut FdMessage).cast();
    msg.msg_controllen = std::mem::size_of::<FdMessage>();
    // SAFETY: every pointer in msg points into this frame and outlives the call.
    sys(unsafe {
        syscall!(
            Sysno::sendmsg,
            channel,
            &msg as *const libc::msghdr,
            libc::MSG_NOSIGNAL
        )
    })
    .map(|_| ())
}

/// The network layer's report.
pub fn report(network: &Network, landlock: bool, seccomp: bool) -> LayerReport {
    let state = if landlock && seccomp {
        LayerState::Enforced
    } else {
        LayerState::Degraded
    };
    match network {
        Network::Host => LayerReport {
            layer: Layer::Network,
            state: LayerState::Lifted,
            detail: json!({ "mode": "host", "reason": "the config sets \"network\": true" }),
        },
        Network::None => LayerReport {
            layer: Layer::Network,
            state,
            detail: json!({
                "mode": "none",
                "network_namespace": true,
                "seccomp_sockets_denied": seccomp,
                "landlock_tcp_denied": landlock,
                "landlock_abstract_unix_scoped": landlock,
            }),
        },
        Network::Allow(settings) => LayerReport {
            layer: Layer::Network,
            state,
            detail: json!({
                "mode": "allowlist",
                "allow": settings.allow.entries().iter().map(|e| e.text()).collect::<Vec<_>>(),
                "proxy": format!("127.0.0.1:{}", egress::PORT),
                "network_namespace": "the call's own, only lo",
                "seccomp_sockets": if seccomp { "TCP over IPv4/IPv6 only" } else { "not enforced" },
                "landlock_tcp": if landlock {
                    format!("connect to port {} only, no bind", egress::PORT)
                } else {
                    "not enforced".into()
                },
                "landlock_abstract_unix_scoped": landlock,
            }),
        },
    }
}
