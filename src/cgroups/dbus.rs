//! `Dbus`: the [`SystemdManager`] that talks to systemd (PID 1) over the system bus with zbus:
//! `StartTransientUnit` and `StopUnit` on `org.freedesktop.systemd1.Manager`, each waited for through
//! the manager's `JobRemoved` signal (the stream is opened before the call, so the job cannot finish
//! unseen). The connection is made at the first call and made again after it broke.
//!
//! systemd leaves the bus for a moment at `systemctl daemon-reexec` (the bus answers that nobody owns
//! its name), and `systemctl restart dbus` cuts every connection (systemd's and crust's): a call that
//! meets either is made again, over a new connection if needed, for up to [`RECONNECT_FOR`], and only
//! then fails with UNAVAILABLE. A scope start whose first try may have reached systemd before the
//! connection broke takes systemd's `UnitExists` on a later try as its own start (scope names carry
//! the container's or pod's id, so nothing else makes that unit).

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use zbus::zvariant::{OwnedObjectPath, Value};

use super::systemd::{Prop, ScopeSpec, SystemdManager};
use crate::{Error, Result};

/// How long a job may take (systemd's own default job timeout is far longer; a scope's start is
/// milliseconds, a stop waits for the processes to die: `TimeoutStopSec`'s default is 90 s).
const JOB_TIMEOUT: Duration = Duration::from_secs(100);

/// How long a call is tried again while systemd is off the bus or the bus is away (a daemon-reexec
/// takes about a second, a restart of dbus and systemd's reconnection a few).
const RECONNECT_FOR: Duration = Duration::from_secs(30);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
trait Manager {
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn subscribe(&self) -> zbus::Result<()>;

    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: zbus::zvariant::ObjectPath<'_>, unit: &str, result: &str);
}

/// systemd over D-Bus.
#[derive(Debug)]
pub struct Dbus {
    /// The bus; `None`: the system bus.
    address: Option<String>,
    proxy: tokio::sync::Mutex<Option<ManagerProxy<'static>>>,
    /// How long a call that met no systemd or no bus is tried again.
    reconnect_for: Duration,
}

impl Default for Dbus {
    fn default() -> Self {
        Dbus {
            address: None,
            proxy: Default::default(),
            reconnect_for: RECONNECT_FOR,
        }
    }
}

fn value(p: &Prop) -> Value<'_> {
    match p {
        Prop::Str(s) => Value::from(s.as_str()),
        Prop::Bool(b) => Value::from(*b),
        Prop::U64(n) => Value::from(*n),
        Prop::U32s(v) => Value::from(v.clone()),
    }
}

/// The D-Bus error name of a failed method call, if it was one.
fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(f) => match f.as_ref() {
            zbus::fdo::Error::ZBus(inner) => error_name(inner),
            _ => None,
        },
        _ => None,
    }
}

impl Dbus {
    /// systemd on the bus at `address` (a D-Bus address, e.g. `unix:path=/tmp/bus`) instead of the
    /// system bus (which `DBUS_SYSTEM_BUS_ADDRESS` can point elsewhere too).
    /// Calls that meet no systemd or no bus are tried again for `reconnect_for`.
    #[cfg(test)]
    pub fn at(address: &str, reconnect_for: Duration) -> Self {
        Dbus {
            address: Some(address.to_string()),
            proxy: Default::default(),
            reconnect_for,
        }
    }

    /// Runs `op` (one try of a manager call on a proxy) until it ends otherwise than UNAVAILABLE (no
    /// connection, systemd not on the bus, the connection lost mid-job), for up to `reconnect_for`;
    /// `op` is told whether an earlier try was made.
    async fn retrying<'a, F>(&'a self, what: &str, mut op: F) -> Result<()>
    where
        F: FnMut(ManagerProxy<'static>, bool) -> BoxFuture<'a, Result<()>>,
    {
        let deadline = tokio::time::Instant::now() + self.reconnect_for;
        let mut pause = Duration::from_millis(100);
        let mut tried = false;
        loop {
            let r = match self.proxy().await {
                Ok(p) => op(p, tried).await,
                Err(e) => Err(e.context(what)),
            };
            match r {
                Err(Error::Unavailable(m)) if tokio::time::Instant::now() + pause < deadline => {
                    tracing::info!(what, error = %m, "systemd or the bus is away: trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    tried = true;
                }
                r => return r,
            }
        }
    }

    async fn connect(&self) -> zbus::Result<zbus::Connection> {
        match &self.address {
            None => zbus::Connection::system().await,
            Some(a) => zbus::connection::Builder::address(a.as_str())?.build().await,
        }
    }

    /// The manager proxy, connecting (and subscribing to its signals) first if needed.
    async fn proxy(&self) -> Result<ManagerProxy<'static>> {
        let mut g = self.proxy.lock().await;
        if let Some(p) = g.as_ref() {
            return Ok(p.clone());
        }
        let conn = self
            .connect()
            .await
            .map_err(|e| Error::Unavailable(format!("connect to the system D-Bus (systemd): {e}")))?;
        let p = ManagerProxy::new(&conn)
            .await
            .map_err(|e| Error::Unavailable(format!("systemd manager on D-Bus: {e}")))?;
        // Without a subscriber systemd sends no JobRemoved signals.
        p.subscribe()
            .await
            .map_err(|e| Error::Unavailable(format!("systemd Subscribe: {e}")))?;
        *g = Some(p.clone());
        Ok(p)
    }

    /// Forgets a connection a call failed on for another reason than systemd's answer.
    async fn maybe_reset(&self, e: &zbus::Error) {
        if error_name(e).is_none() {
            *self.proxy.lock().await = None;
        }
    }

    /// Runs `call` (which returns a job path) and waits for that job's `JobRemoved`; returns its
    /// result (`done`, `failed`, `canceled`, …).
    async fn job<'a, F>(&self, p: &ManagerProxy<'static>, what: &str, call: F) -> Result<String>
    where
        F: std::future::Future<Output = zbus::Result<OwnedObjectPath>> + 'a,
    {
        let mut removed = match p.receive_job_removed().await {
            Ok(r) => r,
            Err(e) => {
                // The connection is dead (the bus restarted): the next try makes a new one.
                *self.proxy.lock().await = None;
                return Err(Error::Unavailable(format!("{what}: watch systemd jobs: {e}")));
            }
        };
        let job = match call.await {
            Ok(j) => j,
            Err(e) => {
                self.maybe_reset(&e).await;
                return Err(call_error(error_name(&e).as_deref(), &e.to_string(), what));
            }
        };
        let wait = async {
            while let Some(sig) = removed.next().await {
                if let Ok(a) = sig.args()
                    && a.job.as_str() == job.as_str()
                {
                    return Some(a.result.to_string());
                }
            }
            None
        };
        match tokio::time::timeout(JOB_TIMEOUT, wait).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => {
                *self.proxy.lock().await = None;
                Err(Error::Unavailable(format!(
                    "{what}: the D-Bus connection closed before job {} finished",
                    job.as_str()
                )))
            }
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "{what}: systemd job {} did not finish in {}s",
                job.as_str(),
                JOB_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// The error for a manager call systemd refused (`name`: its D-Bus error name) or that never reached
/// it (`None`).
fn call_error(name: Option<&str>, text: &str, what: &str) -> Error {
    match name {
        Some("org.freedesktop.systemd1.UnitExists") => Error::AlreadyExists(format!("{what}: {text}")),
        Some("org.freedesktop.systemd1.NoSuchUnit") => Error::NotFound(format!("{what}: {text}")),
        // Nobody owns systemd's name on the bus (daemon-reexec), or the bus gave up on the call.
        Some(
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner"
            | "org.freedesktop.DBus.Error.NoReply"
            | "org.freedesktop.DBus.Error.Disconnected",
        ) => Error::Unavailable(format!("{what}: {text}")),
        Some(_) => Error::Internal(format!("{what}: {text}")),
        None => Error::Unavailable(format!("{what}: {text}")),
    }
}

impl SystemdManager for Dbus {
    fn start_transient_scope<'a>(&'a self, scope: &'a ScopeSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let what = format!("start systemd unit {} in {}", scope.name, scope.slice);
            let props = scope.properties();
            let props = &props;
            let w = what.as_str();
            self.retrying(w, move |p, tried| {
                Box::pin(async move {
                    let values: Vec<(&str, Value<'_>)> = props.iter().map(|(k, v)| (*k, value(v))).collect();
                    let call = p.start_transient_unit(&scope.name, "fail", &values, &[]);
                    match self.job(&p, w, call).await {
                        // A try before may have started it, its answer lost with the connection.
                        Err(Error::AlreadyExists(_)) if tried => Ok(()),
                        Err(e) => Err(e),
                        Ok(r) if r == "done" => Ok(()),
                        Ok(other) => Err(Error::Internal(format!("{w}: the job ended {other:?}"))),
                    }
                })
            })
            .await
        })
    }

    fn stop_unit<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let what = format!("stop systemd unit {name}");
            let w = what.as_str();
            self.retrying(w, move |p, _| {
                Box::pin(async move {
                    let call = p.stop_unit(name, "replace");
                    match self.job(&p, w, call).await {
                        Err(Error::NotFound(_)) => Ok(()),
                        Err(e) => Err(e),
                        Ok(r) if r == "done" => Ok(()),
                        Ok(other) => Err(Error::Internal(format!("{w}: the job ended {other:?}"))),
                    }
                })
            })
            .await
        })
    }
}

#[cfg(test)]
#[path = "dbus_tests.rs"]
mod bus_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_become_dbus_values() {
        let s = ScopeSpec {
            name: "crust-monitor-c1.scope".into(),
            slice: "system.slice".into(),
            pids: vec![7, 8],
            ..Default::default()
        };
        let props = s.properties();
        let values: Vec<(&str, Value<'_>)> = props.iter().map(|(k, v)| (*k, value(v))).collect();
        let pids = values.iter().find(|(k, _)| *k == "PIDs").map(|(_, v)| v.clone());
        assert_eq!(
            pids.map(|v| v.value_signature().to_string()),
            Some("au".to_string())
        );
        let slice = values.iter().find(|(k, _)| *k == "Slice").map(|(_, v)| v.clone());
        assert_eq!(slice, Some(Value::from("system.slice")));
        // The whole argument has the signature systemd declares for it.
        let sig = zbus::zvariant::DynamicType::signature(&values).to_string();
        assert_eq!(sig, "a(sv)");
    }

    #[test]
    fn systemd_error_names_map_to_kinds() {
        let e = call_error(
            Some("org.freedesktop.systemd1.NoSuchUnit"),
            "Unit x.scope not loaded.",
            "stop x",
        );
        assert!(matches!(e, Error::NotFound(_)));
        let e = call_error(Some("org.freedesktop.systemd1.UnitExists"), "exists", "start x");
        assert!(matches!(e, Error::AlreadyExists(_)));
        assert!(matches!(
            call_error(None, "connection reset", "start x"),
            Error::Unavailable(_)
        ));
        // systemd off the bus (daemon-reexec): retriable, not an internal error.
        assert!(matches!(
            call_error(
                Some("org.freedesktop.DBus.Error.ServiceUnknown"),
                "no owner",
                "start x"
            ),
            Error::Unavailable(_)
        ));
    }
}
