//! The streaming server for Exec, Attach and PortForward (SPDY/3.1 and WebSocket).
//!
//! The RPCs (`server::streaming`) validate, then [`Streaming::url`] stores the request under a
//! single-use token (`tokens`) and returns `http://<addr>:<port>/<kind>/<token>`. The client upgrades a
//! connection on that URL (`server`): SPDY/3.1 (`spdy`) or WebSocket (`websocket`); the handlers
//! (`exec`, `attach`, `portforward`) see the connection through `channel`, whatever carries it.
//! `remotecommand` negotiates the exec/attach protocol version and gathers the SPDY streams.
//! `limits` caps sessions (overall, per container) and closes idle connections; the SPDY stream and
//! port-forward caps per connection live in `spdy` and `portforward`.
//! With `stream.tls_cert_file` and `stream.tls_key_file` set the server speaks TLS (rustls) and hands
//! out `https` URLs.

mod attach;
pub mod channel;
mod exec;
pub mod limits;
mod portforward;
pub mod remotecommand;
mod server;
pub mod spdy;
pub mod tokens;
pub mod websocket;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cri_api::v1;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::{Error, Result};

pub use tokens::Pending;

/// The streaming server's shared state: the tokens and, once listening, the base URL.
#[derive(Debug)]
pub struct Streaming {
    tokens: tokens::Tokens,
    base: OnceLock<String>,
    limits: limits::Limits,
    sessions: limits::Sessions,
}

impl Streaming {
    /// Not yet listening; see [`start`].
    pub fn new(cfg: &Config) -> Self {
        Streaming {
            tokens: tokens::Tokens::new(Duration::from_secs(cfg.stream.token_timeout_seconds.max(1))),
            base: OnceLock::new(),
            limits: limits::Limits::from_config(&cfg.stream),
            sessions: limits::Sessions::default(),
        }
    }

    /// A single-use URL for `p`.
    pub fn url(&self, p: Pending) -> Result<String> {
        let base = self
            .base
            .get()
            .ok_or_else(|| Error::Unavailable("the streaming server is not running".into()))?;
        let kind = p.kind();
        let token = self.tokens.insert(p);
        Ok(format!("{base}/{kind}/{token}"))
    }

    /// Sessions running now.
    pub fn sessions_running(&self) -> usize {
        self.sessions.running()
    }

    /// The base URL (`http://host:port`), once listening.
    pub fn base_url(&self) -> Option<&str> {
        self.base.get().map(String::as_str)
    }
}

/// Binds the streaming server on `stream.address`:`stream.port` and serves it in a task.
pub async fn start(d: &Arc<Daemon>) -> Result<()> {
    let cfg = &d.config.stream;
    let tls = if cfg.tls_cert_file.as_os_str().is_empty() {
        None
    } else {
        Some(server::tls_acceptor(&cfg.tls_cert_file, &cfg.tls_key_file)?)
    };
    let ip: std::net::IpAddr = cfg
        .address
        .parse()
        .map_err(|_| Error::invalid("stream.address", format!("not an IP address: {:?}", cfg.address)))?;
    let listener = tokio::net::TcpListener::bind((ip, cfg.port)).await.map_err(|e| {
        Error::io(
            format!("streaming server: listen on {}:{}", cfg.address, cfg.port),
            e,
        )
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("streaming server: local address", e))?;
    let base = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    tracing::info!(url = %base, "streaming server listening");
    let _ = d.streaming.base.set(base);
    tokio::spawn(server::serve(listener, tls, Arc::downgrade(d)));
    Ok(())
}

/// What an exec needs from the container's records.
pub(crate) struct ExecPrep {
    pub id: String,
    pub state_dir: PathBuf,
    pub runtime_path: PathBuf,
    pub runtime_root: PathBuf,
    pub process_json: Vec<u8>,
    /// How long the runtime may take to start the process (`runtime.operation_timeout_seconds`).
    pub start_timeout: std::time::Duration,
}

impl Daemon {
    /// The record of a running container, else NotFound / FailedPrecondition naming `container_id`.
    pub(crate) fn running_container(&self, id: &str) -> Result<crate::container::ContainerRecord> {
        let rec = self
            .containers
            .get(id)
            .map_err(|e| e.context(format!("container_id {id:?}")))?;
        if crate::container::record::cri_state(&rec) != v1::ContainerState::ContainerRunning {
            return Err(Error::FailedPrecondition(format!(
                "container_id {:?}: container is not running",
                rec.id
            )));
        }
        Ok(rec)
    }

    /// The runtime and process spec for running `cmd` in container `id`.
    pub(crate) fn exec_prepare(&self, id: &str, cmd: &[String], tty: bool) -> Result<ExecPrep> {
        let rec = self.running_container(id)?;
        // The runtime that holds the container: a container an older crustd made for the default
        // handler stays with the runtime that was the default then (runc, where crun is now).
        let rt = self
            .containers
            .runtimes()
            .get_existing(&rec.runtime_handler, &rec.id)?;
        let state_dir = self.dirs.container_state(&rec.id);
        let path = state_dir.join("config.json");
        let data = std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&data)
            .map_err(|e| Error::Internal(format!("parse {}: {e}", path.display())))?;
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| Error::Internal(format!("{} has no process", path.display())))?;
        process.set_args(Some(cmd.to_vec()));
        process.set_terminal(Some(tty));
        process.set_console_size(None);
        let process_json =
            serde_json::to_vec(&process).map_err(|e| Error::Internal(format!("encode process: {e}")))?;
        Ok(ExecPrep {
            id: rec.id,
            state_dir,
            runtime_path: rt.path().to_path_buf(),
            runtime_root: rt.root().to_path_buf(),
            process_json,
            start_timeout: std::time::Duration::from_secs(self.config.runtime.operation_timeout_seconds),
        })
    }
}
