//! Generates Rust types from the protos under proto/.
//!
//! The server uses plain prost messages (`cache.rs`, `grpc.health.v1.rs`,
//! `grpc.reflection.{v1,v1alpha}.rs`) and, for server reflection, a
//! `FileDescriptorSet` of those same files (`descriptors.bin`, embedded with
//! `include_bytes!`), so what reflection describes is exactly what is built.
//! Tests use stock tonic clients generated from the same files
//! (`client/*.rs`); only tests include them, so tonic never enters the
//! server's dependency graph. protoc comes from the `protoc-bin-vendored`
//! crate unless PROTOC is set, so a plain `cargo build` needs no system
//! package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/cache.proto",
        "proto/grpc/health/v1/health.proto",
        "proto/grpc/reflection/v1/reflection.proto",
        "proto/grpc/reflection/v1alpha/reflection.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut server = prost_build::Config::new();
    server.protoc_executable(&protoc);
    server.file_descriptor_set_path(out.join("descriptors.bin"));
    server.compile_protos(&protos, &["proto"])?;

    let client_dir = out.join("client");
    std::fs::create_dir_all(&client_dir)?;
    let mut client = prost_build::Config::new();
    client.protoc_executable(&protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .out_dir(&client_dir)
        .compile_with_config(client, &protos, &["proto"])?;
    Ok(())
}
