//! Helpers shared by the `loupe` binary's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const LOUPE: &str = env!("CARGO_BIN_EXE_loupe");

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

pub fn run(args: &[&str]) -> Output {
    Command::new(LOUPE).args(args).output().unwrap()
}

/// Runs `loupe args`, which must succeed.
pub fn succeeds(args: &[&str]) -> Output {
    let output = run(args);
    assert!(output.status.success(), "loupe {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Tiny-width regression and histogram models (random, from `seed`) in `dir`.
pub fn tiny_models(dir: &Path, seed: u64) -> [String; 2] {
    ["regression", "histogram"].map(|output| {
        let path = dir.join(format!("{output}-{seed}.loupe")).to_str().unwrap().to_string();
        succeeds(&["init", "--output", output, "--width-divisor", "16", "--seed", &seed.to_string(), "-o", &path]);
        path
    })
}
