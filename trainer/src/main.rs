//! `loupe`: score photos, find the best crop, import ImageNet weights (and, with the trainer's
//! commands, prepare AVA, train and evaluate).

mod data;
mod device;
mod eval;
mod labels;
mod losses;
mod plots;
mod serve;
mod splits;
mod kernel_ridge;
mod stats;
mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use loupe::crop::{CandidateLayout, CropRequest, CropShape, FastCropOptions, exhaustive_crop_search, fast_crop_search};
use loupe::model::{AVA_MEAN_HISTOGRAM, AVA_MEAN_SCORE, HeadKind, ModelConfig, OutputKind};
use loupe::prediction::difficulty_label;
use loupe::preprocess::{InputConvention, decode_image};
use loupe::weights::{self, Precision, WeightMetadata};
use loupe::{Prediction, Scorer};

/// Where `loupe` looks for weights when `--weights` is not given.
const DEFAULT_WEIGHTS: [&str; 3] = ["weights/backbone.loupe", "weights/regression.loupe", "weights/histogram.loupe"];

#[derive(Parser)]
#[command(name = "loupe", version, about = "Image-aesthetics scores (VGG16, weighted CNN on AVA)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score photos: aesthetic score 1..10, and with a histogram model the rating distribution and std.
    Score(ScoreArgs),
    /// Find the best-scoring crop of a photo (the paper's best of N random crops).
    Crop(CropArgs),
    /// Build an initial weight file: ImageNet VGG16 backbone, untrained head.
    ImportVgg16(ImportArgs),
    /// A randomly initialised weight file (tests, tiny-width demos).
    Init(InitArgs),
    /// Print a weight file's metadata.
    Inspect { file: PathBuf },
    /// AVA labels: statistics, splits, sample weights.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a model with the paper's weighted losses (checkpoints every epoch; --resume).
    Train(Box<TrainArgs>),
    /// Evaluate weights like the paper (MSE, range, per-score MSE, RMSER) plus SRCC/PLCC/acc@5.
    Eval(EvalArgs),
    /// Export a training run's checkpoint as a Loupe weight file.
    Export(ExportArgs),
    /// Serve the browser app on 127.0.0.1 (app folder with pkg/, and a weights folder with manifest.json).
    Serve {
        #[arg(long, default_value = "www")]
        app: PathBuf,
        #[arg(long, default_value = "weights")]
        weights: PathBuf,
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
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
}

#[derive(Subcommand)]
enum DataCommand {
    /// Label statistics, class counts and the sample weights of Eq. 1 (with plots).
    Stats {
        /// AVA.txt (original format) or the count-only CSV.
        #[arg(long)]
        labels: PathBuf,
        /// A split folder from `loupe data split` (weights are then computed on train only).
        #[arg(long)]
        splits: Option<PathBuf>,
        #[arg(long, default_value_t = splits::PAPER_BINS)]
        bins: usize,
        /// Write score-distribution and sample-weight plots (SVG and PNG) here.
        #[arg(long)]
        plots: Option<PathBuf>,
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
struct DataArgs {
    /// AVA.txt-format labels (or the count CSV).
    #[arg(long)]
    labels: PathBuf,
    /// Folder of <id>.jpg images.
    #[arg(long)]
    images: PathBuf,
    /// Split folder from `loupe data split`: train uses train.txt, eval RS-test and ED-test.
    /// Without it, train uses every labelled image; eval uses all of them and a balanced subset.
    #[arg(long)]
    splits: Option<PathBuf>,
}

#[derive(clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, value_enum, default_value = "regression")]
    model: OutputArg,
    #[arg(long, value_enum, default_value = "compact")]
    head: HeadArg,
    /// Train without sample weights (the paper's NSWR baseline).
    #[arg(long)]
    unweighted: bool,
    /// Initial weights: .loupe, ImageNet .safetensors / torchvision .pth, or `random`.
    #[arg(long)]
    init: String,
    /// Input convention for ImageNet init (default by file type).
    #[arg(long, value_enum)]
    input: Option<ConventionArg>,
    /// Divide every layer's width (tiny models for tests; `--init random` only).
    #[arg(long, default_value_t = 1)]
    width_divisor: usize,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: train::Optimizer,
    /// L2 weight decay (0: none, as in the paper).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    #[arg(long, value_enum, default_value = "chi-square")]
    histogram_loss: train::HistogramLoss,
    /// Sample-weight bins (the paper: 90).
    #[arg(long, default_value_t = splits::PAPER_BINS)]
    bins: usize,
    /// Clip sample weights above this (not the paper's default).
    #[arg(long)]
    max_weight: Option<f32>,
    /// Epochs without a falling training loss before LR /= 10.
    #[arg(long, default_value_t = 1)]
    plateau_patience: usize,
    /// Compute VGG16 features once and train only the head (practical on a CPU).
    #[arg(long)]
    freeze_backbone: bool,
    /// Fit the head exactly instead of by gradient descent: weighted kernel ridge for a
    /// regression model with --head quadratic on a frozen backbone (minimises Eq. 2 + ridge).
    #[arg(long)]
    closed_form: bool,
    /// The closed form's ridge penalty (sample weights normalised to mean 1).
    #[arg(long, default_value_t = 0.1)]
    ridge: f64,
    /// Keep frozen-backbone features in this folder across runs (keyed by the backbone's weights).
    #[arg(long)]
    feature_cache: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "flex", help = device::DEVICE_HELP)]
    device: String,
    /// Run folder: checkpoints, run report, model.loupe.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out after its last complete epoch.
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DataArgs,
    /// The distillation set's variants.csv: also report the mean per-photo SRCC over undegraded crops.
    #[arg(long)]
    variants: Option<PathBuf>,
    /// Report folder (report.md, report.json, mse_by_score_*.svg and .png).
    #[arg(long = "out", short = 'o')]
    out: PathBuf,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Keep the shared backbone's features of these images in this folder (as `train
    /// --feature-cache`): evaluating more heads on the same frozen backbone is then quick.
    #[arg(long)]
    feature_cache: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// A `loupe train --out` folder.
    #[arg(long)]
    run: PathBuf,
    /// Attach metrics from an eval report.json.
    #[arg(long)]
    metrics: Option<PathBuf>,
    #[arg(long)]
    f32: bool,
    /// Describe where the weights came from (replaces the generated description).
    #[arg(long)]
    provenance: Option<String>,
    /// Licence and attributions that must travel with the weights (replaces the default, which
    /// credits only the VGG16 ImageNet base).
    #[arg(long)]
    licence: Option<String>,
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Loupe weight file(s); give a regression and a histogram file to see both models.
    /// Default: weights/regression.loupe and weights/histogram.loupe where they exist.
    #[arg(long = "weights", short = 'w')]
    weights: Vec<PathBuf>,
    /// Compute device.
    #[arg(long, default_value = "flex", help = device::DEVICE_HELP)]
    device: String,
}

#[derive(clap::Args)]
struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Images to score.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CropArgs {
    #[command(flatten)]
    model: ModelArgs,
    image: PathBuf,
    /// Aspect ratio W:H (1:1, 4:5, 16:9...) or exact size WxH in pixels.
    #[arg(long, default_value = "1:1")]
    aspect: String,
    /// Candidates to score (the paper: 1000).
    #[arg(long, default_value_t = 1000)]
    candidates: usize,
    /// Candidate layout: `random` (the paper's random crops) or `grid` (a dense grid over
    /// positions and scales).
    #[arg(long, default_value = "random")]
    layout: CandidateLayout,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Alternatives to list besides the best crop.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Score every candidate with the full network (the paper's brute force) instead of the
    /// shared-feature search with exact re-ranking.
    #[arg(long)]
    exact: bool,
    /// Candidates the fast search re-scores exactly (the best estimates, then neighbours of the
    /// best exact crop).
    #[arg(long, default_value_t = loupe::crop::DEFAULT_RERANK)]
    rerank: usize,
    /// Write the best crop here (JPEG or PNG by extension).
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum HeadArg {
    /// 1x1 conv on the 7x7 map + a small MLP.
    Compact,
    /// VGG16's fc6/fc7 classifier (the paper).
    Paper,
    /// A linear read-out over every block's channel statistics and the 7x7 map.
    Statistics,
    /// Linear plus low-rank squared terms over every block's channel statistics.
    Quadratic,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Regression,
    Histogram,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConventionArg {
    CaffeBgr,
    TorchvisionRgb,
}

#[derive(clap::Args)]
struct InitArgs {
    #[arg(long, value_enum, default_value = "compact")]
    head: HeadArg,
    #[arg(long, value_enum, default_value = "regression")]
    output: OutputArg,
    /// Divide every layer's width (8 = a model 64x cheaper than VGG16).
    #[arg(long, default_value_t = 1)]
    width_divisor: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// ImageNet VGG16 weights: .safetensors (torchvision names) or torchvision's vgg16-397923af.pth.
    #[arg(long)]
    from: PathBuf,
    #[arg(long, value_enum, default_value = "compact")]
    head: HeadArg,
    #[arg(long, value_enum, default_value = "regression")]
    output: OutputArg,
    /// Input convention of those weights (default: torchvision-rgb for .pth, caffe-bgr otherwise).
    #[arg(long, value_enum)]
    input: Option<ConventionArg>,
    /// Store f32 tensors instead of f16.
    #[arg(long)]
    f32: bool,
    /// Seed of the untrained head's random initialisation (the same file for the same seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output weight file.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the error and its causes.
            let chain: Vec<String> = error.chain().map(|e| e.to_string()).collect();
            eprintln!("loupe: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Score(args) => score(args),
        Command::Crop(args) => crop(args),
        Command::ImportVgg16(args) => import_vgg16(args),
        Command::Init(args) => init_command(args),
        Command::Data(command) => data_command(command),
        Command::Train(args) => train_command(*args),
        Command::Eval(args) => eval_command(args),
        Command::Export(args) => export_command(args),
        Command::Serve { app, weights, port } => serve::serve(&app, &weights, port),
        Command::Manifest { dir } => manifest_command(&dir),
        Command::Bundle { out, models } => bundle_command(&out, &models),
        Command::Inspect { file } => {
            let bytes = read(&file)?;
            let (metadata, _) = weights::read_header(&bytes).with_context(|| file.display().to_string())?;
            println!("{}", serde_json::to_string_pretty(&metadata)?);
            Ok(())
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn load_scorers(args: &ModelArgs) -> Result<Vec<Scorer>> {
    let paths = weight_paths(args);
    if paths.is_empty() {
        bail!("no weights: pass --weights FILE (make one with `loupe import-vgg16`)");
    }
    let device = device::parse_device(&args.device)?;
    let files: Vec<Vec<u8>> = paths.iter().map(|p| read(p)).collect::<Result<_>>()?;
    let slices: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let scorers = Scorer::from_weight_files(&slices, &device).with_context(|| names.join(", "))?;
    for scorer in &scorers {
        if !scorer.metadata.head_trained {
            eprintln!("note: the {} model has an untrained head: its scores are not meaningful", model_name(scorer));
        }
    }
    Ok(scorers)
}

fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]")
            .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

fn model_name(scorer: &Scorer) -> &'static str {
    model_name_of(scorer.output())
}

fn score(args: ScoreArgs) -> Result<()> {
    let scorers = load_scorers(&args.model)?;
    let bar = (args.images.len() > 1).then(|| progress_bar(args.images.len(), "scoring"));
    let mut failures = 0;
    for path in &args.images {
        let result = read(path).and_then(|bytes| Ok(decode_image(&bytes)?)).and_then(|image| {
            // One backbone pass feeds every head bundled with the same backbone.
            let predictions = Scorer::predict_all(&scorers, std::slice::from_ref(&image))?;
            scorers
                .iter()
                .zip(predictions)
                .map(|(s, p)| Ok((model_name(s), p.into_iter().next().context("no prediction")?)))
                .collect::<Result<Vec<(&str, Prediction)>>>()
        });
        let line = match result {
            Ok(predictions) => format_predictions(path, &predictions, args.json)?,
            Err(error) => {
                failures += 1;
                if args.json {
                    serde_json::json!({"image": path, "error": format!("{error:#}")}).to_string()
                } else {
                    format!("{}: error: {error:#}", path.display())
                }
            }
        };
        match &bar {
            Some(bar) => {
                // Not `bar.println`: it prints nothing when stderr is not a terminal (pipes, scripts).
                bar.suspend(|| println!("{line}"));
                bar.inc(1);
            }
            None => println!("{line}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if failures > 0 {
        bail!("{failures} of {} images could not be scored", args.images.len());
    }
    Ok(())
}

fn format_predictions(path: &Path, predictions: &[(&str, Prediction)], json: bool) -> Result<String> {
    if json {
        let mut object = serde_json::json!({ "image": path });
        for (name, prediction) in predictions {
            object[*name] = serde_json::to_value(prediction)?;
        }
        return Ok(object.to_string());
    }
    let mut line = format!("{}", path.display());
    for (name, p) in predictions {
        line += &format!("  {name}: {:.3}", p.score);
        if let (Some(std), Some(histogram)) = (p.std, p.histogram) {
            let bins: Vec<String> = histogram.iter().map(|v| format!("{v:.2}")).collect();
            line += &format!(" std {std:.3} ({}) [{}]", difficulty_label(std), bins.join(" "));
        }
    }
    Ok(line)
}

fn crop(args: CropArgs) -> Result<()> {
    let scorers = load_scorers(&args.model)?;
    // The paper crops with the regression model; a histogram model's mean works too.
    let scorer = scorers
        .iter()
        .find(|s| s.output() == OutputKind::Regression)
        .unwrap_or(&scorers[0]);
    let image = decode_image(&read(&args.image)?).with_context(|| args.image.display().to_string())?;
    let request = CropRequest {
        shape: args.aspect.parse::<CropShape>()?,
        candidates: args.candidates,
        seed: args.seed,
        top_k: args.top_k + 1,
        layout: args.layout,
        ..CropRequest::default()
    };
    let bar = progress_bar(args.candidates, "cropping");
    let crops = if args.exact {
        exhaustive_crop_search(scorer, &image, &request, |done, _| bar.set_position(done as u64))?
    } else {
        let options = FastCropOptions { rerank: args.rerank, ..FastCropOptions::default() };
        fast_crop_search(scorer, &image, &request, &options, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64)
        })?
    };
    bar.finish_and_clear();
    let best = crops[0];
    if let Some(out) = &args.output {
        best.rect.crop(&image).save(out).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::json!({ "image": args.image, "best": best, "alternatives": &crops[1..] }));
    } else {
        let r = best.rect;
        println!("best crop: x={} y={} {}x{}  score {:.3}", r.x, r.y, r.width, r.height, best.score);
        for (i, c) in crops[1..].iter().enumerate() {
            let r = c.rect;
            println!("  #{}: x={} y={} {}x{}  score {:.3}", i + 2, r.x, r.y, r.width, r.height, c.score);
        }
    }
    Ok(())
}

impl From<OutputArg> for OutputKind {
    fn from(arg: OutputArg) -> Self {
        match arg {
            OutputArg::Regression => OutputKind::Regression,
            OutputArg::Histogram => OutputKind::Histogram,
        }
    }
}

impl From<HeadArg> for HeadKind {
    fn from(arg: HeadArg) -> Self {
        match arg {
            HeadArg::Compact => HeadKind::Compact,
            HeadArg::Paper => HeadKind::Paper,
            HeadArg::Statistics => HeadKind::Statistics,
            HeadArg::Quadratic => HeadKind::Quadratic,
        }
    }
}

fn init_command(args: InitArgs) -> Result<()> {
    let config = ModelConfig::new(args.output.into(), args.head.into()).with_width_divisor(args.width_divisor);
    let device = burn::tensor::Device::flex();
    device.seed(args.seed);
    let mut net = config.init(&device)?;
    net.centre_output(AVA_MEAN_SCORE, AVA_MEAN_HISTOGRAM);
    let mut metadata = WeightMetadata::new(config, InputConvention::CaffeBgr);
    metadata.provenance = format!("random initialisation (seed {}), for tests and demos", args.seed);
    metadata.licence = "MIT OR Apache-2.0".into();
    let bytes = weights::encode(&net, &metadata)?;
    std::fs::write(&args.out, &bytes).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("wrote {} ({:.1} MB, random {:?} {:?} head, width /{})", args.out.display(), bytes.len() as f64 / 1e6, config.output, config.head, args.width_divisor);
    Ok(())
}

fn import_vgg16(args: ImportArgs) -> Result<()> {
    let output: OutputKind = args.output.into();
    let head: HeadKind = args.head.into();
    let convention = match args.input {
        Some(ConventionArg::CaffeBgr) => InputConvention::CaffeBgr,
        Some(ConventionArg::TorchvisionRgb) => InputConvention::TorchvisionRgb,
        None => loupe::imagenet::default_convention(&args.from),
    };
    let config = ModelConfig::new(output, head);
    let device = burn::tensor::Device::flex();
    device.seed(args.seed);
    let mut net = config.init(&device)?;
    let fc_loaded = loupe::imagenet::import_imagenet(&mut net, &args.from)?;
    // Untrained heads start at AVA's mean, so their (meaningless) scores at least lie in 1..10.
    net.centre_output(AVA_MEAN_SCORE, AVA_MEAN_HISTOGRAM);
    let mut metadata = WeightMetadata::new(config, convention);
    metadata.precision = if args.f32 { Precision::F32 } else { Precision::F16 };
    metadata.provenance = format!(
        "ImageNet VGG16 conv base from {}{}; head untrained (output centred on AVA's mean)",
        args.from.file_name().unwrap_or_default().to_string_lossy(),
        if fc_loaded { " (fc6/fc7 from the same file)" } else { "" }
    );
    metadata.licence = "VGG16 ImageNet weights by the Oxford Visual Geometry Group (Simonyan & Zisserman), CC BY 4.0".into();
    let bytes = weights::encode(&net, &metadata)?;
    std::fs::write(&args.out, &bytes).with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {} ({:.1} MB, {:?} {:?} head, {:?} input)",
        args.out.display(),
        bytes.len() as f64 / 1e6,
        output,
        head,
        convention
    );
    Ok(())
}

fn data_command(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Stats { labels, splits, bins, plots } => {
            let parsed = labels::Labels::read(&labels)?;
            report_bad_rows(&parsed);
            let splits = splits.map(|d| splits::Splits::read(&d)).transpose()?;
            let sets = stats::named_sets(&parsed, splits.as_ref());
            for (name, set) in &sets {
                stats::print_summary(name, &stats::summarise(set));
            }
            let weights = stats::weights_for(&sets, bins, None);
            let (min, max) = weights.range();
            let used = weights.counts.iter().filter(|&&c| c > 0).count();
            println!("sample weights (Eq. 1, {bins} bins, {used} non-empty): {min:.3} .. {max:.1}");
            if let Some(dir) = plots {
                std::fs::create_dir_all(&dir)?;
                plots::save(&plots::ScoreDistributions(&sets), &dir.join("score_distributions"))?;
                plots::save(&plots::SampleWeightsFigure(&weights), &dir.join("sample_weights"))?;
                println!("plots in {}", dir.display());
            }
            Ok(())
        }
        DataCommand::Split { labels, out, rs, ed_per_class, seed, test_list } => {
            let parsed = labels::Labels::read(&labels)?;
            report_bad_rows(&parsed);
            let made = match test_list {
                Some(list) => splits::listed_splits(&parsed.images, &labels::read_id_list(&list)?, ed_per_class, seed)?,
                None => splits::paper_splits(&parsed.images, rs, ed_per_class, seed)?,
            };
            made.write(&out)?;
            let sets = stats::named_sets(&parsed, Some(&made));
            let mut summary = serde_json::Map::new();
            for (name, set) in &sets {
                let s = stats::summarise(set);
                stats::print_summary(name, &s);
                summary.insert(name.clone(), serde_json::to_value(s)?);
            }
            let weights = stats::weights_for(&sets, splits::PAPER_BINS, None);
            let (min, max) = weights.range();
            println!("train sample weights (Eq. 1, 90 bins): {min:.3} .. {max:.1}");
            summary.insert("seed".into(), seed.into());
            std::fs::write(out.join("split.json"), serde_json::to_vec_pretty(&summary)?)?;
            plots::save(&plots::ScoreDistributions(&sets), &out.join("score_distributions"))?;
            plots::save(&plots::SampleWeightsFigure(&weights), &out.join("sample_weights"))?;
            println!("wrote {}/{{train,rs_test,ed_test}}.txt, split.json and plots", out.display());
            Ok(())
        }
    }
}

fn report_bad_rows(labels: &labels::Labels) {
    let bad = labels.report_bad_rows();
    if !bad.is_empty() {
        eprintln!("{} bad label rows skipped:", bad.len());
        for line in bad.iter().take(20) {
            eprintln!("  {line}");
        }
        if bad.len() > 20 {
            eprintln!("  ... and {} more", bad.len() - 20);
        }
    }
}

fn train_command(args: TrainArgs) -> Result<()> {
    let mut config = train::default_config(args.data.labels, args.data.images, args.model.into(), args.head.into());
    config.model = config.model.with_width_divisor(args.width_divisor);
    config.input = match args.input {
        Some(ConventionArg::CaffeBgr) => InputConvention::CaffeBgr,
        Some(ConventionArg::TorchvisionRgb) => InputConvention::TorchvisionRgb,
        None if args.init.ends_with(".loupe") => {
            weights::read_header(&read(Path::new(&args.init))?).with_context(|| args.init.clone())?.0.input
        }
        None => loupe::imagenet::default_convention(Path::new(&args.init)),
    };
    config.splits = args.data.splits;
    config.init = args.init;
    config.weighted = !args.unweighted;
    config.bins = args.bins;
    config.max_weight = args.max_weight;
    config.histogram_loss = args.histogram_loss;
    config.optimizer = args.optimizer;
    config.weight_decay = args.weight_decay;
    config.epochs = args.epochs;
    config.lr = args.lr;
    config.batch = args.batch.max(1);
    config.freeze_backbone = args.freeze_backbone;
    config.closed_form = args.closed_form;
    config.ridge = args.ridge;
    config.plateau_patience = args.plateau_patience;
    config.seed = args.seed;
    let devices = device::parse_devices(&args.device)?;
    let outcome = train::train(config, &args.out, args.resume, devices, args.feature_cache.as_deref())?;
    let bytes = train::export(&outcome.net, &outcome.state, Precision::F16, serde_json::Value::Null)?;
    let model_path = args.out.join("model.loupe");
    std::fs::write(&model_path, bytes)?;
    let report = serde_json::json!({
        "history": outcome.state.history,
        "failed_images": outcome.state.failed_images,
        "config": outcome.state.config,
    });
    std::fs::write(args.out.join("run_report.json"), serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {} and {}", model_path.display(), args.out.join("run_report.json").display());
    Ok(())
}

fn eval_command(args: EvalArgs) -> Result<()> {
    let scorers = load_scorers(&args.model)?;
    let parsed = labels::Labels::read(&args.data.labels)?;
    report_bad_rows(&parsed);
    let all: Vec<&labels::ImageLabel> = parsed.images.iter().collect();
    let sets: Vec<(String, Vec<&labels::ImageLabel>)> = match &args.data.splits {
        Some(dir) => stats::named_sets(&parsed, Some(&splits::Splits::read(dir)?))
            .into_iter()
            .filter(|(name, _)| name.ends_with("-test"))
            .collect(),
        None => vec![("all".into(), all.clone()), ("balanced".into(), eval::balanced_subset(&all))],
    };
    eval::ensure_nonempty(&sets)?;
    std::fs::create_dir_all(&args.out)?;
    let images = data::ImageFolder::new(&args.data.images, true);
    let mut json = serde_json::Map::new();
    let mut markdown = String::new();
    // One name per model (a backbone file is not a model).
    let paths: Vec<PathBuf> = weight_paths(&args.model)
        .into_iter()
        .filter(|p| read(p).ok().and_then(|b| weights::read_header(&b).ok().map(|(m, _)| m.part)) != Some(weights::Part::Backbone))
        .collect();
    // Models that share a backbone (e.g. heads trained on the same frozen VGG16) run it once.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, scorer) in scorers.iter().enumerate() {
        let key = train::backbone_key(&scorer.net, scorer.metadata.input);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let mut results: Vec<Vec<(String, eval::Metrics)>> = vec![Vec::new(); scorers.len()];
    let mut crop_ranking: Vec<Option<serde_json::Value>> = vec![None; scorers.len()];
    // Every image is scored once, even when it belongs to several sets (all / balanced).
    let mut union: Vec<&labels::ImageLabel> = sets.iter().flat_map(|(_, set)| set.iter().copied()).collect();
    union.sort_by_key(|l| l.id);
    union.dedup_by_key(|l| l.id);
    let mut scored_by_model: Vec<Vec<eval::Scored>> = vec![Vec::new(); scorers.len()];
    for (_, members) in &groups {
        let group: Vec<&Scorer> = members.iter().map(|&i| &scorers[i]).collect();
        let scored = eval::score_labels(&group, &union, &images, args.batch, args.feature_cache.as_deref())?;
        for (&i, scored) in members.iter().zip(scored) {
            scored_by_model[i] = scored;
        }
    }
    // Per set, each model's scored images (for the paired comparisons).
    let mut scored_by_set: Vec<(String, Vec<Vec<eval::Scored>>)> = Vec::new();
    for (name, set) in &sets {
        let ids: std::collections::HashSet<u64> = set.iter().map(|l| l.id).collect();
        let mut per_model = Vec::with_capacity(scored_by_model.len());
        for (i, all_scored) in scored_by_model.iter().enumerate() {
            let scored: Vec<eval::Scored> = all_scored.iter().filter(|s| ids.contains(&s.id)).cloned().collect();
            let metrics = eval::metrics(&scored);
            if let (Some(variants), "all") = (&args.variants, name.as_str()) {
                let (srcc, photos) = eval::crop_ranking_srcc(variants, &scored)?;
                println!("{} crop ranking: mean SRCC {srcc:.3} over {photos} photos", paths[i].display());
                crop_ranking[i] = Some(serde_json::json!({"mean_srcc": srcc, "photos": photos}));
            }
            println!(
                "{} {name}: {} images, MSE {:.4}, range {:.2}..{:.2}, SRCC {:.3}, PLCC {:.3}, acc@5 {:.1}%{}",
                paths[i].display(),
                metrics.images,
                metrics.mse,
                metrics.min_prediction,
                metrics.max_prediction,
                metrics.srcc,
                metrics.plcc,
                100.0 * metrics.accuracy_at_5,
                metrics.rmser.map_or(String::new(), |r| format!(", RMSER {:.2}%", 100.0 * r))
            );
            results[i].push((name.clone(), metrics));
            per_model.push(scored);
        }
        scored_by_set.push((name.clone(), per_model));
    }
    for (((scorer, path), results), crop_ranking) in scorers.iter().zip(&paths).zip(results).zip(crop_ranking) {
        // The path, not the file name: runs often all end in model.loupe.
        let name = path.display().to_string();
        markdown += &eval::report_markdown(scorer.output(), &name, &results);
        markdown += "\n";
        let plot_name: String = path.display().to_string().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        plots::save(&plots::MseByScore(&results), &args.out.join(format!("mse_by_score_{plot_name}")))?;
        let key = if scorers.len() == 1 { model_name(scorer).to_string() } else { path.display().to_string() };
        let mut entry = serde_json::to_value(results.into_iter().collect::<std::collections::BTreeMap<_, _>>())?;
        if let Some(crop) = crop_ranking {
            markdown += &format!("Crop ranking (mean per-photo SRCC over undegraded crops): {:.3}\n\n", crop["mean_srcc"]);
            entry["crop_ranking"] = crop;
        }
        json.insert(key, entry);
    }
    if scorers.len() > 1 {
        markdown += &paired_comparisons(&scored_by_set, &paths, &mut json);
    }
    let failures = images.failures();
    if !failures.is_empty() {
        eprintln!("{} images could not be read and were skipped", failures.len());
        json.insert("failed_images".into(), serde_json::to_value(&failures)?);
    }
    std::fs::write(args.out.join("report.md"), markdown)?;
    std::fs::write(args.out.join("report.json"), serde_json::to_vec_pretty(&json)?)?;
    println!("report in {}", args.out.display());
    Ok(())
}

/// Every pair of models on every set: the MSE difference and whether it outlasts resampling
/// (printed, returned as markdown, stored under "comparisons" in the JSON report).
fn paired_comparisons(
    scored_by_set: &[(String, Vec<Vec<eval::Scored>>)],
    paths: &[PathBuf],
    json: &mut serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut markdown = String::from(
        "# Paired comparisons\n\nMSE of the second model minus the first on the same images, with a 95% paired-bootstrap \
         interval (images resampled as independent); *clear* when the interval excludes 0 (otherwise these images \
         cannot tell the two apart by MSE).\n\n\
         | set | first | second | images | MSE difference | 95% interval | clear |\n|---|---|---|---|---|---|---|\n",
    );
    let mut rows = Vec::new();
    for (set, per_model) in scored_by_set {
        for i in 0..per_model.len() {
            for j in i + 1..per_model.len() {
                let d = eval::mse_difference(&per_model[i], &per_model[j]);
                let (first, second) = (paths[i].display(), paths[j].display());
                println!(
                    "{set}: MSE of {second} minus {first}: {:+.4} (95% interval {:+.4}..{:+.4}, {})",
                    d.difference,
                    d.low,
                    d.high,
                    if d.is_clear() { "clear" } else { "within resampling noise" }
                );
                markdown += &format!(
                    "| {set} | `{first}` | `{second}` | {} | {:+.4} | {:+.4}..{:+.4} | {} |\n",
                    d.images,
                    d.difference,
                    d.low,
                    d.high,
                    if d.is_clear() { "yes" } else { "no" }
                );
                rows.push(serde_json::json!({"set": set, "first": first.to_string(), "second": second.to_string(), "mse_difference": d}));
            }
        }
    }
    json.insert("comparisons".into(), serde_json::Value::Array(rows));
    markdown + "\n"
}

fn weight_paths(args: &ModelArgs) -> Vec<PathBuf> {
    if args.weights.is_empty() {
        DEFAULT_WEIGHTS.iter().map(PathBuf::from).filter(|p| p.exists()).collect()
    } else {
        args.weights.clone()
    }
}

fn export_command(args: ExportArgs) -> Result<()> {
    let checkpoints = train::Checkpoints::new(&args.run);
    let state = checkpoints.load_state()?.with_context(|| format!("{} holds no checkpoint", args.run.display()))?;
    let device = burn::tensor::Device::flex();
    let net = state.config.model.init(&device)?;
    let (net, _) = checkpoints.load(&state, net, train::make_optimizer(&state.config))?;
    let metrics = match &args.metrics {
        Some(path) => serde_json::from_slice(&read(path)?)?,
        None => serde_json::Value::Null,
    };
    let precision = if args.f32 { Precision::F32 } else { Precision::F16 };
    let mut bytes = train::export(&net, &state, precision, metrics)?;
    if args.provenance.is_some() || args.licence.is_some() {
        let (mut metadata, _) = weights::read_header(&bytes)?;
        metadata.provenance = args.provenance.unwrap_or(metadata.provenance);
        metadata.licence = args.licence.unwrap_or(metadata.licence);
        bytes = weights::encode(&net, &metadata)?;
    }
    std::fs::write(&args.out, &bytes)?;
    println!("wrote {} ({:.1} MB)", args.out.display(), bytes.len() as f64 / 1e6);
    Ok(())
}

fn manifest_command(dir: &Path) -> Result<()> {
    use sha2::Digest;
    let mut models = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "loupe"))
        .collect();
    paths.sort();
    for path in paths {
        let bytes = read(&path)?;
        let (metadata, _) = weights::read_header(&bytes).with_context(|| path.display().to_string())?;
        let sha256: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        models.push(serde_json::json!({
            "file": path.file_name().unwrap().to_string_lossy(),
            "kind": match metadata.part {
                weights::Part::Backbone => serde_json::json!("backbone"),
                _ => serde_json::to_value(metadata.model.output)?,
            },
            "part": metadata.part,
            "head": if metadata.part == weights::Part::Backbone { serde_json::Value::Null } else { serde_json::to_value(metadata.model.head)? },
            "bytes": bytes.len(),
            "sha256": sha256,
            "head_trained": metadata.head_trained,
        }));
    }
    if models.is_empty() {
        bail!("no .loupe files in {}", dir.display());
    }
    // A shared backbone first: the app loads files in this order and heads need it.
    models.sort_by_key(|m| m["part"] != "backbone");
    let manifest = serde_json::json!({ "models": models });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest)?)?;
    println!("wrote {}", dir.join("manifest.json").display());
    Ok(())
}

fn bundle_command(out: &Path, models: &[PathBuf]) -> Result<()> {
    let device = burn::tensor::Device::flex();
    std::fs::create_dir_all(out)?;
    let mut backbone_written: Option<String> = None;
    for path in models {
        let (net, metadata) = weights::decode(&read(path)?, &device).with_context(|| path.display().to_string())?;
        let id = weights::backbone_id(&net)?;
        match &backbone_written {
            Some(first) if *first != id => bail!("{} has another backbone than the first model: they cannot share one", path.display()),
            Some(_) => {}
            None => {
                // Only what describes the backbone itself, so retraining the heads leaves this
                // (large) file byte for byte the same.
                let mut backbone = metadata.clone();
                backbone.part = weights::Part::Backbone;
                // A backbone part has no head: one fixed model description (the heads name theirs),
                // so heads of another kind reuse the same file too.
                backbone.model = ModelConfig::new(OutputKind::Regression, HeadKind::Compact)
                    .with_width_divisor(metadata.model.width_divisor);
                backbone.backbone_id = Some(id.clone());
                backbone.metrics = serde_json::Value::Null;
                backbone.training = serde_json::Value::Null;
                backbone.head_trained = false;
                backbone.provenance = "VGG16 convolutional base (ImageNet), shared by the heads beside it".into();
                backbone.licence = "Oxford Visual Geometry Group (Simonyan & Zisserman), CC BY 4.0".into();
                std::fs::write(out.join("backbone.loupe"), weights::encode(&net, &backbone)?)?;
                backbone_written = Some(id.clone());
            }
        }
        let mut head = metadata;
        head.part = weights::Part::Head;
        head.backbone_id = Some(id);
        let file = out.join(format!("{}.loupe", model_name_of(head.model.output)));
        std::fs::write(&file, weights::encode(&net, &head)?)?;
        println!("{} → {} (+ shared backbone.loupe)", path.display(), file.display());
    }
    manifest_command(out)
}

fn model_name_of(output: OutputKind) -> &'static str {
    match output {
        OutputKind::Regression => "regression",
        OutputKind::Histogram => "histogram",
    }
}
