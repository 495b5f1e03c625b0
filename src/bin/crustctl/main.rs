//! `crustctl`: crust's operator CLI. Images (`ls`, `pull`, `rm`, `tag`, `inspect`, `import`, `export`),
//! pods and containers (`ls`, `inspect`, `logs`), `status`, `check` (the image store on disk) and
//! `wipe`. It reads crustd's configuration (same `--config`/`--socket`/`--root`/`--state` flags) to
//! find the CRI socket, the admin socket (`server::admin`: import, export, tag, the configuration in
//! effect) and the store. Tables for people, `-o json` for scripts; progress goes to stderr.

mod checkpoint_image;
mod client;
mod images;
mod output;
mod runtime;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use crust::config::{self, Overrides};

#[derive(Parser)]
#[command(
    name = "crustctl",
    version = crust::version::LONG,
    about = "crust's operator CLI",
    long_about = "crustctl manages a node's crust: its images (list, pull, remove, tag, inspect, \
        import and export archives), its pods and containers (list, inspect, logs), the runtime's \
        status and configuration in effect, a check of the image store, and the wipe of crust's \
        state after a drain. It reads crustd's configuration (the same --config, --socket, --root \
        and --state flags) to find the CRI socket, the admin socket and the store. Tables are for \
        people; -o json is for scripts; progress goes to stderr."
)]
struct Cli {
    /// crustd's main configuration file (drop-ins are read from crust.d/ beside it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// CRI socket path (overrides the configuration).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Persistent root directory (overrides the configuration).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Runtime state directory (overrides the configuration).
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Output: a table for people or JSON for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Images: list, pull, remove, tag, inspect, import and export archives.
    #[command(subcommand)]
    Images(images::Cmd),
    /// Pod sandboxes.
    #[command(subcommand)]
    Pods(runtime::PodCmd),
    /// Containers.
    #[command(subcommand)]
    Containers(runtime::ContainerCmd),
    /// Runtime and network conditions, versions, the configuration in effect.
    Status,
    /// Verifies the image store: blob digests, unpacked layers, records.
    Check,
    /// Removes crust's state after a drain (refused while containers run).
    Wipe(store::WipeArgs),
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("cannot reach crustd at {path}: {msg}")]
    Connect { path: String, msg: String },
    #[error("{0}")]
    Rpc(String),
    #[error("{code}: {message}")]
    Admin { code: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    /// The command ran and found problems (already printed).
    #[error("{0}")]
    Failed(String),
}

impl From<tonic::Status> for CtlError {
    fn from(s: tonic::Status) -> Self {
        CtlError::Rpc(format!("{:?}: {}", s.code(), s.message()))
    }
}

impl CtlError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CtlError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What every command gets.
pub struct Ctx {
    pub cfg: config::Config,
    pub output: Output,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        socket: cli.socket,
        root: cli.root,
        state: cli.state,
        log_level: None,
    };
    let cfg = match config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crustctl: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let ctx = Ctx {
        cfg,
        output: cli.output,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crustctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Command::Images(c) => images::run(&ctx, c).await,
            Command::Pods(c) => runtime::pods(&ctx, c).await,
            Command::Containers(c) => runtime::containers(&ctx, c).await,
            Command::Status => runtime::status(&ctx).await,
            Command::Check => store::check(&ctx),
            Command::Wipe(a) => store::wipe(&ctx, a).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crustctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[path = "../docgen/mod.rs"]
mod docgen;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{Cli, docgen};

    /// crustctl(8) with its subcommands' pages and crustctl's completions, as generated from the clap
    /// definitions, are the committed ones.
    #[test]
    fn generated_docs_are_fresh() {
        let mut files = docgen::man_pages(Cli::command());
        files.extend(docgen::completions(Cli::command()));
        docgen::check("crustctl", &files);
    }
}
