//! The fault-injection suite (`make faults`): the faults a production node sees, each injected into a
//! real part, each scenario printing `fault <name>: held|FAILED <what was seen>` (see `harness::fault`).
//! - `disk`: full filesystems under root, state and the pod log directory;
//! - `registry`: a registry that resets, stalls, fails or lies, behind a proxy the test controls;
//! - `runtime`: an OCI runtime handler that hangs or fails on a chosen verb;
//! - `cni`: CNI plugins that hang or fail on ADD, DEL or CHECK;
//! - `restart`: crustd killed at chosen points of a pull, an unpack, a create, a remove and a teardown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cni;
mod disk;
mod registry;
mod restart;
mod runtime;
