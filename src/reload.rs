//! Live configuration (SIGHUP): which keys changed between the configuration in effect and the one
//! just read, which of them take effect now (the log level, `registry.*`, `image.pinned_images`, the
//! signature policy files) and
//! which wait for a restart (everything else). The daemon applies the first kind and keeps the rest of
//! the configuration in effect as it was.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;

/// Key prefixes a reload applies at once.
const LIVE: &[&str] = &[
    "log_level",
    "registry.",
    "image.pinned_images",
    "image.signature_policy",
    "image.signature_policy_dir",
];

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Changed keys that took effect.
    pub applied: Vec<String>,
    /// Changed keys that need a restart of crustd (their old values stay in effect).
    pub needs_restart: Vec<String>,
}

impl Report {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.needs_restart.is_empty()
    }
}

/// Whether a dotted key can change without a restart.
pub fn is_live(key: &str) -> bool {
    LIVE.iter()
        .any(|p| key == p.trim_end_matches('.') || key.starts_with(p))
}

/// The configuration in effect after a reload to `new` from `old`, and what changed: the live keys
/// come from `new`, every other from `old`.
pub fn merge(old: &Config, new: &Config) -> (Config, Report) {
    let a = flatten(old);
    let b = flatten(new);
    let mut report = Report::default();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        if a.get(k) != b.get(k) {
            if is_live(k) {
                report.applied.push(k.clone());
            } else {
                report.needs_restart.push(k.clone());
            }
        }
    }
    let mut effective = old.clone();
    effective.log_level = new.log_level.clone();
    effective.registry = new.registry.clone();
    effective.image.pinned_images = new.image.pinned_images.clone();
    effective.image.signature_policy = new.image.signature_policy.clone();
    effective.image.signature_policy_dir = new.image.signature_policy_dir.clone();
    (effective, report)
}

/// Dotted key → value (arrays are values; an empty table has no keys, so adding or removing an entry
/// shows as its keys).
fn flatten(c: &Config) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(c) {
        walk(&v, "", &mut out);
    }
    out
}

fn walk(v: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else if k.contains('.') || k.contains(':') || k.contains('/') {
                    format!("{prefix}.{k:?}")
                } else {
                    format!("{prefix}.{k}")
                };
                walk(x, &key, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mirror;

    #[test]
    fn live_keys_apply_and_others_wait_for_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.log_level = "debug".into();
        new.registry.mirrors.insert(
            "docker.io".into(),
            Mirror {
                endpoint: vec!["http://127.0.0.1:5000".into()],
                fallback_to_upstream: false,
            },
        );
        new.image.pinned_images = vec!["busybox".into()];
        new.cni.plugin_timeout_seconds = 5;
        let (eff, r) = merge(&old, &new);
        assert_eq!(
            r.applied,
            [
                "image.pinned_images",
                "log_level",
                "registry.mirrors.\"docker.io\".endpoint",
                "registry.mirrors.\"docker.io\".fallback_to_upstream"
            ]
        );
        assert_eq!(r.needs_restart, ["cni.plugin_timeout_seconds"]);
        assert_eq!(eff.cni.plugin_timeout_seconds, old.cni.plugin_timeout_seconds);
        assert_eq!(eff.registry, new.registry);
        assert!(merge(&old, &old).1.is_empty());
    }
}
