//! No network: no socket reaches a host listener, TCP or unix.

use super::*;

both!(
    no_network_sockets,
    tcp_to_a_host_listener_never_connects,
    unix_sockets_of_the_host_are_unreachable,
    a_batch_shares_one_empty_network_namespace,
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

/// A batch's calls without network join one empty network namespace of the upm
/// process (a root upm's: an unprivileged one cannot make one outside a user namespace,
/// so its calls keep their own), where sockets stay refused; a one-shot call and a call
/// with network have one of their own (or the host's). The report says which.
fn a_batch_shares_one_empty_network_namespace(who: Who) {
    let Some(fx) = Fx::new(who, |cfg, _| {
        let mut net = cfg["plugins"]["probe"].clone();
        net["sandbox"] = json!({"network": true});
        cfg["plugins"]["probe_net"] = net;
    }) else {
        return;
    };
    assert_fully_sandboxed(&fx, "probe");
    let host = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    let line = |plugin: &str| {
        let mut l = request(plugin, "netns", json!({"hold": 0.3}));
        l.retain(|b| *b != b'\n');
        l.push(b'\n');
        l
    };
    let mut input = Vec::new();
    for p in ["probe", "probe", "probe_net"] {
        input.extend(line(p));
    }
    let mut cmd = fx.command(&common::upm_bin());
    cmd.args(["run", "--jsonl", "--parallel", "2", "--config"])
        .arg(&fx.config);
    let batch = run_command(cmd, &input);
    assert_eq!(batch.code, 0, "{}", ctx(&batch));
    let results: Vec<Value> = batch
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 3, "{}", ctx(&batch));
    let by_line = |n: u64| {
        results
            .iter()
            .find(|r| r["data"]["line"] == n || r["line"] == n)
            .unwrap_or_else(|| panic!("no result for line {n}: {}", batch.stdout))
    };
    let inode = |r: &Value| r["data"]["result"]["inode"].as_u64().unwrap();
    let kind = |r: &Value| r["data"]["sandbox"]["layers"]["network"]["detail"]["namespace"].clone();
    let (a, b, net) = (by_line(1), by_line(2), by_line(3));
    for r in [a, b] {
        assert_eq!(r["success"], true, "{r}");
        // Sockets stay refused in it (a socketpair is the only kind allowed).
        assert_eq!(
            r["data"]["result"]["inet_stream"]["errno"], EAFNOSUPPORT,
            "{r}"
        );
        assert_eq!(
            r["data"]["result"]["unix_stream"]["errno"], EAFNOSUPPORT,
            "{r}"
        );
        // Nor can a socketpair's end take an abstract name, which the namespace's calls
        // would all see (a bit of signal between them: EADDRINUSE or not).
        assert_eq!(r["data"]["result"]["bind_abstract"]["errno"], EPERM, "{r}");
        assert_ne!(inode(r), host, "{r}");
    }
    match who {
        Who::Root => {
            assert_eq!(inode(a), inode(b), "two calls of one batch: {a}\n{b}");
            for r in [a, b] {
                assert_eq!(kind(r), json!({"kind": "shared", "inode": inode(r)}), "{r}");
                let ns = &r["data"]["sandbox"]["layers"]["namespaces"]["detail"];
                assert_eq!(ns["joined"], json!(["net"]), "{r}");
                assert!(
                    !ns["created"].as_array().unwrap().contains(&json!("net")),
                    "{r}"
                );
            }
        }
        Who::User => {
            // They overlapped (each held 0.3 s at --parallel 2): two live namespaces.
            assert_ne!(inode(a), inode(b), "{a}\n{b}");
            for r in [a, b] {
                assert_eq!(kind(r), json!({"kind": "own"}), "{r}");
            }
        }
    }
    // network: true lifts the network layer: the host's namespace, not the shared one.
    assert_eq!(net["success"], true, "{net}");
    assert_eq!(inode(net), host, "{net}");
    assert_eq!(
        net["data"]["sandbox"]["layers"]["network"]["state"],
        "lifted"
    );

    // A one-shot call: a namespace of its own.
    let one = fx.call("probe", "netns", json!({}));
    assert_eq!(one.code, 0, "{}", ctx(&one));
    assert_eq!(kind(&one.json), json!({"kind": "own"}), "{}", ctx(&one));
    // (Not compared with the batch's: that namespace is gone, and its number may be reused.)
    assert_ne!(inode(&one.json), host, "{}", ctx(&one));
}
