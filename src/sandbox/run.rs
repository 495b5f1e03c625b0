//! RunPodSandbox (after `validate`): the name reservation, then the steps — pod cgroup, netns, CNI ADD,
//! pod files and shm, pause — with the record written first (naming everything that will be made, so a
//! crash at any point can be undone) and a rollback of every step on failure.

use std::collections::HashMap;
use std::sync::Arc;

use super::files::{self, PodFiles};
use super::names::{self, Reservation};
use super::record::{NetworkRecord, PodRecord, PodState};
use super::validate::{NS_FIELD, NewPod};
use super::{Inner, netns, network, pause};
use crate::daemon::Daemon;
use crate::error::ResultExt;
use crate::{Error, Result};

/// A validated RunPodSandbox request.
impl Daemon {
    /// RunPodSandbox: makes the pod (or waits for an in-flight identical request) and returns its ID.
    pub async fn run_pod_sandbox(&self, p: NewPod) -> Result<String> {
        let inner = self.sandboxes.inner.clone();
        // An unknown handler, or one whose binary is missing, and a parent the cgroup driver cannot
        // take are refused before anything is reserved.
        inner.runtimes.get_usable(&p.runtime_handler)?;
        inner.cgroups.pod_cgroup(&p.cgroup_parent, &"0".repeat(64))?;
        if p.namespaces.userns.is_some()
            && let Err(why) = &self.user_namespaces
        {
            return Err(Error::FailedPrecondition(format!(
                "{NS_FIELD}.userns_options: pods cannot have user namespaces on this node: {why}"
            )));
        }
        match inner.names.reserve(&p.key)? {
            Reservation::Wait(rx) => names::wait(rx).await,
            Reservation::Mine(ticket) => {
                let pod_cidr = self.pod_cidr.lock().unwrap_or_else(|e| e.into_inner()).clone();
                // In a task of its own: a caller that goes away does not stop the creation half-way.
                let task = tokio::spawn(async move {
                    let r = inner.create(p, pod_cidr).await;
                    ticket.complete(&r);
                    r
                });
                let id = task
                    .await
                    .map_err(|e| Error::Internal(format!("RunPodSandbox task failed: {e}")))??;
                if let Ok(rec) = self.sandboxes.get(&id) {
                    self.nri.pod_event(crate::nri::Event::RUN_POD_SANDBOX, &rec).await;
                }
                Ok(id)
            }
        }
    }
}

impl Inner {
    async fn create(self: Arc<Self>, p: NewPod, pod_cidr: String) -> Result<String> {
        let id = crate::state::new_id();
        let _guard = self.locks.lock(&id).await;
        let ns = p.namespaces.clone();
        let network = if ns.host_network() {
            None
        } else {
            let net = network::default_network(&self.cni_conf_dir).ctx("RunPodSandbox: network")?;
            Some(NetworkRecord {
                name: net.name.clone(),
                config: net.raw.clone(),
                result: None,
                port_mappings: p.port_mappings.clone(),
                ip_ranges: network::ip_ranges(&pod_cidr),
                bandwidth: p.bandwidth.clone(),
            })
        };
        let pod_cgroup = self.cgroups.pod_cgroup(&p.cgroup_parent, &id)?;
        let files_dir = PodRecord::files_dir(&self.dirs, &id);
        // Everything that will be made is named in the record before any of it is made; undoing a thing
        // not made yet is a no-op, so one write covers every step.
        let mut rec = PodRecord {
            format: Default::default(),
            id: id.clone(),
            name: p.key.name.clone(),
            namespace: p.key.namespace.clone(),
            uid: p.key.uid.clone(),
            attempt: p.key.attempt,
            state: PodState::Creating,
            step: "record".into(),
            created_at: crate::state::now_nanos(),
            labels: p.labels.clone(),
            annotations: p.annotations.clone(),
            hostname: effective_hostname(&p),
            log_directory: p.log_directory.clone(),
            runtime_handler: p.runtime_handler.clone(),
            namespaces: ns.clone(),
            cgroup: Some(pod_cgroup.path.clone()),
            slice: pod_cgroup.slice.clone(),
            slice_owned: pod_cgroup.owned,
            netns: (!ns.host_network()).then(|| self.netns_path(&id)),
            userns: ns.userns.is_some().then(|| self.userns_path(&id)),
            network,
            ips: Vec::new(),
            shm: (!ns.host_ipc()).then(|| PodFiles::in_dir(&files_dir).shm),
            pause_started: true,
            pause_pid: 0,
            resources: None,
            privileged: Some(p.privileged),
            sysctls: p.sysctls.clone(),
            listed: Default::default(),
        };
        if let Err(e) = self.save(&rec) {
            self.pods.write().remove(&id);
            let _ = PodRecord::delete(&self.dirs, &id);
            return Err(e.context("RunPodSandbox: write the pod record"));
        }
        match self.create_steps(&mut rec, &p).await {
            Ok(()) => Ok(id),
            Err(e) => {
                let step = rec.step.clone();
                tracing::warn!(pod = %id, step = %step, error = %e, "RunPodSandbox failed; rolling back");
                if let Err(u) = self.destroy(&mut rec).await {
                    tracing::error!(pod = %id, error = %u, "rollback of a failed RunPodSandbox was incomplete");
                }
                // Name the step unless the error already does.
                if e.to_string().contains(&step) {
                    Err(e.context(format!("RunPodSandbox {}", p.key)))
                } else {
                    Err(e.context(format!("RunPodSandbox {}: {step}", p.key)))
                }
            }
        }
    }

    async fn create_steps(self: &Arc<Self>, rec: &mut PodRecord, p: &NewPod) -> Result<()> {
        let runtime = self.runtimes.get(&rec.runtime_handler)?;
        let t0 = std::time::Instant::now();
        let timing = |step: &str| {
            tracing::debug!(pod = %p.key, step, ms = t0.elapsed().as_secs_f64() * 1e3, "RunPodSandbox step done");
        };
        rec.step = "create the pod cgroup".into();
        if let Some(cg) = rec.pod_cgroup() {
            self.cgroups.create_pod(&cg)?;
        }
        match (rec.netns.clone(), rec.userns.clone(), rec.namespaces.userns) {
            (Some(net), Some(user), Some(maps)) => {
                rec.step = "create the user and network namespaces".into();
                netns::create_in_userns(&net, &user, maps).await?;
            }
            (Some(path), _, _) => {
                rec.step = "create the network namespace".into();
                netns::create(&path).await?;
            }
            _ => {}
        }
        timing(&rec.step);
        // The pause only needs the netns to exist, not its interfaces: CNI ADD and the pause start run
        // side by side (unless a sysctl names an interface CNI has yet to make).
        let snapshot = rec.clone();
        let add = async {
            match snapshot.network.as_ref() {
                Some(net) => {
                    let r = network::add(&self.cni, &snapshot, net).await;
                    timing("CNI ADD");
                    r.map(Some)
                }
                None => Ok(None),
            }
        };
        let start_pause = self.start_pause(&snapshot, p, &runtime);
        let (added, started) = if needs_interfaces(&p.sysctls) {
            let added = add.await;
            let started = if added.is_ok() { start_pause.await } else { Ok(0) };
            (added, started)
        } else {
            tokio::join!(add, start_pause)
        };
        timing("pause started");
        let mut failed = None;
        match added {
            Ok(Some(result)) => {
                rec.ips = network::pod_ips(&result);
                if let Some(n) = rec.network.as_mut() {
                    n.result = Some(result.raw);
                }
            }
            Ok(None) => {}
            Err(e) => {
                rec.step = format!(
                    "CNI ADD of network {:?}",
                    rec.network.as_ref().map(|n| n.name.as_str()).unwrap_or("")
                );
                failed = Some(e);
            }
        }
        match started {
            Ok(pid) => rec.pause_pid = pid,
            Err(e) if failed.is_none() => {
                rec.step = "start the pause container".into();
                failed = Some(e);
            }
            Err(e) => tracing::warn!(pod = %rec.id, error = %e, "pause start failed too"),
        }
        if let Some(e) = failed {
            // Keep what was made (the CNI result, for DEL's prevResult) on disk before the rollback.
            let _ = self.save(rec);
            return Err(e);
        }
        rec.state = PodState::Ready;
        rec.step = "ready".into();
        self.save(rec)?;
        self.watch_pause(&rec.id);
        Ok(())
    }

    /// Pod files, the shm mount, then the pause; returns the pause's pid.
    async fn start_pause(
        &self,
        rec: &PodRecord,
        p: &NewPod,
        runtime: &Arc<dyn crate::oci::OciRuntime>,
    ) -> Result<u32> {
        let pod_files = PodFiles::in_dir(&PodRecord::files_dir(&self.dirs, &rec.id));
        files::write(
            &pod_files,
            &rec.hostname,
            p.dns.as_ref(),
            rec.namespaces.host_network(),
        )
        .ctx("write the pod files")?;
        let dir = PodRecord::files_dir(&self.dirs, &rec.id);
        crate::state::set_mode(&dir, crate::state::private_dir_mode(rec.userns.is_some()))
            .ctx(format!("chmod {}", dir.display()))?;
        if let Some(shm) = &rec.shm {
            files::mount_shm(shm).ctx("mount the pod /dev/shm")?;
        }
        self.pause_prepared
            .get_or_try_init(|| async {
                crate::oci::pause::prepare_rootfs(&self.pause_rootfs, &self.pause_binary)
            })
            .await
            .ctx("prepare the pause root")?;
        let params = pause::PauseParams {
            rec,
            rootfs: &self.pause_rootfs,
            sysctls: &p.sysctls,
        };
        let m = pause::start(
            runtime,
            self.monitor_binary.clone(),
            &self.pause_dir(&rec.id),
            &params,
        )
        .await
        .ctx("start the pause container")?;
        // systemd: the pause into its scope in the pod's slice, its monitor into one of its own,
        // both before any container of the pod starts (the rollback stops them).
        if let Some(cg) = rec.pod_cgroup() {
            self.cgroups
                .place_pause(&cg, &rec.id, m.pid, m.container_pid)
                .await
                .ctx("place the pause and its monitor in systemd scopes")?;
        }
        Ok(m.container_pid)
    }
}

/// The pod's hostname: the host's with the host network, else the requested one or the pod name.
fn effective_hostname(p: &NewPod) -> String {
    if p.namespaces.host_network() {
        return nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
    }
    if p.hostname.is_empty() {
        // A pod name may be longer than the 64 bytes a hostname can hold: cut it at a character.
        let mut end = p.key.name.len().min(63);
        while !p.key.name.is_char_boundary(end) {
            end -= 1;
        }
        p.key.name[..end].to_string()
    } else {
        p.hostname.clone()
    }
}

/// Whether a sysctl names a network interface other than `all`, `default` or `lo` (such as
/// `net.ipv4.conf.eth0.forwarding`): then CNI must make the interface before the pause applies it.
fn needs_interfaces(sysctls: &HashMap<String, String>) -> bool {
    sysctls.keys().any(|k| {
        let parts: Vec<&str> = k.split('.').collect();
        parts.len() > 4
            && parts[0] == "net"
            && matches!(parts[2], "conf" | "neigh")
            && !matches!(parts[3], "all" | "default" | "lo")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_sysctls_wait_for_cni() {
        let m = |k: &str| [(k.to_string(), "1".to_string())].into();
        assert!(needs_interfaces(&m("net.ipv4.conf.eth0.forwarding")));
        assert!(!needs_interfaces(&m("net.ipv4.conf.all.forwarding")));
        assert!(!needs_interfaces(&m("net.ipv4.ip_unprivileged_port_start")));
        assert!(!needs_interfaces(&m("kernel.msgmax")));
    }
}
