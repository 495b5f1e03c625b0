//! StreamPodSandboxes, StreamPodSandboxStats and StreamPodSandboxMetrics (KEP-5825): the pod lists
//! sent as a stream of messages of at most [`crate::wire::BATCH_LIMIT`] bytes. The pods are read in
//! ID order a message (or, for stats and metrics, a page) at a time, each starting after the last
//! ID the one before took: no list of a node's pods is ever held whole, and each pod is sent at most
//! once however the pods change meanwhile. The filters are those of the unary lists.

use std::collections::HashMap;
use std::sync::Arc;

use futures::Stream;

use super::status::{ListFilter, encode_pod, labels_match};
use super::{Inner, Sandboxes};
use crate::daemon::Daemon;
use crate::wire::Batch;

/// Pods whose stats or metrics are read between two looks at the records.
const STATS_PAGE: usize = 16;

impl Inner {
    /// One StreamPodSandboxes message (`v1::StreamPodSandboxesResponse`): the pods matching `f`
    /// after `from`, written under the pods lock as ListPodSandbox writes them, and where the next
    /// message starts (`None`: no pod is left).
    fn list_batch(&self, f: &ListFilter, from: Option<&str>) -> (Batch, Option<String>) {
        let mut batch = Batch::new(1);
        let pods = self.pods.read();
        let watched = self.running.watched();
        let mut last: Option<&String> = None;
        for (id, r) in crate::state::after(&pods, from) {
            if (f.id.is_empty() || r.id.starts_with(&f.id)) && labels_match(&f.labels, &r.labels) {
                let state = self.cri_state_among(r, &watched);
                if f.state.is_none_or(|s| s == state) {
                    batch.scratch.clear();
                    encode_pod(r, state, &mut batch.scratch);
                    if !batch.take_scratch() {
                        return (batch, last.cloned());
                    }
                }
            }
            last = Some(id);
        }
        (batch, None)
    }
}

impl Sandboxes {
    /// StreamPodSandboxes' messages (`v1::StreamPodSandboxesResponse`, encoded), each made when the
    /// one before it has been taken.
    pub fn stream(&self, f: ListFilter) -> impl Stream<Item = crate::Result<bytes::Bytes>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        crate::wire::batches(move |from| inner.list_batch(&f, from))
    }
}

impl Daemon {
    /// StreamPodSandboxStats' messages (`v1::StreamPodSandboxStatsResponse`, encoded): what
    /// ListPodSandboxStats gives for the filter, read a page of pods at a time.
    pub fn stream_pod_sandbox_stats(
        self: &Arc<Self>,
        id: String,
        labels: HashMap<String, String>,
    ) -> impl Stream<Item = crate::Result<bytes::Bytes>> + Send + 'static {
        let (d, f) = (Arc::clone(self), Arc::new((id, labels)));
        crate::wire::paged(1, move |from| {
            let (d, f) = (Arc::clone(&d), Arc::clone(&f));
            async move {
                let (pods, next) = d
                    .sandboxes
                    .inner
                    .ready_page(&f.0, &f.1, from.as_deref(), STATS_PAGE);
                let mut out = Vec::with_capacity(pods.len());
                for rec in &pods {
                    out.push(d.pod_stats_of(rec).await);
                }
                (out, next)
            }
        })
    }

    /// StreamPodSandboxMetrics' messages (`v1::StreamPodSandboxMetricsResponse`, encoded): what
    /// ListPodSandboxMetrics gives, read a page of pods at a time.
    pub fn stream_pod_sandbox_metrics(
        self: &Arc<Self>,
    ) -> impl Stream<Item = crate::Result<bytes::Bytes>> + Send + 'static {
        let d = Arc::clone(self);
        crate::wire::paged(1, move |from| {
            let d = Arc::clone(&d);
            async move {
                let no_labels = HashMap::new();
                let (pods, next) = d
                    .sandboxes
                    .inner
                    .ready_page("", &no_labels, from.as_deref(), STATS_PAGE);
                let mut out = Vec::with_capacity(pods.len());
                for rec in &pods {
                    out.push(d.pod_metrics_of(rec).await);
                }
                (out, next)
            }
        })
    }
}
