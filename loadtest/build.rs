//! Generates the prost messages of ../proto/cache.proto (the wire contract
//! shared with the server). protoc comes from `protoc-bin-vendored` unless
//! PROTOC is set, so a plain `cargo build` needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/cache.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    // A Set's value is a refcounted slice of one shared pattern buffer, so
    // building a request never copies or allocates the value.
    config.bytes([".cache.Request.value"]);
    config.compile_protos(&[proto], &["../proto"])?;
    Ok(())
}
