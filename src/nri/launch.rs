//! How plugins arrive: external ones connect to the NRI socket; pre-installed ones (executables named
//! `<index>-<name>` in `nri.plugin_path`) are started by crustd with one end of a socket pair as fd 3
//! (`NRI_PLUGIN_SOCKET=3`, `NRI_PLUGIN_NAME`, `NRI_PLUGIN_IDX`), as containerd starts them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::Shared;
use super::plugin::{Launched, Plugin, valid_index};
use crate::{Error, Result};

/// Binds the socket (its directory is made if missing; a stale socket file is replaced) and accepts
/// plugins in a task of its own.
pub(super) fn serve_socket(shared: &Arc<Shared>) -> Result<()> {
    let path = shared.cfg.socket_path.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!("remove the stale socket {}", path.display()),
                e,
            ));
        }
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| Error::io(format!("bind {}", path.display()), e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    tracing::info!(socket = %path.display(), "NRI: accepting plugin connections");
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "NRI: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(shared) = weak.upgrade() else { return };
            // Each plugin registers on its own: a slow one holds up no other.
            tokio::spawn(async move {
                let host: std::sync::Weak<dyn super::plugin::Host> = Arc::downgrade(&shared) as _;
                match Plugin::connect(stream, None, &shared.settings, host, |_, _| String::new()).await {
                    Ok(p) => {
                        let id = p.id();
                        if let Err(e) = shared.add(Arc::clone(&p)).await {
                            tracing::warn!(plugin = %id, error = %e, "NRI: plugin not synchronized; disconnected");
                            p.close();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "NRI: external plugin refused"),
                }
            });
        }
    });
    Ok(())
}

/// Starts every pre-installed plugin and waits for each to register (or fail); one that fails is
/// logged and left out, as containerd does.
pub(super) async fn start_preinstalled(shared: &Arc<Shared>) {
    let dir = &shared.cfg.plugin_path;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(String, String)> = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some((idx, name)) = file.split_once('-') else {
            continue;
        };
        let exec = e
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if valid_index(idx) && !name.is_empty() && exec {
            found.push((idx.to_string(), name.to_string()));
        }
    }
    found.sort();
    for (idx, name) in found {
        let id = format!("{idx}-{name}");
        match launch_one(shared, &idx, &name).await {
            Ok(p) => {
                if let Err(e) = shared.add(Arc::clone(&p)).await {
                    tracing::warn!(plugin = %id, error = %e, "NRI: pre-installed plugin not synchronized");
                    p.close();
                }
            }
            Err(e) => tracing::warn!(plugin = %id, error = %e, "NRI: pre-installed plugin failed to start"),
        }
    }
}

async fn launch_one(shared: &Arc<Shared>, idx: &str, name: &str) -> Result<Arc<Plugin>> {
    let path = shared.cfg.plugin_path.join(format!("{idx}-{name}"));
    let (ours, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| Error::io("NRI: socket pair", e))?;
    ours.set_nonblocking(true)
        .map_err(|e| Error::io("NRI: socket pair", e))?;
    let theirs: OwnedFd = theirs.into();
    let fd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&path);
    cmd.kill_on_drop(true)
        .env_clear()
        .env("NRI_PLUGIN_NAME", name)
        .env("NRI_PLUGIN_IDX", idx)
        .env("NRI_PLUGIN_SOCKET", "3")
        .stdin(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) are made.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child =
        crate::reaper::spawn(&mut cmd).map_err(|e| Error::io(format!("NRI: start {}", path.display()), e))?;
    drop(theirs);
    let stream = tokio::net::UnixStream::from_std(ours).map_err(|e| Error::io("NRI: socket pair", e))?;
    let config = plugin_config(shared, idx, name);
    let host: std::sync::Weak<dyn super::plugin::Host> = Arc::downgrade(shared) as _;
    let launched = Launched {
        idx: idx.to_string(),
        name: name.to_string(),
        config,
        child,
    };
    Plugin::connect(stream, Some(launched), &shared.settings, host, |_, _| {
        String::new()
    })
    .await
}

/// A pre-installed plugin's configuration: `<idx>-<name>.conf`, else `<name>.conf`, else none.
fn plugin_config(shared: &Shared, idx: &str, name: &str) -> String {
    let dir = &shared.cfg.plugin_config_path;
    [format!("{idx}-{name}.conf"), format!("{name}.conf")]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .unwrap_or_default()
}
