//! Real clients inside the sandbox, through the proxy: urllib, curl (plain, `-p`, SOCKS5), pip.

use super::*;

#[test]
fn urllib_reaches_the_listed_host_and_nothing_else() {
    let allowed = Server::start(files(&[("/", b"hello from the allowed host\n")]));
    let other = Server::start(files(&[("/", b"secret\n")]));
    let Some(fx) = fixture(allow(&[at(allowed.port)])) else {
        return;
    };
    let (result, egress) = fx.ok(
        "fetch",
        "get",
        json!({"urls": [allowed.url("/"), other.url("/"), allowed.url("/missing")]}),
    );
    assert_eq!(result[0]["status"], 200, "{result}");
    assert_eq!(result[0]["body"], "hello from the allowed host\n");
    // The refusal reaches the plugin's own error, with the reason.
    assert_eq!(result[1]["status"], 403, "{result}");
    let why = result[1]["error"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "127.0.0.1:{} is not on the plugin's network allowlist",
            other.port
        )),
        "{why}"
    );
    assert_eq!(
        result[2]["status"], 404,
        "the allowed host's own answer: {result}"
    );
    assert_eq!(other.accepted(), 0, "the unlisted server was reached");
    assert_eq!(allowed.accepted(), 2);
    assert_eq!(
        (egress["allowed"].as_u64(), egress["refused"].as_u64()),
        (Some(2), Some(1)),
        "{egress}"
    );
    assert_eq!(egress["refused_targets"][0]["target"], at(other.port));
    assert_eq!(egress["proxy"], PROXY);
}

#[test]
fn curl_plain_tunnelled_and_over_socks() {
    let allowed = Server::start(files(&[("/", b"via curl\n")]));
    let other = Server::start(files(&[("/", b"secret\n")]));
    let Some(fx) = fixture(allow(&[at(allowed.port)])) else {
        return;
    };
    let socks = "socks5h://127.0.0.1:3128";
    let (result, egress) = fx.ok(
        "curl",
        "run",
        json!({"runs": [
            [allowed.url("/")],
            ["-p", allowed.url("/")],
            ["-x", socks, allowed.url("/")],
            [other.url("/")],
            ["-p", other.url("/")],
            ["-x", socks, other.url("/")],
            // Around the proxy: nothing.
            ["--noproxy", "*", allowed.url("/")],
        ]}),
    );
    for i in 0..3 {
        assert_eq!(result[i]["exit"], 0, "run {i}: {result}");
        assert_eq!(result[i]["stdout"], "via curl\n", "run {i}");
    }
    // Plain: curl prints the proxy's 403 body (no -f); -p: the tunnel's 403; SOCKS: code 2.
    assert!(
        result[3]["stdout"]
            .as_str()
            .unwrap()
            .contains("is not on the plugin's network allowlist"),
        "{result}"
    );
    assert_eq!(result[4]["exit"], 56, "{result}");
    assert!(
        result[4]["stderr"].as_str().unwrap().contains("403"),
        "{result}"
    );
    assert_eq!(result[5]["exit"], 97, "{result}");
    assert!(
        result[5]["stderr"].as_str().unwrap().contains("(2)"),
        "{result}"
    );
    assert_eq!(
        result[6]["exit"], 7,
        "a direct connection must fail: {result}"
    );
    assert_eq!(other.accepted(), 0, "the unlisted server was reached");
    assert_eq!(allowed.accepted(), 3, "only the three proxied requests");
    assert_eq!(egress["allowed"], 3, "{egress}");
    assert_eq!(egress["refused"], 3, "{egress}");
    let protocols: Vec<Value> = fx
        .connections()
        .iter()
        .map(|c| c["protocol"].clone())
        .collect();
    for p in ["http", "http_connect", "socks5"] {
        assert_eq!(
            protocols.iter().filter(|x| *x == p).count(),
            2,
            "{p}: {protocols:?}"
        );
    }
}

#[test]
fn pip_installs_a_wheel_from_a_local_index_through_the_proxy() {
    let wheels = TestDir::new();
    let made = Command::new("/usr/bin/python3")
        .args(["-c", MAKE_WHEEL])
        .arg(&wheels.path)
        .status()
        .unwrap();
    assert!(made.success());
    let wheel = "upmdemo-1.0-py3-none-any.whl";
    let index = std::fs::read(wheels.join("index.html")).unwrap();
    let bytes = std::fs::read(wheels.join(wheel)).unwrap();
    let server = Server::start(files(&[
        ("/simple/upmdemo/", &index),
        (&format!("/packages/{wheel}"), &bytes),
    ]));
    let index_url = server.url("/simple/");
    let Some(fx) = fixture(allow(&[at(server.port)])) else {
        return;
    };
    let (r, egress) = fx.ok("pip", "install", json!({"index": index_url}));
    assert_eq!(r["exit"], 0, "{}", r["stderr"]);
    assert_eq!(r["greeting"], "installed through upm", "{r}");
    assert_eq!(
        egress["allowed"], 2,
        "the index page and the wheel: {egress}"
    );
    assert_eq!(egress["refused"], 0, "{egress}");
    assert!(egress["bytes_down"].as_u64().unwrap() > bytes.len() as u64);
    // Without the index on the list, pip fails, and its log (-v) says why.
    let Some(fx) = fixture(allow(&["pypi.org".into()])) else {
        return;
    };
    let (r, egress) = fx.ok("pip", "install", json!({"index": index_url}));
    assert_ne!(r["exit"], 0, "{r}");
    let said = r["proxy_said"].to_string();
    assert!(
        said.contains(&format!(
            "127.0.0.1:{} is not on the plugin's network allowlist",
            server.port
        )),
        "{r}"
    );
    assert!(egress["refused"].as_u64().unwrap() >= 1, "{egress}");
}
