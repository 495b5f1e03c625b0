//! Host safety, tried from outside: a host user cannot read a container's files, rootfs or bundle; the
//! pod record, not the request's copy of the sandbox config, decides privilege; a TARGET PID namespace
//! is a container of the same pod; containers get their own rlimits, not crustd's; a log path stays in
//! the pod's log directory and a symlink planted there is not followed.

use std::process::Command;

use super::*;

/// Runs `cat path` as the host user nobody; its stderr when refused, `None` when it could read.
fn read_as_nobody(path: &Path) -> Option<String> {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(path)
        .output()
        .expect("setpriv (util-linux)");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn a_host_user_cannot_read_a_containers_files_or_bundle() {
    let e = env().await;
    let p = pod(&e, "private").await;
    let mut cfg = ctr(
        "private",
        &e.imgs.busybox.reference,
        &[
            "sh",
            "-c",
            "echo top-secret > /secret; chmod 644 /secret; sleep 60",
        ],
    );
    cfg.envs = vec![KeyValue {
        key: "API_TOKEN".into(),
        value: "hunter2".into(),
    }];
    let id = run(&e, &p, cfg).await;
    let upper = e.c.root.join("containers").join(&id).join("upper/secret");
    let rootfs = e.c.state.join("containers").join(&id).join("rootfs/secret");
    for _ in 0..100 {
        if upper.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&upper).unwrap(),
        "top-secret\n",
        "root reads it"
    );
    let bundle = e.c.state.join("containers").join(&id).join("config.json");
    assert!(std::fs::read_to_string(&bundle).unwrap().contains("hunter2"));
    let record = e.c.root.join("containers").join(format!("{id}.json"));
    for path in [&upper, &rootfs, &bundle, &record] {
        let err = read_as_nobody(path).unwrap_or_else(|| panic!("nobody read {}", path.display()));
        assert!(err.contains("Permission denied"), "{}: {err}", path.display());
    }
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777
    };
    assert_eq!(mode(&bundle), 0o600);
    assert_eq!(mode(&e.c.root), 0o700);
    assert_eq!(mode(&e.c.state), 0o711);
}

#[tokio::test]
async fn the_pod_record_decides_privilege_not_the_requests_sandbox_config() {
    let e = env().await;
    let p = pod(&e, "unprivileged").await;
    let mut cfg = ctr("escalate", &e.imgs.busybox.reference, &["true"]);
    sc(&mut cfg).privileged = true;
    // The request claims the pod is privileged; the pod was made without.
    let mut lying = p.config.clone();
    lying.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let err =
        e.c.runtime()
            .await
            .create_container(CreateContainerRequest {
                pod_sandbox_id: p.id.clone(),
                config: Some(cfg),
                sandbox_config: Some(lying),
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("privileged"), "{}", err.message());
}

#[tokio::test]
async fn a_target_pid_namespace_must_be_a_container_of_the_same_pod() {
    let e = env().await;
    let a = pod(&e, "pod-a").await;
    let b = pod(&e, "pod-b").await;
    let target = run(&e, &a, ctr("target", &e.imgs.busybox.reference, &["sleep", "60"])).await;
    let mut cfg = ctr("joiner", &e.imgs.busybox.reference, &["true"]);
    sc(&mut cfg).namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Target as i32,
        target_id: target.clone(),
        ..Default::default()
    });
    let err = create(&e, &b, cfg.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains("target_id"), "{}", err.message());
    // In its own pod it joins; once the target is gone, the start is refused.
    let id = create(&e, &a, cfg).await.unwrap();
    stop(&e, &target, 0).await.unwrap();
    let err = start(&e, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("TARGET"), "{}", err.message());
}

#[tokio::test]
async fn containers_get_their_own_rlimits_and_logs_stay_in_the_pod_log_directory() {
    let e = env().await;
    let p = pod(&e, "limits").await;
    let mut cfg = ctr(
        "limits",
        &e.imgs.busybox.reference,
        &["sh", "-c", "ulimit -n; ulimit -Hn"],
    );
    cfg.log_path = "/etc/limits.log".into(); // absolute: still inside the pod's log directory
    let id = run(&e, &p, cfg).await;
    let s = wait_exited(&e, &id).await;
    assert_eq!(s.log_path, p.log_dir.join("etc/limits.log").display().to_string());
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) };
    let hard = own.rlim_max.min(524_288);
    assert_eq!(stdout_text(&s.log_path), format!("{}\n{hard}\n", hard.min(1024)));
    // A symlink planted where a log goes is not followed: the start fails, the target is untouched.
    let victim = e.c.dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::fs::create_dir_all(p.log_dir.join("planted")).unwrap();
    std::os::unix::fs::symlink(&victim, p.log_dir.join("planted/0.log")).unwrap();
    let mut cfg = ctr("planted", &e.imgs.busybox.reference, &["echo", "overwrite"]);
    cfg.log_path = "planted/0.log".into();
    let id = create(&e, &p, cfg).await.unwrap();
    assert!(start(&e, &id).await.is_err(), "a symlinked log path is refused");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
}

#[tokio::test]
async fn a_runtime_error_larger_than_a_pipe_fails_the_start_instead_of_hanging_it() {
    let e = env().await;
    let p = pod(&e, "bigerror").await;
    // runc quotes the missing executable in its error, on the container's stderr pipe: 100 KB, more
    // than a pipe holds. The monitor reads the pipes while it waits for runc.
    let name = "x".repeat(100_000);
    let id = create(&e, &p, ctr("bigerror", &e.imgs.busybox.reference, &[&name]))
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), start(&e, &id))
        .await
        .expect("StartContainer hung")
        .unwrap_err();
    // The message quotes the name, so it is cut to its bound; the runtime's failure leads it.
    assert!(
        err.message().contains("runc run failed"),
        "{}",
        &err.message()[..300.min(err.message().len())]
    );
    assert!(err.message().len() < 5000);
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(status(&e, &id).await.reason, "StartError");
}
