//! crust's version: Cargo.toml's and the git commit it was built from (`build.rs`), as `crustd
//! --version`, `crustctl --version` and the CRI `Version` RPC report them.

/// The release, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short git commit (`CRUST_COMMIT` at build time, else git's, else `unknown`).
pub const COMMIT: &str = env!("CRUST_COMMIT");

/// What `--version` prints after the program's name: `0.1.0 (commit 1a2b3c4)`.
pub const LONG: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("CRUST_COMMIT"), ")");

/// The CRI `runtime_version`: the release with the commit as SemVer build metadata, `0.1.0+1a2b3c4`
/// (containerd reports its release alone, `v1.7.24`; kubelet shows it as `crust://0.1.0+1a2b3c4`
/// and parses nothing in it).
pub const RUNTIME_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("CRUST_COMMIT"));
