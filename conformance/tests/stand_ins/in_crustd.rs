//! The stand-ins through crustd: pulled by their upstream references through mirrors, and run in real
//! pods.

use super::*;

/// crustd, with mirrors for the upstream registries (k8s.gcr.io too) and fallback off, pulls every
/// stand-in by its upstream reference and reports what critest's image specs check.
#[tokio::test]
async fn crustd_pulls_every_stand_in_through_its_mirrors() {
    use cri_api::v1::{ImageSpec, ImageStatusRequest, PullImageRequest};
    let reg = Registry::start();
    let all = standins::push_all(&reg, harness::pause_binary().as_deref());
    let extra = format!(
        "[registry.mirrors.\"k8s.gcr.io\"]\nendpoint = [{:?}]\nfallback_to_upstream = false\n",
        reg.url()
    );
    let crustd = harness::Crustd::start(harness::CrustdOptions {
        registry: Some(&reg),
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    let mut images = crustd.images().await;
    let spec = |r: &str| {
        Some(ImageSpec {
            image: r.to_string(),
            ..Default::default()
        })
    };
    let mut ids = std::collections::HashMap::new();
    for s in &all {
        for u in &s.upstream {
            let pulled = images
                .pull_image(PullImageRequest {
                    image: spec(u),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("pull {u}: {e}"))
                .into_inner();
            assert_eq!(
                pulled.image_ref, s.id,
                "{u}: the image ID is the host platform's config digest"
            );
            let st = images
                .image_status(ImageStatusRequest {
                    image: spec(u),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .image
                .unwrap_or_else(|| panic!("{u} has no status after its pull"));
            assert!(st.repo_tags.contains(u), "{u}: {:?}", st.repo_tags);
            ids.insert(u.clone(), st);
        }
    }
    // What critest's "image status get image fields should not have Uid|Username empty" spec wants.
    let cri = "gcr.io/k8s-staging-cri-tools";
    for (name, uid, username) in [
        ("test-image-user-uid", Some(1002), ""),
        ("test-image-user-username", None, "www-data"),
        ("test-image-user-uid-group", Some(1003), ""),
        ("test-image-user-username-group", None, "www-data"),
    ] {
        let st = &ids[&format!("{cri}/{name}:latest")];
        assert_eq!(
            st.uid.as_ref().map(|v| v.value).unwrap_or(0),
            uid.unwrap_or(0),
            "{name}"
        );
        assert_eq!(st.username, username, "{name}");
    }
    assert_eq!(
        ids["registry.k8s.io/pause:3.9"].id,
        ids["k8s.gcr.io/pause:3.9"].id
    );
    // Three tags of one image: one image with the three tags (status asked after all three pulls).
    let tags = images
        .image_status(ImageStatusRequest {
            image: spec(&format!("{cri}/test-image-tags:1")),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    let mut repo_tags = tags.repo_tags.clone();
    repo_tags.sort();
    assert_eq!(
        repo_tags,
        (1..=3)
            .map(|i| format!("{cri}/test-image-tags:{i}"))
            .collect::<Vec<_>>()
    );
}

/// In real pods of crustd (runc, CNI): the nginx stand-in serves HTTP on the pod IP and `pidof nginx`
/// finds the PID in /var/run/nginx.pid; ipcs, id, pgrep, pkill and printenv work in the busybox stand-in,
/// also with /bin/ls masked; nnp runs setuid-root unless NoNewPrivs.
#[tokio::test]
async fn the_stand_ins_work_in_pods() {
    use cri_api::v1::*;
    let reg = Registry::start();
    let all = standins::push_all(&reg, harness::pause_binary().as_deref());
    let crustd = harness::Crustd::start(harness::CrustdOptions {
        registry: Some(&reg),
        cni: true,
        ..Default::default()
    })
    .await;
    let mut rt = crustd.runtime().await;
    for s in &all {
        crustd.pull(&s.upstream[0]).await;
    }
    let log_dir = crustd.dir.path().join("logs");
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "standins".into(),
            uid: "uid-standins".into(),
            namespace: "crust-test".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let start = |image: &str, name: &str, command: Vec<String>, sc: Option<LinuxContainerSecurityContext>| {
        let mut rt = rt.clone();
        let (pod, config, image, name) = (pod.clone(), config.clone(), image.to_string(), name.to_string());
        async move {
            let id = rt
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod,
                    config: Some(ContainerConfig {
                        metadata: Some(ContainerMetadata {
                            name: name.clone(),
                            attempt: 0,
                        }),
                        image: Some(ImageSpec {
                            image,
                            ..Default::default()
                        }),
                        command,
                        log_path: format!("{name}.log"),
                        linux: Some(LinuxContainerConfig {
                            security_context: sc,
                            ..Default::default()
                        }),
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
            id
        }
    };
    let exec = |id: String, cmd: &[&str]| {
        let mut rt = rt.clone();
        let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        async move {
            let r = rt
                .exec_sync(ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
            String::from_utf8_lossy(&r.stdout).into_owned()
        }
    };

    let nginx = start(
        "registry.k8s.io/e2e-test-images/nginx:1.14-2",
        "nginx",
        vec![],
        None,
    )
    .await;
    let st = rt
        .clone()
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap();
    let ip = st.into_inner().status.unwrap().network.unwrap().ip;
    let page = harness::wait_for(Duration::from_secs(20), || {
        harness::http::request(&format!("{ip}:80"), "GET", "/", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    })
    .expect("the nginx stand-in answers on the pod IP");
    assert!(String::from_utf8_lossy(&page.body).contains("nginx"));
    let pid = exec(
        nginx.clone(),
        &[
            "sh",
            "-c",
            "while [ ! -f /var/run/nginx.pid ]; do sleep 1; done && cat /var/run/nginx.pid",
        ],
    )
    .await;
    let pids = exec(nginx.clone(), &["pidof", "nginx"]).await;
    assert!(
        pids.split_whitespace().any(|p| p == pid.trim()),
        "pidof nginx {pids:?}, pid file {pid:?}"
    );

    let bb = start(
        "registry.k8s.io/e2e-test-images/busybox:1.29-2",
        "busybox",
        vec!["sleep".into(), "1000".into()],
        None,
    )
    .await;
    assert!(
        exec(bb.clone(), &["ipcs", "-m"])
            .await
            .contains("Shared Memory Segments")
    );
    assert_eq!(exec(bb, &["id", "-nu"]).await, "root\n");

    // Like upstream, the applets are hard links to busybox: critest's MaskedPaths spec masks /bin/ls,
    // which with symlinked applets would mask busybox itself (and sleep would not start). The applets
    // critest runs besides: pgrep, pkill, printenv.
    let masked = start(
        "registry.k8s.io/e2e-test-images/busybox:1.29-2",
        "masked",
        vec!["sleep".into(), "1000".into()],
        Some(LinuxContainerSecurityContext {
            masked_paths: vec!["/bin/ls".into()],
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(
        exec(masked.clone(), &["sh", "-c", "wc -c </bin/ls"]).await.trim(),
        "0"
    );
    // (Only this shell's children: the pod's other containers run sleep too.)
    // The background child is `sh` until it has exec'd sleep: look a few times.
    let script = "sleep 300 & p=$!; for i in 1 2 3 4 5 6 7 8 9 10; do \
                  [ \"$(pgrep -P $$ -x sleep)\" = \"$p\" ] && { echo found; break; }; sleep 0.1; done; \
                  pkill -P $$ -x sleep; wait $p; echo $?";
    assert_eq!(exec(masked.clone(), &["sh", "-c", script]).await, "found\n143\n");
    assert!(exec(masked, &["printenv", "PATH"]).await.contains("/bin"));

    if all.iter().any(|s| s.repo == "e2e-test-images/nonewprivs") {
        for (nnp, want) in [(false, "Effective uid: 0\n"), (true, "Effective uid: 1000\n")] {
            let sc = LinuxContainerSecurityContext {
                no_new_privs: nnp,
                run_as_user: Some(Int64Value { value: 1000 }),
                ..Default::default()
            };
            let name = format!("nnp-{nnp}");
            start(
                "registry.k8s.io/e2e-test-images/nonewprivs:1.3",
                &name,
                vec![],
                Some(sc),
            )
            .await;
            let log = log_dir.join(format!("{name}.log"));
            let line = harness::wait_for(Duration::from_secs(20), || {
                std::fs::read_to_string(&log)
                    .ok()
                    .filter(|l| l.contains("Effective uid"))
            })
            .unwrap_or_else(|| panic!("no output of nnp in {}", log.display()));
            assert!(
                line.trim_end().ends_with(want.trim_end()),
                "{line:?} (no_new_privs {nnp})"
            );
        }
    }
    drop(crustd);
}
