//! Lifecycle events of containers and pod sandboxes, for GetContainerEvents (kubelet's evented PLEG,
//! `crictl events`): the container and sandbox stores send one as a record changes state; each
//! subscriber turns it into a CRI response carrying the pod's statuses at that moment.

use cri_api::v1::ContainerEventType;
use tokio::sync::broadcast;

/// How many events a slow subscriber may fall behind before it misses some.
const BACKLOG: usize = 1024;

/// One state change. For a pod sandbox's own events `id` is the pod's ID too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub pod_id: String,
    pub kind: ContainerEventType,
    /// Nanoseconds since the epoch.
    pub at: i64,
}

/// The sending side, cloned into every store.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Events {
    /// Sends an event now (dropped when nobody listens).
    pub fn send(&self, id: &str, pod_id: &str, kind: ContainerEventType) {
        let _ = self.tx.send(Event {
            id: id.to_string(),
            pod_id: pod_id.to_string(),
            kind,
            at: crate::state::now_nanos(),
        });
    }

    /// A receiver of every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
