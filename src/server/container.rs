//! Container RPC handlers: validate, call the core (`crate::container`), return the response.

use cri_api::v1;

use crate::daemon::Daemon;
use crate::{Error, Result};

/// `CreateContainer`.
pub async fn create_container(
    _d: &Daemon,
    _req: v1::CreateContainerRequest,
) -> Result<v1::CreateContainerResponse> {
    Err(Error::Unimplemented(
        "create_container is not implemented yet".into(),
    ))
}

/// `StartContainer`.
pub async fn start_container(
    _d: &Daemon,
    _req: v1::StartContainerRequest,
) -> Result<v1::StartContainerResponse> {
    Err(Error::Unimplemented(
        "start_container is not implemented yet".into(),
    ))
}

/// `StopContainer`.
pub async fn stop_container(
    _d: &Daemon,
    _req: v1::StopContainerRequest,
) -> Result<v1::StopContainerResponse> {
    Err(Error::Unimplemented(
        "stop_container is not implemented yet".into(),
    ))
}

/// `RemoveContainer`.
pub async fn remove_container(
    _d: &Daemon,
    _req: v1::RemoveContainerRequest,
) -> Result<v1::RemoveContainerResponse> {
    Err(Error::Unimplemented(
        "remove_container is not implemented yet".into(),
    ))
}

/// `ListContainers`.
pub async fn list_containers(
    _d: &Daemon,
    _req: v1::ListContainersRequest,
) -> Result<v1::ListContainersResponse> {
    Err(Error::Unimplemented(
        "list_containers is not implemented yet".into(),
    ))
}

/// `ContainerStatus`.
pub async fn container_status(
    _d: &Daemon,
    _req: v1::ContainerStatusRequest,
) -> Result<v1::ContainerStatusResponse> {
    Err(Error::Unimplemented(
        "container_status is not implemented yet".into(),
    ))
}

/// `UpdateContainerResources`.
pub async fn update_container_resources(
    _d: &Daemon,
    _req: v1::UpdateContainerResourcesRequest,
) -> Result<v1::UpdateContainerResourcesResponse> {
    Err(Error::Unimplemented(
        "update_container_resources is not implemented yet".into(),
    ))
}

/// `ReopenContainerLog`.
pub async fn reopen_container_log(
    _d: &Daemon,
    _req: v1::ReopenContainerLogRequest,
) -> Result<v1::ReopenContainerLogResponse> {
    Err(Error::Unimplemented(
        "reopen_container_log is not implemented yet".into(),
    ))
}

/// `ExecSync`.
pub async fn exec_sync(_d: &Daemon, _req: v1::ExecSyncRequest) -> Result<v1::ExecSyncResponse> {
    Err(Error::Unimplemented("exec_sync is not implemented yet".into()))
}

/// `ContainerStats`.
pub async fn container_stats(
    _d: &Daemon,
    _req: v1::ContainerStatsRequest,
) -> Result<v1::ContainerStatsResponse> {
    Err(Error::Unimplemented(
        "container_stats is not implemented yet".into(),
    ))
}

/// `ListContainerStats`.
pub async fn list_container_stats(
    _d: &Daemon,
    _req: v1::ListContainerStatsRequest,
) -> Result<v1::ListContainerStatsResponse> {
    Err(Error::Unimplemented(
        "list_container_stats is not implemented yet".into(),
    ))
}
