//! ListPodSandbox, ListContainers and PodSandboxStatus, which kubelet sends every second, answered with
//! the response the core encodes straight from its records or keeps between changes (`crate::wire`)
//! rather than built as messages for prost to encode; and the list streams (KEP-5825: StreamContainers,
//! StreamPodSandboxes, StreamImages and the stats and metrics ones), whose messages the core encodes
//! one at a time as the client takes them. [`Front`] sits in front of a generated server
//! (`RuntimeServiceServer`, `ImageServiceServer`), takes those paths (same request decoding,
//! validation, size limits and error mapping) and passes every other call on.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BufMut;
use cri_api::v1::image_service_server::ImageServiceServer;
use cri_api::v1::runtime_service_server::RuntimeServiceServer;
use futures::StreamExt;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Status, body::Body};
use tonic_prost::ProstDecoder;

use super::status::{respond, to_status};
use super::{Cri, container, images, sandbox};
use crate::daemon::Daemon;

const LIST_CONTAINERS: &str = "/runtime.v1.RuntimeService/ListContainers";
const LIST_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/ListPodSandbox";
const POD_SANDBOX_STATUS: &str = "/runtime.v1.RuntimeService/PodSandboxStatus";
const STREAM_CONTAINERS: &str = "/runtime.v1.RuntimeService/StreamContainers";
const STREAM_POD_SANDBOXES: &str = "/runtime.v1.RuntimeService/StreamPodSandboxes";
const STREAM_CONTAINER_STATS: &str = "/runtime.v1.RuntimeService/StreamContainerStats";
const STREAM_POD_SANDBOX_STATS: &str = "/runtime.v1.RuntimeService/StreamPodSandboxStats";
const STREAM_POD_SANDBOX_METRICS: &str = "/runtime.v1.RuntimeService/StreamPodSandboxMetrics";
const STREAM_IMAGES: &str = "/runtime.v1.ImageService/StreamImages";

/// A node's list is some 100 KiB: room for it at once, not grown from tonic's default 8 KiB.
const LIST_BUFFER: usize = 128 << 10;
/// A pod's status is a few KiB, and asked for every pod every second: tonic's default, not a list's
/// 128 KiB for each.
const STATUS_BUFFER: usize = 8 << 10;

/// The request size crustd takes, and the response size it sends, on every RuntimeService call.
pub const MAX_DECODING: usize = 16 << 20;
pub const MAX_ENCODING: usize = 64 << 20;

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

/// A list stream's messages, each encoded by the core when the one before it has been taken.
pub type Messages = std::pin::Pin<Box<dyn futures::Stream<Item = crate::Result<bytes::Bytes>> + Send>>;

/// A generated server (`G`) with the paths above taken in front of it.
#[derive(Clone)]
pub struct Front<G> {
    generated: G,
    d: Arc<Daemon>,
}

/// `RuntimeService`, its lists served from encoded responses and streams.
pub type Runtime = Front<RuntimeServiceServer<Cri>>;

/// `ImageService`, StreamImages served from encoded messages.
pub type Images = Front<ImageServiceServer<Cri>>;

impl Runtime {
    /// The service over `cri`.
    pub fn new(cri: Cri) -> Self {
        Front {
            d: Arc::clone(&cri.d),
            generated: RuntimeServiceServer::new(cri)
                .max_decoding_message_size(MAX_DECODING)
                .max_encoding_message_size(MAX_ENCODING),
        }
    }
}

impl Images {
    /// The service over `cri`.
    pub fn new(cri: Cri) -> Self {
        Front {
            d: Arc::clone(&cri.d),
            generated: ImageServiceServer::new(cri)
                .max_decoding_message_size(MAX_DECODING)
                .max_encoding_message_size(MAX_ENCODING),
        }
    }
}

impl<G: NamedService> NamedService for Front<G> {
    const NAME: &'static str = G::NAME;
}

impl<G> tower::Service<http::Request<Body>> for Front<G>
where
    G: tower::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = BoxFuture<http::Response<Body>, Infallible>,
        >,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let d = Arc::clone(&self.d);
        match req.uri().path() {
            LIST_CONTAINERS => serve(
                Handler {
                    d,
                    run: container::list_containers_encoded,
                    buffer: LIST_BUFFER,
                },
                req,
            ),
            LIST_POD_SANDBOX => serve(
                Handler {
                    d,
                    run: sandbox::list_pod_sandbox_encoded,
                    buffer: LIST_BUFFER,
                },
                req,
            ),
            POD_SANDBOX_STATUS => serve(
                Handler {
                    d,
                    run: sandbox::pod_sandbox_status_encoded,
                    buffer: STATUS_BUFFER,
                },
                req,
            ),
            STREAM_CONTAINERS => stream(d, container::stream_containers, req),
            STREAM_POD_SANDBOXES => stream(d, sandbox::stream_pod_sandboxes, req),
            STREAM_CONTAINER_STATS => stream(d, container::stream_container_stats, req),
            STREAM_POD_SANDBOX_STATS => stream(d, sandbox::stream_pod_sandbox_stats, req),
            STREAM_POD_SANDBOX_METRICS => stream(d, sandbox::stream_pod_sandbox_metrics, req),
            STREAM_IMAGES => stream(d, images::stream_images, req),
            _ => self.generated.call(req),
        }
    }
}

/// One call of the list stream `run` (a handler of `container`, `sandbox` or `images`), its request
/// decoded as the generated server decodes it, its messages written as the core makes them.
fn stream<U: prost::Message + Default + Send + 'static>(
    d: Arc<Daemon>,
    run: fn(&Arc<Daemon>, U) -> crate::Result<Messages>,
    req: http::Request<Body>,
) -> BoxFuture<http::Response<Body>, Infallible> {
    Box::pin(async move {
        let raw = Raw(LIST_BUFFER, PhantomData);
        let mut grpc = Grpc::new(raw).apply_max_message_size_config(Some(MAX_DECODING), Some(MAX_ENCODING));
        Ok(grpc.server_streaming(StreamHandler { d, run }, req).await)
    })
}

/// A request of type `U` answered by `run` with a stream of encoded messages.
struct StreamHandler<U> {
    d: Arc<Daemon>,
    run: fn(&Arc<Daemon>, U) -> crate::Result<Messages>,
}

type EncodedStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Encoded, Status>> + Send>>;

impl<U: Send + 'static> ServerStreamingService<U> for StreamHandler<U> {
    type Response = Encoded;
    type ResponseStream = EncodedStream;
    type Future = std::future::Ready<Result<tonic::Response<EncodedStream>, Status>>;

    fn call(&mut self, r: tonic::Request<U>) -> Self::Future {
        let messages = (self.run)(&self.d, r.into_inner())
            .map(|m| Box::pin(m.map(|item| item.map(Encoded).map_err(to_status))) as EncodedStream);
        std::future::ready(respond(messages))
    }
}

/// One call of `handler`, its request decoded as the generated server decodes it, its response
/// written as it comes.
fn serve<U: prost::Message + Default + Send + 'static>(
    handler: Handler<U>,
    req: http::Request<Body>,
) -> BoxFuture<http::Response<Body>, Infallible> {
    Box::pin(async move {
        let raw = Raw(handler.buffer, PhantomData);
        let mut grpc = Grpc::new(raw).apply_max_message_size_config(Some(MAX_DECODING), Some(MAX_ENCODING));
        Ok(grpc.unary(handler, req).await)
    })
}

/// A request of type `U` answered by `run` (a handler of `container` or `sandbox`) with an encoded
/// response.
struct Handler<U> {
    d: Arc<Daemon>,
    run: fn(&Daemon, U) -> crate::Result<bytes::Bytes>,
    /// The response buffer's first size.
    buffer: usize,
}

impl<U: Send + 'static> UnaryService<U> for Handler<U> {
    type Response = Encoded;
    type Future = std::future::Ready<Result<tonic::Response<Encoded>, Status>>;

    fn call(&mut self, r: tonic::Request<U>) -> Self::Future {
        std::future::ready(respond((self.run)(&self.d, r.into_inner()).map(Encoded)))
    }
}

/// A response message already encoded.
pub struct Encoded(bytes::Bytes);

/// Requests decoded by prost as usual; responses written as they come, already encoded, into a
/// buffer of the given first size.
struct Raw<U>(usize, PhantomData<U>);

impl<U: prost::Message + Default + Send + 'static> Codec for Raw<U> {
    type Encode = Encoded;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder(self.0)
    }

    fn decoder(&mut self) -> ProstDecoder<U> {
        ProstDecoder::default()
    }
}

struct RawEncoder(usize);

impl Encoder for RawEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(self.0, 256 << 10)
    }
}
