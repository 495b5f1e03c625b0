//! The Node Resource Interface (containerd/nri v0.8+ protocol): plugins that observe and adjust pods
//! and containers. External plugins connect to `nri.socket_path`; pre-installed ones are started from
//! `nri.plugin_path`. Each is registered and configured (`plugin`), shown what already exists
//! (`sync`), and then called, in index order, at each lifecycle event (`events`); adjustments to a
//! container being created go into its OCI spec (`adjust`) before the runtime sees it.
//!
//! As in containerd, every event is handled under one lock, so plugins see events one at a time and
//! a plugin that connects is synchronized while no event runs. With no plugin connected, an event
//! costs a look at an empty list.

pub mod adjust;
pub mod convert;
mod events;
mod launch;
mod linux;
#[cfg(test)]
mod linux_tests;
mod mux;
pub mod plugin;

use std::sync::{Arc, Mutex, OnceLock, Weak};

use nri_api::nri as api;

use crate::config::NriConfig;
use crate::daemon::Daemon;
use crate::{Error, Result};
use plugin::{Plugin, Settings};

pub use events::{from_cri, to_cri};
pub use nri_api::nri::Event;

/// A connected plugin, as `crictl info` and `crustctl status` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    pub index: String,
    pub name: String,
    /// `external` or `pre-installed`.
    pub kind: String,
    pub pid: Option<u32>,
    /// The events it subscribed to.
    pub events: Vec<String>,
}

/// NRI in crustd: cheap to clone.
#[derive(Clone)]
pub struct Nri {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    cfg: NriConfig,
    settings: Settings,
    /// Connected plugins, kept in index order.
    plugins: Mutex<Vec<Arc<Plugin>>>,
    /// Held by every event and by a new plugin's synchronization.
    order: tokio::sync::Mutex<()>,
    daemon: OnceLock<Weak<Daemon>>,
    /// Containers plugins were told had stopped, so that each is told once, however it stopped
    /// (its exit, StopContainer, its pod's stop, its removal), as containerd tells them.
    stopped: Mutex<std::collections::HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Nri {
    /// NRI as configured; nothing runs until `start`.
    pub fn new(cfg: &NriConfig) -> Nri {
        let dur =
            |s: &str, d: u64| crate::config::parse_duration(s).unwrap_or(std::time::Duration::from_secs(d));
        Nri {
            shared: Arc::new(Shared {
                settings: Settings {
                    registration_timeout: dur(&cfg.plugin_registration_timeout, 5),
                    request_timeout: dur(&cfg.plugin_request_timeout, 2),
                    runtime_name: "crust".into(),
                    runtime_version: crate::version::VERSION.into(),
                },
                cfg: cfg.clone(),
                plugins: Mutex::new(Vec::new()),
                order: tokio::sync::Mutex::new(()),
                daemon: OnceLock::new(),
                stopped: Mutex::new(Default::default()),
            }),
        }
    }

    /// Serves the socket and starts the pre-installed plugins. A socket that cannot be served is
    /// logged, not fatal: crustd runs on without external plugins.
    pub async fn start(&self, daemon: &Arc<Daemon>) {
        if !self.shared.cfg.enable {
            tracing::info!("NRI is disabled (nri.enable = false)");
            return;
        }
        let _ = self.shared.daemon.set(Arc::downgrade(daemon));
        launch::start_preinstalled(&self.shared).await;
        if let Err(e) = launch::serve_socket(&self.shared) {
            tracing::error!(socket = %self.shared.cfg.socket_path.display(), error = %e, "NRI: the plugin socket cannot be served; external plugins cannot connect");
        }
    }

    /// The connected plugins, in invocation order.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.shared
            .active()
            .iter()
            .map(|p| PluginInfo {
                index: p.idx.clone(),
                name: p.name.clone(),
                kind: p.kind.to_string(),
                pid: p.pid,
                events: events::names(p.events),
            })
            .collect()
    }

    /// Disconnects every plugin (crustd is stopping).
    pub fn shutdown(&self) {
        for p in lock(&self.shared.plugins).drain(..) {
            p.close();
        }
    }
}

impl Shared {
    /// The plugins still connected, in index order (closed ones are dropped from the list).
    fn active(&self) -> Vec<Arc<Plugin>> {
        let mut list = lock(&self.plugins);
        list.retain(|p| !p.is_closed());
        list.clone()
    }

    fn daemon(&self) -> Option<Arc<Daemon>> {
        self.daemon.get().and_then(Weak::upgrade)
    }

    /// Adds a registered plugin after showing it the pods and containers that exist, and applies the
    /// updates it asks for then.
    async fn add(self: &Arc<Self>, p: Arc<Plugin>) -> Result<()> {
        let _order = self.order.lock().await;
        let (pods, containers) = match self.daemon() {
            Some(d) => snapshot(&d),
            None => (Vec::new(), Vec::new()),
        };
        let mut req = api::SynchronizeRequest::new();
        req.pods = pods;
        req.containers = containers;
        let rsp = p
            .call(
                "Synchronize",
                |c, ctx| async move { c.synchronize(ctx, &req).await },
            )
            .await?
            .ok_or_else(|| Error::Unavailable(format!("NRI plugin {} did not synchronize", p.id())))?;
        let id = p.id();
        {
            let mut list = lock(&self.plugins);
            list.retain(|q| !q.is_closed() && q.id() != id);
            list.push(Arc::clone(&p));
            list.sort_by(|a, b| a.idx.cmp(&b.idx).then_with(|| a.name.cmp(&b.name)));
        }
        tracing::info!(plugin = %id, kind = p.kind, pods_and_containers_shown = rsp.update.len(), "NRI plugin connected and synchronized");
        if !rsp.update.is_empty()
            && let Some(d) = self.daemon()
        {
            events::apply_updates(&d, &id, rsp.update, Vec::new()).await;
        }
        Ok(())
    }
}

#[nri_api::async_trait]
impl plugin::Host for Shared {
    async fn plugin_updates(
        &self,
        plugin: &str,
        updates: Vec<api::ContainerUpdate>,
        evictions: Vec<api::ContainerEviction>,
    ) -> Vec<api::ContainerUpdate> {
        match self.daemon() {
            Some(d) => events::apply_updates(&d, plugin, updates, evictions).await,
            None => updates,
        }
    }
}

/// Every pod and container as plugins see them.
fn snapshot(d: &Daemon) -> (Vec<api::PodSandbox>, Vec<api::Container>) {
    let mut pods = Vec::new();
    let mut containers = Vec::new();
    for id in d.sandboxes.ids() {
        let Ok(rec) = d.sandboxes.get(&id) else { continue };
        pods.push(convert::pod(&rec));
        for cid in d.containers.pod_container_ids(&id) {
            if let Ok(c) = d.containers.get(&cid) {
                let spec = events::bundle_spec(d, &cid);
                containers.push(convert::container(&c, spec.as_ref()));
            }
        }
    }
    (pods, containers)
}
