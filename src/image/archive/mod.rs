//! Image archives for air-gapped nodes: export to and import from OCI image-layout tarballs and
//! docker-archive tarballs (`docker save`: `manifest.json`, the config, one `layer.tar` per layer),
//! and tagging. crust keeps layers unpacked, not their blobs, so an export re-creates each layer tar
//! from its directory (`layertar`, deterministic). Its diff ID is then, in general, not the one the
//! image config names: the exported config's `rootfs.diff_ids` are rewritten to the tars' digests,
//! which gives the exported image a new config digest, that is a new image ID (when every re-made tar
//! matches, the config is kept as it is). An import verifies every blob it reads (by digest, and each
//! layer's uncompressed content against the config's diff ID), unpacks each layer once, and records
//! the image in the store, so ListImages lists it and containers can run it at once.

mod export;
mod import;
pub mod layertar;

use std::path::Path;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::index::{ImageRecord, hex_of};
use super::pull::Active;
use super::{ImageStore, Reference};
use crate::{Error, Result};

/// Where progress messages go (one line each), when anyone listens.
pub type Progress = Option<UnboundedSender<String>>;

fn note(p: &Progress, msg: impl Into<String>) {
    if let Some(tx) = p {
        let _ = tx.send(msg.into());
    }
}

/// An archive's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`).
    Oci,
    /// `docker save` (`manifest.json`, `<config>.json`, `<layer>/layer.tar`).
    Docker,
}

/// One image written by an export.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The image's ID in the store.
    pub source_id: String,
    /// The exported image's ID (differs when the layer tars did not reproduce the diff IDs).
    pub id: String,
    pub repo_tags: Vec<String>,
    /// Diff IDs of the re-made layer tars, lowest first.
    pub diff_ids: Vec<String>,
}

/// One image an import recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
}

/// A tag (or image reference) normalised the way records hold it.
fn normalised_tag(s: &str) -> Result<String> {
    let r = Reference::parse(s)?;
    if r.digest.is_some() {
        return Err(Error::invalid(
            "tag",
            format!("{s:?} is a digest reference, not a tag"),
        ));
    }
    r.tagged()
        .ok_or_else(|| Error::invalid("tag", format!("{s:?} has no tag")))
}

impl ImageStore {
    /// Writes the images `refs` name (IDs, tags or digests) to the tarball `out` in `format`.
    pub async fn export(
        &self,
        refs: &[String],
        format: Format,
        out: &Path,
        progress: Progress,
    ) -> Result<Vec<Exported>> {
        if refs.is_empty() {
            return Err(Error::invalid("images", "no image to export"));
        }
        let mut active = Active::new(&self.inner);
        let mut items = Vec::new();
        for r in refs {
            let rec = {
                let st = self.inner.lock();
                st.index
                    .get(r)
                    .cloned()
                    .ok_or_else(|| Error::NotFound(format!("image {r:?} not found")))?
            };
            active.add(format!("b:{}", hex_of(&rec.id)));
            for l in &rec.layers {
                active.add(format!("l:{}", hex_of(&l.chain_id)));
            }
            let p = self.inner.layout.blob(&rec.id);
            let raw = tokio::fs::read(&p)
                .await
                .map_err(|e| Error::io(format!("read {}", p.display()), e))?;
            items.push((rec, raw));
        }
        let layout = self.inner.layout.clone();
        let out = out.to_path_buf();
        let res =
            tokio::task::spawn_blocking(move || export::write(&layout, &items, format, &out, &progress))
                .await
                .map_err(|e| Error::Internal(format!("export: {e}")))?;
        drop(active);
        res
    }

    /// Imports every image of the tarball at `path` (OCI layout or docker-archive, plain or gzip);
    /// `tags` are added to each image (the names of an archive without any).
    pub async fn import(&self, path: &Path, tags: &[String], progress: Progress) -> Result<Vec<Imported>> {
        let tags = tags
            .iter()
            .map(|t| normalised_tag(t))
            .collect::<Result<Vec<_>>>()?;
        import::run(&self.inner, path, &tags, &progress).await
    }

    /// Adds the tag `target` to the image `source` names (moving it from any other image).
    pub fn tag(&self, source: &str, target: &str) -> Result<ImageRecord> {
        let tag = normalised_tag(target)?;
        let mut st = self.inner.lock();
        let rec = st
            .index
            .get(source)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("image {source:?} not found")))?;
        st.index.add(ImageRecord {
            repo_tags: vec![tag],
            repo_digests: Vec::new(),
            pulled_at: rec.pulled_at,
            ..rec.clone()
        });
        self.inner.save(&st)?;
        let out = st.index.get(&rec.id).cloned().unwrap_or(rec);
        Ok(out)
    }
}
