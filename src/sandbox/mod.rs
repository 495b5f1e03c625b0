//! Pod sandboxes: the pinned network namespace wired by CNI, pod files (hostname, hosts, resolv.conf,
//! shm), the pod cgroup, and the built-in pause process under its own monitor.

use crate::Result;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::state::Dirs;

/// All pod sandboxes, served from memory, backed by records under `<root>/pods`.
pub struct Sandboxes {
    cni_conf_dir: std::path::PathBuf,
}

impl Sandboxes {
    /// Loads the records.
    pub async fn open(cfg: &Config, _dirs: &Dirs) -> Result<Self> {
        Ok(Sandboxes {
            cni_conf_dir: cfg.cni.conf_dir.clone(),
        })
    }

    /// `Ok` when a CNI network configuration is loaded; otherwise why not.
    pub fn network_ready(&self) -> std::result::Result<(), String> {
        let found = std::fs::read_dir(&self.cni_conf_dir).ok().is_some_and(|rd| {
            rd.flatten().any(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "conf" || x == "conflist" || x == "json")
            })
        });
        if found {
            Ok(())
        } else {
            Err(format!(
                "cni config uninitialized: no network config found in {}",
                self.cni_conf_dir.display()
            ))
        }
    }
}

impl Daemon {
    /// Start-up recovery of pod sandboxes.
    pub(crate) async fn recover_sandboxes(&self) {}
}
