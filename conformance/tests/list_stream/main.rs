//! The list streams of KEP-5825 (StreamContainers, StreamPodSandboxes, StreamImages,
//! StreamContainerStats, StreamPodSandboxStats, StreamPodSandboxMetrics) against a real crustd: each
//! gives what its unary list gives for every filter, refuses what it refuses, sends messages of at
//! most 1 MiB however long the list, lets a client leave mid-way without leaving anything behind, and
//! is served to its end by a crustd shutting down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use cri_api::v1::*;
use harness::Crustd;
use tonic::Code;

mod support;

use support::*;

#[tokio::test]
async fn each_stream_gives_what_its_list_gives_for_every_filter() {
    let e = env().await;
    let mut rt = e.c.runtime().await;
    let busybox = e.imgs.busybox.reference.as_str();
    let a = run_pod(&mut rt, "stream-a", "a").await;
    let b = run_pod(&mut rt, "stream-b", "b").await;
    let running = create(&mut rt, &a, ctr("running", busybox, &["sleep", "600"], 10)).await;
    rt.start_container(StartContainerRequest {
        container_id: running.clone(),
    })
    .await
    .unwrap();
    let created = create(&mut rt, &a, ctr("created", busybox, &["true"], 10)).await;
    let exited = create(&mut rt, &b, ctr("exited", busybox, &["true"], 10)).await;
    rt.start_container(StartContainerRequest {
        container_id: exited.clone(),
    })
    .await
    .unwrap();
    let other = create(&mut rt, &b, ctr("other", busybox, &["true"], 10)).await;
    for _ in 0..200 {
        let s = rt
            .container_status(ContainerStatusRequest {
                container_id: exited.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if s.state == ContainerState::ContainerExited as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids = |m: &BTreeMap<String, Container>| m.keys().cloned().collect::<Vec<_>>();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // Containers: every filter of ListContainers, one by one and together.
    let all = containers_both_ways(&mut rt, None).await;
    assert_eq!(
        ids(&all),
        sorted(vec![
            running.clone(),
            created.clone(),
            exited.clone(),
            other.clone()
        ])
    );
    assert_eq!(
        ids(&containers_both_ways(&mut rt, Some(ContainerFilter::default())).await),
        ids(&all)
    );
    let f = container_filter(|f| f.id = running.clone());
    assert_eq!(ids(&containers_both_ways(&mut rt, f).await), [running.as_str()]);
    let f = container_filter(|f| f.id = created[..8].to_string());
    assert_eq!(ids(&containers_both_ways(&mut rt, f).await), [created.as_str()]);
    for (state, want) in [
        (
            ContainerState::ContainerCreated,
            sorted(vec![created.clone(), other.clone()]),
        ),
        (ContainerState::ContainerRunning, vec![running.clone()]),
        (ContainerState::ContainerExited, vec![exited.clone()]),
        (ContainerState::ContainerUnknown, vec![]),
    ] {
        let f = container_filter(|f| f.state = Some(ContainerStateValue { state: state as i32 }));
        assert_eq!(ids(&containers_both_ways(&mut rt, f).await), want, "{state:?}");
    }
    let f = container_filter(|f| f.pod_sandbox_id = b.0.clone());
    assert_eq!(
        ids(&containers_both_ways(&mut rt, f).await),
        sorted(vec![exited.clone(), other.clone()])
    );
    let f = container_filter(|f| f.label_selector = [("name".to_string(), "other".to_string())].into());
    assert_eq!(ids(&containers_both_ways(&mut rt, f).await), [other.as_str()]);
    let f = container_filter(|f| f.label_selector = [("name".to_string(), "nobody".to_string())].into());
    assert!(containers_both_ways(&mut rt, f).await.is_empty());
    let f = container_filter(|f| {
        f.pod_sandbox_id = a.0.clone();
        f.state = Some(ContainerStateValue {
            state: ContainerState::ContainerCreated as i32,
        });
        f.label_selector = [("name".to_string(), "created".to_string())].into();
    });
    assert_eq!(ids(&containers_both_ways(&mut rt, f).await), [created.as_str()]);
    // An unknown state is refused the same way by both.
    let bad = container_filter(|f| f.state = Some(ContainerStateValue { state: 42 }));
    let err = rt
        .stream_containers(StreamContainersRequest { filter: bad.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("filter.state.state"), "{}", err.message());
    containers_both_ways(&mut rt, bad).await;

    // Pods: every filter of ListPodSandbox; pod b stopped, so not ready.
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: b.0.clone(),
    })
    .await
    .unwrap();
    let pids = |m: &BTreeMap<String, PodSandbox>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        pids(&pods_both_ways(&mut rt, None).await),
        sorted(vec![a.0.clone(), b.0.clone()])
    );
    let f = pod_filter(|f| f.id = a.0[..6].to_string());
    assert_eq!(pids(&pods_both_ways(&mut rt, f).await), [a.0.as_str()]);
    for (state, want) in [
        (PodSandboxState::SandboxReady, a.0.clone()),
        (PodSandboxState::SandboxNotready, b.0.clone()),
    ] {
        let f = pod_filter(|f| f.state = Some(PodSandboxStateValue { state: state as i32 }));
        assert_eq!(pids(&pods_both_ways(&mut rt, f).await), [want], "{state:?}");
    }
    let f = pod_filter(|f| f.label_selector = [("app".to_string(), "b".to_string())].into());
    assert_eq!(pids(&pods_both_ways(&mut rt, f).await), [b.0.as_str()]);
    let f = pod_filter(|f| {
        f.label_selector = [("app".to_string(), "b".to_string())].into();
        f.state = Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxReady as i32,
        });
    });
    assert!(pods_both_ways(&mut rt, f).await.is_empty());
    let bad = pod_filter(|f| f.state = Some(PodSandboxStateValue { state: 7 }));
    let err = rt
        .stream_pod_sandboxes(StreamPodSandboxesRequest { filter: bad.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    pods_both_ways(&mut rt, bad).await;

    // Stats: ListContainerStats' and ListPodSandboxStats' filters; metrics: every ready pod.
    assert_eq!(container_stats_both_ways(&mut rt, None).await, ids(&all));
    let f = Some(ContainerStatsFilter {
        pod_sandbox_id: a.0.clone(),
        ..Default::default()
    });
    assert_eq!(
        container_stats_both_ways(&mut rt, f).await,
        sorted(vec![running.clone(), created.clone()])
    );
    let f = Some(ContainerStatsFilter {
        id: running.clone(),
        ..Default::default()
    });
    assert_eq!(container_stats_both_ways(&mut rt, f).await, [running.as_str()]);
    let f = Some(ContainerStatsFilter {
        label_selector: [("name".to_string(), "exited".to_string())].into(),
        ..Default::default()
    });
    assert_eq!(container_stats_both_ways(&mut rt, f).await, [exited.as_str()]);
    let pod_stats = pod_stats_both_ways(&mut rt, None).await;
    assert_eq!(pod_stats, [format!("{} {:?}", a.0, [running.as_str()])]);
    let f = Some(PodSandboxStatsFilter {
        label_selector: [("app".to_string(), "a".to_string())].into(),
        ..Default::default()
    });
    assert_eq!(pod_stats_both_ways(&mut rt, f).await, pod_stats);
    let f = Some(PodSandboxStatsFilter {
        id: b.0.clone(),
        ..Default::default()
    });
    assert!(pod_stats_both_ways(&mut rt, f).await.is_empty());
    let unary: Vec<String> = rt
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics
        .into_iter()
        .map(|m| m.pod_sandbox_id)
        .collect();
    let streamed: Vec<String> = collect(
        rt.stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {})
            .await,
    )
    .await
    .unwrap()
    .into_iter()
    .flat_map(|m| m.pod_sandbox_metrics)
    .map(|m| m.pod_sandbox_id)
    .collect();
    assert_eq!(unary, [a.0.as_str()]);
    assert_eq!(streamed, unary);

    // Images: all of them, and the one a filter names (or none).
    let mut images = e.c.images().await;
    for image in ["", e.imgs.configured.reference.as_str(), "no-such-image:1"] {
        let filter = Some(ImageFilter {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        });
        let unary = images
            .list_images(ListImagesRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        let streamed = collect(images.stream_images(StreamImagesRequest { filter }).await)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|m| m.images)
            .collect();
        let (unary, streamed) = (by_id(unary, |i| i.id.clone()), by_id(streamed, |i| i.id.clone()));
        assert_eq!(unary, streamed, "{image:?}");
        assert_eq!(
            unary.len(),
            [2, 1, 0][["", e.imgs.configured.reference.as_str(), "no-such-image:1"]
                .iter()
                .position(|i| *i == image)
                .unwrap()]
        );
    }
}

/// `n` created containers in one pod, each with an annotation of `pad` bytes (so a node's list
/// weighs what a real one does); the pod and the IDs. Created `parallel` at a time.
async fn many(c: &Crustd, busybox: &str, n: usize, pad: usize) -> (String, Vec<String>) {
    let mut rt = c.runtime().await;
    let pod = run_pod(&mut rt, "many", "many").await;
    let start = std::time::Instant::now();
    let mut ids = Vec::with_capacity(n);
    let parallel = 8;
    for chunk in (0..n).collect::<Vec<_>>().chunks(parallel) {
        let made = futures::future::join_all(chunk.iter().map(|i| {
            let mut rt = rt.clone();
            let pod = pod.clone();
            let config = ctr(&format!("c{i}"), busybox, &["true"], pad);
            async move { create(&mut rt, &pod, config).await }
        }))
        .await;
        ids.extend(made);
    }
    println!("created {n} containers in {:.1} s", start.elapsed().as_secs_f64());
    (pod.0, ids)
}

/// Removes `ids`, eight at a time (the harness's clean-up, one by one, is slow for thousands).
async fn remove_all(c: &Crustd, ids: &[String]) {
    let rt = c.runtime().await;
    for chunk in ids.chunks(8) {
        futures::future::join_all(chunk.iter().map(|id| {
            let mut rt = rt.clone();
            let container_id = id.clone();
            async move { rt.remove_container(RemoveContainerRequest { container_id }).await }
        }))
        .await
        .into_iter()
        .for_each(|r| drop(r.unwrap()));
    }
}

/// The streamed messages' sizes and the unary list's size, both checked against the other.
async fn stream_and_list_sizes(c: &Crustd, n: usize) -> (Vec<usize>, usize) {
    let mut rt = big_runtime(c).await;
    let unary = rt
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut s = rt
        .stream_containers(StreamContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut sizes = Vec::new();
    let mut streamed = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        use prost::Message;
        sizes.push(m.encoded_len());
        streamed.extend(m.containers);
    }
    assert_eq!(unary.containers.len(), n);
    assert!(sizes.iter().all(|s| *s <= LIMIT), "{sizes:?}");
    assert!(sizes.len() > 1, "{sizes:?}");
    let unary_len = prost::Message::encoded_len(&unary);
    let (unary, streamed) = (
        by_id(unary.containers, |c| c.id.clone()),
        by_id(streamed, |c| c.id.clone()),
    );
    assert_eq!(unary, streamed);
    println!(
        "{n} containers: unary ListContainers {unary_len} bytes; StreamContainers {} messages, {} bytes in all, the largest {}",
        sizes.len(),
        sizes.iter().sum::<usize>(),
        sizes.iter().max().unwrap()
    );
    (sizes, unary_len)
}

#[tokio::test]
async fn a_long_list_streams_in_bounded_messages_and_a_client_may_leave_mid_way() {
    let e = env().await;
    // Some 6 MiB in all: more than the client's flow-control window (so crustd is mid-stream when it
    // leaves), six messages or more.
    let n = 1200;
    let (_pod, ids) = many(&e.c, &e.imgs.busybox.reference, n, 5000).await;
    stream_and_list_sizes(&e.c, n).await;

    // A client that takes one message and leaves.
    let mut rt = big_runtime(&e.c).await;
    for _ in 0..3 {
        let mut s = rt
            .stream_containers(StreamContainersRequest::default())
            .await
            .unwrap()
            .into_inner();
        let first = s.message().await.unwrap().unwrap();
        assert!(!first.containers.is_empty() && first.containers.len() < n);
        drop(s);
    }
    // Nothing held: the records can be written, and the lists answer.
    rt.remove_container(RemoveContainerRequest {
        container_id: ids[0].clone(),
    })
    .await
    .unwrap();
    stream_and_list_sizes(&e.c, n - 1).await;
    remove_all(&e.c, &ids[1..]).await;
}

/// A stream taken slowly is served to its end by a crustd shutting down: it is in flight until its
/// last message, not its headers, and the last messages a client has not read yet (held by the
/// connection after the response body ended) are handed over before crustd exits.
#[tokio::test]
async fn a_stream_taken_across_sigterm_is_served_to_its_end() {
    let mut e = env().await;
    let n = 1200;
    let (_pod, ids) = many(&e.c, &e.imgs.busybox.reference, n, 5000).await;
    let mut rt = big_runtime(&e.c).await;
    let mut s = rt
        .stream_containers(StreamContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut got = s.message().await.unwrap().unwrap().containers.len();
    let pid = nix::unistd::Pid::from_raw(e.c.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    for _ in 0..200 {
        if e.c.log().contains("SIGTERM: shutting down") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(e.c.log().contains("SIGTERM: shutting down"));
    // A slow client (kubelet on a busy node): each message taken well after the one before, so that
    // the last ones, which the connection holds once the response body ended, are taken seconds
    // after that end (crustd once dropped them a second after it).
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let Some(m) = s.message().await.unwrap() else {
            break;
        };
        got += m.containers.len();
    }
    assert_eq!(got, n);
    let status = e.c.terminate().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!e.c.log().contains("requests still in flight"), "{}", e.c.log());
    e.c.restart().await;
    remove_all(&e.c, &ids).await;
}

/// The 5,000-container node of issue 23: its unary list is past gRPC's 16 MiB; streamed, no message
/// is past 1 MiB. Slow (5,000 CreateContainer calls): `cargo test ... -- --ignored`.
#[tokio::test]
#[ignore]
async fn five_thousand_containers_stream_under_a_mebibyte_a_message() {
    let e = env().await;
    let n = 5000;
    let (_pod, ids) = many(&e.c, &e.imgs.busybox.reference, n, 3500).await;
    let (_sizes, unary_len) = stream_and_list_sizes(&e.c, n).await;
    assert!(unary_len > 16 << 20, "{unary_len}");
    // A client with gRPC's default 16 MiB... tonic's is 4 MiB: the unary list is refused at either.
    let err =
        e.c.runtime()
            .await
            .max_decoding_message_size(16 << 20)
            .list_containers(ListContainersRequest::default())
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    remove_all(&e.c, &ids).await;
}
