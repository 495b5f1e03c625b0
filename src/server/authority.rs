//! Lets gRPC clients that name the socket path as `:authority` talk to crustd.
//!
//! gRPC's C core (Python, C++, Ruby clients) since 1.57 sends the percent-encoded socket path for a `unix:`
//! target (`run%2Fcrust%2Fcrust.sock`), grpc-java the path itself. h2 parses `:authority` with
//! `http::uri::Authority`, refuses both, and resets every stream with PROTOCOL_ERROR; no h2, hyper or tonic
//! option turns that check off. [`AuthorityFix`] sits between the accepted socket and tonic and reads the
//! client's frames: it decodes the connection's first header block and, when that block's `:authority` is
//! one `http::uri::Authority` refuses, re-encodes every header block of the connection with that value
//! replaced by `localhost`. Otherwise (kubelet, crictl: grpc-go sends `localhost`) the rest of the
//! connection passes through untouched, at no cost. The first block decides for the whole connection: a
//! gRPC channel sends one authority on every call.
//!
//! A rewritten block is HPACK-encoded as literals without indexing, so the server's dynamic table is never
//! used and stays empty, while the layer's own decoder follows the client's encoder. The frames are sent
//! without padding, keep the HEADERS priority fields and END_STREAM, and are split into CONTINUATION frames
//! of at most 16384 bytes (the least SETTINGS_MAX_FRAME_SIZE a server can have). Server-to-client bytes
//! are never touched. A header block is held whole while it is decided or rewritten, up to [`MAX_BLOCK`]
//! bytes (received and decoded): past that, a connection still being decided passes through unchanged (h2
//! applies its own limits) and a rewritten one is closed. Malformed framing likewise passes through to h2
//! while undecided, and closes a rewritten connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::Decoder;
use loona_hpack::decoder::DecoderError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEAD_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Largest frame payload written: the least SETTINGS_MAX_FRAME_SIZE allowed, so within any server's.
const MAX_OUT_FRAME: usize = 16_384;
/// Largest header block held: its frames as received, and its decoded fields (RFC 7541 sizes).
pub const MAX_BLOCK: usize = 1 << 20;
/// The dynamic table size the client may use: SETTINGS_HEADER_TABLE_SIZE's default; crustd's server
/// never advertises another.
const HEADER_TABLE_SIZE: usize = 4096;
/// What replaces an `:authority` that `http::uri::Authority` refuses.
const REPLACEMENT: &[u8] = b"localhost";

/// Why a rewritten connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("header block of stream {stream} is larger than {MAX_BLOCK} bytes")]
    BlockTooLarge { stream: u32 },
    #[error("frame of type {frame_type:#x} on stream {stream} inside the header block of stream {block}")]
    ExpectedContinuation { frame_type: u8, stream: u32, block: u32 },
    #[error("HEADERS frame of stream {stream}: padding or priority longer than the frame")]
    BadPadding { stream: u32 },
    #[error("header block of stream {stream}: HPACK: {reason}")]
    Hpack { stream: u32, reason: DecoderError },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No header block seen yet: frames are held only while the first block is read.
    Deciding,
    /// The first block needed a new authority: every block is re-encoded.
    Rewriting,
    /// The first block was fine (or not ours to judge): everything passes through.
    Passing,
}

#[derive(Debug, Clone, Copy)]
enum Frame {
    /// Reading a 9-byte frame header.
    Head,
    /// Copying this many payload bytes through.
    Forward(usize),
    /// Reading this many payload bytes of a HEADERS or CONTINUATION frame.
    Collect(usize),
}

/// A header block being read.
struct Block {
    stream: u32,
    /// The HEADERS frame's flags.
    flags: u8,
    priority: Option<[u8; 5]>,
    /// The HPACK fragment so far.
    fragment: Vec<u8>,
    /// Its frames as received (while deciding, to pass them on unchanged).
    raw: Vec<u8>,
}

/// The client-to-server byte stream's state: `feed` takes bytes as read and appends what the server
/// is to read.
struct Rewriter {
    mode: Mode,
    preface_left: usize,
    head: [u8; FRAME_HEAD_LEN],
    head_len: usize,
    frame: Frame,
    /// The current frame's type and flags.
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
    block: Option<Block>,
    decoder: Decoder<'static>,
}

impl Rewriter {
    fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        Rewriter {
            mode: Mode::Deciding,
            preface_left: PREFACE_LEN,
            head: [0; FRAME_HEAD_LEN],
            head_len: 0,
            frame: Frame::Head,
            kind: 0,
            flags: 0,
            payload: Vec::new(),
            block: None,
            decoder,
        }
    }

    fn passing(&self) -> bool {
        self.mode == Mode::Passing
    }

    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        while !input.is_empty() {
            if self.mode == Mode::Passing {
                out.extend_from_slice(input);
                return Ok(());
            }
            if self.preface_left > 0 {
                // h2 checks the preface itself.
                let n = self.preface_left.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.preface_left -= n;
                input = &input[n..];
                continue;
            }
            match self.frame {
                Frame::Head => {
                    let n = (FRAME_HEAD_LEN - self.head_len).min(input.len());
                    self.head[self.head_len..self.head_len + n].copy_from_slice(&input[..n]);
                    self.head_len += n;
                    input = &input[n..];
                    if self.head_len == FRAME_HEAD_LEN {
                        self.head_len = 0;
                        self.start_frame(out)?;
                    }
                }
                Frame::Forward(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.frame = if left == n {
                        Frame::Head
                    } else {
                        Frame::Forward(left - n)
                    };
                }
                Frame::Collect(left) => {
                    let n = left.min(input.len());
                    self.payload.extend_from_slice(&input[..n]);
                    if let Some(b) = self.block.as_mut().filter(|_| self.mode == Mode::Deciding) {
                        b.raw.extend_from_slice(&input[..n]);
                    }
                    input = &input[n..];
                    if left == n {
                        self.end_frame(out)?;
                    } else {
                        self.frame = Frame::Collect(left - n);
                    }
                }
            }
        }
        Ok(())
    }

    /// A frame header is complete in `self.head`.
    fn start_frame(&mut self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let h = self.head;
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        self.kind = h[3];
        self.flags = h[4];
        match &self.block {
            Some(b) if self.kind != CONTINUATION || stream != b.stream => {
                let err = FrameError::ExpectedContinuation {
                    frame_type: self.kind,
                    stream,
                    block: b.stream,
                };
                return self.give_up(err, out, true);
            }
            Some(_) => {}
            None if self.kind == HEADERS => {
                self.block = Some(Block {
                    stream,
                    flags: self.flags,
                    priority: None,
                    fragment: Vec::new(),
                    raw: Vec::new(),
                });
            }
            None => {
                out.extend_from_slice(&h);
                self.frame = if len == 0 {
                    Frame::Head
                } else {
                    Frame::Forward(len)
                };
                return Ok(());
            }
        }
        // The frames as received while deciding, the fragment while rewriting.
        let held = self
            .block
            .as_ref()
            .map_or(0, |b| b.raw.len().max(b.fragment.len()));
        if held + FRAME_HEAD_LEN + len > MAX_BLOCK {
            return self.give_up(FrameError::BlockTooLarge { stream }, out, true);
        }
        if let Some(b) = self.block.as_mut().filter(|_| self.mode == Mode::Deciding) {
            b.raw.extend_from_slice(&h);
        }
        self.payload.clear();
        if len == 0 {
            self.end_frame(out)
        } else {
            self.frame = Frame::Collect(len);
            Ok(())
        }
    }

    /// The current HEADERS or CONTINUATION frame's payload is complete in `self.payload`.
    fn end_frame(&mut self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        self.frame = Frame::Head;
        let Some(b) = self.block.as_mut() else {
            return Ok(());
        };
        let mut p = &self.payload[..];
        if self.kind == HEADERS {
            let mut pad = 0;
            if self.flags & PADDED != 0 {
                let Some((&n, rest)) = p.split_first() else {
                    let stream = b.stream;
                    return self.give_up(FrameError::BadPadding { stream }, out, false);
                };
                pad = usize::from(n);
                p = rest;
            }
            if self.flags & PRIORITY != 0 {
                match p.split_first_chunk::<5>() {
                    Some((prio, rest)) => {
                        b.priority = Some(*prio);
                        p = rest;
                    }
                    None => {
                        let stream = b.stream;
                        return self.give_up(FrameError::BadPadding { stream }, out, false);
                    }
                }
            }
            if pad > p.len() {
                let stream = b.stream;
                return self.give_up(FrameError::BadPadding { stream }, out, false);
            }
            p = &p[..p.len() - pad];
        }
        b.fragment.extend_from_slice(p);
        if self.flags & END_HEADERS != 0 {
            self.end_block(out)
        } else {
            Ok(())
        }
    }

    /// The header block is complete: decode it, then pass it on or re-encode it.
    fn end_block(&mut self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let Some(b) = self.block.take() else {
            return Ok(());
        };
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let mut replaced = None;
        let decoded = self.decoder.decode_with_cb(&b.fragment, |name, value| {
            size += name.len() + value.len() + 32;
            if size > MAX_BLOCK {
                return;
            }
            if &*name == b":authority" && http::uri::Authority::try_from(&*value).is_err() {
                replaced = Some(String::from_utf8_lossy(&value).into_owned());
                fields.push((name.into_owned(), REPLACEMENT.to_vec()));
            } else {
                fields.push((name.into_owned(), value.into_owned()));
            }
        });
        let stream = b.stream;
        let result = match decoded {
            Err(reason) => Err(FrameError::Hpack { stream, reason }),
            Ok(()) if size > MAX_BLOCK => Err(FrameError::BlockTooLarge { stream }),
            Ok(()) => Ok(()),
        };
        if self.mode == Mode::Deciding {
            if let Err(e) = result {
                self.block = Some(b);
                return self.give_up(e, out, false);
            }
            let Some(authority) = replaced else {
                out.extend_from_slice(&b.raw);
                self.mode = Mode::Passing;
                return Ok(());
            };
            tracing::debug!(
                %authority,
                "client's :authority is not a host: this connection's requests are read as for localhost"
            );
            self.mode = Mode::Rewriting;
        }
        result?;
        encode_block(&b, &fields, out);
        Ok(())
    }

    /// Malformed or oversized: while deciding, the held frames (and the current frame header, when
    /// `with_head`) go on unchanged and so does the rest of the connection, for h2 to judge; a rewritten
    /// connection ends.
    fn give_up(&mut self, e: FrameError, out: &mut Vec<u8>, with_head: bool) -> Result<(), FrameError> {
        if self.mode != Mode::Deciding {
            return Err(e);
        }
        if let Some(b) = self.block.take() {
            out.extend_from_slice(&b.raw);
        }
        if with_head {
            out.extend_from_slice(&self.head);
        }
        self.mode = Mode::Passing;
        Ok(())
    }
}

/// Writes `fields` as a header block of `b`'s stream: literals without indexing, one HEADERS frame
/// (with `b`'s priority and END_STREAM) and CONTINUATION frames, none longer than [`MAX_OUT_FRAME`].
fn encode_block(b: &Block, fields: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) {
    let mut enc = Vec::new();
    for (name, value) in fields {
        enc.push(0x00); // literal header field without indexing, new name
        put_string(&mut enc, name);
        put_string(&mut enc, value);
    }
    let prio_len = if b.priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = enc.split_at(enc.len().min(MAX_OUT_FRAME - prio_len));
    let mut flags = b.flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    put_head(out, first.len() + prio_len, HEADERS, flags, b.stream);
    if let Some(p) = &b.priority {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, r) = rest.split_at(rest.len().min(MAX_OUT_FRAME));
        rest = r;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        put_head(out, chunk.len(), CONTINUATION, flags, b.stream);
        out.extend_from_slice(chunk);
    }
}

fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    // len <= MAX_OUT_FRAME, so it fits the 24-bit field.
    let len = len.to_be_bytes();
    out.extend_from_slice(&len[len.len() - 3..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// An HPACK string literal without Huffman coding: a 7-bit prefix length, then the bytes.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 0x7f {
        out.push(n as u8);
    } else {
        out.push(0x7f);
        n -= 0x7f;
        while n >= 0x80 {
            out.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

/// An accepted connection as tonic reads it: client-to-server bytes through the rewriter until the
/// connection is known to pass through, server-to-client bytes untouched.
pub struct AuthorityFix<S> {
    inner: S,
    /// `None` once the connection passes through and `out` is drained.
    fix: Option<Box<Rewriter>>,
    out: Vec<u8>,
    out_pos: usize,
    scratch: Vec<u8>,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection (nothing read from it yet).
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            fix: Some(Box::new(Rewriter::new())),
            out: Vec::new(),
            out_pos: 0,
            scratch: vec![0; 16 << 10],
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let fix = match this.fix.as_mut() {
                Some(f) if !f.passing() => f,
                Some(_) => {
                    this.fix = None;
                    this.out = Vec::new();
                    this.scratch = Vec::new();
                    continue;
                }
                None => return Pin::new(&mut this.inner).poll_read(cx, buf),
            };
            let mut rb = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let read = rb.filled();
            if read.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = fix.feed(read, &mut this.out) {
                tracing::warn!(error = %e, "closing a gRPC connection");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
