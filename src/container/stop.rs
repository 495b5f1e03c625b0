//! StopContainer (the stop signal, SIGKILL once the grace period passes, the exit file, then the
//! runtime's delete) and RemoveContainer (force-stop, a forced runtime delete if one is still due,
//! the directories moved into the trash to be unmounted and deleted in the background, the record
//! deleted). Both are idempotent and succeed for unknown IDs.

use std::sync::Arc;
use std::time::Duration;

use super::record::{ContainerRecord, Step};
use super::{Inner, trash};
use crate::daemon::Daemon;
use crate::{Error, Result};

impl Daemon {
    /// StopContainer with a grace period of `timeout` seconds (0: SIGKILL at once); NRI plugins are
    /// told the container stopped (once per container, see `Nri::stop_container`).
    pub async fn stop_container(&self, id: &str, timeout: u64) -> Result<()> {
        self.stop_container_quiet(id, timeout).await?;
        if let Ok(rec) = self.containers.get(id) {
            self.nri.stop_container(&rec).await;
        }
        Ok(())
    }

    /// StopContainer without telling NRI plugins (an eviction a plugin asked for).
    pub async fn stop_container_quiet(&self, id: &str, timeout: u64) -> Result<()> {
        let inner = Arc::clone(&self.containers.inner);
        let id = match inner.resolve_id(id) {
            Ok(id) => id,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        // The stop runs in a task of its own, so that a caller going away cannot cut a record update
        // short; but the caller's presence is what the grace period waits under: `_caller` lives as
        // long as this request's future, and the task's `gone` resolves when it is dropped (tonic
        // drops the handler's future when the client cancels or its deadline passes).
        let (_caller, gone) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move { inner.stop(&id, timeout, gone).await })
            .await
            .map_err(|e| Error::Internal(format!("stop task failed: {e}")))?
    }

    /// RemoveContainer. The container's directories are moved aside and cleaned in the background
    /// (see `trash`); the image store collects once that is done, as the layers an image removed
    /// meanwhile left are in use until then. With image volumes the removal waits for the cleanup, so
    /// that those images' layers are collected before it answers.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let inner = Arc::clone(&self.containers.inner);
        let id = match inner.resolve_id(id) {
            Ok(id) => id,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let shown = self.containers.get(&id).ok();
        let had_images = inner
            .get(&id)
            .is_ok_and(|r| r.mounts.iter().any(|m| !m.image.is_empty()));
        let done = tokio::spawn(async move { inner.remove(&id).await })
            .await
            .map_err(|e| Error::Internal(format!("remove task failed: {e}")))??;
        if let Some(rec) = shown {
            self.nri.remove_container(&rec).await;
        }
        let Some(mut done) = done else { return Ok(()) };
        if had_images {
            let _ = done.changed().await;
            self.images.collect().await;
        } else {
            let images = self.images.clone();
            tokio::spawn(async move {
                let _ = done.changed().await;
                images.collect().await;
            });
        }
        Ok(())
    }
}

/// Resolves (with an error: nothing is ever sent) when the StopContainer request is dropped.
type CallerGone = tokio::sync::oneshot::Receiver<()>;

/// How long a stop waits for killed leftover processes to be reaped.
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(1);

impl Inner {
    /// StopContainer's stop; `gone` resolves when its caller has gone away.
    async fn stop(&self, id: &str, timeout: u64, gone: CallerGone) -> Result<()> {
        let _g = self.locks.lock(id).await;
        let rec = match self.get(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_locked(rec, timeout, Some(gone))
            .await
            .map_err(|e| e.context(format!("StopContainer {id}")))
    }

    /// Stops a container whose lock the caller holds. When `gone` (the requester went away) resolves
    /// during the grace period, the stop ends there: the stop signal was sent, the container runs on
    /// and is not SIGKILLed, and a later StopContainer starts a grace period of its own. This is what
    /// containerd does (its CRI stop returns the request context's error instead of escalating once
    /// that context is done): a kubelet whose call timed out retries with its own timeout.
    async fn stop_locked(
        &self,
        mut rec: ContainerRecord,
        timeout: u64,
        gone: Option<CallerGone>,
    ) -> Result<()> {
        if rec.exited || rec.step != Step::Created {
            return Ok(());
        }
        let id = rec.id.clone();
        let dir = self.dirs.container_state(&id);
        if rec.started_at == 0 && crate::monitor::read_exit(&dir).is_none() && !crate::monitor::is_alive(&dir)
        {
            // Never started: nothing runs, and (as in containerd) the container stays CREATED.
            return Ok(());
        }
        // Signals go straight to the container's init through a pidfd (see `monitor::signal_container`):
        // no runtime process to wait for. Whatever else its cgroup holds goes with `kill_leftovers`.
        if timeout > 0 && rec.started_at != 0 {
            crate::monitor::signal_container(&dir, rec.stop_signal)?;
            let waited = crate::monitor::wait_exit(&dir, Duration::from_secs(timeout));
            let exited = match gone {
                None => waited.await,
                Some(gone) => tokio::select! {
                    st = waited => st,
                    _ = gone => {
                        tracing::info!(%id, timeout, "the StopContainer caller went away during the grace period; not escalating to SIGKILL");
                        // Nobody reads this: the request it would answer is gone.
                        return Err(Error::DeadlineExceeded(format!("the caller went away after {timeout}s of grace were asked")));
                    }
                },
            };
            if let Some(st) = exited {
                rec.set_exit(&st);
                self.kill_leftovers(&rec).await;
                self.forget_in_runtime(&rec).await;
                return self.put(rec);
            }
            tracing::info!(%id, timeout, "container ignored its stop signal; sending SIGKILL");
        }
        if crate::monitor::is_alive(&dir) {
            crate::monitor::signal_container(&dir, libc::SIGKILL)?;
        }
        match crate::monitor::wait_exit(&dir, self.kill_timeout).await {
            Some(st) => rec.set_exit(&st),
            None if !crate::monitor::is_alive(&dir) => {
                rec.set_unknown_exit("the container's monitor is gone and left no exit status");
            }
            None => {
                return Err(Error::DeadlineExceeded(format!(
                    "container {id} did not exit within {}s of SIGKILL",
                    self.kill_timeout.as_secs()
                )));
            }
        }
        self.kill_leftovers(&rec).await;
        self.forget_in_runtime(&rec).await;
        self.put(rec)
    }

    /// Once a stopped container has exited: the runtime deletes it (not forced: a container that
    /// somehow still runs stays), as containerd deletes the task before StopContainer returns, so that
    /// RemoveContainer has no runtime call left. A failure is left to RemoveContainer's forced delete.
    pub(super) async fn forget_in_runtime(&self, rec: &ContainerRecord) {
        let Ok(rt) = self.runtime(rec) else { return };
        if rt.knows(&rec.id)
            && let Err(e) = rt.delete(&rec.id, false).await
        {
            tracing::debug!(id = %rec.id, error = %e, "runtime delete after stop failed");
        }
    }

    /// Once the container's init has exited: processes it left in a PID namespace it shared (the
    /// pod's, where they outlive it) are killed too, and reaped ones waited for, so that nothing of a
    /// stopped container runs on and the runtime's delete finds an empty cgroup (else it retries its
    /// removal after sleeping). Where the kernel cannot do this, the runtime's delete kills them.
    async fn kill_leftovers(&self, rec: &ContainerRecord) {
        if !crate::cgroups::kill_all(&rec.cgroup, LEFTOVER_TIMEOUT).await {
            tracing::debug!(id = %rec.id, "the container's cgroup may still hold processes");
        }
    }

    /// RemoveContainer's removal; returns the end of the cleanup it left running (`None` when there
    /// was no such container).
    async fn remove(&self, id: &str) -> Result<Option<tokio::sync::watch::Receiver<()>>> {
        let _g = self.locks.lock(id).await;
        let rec = match self.get(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let ctx = format!("RemoveContainer {id}");
        self.stop_locked(rec.clone(), 0, None)
            .await
            .map_err(|e| e.context(&ctx))?;
        // A container that exited by itself was not stopped here: its leftovers go now.
        self.kill_leftovers(&rec).await;
        self.release_runtime(&rec).await.map_err(|e| e.context(&ctx))?;
        let done = self
            .trash
            .discard(&self.dirs, &rec.id, &rec.pod_id)
            .await
            .map_err(|e| e.context(&ctx))?;
        self.forget(&rec).map_err(|e| e.context(&ctx))?;
        Ok(Some(done))
    }

    /// The runtime's forced delete (when it still knows the container) and, with systemd, the
    /// monitor's scope.
    async fn release_runtime(&self, rec: &ContainerRecord) -> Result<()> {
        let rt = self.runtime(rec)?;
        // A container never started is unknown to the runtime: no need to ask it.
        if rt.knows(&rec.id) {
            rt.delete(&rec.id, true).await?;
        }
        // systemd: the monitor's scope went when the monitor exited; stopped here all the same.
        self.cgroups.remove_monitor(&rec.id).await
    }

    /// Deletes the runtime's container, unmounts and removes the rootfs and the state dir, here and
    /// now (the record goes with `forget`).
    pub(super) async fn destroy(&self, rec: &ContainerRecord) -> Result<()> {
        self.release_runtime(rec).await?;
        let place = trash::Place::of(&self.dirs, &rec.id);
        tokio::task::spawn_blocking(move || trash::clean(&place))
            .await
            .map_err(|e| Error::Internal(format!("cleanup task failed: {e}")))?
    }
}
