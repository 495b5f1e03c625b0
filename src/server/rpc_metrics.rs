//! A tower layer that counts each CRI request by method and gRPC status code and times it (until
//! its response body ends: a stream's last message, not its headers) into [`crate::metrics`].
//!
//! The code is the response's `grpc-status` header, where tonic puts a handler's error (a
//! trailers-only response), else the one in the trailers that end the body; a body dropped before
//! them (the client went away) counts as `Cancelled`. An HTTP-level failure counts as `Unavailable`.

use std::task::{Context, Poll};
use std::time::Instant;

/// The layer.
#[derive(Clone, Copy, Default)]
pub struct RpcMetrics;

impl<S> tower::Layer<S> for RpcMetrics {
    type Service = Measured<S>;
    fn layer(&self, inner: S) -> Measured<S> {
        Measured { inner }
    }
}

/// A service whose calls are counted and timed.
#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
}

/// The gRPC code name as grpc-go spells it (`OK`, `NotFound`, `DeadlineExceeded`, ...).
pub fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".to_string(),
        c => format!("{c:?}"),
    }
}

/// The path as the method label, when it names a CRI method; anything else is `other` (a client
/// sending random paths must not grow the series without bound).
fn method_label(path: &str) -> String {
    let known = ["/runtime.v1.RuntimeService/", "/runtime.v1.ImageService/"]
        .iter()
        .any(|p| {
            path.strip_prefix(p).is_some_and(|m| {
                !m.is_empty() && m.len() <= 64 && m.bytes().all(|b| b.is_ascii_alphanumeric())
            })
        });
    if known {
        path.to_string()
    } else {
        "other".to_string()
    }
}

/// The code in `grpc-status`, if there is one.
fn code_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// One call, recorded when its response body ends.
struct Call {
    method: String,
    start: Instant,
    code: Option<tonic::Code>,
}

impl super::body::Watch for Call {
    fn trailers(&mut self, trailers: &http::HeaderMap) {
        self.code = self.code.or(code_of(trailers));
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        crate::metrics::global().rpc(&self.method, &code_name(code), self.start.elapsed());
    }
}

impl<S, B> tower::Service<http::Request<B>> for Measured<S>
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
        let method = method_label(req.uri().path());
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut call = Call {
                method,
                start,
                code: Some(tonic::Code::Unavailable),
            };
            let resp = fut.await?;
            call.code = code_of(resp.headers());
            Ok(super::body::watched(resp, call))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_from_headers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(code_of(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert_eq!(code_of(&h).map(code_name).as_deref(), Some("OK"));
        h.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(code_of(&h).map(code_name).as_deref(), Some("NotFound"));
        h.insert("grpc-status", http::HeaderValue::from_static("12"));
        assert_eq!(code_of(&h).map(code_name).as_deref(), Some("Unimplemented"));
        assert_eq!(
            method_label("/runtime.v1.ImageService/PullImage"),
            "/runtime.v1.ImageService/PullImage"
        );
        assert_eq!(method_label("/x.y/Z"), "other");
        assert_eq!(method_label("/runtime.v1.ImageService/a\"b"), "other");
    }
}
