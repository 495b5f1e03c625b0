//! A full node's worth of pods (110, kubelet's default `maxPods`): lists, filters (ID prefix, state,
//! labels, pod ID) and statuses stay exact while pods and containers are created and removed
//! concurrently, and match the test's own model once things settle. Host-network pods and one small
//! container in some of them keep it quick on 2 cores.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use futures::StreamExt;
use harness::{Crustd, CrustdOptions, Registry};
use tonic::transport::Channel;

const PODS: usize = 110;
const EXTRA: usize = 20;
const REMOVED: usize = 40;

/// What the test made: pod ID → (index, container ID and the state it must settle in).
#[derive(Default, Clone)]
struct Model {
    pods: BTreeMap<String, (usize, Option<(String, ContainerState)>)>,
}

fn pod_config(i: usize) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("node-{i}"),
            uid: format!("uid-node-{i}"),
            namespace: "crust-test".into(),
            attempt: 0,
        }),
        labels: [
            ("group".to_string(), format!("g{}", i % 3)),
            ("idx".to_string(), i.to_string()),
        ]
        .into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pod `i`: every other pod gets a container; of those, one in five is only created, one in five
/// exits at once, the others run.
async fn make(
    mut rt: RuntimeServiceClient<Channel>,
    image: String,
    i: usize,
) -> (String, usize, Option<(String, ContainerState)>) {
    let cfg = pod_config(i);
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    if i % 2 == 1 {
        return (pod, i, None);
    }
    let (cmd, want) = match (i / 2) % 5 {
        0 => (vec!["sleep", "3600"], ContainerState::ContainerCreated),
        1 => (vec!["true"], ContainerState::ContainerExited),
        _ => (vec!["sleep", "3600"], ContainerState::ContainerRunning),
    };
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image,
                    ..Default::default()
                }),
                command: cmd.into_iter().map(String::from).collect(),
                labels: [("idx".to_string(), i.to_string())].into(),
                ..Default::default()
            }),
            sandbox_config: Some(cfg),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    if want != ContainerState::ContainerCreated {
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    }
    (pod, i, Some((id, want)))
}

async fn remove(mut rt: RuntimeServiceClient<Channel>, pod: String) {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await
        .unwrap();
}

async fn pods(rt: &mut RuntimeServiceClient<Channel>, filter: PodSandboxFilter) -> Vec<PodSandbox> {
    rt.list_pod_sandbox(ListPodSandboxRequest { filter: Some(filter) })
        .await
        .unwrap()
        .into_inner()
        .items
}

async fn containers(rt: &mut RuntimeServiceClient<Channel>, filter: ContainerFilter) -> Vec<Container> {
    rt.list_containers(ListContainersRequest { filter: Some(filter) })
        .await
        .unwrap()
        .into_inner()
        .containers
}

fn ids<T>(v: &[T], id: impl Fn(&T) -> &str) -> BTreeSet<String> {
    v.iter().map(|x| id(x).to_string()).collect()
}

/// What holds at any moment, also while pods come and go: filters return only what they ask for, in
/// creation order, without duplicates, and a status answers for the pod asked about.
async fn check_consistent(rt: &mut RuntimeServiceClient<Channel>) {
    let all = pods(rt, PodSandboxFilter::default()).await;
    assert_eq!(ids(&all, |p| &p.id).len(), all.len(), "duplicate pods");
    assert!(
        all.windows(2).all(|w| w[0].created_at <= w[1].created_at),
        "pods not in creation order"
    );
    let g1 = pods(
        rt,
        PodSandboxFilter {
            label_selector: [("group".to_string(), "g1".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert!(
        g1.iter()
            .all(|p| p.labels.get("group").map(String::as_str) == Some("g1"))
    );
    let ready = pods(
        rt,
        PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        },
    )
    .await;
    assert!(
        ready
            .iter()
            .all(|p| p.state == PodSandboxState::SandboxReady as i32)
    );
    let cs = containers(rt, ContainerFilter::default()).await;
    assert_eq!(ids(&cs, |c| &c.id).len(), cs.len(), "duplicate containers");
    let running = containers(
        rt,
        ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        },
    )
    .await;
    assert!(
        running
            .iter()
            .all(|c| c.state == ContainerState::ContainerRunning as i32)
    );
    if let Some(p) = all.get(all.len() / 2) {
        let prefix = &p.id[..10];
        let by_prefix = pods(
            rt,
            PodSandboxFilter {
                id: prefix.into(),
                ..Default::default()
            },
        )
        .await;
        assert!(by_prefix.iter().all(|q| q.id.starts_with(prefix)));
        match rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: p.id.clone(),
                verbose: false,
            })
            .await
        {
            Ok(s) => assert_eq!(s.into_inner().status.unwrap().id, p.id),
            Err(e) => assert_eq!(e.code(), tonic::Code::NotFound, "{e}"),
        }
        let of_pod = containers(
            rt,
            ContainerFilter {
                pod_sandbox_id: p.id.clone(),
                ..Default::default()
            },
        )
        .await;
        assert!(of_pod.iter().all(|c| c.pod_sandbox_id == p.id));
    }
}

/// Once things settle: every list and filter is exactly the model.
async fn check_exact(rt: &mut RuntimeServiceClient<Channel>, m: &Model) {
    let all = pods(rt, PodSandboxFilter::default()).await;
    let want: BTreeSet<String> = m.pods.keys().cloned().collect();
    assert_eq!(ids(&all, |p| &p.id), want, "ListPodSandbox");
    assert!(
        all.iter()
            .all(|p| p.state == PodSandboxState::SandboxReady as i32)
    );
    for g in 0..3 {
        let got = pods(
            rt,
            PodSandboxFilter {
                label_selector: [("group".to_string(), format!("g{g}"))].into(),
                ..Default::default()
            },
        )
        .await;
        let want: BTreeSet<String> = m
            .pods
            .iter()
            .filter(|(_, (i, _))| i % 3 == g)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(ids(&got, |p| &p.id), want, "label group=g{g}");
    }
    for (id, (i, c)) in m.pods.iter().step_by(7) {
        let prefix = &id[..12];
        let want: BTreeSet<String> = m.pods.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        let got = pods(
            rt,
            PodSandboxFilter {
                id: prefix.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(ids(&got, |p| &p.id), want, "pod ID prefix {prefix}");
        let got = pods(
            rt,
            PodSandboxFilter {
                label_selector: [("idx".to_string(), i.to_string())].into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(ids(&got, |p| &p.id), [id.clone()].into(), "label idx={i}");
        let of_pod = containers(
            rt,
            ContainerFilter {
                pod_sandbox_id: id.clone(),
                ..Default::default()
            },
        )
        .await;
        let want: BTreeSet<String> = c.iter().map(|(c, _)| c.clone()).collect();
        assert_eq!(ids(&of_pod, |c| &c.id), want, "containers of pod {id}");
        if let Some((cid, _)) = c {
            let got = containers(
                rt,
                ContainerFilter {
                    id: cid[..12].into(),
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(ids(&got, |c| &c.id), [cid.clone()].into(), "container ID prefix");
        }
    }
    for state in [
        ContainerState::ContainerCreated,
        ContainerState::ContainerRunning,
        ContainerState::ContainerExited,
    ] {
        let got = containers(
            rt,
            ContainerFilter {
                state: Some(ContainerStateValue { state: state as i32 }),
                ..Default::default()
            },
        )
        .await;
        let want: BTreeSet<String> = m
            .pods
            .values()
            .filter_map(|(_, c)| c.as_ref().filter(|(_, s)| *s == state).map(|(id, _)| id.clone()))
            .collect();
        assert_eq!(ids(&got, |c| &c.id), want, "container state {state:?}");
    }
    for (id, (_, c)) in &m.pods {
        let s = rt
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            s.status.as_ref().unwrap().state,
            PodSandboxState::SandboxReady as i32
        );
        let got: Vec<(String, i32)> = s
            .containers_statuses
            .iter()
            .map(|c| (c.id.clone(), c.state))
            .collect();
        let want: Vec<(String, i32)> = c.iter().map(|(id, st)| (id.clone(), *st as i32)).collect();
        assert_eq!(got, want, "containers_statuses of {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filters_and_statuses_stay_exact_at_110_pods_under_churn() {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        ..Default::default()
    })
    .await;
    let image = imgs.busybox.reference.clone();
    c.images()
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let rt = c.runtime().await;

    // A checker polls like kubelet, with every filter, while pods are made and removed.
    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (mut rt, stop) = (rt.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                check_consistent(&mut rt).await;
                rounds += 1;
            }
            rounds
        })
    };

    let mut m = Model::default();
    let made: Vec<_> = futures::stream::iter((0..PODS).map(|i| make(rt.clone(), image.clone(), i)))
        .buffer_unordered(6)
        .collect()
        .await;
    for (pod, i, c) in made {
        m.pods.insert(pod, (i, c));
    }
    // Remove some while others are made.
    let gone: Vec<String> = m
        .pods
        .keys()
        .step_by(PODS / REMOVED)
        .take(REMOVED)
        .cloned()
        .collect();
    let removals = futures::stream::iter(gone.iter().cloned().map(|p| remove(rt.clone(), p)))
        .buffer_unordered(3)
        .collect::<Vec<()>>();
    let additions = futures::stream::iter((PODS..PODS + EXTRA).map(|i| make(rt.clone(), image.clone(), i)))
        .buffer_unordered(3)
        .collect::<Vec<_>>();
    let ((), added) = futures::join!(
        async {
            removals.await;
        },
        additions
    );
    for p in &gone {
        m.pods.remove(p);
    }
    for (pod, i, c) in added {
        m.pods.insert(pod, (i, c));
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = checker.await.unwrap();
    assert!(rounds > 0);

    // The exits of the `true` containers are in.
    let mut rt2 = rt.clone();
    let want_exited = m
        .pods
        .values()
        .filter(|(_, c)| {
            c.as_ref()
                .is_some_and(|(_, s)| *s == ContainerState::ContainerExited)
        })
        .count();
    for _ in 0..200 {
        let n = containers(
            &mut rt2,
            ContainerFilter {
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerExited as i32,
                }),
                ..Default::default()
            },
        )
        .await
        .len();
        if n == want_exited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.pods.len(), PODS - REMOVED + EXTRA);
    check_exact(&mut rt2, &m).await;

    // Clean-up, a few at a time.
    let all: Vec<String> = m.pods.keys().cloned().collect();
    futures::stream::iter(all.into_iter().map(|p| remove(rt.clone(), p)))
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
    assert!(pods(&mut rt2, PodSandboxFilter::default()).await.is_empty());
    assert!(containers(&mut rt2, ContainerFilter::default()).await.is_empty());
}
