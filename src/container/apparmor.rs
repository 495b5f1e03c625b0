//! AppArmor for containers: crust's own `crust-default` profile and which profile a container gets.
//!
//! Where the host runs AppArmor (the module is enabled and `apparmor_parser` is installed), crustd
//! generates `crust-default` and loads it at start-up when it is not loaded yet ([`ensure_default`]);
//! `RuntimeDefault` (and an unset profile) then confines containers with it. A `Localhost` profile must
//! already be loaded: its name is checked against the kernel's list of loaded profiles. Where the host
//! has no AppArmor, crust sets no profile at all. The host is reached through [`Host`], so the decisions
//! are tested without AppArmor.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cri_api::v1;

use crate::{Error, Result};

/// The name of crust's default profile.
pub const DEFAULT_PROFILE: &str = "crust-default";

/// The kernel's list of loaded profiles (`name (mode)` per line).
const PROFILES_FILE: &str = "/sys/kernel/security/apparmor/profiles";

/// What crust needs from the host's AppArmor.
pub trait Host {
    /// Whether the kernel enforces AppArmor and the parser to load profiles is installed.
    fn enabled(&self) -> bool;
    /// The kernel's list of loaded profiles (empty when unreadable).
    fn loaded(&self) -> String;
    /// Whether `/etc/apparmor.d/<name>` exists (an abi, tunable or abstraction to include).
    fn has_include(&self, name: &str) -> bool;
    /// The label crustd itself runs under (`unconfined` when none).
    fn own_label(&self) -> String;
    /// Loads (or replaces) a profile from its text, without caching it (`apparmor_parser -Kr`).
    fn load(&self, text: &str) -> Result<()>;
}

/// The running host.
pub struct System {
    parser: Option<PathBuf>,
}

impl System {
    /// Finds `apparmor_parser` where Debian and others install it.
    pub fn detect() -> Self {
        let parser = ["/sbin/apparmor_parser", "/usr/sbin/apparmor_parser"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        System { parser }
    }
}

impl Host for System {
    fn enabled(&self) -> bool {
        self.parser.is_some()
            && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|s| s.trim() == "Y")
    }

    fn loaded(&self) -> String {
        loaded_profiles()
    }

    fn has_include(&self, name: &str) -> bool {
        Path::new("/etc/apparmor.d").join(name).exists()
    }

    fn own_label(&self) -> String {
        std::fs::read_to_string("/proc/self/attr/current")
            .map(|s| label_name(&s))
            .unwrap_or_else(|_| "unconfined".into())
    }

    fn load(&self, text: &str) -> Result<()> {
        let parser = self
            .parser
            .as_ref()
            .ok_or_else(|| Error::Internal("apparmor_parser is not installed".into()))?;
        let mut child = crate::reaper::spawn_std(
            Command::new(parser)
                .arg("-Kr")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| Error::io(format!("run {}", parser.display()), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| Error::io(format!("write the profile to {}", parser.display()), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io(format!("wait for {}", parser.display()), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "{} -Kr failed ({}): {}",
                parser.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// The kernel's list of loaded profiles, read now (empty when AppArmor is off).
pub fn loaded_profiles() -> String {
    std::fs::read_to_string(PROFILES_FILE).unwrap_or_default()
}

/// The profile name of a label (`crust-default (enforce)` → `crust-default`).
fn label_name(label: &str) -> String {
    let l = label.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    let name = match l.rsplit_once(" (") {
        Some((n, mode)) if mode.ends_with(')') => n,
        _ => l,
    };
    if name.is_empty() {
        "unconfined".into()
    } else {
        name.to_string()
    }
}

/// Whether `name` is in the kernel's list of loaded profiles.
pub fn is_loaded(profiles: &str, name: &str) -> bool {
    profiles.lines().any(|l| label_name(l) == name)
}

/// What the host offers the default profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileHost {
    /// `abi/3.0` exists: declare it, so the profile means the same on newer parsers.
    pub abi_3: bool,
    /// `tunables/global` exists (else `@{PROC}` is defined inline).
    pub tunables: bool,
    /// `abstractions/base` exists.
    pub base: bool,
    /// crustd's own label, which may signal containers.
    pub daemon: String,
}

/// The text of the `name` profile: everything a container ordinarily does (files, network,
/// capabilities the spec grants), minus mounts, writes to kernel settings under `/proc` and `/sys`,
/// reads of the kernel's memory, firmware and security files; signals and ptrace only among its own
/// processes and from the host, runc and crustd.
pub fn profile_text(name: &str, h: &ProfileHost) -> String {
    let mut t = String::from("# crust's default AppArmor profile for containers, generated by crustd.\n");
    if h.abi_3 {
        t.push_str("abi <abi/3.0>,\n");
    }
    if h.tunables {
        t.push_str("#include <tunables/global>\n");
    } else {
        t.push_str("@{PROC}=/proc/\n");
    }
    t.push_str(&format!(
        "\nprofile {name} flags=(attach_disconnected,mediate_deleted) {{\n"
    ));
    if h.base {
        t.push_str("  #include <abstractions/base>\n");
    }
    // crustd's own label, when it is confined (unconfined peers are allowed anyway).
    let daemon_rule = if h.daemon == "unconfined" {
        String::new()
    } else {
        format!("\n  signal (receive) peer={},", h.daemon)
    };
    t.push_str(&format!(
        r"
  # What the OCI spec grants is not narrowed here; the rules below take away.
  file,
  network,
  capability,
  umount,

  # No mounts from inside a container.
  deny mount,

  # Signals: the host, the OCI runtime and crustd may signal the container; its processes each other.
  signal (receive) peer=unconfined,
  signal (receive) peer=runc,
  signal (receive) peer=crun,{daemon_rule}
  signal (send,receive) peer={name},
  ptrace (trace,tracedby,read,readby) peer={name},

  # /proc: a process may write its own /proc/<pid> files; nothing else at the top level, in the
  # non-process directories, or under /proc/sys but the IPC namespace's kernel/shm* settings.
  deny @{{PROC}}/* w,
  deny @{{PROC}}/{{[^0-9s/]*,s,s[^y/]*,sy,sy[^s/]*,sys?*}}/** w,
  deny @{{PROC}}/sys/[^k/]** w,
  deny @{{PROC}}/sys/kernel/{{?,??,[^s/]*,s[^h/]*,sh[^m/]*}} w,
  deny @{{PROC}}/sys/kernel/{{[^s/]*,s[^h/]*,sh[^m/]*}}/** w,
  deny @{{PROC}}/sysrq-trigger rwklx,
  deny @{{PROC}}/kcore rwklx,

  # /sys: read-only but for the cgroup filesystem; firmware, powercap and securityfs not even readable.
  deny /sys/{{[^f/]*,f,f[^s/]*,fs?*}}/** wklx,
  deny /sys/fs/{{[^c/]*,c,c[^g/]*,cg,cg[^r/]*}}/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
  deny /sys/kernel/security/** rwklx,
}}
"
    ));
    t
}

/// Makes sure `crust-default` is loaded where the host runs AppArmor. Returns whether the host does
/// (whether containers get AppArmor profiles at all); an error when loading the profile failed.
pub fn ensure_default(host: &dyn Host) -> Result<bool> {
    if !host.enabled() {
        return Ok(false);
    }
    if is_loaded(&host.loaded(), DEFAULT_PROFILE) {
        return Ok(true);
    }
    let ph = ProfileHost {
        abi_3: host.has_include("abi/3.0"),
        tunables: host.has_include("tunables/global"),
        base: host.has_include("abstractions/base"),
        daemon: host.own_label(),
    };
    host.load(&profile_text(DEFAULT_PROFILE, &ph))
        .map_err(|e| e.context(format!("load AppArmor profile {DEFAULT_PROFILE}")))?;
    Ok(true)
}

/// The AppArmor profile of a container (not privileged) on a host that runs AppArmor, given the
/// kernel's list of loaded `profiles`: none for `Unconfined`, `crust-default` for `RuntimeDefault` and
/// for an unset profile, the named one for `Localhost` when it is loaded. The deprecated
/// `apparmor_profile` field is read when `apparmor` is unset.
pub fn container_profile(sc: &v1::LinuxContainerSecurityContext, profiles: &str) -> Result<Option<String>> {
    use v1::security_profile::ProfileType;
    #[allow(deprecated)]
    let legacy = sc.apparmor_profile.as_str();
    let (kind, name, field) = match &sc.apparmor {
        Some(p) => (
            ProfileType::try_from(p.profile_type).ok(),
            p.localhost_ref.clone(),
            "config.linux.security_context.apparmor.localhost_ref",
        ),
        None => match legacy {
            "" | "runtime/default" => (Some(ProfileType::RuntimeDefault), String::new(), ""),
            "unconfined" => (Some(ProfileType::Unconfined), String::new(), ""),
            l => (
                Some(ProfileType::Localhost),
                l.to_string(),
                "config.linux.security_context.apparmor_profile",
            ),
        },
    };
    match kind {
        Some(ProfileType::Unconfined) => Ok(None),
        Some(ProfileType::RuntimeDefault) => {
            if is_loaded(profiles, DEFAULT_PROFILE) {
                Ok(Some(DEFAULT_PROFILE.to_string()))
            } else {
                Err(Error::FailedPrecondition(format!(
                    "AppArmor profile {DEFAULT_PROFILE} (RuntimeDefault) is not loaded: crustd could not \
                     load it at start-up (see its log)"
                )))
            }
        }
        Some(ProfileType::Localhost) => {
            let n = name.strip_prefix("localhost/").unwrap_or(&name);
            if n.is_empty() {
                return Err(Error::invalid(field, "must name an AppArmor profile"));
            }
            if !is_loaded(profiles, n) {
                return Err(Error::invalid(
                    field,
                    format!("AppArmor profile {n:?} is not loaded on this host"),
                ));
            }
            Ok(Some(n.to_string()))
        }
        None => Err(Error::invalid(
            "config.linux.security_context.apparmor.profile_type",
            "unknown profile type",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A host whose AppArmor state is given, recording what it was asked to load.
    struct Fake {
        enabled: bool,
        loaded: RefCell<String>,
        includes: Vec<&'static str>,
        fail: bool,
        loads: RefCell<Vec<String>>,
    }

    impl Fake {
        fn new(enabled: bool, loaded: &str) -> Self {
            Fake {
                enabled,
                loaded: RefCell::new(loaded.into()),
                includes: vec!["tunables/global", "abstractions/base"],
                fail: false,
                loads: RefCell::new(Vec::new()),
            }
        }
    }

    impl Host for Fake {
        fn enabled(&self) -> bool {
            self.enabled
        }
        fn loaded(&self) -> String {
            self.loaded.borrow().clone()
        }
        fn has_include(&self, name: &str) -> bool {
            self.includes.contains(&name)
        }
        fn own_label(&self) -> String {
            "unconfined".into()
        }
        fn load(&self, text: &str) -> Result<()> {
            if self.fail {
                return Err(Error::Internal("apparmor_parser: syntax error".into()));
            }
            self.loads.borrow_mut().push(text.to_string());
            self.loaded.borrow_mut().push_str("crust-default (enforce)\n");
            Ok(())
        }
    }

    #[test]
    fn default_profile_is_loaded_once_and_only_with_apparmor() {
        let off = Fake::new(false, "");
        assert!(!ensure_default(&off).unwrap());
        assert!(off.loads.borrow().is_empty());

        let on = Fake::new(true, "docker-default (enforce)\n");
        assert!(ensure_default(&on).unwrap());
        assert!(ensure_default(&on).unwrap());
        let loads = on.loads.borrow();
        assert_eq!(loads.len(), 1, "loaded again although loaded");
        assert!(loads[0].contains("profile crust-default flags=(attach_disconnected,mediate_deleted)"));
        assert!(loads[0].contains("#include <tunables/global>") && !loads[0].contains("abi <"));

        let mut broken = Fake::new(true, "");
        broken.fail = true;
        let e = ensure_default(&broken).unwrap_err().to_string();
        assert!(e.contains("crust-default") && e.contains("syntax error"), "{e}");
    }

    #[test]
    fn profile_text_denies_what_it_should() {
        let t = profile_text(
            "crust-default",
            &ProfileHost {
                abi_3: true,
                tunables: false,
                base: false,
                daemon: "crustd-prof".into(),
            },
        );
        for want in [
            "abi <abi/3.0>,",
            "@{PROC}=/proc/",
            "deny mount,",
            "signal (receive) peer=crustd-prof,",
            "signal (send,receive) peer=crust-default,",
            "deny @{PROC}/sysrq-trigger rwklx,",
            "deny /sys/kernel/security/** rwklx,",
            "deny /sys/firmware/** rwklx,",
        ] {
            assert!(t.lines().any(|l| l.trim() == want), "{want:?} missing in:\n{t}");
        }
        assert!(!t.contains("#include"), "{t}");
        // The cgroup filesystem stays writable (cgroup namespaces, nested runtimes).
        let sys_fs = t.lines().find(|l| l.contains("deny /sys/fs/")).unwrap();
        assert!(!sys_fs.contains("cgr"), "{sys_fs}");
        let plain = profile_text(
            "p",
            &ProfileHost {
                abi_3: false,
                tunables: true,
                base: true,
                daemon: "unconfined".into(),
            },
        );
        assert_eq!(plain.matches("peer=unconfined").count(), 1, "{plain}");
        assert!(
            plain.contains("#include <tunables/global>") && plain.contains("  #include <abstractions/base>")
        );
        assert_eq!(t.matches('{').count(), t.matches('}').count(), "{t}");
    }

    #[test]
    fn labels() {
        assert_eq!(label_name("crust-default (enforce)\n"), "crust-default");
        assert_eq!(label_name("unconfined\n"), "unconfined");
        assert_eq!(label_name("/usr/bin/foo (complain)"), "/usr/bin/foo");
        assert!(is_loaded(
            "a (enforce)\ncrust-default (enforce)\n",
            "crust-default"
        ));
        assert!(!is_loaded("crust-default-old (enforce)\n", "crust-default"));
    }

    #[test]
    fn which_profile_a_container_gets() {
        use v1::security_profile::ProfileType;
        let loaded = "crust-default (enforce)\nmy-app (enforce)\n";
        let sc = |t: ProfileType, r: &str| v1::LinuxContainerSecurityContext {
            apparmor: Some(v1::SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            ..Default::default()
        };
        let unset = v1::LinuxContainerSecurityContext::default();
        assert_eq!(
            container_profile(&unset, loaded).unwrap().as_deref(),
            Some("crust-default")
        );
        let rd = sc(ProfileType::RuntimeDefault, "");
        assert_eq!(
            container_profile(&rd, loaded).unwrap().as_deref(),
            Some("crust-default")
        );
        let e = container_profile(&rd, "").unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
        assert_eq!(
            container_profile(&sc(ProfileType::Unconfined, ""), loaded).unwrap(),
            None
        );
        let lh = sc(ProfileType::Localhost, "localhost/my-app");
        assert_eq!(container_profile(&lh, loaded).unwrap().as_deref(), Some("my-app"));
        let e = container_profile(&sc(ProfileType::Localhost, "absent"), loaded).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert!(
            e.to_string().contains("apparmor.localhost_ref") && e.to_string().contains("absent"),
            "{e}"
        );
        #[allow(deprecated)]
        let legacy = v1::LinuxContainerSecurityContext {
            apparmor_profile: "localhost/nope".into(),
            ..Default::default()
        };
        let e = container_profile(&legacy, loaded).unwrap_err();
        assert!(e.to_string().contains("apparmor_profile"), "{e}");
    }
}
