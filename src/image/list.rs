//! The CRI view of the image records: ListImages' and ImageStatus' `v1::Image`, and StreamImages
//! (KEP-5825), the list sent as a stream of messages of at most [`crate::wire::BATCH_LIMIT`] bytes,
//! each made from the index under its lock when the one before it has been taken, in ID order and
//! starting after the last ID the one before took (each image sent at most once).

use std::sync::Arc;

use cri_api::v1;
use futures::Stream;

use super::{ImageRecord, ImageStore, Inner};
use crate::wire::Batch;

/// The CRI view of an image record.
pub fn to_cri(r: ImageRecord, pinned: bool) -> v1::Image {
    // The reading CreateContainer uses: the uid reported is the uid the container runs as.
    let (uid, username) = crate::container::user::image_user_status(&r.user);
    let uid = uid.map(|u| v1::Int64Value { value: u.into() });
    v1::Image {
        spec: Some(v1::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        id: r.id,
        repo_tags: r.repo_tags,
        repo_digests: r.repo_digests,
        size: r.size,
        uid,
        username,
        pinned,
    }
}

impl Inner {
    /// One StreamImages message (`v1::StreamImagesResponse`): the images after `from`, and where
    /// the next message starts (`None`: no image is left).
    fn list_batch(&self, from: Option<&str>) -> (Batch, Option<String>) {
        let mut batch = Batch::new(1);
        let st = self.lock();
        let mut after: Vec<&ImageRecord> = st
            .index
            .images
            .iter()
            .filter(|r| from.is_none_or(|f| r.id.as_str() > f))
            .collect();
        after.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut last = None;
        for r in after {
            if !batch.push_message(&to_cri(r.clone(), self.is_pinned(r))) {
                return (batch, last);
            }
            last = Some(r.id.clone());
        }
        (batch, None)
    }
}

impl ImageStore {
    /// StreamImages' messages (`v1::StreamImagesResponse`, encoded): every image, or the one
    /// `filter` names (as ListImages).
    pub fn stream(&self, filter: String) -> impl Stream<Item = crate::Result<bytes::Bytes>> + Send + 'static {
        let store = ImageStore {
            inner: Arc::clone(&self.inner),
        };
        crate::wire::batches(move |from| {
            if filter.is_empty() {
                return store.inner.list_batch(from);
            }
            // The one image the filter names, or none.
            let mut batch = Batch::new(1);
            if let Some((r, pinned)) = store.record(&filter) {
                batch.push_message(&to_cri(r, pinned));
            }
            (batch, None)
        })
    }
}
