//! Fault scenarios: disk (see main.rs).
