//! The client's deadline (`grpc-timeout`) answered as gRPC servers answer it: `DEADLINE_EXCEEDED`.
//!
//! tonic's server enforces `grpc-timeout` itself, outside every layer crust adds, and answers an expired
//! one with `CANCELLED`. A client whose own timer has not fired yet (critest's "public image should
//! timeout if requested" gives PullImage 1 ms) then reports CANCELLED where every grpc-go server makes it
//! report DEADLINE_EXCEEDED. This layer, inside tonic's, ends the call a little before tonic would, with
//! DEADLINE_EXCEEDED: 1/10 of the timeout earlier, at most 1 ms, which no client can tell from its own
//! deadline. It bounds a call until its response headers: a list stream, whose headers come at once,
//! sends its messages for as long as its client takes them, and a client whose deadline passes
//! mid-stream resets it (its messages, made one at a time, stop there).

use std::task::{Context, Poll};
use std::time::Duration;

/// The layer.
#[derive(Clone, Copy, Default)]
pub struct Deadline;

impl<S> tower::Layer<S> for Deadline {
    type Service = WithDeadline<S>;
    fn layer(&self, inner: S) -> WithDeadline<S> {
        WithDeadline { inner }
    }
}

/// A service whose calls end with DEADLINE_EXCEEDED when the client's `grpc-timeout` passes.
#[derive(Clone)]
pub struct WithDeadline<S> {
    inner: S,
}

/// `grpc-timeout`: an ASCII integer of at most 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// When this layer ends a call whose client gave it `timeout`.
fn ours(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 10).min(Duration::from_millis(1)))
}

impl<S, B, RB> tower::Service<http::Request<B>> for WithDeadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let Some(t) = timeout else { return fut.await };
            match tokio::time::timeout(ours(t), fut).await {
                Ok(r) => r,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the client's deadline ({t:?}) passed"
                ))
                .into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_the_grpc_spec_writes_them() {
        assert_eq!(parse_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_timeout("120S"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        for bad in ["", "m", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_call_past_the_deadline_answers_deadline_exceeded_and_one_within_it_is_untouched() {
        use tower::{Layer, Service};
        let slow = tower::service_fn(|req: http::Request<()>| async move {
            let wait = req.headers().contains_key("x-slow");
            if wait {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let mut svc = Deadline.layer(slow);
        let req = http::Request::builder()
            .header("grpc-timeout", "1m")
            .header("x-slow", "1")
            .body(())
            .unwrap();
        let resp = svc.call(req).await.unwrap();
        assert_eq!(resp.headers().get("grpc-status").unwrap(), "4");
        let req = http::Request::builder()
            .header("grpc-timeout", "30S")
            .body(())
            .unwrap();
        let resp = svc.call(req).await.unwrap();
        assert!(resp.headers().get("grpc-status").is_none());
    }

    #[test]
    fn ours_ends_first_by_a_tenth_at_most_a_millisecond() {
        assert_eq!(ours(Duration::from_millis(1)), Duration::from_micros(900));
        assert_eq!(
            ours(Duration::from_secs(120)),
            Duration::from_secs(120) - Duration::from_millis(1)
        );
        assert_eq!(ours(Duration::ZERO), Duration::ZERO);
    }
}
