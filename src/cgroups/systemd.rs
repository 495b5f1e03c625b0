//! The systemd side of the systemd cgroup driver: the two calls crust makes to systemd's manager
//! (start a transient scope holding given processes, stop a unit), behind a trait so the driver's
//! logic is tested against a double (`Recording`); `dbus::Dbus` is the real implementation (zbus).
//! What goes into a scope (its D-Bus properties) is built here, independent of D-Bus types.

use futures::future::BoxFuture;

use crate::Result;

/// One property of a transient unit, as `StartTransientUnit` takes it (`a(sv)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prop {
    Str(String),
    Bool(bool),
    U64(u64),
    /// `au`, e.g. `PIDs`.
    U32s(Vec<u32>),
}

/// A transient scope to start: processes already running, moved into a new unit in a slice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSpec {
    /// The unit name, `*.scope`.
    pub name: String,
    /// The slice it goes in (made by systemd if it does not exist yet).
    pub slice: String,
    /// The processes it holds from the start.
    pub pids: Vec<u32>,
    pub description: String,
    /// Whether the processes may manage cgroups below the scope themselves.
    pub delegate: bool,
    /// No device nodes may be opened (systemd's `DevicePolicy=strict` without `DeviceAllow`).
    pub no_devices: bool,
    /// `MemoryMax`, bytes.
    pub memory_max: Option<u64>,
    /// `TasksMax`.
    pub tasks_max: Option<u64>,
}

impl ScopeSpec {
    /// The unit's properties for `StartTransientUnit`: the processes, the slice, a description,
    /// collected once inactive or failed (nothing lingers for `reset-failed`), accounting on (the
    /// stats read the scope's files); then what the scope asks for.
    pub fn properties(&self) -> Vec<(&'static str, Prop)> {
        let mut p = vec![
            ("Description", Prop::Str(self.description.clone())),
            ("Slice", Prop::Str(self.slice.clone())),
            ("PIDs", Prop::U32s(self.pids.clone())),
            ("CollectMode", Prop::Str("inactive-or-failed".into())),
            ("MemoryAccounting", Prop::Bool(true)),
            ("CPUAccounting", Prop::Bool(true)),
            ("TasksAccounting", Prop::Bool(true)),
        ];
        if self.delegate {
            p.push(("Delegate", Prop::Bool(true)));
        }
        if self.no_devices {
            p.push(("DevicePolicy", Prop::Str("strict".into())));
        }
        if let Some(m) = self.memory_max {
            p.push(("MemoryMax", Prop::U64(m)));
        }
        if let Some(t) = self.tasks_max {
            p.push(("TasksMax", Prop::U64(t)));
        }
        p
    }
}

/// systemd's manager, as far as crust uses it.
pub trait SystemdManager: Send + Sync + std::fmt::Debug {
    /// Starts the transient scope and waits until its job has finished, so that its processes are in
    /// it when this returns. A scope of that name that already exists is an error.
    fn start_transient_scope<'a>(&'a self, scope: &'a ScopeSpec) -> BoxFuture<'a, Result<()>>;
    /// Stops a unit (its processes are killed) and waits for the job. Idempotent: a unit that is not
    /// loaded (never started, or stopped and collected) is Ok.
    fn stop_unit<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// A test double: records the calls, starts and stops nothing; can be told to fail starts.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Recording {
    pub started: std::sync::Mutex<Vec<ScopeSpec>>,
    pub stopped: std::sync::Mutex<Vec<String>>,
    /// Names whose start fails.
    pub fail: std::sync::Mutex<Vec<String>>,
}

#[cfg(test)]
impl Recording {
    pub fn started_names(&self) -> Vec<String> {
        let g = self.started.lock().unwrap_or_else(|e| e.into_inner());
        g.iter().map(|s| s.name.clone()).collect()
    }

    pub fn stopped_names(&self) -> Vec<String> {
        self.stopped.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
impl SystemdManager for Recording {
    fn start_transient_scope<'a>(&'a self, scope: &'a ScopeSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self
                .fail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&scope.name)
            {
                return Err(crate::Error::Internal(format!(
                    "start {}: job failed",
                    scope.name
                )));
            }
            self.started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(scope.clone());
            Ok(())
        })
    }

    fn stop_unit<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.stopped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(name.to_string());
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_properties() {
        let s = ScopeSpec {
            name: "crust-pause-p1.scope".into(),
            slice: "kubepods-burstable-pod1.slice".into(),
            pids: vec![42],
            description: "crust pause of pod p1".into(),
            no_devices: true,
            ..Default::default()
        };
        let p = s.properties();
        let get = |k: &str| p.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PIDs"), Some(Prop::U32s(vec![42])));
        assert_eq!(
            get("Slice"),
            Some(Prop::Str("kubepods-burstable-pod1.slice".into()))
        );
        assert_eq!(get("CollectMode"), Some(Prop::Str("inactive-or-failed".into())));
        assert_eq!(get("DevicePolicy"), Some(Prop::Str("strict".into())));
        assert_eq!(get("Delegate"), None);
        assert_eq!(get("MemoryMax"), None);
        let s = ScopeSpec {
            delegate: true,
            memory_max: Some(1 << 20),
            tasks_max: Some(16),
            ..s
        };
        let p = s.properties();
        assert!(p.contains(&("Delegate", Prop::Bool(true))));
        assert!(p.contains(&("MemoryMax", Prop::U64(1 << 20))));
        assert!(p.contains(&("TasksMax", Prop::U64(16))));
        // Each property once.
        let mut names: Vec<_> = p.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), p.len());
    }
}
