//! The HTTP side of the streaming server (hyper, HTTP/1.1): `/<exec|attach|portforward>/<token>`, the
//! protocol negotiation, the session limits (HTTP 429), the upgrade to SPDY/3.1 or WebSocket (with the
//! idle timeout around it), and the hand-off to the handlers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsAcceptor;

use super::limits::IdleIo;
use super::remotecommand::{self, SPDY_PROTOCOLS, Wanted};
use super::tokens::Pending;
use super::{attach, exec, portforward, spdy, websocket};
use crate::Error;
use crate::daemon::Daemon;

const PORTFORWARD_SPDY: &[(&str, u8)] = &[("portforward.k8s.io", 1)];

/// A TLS acceptor from PEM files (certificate chain, private key).
pub fn tls_acceptor(cert: &Path, key: &Path) -> crate::Result<TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |field: &str, path: &Path, e: String| Error::invalid(field, format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("stream.tls_cert_file", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(
            "stream.tls_cert_file",
            cert,
            "no certificate in the file".into(),
        ));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad("stream.tls_key_file", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad("stream.tls_key_file", key, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Accepts connections until the daemon is gone.
pub async fn serve(listener: tokio::net::TcpListener, tls: Option<TlsAcceptor>, d: Weak<Daemon>) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "streaming server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if d.strong_count() == 0 {
            return;
        }
        // Interactive traffic: small frames must not wait for Nagle.
        let _ = sock.set_nodelay(true);
        let (d, tls) = (d.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_conn(sock, d, peer).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await;
                    match handshake {
                        Ok(Ok(s)) => serve_conn(s, d, peer).await,
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer, error = %e, "streaming TLS handshake failed")
                        }
                        Err(_) => tracing::info!(peer = %peer, "streaming TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn serve_conn<IO>(io: IO, d: Weak<Daemon>, peer: SocketAddr)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let d = d.clone();
        async move { Ok::<_, Infallible>(handle(req, d, peer)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(peer = %peer, error = %e, "streaming connection ended");
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.into())));
    *r.status_mut() = status;
    r
}

fn header_values(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

fn handle(mut req: Request<Incoming>, d: Weak<Daemon>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (Some(kind), Some(token)) = (parts.next(), parts.next()) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some(d) = d.upgrade() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    let Some(pending) = d.streaming.tokens.take(kind, token) else {
        tracing::info!(peer = %peer, kind, "streaming request with an unknown, used or expired token");
        return plain(
            StatusCode::NOT_FOUND,
            "unknown, used or expired streaming token\n",
        );
    };
    let upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let what = format!("{kind} from {peer}");
    let limits = d.streaming.limits;
    let key = match &pending {
        Pending::Exec(r) => r.container_id.clone(),
        Pending::Attach(r) => r.container_id.clone(),
        Pending::PortForward(r) => r.pod_sandbox_id.clone(),
    };
    let session = match d.streaming.sessions.admit(&key, &limits) {
        Ok(g) => g,
        Err(msg) => {
            tracing::warn!(peer = %peer, kind, "streaming session refused: {msg}");
            return plain(StatusCode::TOO_MANY_REQUESTS, format!("{msg}\n"));
        }
    };
    if upgrade == "spdy/3.1" {
        let ours = if matches!(pending, Pending::PortForward(_)) {
            PORTFORWARD_SPDY
        } else {
            SPDY_PROTOCOLS
        };
        let chosen = match remotecommand::negotiate(&header_values(&req, "x-stream-protocol-version"), ours) {
            Ok(c) => c,
            Err(e) => return plain(StatusCode::FORBIDDEN, format!("{e}\n")),
        };
        let version = chosen.map(|c| c.1).unwrap_or(1);
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) => {
                    let io = IdleIo::new(TokioIo::new(up), limits.idle_timeout, what.clone());
                    let conn = spdy::serve(io, what.clone(), limits.max_streams_per_connection);
                    run_spdy(d, pending, conn, version, what).await;
                    drop(session);
                }
                Err(e) => tracing::warn!(conn = %what, error = %e, "upgrade failed"),
            }
        });
        let mut r = plain(StatusCode::SWITCHING_PROTOCOLS, "");
        let h = r.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        if let Some((name, _)) = chosen {
            h.insert("X-Stream-Protocol-Version", HeaderValue::from_static(name));
        }
        return r;
    }
    if upgrade == "websocket" {
        let Some(accept) = req
            .headers()
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .map(websocket::accept_key)
        else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
        };
        let ours = if matches!(pending, Pending::PortForward(_)) {
            websocket::PORTFORWARD_PROTOCOLS
        } else {
            websocket::CHANNEL_PROTOCOLS
        };
        let chosen = match remotecommand::negotiate(&header_values(&req, "sec-websocket-protocol"), ours) {
            Ok(Some(c)) => c,
            Ok(None) => ours[ours.len() - 1],
            Err(e) => return plain(StatusCode::FORBIDDEN, format!("{e}\n")),
        };
        let ports: Vec<u16> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.strip_prefix("port=").or_else(|| kv.strip_prefix("ports=")))
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.parse().ok())
            .collect();
        if ports.len() > limits.max_port_forwards_per_connection {
            let msg = format!(
                "too many ports on one port-forward connection: {} (stream.max_port_forwards_per_connection is {})",
                ports.len(),
                limits.max_port_forwards_per_connection
            );
            tracing::warn!(peer = %peer, "streaming session refused: {msg}");
            return plain(StatusCode::TOO_MANY_REQUESTS, format!("{msg}\n"));
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) => {
                    let io = IdleIo::new(TokioIo::new(up), limits.idle_timeout, what.clone());
                    websocket::run(d, pending, io, chosen.1, ports, what).await;
                    drop(session);
                }
                Err(e) => tracing::warn!(conn = %what, error = %e, "upgrade failed"),
            }
        });
        let mut r = plain(StatusCode::SWITCHING_PROTOCOLS, "");
        let h = r.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert("Sec-WebSocket-Accept", v);
        }
        h.insert("Sec-WebSocket-Protocol", HeaderValue::from_static(chosen.0));
        return r;
    }
    plain(
        StatusCode::BAD_REQUEST,
        "this URL needs a connection upgrade to SPDY/3.1 or websocket\n",
    )
}

/// What a remotecommand request asks for.
pub(super) fn wanted(p: &Pending) -> Wanted {
    match p {
        Pending::Exec(r) => Wanted {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        },
        Pending::Attach(r) => Wanted {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        },
        Pending::PortForward(_) => Wanted::default(),
    }
}

async fn run_spdy(d: Arc<Daemon>, pending: Pending, conn: spdy::Conn, version: u8, what: String) {
    if let Pending::PortForward(r) = pending {
        portforward::serve_spdy(d, r, conn, what).await;
        return;
    }
    let streams = match remotecommand::collect_spdy(conn, version, wanted(&pending)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(conn = %what, error = %e, "streaming session not started");
            return;
        }
    };
    dispatch(d, pending, streams).await;
}

/// Runs an exec or attach session on its streams.
pub(super) async fn dispatch(d: Arc<Daemon>, pending: Pending, streams: super::channel::Streams) {
    match pending {
        Pending::Exec(r) => exec::run(d, r, streams).await,
        Pending::Attach(r) => attach::run(d, r, streams).await,
        Pending::PortForward(_) => {}
    }
}
