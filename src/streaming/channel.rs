//! What the protocol handlers (exec, attach, port-forward) see of a connection, whatever carries it
//! (SPDY streams or WebSocket channels): inbound byte channels, outbound [`Sink`]s feeding one ordered
//! writer queue, and a `gone` flag set when the client went away.

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::spdy::frame::Frame;

/// What the connection's writer task is asked to send. `stream` is a SPDY stream ID or a WebSocket
/// channel number.
#[derive(Debug)]
pub enum Out {
    /// Bytes on a stream.
    Data { stream: u32, data: Bytes },
    /// End of our side of a stream (SPDY FIN; WebSocket v5 close-channel message).
    Close { stream: u32 },
    /// A SPDY control frame (replies, pings, window updates).
    Control(Frame),
    /// Everything is sent: flush, close our side, end the connection.
    Finish,
}

/// Largest chunk of data put in one frame.
pub const CHUNK: usize = 32 << 10;

/// Our end of one outbound stream.
#[derive(Debug, Clone)]
pub struct Sink {
    stream: u32,
    tx: mpsc::Sender<Out>,
}

impl Sink {
    /// A sink for `stream` on the connection whose writer reads `tx`.
    pub fn new(stream: u32, tx: mpsc::Sender<Out>) -> Self {
        Sink { stream, tx }
    }

    /// Queues `data` (split into frames); false when the connection is gone.
    pub async fn send(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            let out = Out::Data {
                stream: self.stream,
                data: Bytes::copy_from_slice(chunk),
            };
            if self.tx.send(out).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Resolves when the connection's writer is gone (nothing can be sent any more).
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Ends our side of the stream.
    pub async fn close(&self) {
        let _ = self.tx.send(Out::Close { stream: self.stream }).await;
    }
}

/// The client side went away (read error or EOF on the connection).
#[derive(Debug, Clone)]
pub struct Gone(pub watch::Receiver<bool>);

impl Gone {
    /// Resolves once the client is gone.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|g| *g).await;
    }

    /// Whether the client is gone now.
    pub fn now(&self) -> bool {
        *self.0.borrow()
    }
}

/// The streams of one exec or attach session.
#[derive(Debug)]
pub struct Streams {
    /// The remotecommand protocol version (1 for `channel.k8s.io` … 5 for `v5.channel.k8s.io`).
    pub version: u8,
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<Sink>,
    pub stderr: Option<Sink>,
    pub error: Option<Sink>,
    pub resize: Option<mpsc::Receiver<Bytes>>,
    /// The connection's writer queue (to send [`Out::Finish`]).
    pub out: mpsc::Sender<Out>,
    pub gone: Gone,
}

impl Streams {
    /// Reports the outcome on the error stream, closes every output stream and ends the connection.
    /// `exit`: `Ok(code)` of the process, or `Err(message)` when it could not run.
    pub async fn finish(mut self, exit: std::result::Result<i32, String>) {
        for s in [self.stdout.take(), self.stderr.take()].into_iter().flatten() {
            s.close().await;
        }
        if let Some(e) = self.error.take() {
            if let Some(body) = status_message(self.version, &exit) {
                e.send(&body).await;
            }
            e.close().await;
        }
        let _ = self.out.send(Out::Finish).await;
    }
}

/// The error stream's message: v4+ a metav1 Status JSON (also for success), older versions plain text
/// for failures only.
pub fn status_message(version: u8, exit: &std::result::Result<i32, String>) -> Option<Vec<u8>> {
    let text = match exit {
        Ok(0) => None,
        Ok(code) => Some(format!(
            "command terminated with non-zero exit code: exit status {code}"
        )),
        Err(e) => Some(e.clone()),
    };
    if version < 4 {
        return text.map(String::into_bytes);
    }
    let v = match exit {
        Ok(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": text,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": e,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    serde_json::to_vec(&v).ok()
}

/// A terminal size from the resize stream (`{"Width":80,"Height":24}`, one JSON object after another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Splits complete JSON sizes off the front of `buf`, leaving an incomplete tail.
pub fn parse_sizes(buf: &mut Vec<u8>) -> Vec<TermSize> {
    let mut out = Vec::new();
    let mut consumed = 0;
    {
        let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    out.push(s);
                    consumed = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // Not a size: drop what is there.
                    consumed = buf.len();
                    break;
                }
                None => {
                    consumed = it.byte_offset();
                    break;
                }
            }
        }
    }
    buf.drain(..consumed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_across_chunks() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        assert_eq!(
            parse_sizes(&mut buf),
            vec![TermSize {
                width: 80,
                height: 24
            }]
        );
        buf.extend_from_slice(br#"00,"Height":33}"#);
        assert_eq!(
            parse_sizes(&mut buf),
            vec![TermSize {
                width: 100,
                height: 33
            }]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn status_messages() {
        assert_eq!(status_message(3, &Ok(0)), None);
        let v4: serde_json::Value = serde_json::from_slice(&status_message(4, &Ok(3)).unwrap()).unwrap();
        assert_eq!(v4["reason"], "NonZeroExitCode");
        assert_eq!(v4["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value = serde_json::from_slice(&status_message(5, &Ok(0)).unwrap()).unwrap();
        assert_eq!(ok["status"], "Success");
    }
}
