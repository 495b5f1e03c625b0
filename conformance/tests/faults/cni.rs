//! Fault scenarios: cni (see main.rs).
