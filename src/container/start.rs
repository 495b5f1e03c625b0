//! StartContainer. Start runs the monitor, which runs `runtime run --detach` (as containerd, the
//! runtime sees the container only at start: one runtime invocation instead of `create` + `start`); a
//! failed start leaves the container EXITED with reason `StartError`. A container an older crustd
//! created through `runtime create` is started with `runtime start`.

use std::path::PathBuf;
use std::sync::Arc;

use super::lock;
use super::record::{ContainerRecord, Step};
use crate::daemon::Daemon;
use crate::{Error, Result};

impl Daemon {
    /// StartContainer: runs the user process of a CREATED container under its monitor.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let inner = &self.containers.inner;
        let id = inner.resolve_id(id)?;
        let _g = inner.locks.lock(&id).await;
        let mut rec = inner.get(&id)?;
        if rec.exited || rec.started_at != 0 || rec.step != Step::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not in the created state (it is {:?})",
                super::record::cri_state(&rec)
            )));
        }
        let pod = self.sandboxes.pod_context(&rec.pod_id)?;
        if !pod.ready {
            return Err(Error::FailedPrecondition(format!(
                "container {id}: its pod sandbox {} is not ready",
                pod.id
            )));
        }
        let rt = inner.runtime(&rec)?;
        let dir = inner.dirs.container_state(&id);
        if let Some(fd) = lock(&inner.targets).remove(&id)
            && !crate::sys::pidfd_alive(&fd)
        {
            return Err(Error::FailedPrecondition(format!(
                "container {id}: the container whose PID namespace it joins (TARGET) has exited"
            )));
        }
        if crate::monitor::is_alive(&dir) {
            return self.start_created_by_runtime(rec, &rt).await;
        }
        self.nri
            .container_event(crate::nri::Event::START_CONTAINER, &rec)
            .await;
        // Taken before the start: a process that exits at once may have its finish time recorded by the
        // monitor before the runtime returns, and started_at must never be after finished_at.
        let started_at = crate::state::now_nanos();
        // systemd: the monitor goes into its own scope, out of crustd's unit, while the runtime starts
        // the container (the monitor announces its pid first); a monitor that cannot be placed would
        // die with crustd's unit: the start fails instead.
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
        let place = async {
            let pid = pid_rx.await.ok()?;
            Some(inner.cgroups.place_monitor(&id, pid).await)
        };
        let spec = crate::monitor::MonitorSpec {
            id: id.clone(),
            bundle: dir.clone(),
            runtime_path: rt.path().to_path_buf(),
            runtime_root: rt.root().to_path_buf(),
            systemd_cgroup: rt.systemd_cgroup(),
            state_dir: dir,
            log_path: (!rec.log_path.is_empty()).then(|| PathBuf::from(&rec.log_path)),
            tty: rec.tty,
            stdin: rec.stdin,
            stdin_once: rec.stdin_once,
            start: true,
            pause: None,
            restore: (!rec.restore.is_empty()).then(|| PathBuf::from(&rec.restore)),
            monitor_path: inner.monitor_binary.clone(),
            announce_pid: false,
        };
        let (spawned, placed) = tokio::join!(crate::monitor::spawn_announcing(&spec, pid_tx), place);
        // The runtime has bound the idmapped volumes into the container (or failed): their clones
        // here are no longer needed.
        if let Err(e) = super::idmap::release_volumes(&inner.dirs.container_state(&id)) {
            tracing::warn!(%id, error = %e, "detaching the idmapped volumes after the start");
        }
        let spawned = match (spawned, placed) {
            (Ok(mon), placed) => {
                // A monitor that did not announce itself is placed now.
                let placed = match placed {
                    Some(r) => r,
                    None => inner.cgroups.place_monitor(&id, mon.pid).await,
                };
                match placed {
                    Ok(()) => Ok(mon),
                    Err(e) => {
                        self.kill_started(&id).await;
                        Err(e.context("place the monitor in its systemd scope"))
                    }
                }
            }
            // The monitor is gone (the failed spawn killed it): so is a scope made for it.
            (Err(e), Some(Ok(()))) => {
                if let Err(u) = inner.cgroups.remove_monitor(&id).await {
                    tracing::warn!(%id, error = %u, "stopping the monitor's scope after a failure");
                }
                Err(e)
            }
            (Err(e), _) => Err(e),
        };
        let e = match spawned {
            Ok(mon) => {
                let mut started = rec.clone();
                started.pid = mon.container_pid;
                started.started_at = started_at;
                super::restore::done(&mut started);
                match inner.put_update(started.clone()) {
                    Ok(()) => {
                        inner.watch(&id);
                        self.nri
                            .container_event(crate::nri::Event::POST_START_CONTAINER, &started)
                            .await;
                        return Ok(());
                    }
                    // The start cannot be written down (a full disk): as containerd does when anything
                    // after the task's start fails, the container is killed and shown as failed to start.
                    Err(e) => {
                        self.kill_started(&id).await;
                        e
                    }
                }
            }
            Err(e) => e,
        };
        // Nothing is left running; the container is shown as having failed to start, also when that
        // cannot be saved.
        rec.set_start_error(&e.to_string());
        inner.put_or_remember(rec);
        Err(e.context(format!("StartContainer {id}")))
    }

    /// Kills a container whose start is being undone, waits for its monitor to record the exit, and
    /// stops the monitor's systemd scope.
    async fn kill_started(&self, id: &str) {
        let inner = &self.containers.inner;
        let dir = inner.dirs.container_state(id);
        let _ = crate::monitor::signal_container(&dir, libc::SIGKILL);
        let _ = crate::monitor::wait_exit(&dir, inner.kill_timeout).await;
        if let Err(u) = inner.cgroups.remove_monitor(id).await {
            tracing::warn!(%id, error = %u, "stopping the monitor's scope after a failure");
        }
    }

    /// Starts a container an older crustd created through its monitor (`runtime create` at
    /// CreateContainer): the runtime holds it CREATED, so `runtime start` runs it.
    async fn start_created_by_runtime(
        &self,
        mut rec: ContainerRecord,
        rt: &Arc<dyn crate::oci::OciRuntime>,
    ) -> Result<()> {
        let inner = &self.containers.inner;
        let id = rec.id.clone();
        let started_at = crate::state::now_nanos();
        if let Err(e) = rt.start(&id).await {
            // The process may be gone (its monitor then wrote the exit file).
            if let Some(st) = crate::monitor::read_exit(&inner.dirs.container_state(&id)) {
                rec.set_exit(&st);
                let _ = inner.put(rec);
            }
            return Err(e.context(format!("StartContainer {id}")));
        }
        rec.started_at = started_at;
        inner.put_update(rec)?;
        inner.watch(&id);
        Ok(())
    }
}
