//! Pod sandboxes: the pinned network namespace wired by CNI, pod files (hostname, hosts, resolv.conf,
//! shm), the pod cgroup, and the built-in pause process under its own monitor.
//!
//! `Sandboxes` serves pods from memory; records under `<root>/pods` back it. Modules: `record` (the
//! record and its fields), `names` (name reservations, in-flight retries), `netns`, `files`, `network`
//! (CNI), `pause` (the infra container), `run` (RunPodSandbox with rollback), `lifecycle` (stop, remove,
//! recovery), `status` (status, list), `stats`.

mod files;
mod lifecycle;
mod names;
mod netns;
mod network;
mod pause;
mod record;
mod run;
mod stats;
mod status;
mod stream;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cri_api::v1;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::oci::Runtimes;
use crate::state::{Dirs, Locks};
use crate::{Error, Result};

pub use record::{Namespaces, PodRecord, PodState};
pub use status::ListFilter;
pub use validate::{NewPod, validate_run};

/// What a container of the pod needs to know about its pod.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pinned netns; `None` for the host network.
    pub netns_path: Option<PathBuf>,
    /// The pinned user namespace of a pod with its own; `None`: the host's.
    pub userns_path: Option<PathBuf>,
    /// The pause's pid: join its ipc/uts/pid namespaces through `/proc/<pid>/ns/*`.
    pub pause_pid: Option<u32>,
    pub namespace_options: v1::NamespaceOption,
    pub hostname_path: PathBuf,
    pub hosts_path: PathBuf,
    pub resolv_path: PathBuf,
    /// The pod's /dev/shm; `None` with host IPC.
    pub shm_path: Option<PathBuf>,
    /// The pod cgroup, relative, no leading '/'.
    pub cgroup_parent: String,
    /// The pod's slice, with the systemd cgroup driver.
    pub cgroup_slice: Option<String>,
    pub log_directory: String,
    pub runtime_handler: String,
    pub ready: bool,
    /// The pod's hostname, as made.
    pub hostname: String,
    /// Privileged as RunPodSandbox asked; `None` for a pod an older crustd made.
    pub privileged: Option<bool>,
    /// The pod's namespaced sysctls.
    pub sysctls: HashMap<String, String>,
}

/// The shared core, in an `Arc` so RunPodSandbox can finish (or roll back) in a task of its own even
/// when the caller goes away.
pub(crate) struct Inner {
    dirs: Dirs,
    cni_conf_dir: PathBuf,
    cni: crust_cni::Cni,
    runtimes: Runtimes,
    cgroups: Arc<crate::cgroups::Cgroups>,
    monitor_binary: PathBuf,
    pause_binary: PathBuf,
    pause_rootfs: PathBuf,
    pause_prepared: tokio::sync::OnceCell<()>,
    /// Every pod, by ID.
    pods: crate::state::Versioned<BTreeMap<String, PodRecord>>,
    /// ListPodSandbox's responses, while the pods and the watched pauses stay as they were.
    kept: crate::wire::Kept<Option<i32>, crate::wire::Versions>,
    names: names::Names,
    /// One lock per pod ID around slow work.
    locks: Locks,
    /// Pods whose pause monitors are watched and run: readiness needs no look at their files.
    running: crate::monitor::Running,
    /// Where state changes are announced (GetContainerEvents; a pod's own events carry its ID).
    events: crate::events::Events,
    /// Ready pods whose pause died and that were announced stopped for it (not again at the stop).
    announced_stopped: Mutex<std::collections::HashSet<String>>,
    /// Last CPU sample per pod, for nanocores.
    cpu_samples: crate::stats::CpuSampler,
}

/// All pod sandboxes, served from memory, backed by records under `<root>/pods`.
pub struct Sandboxes {
    inner: Arc<Inner>,
}

impl Sandboxes {
    /// Loads the records.
    pub async fn open(
        cfg: &Config,
        dirs: &Dirs,
        events: crate::events::Events,
        cgroups: Arc<crate::cgroups::Cgroups>,
    ) -> Result<Self> {
        for d in [
            dirs.pod_records(),
            dirs.netns_dir(),
            dirs.userns_dir(),
            dirs.state.join("pods"),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        let pods_dir = dirs.state.join("pods");
        crate::state::set_mode(&pods_dir, 0o711)
            .map_err(|e| Error::io(format!("chmod {}", pods_dir.display()), e))?;
        let records = PodRecord::load_all(dirs)?;
        let names = names::Names::default();
        let mut pods = BTreeMap::new();
        for r in records {
            names.taken(r.name_key(), &r.id);
            pods.insert(r.id.clone(), r);
        }
        Ok(Sandboxes {
            inner: Arc::new(Inner {
                dirs: dirs.clone(),
                cni_conf_dir: cfg.cni.conf_dir.clone(),
                cni: crust_cni::Cni::new(
                    cfg.cni.bin_dirs.clone(),
                    Duration::from_secs(cfg.cni.plugin_timeout_seconds.max(1)),
                ),
                runtimes: Runtimes::from_config(cfg, dirs)?,
                cgroups,
                monitor_binary: cfg.monitor_binary(),
                pause_binary: cfg.pause_binary(),
                pause_rootfs: dirs.state.join("pause").join("rootfs"),
                pause_prepared: tokio::sync::OnceCell::new(),
                pods: crate::state::Versioned::new(pods),
                kept: Default::default(),
                names,
                locks: Locks::default(),
                running: crate::monitor::Running::default(),
                events,
                announced_stopped: Mutex::default(),
                cpu_samples: Default::default(),
            }),
        })
    }

    /// `Ok` when a CNI network configuration loads; otherwise why not.
    pub fn network_ready(&self) -> std::result::Result<(), String> {
        network::default_network(&self.inner.cni_conf_dir)
            .map(drop)
            .map_err(|e| format!("cni config uninitialized: {e}"))
    }

    /// What a container needs of its pod. NotFound naming the ID.
    pub fn pod_context(&self, pod_id: &str) -> Result<PodContext> {
        let rec = self.inner.get(pod_id)?;
        Ok(self.inner.context(&rec))
    }

    /// A copy of the record of a pod (full ID or unique prefix).
    pub fn get(&self, pod_id: &str) -> Result<PodRecord> {
        self.inner.get(pod_id)
    }

    /// IDs of every pod.
    pub fn ids(&self) -> Vec<String> {
        self.inner.snapshot().into_iter().map(|r| r.id).collect()
    }
}

impl Inner {
    /// Copies of all records.
    fn snapshot(&self) -> Vec<PodRecord> {
        self.pods.read().values().cloned().collect()
    }

    /// `f` over one pod's record (full ID or unique prefix), under the lock: no copy of the record.
    fn with_pod<T>(&self, id: &str, f: impl FnOnce(&PodRecord) -> T) -> Result<T> {
        let pods = self.pods.read();
        let key = Self::resolve_in(&pods, id)?;
        pods.get(&key)
            .map(f)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))
    }

    /// Resolves a full ID or a unique prefix.
    fn resolve(&self, id: &str) -> Result<String> {
        Self::resolve_in(&self.pods.read(), id)
    }

    fn resolve_in(pods: &BTreeMap<String, PodRecord>, id: &str) -> Result<String> {
        if id.is_empty() {
            return Err(Error::invalid("pod_sandbox_id", "must not be empty"));
        }
        if pods.contains_key(id) {
            return Ok(id.to_string());
        }
        let mut matches = pods.keys().filter(|k| k.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some(k), None) => Ok(k.clone()),
            (Some(_), Some(_)) => Err(Error::invalid(
                "pod_sandbox_id",
                format!("{id:?} is a prefix of more than one pod sandbox"),
            )),
            _ => Err(Error::NotFound(format!("pod sandbox {id:?} not found"))),
        }
    }

    /// For stop and remove, which succeed for a pod that is not there: the pod's lock and its record,
    /// or `None` when no such pod exists (also when it went away while the lock was awaited).
    async fn lock_existing(&self, id: &str) -> Result<Option<(crate::state::Guard, PodRecord)>> {
        let id = match self.resolve(id) {
            Ok(id) => id,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let guard = self.locks.lock(&id).await;
        Ok(self.get(&id).ok().map(|rec| (guard, rec)))
    }

    fn get(&self, id: &str) -> Result<PodRecord> {
        let id = self.resolve(id)?;
        self.pods
            .read()
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))
    }

    /// Stores the record on disk, then in memory.
    fn save(&self, rec: &PodRecord) -> Result<()> {
        use cri_api::v1::ContainerEventType as E;
        rec.save(&self.dirs)?;
        let old = self
            .pods
            .write()
            .insert(rec.id.clone(), rec.clone())
            .map(|o| o.state);
        match (old, rec.state) {
            (Some(PodState::Creating) | None, PodState::Ready) => {
                self.events.send(&rec.id, &rec.id, E::ContainerCreatedEvent);
                self.events.send(&rec.id, &rec.id, E::ContainerStartedEvent);
            }
            // Unless announced already, when its pause died.
            (Some(PodState::Ready), PodState::Stopped) if !self.announced().remove(&rec.id) => {
                self.events.send(&rec.id, &rec.id, E::ContainerStoppedEvent);
            }
            _ => {}
        }
        Ok(())
    }

    /// Forgets a pod: record file, memory, name.
    fn forget(&self, rec: &PodRecord) -> Result<()> {
        PodRecord::delete(&self.dirs, &rec.id)?;
        let old = self.pods.write().remove(&rec.id);
        self.announced().remove(&rec.id);
        self.cpu_samples.forget(&rec.id);
        // A pod rolled back before it was ready was never announced.
        if old.is_some_and(|o| o.state != PodState::Creating) {
            let kind = cri_api::v1::ContainerEventType::ContainerDeletedEvent;
            self.events.send(&rec.id, &rec.id, kind);
        }
        self.names.release(&rec.name_key(), &rec.id);
        Ok(())
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.dirs.netns_dir().join(id)
    }

    fn userns_path(&self, id: &str) -> PathBuf {
        self.dirs.userns_dir().join(id)
    }

    fn pause_dir(&self, id: &str) -> PathBuf {
        PodRecord::pause_dir(&self.dirs, id)
    }

    fn announced(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.announced_stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ready: created, not stopped, and the pause still runs.
    fn is_ready(&self, rec: &PodRecord) -> bool {
        self.is_ready_among(rec, &self.running.watched())
    }

    /// `is_ready`, with the watched pause IDs already locked (`Running::watched`).
    fn is_ready_among(&self, rec: &PodRecord, watched: &std::collections::HashSet<String>) -> bool {
        rec.state == PodState::Ready
            && (watched.contains(&rec.id) || !pause::exited(&self.pause_dir(&rec.id)))
    }

    /// Watches the pause's monitor of a ready pod (see `is_ready`); when the pause dies on its own, the
    /// pod is announced stopped (a stop in progress, holding the pod's lock, announces its own).
    fn watch_pause(self: &Arc<Self>, id: &str) {
        let (inner, owned) = (Arc::clone(self), id.to_string());
        let exited = async move {
            let _guard = inner.locks.lock(&owned).await;
            if inner.get(&owned).is_ok_and(|r| r.state == PodState::Ready) {
                inner.announced().insert(owned.clone());
                let kind = cri_api::v1::ContainerEventType::ContainerStoppedEvent;
                inner.events.send(&owned, &owned, kind);
            }
        };
        self.running.watch(id, &self.pause_dir(id), exited);
    }

    fn context(&self, rec: &PodRecord) -> PodContext {
        let files = files::PodFiles::in_dir(&PodRecord::files_dir(&self.dirs, &rec.id));
        let ns = &rec.namespaces;
        PodContext {
            id: rec.id.clone(),
            name: rec.name.clone(),
            namespace: rec.namespace.clone(),
            uid: rec.uid.clone(),
            netns_path: (!ns.host_network()).then(|| self.netns_path(&rec.id)),
            userns_path: rec.userns.clone(),
            pause_pid: (rec.pause_pid != 0).then_some(rec.pause_pid),
            namespace_options: ns.to_cri(),
            hostname_path: files.hostname,
            hosts_path: files.hosts,
            resolv_path: files.resolv,
            shm_path: (!ns.host_ipc()).then_some(files.shm),
            cgroup_parent: rec.cgroup.clone().unwrap_or_default(),
            cgroup_slice: rec.slice.clone(),
            log_directory: rec.log_directory.clone(),
            runtime_handler: rec.runtime_handler.clone(),
            ready: self.is_ready(rec),
            hostname: rec.hostname.clone(),
            privileged: rec.privileged,
            sysctls: rec.sysctls.clone(),
        }
    }
}

impl Daemon {
    /// Start-up recovery of pod sandboxes (DESIGN.md): half-made pods are rolled back; a ready pod whose
    /// netns or pause is gone (crash, reboot) is stopped, which runs CNI DEL with the cached result.
    pub(crate) async fn recover_sandboxes(&self) {
        lifecycle::recover(&self.sandboxes.inner).await;
    }
}
