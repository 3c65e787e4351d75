//! The `loupe` command line: every flag, and nothing else. Library enums are read with their
//! `FromStr` (their serde names), so a flag accepts exactly what a weight file or JSON says.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use loupe::crop::{CandidateLayout, CropShape};
use loupe::model::{HeadKind, OutputKind, StatisticsRegion};
use loupe::preprocess::InputConvention;

use loupe_cli::batch::output::Format;
use loupe_cli::models::ModelArgs;

#[derive(Parser)]
#[command(name = "loupe", version, about = "Image-aesthetics scores (VGG16, weighted CNN on AVA)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Score photos: aesthetic score 1..10, and with a histogram model the rating distribution and std.
    Score(ScoreArgs),
    /// Find the best-scoring crop of a photo (the paper's best of N random crops).
    Crop(CropArgs),
    /// Score and/or crop a whole catalogue into Parquet or JSONL: sharded for job arrays
    /// (Kubernetes, Slurm, AWS Batch, Cloud Run), resumable, one row per photo.
    Batch(BatchArgs),
    /// Build an initial weight file: ImageNet VGG16 backbone, untrained head.
    ImportVgg16(ImportArgs),
    /// A randomly initialised weight file (tests, tiny-width demos).
    Init(InitArgs),
    /// Print a weight file's metadata.
    Inspect { file: PathBuf },
    /// Write manifest.json (file, kind, bytes, sha256) for the weight files in a folder.
    Manifest { dir: PathBuf },
    /// Split whole models that share one backbone into backbone.loupe + one head file per model
    /// (regression.loupe, histogram.loupe) and a manifest: the browser downloads the backbone once.
    Bundle {
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Whole-model weight files (at most one per output kind).
        #[arg(required = true)]
        models: Vec<PathBuf>,
    },
    /// Serve the browser app on 127.0.0.1 (app folder with pkg/, and a weights folder with manifest.json).
    Serve {
        #[arg(long, default_value = "www")]
        app: PathBuf,
        #[arg(long, default_value = "weights")]
        weights: PathBuf,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Serve without cross-origin isolation (no COOP/COEP headers), as most sites that embed
        /// the widget do: the app then computes on one CPU thread where WebGPU is missing.
        #[arg(long)]
        no_isolation: bool,
    },
}

#[derive(clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images to score.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct CropArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    pub image: PathBuf,
    /// Aspect ratio W:H (1:1, 4:5, 16:9...) or exact size WxH in pixels.
    #[arg(long, default_value = "1:1")]
    pub aspect: CropShape,
    /// Candidates to score (the paper: 1000).
    #[arg(long, default_value_t = 1000)]
    pub candidates: usize,
    /// Candidate layout: `random` (the paper's random crops) or `grid` (a dense grid over
    /// positions and scales).
    #[arg(long, default_value = "random")]
    pub layout: CandidateLayout,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Alternatives to list besides the best crop.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Score every candidate with the full network (the paper's brute force) instead of the
    /// shared-feature search with exact re-ranking.
    #[arg(long)]
    pub exact: bool,
    /// Candidates the fast search re-scores exactly (each scale level's best estimates, then
    /// neighbours of the best exact crop).
    #[arg(long, default_value_t = loupe::crop::DEFAULT_RERANK)]
    pub rerank: usize,
    /// Write the best crop here (JPEG or PNG by extension).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct BatchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A folder (read recursively; hidden files skipped) or a manifest: one path or file:// URI
    /// per line, or a .csv / .parquet file with the paths in --column.
    pub input: PathBuf,
    /// Output folder; rows go under OUT/model=<weights id>/.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
    /// The manifest column with the paths (.csv and .parquet manifests).
    #[arg(long, default_value = "path")]
    pub column: String,
    /// What to compute: score, crop, or both.
    #[arg(long, value_enum, default_value = "score")]
    pub task: BatchTask,
    /// Crop aspect W:H (or exact size WxH); repeat for several aspects in one run. Default 1:1.
    #[arg(long = "aspect")]
    pub aspects: Vec<CropShape>,
    /// Exact crop width in pixels (with --height): one more crop shape.
    #[arg(long, requires = "height")]
    pub width: Option<u32>,
    #[arg(long, requires = "width")]
    pub height: Option<u32>,
    /// Crop candidates per aspect (the paper: 1000).
    #[arg(long, default_value_t = 1000)]
    pub candidates: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: Format,
    /// Run shard K of N (K from 0): the keys whose stable hash falls in it.
    #[arg(long, conflicts_with = "shard_from_env")]
    pub shard: Option<String>,
    /// Take the shard from the job array's environment (JOB_COMPLETION_INDEX,
    /// SLURM_ARRAY_TASK_ID, AWS_BATCH_JOB_ARRAY_INDEX, CLOUD_RUN_TASK_INDEX).
    #[arg(long)]
    pub shard_from_env: bool,
    /// The number of shards, for engines whose environment does not say (Kubernetes, AWS Batch).
    #[arg(long)]
    pub shards: Option<u64>,
    /// Photos per forward pass (1..=256: up to three batches of decoded photos are in flight).
    #[arg(long, default_value_t = loupe::scorer::DEFAULT_BATCH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub batch: usize,
    /// Rows per output part.
    #[arg(long, default_value_t = 1000)]
    pub part_rows: usize,
    /// Write a part at least this often (seconds), so a killed run loses little.
    #[arg(long, default_value_t = 300)]
    pub part_seconds: u64,
    /// Redo photos whose earlier row is an error.
    #[arg(long)]
    pub retry_errors: bool,
    /// Threads that read and decode photos beside the forward passes.
    #[arg(long, default_value_t = 2)]
    pub decode_threads: usize,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchTask {
    Score,
    Crop,
    Both,
}

/// The model a new weight file describes.
#[derive(clap::Args)]
pub struct NewModelArgs {
    /// compact (1x1 conv on the 7x7 map + a small MLP), paper (VGG16's fc6/fc7), statistics (a
    /// linear read-out of every block's channel statistics and the map) or quadratic (linear plus
    /// low-rank squared terms over the statistics).
    #[arg(long, default_value = "compact")]
    pub head: HeadKind,
    /// regression (one score) or histogram (the rating distribution).
    #[arg(long, default_value = "regression")]
    pub output: OutputKind,
    /// What the statistics and quadratic heads take each block's statistics over: deep-interior
    /// (blocks 4 and 5 without their outer seventh on each side, which sees the image's zero
    /// padding; the crop search's estimates follow it more closely) or whole (every block's whole
    /// output, as Loupe's first heads).
    #[arg(long, default_value = "deep-interior")]
    pub statistics: StatisticsRegion,
    /// Seed of the random initialisation (the same file for the same seed).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub model: NewModelArgs,
    /// Divide every layer's width (8 = a model 64x cheaper than VGG16).
    #[arg(long, default_value_t = 1)]
    pub width_divisor: usize,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub model: NewModelArgs,
    /// ImageNet VGG16 weights: .safetensors (torchvision names) or torchvision's vgg16-397923af.pth.
    #[arg(long)]
    pub from: PathBuf,
    /// Input convention of those weights, caffe-bgr or torchvision-rgb (default: torchvision-rgb
    /// for .pth, caffe-bgr otherwise).
    #[arg(long)]
    pub input: Option<InputConvention>,
    /// Store f32 tensors instead of f16.
    #[arg(long)]
    pub f32: bool,
}
