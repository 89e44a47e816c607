//! The call's limits, and the end of the call, which ends every connection.

use super::*;

#[test]
fn the_connection_limit_refuses_the_rest_and_audits_only_up_to_it() {
    let server = Server::start(files(&[("/", b"ok")]));
    let Some(fx) = fixture(json!({"allow": [at(server.port)], "max_connections": 2})) else {
        return;
    };
    let url = server.url("/");
    let (r, egress) = fx.ok("fetch", "get", json!({"urls": [url, url, url]}));
    assert_eq!(r[0]["status"], 200);
    assert_eq!(r[1]["status"], 200);
    assert_eq!(r[2]["status"], 403, "{r}");
    assert!(
        r[2]["error"]
            .as_str()
            .unwrap()
            .contains("connection limit (2)"),
        "{r}"
    );
    assert_eq!(egress["connections"], 3);
    assert_eq!(egress["refused_past_limit"], 1, "{egress}");
    assert_eq!(egress["limits_reached"], json!(["max_connections"]));
    assert_eq!(
        fx.connections().len(),
        2,
        "past the limit: counted, not audited one by one"
    );
    assert_eq!(server.accepted(), 2);
}

#[test]
fn the_byte_limit_ends_the_transfer_and_refuses_what_follows() {
    let big = vec![b'x'; 200_000];
    let server = Server::start(files(&[("/big", &big), ("/small", b"small")]));
    let Some(fx) = fixture(json!({"allow": [at(server.port)], "max_bytes": 50_000})) else {
        return;
    };
    let (r, egress) = fx.ok(
        "fetch",
        "get",
        json!({"urls": [server.url("/big"), server.url("/small")]}),
    );
    assert!(r[0]["error"].is_string(), "the big download must fail: {r}");
    assert_eq!(r[1]["status"], 403, "{r}");
    assert!(
        r[1]["error"].as_str().unwrap().contains("byte limit"),
        "{r}"
    );
    assert_eq!(egress["limits_reached"], json!(["max_bytes"]), "{egress}");
    let relayed = egress["bytes_down"].as_u64().unwrap() + egress["bytes_up"].as_u64().unwrap();
    assert!(relayed <= 50_000, "{egress}");
    let c = fx.connections();
    assert!(
        c[0]["end"].as_str().unwrap().contains("byte limit"),
        "{c:?}"
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let hold = Server::start(Reply::Hold);
    let Some(fx) = fixture(json!({"allow": [at(hold.port)], "idle_timeout_ms": 500})) else {
        return;
    };
    let raw = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", hold.port);
    let (r, _) = fx.ok("probe", "probe", json!({"raw": raw, "hold": 20}));
    let seconds = r["raw"]["ok"]["seconds"].as_f64().unwrap();
    assert!(
        (0.4..5.0).contains(&seconds),
        "closed after {seconds} s: {r}"
    );
    assert!(r["raw"]["ok"]["reply"]
        .as_str()
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    let c = fx.connections();
    assert_eq!(c[0]["end"], "idle timeout (500 ms)", "{c:?}");
    assert_eq!(
        hold.closed.lock().unwrap().len(),
        1,
        "the host's side was closed too"
    );
}

#[test]
fn every_connection_ends_with_its_call() {
    // The plugin holds a tunnel open past its timeout: upm kills it, and the proxy
    // closes the host's side when the call ends, not at the 30 s idle timeout.
    let hold = Server::start(Reply::Hold);
    let Some(fx) = fixture_with(json!({"allow": [at(hold.port)]}), |cfg| {
        cfg["sandbox"]["limits"]["timeout_ms"] = json!(1500);
    }) else {
        return;
    };
    let raw = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", hold.port);
    let started = Instant::now();
    let run = fx.call("probe", "probe", json!({"raw": raw, "hold": 60}));
    assert_eq!(run.code_word(), "timeout", "{}", run.stdout);
    let ended = Instant::now();
    assert!(
        ended - started < Duration::from_secs(10),
        "{:?}",
        ended - started
    );
    let closed = hold.closed.lock().unwrap().clone();
    assert_eq!(
        closed.len(),
        1,
        "the host's side is still open after the call"
    );
    assert!(closed[0] <= ended, "closed after upm returned");
    let c = fx.connections();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["verdict"], "allowed");
    assert!(c[0]["end"].is_string(), "{c:?}");
    assert_eq!(run.json["data"]["egress"]["allowed"], 1);
}
