//! Fault scenarios: the runtime's kill, delete and update, and the monitor's launch of a pause (see
//! runtime.rs for the wrappers and the checks).

use super::*;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill() {
    let e = Env::new().await;
    for (name, mode) in [
        ("runtime-hang-kill", "hang kill"),
        ("runtime-fail-kill", "fail kill"),
    ] {
        scenario_async(name, async {
            e.set(mode);
            let (pod, _pc, id) = e.pod_and_container(name).await;
            crate::start(&e.c, &id).await.unwrap();
            // `sleep` as its PID namespace's init ignores SIGTERM: the grace period ends in SIGKILL.
            e.c.runtime()
                .await
                .stop_container(StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 1,
                })
                .await
                .unwrap();
            let (st, _) = crate::container_state(&e.c, &id).await;
            assert_eq!(st, ContainerState::ContainerExited);
            assert!(e.hung_pids().is_empty(), "StopContainer called `runtime kill`");
            e.remove_all(&pod, &id).await;
            e.clear();
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete() {
    let e = Env::new().await;
    scenario_async("runtime-hang-delete", async {
        e.set("hang delete");
        let (pod, _pc, id) = e.pod_and_container("hang-delete").await;
        crate::start(&e.c, &id).await.unwrap();
        // StopContainer's delete (once the container has exited) hangs: the stop still succeeds
        // within the bound, the delete being left to RemoveContainer.
        let mut rt = e.c.runtime().await;
        let cid = id.clone();
        let call = tokio::spawn(async move {
            rt.stop_container(StopContainerRequest {
                container_id: cid,
                timeout: 0,
            })
            .await
        });
        e.wait_hung(1, "delete (StopContainer)").await;
        e.others_proceed(&call, Some(&id)).await;
        answer(call).await.unwrap();
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerExited);
        // RemoveContainer's forced delete hangs: DEADLINE_EXCEEDED naming it; the container stays,
        // exited, for kubelet to remove again.
        assert_error(
            bounded(crate::remove(&e.c, &id)).await,
            tonic::Code::DeadlineExceeded,
            &["runtime delete", BOUND_KEY],
        );
        e.assert_hung_gone("RemoveContainer").await;
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerExited);
        e.clear();
        e.remove_all(&pod, &id).await;
    })
    .await;
    scenario_async("runtime-fail-delete", async {
        e.set("fail delete");
        let (pod, _pc, id) = e.pod_and_container("fail-delete").await;
        crate::start(&e.c, &id).await.unwrap();
        e.c.runtime()
            .await
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .unwrap();
        assert_error(
            crate::remove(&e.c, &id).await,
            tonic::Code::Internal,
            &["runtime delete", "injected failure of runc delete"],
        );
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerExited);
        e.clear();
        e.remove_all(&pod, &id).await;
    })
    .await;
}

fn update_request(id: &str) -> UpdateContainerResourcesRequest {
    UpdateContainerResourcesRequest {
        container_id: id.into(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update() {
    let e = Env::new().await;
    scenario_async("runtime-hang-update", async {
        e.set("hang update");
        let (pod, _pc, id) = e.pod_and_container("hang-update").await;
        crate::start(&e.c, &id).await.unwrap();
        let mut rt = e.c.runtime().await;
        let req = update_request(&id);
        let call = tokio::spawn(async move { rt.update_container_resources(req).await });
        e.wait_hung(1, "update").await;
        e.others_proceed(&call, Some(&id)).await;
        assert_error(
            answer(call).await,
            tonic::Code::DeadlineExceeded,
            &["runtime update", BOUND_KEY],
        );
        e.assert_hung_gone("UpdateContainerResources").await;
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerRunning);
        e.clear();
        e.c.runtime()
            .await
            .update_container_resources(update_request(&id))
            .await
            .unwrap();
        e.remove_all(&pod, &id).await;
    })
    .await;
    scenario_async("runtime-fail-update", async {
        e.set("fail update");
        let (pod, _pc, id) = e.pod_and_container("fail-update").await;
        crate::start(&e.c, &id).await.unwrap();
        assert_error(
            e.c.runtime()
                .await
                .update_container_resources(update_request(&id))
                .await,
            tonic::Code::Internal,
            &["runtime update", "injected failure of runc update"],
        );
        let (st, _) = crate::container_state(&e.c, &id).await;
        assert_eq!(st, ContainerState::ContainerRunning);
        e.clear();
        e.remove_all(&pod, &id).await;
    })
    .await;
}

/// After a failed RunPodSandbox (pod `name`), with no other pod up: the pod is not listed, and no pod,
/// network namespace or pod cgroup under the test's parent is left.
async fn assert_failed_pod_left_nothing(e: &Env, name: &str) {
    let pods: Vec<PodSandbox> = crate::pods(&e.c).await;
    assert!(
        pods.iter()
            .all(|p| p.metadata.as_ref().is_none_or(|m| m.name != name)),
        "the failed pod {name} is listed: {pods:?}"
    );
    assert!(pods.is_empty(), "pods left: {pods:?}");
    let netns = entries(&e.c.state.join("netns"));
    assert!(netns.is_empty(), "netns left: {netns:?}");
    let below: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|h| entries(&h.path().join(&e.c.cgroup_parent)))
        .filter(|p| p.is_dir())
        .collect();
    assert!(below.is_empty(), "pod cgroups left: {below:?}");
    e.assert_nothing_left(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_start() {
    let e = Env::new().await;
    scenario_async("runtime-hang-pause-start", async {
        e.set("hang pause");
        let pc = crate::pod_config("hang-pause", &e.c.dir.path().join("logs").join("hang-pause"));
        let mut rt = e.c.runtime().await;
        let call = tokio::spawn(async move {
            rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pc),
                runtime_handler: "fault".into(),
            })
            .await
        });
        e.wait_hung(1, "the pause launch").await;
        e.others_proceed(&call, None).await;
        assert_error(
            answer(call).await,
            tonic::Code::DeadlineExceeded,
            &["pause", BOUND_KEY],
        );
        e.assert_hung_gone("RunPodSandbox").await;
        e.clear();
        assert_failed_pod_left_nothing(&e, "hang-pause").await;
    })
    .await;
    scenario_async("runtime-hang-pause-start-abandoned", async {
        // The caller's deadline passes while the wrapper around the monitor hangs, before any monitor
        // runs: the wrapper and its child are killed at the bound all the same, and the pod is rolled
        // back.
        e.set("hang pause");
        let pc = crate::pod_config("gone-pause", &e.c.dir.path().join("logs").join("gone-pause"));
        let mut req = tonic::Request::new(RunPodSandboxRequest {
            config: Some(pc),
            runtime_handler: "fault".into(),
        });
        req.set_timeout(Duration::from_secs(2));
        assert_abandoned(e.c.runtime().await.run_pod_sandbox(req).await);
        e.assert_hung_gone("the abandoned RunPodSandbox").await;
        e.clear();
        // The creation goes on in a task of its own: it fails at the bound and rolls back.
        let mut left = Vec::new();
        for _ in 0..100 {
            left = crate::pods(&e.c).await;
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(left.is_empty(), "the abandoned pod is not rolled back: {left:?}");
        assert_failed_pod_left_nothing(&e, "gone-pause").await;
    })
    .await;
    scenario_async("runtime-fail-pause-start", async {
        e.set("fail pause");
        let pc = crate::pod_config("fail-pause", &e.c.dir.path().join("logs").join("fail-pause"));
        let r =
            e.c.runtime()
                .await
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pc),
                    runtime_handler: "fault".into(),
                })
                .await;
        assert_error(r, tonic::Code::Internal, &["pause", "monitor"]);
        e.clear();
        assert_failed_pod_left_nothing(&e, "fail-pause").await;
    })
    .await;
}
