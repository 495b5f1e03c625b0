//! A SPDY/3.1 server connection, as Kubernetes' `httpstream` speaks it: the client opens streams
//! (SYN_STREAM, answered at once with SYN_REPLY), data flows both ways, FIN half-closes a stream.
//!
//! A reader task parses frames and routes DATA to the stream's channel (bounded: a slow consumer slows
//! the connection); a writer task encodes what the handlers queue ([`Out`]). PINGs are answered. Flow
//! control: we send WINDOW_UPDATEs for every byte consumed (stream and session), so peers that enforce
//! windows never stall; our own sending does not wait for the peer's windows, since the Kubernetes
//! clients (spdystream) never send WINDOW_UPDATE. A malformed frame closes the connection with a log line.

pub mod dict;
pub mod frame;

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use self::frame::{Decoder, Encoder, FLAG_FIN, Frame, Headers};
use super::channel::{Gone, Out};

/// Most streams one connection may open.
const MAX_STREAMS: usize = 4096;
/// How long a finished connection waits for the client to close before dropping it.
const LINGER: Duration = Duration::from_secs(5);

/// A stream the client opened.
#[derive(Debug)]
pub struct Incoming {
    /// Its stream ID.
    pub id: u32,
    /// Its SYN_STREAM headers.
    pub headers: Headers,
    /// Its data; closed at the client's FIN or RST.
    pub rx: mpsc::Receiver<Bytes>,
}

/// A served SPDY connection.
pub struct Conn {
    /// Streams as the client opens them; closed when the connection ends.
    pub streams: mpsc::Receiver<Incoming>,
    /// The writer queue.
    pub out: mpsc::Sender<Out>,
    /// Set when the client is gone.
    pub gone: Gone,
}

/// Starts serving `io`; `what` names the connection in log lines.
pub fn serve<IO>(io: IO, what: String) -> Conn
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(256);
    let (streams_tx, streams_rx) = mpsc::channel(64);
    let (gone_tx, gone_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    tokio::spawn(write_loop(w, out_rx, done_tx, what.clone()));
    tokio::spawn(read_loop(r, out_tx.clone(), streams_tx, gone_tx, done_rx, what));
    Conn {
        streams: streams_rx,
        out: out_tx,
        gone: Gone(gone_rx),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Out>,
    done: watch::Sender<bool>,
    what: String,
) {
    let mut enc = Encoder::default();
    let mut buf = Vec::with_capacity(64 << 10);
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Batch what is queued into one write.
        while let Some(o) = next.take() {
            let frame = match o {
                Out::Data { stream, data } => Frame::Data {
                    stream_id: stream,
                    flags: 0,
                    data,
                },
                Out::Close { stream } => Frame::Data {
                    stream_id: stream,
                    flags: FLAG_FIN,
                    data: Bytes::new(),
                },
                Out::Control(f) => f,
                Out::WsControl(..) => continue,
                Out::Finish => {
                    let _ = w.write_all(&buf).await;
                    break 'outer;
                }
            };
            if let Err(e) = enc.encode(&frame, &mut buf) {
                tracing::warn!(conn = %what, error = %e, "cannot encode a frame; closing the connection");
                break 'outer;
            }
            if buf.len() < (256 << 10) {
                next = rx.try_recv().ok();
            }
        }
        if w.write_all(&buf).await.is_err() {
            break;
        }
        buf.clear();
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
    let _ = done.send(true);
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    out: mpsc::Sender<Out>,
    streams: mpsc::Sender<Incoming>,
    gone: watch::Sender<bool>,
    mut done: watch::Receiver<bool>,
    what: String,
) {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut opened = 0usize;
    let mut last_id = 0u32;
    'read: loop {
        loop {
            let frame = match dec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(conn = %what, error = %e, "malformed SPDY frame; closing the connection");
                    let _ = out
                        .send(Out::Control(Frame::GoAway {
                            last_stream_id: last_id,
                            status: 1,
                        }))
                        .await;
                    break 'read;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                } => {
                    if stream_id % 2 == 0 || stream_id <= last_id || opened >= MAX_STREAMS {
                        // PROTOCOL_ERROR (1) or REFUSED_STREAM (3).
                        let status = if opened >= MAX_STREAMS { 3 } else { 1 };
                        let _ = out
                            .send(Out::Control(Frame::RstStream { stream_id, status }))
                            .await;
                        continue;
                    }
                    last_id = stream_id;
                    opened += 1;
                    let _ = out
                        .send(Out::Control(Frame::SynReply {
                            stream_id,
                            flags: 0,
                            headers: Vec::new(),
                        }))
                        .await;
                    let (tx, rx) = mpsc::channel(32);
                    if flags & FLAG_FIN == 0 {
                        open.insert(stream_id, tx);
                    }
                    if streams
                        .send(Incoming {
                            id: stream_id,
                            headers,
                            rx,
                        })
                        .await
                        .is_err()
                    {
                        open.remove(&stream_id);
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let n = data.len() as u32;
                    if !data.is_empty()
                        && let Some(tx) = open.get(&stream_id)
                        && tx.send(data).await.is_err()
                    {
                        open.remove(&stream_id);
                    }
                    if n > 0 {
                        for id in [stream_id, 0] {
                            let _ = out
                                .send(Out::Control(Frame::WindowUpdate {
                                    stream_id: id,
                                    delta: n,
                                }))
                                .await;
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        open.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    open.remove(&stream_id);
                }
                Frame::Headers { stream_id, flags, .. } => {
                    if flags & FLAG_FIN != 0 {
                        open.remove(&stream_id);
                    }
                }
                Frame::Ping { id } => {
                    let _ = out.send(Out::Control(Frame::Ping { id })).await;
                }
                Frame::GoAway { .. } => break 'read,
                Frame::SynReply { stream_id, .. } => {
                    let _ = out
                        .send(Out::Control(Frame::RstStream { stream_id, status: 1 }))
                        .await;
                }
                Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
            }
        }
        let n = tokio::select! {
            n = r.read_buf(&mut buf) => n,
            _ = done.wait_for(|d| *d) => break 'read,
        };
        match n {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(conn = %what, error = %e, "read failed");
                break;
            }
        }
    }
    drop(open);
    drop(streams);
    let _ = gone.send(true);
    drop(out);
    // The writer may still flush what the handler queued; let the client close first (closing with
    // unread input would reset the connection and could lose our last frames).
    if !*done.borrow() {
        let _ = done.wait_for(|d| *d).await;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
