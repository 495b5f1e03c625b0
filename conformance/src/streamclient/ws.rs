//! A client WebSocket connection (RFC 6455, masked frames) for the Kubernetes channel protocols.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::upgrade;

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
