//! WebSocket (RFC 6455) for exec, attach and port-forward: the handshake is answered by the streaming
//! server's hyper upgrade (`accept_key`), framing, masking, fragments, ping/pong and close are
//! `tokio-tungstenite`'s, over the upgraded connection; the Kubernetes channel protocols are here.
//! Every binary message starts with a channel byte: for exec and attach 0 stdin, 1 stdout, 2 stderr,
//! 3 error, 4 resize, and in `v5.channel.k8s.io` `[255, c]` closes channel `c`; for
//! `v4.portforward.k8s.io` port `i` (of the `ports` query) has data channel `2i` and error channel
//! `2i+1`, each opened by a message carrying the port (u16 little-endian).

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::channel::{Gone, Out, Sink, Streams};
use super::server::{dispatch, wanted};
use super::tokens::Pending;
use crate::daemon::Daemon;

/// Exec/attach subprotocols, preferred first.
pub const CHANNEL_PROTOCOLS: &[(&str, u8)] = &[("v5.channel.k8s.io", 5), ("v4.channel.k8s.io", 4)];
/// Port-forward subprotocols.
pub const PORTFORWARD_PROTOCOLS: &[(&str, u8)] = &[("v4.portforward.k8s.io", 4)];

/// Largest message (and frame) accepted from a client.
const MAX_MESSAGE: usize = 1 << 20;

type WsWrite<IO> = futures::stream::SplitSink<WebSocketStream<IO>, Message>;
type WsRead<IO> = futures::stream::SplitStream<WebSocketStream<IO>>;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Serves one upgraded WebSocket connection.
pub async fn run<IO>(d: Arc<Daemon>, p: Pending, io: IO, version: u8, ports: Vec<u16>, what: String)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (w, r) = ws.split();
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

async fn write_loop<IO>(mut w: WsWrite<IO>, mut rx: mpsc::Receiver<Out>, v5: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(o) = rx.recv().await {
        let msg = match o {
            Out::Data { stream, data } => {
                let mut p = Vec::with_capacity(data.len() + 1);
                p.push(stream as u8);
                p.extend_from_slice(&data);
                Some(Message::Binary(p.into()))
            }
            Out::Close { stream } if v5 => {
                Some(Message::Binary(Bytes::copy_from_slice(&[255, stream as u8])))
            }
            Out::Close { .. } | Out::Control(_) => None,
            Out::Finish => {
                let _ = w
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: Utf8Bytes::default(),
                    })))
                    .await;
                break;
            }
        };
        if let Some(msg) = msg
            && let Err(e) = w.feed(msg).await
        {
            tracing::debug!(error = %e, "websocket write failed");
            break;
        }
        // Flushed once nothing more is queued: output is interactive.
        if rx.is_empty()
            && let Err(e) = w.flush().await
        {
            tracing::debug!(error = %e, "websocket write failed");
            break;
        }
    }
    let _ = w.close().await;
}

async fn read_loop<IO>(
    mut r: WsRead<IO>,
    mut inbound: Vec<(u8, mpsc::Sender<Bytes>)>,
    out: mpsc::Sender<Out>,
    gone: watch::Sender<bool>,
    what: String,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let next = tokio::select! {
            m = r.next() => m,
            _ = out.closed() => {
                // Our close frame is out: give the client a moment to close first.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    while matches!(r.next().await, Some(Ok(m)) if !m.is_close()) {}
                })
                .await;
                break;
            }
        };
        let m: Bytes = match next {
            None | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Binary(b))) => b,
            Some(Ok(Message::Text(t))) => Bytes::from(t),
            // Pongs to pings are queued by tungstenite itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(e)) => {
                tracing::warn!(conn = %what, error = %e, "websocket error; closing the connection");
                break;
            }
        };
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
}
