//! Image RPC handlers: validate, call the core (`crate::image`), return the response.

use std::collections::HashMap;
use std::sync::Arc;

use cri_api::v1;

use crate::daemon::Daemon;
use crate::image::{Credentials, to_cri};
use crate::validate;
use crate::{Error, Result};

/// The image string of a request's `ImageSpec`, required.
fn image_of<'a>(field: &str, spec: &'a Option<v1::ImageSpec>) -> Result<&'a str> {
    let spec = validate::present(field, spec)?;
    validate::required(&format!("{field}.image"), spec.image.trim())
}

/// Re-labels a reference parse error with the request field.
fn relabel(field: &str, e: Error) -> Error {
    match e {
        Error::InvalidArgument { msg, .. } => Error::invalid(field, msg),
        e => e,
    }
}

/// `ListImages`.
pub async fn list_images(d: &Daemon, req: v1::ListImagesRequest) -> Result<v1::ListImagesResponse> {
    let filter = image_filter(req.filter);
    let images = d
        .images
        .list(Some(&filter))
        .into_iter()
        .map(|(r, p)| to_cri(r, p))
        .collect();
    Ok(v1::ListImagesResponse { images })
}

/// ListImages' and StreamImages' filter: the image named, or empty for every image.
fn image_filter(f: Option<v1::ImageFilter>) -> String {
    f.and_then(|f| f.image).map(|s| s.image).unwrap_or_default()
}

/// `StreamImages`: ListImages' answer in messages of bounded size.
pub fn stream_images(d: &Arc<Daemon>, req: v1::StreamImagesRequest) -> Result<super::lists::Messages> {
    Ok(Box::pin(d.images.stream(image_filter(req.filter))))
}

/// `ImageStatus`: a missing image is an empty response.
pub async fn image_status(d: &Daemon, req: v1::ImageStatusRequest) -> Result<v1::ImageStatusResponse> {
    let image = image_of("image", &req.image)?;
    let Some((rec, pinned)) = d.images.record(image) else {
        return Ok(v1::ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("info".to_string(), d.images.verbose_info(&rec));
    }
    Ok(v1::ImageStatusResponse {
        image: Some(to_cri(rec, pinned)),
        info,
    })
}

/// `PullImage`.
pub async fn pull_image(d: &Daemon, req: v1::PullImageRequest) -> Result<v1::PullImageResponse> {
    let image = image_of("image", &req.image)?;
    let creds = req.auth.as_ref().map(|a| {
        Credentials::from_parts(
            &a.username,
            &a.password,
            &a.auth,
            &a.identity_token,
            &a.registry_token,
        )
        .for_server(&a.server_address)
    });
    // The pod's namespace picks its own signature policy, if it has one (CRI-O's signature_policy_dir).
    let namespace = req
        .sandbox_config
        .as_ref()
        .and_then(|c| c.metadata.as_ref())
        .map(|m| m.namespace.as_str())
        .unwrap_or("");
    let policy = d.images.signature_policy_for(namespace)?;
    let id = d
        .images
        .pull(image, creds, policy)
        .await
        .map_err(|e| relabel("image.image", e))?;
    Ok(v1::PullImageResponse { image_ref: id })
}

/// `RemoveImage`: removing an absent image succeeds.
pub async fn remove_image(d: &Daemon, req: v1::RemoveImageRequest) -> Result<v1::RemoveImageResponse> {
    let image = image_of("image", &req.image)?;
    d.images.remove(image).await?;
    Ok(v1::RemoveImageResponse {})
}

/// `ImageFsInfo`.
pub async fn image_fs_info(d: &Daemon, _req: v1::ImageFsInfoRequest) -> Result<v1::ImageFsInfoResponse> {
    let u = d.images.fs_usage().await;
    let fs = v1::FilesystemUsage {
        timestamp: crate::state::now_nanos(),
        fs_id: Some(v1::FilesystemIdentifier {
            mountpoint: u.mountpoint.display().to_string(),
        }),
        used_bytes: Some(v1::UInt64Value { value: u.bytes }),
        inodes_used: Some(v1::UInt64Value { value: u.inodes }),
    };
    Ok(v1::ImageFsInfoResponse {
        image_filesystems: vec![fs],
        container_filesystems: Vec::new(),
    })
}
