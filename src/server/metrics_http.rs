//! `GET /metrics` over plain HTTP/1.1 (hyper) on `[metrics] address`: [`crate::metrics`]'s text,
//! with the container and pod state gauges computed from the in-memory stores at each scrape.

use std::convert::Infallible;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use cri_api::v1;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::daemon::Daemon;

/// Binds `address` (`ip:port`).
pub async fn bind(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await
}

/// Serves scrapes on `listener` until the daemon is gone.
pub fn spawn(listener: tokio::net::TcpListener, d: &Arc<Daemon>) {
    let d = Arc::downgrade(d);
    tokio::spawn(async move {
        loop {
            let sock = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics server: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            if d.strong_count() == 0 {
                return;
            }
            let d = d.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let d = d.clone();
                    async move { Ok::<_, Infallible>(handle(&req, &d)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
                    .serve_connection(TokioIo::new(sock), svc);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics connection ended");
                }
            });
        }
    });
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn handle(req: &Request<Incoming>, d: &Weak<Daemon>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    let Some(d) = d.upgrade() else {
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".into(),
        );
    };
    set_states(&d);
    match crate::metrics::global().encode() {
        Ok(text) => reply(StatusCode::OK, crate::metrics::CONTENT_TYPE, text),
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "encoding failed\n".into(),
        ),
    }
}

/// Counts containers and pods by state, from memory.
fn set_states(d: &Daemon) {
    let mut c = [("created", 0i64), ("running", 0), ("exited", 0), ("unknown", 0)];
    for ctr in d.list_containers(&Default::default()) {
        let i = match v1::ContainerState::try_from(ctr.state) {
            Ok(v1::ContainerState::ContainerCreated) => 0,
            Ok(v1::ContainerState::ContainerRunning) => 1,
            Ok(v1::ContainerState::ContainerExited) => 2,
            _ => 3,
        };
        c[i].1 += 1;
    }
    let mut p = [("ready", 0i64), ("notready", 0)];
    for pod in d.sandboxes.list(&Default::default()) {
        let i = usize::from(pod.state != v1::PodSandboxState::SandboxReady as i32);
        p[i].1 += 1;
    }
    crate::metrics::global().set_states(&c, &p);
}
