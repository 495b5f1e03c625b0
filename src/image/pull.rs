//! PullImage: find the manifest at the first endpoint that has it, pick the platform, fetch the config
//! and the layers (in parallel, each blob once even across concurrent pulls), unpack each layer once,
//! and record the image. Two pulls of the same reference share one run. A failed pull leaves nothing:
//! whatever it made that no image uses is discarded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::image::ImageConfiguration;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};

use super::index::{ImageRecord, LayerRef, Usage, hex_of};
use super::manifest::{self, Descriptor, ImageManifest};
use super::reference::{Reference, is_digest};
use super::registry::{self, Credentials, Manifest, Session};
use super::store::{commit, remove_any};
use super::{Inner, stream, unpack};
use crate::error::ResultExt;
use crate::{Error, Result};

/// Largest image config accepted, declared or not.
const MAX_CONFIG: u64 = 8 << 20;

/// A pull's result as every waiter gets it (the error as kind and message).
pub(super) type Shared = std::result::Result<String, (u8, String)>;

/// Pulls `r` (sharing the run with a concurrent pull of the same reference, credentials and signature
/// policy) and returns the image ID. `policy`: the signature policy file the image must satisfy.
pub async fn pull(
    inner: &Arc<Inner>,
    r: Reference,
    creds: Option<Credentials>,
    policy: Option<PathBuf>,
) -> Result<String> {
    let key = format!(
        "{r}\n{}\n{}\n{}",
        creds.as_ref().map(|c| c.username.as_str()).unwrap_or(""),
        creds.as_ref().map(|c| c.server_address.as_str()).unwrap_or(""),
        policy
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let mut rx = {
        let mut map = inner.inflight.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(rx) => rx.clone(),
            None => {
                let (tx, rx) = watch::channel::<Option<Shared>>(None);
                map.insert(key.clone(), rx.clone());
                let inner2 = inner.clone();
                // A task of its own: a caller that goes away does not cancel the pull others wait for.
                tokio::spawn(async move {
                    let res = run(&inner2, &r, creds, policy.as_deref())
                        .await
                        .ctx(format!("PullImage {r}"));
                    if let Err(e) = &res {
                        tracing::warn!(image = %r, error = %e, "pull failed");
                    }
                    inner2
                        .inflight
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    let _ = tx.send(Some(res.map_err(|e| share(&e))));
                });
                rx
            }
        }
    };
    loop {
        if let Some(res) = rx.borrow().clone() {
            return res.map_err(unshare);
        }
        if rx.changed().await.is_err() && rx.borrow().is_none() {
            return Err(Error::Internal("the pull ended without a result".into()));
        }
    }
}

fn share(e: &Error) -> (u8, String) {
    let k = match e {
        Error::InvalidArgument { .. } => 0,
        Error::NotFound(_) => 1,
        Error::AlreadyExists(_) => 2,
        Error::FailedPrecondition(_) => 3,
        Error::Unavailable(_) => 4,
        Error::DeadlineExceeded(_) => 5,
        Error::Unauthenticated(_) => 6,
        Error::PermissionDenied(_) => 7,
        Error::Unimplemented(_) => 8,
        Error::ResourceExhausted(_) => 10,
        Error::DataLoss(_) => 11,
        Error::Io { .. } | Error::Internal(_) => 9,
    };
    let msg = match e {
        Error::InvalidArgument { field, msg } => format!("{field}\n{msg}"),
        e => e.to_string(),
    };
    (k, msg)
}

fn unshare((k, m): (u8, String)) -> Error {
    match k {
        0 => {
            let (f, m) = m.split_once('\n').unwrap_or(("image", &m));
            Error::invalid(f, m)
        }
        1 => Error::NotFound(m),
        2 => Error::AlreadyExists(m),
        3 => Error::FailedPrecondition(m),
        4 => Error::Unavailable(m),
        5 => Error::DeadlineExceeded(m),
        6 => Error::Unauthenticated(m),
        7 => Error::PermissionDenied(m),
        8 => Error::Unimplemented(m),
        10 => Error::ResourceExhausted(m),
        11 => Error::DataLoss(m),
        _ => Error::Internal(m),
    }
}

/// Keeps what a pull (or an import or export) in progress uses safe from garbage collection until
/// dropped. Keys: `b:<hex>` for blobs, `l:<hex>` for layers.
pub(super) struct Active<'a> {
    inner: &'a Inner,
    keys: Vec<String>,
}

impl<'a> Active<'a> {
    pub(super) fn new(inner: &'a Inner) -> Self {
        Active {
            inner,
            keys: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, key: String) {
        let mut st = self.inner.lock();
        *st.active.entry(key.clone()).or_insert(0) += 1;
        self.keys.push(key);
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        for k in &self.keys {
            if let Some(n) = st.active.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    st.active.remove(k);
                }
            }
        }
    }
}

/// Removes a temporary file unless disarmed.
struct TempPath(Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            remove_any(&p);
        }
    }
}

async fn run(
    inner: &Arc<Inner>,
    r: &Reference,
    creds: Option<Credentials>,
    policy: Option<&Path>,
) -> Result<String> {
    let res = {
        let mut active = Active::new(inner);
        fetch(inner, r, creds, policy, &mut active).await
    };
    if res.is_err() {
        inner.gc().await;
    }
    res
}

/// The credentials for one endpoint. The request's go only to the host they were given for (its
/// `server_address`, else the image's registry), so never to a mirror on another host; else an
/// endpoint gets what is configured for its own host (and the registry itself what is configured for
/// its name), never a mirror the registry's.
fn credentials_for(
    clients: &registry::Clients,
    r: &Reference,
    ep: &registry::Endpoint,
    creds: Option<&Credentials>,
) -> Credentials {
    if let Some(c) = creds.filter(|c| !c.is_empty() && c.are_for(&r.registry, &ep.host)) {
        return c.clone();
    }
    let hosts: &[&str] = if ep.mirror {
        &[ep.host.as_str()]
    } else {
        &[ep.host.as_str(), r.registry.as_str()]
    };
    hosts
        .iter()
        .filter_map(|h| clients.host_config(h))
        .map(|h| Credentials::from_config(&h.auth))
        .find(|c| !c.is_empty())
        .unwrap_or_default()
}

/// The manifest at the first endpoint that has it.
async fn resolve(inner: &Inner, r: &Reference, creds: Option<Credentials>) -> Result<(Session, Manifest)> {
    let img = &inner.cfg.image;
    let stall = Duration::from_secs(img.stall_timeout_seconds.max(1));
    let request = Duration::from_secs(img.request_timeout_seconds.max(1));
    let retry = registry::Retry {
        attempts: img.retry_attempts.max(1),
        max_wait: Duration::from_secs(img.retry_max_wait_seconds),
    };
    let mut errors: Vec<Error> = Vec::new();
    let live = inner.live();
    let endpoints = registry::endpoints_for(&live.cfg, &r.registry, r.digest.is_none())?;
    let n = endpoints.len();
    for (i, ep) in endpoints.into_iter().enumerate() {
        let client = live.clients.get(&ep)?;
        let c = credentials_for(&live.clients, r, &ep, creds.as_ref());
        let host = ep.host.clone();
        let mut s = Session::new(client, ep, &r.repository, c, stall, request);
        s.retry = retry;
        // An endpoint with others after it is tried once, then the next (containerd tries again on
        // the last host only).
        let policy = if i + 1 == n {
            retry
        } else {
            registry::Retry::once()
        };
        match s.manifest_tried(r.reference(), policy).await {
            Ok(m) => return Ok((s, m)),
            Err(e) => {
                tracing::info!(image = %r, endpoint = %host, error = %e, "endpoint failed, trying the next");
                errors.push(e);
            }
        }
    }
    Err(combine(errors))
}

/// One error from the failures at each endpoint: the most telling kind, every message.
fn combine(mut errors: Vec<Error>) -> Error {
    if errors.len() <= 1 {
        return errors
            .pop()
            .unwrap_or_else(|| Error::FailedPrecondition("no registry endpoint to pull from".into()));
    }
    let rank = |e: &Error| match e {
        Error::Unauthenticated(_) => 0,
        Error::PermissionDenied(_) => 1,
        Error::NotFound(_) => 2,
        Error::ResourceExhausted(_) => 3,
        Error::DataLoss(_) => 4,
        Error::FailedPrecondition(_) => 5,
        Error::DeadlineExceeded(_) => 6,
        Error::Unavailable(_) => 7,
        _ => 8,
    };
    let msg = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let best = errors
        .iter()
        .min_by_key(|e| rank(e))
        .map(share)
        .map(|(k, _)| k)
        .unwrap_or(9);
    unshare((best, msg))
}

fn check_digest(d: &Descriptor, what: &str) -> Result<()> {
    if is_digest(&d.digest) {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "{what} has an unsupported or malformed digest {:?}",
            d.digest
        )))
    }
}

/// Chain IDs from diff IDs: chain[0] = diff[0], chain[i] = sha256(chain[i-1] + " " + diff[i]).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{prev} {d}")))),
        };
        out.push(next);
    }
    out
}

async fn fetch(
    inner: &Arc<Inner>,
    r: &Reference,
    creds: Option<Credentials>,
    policy: Option<&Path>,
    active: &mut Active<'_>,
) -> Result<String> {
    let (session, top) = resolve(inner, r, creds).await?;
    // The trust policy, on the digest the reference resolved to (an index's for a multi-platform
    // image, as cosign signs it), before anything of the image is stored.
    if let Some(p) = policy {
        super::policy::check(p, r, &session, &top.digest).await?;
    }
    let mut m = top.clone();
    if manifest::is_index(&top.media_type) {
        let idx: manifest::Index = manifest::parse("the image index", &top.body)?;
        let d = manifest::select(&idx, &manifest::wanted(&inner.cfg.image.platform))?;
        check_digest(d, "the index entry")?;
        m = session.manifest(&d.digest).await?;
    }
    if !manifest::is_manifest(&m.media_type) {
        return Err(Error::FailedPrecondition(format!(
            "unsupported manifest type {:?} (only Docker schema 2 and OCI)",
            m.media_type
        )));
    }
    let im: ImageManifest = manifest::parse("the image manifest", &m.body)?;
    check_digest(&im.config, "the image config")?;
    for l in &im.layers {
        check_digest(l, "a layer")?;
    }
    active.add(format!("b:{}", hex_of(&im.config.digest)));
    let cfg_path = ensure_blob(inner, &session, &im.config, "image config", Some(MAX_CONFIG)).await?;
    let raw = tokio::fs::read(&cfg_path)
        .await
        .map_err(|e| Error::io(format!("read {}", cfg_path.display()), e))?;
    let config: ImageConfiguration = serde_json::from_slice(&raw).map_err(|e| {
        Error::FailedPrecondition(format!("the image config {} is not valid: {e}", im.config.digest))
    })?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != im.layers.len() {
        return Err(Error::FailedPrecondition(format!(
            "the image config lists {} diff IDs for {} layers",
            diff_ids.len(),
            im.layers.len()
        )));
    }
    // Chain IDs (the first is a diff ID itself) name directories: only well-formed digests.
    if let Some(bad) = diff_ids.iter().find(|d| !is_digest(d)) {
        return Err(Error::FailedPrecondition(format!(
            "the image config has a malformed diff ID {bad:?}"
        )));
    }
    let chains = chain_ids(&diff_ids);
    for (l, c) in im.layers.iter().zip(&chains) {
        active.add(format!("b:{}", hex_of(&l.digest)));
        active.add(format!("l:{}", hex_of(c)));
    }
    let downloads = Arc::new(Semaphore::new(inner.cfg.image.max_concurrent_downloads.max(1)));
    let jobs = im
        .layers
        .iter()
        .zip(diff_ids.iter().zip(&chains))
        .map(|(l, (d, c))| ensure_layer(inner, &session, l, d, c, &downloads));
    futures::future::try_join_all(jobs).await?;

    let id = im.config.digest.clone();
    let rec = ImageRecord {
        id: id.clone(),
        repo_tags: r.tagged().into_iter().collect(),
        repo_digests: vec![r.with_digest(&top.digest)],
        size: im.config.size + im.layers.iter().map(|l| l.size).sum::<u64>(),
        user: config
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default(),
        layers: im
            .layers
            .iter()
            .zip(diff_ids.iter().zip(&chains))
            .map(|(l, (d, c))| LayerRef {
                digest: l.digest.clone(),
                diff_id: d.clone(),
                chain_id: c.clone(),
                size: l.size,
            })
            .collect(),
        pulled_at: crate::state::now_nanos(),
    };
    // Data first, then the index that makes it visible.
    let dir = inner.layout.dir.clone();
    tokio::task::spawn_blocking(move || sync_fs(&dir))
        .await
        .map_err(|e| Error::Internal(format!("syncfs: {e}")))??;
    {
        let mut st = inner.lock();
        st.index.add(rec);
        st.configs.insert(id.clone(), config);
        inner.save(&st)?;
    }
    tracing::info!(image = %r, id = %id, "pulled");
    Ok(id)
}

/// Flushes the store's filesystem.
pub(super) fn sync_fs(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| Error::io(format!("open {}", dir.display()), e))?;
    nix::unistd::syncfs(&f).map_err(|e| Error::io(format!("syncfs {}", dir.display()), e.into()))
}

/// The blob (`what`, at most `max` bytes), downloaded and verified unless present.
async fn ensure_blob(
    inner: &Inner,
    s: &Session,
    d: &Descriptor,
    what: &str,
    max: Option<u64>,
) -> Result<PathBuf> {
    let path = inner.layout.blob(&d.digest);
    if path.exists() {
        return Ok(path);
    }
    let _g = inner.blob_locks.lock(&d.digest).await;
    if path.exists() {
        return Ok(path);
    }
    let mut tmp = TempPath(Some(inner.layout.temp("blob")));
    let tpath = tmp.0.clone().unwrap_or_default();
    let size = (d.size > 0).then_some(d.size);
    registry::download_to(s, &d.digest, what, size, max, &tpath).await?;
    if let Ok(m) = std::fs::metadata(&tpath) {
        crate::metrics::global().pull_bytes(m.len());
    }
    commit(&tpath, &path)?;
    tmp.0 = None;
    Ok(path)
}

/// The unpacked layer, fetched and unpacked (streamed, see `stream`) unless present. Its disk usage
/// goes into the index (saved with the image record).
async fn ensure_layer(
    inner: &Inner,
    s: &Session,
    d: &Descriptor,
    diff_id: &str,
    chain_id: &str,
    downloads: &Semaphore,
) -> Result<()> {
    let dir = inner.layout.layer(chain_id);
    if dir.exists() {
        return Ok(());
    }
    let _g = inner.layer_locks.lock(chain_id).await;
    if dir.exists() {
        return Ok(());
    }
    let _permit = downloads
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut tmp = TempPath(Some(inner.layout.temp("layer")));
    let tpath = tmp.0.clone().unwrap_or_default();
    std::fs::create_dir(&tpath).map_err(|e| Error::io(format!("create {}", tpath.display()), e))?;
    let limits = unpack::Limits {
        bytes: inner.cfg.image.max_layer_unpacked_bytes,
        entries: inner.cfg.image.max_layer_entries,
    };
    let u = stream::fetch_and_unpack(s, d, diff_id, &tpath, limits)
        .await
        .ctx(format!("layer {}", d.digest))?;
    crate::metrics::global().pull_bytes(d.size);
    commit(&tpath, &dir)?;
    tmp.0 = None;
    let usage = Usage {
        bytes: u.bytes,
        inodes: u.inodes,
    };
    inner
        .lock()
        .index
        .layers
        .insert(hex_of(chain_id).to_string(), usage);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        let want = format!("sha256:{}", hex::encode(Sha256::digest(format!("{a} {b}"))));
        assert_eq!(c[1], want);
    }

    #[test]
    fn combined_errors_keep_the_most_telling_kind_and_every_message() {
        let e = combine(vec![
            Error::Unavailable("127.0.0.1:1 is unreachable".into()),
            Error::NotFound("x not found at http://127.0.0.1:2".into()),
        ]);
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
        assert!(e.to_string().contains("127.0.0.1:1") && e.to_string().contains("127.0.0.1:2"));
        let e = unshare(share(&Error::invalid("image.image", "bad")));
        assert_eq!(e.to_string(), "image.image: bad");
    }
}
