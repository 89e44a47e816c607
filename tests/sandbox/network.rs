//! No network: no socket reaches a host listener, TCP or unix.

use super::*;

both!(
    no_network_sockets,
    tcp_to_a_host_listener_never_connects,
    unix_sockets_of_the_host_are_unreachable,
);

fn no_network_sockets(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let run = fx.call("probe", "sockets", json!({}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_ok(&r["unix_socketpair"], "unix_socketpair");
    // seccomp answers EAFNOSUPPORT to socket() of any family, AF_UNIX included.
    for denied in [
        "unix_stream",
        "unix_dgram",
        "inet_stream",
        "inet_dgram",
        "inet_raw_icmp",
        "inet6_stream",
        "inet6_dgram",
        "packet_raw",
        "netlink_route",
    ] {
        assert_eq!(errno(&r[denied]), EAFNOSUPPORT, "{denied}: {r}");
    }
}

fn tcp_to_a_host_listener_never_connects(who: Who) {
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let udp_port = udp.local_addr().unwrap().port();
    // Control: the listener is reachable from outside the sandbox.
    drop(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    let (_conn, _) = listener.accept().expect("the control connection");

    let run = fx.call("probe", "tcp", json!({"port": port}));
    assert_eq!(run.code, 0, "{}", ctx(&run));
    assert_eq!(
        errno(&run.result()["socket"]),
        EAFNOSUPPORT,
        "{}",
        ctx(&run)
    );
    assert_eq!(
        errno(&run.result()["udp_socket"]),
        EAFNOSUPPORT,
        "{}",
        ctx(&run)
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host listener got a connection from the sandbox: {other:?}"),
    }
    let run = fx.call("probe", "tcp", json!({"port": udp_port}));
    assert_eq!(
        errno(&run.result()["udp_socket"]),
        EAFNOSUPPORT,
        "{}",
        ctx(&run)
    );
    let mut buf = [0u8; 16];
    match udp.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the host UDP socket got a datagram from the sandbox: {other:?}"),
    }
}

fn unix_sockets_of_the_host_are_unreachable(who: Who) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    let Some(fx) = Fx::new(who, |_, _| {}) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let name = format!("upm-sandbox-test-{}", fx.nonce);
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let abstract_listener = UnixListener::bind_addr(&addr).unwrap();
    // A pathname socket anyone may connect to, like a system bus or a logger: Landlock
    // does not check connect() on one, and the network namespace does not scope it.
    let path = fx.dir.join("daemon.sock");
    let path_listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&fx.dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for l in [&abstract_listener, &path_listener] {
        l.set_nonblocking(true).unwrap();
    }
    // Control: both are reachable from outside, even as the plugin's uid.
    drop(UnixStream::connect_addr(&addr).unwrap());
    let _ = abstract_listener.accept().expect("the control connection");
    let (uid, gid) = who.plugin_ids();
    let control = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])",
        ])
        .arg(&path)
        .uid(uid)
        .gid(gid)
        .status()
        .unwrap();
    assert!(control.success(), "the pathname control");
    let _ = path_listener
        .accept()
        .expect("the pathname control connection");

    // And a datagram socket, like /dev/log: a datagram pair could sendto() it.
    let dgram_path = fx.dir.join("daemon.dgram");
    let dgram = std::os::unix::net::UnixDatagram::bind(&dgram_path).unwrap();
    std::fs::set_permissions(&dgram_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    dgram.set_nonblocking(true).unwrap();

    let args = json!({"name": name, "path": path, "dgram_path": dgram_path});
    let run = fx.call("probe", "unix", args);
    assert_eq!(run.code, 0, "{}", ctx(&run));
    let r = run.result();
    assert_eq!(errno(&r["connect_abstract"]), EAFNOSUPPORT, "{r}");
    assert_eq!(errno(&r["connect_path"]), EAFNOSUPPORT, "{r}");
    assert_eq!(
        errno(&r["dgram_pair_sendto"]),
        libc::ESOCKTNOSUPPORT as i64,
        "{r}"
    );
    assert_ok(&r["stream_pair"], "a connected stream pair");
    let mut buf = [0u8; 64];
    assert!(
        dgram.recv(&mut buf).is_err(),
        "the host's datagram socket got a message"
    );
    for l in [&abstract_listener, &path_listener] {
        match l.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a host socket got a connection: {other:?}"),
        }
    }
}
