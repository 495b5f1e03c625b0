//! Attach: joins the container's stdio held by its monitor, through the monitor's control socket.

use std::sync::Arc;

use cri_api::v1;

use super::channel::Streams;
use crate::daemon::Daemon;

/// Runs an attach session.
pub async fn run(d: Arc<Daemon>, req: v1::AttachRequest, streams: Streams) {
    let msg = match d.running_container(&req.container_id) {
        Ok(_) => "attach is not supported by the container's monitor yet".to_string(),
        Err(e) => e.to_string(),
    };
    streams.finish(Err(msg)).await;
}
