//! GetContainerEvents (kubelet's evented PLEG, `crictl events`): a pod's and a container's lifecycle as
//! events, in order, each with the pod's statuses; a pause that dies is announced; an open stream does
//! not hold crustd's shutdown up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry};
use tonic::Streaming;

type Kind = ContainerEventType;

async fn next(events: &mut Streaming<ContainerEventResponse>) -> ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(20), events.message())
        .await
        .expect("no event within 20s")
        .expect("stream error")
        .expect("stream ended")
}

fn kind(e: &ContainerEventResponse) -> Kind {
    Kind::try_from(e.container_event_type).unwrap()
}

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        ..Default::default()
    }
}

type Runtime = runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

async fn run_pod(rt: &mut Runtime, name: &str) -> String {
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(pod_config(name)),
        runtime_handler: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

async fn stop_pod(rt: &mut Runtime, id: &str) {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

async fn remove_pod(rt: &mut Runtime, id: &str) {
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

/// The next event must be `want` about `id`.
async fn expect(
    events: &mut Streaming<ContainerEventResponse>,
    id: &str,
    want: Kind,
) -> ContainerEventResponse {
    let e = next(events).await;
    assert_eq!((e.container_id.as_str(), kind(&e)), (id, want), "{e:?}");
    e
}

#[tokio::test]
async fn lifecycle_events_in_order_with_statuses() {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let mut c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let mut rt = c.runtime().await;
    let mut events = rt
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    let pod = run_pod(&mut rt, "events").await;
    for want in [Kind::ContainerCreatedEvent, Kind::ContainerStartedEvent] {
        let e = expect(&mut events, &pod, want).await;
        let ps = e.pod_sandbox_status.unwrap();
        assert_eq!(ps.state, PodSandboxState::SandboxReady as i32);
        assert_eq!(ps.metadata.unwrap().uid, "uid-events");
    }

    let spec = ImageSpec {
        image: imgs.busybox.reference.clone(),
        ..Default::default()
    };
    c.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(spec.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "brief".into(),
                    attempt: 0,
                }),
                image: Some(spec),
                command: vec!["sh".into(), "-c".into(), "sleep 0.2; exit 5".into()],
                ..Default::default()
            }),
            sandbox_config: Some(pod_config("events")),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let e = expect(&mut events, &id, Kind::ContainerCreatedEvent).await;
    assert_eq!(e.pod_sandbox_status.unwrap().id, pod);
    assert_eq!(e.containers_statuses.len(), 1);
    assert_eq!(
        e.containers_statuses[0].state,
        ContainerState::ContainerCreated as i32
    );

    rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    expect(&mut events, &id, Kind::ContainerStartedEvent).await;
    // The exit is announced by itself, with the exit code in the statuses.
    let e = expect(&mut events, &id, Kind::ContainerStoppedEvent).await;
    let st = &e.containers_statuses[0];
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 5)
    );
    // PodSandboxStatus carries the same statuses (kubelet reads them there with EventedPLEG on).
    let ps = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ps.containers_statuses.len(), 1, "{ps:?}");
    let st = &ps.containers_statuses[0];
    assert_eq!((st.id.as_str(), st.exit_code), (id.as_str(), 5));
    assert_eq!(st.metadata.as_ref().unwrap().name, "brief");

    rt.remove_container(RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let e = expect(&mut events, &id, Kind::ContainerDeletedEvent).await;
    assert!(e.containers_statuses.is_empty());

    stop_pod(&mut rt, &pod).await;
    let e = expect(&mut events, &pod, Kind::ContainerStoppedEvent).await;
    assert_eq!(
        e.pod_sandbox_status.unwrap().state,
        PodSandboxState::SandboxNotready as i32
    );
    remove_pod(&mut rt, &pod).await;
    let e = expect(&mut events, &pod, Kind::ContainerDeletedEvent).await;
    assert!(e.pod_sandbox_status.is_none());

    // A pause that dies on its own: the pod is announced stopped, once.
    let pod = run_pod(&mut rt, "dies").await;
    expect(&mut events, &pod, Kind::ContainerCreatedEvent).await;
    expect(&mut events, &pod, Kind::ContainerStartedEvent).await;
    let v = rt
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&v.info["info"]).unwrap();
    let pid = info["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    let e = expect(&mut events, &pod, Kind::ContainerStoppedEvent).await;
    assert_eq!(
        e.pod_sandbox_status.unwrap().state,
        PodSandboxState::SandboxNotready as i32
    );
    stop_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &pod).await;
    // One stop event for a pause that died, then the delete.
    expect(&mut events, &pod, Kind::ContainerDeletedEvent).await;

    // An open stream does not hold the shutdown up. The client stays live meanwhile (terminate
    // blocks its thread), as kubelet is: crustd's graceful shutdown waits for each connection to
    // answer its going-away ping, up to the grace period.
    let t = std::time::Instant::now();
    let (st, _c) = tokio::task::spawn_blocking(move || (c.terminate(), c))
        .await
        .unwrap();
    let st = st.expect("crustd exit status");
    assert!(st.success(), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // It was ended, not cut: the subscriber sees the end of its stream, not a broken connection.
    let end = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("the event stream's end");
    assert!(matches!(end, Ok(None)), "{end:?}");
}
