//! Fault scenarios: runtime (see main.rs).

use std::path::Path;
use std::time::Duration;

use cri_api::v1::*;
use harness::{Crustd, CrustdOptions, Registry};

/// A runtime handler `hang`: runc behind a wrapper that, when asked to `verb` (`run`: for a container,
/// not a pause), starts a child and waits for it forever, writing both pids to `dir/hang.pids` first.
fn hanging_runtime(dir: &Path, verb: &str) -> String {
    let script = dir.join("hang-runc");
    let pids = dir.join("hang.pids");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             verb=\nbundle=\nprev=\n\
             for a in \"$@\"; do\n\
               case \"$a\" in run|update) [ -z \"$verb\" ] && verb=$a ;; esac\n\
               [ \"$prev\" = --bundle ] && bundle=$a\n\
               prev=$a\n\
             done\n\
             case \"$verb:$bundle\" in\n\
               {pattern})\n\
                 sleep 3607 &\n\
                 echo \"$$ $!\" >> {pids}\n\
                 wait ;;\n\
             esac\n\
             exec /usr/sbin/runc \"$@\"\n",
            pattern = if verb == "run" {
                "run:*/containers/*"
            } else {
                "update:*"
            },
            pids = pids.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("[runtime.handlers.hang]\npath = \"{}\"\n", script.display())
}

/// The wrapper's and its child's pids, once it hangs.
fn hung_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("hang.pids"))
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Asserts that the hung wrapper and its child are gone within 10 s.
fn assert_hung_runtime_gone(dir: &Path, what: &str) {
    let pids = hung_pids(dir);
    assert_eq!(pids.len(), 2, "the wrapper did not hang the {what}: {pids:?}");
    let all_gone = harness::wait_for(Duration::from_secs(10), || {
        pids.iter().all(|&p| gone(p)).then_some(())
    });
    assert!(
        all_gone.is_some(),
        "the hung runtime (wrapper, child) {pids:?} still runs 10 s after its {what} was abandoned"
    );
}

/// Whether `pid` is gone (or a zombie, which runs nothing).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_ascii_whitespace().next())
            .is_some_and(|st| st == "Z" || st == "X"),
    }
}

/// A StartContainer whose runtime hangs: the client's deadline passes (DEADLINE_EXCEEDED), and the
/// hung runtime and the child it started are killed with the abandoned start, not left running; the
/// container and its pod are then removed cleanly.
#[test]
fn runtime_hang_start() {
    harness::fault::scenario("runtime-hang-start", || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let h = Hung::set_up("run").await;
            let mut rt = h.c.runtime().await;
            let mut req = tonic::Request::new(StartContainerRequest {
                container_id: h.id.clone(),
            });
            req.set_timeout(Duration::from_secs(5));
            let err = rt.start_container(req).await.unwrap_err();
            assert!(
                matches!(err.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
                "StartContainer with a hung runtime: {err:?}"
            );
            assert_hung_runtime_gone(h.work.path(), "start");
            h.remove().await;
        })
    });
}

/// An UpdateContainerResources whose runtime hangs: the same, for a call through `runtime update`
/// (the runtime's own calls, outside the monitor).
#[test]
fn runtime_hang_update() {
    harness::fault::scenario("runtime-hang-update", || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let h = Hung::set_up("update").await;
            let mut rt = h.c.runtime().await;
            rt.start_container(StartContainerRequest {
                container_id: h.id.clone(),
            })
            .await
            .unwrap();
            let mut req = tonic::Request::new(UpdateContainerResourcesRequest {
                container_id: h.id.clone(),
                linux: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            });
            req.set_timeout(Duration::from_secs(3));
            let err = rt.update_container_resources(req).await.unwrap_err();
            assert!(
                matches!(err.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
                "UpdateContainerResources with a hung runtime: {err:?}"
            );
            assert_hung_runtime_gone(h.work.path(), "update");
            h.remove().await;
        })
    });
}

/// A crustd whose handler `hang` hangs on one verb, a pod of that handler and a container created in
/// it.
struct Hung {
    // Dropped in this order: crustd before the registry and the wrapper's dir.
    c: Crustd,
    work: tempfile::TempDir,
    _reg: Registry,
    pod_id: String,
    id: String,
}

impl Hung {
    async fn set_up(verb: &str) -> Hung {
        let reg = Registry::start();
        let imgs = harness::images::push_standard(&reg);
        let work = tempfile::tempdir().unwrap();
        let c = Crustd::start(CrustdOptions {
            registry: Some(&reg),
            cni: true,
            extra_toml: hanging_runtime(work.path(), verb),
            env: Vec::new(),
            bin_dir: None,
        })
        .await;
        let bb = imgs.busybox.reference.clone();
        c.images()
            .await
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: bb.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        let log_dir = c.dir.path().join("logs").join("hang");
        let pod = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "hang".into(),
                uid: "uid-hang".into(),
                namespace: "crust-faults".into(),
                attempt: 0,
            }),
            log_directory: log_dir.display().to_string(),
            ..Default::default()
        };
        let mut rt = c.runtime().await;
        let pod_id = rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: "hang".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "stuck".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: bb,
                        ..Default::default()
                    }),
                    command: vec!["sleep".into(), "1000".into()],
                    log_path: "stuck/0.log".into(),
                    ..Default::default()
                }),
                sandbox_config: Some(pod),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        Hung {
            c,
            work,
            _reg: reg,
            pod_id,
            id,
        }
    }

    /// Removes the container and the pod, which leave nothing behind.
    async fn remove(self) {
        let mut rt = self.c.runtime().await;
        rt.remove_container(RemoveContainerRequest {
            container_id: self.id.clone(),
        })
        .await
        .unwrap();
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: self.pod_id.clone(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: self.pod_id.clone(),
        })
        .await
        .unwrap();
        assert!(
            !self.c.state.join("containers").join(&self.id).exists(),
            "the container's state dir is left"
        );
    }
}
