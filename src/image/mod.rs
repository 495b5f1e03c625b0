//! Images: pulling from OCI registries, the content-addressed store, layer unpacking, and the image
//! index that ListImages/ImageStatus/RemoveImage serve.
//!
//! `reference` parses names, `registry` talks to registries, `manifest` reads manifests and indexes,
//! `pull` runs a pull, `policy` is the signature trust policy a pull must satisfy, `unpack` unpacks
//! layers safely, `store` is the on-disk layout, `index` the records.

pub mod archive;
pub mod check;
pub mod index;
mod list;
pub mod manifest;
pub mod policy;
mod pull;
pub mod reference;
pub mod registry;
pub mod store;
mod stream;
pub mod unpack;
mod unpack_io;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use oci_spec::image::ImageConfiguration;
use tokio::sync::watch;

pub use index::ImageRecord;
pub use list::to_cri;
pub use reference::Reference;
pub use registry::Credentials;

use crate::config::Config;
use crate::state::{Dirs, Locks};
use crate::{Error, Result};
use index::{Index, hex_of};
use store::Layout;

/// What the container code needs of an image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// `sha256:` of the config.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    pub config: ImageConfiguration,
    /// Unpacked layer dirs, lowest first, usable as overlay lower dirs.
    pub layers: Vec<PathBuf>,
}

/// Disk use of the image store, for ImageFsInfo.
#[derive(Debug, Clone)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
}

/// The image store under `<root>/images`.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

/// Mutable state, under one short lock (never held across I/O that waits on the network).
struct State {
    index: Index,
    /// Image ID → parsed config.
    configs: HashMap<String, ImageConfiguration>,
    /// Blobs (`b:<hex>`) and layers (`l:<hex>`) that pulls in progress use.
    active: HashMap<String, usize>,
}

/// What a configuration reload (SIGHUP) replaces: the registries, the pinned images and the signature
/// policy files.
struct Live {
    /// The reloaded configuration; only `registry`, `image.pinned_images` and
    /// `image.signature_policy{,_dir}` are read from it.
    cfg: Config,
    clients: registry::Clients,
}

struct Inner {
    layout: Layout,
    /// The start-up configuration (limits, platform, timeouts).
    cfg: Config,
    live: std::sync::RwLock<Arc<Live>>,
    state: Mutex<State>,
    inflight: Mutex<HashMap<String, watch::Receiver<Option<pull::Shared>>>>,
    blob_locks: Locks,
    layer_locks: Locks,
    /// Whether the last collection kept an unused layer because an overlay still had it mounted: only
    /// then can a container's removal free anything, so RemoveContainer collects only then.
    kept_mounted: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registries and pinned images in effect now.
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn save(&self, st: &State) -> Result<()> {
        let p = self.layout.index();
        crate::state::write_json(&p, &st.index).map_err(|e| Error::io(format!("write {}", p.display()), e))
    }

    /// Discards blobs and layers no image and no pull in progress uses (and no mounted overlay).
    async fn gc(&self) {
        let in_use = store::layers_in_use(&self.layout.layers());
        {
            let mut st = self.lock();
            let (blobs, layers) = st.index.referenced();
            for p in store::read_dir(&self.layout.blobs()) {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !blobs.contains(&name) && !st.active.contains_key(&format!("b:{name}")) {
                    self.layout.discard(&p);
                }
            }
            let mut changed = false;
            let mut kept = false;
            for p in store::read_dir(&self.layout.layers()) {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if name.starts_with('.')
                    || layers.contains(&name)
                    || st.active.contains_key(&format!("l:{name}"))
                {
                    continue;
                }
                if in_use.contains(&name) {
                    tracing::info!(layer = %name, "unused layer still mounted; kept for now");
                    kept = true;
                    continue;
                }
                self.layout.discard(&p);
                changed |= st.index.layers.remove(&name).is_some();
            }
            let known: Vec<String> = st.index.layers.keys().cloned().collect();
            for k in known {
                if layers.contains(&k) || st.active.contains_key(&format!("l:{k}")) {
                    continue;
                }
                if in_use.contains(&k) {
                    kept = true;
                } else {
                    st.index.layers.remove(&k);
                    changed = true;
                }
            }
            self.kept_mounted.store(kept, std::sync::atomic::Ordering::SeqCst);
            if changed && let Err(e) = self.save(&st) {
                tracing::warn!(error = %e, "cannot save the image index");
            }
        }
        let layout = self.layout.clone();
        let _ = tokio::task::spawn_blocking(move || layout.empty_trash()).await;
    }

    fn is_pinned(&self, r: &ImageRecord) -> bool {
        let pause = &self.cfg.image.pause_image;
        self.live()
            .cfg
            .image
            .pinned_images
            .iter()
            .chain(std::iter::once(pause).filter(|p| !p.is_empty()))
            .any(|p| pattern_matches(p, r))
    }
}

/// Whether a pinned-image pattern (`name`, `name:tag`, `prefix*`, `*keyword*`) matches an image.
fn pattern_matches(p: &str, r: &ImageRecord) -> bool {
    let names = r.repo_tags.iter().chain(&r.repo_digests);
    if let Some(inner) = p.strip_prefix('*').and_then(|s| s.strip_suffix('*')) {
        return names.clone().any(|n| n.contains(inner));
    }
    if let Some(prefix) = p.strip_suffix('*') {
        let norm = Reference::parse(prefix).map(|x| x.name()).unwrap_or_default();
        return names
            .clone()
            .any(|n| n.starts_with(prefix) || (!norm.is_empty() && n.starts_with(&norm)));
    }
    match Reference::parse(p) {
        Ok(x) => {
            let tagged = x.tagged();
            let digested = x.digest.as_ref().map(|d| x.with_digest(d));
            names
                .clone()
                .any(|n| Some(n) == tagged.as_ref() || Some(n) == digested.as_ref())
        }
        Err(_) => r.id == p || hex_of(&r.id) == p,
    }
}

impl ImageStore {
    /// Opens (creating) the store and removes leftovers of interrupted pulls.
    pub async fn open(cfg: &Config, dirs: &Dirs) -> Result<Self> {
        let layout = Layout { dir: dirs.images() };
        layout.prepare()?;
        let index = Index::load(&layout.index())
            .map_err(|e| Error::io(format!("read {}", layout.index().display()), e))?;
        let mut configs = HashMap::new();
        for r in &index.images {
            match std::fs::read(layout.blob(&r.id))
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ImageConfiguration>(&b).map_err(|e| e.to_string()))
            {
                Ok(c) => {
                    configs.insert(r.id.clone(), c);
                }
                Err(e) => tracing::warn!(image = %r.id, error = %e, "image config unreadable"),
            }
        }
        let inner = Arc::new(Inner {
            layout,
            cfg: cfg.clone(),
            live: std::sync::RwLock::new(Arc::new(Live {
                cfg: cfg.clone(),
                clients: registry::Clients::new(cfg),
            })),
            state: Mutex::new(State {
                index,
                configs,
                active: HashMap::new(),
            }),
            inflight: Mutex::new(HashMap::new()),
            blob_locks: Locks::default(),
            layer_locks: Locks::default(),
            kept_mounted: std::sync::atomic::AtomicBool::new(true),
        });
        inner.gc().await;
        policy::warn_if_unusable(cfg);
        let store = ImageStore { inner };
        store.pull_pause_image();
        Ok(store)
    }

    /// Pulls the configured pause image in the background when it is missing.
    fn pull_pause_image(&self) {
        let p = self.inner.cfg.image.pause_image.clone();
        if p.is_empty() || self.resolve(&p).is_some() {
            return;
        }
        let policy = policy::path_for(&self.inner.cfg, "").ok().flatten();
        let Ok(r) = Reference::parse(&p) else {
            tracing::warn!(image = %p, "image.pause_image is not a valid reference");
            return;
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = pull::pull(&inner, r, None, policy).await {
                tracing::warn!(image = %p, error = %e, "cannot pull the pause image");
            }
        });
    }

    /// Takes the registries (`registry.*`, `hosts.toml` directory included), the pinned images and the
    /// signature policy of a reloaded configuration: the next pull uses them (pulls under way finish
    /// with the old ones).
    pub fn reload(&self, cfg: &Config) {
        policy::warn_if_unusable(cfg);
        let live = Arc::new(Live {
            cfg: cfg.clone(),
            clients: registry::Clients::new(cfg),
        });
        *self.inner.live.write().unwrap_or_else(|p| p.into_inner()) = live;
    }

    /// The store's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.layout.dir
    }

    /// Finds an image by ID (with or without `sha256:`, or a unique prefix), tag or digest reference.
    pub fn resolve(&self, reference_or_id: &str) -> Option<ImageInfo> {
        let st = self.inner.lock();
        let r = st.index.get(reference_or_id)?;
        let config = st.configs.get(&r.id)?.clone();
        Some(ImageInfo {
            id: r.id.clone(),
            repo_tags: r.repo_tags.clone(),
            repo_digests: r.repo_digests.clone(),
            size: r.size,
            config,
            layers: r
                .layers
                .iter()
                .map(|l| self.inner.layout.layer(&l.chain_id))
                .collect(),
        })
    }

    /// The signature policy file a pull for a pod in `namespace` (empty: none) must satisfy, if any.
    pub fn signature_policy_for(&self, namespace: &str) -> Result<Option<PathBuf>> {
        policy::path_for(&self.inner.live().cfg, namespace)
    }

    /// Pulls an image; returns its ID. `creds` come from the request (else per-host configuration);
    /// `policy` is the signature policy file it must satisfy (see `signature_policy_for`).
    pub async fn pull(
        &self,
        image: &str,
        creds: Option<Credentials>,
        policy: Option<PathBuf>,
    ) -> Result<String> {
        let start = std::time::Instant::now();
        let r = match Reference::parse(image) {
            Ok(r) => pull::pull(&self.inner, r, creds, policy).await,
            Err(e) => Err(e),
        };
        crate::metrics::global().pull_done(&r, start.elapsed());
        r
    }

    /// The record of an image and whether it is pinned.
    pub fn record(&self, reference_or_id: &str) -> Option<(ImageRecord, bool)> {
        let st = self.inner.lock();
        let r = st.index.get(reference_or_id)?.clone();
        let pinned = self.inner.is_pinned(&r);
        Some((r, pinned))
    }

    /// Every image (or the one `filter` names), with whether it is pinned.
    pub fn list(&self, filter: Option<&str>) -> Vec<(ImageRecord, bool)> {
        if let Some(f) = filter.filter(|f| !f.is_empty()) {
            return self.record(f).into_iter().collect();
        }
        let st = self.inner.lock();
        st.index
            .images
            .iter()
            .map(|r| (r.clone(), self.inner.is_pinned(r)))
            .collect()
    }

    /// ImageStatus's verbose `info`: the config and layers as JSON.
    pub fn verbose_info(&self, r: &ImageRecord) -> String {
        let st = self.inner.lock();
        let v = serde_json::json!({
            "id": r.id,
            "repoTags": r.repo_tags,
            "repoDigests": r.repo_digests,
            "size": r.size,
            "pulledAt": r.pulled_at,
            "config": st.configs.get(&r.id),
            "layers": r.layers.iter().map(|l| serde_json::json!({
                "digest": l.digest,
                "diffID": l.diff_id,
                "chainID": l.chain_id,
                "size": l.size,
                "path": self.inner.layout.layer(&l.chain_id),
            })).collect::<Vec<_>>(),
        });
        v.to_string()
    }

    /// Removes a tag (when the image has others) or the image, then what no image uses any more.
    /// An absent image is not an error.
    pub async fn remove(&self, reference_or_id: &str) -> Result<()> {
        {
            let mut st = self.inner.lock();
            let before = st.index.clone();
            let Some(gone) = st.index.remove(reference_or_id) else {
                if st.index != before {
                    // One tag of several went.
                    self.inner.save(&st)?;
                }
                return Ok(());
            };
            st.configs.remove(&gone);
            self.inner.save(&st)?;
            tracing::info!(image = %gone, "removed");
        }
        self.inner.gc().await;
        Ok(())
    }

    /// Discards the blobs and layers nothing uses any more (as after a RemoveImage): those of images
    /// removed while a container still had them mounted. Nothing to do (no walk of the store, no read of
    /// the mount table) unless the last collection kept such a layer.
    pub async fn collect(&self) {
        if self.inner.kept_mounted.load(std::sync::atomic::Ordering::SeqCst) {
            self.inner.gc().await;
        }
    }

    /// Bytes and inodes the store uses, and its directory.
    pub async fn fs_usage(&self) -> FsUsage {
        let (mut bytes, mut inodes) = {
            let st = self.inner.lock();
            st.index
                .layers
                .values()
                .fold((0u64, 0u64), |(b, i), u| (b + u.bytes, i + u.inodes))
        };
        let blobs = self.inner.layout.blobs();
        let (b, i) = tokio::task::spawn_blocking(move || store::usage_of_files(&blobs))
            .await
            .unwrap_or_default();
        bytes += b;
        inodes += i;
        if let Ok(m) = std::fs::metadata(self.inner.layout.index()) {
            bytes += m.len();
            inodes += 1;
        }
        FsUsage {
            mountpoint: self.inner.layout.dir.clone(),
            bytes,
            inodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_patterns() {
        let r = ImageRecord {
            id: format!("sha256:{}", "a".repeat(64)),
            repo_tags: vec![
                "registry.k8s.io/pause:3.9".into(),
                "docker.io/library/busybox:latest".into(),
            ],
            repo_digests: vec![],
            size: 0,
            user: String::new(),
            layers: vec![],
            pulled_at: 0,
        };
        assert!(pattern_matches("busybox", &r));
        assert!(pattern_matches("registry.k8s.io/pause:3.9", &r));
        assert!(!pattern_matches("registry.k8s.io/pause:3.8", &r));
        assert!(pattern_matches("registry.k8s.io/*", &r));
        assert!(pattern_matches("*pause*", &r));
        assert!(!pattern_matches("quay.io/*", &r));
    }
}
