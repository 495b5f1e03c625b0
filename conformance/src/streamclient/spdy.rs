//! A client SPDY/3.1 connection (frames, zlib header compression with the SPDY/3 dictionary) and the
//! Kubernetes remotecommand session on it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use super::{dictionary, upgrade};

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

    /// Sends SETTINGS with `(id, value)` entries (7: initial window size).
    pub async fn settings(&self, entries: &[(u32, u32)]) -> Result<()> {
        let mut p = (entries.len() as u32).to_be_bytes().to_vec();
        for (id, v) in entries {
            p.extend_from_slice(&(id & 0x00ff_ffff).to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        self.send_raw(&control(4, 0, &p)).await
    }

    /// Sends WINDOW_UPDATE for stream `id` (0: the session).
    pub async fn window_update(&self, id: u32, delta: u32) -> Result<()> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&delta.to_be_bytes());
        self.send_raw(&control(9, 0, &p)).await
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
        Self::open_streams(conn, stdin, stdout, stderr, tty).await
    }

    /// Opens the streams on a connection (error, stdin, stdout, stderr, resize, as kubectl does).
    pub async fn open_streams(
        conn: Spdy,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> Result<Self> {
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
