//! StopPodSandbox, RemovePodSandbox, the rollback of a failed RunPodSandbox, and start-up recovery.
//! Every undo step is idempotent, so each works on a half-made pod, twice, or after a crash.

use super::files;
use super::record::{PodRecord, PodState};
use super::{Inner, netns, network, pause};
use crate::daemon::Daemon;
use crate::error::ResultExt;
use crate::{Error, Result};

fn keep_first(first: &mut Option<Error>, r: Result<()>) {
    if let Err(e) = r {
        tracing::warn!(error = %e, "pod teardown step failed");
        first.get_or_insert(e);
    }
}

impl Inner {
    /// Stops what a stopped pod no longer holds: the pause, the shm mount, the network (CNI DEL with
    /// the cached result), the netns. Each step is tried; the first failure is returned and the record
    /// keeps what is left, so a retry finishes the job.
    pub(super) async fn release(&self, rec: &mut PodRecord) -> Result<()> {
        let mut first = None;
        // The pause stop and CNI DEL are independent: run them side by side.
        let snapshot = rec.clone();
        let stop_pause = async {
            if !snapshot.pause_started {
                return None;
            }
            // A pause an older crustd ran through the default handler's runtime is deleted from the
            // runtime that holds it, which may no longer be the default.
            let r = match self
                .runtimes
                .get_existing(&snapshot.runtime_handler, &snapshot.id)
            {
                Ok(rt) => pause::stop(&rt, &self.pause_dir(&snapshot.id), &snapshot).await,
                Err(e) => Err(e),
            };
            Some(r.ctx("stop the pause container"))
        };
        let del = async {
            let net = snapshot.network.as_ref()?;
            Some(network::del(&self.cni, &snapshot, net).await)
        };
        let (stopped, deleted) = tokio::join!(stop_pause, del);
        if let Some(r) = stopped {
            if r.is_ok() {
                rec.pause_started = false;
            }
            keep_first(&mut first, r);
        }
        if let Some(shm) = rec.shm.clone() {
            keep_first(
                &mut first,
                files::unmount_shm(&shm).ctx("unmount the pod /dev/shm"),
            );
        }
        if let Some(r) = deleted {
            if r.is_ok() {
                rec.network = None;
                rec.ips.clear();
            }
            keep_first(&mut first, r);
        }
        if let Some(path) = rec.netns.clone() {
            let r = netns::remove(&path);
            if r.is_ok() {
                rec.netns = None;
            }
            keep_first(&mut first, r);
        }
        if let Some(path) = rec.userns.clone() {
            let r = netns::remove(&path);
            if r.is_ok() {
                rec.userns = None;
            }
            keep_first(&mut first, r);
        }
        first.map_or(Ok(()), Err)
    }

    /// Removes everything of a pod: `release`, the pod files, the cgroup, then the record and name.
    pub(super) async fn destroy(&self, rec: &mut PodRecord) -> Result<()> {
        let mut first = None;
        let released = self.release(rec).await;
        keep_first(&mut first, self.give_up_network(rec, released));
        if let Some(shm) = rec.shm.clone() {
            // Unmounted by release (or never mounted); removing the files dir below needs it gone.
            if files::unmount_shm(&shm).is_ok() {
                rec.shm = None;
            }
        }
        let dir = PodRecord::files_dir(&self.dirs, &rec.id);
        if first.is_none() {
            keep_first(
                &mut first,
                crate::state::remove_dir_idempotent(&dir).ctx(format!("remove {}", dir.display())),
            );
        }
        if let Some(cg) = rec.pod_cgroup() {
            let r = self
                .cgroups
                .remove_pod(&cg, &rec.id)
                .await
                .ctx("remove the pod cgroup");
            if r.is_ok() {
                rec.cgroup = None;
                rec.slice = None;
            }
            keep_first(&mut first, r);
        }
        match first {
            None => self.forget(rec),
            Some(e) => {
                // Keep the record (now naming only what is left) for a retry.
                let _ = self.save(rec);
                Err(e)
            }
        }
    }

    /// A pod being removed whose CNI DEL failed again (it failed at StopPodSandbox too, or the pod is
    /// removed without one) while everything else of it is released: the network teardown is given
    /// up, said in the log with what stays behind, and the removal goes on. containerd instead fails
    /// RemovePodSandbox for as long as DEL fails, which leaves the pod stuck (Terminating) until
    /// someone fixes the plugin by hand; crust keeps StopPodSandbox failing on it (kubelet retries
    /// that) but lets the pod go at removal, so that a broken plugin never pins pods forever.
    fn give_up_network(&self, rec: &mut PodRecord, released: Result<()>) -> Result<()> {
        let Err(e) = released else { return Ok(()) };
        let only_network_left =
            rec.network.is_some() && !rec.pause_started && rec.netns.is_none() && rec.userns.is_none();
        if !only_network_left {
            return Err(e);
        }
        let net = rec.network.take().map(|n| n.name).unwrap_or_default();
        tracing::warn!(
            pod = %rec.id,
            network = %net,
            ips = ?rec.ips,
            error = %e,
            "RemovePodSandbox: CNI DEL failed again; giving up the pod's network teardown: what the plugins \
             keep for it (its IP lease, host rules) stays until they are cleaned up by hand"
        );
        crate::metrics::global().cni_failure("DEL-abandoned", &e);
        rec.ips.clear();
        Ok(())
    }
}

impl Daemon {
    /// StopPodSandbox: the pod's containers (forcibly), then the pause, the network and the netns.
    /// Idempotent; an unknown ID succeeds.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let inner = &self.sandboxes.inner;
        let Some((_guard, mut rec)) = inner.lock_existing(id).await? else {
            return Ok(());
        };
        let id = rec.id.clone();
        self.stop_pod_containers(&id)
            .await
            .ctx("StopPodSandbox: stop the pod's containers")?;
        let was_ready = rec.state == PodState::Ready;
        let r = inner.release(&mut rec).await;
        if rec.state != PodState::Creating {
            rec.state = PodState::Stopped;
        }
        inner.save(&rec)?;
        r.ctx(format!("StopPodSandbox {id}"))?;
        if was_ready {
            self.nri
                .pod_event(crate::nri::Event::STOP_POD_SANDBOX, &rec)
                .await;
        }
        Ok(())
    }

    /// UpdatePodSandboxResources: kubelet has resized the pod-level cgroup it manages (crust's pod cgroup
    /// lies inside it, so the new limits already apply); crust records the new values, which verbose
    /// status shows. `overhead` and `resources` are OCI `linux.resources` objects.
    pub async fn update_pod_sandbox_resources(
        &self,
        id: &str,
        overhead: Option<serde_json::Value>,
        resources: Option<serde_json::Value>,
    ) -> Result<()> {
        let inner = &self.sandboxes.inner;
        let Some((_guard, mut rec)) = inner.lock_existing(id).await? else {
            return Err(Error::NotFound(format!("pod sandbox {id:?} not found")));
        };
        if !inner.is_ready(&rec) {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                rec.id
            )));
        }
        self.nri
            .update_pod_sandbox(&rec, overhead.as_ref(), resources.as_ref())
            .await?;
        rec.resources = Some(serde_json::json!({"overhead": overhead, "resources": resources}));
        inner
            .save(&rec)
            .map_err(|e| e.context(format!("UpdatePodSandboxResources {}", rec.id)))?;
        self.nri
            .pod_event(crate::nri::Event::POST_UPDATE_POD_SANDBOX, &rec)
            .await;
        Ok(())
    }

    /// RemovePodSandbox: the pod's containers, then everything the pod holds, and the record.
    /// Idempotent; works on a half-made pod.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let inner = &self.sandboxes.inner;
        let Some((_guard, mut rec)) = inner.lock_existing(id).await? else {
            return Ok(());
        };
        let id = rec.id.clone();
        self.stop_pod_containers(&id)
            .await
            .ctx("RemovePodSandbox: stop the pod's containers")?;
        self.remove_pod_containers(&id)
            .await
            .ctx("RemovePodSandbox: remove the pod's containers")?;
        let shown = rec.clone();
        inner
            .destroy(&mut rec)
            .await
            .ctx(format!("RemovePodSandbox {id}"))?;
        self.nri
            .pod_event(crate::nri::Event::REMOVE_POD_SANDBOX, &shown)
            .await;
        Ok(())
    }
}

/// Start-up recovery: roll back half-made pods; stop ready pods whose netns or pause is gone.
pub(super) async fn recover(inner: &std::sync::Arc<Inner>) {
    for mut rec in inner.snapshot() {
        let _guard = inner.locks.lock(&rec.id).await;
        match rec.state {
            PodState::Creating => {
                tracing::info!(pod = %rec.id, step = %rec.step, "rolling back a pod left half-made");
                if let Err(e) = inner.destroy(&mut rec).await {
                    tracing::warn!(pod = %rec.id, error = %e, "rollback of a half-made pod failed");
                }
            }
            PodState::Ready => {
                let netns_ok = rec.netns.as_ref().is_none_or(|p| netns::is_pinned(p));
                if netns_ok && !pause::exited(&inner.pause_dir(&rec.id)) {
                    inner.watch_pause(&rec.id);
                    continue;
                }
                tracing::info!(pod = %rec.id, "pod lost its netns or pause; stopping it");
                let r = inner.release(&mut rec).await;
                rec.state = PodState::Stopped;
                let _ = inner.save(&rec);
                if let Err(e) = r {
                    tracing::warn!(pod = %rec.id, error = %e, "stopping a pod at recovery failed");
                }
            }
            PodState::Stopped => {}
        }
    }
}
