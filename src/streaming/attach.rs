//! Attach: joins the container's stdio held by its monitor, through the monitor's control socket
//! (`monitor::attach`, frames in `monitor::ctl`). Output still goes to the log (the monitor copies it);
//! stdin works when the container was created with `stdin`, and with `stdin_once` the monitor closes it
//! when this attach ends. A client that goes away detaches; the container keeps running. A client too
//! slow for the container's output is disconnected by the monitor (never waited for), and stdin the
//! container cannot take ends the session with the monitor's reason on the error stream.

use std::sync::Arc;

use bytes::Bytes;
use cri_api::v1;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::channel::{Streams, parse_sizes};
use crate::daemon::Daemon;
use crate::monitor::ctl;

/// Runs an attach session.
pub async fn run(d: Arc<Daemon>, req: v1::AttachRequest, mut s: Streams) {
    let rec = match d.running_container(&req.container_id) {
        Ok(r) => r,
        Err(e) => return s.finish(Err(e.to_string())).await,
    };
    let state_dir = d.dirs.container_state(&rec.id);
    let conn = match crate::monitor::attach(&state_dir).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(container = %rec.id, error = %e, "attach failed");
            return s.finish(Err(format!("attach to {}: {e}", rec.id))).await;
        }
    };
    let (mut r, w) = conn.into_split();
    // Without stdin the write half is kept until the end: dropping it would read as leaving.
    let mut keep_w = None;
    let stdin_task = match s.stdin.take() {
        Some(rx) => Some(tokio::spawn(stdin_to_monitor(rx, w))),
        None => {
            keep_w = Some(w);
            None
        }
    };
    let resize_task = s.resize.take().map(|rx| {
        let dir = state_dir.clone();
        tokio::spawn(async move {
            let mut rx: mpsc::Receiver<Bytes> = rx;
            let mut buf = Vec::new();
            while let Some(b) = rx.recv().await {
                buf.extend_from_slice(&b);
                if buf.len() > 4096 {
                    buf.clear();
                }
                for sz in parse_sizes(&mut buf) {
                    if let Err(e) = crate::monitor::resize(&dir, sz.width, sz.height).await {
                        tracing::debug!(error = %e, "attach resize failed");
                    }
                }
            }
        })
    });
    let mut gone = s.gone.clone();
    let ended = loop {
        let frame = tokio::select! {
            f = crate::monitor::read_frame(&mut r) => f,
            _ = gone.wait() => break Ended::ClientLeft,
        };
        match frame {
            Ok(Some((ctl::ERROR, msg))) => {
                let msg = String::from_utf8_lossy(&msg).into_owned();
                tracing::info!(container = %rec.id, "attach ended by the monitor: {msg}");
                break Ended::Refused(msg);
            }
            Ok(Some((stream, data))) => {
                let sink = match stream {
                    ctl::STDOUT => s.stdout.as_ref(),
                    ctl::STDERR => s.stderr.as_ref(),
                    _ => None,
                };
                if let Some(sink) = sink
                    && !data.is_empty()
                    && !sink.send(&data).await
                {
                    break Ended::ClientLeft;
                }
            }
            Ok(None) | Err(_) => break Ended::MonitorClosed,
        }
    };
    for t in [stdin_task, resize_task].into_iter().flatten() {
        t.abort();
    }
    drop(keep_w);
    match ended {
        // The monitor writes the exit file before it exits (and so closes the connection).
        Ended::MonitorClosed if state_dir.join(crate::monitor::EXIT_FILE).exists() => s.finish(Ok(0)).await,
        Ended::MonitorClosed => {
            let msg = format!(
                "attach to {}: disconnected by the container's monitor: the client did not keep up with the container's output",
                rec.id
            );
            tracing::info!(container = %rec.id, "{msg}");
            s.finish(Err(msg)).await
        }
        Ended::Refused(msg) => s.finish(Err(format!("attach to {}: {msg}", rec.id))).await,
        Ended::ClientLeft => s.finish(Err("client went away".into())).await,
    }
}

/// Why an attach ended.
enum Ended {
    /// The client left (or its connection cannot be written to).
    ClientLeft,
    /// The monitor closed the connection: the container exited, or the client was too slow.
    MonitorClosed,
    /// The monitor refused the client's stdin (`ctl::ERROR`).
    Refused(String),
}

/// Forwards the client's stdin as STDIN frames; the client closing stdin sends the closing frame (the
/// monitor acts on it only with `stdin_once`).
async fn stdin_to_monitor(mut rx: mpsc::Receiver<Bytes>, mut w: tokio::net::unix::OwnedWriteHalf) {
    while let Some(b) = rx.recv().await {
        if w.write_all(&ctl::frame(ctl::STDIN, &b)).await.is_err() {
            return;
        }
    }
    let _ = w.write_all(&ctl::frame(ctl::STDIN, &[])).await;
    // Keep the write half open: shutting it down would read as the client leaving.
    std::future::pending::<()>().await;
}
