//! Fault scenarios: runtime (see main.rs).
