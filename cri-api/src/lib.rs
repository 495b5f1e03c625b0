//! The CRI v1 protocol (`runtime.v1`): messages, the `RuntimeService` and `ImageService` servers and
//! clients, generated at build time from `proto/api.proto`.

#![allow(clippy::all, missing_docs, rustdoc::all)]

/// Package `runtime.v1`.
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}
