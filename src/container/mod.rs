//! Containers: the OCI spec from CRI config and image config, the rootfs overlay, and the lifecycle
//! (create, start, stop, remove, status, exec, stats) through each container's monitor.

use crate::Result;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::state::Dirs;

/// All containers, served from memory, backed by records under `<root>/containers`.
pub struct Containers {}

impl Containers {
    /// Loads the records.
    pub async fn open(_cfg: &Config, _dirs: &Dirs) -> Result<Self> {
        Ok(Containers {})
    }
}

impl Daemon {
    /// Start-up recovery of containers.
    pub(crate) async fn recover_containers(&self) {}
}
