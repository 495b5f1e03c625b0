//! The CRI unix socket: created with its configured mode; a stale file is replaced; a socket that a
//! live crustd serves is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Another process answers on the socket.
    #[error("{0} is served by a running crustd (or another process); refusing to take it over")]
    InUse(String),
    /// Any other failure.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Binds the socket at `path` with `mode`.
pub fn bind(path: &Path, mode: u32) -> Result<tokio::net::UnixListener, SocketError> {
    let name = path.display().to_string();
    let io = |source| SocketError::Io {
        path: name.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        // A live listener accepts a connection; a stale file refuses it.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(name));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(listener)
}
