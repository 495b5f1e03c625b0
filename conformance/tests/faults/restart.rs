//! Fault scenarios: restart (see main.rs).
