//! crust's admin surface for `crustctl`: what CRI cannot express (importing and exporting image
//! archives, tagging, the configuration in effect). A second unix socket (`api.admin_socket`, default
//! `<state>/admin.sock`, mode 0600: root only), separate from the CRI socket kubelet uses, so that
//! nothing here can reach kubelet's API surface and the CRI socket's mode can stay group-readable.
//! The protocol is line-delimited JSON: one `Request` per connection, answered by any number of
//! `Reply::Progress` lines and one final `Reply::Done` or `Reply::Error`.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::daemon::Daemon;
use crate::image::archive::Format;

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 << 10;

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Import the archive at `path` (absolute), adding `tags` to each image.
    Import {
        path: PathBuf,
        #[serde(default)]
        tags: Vec<String>,
    },
    /// Export `images` to `path` (absolute) in `format`.
    Export {
        images: Vec<String>,
        path: PathBuf,
        format: Format,
    },
    /// Tag the image `source` as `target`.
    Tag { source: String, target: String },
    /// The configuration in effect and crustd's version.
    Status,
}

/// One reply line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// A progress message.
    Progress(String),
    /// The result.
    Done(serde_json::Value),
    /// The failure: a gRPC code name and the message.
    Error { code: String, message: String },
}

/// The running admin server.
pub struct Admin {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Admin {
    /// Stops serving and removes the socket.
    pub fn stop(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the admin socket and serves it.
pub fn start(d: Arc<Daemon>) -> Result<Admin, super::SocketError> {
    let path = d.config.admin_socket();
    let listener = super::bind(&path, 0o600)?;
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(serve_one(d.clone(), s));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(Admin { path, task })
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, r: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    w.write_all(&line).await
}

fn error_reply(e: crate::Error) -> Reply {
    let st = super::status::to_status(e);
    Reply::Error {
        code: format!("{:?}", st.code()),
        message: st.message().to_string(),
    }
}

async fn serve_one(d: Arc<Daemon>, s: UnixStream) {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r).take(MAX_REQUEST as u64);
    let mut line = String::new();
    if let Err(e) = r.read_line(&mut line).await {
        tracing::debug!(error = %e, "admin socket: unreadable request");
        return;
    }
    let req: Request = match serde_json::from_str(&line) {
        Ok(q) => q,
        Err(e) => {
            let _ = send(
                &mut w,
                &error_reply(crate::Error::invalid("request", e.to_string())),
            )
            .await;
            return;
        }
    };
    tracing::info!(request = ?req, "admin request");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let work = {
        let d = d.clone();
        tokio::spawn(async move { handle(&d, req, Some(tx)).await })
    };
    while let Some(msg) = rx.recv().await {
        let _ = send(&mut w, &Reply::Progress(msg)).await;
    }
    let reply = match work.await {
        Ok(Ok(v)) => Reply::Done(v),
        Ok(Err(e)) => error_reply(e),
        Err(e) => error_reply(crate::Error::Internal(format!("admin request: {e}"))),
    };
    let _ = send(&mut w, &reply).await;
}

fn absolute(p: PathBuf, field: &str) -> crate::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(crate::Error::invalid(field, "must be an absolute path"))
    }
}

fn json<T: Serialize>(v: T) -> crate::Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| crate::Error::Internal(format!("JSON: {e}")))
}

async fn handle(
    d: &Daemon,
    req: Request,
    progress: crate::image::archive::Progress,
) -> crate::Result<serde_json::Value> {
    match req {
        Request::Import { path, tags } => {
            let path = absolute(path, "path")?;
            json(d.images.import(&path, &tags, progress).await?)
        }
        Request::Export { images, path, format } => {
            let path = absolute(path, "path")?;
            json(d.images.export(&images, format, &path, progress).await?)
        }
        Request::Tag { source, target } => json(d.images.tag(&source, &target)?),
        Request::Status => {
            let eff = d.effective.lock().unwrap_or_else(|p| p.into_inner()).clone();
            json(serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "config": eff,
            }))
        }
    }
}
