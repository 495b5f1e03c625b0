//! The pod record (`<root>/pods/<id>.json`): what the pod is (metadata, config crust needs later) and
//! what it holds (cgroup, netns, CNI result, files, pause). Each resource's field is set and written
//! *before* the resource is made, so a crash leaves a record that says what to undo.

use std::collections::HashMap;
use std::path::PathBuf;

use cri_api::v1;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::error::ResultExt;
use crate::state::Dirs;

/// Where a pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    /// RunPodSandbox is under way (or crashed mid-way: roll back).
    Creating,
    /// Fully made; ready while the pause lives.
    Ready,
    /// StopPodSandbox ran: pause stopped, network torn down.
    Stopped,
}

/// One id mapping of a user namespace: `length` ids from `container_id` inside are `host_id`… outside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMap {
    /// The `uid_map`/`gid_map` line.
    pub fn line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }

    /// Whether the id inside the namespace is mapped.
    pub fn maps(&self, id: u32) -> bool {
        id >= self.container_id && u64::from(id) < u64::from(self.container_id) + u64::from(self.length)
    }

    /// As the CRI message.
    pub fn to_cri(self) -> v1::IdMapping {
        v1::IdMapping {
            host_id: self.host_id,
            container_id: self.container_id,
            length: self.length,
        }
    }
}

/// A pod's own user namespace (`hostUsers: false`): kubelet's mappings, one for uids, one for gids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNs {
    pub uids: IdMap,
    pub gids: IdMap,
}

/// The namespace choices of the pod (CRI `NamespaceOption`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    pub network: i32,
    pub pid: i32,
    pub ipc: i32,
    #[serde(default)]
    pub target_id: String,
    /// The pod's user namespace; `None`: the host's.
    #[serde(default)]
    pub userns: Option<UserNs>,
}

impl Namespaces {
    /// From the request (missing → all POD).
    pub fn from_cri(o: Option<&v1::NamespaceOption>) -> Self {
        o.map(|o| Namespaces {
            network: o.network,
            pid: o.pid,
            ipc: o.ipc,
            target_id: o.target_id.clone(),
            userns: None,
        })
        .unwrap_or_default()
    }

    /// As the CRI message.
    pub fn to_cri(&self) -> v1::NamespaceOption {
        v1::NamespaceOption {
            network: self.network,
            pid: self.pid,
            ipc: self.ipc,
            target_id: self.target_id.clone(),
            userns_options: self.userns.map(|u| v1::UserNamespace {
                mode: v1::NamespaceMode::Pod as i32,
                uids: vec![u.uids.to_cri()],
                gids: vec![u.gids.to_cri()],
            }),
        }
    }

    /// The pod uses the host's network namespace.
    pub fn host_network(&self) -> bool {
        self.network == v1::NamespaceMode::Node as i32
    }

    /// The pod uses the host's IPC namespace.
    pub fn host_ipc(&self) -> bool {
        self.ipc == v1::NamespaceMode::Node as i32
    }

    /// The pod uses the host's PID namespace.
    pub fn host_pid(&self) -> bool {
        self.pid == v1::NamespaceMode::Node as i32
    }
}

/// The CNI side of a pod: the network used, as it was at ADD (so DEL uses the same), and the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The network's name.
    pub name: String,
    /// The whole conflist the ADD ran.
    pub config: serde_json::Value,
    /// The ADD result (`prevResult` for DEL); `None` until ADD succeeded.
    pub result: Option<serde_json::Value>,
    /// Port mappings passed as the `portMappings` capability (needed again at DEL).
    #[serde(default)]
    pub port_mappings: Vec<crust_cni::PortMapping>,
    /// The `ipRanges` capability, when a pod CIDR was set.
    #[serde(default)]
    pub ip_ranges: Vec<Vec<crust_cni::IpRange>>,
    /// The `bandwidth` capability, from the pod's bandwidth annotations.
    #[serde(default)]
    pub bandwidth: Option<crust_cni::Bandwidth>,
}

/// One pod, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The record's format (`crate::state::format`).
    #[serde(default)]
    pub format: crate::state::format::Format<{ crate::state::format::POD_RECORD }>,
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub state: PodState,
    /// The last creation step reached (for messages and recovery).
    pub step: String,
    pub created_at: i64,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub hostname: String,
    pub log_directory: String,
    pub runtime_handler: String,
    pub namespaces: Namespaces,
    /// The pod cgroup (relative, no leading '/'); set before it is created.
    pub cgroup: Option<String>,
    /// With the systemd cgroup driver: the pod's slice, whose path `cgroup` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<String>,
    /// crust made `slice` (the request named no parent) and stops it with the pod.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slice_owned: bool,
    /// The pinned netns; set before it is made. `None`: host network.
    pub netns: Option<PathBuf>,
    /// The pinned user namespace (owner of the netns); set before it is made. `None`: the host's.
    #[serde(default)]
    pub userns: Option<PathBuf>,
    /// The CNI network; set before ADD.
    pub network: Option<NetworkRecord>,
    /// Pod IPs, primary first.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The pod's /dev/shm tmpfs; set before it is mounted. `None`: host IPC.
    pub shm: Option<PathBuf>,
    /// The pause has been asked for (its monitor may exist).
    #[serde(default)]
    pub pause_started: bool,
    /// The pause's pid once running.
    #[serde(default)]
    pub pause_pid: u32,
    /// The pod-level resources kubelet last reported (UpdatePodSandboxResources), as OCI
    /// `linux.resources` objects: `{"overhead": …, "resources": …}`.
    #[serde(default)]
    pub resources: Option<serde_json::Value>,
    /// The pod's `security_context.privileged`, as RunPodSandbox asked: what CreateContainer trusts,
    /// not the request's copy of the sandbox config. `None` in a record of an older crustd.
    #[serde(default)]
    pub privileged: Option<bool>,
    /// The pod's namespaced sysctls (dotted keys), applied to its containers too.
    #[serde(default)]
    pub sysctls: HashMap<String, String>,
    /// ListPodSandbox's entry, kept once written (all but the state is fixed from creation on).
    #[serde(skip)]
    pub listed: crate::wire::Frozen,
}

impl PodRecord {
    /// Where the pod's cgroup is (`None` before one was chosen, or after it was removed).
    pub fn pod_cgroup(&self) -> Option<crate::cgroups::PodCgroup> {
        Some(crate::cgroups::PodCgroup {
            path: self.cgroup.clone()?,
            slice: self.slice.clone(),
            owned: self.slice_owned,
        })
    }

    /// The key of the name reservation.
    pub fn name_key(&self) -> NameKey {
        NameKey {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            uid: self.uid.clone(),
            attempt: self.attempt,
        }
    }

    /// The record file.
    pub fn path(dirs: &Dirs, id: &str) -> PathBuf {
        dirs.pod_records().join(format!("{id}.json"))
    }

    /// Writes the record atomically.
    pub fn save(&self, dirs: &Dirs) -> Result<()> {
        let p = Self::path(dirs, &self.id);
        crate::state::write_json(&p, self).ctx(format!("write pod record {}", p.display()))
    }

    /// Removes the record (idempotent).
    pub fn delete(dirs: &Dirs, id: &str) -> Result<()> {
        let p = Self::path(dirs, id);
        crate::state::remove_file_idempotent(&p).ctx(format!("remove pod record {}", p.display()))
    }

    /// Loads every record; one that cannot be read fails the load (crustd does not start without it).
    pub fn load_all(dirs: &Dirs) -> Result<Vec<PodRecord>> {
        let d = dirs.pod_records();
        crate::state::read_all_json(&d)
            .map_err(|e| crate::Error::io(format!("load the pod records in {}", d.display()), e))
    }

    /// The pause container's state dir (monitor files) and bundle.
    pub fn pause_dir(dirs: &Dirs, id: &str) -> PathBuf {
        dirs.pod_state(id).join("pause")
    }

    /// The pod's files dir (`<state>/pods/<id>`).
    pub fn files_dir(dirs: &Dirs, id: &str) -> PathBuf {
        dirs.pod_state(id)
    }
}

/// What makes two RunPodSandbox requests the same pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

impl std::fmt::Display for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}_{}_{}_{}",
            self.name, self.namespace, self.uid, self.attempt
        )
    }
}
