//! Generates the wire-protocol types from `proto/lockfs.proto` with the pure-Rust protobuf code
//! generator, so building lockfs needs no `protoc` on the machine.
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    protobuf_codegen_pure::Codegen::new()
        .out_dir(&out)
        .inputs(["proto/lockfs.proto"])
        .include("proto")
        .run()
        .expect("generating protobuf code from proto/lockfs.proto");
    // The generated file starts with inner attributes and doc comments, which `include!` cannot
    // take; src/proto/mod.rs states its own allowances instead.
    let generated = out.join("lockfs.rs");
    let text = std::fs::read_to_string(&generated).expect("reading generated lockfs.rs");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
        .collect();
    std::fs::write(&generated, kept.join("\n")).expect("writing generated lockfs.rs");
    println!("cargo:rerun-if-changed=proto/lockfs.proto");
}
