//! Pod sandbox RPC handlers: validate, call the core (`crate::sandbox`), return the response.

use std::sync::Arc;

use cri_api::v1;

use super::lists::Messages;
use crate::daemon::Daemon;
use crate::sandbox::{ListFilter, validate_run};
use crate::validate;
use crate::{Error, Result};

/// `RunPodSandbox`.
pub async fn run_pod_sandbox(d: &Daemon, req: v1::RunPodSandboxRequest) -> Result<v1::RunPodSandboxResponse> {
    let pod = validate_run(req)?;
    let pod_sandbox_id = d.run_pod_sandbox(pod).await?;
    Ok(v1::RunPodSandboxResponse { pod_sandbox_id })
}

/// `StopPodSandbox`.
pub async fn stop_pod_sandbox(
    d: &Daemon,
    req: v1::StopPodSandboxRequest,
) -> Result<v1::StopPodSandboxResponse> {
    validate::required("pod_sandbox_id", &req.pod_sandbox_id)?;
    d.stop_pod_sandbox(&req.pod_sandbox_id).await?;
    Ok(v1::StopPodSandboxResponse {})
}

/// `RemovePodSandbox`.
pub async fn remove_pod_sandbox(
    d: &Daemon,
    req: v1::RemovePodSandboxRequest,
) -> Result<v1::RemovePodSandboxResponse> {
    validate::required("pod_sandbox_id", &req.pod_sandbox_id)?;
    d.remove_pod_sandbox(&req.pod_sandbox_id).await?;
    Ok(v1::RemovePodSandboxResponse {})
}

/// `PodSandboxStatus`.
pub async fn pod_sandbox_status(
    d: &Daemon,
    req: v1::PodSandboxStatusRequest,
) -> Result<v1::PodSandboxStatusResponse> {
    validate::required("pod_sandbox_id", &req.pod_sandbox_id)?;
    d.pod_sandbox_status(&req.pod_sandbox_id, req.verbose)
}

/// `PodSandboxStatus`, its response encoded by the core (what crustd serves; see `lists`): kept
/// between changes unless `verbose` (whose info reads the pod's files).
pub fn pod_sandbox_status_encoded(d: &Daemon, req: v1::PodSandboxStatusRequest) -> Result<bytes::Bytes> {
    use prost::Message;
    validate::required("pod_sandbox_id", &req.pod_sandbox_id)?;
    if req.verbose {
        return Ok(d
            .pod_sandbox_status(&req.pod_sandbox_id, true)?
            .encode_to_vec()
            .into());
    }
    d.pod_sandbox_status_encoded(&req.pod_sandbox_id)
}

/// ListPodSandbox's filter from the request (an unknown state is refused).
fn list_filter(f: Option<v1::PodSandboxFilter>) -> Result<ListFilter> {
    let f = f.unwrap_or_default();
    let state = match f.state {
        None => None,
        Some(s) => Some(v1::PodSandboxState::try_from(s.state).map_err(|_| {
            Error::invalid(
                "filter.state.state",
                format!("unknown pod sandbox state {}", s.state),
            )
        })?),
    };
    Ok(ListFilter {
        id: f.id,
        state,
        labels: f.label_selector,
    })
}

/// `ListPodSandbox`.
pub async fn list_pod_sandbox(
    d: &Daemon,
    req: v1::ListPodSandboxRequest,
) -> Result<v1::ListPodSandboxResponse> {
    let items = d.sandboxes.list(&list_filter(req.filter)?);
    Ok(v1::ListPodSandboxResponse { items })
}

/// `ListPodSandbox`, its response encoded by the core (what crustd serves; see `lists`).
pub fn list_pod_sandbox_encoded(d: &Daemon, req: v1::ListPodSandboxRequest) -> Result<bytes::Bytes> {
    Ok(d.sandboxes.list_encoded(&list_filter(req.filter)?))
}

/// `StreamPodSandboxes`: ListPodSandbox's answer in messages of bounded size.
pub fn stream_pod_sandboxes(d: &Arc<Daemon>, req: v1::StreamPodSandboxesRequest) -> Result<Messages> {
    Ok(Box::pin(d.sandboxes.stream(list_filter(req.filter)?)))
}

/// `PodSandboxStats`.
pub async fn pod_sandbox_stats(
    d: &Daemon,
    req: v1::PodSandboxStatsRequest,
) -> Result<v1::PodSandboxStatsResponse> {
    validate::required("pod_sandbox_id", &req.pod_sandbox_id)?;
    let stats = d.pod_sandbox_stats(&req.pod_sandbox_id).await?;
    Ok(v1::PodSandboxStatsResponse { stats: Some(stats) })
}

/// `ListPodSandboxStats`.
pub async fn list_pod_sandbox_stats(
    d: &Daemon,
    req: v1::ListPodSandboxStatsRequest,
) -> Result<v1::ListPodSandboxStatsResponse> {
    let f = req.filter.unwrap_or_default();
    let stats = d.list_pod_sandbox_stats(&f.id, &f.label_selector).await;
    Ok(v1::ListPodSandboxStatsResponse { stats })
}

/// `StreamPodSandboxStats`: ListPodSandboxStats' answer in messages of bounded size.
pub fn stream_pod_sandbox_stats(d: &Arc<Daemon>, req: v1::StreamPodSandboxStatsRequest) -> Result<Messages> {
    let f = req.filter.unwrap_or_default();
    Ok(Box::pin(d.stream_pod_sandbox_stats(f.id, f.label_selector)))
}

/// `StreamPodSandboxMetrics`: ListPodSandboxMetrics' answer in messages of bounded size.
pub fn stream_pod_sandbox_metrics(
    d: &Arc<Daemon>,
    _req: v1::StreamPodSandboxMetricsRequest,
) -> Result<Messages> {
    Ok(Box::pin(d.stream_pod_sandbox_metrics()))
}

/// `ListMetricDescriptors`.
pub async fn list_metric_descriptors(
    _d: &Daemon,
    _req: v1::ListMetricDescriptorsRequest,
) -> Result<v1::ListMetricDescriptorsResponse> {
    Ok(v1::ListMetricDescriptorsResponse {
        descriptors: crate::stats::cri_metrics::descriptors(),
    })
}

/// `ListPodSandboxMetrics`.
pub async fn list_pod_sandbox_metrics(
    d: &Daemon,
    _req: v1::ListPodSandboxMetricsRequest,
) -> Result<v1::ListPodSandboxMetricsResponse> {
    Ok(v1::ListPodSandboxMetricsResponse {
        pod_metrics: d.list_pod_sandbox_metrics().await,
    })
}

/// `UpdatePodSandboxResources`.
pub async fn update_pod_sandbox_resources(
    d: &Daemon,
    req: v1::UpdatePodSandboxResourcesRequest,
) -> Result<v1::UpdatePodSandboxResourcesResponse> {
    validate::required("pod_sandbox_id", &req.pod_sandbox_id)?;
    let v2 = crate::cgroups::is_v2();
    let to_json = |r: &Option<v1::LinuxContainerResources>, field: &str| {
        r.as_ref()
            .map(|r| crate::container::resources::to_json(r, v2, field))
            .transpose()
    };
    let overhead = to_json(&req.overhead, "overhead")?;
    let resources = to_json(&req.resources, "resources")?;
    d.update_pod_sandbox_resources(&req.pod_sandbox_id, overhead, resources)
        .await?;
    Ok(v1::UpdatePodSandboxResourcesResponse {})
}
