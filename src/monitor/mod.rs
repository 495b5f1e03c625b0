//! The per-container monitor: the process (`crust-monitor`, one per container, like conmon) that is a
//! container's parent, and crustd's side of it.
//!
//! crustd calls [`spawn`]; the monitor detaches (own session, re-parented away from crustd), becomes a
//! child subreaper and runs `<runtime> run --detach` (or `<runtime> create`, leaving the start to the
//! caller, when [`MonitorSpec::start`] is off), or starts a pod's pause itself (`launch`). It holds the container's stdio (pipes, or a pty when
//! `tty`), writes the CRI log, reaps the container, detects OOM kills and writes the exit file. It talks
//! to crustd only through files in the container's state dir and the control socket there:
//!
//! - `monitor.pid`: `<pid> <start time in clock ticks>` of the monitor ([`is_alive`]);
//! - `container.pid`: the container's init pid (written by the runtime);
//! - `exit`: JSON [`ExitStatus`], written atomically once the container has exited ([`read_exit`]);
//! - `ctl.sock`: the control socket (protocol in `ctl`): reopen the log, resize the tty, attach
//!   ([`reopen_log`], [`resize`], [`attach`] + [`read_frame`]).
//!
//! The monitor process itself lives in `process`, `event_loop`, `ctl_server` and `log`; it uses no
//! async runtime, no threads, and allocates nothing in its steady loop.

mod args;
mod client;
pub mod ctl;
mod ctl_server;
mod event_loop;
mod launch;
pub mod log;
mod process;
pub mod standby;
mod sysutil;
mod watch;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{
    attach, create_timeout, is_alive, log_lines_dropped, monitor_pid, read_exit, read_frame, reopen_log,
    resize, set_create_timeout, signal_container, spawn, spawn_announcing, wait_exit,
};
pub use launch::PauseLaunch;
pub use process::main as monitor_main;
pub use watch::Running;

/// File names in a container's state dir.
pub const EXIT_FILE: &str = "exit";
/// The control socket.
pub const CTL_SOCKET: &str = "ctl.sock";
/// The monitor's pid and start time.
pub const MONITOR_PID_FILE: &str = "monitor.pid";
/// The container's init pid, as the runtime wrote it.
pub const CONTAINER_PID_FILE: &str = "container.pid";
/// The runtime's log of `create` or `run` (JSON lines), removed once that succeeded.
pub const RUNTIME_LOG: &str = "runtime-create.log";
/// The console socket used during `create` or `run` when `tty` is set.
pub const CONSOLE_SOCKET: &str = "console.sock";

/// What crustd asks a monitor to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorSpec {
    /// The container ID (as the runtime knows it).
    pub id: String,
    /// The OCI bundle dir (holds `config.json`).
    pub bundle: PathBuf,
    /// The runtime binary (`OciRuntime::path()`).
    pub runtime_path: PathBuf,
    /// The runtime's `--root` (`OciRuntime::root()`).
    pub runtime_root: PathBuf,
    /// Run the runtime in its systemd cgroup mode (`--systemd-cgroup`; `OciRuntime::systemd_cgroup()`).
    pub systemd_cgroup: bool,
    /// The container's state dir: exit file, `ctl.sock`, `monitor.pid`, `container.pid`. Created if
    /// missing.
    pub state_dir: PathBuf,
    /// The CRI log file; `None` discards the output.
    pub log_path: Option<PathBuf>,
    /// Give the container a pty (the spec's `process.terminal` must be true as well).
    pub tty: bool,
    /// Keep a stdin pipe open for the container (for attach).
    pub stdin: bool,
    /// Close stdin after the first attach ends.
    pub stdin_once: bool,
    /// Start the process at once (`runtime run --detach`: one runtime invocation instead of `create`
    /// and `start`); off, the container is left CREATED for `OciRuntime::start`.
    pub start: bool,
    /// Launch the pod's pause with the built-in launcher instead of the runtime (see `launch`).
    pub pause: Option<PauseLaunch>,
    /// Restore the container from a checkpoint instead (`runtime restore --detach`): the dir holding
    /// CRIU's images in `checkpoint/`, also the runtime's work path (its `restore.log`).
    pub restore: Option<PathBuf>,
    /// The `crust-monitor` binary; empty means `crust-monitor` beside the running executable
    /// (use `Config::monitor_binary()`).
    pub monitor_path: PathBuf,
    /// The monitor writes `pid <its pid>` on the sync fd as soon as it has detached, before the
    /// runtime runs (`--announce-pid`; set by [`spawn_announcing`]), so that crustd can place it in
    /// its systemd scope while the runtime works. A flag, so that a crustd older than the monitor
    /// binary (mid-upgrade) never sees a line it does not expect.
    pub announce_pid: bool,
}

/// A monitor that has created (or, with [`MonitorSpec::start`], started) its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Monitor {
    /// The monitor's pid.
    pub pid: u32,
    /// The container's init pid.
    pub container_pid: u32,
}

/// How a container ended, from the exit file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code; 128 + signal when killed by a signal (137 for SIGKILL).
    pub exit_code: i32,
    /// The signal that killed it, 0 when it exited.
    pub signal: i32,
    /// The kernel OOM killer killed a process of the container's cgroup while it ran.
    pub oom_killed: bool,
    /// When the monitor saw the container created (wall clock, ns since the epoch). The start time is
    /// crustd's to record (the monitor does not see `runtime start`).
    #[serde(default)]
    pub created_at_ns: i64,
    /// Not known to the monitor: always `None` in the file; crustd fills it from its record.
    #[serde(default)]
    pub started_at_ns: Option<i64>,
    /// When the monitor reaped the container (wall clock, ns since the epoch).
    pub finished_at_ns: i64,
}
