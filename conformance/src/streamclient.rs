//! A streaming client for the tests, written from the protocols (SPDY/3.1 as Kubernetes' httpstream
//! uses it, RFC 6455 WebSocket with the Kubernetes channel protocols), independent of crustd's code.
//! It speaks HTTP/1.1 itself: one upgrade request, then frames.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// The SPDY/3 header dictionary (from the SPDY/3 draft, section 2.6.10.1), as a text table: every
/// entry is a 4-byte big-endian length and the bytes. Built at first use.
fn dictionary() -> Vec<u8> {
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
async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<(TcpStream, Handshake, Vec<u8>)> {
    let (host, path) = split_url(url)?;
    let mut s = TcpStream::connect(&host)
        .await
        .with_context(|| format!("connect {host}"))?;
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

// ---------------------------------------------------------------- SPDY

#[derive(Default)]
struct SpdyState {
    data: HashMap<u32, Vec<u8>>,
    fin: HashSet<u32>,
    replied: HashSet<u32>,
    reset: HashSet<u32>,
    closed: bool,
}

/// A client SPDY/3.1 connection.
pub struct Spdy {
    w: tokio::sync::Mutex<(OwnedWriteHalf, Compress)>,
    state: Arc<Mutex<SpdyState>>,
    notify: Arc<Notify>,
    next_id: Mutex<u32>,
    /// The negotiated `X-Stream-Protocol-Version`.
    pub protocol: String,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Spdy {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8003_0000u32 | u32::from(kind)).to_be_bytes());
    f.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

impl Spdy {
    /// Upgrades `url` to SPDY/3.1 offering `protocols`.
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<Spdy> {
        let mut h = vec![("Upgrade", "SPDY/3.1")];
        for p in protocols {
            h.push(("X-Stream-Protocol-Version", p));
        }
        let (s, hs, rest) = upgrade(url, &h).await?;
        if hs.status != 101 {
            bail!("upgrade refused: {} {}", hs.status, hs.body);
        }
        let protocol = hs.header("X-Stream-Protocol-Version").unwrap_or("").to_string();
        let (r, w) = s.into_split();
        let state = Arc::new(Mutex::new(SpdyState::default()));
        let notify = Arc::new(Notify::new());
        let reader = tokio::spawn(spdy_reader(r, rest, Arc::clone(&state), Arc::clone(&notify)));
        let mut comp = Compress::new(Compression::default(), true);
        comp.set_dictionary(&dictionary()).expect("dictionary");
        Ok(Spdy {
            w: tokio::sync::Mutex::new((w, comp)),
            state,
            notify,
            next_id: Mutex::new(1),
            protocol,
            reader,
        })
    }

    /// Opens a stream with `headers`; returns its ID.
    pub async fn open(&self, headers: &[(&str, &str)]) -> Result<u32> {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            let id = *n;
            *n += 2;
            id
        };
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (n, v) in headers {
            block.extend_from_slice(&(n.len() as u32).to_be_bytes());
            block.extend_from_slice(n.to_ascii_lowercase().as_bytes());
            block.extend_from_slice(&(v.len() as u32).to_be_bytes());
            block.extend_from_slice(v.as_bytes());
        }
        let mut g = self.w.lock().await;
        let mut z = Vec::with_capacity(block.len() + 64);
        g.1.compress_vec(&block, &mut z, FlushCompress::Sync)?;
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&z);
        g.0.write_all(&control(1, 0, &p)).await?;
        Ok(id)
    }

    /// Sends data on a stream (`fin` half-closes it).
    pub async fn send(&self, id: u32, data: &[u8], fin: bool) -> Result<()> {
        let mut f = id.to_be_bytes().to_vec();
        f.extend_from_slice(&((u32::from(fin) << 24) | data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        self.w.lock().await.0.write_all(&f).await?;
        Ok(())
    }

    /// Writes raw bytes (for malformed-frame tests).
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<()> {
        self.w.lock().await.0.write_all(bytes).await?;
        Ok(())
    }

    /// Closes our side of the TCP connection.
    pub async fn shutdown(&self) {
        let _ = self.w.lock().await.0.shutdown().await;
    }

    /// Waits until `pred(data so far, fin)` holds for stream `id`; returns the data.
    pub async fn wait(
        &self,
        id: u32,
        timeout: Duration,
        pred: impl Fn(&[u8], bool) -> bool,
    ) -> Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            {
                let st = self.state.lock().unwrap();
                let data = st.data.get(&id).cloned().unwrap_or_default();
                let fin = st.fin.contains(&id) || st.reset.contains(&id);
                if pred(&data, fin) {
                    return Ok(data);
                }
                if st.closed {
                    bail!(
                        "connection closed; stream {id} has {:?} (fin {fin})",
                        String::from_utf8_lossy(&data)
                    );
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let st = self.state.lock().unwrap();
                bail!(
                    "timed out on stream {id}: have {:?}",
                    String::from_utf8_lossy(st.data.get(&id).map(Vec::as_slice).unwrap_or(b""))
                );
            }
        }
    }

    /// Everything on stream `id` up to the server's FIN.
    pub async fn read_to_fin(&self, id: u32, timeout: Duration) -> Result<Vec<u8>> {
        self.wait(id, timeout, |_, fin| fin).await
    }

    /// Whether the server answered stream `id` with SYN_REPLY.
    pub fn replied(&self, id: u32) -> bool {
        self.state.lock().unwrap().replied.contains(&id)
    }

    /// Whether the server closed the TCP connection.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if self.state.lock().unwrap().closed {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

async fn spdy_reader(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut buf: Vec<u8>,
    state: Arc<Mutex<SpdyState>>,
    notify: Arc<Notify>,
) {
    let mut inflate = Decompress::new(true);
    let dict = dictionary();
    loop {
        while buf.len() >= 8 {
            let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
            if buf.len() < 8 + len {
                break;
            }
            let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            let flags = buf[4];
            let body: Vec<u8> = buf[8..8 + len].to_vec();
            buf.drain(..8 + len);
            let mut st = state.lock().unwrap();
            if word & 0x8000_0000 == 0 {
                let id = word & 0x7fff_ffff;
                st.data.entry(id).or_default().extend_from_slice(&body);
                if flags & 1 != 0 {
                    st.fin.insert(id);
                }
            } else {
                let kind = word & 0xffff;
                let id = if body.len() >= 4 {
                    u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff
                } else {
                    0
                };
                match kind {
                    2 => {
                        // SYN_REPLY: inflate its header block to keep the zlib stream in step.
                        let mut out = Vec::with_capacity(4096);
                        let mut input = &body[4..];
                        loop {
                            let before = inflate.total_in();
                            let res = inflate.decompress_vec(input, &mut out, FlushDecompress::Sync);
                            input = &input[(inflate.total_in() - before) as usize..];
                            match res {
                                Err(e) if e.needs_dictionary().is_some() => {
                                    inflate.set_dictionary(&dict).expect("set dictionary");
                                }
                                Err(e) => panic!("server header block does not inflate: {e}"),
                                Ok(_) if input.is_empty() => break,
                                Ok(_) => out.reserve(4096),
                            }
                        }
                        st.replied.insert(id);
                        if flags & 1 != 0 {
                            st.fin.insert(id);
                        }
                    }
                    3 => {
                        st.reset.insert(id);
                    }
                    7 => st.closed = true,
                    _ => {}
                }
            }
            drop(st);
            notify.notify_waiters();
        }
        let mut chunk = vec![0u8; 64 << 10];
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    state.lock().unwrap().closed = true;
    notify.notify_waiters();
}

/// An exec or attach session over SPDY, streams opened as kubectl does (error first).
pub struct SpdySession {
    pub conn: Spdy,
    pub error: u32,
    pub stdin: Option<u32>,
    pub stdout: Option<u32>,
    pub stderr: Option<u32>,
    pub resize: Option<u32>,
}

/// What a finished session gave.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub error: String,
}

impl Outcome {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

const T: Duration = Duration::from_secs(60);

impl SpdySession {
    /// Connects and opens the streams.
    pub async fn start(
        url: &str,
        protocol: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> Result<Self> {
        let conn = Spdy::connect(url, &[protocol]).await?;
        let error = conn.open(&[("streamType", "error")]).await?;
        let mut s = SpdySession {
            error,
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
            conn,
        };
        if stdin {
            s.stdin = Some(s.conn.open(&[("streamType", "stdin")]).await?);
        }
        if stdout {
            s.stdout = Some(s.conn.open(&[("streamType", "stdout")]).await?);
        }
        if stderr {
            s.stderr = Some(s.conn.open(&[("streamType", "stderr")]).await?);
        }
        if tty {
            s.resize = Some(s.conn.open(&[("streamType", "resize")]).await?);
        }
        Ok(s)
    }

    pub async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        self.conn
            .send(self.stdin.ok_or_else(|| anyhow!("no stdin"))?, data, false)
            .await
    }

    pub async fn close_stdin(&self) -> Result<()> {
        self.conn
            .send(self.stdin.ok_or_else(|| anyhow!("no stdin"))?, b"", true)
            .await
    }

    pub async fn resize(&self, width: u16, height: u16) -> Result<()> {
        let msg = format!("{{\"Width\":{width},\"Height\":{height}}}");
        self.conn
            .send(
                self.resize.ok_or_else(|| anyhow!("no resize"))?,
                msg.as_bytes(),
                false,
            )
            .await
    }

    /// Waits until stdout contains `needle`.
    pub async fn wait_stdout(&self, needle: &str) -> Result<String> {
        let id = self.stdout.ok_or_else(|| anyhow!("no stdout"))?;
        let d = self
            .conn
            .wait(id, T, |d, _| String::from_utf8_lossy(d).contains(needle))
            .await?;
        Ok(String::from_utf8_lossy(&d).into_owned())
    }

    /// Reads every output stream and the error stream to their ends.
    pub async fn finish(&self) -> Result<Outcome> {
        let mut o = Outcome::default();
        if let Some(id) = self.stdout {
            o.stdout = self.conn.read_to_fin(id, T).await?;
        }
        if let Some(id) = self.stderr {
            o.stderr = self.conn.read_to_fin(id, T).await?;
        }
        o.error = String::from_utf8_lossy(&self.conn.read_to_fin(self.error, T).await?).into_owned();
        Ok(o)
    }
}

/// The exit code in a v4 error-stream Status (0 for Success).
pub fn exit_code(status: &str) -> Result<i32> {
    if status.is_empty() {
        return Ok(0);
    }
    let v: serde_json::Value = serde_json::from_str(status).with_context(|| format!("status {status:?}"))?;
    if v["status"] == "Success" {
        return Ok(0);
    }
    if v["reason"] == "NonZeroExitCode" {
        let causes = v["details"]["causes"].as_array().cloned().unwrap_or_default();
        for c in causes {
            if c["reason"] == "ExitCode" {
                return c["message"]
                    .as_str()
                    .and_then(|m| m.parse().ok())
                    .ok_or_else(|| anyhow!("bad exit code in {status}"));
            }
        }
    }
    bail!("failure status: {status}")
}

// ---------------------------------------------------------------- WebSocket

/// A client WebSocket connection speaking a Kubernetes channel protocol.
pub struct Ws {
    s: TcpStream,
    buf: Vec<u8>,
    /// The negotiated subprotocol.
    pub protocol: String,
}

/// One received message.
#[derive(Debug)]
pub enum WsMsg {
    Binary(Vec<u8>),
    Text(Vec<u8>),
    Close,
}

impl Ws {
    /// Upgrades `url` to WebSocket offering `protocols`; checks the accept key (RFC 6455's example).
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<Ws> {
        let offer = protocols.join(", ");
        let (s, hs, rest) = upgrade(
            url,
            &[
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Protocol", &offer),
            ],
        )
        .await?;
        if hs.status != 101 {
            bail!("upgrade refused: {} {}", hs.status, hs.body);
        }
        if hs.header("Sec-WebSocket-Accept") != Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
            bail!(
                "wrong Sec-WebSocket-Accept: {:?}",
                hs.header("Sec-WebSocket-Accept")
            );
        }
        let protocol = hs.header("Sec-WebSocket-Protocol").unwrap_or("").to_string();
        Ok(Ws {
            s,
            buf: rest,
            protocol,
        })
    }

    /// Sends a masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        let mut f = vec![0x80 | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n < 65536 {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).await?;
        Ok(())
    }

    /// Sends `data` on `channel` (binary message, channel byte first).
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        let mut p = vec![channel];
        p.extend_from_slice(data);
        self.send_frame(2, &p).await
    }

    /// Receives the next data message (answers pings; unmasked server frames only).
    pub async fn recv(&mut self, timeout: Duration) -> Result<WsMsg> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut msg = Vec::new();
        let mut msg_op = 0u8;
        loop {
            if let Some((fin, op, payload, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                match op {
                    0x8 => return Ok(WsMsg::Close),
                    0x9 => {
                        self.send_frame(0xA, &payload).await?;
                        continue;
                    }
                    0xA => continue,
                    0x0 => msg.extend_from_slice(&payload),
                    _ => {
                        msg_op = op;
                        msg = payload;
                    }
                }
                if fin {
                    return Ok(if msg_op == 1 {
                        WsMsg::Text(msg)
                    } else {
                        WsMsg::Binary(msg)
                    });
                }
                continue;
            }
            let mut chunk = vec![0u8; 64 << 10];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut chunk))
                .await
                .map_err(|_| anyhow!("timed out waiting for a websocket message"))??;
            if n == 0 {
                return Ok(WsMsg::Close);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// (fin, opcode, payload, bytes used) of a frame.
type WsFrame = (bool, u8, Vec<u8>, usize);

/// The first whole frame in `b`.
fn parse_frame(b: &[u8]) -> Result<Option<WsFrame>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        bail!("server frames must not be masked");
    }
    let (len, mut off) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if b.len() < off + len {
        return Ok(None);
    }
    let payload = b[off..off + len].to_vec();
    off += len;
    Ok(Some((b[0] & 0x80 != 0, b[0] & 0x0f, payload, off)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dictionary_has_the_drafts_length() {
        assert_eq!(super::dictionary().len(), 1423);
    }
}
