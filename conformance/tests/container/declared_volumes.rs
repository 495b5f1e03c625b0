//! Volumes an image's config declares (`VOLUME`): by default (`image.volumes = "copy"`, as containerd)
//! a writable directory of the container's own under crustd's root, filled with the image's content
//! (owners kept), mounted even over a read-only root filesystem, shown in the verbose status, and gone
//! with the container; a CRI mount at the same path wins; for a pod with its own user namespace the
//! image's owners are kept inside; `mkdir` only makes the directory in the rootfs, `ignore` nothing.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use harness::images::{Compression, ImageConfig, Layer, LayerBuilder, push_image};

use super::*;

/// An image declaring `/data` (root's, with content), `/owned` (65534's, 0750, with a file and a
/// symlink) and `empty` (relative, absent from the image); returns its reference, pulled.
async fn volume_image(e: &Env) -> String {
    image_declaring(e, "volumes", &["/data", "/owned/", "empty"]).await
}

/// The image of [`volume_image`] declaring `volumes`, pushed as `crust-test/<repo>`, pulled.
async fn image_declaring(e: &Env, repo: &str, volumes: &[&str]) -> String {
    let base = LayerBuilder::new().busybox_base().build();
    let vols = LayerBuilder::new()
        .dir("data", 0o755)
        .file("data/hello", b"hello from the image\n", 0o644)
        .dir("data/sub", 0o700)
        .file("data/sub/x", b"x\n", 0o600)
        .dir_owned("owned", 0o750, 65534, 65534)
        .file_owned("owned/f", b"nobody's\n", 0o640, 65534, 65534)
        .symlink("owned/link", "f")
        .build();
    let spec = harness::images::ImageSpec::new(
        vec![
            Layer::new(&base, Compression::Gzip, false),
            Layer::new(&vols, Compression::Gzip, false),
        ],
        ImageConfig {
            cmd: vec!["sh".into()],
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        },
    );
    let pushed = push_image(&e._reg, &format!("crust-test/{repo}"), "1", &spec);
    pull(&e.c, &pushed.reference).await;
    pushed.reference
}

/// The spec's mounts: destination → (source, options).
async fn spec_mounts(e: &Env, id: &str) -> HashMap<String, (String, Vec<String>)> {
    let info = container_info(e, id).await;
    info["runtimeSpec"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let opts = m["options"]
                .as_array()
                .map(|o| o.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (
                m["destination"].as_str().unwrap().to_string(),
                (m["source"].as_str().unwrap_or("").to_string(), opts),
            )
        })
        .collect()
}

/// The output of `sh -c script` in the container, which must succeed.
async fn sh(e: &Env, id: &str, script: &str) -> String {
    let r = exec(e, id, &["sh", "-c", script], 10).await.unwrap();
    assert_eq!(r.exit_code, 0, "stderr: {}", String::from_utf8_lossy(&r.stderr));
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// A crustd with `image.volumes = mode`, a pod, and in it a container of [`volume_image`] that `f`
/// may change, running.
async fn running_in_mode(mode: &str, f: impl FnOnce(&mut ContainerConfig)) -> (Env, Pod, String) {
    let e = env_with(&format!("[image]\nvolumes = \"{mode}\"\n")).await;
    let image = volume_image(&e).await;
    let name = format!("declared-{mode}");
    let p = pod(&e, &name).await;
    let mut c = ctr(&name, &image, &["sleep", "1000"]);
    f(&mut c);
    let id = run(&e, &p, c).await;
    (e, p, id)
}

/// Stops and removes the container, then its pod.
async fn remove_all(e: &Env, p: &Pod, id: &str) {
    stop(e, id, 0).await.unwrap();
    remove(e, id).await.unwrap();
    stop_and_remove_pod(e, &p.id).await;
}

const PROBE: &str = "cat /data/hello /data/sub/x /owned/f; stat -c '%u:%g %a' /owned /owned/f; \
                     readlink /owned/link; ls -A /empty | wc -l; \
                     echo w > /data/new && echo w > /owned/new && echo w > /empty/new && echo writable; \
                     touch /rootfile 2>/dev/null || echo read-only root";

/// Checks, inside the container, the volumes' content and owners, that they are writable, and that
/// the root filesystem is not.
async fn probe(e: &Env, id: &str) {
    assert_eq!(
        sh(e, id, PROBE).await,
        "hello from the image\nx\nnobody's\n65534:65534 750\n65534:65534 640\nf\n0\nwritable\nread-only root\n"
    );
}

#[tokio::test]
async fn declared_volumes_are_copied_writable_shown_and_removed() {
    let e = env().await;
    let image = volume_image(&e).await;
    let p = pod(&e, "declared").await;
    let mut c = ctr("declared", &image, &["sleep", "1000"]);
    sc(&mut c).readonly_rootfs = true;
    let id = run(&e, &p, c).await;
    probe(&e, &id).await;
    // Shown in the verbose status: read-write binds from the container's own directories.
    let mounts = spec_mounts(&e, &id).await;
    let own = e.c.root.join("containers").join(&id);
    let mut sources = Vec::new();
    for dst in ["/data", "/owned", "/empty"] {
        let (src, opts) = mounts
            .get(dst)
            .unwrap_or_else(|| panic!("{dst} not mounted: {mounts:?}"));
        assert!(
            Path::new(src).starts_with(own.join("volumes")),
            "{dst} from {src}"
        );
        assert!(opts.contains(&"rw".to_string()), "{dst}: {opts:?}");
        sources.push(PathBuf::from(src));
    }
    // On the host: the owner kept, and what the container wrote is in the volume, not the layer.
    let owned = &sources[1];
    let m = std::fs::metadata(owned).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (65534, 65534, 0o750));
    assert_eq!(std::fs::metadata(owned.join("f")).unwrap().uid(), 65534);
    assert_eq!(std::fs::read_to_string(sources[0].join("new")).unwrap(), "w\n");
    assert!(sources[2].join("new").exists());
    assert!(!own.join("upper/data").exists(), "written to the writable layer");
    assert!(
        !e.c.state
            .join("containers")
            .join(format!("{id}.images"))
            .join("declared")
            .exists(),
        "the image's copy source stays mounted"
    );

    // A CRI mount at a declared path wins (the path written differently).
    let host = e.c.dir.path().join("cri-owned");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("from-host"), "h\n").unwrap();
    let mut c2 = ctr("declared-cri", &image, &["sleep", "1000"]);
    c2.mounts = vec![Mount {
        container_path: "/owned/.".into(),
        host_path: host.display().to_string(),
        ..Default::default()
    }];
    let id2 = run(&e, &p, c2).await;
    let out = sh(&e, &id2, "ls -A /owned; cat /data/hello").await;
    assert_eq!(out, "from-host\nhello from the image\n");
    let mounts2 = spec_mounts(&e, &id2).await;
    assert_eq!(mounts2["/owned"].0, host.display().to_string());
    assert_eq!(
        std::fs::read_dir(e.c.root.join("containers").join(&id2).join("volumes"))
            .unwrap()
            .count(),
        2
    );

    // A volume the image has as a file fails the create (as in containerd), after `/data` was
    // copied: nothing of it is left.
    let bad = image_declaring(&e, "volume-on-a-file", &["/data", "/data/hello"]).await;
    let err = create(&e, &p, ctr("declared-bad", &bad, &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("image config Volumes"), "{err:?}");
    let mut ours: HashSet<String> = [
        id.clone(),
        id2.clone(),
        format!("{id}.json"),
        format!("{id2}.json"),
    ]
    .into();
    ours.extend([format!("{id}.images"), format!("{id2}.images")]);
    for d in [e.c.root.join("containers"), e.c.state.join("containers")] {
        let left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .filter(|n| !ours.contains(n))
            .collect();
        assert!(left.is_empty(), "left in {}: {left:?}", d.display());
    }

    for id in [&id, &id2] {
        stop(&e, id, 0).await.unwrap();
        remove(&e, id).await.unwrap();
        assert!(!e.c.root.join("containers").join(id).exists(), "volumes left");
    }
    assert!(!owned.exists());
    stop_and_remove_pod(&e, &p.id).await;
    let left = state_left(&e);
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn declared_volumes_keep_the_image_owners_in_a_user_namespace() {
    let e = env().await;
    let image = volume_image(&e).await;
    let ns = super::userns::userns(
        NamespaceMode::Pod,
        vec![super::userns::mapping(0, super::userns::HOST_ID)],
        vec![super::userns::mapping(0, super::userns::HOST_ID)],
    );
    let p = super::userns::userns_pod(&e, "declared-userns", ns.clone())
        .await
        .unwrap();
    let mut c = ctr("declared-userns", &image, &["sleep", "1000"]);
    sc(&mut c).namespace_options = Some(ns);
    sc(&mut c).readonly_rootfs = true;
    let id = run(&e, &p, c).await;
    probe(&e, &id).await;
    let out = sh(&e, &id, "stat -c %u /data/new /data").await;
    assert_eq!(out, "0\n0\n", "the container's root writes as root");
    // On disk the image's ids, as in the writable layer: the pod's root is 0 there.
    let vols = e.c.root.join("containers").join(&id).join("volumes");
    let mut owners: Vec<(u32, String)> = std::fs::read_dir(&vols)
        .unwrap()
        .flatten()
        .map(|d| {
            let m = d.metadata().unwrap();
            (m.uid(), format!("{:o}", m.mode() & 0o7777))
        })
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        [(0, "755".into()), (0, "755".into()), (65534, "750".into())]
    );
    // Bound from idmapped clones, detached once the container started.
    let mounts = spec_mounts(&e, &id).await;
    let staged = e.c.state.join("containers").join(format!("{id}.volumes"));
    assert!(Path::new(&mounts["/owned"].0).starts_with(&staged), "{mounts:?}");
    assert!(!staged.exists(), "staged clones left after the start");
    stop(&e, &id, 0).await.unwrap();
    remove(&e, &id).await.unwrap();
    assert!(!vols.exists());
    stop_and_remove_pod(&e, &p.id).await;
}

#[tokio::test]
async fn declared_volumes_in_mkdir_mode_are_directories_of_the_rootfs() {
    let (e, p, id) = running_in_mode("mkdir", |c| sc(c).run_as_user = Some(Int64Value { value: 1000 })).await;
    let out = sh(
        &e,
        &id,
        "cat /data/hello; stat -c '%u %a' /empty /owned; echo w > /empty/new && echo written; \
                 grep -cE ' /(data|owned|empty) ' /proc/self/mountinfo || true",
    )
    .await;
    assert_eq!(out, "hello from the image\n1000 755\n65534 750\nwritten\n0\n");
    let mounts = spec_mounts(&e, &id).await;
    assert!(
        !mounts.contains_key("/empty") && !mounts.contains_key("/data"),
        "{mounts:?}"
    );
    let own = e.c.root.join("containers").join(&id);
    assert_eq!(
        std::fs::read_to_string(own.join("upper/empty/new")).unwrap(),
        "w\n"
    );
    assert!(!own.join("volumes").exists());
    remove_all(&e, &p, &id).await;
}

#[tokio::test]
async fn declared_volumes_in_ignore_mode_are_ignored() {
    let (e, p, id) = running_in_mode("ignore", |c| sc(c).readonly_rootfs = true).await;
    let out = sh(
        &e,
        &id,
        "cat /data/hello; test -e /empty || echo no empty; \
                 touch /data/new 2>/dev/null || echo read-only",
    )
    .await;
    assert_eq!(out, "hello from the image\nno empty\nread-only\n");
    let mounts = spec_mounts(&e, &id).await;
    assert!(!mounts.contains_key("/data"), "{mounts:?}");
    assert!(!e.c.root.join("containers").join(&id).join("volumes").exists());
    remove_all(&e, &p, &id).await;
}

#[tokio::test]
async fn a_crash_mid_copy_leaves_nothing_after_the_restart() {
    let mut e = env().await;
    // A volume of many files, so that the copy takes a while (each also costs its unpacking and
    // removal: a few thousand keep the test short).
    let mut layer = LayerBuilder::new().dir("many", 0o755);
    for i in 0..2000 {
        layer = layer.file(&format!("many/f{i}"), b"x", 0o644);
    }
    let spec = harness::images::ImageSpec::new(
        vec![
            Layer::new(
                &LayerBuilder::new().busybox_base().build(),
                Compression::Gzip,
                false,
            ),
            Layer::new(&layer.build(), Compression::None, false),
        ],
        ImageConfig {
            cmd: vec!["sh".into()],
            volumes: vec!["/many".into()],
            ..Default::default()
        },
    );
    let image = push_image(&e._reg, "crust-test/many", "1", &spec).reference;
    pull(&e.c, &image).await;
    let p = pod(&e, "declared-crash").await;
    let mut rt = e.c.runtime().await;
    let req = CreateContainerRequest {
        pod_sandbox_id: p.id.clone(),
        config: Some(ctr("declared-crash", &image, &["true"])),
        sandbox_config: Some(p.config.clone()),
    };
    let creating = tokio::spawn(async move { rt.create_container(req).await });
    // Killed once the copy has begun.
    let records = e.c.root.join("containers");
    let copying = || -> Option<PathBuf> {
        for d in std::fs::read_dir(&records).ok()?.flatten() {
            let v = d.path().join("volumes/0");
            if std::fs::read_dir(&v).is_ok_and(|rd| rd.count() > 10) {
                return Some(d.path());
            }
        }
        None
    };
    let mut own = None;
    for _ in 0..60000 {
        own = copying();
        if own.is_some() || creating.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    e.c.kill9();
    let own = own.expect("the copy was never seen under way");
    let id = own.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        creating.await.unwrap().is_err(),
        "the create finished before the kill"
    );
    let source = e.c.state.join("containers").join(format!("{id}.images/declared"));
    let mounted = |p: &Path| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&p.display().to_string())
    };
    assert!(mounted(&source), "the copy's source was not mounted at the kill");
    e.c.restart().await;
    let left = containers(&e).await;
    assert!(left.is_empty(), "{left:?}");
    assert!(!own.exists(), "the half-copied volume is left");
    assert!(!records.join(format!("{id}.json")).exists());
    assert!(!mounted(&source) && !source.exists(), "the copy's source is left");
    let state = state_left(&e);
    assert!(state.is_empty(), "{state:?}");
    stop_and_remove_pod(&e, &p.id).await;
}
