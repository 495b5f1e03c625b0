//! Image RPC handlers: validate, call the core (`crate::image`), return the response.

use cri_api::v1;

use crate::daemon::Daemon;
use crate::{Error, Result};

/// `ListImages`.
pub async fn list_images(_d: &Daemon, _req: v1::ListImagesRequest) -> Result<v1::ListImagesResponse> {
    Err(Error::Unimplemented("list_images is not implemented yet".into()))
}

/// `ImageStatus`.
pub async fn image_status(_d: &Daemon, _req: v1::ImageStatusRequest) -> Result<v1::ImageStatusResponse> {
    Err(Error::Unimplemented("image_status is not implemented yet".into()))
}

/// `PullImage`.
pub async fn pull_image(_d: &Daemon, _req: v1::PullImageRequest) -> Result<v1::PullImageResponse> {
    Err(Error::Unimplemented("pull_image is not implemented yet".into()))
}

/// `RemoveImage`.
pub async fn remove_image(_d: &Daemon, _req: v1::RemoveImageRequest) -> Result<v1::RemoveImageResponse> {
    Err(Error::Unimplemented("remove_image is not implemented yet".into()))
}

/// `ImageFsInfo`.
pub async fn image_fs_info(_d: &Daemon, _req: v1::ImageFsInfoRequest) -> Result<v1::ImageFsInfoResponse> {
    Err(Error::Unimplemented(
        "image_fs_info is not implemented yet".into(),
    ))
}
