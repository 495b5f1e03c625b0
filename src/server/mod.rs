//! The gRPC layer: `RuntimeService` and `ImageService` on a unix socket. Handlers only validate the
//! request, call one core function on the `Daemon`, and map its error (`status`). A tracing span per
//! request names the RPC.

mod container;
mod image;
mod images;
mod info;
mod runtime;
mod sandbox;
mod socket;
pub mod status;
mod streaming;
pub mod validate;

use std::sync::Arc;

use cri_api::v1::image_service_server::ImageServiceServer;
use cri_api::v1::runtime_service_server::RuntimeServiceServer;

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

/// Serves both services on `listener` until `shutdown` resolves; then stops accepting and lets requests
/// in flight finish.
pub async fn serve(
    d: Arc<Daemon>,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let cri = Cri::new(d);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("rpc", method = %req.uri().path()))
        .add_service(
            RuntimeServiceServer::new(cri.clone())
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .add_service(
            ImageServiceServer::new(cri)
                .max_decoding_message_size(16 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
