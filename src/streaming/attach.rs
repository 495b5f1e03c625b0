//! Attach: joins the container's stdio held by its monitor, through the monitor's control socket
//! (`monitor::attach`, frames in `monitor::ctl`). Output still goes to the log (the monitor copies it);
//! stdin works when the container was created with `stdin`, and with `stdin_once` the monitor closes it
//! when this attach ends. A client that goes away detaches; the container keeps running.

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
            _ = gone.wait() => break false,
        };
        match frame {
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
                    break false;
                }
            }
            Ok(None) | Err(_) => break true,
        }
    };
    for t in [stdin_task, resize_task].into_iter().flatten() {
        t.abort();
    }
    drop(keep_w);
    if ended {
        // The monitor closed the connection: the container has exited.
        s.finish(Ok(0)).await;
    } else {
        s.finish(Err("client went away".into())).await;
    }
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
