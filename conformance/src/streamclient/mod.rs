//! A streaming client for the tests, written from the protocols (SPDY/3.1 as Kubernetes' httpstream
//! uses it, RFC 6455 WebSocket with the Kubernetes channel protocols), independent of crustd's code.
//! It speaks HTTP/1.1 itself: one upgrade request, then frames.
//! `spdy`: SPDY/3.1 connections and exec/attach sessions; `ws`: WebSocket.

mod spdy;
mod ws;

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use spdy::{Outcome, Spdy, SpdySession, exit_code};
pub use ws::{Ws, WsMsg};

/// The SPDY/3 header dictionary (from the SPDY/3 draft, section 2.6.10.1), as a text table: every
/// entry is a 4-byte big-endian length and the bytes. Built at first use.
pub(crate) fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    let mut d = Vec::new();
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(
        b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505\
203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized\
403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable\
Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT\
chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,\
text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    d
}

/// Splits `http://host:port/path?query` into (`host:port`, `/path?query`).
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http URL: {url}"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Ok((
        host.to_string(),
        if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        },
    ))
}

/// The answer to an upgrade request.
#[derive(Debug)]
pub struct Handshake {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Handshake {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `GET path` with `headers` and reads the response head (and, if not 101, a short body).
pub(crate) async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<(TcpStream, Handshake, Vec<u8>)> {
    let (host, path) = split_url(url)?;
    let mut s = TcpStream::connect(&host)
        .await
        .with_context(|| format!("connect {host}"))?;
    // As Go's net package does by default.
    s.set_nodelay(true)?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await??;
        if n == 0 {
            bail!(
                "connection closed during the handshake: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    let hdrs: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut rest = buf[end..].to_vec();
    let mut body = String::new();
    if status != 101 {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
        body = String::from_utf8_lossy(&rest).into_owned();
        rest.clear();
    }
    Ok((
        s,
        Handshake {
            status,
            headers: hdrs,
            body,
        },
        rest,
    ))
}

/// Sends an upgrade request and returns only the handshake (for negative tests).
pub async fn handshake(url: &str, headers: &[(&str, &str)]) -> Result<Handshake> {
    Ok(upgrade(url, headers).await?.1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dictionary_has_the_drafts_length() {
        assert_eq!(super::dictionary().len(), 1423);
    }
}
