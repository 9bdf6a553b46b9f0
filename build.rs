//! Generates Rust types from proto/cache.proto.
//!
//! The server uses plain prost messages (`cache.rs`). Tests use a stock tonic
//! client generated from the same file (`client/cache.rs`); only tests
//! include it, so tonic never enters the server's dependency graph.
//! protoc comes from the `protoc-bin-vendored` crate unless PROTOC is set,
//! so a plain `cargo build` needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/cache.proto";
    let health = "proto/grpc/health/v1/health.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed={health}");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut server = prost_build::Config::new();
    server.protoc_executable(&protoc);
    server.compile_protos(&[proto, health], &["proto"])?;

    let client_dir = out.join("client");
    std::fs::create_dir_all(&client_dir)?;
    let mut client = prost_build::Config::new();
    client.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .out_dir(&client_dir)
        .compile_with_config(client, &[proto, health], &["proto"])?;
    Ok(())
}
