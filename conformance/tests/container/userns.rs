//! Pods with their own user namespace (`hostUsers: false`): kubelet's mapping, the container's root is
//! uid 0 inside and an unprivileged uid on the host, its rootfs is seen through idmapped mounts (files
//! of the image owned by root inside, writable by the container's root), and the mappings kubelet never
//! sends are refused naming the field.

use super::*;

pub(super) const HOST_ID: u32 = 200_000;

pub(super) fn mapping(container_id: u32, host_id: u32) -> IdMapping {
    IdMapping {
        container_id,
        host_id,
        length: 65536,
    }
}

pub(super) fn userns(mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> NamespaceOption {
    NamespaceOption {
        userns_options: Some(UserNamespace {
            mode: mode as i32,
            uids,
            gids,
        }),
        ..Default::default()
    }
}

pub(super) async fn userns_pod(e: &Env, name: &str, ns: NamespaceOption) -> Result<Pod, tonic::Status> {
    let log_dir = e.c.dir.path().join("logs").join(name);
    let mut config = pod_config(name, &log_dir);
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(ns),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id =
        e.c.runtime()
            .await
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
    Ok(Pod { id, config, log_dir })
}

/// The host uid of a process, from /proc.
fn host_uid(pid: u32) -> u32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_pod_in_its_own_user_namespace_is_root_inside_and_unprivileged_outside() {
    let e = env().await;
    // The start-up probe (an overlay over an idmapped layer) left nothing in crustd's root.
    let left: Vec<_> = std::fs::read_dir(&e.c.root)
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("userns-probe"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let st =
        e.c.runtime()
            .await
            .status(StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    assert!(
        st.runtime_handlers
            .iter()
            .all(|h| h.features.as_ref().unwrap().user_namespaces),
        "user namespaces are probed and reported: {:?}",
        st.runtime_handlers
    );
    let ns = userns(
        NamespaceMode::Pod,
        vec![mapping(0, HOST_ID)],
        vec![mapping(0, HOST_ID)],
    );
    let p = userns_pod(&e, "userns", ns.clone()).await.unwrap();
    // A volume kubelet asks to be idmapped (a root-owned 0600 file, as a secret's), and one it does not.
    let vol = e.c.dir.path().join("volume");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("secret"), "s3cret\n").unwrap();
    std::fs::set_permissions(
        vol.join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let plain = e.c.dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let mut cfg = ctr(
        "probe",
        &e.imgs.busybox.reference,
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map; id -u; stat -c %u /bin/busybox; echo written > /etc/by-root && cat /etc/by-root; \
             stat -c %u /vol/secret; cat /vol/secret; echo mine > /vol/new; stat -c %u /plain; echo done; sleep 60",
        ],
    );
    cfg.mounts = vec![
        Mount {
            container_path: "/vol".into(),
            host_path: vol.display().to_string(),
            uid_mappings: vec![mapping(0, HOST_ID)],
            gid_mappings: vec![mapping(0, HOST_ID)],
            ..Default::default()
        },
        Mount {
            container_path: "/plain".into(),
            host_path: plain.display().to_string(),
            ..Default::default()
        },
    ];
    sc(&mut cfg).namespace_options = Some(ns);
    let id = run(&e, &p, cfg).await;
    let log = format!("{}/probe/0.log", p.log_dir.display());
    wait_for_log(&log, "done").await;
    let out = stdout_text(&log);
    let lines: Vec<&str> = out.lines().collect();
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map, ["0", &HOST_ID.to_string(), "65536"], "{out}");
    assert_eq!(lines[1], "0", "root inside: {out}");
    assert_eq!(
        lines[2], "0",
        "the image's files are root's inside (idmapped): {out}"
    );
    assert_eq!(
        lines[3], "written",
        "the container's root writes its rootfs: {out}"
    );
    // Outside, the same process is an unprivileged uid.
    let pid = container_info(&e, &id).await["pid"].as_u64().unwrap() as u32;
    assert_eq!(host_uid(pid), HOST_ID);
    // The pause is in the same user namespace, and so is the pod's netns.
    let pod_status =
        e.c.runtime()
            .await
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: p.id.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
    let info: serde_json::Value = serde_json::from_str(&pod_status.info["info"]).unwrap();
    let pause = info["pid"].as_u64().unwrap();
    let ns_of = |pid: u64, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    assert_eq!(ns_of(pause, "user"), ns_of(pid as u64, "user"));
    assert_eq!(ns_of(pause, "ipc"), ns_of(pid as u64, "ipc"));
    assert_ne!(ns_of(pause, "user"), ns_of(std::process::id() as u64, "user"));
    let opts = pod_status
        .status
        .unwrap()
        .linux
        .unwrap()
        .namespaces
        .unwrap()
        .options
        .unwrap();
    assert_eq!(opts.userns_options.unwrap().uids, vec![mapping(0, HOST_ID)]);
    // Written through the idmapped writable layer: root's on disk, as in the container.
    let upper = e.c.root.join("containers").join(&id).join("upper/etc/by-root");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&upper).unwrap()),
        0
    );

    stop(&e, &id, 0).await.unwrap();
    remove(&e, &id).await.unwrap();
    stop_and_remove_pod(&e, &p.id).await;
    let pins: Vec<_> = std::fs::read_dir(e.c.state.join("userns")).unwrap().collect();
    assert!(pins.is_empty(), "the user namespace pin is removed: {pins:?}");
}

#[tokio::test]
async fn user_namespace_options_kubelet_never_sends_are_refused() {
    let e = env().await;
    let two = vec![mapping(0, HOST_ID), mapping(0, HOST_ID + 65536)];
    for (what, ns) in [
        ("two mappings", userns(NamespaceMode::Pod, two.clone(), two)),
        (
            "id 0 unmapped",
            userns(
                NamespaceMode::Pod,
                vec![mapping(1, HOST_ID)],
                vec![mapping(1, HOST_ID)],
            ),
        ),
        ("CONTAINER", userns(NamespaceMode::Container, vec![], vec![])),
        ("TARGET", userns(NamespaceMode::Target, vec![], vec![])),
    ] {
        let err = userns_pod(&e, "refused", ns)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
        assert!(
            err.message().contains("userns_options"),
            "{what}: {}",
            err.message()
        );
    }
    // NODE is the host's user namespace.
    let p = userns_pod(&e, "node", userns(NamespaceMode::Node, vec![], vec![]))
        .await
        .unwrap();
    let id = run(
        &e,
        &p,
        ctr("node", &e.imgs.busybox.reference, &["cat", "/proc/self/uid_map"]),
    )
    .await;
    let s = wait_exited(&e, &id).await;
    let host = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    assert_eq!(
        stdout_text(&s.log_path).split_whitespace().collect::<Vec<_>>(),
        host.split_whitespace().collect::<Vec<_>>()
    );
}

/// A state dir under a directory closed to others (mode 0700): a pod's user namespace root, an
/// unprivileged uid on the host, could not reach a container's rootfs there, so the start-up probe,
/// which mounts its rootfs where containers' go and reaches it as that uid, says user namespaces are
/// unsupported, `crictl info` says why, and such a pod is refused at once (not failed at start).
#[tokio::test]
async fn a_state_dir_others_cannot_reach_makes_user_namespaces_unsupported_and_says_why() {
    let closed = tempfile::Builder::new()
        .prefix("crust-closed-")
        .tempdir_in("/run")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = closed.path().join("state");
    let e = env_with(&format!("state = {:?}\n", state.display().to_string())).await;
    let st =
        e.c.runtime()
            .await
            .status(StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
    assert!(
        st.runtime_handlers
            .iter()
            .all(|h| !h.features.as_ref().unwrap().user_namespaces),
        "{:?}",
        st.runtime_handlers
    );
    let info: serde_json::Value = serde_json::from_str(&st.info["userNamespaces"]).unwrap();
    assert_eq!(info["supported"], false, "{info}");
    let why = info["reason"].as_str().unwrap();
    assert!(
        why.contains("cannot reach") && why.contains(&state.display().to_string()),
        "{why}"
    );
    let err = userns_pod(
        &e,
        "closed",
        userns(
            NamespaceMode::Pod,
            vec![mapping(0, HOST_ID)],
            vec![mapping(0, HOST_ID)],
        ),
    )
    .await
    .err()
    .expect("a user-namespaced pod accepted");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("cannot reach"), "{}", err.message());
    let left: Vec<_> = std::fs::read_dir(state.join("containers"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the probe's mountpoint is removed: {left:?}");
}
