//! `loupe-train`: prepare AVA (statistics, the paper's splits), train with the weighted losses,
//! evaluate like the paper, export weight files. Scoring and cropping are `loupe`'s (the cli crate).

use std::process::ExitCode;

use anyhow::Result;
use loupe_cli::device::parse_devices;
use loupe_train::args::{Cli, Command, DataCommand};
use loupe_train::{eval, export, stats, train};

fn main() -> ExitCode {
    loupe_cli::run_main::<Cli>("loupe-train", run)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(DataCommand::Stats { labels, splits, bins, plots, json }) => {
            stats::stats(&labels, splits.as_deref(), bins, plots.as_deref(), json.as_deref())
        }
        Command::Data(DataCommand::Split { labels, out, rs, ed_per_class, seed, test_list }) => {
            stats::split(&labels, &out, rs, ed_per_class, seed, test_list.as_deref())
        }
        Command::Train(args) => {
            let devices = parse_devices(&args.device)?;
            train::train_and_export(args.config()?, &args.out, args.resume, devices, args.feature_cache.as_deref())
        }
        Command::Eval(args) => eval::run(&args)?.write(&args.out),
        Command::Export(args) => export::export_run(&args),
    }
}
