//! `Cgroups`: the driver in effect and what it means for a pod and its containers — where the pod's
//! cgroup is (from the request's parent), making and removing it, the runtime's `cgroupsPath`, and,
//! with the systemd driver, the scopes crust asks systemd for: the pause's in the pod's slice, each
//! monitor's in `system.slice`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::driver::{self, Driver};
use super::slice;
use super::systemd::{ScopeSpec, SystemdManager};
use crate::{Error, Result};

/// The request field a pod's parent comes from.
const PARENT_FIELD: &str = "config.linux.cgroup_parent";

/// Where a pod's cgroup is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodCgroup {
    /// The cgroup, relative to the cgroup root (for stats and, with cgroupfs, to make and remove).
    pub path: String,
    /// The pod's slice (systemd driver); `None` with cgroupfs.
    pub slice: Option<String>,
    /// crust made the slice (the request named none) and stops it with the pod; a slice the
    /// request named is kubelet's, left alone.
    pub owned: bool,
}

/// The cgroup driver and, with systemd, the connection to it.
#[derive(Debug, Clone)]
pub struct Cgroups {
    driver: Driver,
    /// The configured parent for pods whose request names none (already defaulted by driver).
    default_parent: String,
    systemd: Option<Arc<dyn SystemdManager>>,
}

impl Cgroups {
    /// The driver `setting` resolves to here, with `parent` (empty: the driver's default) for pods
    /// without one; the systemd driver talks to systemd over D-Bus.
    pub fn new(setting: &str, parent: &str) -> Result<Self> {
        let d = driver::resolve(setting, driver::systemd_booted())
            .map_err(|e| Error::invalid("runtime.cgroup_driver", e))?;
        let mgr: Option<Arc<dyn SystemdManager>> = match d {
            Driver::Systemd => Some(Arc::new(super::dbus::Dbus::default())),
            Driver::Cgroupfs => None,
        };
        Self::with_manager(d, parent, mgr)
    }

    /// As [`Cgroups::new`] with a given driver and systemd manager (tests pass a double).
    pub fn with_manager(d: Driver, parent: &str, systemd: Option<Arc<dyn SystemdManager>>) -> Result<Self> {
        let parent = if parent.is_empty() {
            driver::default_parent(d).to_string()
        } else {
            parent.to_string()
        };
        check_config_parent(d, &parent).map_err(|e| Error::invalid("runtime.cgroup_parent", e))?;
        if d == Driver::Systemd && systemd.is_none() {
            return Err(Error::Internal(
                "the systemd cgroup driver needs a systemd manager".into(),
            ));
        }
        Ok(Cgroups {
            driver: d,
            default_parent: parent,
            systemd,
        })
    }

    /// The driver in effect.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Whether the OCI runtime runs in its systemd mode (`--systemd-cgroup`).
    pub fn systemd(&self) -> bool {
        self.driver == Driver::Systemd
    }

    fn manager(&self) -> Result<&Arc<dyn SystemdManager>> {
        self.systemd
            .as_ref()
            .ok_or_else(|| Error::Internal("no systemd manager (cgroupfs driver)".into()))
    }

    /// Where pod `pod_id` goes, from its request's `cgroup_parent` (empty: the configured parent).
    /// cgroupfs: `<parent>/<pod id>`. systemd: the slice the request names (kubelet's pod slice,
    /// as a name or its path), else `<configured parent stem>-pod<id>.slice`, crust's own. Unsafe
    /// or mismatched parents are `InvalidArgument` naming the field.
    pub fn pod_cgroup(&self, raw_parent: &str, pod_id: &str) -> Result<PodCgroup> {
        match self.driver {
            Driver::Cgroupfs => {
                let parent = if raw_parent.is_empty() {
                    self.default_parent.clone()
                } else {
                    if raw_parent.trim_end_matches('/').ends_with(".slice") {
                        return Err(Error::invalid(
                            PARENT_FIELD,
                            format!(
                                "{raw_parent:?} is a systemd slice, but crust runs the cgroupfs cgroup driver \
                                 (runtime.cgroup_driver); kubelet's cgroupDriver must match"
                            ),
                        ));
                    }
                    super::normalize(raw_parent).map_err(|e| Error::invalid(PARENT_FIELD, e.to_string()))?
                };
                Ok(PodCgroup {
                    path: format!("{}/{pod_id}", parent.trim_matches('/')),
                    slice: None,
                    owned: false,
                })
            }
            Driver::Systemd => {
                let (name, owned) = if raw_parent.is_empty() {
                    let s = slice::pod_slice(&self.default_parent, pod_id)
                        .map_err(|e| Error::invalid("runtime.cgroup_parent", e))?;
                    (s, true)
                } else {
                    let s = slice::parse_parent(raw_parent).map_err(|e| Error::invalid(PARENT_FIELD, e))?;
                    (s, false)
                };
                let path = slice::expand_slice(&name).map_err(|e| Error::invalid(PARENT_FIELD, e))?;
                Ok(PodCgroup {
                    path,
                    slice: Some(name),
                    owned,
                })
            }
        }
    }

    /// Makes the pod's cgroup. With systemd nothing is made here: a slice comes into being when the
    /// first unit in it starts (the pause's scope).
    pub fn create_pod(&self, pod: &PodCgroup) -> Result<()> {
        if pod.slice.is_some() {
            return Ok(());
        }
        super::create(&pod.path)
    }

    /// Removes what the pod's cgroup holds of crust's: cgroupfs, the cgroup tree (processes left in it
    /// killed first); systemd, the pause's and its monitor's scopes (gone already when they emptied),
    /// and the slice if crust made it. Idempotent.
    pub async fn remove_pod(&self, pod: &PodCgroup, pod_id: &str) -> Result<()> {
        let Some(slice) = &pod.slice else {
            super::kill_all(&pod.path, std::time::Duration::from_secs(5)).await;
            return super::remove(&pod.path);
        };
        let mgr = self.manager()?;
        let mut units = vec![slice::pause_scope(pod_id), slice::monitor_scope(pod_id)];
        if pod.owned {
            units.push(slice.clone());
        }
        for u in units {
            mgr.stop_unit(&u).await?;
        }
        Ok(())
    }

    /// The pause's cgroup path (for stats and killing leftovers) and, for its spec, its
    /// `cgroupsPath` in the runtime's terms.
    pub fn pause_paths(pod: &PodCgroup, pod_id: &str) -> (String, String) {
        match &pod.slice {
            None => {
                let rel = format!("{}/pause", pod.path.trim_matches('/'));
                (rel.clone(), format!("/{rel}"))
            }
            Some(s) => (
                format!("{}/{}", pod.path, slice::pause_scope(pod_id)),
                slice::cgroups_path(s, &format!("pause-{pod_id}")),
            ),
        }
    }

    /// Container `id`'s cgroup path (for stats, OOM and `cgroup.kill`) and the spec's `cgroupsPath`.
    pub fn container_paths(pod_path: &str, pod_slice: Option<&str>, id: &str) -> (String, String) {
        let pod_path = pod_path.trim_matches('/');
        match pod_slice {
            None => (format!("{pod_path}/{id}"), format!("/{pod_path}/{id}")),
            Some(s) => (
                format!("{pod_path}/{}", slice::container_scope(id)),
                slice::cgroups_path(s, id),
            ),
        }
    }

    /// systemd: moves the pause (in its own scope in the pod's slice, no device access; the pod's
    /// limits are the slice's, which kubelet sets) and its monitor (in its scope) out of crustd's
    /// unit. A scope the second start cannot make leaves the first stopped. cgroupfs: nothing (the
    /// launcher put the pause in its cgroup; the monitor stays in crustd's). The two scopes are made
    /// side by side (one D-Bus round trip on RunPodSandbox's path, not two). When the monitor's
    /// cannot be made the pause's is stopped; when the pause's cannot, the monitor's stays for the
    /// pod's rollback (`remove_pod`), which stops the pause first: stopping the monitor's scope here
    /// would kill the monitor and leave the pause, its child, outside any scope.
    pub async fn place_pause(
        &self,
        pod: &PodCgroup,
        pod_id: &str,
        monitor_pid: u32,
        pause_pid: u32,
    ) -> Result<()> {
        let Some(slice) = &pod.slice else { return Ok(()) };
        let mgr = self.manager()?;
        let pause = ScopeSpec {
            name: slice::pause_scope(pod_id),
            slice: slice.clone(),
            pids: vec![pause_pid],
            description: format!("crust pause of pod {pod_id}"),
            no_devices: true,
            ..Default::default()
        };
        let (paused, monitored) = tokio::join!(
            mgr.start_transient_scope(&pause),
            self.place_monitor(pod_id, monitor_pid)
        );
        paused?;
        if let Err(e) = monitored {
            if let Err(u) = mgr.stop_unit(&pause.name).await {
                tracing::warn!(unit = %pause.name, error = %u, "stopping the pause scope after a failure");
            }
            return Err(e);
        }
        Ok(())
    }

    /// systemd: moves monitor `monitor_pid` of container `id` (the pod ID for the pause's) into
    /// `crust-monitor-<id>.scope` in `system.slice`, so that a restart or stop of crustd's unit
    /// leaves it. cgroupfs: nothing.
    pub async fn place_monitor(&self, id: &str, monitor_pid: u32) -> Result<()> {
        if self.driver != Driver::Systemd {
            return Ok(());
        }
        let scope = ScopeSpec {
            name: slice::monitor_scope(id),
            slice: slice::MONITOR_SLICE.into(),
            pids: vec![monitor_pid],
            description: format!("crust monitor of container {id}"),
            ..Default::default()
        };
        match self.manager()?.start_transient_scope(&scope).await {
            // A short-lived container's monitor may have recorded the exit and ended already
            // (systemd: "Process with ID … does not exist"): there is nothing left to place.
            Err(e) if !alive(monitor_pid) => {
                tracing::debug!(%id, error = %e, "the monitor ended before it could be placed");
                Ok(())
            }
            r => r,
        }
    }

    /// systemd: stops container `id`'s monitor scope (idempotent; it went by itself when the monitor
    /// exited). cgroupfs: nothing.
    pub async fn remove_monitor(&self, id: &str) -> Result<()> {
        if self.driver != Driver::Systemd {
            return Ok(());
        }
        self.manager()?.stop_unit(&slice::monitor_scope(id)).await
    }
}

/// The configured parent must suit the driver: a relative cgroup path (cgroupfs), a slice name
/// (systemd).
pub fn check_config_parent(d: Driver, parent: &str) -> std::result::Result<(), String> {
    match d {
        Driver::Cgroupfs => {
            if parent.starts_with('/')
                || parent.split('/').any(|p| p == "..")
                || parent.trim_matches('/').is_empty()
            {
                Err("must be a relative cgroup path without \"..\"".into())
            } else {
                Ok(())
            }
        }
        Driver::Systemd => slice::check_slice(parent).map(drop),
    }
}

/// Whether process `pid` is running (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    crate::sys::proc_stat(pid).is_some_and(|s| s.state != 'Z')
}

#[cfg(test)]
mod tests {
    use super::super::systemd::Recording;
    use super::*;

    fn systemd() -> (Cgroups, Arc<Recording>) {
        let rec = Arc::new(Recording::default());
        let c =
            Cgroups::with_manager(Driver::Systemd, "", Some(rec.clone() as Arc<dyn SystemdManager>)).unwrap();
        (c, rec)
    }

    #[test]
    fn pod_cgroups_by_driver() {
        let fs = Cgroups::with_manager(Driver::Cgroupfs, "", None).unwrap();
        assert_eq!(fs.pod_cgroup("", "p1").unwrap().path, "crust/p1");
        assert_eq!(
            fs.pod_cgroup("/kubepods/burstable/podx", "p1").unwrap().path,
            "kubepods/burstable/podx/p1"
        );
        for bad in ["/", "/a/../b", "kubepods-burstable-podx.slice"] {
            let e = fs.pod_cgroup(bad, "p1").unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument { field, .. } if field == PARENT_FIELD),
                "{bad}: {e}"
            );
        }

        let (sd, _) = systemd();
        let own = sd.pod_cgroup("", "p1").unwrap();
        assert_eq!(
            own,
            PodCgroup {
                path: "crust.slice/crust-podp1.slice".into(),
                slice: Some("crust-podp1.slice".into()),
                owned: true
            }
        );
        let kube = sd
            .pod_cgroup("kubepods-burstable-pod1234_5678.slice", "p1")
            .unwrap();
        assert_eq!(
            kube.path,
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice"
        );
        assert!(!kube.owned);
        let kube2 = sd
            .pod_cgroup(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice",
                "p1",
            )
            .unwrap();
        assert_eq!(kube, kube2);
        for bad in ["/", "..", "/kubepods/burstable/podx", "crust", "-.slice"] {
            let e = sd.pod_cgroup(bad, "p1").unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument { field, .. } if field == PARENT_FIELD),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn config_parent_must_suit_the_driver() {
        assert!(Cgroups::with_manager(Driver::Cgroupfs, "crust.slice", None).is_ok());
        assert!(Cgroups::with_manager(Driver::Cgroupfs, "/abs", None).is_err());
        let rec: Arc<dyn SystemdManager> = Arc::new(Recording::default());
        assert!(Cgroups::with_manager(Driver::Systemd, "crust", Some(rec.clone())).is_err());
        let c = Cgroups::with_manager(Driver::Systemd, "kubepods-besteffort.slice", Some(rec)).unwrap();
        assert_eq!(
            c.pod_cgroup("", "ab").unwrap().slice.as_deref(),
            Some("kubepods-besteffort-podab.slice")
        );
    }

    #[test]
    fn runtime_paths() {
        assert_eq!(
            Cgroups::container_paths("crust/p1", None, "c1"),
            ("crust/p1/c1".to_string(), "/crust/p1/c1".to_string())
        );
        assert_eq!(
            Cgroups::container_paths(
                "kubepods.slice/kubepods-pod1.slice",
                Some("kubepods-pod1.slice"),
                "c1"
            ),
            (
                "kubepods.slice/kubepods-pod1.slice/crust-c1.scope".to_string(),
                "kubepods-pod1.slice:crust:c1".to_string()
            )
        );
        let (sd, _) = systemd();
        let pod = sd.pod_cgroup("kubepods-pod1.slice", "p1").unwrap();
        assert_eq!(
            Cgroups::pause_paths(&pod, "p1"),
            (
                "kubepods.slice/kubepods-pod1.slice/crust-pause-p1.scope".to_string(),
                "kubepods-pod1.slice:crust:pause-p1".to_string()
            )
        );
    }

    #[tokio::test]
    async fn systemd_scopes_for_pause_and_monitors() {
        let (sd, rec) = systemd();
        let pod = sd.pod_cgroup("", "p1").unwrap();
        sd.create_pod(&pod).unwrap();
        sd.place_pause(&pod, "p1", 100, 101).await.unwrap();
        sd.place_monitor("c1", 200).await.unwrap();
        {
            let started = rec.started.lock().unwrap();
            assert_eq!(started.len(), 3);
            assert_eq!(started[0].name, "crust-pause-p1.scope");
            assert_eq!(started[0].slice, "crust-podp1.slice");
            assert_eq!(started[0].pids, vec![101]);
            assert!(started[0].no_devices);
            assert_eq!(started[1].name, "crust-monitor-p1.scope");
            assert_eq!(started[1].slice, "system.slice");
            assert_eq!(started[1].pids, vec![100]);
            assert_eq!(started[2].name, "crust-monitor-c1.scope");
            assert_eq!(started[2].pids, vec![200]);
        }
        sd.remove_monitor("c1").await.unwrap();
        sd.remove_pod(&pod, "p1").await.unwrap();
        assert_eq!(
            rec.stopped_names(),
            vec![
                "crust-monitor-c1.scope",
                "crust-pause-p1.scope",
                "crust-monitor-p1.scope",
                "crust-podp1.slice"
            ]
        );
        // kubelet's slice is left to kubelet.
        let kube = sd.pod_cgroup("kubepods-pod2.slice", "p2").unwrap();
        sd.remove_pod(&kube, "p2").await.unwrap();
        assert!(!rec.stopped_names().contains(&"kubepods-pod2.slice".to_string()));
    }

    #[tokio::test]
    async fn a_failed_monitor_scope_stops_the_pause_scope() {
        let (sd, rec) = systemd();
        rec.fail.lock().unwrap().push("crust-monitor-p1.scope".into());
        let pod = sd.pod_cgroup("", "p1").unwrap();
        // A monitor that runs (this process) and cannot be placed fails the pod.
        assert!(sd.place_pause(&pod, "p1", std::process::id(), 101).await.is_err());
        assert_eq!(rec.started_names(), vec!["crust-pause-p1.scope"]);
        assert_eq!(rec.stopped_names(), vec!["crust-pause-p1.scope"]);
    }

    #[tokio::test]
    async fn a_failed_pause_scope_leaves_the_monitor_scope_to_the_rollback() {
        let (sd, rec) = systemd();
        rec.fail.lock().unwrap().push("crust-pause-p1.scope".into());
        let pod = sd.pod_cgroup("", "p1").unwrap();
        assert!(sd.place_pause(&pod, "p1", std::process::id(), 101).await.is_err());
        // Both were asked for at once; the monitor's scope stays until the rollback stops the pod's.
        assert_eq!(rec.started_names(), vec!["crust-monitor-p1.scope"]);
        assert!(rec.stopped_names().is_empty());
        sd.remove_pod(&pod, "p1").await.unwrap();
        assert_eq!(
            rec.stopped_names(),
            vec![
                "crust-pause-p1.scope",
                "crust-monitor-p1.scope",
                "crust-podp1.slice"
            ]
        );
    }

    #[tokio::test]
    async fn a_monitor_gone_before_its_placement_is_not_an_error() {
        let (sd, rec) = systemd();
        rec.fail.lock().unwrap().push("crust-monitor-c1.scope".into());
        // The monitor of a container that ended at once, reaped already: no such process.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        sd.place_monitor("c1", gone).await.unwrap();
        assert!(sd.place_monitor("c1", std::process::id()).await.is_err());
    }

    #[tokio::test]
    async fn cgroupfs_makes_no_units() {
        let fs = Cgroups::with_manager(Driver::Cgroupfs, "", None).unwrap();
        fs.place_monitor("c1", 1).await.unwrap();
        fs.remove_monitor("c1").await.unwrap();
        assert!(!fs.systemd());
    }
}
