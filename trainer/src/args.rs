//! The `loupe-train` command line: every flag, and nothing else. Library enums are read with
//! their `FromStr` (their serde names), as in `loupe`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use loupe::model::{HeadKind, ModelConfig, OutputKind, StatisticsRegion};
use loupe::preprocess::InputConvention;
use loupe::weights;
use loupe_cli::device::DEVICE_HELP;
use loupe_cli::models::ModelArgs;
use loupe_cli::read;

use crate::splits::{PAPER_BINS, parse_bins};
use crate::train::{HistogramLoss, Optimizer, TrainConfig};

#[derive(Parser)]
#[command(name = "loupe-train", version, about = "Loupe's trainer: AVA labels and splits, training with the paper's weighted losses, evaluation")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// AVA labels: statistics, splits, sample weights.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a model with the paper's weighted losses (checkpoints every epoch; --resume).
    Train(Box<TrainArgs>),
    /// Evaluate weights like the paper (MSE, range, per-score MSE, RMSER) plus SRCC/PLCC/acc@5.
    Eval(EvalArgs),
    /// Export a training run's checkpoint as a Loupe weight file.
    Export(ExportArgs),
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Label statistics, class counts and the sample weights of Eq. 1 (with plots).
    Stats {
        /// AVA.txt (original format) or the count-only CSV.
        #[arg(long)]
        labels: PathBuf,
        /// A split folder from `loupe-train data split` (weights are then computed on train only).
        #[arg(long)]
        splits: Option<PathBuf>,
        #[arg(long, default_value_t = PAPER_BINS, value_parser = parse_bins)]
        bins: usize,
        /// Write score-distribution and sample-weight plots (SVG and PNG) here.
        #[arg(long)]
        plots: Option<PathBuf>,
        /// Write every set's summary and the sample weights (bin counts and weights) as JSON here
        /// (the app's paper page draws Fig. 2 from this file).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The paper's splits: RS-test, ED-test, train (seeded id lists).
    Split {
        #[arg(long)]
        labels: PathBuf,
        #[arg(long = "out", short = 'o')]
        out: PathBuf,
        /// RS-test size (the paper: 3000).
        #[arg(long, default_value_t = 3000)]
        rs: usize,
        /// ED-test images per class (<4, 4..7, >7; the paper: 1000).
        #[arg(long, default_value_t = 1000)]
        ed_per_class: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Use a standard test list (e.g. AVA's generic_test.jpgl) instead of random RS-test.
        #[arg(long)]
        test_list: Option<PathBuf>,
    },
}

/// Labelled images, as `train` and `eval` read them.
#[derive(clap::Args)]
pub struct DataArgs {
    /// AVA.txt-format labels (or the count CSV).
    #[arg(long)]
    pub labels: PathBuf,
    /// Folder of <id>.jpg images.
    #[arg(long)]
    pub images: PathBuf,
    /// Split folder from `loupe-train data split`: train uses train.txt, eval RS-test and ED-test.
    /// Without it, train uses every labelled image; eval uses all of them and a balanced subset.
    #[arg(long)]
    pub splits: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// regression (one score) or histogram (the rating distribution).
    #[arg(long, default_value = "regression")]
    pub model: OutputKind,
    /// compact, paper (VGG16's fc6/fc7), statistics or quadratic.
    #[arg(long, default_value = "compact")]
    pub head: HeadKind,
    /// What the statistics and quadratic heads take the block statistics over: deep-interior or
    /// whole (see `loupe import-vgg16 --help`). Default: the --init .loupe file's, else
    /// deep-interior.
    #[arg(long)]
    pub statistics: Option<StatisticsRegion>,
    /// Train without sample weights (the paper's NSWR baseline).
    #[arg(long)]
    pub unweighted: bool,
    /// Initial weights: .loupe, ImageNet .safetensors / torchvision .pth, or `random`.
    #[arg(long)]
    pub init: String,
    /// Input convention for ImageNet init, caffe-bgr or torchvision-rgb (default by file type).
    #[arg(long)]
    pub input: Option<InputConvention>,
    /// Divide every layer's width (tiny models for tests; `--init random` only).
    #[arg(long, default_value_t = 1)]
    pub width_divisor: usize,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// adam or sgd.
    #[arg(long, default_value = "adam")]
    pub optimizer: Optimizer,
    /// L2 weight decay (0: none, as in the paper).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// chi-square (the paper's Eq. 3) or emd.
    #[arg(long, default_value = "chi-square")]
    pub histogram_loss: HistogramLoss,
    /// Sample-weight bins (the paper: 90).
    #[arg(long, default_value_t = PAPER_BINS, value_parser = parse_bins)]
    pub bins: usize,
    /// Clip sample weights above this (not the paper's default).
    #[arg(long)]
    pub max_weight: Option<f32>,
    /// Epochs without a falling training loss before LR /= 10.
    #[arg(long, default_value_t = 1)]
    pub plateau_patience: usize,
    /// Compute VGG16 features once and train only the head (practical on a CPU).
    #[arg(long)]
    pub freeze_backbone: bool,
    /// Fit the head exactly instead of by gradient descent: weighted kernel ridge for a
    /// regression model with --head quadratic on a frozen backbone (minimises Eq. 2 + ridge).
    #[arg(long)]
    pub closed_form: bool,
    /// The closed form's ridge penalty (sample weights normalised to mean 1).
    #[arg(long, default_value_t = 0.1)]
    pub ridge: f64,
    /// Keep frozen-backbone features in this folder across runs (keyed by the backbone's weights).
    #[arg(long)]
    pub feature_cache: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "flex", help = DEVICE_HELP)]
    pub device: String,
    /// Run folder: checkpoints, run report, model.loupe.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out after its last complete epoch.
    #[arg(long)]
    pub resume: bool,
}

impl TrainArgs {
    /// The run these flags describe.
    pub fn config(&self) -> Result<TrainConfig> {
        let init_metadata = match self.init.ends_with(".loupe") {
            true => Some(weights::read_header(&read(Path::new(&self.init))?).with_context(|| self.init.clone())?.0),
            false => None,
        };
        let input = match (self.input, &init_metadata) {
            (Some(input), _) => input,
            (None, Some(metadata)) => metadata.input,
            (None, None) => loupe::imagenet::default_convention(Path::new(&self.init)),
        };
        let statistics = match (self.statistics, &init_metadata) {
            (Some(statistics), _) => statistics,
            (None, Some(metadata)) => metadata.model.statistics,
            (None, None) => StatisticsRegion::DeepInterior,
        };
        Ok(TrainConfig {
            labels: self.data.labels.clone(),
            images: self.data.images.clone(),
            splits: self.data.splits.clone(),
            model: ModelConfig::new(self.model, self.head).with_width_divisor(self.width_divisor).with_statistics(statistics),
            input,
            init: self.init.clone(),
            weighted: !self.unweighted,
            bins: self.bins,
            max_weight: self.max_weight,
            histogram_loss: self.histogram_loss,
            optimizer: self.optimizer,
            weight_decay: self.weight_decay,
            epochs: self.epochs,
            lr: self.lr,
            batch: self.batch.max(1),
            freeze_backbone: self.freeze_backbone,
            plateau_patience: self.plateau_patience,
            seed: self.seed,
            closed_form: self.closed_form,
            ridge: self.ridge,
        })
    }
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// The distillation set's variants.csv: also report the mean per-photo SRCC over undegraded crops.
    #[arg(long)]
    pub variants: Option<PathBuf>,
    /// Report folder (report.md, report.json, mse_by_score_*.svg and .png).
    #[arg(long = "out", short = 'o')]
    pub out: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Keep the shared backbone's features of these images in this folder (as `train
    /// --feature-cache`): evaluating more heads on the same frozen backbone is then quick.
    #[arg(long)]
    pub feature_cache: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A `loupe-train train --out` folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Attach metrics from an eval report.json.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    #[arg(long)]
    pub f32: bool,
    /// Describe where the weights came from (replaces the generated description).
    #[arg(long)]
    pub provenance: Option<String>,
    /// Licence and attributions that must travel with the weights (replaces the default, which
    /// credits only the VGG16 ImageNet base).
    #[arg(long)]
    pub licence: Option<String>,
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}
