//! HTTP through the proxy: `CONNECT host:port` (a tunnel: TLS for pip, npm, cargo, git,
//! curl) and plain requests in absolute form (`GET http://host/path`), whose `Host`
//! header must agree with the URI. A plain request is forwarded in origin form with
//! `Connection: close`, its body relayed as its framing says (`Content-Length` or
//! chunked; both at once is refused, as a request smuggling attempt would send), and
//! the response streamed back until the host closes; one request per connection.
//! A refusal is an HTTP error whose status line carries the reason, so that the
//! client's own error message says why (`Tunnel connection failed: 403 Forbidden (upm:
//! evil.example:443 is not on the plugin's network allowlist)`).

use super::allowlist::{parse_host, Host};
use super::proxy::{both, open, pump, tunnel, Client, Conn, Dir, Refusal, Why};
use super::record::Protocol;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The largest request head the proxy reads.
const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 128;
/// The longest chunk-size or trailer line of a chunked body.
const MAX_LINE: usize = 8 << 10;

/// Headers that concern one hop, never forwarded (with those `Connection` names).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed {
    Connect {
        host: Host,
        port: u16,
    },
    /// A plain request: the head to send upstream, and how its body is framed.
    Forward {
        host: Host,
        port: u16,
        head: Vec<u8>,
        body: Body,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    None,
    Length(u64),
    Chunked,
}

pub(super) async fn serve(conn: &mut Conn, client: &mut Client) {
    conn.record.protocol = Protocol::Http;
    let parsed = match read_head(conn, client).await {
        Ok(len) => {
            let head = client.take(len);
            parse_request(&head)
        }
        Err(e) => Err(e),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            let r = Refusal::refused(
                Why::Malformed,
                format!("not a request the proxy takes: {e}"),
            );
            return refuse(conn, client, &r).await;
        }
    };
    match parsed {
        Parsed::Connect { host, port } => {
            match open(conn, Protocol::HttpConnect, &host, port).await {
                Ok(upstream) => {
                    let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
                    if let Err(e) = client.stream.write_all(ok).await {
                        conn.record.end = Some(e.to_string());
                        return;
                    }
                    tunnel(conn, client, upstream).await;
                }
                Err(r) => refuse(conn, client, &r).await,
            }
        }
        Parsed::Forward {
            host,
            port,
            head,
            body,
        } => match open(conn, Protocol::Http, &host, port).await {
            Ok(upstream) => forward(conn, client, upstream, head, body).await,
            Err(r) => refuse(conn, client, &r).await,
        },
    }
}

async fn refuse(conn: &mut Conn, client: &mut Client, r: &Refusal) {
    conn.refuse(r);
    let _ = client.stream.write_all(&refusal_response(r)).await;
    let _ = client.stream.shutdown().await;
}

/// Reads until `client.buf` holds a whole request head; its length.
async fn read_head(conn: &Conn, client: &mut Client) -> Result<usize, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Request::new(&mut headers).parse(&client.buf) {
            Ok(httparse::Status::Complete(len)) => return Ok(len),
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(format!("malformed request head: {e}")),
        }
        if client.buf.len() > MAX_HEAD {
            return Err(format!("request head longer than {MAX_HEAD} bytes"));
        }
        match conn.within_idle(client.fill()).await? {
            Ok(0) => return Err("the client closed before its request head was complete".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Parses a complete request head (pure: unit-tested).
pub(super) fn parse_request(head: &[u8]) -> Result<Parsed, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete request head".into()),
        Err(e) => return Err(format!("malformed request head: {e}")),
    }
    let method = req.method.unwrap_or_default();
    let uri = req.path.unwrap_or_default();
    let version = req.version.unwrap_or(1);
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = parse_authority(uri, None)?;
        return Ok(Parsed::Connect { host, port });
    }
    let lower = uri.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &uri["http://".len()..]
    } else if uri.starts_with('/') {
        return Err(format!(
            "{method} {uri} is in origin form: a proxy takes the absolute form \
             ({method} http://host{uri}) or CONNECT"
        ));
    } else if lower.starts_with("https://") {
        return Err("an https:// URL in absolute form: use CONNECT for TLS".into());
    } else {
        return Err(format!("{uri:?} is not an http:// URL"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err("the URL carries user information (user@host)".into());
    }
    let (host, port) = parse_authority(authority, Some(80))?;
    let path = match path.split('#').next().unwrap_or_default() {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };

    let mut host_header = None;
    let mut connection_names: Vec<String> = Vec::new();
    let mut lengths = Vec::new();
    let mut chunked = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        match h.name.to_ascii_lowercase().as_str() {
            "host" if host_header.is_some() => return Err("more than one Host header".into()),
            "host" => host_header = Some(value.to_owned()),
            "connection" => connection_names.extend(
                value
                    .split(',')
                    .map(|v| v.trim().to_ascii_lowercase())
                    .filter(|v| !v.is_empty()),
            ),
            "content-length" => lengths.push(value.to_owned()),
            "transfer-encoding" => {
                if !value.eq_ignore_ascii_case("chunked") || chunked {
                    return Err(format!(
                        "Transfer-Encoding {value:?}: only one \"chunked\" is taken"
                    ));
                }
                chunked = true;
            }
            _ => {}
        }
    }
    if let Some(h) = &host_header {
        let agrees = parse_authority(h, Some(80)).is_ok_and(|hp| hp == (host.clone(), port));
        if !agrees {
            return Err(format!(
                "the Host header {h:?} does not agree with the URL's host {authority:?}"
            ));
        }
    }
    let body = match (chunked, lengths.as_slice()) {
        (true, []) => Body::Chunked,
        (true, _) => return Err("both Transfer-Encoding and Content-Length".into()),
        (false, []) => Body::None,
        (false, [first, more @ ..]) => {
            if more.iter().any(|l| l != first) {
                return Err("Content-Length headers that disagree".into());
            }
            match first.parse::<u64>() {
                Ok(n) if first.bytes().all(|b| b.is_ascii_digit()) => Body::Length(n),
                _ => return Err(format!("Content-Length {first:?} is not a number")),
            }
        }
    };

    let mut out = Vec::with_capacity(head.len() + 64);
    out.extend_from_slice(
        format!("{method} {path} HTTP/1.{version}\r\nHost: {authority}\r\n").as_bytes(),
    );
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&name.as_str()) || connection_names.contains(&name) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Parsed::Forward {
        host,
        port,
        head: out,
        body,
    })
}

/// `host:port`, `[v6]:port`; without a port, `default` (an error when `None`).
pub(super) fn parse_authority(s: &str, default: Option<u16>) -> Result<(Host, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{s:?}: a '[' without its ']'"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{s:?}: not an IPv6 address in brackets"));
        }
        match after {
            "" => (h, None),
            p => (
                h,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{s:?}: not [IPv6]:port"))?,
                ),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!("{s:?}: an IPv6 address needs brackets"))
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("{s:?}: port {p:?} is not a number from 1 to 65535")),
        },
        _ => default.ok_or_else(|| format!("{s:?} has no port"))?,
    };
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    Ok((parse_host(host)?, port))
}

/// The answer to a refused or failed request; the status line says why.
pub(super) fn refusal_response(r: &Refusal) -> Vec<u8> {
    let (code, text) = match r.why {
        Why::Policy | Why::Limit => (403, "Forbidden"),
        Why::Malformed => (400, "Bad Request"),
        Why::Resolve | Why::ConnectionRefused | Why::Unreachable => (502, "Bad Gateway"),
        Why::Timeout => (504, "Gateway Timeout"),
    };
    let reason: String = r
        .reason
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect();
    let body = format!("upm egress proxy: {reason}\n");
    format!(
        "HTTP/1.1 {code} {text} (upm: {reason})\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\nX-Upm-Egress: {}\r\n\r\n{body}",
        body.len(),
        serde_json::to_value(r.verdict())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    )
    .into_bytes()
}

/// Sends the rewritten head and the body, streaming the response back meanwhile.
async fn forward(
    conn: &mut Conn,
    client: &mut Client,
    mut upstream: tokio::net::TcpStream,
    head: Vec<u8>,
    body: Body,
) {
    if let Err(e) = conn.forward(head.len(), Dir::Up) {
        conn.record.end = Some(e);
        return;
    }
    if let Err(e) = upstream.write_all(&head).await {
        conn.record.end = Some(e.to_string());
        return;
    }
    let conn_ref: &Conn = conn;
    let mut reader = Buffered {
        buf: &mut client.buf,
        r: &client.stream,
    };
    let end = both(
        send_body(conn_ref, &mut reader, &upstream, body),
        pump(conn_ref, &upstream, &client.stream, Dir::Down),
    )
    .await;
    conn.record.end = Some(end);
}

/// A reader with what was read ahead of what is being parsed.
struct Buffered<'a> {
    buf: &'a mut Vec<u8>,
    r: &'a TcpStream,
}

impl Buffered<'_> {
    async fn fill(&mut self, conn: &Conn) -> Result<(), String> {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            conn.within_idle(self.r.readable())
                .await?
                .map_err(|e| e.to_string())?;
            match self.r.try_read(&mut chunk) {
                Ok(0) => {
                    return Err(
                        "the client closed the connection in the middle of its request body".into(),
                    )
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let rest = self.buf.split_off(n.min(self.buf.len()));
        std::mem::replace(self.buf, rest)
    }

    /// One CRLF-terminated line, with its CRLF.
    async fn line(&mut self, conn: &Conn) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.take(i + 2));
            }
            if self.buf.len() > MAX_LINE {
                return Err("a chunked body line longer than 8 KiB".into());
            }
            self.fill(conn).await?;
        }
    }

    /// Exactly `n` bytes, relayed to `w` as they come.
    async fn copy(&mut self, conn: &Conn, mut n: u64, w: &TcpStream) -> Result<(), String> {
        while n > 0 {
            if self.buf.is_empty() {
                self.fill(conn).await?;
            }
            let part = self.take(usize::try_from(n).unwrap_or(usize::MAX));
            n -= part.len() as u64;
            send(conn, w, &part).await?;
        }
        Ok(())
    }
}

async fn send(conn: &Conn, w: &TcpStream, mut bytes: &[u8]) -> Result<(), String> {
    conn.forward(bytes.len(), Dir::Up)?;
    while !bytes.is_empty() {
        conn.within_idle(w.writable())
            .await?
            .map_err(|e| e.to_string())?;
        match w.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Relays exactly the request's body; what the client sends after it is not read.
async fn send_body(
    conn: &Conn,
    reader: &mut Buffered<'_>,
    w: &TcpStream,
    body: Body,
) -> Result<(), String> {
    match body {
        Body::None => Ok(()),
        Body::Length(n) => reader.copy(conn, n, w).await,
        Body::Chunked => loop {
            let line = reader.line(conn).await?;
            let size = match httparse::parse_chunk_size(&line) {
                Ok(httparse::Status::Complete((_, size))) => size,
                _ => return Err("a malformed chunk size in the request body".into()),
            };
            send(conn, w, &line).await?;
            if size == 0 {
                // Trailers, then the empty line that ends the body.
                loop {
                    let t = reader.line(conn).await?;
                    send(conn, w, &t).await?;
                    if t == b"\r\n" {
                        return Ok(());
                    }
                }
            }
            reader.copy(conn, size, w).await?;
            let crlf = reader.line(conn).await?;
            if crlf != b"\r\n" {
                return Err("a chunk longer than its size in the request body".into());
            }
            send(conn, w, &crlf).await?;
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn forward(head: &str) -> (Host, u16, String, Body) {
        match parse_request(head.as_bytes()).unwrap() {
            Parsed::Forward {
                host,
                port,
                head,
                body,
            } => (host, port, String::from_utf8(head).unwrap(), body),
            other => panic!("{other:?}"),
        }
    }

    fn refused(head: &str) -> String {
        parse_request(head.as_bytes()).unwrap_err()
    }

    #[test]
    fn connect_takes_an_authority_with_a_port() {
        let p =
            parse_request(b"CONNECT PyPI.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").unwrap();
        assert_eq!(
            p,
            Parsed::Connect {
                host: Host::Name("pypi.org".into()),
                port: 443
            }
        );
        let p = parse_request(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            p,
            Parsed::Connect {
                host: Host::Ip("::1".parse::<IpAddr>().unwrap()),
                port: 8443
            }
        );
        assert!(refused("CONNECT pypi.org HTTP/1.1\r\n\r\n").contains("no port"));
        assert!(refused("CONNECT ::1:443 HTTP/1.1\r\n\r\n").contains("brackets"));
        assert!(refused("CONNECT a b:443 HTTP/1.1\r\n\r\n").contains("malformed"));
    }

    #[test]
    fn absolute_form_is_rewritten_to_origin_form_with_connection_close() {
        let (host, port, head, body) = forward(
            "GET http://Example.com:8080/simple/?q=1#frag HTTP/1.1\r\nHost: example.com:8080\r\n\
             User-Agent: t\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: s\r\nProxy-Authorization: Basic x\r\nAccept: */*\r\n\r\n",
        );
        assert_eq!(host, Host::Name("example.com".into()));
        assert_eq!(port, 8080);
        assert_eq!(body, Body::None);
        assert_eq!(
            head,
            "GET /simple/?q=1 HTTP/1.1\r\nHost: Example.com:8080\r\nUser-Agent: t\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n"
        );
        let (_, port, head, _) = forward("GET http://a.example?x HTTP/1.0\r\n\r\n");
        assert_eq!(port, 80);
        assert!(
            head.starts_with("GET /?x HTTP/1.0\r\nHost: a.example\r\n"),
            "{head}"
        );
    }

    #[test]
    fn the_host_header_must_agree_with_the_url() {
        assert!(
            refused("GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n")
                .contains("does not agree")
        );
        assert!(
            refused("GET http://a.example/ HTTP/1.1\r\nHost: a.example:81\r\n\r\n")
                .contains("does not agree")
        );
        assert!(refused(
            "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n"
        )
        .contains("more than one"));
        // The default port may be left out on either side.
        forward("GET http://a.example:80/ HTTP/1.1\r\nHost: A.example\r\n\r\n");
        forward("GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n");
    }

    #[test]
    fn what_a_proxy_does_not_take_is_refused_with_a_reason() {
        assert!(refused("GET / HTTP/1.1\r\nHost: a\r\n\r\n").contains("origin form"));
        assert!(refused("GET https://a.example/ HTTP/1.1\r\n\r\n").contains("use CONNECT"));
        assert!(refused("GET ftp://a.example/ HTTP/1.1\r\n\r\n").contains("not an http://"));
        assert!(refused("GET http://u:p@a.example/ HTTP/1.1\r\n\r\n").contains("user information"));
        assert!(refused("GET http://a.example:0/ HTTP/1.1\r\n\r\n").contains("not a number"));
        assert!(refused("GET http://a_b$.example/ HTTP/1.1\r\n\r\n").contains("not a host name"));
    }

    #[test]
    fn body_framing_is_unambiguous() {
        let (_, _, head, body) =
            forward("POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(body, Body::Length(5));
        assert!(head.contains("Content-Length: 5\r\n"));
        let (_, _, head, body) =
            forward("POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(body, Body::Chunked);
        assert!(head.contains("Transfer-Encoding: chunked\r\n"));
        assert!(refused("POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n").contains("both"));
        assert!(refused(
            "POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
        )
        .contains("disagree"));
        assert!(
            refused("POST http://a.example/ HTTP/1.1\r\nContent-Length: +5\r\n\r\n")
                .contains("not a number")
        );
        assert!(refused(
            "POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        )
        .contains("chunked"));
    }

    #[test]
    fn a_refusal_says_why_in_its_status_line() {
        let r = Refusal::refused(
            Why::Policy,
            "evil.example:443 is not on the plugin's network allowlist".into(),
        );
        let text = String::from_utf8(refusal_response(&r)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 403 Forbidden (upm: evil.example:443 is not on"),
            "{text}"
        );
        assert!(text.contains("X-Upm-Egress: refused\r\n"));
        let r = Refusal::refused(Why::Timeout, "line\r\nbreak".into());
        let text = String::from_utf8(refusal_response(&r)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 504 Gateway Timeout (upm: line??break)\r\n"),
            "{text}"
        );
        assert!(text.contains("X-Upm-Egress: failed\r\n"));
    }
}
