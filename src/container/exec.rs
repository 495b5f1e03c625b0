//! ExecSync (through the runtime, with the container's user, env, cwd and capabilities; output capped,
//! timeout honoured), UpdateContainerResources and ReopenContainerLog.

use std::sync::Arc;
use std::time::Duration;

use cri_api::v1;
use oci_spec::runtime::{Process, Spec};

use super::record::{ResourcesRecord, cri_state};
use super::{Inner, lock, resources};
use crate::daemon::Daemon;
use crate::{Error, Result};

/// What ExecSync returns.
#[derive(Debug, Clone, Default)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl Inner {
    /// The container's process spec (from its bundle), cached: exec probes run often.
    fn process_template(&self, id: &str) -> Result<Arc<Process>> {
        if let Some(p) = lock(&self.exec_procs).get(id) {
            return Ok(Arc::clone(p));
        }
        let path = self.dirs.container_state(id).join("config.json");
        let data = std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let spec: Spec = serde_json::from_slice(&data)
            .map_err(|e| Error::Internal(format!("parse {}: {e}", path.display())))?;
        let p = Arc::new(
            spec.process()
                .clone()
                .ok_or_else(|| Error::Internal(format!("{} has no process", path.display())))?,
        );
        lock(&self.exec_procs).insert(id.to_string(), Arc::clone(&p));
        Ok(p)
    }

    fn running(&self, id: &str, what: &str) -> Result<super::ContainerRecord> {
        let rec = self.get(id)?;
        if cri_state(&rec) != v1::ContainerState::ContainerRunning {
            return Err(Error::FailedPrecondition(format!(
                "{what}: container {} is not running",
                rec.id
            )));
        }
        Ok(rec)
    }
}

impl Daemon {
    /// ExecSync: `timeout` 0 means none; on timeout the process is killed and DeadlineExceeded returned.
    pub async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: u64) -> Result<ExecResult> {
        let inner = &self.containers.inner;
        let rec = inner.running(id, "ExecSync")?;
        let mut process = (*inner.process_template(&rec.id)?).clone();
        process.set_args(Some(cmd));
        process.set_terminal(Some(false));
        process.set_console_size(None);
        let rt = inner.runtime(&rec)?;
        let out = rt
            .exec_sync(
                &rec.id,
                &process,
                Duration::from_secs(timeout),
                inner.exec_max_output,
            )
            .await
            .map_err(|e| e.context(format!("ExecSync in {}", rec.id)))?;
        if out.timed_out {
            // The runtime killed the process and saw it reaped (see `oci::Runc::exec_sync`).
            return Err(Error::DeadlineExceeded(format!(
                "ExecSync in {}: command timed out after {timeout}s and was killed",
                rec.id
            )));
        }
        Ok(ExecResult {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    /// UpdateContainerResources: NRI plugins see the update first (and may change it), then it goes
    /// through the runtime; the status reports the new values.
    pub async fn update_container_resources(&self, id: &str, r: &v1::LinuxContainerResources) -> Result<()> {
        let Ok(rec) = self
            .containers
            .inner
            .resolve_id(id)
            .and_then(|id| self.containers.inner.get(&id))
        else {
            return self.update_container_resources_quiet(id, r).await;
        };
        let asked = crate::nri::from_cri(r);
        let adjusted = self.nri.update_container(&rec, asked.clone()).await?;
        let r = if adjusted == asked {
            r.clone()
        } else {
            // A plugin changed the update: its resources, and what NRI does not carry from the request.
            v1::LinuxContainerResources {
                oom_score_adj: r.oom_score_adj,
                ..crate::nri::to_cri(&adjusted)
            }
        };
        self.update_container_resources_quiet(id, &r).await?;
        if let Ok(rec) = self.containers.get(&rec.id) {
            self.nri
                .container_event(crate::nri::Event::POST_UPDATE_CONTAINER, &rec)
                .await;
        }
        Ok(())
    }

    /// UpdateContainerResources through the runtime, without telling NRI plugins (the updates they
    /// ask for themselves).
    pub async fn update_container_resources_quiet(
        &self,
        id: &str,
        r: &v1::LinuxContainerResources,
    ) -> Result<()> {
        let inner = &self.containers.inner;
        let id = inner.resolve_id(id)?;
        let _g = inner.locks.lock(&id).await;
        let mut rec = inner.get(&id)?;
        if rec.exited {
            return Err(Error::FailedPrecondition(format!(
                "UpdateContainerResources: container {id} has exited"
            )));
        }
        if rec.started_at == 0 {
            // Not started: the runtime has not seen the spec yet, so the bundle takes the new values.
            let update = resources::to_json(r, inner.host.cgroup_v2, "linux")?;
            let path = inner.dirs.container_state(&id).join("config.json");
            let mut spec: serde_json::Value = std::fs::read(&path)
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok())
                .ok_or_else(|| {
                    Error::Internal(format!("container {id} has no readable {}", path.display()))
                })?;
            resources::merge_into_spec(&mut spec, &update);
            let data =
                serde_json::to_vec(&spec).map_err(|e| Error::Internal(format!("serialise spec: {e}")))?;
            crate::state::atomic_write_with(&path, &data, crate::state::Durability::Volatile).map_err(
                |e| {
                    Error::io(
                        format!("UpdateContainerResources {id}: write {}", path.display()),
                        e,
                    )
                },
            )?;
        } else {
            let oci = resources::to_oci(r, "linux")?;
            inner
                .runtime(&rec)?
                .update(&id, &oci)
                .await
                .map_err(|e| e.context(format!("UpdateContainerResources {id}")))?;
        }
        rec.resources = rec.resources.merged(&ResourcesRecord::from_cri(r));
        inner.put(rec)
    }

    /// ReopenContainerLog through the monitor.
    pub async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let inner = &self.containers.inner;
        let rec = inner.running(id, "ReopenContainerLog")?;
        crate::monitor::reopen_log(&self.dirs.container_state(&rec.id))
            .await
            .map_err(|e| e.context(format!("ReopenContainerLog {}", rec.id)))
    }
}
