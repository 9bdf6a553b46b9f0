//! Generates the tonic client of `cache.Cache` from the server's proto
//! (`../proto/cache.proto`, the wire contract), with a vendored protoc.

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
    // Values as bytes::Bytes: no copy between the response and the caller.
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_with_config(config, &[proto], &["../proto"])?;
    Ok(())
}
