//! Port-forward (`portforward.k8s.io`): per forwarded connection the client opens an error stream and a
//! data stream with the same `requestid` and a `port` header; we connect to 127.0.0.1:port inside the
//! pod's network namespace (a short-lived thread that `setns()`es into the pinned netns, so no socat
//! or nsenter), copy both ways, and report failures as text on the error stream. At most
//! `stream.max_port_forwards_per_connection` forwarded connections run at once on one client
//! connection; a pair beyond it gets the refusal on its error stream and both streams closed.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cri_api::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{Out, Sink};
use super::spdy::frame::header;
use super::spdy::{Conn, Incoming};
use crate::daemon::Daemon;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves port-forward streams on a SPDY connection until the client closes it.
pub async fn serve_spdy(d: Arc<Daemon>, req: v1::PortForwardRequest, mut conn: Conn, what: String) {
    let netns = match d.sandboxes.pod_context(&req.pod_sandbox_id) {
        Ok(ctx) => ctx.netns_path,
        Err(e) => {
            tracing::warn!(conn = %what, error = %e, "port-forward to a pod that is gone");
            let _ = conn.out.send(Out::Finish).await;
            return;
        }
    };
    let max_pairs = d.streaming.limits.max_port_forwards_per_connection;
    let active = Arc::new(AtomicUsize::new(0));
    let mut refusal_logged = false;
    // requestid → (data, error)
    let mut halves: HashMap<String, (Option<Incoming>, Option<Incoming>)> = HashMap::new();
    while let Some(st) = conn.streams.recv().await {
        let ty = header(&st.headers, "streamtype").unwrap_or("").to_string();
        let rid = match header(&st.headers, "requestid") {
            Some(r) if !r.is_empty() => r.to_string(),
            // Old clients: the error stream comes first, its data stream is two IDs later.
            _ if ty == "data" => st.id.saturating_sub(2).to_string(),
            _ => st.id.to_string(),
        };
        let e = halves.entry(rid.clone()).or_default();
        match ty.as_str() {
            "data" => e.0 = Some(st),
            "error" => e.1 = Some(st),
            other => {
                tracing::warn!(conn = %what, stream_type = other, "unknown port-forward stream type");
                continue;
            }
        }
        if !matches!(halves.get(&rid), Some((Some(_), Some(_)))) {
            if halves.len() > 1024 {
                tracing::warn!(conn = %what, "too many half-open port-forward requests; closing");
                break;
            }
            continue;
        }
        if let Some((Some(data), Some(err))) = halves.remove(&rid) {
            let port = header(&data.headers, "port").unwrap_or("").to_string();
            let out = conn.out.clone();
            if active.load(Ordering::Relaxed) >= max_pairs {
                if !refusal_logged {
                    refusal_logged = true;
                    tracing::warn!(
                        conn = %what,
                        limit = max_pairs,
                        "refusing port-forward connections beyond stream.max_port_forwards_per_connection"
                    );
                }
                let text = format!(
                    "error forwarding port {port} to pod {}: too many port-forward connections on this connection ({max_pairs} open, stream.max_port_forwards_per_connection)",
                    req.pod_sandbox_id
                );
                tokio::spawn(async move {
                    let err_sink = Sink::new(err.id, out.clone());
                    err_sink.send(text.as_bytes()).await;
                    err_sink.close().await;
                    Sink::new(data.id, out).close().await;
                });
                continue;
            }
            let slot = PairSlot::take(&active);
            let netns = netns.clone();
            let pod = req.pod_sandbox_id.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let err_sink = Sink::new(err.id, out.clone());
                let data_sink = Sink::new(data.id, out);
                if let Err(msg) = forward(netns, &port, data.rx, data_sink.clone()).await {
                    let text = format!("error forwarding port {port} to pod {pod}: {msg}");
                    tracing::info!("{text}");
                    err_sink.send(text.as_bytes()).await;
                    data_sink.close().await;
                }
                err_sink.close().await;
            });
        }
    }
    let _ = conn.out.send(Out::Finish).await;
}

/// One forwarded connection counted against the connection's limit while it lives.
struct PairSlot(Arc<AtomicUsize>);

impl PairSlot {
    fn take(active: &Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        PairSlot(Arc::clone(active))
    }
}

impl Drop for PairSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connects to `port` in the pod and copies until the target closes.
pub async fn forward(
    netns: Option<PathBuf>,
    port: &str,
    mut rx: mpsc::Receiver<Bytes>,
    sink: Sink,
) -> Result<(), String> {
    let port: u16 = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    if port == 0 {
        return Err("invalid port 0".into());
    }
    let tcp = connect_in(netns, port).await?;
    let (mut r, mut w) = tcp.into_split();
    let up = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = tokio::select! {
            n = r.read(&mut buf) => n,
            // The client connection is gone: drop the pod connection too.
            _ = sink.closed() => break,
        };
        match n {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !sink.send(&buf[..n]).await {
                    break;
                }
            }
        }
    }
    sink.close().await;
    up.abort();
    Ok(())
}

/// A TCP connection to 127.0.0.1:`port` made inside `netns` (the host's when `None`).
async fn connect_in(netns: Option<PathBuf>, port: u16) -> Result<tokio::net::TcpStream, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own: setns() changes the calling thread's namespace, and the thread ends after.
    let spawned = std::thread::Builder::new()
        .name("portforward-connect".into())
        .spawn(move || {
            let res = (|| -> Result<std::net::TcpStream, String> {
                if let Some(ns) = &netns {
                    let f =
                        std::fs::File::open(ns).map_err(|e| format!("open netns {}: {e}", ns.display()))?;
                    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| format!("setns {}: {e}", ns.display()))?;
                }
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
                    .map_err(|e| format!("dial tcp 127.0.0.1:{port}: {e}"))?;
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok(s)
            })();
            let _ = tx.send(res);
        });
    spawned.map_err(|e| format!("spawn a thread: {e}"))?;
    let s = rx.await.map_err(|_| "connect thread died".to_string())??;
    tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())
}
