//! The cgroup driver setting (`runtime.cgroup_driver`): `cgroupfs`, `systemd`, or `auto` (systemd when
//! PID 1 is systemd, as `sd_booted(3)` tells: `/run/systemd/system` exists), and its resolution.

use serde::{Deserialize, Serialize};

/// Who makes and removes the cgroups of pods and containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// crust writes `/sys/fs/cgroup` itself; the runtime gets cgroup paths.
    Cgroupfs,
    /// systemd owns the tree: pods are slices, containers scopes the runtime asks systemd for, the
    /// pause and monitors scopes crust asks systemd for.
    Systemd,
}

impl Driver {
    /// The name, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Cgroupfs => "cgroupfs",
            Driver::Systemd => "systemd",
        }
    }
}

/// Whether systemd is PID 1 here (`sd_booted`).
pub fn systemd_booted() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// Resolves a `runtime.cgroup_driver` value; `systemd_booted` decides `auto`. The systemd driver needs
/// systemd: asked for without it, it is refused here rather than at the first pod.
pub fn resolve(setting: &str, systemd_booted: bool) -> Result<Driver, String> {
    match setting {
        "auto" if systemd_booted => Ok(Driver::Systemd),
        "auto" | "cgroupfs" => Ok(Driver::Cgroupfs),
        "systemd" if systemd_booted => Ok(Driver::Systemd),
        "systemd" => Err("\"systemd\" needs systemd as PID 1 (/run/systemd/system is missing)".into()),
        other => Err(format!(
            "must be \"auto\", \"systemd\" or \"cgroupfs\", got {other:?}"
        )),
    }
}

/// The parent of pods whose request names none, when the configuration leaves it empty: `crust`
/// (cgroupfs) or `crust.slice` (systemd).
pub fn default_parent(d: Driver) -> &'static str {
    match d {
        Driver::Cgroupfs => "crust",
        Driver::Systemd => super::slice::DEFAULT_SLICE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution() {
        assert_eq!(resolve("auto", true), Ok(Driver::Systemd));
        assert_eq!(resolve("auto", false), Ok(Driver::Cgroupfs));
        assert_eq!(resolve("cgroupfs", true), Ok(Driver::Cgroupfs));
        assert_eq!(resolve("systemd", true), Ok(Driver::Systemd));
        assert!(resolve("systemd", false).unwrap_err().contains("PID 1"));
        assert!(resolve("Systemd", true).is_err());
        assert!(resolve("", true).is_err());
        assert_eq!(default_parent(Driver::Systemd), "crust.slice");
        assert_eq!(default_parent(Driver::Cgroupfs), "crust");
    }
}
