//! Request validation, listing and filters, UpdateContainerResources, stats and ReopenContainerLog.

use super::*;

#[tokio::test]
async fn validation_lists_updates_stats_and_reopen() {
    let e = env().await;
    let p = pod(&e, "misc").await;
    let bb = e.imgs.busybox.reference.clone();

    let mut bad = p.config.clone();
    bad.metadata.as_mut().unwrap().name = "other".into();
    let ghost = Pod {
        id: "nonexistent".into(),
        config: bad,
        log_dir: p.log_dir.clone(),
    };
    assert_eq!(
        create(&e, &ghost, ctr("x", &bb, &["true"]))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let err = create(&e, &p, ctr("", &bb, &["true"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("config.metadata.name"), "{err:?}");
    let err = create(&e, &p, ctr("x", "127.0.0.1:1/not/pulled:1", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // As in containerd, the runtime sees the container at start: a process it cannot run fails the
    // start, the container shows EXITED with reason StartError, and nothing of it runs.
    let bad = create(&e, &p, ctr("bad", &bb, &["/no/such/binary"]))
        .await
        .unwrap();
    assert_eq!(
        status(&e, &bad).await.state,
        ContainerState::ContainerCreated as i32
    );
    let err = start(&e, &bad).await.unwrap_err();
    assert!(err.message().contains("/no/such/binary"), "{err:?}");
    let st = status(&e, &bad).await;
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::ContainerExited as i32, 128, "StartError"),
        "{st:?}"
    );
    assert!(st.message.contains("/no/such/binary"), "{st:?}");
    assert!(
        !e.c.state
            .join("containers")
            .join(&bad)
            .join("monitor.pid")
            .exists(),
        "a monitor is left after a failed start"
    );
    assert_eq!(
        start(&e, &bad).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Removing it leaves nothing behind, and its name can be used again.
    remove(&e, &bad).await.unwrap();
    for dir in [e.c.root.join("containers"), e.c.state.join("containers")] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|x| x.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&e.c.state.join("containers").display().to_string()),
        "{mounts}"
    );
    let bad = create(&e, &p, ctr("bad", &bb, &["true"])).await.unwrap();
    remove(&e, &bad).await.unwrap();

    // Two creates of one name at once (a kubelet retry): one container; the retry gets its ID (or, when
    // the first had finished already, AlreadyExists).
    let (a, b) = tokio::join!(
        create(&e, &p, ctr("twin", &bb, &["true"])),
        create(&e, &p, ctr("twin", &bb, &["true"]))
    );
    let twin = match (a, b) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            a
        }
        (Ok(x), Err(err)) | (Err(err), Ok(x)) => {
            assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
            x
        }
        (Err(a), Err(b)) => panic!("{a:?} {b:?}"),
    };
    remove(&e, &twin).await.unwrap();

    let id = create(&e, &p, ctr("web", &bb, &["sleep", "1000"])).await.unwrap();
    assert_eq!(
        status(&e, &id).await.state,
        ContainerState::ContainerCreated as i32
    );
    let err = create(&e, &p, ctr("web", &bb, &["sleep", "1000"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("web"), "{err:?}");
    // An update before the start reaches the container when it starts.
    e.c.runtime()
        .await
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 48 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    start(&e, &id).await.unwrap();
    assert_eq!(start(&e, &id).await.unwrap_err().code(), Code::FailedPrecondition);
    if Path::new("/sys/fs/cgroup/memory").exists() {
        let cg = format!(
            "/sys/fs/cgroup/memory/{}/{id}/memory.limit_in_bytes",
            p_cgroup(&e, &id).await
        );
        assert_eq!(
            std::fs::read_to_string(&cg).unwrap().trim(),
            (48u64 << 20).to_string()
        );
    }
    let other = run(&e, &p, ctr("batch", &bb, &["true"])).await;
    wait_exited(&e, &other).await;

    let list = |f: ContainerFilter| {
        let c = &e.c;
        async move {
            let mut ids: Vec<String> = c
                .runtime()
                .await
                .list_containers(ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![id.clone(), other.clone()];
    both.sort();
    assert_eq!(
        list(ContainerFilter {
            pod_sandbox_id: p.id.clone(),
            ..Default::default()
        })
        .await,
        both
    );
    assert_eq!(
        list(ContainerFilter {
            id: id[..12].into(),
            ..Default::default()
        })
        .await,
        vec![id.clone()]
    );
    let running = Some(ContainerStateValue {
        state: ContainerState::ContainerRunning as i32,
    });
    assert_eq!(
        list(ContainerFilter {
            state: running,
            ..Default::default()
        })
        .await,
        vec![id.clone()]
    );
    let sel = [("name".to_string(), "batch".to_string())].into();
    assert_eq!(
        list(ContainerFilter {
            label_selector: sel,
            ..Default::default()
        })
        .await,
        vec![other.clone()]
    );

    let mut rt = e.c.runtime().await;
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let res = status(&e, &id).await.resources.unwrap().linux.unwrap();
    assert_eq!((res.memory_limit_in_bytes, res.cpu_shares), (64 << 20, 512));
    let cg = format!(
        "/sys/fs/cgroup/memory/{}/{id}/memory.limit_in_bytes",
        p_cgroup(&e, &id).await
    );
    if Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(
            std::fs::read_to_string(&cg).unwrap().trim(),
            (64u64 << 20).to_string()
        );
    }

    exec(&e, &id, &["sh", "-c", "head -c 100000 /dev/zero > /tmp/blob"], 10)
        .await
        .unwrap();
    let stats = rt
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
    let wl = stats.writable_layer.unwrap();
    assert!(
        wl.used_bytes.unwrap().value >= 100000 && wl.inodes_used.unwrap().value >= 2,
        "{wl:?}"
    );
    let all = rt
        .list_container_stats(ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(all.iter().any(|s| s.attributes.as_ref().unwrap().id == id));

    let log = p.log_dir.join("web/0.log");
    std::fs::rename(&log, p.log_dir.join("web/0.log.1")).unwrap();
    rt.reopen_container_log(ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(log.exists(), "reopen made a new log file");

    let v = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&v.info["info"]).unwrap();
    assert!(info["pid"].as_u64().unwrap() > 0);
    assert_eq!(info["runtimeSpec"]["process"]["args"][0], "sleep");
}

async fn p_cgroup(e: &Env, id: &str) -> String {
    let info = container_info(e, id).await;
    let cg = info["cgroup"].as_str().unwrap().to_string();
    cg.rsplit_once('/').unwrap().0.to_string()
}

/// Resources runc could never apply are refused where they are given (CreateContainer,
/// UpdateContainerResources, RunPodSandbox) with InvalidArgument naming the field, instead of failing
/// the start or the update inside runc; what kubelet sends is taken, and nothing of a refused create
/// is left.
#[tokio::test]
async fn resources_runc_cannot_apply_are_refused_naming_the_field() {
    let e = env().await;
    let p = pod(&e, "limits").await;
    let bb = e.imgs.busybox.reference.clone();
    let with = |r: LinuxContainerResources| {
        let mut c = ctr("limited", &bb, &["sleep", "1000"]);
        c.linux.get_or_insert_with(Default::default).resources = Some(r);
        c
    };
    let bad = [
        (
            LinuxContainerResources {
                cpuset_cpus: "any string".into(),
                ..Default::default()
            },
            "cpuset_cpus",
        ),
        (
            LinuxContainerResources {
                cpuset_cpus: "99999".into(),
                ..Default::default()
            },
            "cpuset_cpus",
        ),
        (
            LinuxContainerResources {
                cpuset_mems: "0-".into(),
                ..Default::default()
            },
            "cpuset_mems",
        ),
        (
            LinuxContainerResources {
                cpu_period: 10,
                ..Default::default()
            },
            "cpu_period",
        ),
        (
            LinuxContainerResources {
                cpu_quota: 500,
                ..Default::default()
            },
            "cpu_quota",
        ),
        (
            LinuxContainerResources {
                cpu_shares: 1 << 20,
                ..Default::default()
            },
            "cpu_shares",
        ),
        (
            LinuxContainerResources {
                oom_score_adj: -1001,
                ..Default::default()
            },
            "oom_score_adj",
        ),
        (
            LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "huge".into(),
                    limit: 1 << 21,
                }],
                ..Default::default()
            },
            "hugepage_limits[0].page_size",
        ),
    ];
    for (r, name) in &bad {
        let err = create(&e, &p, with(r.clone())).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        let want = format!("config.linux.resources.{name}");
        assert!(err.message().contains(&want), "{want}: {err:?}");
    }
    let listed =
        e.c.runtime()
            .await
            .list_containers(ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert!(listed.is_empty(), "a refused create left a container: {listed:?}");
    for dir in [e.c.root.join("containers"), e.c.state.join("containers")] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|x| x.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
    }

    // What kubelet sends starts: a CPU list in the kernel's syntax, quota and period in bounds.
    let id = create(
        &e,
        &p,
        with(LinuxContainerResources {
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    start(&e, &id).await.unwrap();
    let mut rt = e.c.runtime().await;
    for (r, name) in bad {
        let err = rt
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(r),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains(&format!("linux.{name}")), "{err:?}");
    }
    rt.update_container_resources(UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            cpuset_cpus: "0".into(),
            cpu_quota: -1,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        status(&e, &id).await.state,
        ContainerState::ContainerRunning as i32
    );

    // The pod's overhead and resources, at RunPodSandbox.
    let mut cfg = pod_config("limits-pod", &p.log_dir);
    cfg.linux = Some(LinuxPodSandboxConfig {
        overhead: Some(LinuxContainerResources {
            cpu_shares: 1,
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("config.linux.overhead.cpu_shares"),
        "{err:?}"
    );
    stop(&e, &id, 0).await.unwrap();
    remove(&e, &id).await.unwrap();
    stop_and_remove_pod(&e, &p.id).await;
}
