//! Compiles `proto/nri.proto` with ttrpc-codegen's pure-Rust parser (no `protoc` needed): the
//! rust-protobuf messages and the async ttrpc clients and server traits of both NRI services.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/nri.proto");
    let out = std::env::var("OUT_DIR")?;
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .input("proto/nri.proto")
        .include("proto")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .rust_protobuf_customize(ttrpc_codegen::ProtobufCustomize::default().gen_mod_rs(false))
        .run()?;
    // The generated files open with inner attributes and doc comments, which `include!` inside a
    // module does not accept; src/lib.rs states the allowances instead.
    for name in ["nri.rs", "nri_ttrpc.rs"] {
        let path = Path::new(&out).join(name);
        let text = std::fs::read_to_string(&path)?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .collect();
        std::fs::write(&path, kept.join("\n"))?;
    }
    Ok(())
}
