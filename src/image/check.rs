//! `crustctl check`: verifies the image store as it is on disk, read only: every blob's content
//! against its digest, the index readable, every image's config present, valid and agreeing with its
//! record (diff IDs, chain IDs), every layer an image uses unpacked, and no record of a layer whose
//! directory is gone. Layers no image uses and leftovers are reported as notes, not problems.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use oci_spec::image::ImageConfiguration;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::index::{Index, hex_of};
use super::pull::chain_ids;
use super::store::{Layout, read_dir};

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub images: usize,
    pub blobs: usize,
    pub layers: usize,
    /// Inconsistencies: the store needs repair (or the images a new pull).
    pub problems: Vec<String>,
    /// Harmless findings (unused layers, leftovers of interrupted work).
    pub notes: Vec<String>,
}

impl Report {
    /// Whether the store is consistent.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store in `images_dir` (`<root>/images`).
pub fn check(images_dir: &Path) -> Report {
    let layout = Layout {
        dir: images_dir.to_path_buf(),
    };
    let mut r = Report::default();
    let index = match Index::load(&layout.index()) {
        Ok(i) => i,
        Err(e) => {
            r.problems
                .push(format!("{}: unreadable: {e}", layout.index().display()));
            Index::default()
        }
    };
    for p in read_dir(&layout.blobs()) {
        r.blobs += 1;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match file_sha256(&p) {
            Ok(h) if h == name => {}
            Ok(h) => r.problems.push(format!(
                "blob sha256:{name} is corrupt: its content is sha256:{h}"
            )),
            Err(e) => r.problems.push(format!("blob sha256:{name} is unreadable: {e}")),
        }
    }
    let (_, used_layers) = index.referenced();
    for im in &index.images {
        r.images += 1;
        let name = im.repo_tags.first().cloned().unwrap_or_else(|| im.id.clone());
        let cfg_path = layout.blob(&im.id);
        match std::fs::read(&cfg_path) {
            Err(e) => r
                .problems
                .push(format!("image {name}: config {} missing: {e}", im.id)),
            Ok(b) => match serde_json::from_slice::<ImageConfiguration>(&b) {
                Err(e) => r
                    .problems
                    .push(format!("image {name}: config {} is not valid: {e}", im.id)),
                Ok(c) => {
                    let diffs = c.rootfs().diff_ids().clone();
                    let recorded: Vec<String> = im.layers.iter().map(|l| l.diff_id.clone()).collect();
                    if diffs != recorded {
                        r.problems.push(format!(
                            "image {name}: the record's diff IDs differ from its config's"
                        ));
                    }
                    let chains: Vec<String> = im.layers.iter().map(|l| l.chain_id.clone()).collect();
                    if chain_ids(&recorded) != chains {
                        r.problems.push(format!(
                            "image {name}: the record's chain IDs do not follow from its diff IDs"
                        ));
                    }
                }
            },
        }
        for (i, l) in im.layers.iter().enumerate() {
            if !layout.layer(&l.chain_id).is_dir() {
                r.problems.push(format!(
                    "image {name}: layer {} ({}) is not unpacked at {}",
                    i + 1,
                    l.diff_id,
                    layout.layer(&l.chain_id).display()
                ));
            }
        }
    }
    for k in index.layers.keys() {
        if !layout.layer(k).is_dir() && used_layers.contains(k) {
            r.problems
                .push(format!("layer sha256:{k} is recorded but its directory is gone"));
        }
    }
    let mut seen = BTreeSet::new();
    for p in read_dir(&layout.layers()) {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            r.notes
                .push(format!("leftover of an interrupted unpack: {}", p.display()));
            continue;
        }
        r.layers += 1;
        if !used_layers.contains(hex_of(&name)) {
            r.notes.push(format!(
                "layer sha256:{name} is used by no image (removed at the next clean-up)"
            ));
        }
        seen.insert(name);
    }
    for d in [layout.ingest(), layout.trash()] {
        let n = read_dir(&d).len();
        if n > 0 {
            r.notes.push(format!(
                "{n} entries in {} (removed when crustd starts)",
                d.display()
            ));
        }
    }
    r
}

fn file_sha256(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
