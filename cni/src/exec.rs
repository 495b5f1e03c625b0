//! Running one plugin binary: the CNI environment, the configuration on stdin, a timeout (the plugin
//! is killed when it passes), and the result or the plugin's error JSON from stdout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::{CniError, RuntimeConf};

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
}

impl Command {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        }
    }
}

/// How plugins are started: `Command::spawn`, unless the embedding program set its own (crustd
/// registers its children with its reaper, which must not reap a plugin whose status is awaited here).
pub type Spawner = fn(&mut tokio::process::Command) -> std::io::Result<tokio::process::Child>;

static SPAWNER: std::sync::OnceLock<Spawner> = std::sync::OnceLock::new();

/// Sets how plugins are started (once; later calls are ignored).
pub fn set_spawner(f: Spawner) {
    let _ = SPAWNER.set(f);
}

/// Kills the process group it names (a plugin's, its leader's PID) when dropped.
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Finds a plugin binary by type in `bin_dirs`, first match wins.
pub fn find_plugin(bin_dirs: &[PathBuf], plugin: &str) -> Result<PathBuf, CniError> {
    bin_dirs
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: bin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
}

/// Runs `binary` with `command`, feeding `conf` on stdin. Returns its stdout parsed as JSON (None when
/// it printed nothing). A non-zero exit becomes `CniError::Plugin` with the plugin's own message.
pub async fn run(
    binary: &Path,
    plugin: &str,
    command: Command,
    conf: &Value,
    rt: &RuntimeConf,
    cni_path: &str,
    timeout: Duration,
) -> Result<Option<Value>, CniError> {
    let input = serde_json::to_vec(conf).map_err(|e| CniError::Config(e.to_string()))?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &rt.container_id)
        .env("CNI_NETNS", &rt.netns)
        .env("CNI_IFNAME", &rt.ifname)
        .env("CNI_ARGS", rt.cni_args())
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own: a plugin that hangs or is given up on is killed with whatever it started.
        .process_group(0)
        .kill_on_drop(true);
    let io_err = |what: &str, e: std::io::Error| CniError::Plugin {
        plugin: plugin.to_string(),
        code: None,
        msg: format!("{what} {}: {e}", binary.display()),
    };
    // ETXTBSY: a plugin binary just written (installed or updated) can still be open for writing in
    // a child another thread of this process forked and has not exec'd yet; that passes in moments.
    let mut attempt = 0;
    let mut child = loop {
        let spawned = match SPAWNER.get() {
            Some(spawn) => spawn(&mut cmd),
            None => cmd.spawn(),
        };
        match spawned {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            other => break other.map_err(|e| io_err("run", e))?,
        }
    };
    // Until the plugin has been waited for, dropping this (a timeout, or the caller gone) kills the
    // plugin's process group: a shell-script plugin's `sleep` must not outlive it.
    let mut group = GroupKiller(child.id());
    let work = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that fails before reading its config closes stdin early: its exit status and
            // error JSON, not the broken pipe, are what the caller must see.
            match stdin.write_all(&input).await {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(io_err("write config to", e));
                }
                _ => {}
            }
        }
        child.wait_with_output().await.map_err(|e| io_err("wait for", e))
    };
    // On timeout the future (owning the child) is dropped, and kill_on_drop kills the plugin.
    let out = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| CniError::Timeout {
            plugin: plugin.to_string(),
            secs: timeout.as_secs_f64(),
        })??;
    group.0 = None;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(plugin_error(
            plugin,
            &stdout,
            &String::from_utf8_lossy(&out.stderr),
            out.status,
        ));
    }
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&stdout)
        .map(Some)
        .map_err(|e| CniError::Plugin {
            plugin: plugin.to_string(),
            code: None,
            msg: format!("printed a result that is not JSON ({e}): {}", stdout.trim()),
        })
}

/// The plugin's error: its `{"code", "msg", "details"}` JSON when it printed one, else stderr.
fn plugin_error(plugin: &str, stdout: &str, stderr: &str, status: std::process::ExitStatus) -> CniError {
    if let Ok(v) = serde_json::from_str::<Value>(stdout) {
        let msg = v.get("msg").and_then(Value::as_str).unwrap_or_default();
        let details = v.get("details").and_then(Value::as_str).unwrap_or_default();
        if !msg.is_empty() {
            let msg = if details.is_empty() {
                msg.to_string()
            } else {
                format!("{msg}: {details}")
            };
            return CniError::Plugin {
                plugin: plugin.to_string(),
                code: v.get("code").and_then(Value::as_u64).map(|c| c as u32),
                msg,
            };
        }
    }
    let text = [stderr.trim(), stdout.trim()]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("no output");
    CniError::Plugin {
        plugin: plugin.to_string(),
        code: None,
        msg: format!("{status}: {text}"),
    }
}
