//! What an OCI runtime binary honours, from its `features` subcommand (runc 1.1+, crun): the newest
//! runtime-spec version it knows and whether it injects network devices. Asked once per binary and
//! remembered; a runtime that cannot say is taken to know runtime-spec 1.0 only. NRI uses this to
//! refuse adjustments the runtime would silently ignore (runc ignores spec fields it does not know).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// What one runtime binary honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// `ociVersionMax` as (major, minor, patch), pre-release tags dropped (`1.0.2-dev` is 1.0.2).
    pub oci_max: (u32, u32, u32),
    /// The version as the runtime wrote it, for messages.
    pub oci_max_text: String,
    /// `linux.netDevices.enabled`.
    pub net_devices: bool,
}

impl Features {
    /// Parses a `features` document.
    pub fn parse(doc: &serde_json::Value) -> Features {
        let text = doc["ociVersionMax"].as_str().unwrap_or("1.0.0").to_string();
        let mut parts = text
            .split(['-', '+'])
            .next()
            .unwrap_or_default()
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let oci_max = (
            parts.next().unwrap_or(1),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        Features {
            oci_max,
            oci_max_text: text,
            net_devices: doc["linux"]["netDevices"]["enabled"].as_bool() == Some(true),
        }
    }

    /// Whether the runtime knows runtime-spec `major.minor` (process.ioPriority and
    /// process.scheduler came with 1.1).
    pub fn knows_spec(&self, major: u32, minor: u32) -> bool {
        (self.oci_max.0, self.oci_max.1) >= (major, minor)
    }
}

fn cache() -> &'static Mutex<HashMap<PathBuf, Features>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Features>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Records `f` as the features of `path` (unit tests of what uses them).
#[cfg(test)]
pub fn remember(path: &Path, f: Features) {
    cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf(), f);
}

/// The features of the runtime at `path`, asked once (a few ms) and remembered.
pub fn features(path: &Path) -> Features {
    let cache = cache();
    if let Some(f) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
        return f.clone();
    }
    let doc = crate::reaper::output(std::process::Command::new(path).arg("features"))
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or(serde_json::Value::Null);
    let f = Features::parse(&doc);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf(), f.clone());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_net_devices_are_read() {
        let f = Features::parse(&serde_json::json!({"ociVersionMax": "1.0.2-dev", "linux": {}}));
        assert_eq!(f.oci_max, (1, 0, 2));
        assert!(!f.knows_spec(1, 1));
        assert!(!f.net_devices);
        let f = Features::parse(&serde_json::json!({
            "ociVersionMax": "1.2.1", "linux": {"netDevices": {"enabled": true}}
        }));
        assert!(f.knows_spec(1, 1) && f.knows_spec(1, 2) && !f.knows_spec(1, 3));
        assert!(f.net_devices);
        let f = Features::parse(&serde_json::Value::Null);
        assert_eq!(f.oci_max, (1, 0, 0));
    }
}
