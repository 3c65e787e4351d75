//! `loupe batch`: score and crop a whole catalogue, one shard of it per task of a job array
//! engine, resumable at any point. The Python package builds its rows with the same code.
//!
//! - [`inputs`]: the catalogue's keys (a folder or a manifest) and their bytes.
//! - [`shard`]: the stable key → shard hash, and the shard a job array engine assigns.
//! - [`rows`]: one row per photo (scores, crops, or its error).
//! - [`output`]: Parquet or JSONL parts, written atomically, read back to resume.

pub mod inputs;
pub mod output;
pub mod rows;
pub mod shard;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use output::{Format, Output};
use rows::{BatchModels, Prepared, Row, Tasks};
use shard::Shard;

/// Everything a batch run needs besides the models.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// A folder (recursive) or a manifest (lines, `.csv` or `.parquet`).
    pub input: PathBuf,
    /// The manifest column holding paths (CSV and Parquet manifests).
    pub column: String,
    pub out: PathBuf,
    pub format: Format,
    pub shard: Shard,
    pub tasks: Tasks,
    /// Photos per forward pass.
    pub batch: usize,
    /// A part is written every this many rows...
    pub part_rows: usize,
    /// ...or once its oldest row is this old, whichever comes first (bounds the work a kill loses).
    pub part_age: Duration,
    /// Redo keys whose earlier row is an error.
    pub retry_errors: bool,
    /// Threads reading and decoding photos beside the forward passes.
    pub decode_threads: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Keys in this shard.
    pub in_shard: usize,
    /// Keys already written by earlier runs (and not retried).
    pub skipped: usize,
    pub written: usize,
    pub failed: usize,
    pub parts: usize,
    pub seconds: f64,
}

impl Summary {
    pub fn images_per_second(&self) -> f64 {
        self.written as f64 / self.seconds.max(1e-9)
    }
}

/// Runs one shard of a batch: every key of the shard not yet written gets exactly one row.
pub fn run(models: &BatchModels, options: &BatchOptions) -> Result<Summary> {
    let started = Instant::now();
    let mut seen = HashSet::new();
    // A manifest may list a photo twice: it still gets one row.
    let keys: Vec<String> = inputs::list_keys(&options.input, &options.column)?
        .into_iter()
        .filter(|key| options.shard.contains(key) && seen.insert(key.clone()))
        .collect();
    let mut output = Output::open(&options.out, &models.model_id, options.format, options.shard)?;
    let mut existing = output.existing()?.keys;
    if options.retry_errors {
        clear_errors_to_retry(&output, &keys, &mut existing)?;
    }
    let pending: Vec<String> = keys.iter().filter(|key| !existing.contains_key(*key)).cloned().collect();
    let mut summary = Summary { in_shard: keys.len(), skipped: keys.len() - pending.len(), ..Summary::default() };

    let bar = progress_bar(pending.len(), options.progress);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(options.decode_threads.max(1)).build()?;
    let batch = options.batch.max(1);
    // Decoding the next batch overlaps the forward pass of this one (at most two batches ahead).
    let (sender, receiver) = mpsc::sync_channel::<Vec<Prepared>>(2);
    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(|| {
            for chunk in pending.chunks(batch) {
                let prepared =
                    pool.install(|| chunk.par_iter().map(|key| Prepared::from_bytes(key.clone(), inputs::read_key(key), &options.tasks)).collect());
                if sender.send(prepared).is_err() {
                    return; // the writer stopped on an error
                }
            }
            drop(sender);
        });
        let mut part: Vec<Row> = Vec::new();
        let mut part_started = Instant::now();
        for prepared in receiver {
            for row in models.rows(&options.tasks, prepared) {
                if let Some(error) = &row.error {
                    summary.failed += 1;
                    bar.suspend(|| eprintln!("{}: {error}", row.key));
                }
                if part.is_empty() {
                    part_started = Instant::now();
                }
                part.push(row);
                bar.inc(1);
            }
            if part.len() >= options.part_rows.max(1) || part_started.elapsed() >= options.part_age {
                summary.written += part.len();
                summary.parts += 1;
                output.write_part(&std::mem::take(&mut part))?;
            }
        }
        if !part.is_empty() {
            summary.written += part.len();
            summary.parts += 1;
            output.write_part(&part)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    output.mark_success()?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// For `--retry-errors`: removes this shard's error rows from their parts, so those keys are
/// pending again (and still end up with exactly one row).
fn clear_errors_to_retry(output: &Output, keys: &[String], existing: &mut HashMap<String, (PathBuf, bool)>) -> Result<()> {
    let mut by_part: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    for key in keys {
        if let Some((part, true)) = existing.get(key) {
            by_part.entry(part.clone()).or_default().insert(key.clone());
        }
    }
    for (part, retry) in by_part {
        output.remove_rows(&part, &retry).with_context(|| format!("cannot clear the error rows of {}", part.display()))?;
        for key in retry {
            existing.remove(&key);
        }
    }
    Ok(())
}

fn progress_bar(total: usize, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    let template = "batch {bar:30} {pos}/{len} {per_sec} [{elapsed_precise}<{eta_precise}]";
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}
