//! The CRI as kubelet drives it, end to end in one crustd: the calls of a pod's life in kubelet's order
//! with the fields kubelet reads checked at each step, then what every RPC must answer for an ID that
//! does not exist (NotFound, or success where the CRI makes the call idempotent).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry};
use tonic::Code;

fn pod_config(log_dir: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-web-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web".into(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([
            ("app".into(), "web".into()),
            ("io.kubernetes.pod.name".into(), "web".into()),
        ]),
        annotations: HashMap::from([("kubernetes.io/config.source".into(), "api".into())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

type Runtime = cri_api::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// ContainerStatus of a container that must exist.
async fn container_status(rt: &mut Runtime, id: &str) -> ContainerStatus {
    let req = ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    };
    rt.container_status(req)
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

/// PodSandboxStatus of a pod that must exist.
async fn pod_status(rt: &mut Runtime, id: &str) -> PodSandboxStatus {
    let req = PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    };
    rt.pod_sandbox_status(req)
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

#[tokio::test]
async fn a_pod_through_kubelets_calls() {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let mut rt = c.runtime().await;
    let mut im = c.images().await;

    // Kubelet's start-up: version, status, runtime config.
    assert_eq!(
        rt.version(VersionRequest::default())
            .await
            .unwrap()
            .into_inner()
            .runtime_api_version,
        "v1"
    );
    let conds = rt
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .conditions;
    // The two conditions kubelet requires (CheckpointRestoreReady is informational).
    let required = ["RuntimeReady", "NetworkReady"];
    assert!(
        conds
            .iter()
            .filter(|c| required.contains(&c.r#type.as_str()))
            .all(|c| c.status),
        "{conds:?}"
    );

    // SyncPod: sandbox first.
    let cfg = pod_config(&c.dir.path().join("pods/web"));
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let ps = pod_status(&mut rt, &pod).await;
    assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(ps.metadata.as_ref().unwrap().uid, "uid-web-1");
    assert_eq!(ps.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(
        ps.annotations
            .get("kubernetes.io/config.source")
            .map(String::as_str),
        Some("api")
    );
    let ip = ps.network.as_ref().unwrap().ip.clone();
    assert!(ip.starts_with("10.234."), "pod IP {ip:?}");
    assert!(ps.created_at > 0);

    // Image: status (absent), pull, status (present).
    let spec = ImageSpec {
        image: imgs.busybox.reference.clone(),
        ..Default::default()
    };
    assert!(
        im.image_status(ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .is_none()
    );
    let image_ref = im
        .pull_image(PullImageRequest {
            image: Some(spec.clone()),
            auth: None,
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert_eq!(image_ref, imgs.busybox.id);
    let image = im
        .image_status(ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(image.id, imgs.busybox.id);
    assert!(
        image.repo_tags.contains(&imgs.busybox.reference),
        "{:?}",
        image.repo_tags
    );
    assert!(image.size > 0);

    // Container: create, start, status.
    let ccfg = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(spec.clone()),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo started; trap 'exit 0' TERM; sleep 3600 & wait".into(),
        ],
        log_path: "app/0.log".into(),
        labels: HashMap::from([("io.kubernetes.container.name".into(), "app".into())]),
        ..Default::default()
    };
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ccfg),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let st = container_status(&mut rt, &id).await;
    assert_eq!(st.state, ContainerState::ContainerCreated as i32);
    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let st = container_status(&mut rt, &id).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    // As containerd and CRI-O report it: the repo digest, with the ID beside it.
    assert_eq!(st.image_ref, imgs.busybox.by_digest);
    assert_eq!(st.image_id, imgs.busybox.id);
    assert!(st.started_at >= st.created_at && st.created_at > 0);
    assert!(st.log_path.ends_with("app/0.log"), "{}", st.log_path);

    // Kubelet's relist: lists filtered by pod, state and label.
    let by_pod = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        by_pod.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    let exited = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerExited as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(exited.is_empty());
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: HashMap::from([("app".into(), "web".into())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);

    // Probes and stats.
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["hostname".into()],
            timeout: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).trim()),
        (0, "web")
    );
    let s = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(s.memory.unwrap().working_set_bytes.unwrap().value > 0);
    let log = std::fs::read_to_string(c.dir.path().join("pods/web/app/0.log")).unwrap();
    assert!(log.contains(" stdout F started"), "{log}");

    // In-place resize: kubelet resizes its pod cgroup, then tells the runtime, which keeps the values.
    let resized = LinuxContainerResources {
        cpu_shares: 1024,
        memory_limit_in_bytes: 256 << 20,
        ..Default::default()
    };
    rt.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.clone(),
        overhead: None,
        resources: Some(resized),
    })
    .await
    .unwrap();
    let info = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    assert_eq!(v["resources"]["resources"]["memory"]["limit"], 256 << 20, "{v}");
    assert_eq!(v["resources"]["resources"]["cpu"]["shares"], 1024, "{v}");
    let bad = rt
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.clone(),
            overhead: Some(LinuxContainerResources {
                cpu_shares: -1,
                ..Default::default()
            }),
            resources: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("overhead.cpu_shares"), "{bad:?}");

    // Pod deletion: stop container (grace period), remove, stop and remove the sandbox.
    rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 30,
    })
    .await
    .unwrap();
    let st = container_status(&mut rt, &id).await;
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::ContainerExited as i32, 0, "Completed")
    );
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
    let ps = pod_status(&mut rt, &pod).await;
    assert_eq!(ps.state, PodSandboxState::SandboxNotready as i32);
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert!(
        rt.list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items
            .is_empty()
    );
    assert!(
        rt.list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers
            .is_empty()
    );

    // Image GC: remove, then the status is empty again.
    im.remove_image(RemoveImageRequest {
        image: Some(spec.clone()),
    })
    .await
    .unwrap();
    assert!(
        im.image_status(ImageStatusRequest {
            image: Some(spec),
            verbose: false
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .is_none()
    );
    assert!(c.sweep().is_empty(), "crustd left things behind");
}

/// Asserts that an RPC answered NotFound.
fn nf<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, what: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{what}: {e:?}");
}

#[tokio::test]
async fn unknown_ids_get_not_found_or_idempotent_success() {
    let c = Crustd::start(CrustdOptions::default()).await;
    let mut rt = c.runtime().await;
    let mut im = c.images().await;
    let id = || "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_string();
    nf(
        rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id(),
            verbose: false,
        })
        .await,
        "PodSandboxStatus",
    );
    nf(
        rt.container_status(ContainerStatusRequest {
            container_id: id(),
            verbose: false,
        })
        .await,
        "ContainerStatus",
    );
    nf(
        rt.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: id(),
            ..Default::default()
        })
        .await,
        "UpdatePodSandboxResources",
    );
    nf(
        rt.start_container(StartContainerRequest { container_id: id() })
            .await,
        "StartContainer",
    );
    nf(
        rt.exec_sync(ExecSyncRequest {
            container_id: id(),
            cmd: vec!["true".into()],
            timeout: 1,
        })
        .await,
        "ExecSync",
    );
    nf(
        rt.container_stats(ContainerStatsRequest { container_id: id() })
            .await,
        "ContainerStats",
    );
    nf(
        rt.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: id() })
            .await,
        "PodSandboxStats",
    );
    nf(
        rt.update_container_resources(UpdateContainerResourcesRequest {
            container_id: id(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await,
        "UpdateContainerResources",
    );
    nf(
        rt.reopen_container_log(ReopenContainerLogRequest { container_id: id() })
            .await,
        "ReopenContainerLog",
    );
    nf(
        rt.exec(ExecRequest {
            container_id: id(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await,
        "Exec",
    );
    nf(
        rt.attach(AttachRequest {
            container_id: id(),
            stdout: true,
            ..Default::default()
        })
        .await,
        "Attach",
    );
    nf(
        rt.port_forward(PortForwardRequest {
            pod_sandbox_id: id(),
            port: vec![80],
        })
        .await,
        "PortForward",
    );
    let e = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: id(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "x".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "CreateContainer in an unknown pod: {e:?}"
    );

    // Idempotent: stop and remove of what is not there succeed.
    rt.stop_container(StopContainerRequest {
        container_id: id(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(RemoveContainerRequest { container_id: id() })
        .await
        .unwrap();
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id() })
        .await
        .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id() })
        .await
        .unwrap();
    im.remove_image(RemoveImageRequest {
        image: Some(ImageSpec {
            image: "sha256:".to_string() + &id(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    assert!(
        im.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: "nothing:here".into(),
                ..Default::default()
            }),
            verbose: false
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .is_none()
    );

    // Missing required fields are InvalidArgument naming the field.
    let e = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: None,
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("config"), "{}", e.message());
    let e = im
        .pull_image(PullImageRequest {
            image: None,
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("image"), "{}", e.message());
}
