//! The monitor's command line: built by crustd (`to_args`), parsed by `crust-monitor` (`parse`); for a
//! standby monitor, handed over its stdin (`encode_handoff`, `read_handoff`) and written over its own
//! command line (`retitle`).

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

/// The first argument of a standby monitor (`standby`): its real arguments come later on its stdin,
/// [`encode_handoff`]'s bytes up to EOF; EOF with none means it is not needed (crustd stopped). The
/// second, [`STANDBY_ROOM`] spaces, is room the monitor writes its real arguments over, so that `ps`
/// and `/proc/<pid>/cmdline` show them (the container's ID among them) as for any monitor.
pub const STANDBY: &str = "--standby";

/// The bytes a standby monitor's command line holds for its real arguments: a handoff longer than
/// this (never seen: a pause with many sysctls) is not handed to a standby.
pub const STANDBY_ROOM: usize = 4096;

/// The arguments handed to a standby monitor: each followed by a NUL (which no argument can hold).
pub fn encode_handoff(args: &[OsString]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for a in args {
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    out
}

/// The arguments [`encode_handoff`] wrote.
pub fn decode_handoff(bytes: &[u8]) -> Vec<OsString> {
    use std::os::unix::ffi::OsStringExt;
    let body = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect()
}

/// A standby's arguments, read from its stdin up to EOF and shown as its command line ([`retitle`]);
/// `None` when none came (EOF at once) or stdin failed.
pub fn read_handoff() -> Option<Vec<OsString>> {
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).ok()?;
    if buf.is_empty() {
        return None;
    }
    retitle(&buf);
    Some(decode_handoff(&buf))
}

/// Writes `handoff` (the real arguments, NUL-terminated) over the command line after argv[0], in
/// the room the standby's second argument held, and clears the rest: `/proc/<pid>/cmdline` then
/// shows what a monitor started with these arguments shows. Left as it is when they do not fit.
fn retitle(handoff: &[u8]) {
    let Some((start, len)) = arg_area() else { return };
    // SAFETY: [arg_start, arg_end) is this process's own argument strings, written by the kernel at
    // exec into its writable initial stack; the monitor's main has copied its arguments already.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    let Some(argv0) = area.iter().position(|b| *b == 0).map(|n| n + 1) else {
        return;
    };
    if argv0 + handoff.len() > len {
        return;
    }
    area[argv0..argv0 + handoff.len()].copy_from_slice(handoff);
    area[argv0 + handoff.len()..].fill(0);
}

/// Where the kernel reads this process's command line from: fields 48 and 49 of /proc/self/stat
/// (counted past the parenthesised command name, which may hold spaces), as start and length.
fn arg_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let start: usize = fields.get(48 - 3)?.parse().ok()?;
    let end: usize = fields.get(49 - 3)?.parse().ok()?;
    Some((start, end.checked_sub(start).filter(|l| *l > 0)?))
}

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
        // Handed to a standby monitor: the same arguments, empty ones included.
        let mut handed = to_args(&spec);
        handed.extend([OsString::new(), SYNC_STDOUT.into()]);
        assert_eq!(decode_handoff(&encode_handoff(&handed)), handed);
        assert!(decode_handoff(b"").is_empty());
        let err = parse(vec![OsString::from("--id")].into_iter()).unwrap_err();
        assert!(err.contains("--id"), "{err}");
        let err = parse(vec![OsString::from("--id"), "x".into()].into_iter()).unwrap_err();
        assert!(err.contains("--bundle"), "{err}");
    }
}
