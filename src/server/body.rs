//! A response body watched to its end. A unary call has finished by its response headers, but a
//! server-streaming one (GetContainerEvents, the list streams) has only begun: what must last as
//! long as the call (the in-flight count shutdown waits on, the RPC's time and code) lasts as long
//! as its body, and learns the code from the trailers that end it.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Frame, SizeHint};
use tonic::body::Body;

/// What watches a body: told of its trailers, and dropped with it (when it ended or the client went
/// away).
pub trait Watch: Send + Unpin + 'static {
    /// The trailers that end the body.
    fn trailers(&mut self, _trailers: &http::HeaderMap) {}
}

struct Watched<W> {
    inner: Body,
    watch: W,
}

impl<W: Watch> http_body::Body for Watched<W> {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(t) = frame.trailers_ref()
        {
            this.watch.trailers(t);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `resp` with its body watched by `watch` (dropped at once for a body already at its end).
pub fn watched<W: Watch>(resp: http::Response<Body>, watch: W) -> http::Response<Body> {
    resp.map(|inner| Body::new(Watched { inner, watch }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Seen(Arc<Mutex<Vec<String>>>);

    impl Watch for Seen {
        fn trailers(&mut self, t: &http::HeaderMap) {
            let code = t.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("-");
            self.0.lock().unwrap().push(format!("trailers {code}"));
        }
    }

    impl Drop for Seen {
        fn drop(&mut self) {
            self.0.lock().unwrap().push("dropped".into());
        }
    }

    #[tokio::test]
    async fn the_watch_sees_the_trailers_and_lasts_as_long_as_the_body() {
        use http_body_util::BodyExt;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = futures::stream::iter([
            Ok::<_, tonic::Status>(Frame::data(bytes::Bytes::from_static(b"one"))),
            Ok(Frame::trailers(t)),
        ]);
        let body = Body::new(http_body_util::StreamBody::new(frames));
        let mut body = watched(http::Response::new(body), Seen(seen.clone())).into_body();
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "one");
        assert!(seen.lock().unwrap().is_empty(), "alive while the body is");
        while body.frame().await.is_some() {}
        drop(body);
        assert_eq!(*seen.lock().unwrap(), ["trailers 0", "dropped"]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        drop(watched(http::Response::new(Body::empty()), Seen(seen.clone())));
        assert_eq!(*seen.lock().unwrap(), ["dropped"]);
    }
}
