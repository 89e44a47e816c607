//! What the list allows and refuses, and what the config may not say.

use super::*;

#[test]
fn a_name_resolving_to_loopback_is_refused_unless_its_address_is_listed() {
    // "localhost" is in /etc/hosts (127.0.0.1): the proxy's resolver reads it.
    let server = Server::start(files(&[("/", b"local mirror\n")]));
    let name = format!("localhost:{}", server.port);
    let url = format!("http://localhost:{}/", server.port);
    let Some(fx) = fixture(allow(std::slice::from_ref(&name))) else {
        return;
    };
    let (r, egress) = fx.ok("fetch", "get", json!({"urls": [url]}));
    assert_eq!(r[0]["status"], 403, "{r}");
    let why = r[0]["error"].as_str().unwrap();
    assert!(why.contains("127.0.0.1 (loopback)"), "{why}");
    assert_eq!(egress["refused"], 1);
    assert_eq!(server.accepted(), 0);
    // The same name, with its address listed as an IP entry: allowed.
    let Some(fx) = fixture(allow(&[name, at(server.port)])) else {
        return;
    };
    let (r, _) = fx.ok("fetch", "get", json!({"urls": [url]}));
    assert_eq!(r[0]["body"], "local mirror\n", "{r}");
    let c = &fx.connections()[0];
    assert_eq!(c["target"], format!("localhost:{}", server.port));
    assert_eq!(
        c["address"],
        at(server.port),
        "the address checked is the one used"
    );
    assert_eq!(c["entry"], format!("localhost:{}", server.port));
}

#[test]
fn a_metadata_address_on_the_list_is_a_config_error() {
    for entry in [
        "169.254.169.254",
        "169.254.0.0/16:80",
        "[fd00:ec2::254]:80",
        // NAT64 and 6to4 spellings of 169.254.169.254.
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a9fe:a9fe::1]:80",
        "metadata.google.internal",
    ] {
        let Some(fx) = fixture(allow(&["pypi.org".into(), entry.into()])) else {
            return;
        };
        let run = fx.call("fetch", "get", json!({"urls": []}));
        assert_eq!(run.code, 5, "{entry}: {}", run.stdout);
        assert_eq!(run.code_word(), "config_error");
        assert!(
            run.stdout.contains("cloud metadata"),
            "{entry}: {}",
            run.stdout
        );
        let check = Command::new(common::upm_bin())
            .args(["check", "--config", fx.config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(5), "{entry}");
        assert!(String::from_utf8_lossy(&check.stdout).contains("metadata"));
    }
}

#[test]
fn the_container_backend_refuses_an_allowlist_with_a_config_error() {
    let Some(fx) = fixture_with(allow(&["pypi.org".into()]), |cfg| {
        cfg["plugins"]["boxed"] = json!({
            "command": ["/bin/true"], "allowed_methods": ["m"],
            "sandbox": {"backend": "container", "read_paths": [],
                        "image": format!("localhost/x@sha256:{}", "a".repeat(64))}
        });
    }) else {
        return;
    };
    let run = fx.call("boxed", "m", json!({}));
    assert_eq!(run.code, 5, "{}", run.stdout);
    assert!(
        run.stdout.contains("needs the native backend"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_and_list_show_each_plugins_list() {
    let Some(fx) = fixture_with(
        allow(&["pypi.org".into(), "*.pythonhosted.org".into()]),
        |cfg| {
            cfg["plugins"]["probe"]["sandbox"] = json!({"network": false});
        },
    ) else {
        return;
    };
    for cmd in ["check", "list"] {
        let out = Command::new(common::upm_bin())
            .args([cmd, "--config", fx.config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let network = &doc["plugins"]["fetch"]["network"];
        assert_eq!(
            network["allow"],
            json!(["pypi.org", "*.pythonhosted.org"]),
            "{cmd}: {doc}"
        );
        // Each limit's default, shown.
        assert_eq!(
            (
                &network["max_connections"],
                &network["max_bytes"],
                &network["idle_timeout_ms"]
            ),
            (&json!(256), &json!(1u64 << 30), &json!(30_000)),
            "{cmd}: the defaults are shown"
        );
        assert_eq!(doc["plugins"]["probe"]["network"], false, "{cmd}");
    }
}
