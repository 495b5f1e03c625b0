//! The OCI runtime: a trait over runc-compatible runtimes, with runc behind it.
