//! `GetContainerEvents`: the daemon's lifecycle events as a stream, each with its pod's sandbox status
//! and container statuses as they are when it is sent. A subscriber that falls too far behind gets an
//! error and the end of its stream, so it reconnects and lists again instead of missing a change. At
//! shutdown the stream ends cleanly (`Events::close`).

use std::sync::Arc;

use cri_api::v1;
use tonic::Status;
use tonic::codegen::BoxStream;

use crate::daemon::Daemon;
use crate::events::{Event, RecvError, Subscription};

/// The stream for one `GetContainerEvents` call.
pub fn get_container_events(d: &Arc<Daemon>) -> BoxStream<v1::ContainerEventResponse> {
    struct State {
        d: Arc<Daemon>,
        rx: Subscription,
        done: bool,
    }
    let state = State {
        rx: d.events.subscribe(),
        d: Arc::clone(d),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match s.rx.recv().await {
            Ok(ev) => {
                let r = response(&s.d, &ev);
                Some((Ok(r), s))
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "a GetContainerEvents subscriber fell behind");
                s.done = true;
                let e = Status::resource_exhausted(format!("missed {n} events: subscribe again"));
                Some((Err(e), s))
            }
            Err(RecvError::Closed) => None,
        }
    }))
}

fn response(d: &Daemon, ev: &Event) -> v1::ContainerEventResponse {
    let pod_sandbox_status = d.sandboxes.status(&ev.pod_id, false).ok().map(|(s, _)| s);
    let containers_statuses = d.pod_container_statuses(&ev.pod_id);
    v1::ContainerEventResponse {
        container_id: ev.id.clone(),
        container_event_type: ev.kind as i32,
        created_at: ev.at,
        pod_sandbox_status,
        containers_statuses,
    }
}
