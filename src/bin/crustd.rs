//! `crustd`: serves CRI v1 on a unix socket (and crustctl's admin socket). `crustd config` prints the
//! effective configuration. SIGHUP reloads the configuration files: the log level, registries and
//! pinned images change at once; other changed keys are logged as needing a restart.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crust::config::{self, Overrides};

#[derive(Parser)]
#[command(
    name = "crustd",
    version = crust::version::LONG,
    about = "crust: a Kubernetes CRI runtime",
    long_about = "crustd serves the Kubernetes Container Runtime Interface (CRI v1) on a unix socket \
        (/run/crust/crust.sock) for kubelet, crictl and critest, and crustctl's admin socket. Each \
        container runs under its own crust-monitor, which outlives crustd: stopping, restarting or \
        upgrading crustd stops no container. The configuration is read from /etc/crust/crust.toml \
        and /etc/crust/crust.d/*.toml (see crust.toml(5)); SIGHUP reloads it. Under systemd, crustd \
        runs as crust.service (Type=notify)."
)]
struct Cli {
    /// Main configuration file (drop-ins are read from crust.d/ beside it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// CRI socket path.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Persistent root directory.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Runtime state directory.
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration as TOML, every default filled in.
    Config,
}

fn main() -> ExitCode {
    take_service_environment();
    let cli = Cli::parse();
    let overrides = Overrides {
        socket: cli.socket,
        root: cli.root,
        state: cli.state,
        log_level: cli.log_level,
    };
    let config_path = cli.config.clone();
    let cfg = match config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crustd: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config) = cli.command {
        return match toml::to_string_pretty(&cfg) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("crustd: cannot print configuration: {e}");
                ExitCode::FAILURE
            }
        };
    }
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, log_handle) = tracing_subscriber::reload::Layer::new(log_filter(&cfg.log_level));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(
                    std::io::IsTerminal::is_terminal(&std::io::stderr())
                        && std::env::var_os("NO_COLOR").is_none(),
                )
                .with_writer(std::io::stderr),
        )
        .init();
    let reloader = Reloader {
        path: config_path,
        overrides,
        log_handle,
    };
    // A known umask, whatever the caller's: files crustd and its children make are never group- or
    // world-writable (and those holding secrets are made 0600 explicitly).
    // SAFETY: umask(2) takes an integer and cannot fail.
    unsafe { libc::umask(0o022) };
    // Orphans of what crustd spawns (runtime calls, CNI plugins) come back to crustd to be reaped.
    if let Err(e) = crust::sys::set_child_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crustd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        // Adopted orphans are reaped as they exit; children crustd spawns are registered with the
        // reaper (CNI plugins through the spawner hook) so that their statuses stay their waiters'.
        crust_cni::set_spawner(crust::reaper::spawn);
        tokio::spawn(crust::reaper::run());
        run(cfg, reloader).await
    })
}

/// What a SIGHUP needs: where the configuration came from, and the log filter's handle.
struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
    log_handle:
        tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
}

impl Reloader {
    /// Reads the configuration again and applies it; an invalid one changes nothing.
    fn reload(&self, daemon: &crust::daemon::Daemon) {
        let new = match config::load(self.path.as_deref(), &self.overrides) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: invalid configuration, nothing changed");
                return;
            }
        };
        let report = daemon.reload(&new);
        if report.applied.iter().any(|k| k == "log_level")
            && let Err(e) = self.log_handle.reload(log_filter(&new.log_level))
        {
            tracing::error!(error = %e, "SIGHUP: cannot change the log level");
        }
        if report.is_empty() {
            tracing::info!("SIGHUP: configuration reloaded, nothing changed");
            return;
        }
        tracing::info!(applied = ?report.applied, "SIGHUP: configuration reloaded");
        if !report.needs_restart.is_empty() {
            tracing::warn!(keys = ?report.needs_restart, "SIGHUP: these changes take effect at the next restart of crustd");
        }
    }
}

/// Reloads the configuration at every SIGHUP.
async fn reload_on_sighup(daemon: std::sync::Arc<crust::daemon::Daemon>, reloader: Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        reloader.reload(&daemon);
    }
}

async fn run(cfg: config::Config, reloader: Reloader) -> ExitCode {
    // SIGHUP must not kill crustd while it starts: take it over before anything else.
    let early_hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let listener = match crust::server::bind(&cfg.api.socket, cfg.socket_mode()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("crustd: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = cfg.api.socket.clone();
    let metrics_address = cfg.metrics.address.clone();
    let metrics = if metrics_address.is_empty() {
        None
    } else {
        match crust::server::metrics_http::bind(&metrics_address).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("crustd: cannot serve metrics on {metrics_address}: {e}");
                let _ = std::fs::remove_file(&socket);
                return ExitCode::FAILURE;
            }
        }
    };
    crust::monitor::standby::set_enabled(cfg.runtime.monitor_standby);
    let daemon = match crust::daemon::Daemon::new(cfg).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("crustd: cannot start: {e}");
            let _ = std::fs::remove_file(&socket);
            return ExitCode::FAILURE;
        }
    };
    if let Some(l) = metrics {
        tracing::info!(address = %metrics_address, "serving metrics on /metrics");
        crust::server::metrics_http::spawn(l, &daemon);
    }
    let admin = match crust::server::admin::start(daemon.clone()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("crustd: cannot serve the admin socket: {e}");
            let _ = std::fs::remove_file(&socket);
            return ExitCode::FAILURE;
        }
    };
    drop(early_hup);
    tokio::spawn(reload_on_sighup(daemon.clone(), reloader));
    tracing::info!(socket = %socket.display(), version = crust::version::RUNTIME_VERSION, "crustd serving CRI v1");
    notify_systemd("READY=1");
    let core = daemon.clone();
    let result = crust::server::serve(
        daemon,
        listener,
        shutdown_signal(),
        std::time::Duration::from_secs(30),
    )
    .await;
    notify_systemd("STOPPING=1");
    crust::monitor::standby::stop().await;
    // Removed containers' directories still being cleaned: a moment to finish (what is left, the next
    // start cleans).
    if !core
        .containers
        .settle_removals(std::time::Duration::from_secs(5))
        .await
    {
        tracing::warn!("removed containers' directories are still being cleaned; the next start finishes");
    }
    let _ = std::fs::remove_file(&socket);
    admin.stop();
    match result {
        Ok(()) => {
            tracing::info!("crustd stopped; containers keep running");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// A plain level applies to crust's own code (libraries log at `warn`); anything else is a full filter.
fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let plain = ["error", "warn", "info", "debug", "trace"].contains(&level.to_ascii_lowercase().as_str());
    let directive = if plain {
        format!("warn,crust={level},crustd={level},crust_cni={level}")
    } else {
        level.to_string()
    };
    tracing_subscriber::EnvFilter::new(directive)
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

/// systemd's notification socket (Type=notify), taken out of the environment at start.
static NOTIFY_SOCKET: std::sync::OnceLock<std::ffi::OsString> = std::sync::OnceLock::new();

/// Takes what systemd gives crustd alone out of the environment, before any thread starts, so that
/// no child inherits it: with NOTIFY_SOCKET set, `runc run --detach` waits for the container itself
/// to send READY=1 and never returns (every container start hung on a systemd node); the socket
/// activation and watchdog variables name crustd's PID and fds, not a child's.
fn take_service_environment() {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let _ = NOTIFY_SOCKET.set(path);
    }
    for var in [
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
    ] {
        // SAFETY: called first thing in main, while the process has one thread (no runtime, no
        // logger yet), so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(var) };
    }
}

/// Tells systemd (Type=notify) about our state, when started by it.
fn notify_systemd(state: &str) {
    let Some(path) = NOTIFY_SOCKET.get() else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = path.as_encoded_bytes();
    let res = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), path)
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

#[cfg(test)]
#[path = "docgen/mod.rs"]
mod docgen;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::CommandFactory;

    use super::{Cli, docgen};

    /// Where the guide's configuration page has its generated key reference.
    const GUIDE: &str = "docs/configuration.md";
    const BEGIN: &str = "<!-- BEGIN generated key reference (make docs) -->\n";
    const END: &str = "<!-- END generated key reference -->\n";

    /// crustd(8), crust.toml(5), crustd's completions and the guide's key reference, as generated from
    /// the clap definitions and the configuration types, are the committed ones.
    #[test]
    fn generated_docs_are_fresh() {
        let mut files = docgen::man_pages(Cli::command());
        files.extend(docgen::completions(Cli::command()));
        files.push((
            "docs/man/crust.toml.5".into(),
            crust::config::reference::man_page().into_bytes(),
        ));
        let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md"))
            .expect("docs/configuration.md");
        let (head, rest) = guide.split_once(BEGIN).expect("the guide's BEGIN marker");
        let (_, tail) = rest.split_once(END).expect("the guide's END marker");
        let fresh = format!(
            "{head}{BEGIN}\n{}{END}{tail}",
            crust::config::reference::markdown()
        );
        files.push((GUIDE.into(), fresh.into_bytes()));
        docgen::check("crustd", &files);
    }
}
