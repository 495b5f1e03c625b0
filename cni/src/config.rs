//! Network configurations: loading `.conf`, `.conflist` and `.json` files from a directory, validating
//! them, and turning a single-plugin `.conf` into a one-element list.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{CniError, SUPPORTED_VERSIONS};

/// One network: a named list of plugins run in order on ADD (reverse order on DEL).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// The network's `name`.
    pub name: String,
    /// The list's `cniVersion`.
    pub cni_version: String,
    /// `disableCheck` of the list.
    pub disable_check: bool,
    /// Each plugin's configuration object (has a `type`).
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from (empty when built from bytes).
    pub source: PathBuf,
    /// The configuration as a conflist JSON document; stored so DEL uses what ADD used.
    pub raw: Value,
}

impl NetworkConfig {
    /// Parses a `.conflist` document, or a single-plugin `.conf` document (which has a `type`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CniError> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| CniError::Config(format!("not valid JSON: {e}")))?;
        Self::from_value(v)
    }

    /// Like `from_bytes`, from a parsed document.
    pub fn from_value(v: Value) -> Result<Self, CniError> {
        let Value::Object(obj) = v else {
            return Err(CniError::Config("not a JSON object".into()));
        };
        let name = str_field(&obj, "name")?;
        if name.is_empty() {
            return Err(CniError::Config("\"name\" must not be empty".into()));
        }
        let cni_version = str_field(&obj, "cniVersion")?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::Config(format!(
                "cniVersion {cni_version:?} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        let disable_check = obj.get("disableCheck").and_then(Value::as_bool).unwrap_or(false);
        let (plugins, raw) = if let Some(list) = obj.get("plugins") {
            let Value::Array(list) = list else {
                return Err(CniError::Config("\"plugins\" must be an array".into()));
            };
            if list.is_empty() {
                return Err(CniError::Config("\"plugins\" must not be empty".into()));
            }
            let mut plugins = Vec::with_capacity(list.len());
            for (i, p) in list.iter().enumerate() {
                let Value::Object(p) = p else {
                    return Err(CniError::Config(format!("plugins[{i}] is not an object")));
                };
                check_type(p).map_err(|m| CniError::Config(format!("plugins[{i}]: {m}")))?;
                plugins.push(p.clone());
            }
            (plugins, Value::Object(obj.clone()))
        } else {
            // A single-plugin .conf: the whole object is the plugin.
            check_type(&obj).map_err(CniError::Config)?;
            let mut list = Map::new();
            list.insert("cniVersion".into(), Value::String(cni_version.clone()));
            list.insert("name".into(), Value::String(name.clone()));
            list.insert("plugins".into(), Value::Array(vec![Value::Object(obj.clone())]));
            (vec![obj], Value::Object(list))
        };
        Ok(NetworkConfig {
            name,
            cni_version,
            disable_check,
            plugins,
            source: PathBuf::new(),
            raw,
        })
    }

    /// The plugin types in order (for messages).
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .collect()
    }
}

fn str_field(obj: &Map<String, Value>, key: &str) -> Result<String, CniError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(CniError::Config(format!("{key:?} must be a string"))),
        None => Err(CniError::Config(format!("{key:?} is missing"))),
    }
}

fn check_type(p: &Map<String, Value>) -> Result<(), String> {
    match p.get("type") {
        Some(Value::String(t)) if !t.is_empty() && !t.contains('/') && t != ".." => Ok(()),
        Some(Value::String(t)) => Err(format!("\"type\" {t:?} is not a plugin name")),
        _ => Err("\"type\" is missing or not a string".into()),
    }
}

/// What `load_dir` found: the valid networks in name order (the first is the default) and the files
/// it skipped, each with why.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Valid networks, ordered by file name.
    pub networks: Vec<NetworkConfig>,
    /// Broken files: path and reason.
    pub errors: Vec<(PathBuf, String)>,
}

impl Loaded {
    /// The default network (first by file name).
    pub fn default_network(&self) -> Option<&NetworkConfig> {
        self.networks.first()
    }
}

/// Loads every `.conf`, `.conflist` and `.json` file in `dir` in name order. A broken file is logged
/// with its name and skipped. A missing directory yields nothing.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut out = Loaded::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "conf" || x == "conflist" || x == "json")
                && p.is_file()
        })
        .collect();
    files.sort();
    for path in files {
        let parsed = std::fs::read(&path)
            .map_err(|e| CniError::Config(format!("read: {e}")))
            .and_then(|b| NetworkConfig::from_bytes(&b));
        match parsed {
            Ok(mut n) => {
                n.source = path;
                out.networks.push(n);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping broken CNI network config");
                out.errors.push((path, e.to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_in_name_order_and_skips_broken_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("05-broken.conf"), "{not json").unwrap();
        std::fs::write(
            d.path().join("06-badver.json"),
            r#"{"cniVersion":"9.9.9","name":"x","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("07-notype.conflist"),
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{}]}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("README"), "ignored").unwrap();
        let l = load_dir(d.path());
        let names: Vec<_> = l.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(l.default_network().unwrap().name, "a");
        assert_eq!(l.networks[1].plugin_types(), ["bridge", "portmap"]);
        let bad: Vec<_> = l
            .errors
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(bad, ["05-broken.conf", "06-badver.json", "07-notype.conflist"]);
        assert!(l.errors[1].1.contains("9.9.9"), "{}", l.errors[1].1);
        // A single-plugin .conf becomes a list.
        assert_eq!(l.networks[0].raw["plugins"][0]["type"], "bridge");
    }

    #[test]
    fn missing_dir_is_empty() {
        let l = load_dir(Path::new("/nonexistent/crust-cni"));
        assert!(l.networks.is_empty() && l.errors.is_empty());
    }
}
