//! `Dbus` against a stand-in for systemd's manager on a private `dbus-daemon`: the calls' D-Bus
//! signatures, waiting for each job's `JobRemoved`, and systemd's error names (a unit that exists, a
//! unit that is not loaded), calls made while systemd is off the bus (daemon-reexec) or after the bus
//! restarted. Skipped where `dbus-daemon` is not installed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

use super::Dbus;
use crate::Error;
use crate::cgroups::systemd::{ScopeSpec, SystemdManager};

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum SdError {
    #[zbus(error)]
    ZBus(zbus::Error),
    UnitExists(String),
    NoSuchUnit(String),
}

type Props = Vec<(String, OwnedValue)>;

/// Units by name with the properties they were started with; a job's result to answer with.
#[derive(Default, Clone)]
struct FakeSystemd {
    units: Arc<Mutex<HashMap<String, Props>>>,
    seq: Arc<Mutex<u32>>,
    result: Arc<Mutex<String>>,
}

impl FakeSystemd {
    fn job(&self) -> (u32, OwnedObjectPath) {
        let mut n = self.seq.lock().unwrap();
        *n += 1;
        let p = ObjectPath::try_from(format!("/org/freedesktop/systemd1/job/{n}")).unwrap();
        (*n, p.into())
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeSystemd {
    async fn start_transient_unit(
        &self,
        #[zbus(signal_emitter)] em: SignalEmitter<'_>,
        name: String,
        _mode: String,
        properties: Props,
        _aux: Vec<(String, Vec<(String, OwnedValue)>)>,
    ) -> Result<OwnedObjectPath, SdError> {
        if self.units.lock().unwrap().contains_key(&name) {
            return Err(SdError::UnitExists(format!("Unit {name} was already loaded")));
        }
        self.units.lock().unwrap().insert(name.clone(), properties);
        let (id, job) = self.job();
        let result = self.result.lock().unwrap().clone();
        // Sent before the reply, as systemd may: the caller must already be listening.
        Self::job_removed(&em, id, job.as_ref(), &name, &result).await?;
        Ok(job)
    }

    async fn stop_unit(
        &self,
        #[zbus(signal_emitter)] em: SignalEmitter<'_>,
        name: String,
        _mode: String,
    ) -> Result<OwnedObjectPath, SdError> {
        if self.units.lock().unwrap().remove(&name).is_none() {
            return Err(SdError::NoSuchUnit(format!("Unit {name} not loaded.")));
        }
        let (id, job) = self.job();
        // After the reply this time.
        let em = em.to_owned();
        let (j, unit) = (job.clone(), name.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = Self::job_removed(&em, id, j.as_ref(), &unit, "done").await;
        });
        Ok(job)
    }

    async fn subscribe(&self) {}

    #[zbus(signal)]
    async fn job_removed(
        em: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

struct Bus {
    daemon: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// Starts `dbus-daemon` listening at `sock`; `None` when it is not installed or does not listen.
fn bus_daemon(sock: &std::path::Path) -> Option<std::process::Child> {
    let _ = std::fs::remove_file(sock);
    let mut daemon = std::process::Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile", "--address"])
        .arg(format!("unix:path={}", sock.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..200 {
        // The socket file appears at bind(), before the daemon listens: wait until it accepts (a
        // test connected in between and was refused once under make test).
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Some(daemon);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    None
}

fn private_bus() -> Option<Bus> {
    let dir = tempfile::tempdir().ok()?;
    let sock = dir.path().join("bus");
    let daemon = bus_daemon(&sock)?;
    Some(Bus {
        daemon,
        address: format!("unix:path={}", sock.display()),
        _dir: dir,
    })
}

impl Bus {
    /// Ends this bus's daemon (cutting every connection) and starts a new one at the same address.
    fn restart(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        self.daemon = bus_daemon(&self._dir.path().join("bus")).expect("dbus-daemon again");
    }
}

/// The stand-in for systemd, serving on the bus at `address` under systemd's name.
async fn serve(address: &str, fake: &FakeSystemd) -> zbus::Connection {
    zbus::connection::Builder::address(address)
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .serve_at("/org/freedesktop/systemd1", fake.clone())
        .unwrap()
        .build()
        .await
        .unwrap()
}

fn system_scope(name: &str) -> ScopeSpec {
    ScopeSpec {
        name: name.into(),
        slice: "system.slice".into(),
        pids: vec![1],
        ..Default::default()
    }
}

#[tokio::test]
async fn scopes_start_and_stop_through_the_manager_api() {
    let Some(bus) = private_bus() else {
        eprintln!("no dbus-daemon here: skipped");
        return;
    };
    let fake = FakeSystemd::default();
    *fake.result.lock().unwrap() = "done".into();
    let _server = serve(&bus.address, &fake).await;
    let sd = Dbus::at(&bus.address, Duration::from_secs(5));
    let scope = ScopeSpec {
        name: "crust-pause-p1.scope".into(),
        slice: "kubepods-burstable-pod1.slice".into(),
        pids: vec![4242],
        description: "crust pause of pod p1".into(),
        no_devices: true,
        ..Default::default()
    };
    tokio::time::timeout(Duration::from_secs(10), sd.start_transient_scope(&scope))
        .await
        .expect("the job's end was seen")
        .unwrap();
    {
        let units = fake.units.lock().unwrap();
        let props: HashMap<&str, &OwnedValue> = units["crust-pause-p1.scope"]
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let pids: Vec<u32> = props["PIDs"].try_clone().unwrap().try_into().unwrap();
        assert_eq!(pids, vec![4242]);
        let slice: String = props["Slice"].try_clone().unwrap().try_into().unwrap();
        assert_eq!(slice, "kubepods-burstable-pod1.slice");
        let policy: String = props["DevicePolicy"].try_clone().unwrap().try_into().unwrap();
        assert_eq!(policy, "strict");
        let collect: String = props["CollectMode"].try_clone().unwrap().try_into().unwrap();
        assert_eq!(collect, "inactive-or-failed");
    }
    // The same name again: systemd's UnitExists.
    let e = sd.start_transient_scope(&scope).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists(_)), "{e}");

    tokio::time::timeout(Duration::from_secs(10), sd.stop_unit("crust-pause-p1.scope"))
        .await
        .expect("the stop job's end was seen")
        .unwrap();
    // Gone already: fine.
    sd.stop_unit("crust-pause-p1.scope").await.unwrap();

    // A job that fails is an error naming the unit.
    *fake.result.lock().unwrap() = "failed".into();
    let other = system_scope("crust-monitor-c1.scope");
    let e = sd.start_transient_scope(&other).await.unwrap_err();
    assert!(e.to_string().contains("crust-monitor-c1.scope"), "{e}");
    assert!(e.to_string().contains("failed"), "{e}");
}

#[tokio::test]
async fn no_bus_is_unavailable() {
    let sd = Dbus::at(
        "unix:path=/nonexistent/crust-test-bus",
        Duration::from_millis(300),
    );
    let e = sd.stop_unit("x.scope").await.unwrap_err();
    assert!(matches!(e, Error::Unavailable(_)), "{e}");
}

#[tokio::test]
async fn a_call_waits_for_systemd_to_come_back_on_the_bus() {
    let Some(bus) = private_bus() else {
        eprintln!("no dbus-daemon here: skipped");
        return;
    };
    let fake = FakeSystemd::default();
    *fake.result.lock().unwrap() = "done".into();
    // Nobody owns systemd's name, as during `systemctl daemon-reexec`; it comes back after a while.
    let sd = Dbus::at(&bus.address, Duration::from_secs(20));
    let s = system_scope("crust-c2.scope");
    let call = sd.start_transient_scope(&s);
    let back = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        serve(&bus.address, &fake).await
    };
    let (r, _server) = tokio::time::timeout(Duration::from_secs(30), futures::future::join(call, back))
        .await
        .expect("the call ends");
    r.expect("the scope starts once systemd is back on the bus");
    assert!(fake.units.lock().unwrap().contains_key("crust-c2.scope"));
}

#[tokio::test]
async fn calls_reconnect_after_the_bus_restarted() {
    let Some(mut bus) = private_bus() else {
        eprintln!("no dbus-daemon here: skipped");
        return;
    };
    let fake = FakeSystemd::default();
    *fake.result.lock().unwrap() = "done".into();
    let server = serve(&bus.address, &fake).await;
    let sd = Dbus::at(&bus.address, Duration::from_secs(20));
    sd.start_transient_scope(&system_scope("crust-c3.scope"))
        .await
        .unwrap();
    // `systemctl restart dbus`: every connection is cut; systemd connects to the new bus.
    drop(server);
    bus.restart();
    let _server = serve(&bus.address, &fake).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        sd.start_transient_scope(&system_scope("crust-c4.scope")),
    )
    .await
    .expect("the call ends")
    .expect("the scope starts over a new connection");
    tokio::time::timeout(Duration::from_secs(30), sd.stop_unit("crust-c3.scope"))
        .await
        .expect("the call ends")
        .expect("the stop goes over the new connection too");
    assert_eq!(fake.units.lock().unwrap().len(), 1);
}
