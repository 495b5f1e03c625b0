//! Fault scenarios: registry (see main.rs).
