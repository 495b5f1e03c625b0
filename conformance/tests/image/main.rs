//! ImageService against a real registry: pulls by tag, digest and through mirrors, auth, platforms,
//! whiteouts, concurrency, hostile layers, corrupt blobs, unreachable registries, restart and removal,
//! bounds on every registry response and layer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use cri_api::v1::*;
use harness::images::{self, Compression, ImageConfig, ImageSpec as TestImage, Layer, LayerBuilder};
use harness::{Crustd, CrustdOptions, Registry};
use tonic::Code;

fn spec(image: &str) -> Option<cri_api::v1::ImageSpec> {
    Some(cri_api::v1::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn pull(d: &Crustd, image: &str, auth: Option<AuthConfig>) -> Result<String, tonic::Status> {
    d.images()
        .await
        .pull_image(PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(d: &Crustd, image: &str, verbose: bool) -> ImageStatusResponse {
    d.images()
        .await
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn remove(d: &Crustd, image: &str) {
    d.images()
        .await
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .unwrap();
}

async fn list(d: &Crustd) -> Vec<Image> {
    d.images()
        .await
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

fn with_registry(reg: &Registry) -> CrustdOptions<'_> {
    CrustdOptions {
        registry: Some(reg),
        ..Default::default()
    }
}

/// Files (recursively) under a dir.
fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                1 + count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

fn images_dir(d: &Crustd) -> PathBuf {
    d.root.join("images")
}

/// A one-layer image holding `/arch` with `text`, for `arch`.
fn arch_image(arch: &str, text: &str) -> TestImage {
    let tar = LayerBuilder::new().file("arch", text.as_bytes(), 0o644).build();
    let mut s = TestImage::new(
        vec![Layer::new(&tar, Compression::Gzip, false)],
        ImageConfig::default(),
    );
    s.architecture = arch.into();
    s
}

mod bounds;
mod layers;
mod pull;
mod registries;
mod signatures;
