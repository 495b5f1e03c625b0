//! Reading an archive into the store: the tarball (plain or gzip) is extracted into `ingest/` (names
//! resolved inside it, symlinks between members, which old `docker save` writes for shared layers,
//! resolved to the member they name), its format recognised (`index.json` + `oci-layout`: OCI, else
//! `manifest.json`: docker-archive), then each image's blobs verified, its layers unpacked (each once,
//! checked against the config's diff IDs) and its record added.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::ImageConfiguration;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Imported, Progress, note};
use crate::image::index::{ImageRecord, LayerRef, Usage, hex_of};
use crate::image::pull::{Active, chain_ids, sync_fs};
use crate::image::reference::{Reference, is_digest};
use crate::image::store::{commit, remove_any};
use crate::image::{Inner, manifest, unpack};
use crate::{Error, Result};

/// One image found in an archive.
struct Found {
    names: Vec<String>,
    manifest_digest: Option<String>,
    config: PathBuf,
    /// Layer blobs, lowest first.
    layers: Vec<PathBuf>,
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!("not a usable image archive: {msg}"))
}

/// Removes a directory tree when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_any(&self.0);
    }
}

pub(super) async fn run(
    inner: &Arc<Inner>,
    path: &Path,
    tags: &[String],
    progress: &Progress,
) -> Result<Vec<Imported>> {
    let tmp = TempDir(inner.layout.temp("import"));
    let (src, dst) = (path.to_path_buf(), tmp.0.clone());
    let p2 = progress.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Vec<Found>> {
        extract(&src, &dst)?;
        note(&p2, format!("read {}", src.display()));
        find_images(&dst)
    })
    .await
    .map_err(|e| Error::Internal(format!("import: {e}")))??;
    if found.is_empty() {
        return Err(bad("it holds no image"));
    }
    let mut out = Vec::new();
    for f in found {
        out.push(import_one(inner, f, tags, progress).await?);
    }
    Ok(out)
}

/// Extracts the regular files (and member-to-member symlinks) of the tarball into `dest`.
fn extract(src: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| Error::io(format!("create {}", dest.display()), e))?;
    let f = File::open(src).map_err(|e| Error::io(format!("open {}", src.display()), e))?;
    let mut input = BufReader::new(f);
    let magic = input
        .fill_buf()
        .map_err(|e| Error::io(format!("read {}", src.display()), e))?;
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut links = Vec::new();
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for e in entries {
        let mut e = e.map_err(|e| bad(format!("corrupt tar: {e}")))?;
        let raw = e.path().map_err(bad)?.into_owned();
        let rel = unpack::clean_path(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let to = dest.join(&rel);
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
                }
                let mut w =
                    File::create(&to).map_err(|e| Error::io(format!("create {}", to.display()), e))?;
                std::io::copy(&mut e, &mut w).map_err(|e| bad(format!("reading {}: {e}", raw.display())))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(bad)?
                    .ok_or_else(|| bad(format!("{} links to nothing", raw.display())))?
                    .into_owned();
                let base = if e.header().entry_type() == tar::EntryType::Symlink {
                    rel.parent().unwrap_or(Path::new("")).join(target)
                } else {
                    target
                };
                links.push((rel, unpack::clean_path(&base)?));
            }
            _ => {}
        }
    }
    for (link, target) in links {
        let (l, t) = (dest.join(&link), dest.join(&target));
        if let Some(parent) = l.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        }
        std::fs::hard_link(&t, &l)
            .map_err(|e| bad(format!("{} links to {}: {e}", link.display(), target.display())))?;
    }
    Ok(())
}

fn read_json(p: &Path) -> Result<Value> {
    let b = std::fs::read(p).map_err(|e| bad(format!("{}: {e}", p.display())))?;
    serde_json::from_slice(&b).map_err(|e| bad(format!("{}: {e}", p.display())))
}

/// The blob path of a digest in an OCI layout, its content verified.
fn oci_blob(dir: &Path, digest: &str) -> Result<PathBuf> {
    if !is_digest(digest) {
        return Err(bad(format!("malformed digest {digest:?}")));
    }
    let p = dir.join("blobs/sha256").join(hex_of(digest));
    let got = file_digest(&p)?;
    if got != digest {
        return Err(bad(format!("blob {digest} has content {got}")));
    }
    Ok(p)
}

/// `sha256:` of a file.
fn file_digest(p: &Path) -> Result<String> {
    let mut f = File::open(p).map_err(|e| bad(format!("{}: {e}", p.display())))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(format!("read {}", p.display()), e))?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

fn find_images(dir: &Path) -> Result<Vec<Found>> {
    if dir.join("index.json").is_file() && dir.join("oci-layout").is_file() {
        return find_oci(dir);
    }
    if dir.join("manifest.json").is_file() {
        return find_docker(dir);
    }
    Err(bad(
        "neither an OCI layout (oci-layout, index.json) nor a docker archive (manifest.json)",
    ))
}

fn find_oci(dir: &Path) -> Result<Vec<Found>> {
    let index = read_json(&dir.join("index.json"))?;
    let mut by_manifest: Vec<Found> = Vec::new();
    let want = manifest::wanted("");
    let descs = index["manifests"].as_array().cloned().unwrap_or_default();
    for d in descs {
        let mut digest = d["digest"].as_str().unwrap_or("").to_string();
        let mut mt = d["mediaType"].as_str().unwrap_or("").to_string();
        let ann = &d["annotations"];
        let name = ann["io.containerd.image.name"]
            .as_str()
            .or_else(|| {
                ann["org.opencontainers.image.ref.name"]
                    .as_str()
                    .filter(|n| n.contains('/') || n.contains(':'))
            })
            .and_then(|n| Reference::parse(n).ok())
            .and_then(|r| r.tagged());
        if manifest::is_index(&mt) {
            let b = std::fs::read(oci_blob(dir, &digest)?).map_err(bad)?;
            let idx: manifest::Index = manifest::parse("an index in the archive", &b)?;
            let sel = manifest::select(&idx, &want)?;
            digest = sel.digest.clone();
            mt = sel.media_type.clone();
        }
        if !mt.is_empty() && !manifest::is_manifest(&mt) {
            continue;
        }
        if let Some(f) = by_manifest
            .iter_mut()
            .find(|f| f.manifest_digest.as_deref() == Some(digest.as_str()))
        {
            f.names.extend(name);
            continue;
        }
        let b = std::fs::read(oci_blob(dir, &digest)?).map_err(bad)?;
        let m: manifest::ImageManifest = manifest::parse("a manifest in the archive", &b)?;
        let layers = m
            .layers
            .iter()
            .map(|l| oci_blob(dir, &l.digest))
            .collect::<Result<Vec<_>>>()?;
        by_manifest.push(Found {
            names: name.into_iter().collect(),
            manifest_digest: Some(digest),
            config: oci_blob(dir, &m.config.digest)?,
            layers,
        });
    }
    Ok(by_manifest)
}

fn find_docker(dir: &Path) -> Result<Vec<Found>> {
    let m = read_json(&dir.join("manifest.json"))?;
    let list = m.as_array().ok_or_else(|| bad("manifest.json is not a list"))?;
    let member = |s: &str| -> Result<PathBuf> { Ok(dir.join(unpack::clean_path(Path::new(s))?)) };
    let mut out = Vec::new();
    for e in list {
        let config = member(
            e["Config"]
                .as_str()
                .ok_or_else(|| bad("an entry of manifest.json has no Config"))?,
        )?;
        let layers = e["Layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str())
                    .map(member)
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        let names = e["RepoTags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str())
                    .filter_map(|t| Reference::parse(t).ok()?.tagged())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Found {
            names,
            manifest_digest: None,
            config,
            layers,
        });
    }
    Ok(out)
}

async fn import_one(inner: &Arc<Inner>, f: Found, tags: &[String], progress: &Progress) -> Result<Imported> {
    let raw = std::fs::read(&f.config).map_err(|e| bad(format!("{}: {e}", f.config.display())))?;
    let id = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
    let config: ImageConfiguration =
        serde_json::from_slice(&raw).map_err(|e| bad(format!("the image config {id} is not valid: {e}")))?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != f.layers.len() {
        return Err(bad(format!(
            "the image config lists {} diff IDs for {} layers",
            diff_ids.len(),
            f.layers.len()
        )));
    }
    if let Some(b) = diff_ids.iter().find(|d| !is_digest(d)) {
        return Err(bad(format!("the image config has a malformed diff ID {b:?}")));
    }
    let chains = chain_ids(&diff_ids);
    let mut active = Active::new(inner);
    active.add(format!("b:{}", hex_of(&id)));
    let mut layers = Vec::new();
    let limits = unpack::Limits {
        bytes: inner.cfg.image.max_layer_unpacked_bytes,
        entries: inner.cfg.image.max_layer_entries,
    };
    for (i, (blob, (diff, chain))) in f.layers.iter().zip(diff_ids.iter().zip(&chains)).enumerate() {
        active.add(format!("l:{}", hex_of(chain)));
        let digest = file_digest(blob)?;
        let size = std::fs::metadata(blob).map(|m| m.len()).unwrap_or(0);
        let dir = inner.layout.layer(chain);
        let _g = inner.layer_locks.lock(chain).await;
        if dir.exists() {
            note(
                progress,
                format!("{}: layer {}/{} present", short(&id), i + 1, f.layers.len()),
            );
        } else {
            let tpath = inner.layout.temp("layer");
            let tmp = TempDir(tpath.clone());
            std::fs::create_dir(&tpath).map_err(|e| Error::io(format!("create {}", tpath.display()), e))?;
            let (b, t, d) = (blob.clone(), tpath.clone(), diff.clone());
            let u = tokio::task::spawn_blocking(move || unpack::unpack_file(&b, &t, Some(&d), limits))
                .await
                .map_err(|e| Error::Internal(format!("unpack: {e}")))?
                .map_err(|e| e.context(format!("layer {}", i + 1)))?;
            commit(&tpath, &dir)?;
            drop(tmp);
            inner.lock().index.layers.insert(
                hex_of(chain).to_string(),
                Usage {
                    bytes: u.bytes,
                    inodes: u.inodes,
                },
            );
            note(
                progress,
                format!(
                    "{}: layer {}/{} unpacked ({size} bytes)",
                    short(&id),
                    i + 1,
                    f.layers.len()
                ),
            );
        }
        layers.push(LayerRef {
            digest,
            diff_id: diff.clone(),
            chain_id: chain.clone(),
            size,
        });
    }
    let blob = inner.layout.blob(&id);
    let tmpcfg = inner.layout.temp("blob");
    std::fs::write(&tmpcfg, &raw).map_err(|e| Error::io(format!("write {}", tmpcfg.display()), e))?;
    commit(&tmpcfg, &blob)?;
    let dir = inner.layout.dir.clone();
    tokio::task::spawn_blocking(move || sync_fs(&dir))
        .await
        .map_err(|e| Error::Internal(format!("syncfs: {e}")))??;
    let mut repo_tags: Vec<String> = f.names.clone();
    for t in tags {
        if !repo_tags.contains(t) {
            repo_tags.push(t.clone());
        }
    }
    let repo_digests: Vec<String> = match &f.manifest_digest {
        Some(d) => repo_tags
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .map(|r| r.with_digest(d))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        None => Vec::new(),
    };
    let rec = ImageRecord {
        id: id.clone(),
        repo_tags: repo_tags.clone(),
        repo_digests: repo_digests.clone(),
        size: raw.len() as u64 + layers.iter().map(|l| l.size).sum::<u64>(),
        user: config
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default(),
        layers,
        pulled_at: crate::state::now_nanos(),
    };
    {
        let mut st = inner.lock();
        st.index.add(rec);
        st.configs.insert(id.clone(), config);
        inner.save(&st)?;
    }
    drop(active);
    tracing::info!(id = %id, tags = ?repo_tags, "imported");
    note(progress, format!("imported {id} {}", repo_tags.join(" ")));
    Ok(Imported {
        id,
        repo_tags,
        repo_digests,
    })
}

fn short(id: &str) -> &str {
    let h = hex_of(id);
    &h[..h.len().min(12)]
}
