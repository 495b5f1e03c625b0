//! `ImageService`: routes each RPC to its handler in `images`.

use cri_api::v1;
use cri_api::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::status::respond;
use super::{Cri, images};

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        r: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        respond(images::list_images(&self.d, r.into_inner()).await)
    }
    async fn image_status(
        &self,
        r: Request<v1::ImageStatusRequest>,
    ) -> Result<Response<v1::ImageStatusResponse>, Status> {
        respond(images::image_status(&self.d, r.into_inner()).await)
    }
    async fn pull_image(
        &self,
        r: Request<v1::PullImageRequest>,
    ) -> Result<Response<v1::PullImageResponse>, Status> {
        respond(images::pull_image(&self.d, r.into_inner()).await)
    }
    async fn remove_image(
        &self,
        r: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        respond(images::remove_image(&self.d, r.into_inner()).await)
    }
    async fn image_fs_info(
        &self,
        r: Request<v1::ImageFsInfoRequest>,
    ) -> Result<Response<v1::ImageFsInfoResponse>, Status> {
        respond(images::image_fs_info(&self.d, r.into_inner()).await)
    }
}
