//! Containers: the OCI spec from CRI config and image config, the rootfs overlay, and the lifecycle
//! (create, start, stop, remove, status, exec, stats) through each container's monitor.
//!
//! `Containers` keeps every record in memory (lists are served from there) and on disk under
//! `<root>/containers/<id>.json`. Slow work on one container holds that container's lock only. A
//! watcher per running monitor records the exit as it happens and has the runtime delete the container.
//! Start-up recovery (`recover_containers`): a half-created container is rolled back; a live monitor
//! means the container still runs; an exit file gives the exit status; a container never started has no
//! monitor and stays CREATED while its bundle exists; otherwise it died with the host or its monitor:
//! exited, reason `Unknown`. A live monitor of a container never recorded as started (crustd died
//! during StartContainer) may still be running the runtime's `run`: it is watched until the runtime
//! says running (the start time is recorded then) or the container exits.

pub mod apparmor;
pub mod cdi;
pub mod checkpoint;
mod copy_up;
mod create;
pub mod declared_volumes;
mod exec;
pub mod idmap;
pub mod image_volume;
mod layer_usage;
mod mounts;
pub mod record;
pub mod resource_checks;
pub mod resources;
mod restore;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod spec;
#[cfg(test)]
mod spec_tests;
mod start;
mod stats;
mod status;
mod stop;
mod stream;
mod trash;
pub mod user;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use create::NewContainer;
pub use record::{ContainerRecord, Step};
pub use status::ListFilter;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::oci::{OciRuntime, Runtimes};
use crate::state::{Dirs, Locks};
use crate::{Error, Result};

/// How long RemovePodSandbox waits for its containers' directories to be cleaned.
const REMOVAL_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// (pod ID, container name, attempt): unique among a pod's containers.
type NameKey = (String, String, u32);

/// The shared core, in an `Arc` so slow work can finish in a task of its own when the caller goes away.
pub(crate) struct Inner {
    dirs: Dirs,
    runtimes: Runtimes,
    /// The cgroup driver: with systemd, monitors go into scopes of their own.
    cgroups: Arc<crate::cgroups::Cgroups>,
    monitor_binary: PathBuf,
    kill_timeout: Duration,
    exec_max_output: usize,
    host: spec::HostInfo,
    records: crate::state::Versioned<BTreeMap<String, ContainerRecord>>,
    /// ListContainers' responses, while the records and the watched monitors stay as they were.
    kept: crate::wire::Kept<Option<i32>, crate::wire::Versions>,
    names: Mutex<HashMap<NameKey, String>>,
    /// Creates in progress, by name: a retry waits for the result.
    inflight: Mutex<HashMap<NameKey, tokio::sync::watch::Receiver<Option<create::Shared>>>>,
    locks: Locks,
    /// Last CPU sample per container, for nanocores.
    cpu_samples: crate::stats::CpuSampler,
    /// Writable-layer usage, refreshed in the background.
    layer_usage: layer_usage::LayerUsageCache,
    /// Each container's process spec, the template of its execs.
    exec_procs: Mutex<HashMap<String, Arc<oci_spec::runtime::Process>>>,
    /// Containers whose monitors are watched and run: lists need not look for their exit files.
    running: crate::monitor::Running,
    /// Created containers joining another container's PID namespace (TARGET): a pidfd of the target's
    /// process, opened at create, so StartContainer knows the `/proc/<pid>` in the bundle is still
    /// that process and not a recycled pid.
    targets: Mutex<HashMap<String, std::os::fd::OwnedFd>>,
    /// Where state changes are announced (GetContainerEvents).
    events: crate::events::Events,
    /// NRI plugins, which adjust the spec of a container being created.
    nri: crate::nri::Nri,
    /// Removed containers' directories, cleaned in the background.
    trash: trash::Trash,
}

/// All containers, served from memory, backed by records under `<root>/containers`.
pub struct Containers {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Containers {
    /// Loads the records.
    pub async fn open(
        cfg: &Config,
        dirs: &Dirs,
        events: crate::events::Events,
        cgroups: Arc<crate::cgroups::Cgroups>,
        nri: crate::nri::Nri,
    ) -> Result<Self> {
        for d in [dirs.container_records(), dirs.state.join("containers")] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        let d = dirs.state.join("containers");
        crate::state::set_mode(&d, 0o711).map_err(|e| Error::io(format!("chmod {}", d.display()), e))?;
        let mut records = BTreeMap::new();
        let mut names = HashMap::new();
        let d = dirs.container_records();
        let loaded = crate::state::read_all_json::<ContainerRecord>(&d)
            .map_err(|e| Error::io(format!("load the container records in {}", d.display()), e))?;
        for r in loaded {
            names.insert((r.pod_id.clone(), r.name.clone(), r.attempt), r.id.clone());
            records.insert(r.id.clone(), r);
        }
        let host = spec::HostInfo {
            apparmor: match apparmor::ensure_default(&apparmor::System::detect()) {
                Ok(on) => on,
                Err(e) => {
                    // The host runs AppArmor: RuntimeDefault containers are refused until it loads.
                    tracing::error!(error = %e, "AppArmor: the default profile is not loaded");
                    true
                }
            },
            seccomp_profile_root: cfg.runtime.seccomp_profile_root.clone(),
            cgroup_v2: crate::cgroups::is_v2(),
            all_caps: security::current_caps(),
            masked_paths: cfg.runtime.masked_paths.clone(),
            readonly_paths: cfg.runtime.readonly_paths.clone(),
            cdi_spec_dirs: cfg.runtime.cdi_spec_dirs.clone(),
            image_volumes: cfg.image.volumes,
        };
        let trash = trash::Trash::new(dirs);
        trash.open().map_err(|e| {
            Error::io(
                format!(
                    "make the trash in {} and {}",
                    dirs.root.display(),
                    dirs.state.display()
                ),
                e,
            )
        })?;
        Ok(Containers {
            inner: Arc::new(Inner {
                dirs: dirs.clone(),
                runtimes: Runtimes::from_config(cfg, dirs)?,
                cgroups,
                monitor_binary: cfg.monitor_binary(),
                kill_timeout: Duration::from_secs(cfg.runtime.kill_timeout_seconds.max(1)),
                exec_max_output: usize::try_from(cfg.runtime.exec_sync_max_output).unwrap_or(usize::MAX),
                host,
                records: crate::state::Versioned::new(records),
                kept: Default::default(),
                names: Mutex::new(names),
                inflight: Mutex::new(HashMap::new()),
                locks: Locks::default(),
                cpu_samples: Default::default(),
                layer_usage: Default::default(),
                exec_procs: Mutex::new(HashMap::new()),
                targets: Mutex::new(HashMap::new()),
                running: crate::monitor::Running::default(),
                events,
                nri,
                trash,
            }),
        })
    }

    /// The RuntimeClass handlers, and which is the default and why (for Status).
    pub fn runtimes(&self) -> &Runtimes {
        &self.inner.runtimes
    }

    /// Waits (up to `timeout`) for the cleanups of removed containers under way (a graceful
    /// shutdown); false when some are still running.
    pub async fn settle_removals(&self, timeout: Duration) -> bool {
        self.inner.trash.settle(|_| true, timeout).await
    }

    /// A container's record, refreshed from its exit file.
    pub fn get(&self, id: &str) -> Result<ContainerRecord> {
        self.inner.get(id)
    }

    /// Starts measuring running containers' writable layers in the background, every `every`.
    pub fn start_layer_refresh(&self, every: Duration) {
        layer_usage::start_refresh(&self.inner, every);
    }

    /// Measures every running container's writable layer now (what the background refresh does
    /// each period); returns how many.
    pub async fn refresh_layers(&self) -> usize {
        self.inner.refresh_layers().await
    }

    /// IDs of a pod's containers.
    pub fn pod_container_ids(&self, pod_id: &str) -> Vec<String> {
        self.inner
            .records
            .read()
            .values()
            .filter(|r| r.pod_id == pod_id)
            .map(|r| r.id.clone())
            .collect()
    }
}

impl Inner {
    /// The full ID for `id` (exact, or a unique prefix); NotFound naming it.
    fn resolve_id(&self, id: &str) -> Result<String> {
        let recs = self.records.read();
        if recs.contains_key(id) {
            return Ok(id.to_string());
        }
        let mut it = recs.keys().filter(|k| !id.is_empty() && k.starts_with(id));
        match (it.next(), it.next()) {
            (Some(k), None) => Ok(k.clone()),
            (Some(_), Some(_)) => Err(Error::NotFound(format!(
                "container ID prefix {id:?} is ambiguous"
            ))),
            _ => Err(Error::NotFound(format!("container {id:?} not found"))),
        }
    }

    /// The record, with an exit that happened since last looked at taken from the exit file.
    fn get(&self, id: &str) -> Result<ContainerRecord> {
        let id = self.resolve_id(id)?;
        let rec = self
            .records
            .read()
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        Ok(if self.needs_refresh(&rec) {
            self.refresh(rec)
        } else {
            rec
        })
    }

    /// Whether a record's exit may have to be taken from its exit file: started, not known to have
    /// exited, and its monitor not watched (a watched monitor's exit is taken by its watcher).
    fn needs_refresh(&self, rec: &ContainerRecord) -> bool {
        Self::needs_refresh_among(rec, &self.running.watched())
    }

    /// `needs_refresh`, with the watched IDs already locked (`Running::watched`).
    fn needs_refresh_among(rec: &ContainerRecord, watched: &std::collections::HashSet<String>) -> bool {
        !rec.exited && rec.step == Step::Created && rec.started_at != 0 && !watched.contains(&rec.id)
    }

    /// Takes a new exit from the exit file into the record (and saves it). A container not started yet
    /// has no exit to take: a start in progress (holding the lock) records its own outcome, which a
    /// refresh from a list must not overwrite half-way.
    fn refresh(&self, mut rec: ContainerRecord) -> ContainerRecord {
        if rec.exited || rec.step != Step::Created || rec.started_at == 0 {
            return rec;
        }
        if let Some(st) = crate::monitor::read_exit(&self.dirs.container_state(&rec.id)) {
            rec.set_exit(&st);
            if let Err(e) = self.put_existing(rec.clone()) {
                tracing::warn!(id = %rec.id, error = %e, "saving the exit of a container failed");
            }
        }
        rec
    }

    /// Watches a started container's monitor: once it exits, its exit status goes into the record, and
    /// the runtime forgets the container (as containerd deletes a task when it exits), so that a later
    /// RemoveContainer has no runtime call to wait for. Under the container's lock: no request works
    /// on the container meanwhile.
    fn watch(self: &Arc<Self>, id: &str) {
        let inner = Arc::clone(self);
        let owned = id.to_string();
        self.running
            .watch(id, &self.dirs.container_state(id), async move {
                let _g = inner.locks.lock(&owned).await;
                // The record is saved (synced): off the async workers.
                let (inner2, id2) = (Arc::clone(&inner), owned.clone());
                let Ok(Ok(rec)) = tokio::task::spawn_blocking(move || inner2.get(&id2)).await else {
                    return;
                };
                if rec.exited {
                    inner.forget_in_runtime(&rec).await;
                }
            });
    }

    /// Saves a record and updates memory (if the container was not removed meanwhile).
    fn put(&self, rec: ContainerRecord) -> Result<()> {
        self.put_with(rec, crate::state::Durability::Full)
    }

    /// `put` of an update a power loss may undo harmlessly ([`crate::state::Durability::Replace`]:
    /// the old or the new record survives intact, saving the directory sync). Only for steps whose
    /// previous record recovery handles just as well after a reboot, when the container is dead
    /// anyway: `Creating` → `Created` (rolled back instead of shown as exited) and the start time
    /// (shown as exited without having started).
    fn put_update(&self, rec: ContainerRecord) -> Result<()> {
        self.put_with(rec, crate::state::Durability::Replace)
    }

    fn put_with(&self, rec: ContainerRecord, durability: crate::state::Durability) -> Result<()> {
        rec.save_with(&self.dirs, durability)?;
        let mut recs = self.records.write();
        self.announce(recs.get(&rec.id), &rec);
        recs.insert(rec.id.clone(), rec);
        Ok(())
    }

    /// Sends the events of the change from `old` (as in memory) to `new`.
    fn announce(&self, old: Option<&ContainerRecord>, new: &ContainerRecord) {
        use cri_api::v1::ContainerEventType as E;
        let was_created = old.is_some_and(|o| o.step == Step::Created);
        let changes = [
            (
                !was_created && new.step == Step::Created,
                E::ContainerCreatedEvent,
            ),
            (
                old.is_none_or(|o| o.started_at == 0) && new.started_at != 0,
                E::ContainerStartedEvent,
            ),
            (
                old.is_none_or(|o| !o.exited) && new.exited,
                E::ContainerStoppedEvent,
            ),
        ];
        if changes[2].0 {
            self.nri.container_exited(new);
        }
        if changes[2].0 && new.reason == "OOMKilled" {
            crate::metrics::global().oom_kill();
        }
        for (happened, kind) in changes {
            if happened {
                self.events.send(&new.id, &new.pod_id, kind);
            }
        }
    }

    /// Saves `rec` and takes it into memory even when its file cannot be written (a full disk): what
    /// crustd answers stays true, and the file keeps the step before, which recovery corrects from the
    /// monitor's exit file. For outcomes that happened whether or not they could be written down.
    fn put_or_remember(&self, rec: ContainerRecord) {
        if let Err(e) = rec.save(&self.dirs) {
            tracing::warn!(id = %rec.id, error = %e, "the container's record could not be saved; kept in memory");
        }
        let mut recs = self.records.write();
        self.announce(recs.get(&rec.id), &rec);
        recs.insert(rec.id.clone(), rec);
    }

    /// Like `put`, for callers without the container's lock: a container removed meanwhile stays
    /// removed (the check and the write happen under the records lock).
    fn put_existing(&self, rec: ContainerRecord) -> Result<()> {
        let mut recs = self.records.write();
        if !recs.contains_key(&rec.id) {
            return Ok(());
        }
        rec.save(&self.dirs)?;
        self.announce(recs.get(&rec.id), &rec);
        recs.insert(rec.id.clone(), rec);
        Ok(())
    }

    fn runtime(&self, rec: &ContainerRecord) -> Result<Arc<dyn OciRuntime>> {
        self.runtimes.get_existing(&rec.runtime_handler, &rec.id)
    }

    fn rootfs_paths(&self, id: &str) -> rootfs::RootfsPaths {
        rootfs::RootfsPaths {
            layer_dir: self.dirs.container_root(id),
            mountpoint: self.dirs.container_state(id).join("rootfs"),
        }
    }

    /// Deletes the record file and drops the container from memory (under the records lock, so an
    /// unlocked refresh cannot write the record back).
    fn forget(&self, rec: &ContainerRecord) -> Result<()> {
        lock(&self.targets).remove(&rec.id);
        {
            let mut recs = self.records.write();
            ContainerRecord::delete(&self.dirs, &rec.id)?;
            if recs.remove(&rec.id).is_some_and(|r| r.step == Step::Created) {
                self.events.send(
                    &rec.id,
                    &rec.pod_id,
                    cri_api::v1::ContainerEventType::ContainerDeletedEvent,
                );
            }
        }
        lock(&self.names).remove(&(rec.pod_id.clone(), rec.name.clone(), rec.attempt));
        self.cpu_samples.forget(&rec.id);
        self.layer_usage.forget(&rec.id);
        lock(&self.exec_procs).remove(&rec.id);
        Ok(())
    }

    /// Start-up recovery (see the module doc).
    async fn recover(self: &Arc<Self>) {
        let all: Vec<ContainerRecord> = self.records.read().values().cloned().collect();
        for mut rec in all {
            let dir = self.dirs.container_state(&rec.id);
            if rec.step == Step::Creating {
                tracing::info!(id = %rec.id, "rolling back a half-created container");
                match self.destroy(&rec).await.and_then(|()| self.forget(&rec)) {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(id = %rec.id, error = %e, "rollback of a half-created container failed")
                    }
                }
                continue;
            }
            if rec.exited {
                continue;
            }
            if let Some(st) = crate::monitor::read_exit(&dir) {
                rec.set_exit(&st);
            } else if crate::monitor::is_alive(&dir) {
                self.watch(&rec.id);
                // Crashed between `runtime start` and the record update: ask the runtime.
                if rec.started_at != 0 {
                    // Running as recorded: nothing to save (a synced write per container would
                    // keep a restarted crustd from answering for seconds on a full node).
                    continue;
                }
                if let Ok(rt) = self.runtime(&rec)
                    && let Ok(s) = rt.state(&rec.id).await
                    && s.status == "running"
                {
                    rec.started_at = crate::state::now_nanos();
                    rec.pid = s.pid;
                } else {
                    // The runtime may still be running the container (crustd died while its `run`
                    // was under way): shown CREATED until then, and a StartContainer would fail.
                    self.settle_start(&rec.id);
                    continue;
                }
            } else if rec.started_at == 0 && dir.join("config.json").exists() {
                // Never started (a start runs the monitor): still CREATED. Without its bundle (the
                // state dir is gone with a reboot) it could never start, and is shown as exited.
                continue;
            } else {
                rec.set_unknown_exit("the container's monitor is gone and left no exit status");
            }
            if let Err(e) = self.put(rec.clone()) {
                tracing::warn!(id = %rec.id, error = %e, "saving a recovered container record failed");
            }
        }
    }

    /// A container found at start-up with a live monitor but no start recorded: the runtime's `run`
    /// may still be under way (its monitor outlived the crustd that asked for it). Asks the runtime
    /// until it says running, then records the start (under the container's lock, unless a
    /// StartContainer or the exit came first); gives up once the monitor is gone or has an exit (the
    /// watcher records it), or after the monitor's own create timeout (a container an older crustd
    /// created through its monitor stays CREATED in the runtime and is started by StartContainer).
    fn settle_start(self: &Arc<Self>, id: &str) {
        let inner = Arc::clone(self);
        let id = id.to_string();
        tokio::spawn(async move {
            let dir = inner.dirs.container_state(&id);
            let deadline = tokio::time::Instant::now() + crate::monitor::create_timeout();
            while tokio::time::Instant::now() < deadline {
                if crate::monitor::read_exit(&dir).is_some() || !crate::monitor::is_alive(&dir) {
                    return;
                }
                let Ok(rec) = inner.get(&id) else { return };
                if rec.exited || rec.started_at != 0 {
                    return;
                }
                let running = match inner.runtime(&rec) {
                    Ok(rt) => rt.state(&id).await.ok().filter(|s| s.status == "running"),
                    Err(_) => return,
                };
                if let Some(s) = running {
                    let _g = inner.locks.lock(&id).await;
                    if let Ok(mut rec) = inner.get(&id)
                        && !rec.exited
                        && rec.started_at == 0
                    {
                        tracing::info!(%id, "the runtime ran the container while crustd was down");
                        rec.started_at = crate::state::now_nanos();
                        rec.pid = s.pid;
                        if let Err(e) = inner.put_update(rec) {
                            tracing::warn!(%id, error = %e, "saving the recovered start failed");
                        }
                    }
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
    }
}

impl Daemon {
    /// Start-up recovery of containers (see the module doc).
    pub(crate) async fn recover_containers(&self) {
        self.containers.inner.recover().await;
    }

    /// Stops every container of a pod (StopPodSandbox), each with a zero grace period.
    pub async fn stop_pod_containers(&self, pod_id: &str) -> Result<()> {
        for id in self.containers.pod_container_ids(pod_id) {
            self.stop_container(&id, 0).await?;
        }
        Ok(())
    }

    /// Removes every container of a pod (RemovePodSandbox), and waits for their directories'
    /// cleanups: nothing of a removed pod stays mounted.
    pub async fn remove_pod_containers(&self, pod_id: &str) -> Result<()> {
        for id in self.containers.pod_container_ids(pod_id) {
            self.remove_container(&id).await?;
        }
        if !self
            .containers
            .inner
            .trash
            .settle(|p| p == pod_id, REMOVAL_SETTLE_TIMEOUT)
            .await
        {
            tracing::warn!(pod = %pod_id, "the cleanup of the pod's removed containers is still running");
        }
        Ok(())
    }
}
