//! `crustctl images import-checkpoint ARCHIVE NAME`: an OCI image made from a checkpoint archive, as
//! CRI-O restores from (one layer holding the archive's files, the annotation
//! `io.kubernetes.cri-o.annotations.checkpoint.name` naming the checkpointed container, on the
//! manifest as CRI-O reads it and as a config label, which crust reads), imported into crust's store
//! as NAME. A container created with NAME as its image is restored from it.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::CtlError;

/// The annotation (and label) that marks a checkpoint image, as CRI-O names it.
pub const CHECKPOINT_ANNOTATION: &str = "io.kubernetes.cri-o.annotations.checkpoint.name";

fn io(context: String) -> impl FnOnce(std::io::Error) -> CtlError {
    move |source| CtlError::Io { context, source }
}

/// Writes to `out` an OCI image-layout tarball holding the checkpoint image of `archive`.
pub fn write_layout(archive: &Path, out: &Path) -> Result<(), CtlError> {
    let a = archive.display().to_string();
    // The archive is an uncompressed tar of the checkpoint's files: as it is, the image's one layer.
    let mut layer = std::fs::File::open(archive).map_err(io(format!("open {a}")))?;
    let mut h = Sha256::new();
    std::io::copy(&mut layer, &mut h).map_err(io(format!("read {a}")))?;
    let layer_digest = format!("sha256:{}", hex::encode(h.finalize()));
    let layer_size = std::fs::metadata(archive).map_err(io(format!("stat {a}")))?.len();
    let config_dump = config_dump(archive)?;
    let name = config_dump["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        return Err(CtlError::Refused(format!(
            "{a}: no config.dump naming a container: not a checkpoint archive"
        )));
    }
    let mut labels = serde_json::Map::new();
    labels.insert(CHECKPOINT_ANNOTATION.into(), json!(name));
    for (k, f) in [
        (
            "io.kubernetes.cri-o.annotations.checkpoint.rootfsImageName",
            "rootfsImageName",
        ),
        (
            "io.kubernetes.cri-o.annotations.checkpoint.rootfsImageID",
            "rootfsImageRef",
        ),
    ] {
        if let Some(v) = config_dump[f].as_str() {
            labels.insert(k.into(), json!(v));
        }
    }
    let config = serde_json::to_vec(&json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap_or_default();
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        "annotations": Value::Object(labels),
    }))
    .unwrap_or_default();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest(&manifest),
            "size": manifest.len(),
        }],
    }))
    .unwrap_or_default();
    let o = out.display().to_string();
    let file = std::fs::File::create(out).map_err(io(format!("create {o}")))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let add = |tar: &mut tar::Builder<_>, name: &str, data: &[u8]| -> std::io::Result<()> {
        let mut hd = tar::Header::new_gnu();
        hd.set_size(data.len() as u64);
        hd.set_mode(0o644);
        tar.append_data(&mut hd, name, data)
    };
    let write = || -> std::io::Result<()> {
        add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add(&mut tar, "index.json", &index)?;
        add(&mut tar, &blob(&digest(&manifest)), &manifest)?;
        add(&mut tar, &blob(&config_digest), &config)?;
        tar.append_path_with_name(archive, blob(&layer_digest))?;
        tar.into_inner()?.flush()
    };
    write().map_err(io(format!("write {o}")))
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// `config.dump` of the archive.
fn config_dump(archive: &Path) -> Result<Value, CtlError> {
    let a = archive.display().to_string();
    let f = std::fs::File::open(archive).map_err(io(format!("open {a}")))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(f));
    for e in tar.entries().map_err(io(format!("read {a}")))? {
        let mut e = e.map_err(io(format!("read {a}")))?;
        if e.path().is_ok_and(|p| p == Path::new("config.dump")) {
            let mut s = String::new();
            e.read_to_string(&mut s).map_err(io(format!("read {a}")))?;
            return serde_json::from_str(&s).map_err(|x| CtlError::Refused(format!("{a}: config.dump: {x}")));
        }
    }
    Ok(Value::Null)
}
