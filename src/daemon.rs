//! The core value the gRPC server calls: the configuration, the directories, and one manager per job.
//! Start-up recovery runs here, in order: images, then sandboxes, then containers.

use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::state::Dirs;
use crate::{Error, Result, container, image, sandbox};

/// crustd's core.
pub struct Daemon {
    /// The configuration crustd started with.
    pub config: Config,
    /// The configuration in effect: the start-up one with what reloads changed (`reload`).
    pub effective: Mutex<Config>,
    /// Where things live.
    pub dirs: Dirs,
    /// Images: pulls and the store.
    pub images: image::ImageStore,
    /// Pod sandboxes.
    pub sandboxes: sandbox::Sandboxes,
    /// Containers.
    pub containers: container::Containers,
    /// Pod CIDR from UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
    /// The exec/attach/port-forward server's tokens and URL.
    pub streaming: crate::streaming::Streaming,
    /// Container and pod lifecycle events (GetContainerEvents).
    pub events: crate::events::Events,
    /// Whether pods can have user namespaces here (probed at start-up), or why not.
    pub user_namespaces: std::result::Result<(), String>,
    /// The cgroup driver in effect (and, with systemd, its D-Bus connection).
    pub cgroups: Arc<crate::cgroups::Cgroups>,
    /// PodSandboxStatus' responses by requested pod ID, at the versions of the pods and containers.
    pub status_kept: crate::wire::Kept<String, (crate::wire::Versions, crate::wire::Versions)>,
    /// NRI plugins (`crate::nri`).
    pub nri: crate::nri::Nri,
}

impl Daemon {
    /// Opens the stores and recovers what survived a restart.
    pub async fn new(config: Config) -> Result<Arc<Self>> {
        let dirs = Dirs::new(&config);
        dirs.make_private().map_err(|e| {
            Error::io(
                format!("make {} and {}", dirs.root.display(), dirs.state.display()),
                e,
            )
        })?;
        let images = image::ImageStore::open(&config, &dirs).await?;
        let events = crate::events::Events::default();
        let cgroups = Arc::new(crate::cgroups::Cgroups::new(
            &config.runtime.cgroup_driver,
            &config.runtime.cgroup_parent,
        )?);
        tracing::info!(driver = cgroups.driver().as_str(), "cgroup driver");
        let sandboxes = sandbox::Sandboxes::open(&config, &dirs, events.clone(), cgroups.clone()).await?;
        let nri = crate::nri::Nri::new(&config.nri);
        let containers =
            container::Containers::open(&config, &dirs, events.clone(), cgroups.clone(), nri.clone()).await?;
        let streaming = crate::streaming::Streaming::new(&config);
        let images_dir = dirs.images();
        let probe_dir = dirs.container_state(&format!("userns-probe-{}", std::process::id()));
        let user_namespaces =
            tokio::task::spawn_blocking(move || container::idmap::probe(&images_dir, &probe_dir))
                .await
                .map_err(|e| Error::Internal(format!("user namespace probe: {e}")))?
                .map_err(|e| e.to_string());
        if let Err(why) = &user_namespaces {
            tracing::info!(reason = %why, "pods cannot have user namespaces here");
        }
        let d = Arc::new(Daemon {
            effective: Mutex::new(config.clone()),
            config,
            dirs,
            images,
            sandboxes,
            containers,
            pod_cidr: Mutex::new(String::new()),
            streaming,
            events,
            user_namespaces,
            cgroups,
            status_kept: Default::default(),
            nri,
        });
        d.recover().await;
        d.nri.start(&d).await;
        d.containers.start_layer_refresh(std::time::Duration::from_secs(
            d.config.runtime.writable_layer_refresh_seconds.max(1),
        ));
        crate::streaming::start(&d).await?;
        Ok(d)
    }

    /// Applies a reloaded configuration (SIGHUP): registries and pinned images now (the log level is
    /// the caller's, which owns the subscriber); returns what changed and what needs a restart.
    pub fn reload(&self, new: &Config) -> crate::reload::Report {
        let mut eff = self.effective.lock().unwrap_or_else(|p| p.into_inner());
        let (next, report) = crate::reload::merge(&eff, new);
        if report.applied.iter().any(|k| k != "log_level") {
            self.images.reload(&next);
        }
        *eff = next;
        report
    }

    /// Start-up recovery (see DESIGN.md): sandboxes first, then containers.
    async fn recover(&self) {
        self.recover_sandboxes().await;
        self.recover_containers().await;
    }
}
