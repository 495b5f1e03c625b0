//! The gRPC layer: `RuntimeService` and `ImageService` on a unix socket. Handlers only validate the
//! request, call one core function on the `Daemon`, and map its error (`status`). A tracing span per
//! request names the RPC. Each accepted connection goes through `authority`, which answers clients that
//! send the socket path as `:authority` (gRPC's C core, grpc-java). `rpc_metrics` counts and times
//! each request; `metrics_http` serves `/metrics`. `lists` answers the two lists kubelet relists every
//! second with responses the core encodes straight from its records, and the list streams.

pub mod admin;
mod authority;
mod body;
mod container;
mod deadline;
mod events;
mod image;
mod images;
mod inflight;
mod info;
mod lists;
pub mod metrics_http;
mod rpc_metrics;
mod runtime;
mod sandbox;
mod socket;
pub mod status;
mod streaming;

use std::sync::Arc;

pub use socket::{SocketError, bind};

use crate::daemon::Daemon;

/// The CRI services over one daemon.
#[derive(Clone)]
pub struct Cri {
    d: Arc<Daemon>,
}

impl Cri {
    /// Wraps the daemon.
    pub fn new(d: Arc<Daemon>) -> Self {
        Cri { d }
    }
}

/// Serves both services on `listener` until `shutdown` resolves; then stops accepting, ends the event
/// subscriptions, and shuts down gracefully: each connection is told to go away and closes once its
/// requests are answered, streams to their last message (which a slow client may take after the
/// response body ended: the connection holds it), idle ones at once. Whatever is still open after
/// `grace` is dropped.
pub async fn serve(
    d: Arc<Daemon>,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> Result<(), tonic::transport::Error> {
    let events = d.events.clone();
    let cri = Cri::new(d);
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::UnixListenerStream::new(listener),
        |conn| conn.map(authority::AuthorityFix::new),
    );
    let inflight = inflight::InFlight::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("rpc", method = %req.uri().path()))
        .layer(inflight.clone())
        .layer(rpc_metrics::RpcMetrics)
        .layer(deadline::Deadline)
        .add_service(lists::Runtime::new(cri.clone()))
        .add_service(lists::Images::new(cri))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    let mut server = tokio::spawn(server);
    tokio::select! {
        r = &mut server => return r.unwrap_or(Ok(())),
        _ = shutdown => {}
    }
    // kubelet's event stream never ends on its own: ended here, it cannot hold the shutdown up.
    events.close();
    let _ = stop_tx.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(r) => r.unwrap_or(Ok(())),
        Err(_) => {
            tracing::warn!(
                requests = inflight.count(),
                "grace period over with requests still in flight or connections not yet closed"
            );
            server.abort();
            Ok(())
        }
    }
}

/// A gRPC channel to a CRI unix socket (crustctl's, the test harness's and the bench's client).
pub async fn connect(socket: &std::path::Path) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}
