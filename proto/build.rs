//! Compiles `proto/*.proto` with the pure-Rust rust-protobuf 2 codegen (no `protoc` needed).
//!
//! The generated files start with inner attributes (`#![allow(..)]`) and inner docs, which
//! cannot be `include!`d into a module; they are stripped here and restated in `lib.rs`.

use std::{env, fs, path::PathBuf};

const FILES: &[&str] = &[
    "metapb",
    "txnpb",
    "kvrpcpb",
    "raft_serverpb",
    "pdpb",
    "framepb",
];

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let inputs: Vec<String> = FILES.iter().map(|f| format!("proto/{f}.proto")).collect();
    for input in &inputs {
        println!("cargo:rerun-if-changed={input}");
    }
    protobuf_codegen_pure::Codegen::new()
        .out_dir(&out)
        .inputs(&inputs)
        .include("proto")
        .run()
        .expect("protobuf codegen failed");
    for f in FILES {
        let path = out.join(format!("{f}.rs"));
        let text = fs::read_to_string(&path).expect("generated file is readable");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .collect();
        fs::write(&path, kept.join("\n")).expect("generated file is writable");
    }
}
