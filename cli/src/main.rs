//! `loupe`: score photos, find the best crop, make and inspect weight files, serve the browser
//! app. Training and evaluation are `loupe-train`'s (the trainer crate).

mod args;
mod crop;
mod run_batch;
mod score;
mod serve;
mod weight_files;

use std::process::ExitCode;

use anyhow::Result;

use args::{Cli, Command};

fn main() -> ExitCode {
    loupe_cli::run_main::<Cli>("loupe", run)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Score(args) => score::score(args),
        Command::Crop(args) => crop::crop(args),
        Command::Batch(args) => run_batch::batch(args),
        Command::ImportVgg16(args) => weight_files::import_vgg16(args),
        Command::Init(args) => weight_files::init(args),
        Command::Inspect { file } => weight_files::inspect(&file),
        Command::Manifest { dir } => weight_files::manifest(&dir),
        Command::Bundle { out, models } => weight_files::bundle(&out, &models),
        Command::Serve { app, weights, port, no_isolation } => serve::serve(&app, &weights, port, !no_isolation),
    }
}
