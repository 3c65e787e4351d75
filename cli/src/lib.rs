//! What both of Loupe's command-line tools share: loading weight files onto a device, and the
//! progress bar. The `loupe` binary (this crate) is for photo users; `loupe-train` (the trainer
//! crate) builds on this for AVA, training and evaluation. [`batch`] is `loupe batch`, whose rows
//! the Python package builds too.

pub mod batch;
pub mod device;
pub mod models;

use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

/// A binary's `main`: parses the command line and runs it. Every failure, a bad flag value
/// included, is one line on stderr (`name: ...`) and exit code 1; `--help` and `--version` print
/// as clap prints them.
pub fn run_main<C: clap::Parser>(name: &str, run: impl FnOnce(C) -> Result<()>) -> std::process::ExitCode {
    let result = match C::try_parse() {
        Ok(cli) => run(cli),
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let rendered = error.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            Err(anyhow::anyhow!("{}", first.strip_prefix("error: ").unwrap_or(first)))
        }
    };
    exit_with(name, result)
}

/// A binary's exit: success, or the error and its causes on one line of stderr (`name: ...`).
fn exit_with(name: &str, result: Result<()>) -> std::process::ExitCode {
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
