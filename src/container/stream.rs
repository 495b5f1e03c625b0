//! StreamContainers and StreamContainerStats (KEP-5825): the container lists sent as a stream of
//! messages of at most [`crate::wire::BATCH_LIMIT`] bytes. The records are read in ID order a message
//! (or, for stats, a page) at a time, each message starting after the last ID the one before it
//! took: no list of a node's containers is ever held whole, and each container is sent at most once
//! however the records change meanwhile. The filters are ListContainers' and ListContainerStats'.

use std::sync::Arc;

use futures::Stream;

use super::record::ContainerRecord;
use super::status::encode_container;
use super::{Containers, Inner, ListFilter, Step};
use crate::wire::Batch;

/// Containers whose stats are read between two looks at the records.
const STATS_PAGE: usize = 32;

impl ListFilter {
    /// The criteria no refresh from an exit file changes: creations in progress are left out.
    fn may_match(&self, r: &ContainerRecord) -> bool {
        r.step == Step::Created
            && (self.id.is_empty() || r.id.starts_with(&self.id))
            && (self.pod_id.is_empty() || r.pod_id.starts_with(&self.pod_id))
    }
}

impl Inner {
    /// One StreamContainers message (`v1::StreamContainersResponse`): the containers matching `f`
    /// after `from`, written from the records under their lock as ListContainers writes them, and
    /// where the next message starts (`None`: no container is left). A record whose exit may be in
    /// its exit file gets room for its entry under the lock and is refreshed and written after it.
    fn list_batch(&self, f: &ListFilter, from: Option<&str>) -> (Batch, Option<String>) {
        let mut batch = Batch::new(1);
        let mut stale = Vec::new();
        let next = {
            let recs = self.records.read();
            let watched = self.running.watched();
            let mut last: Option<&String> = None;
            let mut full = false;
            for (id, r) in crate::state::after(&recs, from) {
                if f.may_match(r) {
                    batch.scratch.clear();
                    if Self::needs_refresh_among(r, &watched) {
                        // A refresh changes only the state, a varint of at most two bytes.
                        encode_container(r, &mut batch.scratch);
                        let room = batch.scratch.len() + 2;
                        batch.scratch.clear();
                        if !batch.reserve(room) {
                            full = true;
                            break;
                        }
                        stale.push((room, r.clone()));
                    } else if f.matches(r) {
                        encode_container(r, &mut batch.scratch);
                        if !batch.take_scratch() {
                            full = true;
                            break;
                        }
                    }
                }
                last = Some(id);
            }
            last.filter(|_| full).cloned()
        };
        for (room, r) in stale {
            let r = self.refresh(r);
            batch.scratch.clear();
            if f.matches(&r) {
                encode_container(&r, &mut batch.scratch);
            }
            batch.take_reserved(room);
        }
        (batch, next)
    }

    /// Up to `n` containers matching `f` after `from`, copied out (and refreshed from their exit
    /// files where needed), and where the next page starts (`None`: none left).
    fn page(&self, f: &ListFilter, from: Option<&str>, n: usize) -> (Vec<ContainerRecord>, Option<String>) {
        let mut picked = Vec::new();
        let mut next = None;
        {
            let recs = self.records.read();
            let watched = self.running.watched();
            for (id, r) in crate::state::after(&recs, from) {
                if f.may_match(r) {
                    let stale = Self::needs_refresh_among(r, &watched);
                    if stale || f.matches(r) {
                        picked.push((stale, r.clone()));
                    }
                }
                if picked.len() == n {
                    next = Some(id.clone());
                    break;
                }
            }
        }
        let picked = picked
            .into_iter()
            .map(|(stale, r)| if stale { self.refresh(r) } else { r })
            .filter(|r| f.matches(r))
            .collect();
        (picked, next)
    }
}

impl Containers {
    /// StreamContainers' messages (`v1::StreamContainersResponse`, encoded), each made when the one
    /// before it has been taken.
    pub fn stream(&self, f: ListFilter) -> impl Stream<Item = crate::Result<bytes::Bytes>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        crate::wire::batches(move |from| inner.list_batch(&f, from))
    }

    /// StreamContainerStats' messages (`v1::StreamContainerStatsResponse`, encoded): the stats
    /// ListContainerStats gives for `f`, read a page of containers at a time.
    pub fn stream_stats(
        &self,
        f: ListFilter,
    ) -> impl Stream<Item = crate::Result<bytes::Bytes>> + Send + 'static {
        let (inner, f) = (Arc::clone(&self.inner), Arc::new(f));
        crate::wire::paged(1, move |from| {
            let (inner, f) = (Arc::clone(&inner), Arc::clone(&f));
            async move {
                let (recs, next) = inner.page(&f, from.as_deref(), STATS_PAGE);
                let mut stats = Vec::with_capacity(recs.len());
                for r in &recs {
                    stats.push(inner.stats(r).await);
                }
                (stats, next)
            }
        })
    }
}
