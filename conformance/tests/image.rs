//! ImageService against a real registry: pulls by tag, digest and through mirrors, auth, platforms,
//! whiteouts, concurrency, hostile layers, corrupt blobs, unreachable registries, restart and removal.

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

#[tokio::test]
async fn pull_by_tag_and_digest_then_status_list_fsinfo_and_remove_frees_disk() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(with_registry(&reg)).await;
    let before = d
        .images()
        .await
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();

    let id = pull(&d, &imgs.busybox.reference, None).await.unwrap();
    assert_eq!(id, imgs.busybox.id);
    let st = status(&d, &imgs.busybox.reference, true).await;
    let img = st.image.unwrap();
    assert_eq!(img.id, imgs.busybox.id);
    assert_eq!(img.repo_tags, vec![imgs.busybox.reference.clone()]);
    assert_eq!(img.repo_digests, vec![imgs.busybox.by_digest.clone()]);
    assert!(img.size > 500_000, "{}", img.size);
    let info: serde_json::Value = serde_json::from_str(st.info.get("info").unwrap()).unwrap();
    assert_eq!(info["config"]["config"]["Cmd"][0], "sh", "{info}");
    assert_eq!(info["layers"].as_array().unwrap().len(), 1);
    let layer = PathBuf::from(info["layers"][0]["path"].as_str().unwrap());
    assert!(
        layer.join("bin/busybox").is_file(),
        "unpacked at {}",
        layer.display()
    );
    assert!(
        std::fs::symlink_metadata(layer.join("bin/sh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // By digest: the same image, nothing new fetched.
    let gets = reg.count_gets("/blobs/");
    assert_eq!(pull(&d, &imgs.busybox.by_digest, None).await.unwrap(), id);
    assert_eq!(
        reg.count_gets("/blobs/"),
        gets,
        "blobs present are not fetched again"
    );
    // By ID prefix, without sha256:.
    assert_eq!(status(&d, &id[7..19], false).await.image.unwrap().id, id);
    // Uncompressed OCI layer: the same config as busybox, so the same image, with a second tag.
    assert_eq!(imgs.uncompressed.id, id);
    assert_eq!(
        pull(&d, &imgs.uncompressed.reference, None).await.unwrap(),
        imgs.uncompressed.id
    );
    pull(&d, &imgs.layered.reference, None).await.unwrap();

    let all = list(&d).await;
    assert_eq!(all.len(), 2, "{all:?}");
    let bb = all.iter().find(|i| i.id == id).unwrap();
    assert_eq!(
        bb.repo_tags,
        vec![
            imgs.busybox.reference.clone(),
            imgs.uncompressed.reference.clone()
        ]
    );
    let filtered = d
        .images()
        .await
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec(&imgs.busybox.reference),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].id, id);

    let fs = d
        .images()
        .await
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let u = &fs.image_filesystems[0];
    assert_eq!(
        u.fs_id.as_ref().unwrap().mountpoint,
        images_dir(&d).display().to_string()
    );
    let used = u.used_bytes.unwrap().value;
    assert!(
        used > before.image_filesystems[0].used_bytes.unwrap().value + 1_000_000,
        "{used}"
    );
    assert!(u.inodes_used.unwrap().value > 100);

    // Missing: an empty status, not an error.
    assert!(status(&d, "127.0.0.1:1/none:1", false).await.image.is_none());

    remove(&d, &imgs.busybox.reference).await;
    let left = status(&d, &id, false).await.image.unwrap();
    assert_eq!(
        left.repo_tags,
        vec![imgs.uncompressed.reference.clone()],
        "only the one tag went"
    );
    assert!(layer.exists());
    remove(&d, &imgs.uncompressed.id).await;
    remove(&d, &imgs.uncompressed.id).await; // absent: still fine
    remove(&d, &imgs.layered.by_digest).await;
    assert!(list(&d).await.is_empty());
    assert!(status(&d, &imgs.busybox.reference, false).await.image.is_none());
    assert!(!layer.exists(), "unused layer deleted");
    assert_eq!(count_files(&images_dir(&d).join("blobs/sha256")), 0);
    assert_eq!(count_files(&images_dir(&d).join("layers")), 0);
    let after = d
        .images()
        .await
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(after.image_filesystems[0].used_bytes.unwrap().value < 10_000);
}

#[tokio::test]
async fn short_names_go_through_the_mirror_and_tags_are_removed_one_at_a_time() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    // The same image as docker.io/library/busybox:latest and :stable on the mirror.
    let base = LayerBuilder::new().busybox_base().build();
    let bb = TestImage::new(
        vec![Layer::new(&base, Compression::Zstd, false)],
        ImageConfig::default(),
    );
    let p = images::push_image(&reg, "library/busybox", "latest", &bb);
    images::push_manifest(&reg, "library/busybox", "stable", &p.media_type, &p.manifest);
    let d = Crustd::start(with_registry(&reg)).await;

    assert_eq!(pull(&d, "busybox", None).await.unwrap(), p.id);
    assert_eq!(
        pull(&d, "docker.io/library/busybox:stable", None).await.unwrap(),
        p.id
    );
    // Tag plus digest.
    let both = format!("busybox:latest@{}", p.manifest_digest);
    assert_eq!(pull(&d, &both, None).await.unwrap(), p.id);
    let img = status(&d, "busybox", false).await.image.unwrap();
    let mut tags = img.repo_tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        vec![
            "docker.io/library/busybox:latest",
            "docker.io/library/busybox:stable"
        ]
    );
    assert_eq!(
        img.repo_digests,
        vec![format!("docker.io/library/busybox@{}", p.manifest_digest)]
    );
    assert!(reg.count_gets("/v2/library/busybox/manifests/latest") >= 1);

    remove(&d, "busybox:stable").await;
    let img = status(&d, "busybox", false).await.image.unwrap();
    assert_eq!(img.repo_tags, vec!["docker.io/library/busybox:latest"]);
    assert!(status(&d, "busybox:stable", false).await.image.is_none());
    remove(&d, "busybox").await;
    assert!(status(&d, &p.id, false).await.image.is_none());
    drop(imgs);
}

#[tokio::test]
async fn basic_auth_with_without_and_with_wrong_credentials() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(with_registry(&reg)).await;
    let r = &imgs.busybox.reference;

    let e = pull(&d, r, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("authentication failed"), "{}", e.message());
    assert!(e.message().contains(&reg.host()), "{}", e.message());

    let wrong = AuthConfig {
        username: "alice".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let e = pull(&d, r, Some(wrong)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("authentication failed"), "{}", e.message());
    assert!(list(&d).await.is_empty());

    let right = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    assert_eq!(pull(&d, r, Some(right)).await.unwrap(), imgs.busybox.id);
    // The `auth` field (base64 user:password) works too.
    let encoded = AuthConfig {
        auth: "YWxpY2U6czNjcmV0".into(),
        ..Default::default()
    };
    assert_eq!(
        pull(&d, &imgs.layered.reference, Some(encoded)).await.unwrap(),
        imgs.layered.id
    );
}

#[tokio::test]
async fn credentials_from_the_host_config() {
    let reg = Registry::start_with_auth("bob", "pw");
    let imgs = images::push_standard(&reg);
    let extra = format!(
        "[registry.configs.{:?}.auth]\nusername = \"bob\"\npassword = \"pw\"\n",
        reg.host()
    );
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    assert_eq!(
        pull(&d, &imgs.busybox.reference, None).await.unwrap(),
        imgs.busybox.id
    );
}

#[tokio::test]
async fn a_multi_platform_index_gives_linux_amd64() {
    let reg = Registry::start();
    let arm = arch_image("arm64", "arm64");
    let amd = arch_image("amd64", "amd64");
    let p_arm = images::push_image(&reg, "crust-test/multi", "arm64", &arm);
    let p_amd = images::push_image(&reg, "crust-test/multi", "amd64", &amd);
    let index = images::push_index(&reg, "crust-test/multi", "1", &[(&arm, &p_arm), (&amd, &p_amd)]);
    let d = Crustd::start(with_registry(&reg)).await;
    let r = format!("{}/crust-test/multi:1", reg.host());
    assert_eq!(pull(&d, &r, None).await.unwrap(), p_amd.id);
    let img = status(&d, &r, false).await.image.unwrap();
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/crust-test/multi@{index}", reg.host())]
    );
    assert_eq!(
        reg.count_gets(&format!("/manifests/{}", p_arm.manifest_digest)),
        0,
        "the arm64 manifest is not fetched"
    );
}

#[tokio::test]
async fn a_platform_from_config_is_honoured() {
    let reg = Registry::start();
    let arm = arch_image("arm64", "arm64");
    let amd = arch_image("amd64", "amd64");
    let p_arm = images::push_image(&reg, "crust-test/multi", "arm64", &arm);
    let p_amd = images::push_image(&reg, "crust-test/multi", "amd64", &amd);
    images::push_index(&reg, "crust-test/multi", "1", &[(&amd, &p_amd), (&arm, &p_arm)]);
    let extra = "[image]\nplatform = \"linux/arm64\"\n".to_string();
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    assert_eq!(
        pull(&d, &format!("{}/crust-test/multi:1", reg.host()), None)
            .await
            .unwrap(),
        p_arm.id
    );
    let e = pull(&d, &p_amd.reference.replace(":amd64", ":nope"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// Mounts an overlay of `lower` (lowest first) read-only at `at`.
fn mount_overlay(lower: &[PathBuf], at: &Path) {
    let dirs: Vec<String> = lower.iter().rev().map(|p| p.display().to_string()).collect();
    let opts = format!("lowerdir={}", dirs.join(":"));
    nix::mount::mount(
        Some("overlay"),
        at,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .unwrap_or_else(|e| panic!("mount overlay {opts}: {e}"));
}

#[tokio::test]
async fn whiteouts_hide_lower_files_when_layers_are_stacked() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(with_registry(&reg)).await;
    assert_eq!(
        pull(&d, &imgs.layered.reference, None).await.unwrap(),
        imgs.layered.id
    );
    let st = status(&d, &imgs.layered.reference, true).await;
    let info: serde_json::Value = serde_json::from_str(st.info.get("info").unwrap()).unwrap();
    let layers: Vec<PathBuf> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| PathBuf::from(l["path"].as_str().unwrap()))
        .collect();
    assert_eq!(layers.len(), 3);
    let mnt = tempfile::tempdir().unwrap();
    mount_overlay(&layers, mnt.path());
    let m = mnt.path();
    let seen = (
        m.join("data/a").exists(),
        m.join("data/b").exists(),
        m.join("data/dir/x").exists(),
        m.join("opq/old").exists(),
        m.join("opq/new").exists(),
        m.join("bin/busybox").exists(),
    );
    nix::mount::umount(m).unwrap();
    assert_eq!(
        seen,
        (false, true, true, false, true, true),
        "(a, b, dir/x, opq/old, opq/new, busybox)"
    );
}

#[tokio::test]
async fn ten_concurrent_pulls_fetch_each_blob_once() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(with_registry(&reg)).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut c = d.images().await;
        let r = imgs.layered.reference.clone();
        tasks.push(tokio::spawn(async move {
            c.pull_image(PullImageRequest {
                image: spec(&r),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().image_ref)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), imgs.layered.id);
    }
    let m: serde_json::Value = serde_json::from_slice(&imgs.layered.manifest).unwrap();
    let mut digests: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    digests.push(imgs.layered.id.clone());
    for dg in digests {
        assert_eq!(
            reg.count_gets(&format!("/blobs/{dg}")),
            1,
            "blob {dg} fetched once:\n{}",
            reg.log()
        );
    }
    assert_eq!(list(&d).await.len(), 1);
}

/// Leaves nothing behind in the store after a failed pull.
fn assert_store_clean(d: &Crustd) {
    let dir = images_dir(d);
    for sub in ["blobs/sha256", "layers", "ingest"] {
        assert_eq!(
            count_files(&dir.join(sub)),
            0,
            "{sub} not empty after a failed pull"
        );
    }
}

#[tokio::test]
async fn hostile_layers_are_refused_and_nothing_is_written_outside() {
    let reg = Registry::start();
    let outside = tempfile::Builder::new()
        .prefix("crust-escape-")
        .tempdir()
        .unwrap();
    let victim = outside.path().join("dotdot");
    // Enough ../ to leave any store path, then into our temp dir.
    let dotdot = format!(
        "{}{}",
        "../".repeat(12),
        victim.display().to_string().trim_start_matches('/')
    );
    let l1 = LayerBuilder::new()
        .dir("etc", 0o755)
        .raw_file(&dotdot, b"pwned")
        .build();
    let l2 = LayerBuilder::new()
        .symlink("esc", &outside.path().display().to_string())
        .file("esc/through-symlink", b"pwned", 0o644)
        .build();
    let l3 = LayerBuilder::new()
        .raw_file(&outside.path().join("absolute").display().to_string(), b"pwned")
        .build();
    let d = Crustd::start(with_registry(&reg)).await;
    for (name, tar, want) in [
        ("dotdot", l1, ".."),
        ("symlink", l2, "symlink"),
        ("absolute", l3, "absolute"),
    ] {
        let s = TestImage::new(
            vec![Layer::new(&tar, Compression::Gzip, false)],
            ImageConfig::default(),
        );
        let p = images::push_image(&reg, "crust-test/hostile", name, &s);
        let e = pull(&d, &p.reference, None).await.unwrap_err();
        assert!(
            e.message().contains("layer refused") && e.message().contains(want),
            "{name}: {e:?}"
        );
        assert_eq!(
            count_files(outside.path()),
            0,
            "{name}: something was written outside"
        );
        assert_store_clean(&d);
    }
    assert!(list(&d).await.is_empty());
}

#[tokio::test]
async fn a_blob_whose_digest_does_not_match_is_refused() {
    let reg = Registry::start();
    let tar = LayerBuilder::new().file("f", b"original content", 0o644).build();
    let layer = Layer::new(&tar, Compression::Gzip, false);
    let s = TestImage::new(vec![layer.clone()], ImageConfig::default());
    let p = images::push_image(&reg, "crust-test/corrupt", "1", &s);
    // Tamper with the stored blob (same size, different bytes).
    let hex = layer.digest.trim_start_matches("sha256:");
    let data = reg.storage().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n - 9] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let d = Crustd::start(with_registry(&reg)).await;
    let e = pull(&d, &p.reference, None).await.unwrap_err();
    assert!(
        e.message().contains(&layer.digest) && e.message().contains("digest"),
        "{e:?}"
    );
    assert!(list(&d).await.is_empty());
    assert_store_clean(&d);
}

#[tokio::test]
async fn an_unreachable_registry_is_unavailable_naming_the_host() {
    let d = Crustd::start(CrustdOptions::default()).await;
    let port = harness::free_port();
    let e = pull(&d, &format!("127.0.0.1:{port}/crust-test/x:1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn a_down_mirror_falls_through_to_the_next_endpoint() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let closed = harness::free_port();
    let extra = format!(
        "[registry.mirrors.\"mirrored.example\"]\nendpoint = [\"http://127.0.0.1:{closed}\", {:?}]\nfallback_to_upstream = false\n",
        reg.url()
    );
    let d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    let id = pull(&d, "mirrored.example/crust-test/busybox:1", None)
        .await
        .unwrap();
    assert_eq!(id, imgs.busybox.id);
    assert_eq!(
        status(&d, "mirrored.example/crust-test/busybox:1", false)
            .await
            .image
            .unwrap()
            .id,
        id
    );
}

#[tokio::test]
async fn with_fallback_off_a_missing_image_is_not_found_at_the_mirror_only() {
    let reg = Registry::start();
    let d = Crustd::start(with_registry(&reg)).await;
    let e = pull(&d, "docker.io/library/does-not-exist:1", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains(&reg.host()), "{}", e.message());
    assert!(
        !e.message().contains("docker.io/v2") && !e.message().contains("registry-1"),
        "{}",
        e.message()
    );
    assert!(
        !d.log().contains("registry-1.docker.io"),
        "another host was tried:\n{}",
        d.log()
    );
    assert_eq!(reg.count_gets("/v2/library/does-not-exist/manifests/1"), 1);
}

#[tokio::test]
async fn a_stalled_registry_fails_with_a_clear_error() {
    // A server that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.push(s);
        }
    });
    let extra = "[image]\nstall_timeout_seconds = 1\n".to_string();
    let d = Crustd::start(CrustdOptions {
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    let e = pull(&d, &format!("127.0.0.1:{port}/x/y:1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(
        e.message().contains("no data received for 1 s"),
        "{}",
        e.message()
    );
    hold.abort();
}

#[tokio::test]
async fn images_survive_a_restart_and_pinned_images_are_reported() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let extra = format!("[image]\npinned_images = [\"{}/crust-test/busy*\"]\n", reg.host());
    let mut d = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    pull(&d, &imgs.busybox.reference, None).await.unwrap();
    pull(&d, &imgs.layered.reference, None).await.unwrap();
    d.kill9();
    // A crash mid-pull leaves partial files: they are gone after the restart.
    std::fs::write(images_dir(&d).join("ingest/blob-partial"), b"partial").unwrap();
    std::fs::create_dir_all(images_dir(&d).join("layers/.tmp-0123/x")).unwrap();
    d.restart().await;
    let all = list(&d).await;
    assert_eq!(all.len(), 2);
    let bb = all.iter().find(|i| i.id == imgs.busybox.id).unwrap();
    assert!(bb.pinned);
    assert!(!all.iter().find(|i| i.id == imgs.layered.id).unwrap().pinned);
    assert_eq!(count_files(&images_dir(&d).join("ingest")), 0);
    assert!(!images_dir(&d).join("layers/.tmp-0123").exists());
    // Still usable without the registry.
    drop(reg);
    assert_eq!(
        status(&d, &imgs.layered.reference, false).await.image.unwrap().id,
        imgs.layered.id
    );
}

/// Peak RSS of a process in kB (`VmHWM`).
fn peak_rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Not a speed test (that is `make bench`): a ~100 MB multi-layer pull must not grow crustd's memory
/// with the image size (streamed to disk, never held whole).
#[tokio::test]
#[ignore = "slow: pushes 100 MB; run with --ignored"]
async fn a_100_mb_pull_keeps_crustd_memory_small() {
    let reg = Registry::start();
    let mut layers = Vec::new();
    let mut seed = 0x1234_5678_9abc_def0u64;
    for (i, c) in [
        Compression::Zstd,
        Compression::None,
        Compression::Zstd,
        Compression::Gzip,
    ]
    .into_iter()
    .enumerate()
    {
        let mut data = vec![0u8; if c == Compression::Gzip { 4 << 20 } else { 32 << 20 }];
        for b in data.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b.copy_from_slice(&seed.to_le_bytes()[..b.len()]);
        }
        let tar = LayerBuilder::new()
            .dir("big", 0o755)
            .file(&format!("big/{i}"), &data, 0o644)
            .build();
        layers.push(Layer::new(&tar, c, false));
    }
    let p = images::push_image(
        &reg,
        "crust-test/big",
        "1",
        &TestImage::new(layers, ImageConfig::default()),
    );
    let d = Crustd::start(with_registry(&reg)).await;
    let pid = d.pid().unwrap();
    let base = peak_rss_kb(pid);
    let t = std::time::Instant::now();
    assert_eq!(pull(&d, &p.reference, None).await.unwrap(), p.id);
    let took = t.elapsed();
    let peak = peak_rss_kb(pid);
    eprintln!("pull of ~100 MB took {took:?}; crustd peak RSS {peak} kB (at start {base} kB)");
    assert!(peak < 64 * 1024, "crustd peak RSS {peak} kB");
}

/// A docker-registry serving `storage` over TLS with a fresh self-signed certificate for 127.0.0.1.
struct TlsRegistry {
    dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
}

impl TlsRegistry {
    fn start(storage: &Path) -> TlsRegistry {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        // A CA, and a server certificate for 127.0.0.1 signed by it (webpki refuses a CA as end entity).
        let sh = |script: &str| {
            let st = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .current_dir(dir.path())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "{script}");
        };
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=crust-test-ca -keyout ca.key -out ca.pem",
        );
        sh("openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out req.csr");
        sh(
            "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out cert.pem",
        );
        let port = harness::free_port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: x\n  tls:\n    certificate: {}\n    key: {}\n",
            storage.display(),
            cert.display(),
            key.display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = std::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let up = harness::wait_for(std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(dir.path().join("registry.log"))
                .unwrap()
                .contains("listening on")
                .then_some(())
        });
        assert!(up.is_some(), "TLS registry did not start");
        TlsRegistry { dir, port, child }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn tls_registries_with_a_ca_file_or_skip_verify() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let tls = TlsRegistry::start(&reg.storage());
    let image = "tls.example/crust-test/busybox:1";
    let mirror = format!(
        "[registry.mirrors.\"tls.example\"]\nendpoint = [\"https://127.0.0.1:{}\"]\nfallback_to_upstream = false\n",
        tls.port
    );
    let host_tls = format!("[registry.configs.\"127.0.0.1:{}\".tls]\n", tls.port);
    for (setting, ok) in [
        (format!("ca_file = {:?}\n", tls.ca()), true),
        ("insecure_skip_verify = true\n".into(), true),
        (String::new(), false),
    ] {
        let extra = format!("{mirror}{host_tls}{setting}");
        let d = Crustd::start(CrustdOptions {
            extra_toml: extra,
            ..Default::default()
        })
        .await;
        let r = pull(&d, image, None).await;
        if ok {
            assert_eq!(r.unwrap(), imgs.busybox.id, "{setting}");
        } else {
            let e = r.unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            assert!(
                e.message().contains(&format!("127.0.0.1:{}", tls.port)),
                "{}",
                e.message()
            );
            assert!(
                e.message().to_lowercase().contains("certificate"),
                "{}",
                e.message()
            );
        }
    }
}

#[tokio::test]
async fn the_proxy_environment_is_honoured() {
    // crustd runs with HTTP_PROXY at a closed port and NO_PROXY=127.0.0.1,localhost (the harness):
    // 127.0.0.2 is not exempt, so the pull must go to the (closed) proxy and never reach this listener.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = Crustd::start(CrustdOptions::default()).await;
    let e = pull(&d, &format!("127.0.0.2:{port}/x/y:1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let direct = tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
    assert!(
        direct.is_err(),
        "the registry was contacted directly, not through the proxy"
    );
}

#[tokio::test]
async fn requests_are_validated_naming_the_field() {
    let d = Crustd::start(CrustdOptions::default()).await;
    for bad in ["", "Not A Reference", "busybox@sha256:abc"] {
        let e = pull(&d, bad, None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
        assert!(e.message().starts_with("image.image"), "{bad:?}: {}", e.message());
    }
    let e = d
        .images()
        .await
        .image_status(ImageStatusRequest {
            image: None,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("image"), "{}", e.message());
    let e = d
        .images()
        .await
        .remove_image(RemoveImageRequest { image: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_tag_moves_to_the_image_it_now_names() {
    let reg = Registry::start();
    let a = images::push_image(&reg, "crust-test/moving", "1", &arch_image("amd64", "first"));
    let d = Crustd::start(with_registry(&reg)).await;
    assert_eq!(pull(&d, &a.reference, None).await.unwrap(), a.id);
    let b = images::push_image(&reg, "crust-test/moving", "1", &arch_image("amd64", "second"));
    assert_ne!(a.id, b.id);
    assert_eq!(pull(&d, &b.reference, None).await.unwrap(), b.id);
    assert_eq!(status(&d, &b.reference, false).await.image.unwrap().id, b.id);
    let old = status(&d, &a.id, false).await.image.unwrap();
    assert!(old.repo_tags.is_empty(), "{old:?}");
    assert_eq!(old.repo_digests, vec![a.by_digest.clone()]);
    assert_eq!(list(&d).await.len(), 2);
}

#[tokio::test]
async fn a_config_with_a_malformed_diff_id_is_refused() {
    let reg = Registry::start();
    let tar = LayerBuilder::new().file("f", b"x", 0o644).build();
    let mut layer = Layer::new(&tar, Compression::Gzip, false);
    // The first diff ID is also the first chain ID, which names a directory: a path must not get through.
    layer.diff_id = "sha256:../../../../escape".into();
    let p = images::push_image(
        &reg,
        "crust-test/baddiff",
        "1",
        &TestImage::new(vec![layer], ImageConfig::default()),
    );
    let d = Crustd::start(with_registry(&reg)).await;
    let e = pull(&d, &p.reference, None).await.unwrap_err();
    assert!(e.message().contains("malformed diff ID"), "{e:?}");
    assert_store_clean(&d);
    assert!(!images_dir(&d).parent().unwrap().join("escape").exists());
}
