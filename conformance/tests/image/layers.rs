//! What is in the image: platforms chosen from an index, whiteouts across stacked layers, hostile
//! layers, blobs with the wrong digest and malformed diff IDs (refused, nothing left behind).

use super::*;

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

/// Leaves nothing behind in the store after a failed pull.
pub(crate) fn assert_store_clean(d: &Crustd) {
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
    for (name, tar, want) in [("dotdot", l1, ".."), ("symlink", l2, "symlink")] {
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
    // An absolute member name is resolved inside the layer root, as containerd does: the pull succeeds
    // and still nothing lands outside.
    let s = TestImage::new(
        vec![Layer::new(&l3, Compression::Gzip, false)],
        ImageConfig::default(),
    );
    let p = images::push_image(&reg, "crust-test/hostile", "absolute", &s);
    pull(&d, &p.reference, None).await.unwrap();
    assert_eq!(
        count_files(outside.path()),
        0,
        "absolute: something was written outside"
    );
}

#[tokio::test]
async fn a_blob_whose_digest_does_not_match_is_refused() {
    let reg = Registry::start();
    let tar = LayerBuilder::new().file("f", b"original content", 0o644).build();
    let layer = Layer::new(&tar, Compression::Gzip, false);
    let s = TestImage::new(vec![layer.clone()], ImageConfig::default());
    let p = images::push_image(&reg, "crust-test/corrupt", "1", &s);
    // Tamper with the stored blob (same size, different bytes).
    let data = blob_data(&reg, &layer.digest);
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

/// The stored data of `digest` in `reg`.
fn blob_data(reg: &Registry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    reg.storage().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

#[tokio::test]
async fn a_blob_longer_or_shorter_than_its_descriptor_is_refused() {
    let reg = Registry::start();
    let mut refs = Vec::new();
    for (repo, grow) in [("crust-test/long", true), ("crust-test/short", false)] {
        let tar = LayerBuilder::new().file("f", repo.as_bytes(), 0o644).build();
        let layer = Layer::new(&tar, Compression::Gzip, false);
        let s = TestImage::new(vec![layer.clone()], ImageConfig::default());
        let p = images::push_image(&reg, repo, "1", &s);
        let data = blob_data(&reg, &layer.digest);
        let mut bytes = std::fs::read(&data).unwrap();
        let n = bytes.len();
        if grow {
            bytes.extend_from_slice(b"trailing bytes");
        } else {
            bytes.truncate(n - 5);
        }
        std::fs::write(&data, bytes).unwrap();
        refs.push((p.reference, n));
    }
    let d = Crustd::start(with_registry(&reg)).await;
    let e = pull(&d, &refs[0].0, None).await.unwrap_err();
    assert!(
        e.message()
            .contains(&format!("more than the {} bytes the manifest says", refs[0].1)),
        "{e:?}"
    );
    let e = pull(&d, &refs[1].0, None).await.unwrap_err();
    assert!(
        e.message().contains(&format!(
            "got {} bytes, the manifest says {}",
            refs[1].1 - 5,
            refs[1].1
        )),
        "{e:?}"
    );
    assert!(list(&d).await.is_empty());
    assert_store_clean(&d);
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
