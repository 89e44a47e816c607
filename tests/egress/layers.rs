//! What the plugin can do around the proxy: nothing (Landlock, seccomp, its own namespace).

use super::*;

#[test]
fn a_direct_connection_around_the_proxy_fails_and_sockets_are_tcp_only() {
    let target = Server::start(files(&[("/", b"x")]));
    let Some(fx) = fixture(allow(&[at(target.port)])) else {
        return;
    };
    let (r, _) = fx.ok("probe", "probe", json!({"port": target.port}));
    // Landlock: connect only to the proxy's port (without its port rule the empty
    // namespace would answer ECONNREFUSED instead).
    assert_eq!(r["direct_v4"]["errno"], EACCES, "{r}");
    assert_eq!(r["direct_v6"]["errno"], EACCES, "{r}");
    assert_eq!(r["bind"]["errno"], EACCES, "{r}");
    assert_eq!(r["proxy_port"]["ok"], true, "{r}");
    // seccomp: TCP over IPv4/IPv6 only.
    assert_eq!(r["tcp6"]["ok"], true, "{r}");
    assert_eq!(r["tcp_nonblock_cloexec"]["ok"], true, "{r}");
    assert_eq!(
        r["udp"]["errno"], ESOCKTNOSUPPORT,
        "no DNS from inside: {r}"
    );
    assert_eq!(r["udp6"]["errno"], ESOCKTNOSUPPORT, "{r}");
    assert_eq!(r["unix"]["errno"], EAFNOSUPPORT, "{r}");
    assert_eq!(r["netlink"]["errno"], EAFNOSUPPORT, "{r}");
    assert_eq!(r["raw_ip"]["errno"], ESOCKTNOSUPPORT, "{r}");
    assert_eq!(r["sctp"]["errno"], EPROTONOSUPPORT, "{r}");
    assert_eq!(target.accepted(), 0, "reached around the proxy");
}

#[test]
fn the_proxy_port_leads_to_upm_not_to_the_hosts_port() {
    // A host process listening at 127.0.0.1:3128 must stay out of reach: the plugin's
    // 127.0.0.1 is its own namespace's, where only upm's listener is.
    let Ok(host_side) = TcpListener::bind(PROXY) else {
        eprintln!("SKIPPED: 127.0.0.1:3128 is taken on this host, the test needs it free");
        return;
    };
    let squatter = Server::on(host_side, Reply::Hold);
    let target = Server::start(files(&[("/", b"through upm\n")]));
    let Some(fx) = fixture(allow(&[at(target.port)])) else {
        return;
    };
    let raw = format!(
        "GET http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n",
        p = target.port
    );
    let (r, _) = fx.ok("probe", "probe", json!({"raw": raw}));
    let reply = r["raw"]["ok"]["reply"].as_str().unwrap_or_default();
    assert!(reply.ends_with("through upm\n"), "{r}");
    assert_eq!(
        squatter.accepted(),
        0,
        "the host's 127.0.0.1:3128 was reached"
    );
}

#[test]
fn a_config_without_an_allowlist_gives_no_proxy_and_no_sockets() {
    let server = Server::start(files(&[("/", b"x")]));
    let Some(fx) = fixture(json!(false)) else {
        return;
    };
    let (r, egress) = fx.ok("probe", "probe", json!({"port": server.port}));
    assert_eq!(egress, Value::Null, "no proxy without an allowlist");
    assert_eq!(r["proxy_port"]["errno"], EAFNOSUPPORT, "{r}");
    assert_eq!(r["tcp6"]["errno"], EAFNOSUPPORT, "{r}");
    let (r, _) = fx.ok("fetch", "get", json!({"urls": [server.url("/")]}));
    assert!(r[0]["error"].is_string(), "{r}");
    assert_eq!(server.accepted(), 0);
}

#[test]
fn the_plugin_gets_every_proxy_variable_and_none_that_goes_around_it() {
    // The config and the caller both try to point the plugin elsewhere or around the
    // proxy: the call's proxy wins, and NO_PROXY is gone whoever set it.
    let Some(fx) = fixture_with(allow(&["pypi.org".into()]), |cfg| {
        cfg["sandbox"]["env"] = json!({
            "allow": ["LANG", "no_proxy", "https_proxy"],
            "set": {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent",
                    "HTTP_PROXY": "http://elsewhere.example:8080", "NO_PROXY": "*"}
        });
    }) else {
        return;
    };
    let mut cmd = fx.command();
    cmd.env("no_proxy", "*")
        .env("https_proxy", "http://elsewhere.example:8080");
    let run = run_command(cmd, &request("env", "show", json!({})));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let env = run.result();
    for (name, value) in [
        ("HTTP_PROXY", "http://127.0.0.1:3128"),
        ("HTTPS_PROXY", "http://127.0.0.1:3128"),
        ("ALL_PROXY", "socks5h://127.0.0.1:3128"),
    ] {
        assert_eq!(env[name], value, "{name}: {env}");
        assert_eq!(env[name.to_ascii_lowercase()], value, "{name}: {env}");
    }
    assert_eq!(env.get("NO_PROXY"), None, "{env}");
    assert_eq!(env.get("no_proxy"), None, "{env}");
    // Without an allowlist none of them is set by upm.
    let Some(fx) = fixture(json!(false)) else {
        return;
    };
    let (env, _) = fx.ok("env", "show", json!({}));
    for name in ["HTTP_PROXY", "https_proxy", "ALL_PROXY"] {
        assert_eq!(env.get(name), None, "{name}: {env}");
    }
}
