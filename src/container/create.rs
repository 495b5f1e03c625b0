//! CreateContainer. Create writes the record first, then the rootfs overlay and the bundle's
//! `config.json`; any failure undoes what was made. The container runs only at StartContainer
//! (`start`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cri_api::v1;

use super::record::{ContainerRecord, MountRecord, ResourcesRecord, Step};
use super::spec::{self, ImageDefaults, PodInfo, SpecInput};
use super::{Inner, lock, rootfs, user};
use crate::daemon::Daemon;
use crate::error::ResultExt;
use crate::sandbox::PodContext;
use crate::{Error, Result};

/// A validated CreateContainer request.
#[derive(Debug, Clone)]
pub struct NewContainer {
    pub pod_id: String,
    pub config: v1::ContainerConfig,
    pub sandbox_config: Option<v1::PodSandboxConfig>,
}

/// The image as a container needs it.
#[derive(Debug, Clone)]
struct ImageView {
    id: String,
    image_ref: String,
    defaults: ImageDefaults,
    layers: Vec<PathBuf>,
}

/// Everything creation needs, gathered from the daemon before the slow part runs in its own task.
struct Plan {
    id: String,
    req: NewContainer,
    pod: PodContext,
    pod_info: PodInfo,
    image: ImageView,
    target_pid: Option<u32>,
    /// A pidfd of the target's process, kept until StartContainer.
    target_pidfd: Mutex<Option<std::os::fd::OwnedFd>>,
    /// The images of image volumes.
    image_volumes: Vec<super::image_volume::ImageVolume>,
    /// The checkpoint the container is restored from.
    restore: Option<super::restore::Source>,
}

impl Daemon {
    fn image_view(&self, reference: &str) -> Result<ImageView> {
        let info = self.images.resolve(reference).ok_or_else(|| {
            Error::NotFound(format!(
                "config.image.image: image {reference:?} not found (pull it first)"
            ))
        })?;
        Ok(ImageView {
            image_ref: info
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| info.id.clone()),
            id: info.id,
            defaults: ImageDefaults::from_image(&info.config),
            layers: info.layers,
        })
    }

    /// The target of a TARGET PID namespace: a running container of the same pod, its pid and a pidfd
    /// that pins that process until StartContainer.
    fn target(&self, target_id: &str, pod_id: &str) -> Result<(Option<u32>, Option<std::os::fd::OwnedFd>)> {
        let field = "config.linux.security_context.namespace_options.target_id";
        let not_found = || {
            Error::NotFound(format!(
                "{field}: container {target_id:?} not found in pod {pod_id}"
            ))
        };
        let t = self.containers.get(target_id).map_err(|_| not_found())?;
        if t.pod_id != pod_id {
            // Another pod's PID namespace is not this pod's to join.
            return Err(not_found());
        }
        if t.pid == 0 || t.exited {
            return Ok((None, None));
        }
        let fd = crate::sys::pidfd_open(t.pid).ok();
        // The pidfd names the target's process only if the target was still running once it was open.
        let still = self
            .containers
            .get(target_id)
            .is_ok_and(|r| !r.exited && r.pid == t.pid);
        Ok(match (fd, still) {
            (Some(fd), true) => (Some(t.pid), Some(fd)),
            _ => (None, None),
        })
    }

    /// CreateContainer: the container ends up CREATED; returns its ID.
    pub async fn create_container(&self, mut req: NewContainer) -> Result<String> {
        let pod = self.sandboxes.pod_context(&req.pod_id)?;
        if !pod.ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let restore = req
            .config
            .image
            .as_ref()
            .and_then(|i| super::restore::source_of(&i.image, &self.images));
        if let Some(src) = &restore {
            self.restore_request(src, &mut req).await?;
        }
        let reference = req
            .config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = self.image_view(&reference)?;
        let sc = req
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref());
        let ns = sc.and_then(|s| s.namespace_options.as_ref());
        let (target_pid, target_pidfd) = match ns {
            Some(o) if o.pid == v1::NamespaceMode::Target as i32 => self.target(&o.target_id, &pod.id)?,
            _ => (None, None),
        };
        let mut image_volumes = Vec::new();
        for (index, m) in req.config.mounts.iter().enumerate() {
            let Some(spec) = m.image.as_ref().filter(|s| !s.image.is_empty()) else {
                continue;
            };
            let view = self.image_view(&spec.image).map_err(|_| {
                Error::NotFound(format!(
                    "config.mounts[{index}].image.image: image {:?} of an image volume not found (pull it first)",
                    spec.image
                ))
            })?;
            image_volumes.push(super::image_volume::ImageVolume {
                index,
                layers: view.layers,
                sub_path: m.image_sub_path.clone(),
                image_ref: view.image_ref,
            });
        }
        let pod_info = pod_info(&pod, req.sandbox_config.as_ref());
        let meta = req.config.metadata.clone().unwrap_or_default();
        let key = (pod.id.clone(), meta.name.clone(), meta.attempt);
        let id = crate::state::new_id();
        enum Slot {
            Ours(tokio::sync::watch::Sender<Option<Shared>>),
            Inflight(tokio::sync::watch::Receiver<Option<Shared>>),
            Taken(String),
        }
        let slot = {
            let mut names = lock(&self.containers.inner.names);
            let mut inflight = lock(&self.containers.inner.inflight);
            match names.get(&key) {
                Some(other) => match inflight.get(&key) {
                    Some(rx) => Slot::Inflight(rx.clone()),
                    None => Slot::Taken(other.clone()),
                },
                None => {
                    names.insert(key.clone(), id.clone());
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    inflight.insert(key.clone(), rx);
                    Slot::Ours(tx)
                }
            }
        };
        let tx = match slot {
            Slot::Ours(tx) => tx,
            // A retry of a create still in progress: its result is this one's.
            Slot::Inflight(rx) => return wait_inflight(rx).await,
            Slot::Taken(other) => {
                return Err(Error::AlreadyExists(format!(
                    "container name {:?} (attempt {}) in pod {} is already in use by container {other}",
                    meta.name, meta.attempt, pod.id
                )));
            }
        };
        let pod_id = pod.id.clone();
        let plan = Plan {
            id: id.clone(),
            req,
            pod,
            pod_info,
            image,
            target_pid,
            target_pidfd: Mutex::new(target_pidfd),
            image_volumes,
            restore,
        };
        let inner = Arc::clone(&self.containers.inner);
        // In a task of its own: a caller that goes away must not leave a half-made container.
        let r = tokio::spawn(async move {
            let r = inner
                .create(&plan)
                .await
                .map(|()| plan.id.clone())
                .map_err(|e| e.context(format!("CreateContainer {:?} in pod {pod_id}", meta.name)));
            if r.is_err() {
                lock(&inner.names).remove(&key);
            }
            lock(&inner.inflight).remove(&key);
            let shared = Arc::new(r);
            let _ = tx.send(Some(Arc::clone(&shared)));
            shared
        })
        .await
        .map_err(|e| Error::Internal(format!("create task failed: {e}")))?;
        match &*r {
            Ok(_) => {
                if let Ok(rec) = self.containers.get(&id) {
                    self.nri
                        .container_event(crate::nri::Event::POST_CREATE_CONTAINER, &rec)
                        .await;
                }
                Ok(id)
            }
            Err(e) => Err(e.duplicate()),
        }
    }
}

/// The result of a create in progress, shared with retries.
pub(super) type Shared = Arc<Result<String>>;

async fn wait_inflight(mut rx: tokio::sync::watch::Receiver<Option<Shared>>) -> Result<String> {
    let r = rx
        .wait_for(|v| v.is_some())
        .await
        .map_err(|_| Error::Internal("the create this retry waited for went away".into()))?
        .clone();
    match r.as_deref() {
        Some(Ok(id)) => Ok(id.clone()),
        Some(Err(e)) => Err(e.duplicate()),
        None => Err(Error::Internal("no create result".into())),
    }
}

/// What the container takes from its pod: the stored pod decides (hostname, privilege, sysctls), not
/// the request's copy of the sandbox config, which a client could make say anything. Only for a pod an
/// older crustd made, whose record holds no privilege, is the request's word taken.
fn pod_info(pod: &PodContext, sb: Option<&v1::PodSandboxConfig>) -> PodInfo {
    let linux = sb.and_then(|s| s.linux.as_ref());
    let requested = linux
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    PodInfo {
        ctx: pod.clone(),
        hostname: pod.hostname.clone(),
        privileged: pod.privileged.unwrap_or(requested),
        sysctls: pod.sysctls.clone(),
    }
}

impl Inner {
    async fn create(&self, p: &Plan) -> Result<()> {
        let cfg = &p.req.config;
        let meta = cfg.metadata.clone().unwrap_or_default();
        let img = cfg.image.clone().unwrap_or_default();
        let res = cfg
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .unwrap_or_default();
        let log = super::record::log_path(&p.pod.log_directory, &cfg.log_path);
        let mut rec = ContainerRecord {
            format: Default::default(),
            id: p.id.clone(),
            pod_id: p.pod.id.clone(),
            name: meta.name.clone(),
            attempt: meta.attempt,
            step: Step::Creating,
            created_at: crate::state::now_nanos(),
            started_at: 0,
            finished_at: 0,
            exited: false,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image: img.image.clone(),
            image_annotations: img.annotations.clone(),
            user_specified_image: img.user_specified_image.clone(),
            image_id: p.image.id.clone(),
            image_ref: p.image.image_ref.clone(),
            labels: cfg.labels.clone(),
            annotations: cfg.annotations.clone(),
            mounts: cfg
                .mounts
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let image_ref = p.image_volumes.iter().find(|v| v.index == i);
                    MountRecord::from_cri(m, image_ref.map(|v| v.image_ref.as_str()))
                })
                .collect(),
            log_path: log.as_ref().map(|l| l.display().to_string()).unwrap_or_default(),
            resources: ResourcesRecord::from_cri(&res),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            stop_signal: libc::SIGTERM,
            runtime_handler: p.pod.runtime_handler.clone(),
            cgroup: crate::cgroups::Cgroups::container_paths(
                &p.pod.cgroup_parent,
                p.pod.cgroup_slice.as_deref(),
                &p.id,
            )
            .0,
            pid: 0,
            tty: cfg.tty,
            stdin: cfg.stdin,
            stdin_once: cfg.stdin_once,
            layers: p.image.layers.clone(),
            restore: String::new(),
            listed: Default::default(),
        };
        // Fully synced: the record must be on disk before the writable layer under `root` exists, so
        // that a power loss mid-create leaves a record recovery rolls back, not a leaked layer.
        rec.save(&self.dirs)?;
        match self.make(p, &mut rec, log).await {
            Ok(()) => {
                rec.step = Step::Created;
                match self.put_update(rec.clone()) {
                    Ok(()) => {
                        if let Some(fd) = lock(&p.target_pidfd).take() {
                            lock(&self.targets).insert(rec.id.clone(), fd);
                        }
                        Ok(())
                    }
                    Err(e) => {
                        self.records.write().remove(&rec.id);
                        self.undo(&rec);
                        Err(e)
                    }
                }
            }
            Err(e) => {
                self.undo(&rec);
                Err(e)
            }
        }
    }

    /// Rootfs, bundle, log dir.
    async fn make(&self, p: &Plan, rec: &mut ContainerRecord, log: Option<PathBuf>) -> Result<()> {
        let cfg = &p.req.config;
        let dir = self.dirs.container_state(&p.id);
        std::fs::create_dir_all(&dir).ctx(format!("create {}", dir.display()))?;
        let mode = crate::state::private_dir_mode(p.pod.userns_path.is_some());
        crate::state::set_mode(&dir, mode).ctx(format!("chmod {}", dir.display()))?;
        let paths = self.rootfs_paths(&p.id);
        let layers = p.image.layers.clone();
        let paths2 = paths.clone();
        let idmap = p.pod.userns_path.clone().and_then(|userns| {
            let u = p.pod.namespace_options.userns_options.as_ref()?;
            Some(rootfs::Idmap {
                userns,
                root_uid: u.uids.first()?.host_id,
                root_gid: u.gids.first()?.host_id,
            })
        });
        tokio::task::spawn_blocking(move || rootfs::mount(&paths2, &layers, idmap.as_ref()))
            .await
            .map_err(|e| Error::Internal(format!("mount task failed: {e}")))??;
        if let Some(src) = p.restore.clone() {
            let (layer, mnt) = (paths.layer_dir.clone(), paths.mountpoint.clone());
            let dir = tokio::task::spawn_blocking(move || super::restore::unpack(&src, &layer, &mnt))
                .await
                .map_err(|e| Error::Internal(format!("checkpoint unpack task failed: {e}")))??;
            if let Some(log) = &log {
                super::restore::restore_log(&dir, log)?;
            }
            rec.restore = dir.display().to_string();
        }
        let cdi_requests = super::cdi::requests(cfg);
        let mut devices = Vec::new();
        for (i, d) in cfg.devices.iter().enumerate() {
            devices.extend(spec::host_devices(&format!("config.devices[{i}]"), d)?);
        }
        let privileged = cfg
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged);
        let passwd = user::read_image_file(&p.image.layers, "passwd");
        let group = user::read_image_file(&p.image.layers, "group");
        for (i, m) in cfg.mounts.iter().enumerate() {
            // As containerd: a missing host path is created as a directory.
            if !m.host_path.is_empty() && std::fs::symlink_metadata(&m.host_path).is_err() {
                std::fs::create_dir_all(&m.host_path).map_err(|e| {
                    Error::invalid(
                        format!("config.mounts[{i}].host_path"),
                        format!("create {}: {e}", m.host_path),
                    )
                })?;
            }
        }
        let has_maps = |m: &v1::Mount| !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty();
        if let Some(i) = cfg.mounts.iter().position(has_maps)
            && p.pod.userns_path.is_none()
        {
            return Err(Error::invalid(
                format!("config.mounts[{i}].uid_mappings"),
                "idmapped mounts are only for a pod with its own user namespace",
            ));
        }
        let idmapped_volumes = if cfg.mounts.iter().any(has_maps) {
            let (state, mounts) = (dir.clone(), cfg.mounts.clone());
            tokio::task::spawn_blocking(move || super::idmap::stage_volumes(&state, &mounts))
                .await
                .map_err(|e| Error::Internal(format!("idmap task failed: {e}")))??
        } else {
            std::collections::HashMap::new()
        };
        let cdi = if cdi_requests.is_empty() {
            Vec::new()
        } else {
            let dirs = self.host.cdi_spec_dirs.clone();
            tokio::task::spawn_blocking(move || super::cdi::resolve(&dirs, &cdi_requests))
                .await
                .map_err(|e| Error::Internal(format!("CDI task failed: {e}")))??
        };
        let image_volumes = if p.image_volumes.is_empty() {
            std::collections::HashMap::new()
        } else {
            let (state, vols) = (dir.clone(), p.image_volumes.clone());
            tokio::task::spawn_blocking(move || super::image_volume::stage(&state, &vols))
                .await
                .map_err(|e| Error::Internal(format!("image volume task failed: {e}")))??
        };
        let declared = super::declared_volumes::plan(
            self.host.image_volumes,
            &p.image.defaults.volumes,
            &cfg.mounts,
            &paths.layer_dir,
            &dir,
            p.pod.userns_path.is_some(),
        );
        let copy = self.host.image_volumes == crate::config::ImageVolumes::Copy;
        let built = spec::build(&SpecInput {
            id: &p.id,
            config: cfg,
            image: &p.image.defaults,
            image_name: &rec.image,
            pod: &p.pod_info,
            rootfs: &paths.mountpoint,
            passwd: passwd.as_deref(),
            group: group.as_deref(),
            devices,
            host_devices: if privileged {
                spec::all_host_devices()
            } else {
                Vec::new()
            },
            target_pid: p.target_pid,
            host: &self.host,
            idmapped_volumes: &idmapped_volumes,
            cdi: &cdi,
            image_volumes: &image_volumes,
            declared_volumes: if copy { &declared } else { &[] },
        })?;
        if !declared.is_empty() {
            let userns = p.pod.namespace_options.userns_options.as_ref();
            super::declared_volumes::make(super::declared_volumes::Make {
                mode: self.host.image_volumes,
                owner: super::declared_volumes::owner(
                    &built.user,
                    userns.filter(|_| p.pod.userns_path.is_some()),
                )?,
                vols: declared,
                layers: p.image.layers.clone(),
                container_state: dir.clone(),
                rootfs: paths.mountpoint.clone(),
                userns: p.pod.userns_path.clone(),
            })
            .await?;
        }
        rec.uid = built.user.uid;
        rec.gid = built.user.gid;
        rec.groups = built.user.additional_gids.clone();
        rec.stop_signal = built.stop_signal;
        let mut spec =
            serde_json::to_value(&built.spec).map_err(|e| Error::Internal(format!("serialise spec: {e}")))?;
        let nri_host = crate::nri::adjust::Host {
            runtime: self.runtimes.get(&rec.runtime_handler)?.path().to_path_buf(),
            cdi_spec_dirs: self.host.cdi_spec_dirs.clone(),
        };
        self.nri.create_container(rec, &mut spec, &nri_host).await?;
        let data = serde_json::to_vec(&spec).map_err(|e| Error::Internal(format!("serialise spec: {e}")))?;
        // The bundle lives in the state dir (tmpfs, gone with the host, whose reboot ends the container
        // too): a sync would protect nothing; the rename keeps readers from seeing half a file.
        let bundle = dir.join("config.json");
        crate::state::atomic_write_with(&bundle, &data, crate::state::Durability::Volatile)
            .ctx(format!("write {}", bundle.display()))?;
        if let Some(parent) = log.as_ref().and_then(|l| l.parent()) {
            std::fs::create_dir_all(parent).ctx(format!("create log directory {}", parent.display()))?;
        }
        Ok(())
    }

    /// Removes the rootfs, the state dir and the record (the runtime's container must be gone).
    fn undo(&self, rec: &ContainerRecord) {
        if let Err(e) = rootfs::remove(&self.rootfs_paths(&rec.id)) {
            tracing::warn!(id = %rec.id, error = %e, "removing the rootfs failed");
        }
        if let Err(e) = super::idmap::release_volumes(&self.dirs.container_state(&rec.id)) {
            tracing::warn!(id = %rec.id, error = %e, "detaching the idmapped volumes failed");
        }
        if let Err(e) = super::image_volume::release(&self.dirs.container_state(&rec.id)) {
            tracing::warn!(id = %rec.id, error = %e, "unmounting the image volumes failed");
        }
        let _ = crate::state::remove_dir_idempotent(&self.dirs.container_state(&rec.id));
        let _ = ContainerRecord::delete(&self.dirs, &rec.id);
    }
}
