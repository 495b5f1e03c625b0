//! crust: a Kubernetes container runtime (CRI v1).
//!
//! `server` is the thin gRPC layer; under it, one module per job: `image` (pulls, store, layers),
//! `sandbox` (pods: netns, CNI, pause), `container` (the container lifecycle), `oci` (the OCI runtime
//! trait, runc behind it), `monitor` (the per-container monitor process and crustd's side of it),
//! `cgroups`, `reaper` (adopted orphans), `stats` (CRI stats and metrics of pods and containers),
//! `metrics` (crustd's own Prometheus metrics), `streaming` (exec/attach/port-forward server), `state`
//! (records that survive a restart), `wire` (protobuf written straight from records, and kept between
//! changes, for the lists and statuses kubelet polls). `daemon` ties them into one value the server calls.

pub mod cgroups;
pub mod config;
pub mod container;
pub mod daemon;
pub mod error;
pub mod events;
pub mod image;
pub mod metrics;
pub mod monitor;
pub mod nri;
pub mod oci;
pub mod reaper;
pub mod reload;
pub mod sandbox;
pub mod server;
pub mod state;
pub mod stats;
pub mod streaming;
pub mod sys;
pub mod validate;
pub mod version;
pub mod wire;

pub use error::{Error, Result, ResultExt};
