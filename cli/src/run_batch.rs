//! `loupe batch`: flags → [`loupe_cli::batch::run`], then a one-line summary.

use std::time::Duration;

use anyhow::Result;
use loupe::crop::CropShape;
use loupe_cli::batch::rows::{BatchModels, Tasks};
use loupe_cli::batch::shard::Shard;
use loupe_cli::batch::{BatchOptions, run};
use loupe_cli::device;
use loupe_cli::models::note_untrained_heads;

use crate::args::{BatchArgs, BatchTask};

pub fn batch(args: BatchArgs) -> Result<()> {
    let shard = match (&args.shard, args.shard_from_env) {
        (Some(text), _) => Shard::parse(text)?,
        (None, true) => Shard::from_env(|name| std::env::var(name).ok(), args.shards)?,
        (None, false) => Shard::ALL,
    };
    let mut crops = args.aspects.clone();
    if let (Some(width), Some(height)) = (args.width, args.height) {
        crops.push(CropShape::Size { width, height });
    }
    if crops.is_empty() {
        crops.push(CropShape::default());
    }
    let tasks = Tasks {
        score: args.task != BatchTask::Crop,
        crops: if args.task == BatchTask::Score { Vec::new() } else { crops },
        candidates: args.candidates,
        seed: args.seed,
    };
    let (_, files) = args.model.read_weight_files()?;
    let models = BatchModels::from_weight_files(&files, &device::parse_device(&args.model.device)?)?;
    note_untrained_heads(&models.scorers);
    let options = BatchOptions {
        input: args.input,
        column: args.column,
        out: args.out,
        format: args.format,
        shard,
        tasks,
        batch: args.batch,
        part_rows: args.part_rows,
        part_age: Duration::from_secs(args.part_seconds),
        retry_errors: args.retry_errors,
        decode_threads: args.decode_threads,
        progress: !args.quiet,
    };
    let summary = run(&models, &options)?;
    eprintln!(
        "shard {}/{}: {} photos, {} already done, {} written in {} parts ({} failed), {:.1} s, {:.2} photos/s; model {}",
        shard.index(),
        shard.count(),
        summary.in_shard,
        summary.skipped,
        summary.written,
        summary.parts,
        summary.failed,
        summary.seconds,
        summary.images_per_second(),
        models.model_id
    );
    Ok(())
}
