//! Container lifecycle: CRI log format, exit codes and reasons (OOM included), stop signals and
//! idempotent stop/remove, containers outliving a killed crustd, and pods taking their containers along.

use super::*;

#[tokio::test]
async fn log_file_is_in_cri_format_with_partial_lines() {
    let e = env().await;
    let p = pod(&e, "logs").await;
    let id = run(
        &e,
        &p,
        ctr(
            "logger",
            &e.imgs.busybox.reference,
            &[
                "sh",
                "-c",
                "echo hello; echo oops >&2; head -c 50000 /dev/zero | tr '\\0' a; echo",
            ],
        ),
    )
    .await;
    let st = wait_exited(&e, &id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"), "{st:?}");
    let log = p.log_dir.join("logger/0.log").display().to_string();
    assert_eq!(st.log_path, log);
    let lines = log_lines(&log);
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "oops".into())),
        "{lines:?}"
    );
    let partial = lines.iter().filter(|(s, t, _)| s == "stdout" && t == "P").count();
    assert!(partial >= 1, "a 50000-byte line must be split into P pieces");
    assert!(stdout_text(&log).contains(&format!("\n{}\n", "a".repeat(50000))));
    let raw = std::fs::read_to_string(&log).unwrap();
    let ts = raw.lines().next().unwrap().split(' ').next().unwrap();
    assert!(
        ts.contains('T') && (ts.ends_with('Z') || ts.contains('+')),
        "RFC 3339 timestamp: {ts}"
    );
}

#[tokio::test]
async fn exit_code_reason_and_oom_kill() {
    let e = env().await;
    let p = pod(&e, "exits").await;
    let id = run(
        &e,
        &p,
        ctr("three", &e.imgs.busybox.reference, &["sh", "-c", "exit 3"]),
    )
    .await;
    // The exit reaches the record on disk without anyone asking (crustd watches the monitor).
    let record = e.c.root.join("containers").join(format!("{id}.json"));
    let shows_exit = || {
        std::fs::read(&record)
            .ok()
            .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
            .is_some_and(|v| v["exited"] == true && v["exit_code"] == 3)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !shows_exit() {
        assert!(
            std::time::Instant::now() < deadline,
            "the record never showed the exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and runc forgets the exited container before any RemoveContainer.
    let runc_state = e.c.state.join("runtime").join("runc").join(&id);
    while runc_state.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "runc still knows the exited container"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = wait_exited(&e, &id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    assert!(st.finished_at >= st.started_at && st.started_at >= st.created_at && st.created_at > 0);

    let mut c = ctr(
        "hog",
        &e.imgs.busybox.reference,
        &[
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tail -c 100000000 >/dev/null",
        ],
    );
    c.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..Default::default()
    });
    let id = run(&e, &p, c).await;
    let st = wait_exited(&e, &id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "OOMKilled"), "{st:?}");
    assert_eq!(
        st.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        16 << 20
    );
}

/// The containers' states in ListContainers with `state` as its filter (none: every container).
async fn listed_states(e: &Env, state: Option<ContainerState>) -> Vec<(String, i32)> {
    let filter = state.map(|s| ContainerFilter {
        state: Some(ContainerStateValue { state: s as i32 }),
        ..Default::default()
    });
    e.c.runtime()
        .await
        .list_containers(ListContainersRequest { filter })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect()
}

/// crustd keeps the list and pod status responses kubelet asks for every second while nothing
/// changes: an exit nobody asked about (crustd's watcher of the monitor records it) shows in the next
/// lists, both the unfiltered one and those by state, and in the pod's status, all kept before it.
#[tokio::test]
async fn lists_show_an_exit_nobody_asked_about() {
    let e = env().await;
    let p = pod(&e, "relisted").await;
    let id = run(
        &e,
        &p,
        ctr("sleeper", &e.imgs.busybox.reference, &["sleep", "600"]),
    )
    .await;
    let (running, exited) = (ContainerState::ContainerRunning, ContainerState::ContainerExited);
    let in_pod_status = || async {
        let st =
            e.c.runtime()
                .await
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: p.id.clone(),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner();
        st.containers_statuses
            .iter()
            .map(|c| (c.id.clone(), c.state))
            .collect::<Vec<_>>()
    };
    for _ in 0..2 {
        assert_eq!(listed_states(&e, None).await, [(id.clone(), running as i32)]);
        assert_eq!(
            listed_states(&e, Some(running)).await,
            [(id.clone(), running as i32)]
        );
        assert_eq!(listed_states(&e, Some(exited)).await, []);
        assert_eq!(in_pod_status().await, [(id.clone(), running as i32)]);
    }
    let pid = container_info(&e, &id).await["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while listed_states(&e, None).await != [(id.clone(), exited as i32)] {
        assert!(
            std::time::Instant::now() < deadline,
            "ListContainers never showed the exit: {:?}",
            listed_states(&e, None).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed_states(&e, Some(running)).await, []);
    assert_eq!(
        listed_states(&e, Some(exited)).await,
        [(id.clone(), exited as i32)]
    );
    assert_eq!(in_pod_status().await, [(id.clone(), exited as i32)]);
    stop_and_remove_pod(&e, &p.id).await;
    assert_eq!(listed_states(&e, None).await, []);
}

#[tokio::test]
async fn stop_signal_comes_before_sigkill_and_stop_remove_are_idempotent() {
    let e = env().await;
    let p = pod(&e, "stops").await;
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done";
    let id = run(
        &e,
        &p,
        ctr("term", &e.imgs.busybox.reference, &["sh", "-c", script]),
    )
    .await;
    let log = p.log_dir.join("term/0.log").display().to_string();
    wait_for_log(&log, "ready").await;
    stop(&e, &id, 30).await.unwrap();
    let st = status(&e, &id).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 7, "the TERM trap ran, no SIGKILL: {st:?}");
    // As in containerd, the runtime has deleted the container by the time StopContainer returns.
    assert!(
        !e.c.state.join("runtime").join("runc").join(&id).exists(),
        "runc still knows the stopped container"
    );
    assert!(stdout_text(&log).contains("got-term"));

    // The image's StopSignal (SIGUSR1 in the configured image) is the one sent.
    let script = "trap 'exit 8' USR1; echo ready; while true; do sleep 0.1; done";
    let mut c = ctr("usr1", &e.imgs.configured.reference, &["/bin/sh", "-c", script]);
    sc(&mut c).run_as_user = Some(Int64Value { value: 0 });
    let id2 = run(&e, &p, c).await;
    wait_for_log(&p.log_dir.join("usr1/0.log").display().to_string(), "ready").await;
    stop(&e, &id2, 30).await.unwrap();
    assert_eq!(status(&e, &id2).await.exit_code, 8);

    // A process ignoring its stop signal is SIGKILLed when the grace period ends.
    let id3 = run(
        &e,
        &p,
        ctr(
            "stubborn",
            &e.imgs.busybox.reference,
            &[
                "sh",
                "-c",
                "trap '' TERM; echo ready; while true; do sleep 0.1; done",
            ],
        ),
    )
    .await;
    // Stopped only once its trap is set (a loaded host may start the shell late).
    wait_for_log(&p.log_dir.join("stubborn/0.log").display().to_string(), "ready").await;
    stop(&e, &id3, 1).await.unwrap();
    assert_eq!(status(&e, &id3).await.exit_code, 137);

    stop(&e, &id, 30).await.unwrap();
    remove(&e, &id).await.unwrap();
    remove(&e, &id).await.unwrap();
    stop(&e, &id, 0).await.unwrap();
    stop(&e, "0123456789abcdef", 0).await.unwrap();
    let err =
        e.c.runtime()
            .await
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(!e.c.state.join("containers").join(&id).exists());
    assert!(!e.c.root.join("containers").join(&id).exists());
    assert!(!e.c.root.join("containers").join(format!("{id}.json")).exists());
}

#[tokio::test]
async fn containers_outlive_crustd() {
    let mut e = env().await;
    let p = pod(&e, "survive").await;
    let trig = e.c.dir.path().join("trigger");
    std::fs::create_dir_all(&trig).unwrap();
    let long = run(&e, &p, ctr("long", &e.imgs.busybox.reference, &["sleep", "1000"])).await;
    let mut c = ctr(
        "later",
        &e.imgs.busybox.reference,
        &["sh", "-c", "while [ ! -e /trig/go ]; do sleep 0.1; done; exit 4"],
    );
    c.mounts = vec![Mount {
        container_path: "/trig".into(),
        host_path: trig.display().to_string(),
        ..Default::default()
    }];
    let later = run(&e, &p, c).await;
    let pid_of = |e: &Env, id: &str| {
        std::fs::read_to_string(e.c.state.join("containers").join(id).join("container.pid")).unwrap()
    };
    let long_pid: i32 = pid_of(&e, &long).trim().parse().unwrap();
    let orphan = run(
        &e,
        &p,
        ctr("orphan", &e.imgs.busybox.reference, &["sleep", "1000"]),
    )
    .await;
    let orphan_pid: i32 = pid_of(&e, &orphan).trim().parse().unwrap();
    let monitor_pid =
        crust::monitor::monitor_pid(&e.c.state.join("containers").join(&orphan)).unwrap() as i32;

    e.c.kill9();
    // A monitor that dies with crustd down leaves no exit file: its container's end is unknown.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::fs::write(trig.join("go"), "").unwrap();
    let exit_file = e.c.state.join("containers").join(&later).join("exit");
    assert!(
        harness::wait_for(Duration::from_secs(30), || exit_file.exists().then_some(())).is_some(),
        "the monitor wrote the exit file while crustd was down"
    );
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(long_pid), None).is_ok(),
        "the container still runs"
    );
    e.c.restart().await;

    let st = status(&e, &long).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    let r = exec(&e, &long, &["echo", "alive"], 10).await.unwrap();
    assert_eq!(r.stdout, b"alive\n");
    let st = status(&e, &later).await;
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::ContainerExited as i32, 4, "Error"),
        "{st:?}"
    );

    let st = status(&e, &orphan).await;
    assert_eq!(
        (st.state, st.reason.as_str()),
        (ContainerState::ContainerExited as i32, "Unknown"),
        "{st:?}"
    );
    remove(&e, &orphan).await.unwrap();
    assert!(
        harness::wait_for(Duration::from_secs(10), || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(orphan_pid), None)
                .is_err()
                .then_some(())
        })
        .is_some(),
        "removal killed the container its monitor left behind"
    );

    // A SIGTERM of crustd leaves containers running too.
    e.c.restart().await;
    assert_eq!(
        status(&e, &long).await.state,
        ContainerState::ContainerRunning as i32
    );
    stop(&e, &long, 0).await.unwrap();
    assert_eq!(status(&e, &long).await.exit_code, 137);
    remove(&e, &long).await.unwrap();
    remove(&e, &later).await.unwrap();
}

#[tokio::test]
async fn pod_stop_and_remove_take_the_containers_along() {
    let e = env().await;
    let p = pod(&e, "along").await;
    let id = run(
        &e,
        &p,
        ctr("inside", &e.imgs.busybox.reference, &["sleep", "1000"]),
    )
    .await;
    let mut rt = e.c.runtime().await;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: p.id.clone(),
    })
    .await
    .unwrap();
    let st = status(&e, &id).await;
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 137),
        "{st:?}"
    );
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: p.id.clone(),
    })
    .await
    .unwrap();
    let err = rt
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(!e.c.root.join("containers").join(format!("{id}.json")).exists());
}

/// Host pids of the running (not zombie) processes whose cgroup path names `id`.
fn processes_in_cgroup_of(id: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let in_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id));
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        });
        if in_cgroup && !zombie {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn stop_kills_what_the_container_left_in_the_pod_pid_namespace() {
    let e = env().await;
    let p = pod(&e, "leftovers").await;
    // PID namespace mode POD (the default): the background sleep outlives the shell, whose exit is
    // the container's.
    let script = "sleep 3600 & trap 'exit 0' TERM; echo ready; wait";
    let id = run(
        &e,
        &p,
        ctr("bg", &e.imgs.busybox.reference, &["sh", "-c", script]),
    )
    .await;
    wait_for_log(&p.log_dir.join("bg/0.log").display().to_string(), "ready").await;
    let before = processes_in_cgroup_of(&id);
    stop(&e, &id, 10).await.unwrap();
    let after = processes_in_cgroup_of(&id);
    let st = status(&e, &id).await;
    assert_eq!(before.len(), 2, "the shell and its sleep: {before:?}");
    assert_eq!(st.exit_code, 0, "the TERM trap ran: {st:?}");
    assert!(
        after.is_empty(),
        "processes of the stopped container still run: {after:?}"
    );
    remove(&e, &id).await.unwrap();
}

/// A container an older crustd created (its monitor ran `runtime create` at CreateContainer) still
/// starts after an upgrade: StartContainer finds its monitor and has the runtime start it.
#[tokio::test]
async fn a_container_created_by_an_older_crustd_starts_after_an_upgrade() {
    let e = env().await;
    let p = pod(&e, "upgrade").await;
    let id = create(&e, &p, ctr("old", &e.imgs.busybox.reference, &["sleep", "1000"]))
        .await
        .unwrap();
    let dir = e.c.state.join("containers").join(&id);
    let m = crust::monitor::spawn(&crust::monitor::MonitorSpec {
        id: id.clone(),
        bundle: dir.clone(),
        runtime_path: "/usr/sbin/runc".into(),
        runtime_root: e.c.state.join("runtime").join("runc"),
        state_dir: dir,
        monitor_path: harness::binary("crust-monitor"),
        ..Default::default()
    })
    .await
    .unwrap();
    start(&e, &id).await.unwrap();
    let st = status(&e, &id).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", m.container_pid)).unwrap();
    assert!(
        cmdline.starts_with(b"sleep\0"),
        "the created process is not what runs: {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    stop(&e, &id, 0).await.unwrap();
    assert_eq!(wait_exited(&e, &id).await.exit_code, 137);
    remove(&e, &id).await.unwrap();
}

/// Started as a Type=notify service (NOTIFY_SOCKET set, as systemd does): crustd says READY=1 on it,
/// keeps it to itself, and containers start. With the variable passed down, `runc run --detach` waited
/// for the container to send READY=1 and StartContainer hung on every systemd node.
#[tokio::test]
async fn under_a_notify_socket_crustd_is_ready_and_containers_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let e = env_with_environment("", vec![("NOTIFY_SOCKET".into(), path.display().to_string())]).await;
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("crustd notified the socket");
    assert_eq!(&buf[..n], b"READY=1");

    let p = pod(&e, "notify").await;
    let id = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        run(&e, &p, ctr("c", &e.imgs.busybox.reference, &["sleep", "1000"])),
    )
    .await
    .expect("the container started");
    let st = status(&e, &id).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32, "{st:?}");
    // crustd's children (here the container's monitor, which runs runc) do not inherit it.
    let monitor = crust::monitor::monitor_pid(&e.c.state.join("containers").join(&id)).unwrap();
    let environ = std::fs::read(format!("/proc/{monitor}/environ")).unwrap();
    assert!(
        !environ
            .split(|b| *b == 0)
            .any(|v| v.starts_with(b"NOTIFY_SOCKET=")),
        "the monitor inherited NOTIFY_SOCKET from crustd"
    );
    let r = exec(&e, &id, &["sh", "-c", "echo ${NOTIFY_SOCKET:-unset}"], 10)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"unset\n");
    stop_and_remove_pod(&e, &p.id).await;
}

/// As in containerd: a StopContainer whose caller gives up (here its deadline passes) during the grace
/// period does not go on to SIGKILL the container; the stop signal was sent and the container runs on
/// until a later StopContainer, with a grace period of its own, ends it.
#[tokio::test]
async fn a_stop_whose_caller_gives_up_does_not_escalate() {
    let e = env().await;
    let p = pod(&e, "giveup").await;
    let script = "trap 'echo got-term' TERM; echo ready; while true; do sleep 0.1; done";
    let id = run(
        &e,
        &p,
        ctr("stubborn", &e.imgs.busybox.reference, &["sh", "-c", script]),
    )
    .await;
    let log = p.log_dir.join("stubborn/0.log").display().to_string();
    wait_for_log(&log, "ready").await;
    // A grace period of 4 s, a caller that waits 2 s: 5 s after the caller gave up, the grace period
    // it asked for is long over, and the container still runs.
    let mut req = tonic::Request::new(StopContainerRequest {
        container_id: id.clone(),
        timeout: 4,
    });
    req.set_timeout(Duration::from_secs(2));
    let err = e.c.runtime().await.stop_container(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    wait_for_log(&log, "got-term").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = status(&e, &id).await;
    assert_eq!(
        st.state,
        ContainerState::ContainerRunning as i32,
        "the container was killed after its stop's caller went away: {st:?}"
    );
    let ps = exec(&e, &id, &["true"], 10).await;
    assert!(ps.is_ok(), "the container no longer runs: {ps:?}");
    // A new stop: a grace period of its own (1 s here), then SIGKILL.
    stop(&e, &id, 1).await.unwrap();
    let st = status(&e, &id).await;
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::ContainerExited as i32, 137),
        "{st:?}"
    );
    remove(&e, &id).await.unwrap();
    stop_and_remove_pod(&e, &p.id).await;
}
