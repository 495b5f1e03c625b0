//! The CRI calls tests make again and again, as methods of [`Crustd`]: each through a fresh client,
//! panicking with the call's name and the status when crustd refuses (tests that look at a refusal make
//! the call themselves).

use cri_api::v1::*;

use crate::Crustd;

impl Crustd {
    /// PullImage of `image`; its image reference.
    pub async fn pull(&self, image: &str) -> String {
        self.images()
            .await
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("PullImage {image}: {e}"))
            .into_inner()
            .image_ref
    }

    /// RunPodSandbox with the default handler; the pod's ID.
    pub async fn run_pod(&self, config: &PodSandboxConfig) -> String {
        self.runtime()
            .await
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"))
            .into_inner()
            .pod_sandbox_id
    }

    /// CreateContainer of `config` in pod `pod` (made from `sandbox`); the container's ID.
    pub async fn create_container(
        &self,
        pod: &str,
        config: ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> String {
        self.runtime()
            .await
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer in {pod}: {e}"))
            .into_inner()
            .container_id
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) {
        self.runtime()
            .await
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e}"));
    }

    /// CreateContainer then StartContainer; the container's ID.
    pub async fn run_container(
        &self,
        pod: &str,
        config: ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> String {
        let id = self.create_container(pod, config, sandbox).await;
        self.start_container(&id).await;
        id
    }

    /// ContainerStatus (not verbose): the status.
    pub async fn container_status(&self, id: &str) -> ContainerStatus {
        self.runtime()
            .await
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner()
            .status
            .unwrap_or_else(|| panic!("ContainerStatus {id}: no status"))
    }

    /// Polls ContainerStatus (every 50 ms, up to `timeout`) until the container has exited; its status
    /// then, `None` if it still runs.
    pub async fn wait_exited(&self, id: &str, timeout: std::time::Duration) -> Option<ContainerStatus> {
        let until = std::time::Instant::now() + timeout;
        loop {
            let s = self.container_status(id).await;
            if s.state == ContainerState::ContainerExited as i32 {
                return Some(s);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The verbose ContainerStatus's `info` (its JSON, parsed).
    pub async fn container_info(&self, id: &str) -> serde_json::Value {
        let info = self
            .runtime()
            .await
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id} (verbose): {e}"))
            .into_inner()
            .info;
        serde_json::from_str(info.get("info").map_or("null", String::as_str))
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: info is not JSON: {e}"))
    }

    /// The container's PID, from the verbose status (`info.pid`).
    pub async fn container_pid(&self, id: &str) -> u32 {
        let info = self.container_info(id).await;
        info["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("ContainerStatus {id}: no info.pid in {info}")) as u32
    }

    /// StopContainer (`timeout` seconds of grace), then RemoveContainer.
    pub async fn stop_and_remove_container(&self, id: &str, timeout: i64) {
        let mut rt = self.runtime().await;
        rt.stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout,
        })
        .await
        .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
        rt.remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
    }

    /// StopPodSandbox, then RemovePodSandbox.
    pub async fn stop_and_remove_pod(&self, id: &str) {
        let mut rt = self.runtime().await;
        rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"));
        rt.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"));
    }
}
