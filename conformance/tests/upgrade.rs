//! On-disk formats across crust versions: records and the image index written before formats were
//! numbered (no `format` key) are read by this crustd, which adopts the containers running under them;
//! a record of a newer format stops crustd's start-up with a message naming it, rather than being
//! dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry};

/// Rewrites the JSON file at `p` through `f`.
fn edit(p: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn format_of(p: &Path) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v.get("format").and_then(|f| f.as_u64())
}

async fn pod_and_container(c: &Crustd, image: &str) -> (String, String) {
    c.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let logs = c.dir.path().join("logs");
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "old".into(),
            uid: "uid-old".into(),
            namespace: "crust-upgrade".into(),
            attempt: 0,
        }),
        hostname: "old".into(),
        log_directory: logs.display().to_string(),
        ..Default::default()
    };
    let mut rt = c.runtime().await;
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "sleeper".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                log_path: "sleeper.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    (pod, id)
}

async fn container(c: &Crustd, id: &str) -> ContainerStatus {
    c.runtime()
        .await
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

#[tokio::test]
async fn records_from_before_format_numbers_are_read_and_their_containers_adopted() {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let mut c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let (pod, id) = pod_and_container(&c, &imgs.busybox.reference).await;
    let before = container(&c, &id).await;
    assert_eq!(before.state(), ContainerState::ContainerRunning);
    c.terminate();
    // What crust wrote before formats were numbered: the same files without the key.
    let files = [
        c.root.join(format!("containers/{id}.json")),
        c.root.join(format!("pods/{pod}.json")),
        c.root.join("images/index.json"),
    ];
    for f in &files {
        assert_eq!(
            format_of(f),
            Some(1),
            "{} is written with its format",
            f.display()
        );
        edit(f, |m| {
            m.remove("format");
        });
    }
    c.restart().await;
    let after = container(&c, &id).await;
    assert_eq!(after.state(), ContainerState::ContainerRunning, "{after:?}");
    assert_eq!(after.started_at, before.started_at);
    let images = c
        .images()
        .await
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(
        images.len(),
        1,
        "the index of the older format is read: {images:?}"
    );
    // Managed: it stops and goes, and what is written again carries the format.
    let mut rt = c.runtime().await;
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    assert_eq!(format_of(&files[0]), Some(1));
    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert_eq!(format_of(&files[1]), Some(1));
}

#[tokio::test]
async fn a_record_of_a_newer_format_stops_start_up() {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let mut c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let (pod, _) = pod_and_container(&c, &imgs.busybox.reference).await;
    c.terminate();
    let record = c.root.join(format!("pods/{pod}.json"));
    edit(&record, |m| {
        m.insert("format".into(), 99.into());
    });
    let mut child = Command::new(harness::binary("crustd"))
        .arg("--config")
        .arg(&c.config)
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = harness::wait_for(Duration::from_secs(30), || child.try_wait().unwrap());
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("crustd started with a record of a newer format");
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "{text}");
    assert!(
        text.contains(&record.display().to_string()) && text.contains("format 99 is newer"),
        "the refusal must name the record and why: {text}"
    );
    // Back to a format it reads: the pod is there again (nothing was dropped), and the harness cleans up.
    edit(&record, |m| {
        m.insert("format".into(), 1.into());
    });
    c.restart().await;
    let pods = c
        .runtime()
        .await
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
}
