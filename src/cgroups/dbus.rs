//! `Dbus`: the [`SystemdManager`] that talks to systemd (PID 1) over the system bus with zbus:
//! `StartTransientUnit` and `StopUnit` on `org.freedesktop.systemd1.Manager`, each waited for through
//! the manager's `JobRemoved` signal (the stream is opened before the call, so the job cannot finish
//! unseen). The connection is made at the first call and made again after it broke.

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use zbus::zvariant::{OwnedObjectPath, Value};

use super::systemd::{Prop, ScopeSpec, SystemdManager};
use crate::{Error, Result};

/// How long a job may take (systemd's own default job timeout is far longer; a scope's start is
/// milliseconds, a stop waits for the processes to die: `TimeoutStopSec`'s default is 90 s).
const JOB_TIMEOUT: Duration = Duration::from_secs(100);

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
#[derive(Debug, Default)]
pub struct Dbus {
    /// The bus; `None`: the system bus.
    address: Option<String>,
    proxy: tokio::sync::Mutex<Option<ManagerProxy<'static>>>,
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
    #[cfg(test)]
    pub fn at(address: &str) -> Self {
        Dbus {
            address: Some(address.to_string()),
            ..Default::default()
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
        let mut removed = p
            .receive_job_removed()
            .await
            .map_err(|e| Error::Unavailable(format!("{what}: watch systemd jobs: {e}")))?;
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
        Some(_) => Error::Internal(format!("{what}: {text}")),
        None => Error::Unavailable(format!("{what}: {text}")),
    }
}

impl SystemdManager for Dbus {
    fn start_transient_scope<'a>(&'a self, scope: &'a ScopeSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let what = format!("start systemd unit {} in {}", scope.name, scope.slice);
            let p = self.proxy().await.map_err(|e| e.context(&what))?;
            let props = scope.properties();
            let values: Vec<(&str, Value<'_>)> = props.iter().map(|(k, v)| (*k, value(v))).collect();
            let call = p.start_transient_unit(&scope.name, "fail", &values, &[]);
            match self.job(&p, &what, call).await?.as_str() {
                "done" => Ok(()),
                other => Err(Error::Internal(format!("{what}: the job ended {other:?}"))),
            }
        })
    }

    fn stop_unit<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let what = format!("stop systemd unit {name}");
            let p = self.proxy().await.map_err(|e| e.context(&what))?;
            let call = p.stop_unit(name, "replace");
            match self.job(&p, &what, call).await {
                Err(Error::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
                Ok(r) if r == "done" => Ok(()),
                Ok(other) => Err(Error::Internal(format!("{what}: the job ended {other:?}"))),
            }
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
    }
}
