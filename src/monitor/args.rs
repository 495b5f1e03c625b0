//! The monitor's command line: built by crustd (`to_args`), parsed by `crust-monitor` (`parse`).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use super::MonitorSpec;

/// The fd number the monitor reports on (`ok <monitor pid> <container pid>` or `error <text>`).
pub const SYNC_FD: i32 = 3;

/// The flag telling the monitor that crustd handed it the report's pipe as its stdout rather than as
/// [`SYNC_FD`] (which needs code between fork and exec to place). The monitor moves it to
/// [`SYNC_FD`] before anything else; without the flag (a crustd from before it, mid-upgrade) the
/// pipe is at [`SYNC_FD`] already. Not part of [`MonitorSpec`]: how the report travels, not what to
/// run.
pub const SYNC_STDOUT: &str = "--sync-stdout";

/// The argv (without argv[0]) that runs a monitor for `spec`.
pub fn to_args(spec: &MonitorSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut kv = |k: &str, v: &OsStr| {
        a.push(k.into());
        a.push(v.to_os_string());
    };
    kv("--id", OsStr::new(&spec.id));
    kv("--bundle", spec.bundle.as_os_str());
    kv("--runtime", spec.runtime_path.as_os_str());
    kv("--runtime-root", spec.runtime_root.as_os_str());
    kv("--state-dir", spec.state_dir.as_os_str());
    if let Some(l) = &spec.log_path {
        kv("--log-path", l.as_os_str());
    }
    if let Some(r) = &spec.restore {
        kv("--restore", r.as_os_str());
    }
    if let Some(p) = &spec.pause {
        // Serialising plain strings, numbers and bools cannot fail.
        let json = serde_json::to_string(p).unwrap_or_default();
        kv("--pause", OsStr::new(&json));
    }
    for (on, flag) in [
        (spec.tty, "--tty"),
        (spec.stdin, "--stdin"),
        (spec.stdin_once, "--stdin-once"),
        (spec.start, "--start"),
        (spec.systemd_cgroup, "--systemd-cgroup"),
        (spec.announce_pid, "--announce-pid"),
    ] {
        if on {
            a.push(flag.into());
        }
    }
    a
}

/// Parses the monitor's argv (without argv[0]).
pub fn parse(mut it: impl Iterator<Item = OsString>) -> Result<MonitorSpec, String> {
    let mut s = MonitorSpec::default();
    while let Some(k) = it.next() {
        let k = k.to_string_lossy().into_owned();
        match k.as_str() {
            "--tty" => s.tty = true,
            "--stdin" => s.stdin = true,
            "--stdin-once" => s.stdin_once = true,
            "--start" => s.start = true,
            "--systemd-cgroup" => s.systemd_cgroup = true,
            "--announce-pid" => s.announce_pid = true,
            // Acted on before parsing (see `process::main`).
            SYNC_STDOUT => {}
            _ => {
                let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
                match k.as_str() {
                    "--id" => s.id = v.to_string_lossy().into_owned(),
                    "--bundle" => s.bundle = PathBuf::from(v),
                    "--runtime" => s.runtime_path = PathBuf::from(v),
                    "--runtime-root" => s.runtime_root = PathBuf::from(v),
                    "--state-dir" => s.state_dir = PathBuf::from(v),
                    "--log-path" => s.log_path = Some(PathBuf::from(v)),
                    "--restore" => s.restore = Some(PathBuf::from(v)),
                    "--pause" => {
                        let p = serde_json::from_str(&v.to_string_lossy())
                            .map_err(|e| format!("--pause: {e}"))?;
                        s.pause = Some(p);
                    }
                    _ => return Err(format!("unknown argument {k}")),
                }
            }
        }
    }
    for (name, empty) in [
        ("--id", s.id.is_empty()),
        ("--bundle", s.bundle.as_os_str().is_empty()),
        ("--runtime", s.runtime_path.as_os_str().is_empty()),
        ("--runtime-root", s.runtime_root.as_os_str().is_empty()),
        ("--state-dir", s.state_dir.as_os_str().is_empty()),
    ] {
        if empty {
            return Err(format!("{name} is required"));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let spec = MonitorSpec {
            id: "abc".into(),
            bundle: "/b".into(),
            runtime_path: "/usr/bin/runc".into(),
            runtime_root: "/run/r".into(),
            systemd_cgroup: true,
            state_dir: "/run/s".into(),
            log_path: Some("/var/log/x.log".into()),
            tty: true,
            stdin: false,
            stdin_once: true,
            start: true,
            pause: Some(crate::monitor::PauseLaunch {
                rootfs: "/p".into(),
                netns: Some("/run/netns/x".into()),
                new_pid: true,
                sysctls: vec![("net.a".into(), "1".into())],
                uid: 65535,
                ..Default::default()
            }),
            restore: Some("/r/ckpt".into()),
            monitor_path: PathBuf::new(),
            announce_pid: true,
        };
        assert_eq!(parse(to_args(&spec).into_iter()).unwrap(), spec);
        let mut with_flag = to_args(&spec);
        with_flag.push(SYNC_STDOUT.into());
        assert_eq!(parse(with_flag.into_iter()).unwrap(), spec);
        let err = parse(vec![OsString::from("--id")].into_iter()).unwrap_err();
        assert!(err.contains("--id"), "{err}");
        let err = parse(vec![OsString::from("--id"), "x".into()].into_iter()).unwrap_err();
        assert!(err.contains("--bundle"), "{err}");
    }
}
