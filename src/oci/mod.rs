//! The OCI runtime: a trait over runc-compatible runtimes (`OciRuntime`), runc behind it (`Runc`), and the
//! RuntimeClass handler table (`Runtimes`). Bringing a container up (`run --detach`, or `create`) is not
//! here: the monitor runs it (see `crate::monitor`), so that the monitor, not crustd, is the container's
//! parent.

pub mod criu;
pub mod default;
pub mod features;
pub mod pause;
mod runc;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use oci_spec::runtime::{LinuxResources, Process};

use crate::config::Config;
use crate::state::Dirs;
use crate::{Error, Result};

pub(crate) use runc::runtime_error_text;
pub(crate) use runc::wait_exec_started;
pub use runc::{DEFAULT_TIMEOUT, Runc};

/// A container's status as the runtime reports it (`runc state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeState {
    /// `created`, `running`, `paused`, `stopped` (or `creating`).
    pub status: String,
    /// The container's init pid (0 when stopped).
    pub pid: u32,
}

/// What an `exec_sync` gave back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output, at most `max_output` bytes (the rest is dropped).
    pub stdout: Vec<u8>,
    /// Standard error, at most `max_output` bytes.
    pub stderr: Vec<u8>,
    /// The process's exit code (128 + signal when killed by a signal; 137 after a timeout kill).
    pub exit_code: i32,
    /// The timeout passed and the process was killed.
    pub timed_out: bool,
}

/// A runc-compatible OCI runtime. Errors: a container the runtime does not know gives `NotFound`; one in
/// the wrong state (e.g. kill of a stopped container) gives `FailedPrecondition`; anything else `Internal`
/// with the runtime's own error text.
pub trait OciRuntime: Send + Sync + std::fmt::Debug {
    /// The runtime binary (for `monitor::MonitorSpec::runtime_path`).
    fn path(&self) -> &Path;
    /// The runtime's state dir, `--root` (for `monitor::MonitorSpec::runtime_root`).
    fn root(&self) -> &Path;
    /// Whether the runtime runs in its systemd cgroup mode (for `monitor::MonitorSpec::systemd_cgroup`).
    fn systemd_cgroup(&self) -> bool {
        false
    }
    /// Whether the runtime holds state for container `id` (runc-style `<root>/<id>`): a container
    /// it never ran, or has deleted, needs no call to it.
    fn knows(&self, id: &str) -> bool {
        self.root().join(id).exists()
    }
    /// `start`: runs the user process of a CREATED container.
    fn start<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// `kill [--all] id signal`.
    fn kill<'a>(&'a self, id: &'a str, signal: i32, all: bool) -> BoxFuture<'a, Result<()>>;
    /// `delete [--force] id`; idempotent: a container the runtime does not know is Ok.
    fn delete<'a>(&'a self, id: &'a str, force: bool) -> BoxFuture<'a, Result<()>>;
    /// `state id`.
    fn state<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RuntimeState>>;
    /// `update --resources`.
    fn update<'a>(&'a self, id: &'a str, resources: &'a LinuxResources) -> BoxFuture<'a, Result<()>>;
    /// `pause id` (freezer).
    fn pause<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// `resume id`.
    fn resume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// `checkpoint --leave-running`: CRIU's images of the running container into `image_path`, its log
    /// (`dump.log`) into `work_path`; the container keeps running.
    fn checkpoint<'a>(
        &'a self,
        id: &'a str,
        image_path: &'a Path,
        work_path: &'a Path,
    ) -> BoxFuture<'a, Result<()>>;
    /// Runs `process` in the container, stdout and stderr captured separately (each capped at `max_output`
    /// bytes), and waits for it; `timeout` zero means no timeout. On timeout the process is killed
    /// (SIGKILL) and `timed_out` is set.
    fn exec_sync<'a>(
        &'a self,
        id: &'a str,
        process: &'a Process,
        timeout: Duration,
        max_output: usize,
    ) -> BoxFuture<'a, Result<ExecOutput>>;
}

/// RuntimeClass handler name → runtime.
#[derive(Debug, Clone)]
pub struct Runtimes {
    default_handler: String,
    default_reason: String,
    handlers: BTreeMap<String, Arc<dyn OciRuntime>>,
}

impl Runtimes {
    /// One `Runc` per configured handler; a handler with an empty `root` gets `<state>/runtime/<name>`;
    /// a `path` without a '/' is looked up in `PATH` (as CRI-O does); every runtime runs in its systemd
    /// cgroup mode when the cgroup driver is systemd.
    pub fn from_config(cfg: &Config, dirs: &Dirs) -> Result<Runtimes> {
        let systemd = cfg.cgroup_driver() == crate::cgroups::Driver::Systemd;
        let timeout = Duration::from_secs(cfg.runtime.operation_timeout_seconds);
        let mut handlers: BTreeMap<String, Arc<dyn OciRuntime>> = BTreeMap::new();
        let choice = default::choose(cfg);
        let mut configured = cfg.runtime.handlers.clone();
        if let Some((name, h)) = choice.add {
            configured.entry(name).or_insert(h);
        }
        for (name, h) in &configured {
            let root = if h.root.as_os_str().is_empty() {
                dirs.runtime_root(name)
            } else {
                h.root.clone()
            };
            let path = find_binary(&h.path);
            handlers.insert(
                name.clone(),
                Arc::new(
                    Runc::new(path, root)
                        .with_systemd_cgroup(systemd)
                        .with_timeout(timeout),
                ),
            );
        }
        crate::monitor::set_create_timeout(timeout);
        if !handlers.contains_key(&choice.name) {
            return Err(Error::invalid(
                "runtime.default_handler",
                format!("no handler named {:?} is configured", choice.name),
            ));
        }
        Ok(Runtimes {
            default_handler: choice.name,
            default_reason: choice.reason,
            handlers,
        })
    }

    /// The runtime for a RuntimeClass handler ("" is the default handler). Unknown: InvalidArgument
    /// naming `runtime_handler`.
    pub fn get(&self, handler: &str) -> Result<Arc<dyn OciRuntime>> {
        let name = if handler.is_empty() {
            self.default_handler.as_str()
        } else {
            handler
        };
        self.handlers.get(name).cloned().ok_or_else(|| {
            Error::invalid(
                "runtime_handler",
                format!(
                    "unknown runtime handler {handler:?} (configured: {})",
                    self.names().join(", ")
                ),
            )
        })
    }

    /// As [`Runtimes::get`], for container `id` made before: one made for the default handler ("")
    /// stays with the runtime that holds its state, should the default have changed since (a crust
    /// upgrade that made crun the default while runc containers ran).
    pub fn get_existing(&self, handler: &str, id: &str) -> Result<Arc<dyn OciRuntime>> {
        let rt = self.get(handler)?;
        if !handler.is_empty() || rt.knows(id) {
            return Ok(rt);
        }
        Ok(self
            .handlers
            .values()
            .find(|r| r.knows(id))
            .cloned()
            .unwrap_or(rt))
    }

    /// As [`Runtimes::get`], for making something new: a handler whose binary is missing or not
    /// executable is `FailedPrecondition` naming the handler, its configured key and the binary.
    pub fn get_usable(&self, handler: &str) -> Result<Arc<dyn OciRuntime>> {
        let rt = self.get(handler)?;
        let name = if handler.is_empty() {
            self.default_handler.as_str()
        } else {
            handler
        };
        if !is_executable(rt.path()) {
            return Err(Error::FailedPrecondition(format!(
                "runtime handler {name:?}: its binary {} (runtime.handlers.{name}.path) is missing or not \
                 executable",
                rt.path().display()
            )));
        }
        Ok(rt)
    }

    /// The default handler's name.
    pub fn default_handler(&self) -> &str {
        &self.default_handler
    }

    /// Why the default handler is the default (`crun: cgroup v2 and /usr/bin/crun found`).
    pub fn default_reason(&self) -> &str {
        &self.default_reason
    }

    /// Configured handler names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }
}

/// A runtime binary: a path with a '/' as it is, a bare name from `PATH` (left as it is when not found,
/// for `Runtimes::get_usable` to refuse).
fn find_binary(p: &Path) -> std::path::PathBuf {
    if p.as_os_str().is_empty() || p.to_string_lossy().contains('/') {
        return p.to_path_buf();
    }
    std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(p))
                .find(|c| is_executable(c))
        })
        .unwrap_or_default()
        .unwrap_or_else(|| p.to_path_buf())
}

/// Whether `p` is a regular file someone may execute.
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_binaries() {
        assert_eq!(
            find_binary(Path::new("/nonexistent/crun")),
            Path::new("/nonexistent/crun")
        );
        assert!(find_binary(Path::new("sh")).is_absolute());
        assert_eq!(
            find_binary(Path::new("no-such-runtime-x")),
            Path::new("no-such-runtime-x")
        );
        let mut cfg = Config::default();
        cfg.runtime.handlers.insert(
            "crun".into(),
            crate::config::RuntimeHandler {
                path: "no-such-runtime-x".into(),
                root: "/tmp/x".into(),
            },
        );
        let dirs = Dirs::new(&cfg);
        let rts = Runtimes::from_config(&cfg, &dirs).unwrap();
        let e = rts.get_usable("crun").unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
        assert!(e.to_string().contains("runtime.handlers.crun.path"), "{e}");
        assert!(rts.get("crun").is_ok());
    }
}
