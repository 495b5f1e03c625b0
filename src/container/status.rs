//! ContainerStatus and ListContainers, from the records in memory (refreshed from exit files).

use std::collections::HashMap;

use cri_api::v1;

use super::Containers;
use super::record::{ContainerRecord, cri_state};
use crate::Result;
use crate::daemon::Daemon;

/// ListContainers / ListContainerStats criteria; every set one must match.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// ID or ID prefix.
    pub id: String,
    pub state: Option<v1::ContainerState>,
    pub pod_id: String,
    pub labels: HashMap<String, String>,
}

impl ListFilter {
    /// `Some(state filter)` when the filter is on the state alone (the lists whose responses are kept).
    fn state_only(&self) -> Option<Option<i32>> {
        (self.id.is_empty() && self.pod_id.is_empty() && self.labels.is_empty())
            .then(|| self.state.map(|s| s as i32))
    }

    pub(super) fn matches(&self, r: &ContainerRecord) -> bool {
        (self.id.is_empty() || r.id.starts_with(&self.id))
            && (self.pod_id.is_empty() || r.pod_id.starts_with(&self.pod_id))
            && self.state.is_none_or(|s| cri_state(r) == s)
            && self.labels.iter().all(|(k, v)| r.labels.get(k) == Some(v))
    }
}

fn image_spec(r: &ContainerRecord) -> v1::ImageSpec {
    v1::ImageSpec {
        image: r.image.clone(),
        annotations: r.image_annotations.clone(),
        user_specified_image: r.user_specified_image.clone(),
        ..Default::default()
    }
}

fn metadata(r: &ContainerRecord) -> v1::ContainerMetadata {
    v1::ContainerMetadata {
        name: r.name.clone(),
        attempt: r.attempt,
    }
}

/// The CRI `Signal` enum value of a signal number (0, RUNTIME_DEFAULT, when it has none); the table is
/// made once (every status asks).
fn cri_signal(n: i32) -> i32 {
    static TABLE: std::sync::OnceLock<HashMap<i32, i32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = HashMap::new();
        for s in (1..=65).filter_map(|v| v1::Signal::try_from(v).ok()) {
            if let Some(n) = super::security::parse_signal(s.as_str_name()) {
                t.entry(n).or_insert(s as i32);
            }
        }
        t
    });
    table.get(&n).copied().unwrap_or(0)
}

/// A container's CRI status (without the verbose info).
fn status_of(r: &ContainerRecord) -> v1::ContainerStatus {
    v1::ContainerStatus {
        id: r.id.clone(),
        metadata: Some(metadata(r)),
        state: cri_state(r) as i32,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        exit_code: r.exit_code,
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        mounts: r.mounts.iter().map(|m| m.to_cri()).collect(),
        log_path: r.log_path.clone(),
        resources: Some(v1::ContainerResources {
            linux: Some(r.resources.to_cri()),
            windows: None,
        }),
        image_id: r.image_id.clone(),
        user: Some(v1::ContainerUser {
            linux: Some(v1::LinuxContainerUser {
                uid: r.uid as i64,
                gid: r.gid as i64,
                supplemental_groups: r.groups.iter().map(|g| *g as i64).collect(),
            }),
        }),
        stop_signal: cri_signal(r.stop_signal),
    }
}

impl Containers {
    /// Records matching `f`, refreshed from exit files (except those of watched, running monitors);
    /// creations in progress are left out.
    pub fn list(&self, f: &ListFilter) -> Vec<ContainerRecord> {
        self.list_map(f, |r| r.clone())
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// `list`, mapped by `map` under the records lock: only records whose exit may have to be taken
    /// from the exit file (not watched, not known to have exited) are copied out and refreshed.
    pub(crate) fn list_map<T>(
        &self,
        f: &ListFilter,
        mut map: impl FnMut(&ContainerRecord) -> T,
    ) -> Vec<(i64, T)> {
        let mut out = Vec::new();
        let mut stale = Vec::new();
        {
            let recs = self.inner.records.read();
            let watched = self.inner.running.watched();
            for r in recs.values() {
                // Creations in progress are left out; the ID and pod are fields no refresh changes.
                if r.step != super::Step::Created
                    || !(f.id.is_empty() || r.id.starts_with(&f.id))
                    || !(f.pod_id.is_empty() || r.pod_id.starts_with(&f.pod_id))
                {
                    continue;
                }
                if super::Inner::needs_refresh_among(r, &watched) {
                    stale.push(r.clone());
                } else if f.matches(r) {
                    out.push((r.created_at, map(r)));
                }
            }
        }
        for r in stale {
            let r = self.inner.refresh(r);
            if f.matches(&r) {
                out.push((r.created_at, map(&r)));
            }
        }
        out
    }

    /// The versions of the records and of the watched monitors (see [`crate::wire::Kept`]).
    pub fn versions(&self) -> crate::wire::Versions {
        let recs = self.inner.records.read();
        let watched = self.inner.running.watched();
        (recs.version(), watched.version())
    }

    /// Whether a response made since `versions` were read may be kept for them: nothing changed
    /// since, and no container's exit is to be taken from its exit file.
    pub fn keepable_at(&self, versions: crate::wire::Versions) -> bool {
        let recs = self.inner.records.read();
        let watched = self.inner.running.watched();
        (recs.version(), watched.version()) == versions
            && !recs
                .values()
                .any(|r| super::Inner::needs_refresh_among(r, &watched))
    }
}

/// One `v1::Container` of ListContainers.
fn container_of(r: &ContainerRecord) -> v1::Container {
    v1::Container {
        id: r.id.clone(),
        pod_sandbox_id: r.pod_id.clone(),
        metadata: Some(metadata(r)),
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        state: cri_state(r) as i32,
        created_at: r.created_at,
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        image_id: r.image_id.clone(),
    }
}

/// [`container_of`] encoded (the message's body, without key and length) straight from the record.
pub(super) fn encode_container(r: &ContainerRecord, buf: &mut Vec<u8>) {
    use crate::wire::{map_len, put_map, put_msg_head, put_str, put_varint, str_len, varint_len};
    let head = |buf: &mut Vec<u8>| {
        let meta = str_len(1, &r.name) + varint_len(2, r.attempt.into());
        let image =
            str_len(1, &r.image) + map_len(2, &r.image_annotations) + str_len(18, &r.user_specified_image);
        put_str(1, &r.id, buf);
        put_str(2, &r.pod_id, buf);
        put_msg_head(3, meta, buf);
        put_str(1, &r.name, buf);
        put_varint(2, r.attempt.into(), buf);
        put_msg_head(4, image, buf);
        put_str(1, &r.image, buf);
        put_map(2, &r.image_annotations, buf);
        put_str(18, &r.user_specified_image, buf);
        put_str(5, &r.image_ref, buf);
    };
    let tail = |buf: &mut Vec<u8>| {
        put_varint(7, r.created_at as u64, buf);
        put_map(8, &r.labels, buf);
        put_map(9, &r.annotations, buf);
        put_str(10, &r.image_id, buf);
    };
    r.listed.put(6, cri_state(r) as i32 as u64, buf, head, tail);
}

impl Daemon {
    /// ListContainers' response, encoded (`v1::ListContainersResponse`): the same containers in the
    /// same order as [`Daemon::list_containers`], written from the records without building them.
    /// A response made for a filter on the state alone is kept until a record or the set of watched
    /// monitors changes: kubelet relists a node's containers every second, and they seldom change.
    pub fn list_containers_encoded(&self, f: &ListFilter) -> bytes::Bytes {
        let keep = f.state_only();
        let (kept, versions) = (&self.containers.inner.kept, self.containers.versions());
        if let Some(b) = keep.and_then(|state| kept.get(&state, versions)) {
            return b;
        }
        let mut items = crate::wire::Items::with_capacity(64, 512);
        self.containers
            .list_map(f, |r| items.push(r.created_at, |b| encode_container(r, b)));
        let response = bytes::Bytes::from(items.into_message(1));
        if let Some(state) = keep.filter(|_| self.containers.keepable_at(versions)) {
            kept.put(state, versions, response.clone());
        }
        response
    }

    /// ListContainers.
    pub fn list_containers(&self, f: &ListFilter) -> Vec<v1::Container> {
        let mut out = self.containers.list_map(f, container_of);
        out.sort_unstable_by_key(|(created, _)| *created);
        out.into_iter().map(|(_, c)| c).collect()
    }

    /// ContainerStatus; `verbose` adds `info["info"]`, a JSON object with the pid and the spec.
    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(v1::ContainerStatus, HashMap<String, String>)> {
        let r = self.containers.get(id)?;
        let status = status_of(&r);
        let mut info = HashMap::new();
        if verbose {
            let dir = self.dirs.container_state(&r.id);
            let spec: serde_json::Value = std::fs::read(dir.join("config.json"))
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok())
                .unwrap_or(serde_json::Value::Null);
            let v = serde_json::json!({
                "pid": r.pid,
                "sandboxID": r.pod_id,
                "runtimeHandler": r.runtime_handler,
                "cgroup": r.cgroup,
                "monitorPid": crate::monitor::monitor_pid(&dir),
                "runtimeSpec": spec,
                // Log lines the monitor dropped because the log's filesystem was full.
                "logLinesDropped": crate::monitor::log_lines_dropped(&dir),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok((status, info))
    }

    /// The statuses of a pod's containers (`pod_id` in full), oldest first: kubelet's evented PLEG
    /// reads them from PodSandboxStatus and from each container event. Built under the records lock,
    /// without copying the records (every pod's status is asked for every second).
    pub fn pod_container_statuses(&self, pod_id: &str) -> Vec<v1::ContainerStatus> {
        let f = ListFilter {
            pod_id: pod_id.to_string(),
            ..Default::default()
        };
        let mut out: Vec<v1::ContainerStatus> = self
            .containers
            .list_map(&f, status_of)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// PodSandboxStatus' response (`v1::PodSandboxStatusResponse`), with `info` when `verbose`.
    pub fn pod_sandbox_status(&self, id: &str, verbose: bool) -> Result<v1::PodSandboxStatusResponse> {
        let (status, info) = self.sandboxes.status(id, verbose)?;
        Ok(v1::PodSandboxStatusResponse {
            containers_statuses: self.pod_container_statuses(&status.id),
            status: Some(status),
            info,
            timestamp: crate::state::now_nanos(),
        })
    }

    /// PodSandboxStatus without `verbose`, encoded: kubelet asks for every pod's status every
    /// second, so the response (but for its timestamp, the last field, written at each call) is kept
    /// until a pod, a container or a watched monitor changes.
    pub fn pod_sandbox_status_encoded(&self, id: &str) -> Result<bytes::Bytes> {
        use prost::Message;
        let versions = (self.sandboxes.versions(), self.containers.versions());
        let body = match self.status_kept.get(id, versions) {
            Some(b) => b,
            None => {
                let mut r = self.pod_sandbox_status(id, false)?;
                r.timestamp = 0;
                let b = bytes::Bytes::from(r.encode_to_vec());
                if self.sandboxes.keepable_at(versions.0) && self.containers.keepable_at(versions.1) {
                    self.status_kept.put(id.to_string(), versions, b.clone());
                }
                b
            }
        };
        let mut out = Vec::with_capacity(body.len() + 11);
        out.extend_from_slice(&body);
        crate::wire::put_varint(4, crate::state::now_nanos() as u64, &mut out);
        Ok(out.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// A record with every field ListContainers shows set (and some left out as proto3 leaves them).
    fn rec(id: &str, created_at: i64, extra: serde_json::Value) -> ContainerRecord {
        let mut v = serde_json::json!({
            "id": id, "pod_id": "p".repeat(64), "name": "ctr-é", "attempt": 3, "step": "created",
            "created_at": created_at, "started_at": 5, "image": "127.0.0.1:5000/busybox:latest",
            "image_annotations": {"a": "1", "": "empty key"}, "user_specified_image": "busybox",
            "image_id": "sha256:1", "image_ref": "127.0.0.1:5000/busybox@sha256:1",
            "labels": {"io.kubernetes.pod.name": "web", "tier": ""},
            "annotations": {"io.kubernetes.container.hash": "abc", "x": "y".repeat(300)},
            "uid": 0, "gid": 0, "stop_signal": 15, "cgroup": "crust/p/c",
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn encoded_container_is_the_built_one() {
        let recs = [
            rec("a", 1, serde_json::json!({})),
            rec(
                "b",
                -7,
                serde_json::json!({"exited": true, "attempt": 0, "labels": {}}),
            ),
            rec(
                "c",
                2,
                serde_json::json!({"step": "creating", "image_annotations": {}}),
            ),
            rec(
                "d",
                0,
                serde_json::json!({"started_at": 0, "user_specified_image": ""}),
            ),
        ];
        for r in &recs {
            let mut got = Vec::new();
            encode_container(r, &mut got);
            let want = container_of(r);
            assert_eq!(v1::Container::decode(&got[..]).unwrap(), want, "{}", r.id);
            assert_eq!(got.len(), want.encoded_len(), "{}", r.id);
            // The entry is kept from the first list on, but for the state, which moves on.
            for (started_at, exited) in [(5, false), (5, true)] {
                let mut later = r.clone();
                later.started_at = started_at;
                later.exited = exited;
                let mut again = Vec::new();
                encode_container(&later, &mut again);
                assert_eq!(v1::Container::decode(&again[..]).unwrap(), container_of(&later));
            }
        }
        let mut items = crate::wire::Items::with_capacity(4, 512);
        for r in &recs {
            items.push(r.created_at, |b| encode_container(r, b));
        }
        let list = v1::ListContainersResponse::decode(&items.into_message(1)[..]).unwrap();
        let ids: Vec<_> = list.containers.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["b", "d", "a", "c"]);
    }
}
