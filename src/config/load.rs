//! Loading the configuration: the main file, then drop-ins `crust.d/*.toml` beside it in name order
//! (tables merged key by key, later files win), then command-line overrides; then validation. Every error
//! names the file, the key and what is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Config;
use super::validate::validate;

/// Why the configuration was refused (crustd exits with status 2).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {msg}")]
pub struct ConfigError {
    /// The file (or `command line`, `defaults`).
    pub file: String,
    /// Dotted key path, or `-` when the file as a whole is wrong.
    pub key: String,
    /// What is wrong.
    pub msg: String,
}

/// Values given on the command line; they win over every file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub socket: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub log_level: Option<String>,
}

/// Default main configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/crust/crust.toml";

/// Loads `path` (or the default file, which may be absent), its drop-ins and the overrides.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let (main, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let mut files = Vec::new();
    if main.exists() || required {
        files.push(main.clone());
    }
    let dropin_dir = main.parent().unwrap_or(Path::new("/")).join("crust.d");
    if let Ok(rd) = std::fs::read_dir(&dropin_dir) {
        let mut dropins: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        dropins.sort();
        files.extend(dropins);
    }

    let mut merged = toml::Table::new();
    // dotted key → file that set it last, to name the file in value errors.
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for file in &files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: name.clone(),
            key: "-".into(),
            msg: format!("cannot read: {e}"),
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| toml_error(&name, &text, e))?;
        // Each file must make sense on its own: unknown keys and wrong types are caught here, by file.
        let alone: Config = toml::from_str(&text).map_err(|e| toml_error(&name, &text, e))?;
        drop(alone);
        record_origin(&table, "", &name, &mut origin);
        merge(&mut merged, table);
    }
    keep_default_handlers(&mut merged);
    let mut cfg: Config = toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError {
            file: "merged configuration".into(),
            key: "-".into(),
            msg: e.message().to_string(),
        })?;

    let cli = "command line".to_string();
    if let Some(s) = &overrides.socket {
        cfg.api.socket = s.clone();
        origin.insert("api.socket".into(), cli.clone());
    }
    if let Some(r) = &overrides.root {
        cfg.root = r.clone();
        origin.insert("root".into(), cli.clone());
    }
    if let Some(s) = &overrides.state {
        cfg.state = s.clone();
        origin.insert("state".into(), cli.clone());
    }
    if let Some(l) = &overrides.log_level {
        cfg.log_level = l.clone();
        origin.insert("log_level".into(), cli);
    }

    if let Err((key, msg)) = validate(&cfg) {
        let file = origin_of(&origin, &key).unwrap_or_else(|| "defaults".into());
        return Err(ConfigError { file, key, msg });
    }
    Ok(cfg)
}

/// Handlers are added to the built-in ones, as in CRI-O: a `[runtime.handlers.crun]` table alone
/// makes crun a second handler beside runc rather than the only one (a table for `runc` itself still
/// sets its values).
fn keep_default_handlers(merged: &mut toml::Table) {
    let Some(toml::Value::Table(handlers)) = merged
        .get_mut("runtime")
        .and_then(|r| r.as_table_mut())
        .and_then(|r| r.get_mut("handlers"))
    else {
        return;
    };
    for (name, h) in super::RuntimeConfig::default().handlers {
        if handlers.contains_key(&name) {
            continue;
        }
        if let Ok(t) = toml::Table::try_from(h) {
            handlers.insert(name, toml::Value::Table(t));
        }
    }
}

/// Turns a toml error into one naming the file, the dotted key (from the error's span: the key on that
/// line, under the nearest `[table]` header above it) and the reason.
fn toml_error(file: &str, text: &str, e: toml::de::Error) -> ConfigError {
    let mut msg = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return ConfigError {
            file: file.to_string(),
            key: "-".into(),
            msg,
        };
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = match line.split_once('=') {
        Some((k, _)) => k.trim().to_string(),
        None => text.get(span.clone()).unwrap_or("").trim().to_string(),
    };
    let table = text
        .lines()
        .take(line_no - 1)
        .filter_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .last()
        .map(|t| t.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match table {
        Some(t) if !key.starts_with('[') && !key.is_empty() => format!("{t}.{key}"),
        _ if key.is_empty() => "-".to_string(),
        _ => key,
    };
    msg = format!("{msg} (line {line_no})");
    ConfigError {
        file: file.to_string(),
        key,
        msg,
    }
}

fn record_origin(table: &toml::Table, prefix: &str, file: &str, origin: &mut BTreeMap<String, String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let toml::Value::Table(t) = v {
            record_origin(t, &key, file, origin);
        }
        origin.insert(key, file.to_string());
    }
}

fn origin_of(origin: &BTreeMap<String, String>, key: &str) -> Option<String> {
    let mut k = key.to_string();
    loop {
        if let Some(f) = origin.get(&k) {
            return Some(f.clone());
        }
        let cut = k.rfind('.')?;
        k.truncate(cut);
    }
}

/// Deep merge: tables merge key by key, anything else is replaced.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = Config::default();
        validate(&c).unwrap();
        let text = toml::to_string_pretty(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn dropins_merge_in_name_order_and_flags_win() {
        let d = tempfile::tempdir().unwrap();
        let main = write(
            d.path(),
            "crust.toml",
            "log_level = \"debug\"\n[image]\nmax_concurrent_downloads = 5\n",
        );
        write(
            d.path(),
            "crust.d/20-b.toml",
            "[image]\nstall_timeout_seconds = 7\n",
        );
        write(
            d.path(),
            "crust.d/10-a.toml",
            "[image]\nstall_timeout_seconds = 3\nmax_concurrent_downloads = 2\n",
        );
        let o = Overrides {
            log_level: Some("warn".into()),
            ..Default::default()
        };
        let c = load(Some(&main), &o).unwrap();
        assert_eq!(c.image.stall_timeout_seconds, 7);
        assert_eq!(c.image.max_concurrent_downloads, 2);
        assert_eq!(c.log_level, "warn");
    }

    #[test]
    fn cgroup_driver_and_parent_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let key = |text: &str| {
            let main = write(d.path(), "crust.toml", text);
            load(Some(&main), &Overrides::default()).map_err(|e| e.key)
        };
        assert_eq!(
            key("[runtime]\ncgroup_driver = \"bogus\"\n").unwrap_err(),
            "runtime.cgroup_driver"
        );
        assert_eq!(
            key("[runtime]\ncgroup_driver = \"cgroupfs\"\ncgroup_parent = \"/abs\"\n").unwrap_err(),
            "runtime.cgroup_parent"
        );
        let c = key(
            "[runtime]\ncgroup_driver = \"cgroupfs\"\n[runtime.handlers.crun]\nruntime_path = \"crun\"\n",
        )
        .unwrap();
        assert_eq!(c.runtime.handlers["crun"].path, Path::new("crun"));
        // crun beside the built-in runc, as a CRI-O user writes it.
        assert_eq!(c.runtime.handlers["runc"].path, Path::new("/usr/sbin/runc"));
        assert_eq!(c.cgroup_driver(), crate::cgroups::Driver::Cgroupfs);
        if !crate::cgroups::driver::systemd_booted() {
            assert_eq!(
                key("[runtime]\ncgroup_driver = \"systemd\"\n").unwrap_err(),
                "runtime.cgroup_driver"
            );
        }
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        let main = write(d.path(), "crust.toml", "[image]\nmax_downloads = 5\n");
        let e = load(Some(&main), &Overrides::default()).unwrap_err();
        assert!(e.file.ends_with("crust.toml"), "{e}");
        assert_eq!(e.key, "image.max_downloads", "{e}");
        assert!(e.msg.contains("unknown field"), "{e}");
    }

    #[test]
    fn image_volumes_take_the_three_modes() {
        let d = tempfile::tempdir().unwrap();
        let main = write(d.path(), "crust.toml", "");
        let c = load(Some(&main), &Overrides::default()).unwrap();
        assert_eq!(c.image.volumes, crate::config::ImageVolumes::Copy);
        let main = write(d.path(), "crust.toml", "[image]\nvolumes = \"mkdir\"\n");
        let c = load(Some(&main), &Overrides::default()).unwrap();
        assert_eq!(c.image.volumes, crate::config::ImageVolumes::Mkdir);
        let main = write(d.path(), "crust.toml", "[image]\nvolumes = \"bind\"\n");
        let e = load(Some(&main), &Overrides::default()).unwrap_err();
        assert_eq!(e.key, "image.volumes", "{e}");
    }

    #[test]
    fn bad_value_names_the_dropin_that_set_it() {
        let d = tempfile::tempdir().unwrap();
        let main = write(d.path(), "crust.toml", "");
        write(
            d.path(),
            "crust.d/50-x.toml",
            "[registry.mirrors.\"docker.io\"]\nendpoint = [\"ftp://x\"]\n",
        );
        let e = load(Some(&main), &Overrides::default()).unwrap_err();
        assert!(e.file.ends_with("50-x.toml"), "{e}");
        assert!(e.key.contains("endpoint"), "{e}");
    }

    #[test]
    fn retry_bounds_are_checked() {
        let d = tempfile::tempdir().unwrap();
        for (text, key) in [
            ("[image]\nretry_attempts = 0\n", "image.retry_attempts"),
            (
                "[image]\nretry_max_wait_seconds = 3601\n",
                "image.retry_max_wait_seconds",
            ),
        ] {
            let main = write(d.path(), "crust.toml", text);
            let e = load(Some(&main), &Overrides::default()).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
        let main = write(d.path(), "crust.toml", "[image]\nretry_attempts = 1\n");
        assert_eq!(
            load(Some(&main), &Overrides::default())
                .unwrap()
                .image
                .retry_attempts,
            1
        );
    }

    #[test]
    fn metrics_address_is_ip_port_or_empty() {
        let d = tempfile::tempdir().unwrap();
        let main = write(d.path(), "crust.toml", "[metrics]\naddress = \"localhost\"\n");
        let e = load(Some(&main), &Overrides::default()).unwrap_err();
        assert_eq!(e.key, "metrics.address", "{e}");
        let main = write(
            d.path(),
            "crust.toml",
            "[metrics]\naddress = \"127.0.0.1:9090\"\n",
        );
        assert_eq!(
            load(Some(&main), &Overrides::default()).unwrap().metrics.address,
            "127.0.0.1:9090"
        );
        let main = write(
            d.path(),
            "crust.toml",
            "[runtime]\nwritable_layer_refresh_seconds = 0\n",
        );
        let e = load(Some(&main), &Overrides::default()).unwrap_err();
        assert_eq!(e.key, "runtime.writable_layer_refresh_seconds", "{e}");
    }

    #[test]
    fn seccomp_profile_root_must_be_absolute() {
        let d = tempfile::tempdir().unwrap();
        let main = write(
            d.path(),
            "crust.toml",
            "[runtime]\nseccomp_profile_root = \"profiles\"\n",
        );
        let e = load(Some(&main), &Overrides::default()).unwrap_err();
        assert_eq!(e.key, "runtime.seccomp_profile_root", "{e}");
        assert!(
            e.file.ends_with("crust.toml") && e.msg.contains("absolute"),
            "{e}"
        );
    }
}
