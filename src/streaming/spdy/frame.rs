//! SPDY/3.1 frames: parsing from a byte buffer and encoding, with the zlib header compression (one
//! compression context per direction for the whole connection, primed with the SPDY/3 dictionary).

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dict::DICTIONARY;

/// The protocol version we speak.
pub const VERSION: u16 = 3;
/// FLAG_FIN on SYN_STREAM, SYN_REPLY, HEADERS and DATA.
pub const FLAG_FIN: u8 = 0x01;
/// Largest frame payload we accept from a peer (control frames are far smaller).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest decompressed header block we accept.
const MAX_HEADER_BLOCK: usize = 256 << 10;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// Header name/value pairs (names lower case; several values of one name are NUL-separated).
pub type Headers = Vec<(String, String)>;

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        entries: Vec<(u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type we do not know (ignored, as the spec says).
    Unknown {
        kind: u16,
    },
}

/// A protocol violation: the connection is closed with this text in the log.
#[derive(Debug, thiserror::Error)]
#[error("SPDY protocol error: {0}")]
pub struct ProtocolError(pub String);

fn perr<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// Decodes frames; owns the peer's header compression context.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    /// Takes one whole frame off the front of `buf`; `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if len > MAX_FRAME {
            return perr(format!(
                "frame of {len} bytes is larger than the {MAX_FRAME} accepted"
            ));
        }
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        buf.advance(8);
        let mut body = buf.split_to(len).freeze();
        if word & 0x8000_0000 == 0 {
            let stream_id = word & 0x7fff_ffff;
            if stream_id == 0 {
                return perr("DATA frame on stream 0");
            }
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: body,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return perr(format!("unsupported SPDY version {version}"));
        }
        let kind = (word & 0xffff) as u16;
        let need = |n: usize| -> Result<(), ProtocolError> {
            if len < n {
                perr(format!("control frame type {kind} too short ({len} bytes)"))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let _assoc = body.get_u32();
                let _prio_slot = body.get_u16();
                let headers = self.headers(&body)?;
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                }
            }
            SYN_REPLY | HEADERS => {
                need(4)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&body)?;
                if kind == SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            SETTINGS => {
                need(4)?;
                let n = body.get_u32() as usize;
                if body.len() != n.saturating_mul(8) {
                    return perr(format!("SETTINGS with {n} entries in {len} bytes"));
                }
                let entries = (0..n)
                    .map(|_| {
                        let id = body.get_u32() & 0x00ff_ffff;
                        (id, body.get_u32())
                    })
                    .collect();
                Frame::Settings { entries }
            }
            PING => {
                need(4)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need(4)?;
                let last_stream_id = body.get_u32() & 0x7fff_ffff;
                let status = if body.len() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway {
                    last_stream_id,
                    status,
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            _ => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }

    /// Inflates one header block (continuing the connection's zlib stream) and parses it.
    fn headers(&mut self, input: &[u8]) -> Result<Headers, ProtocolError> {
        let mut out: Vec<u8> = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0usize;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before_in = self.inflate.total_in();
            let before_out = out.len();
            let res = self
                .inflate
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.inflate.total_in() - before_in) as usize;
            match res {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if pos >= input.len() && out.len() < out.capacity() {
                        break;
                    }
                    let progressed = self.inflate.total_in() != before_in || out.len() != before_out;
                    if !progressed {
                        if pos >= input.len() {
                            break;
                        }
                        return perr("header block does not inflate (no progress)");
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| ProtocolError(format!("header dictionary: {e}")))?;
                }
                Err(e) => return perr(format!("header block does not inflate: {e}")),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return perr("header block too large");
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(mut b: &[u8]) -> Result<Headers, ProtocolError> {
    fn take<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], ProtocolError> {
        if b.len() < 4 {
            return perr("truncated header block");
        }
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if b.len() < 4 + n {
            return perr("truncated header block");
        }
        let s = &b[4..4 + n];
        *b = &b[4 + n..];
        Ok(s)
    }
    if b.len() < 4 {
        return perr("empty header block");
    }
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    b = &b[4..];
    if n > 1024 {
        return perr(format!("{n} headers in one block"));
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let name = String::from_utf8_lossy(take(&mut b)?).to_ascii_lowercase();
        let value = String::from_utf8_lossy(take(&mut b)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

/// Encodes frames; owns our header compression context.
pub struct Encoder {
    deflate: Compress,
    primed: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            deflate: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) {
    out.extend_from_slice(&(0x8000_0000u32 | (u32::from(VERSION) << 16) | u32::from(kind)).to_be_bytes());
    let len = payload.len() as u32;
    out.extend_from_slice(&((u32::from(flags) << 24) | (len & 0x00ff_ffff)).to_be_bytes());
    out.extend_from_slice(payload);
}

impl Encoder {
    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                let len = data.len() as u32;
                out.extend_from_slice(&((u32::from(*flags) << 24) | (len & 0x00ff_ffff)).to_be_bytes());
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = Vec::new();
                p.extend_from_slice(&stream_id.to_be_bytes());
                p.extend_from_slice(&0u32.to_be_bytes());
                p.extend_from_slice(&0u16.to_be_bytes());
                self.header_block(headers, &mut p)?;
                control(out, SYN_STREAM, *flags, &p);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    SYN_REPLY
                } else {
                    HEADERS
                };
                let mut p = stream_id.to_be_bytes().to_vec();
                self.header_block(headers, &mut p)?;
                control(out, kind, *flags, &p);
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(out, RST_STREAM, 0, &p);
            }
            Frame::Settings { entries } => {
                let mut p = (entries.len() as u32).to_be_bytes().to_vec();
                for (id, v) in entries {
                    p.extend_from_slice(&(id & 0x00ff_ffff).to_be_bytes());
                    p.extend_from_slice(&v.to_be_bytes());
                }
                control(out, SETTINGS, 0, &p);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_stream_id,
                status,
            } => {
                let mut p = last_stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(out, GOAWAY, 0, &p);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(&delta.to_be_bytes());
                control(out, WINDOW_UPDATE, 0, &p);
            }
            Frame::Unknown { kind } => return perr(format!("cannot encode unknown frame type {kind}")),
        }
        Ok(())
    }

    fn header_block(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (n, v) in headers {
            raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
            raw.extend_from_slice(n.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        if !self.primed {
            self.deflate
                .set_dictionary(DICTIONARY)
                .map_err(|e| ProtocolError(format!("header dictionary: {e}")))?;
            self.primed = true;
        }
        let start = out.len();
        let mut pos = 0usize;
        loop {
            out.reserve(raw.len() + 128);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[pos..], out, FlushCompress::Sync)
                .map_err(|e| ProtocolError(format!("header compression: {e}")))?;
            pos += (self.deflate.total_in() - before) as usize;
            // A sync flush is complete when input is used up and the output buffer was not filled.
            if pos >= raw.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() - start > MAX_FRAME {
                return perr("compressed header block too large");
            }
        }
        Ok(())
    }
}

/// The first value of header `name`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_compressed_headers() {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynStream {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: vec![
                    ("streamtype".into(), "stdout".into()),
                    ("port".into(), "80".into()),
                ],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Ping { id: 7 },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 100,
            },
            Frame::Settings {
                entries: vec![(7, 65536)],
            },
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::GoAway {
                last_stream_id: 3,
                status: 0,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        // Feed byte by byte: partial frames must wait for more input.
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut dec = Decoder::default();
        let mut buf = BytesMut::from(&[0x80, 0x02, 0, 1, 0, 0, 0, 0][..]);
        assert!(dec.decode(&mut buf).is_err(), "version 2");
        let mut buf = BytesMut::from(&[0x80, 0x03, 0, 1, 0, 0, 0, 2, 0, 0][..]);
        assert!(dec.decode(&mut buf).is_err(), "short SYN_STREAM");
        let mut buf = BytesMut::from(&[0x80, 0x03, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert!(dec.decode(&mut buf).is_err(), "huge frame");
        let mut bad = vec![0x80, 0x03, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        bad.extend_from_slice(b"junk");
        let mut buf = BytesMut::from(&bad[..]);
        assert!(dec.decode(&mut buf).is_err(), "garbage header block");
    }
}
