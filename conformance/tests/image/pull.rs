//! Pulls and the store: by tag and digest, status, list, fsinfo and removal, short names and tags,
//! concurrent pulls, restart and pinned images, memory use, request validation and moving tags.

use std::os::unix::fs::MetadataExt;

use super::*;

async fn fs_info(d: &Crustd) -> ImageFsInfoResponse {
    d.images()
        .await
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn pull_by_tag_and_digest_then_status_list_fsinfo_and_remove_frees_disk() {
    let reg = Registry::start();
    let imgs = images::push_standard(&reg);
    let d = Crustd::start(with_registry(&reg)).await;
    let before = fs_info(&d).await;

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
    // The applets are hard links to busybox, as in the upstream busybox images.
    let sh = std::fs::symlink_metadata(layer.join("bin/sh")).unwrap();
    assert!(sh.file_type().is_file());
    assert_eq!(
        sh.ino(),
        std::fs::metadata(layer.join("bin/busybox")).unwrap().ino()
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

    let fs = fs_info(&d).await;
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
    // The busybox layer's dirs and files (its applets are hard links: one inode) and the layered image's.
    let inodes = u.inodes_used.unwrap().value;
    assert!(inodes > 20, "{inodes}");

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
    let after = fs_info(&d).await;
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
