//! Container RPC handlers: validate, call the core (`crate::container`), return the response.

use std::path::{Component, Path};
use std::sync::Arc;

use cri_api::v1;

use super::lists::Messages;
use crate::container::{ListFilter, NewContainer, resource_checks};
use crate::daemon::Daemon;
use crate::validate;
use crate::{Error, Result};

fn validate_create(req: &v1::CreateContainerRequest) -> Result<()> {
    validate::required("pod_sandbox_id", &req.pod_sandbox_id)?;
    let c = validate::present("config", &req.config)?;
    let m = validate::present("config.metadata", &c.metadata)?;
    // A container's name is never a path component: any non-empty name is taken, as by the peers.
    validate::required("config.metadata.name", &m.name)?;
    let img = validate::present("config.image", &c.image)?;
    validate::required("config.image.image", &img.image)?;
    if Path::new(&c.log_path)
        .components()
        .any(|x| x == Component::ParentDir)
    {
        return Err(Error::invalid(
            "config.log_path",
            format!("{:?} must not contain '..'", c.log_path),
        ));
    }
    for (i, e) in c.envs.iter().enumerate() {
        if e.key.is_empty() || e.key.contains('=') {
            return Err(Error::invalid(
                format!("config.envs[{i}].key"),
                format!("{:?} is not a valid variable name", e.key),
            ));
        }
    }
    for (i, mnt) in c.mounts.iter().enumerate() {
        validate::required(&format!("config.mounts[{i}].container_path"), &mnt.container_path)?;
        if !mnt.container_path.starts_with('/') {
            return Err(Error::invalid(
                format!("config.mounts[{i}].container_path"),
                format!("{:?} is not absolute", mnt.container_path),
            ));
        }
        if mnt.image.is_none() {
            validate::required(&format!("config.mounts[{i}].host_path"), &mnt.host_path)?;
        }
        crate::container::image_volume::check_sub_path(
            &format!("config.mounts[{i}].image_sub_path"),
            &mnt.image_sub_path,
        )?;
    }
    for (i, d) in c.devices.iter().enumerate() {
        validate::required(&format!("config.devices[{i}].host_path"), &d.host_path)?;
    }
    for (i, d) in c.cdi_devices.iter().enumerate() {
        crate::container::cdi::parse_name(&d.name)
            .map_err(|m| Error::invalid(format!("config.cdi_devices[{i}].name"), m))?;
    }
    if let Some(r) = c.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        // Here, before anything is made: a value runc could never take would otherwise fail the start.
        resource_checks::check(r, crate::cgroups::is_v2(), "config.linux.resources")?;
    }
    Ok(())
}

/// `CreateContainer`.
pub async fn create_container(
    d: &Daemon,
    req: v1::CreateContainerRequest,
) -> Result<v1::CreateContainerResponse> {
    validate_create(&req)?;
    let container_id = d
        .create_container(NewContainer {
            pod_id: req.pod_sandbox_id,
            config: req.config.unwrap_or_default(),
            sandbox_config: req.sandbox_config,
        })
        .await?;
    Ok(v1::CreateContainerResponse { container_id })
}

/// `StartContainer`.
pub async fn start_container(
    d: &Daemon,
    req: v1::StartContainerRequest,
) -> Result<v1::StartContainerResponse> {
    validate::required("container_id", &req.container_id)?;
    d.start_container(&req.container_id).await?;
    Ok(v1::StartContainerResponse {})
}

/// `StopContainer`.
pub async fn stop_container(d: &Daemon, req: v1::StopContainerRequest) -> Result<v1::StopContainerResponse> {
    validate::required("container_id", &req.container_id)?;
    let timeout = validate::non_negative("timeout", req.timeout)?;
    d.stop_container(&req.container_id, timeout).await?;
    Ok(v1::StopContainerResponse {})
}

/// `RemoveContainer`.
pub async fn remove_container(
    d: &Daemon,
    req: v1::RemoveContainerRequest,
) -> Result<v1::RemoveContainerResponse> {
    validate::required("container_id", &req.container_id)?;
    d.remove_container(&req.container_id).await?;
    Ok(v1::RemoveContainerResponse {})
}

/// `CheckpointContainer`: the archive at `location` (an absolute path; its directory must exist).
pub async fn checkpoint_container(
    d: &Daemon,
    req: v1::CheckpointContainerRequest,
) -> Result<v1::CheckpointContainerResponse> {
    validate::required("container_id", &req.container_id)?;
    validate::required("location", &req.location)?;
    let location = Path::new(&req.location);
    if !location.is_absolute() || location.components().any(|x| x == Component::ParentDir) {
        return Err(Error::invalid(
            "location",
            format!("{:?} is not an absolute path without '..'", req.location),
        ));
    }
    d.checkpoint_container(&req.container_id, location).await?;
    Ok(v1::CheckpointContainerResponse {})
}

/// ListContainers' (and StreamContainers') filter from the request (an unknown state is refused).
fn list_filter(f: Option<v1::ContainerFilter>) -> Result<ListFilter> {
    let f = f.unwrap_or_default();
    let state = match f.state {
        None => None,
        Some(s) => Some(v1::ContainerState::try_from(s.state).map_err(|_| {
            Error::invalid(
                "filter.state.state",
                format!("unknown container state {}", s.state),
            )
        })?),
    };
    Ok(ListFilter {
        id: f.id,
        state,
        pod_id: f.pod_sandbox_id,
        labels: f.label_selector,
    })
}

/// `ListContainers`.
pub async fn list_containers(
    d: &Daemon,
    req: v1::ListContainersRequest,
) -> Result<v1::ListContainersResponse> {
    let containers = d.list_containers(&list_filter(req.filter)?);
    Ok(v1::ListContainersResponse { containers })
}

/// `ListContainers`, its response encoded by the core (what crustd serves; see `lists`).
pub fn list_containers_encoded(d: &Daemon, req: v1::ListContainersRequest) -> Result<bytes::Bytes> {
    Ok(d.list_containers_encoded(&list_filter(req.filter)?))
}

/// `StreamContainers`: ListContainers' answer in messages of bounded size.
pub fn stream_containers(d: &Arc<Daemon>, req: v1::StreamContainersRequest) -> Result<Messages> {
    Ok(Box::pin(d.containers.stream(list_filter(req.filter)?)))
}

/// `ContainerStatus`.
pub async fn container_status(
    d: &Daemon,
    req: v1::ContainerStatusRequest,
) -> Result<v1::ContainerStatusResponse> {
    validate::required("container_id", &req.container_id)?;
    let (status, info) = d.container_status(&req.container_id, req.verbose)?;
    Ok(v1::ContainerStatusResponse {
        status: Some(status),
        info,
    })
}

/// `UpdateContainerResources`.
pub async fn update_container_resources(
    d: &Daemon,
    req: v1::UpdateContainerResourcesRequest,
) -> Result<v1::UpdateContainerResourcesResponse> {
    validate::required("container_id", &req.container_id)?;
    let linux = validate::present("linux", &req.linux)?;
    resource_checks::check(linux, crate::cgroups::is_v2(), "linux")?;
    d.update_container_resources(&req.container_id, linux).await?;
    Ok(v1::UpdateContainerResourcesResponse {})
}

/// `ReopenContainerLog`.
pub async fn reopen_container_log(
    d: &Daemon,
    req: v1::ReopenContainerLogRequest,
) -> Result<v1::ReopenContainerLogResponse> {
    validate::required("container_id", &req.container_id)?;
    d.reopen_container_log(&req.container_id).await?;
    Ok(v1::ReopenContainerLogResponse {})
}

/// `ExecSync`.
pub async fn exec_sync(d: &Daemon, req: v1::ExecSyncRequest) -> Result<v1::ExecSyncResponse> {
    validate::required("container_id", &req.container_id)?;
    if req.cmd.is_empty() || req.cmd[0].is_empty() {
        return Err(Error::invalid("cmd", "must name a command"));
    }
    let timeout = validate::non_negative("timeout", req.timeout)?;
    let out = d.exec_sync(&req.container_id, req.cmd, timeout).await?;
    Ok(v1::ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}

/// `ContainerStats`.
pub async fn container_stats(
    d: &Daemon,
    req: v1::ContainerStatsRequest,
) -> Result<v1::ContainerStatsResponse> {
    validate::required("container_id", &req.container_id)?;
    let stats = d.container_stats(&req.container_id).await?;
    Ok(v1::ContainerStatsResponse { stats: Some(stats) })
}

/// ListContainerStats' (and StreamContainerStats') filter: no state.
fn stats_filter(f: Option<v1::ContainerStatsFilter>) -> ListFilter {
    let f = f.unwrap_or_default();
    ListFilter {
        id: f.id,
        state: None,
        pod_id: f.pod_sandbox_id,
        labels: f.label_selector,
    }
}

/// `ListContainerStats`.
pub async fn list_container_stats(
    d: &Daemon,
    req: v1::ListContainerStatsRequest,
) -> Result<v1::ListContainerStatsResponse> {
    let stats = d.list_container_stats(&stats_filter(req.filter)).await;
    Ok(v1::ListContainerStatsResponse { stats })
}

/// `StreamContainerStats`: ListContainerStats' answer in messages of bounded size.
pub fn stream_container_stats(d: &Arc<Daemon>, req: v1::StreamContainerStatsRequest) -> Result<Messages> {
    Ok(Box::pin(d.containers.stream_stats(stats_filter(req.filter))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> v1::CreateContainerRequest {
        v1::CreateContainerRequest {
            pod_sandbox_id: "p".into(),
            config: Some(v1::ContainerConfig {
                metadata: Some(v1::ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(v1::ImageSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                log_path: "c/0.log".into(),
                ..Default::default()
            }),
            sandbox_config: None,
        }
    }

    fn field(r: v1::CreateContainerRequest) -> String {
        match validate_create(&r) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn create_validation_names_fields() {
        validate_create(&req()).unwrap();
        let mut r = req();
        r.pod_sandbox_id.clear();
        assert_eq!(field(r), "pod_sandbox_id");
        let mut r = req();
        r.config.as_mut().unwrap().metadata = None;
        assert_eq!(field(r), "config.metadata");
        let mut r = req();
        r.config.as_mut().unwrap().metadata.as_mut().unwrap().name.clear();
        assert_eq!(field(r), "config.metadata.name");
        let mut r = req();
        r.config.as_mut().unwrap().image.as_mut().unwrap().image.clear();
        assert_eq!(field(r), "config.image.image");
        let mut r = req();
        r.config.as_mut().unwrap().log_path = "../../etc/x".into();
        assert_eq!(field(r), "config.log_path");
        let mut r = req();
        r.config.as_mut().unwrap().envs = vec![v1::KeyValue {
            key: "A=B".into(),
            value: vec![],
        }];
        assert_eq!(field(r), "config.envs[0].key");
        let mut r = req();
        r.config.as_mut().unwrap().mounts = vec![v1::Mount {
            container_path: "/x".into(),
            ..Default::default()
        }];
        assert_eq!(field(r), "config.mounts[0].host_path");
        let mut r = req();
        r.config.as_mut().unwrap().linux = Some(v1::LinuxContainerConfig {
            resources: Some(v1::LinuxContainerResources {
                cpuset_cpus: "any string".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(field(r), "config.linux.resources.cpuset_cpus");
    }
}
