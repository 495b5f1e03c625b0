//! Lifecycle events of containers and pod sandboxes, for GetContainerEvents (kubelet's evented PLEG,
//! `crictl events`): the container and sandbox stores send one as a record changes state; each
//! subscriber turns it into a CRI response carrying the pod's statuses at that moment. At shutdown
//! `close` ends every subscription, so that the server's graceful shutdown is not held up by kubelet's
//! endless stream and its clients see a clean end rather than a broken connection.

use cri_api::v1::ContainerEventType;
use tokio::sync::{broadcast, watch};

pub use broadcast::error::RecvError;

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
    /// True once the daemon shuts down.
    closed: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BACKLOG).0,
            closed: watch::channel(false).0,
        }
    }
}

/// One subscriber's events.
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    closed: watch::Receiver<bool>,
}

impl Subscription {
    /// The next event; `Closed` once the daemon shuts down (events not yet taken are then dropped:
    /// the subscriber lists again when it reconnects), `Lagged` when it fell too far behind.
    pub async fn recv(&mut self) -> Result<Event, RecvError> {
        tokio::select! {
            biased;
            _ = self.closed.wait_for(|c| *c) => Err(RecvError::Closed),
            r = self.rx.recv() => r,
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

    /// A receiver of every event sent from now on, until `close`.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
        }
    }

    /// Ends every subscription, those to come too (shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}
