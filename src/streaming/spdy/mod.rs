//! A SPDY/3.1 server connection, as Kubernetes' `httpstream` speaks it: the client opens streams
//! (SYN_STREAM, answered at once with SYN_REPLY), data flows both ways, FIN half-closes a stream.
//!
//! A reader task parses frames and routes DATA to the stream's channel (bounded: a slow consumer slows
//! the connection); a writer task encodes what the handlers queue ([`Out`]). PINGs are answered. Flow
//! control: we send WINDOW_UPDATEs for every byte consumed (stream and session), and our DATA waits
//! for the peer's windows once the peer does flow control (`flow`). A malformed frame closes the
//! connection with a log line.

pub mod dict;
pub mod flow;
pub mod frame;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use self::flow::{Flow, SETTINGS_INITIAL_WINDOW_SIZE};
use self::frame::{Decoder, Encoder, FLAG_FIN, Frame, Headers};
use super::channel::{Gone, Out};

/// Control frames (replies, window updates, pings) the writer may owe the peer at once; a peer that
/// makes more pile up (by not reading) is dropped.
const MAX_PENDING_CONTROL: usize = 4096;
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

/// Starts serving `io`; `what` names the connection in log lines. A client may have `max_streams`
/// streams open at once; more are reset with REFUSED_STREAM (logged once per connection).
pub fn serve<IO>(io: IO, what: String, max_streams: usize) -> Conn
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(256);
    let (streams_tx, streams_rx) = mpsc::channel(64);
    let (gone_tx, gone_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let (ctl_tx, ctl_rx) = mpsc::channel(MAX_PENDING_CONTROL);
    let flow = Arc::new(Flow::default());
    tokio::spawn(write_loop(w, out_rx, ctl_rx, done_tx, Arc::clone(&flow)));
    let reader = Reader {
        ctl: ctl_tx,
        streams: streams_tx,
        flow,
        what,
        max_streams,
        refused: std::sync::atomic::AtomicBool::new(false),
    };
    tokio::spawn(reader.run(r, gone_tx, done_rx));
    Conn {
        streams: streams_rx,
        out: out_tx,
        gone: Gone(gone_rx),
    }
}

/// The writer's side: encodes into `buf`, writes in batches.
struct Writer<W> {
    w: W,
    enc: Encoder,
    buf: Vec<u8>,
    ctl: mpsc::Receiver<Frame>,
    ctl_open: bool,
    flow: Arc<Flow>,
}

/// The connection cannot go on (write failed, or a frame could not be encoded).
struct Broken;

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn encode(&mut self, f: &Frame) -> Result<(), Broken> {
        self.enc.encode(f, &mut self.buf).map_err(|e| {
            tracing::warn!(error = %e, "cannot encode a frame; closing the connection");
            Broken
        })
    }

    async fn flush(&mut self) -> Result<(), Broken> {
        if !self.buf.is_empty() {
            self.w.write_all(&self.buf).await.map_err(|_| Broken)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Encodes the reader's pending control frames (replies, window updates, pings).
    fn drain_ctl(&mut self) -> Result<(), Broken> {
        while let Ok(f) = self.ctl.try_recv() {
            self.encode(&f)?;
        }
        Ok(())
    }

    /// DATA within the peer's windows: what does not fit waits, control frames still flowing.
    async fn data(&mut self, stream: u32, mut data: Bytes) -> Result<(), Broken> {
        while !data.is_empty() {
            let n = loop {
                if self.flow.enforced() {
                    self.flush().await?;
                }
                tokio::select! {
                    biased;
                    f = self.ctl.recv(), if self.ctl_open => match f {
                        Some(f) => {
                            self.encode(&f)?;
                            self.flush().await?;
                        }
                        None => self.ctl_open = false,
                    },
                    n = self.flow.take(stream, data.len()) => break n,
                }
            };
            let part = data.split_to(n);
            self.encode(&Frame::Data {
                stream_id: stream,
                flags: 0,
                data: part,
            })?;
        }
        Ok(())
    }

    /// Handles one queued item; `Ok(true)` at [`Out::Finish`].
    async fn put(&mut self, o: Out) -> Result<bool, Broken> {
        match o {
            Out::Data { stream, data } => self.data(stream, data).await?,
            Out::Close { stream } => {
                self.flow.close(stream);
                self.encode(&Frame::Data {
                    stream_id: stream,
                    flags: FLAG_FIN,
                    data: Bytes::new(),
                })?;
            }
            Out::Control(f) => self.encode(&f)?,
            Out::Finish => return Ok(true),
        }
        Ok(false)
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Out>,
    ctl: mpsc::Receiver<Frame>,
    done: watch::Sender<bool>,
    flow: Arc<Flow>,
) {
    let mut wr = Writer {
        w,
        enc: Encoder::default(),
        buf: Vec::with_capacity(64 << 10),
        ctl,
        ctl_open: true,
        flow,
    };
    let _ = async {
        loop {
            wr.flush().await?;
            let item = tokio::select! {
                biased;
                f = wr.ctl.recv(), if wr.ctl_open => match f {
                    Some(f) => Err(f),
                    None => {
                        wr.ctl_open = false;
                        continue;
                    }
                },
                o = rx.recv() => match o {
                    Some(o) => Ok(o),
                    None => return Ok::<(), Broken>(()),
                },
            };
            let mut next = Some(item);
            // Batch what is queued into one write, control frames first.
            while let Some(item) = next.take() {
                match item {
                    Err(f) => wr.encode(&f)?,
                    Ok(o) => {
                        if wr.put(o).await? {
                            wr.drain_ctl()?;
                            return wr.flush().await;
                        }
                    }
                }
                wr.drain_ctl()?;
                if wr.buf.len() < (256 << 10) {
                    next = rx.try_recv().ok().map(Ok);
                }
            }
        }
    }
    .await;
    let _ = wr.w.flush().await;
    let _ = wr.w.shutdown().await;
    let _ = done.send(true);
}

/// The reader's side.
struct Reader {
    /// Control frames for the writer (never waited on: see [`MAX_PENDING_CONTROL`]).
    ctl: mpsc::Sender<Frame>,
    streams: mpsc::Sender<Incoming>,
    flow: Arc<Flow>,
    what: String,
    /// Most streams the client may have open at once.
    max_streams: usize,
    /// Whether a refusal was logged already.
    refused: std::sync::atomic::AtomicBool,
}

/// Why reading stops.
enum Stop {
    /// EOF, GOAWAY, or our side is finished.
    Done,
    /// A protocol error or an abusive peer: logged, GOAWAY sent.
    Bad(String),
}

impl Reader {
    fn reply(&self, f: Frame) -> Result<(), Stop> {
        match self.ctl.try_send(f) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(Stop::Bad("the peer does not read our control frames".into()))
            }
            // The writer is gone: nothing more to say.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    async fn run<R: AsyncRead + Unpin>(
        self,
        mut r: R,
        gone: watch::Sender<bool>,
        mut done: watch::Receiver<bool>,
    ) {
        let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
        let mut last_id = 0u32;
        let stop = self.frames(&mut r, &mut open, &mut last_id, &mut done).await;
        if let Stop::Bad(e) = stop {
            tracing::warn!(conn = %self.what, error = %e, "closing the SPDY connection");
            let _ = self.ctl.try_send(Frame::GoAway {
                last_stream_id: last_id,
                status: 1,
            });
        }
        drop(open);
        let Reader { ctl, streams, .. } = self;
        drop(streams);
        let _ = gone.send(true);
        drop(ctl);
        // The writer may still flush what the handler queued; let the client close first (closing
        // with unread input would reset the connection and could lose our last frames).
        if !*done.borrow() {
            let _ = done.wait_for(|d| *d).await;
        }
        let _ = tokio::time::timeout(LINGER, async {
            let mut sink = [0u8; 4096];
            while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    async fn frames<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        open: &mut HashMap<u32, mpsc::Sender<Bytes>>,
        last_id: &mut u32,
        done: &mut watch::Receiver<bool>,
    ) -> Stop {
        let mut dec = Decoder::default();
        let mut buf = BytesMut::with_capacity(64 << 10);
        loop {
            loop {
                let frame = match dec.decode(&mut buf) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return Stop::Bad(format!("malformed frame: {e}")),
                };
                if let Err(stop) = self.frame(frame, open, last_id).await {
                    return stop;
                }
            }
            let n = tokio::select! {
                n = r.read_buf(&mut buf) => n,
                _ = done.wait_for(|d| *d) => return Stop::Done,
            };
            match n {
                Ok(0) => return Stop::Done,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(conn = %self.what, error = %e, "read failed");
                    return Stop::Done;
                }
            }
        }
    }

    async fn frame(
        &self,
        frame: Frame,
        open: &mut HashMap<u32, mpsc::Sender<Bytes>>,
        last_id: &mut u32,
    ) -> Result<(), Stop> {
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let full = open.len() >= self.max_streams;
                if full && !self.refused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        conn = %self.what,
                        limit = self.max_streams,
                        "refusing SPDY streams beyond stream.max_streams_per_connection (RST_STREAM REFUSED_STREAM)"
                    );
                }
                if stream_id % 2 == 0 || stream_id <= *last_id || full {
                    // PROTOCOL_ERROR (1) or REFUSED_STREAM (3).
                    let status = if full { 3 } else { 1 };
                    return self.reply(Frame::RstStream { stream_id, status });
                }
                *last_id = stream_id;
                self.flow.open(stream_id);
                self.reply(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Vec::new(),
                })?;
                let (tx, rx) = mpsc::channel(32);
                if flags & FLAG_FIN == 0 {
                    open.insert(stream_id, tx);
                }
                if self
                    .streams
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
                    self.reply(Frame::WindowUpdate { stream_id, delta: n })?;
                    self.reply(Frame::WindowUpdate {
                        stream_id: 0,
                        delta: n,
                    })?;
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
            Frame::Ping { id } => self.reply(Frame::Ping { id })?,
            Frame::GoAway { .. } => return Err(Stop::Done),
            Frame::SynReply { stream_id, .. } => self.reply(Frame::RstStream { stream_id, status: 1 })?,
            Frame::WindowUpdate { stream_id, delta } => self.flow.update(stream_id, delta),
            Frame::Settings { entries } => {
                for (id, v) in entries {
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        self.flow.initial_window(v);
                    }
                }
            }
            Frame::Unknown { .. } => {}
        }
        Ok(())
    }
}
