//! Generates the Rust types from every `flow-v*.proto` with protox, a pure-Rust
//! protobuf compiler, so that no system `protoc` is needed (cross builds stay simple).

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let mut protos: Vec<String> = std::fs::read_dir(".")?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("flow-v") && name.ends_with(".proto"))
        .collect();
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(&protos, ["."])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
