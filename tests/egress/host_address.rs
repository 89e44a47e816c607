//! A listed name may not lead to this host's own addresses, nor to a special-purpose
//! block, through the binary. upm runs in a network namespace of its own (made for the
//! test, as root: it affects nothing else) in which an address that classifies as public,
//! 44.0.0.7, is on a dummy interface, 198.51.100.0/24 (documentation) is routed to this
//! host itself but on no interface, and the test's HTTP server listens on 0.0.0.0; a
//! private mount namespace gives upm a hosts file that maps names to those addresses.
//! That is the red team's finding (an allowlisted name answering eth0's 192.0.2.2 reached
//! a service bound to 0.0.0.0), on any machine.

use super::*;
use std::path::Path;

/// On an interface of the test's network namespace, and public by its class.
const OWN: &str = "44.0.0.7";
/// Routed to the namespace itself (`ip route add local`), on no interface.
const DOCUMENTATION: &str = "198.51.100.7";
/// Public by its class, on no interface, and routed to the namespace itself: what cloud
/// agents do for a load balancer's addresses.
const LOCAL_ROUTE: &str = "44.1.2.3";

fn ip(args: &[&str]) -> std::process::Output {
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("this test needs iproute2's ip (apt-get install iproute2)");
    Command::new(ip).args(args).output().unwrap()
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread of its own in a new network namespace (the test's other threads,
/// and every other process, keep theirs; what `f` spawns inherits it), where `lo` is up,
/// [`OWN`] is on a dummy interface (on a veth, or `lo`, where this kernel has no dummy
/// interfaces)
/// and [`DOCUMENTATION`]'s /24 is a local route.
fn in_a_network_of_its_own<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let run = s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET)");
            ip_ok(&["link", "set", "lo", "up"]);
            let own = format!("{OWN}/32");
            // A kernel without CONFIG_DUMMY (this one) still has veth pairs, most likely.
            let dummy = ip(&["link", "add", "d0", "type", "dummy"]).status.success();
            let on = if dummy {
                "d0"
            } else if ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
                .status
                .success()
            {
                ip_ok(&["link", "set", "d1", "up"]);
                "d0"
            } else {
                "lo"
            };
            if !dummy {
                eprintln!(
                    "no dummy interfaces here: {OWN} goes on {}",
                    if on == "lo" { "lo" } else { "a veth" }
                );
            }
            ip_ok(&["addr", "add", &own, "dev", on]);
            ip_ok(&["link", "set", on, "up"]);
            ip_ok(&["route", "add", "local", "198.51.100.0/24", "dev", "lo"]);
            ip_ok(&["route", "add", "local", "44.1.0.0/16", "dev", "lo"]);
            f()
        });
        match run.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[test]
fn a_listed_name_leading_to_this_hosts_own_or_a_special_address_is_refused() {
    if !is_root() {
        eprintln!(
            "SKIPPED: this test makes a network namespace and runs upm's sandbox, which need root; run it as root"
        );
        return;
    }
    in_a_network_of_its_own(|| {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let server = Server::on(listener, files(&[("/", b"the host's own service\n")]));
        let port = server.port;
        let names = [
            format!("own.upm-test:{port}"),
            format!("doc.upm-test:{port}"),
            format!("route.upm-test:{port}"),
        ];
        let urls = json!([
            format!("http://own.upm-test:{port}/"),
            format!("http://doc.upm-test:{port}/"),
            format!("http://route.upm-test:{port}/")
        ]);
        let call = |fx: &Fx| {
            let hosts = fx.dir.write(
                "hosts",
                &format!(
                    "127.0.0.1 localhost\n{OWN} own.upm-test\n{DOCUMENTATION} doc.upm-test\n\
                     {LOCAL_ROUTE} route.upm-test\n"
                ),
                false,
            );
            let mut cmd = fx.command();
            common::bind_over(&mut cmd, &hosts, "/etc/hosts");
            let run = run_command(cmd, &request("fetch", "get", json!({ "urls": urls })));
            assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
            (run.result().clone(), run.json["data"]["egress"].clone())
        };

        // The names alone: both refused, and the server sees nothing.
        let Some(fx) = fixture(allow(&names)) else {
            return;
        };
        let (r, egress) = call(&fx);
        for (i, (address, kind)) in [
            (OWN, "this host's own address"),
            (DOCUMENTATION, "documentation (198.51.100.0/24)"),
            (LOCAL_ROUTE, "this host's own address"),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(r[i]["status"], 403, "{address}: {r}");
            let why = r[i]["error"].as_str().unwrap_or_default();
            assert!(why.contains(&format!("{address} ({kind})")), "{why}");
        }
        assert_eq!(egress["refused"], 3, "{egress}");
        assert_eq!(server.accepted(), 0, "the host's service was reached");
        for c in fx.connections() {
            assert_eq!(c["verdict"], "refused", "{c}");
            assert!(c["address"].is_null(), "nothing was connected to: {c}");
        }
        let reasons: Vec<String> = fx
            .connections()
            .iter()
            .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(
            reasons[0].contains(&format!("{OWN} (this host's own address)")),
            "{reasons:?}"
        );
        fx.verify_log();

        // With IP and CIDR entries that contain the addresses: both reached, which shows
        // the refusals above were the policy's, not this namespace's.
        let mut listed = names.to_vec();
        listed.extend([
            format!("{OWN}:{port}"),
            format!("198.51.100.0/24:{port}"),
            format!("44.1.0.0/16:{port}"),
        ]);
        let Some(fx) = fixture(allow(&listed)) else {
            return;
        };
        let (r, _) = call(&fx);
        for (i, address) in [OWN, DOCUMENTATION, LOCAL_ROUTE].into_iter().enumerate() {
            assert_eq!(r[i]["body"], "the host's own service\n", "{address}: {r}");
            assert_eq!(
                fx.connections()[i]["address"],
                format!("{address}:{port}"),
                "{r}"
            );
        }
        assert_eq!(server.accepted(), 3);
    });
}
