//! What the list-stream tests share: a crustd with the registry's busybox, pods and containers made
//! to order, and each list taken both ways (streamed and unary) to compare.

use std::collections::BTreeMap;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry, TestImages};
use tonic::transport::Channel;

pub(crate) type Runtime = runtime_service_client::RuntimeServiceClient<Channel>;

/// The most bytes one streamed message may carry.
pub(crate) const LIMIT: usize = 1 << 20;

pub(crate) struct Env {
    pub(crate) c: Crustd,
    pub(crate) imgs: TestImages,
    _reg: Registry,
}

pub(crate) async fn env() -> Env {
    let reg = Registry::start();
    let imgs = harness::images::push_standard(&reg);
    let c = Crustd::start(CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    for r in [&imgs.busybox.reference, &imgs.configured.reference] {
        c.pull(r).await;
    }
    Env { c, imgs, _reg: reg }
}

/// A runtime client that takes answers of any size (the unary lists of many containers).
pub(crate) async fn big_runtime(c: &Crustd) -> Runtime {
    c.runtime().await.max_decoding_message_size(256 << 20)
}

pub(crate) fn pod_config(name: &str, app: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crust-test".into(),
            attempt: 0,
        }),
        labels: [("app".to_string(), app.to_string())].into(),
        ..Default::default()
    }
}

pub(crate) async fn run_pod(rt: &mut Runtime, name: &str, app: &str) -> (String, PodSandboxConfig) {
    let config = pod_config(name, app);
    let id = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    (id, config)
}

pub(crate) fn ctr(name: &str, image: &str, command: &[&str], annotation: usize) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        labels: [("name".to_string(), name.to_string())].into(),
        annotations: [("pad".to_string(), "a".repeat(annotation))].into(),
        ..Default::default()
    }
}

pub(crate) async fn create(
    rt: &mut Runtime,
    pod: &(String, PodSandboxConfig),
    config: ContainerConfig,
) -> String {
    rt.create_container(CreateContainerRequest {
        pod_sandbox_id: pod.0.clone(),
        config: Some(config),
        sandbox_config: Some(pod.1.clone()),
    })
    .await
    .unwrap()
    .into_inner()
    .container_id
}

/// Every message of a stream, each checked to be within the limit, or the status it failed with.
pub(crate) async fn collect<M: prost::Message>(
    s: Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>,
) -> Result<Vec<M>, tonic::Status> {
    let mut s = s?.into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        let len = m.encoded_len();
        assert!(len <= LIMIT, "a streamed message of {len} bytes");
        out.push(m);
    }
    Ok(out)
}

pub(crate) fn by_id<T>(items: Vec<T>, id: impl Fn(&T) -> String) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    for i in items {
        assert!(out.insert(id(&i), i).is_none(), "an item sent twice");
    }
    out
}

/// The unary answer and the streamed one, by ID: equal, or refused alike (then empty).
pub(crate) fn same<T: PartialEq + std::fmt::Debug>(
    what: &str,
    unary: Result<Vec<T>, tonic::Status>,
    streamed: Result<Vec<T>, tonic::Status>,
    id: impl Fn(&T) -> String,
) -> BTreeMap<String, T> {
    let (unary, streamed) = match (unary, streamed) {
        (Ok(u), Ok(s)) => (by_id(u, &id), by_id(s, &id)),
        (Err(u), Err(s)) => {
            assert_eq!((u.code(), u.message()), (s.code(), s.message()), "{what}");
            return BTreeMap::new();
        }
        (u, s) => panic!("{what}: unary {u:?}, streamed {s:?}"),
    };
    assert_eq!(unary, streamed, "{what}");
    unary
}

pub(crate) async fn containers_both_ways(
    rt: &mut Runtime,
    filter: Option<ContainerFilter>,
) -> BTreeMap<String, Container> {
    let unary = rt
        .list_containers(ListContainersRequest {
            filter: filter.clone(),
        })
        .await
        .map(|r| r.into_inner().containers);
    let streamed = collect(
        rt.stream_containers(StreamContainersRequest {
            filter: filter.clone(),
        })
        .await,
    )
    .await
    .map(|ms| ms.into_iter().flat_map(|m| m.containers).collect());
    same(&format!("{filter:?}"), unary, streamed, |c| c.id.clone())
}

pub(crate) async fn pods_both_ways(
    rt: &mut Runtime,
    filter: Option<PodSandboxFilter>,
) -> BTreeMap<String, PodSandbox> {
    let unary = rt
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: filter.clone(),
        })
        .await
        .map(|r| r.into_inner().items);
    let streamed = collect(
        rt.stream_pod_sandboxes(StreamPodSandboxesRequest {
            filter: filter.clone(),
        })
        .await,
    )
    .await
    .map(|ms| ms.into_iter().flat_map(|m| m.pod_sandboxes).collect());
    same(&format!("{filter:?}"), unary, streamed, |p| p.id.clone())
}

/// The IDs ListContainerStats and StreamContainerStats give (the numbers move between the calls).
pub(crate) async fn container_stats_both_ways(
    rt: &mut Runtime,
    filter: Option<ContainerStatsFilter>,
) -> Vec<String> {
    let unary = rt
        .list_container_stats(ListContainerStatsRequest {
            filter: filter.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    let streamed = collect(
        rt.stream_container_stats(StreamContainerStatsRequest {
            filter: filter.clone(),
        })
        .await,
    )
    .await
    .unwrap();
    let id = |s: &ContainerStats| s.attributes.as_ref().unwrap().id.clone();
    let unary = unary.iter().map(id).collect();
    let streamed = streamed.iter().flat_map(|m| &m.container_stats).map(id).collect();
    same(&format!("{filter:?}"), Ok(unary), Ok(streamed), String::clone)
        .into_keys()
        .collect()
}

/// The pod (and container) IDs ListPodSandboxStats and StreamPodSandboxStats give.
pub(crate) async fn pod_stats_both_ways(
    rt: &mut Runtime,
    filter: Option<PodSandboxStatsFilter>,
) -> Vec<String> {
    let unary = rt
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: filter.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    let streamed = collect(
        rt.stream_pod_sandbox_stats(StreamPodSandboxStatsRequest {
            filter: filter.clone(),
        })
        .await,
    )
    .await
    .unwrap();
    let ids = |s: &PodSandboxStats| {
        let mut containers: Vec<String> = s
            .linux
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.attributes.as_ref().unwrap().id.clone())
            .collect();
        containers.sort();
        format!("{} {containers:?}", s.attributes.as_ref().unwrap().id)
    };
    let unary = unary.iter().map(ids).collect();
    let streamed = streamed
        .iter()
        .flat_map(|m| &m.pod_sandbox_stats)
        .map(ids)
        .collect();
    same(&format!("{filter:?}"), Ok(unary), Ok(streamed), String::clone)
        .into_keys()
        .collect()
}

pub(crate) fn container_filter(f: impl FnOnce(&mut ContainerFilter)) -> Option<ContainerFilter> {
    let mut filter = ContainerFilter::default();
    f(&mut filter);
    Some(filter)
}

pub(crate) fn pod_filter(f: impl FnOnce(&mut PodSandboxFilter)) -> Option<PodSandboxFilter> {
    let mut filter = PodSandboxFilter::default();
    f(&mut filter);
    Some(filter)
}
