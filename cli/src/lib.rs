//! What both of Loupe's command-line tools share: loading weight files onto a device, and the
//! progress bar. The `loupe` binary (this crate) is for photo users; `loupe-train` (the trainer
//! crate) builds on this for AVA, training and evaluation.

pub mod device;
pub mod models;

use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// A binary's exit: success, or the error and its causes on one line of stderr (`name: ...`).
pub fn exit_with(name: &str, result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let chain: Vec<String> = error.chain().map(|e| e.to_string()).collect();
            eprintln!("{name}: {}", chain.join(": "));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A file's bytes, or an error naming it.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes `bytes` to `path`, or an error naming it.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A bar with position, elapsed time and ETA, on stderr.
pub fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]").expect("valid template"));
    bar.set_message(what.to_string());
    bar
}
