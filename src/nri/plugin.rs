//! One connected NRI plugin: its socket split by the multiplexer, crust's runtime service served to
//! it (registration, container updates it asks for), the ttrpc client of its plugin service, the
//! registration and configuration handshake, and every later call bounded by the request timeout. A
//! plugin that fails a call for any reason other than an answer of its own (it timed out, its
//! connection broke) is closed, and the request goes on without it, as containerd does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nri_api::nri as api;
use nri_api::nri_ttrpc as svc;
use nri_api::ttrpc;
use nri_api::ttrpc::r#async::transport::{Listener, Socket};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use super::mux;
use crate::{Error, Result};

/// Every event a plugin can subscribe to (bits 0..=13: events 1..=14).
pub const ALL_EVENTS: i32 = (1 << 14) - 1;

/// Timeouts and identity handed to plugins.
#[derive(Clone, Debug)]
pub struct Settings {
    pub registration_timeout: Duration,
    pub request_timeout: Duration,
    pub runtime_name: String,
    pub runtime_version: String,
}

/// A plugin crustd started itself (pre-installed in `plugin_path`).
pub struct Launched {
    pub idx: String,
    pub name: String,
    pub config: String,
    pub child: tokio::process::Child,
}

/// What the runtime service needs from the rest of NRI: the plugin's container updates.
#[nri_api::async_trait]
pub trait Host: Send + Sync {
    /// Applies updates a plugin asked for outside any request; returns the failed ones.
    async fn plugin_updates(
        &self,
        plugin: &str,
        updates: Vec<api::ContainerUpdate>,
        evictions: Vec<api::ContainerEviction>,
    ) -> Vec<api::ContainerUpdate>;
}

/// A registered, configured plugin.
pub struct Plugin {
    pub idx: String,
    pub name: String,
    /// `external` (it connected to the socket) or `pre-installed` (crustd started it).
    pub kind: &'static str,
    /// The plugin's process, when known.
    pub pid: Option<u32>,
    /// The events it subscribed to (bit n-1 for event n).
    pub events: i32,
    client: svc::PluginClient,
    request_timeout: Duration,
    /// The multiplexer, the runtime service's server and a launched plugin's process; dropped (so
    /// the socket is closed and the process killed) when the plugin is closed.
    conn: Mutex<Option<(mux::Mux, ttrpc::r#async::Server, Option<tokio::process::Child>)>>,
    closed: AtomicBool,
}

/// The runtime service served to one plugin.
struct RuntimeService {
    registered: Mutex<Option<oneshot::Sender<api::RegisterPluginRequest>>>,
    host: Weak<dyn Host>,
    /// The plugin's `idx-name` once registered.
    who: Mutex<String>,
}

#[nri_api::async_trait]
impl svc::Runtime for RuntimeService {
    async fn register_plugin(
        &self,
        _ctx: &ttrpc::r#async::TtrpcContext,
        req: api::RegisterPluginRequest,
    ) -> ttrpc::Result<api::Empty> {
        *lock(&self.who) = format!("{}-{}", req.plugin_idx, req.plugin_name);
        if let Some(tx) = lock(&self.registered).take() {
            let _ = tx.send(req);
        }
        Ok(api::Empty::new())
    }

    async fn update_containers(
        &self,
        _ctx: &ttrpc::r#async::TtrpcContext,
        req: api::UpdateContainersRequest,
    ) -> ttrpc::Result<api::UpdateContainersResponse> {
        let mut rsp = api::UpdateContainersResponse::new();
        if let Some(host) = self.host.upgrade() {
            let who = lock(&self.who).clone();
            rsp.failed = host.plugin_updates(&who, req.update, req.evict).await;
        }
        Ok(rsp)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// NRI's rule for an index: exactly two digits.
pub fn valid_index(idx: &str) -> bool {
    idx.len() == 2 && idx.bytes().all(|b| b.is_ascii_digit())
}

impl Plugin {
    /// Serves a plugin on `stream` until it has registered and accepted its configuration.
    /// `launched` names a plugin crustd started (its name and index come from its file name).
    pub async fn connect(
        stream: UnixStream,
        launched: Option<Launched>,
        set: &Settings,
        host: Weak<dyn Host>,
        config_for: impl Fn(&str, &str) -> String,
    ) -> Result<Arc<Plugin>> {
        let pid = launched
            .as_ref()
            .and_then(|l| l.child.id())
            .or_else(|| peer_pid(&stream));
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
        let (mx, conns) = mux::split(stream, closed_tx);
        let client = svc::PluginClient::new(ttrpc::r#async::Client::new(Socket::new(conns.plugin)));
        let (reg_tx, reg_rx) = oneshot::channel();
        let runtime = Arc::new(RuntimeService {
            registered: Mutex::new(Some(reg_tx)),
            host,
            who: Mutex::new(String::new()),
        });
        let one = futures::stream::once(std::future::ready(Ok::<_, std::io::Error>(conns.runtime)));
        let mut server = ttrpc::r#async::Server::new()
            .register_service(svc::create_runtime(runtime))
            .add_listener(Listener::new(one));
        server
            .start()
            .await
            .map_err(|e| Error::Internal(format!("NRI: serve the runtime service: {e}")))?;
        let reg = tokio::select! {
            r = reg_rx => r.map_err(|_| Error::Internal("NRI: the plugin went away before registering".into()))?,
            _ = closed_rx.recv() => return Err(Error::Internal("NRI: the plugin closed its connection before registering".into())),
            _ = tokio::time::sleep(set.registration_timeout) => {
                return Err(Error::DeadlineExceeded(format!(
                    "NRI: the plugin did not register within {:?}", set.registration_timeout
                )));
            }
        };
        let (idx, name, kind, child, config) = match launched {
            Some(l) => (l.idx, l.name, "pre-installed", Some(l.child), l.config),
            None => {
                if reg.plugin_name.is_empty() {
                    return Err(Error::invalid(
                        "plugin_name",
                        "NRI: a plugin registered with no name",
                    ));
                }
                if !valid_index(&reg.plugin_idx) {
                    return Err(Error::invalid(
                        "plugin_idx",
                        format!(
                            "NRI: plugin {:?} registered with index {:?}, which is not two digits",
                            reg.plugin_name, reg.plugin_idx
                        ),
                    ));
                }
                let config = config_for(&reg.plugin_idx, &reg.plugin_name);
                (reg.plugin_idx, reg.plugin_name, "external", None, config)
            }
        };
        let mut req = api::ConfigureRequest::new();
        req.config = config;
        req.runtime_name = set.runtime_name.clone();
        req.runtime_version = set.runtime_version.clone();
        req.registration_timeout = set.registration_timeout.as_millis() as i64;
        req.request_timeout = set.request_timeout.as_millis() as i64;
        let rsp = timed(
            set.request_timeout,
            client.configure(ctx(set.request_timeout), &req),
        )
        .await
        .map_err(|e| Error::Internal(format!("NRI: configure plugin {idx}-{name}: {e}")))?;
        let events = match rsp.events {
            0 => ALL_EVENTS,
            e if e & !ALL_EVENTS != 0 => {
                return Err(Error::invalid(
                    "events",
                    format!("NRI: plugin {idx}-{name} subscribed to unknown events (mask {e:#x})"),
                ));
            }
            e => e,
        };
        let p = Arc::new(Plugin {
            idx,
            name,
            kind,
            pid,
            events,
            client,
            request_timeout: set.request_timeout,
            conn: Mutex::new(Some((mx, server, child))),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move {
            let _ = closed_rx.recv().await;
            if let Some(p) = weak.upgrade() {
                tracing::info!(plugin = %p.id(), "NRI plugin connection closed");
                p.close();
            }
        });
        Ok(p)
    }

    /// `idx-name`, as NRI names a plugin.
    pub fn id(&self) -> String {
        format!("{}-{}", self.idx, self.name)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Disconnects the plugin (and kills it when crustd started it).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let conn = lock(&self.conn).take();
        if let Some((_mux, _server, Some(mut child))) = conn {
            let _ = child.start_kill();
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }

    /// Whether the plugin subscribed to `event`.
    pub fn wants(&self, event: api::Event) -> bool {
        let n = event as i32;
        n > 0 && self.events & (1 << (n - 1)) != 0
    }

    /// Runs one call; `Ok(None)` when the plugin failed in a way that closes it (no answer in time, a
    /// broken connection): it is closed and the caller goes on without it.
    pub async fn call<T, F>(
        &self,
        what: &str,
        f: impl FnOnce(svc::PluginClient, ttrpc::context::Context) -> F,
    ) -> Result<Option<T>>
    where
        F: std::future::Future<Output = ttrpc::Result<T>>,
    {
        if self.is_closed() {
            return Ok(None);
        }
        let fut = f(self.client.clone(), ctx(self.request_timeout));
        match timed(self.request_timeout, fut).await {
            Ok(v) => Ok(Some(v)),
            Err(ttrpc::Error::RpcStatus(st)) if st.code() != ttrpc::Code::DEADLINE_EXCEEDED => {
                Err(Error::Internal(format!(
                    "NRI plugin {} failed {what}: {}",
                    self.id(),
                    st.message()
                )))
            }
            Err(e) => {
                tracing::warn!(plugin = %self.id(), error = %e, "NRI plugin failed {what}; disconnecting it");
                self.close();
                Ok(None)
            }
        }
    }
}

fn ctx(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(timeout.as_nanos().min(i64::MAX as u128) as i64)
}

/// `fut` bounded by `timeout` (the ttrpc deadline is the plugin's to honour; this one is ours).
async fn timed<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = ttrpc::Result<T>>,
) -> ttrpc::Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(ttrpc::Error::Others(format!("no answer within {timeout:?}"))),
    }
}

/// The PID of the process at the other end of a unix socket.
fn peer_pid(s: &UnixStream) -> Option<u32> {
    s.peer_cred().ok()?.pid().and_then(|p| u32::try_from(p).ok())
}
