//! The lifecycle events crustd's core reports to NRI plugins, in index order under the event lock:
//! pod and container state changes, CreateContainer (whose adjustments change the OCI spec),
//! UpdateContainer and StopContainer (whose replies may update other containers), and the container
//! updates and evictions plugins ask for.

use nri_api::nri as api;
use serde_json::Value;

use super::{Nri, convert};
use crate::Result;
use crate::container::ContainerRecord;
use crate::daemon::Daemon;
use crate::sandbox::PodRecord;

use api::Event;

/// Event names, as NRI writes them, by bit (bit n-1 is event n).
const NAMES: &[&str] = &[
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "CreateContainer",
    "PostCreateContainer",
    "StartContainer",
    "PostStartContainer",
    "UpdateContainer",
    "PostUpdateContainer",
    "StopContainer",
    "RemoveContainer",
    "UpdatePodSandbox",
    "PostUpdatePodSandbox",
    "ValidateContainerAdjustment",
];

/// The names of the events set in `mask`.
pub(super) fn names(mask: i32) -> Vec<String> {
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// A container's OCI spec as its bundle holds it.
pub(super) fn bundle_spec(d: &Daemon, id: &str) -> Option<Value> {
    let data = std::fs::read(d.dirs.container_state(id).join("config.json")).ok()?;
    serde_json::from_slice(&data).ok()
}

impl Nri {
    fn busy(&self) -> bool {
        !self.shared.active().is_empty()
    }

    /// A pod event (RunPodSandbox, StopPodSandbox, RemovePodSandbox). Plugin errors are logged:
    /// the pod's own operation has already been done.
    pub async fn pod_event(&self, event: Event, pod: &PodRecord) {
        if !self.busy() {
            return;
        }
        let mut evt = api::StateChangeEvent::new();
        evt.event = event.into();
        evt.pod = nri_api::protobuf::MessageField::some(convert::pod(pod));
        self.state_change(evt).await;
    }

    /// A container event (PostCreate, Start, PostStart, PostUpdate, Remove): the container as its
    /// record and bundle show it.
    pub async fn container_event(&self, event: Event, rec: &ContainerRecord) {
        if !self.busy() {
            return;
        }
        let Some((pod, ctr)) = self.describe(rec, None) else {
            return;
        };
        let mut evt = api::StateChangeEvent::new();
        evt.event = event.into();
        evt.pod = nri_api::protobuf::MessageField::some(pod);
        evt.container = nri_api::protobuf::MessageField::some(ctr);
        self.state_change(evt).await;
    }

    fn describe(
        &self,
        rec: &ContainerRecord,
        spec: Option<&Value>,
    ) -> Option<(api::PodSandbox, api::Container)> {
        let d = self.shared.daemon()?;
        let pod = d.sandboxes.get(&rec.pod_id).ok()?;
        let owned;
        let spec = match spec {
            Some(s) => Some(s),
            None => {
                owned = bundle_spec(&d, &rec.id);
                owned.as_ref()
            }
        };
        Some((convert::pod(&pod), convert::container(rec, spec)))
    }

    async fn state_change(&self, evt: api::StateChangeEvent) {
        let _order = self.shared.order.lock().await;
        let event = evt.event.enum_value_or_default();
        for p in self.shared.active() {
            if !p.wants(event) {
                continue;
            }
            let e = evt.clone();
            if let Err(err) = p
                .call(
                    "a state change",
                    |c, ctx| async move { c.state_change(ctx, &e).await },
                )
                .await
            {
                tracing::warn!(plugin = %p.id(), ?event, error = %err, "NRI plugin failed an event");
            }
        }
    }

    /// CreateContainer: each plugin in turn is shown the container as the earlier ones adjusted it, and
    /// its adjustment goes into `spec`. Updates of other containers the plugins ask for are applied
    /// once the event is over.
    pub async fn create_container(
        &self,
        rec: &ContainerRecord,
        spec: &mut Value,
        host: &super::adjust::Host,
    ) -> Result<()> {
        if !self.busy() {
            return Ok(());
        }
        let Some((pod, _)) = self.describe(rec, Some(spec)) else {
            return Ok(());
        };
        let mut owners = super::adjust::Owners::default();
        let mut updates = Vec::new();
        let mut evictions = Vec::new();
        {
            let _order = self.shared.order.lock().await;
            for p in self.shared.active() {
                if !p.wants(Event::CREATE_CONTAINER) {
                    continue;
                }
                let mut req = api::CreateContainerRequest::new();
                req.pod = nri_api::protobuf::MessageField::some(pod.clone());
                req.container = nri_api::protobuf::MessageField::some(convert::container(rec, Some(spec)));
                let Some(rsp) = p
                    .call("CreateContainer", |c, ctx| async move {
                        c.create_container(ctx, &req).await
                    })
                    .await?
                else {
                    continue;
                };
                let plugin = p.id();
                if let Some(a) = rsp.adjust.as_ref() {
                    super::adjust::apply(spec, a, &plugin, &mut owners, host)?;
                }
                for u in rsp.update {
                    if u.container_id == rec.id {
                        return Err(crate::Error::invalid(
                            "nri.update",
                            format!(
                                "NRI plugin {plugin:?} asked to update container {} during its creation",
                                rec.id
                            ),
                        ));
                    }
                    updates.push((plugin.clone(), u));
                }
                evictions.extend(rsp.evict.into_iter().map(|e| (plugin.clone(), e)));
            }
        }
        if (!updates.is_empty() || !evictions.is_empty())
            && let Some(d) = self.shared.daemon()
        {
            tokio::spawn(async move {
                for (plugin, u) in updates {
                    apply_updates(&d, &plugin, vec![u], Vec::new()).await;
                }
                for (plugin, e) in evictions {
                    apply_updates(&d, &plugin, Vec::new(), vec![e]).await;
                }
            });
        }
        Ok(())
    }

    /// UpdateContainer: plugins see the requested resources; one may answer with changed resources
    /// for this same container (they replace the request's), or updates of others (applied after).
    pub async fn update_container(
        &self,
        rec: &ContainerRecord,
        res: api::LinuxResources,
    ) -> Result<api::LinuxResources> {
        if !self.busy() {
            return Ok(res);
        }
        let Some((pod, ctr)) = self.describe(rec, None) else {
            return Ok(res);
        };
        let mut res = res;
        let mut others = Vec::new();
        {
            let _order = self.shared.order.lock().await;
            for p in self.shared.active() {
                if !p.wants(Event::UPDATE_CONTAINER) {
                    continue;
                }
                let mut req = api::UpdateContainerRequest::new();
                req.pod = nri_api::protobuf::MessageField::some(pod.clone());
                req.container = nri_api::protobuf::MessageField::some(ctr.clone());
                req.linux_resources = nri_api::protobuf::MessageField::some(res.clone());
                let Some(rsp) = p
                    .call("UpdateContainer", |c, ctx| async move {
                        c.update_container(ctx, &req).await
                    })
                    .await?
                else {
                    continue;
                };
                for u in rsp.update {
                    match u.linux.resources.as_ref() {
                        Some(r) if u.container_id == rec.id => res = r.clone(),
                        _ => others.push((p.id(), u)),
                    }
                }
            }
        }
        if !others.is_empty()
            && let Some(d) = self.shared.daemon()
        {
            tokio::spawn(async move {
                for (plugin, u) in others {
                    apply_updates(&d, &plugin, vec![u], Vec::new()).await;
                }
            });
        }
        Ok(res)
    }

    /// StopContainer: plugins are told once per container, whichever of its exit, StopContainer, its
    /// pod's stop or its removal comes first, also for a container that never ran (as containerd
    /// does); errors are logged and the stop goes on; the updates of other containers they answer
    /// with are applied afterwards.
    pub async fn stop_container(&self, rec: &ContainerRecord) {
        self.stop_once(rec, false).await;
    }

    /// Tells plugins `rec` stopped unless they were told; `on_exit`: only while it still exists
    /// (an exit seen just before the container's removal must not be told after it).
    async fn stop_once(&self, rec: &ContainerRecord, on_exit: bool) {
        if !self.busy() {
            return;
        }
        let Some((pod, ctr)) = self.describe(rec, None) else {
            return;
        };
        let mut updates = Vec::new();
        {
            let _order = self.shared.order.lock().await;
            let gone = || {
                self.shared
                    .daemon()
                    .is_none_or(|d| d.containers.get(&rec.id).is_err())
            };
            if on_exit && gone() || !super::lock(&self.shared.stopped).insert(rec.id.clone()) {
                return;
            }
            for p in self.shared.active() {
                if !p.wants(Event::STOP_CONTAINER) {
                    continue;
                }
                let mut req = api::StopContainerRequest::new();
                req.pod = nri_api::protobuf::MessageField::some(pod.clone());
                req.container = nri_api::protobuf::MessageField::some(ctr.clone());
                match p
                    .call("StopContainer", |c, ctx| async move {
                        c.stop_container(ctx, &req).await
                    })
                    .await
                {
                    Ok(Some(rsp)) => updates.extend(rsp.update.into_iter().map(|u| (p.id(), u))),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(plugin = %p.id(), error = %e, "NRI plugin failed StopContainer"),
                }
            }
        }
        if !updates.is_empty()
            && let Some(d) = self.shared.daemon()
        {
            tokio::spawn(async move {
                for (plugin, u) in updates {
                    apply_updates(&d, &plugin, vec![u], Vec::new()).await;
                }
            });
        }
    }
}

impl Nri {
    /// RemoveContainer: a container not yet told stopped is first (as containerd's NRI does).
    pub async fn remove_container(&self, rec: &ContainerRecord) {
        self.stop_container(rec).await;
        self.container_event(Event::REMOVE_CONTAINER, rec).await;
        super::lock(&self.shared.stopped).remove(&rec.id);
    }

    /// A container exited (on its own, or killed): plugins are told it stopped, from a task of its
    /// own since the caller holds the container records.
    pub fn container_exited(&self, rec: &ContainerRecord) {
        if !self.busy() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (nri, rec) = (self.clone(), rec.clone());
            rt.spawn(async move { nri.stop_once(&rec, true).await });
        }
    }

    /// UpdatePodSandboxResources: plugins see the pod's new overhead and resources (OCI
    /// `linux.resources` objects). As NRI's adaptation, a plugin's error fails the update; one that
    /// does not answer in time is disconnected and the update goes on.
    pub async fn update_pod_sandbox(
        &self,
        pod: &PodRecord,
        overhead: Option<&Value>,
        resources: Option<&Value>,
    ) -> Result<()> {
        if !self.busy() {
            return Ok(());
        }
        let _order = self.shared.order.lock().await;
        let mut req = api::UpdatePodSandboxRequest::new();
        req.pod = nri_api::protobuf::MessageField::some(convert::pod(pod));
        req.overhead_linux_resources = overhead.map(convert::resources).into();
        req.linux_resources = resources.map(convert::resources).into();
        for p in self.shared.active() {
            if !p.wants(Event::UPDATE_POD_SANDBOX) {
                continue;
            }
            let r = req.clone();
            p.call("UpdatePodSandbox", |c, ctx| async move {
                c.update_pod_sandbox(ctx, &r).await
            })
            .await
            .map_err(|e| {
                crate::Error::FailedPrecondition(format!(
                    "NRI plugin {} failed UpdatePodSandbox: {e}",
                    p.id()
                ))
            })?;
        }
        Ok(())
    }
}

/// Applies container updates and evictions a plugin asked for; returns the updates that failed (one
/// marked `ignore_failure` is not reported). Updates do not go back through NRI.
pub(super) async fn apply_updates(
    d: &Daemon,
    plugin: &str,
    updates: Vec<api::ContainerUpdate>,
    evictions: Vec<api::ContainerEviction>,
) -> Vec<api::ContainerUpdate> {
    let mut failed = Vec::new();
    for u in updates {
        let Some(r) = u.linux.resources.as_ref() else {
            continue;
        };
        let cri = to_cri(r);
        match d.update_container_resources_quiet(&u.container_id, &cri).await {
            Ok(()) => {
                tracing::info!(%plugin, container = %u.container_id, "NRI plugin updated a container's resources")
            }
            Err(e) => {
                tracing::warn!(%plugin, container = %u.container_id, error = %e, "NRI plugin's container update failed");
                if !u.ignore_failure {
                    failed.push(u);
                }
            }
        }
    }
    for e in evictions {
        tracing::info!(%plugin, container = %e.container_id, reason = %e.reason, "NRI plugin evicts a container");
        if let Err(err) = d.stop_container_quiet(&e.container_id, 0).await {
            tracing::warn!(%plugin, container = %e.container_id, error = %err, "NRI eviction failed");
        }
    }
    failed
}

/// NRI resources as a CRI update.
pub fn to_cri(r: &api::LinuxResources) -> cri_api::v1::LinuxContainerResources {
    let mut out = cri_api::v1::LinuxContainerResources::default();
    if let Some(c) = r.cpu.as_ref() {
        out.cpu_shares = c.shares.as_ref().map_or(0, |v| v.value as i64);
        out.cpu_quota = c.quota.as_ref().map_or(0, |v| v.value);
        out.cpu_period = c.period.as_ref().map_or(0, |v| v.value as i64);
        out.cpuset_cpus = c.cpus.clone();
        out.cpuset_mems = c.mems.clone();
    }
    if let Some(m) = r.memory.as_ref() {
        out.memory_limit_in_bytes = m.limit.as_ref().map_or(0, |v| v.value);
        out.memory_swap_limit_in_bytes = m.swap.as_ref().map_or(0, |v| v.value);
    }
    out.hugepage_limits = r
        .hugepage_limits
        .iter()
        .map(|h| cri_api::v1::HugepageLimit {
            page_size: h.page_size.clone(),
            limit: h.limit,
        })
        .collect();
    out.unified = r.unified.clone().into_iter().collect();
    out
}

/// A CRI update as NRI resources (what UpdateContainer shows plugins).
pub fn from_cri(r: &cri_api::v1::LinuxContainerResources) -> api::LinuxResources {
    let mut out = api::LinuxResources::new();
    let mut cpu = api::LinuxCPU::new();
    let u64o = |v: i64| {
        (v > 0).then(|| {
            let mut o = api::OptionalUInt64::new();
            o.value = v as u64;
            o
        })
    };
    let i64o = |v: i64| {
        (v != 0).then(|| {
            let mut o = api::OptionalInt64::new();
            o.value = v;
            o
        })
    };
    cpu.shares = u64o(r.cpu_shares).into();
    cpu.quota = i64o(r.cpu_quota).into();
    cpu.period = u64o(r.cpu_period).into();
    cpu.cpus = r.cpuset_cpus.clone();
    cpu.mems = r.cpuset_mems.clone();
    out.cpu = nri_api::protobuf::MessageField::some(cpu);
    let mut mem = api::LinuxMemory::new();
    mem.limit = i64o(r.memory_limit_in_bytes).into();
    mem.swap = i64o(r.memory_swap_limit_in_bytes).into();
    out.memory = nri_api::protobuf::MessageField::some(mem);
    out.hugepage_limits = r
        .hugepage_limits
        .iter()
        .map(|h| {
            let mut l = api::HugepageLimit::new();
            l.page_size = h.page_size.clone();
            l.limit = h.limit;
            l
        })
        .collect();
    out.unified = r.unified.clone().into_iter().collect();
    out
}
