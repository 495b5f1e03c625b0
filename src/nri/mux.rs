//! NRI's connection multiplexer: the two logical ttrpc connections of one plugin (the plugin's
//! service, which crust calls, and crust's runtime service, which the plugin calls) share a single
//! unix socket. Each chunk on the socket is framed as a 4-byte big-endian connection ID, a 4-byte
//! big-endian length and that many bytes of the logical connection's stream. This framing is NRI's
//! own (`pkg/net/multiplex` in containerd/nri) and no crate implements it; the ttrpc framing inside
//! each logical connection is the `ttrpc` crate's.
//!
//! Each logical connection is handed to ttrpc as one end of an in-memory duplex pipe; a task moves
//! frames from the socket to the right pipe, and one task per pipe frames its bytes onto the socket.

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The logical connection of the plugin's service (crust is its client).
pub const PLUGIN_SERVICE_CONN: u32 = 1;
/// The logical connection of crust's runtime service (the plugin is its client).
pub const RUNTIME_SERVICE_CONN: u32 = 2;

/// The largest chunk written: ttrpc's 10-byte message header plus its 4 MiB message limit, as NRI
/// bounds it; a larger read is split.
const MAX_CHUNK: usize = 10 + (4 << 20);
/// ttrpc's message header: 4-byte length, 4-byte stream ID, type and flags.
const TTRPC_HEADER: usize = 10;
/// Frames read from the socket larger than this are a protocol error (the peer is cut off).
const MAX_FRAME: usize = MAX_CHUNK;
/// Buffer of each in-memory pipe.
const PIPE_BUFFER: usize = 256 * 1024;

/// A multiplexed plugin connection; dropping it closes the socket and both logical connections.
pub struct Mux {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Mux {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The two logical connections of a plugin's socket, in the order (plugin service, runtime service).
pub struct Conns {
    pub plugin: DuplexStream,
    pub runtime: DuplexStream,
}

/// Splits `trunk` into its two logical connections. `closed` is sent once when the socket ends (the
/// plugin went away or wrote garbage).
pub fn split(trunk: UnixStream, closed: mpsc::UnboundedSender<()>) -> (Mux, Conns) {
    let (plugin_ours, plugin_theirs) = tokio::io::duplex(PIPE_BUFFER);
    let (runtime_ours, runtime_theirs) = tokio::io::duplex(PIPE_BUFFER);
    let (plugin_rd, plugin_wr) = tokio::io::split(plugin_ours);
    let (runtime_rd, runtime_wr) = tokio::io::split(runtime_ours);
    let (mut trunk_rd, trunk_wr) = trunk.into_split();
    let (frames_tx, frames_rx) = mpsc::channel::<(u32, Vec<u8>)>(16);

    let reader = tokio::spawn(async move {
        let mut plugin_wr = plugin_wr;
        let mut runtime_wr = runtime_wr;
        let r: std::io::Result<()> = async {
            loop {
                let mut hdr = [0u8; 8];
                trunk_rd.read_exact(&mut hdr).await?;
                let id = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
                let len = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
                if len > MAX_FRAME {
                    return Err(std::io::Error::other(format!("frame of {len} bytes")));
                }
                let mut buf = vec![0u8; len];
                trunk_rd.read_exact(&mut buf).await?;
                match id {
                    PLUGIN_SERVICE_CONN => plugin_wr.write_all(&buf).await?,
                    RUNTIME_SERVICE_CONN => runtime_wr.write_all(&buf).await?,
                    // A connection nobody opened: NRI drops such frames too.
                    _ => tracing::debug!(id, len, "NRI frame for an unknown connection dropped"),
                }
            }
        }
        .await;
        tracing::debug!(result = ?r, "NRI plugin socket ended");
        let _ = closed.send(());
    });
    let writer = tokio::spawn(async move {
        let mut frames_rx = frames_rx;
        let mut trunk_wr = trunk_wr;
        while let Some((id, data)) = frames_rx.recv().await {
            let mut frame = Vec::with_capacity(8 + data.len());
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
            frame.extend_from_slice(&data);
            if trunk_wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    // One frame per ttrpc message header and one per message body, as NRI's Go side writes them: its
    // reader takes a whole frame per read into ttrpc's 4 KiB read buffer (or into a buffer of the
    // body's size), and fails with ENOMEM on a frame that does not fit, such as a header and a body
    // of over 4 KiB merged into one (critest's larger pods cut every plugin off that way).
    let pump = |id: u32, tx: mpsc::Sender<(u32, Vec<u8>)>| {
        move |mut rd: tokio::io::ReadHalf<DuplexStream>| async move {
            loop {
                let mut header = [0u8; TTRPC_HEADER];
                if rd.read_exact(&mut header).await.is_err() {
                    break;
                }
                let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
                if len > MAX_CHUNK - TTRPC_HEADER || tx.send((id, header.to_vec())).await.is_err() {
                    break;
                }
                if len == 0 {
                    continue;
                }
                let mut body = vec![0u8; len];
                if rd.read_exact(&mut body).await.is_err() || tx.send((id, body)).await.is_err() {
                    break;
                }
            }
        }
    };
    let p = tokio::spawn(pump(PLUGIN_SERVICE_CONN, frames_tx.clone())(plugin_rd));
    let r = tokio::spawn(pump(RUNTIME_SERVICE_CONN, frames_tx)(runtime_rd));
    (
        Mux {
            tasks: vec![reader, writer, p, r],
        },
        Conns {
            plugin: plugin_theirs,
            runtime: runtime_theirs,
        },
    )
}
