//! Image volumes (`Mount.image`): the image's merged layers read-only at the container path, a
//! sub-path of it, RemoveImage while in use (the image goes, as in containerd, its layers stay while
//! mounted), and the mount and the layers gone with the container.

use super::*;

fn mountinfo_mentions(p: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&p.display().to_string())
}

#[tokio::test]
async fn image_volumes_are_read_only_kept_while_in_use_and_cleaned_up() {
    let e = env().await;
    let layered = e.imgs.layered.reference.clone();
    pull(&e.c, &layered).await;
    let mut imgs = e.c.images().await;
    let p = pod(&e, "imgvol").await;
    let mut c = ctr("imgvol", &e.imgs.busybox.reference, &["sleep", "1000"]);
    let vol = |path: &str, sub: &str| Mount {
        container_path: path.into(),
        readonly: true,
        image: Some(ImageSpec {
            image: layered.clone(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        ..Default::default()
    };
    c.mounts = vec![vol("/vol", ""), vol("/sub", "data")];
    let id = run(&e, &p, c).await;
    let script = "cat /vol/data/b /vol/opq/new /sub/dir/x; ls /vol/data /vol/opq | tr '\\n' ' '; echo; \
                  touch /vol/new 2>/dev/null || echo read-only; \
                  grep ' /vol ' /proc/self/mountinfo | grep -q 'ro,nosuid,nodev' && echo flags";
    let check = |r: ExecSyncResponse| {
        let out = String::from_utf8_lossy(&r.stdout).to_string();
        assert!(
            out.ends_with("read-only\nflags\n") && !out.contains(" a "),
            "{out}\nstderr: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        out
    };
    let before = check(exec(&e, &id, &["sh", "-c", script], 10).await.unwrap());

    // The image is in use: RemoveImage removes it (as containerd does) but its layers stay mounted.
    let info = imgs
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: layered.clone(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(&info.info["info"]).unwrap();
    let layer_dirs: Vec<PathBuf> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| PathBuf::from(l["path"].as_str().unwrap()))
        .collect();
    assert_eq!(layer_dirs.len(), 3);
    // The digest a status reports for an image volume (cri-api 1.36's ImageSpec.image_ref): the
    // image's digest reference, as a container's image_ref.
    let digest_ref = info.image.as_ref().unwrap().repo_digests[0].clone();
    assert!(digest_ref.contains("@sha256:"), "{digest_ref}");
    imgs.remove_image(RemoveImageRequest {
        image: Some(ImageSpec {
            image: layered.clone(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let gone = imgs
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: layered.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.image.is_none());
    // The busybox base layer is busybox's too; the other two are the removed image's own.
    assert!(
        layer_dirs.iter().all(|d| d.exists()),
        "layers of a mounted image kept"
    );
    assert_eq!(
        check(exec(&e, &id, &["sh", "-c", script], 10).await.unwrap()),
        before
    );
    let st = status(&e, &id).await;
    assert_eq!(
        st.mounts
            .iter()
            .filter(|m| m.image.as_ref().is_some_and(|i| i.image_ref == digest_ref))
            .count(),
        2,
        "{:?}",
        st.mounts
    );
    assert!(
        st.mounts.iter().any(|m| m
            .image
            .as_ref()
            .is_some_and(|i| i.image == layered && i.image_ref == digest_ref)
            && m.image_sub_path == "data"),
        "{:?}",
        st.mounts
    );

    let vols = e.c.state.join("containers").join(format!("{id}.images"));
    assert!(mountinfo_mentions(&vols));
    stop(&e, &id, 0).await.unwrap();
    remove(&e, &id).await.unwrap();
    assert!(
        !vols.exists() && !mountinfo_mentions(&vols),
        "image volumes unmounted"
    );
    assert!(
        layer_dirs.iter().skip(1).all(|d| !d.exists()),
        "the removed image's own layers collected with the container"
    );

    // Refusals: an image never pulled, a sub-path leaving the image or absent from it.
    for (m, code, field) in [
        (
            Mount {
                image: Some(ImageSpec {
                    image: "crust-test/never-pulled:1".into(),
                    ..Default::default()
                }),
                ..vol("/v", "")
            },
            Code::NotFound,
            "config.mounts[0].image",
        ),
        (
            vol("/v", "../etc"),
            Code::InvalidArgument,
            "config.mounts[0].image_sub_path",
        ),
    ] {
        let mut c = ctr("imgvol-bad", &e.imgs.busybox.reference, &["true"]);
        c.mounts = vec![m];
        let err = create(&e, &p, c).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(field), "{err:?}");
    }
    let mut c = ctr("imgvol-bad", &e.imgs.busybox.reference, &["true"]);
    c.mounts = vec![vol("/v", "bin")];
    let err = create(&e, &p, c).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the removed image: {err:?}");
    stop_and_remove_pod(&e, &p.id).await;
    let left = state_left(&e);
    assert!(left.is_empty(), "{left:?}");
}
