//! SOCKS5 (RFC 1928), for clients that only speak SOCKS: no authentication, CONNECT
//! only, names resolved by the proxy (`socks5h://`: a client inside the sandbox has no
//! DNS of its own). A refusal is the reply code that says it (2: not allowed by the
//! ruleset), and the audit record has the reason.

use super::allowlist::{parse_host, Host};
use super::proxy::{open, tunnel, Client, Conn, Refusal, Why};
use super::record::Protocol;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use tokio::io::AsyncWriteExt;

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;

/// The reply code for a refusal or failure.
fn reply_code(why: Why) -> u8 {
    match why {
        Why::Policy | Why::Limit => 2,
        Why::Malformed => 1,
        Why::Resolve => 4,
        Why::Unreachable => 4,
        Why::ConnectionRefused => 5,
        Why::Timeout => 6,
    }
}

fn reply(code: u8) -> [u8; 10] {
    // The bound address is not told (0.0.0.0:0): it is upm's, on the host.
    [VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

pub(super) async fn serve(conn: &mut Conn, client: &mut Client) {
    conn.record.protocol = Protocol::Socks5;
    let request = match negotiate(conn, client).await {
        Ok(r) => r,
        Err((r, code)) => {
            conn.refuse(&r);
            if let Some(code) = code {
                let _ = client.stream.write_all(&code).await;
            }
            return;
        }
    };
    let (host, port) = request;
    match open(conn, Protocol::Socks5, &host, port).await {
        Ok(upstream) => {
            if let Err(e) = client.stream.write_all(&reply(0)).await {
                conn.record.end = Some(e.to_string());
                return;
            }
            tunnel(conn, client, upstream).await;
        }
        Err(r) => {
            conn.refuse(&r);
            let _ = client.stream.write_all(&reply(reply_code(r.why))).await;
        }
    }
}

type Failure = (Refusal, Option<Vec<u8>>);

fn malformed(why: &str, answer: Option<Vec<u8>>) -> Failure {
    (
        Refusal::refused(
            Why::Malformed,
            format!("not a SOCKS5 request the proxy takes: {why}"),
        ),
        answer,
    )
}

/// The greeting and the request, up to the target.
async fn negotiate(conn: &mut Conn, client: &mut Client) -> Result<(Host, u16), Failure> {
    client
        .need(conn, 2)
        .await
        .map_err(|e| malformed(&e, None))?;
    let methods = usize::from(client.buf[1]);
    client
        .need(conn, 2 + methods)
        .await
        .map_err(|e| malformed(&e, None))?;
    let greeting = client.take(2 + methods);
    if !greeting[2..].contains(&NO_AUTH) {
        return Err(malformed(
            "no acceptable authentication method (the proxy takes none)",
            Some(vec![VERSION, NO_ACCEPTABLE_METHOD]),
        ));
    }
    client
        .stream
        .write_all(&[VERSION, NO_AUTH])
        .await
        .map_err(|e| malformed(&e.to_string(), None))?;

    client
        .need(conn, 5)
        .await
        .map_err(|e| malformed(&e, None))?;
    let (version, command, atyp) = (client.buf[0], client.buf[1], client.buf[3]);
    if version != VERSION {
        return Err(malformed(
            "a request that is not SOCKS version 5",
            Some(reply(1).to_vec()),
        ));
    }
    let address_len = match atyp {
        1 => 4,
        4 => 16,
        3 => 1 + usize::from(client.buf[4]),
        other => {
            return Err(malformed(
                &format!("address type {other}"),
                Some(reply(8).to_vec()),
            ))
        }
    };
    client
        .need(conn, 4 + address_len + 2)
        .await
        .map_err(|e| malformed(&e, None))?;
    let request = client.take(4 + address_len + 2);
    let address = &request[4..4 + address_len];
    let port = u16::from_be_bytes([request[4 + address_len], request[5 + address_len]]);
    let host = match atyp {
        1 => Ok(Host::Ip(IpAddr::V4(Ipv4Addr::new(
            address[0], address[1], address[2], address[3],
        )))),
        4 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(address);
            Ok(Host::Ip(IpAddr::V6(Ipv6Addr::from(octets)).to_canonical()))
        }
        _ => std::str::from_utf8(&address[1..])
            .map_err(|_| "a host name that is not ASCII".to_owned())
            .and_then(parse_host),
    };
    let shown = match &host {
        Ok(h) => h.to_string(),
        Err(_) => String::from_utf8_lossy(&address[1..]).into_owned(),
    };
    conn.record.target = Some(format!("{shown}:{port}"));
    let host = host.map_err(|e| malformed(&e, Some(reply(1).to_vec())))?;
    if command != CONNECT {
        return Err(malformed(
            &format!("command {command} (only CONNECT, 1, is supported)"),
            Some(reply(7).to_vec()),
        ));
    }
    if port == 0 {
        return Err(malformed("port 0", Some(reply(1).to_vec())));
    }
    Ok((host, port))
}
