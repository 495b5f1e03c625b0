//! PodSandboxStatus and ListPodSandbox, served from memory.

use std::collections::{HashMap, HashSet};

use cri_api::v1;

use super::record::PodRecord;
use super::{Inner, Sandboxes, pause};

/// ListPodSandbox's filter.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Full ID or prefix.
    pub id: String,
    pub state: Option<v1::PodSandboxState>,
    pub labels: HashMap<String, String>,
}

impl ListFilter {
    /// `Some(state filter)` when the filter is on the state alone (the lists whose responses are kept).
    fn state_only(&self) -> Option<Option<i32>> {
        (self.id.is_empty() && self.labels.is_empty()).then(|| self.state.map(|s| s as i32))
    }
}

impl Inner {
    fn cri_state(&self, rec: &PodRecord) -> v1::PodSandboxState {
        self.cri_state_among(rec, &self.running.watched())
    }

    /// `cri_state`, with the watched pause IDs already locked.
    pub(super) fn cri_state_among(&self, rec: &PodRecord, watched: &HashSet<String>) -> v1::PodSandboxState {
        if self.is_ready_among(rec, watched) {
            v1::PodSandboxState::SandboxReady
        } else {
            v1::PodSandboxState::SandboxNotready
        }
    }
}

fn metadata(rec: &PodRecord) -> v1::PodSandboxMetadata {
    v1::PodSandboxMetadata {
        name: rec.name.clone(),
        uid: rec.uid.clone(),
        namespace: rec.namespace.clone(),
        attempt: rec.attempt,
    }
}

/// Whether every selector label is on the pod with the same value.
pub fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Sandboxes {
    /// PodSandboxStatus (and, when `verbose`, the `info` map with the pause pid and runtime spec).
    pub fn status(
        &self,
        id: &str,
        verbose: bool,
    ) -> crate::Result<(v1::PodSandboxStatus, HashMap<String, String>)> {
        let inner = &self.inner;
        if !verbose {
            // Every pod's status is asked for every second: built under the lock, no record copied.
            return inner.with_pod(id, |rec| (status_of(inner, rec), HashMap::new()));
        }
        let rec = inner.get(id)?;
        let status = status_of(inner, &rec);
        let mut info = HashMap::new();
        let ctx = inner.context(&rec);
        let v = serde_json::json!({
            "pid": rec.pause_pid,
            "state": rec.state,
            "step": rec.step,
            "netnsPath": ctx.netns_path,
            "cgroupParent": ctx.cgroup_parent,
            "runtimeHandler": rec.runtime_handler,
            "runtimeSpec": pause::read_spec(&inner.pause_dir(&rec.id)),
            "cniResult": rec.network.as_ref().and_then(|n| n.result.clone()),
            "network": rec.network.as_ref().map(|n| n.name.clone()),
            "resources": rec.resources,
        });
        info.insert("info".to_string(), v.to_string());
        Ok((status, info))
    }

    /// `g` over the pods matching `f`, each with its state, under the pods lock (and the watched pauses
    /// locked once, not once per pod): what both lists are built from.
    fn with_matching<T>(
        &self,
        f: &ListFilter,
        g: impl FnOnce(&mut dyn Iterator<Item = (&PodRecord, v1::PodSandboxState)>) -> T,
    ) -> T {
        let inner = &self.inner;
        let pods = inner.pods.read();
        let watched = inner.running.watched();
        let mut matching = pods
            .values()
            .filter(|r| f.id.is_empty() || r.id.starts_with(&f.id))
            .filter(|r| labels_match(&f.labels, &r.labels))
            .map(|r| (r, inner.cri_state_among(r, &watched)))
            .filter(|(_, state)| f.state.is_none_or(|s| s == *state));
        g(&mut matching)
    }

    /// The versions of the pods and of the watched pauses (see [`crate::wire::Kept`]).
    pub fn versions(&self) -> crate::wire::Versions {
        let pods = self.inner.pods.read();
        let watched = self.inner.running.watched();
        (pods.version(), watched.version())
    }

    /// Whether a response made since `versions` were read may be kept for them: nothing changed
    /// since, and every pod's state comes from them alone.
    pub fn keepable_at(&self, versions: crate::wire::Versions) -> bool {
        let pods = self.inner.pods.read();
        let watched = self.inner.running.watched();
        (pods.version(), watched.version()) == versions && states_are_versioned(&pods, &watched)
    }

    /// ListPodSandbox's response, encoded (`v1::ListPodSandboxResponse`): the same pods in the same
    /// order as [`Sandboxes::list`], written from the records under the lock without building them.
    /// A response made for a filter on the state alone is kept until a pod or the set of watched
    /// pauses changes: kubelet relists a node's pods every second, and they seldom change.
    pub fn list_encoded(&self, f: &ListFilter) -> bytes::Bytes {
        let keep = f.state_only();
        let (kept, versions) = (&self.inner.kept, self.versions());
        if let Some(b) = keep.and_then(|state| kept.get(&state, versions)) {
            return b;
        }
        let response = self.with_matching(f, |pods| {
            let mut items = crate::wire::Items::with_capacity(128, 256);
            for (r, state) in pods {
                items.push((r.created_at, r.id.as_str()), |b| encode_pod(r, state, b));
            }
            bytes::Bytes::from(items.into_message(1))
        });
        if let Some(state) = keep.filter(|_| self.keepable_at(versions)) {
            kept.put(state, versions, response.clone());
        }
        response
    }

    /// ListPodSandbox, built under the lock without copying the records.
    pub fn list(&self, f: &ListFilter) -> Vec<v1::PodSandbox> {
        let mut out: Vec<v1::PodSandbox> =
            self.with_matching(f, |pods| pods.map(|(r, state)| pod_of(r, state)).collect());
        out.sort_unstable_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        out
    }
}

/// Whether every pod's state comes from the records and the watched pauses alone: a ready pod whose
/// pause is not watched has it from the pause's files, which no version covers.
fn states_are_versioned(
    pods: &std::collections::BTreeMap<String, PodRecord>,
    watched: &HashSet<String>,
) -> bool {
    pods.values()
        .all(|r| r.state != super::PodState::Ready || watched.contains(&r.id))
}

/// One `v1::PodSandbox` of ListPodSandbox.
fn pod_of(r: &PodRecord, state: v1::PodSandboxState) -> v1::PodSandbox {
    v1::PodSandbox {
        id: r.id.clone(),
        metadata: Some(metadata(r)),
        state: state as i32,
        created_at: r.created_at,
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    }
}

/// [`pod_of`] encoded (the message's body, without key and length) straight from the record.
pub(super) fn encode_pod(r: &PodRecord, state: v1::PodSandboxState, buf: &mut Vec<u8>) {
    use crate::wire::{put_map, put_msg_head, put_str, put_varint, str_len, varint_len};
    let head = |buf: &mut Vec<u8>| {
        let meta = str_len(1, &r.name)
            + str_len(2, &r.uid)
            + str_len(3, &r.namespace)
            + varint_len(4, r.attempt.into());
        put_str(1, &r.id, buf);
        put_msg_head(2, meta, buf);
        put_str(1, &r.name, buf);
        put_str(2, &r.uid, buf);
        put_str(3, &r.namespace, buf);
        put_varint(4, r.attempt.into(), buf);
    };
    let tail = |buf: &mut Vec<u8>| {
        put_varint(4, r.created_at as u64, buf);
        put_map(5, &r.labels, buf);
        put_map(6, &r.annotations, buf);
        put_str(7, &r.runtime_handler, buf);
    };
    r.listed.put(3, state as i32 as u64, buf, head, tail);
}

/// A pod's CRI status (without the verbose info).
fn status_of(inner: &Inner, rec: &PodRecord) -> v1::PodSandboxStatus {
    let mut ips = rec.ips.iter();
    let network = v1::PodSandboxNetworkStatus {
        ip: ips.next().cloned().unwrap_or_default(),
        additional_ips: ips.map(|ip| v1::PodIp { ip: ip.clone() }).collect(),
    };
    v1::PodSandboxStatus {
        id: rec.id.clone(),
        metadata: Some(metadata(rec)),
        state: inner.cri_state(rec) as i32,
        created_at: rec.created_at,
        network: Some(network),
        linux: Some(v1::LinuxPodSandboxStatus {
            namespaces: Some(v1::Namespace {
                options: Some(rec.namespaces.to_cri()),
            }),
        }),
        labels: rec.labels.clone(),
        annotations: rec.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn encoded_pod_is_the_built_one() {
        let pod = |id: &str, created_at: i64, attempt: u32, labels: serde_json::Value| -> PodRecord {
            serde_json::from_value(serde_json::json!({
                "id": id, "name": "web-0", "namespace": "Default", "uid": "u-1", "attempt": attempt,
                "state": "ready", "step": "ready", "created_at": created_at, "labels": labels,
                "annotations": {"kubernetes.io/config.seen": "2026", "": "x".repeat(200)},
                "hostname": "h", "log_directory": "/var/log/pods/x", "runtime_handler": "",
                "namespaces": {"network": 0, "pid": 1, "ipc": 0}, "cgroup": null, "netns": null,
                "network": null,
            }))
            .unwrap()
        };
        let recs = [
            (
                pod("b", 9, 1, serde_json::json!({"app": "web", "t": ""})),
                v1::PodSandboxState::SandboxReady,
            ),
            (
                pod("a", 9, 0, serde_json::json!({})),
                v1::PodSandboxState::SandboxNotready,
            ),
            (
                pod("c", -1, 2, serde_json::json!({"app": "x"})),
                v1::PodSandboxState::SandboxReady,
            ),
        ];
        let mut items = crate::wire::Items::with_capacity(3, 256);
        for (r, state) in &recs {
            let mut got = Vec::new();
            encode_pod(r, *state, &mut got);
            let want = pod_of(r, *state);
            assert_eq!(v1::PodSandbox::decode(&got[..]).unwrap(), want, "{}", r.id);
            assert_eq!(got.len(), want.encoded_len(), "{}", r.id);
            // The entry is kept from the first list on, but for the state, which moves on.
            for later in [
                v1::PodSandboxState::SandboxNotready,
                v1::PodSandboxState::SandboxReady,
            ] {
                let mut again = Vec::new();
                encode_pod(r, later, &mut again);
                assert_eq!(v1::PodSandbox::decode(&again[..]).unwrap(), pod_of(r, later));
            }
            items.push((r.created_at, r.id.as_str()), |b| encode_pod(r, *state, b));
        }
        let list = v1::ListPodSandboxResponse::decode(&items.into_message(1)[..]).unwrap();
        let ids: Vec<_> = list.items.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
    }

    #[test]
    fn label_selector() {
        let labels: HashMap<_, _> = [
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "fe".into()),
        ]
        .into();
        assert!(labels_match(&HashMap::new(), &labels));
        assert!(labels_match(
            &[("app".to_string(), "web".to_string())].into(),
            &labels
        ));
        assert!(!labels_match(
            &[("app".to_string(), "db".to_string())].into(),
            &labels
        ));
        assert!(!labels_match(
            &[("x".to_string(), "web".to_string())].into(),
            &labels
        ));
    }
}
