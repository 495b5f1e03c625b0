//! Counts requests in flight, for the warning of a shutdown whose grace period ran out. A request is in
//! flight until its response body ends or is dropped: a list stream's last message counts, not its
//! headers. GetContainerEvents, a subscription that only ends when its client leaves or crustd shuts
//! down (kubelet's evented PLEG keeps one open for good), counts until its headers, as a unary call does.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

/// The shared counter.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

struct Token(Arc<AtomicUsize>);

impl super::body::Watch for Token {}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InFlight {
    /// Requests now in flight.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl<S> tower::Layer<S> for InFlight {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counter: self.0.clone(),
        }
    }
}

/// A service whose calls are counted while their futures and response bodies live.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    counter: Arc<AtomicUsize>,
}

/// The one call whose stream is a subscription, not an answer (see the module doc).
const SUBSCRIPTION: &str = "/runtime.v1.RuntimeService/GetContainerEvents";

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.counter.fetch_add(1, Ordering::SeqCst);
        let token = Token(self.counter.clone());
        let subscription = req.uri().path() == SUBSCRIPTION;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            if subscription {
                drop(token);
                return Ok(resp);
            }
            Ok(super::body::watched(resp, token))
        })
    }
}
