//! Which handler serves a request that names none when `runtime.default_handler` is `"auto"`: crun
//! where the node has the unified cgroup hierarchy (v2) and a crun that answers, runc otherwise (crun
//! refuses cgroup v1 and hybrid hosts). CRI-O has made crun its default since 1.31; crust follows it
//! where crun can work, and says why it chose what it chose.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{Config, RuntimeHandler};

/// The value of `runtime.default_handler` that asks crust to choose.
pub const AUTO: &str = "auto";

/// The default handler in effect and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultChoice {
    /// The handler's name.
    pub name: String,
    /// Why it is the default, for `crustctl status` and `crictl info`.
    pub reason: String,
    /// A crun handler to add beside the configured ones (auto chose crun, none was configured).
    pub add: Option<(String, RuntimeHandler)>,
}

/// Resolves `cfg.runtime.default_handler` (an explicit name is taken as it is).
pub fn choose(cfg: &Config) -> DefaultChoice {
    let wanted = &cfg.runtime.default_handler;
    if wanted != AUTO {
        return DefaultChoice {
            name: wanted.clone(),
            reason: "runtime.default_handler in the configuration".into(),
            add: None,
        };
    }
    let configured = cfg.runtime.handlers.get("crun");
    let crun = configured.map_or_else(
        || super::find_binary(Path::new("crun")),
        |h| super::find_binary(&h.path),
    );
    choose_from(crate::cgroups::is_v2(), &crun, configured.is_some())
}

fn choose_from(v2: bool, crun: &Path, configured: bool) -> DefaultChoice {
    let runc = |reason: String| DefaultChoice {
        name: "runc".into(),
        reason,
        add: None,
    };
    if !v2 {
        return runc("runc: the host runs cgroups v1 (or the v1/v2 hybrid), which crun refuses".into());
    }
    if let Err(why) = crun_works(crun) {
        return runc(format!("runc: cgroup v2, but {why}"));
    }
    DefaultChoice {
        name: "crun".into(),
        reason: format!("crun: cgroup v2 and {} found", crun.display()),
        add: (!configured).then(|| {
            (
                "crun".to_string(),
                RuntimeHandler {
                    path: crun.to_path_buf(),
                    root: PathBuf::new(),
                },
            )
        }),
    }
}

/// Whether `crun --version` succeeds (asked once per binary per process: `Runtimes` are built on
/// several paths).
fn crun_works(crun: &Path) -> Result<(), String> {
    static SEEN: Mutex<Vec<(PathBuf, Result<(), String>)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = seen.iter().find(|(p, _)| p == crun) {
        return r.clone();
    }
    let r = if !super::is_executable(crun) {
        Err(format!(
            "no crun binary ({} is not an executable file)",
            crun.display()
        ))
    } else {
        match crate::reaper::output(std::process::Command::new(crun).arg("--version")).map(|o| o.status) {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("`{} --version` failed ({s})", crun.display())),
            Err(e) => Err(format!("`{} --version` could not run: {e}", crun.display())),
        }
    };
    seen.push((crun.to_path_buf(), r.clone()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_crun_only_on_v2_with_a_working_crun() {
        let c = choose_from(false, Path::new("/bin/true"), false);
        assert_eq!(c.name, "runc");
        assert!(c.reason.contains("cgroups v1"), "{}", c.reason);
        let c = choose_from(true, Path::new("/nonexistent/crun"), false);
        assert_eq!(c.name, "runc");
        assert!(c.reason.contains("no crun binary"), "{}", c.reason);
        let c = choose_from(true, Path::new("/bin/false"), false);
        assert_eq!(c.name, "runc");
        assert!(c.reason.contains("failed"), "{}", c.reason);
        let c = choose_from(true, Path::new("/bin/true"), false);
        assert_eq!(c.name, "crun");
        assert_eq!(c.reason, "crun: cgroup v2 and /bin/true found");
        assert_eq!(
            c.add.map(|(n, h)| (n, h.path)),
            Some(("crun".into(), "/bin/true".into()))
        );
        assert!(choose_from(true, Path::new("/bin/true"), true).add.is_none());
    }

    #[test]
    fn an_explicit_default_is_kept() {
        let mut cfg = Config::default();
        cfg.runtime.default_handler = "runc".into();
        let c = choose(&cfg);
        assert_eq!((c.name.as_str(), c.add), ("runc", None));
        assert!(c.reason.contains("configuration"), "{}", c.reason);
    }
}
