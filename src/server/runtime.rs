//! `RuntimeService`: the trait impl only routes each RPC to its handler module (`sandbox`, `container`,
//! `streaming`, `info`). RPCs not listed keep the generated default: `Unimplemented`.

use cri_api::v1;
use cri_api::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::status::respond;
use super::{Cri, container, events, info, sandbox, streaming};

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(&self, r: Request<v1::VersionRequest>) -> Result<Response<v1::VersionResponse>, Status> {
        respond(info::version(&self.d, r.into_inner()).await)
    }
    async fn status(&self, r: Request<v1::StatusRequest>) -> Result<Response<v1::StatusResponse>, Status> {
        respond(info::status(&self.d, r.into_inner()).await)
    }
    async fn runtime_config(
        &self,
        r: Request<v1::RuntimeConfigRequest>,
    ) -> Result<Response<v1::RuntimeConfigResponse>, Status> {
        respond(info::runtime_config(&self.d, r.into_inner()).await)
    }
    async fn update_runtime_config(
        &self,
        r: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<v1::UpdateRuntimeConfigResponse>, Status> {
        respond(info::update_runtime_config(&self.d, r.into_inner()).await)
    }
    async fn get_container_events(
        &self,
        _r: Request<v1::GetEventsRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<v1::ContainerEventResponse>>, Status> {
        Ok(Response::new(events::get_container_events(&self.d)))
    }
    async fn run_pod_sandbox(
        &self,
        r: Request<v1::RunPodSandboxRequest>,
    ) -> Result<Response<v1::RunPodSandboxResponse>, Status> {
        respond(sandbox::run_pod_sandbox(&self.d, r.into_inner()).await)
    }
    async fn stop_pod_sandbox(
        &self,
        r: Request<v1::StopPodSandboxRequest>,
    ) -> Result<Response<v1::StopPodSandboxResponse>, Status> {
        respond(sandbox::stop_pod_sandbox(&self.d, r.into_inner()).await)
    }
    async fn remove_pod_sandbox(
        &self,
        r: Request<v1::RemovePodSandboxRequest>,
    ) -> Result<Response<v1::RemovePodSandboxResponse>, Status> {
        respond(sandbox::remove_pod_sandbox(&self.d, r.into_inner()).await)
    }
    async fn pod_sandbox_status(
        &self,
        r: Request<v1::PodSandboxStatusRequest>,
    ) -> Result<Response<v1::PodSandboxStatusResponse>, Status> {
        respond(sandbox::pod_sandbox_status(&self.d, r.into_inner()).await)
    }
    async fn list_pod_sandbox(
        &self,
        r: Request<v1::ListPodSandboxRequest>,
    ) -> Result<Response<v1::ListPodSandboxResponse>, Status> {
        respond(sandbox::list_pod_sandbox(&self.d, r.into_inner()).await)
    }
    async fn pod_sandbox_stats(
        &self,
        r: Request<v1::PodSandboxStatsRequest>,
    ) -> Result<Response<v1::PodSandboxStatsResponse>, Status> {
        respond(sandbox::pod_sandbox_stats(&self.d, r.into_inner()).await)
    }
    async fn list_pod_sandbox_stats(
        &self,
        r: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Result<Response<v1::ListPodSandboxStatsResponse>, Status> {
        respond(sandbox::list_pod_sandbox_stats(&self.d, r.into_inner()).await)
    }
    async fn list_metric_descriptors(
        &self,
        r: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Result<Response<v1::ListMetricDescriptorsResponse>, Status> {
        respond(sandbox::list_metric_descriptors(&self.d, r.into_inner()).await)
    }
    async fn list_pod_sandbox_metrics(
        &self,
        r: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<v1::ListPodSandboxMetricsResponse>, Status> {
        respond(sandbox::list_pod_sandbox_metrics(&self.d, r.into_inner()).await)
    }
    async fn update_pod_sandbox_resources(
        &self,
        r: Request<v1::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<v1::UpdatePodSandboxResourcesResponse>, Status> {
        respond(sandbox::update_pod_sandbox_resources(&self.d, r.into_inner()).await)
    }
    async fn create_container(
        &self,
        r: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        respond(container::create_container(&self.d, r.into_inner()).await)
    }
    async fn start_container(
        &self,
        r: Request<v1::StartContainerRequest>,
    ) -> Result<Response<v1::StartContainerResponse>, Status> {
        respond(container::start_container(&self.d, r.into_inner()).await)
    }
    async fn stop_container(
        &self,
        r: Request<v1::StopContainerRequest>,
    ) -> Result<Response<v1::StopContainerResponse>, Status> {
        respond(container::stop_container(&self.d, r.into_inner()).await)
    }
    async fn remove_container(
        &self,
        r: Request<v1::RemoveContainerRequest>,
    ) -> Result<Response<v1::RemoveContainerResponse>, Status> {
        respond(container::remove_container(&self.d, r.into_inner()).await)
    }
    async fn checkpoint_container(
        &self,
        r: Request<v1::CheckpointContainerRequest>,
    ) -> Result<Response<v1::CheckpointContainerResponse>, Status> {
        respond(container::checkpoint_container(&self.d, r.into_inner()).await)
    }
    async fn list_containers(
        &self,
        r: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        respond(container::list_containers(&self.d, r.into_inner()).await)
    }
    async fn container_status(
        &self,
        r: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusResponse>, Status> {
        respond(container::container_status(&self.d, r.into_inner()).await)
    }
    async fn update_container_resources(
        &self,
        r: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Result<Response<v1::UpdateContainerResourcesResponse>, Status> {
        respond(container::update_container_resources(&self.d, r.into_inner()).await)
    }
    async fn reopen_container_log(
        &self,
        r: Request<v1::ReopenContainerLogRequest>,
    ) -> Result<Response<v1::ReopenContainerLogResponse>, Status> {
        respond(container::reopen_container_log(&self.d, r.into_inner()).await)
    }
    async fn exec_sync(
        &self,
        r: Request<v1::ExecSyncRequest>,
    ) -> Result<Response<v1::ExecSyncResponse>, Status> {
        respond(container::exec_sync(&self.d, r.into_inner()).await)
    }
    async fn container_stats(
        &self,
        r: Request<v1::ContainerStatsRequest>,
    ) -> Result<Response<v1::ContainerStatsResponse>, Status> {
        respond(container::container_stats(&self.d, r.into_inner()).await)
    }
    async fn list_container_stats(
        &self,
        r: Request<v1::ListContainerStatsRequest>,
    ) -> Result<Response<v1::ListContainerStatsResponse>, Status> {
        respond(container::list_container_stats(&self.d, r.into_inner()).await)
    }
    async fn exec(&self, r: Request<v1::ExecRequest>) -> Result<Response<v1::ExecResponse>, Status> {
        respond(streaming::exec(&self.d, r.into_inner()).await)
    }
    async fn attach(&self, r: Request<v1::AttachRequest>) -> Result<Response<v1::AttachResponse>, Status> {
        respond(streaming::attach(&self.d, r.into_inner()).await)
    }
    async fn port_forward(
        &self,
        r: Request<v1::PortForwardRequest>,
    ) -> Result<Response<v1::PortForwardResponse>, Status> {
        respond(streaming::port_forward(&self.d, r.into_inner()).await)
    }
}
