//! The NRI protocol (`nri.pkg.api.v1alpha1`): messages (module `nri`), and the async ttrpc client and
//! server of the `Runtime` and `Plugin` services (module `nri_ttrpc`), generated at build time from
//! `proto/nri.proto`.

/// The NRI messages (rust-protobuf).
#[allow(
    clippy::all,
    missing_docs,
    rustdoc::all,
    unused_qualifications,
    unused_mut,
    dead_code
)]
#[allow(
    unused_attributes,
    unknown_lints,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
#[allow(trivial_casts, unsafe_code, unused_imports, unused_results)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod nri {
    include!(concat!(env!("OUT_DIR"), "/nri.rs"));
}

/// The async ttrpc clients and server traits of the `Runtime` and `Plugin` services.
#[allow(
    clippy::all,
    missing_docs,
    rustdoc::all,
    unused_qualifications,
    unused_mut,
    dead_code
)]
#[allow(
    unused_attributes,
    unknown_lints,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
#[allow(trivial_casts, unsafe_code, unused_imports, unused_results)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod nri_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/nri_ttrpc.rs"));
}

pub use async_trait::async_trait;
pub use protobuf;
pub use ttrpc;
