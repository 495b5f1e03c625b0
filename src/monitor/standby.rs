//! The standby monitor: one `crust-monitor --standby` that crustd starts ahead of need, so that a
//! StartContainer or RunPodSandbox does not wait for a monitor's exec and start-up (its dynamic
//! loading, its runtime's set-up: about a millisecond and a half on a 2-core VM, measured). It waits on
//! its stdin; the next spawn of that binary hands it its arguments there ([`super::args::encode_handoff`])
//! and goes on exactly as with a monitor started with them, and a new standby is started in the
//! background. When crustd stops (or drops the standby) its stdin reaches EOF and it exits.
//!
//! Off (`runtime.monitor_standby = false`), each monitor is started when needed with its arguments on
//! its command line: for a `monitor_path` that is a wrapper reading them. A `monitor_path` whose
//! standby is found gone [`MAX_MISSES`] times in a row (an older crust-monitor that knows no
//! `--standby` exits at once) turns the standby off until crustd restarts, with a warning: each start
//! would otherwise pay for a spawn it cannot use.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::args;

static ENABLED: AtomicBool = AtomicBool::new(false);
static SLOT: Mutex<Option<Standby>> = Mutex::new(None);
static REFILLING: AtomicBool = AtomicBool::new(false);
/// Standbys found gone in a row.
static MISSES: AtomicU32 = AtomicU32::new(0);

/// After this many standbys in a row found gone when needed, the standby is turned off.
pub const MAX_MISSES: u32 = 3;

/// A started monitor waiting for its arguments.
struct Standby {
    bin: PathBuf,
    child: tokio::process::Child,
    /// The report's pipe (the monitor's stdout).
    report: OwnedFd,
    /// Where its arguments go (its stdin).
    args: OwnedFd,
}

/// Turns the standby on or off (`runtime.monitor_standby`, read at crustd's start). Off drops a
/// standby already started.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
    if !on {
        discard(take(None));
    }
}

/// A monitor of `bin` running with `args` (its sync flag included), and the report's pipe: the
/// standby when there is one, else one started now. Either way, a new standby is started in the
/// background (when on). Must run inside the tokio runtime.
pub(super) fn launch(bin: &Path, args: &[OsString]) -> std::io::Result<(tokio::process::Child, OwnedFd)> {
    if !ENABLED.load(Ordering::Relaxed) {
        return spawn_with_args(bin, args);
    }
    let handoff = args::encode_handoff(args);
    if handoff.len() > args::STANDBY_ROOM {
        return spawn_with_args(bin, args);
    }
    let launched = match take(Some(bin)).map(|sb| hand(sb, &handoff)) {
        Some(Some(handed)) => {
            MISSES.store(0, Ordering::Relaxed);
            Ok(handed)
        }
        Some(None) => {
            if MISSES.fetch_add(1, Ordering::Relaxed) + 1 >= MAX_MISSES {
                tracing::warn!(
                    bin = %bin.display(),
                    "{MAX_MISSES} standby monitors in a row were gone when needed (a monitor_path that \
                     does not know --standby?): the standby is off until crustd restarts"
                );
                ENABLED.store(false, Ordering::Relaxed);
            }
            spawn_with_args(bin, args)
        }
        None => spawn_with_args(bin, args),
    };
    if ENABLED.load(Ordering::Relaxed) {
        refill(bin.to_path_buf());
    }
    launched
}

/// Ends the standby (EOF on its stdin) and waits for it, for a clean stop of crustd.
pub async fn stop() {
    let Some(mut sb) = take(None) else { return };
    drop(sb.args);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sb.child.wait()).await;
}

fn take(bin: Option<&Path>) -> Option<Standby> {
    let mut slot = SLOT.lock().unwrap_or_else(|p| p.into_inner());
    match (&*slot, bin) {
        (Some(sb), Some(b)) if sb.bin != b => None,
        _ => slot.take(),
    }
}

/// Hands the arguments (`handoff`, encoded) to the standby; `None` when it is gone (killed
/// meanwhile, or a binary that ended at once): it is reaped, and the caller starts a monitor itself.
fn hand(mut sb: Standby, handoff: &[u8]) -> Option<(tokio::process::Child, OwnedFd)> {
    // Already ended (a binary that exits at once): reaped here, not written to.
    if !matches!(sb.child.try_wait(), Ok(None)) {
        tracing::warn!("the standby monitor has ended; starting one");
        return None;
    }
    let mut w = std::fs::File::from(sb.args);
    // Far below a pipe's capacity: the write does not wait for the monitor to read.
    if let Err(e) = w.write_all(handoff) {
        tracing::warn!(error = %e, "the standby monitor is gone; starting one");
        reap(sb.child);
        return None;
    }
    Some((sb.child, sb.report))
}

/// Starts a standby of `bin` in the background unless one is waiting or being started.
fn refill(bin: PathBuf) {
    if SLOT.lock().unwrap_or_else(|p| p.into_inner()).is_some() || REFILLING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async move {
        match spawn_standby(&bin) {
            Ok(sb) => {
                let mut slot = SLOT.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() && ENABLED.load(Ordering::Relaxed) {
                    *slot = Some(sb);
                } else {
                    drop(slot);
                    discard(Some(sb));
                }
            }
            Err(e) => tracing::warn!(error = %e, bin = %bin.display(), "starting a standby monitor"),
        }
        REFILLING.store(false, Ordering::Release);
    });
}

/// Ends a standby that is not needed (EOF on its stdin) and reaps it.
fn discard(sb: Option<Standby>) {
    if let Some(sb) = sb {
        drop(sb.args);
        reap(sb.child);
    }
}

fn reap(mut child: tokio::process::Child) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                let _ = child.wait().await;
            });
        }
        // Outside a runtime (never in crustd, whose main runs in one): left to whoever reaps.
        Err(_) => drop(child),
    }
}

fn spawn_standby(bin: &Path) -> std::io::Result<Standby> {
    let (ar, aw) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let room = OsString::from(" ".repeat(args::STANDBY_ROOM));
    let (child, report) = spawn(
        bin,
        &[OsString::from(args::STANDBY), room],
        std::process::Stdio::from(ar),
    )?;
    Ok(Standby {
        bin: bin.to_path_buf(),
        child,
        report,
        args: aw,
    })
}

fn spawn_with_args(bin: &Path, args: &[OsString]) -> std::io::Result<(tokio::process::Child, OwnedFd)> {
    spawn(bin, args, std::process::Stdio::null())
}

/// Starts `bin` with `args`, the report's pipe as its stdout.
fn spawn(
    bin: &Path,
    args: &[OsString],
    stdin: std::process::Stdio,
) -> std::io::Result<(tokio::process::Child, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut cmd = tokio::process::Command::new(bin);
    // The report comes on the monitor's stdout (`--sync-stdout`; the monitor moves it to its sync fd
    // at once): a pipe given as stdout needs no code between fork and exec, so the monitor is
    // spawned with posix_spawn (a vfork: crustd's page tables are not copied, nor its pages marked
    // copy-on-write for every thread's next write) rather than with a fork of crustd.
    cmd.args(args)
        .stdin(stdin)
        .stdout(std::process::Stdio::from(w))
        .stderr(std::process::Stdio::null());
    // A group of its own: a monitor that hangs before it has forked and called setsid (a wrapper
    // around it that hangs) is killed with whatever it started (see `await_report`).
    cmd.process_group(0);
    let child = crate::reaper::spawn(&mut cmd)?;
    // The command holds crustd's copy of the pipe's write end: the report's end is its EOF.
    drop(cmd);
    Ok((child, r))
}
