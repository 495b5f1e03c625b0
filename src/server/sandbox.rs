//! Pod sandbox RPC handlers: validate, call the core (`crate::sandbox`), return the response.

use cri_api::v1;

use crate::daemon::Daemon;
use crate::{Error, Result};

/// `RunPodSandbox`.
pub async fn run_pod_sandbox(
    _d: &Daemon,
    _req: v1::RunPodSandboxRequest,
) -> Result<v1::RunPodSandboxResponse> {
    Err(Error::Unimplemented(
        "run_pod_sandbox is not implemented yet".into(),
    ))
}

/// `StopPodSandbox`.
pub async fn stop_pod_sandbox(
    _d: &Daemon,
    _req: v1::StopPodSandboxRequest,
) -> Result<v1::StopPodSandboxResponse> {
    Err(Error::Unimplemented(
        "stop_pod_sandbox is not implemented yet".into(),
    ))
}

/// `RemovePodSandbox`.
pub async fn remove_pod_sandbox(
    _d: &Daemon,
    _req: v1::RemovePodSandboxRequest,
) -> Result<v1::RemovePodSandboxResponse> {
    Err(Error::Unimplemented(
        "remove_pod_sandbox is not implemented yet".into(),
    ))
}

/// `PodSandboxStatus`.
pub async fn pod_sandbox_status(
    _d: &Daemon,
    _req: v1::PodSandboxStatusRequest,
) -> Result<v1::PodSandboxStatusResponse> {
    Err(Error::Unimplemented(
        "pod_sandbox_status is not implemented yet".into(),
    ))
}

/// `ListPodSandbox`.
pub async fn list_pod_sandbox(
    _d: &Daemon,
    _req: v1::ListPodSandboxRequest,
) -> Result<v1::ListPodSandboxResponse> {
    Err(Error::Unimplemented(
        "list_pod_sandbox is not implemented yet".into(),
    ))
}

/// `PodSandboxStats`.
pub async fn pod_sandbox_stats(
    _d: &Daemon,
    _req: v1::PodSandboxStatsRequest,
) -> Result<v1::PodSandboxStatsResponse> {
    Err(Error::Unimplemented(
        "pod_sandbox_stats is not implemented yet".into(),
    ))
}

/// `ListPodSandboxStats`.
pub async fn list_pod_sandbox_stats(
    _d: &Daemon,
    _req: v1::ListPodSandboxStatsRequest,
) -> Result<v1::ListPodSandboxStatsResponse> {
    Err(Error::Unimplemented(
        "list_pod_sandbox_stats is not implemented yet".into(),
    ))
}

/// `UpdatePodSandboxResources`.
pub async fn update_pod_sandbox_resources(
    _d: &Daemon,
    _req: v1::UpdatePodSandboxResourcesRequest,
) -> Result<v1::UpdatePodSandboxResourcesResponse> {
    Err(Error::Unimplemented(
        "update_pod_sandbox_resources is not implemented yet".into(),
    ))
}
