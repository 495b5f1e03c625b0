//! WebSocket (RFC 6455) for exec, attach and port-forward, framing written here (a few dozen lines; a
//! crate would bring its own HTTP handshake we do not need): the handshake key, frames, and the
//! Kubernetes channel protocols. Every binary message starts with a channel byte: for exec and attach
//! 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, and in `v5.channel.k8s.io` `[255, c]` closes channel
//! `c`; for `v4.portforward.k8s.io` port `i` (of the `ports` query) has data channel `2i` and error
//! channel `2i+1`, each opened by a message carrying the port (u16 little-endian).

use std::sync::Arc;

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::channel::{Gone, Out, Sink, Streams};
use super::server::{dispatch, wanted};
use super::tokens::Pending;
use crate::daemon::Daemon;

/// Exec/attach subprotocols, preferred first.
pub const CHANNEL_PROTOCOLS: &[(&str, u8)] = &[("v5.channel.k8s.io", 5), ("v4.channel.k8s.io", 4)];
/// Port-forward subprotocols.
pub const PORTFORWARD_PROTOCOLS: &[(&str, u8)] = &[("v4.portforward.k8s.io", 4)];

/// Largest message accepted from a client.
const MAX_MESSAGE: usize = 1 << 20;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A protocol violation by the client.
#[derive(Debug, thiserror::Error)]
#[error("websocket protocol error: {0}")]
pub struct WsError(String);

/// Takes one frame `(fin, opcode, payload)` off `buf`; `Ok(None)` when incomplete.
pub fn parse_frame(buf: &mut BytesMut) -> Result<Option<(bool, u8, Bytes)>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsError("reserved bits set".into()));
    }
    if b1 & 0x80 == 0 {
        return Err(WsError("client frames must be masked".into()));
    }
    let (len, mut off) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes([buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], buf[8], buf[9]]),
            10,
        ),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(WsError(format!("frame of {len} bytes is too large")));
    }
    let len = len as usize;
    if buf.len() < off + 4 + len {
        buf.reserve(off + 4 + len - buf.len());
        return Ok(None);
    }
    let mask = [buf[off], buf[off + 1], buf[off + 2], buf[off + 3]];
    off += 4;
    buf.advance(off);
    let mut payload = buf.split_to(len);
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(Some((b0 & 0x80 != 0, b0 & 0x0f, payload.freeze())))
}

/// Appends an unmasked server frame.
pub fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n < 65536 {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Serves one upgraded WebSocket connection.
pub async fn run<IO>(d: Arc<Daemon>, p: Pending, io: IO, version: u8, ports: Vec<u16>, what: String)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(256);
    let (gone_tx, gone_rx) = watch::channel(false);
    tokio::spawn(write_loop(
        w,
        out_rx,
        version >= 5 && !matches!(p, Pending::PortForward(_)),
    ));
    // Inbound channels: channel byte → sender.
    let mut inbound: Vec<(u8, mpsc::Sender<Bytes>)> = Vec::new();
    match p {
        Pending::PortForward(req) => {
            if ports.is_empty() {
                tracing::warn!(conn = %what, "websocket port-forward without a ports query");
                let _ = out_tx.send(Out::Finish).await;
                return;
            }
            let netns = match d.sandboxes.pod_context(&req.pod_sandbox_id) {
                Ok(ctx) => ctx.netns_path,
                Err(e) => {
                    tracing::warn!(conn = %what, error = %e, "port-forward to a pod that is gone");
                    let _ = out_tx.send(Out::Finish).await;
                    return;
                }
            };
            for (i, port) in ports.iter().copied().enumerate() {
                let (data_ch, err_ch) = ((2 * i) as u32, (2 * i + 1) as u32);
                let (tx, rx) = mpsc::channel(32);
                inbound.push((data_ch as u8, tx));
                let (data, err) = (
                    Sink::new(data_ch, out_tx.clone()),
                    Sink::new(err_ch, out_tx.clone()),
                );
                let netns = netns.clone();
                let pod = req.pod_sandbox_id.clone();
                tokio::spawn(async move {
                    data.send(&port.to_le_bytes()).await;
                    err.send(&port.to_le_bytes()).await;
                    if let Err(msg) =
                        super::portforward::forward(netns, &port.to_string(), rx, data.clone()).await
                    {
                        err.send(format!("error forwarding port {port} to pod {pod}: {msg}").as_bytes())
                            .await;
                    }
                    err.close().await;
                });
            }
            read_loop(r, inbound, out_tx.clone(), gone_tx, what).await;
            // The client is gone: end the writer, which ends the forwarded connections.
            let _ = out_tx.send(Out::Finish).await;
        }
        p => {
            let want = wanted(&p);
            let mut s = Streams {
                version,
                stdin: None,
                stdout: want.stdout.then(|| Sink::new(1, out_tx.clone())),
                stderr: want.stderr.then(|| Sink::new(2, out_tx.clone())),
                error: Some(Sink::new(3, out_tx.clone())),
                resize: None,
                out: out_tx.clone(),
                gone: Gone(gone_rx),
            };
            if want.stdin {
                let (tx, rx) = mpsc::channel(32);
                inbound.push((0, tx));
                s.stdin = Some(rx);
            }
            if want.tty {
                let (tx, rx) = mpsc::channel(32);
                inbound.push((4, tx));
                s.resize = Some(rx);
            }
            tokio::spawn(read_loop(r, inbound, out_tx, gone_tx, what));
            dispatch(d, p, s).await;
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>, v5: bool) {
    let mut buf = Vec::with_capacity(64 << 10);
    while let Some(o) = rx.recv().await {
        buf.clear();
        let mut finish = false;
        match o {
            Out::Data { stream, data } => {
                let mut p = Vec::with_capacity(data.len() + 1);
                p.push(stream as u8);
                p.extend_from_slice(&data);
                frame(&mut buf, 2, &p);
            }
            Out::Close { stream } => {
                if v5 {
                    frame(&mut buf, 2, &[255, stream as u8]);
                }
            }
            Out::WsControl(op, payload) => frame(&mut buf, op, &payload),
            Out::Control(_) => {}
            Out::Finish => {
                frame(&mut buf, 8, &1000u16.to_be_bytes());
                finish = true;
            }
        }
        if w.write_all(&buf).await.is_err() || finish {
            break;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    mut inbound: Vec<(u8, mpsc::Sender<Bytes>)>,
    out: mpsc::Sender<Out>,
    gone: watch::Sender<bool>,
    what: String,
) {
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut msg = BytesMut::new();
    'read: loop {
        loop {
            let (fin, op, payload) = match parse_frame(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(conn = %what, error = %e, "malformed websocket frame; closing the connection");
                    let _ = out
                        .send(Out::WsControl(8, Bytes::from_static(&[0x03, 0xea])))
                        .await;
                    break 'read;
                }
            };
            match op {
                0x8 => break 'read,
                0x9 => {
                    let _ = out.send(Out::WsControl(0xA, payload)).await;
                    continue;
                }
                0xA => continue,
                0x0..=0x2 => {
                    msg.extend_from_slice(&payload);
                    if msg.len() > MAX_MESSAGE {
                        tracing::warn!(conn = %what, "websocket message too large; closing the connection");
                        break 'read;
                    }
                    if !fin {
                        continue;
                    }
                }
                _ => {
                    tracing::warn!(conn = %what, opcode = op, "unknown websocket opcode; closing the connection");
                    break 'read;
                }
            }
            let m = msg.split().freeze();
            let Some((&ch, data)) = m.split_first() else {
                continue;
            };
            if ch == 255 {
                if let Some(&c) = data.first() {
                    inbound.retain(|(x, _)| *x != c);
                }
                continue;
            }
            if data.is_empty() {
                continue;
            }
            let send = inbound.iter().find(|(x, _)| *x == ch).map(|(_, tx)| tx.clone());
            if let Some(tx) = send
                && tx.send(m.slice(1..)).await.is_err()
            {
                inbound.retain(|(x, _)| *x != ch);
            }
        }
        let n = tokio::select! {
            n = r.read_buf(&mut buf) => n,
            _ = out.closed() => {
                // Our close frame is out: give the client a moment to close first.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    let mut sink = [0u8; 4096];
                    while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
                break;
            }
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(inbound);
    let _ = gone.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_frames_parse_and_unmasked_are_refused() {
        let mut b = BytesMut::from(&[0x82, 0x83, 1, 2, 3, 4, 0, 0, 0][..]);
        let (fin, op, p) = parse_frame(&mut b).unwrap().unwrap();
        assert!(fin);
        assert_eq!(op, 2);
        assert_eq!(&p[..], &[1, 2, 3]);
        let mut b = BytesMut::from(&[0x82, 0x01, 7][..]);
        assert!(parse_frame(&mut b).is_err());
        let mut b = BytesMut::from(&[0x82, 0x85, 1, 2][..]);
        assert!(parse_frame(&mut b).unwrap().is_none());
    }
}
