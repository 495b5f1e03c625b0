//! Writing an export tarball: each layer re-made as a tar in the store's `ingest/` (hashed on the way),
//! the config kept or rewritten with the new diff IDs, then the archive in the chosen format, written
//! beside the destination and renamed into place when complete.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::layertar::write_layer;
use super::{Exported, Format, Progress, note};
use crate::image::index::{ImageRecord, hex_of};
use crate::image::manifest::OCI_MANIFEST;
use crate::image::store::{Layout, remove_any};
use crate::{Error, Result};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// One image ready to be written.
struct Prepared {
    exported: Exported,
    config: Vec<u8>,
    /// Re-made layer tars (path, diff ID, size), lowest first.
    layers: Vec<(PathBuf, String, u64)>,
}

/// Removes a directory tree when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_any(&self.0);
    }
}

/// Writes `items` (records and raw configs) to `out` in `format`.
pub(super) fn write(
    layout: &Layout,
    items: &[(ImageRecord, Vec<u8>)],
    format: Format,
    out: &Path,
    progress: &Progress,
) -> Result<Vec<Exported>> {
    let tmp = TempDir(layout.temp("export"));
    std::fs::create_dir_all(&tmp.0).map_err(|e| Error::io(format!("create {}", tmp.0.display()), e))?;
    let mut prepared = Vec::new();
    for (n, (rec, raw)) in items.iter().enumerate() {
        let mut layers = Vec::new();
        for (i, l) in rec.layers.iter().enumerate() {
            let p = tmp.0.join(format!("{n}-{i}.tar"));
            let f = File::create(&p).map_err(|e| Error::io(format!("create {}", p.display()), e))?;
            let w = write_layer(&layout.layer(&l.chain_id), BufWriter::new(f))?;
            note(
                progress,
                format!(
                    "{}: layer {}/{} re-made ({} bytes, {})",
                    short(&rec.id),
                    i + 1,
                    rec.layers.len(),
                    w.size,
                    if w.diff_id == l.diff_id {
                        "same diff ID"
                    } else {
                        "new diff ID"
                    }
                ),
            );
            layers.push((p, w.diff_id, w.size));
        }
        let new_ids: Vec<String> = layers.iter().map(|(_, d, _)| d.clone()).collect();
        let old_ids: Vec<String> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
        let config = if new_ids == old_ids {
            raw.clone()
        } else {
            rewrite_diff_ids(raw, &new_ids)?
        };
        let id = digest(&config);
        prepared.push(Prepared {
            exported: Exported {
                source_id: rec.id.clone(),
                id,
                repo_tags: rec.repo_tags.clone(),
                diff_ids: new_ids,
            },
            config,
            layers,
        });
    }
    let partial = out.with_file_name(format!(
        ".{}.partial",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let res = (|| {
        let f = File::create(&partial).map_err(|e| Error::io(format!("create {}", partial.display()), e))?;
        let mut b = tar::Builder::new(BufWriter::new(f));
        match format {
            Format::Oci => write_oci(&mut b, &prepared)?,
            Format::Docker => write_docker(&mut b, &prepared)?,
        }
        let mut w = b
            .into_inner()
            .map_err(|e| Error::io(format!("write {}", partial.display()), e))?;
        w.flush()
            .map_err(|e| Error::io(format!("write {}", partial.display()), e))?;
        let f = w
            .into_inner()
            .map_err(|e| Error::io(format!("write {}", partial.display()), e.into_error()))?;
        f.sync_all()
            .map_err(|e| Error::io(format!("sync {}", partial.display()), e))?;
        std::fs::rename(&partial, out)
            .map_err(|e| Error::io(format!("rename {} to {}", partial.display(), out.display()), e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    res?;
    note(progress, format!("wrote {}", out.display()));
    Ok(prepared.into_iter().map(|p| p.exported).collect())
}

fn short(id: &str) -> &str {
    let h = hex_of(id);
    &h[..h.len().min(12)]
}

/// `sha256:` of bytes.
fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// The config with `rootfs.diff_ids` replaced (every other field kept).
fn rewrite_diff_ids(raw: &[u8], ids: &[String]) -> Result<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(raw)
        .map_err(|e| Error::FailedPrecondition(format!("the stored image config is not valid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Error::FailedPrecondition(
            "the stored image config is not a JSON object".into(),
        ));
    };
    obj.insert("rootfs".into(), json!({"type": "layers", "diff_ids": ids}));
    serde_json::to_vec(&v).map_err(|e| Error::Internal(format!("config JSON: {e}")))
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    h
}

fn add_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    b.append_data(&mut header(data.len() as u64), name, data)
        .map_err(|e| Error::io(format!("write {name} into the archive"), e))
}

fn add_file<W: Write>(b: &mut tar::Builder<W>, name: &str, path: &Path, size: u64) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    b.append_data(&mut header(size), name, f)
        .map_err(|e| Error::io(format!("write {name} into the archive"), e))
}

fn dir<W: Write>(b: &mut tar::Builder<W>, name: &str) -> Result<()> {
    let mut h = header(0);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    b.append_data(&mut h, name, std::io::empty())
        .map_err(|e| Error::io(format!("write {name} into the archive"), e))
}

fn to_json(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(format!("JSON: {e}")))
}

fn write_oci<W: Write>(b: &mut tar::Builder<W>, images: &[Prepared]) -> Result<()> {
    add_bytes(b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    dir(b, "blobs/")?;
    dir(b, "blobs/sha256/")?;
    let mut written = BTreeSet::new();
    let mut entries = Vec::new();
    for im in images {
        for (p, d, size) in &im.layers {
            if written.insert(d.clone()) {
                add_file(b, &format!("blobs/sha256/{}", hex_of(d)), p, *size)?;
            }
        }
        if written.insert(im.exported.id.clone()) {
            add_bytes(
                b,
                &format!("blobs/sha256/{}", hex_of(&im.exported.id)),
                &im.config,
            )?;
        }
        let manifest = to_json(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": im.exported.id, "size": im.config.len()},
            "layers": im.layers.iter().map(|(_, d, size)| json!({
                "mediaType": OCI_LAYER_TAR, "digest": d, "size": size,
            })).collect::<Vec<_>>(),
        }))?;
        let md = digest(&manifest);
        if written.insert(md.clone()) {
            add_bytes(b, &format!("blobs/sha256/{}", hex_of(&md)), &manifest)?;
        }
        let desc = |annotations: Option<Value>| {
            let mut d = json!({"mediaType": OCI_MANIFEST, "digest": md, "size": manifest.len()});
            if let Some(a) = annotations {
                d["annotations"] = a;
            }
            d
        };
        if im.exported.repo_tags.is_empty() {
            entries.push(desc(None));
        }
        for t in &im.exported.repo_tags {
            let tag = t.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            entries.push(desc(Some(json!({
                "io.containerd.image.name": t,
                "org.opencontainers.image.ref.name": tag,
            }))));
        }
    }
    let index = to_json(&json!({
        "schemaVersion": 2,
        "mediaType": crate::image::manifest::OCI_INDEX,
        "manifests": entries,
    }))?;
    add_bytes(b, "index.json", &index)
}

fn write_docker<W: Write>(b: &mut tar::Builder<W>, images: &[Prepared]) -> Result<()> {
    let mut written = BTreeSet::new();
    let mut manifest = Vec::new();
    let mut repositories = serde_json::Map::new();
    for im in images {
        let mut layer_names = Vec::new();
        for (p, d, size) in &im.layers {
            let name = format!("{}/layer.tar", hex_of(d));
            if written.insert(d.clone()) {
                dir(b, &format!("{}/", hex_of(d)))?;
                add_file(b, &name, p, *size)?;
            }
            layer_names.push(name);
        }
        let config_name = format!("{}.json", hex_of(&im.exported.id));
        if written.insert(im.exported.id.clone()) {
            add_bytes(b, &config_name, &im.config)?;
        }
        manifest.push(json!({
            "Config": config_name,
            "RepoTags": im.exported.repo_tags,
            "Layers": layer_names,
        }));
        let top = im
            .layers
            .last()
            .map(|(_, d, _)| hex_of(d).to_string())
            .unwrap_or_default();
        for t in &im.exported.repo_tags {
            if let Some((repo, tag)) = t.rsplit_once(':') {
                let e = repositories.entry(repo.to_string()).or_insert_with(|| json!({}));
                e[tag] = Value::from(top.clone());
            }
        }
    }
    add_bytes(b, "manifest.json", &to_json(&Value::from(manifest))?)?;
    add_bytes(b, "repositories", &to_json(&Value::Object(repositories))?)
}
