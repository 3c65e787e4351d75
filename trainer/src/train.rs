//! `loupe-train train`: the paper's fine-tuning (Sec. 4.2) with the weighted losses, on any device.
//!
//! Whole image → 224x224, no crop, no augmentation; ImageNet init; LR divided by 10 when the
//! training loss stops decreasing ([`Plateau`]); a checkpoint after every epoch, so `--resume`
//! after a crash or `kill -9` loses no finished epoch ([`crate::checkpoint`]). `--freeze-backbone`
//! computes the VGG16 features once ([`crate::features`]) and trains only the head (practical on a
//! CPU); several devices share each batch ([`crate::parallel`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use loupe::model::{AestheticNet, HISTOGRAM_BINS, HeadKind, HeadLayers, ModelConfig, OutputKind, values};
use loupe::preprocess::{InputConvention, input_batch};
use loupe::rng::SplitMix64;
use loupe::weights::{self, Precision};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{CheckpointState, Checkpoints, EpochRecord, Plateau};
use crate::data::ImageFolder;
use crate::export::export;
use crate::features::FeatureCache;
use crate::labels::{ImageLabel, Labels};
use crate::losses::{weighted_chi_square, weighted_emd, weighted_mse};
use crate::parallel::{Shard, data_parallel_gradients, split_into_shards};
use crate::splits::{SampleWeights, Splits, sample_weights};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistogramLoss {
    /// Weighted chi-square distance (the paper, Eq. 3).
    #[serde(alias = "chisquare")] // how earlier runs saved it
    ChiSquare,
    /// NIMA's earth mover's distance, to compare.
    Emd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Adam,
    Sgd,
}

loupe::from_str_by_serde_name!(HistogramLoss, Optimizer);

/// Everything that defines a run; saved with each checkpoint so `--resume` continues the same run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub labels: PathBuf,
    pub images: PathBuf,
    pub splits: Option<PathBuf>,
    pub model: ModelConfig,
    pub input: InputConvention,
    pub init: String,
    pub weighted: bool,
    pub bins: usize,
    pub max_weight: Option<f32>,
    pub histogram_loss: HistogramLoss,
    pub optimizer: Optimizer,
    /// L2 penalty added to the gradients (0 = none, the paper's setting).
    #[serde(default)]
    pub weight_decay: f32,
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    pub freeze_backbone: bool,
    pub plateau_patience: usize,
    pub seed: u64,
    /// Fit a frozen-backbone quadratic regression head exactly ([`crate::kernel_ridge`])
    /// instead of by gradient descent.
    #[serde(default)]
    pub closed_form: bool,
    /// The closed form's ridge penalty λ (sample weights normalised to mean 1).
    #[serde(default = "default_ridge")]
    pub ridge: f64,
}

fn default_ridge() -> f64 {
    0.1
}

impl TrainConfig {
    /// Settings that cannot work together, refused before any work.
    /// What the flags' parsers check, checked again here: a resumed run's settings come from
    /// `checkpoint/state.json`, which may have been edited or damaged.
    pub fn check(&self) -> Result<()> {
        if self.batch == 0 {
            bail!("the batch size must be at least 1");
        }
        if !(1..=crate::splits::MAX_BINS).contains(&self.bins) {
            bail!("the number of sample-weight bins must be 1..={}, got {}", crate::splits::MAX_BINS, self.bins);
        }
        if self.model.width_divisor == 0 {
            bail!("the width divisor must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("the learning rate must be a positive number, got {}", self.lr);
        }
        if self.closed_form && !(self.freeze_backbone && self.model.head == HeadKind::Quadratic && self.model.output == OutputKind::Regression) {
            bail!("--closed-form fits a regression model with --head quadratic on a frozen backbone (--freeze-backbone)");
        }
        Ok(())
    }
}

pub fn make_optimizer(config: &TrainConfig) -> ModuleOptimizer {
    let decay = (config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay));
    match config.optimizer {
        Optimizer::Adam => AdamConfig::new().with_weight_decay(decay).init(),
        Optimizer::Sgd => SgdConfig::new().with_momentum(Some(MomentumConfig::new().with_dampening(0.0))).with_weight_decay(decay).init(),
    }
}

/// The initial network: a `.loupe` file, ImageNet weights (`.safetensors`/`.pth`) or `random`.
fn initial_net(config: &TrainConfig, device: &Device) -> Result<(AestheticNet, bool)> {
    match config.init.as_str() {
        "random" => Ok((config.model.init(device)?, false)),
        path if path.ends_with(".loupe") => {
            let (net, metadata) = weights::decode(&std::fs::read(path).with_context(|| format!("cannot read {path}"))?, device)?;
            if metadata.model != config.model {
                bail!("{path} holds a {:?} model, but {:?} was asked for", metadata.model, config.model);
            }
            Ok((net, metadata.head_trained))
        }
        path => {
            let mut net = config.model.init(device)?;
            loupe::imagenet::import_imagenet(&mut net, Path::new(path))?;
            Ok((net, false))
        }
    }
}

/// The training labels' mean score and mean histogram (the untrained head's starting point).
fn label_means(train: &[ImageLabel]) -> (f32, [f32; HISTOGRAM_BINS]) {
    let n = train.len() as f32;
    let mut histogram = [0f32; HISTOGRAM_BINS];
    for label in train {
        for (m, p) in histogram.iter_mut().zip(label.histogram()) {
            *m += p / n;
        }
    }
    (train.iter().map(|l| l.mean()).sum::<f32>() / n, histogram)
}

pub struct TrainOutcome {
    pub net: AestheticNet,
    pub state: CheckpointState,
}

/// The training labels and their per-image sample weights (Eq. 1 on train only, or all 1).
pub fn training_set(config: &TrainConfig, labels: &Labels) -> Result<(Vec<ImageLabel>, SampleWeights)> {
    let train: Vec<ImageLabel> = match &config.splits {
        Some(dir) => {
            let splits = Splits::read(dir)?;
            let by_id: BTreeMap<u64, &ImageLabel> = labels.images.iter().map(|l| (l.id, l)).collect();
            splits.train.iter().filter_map(|id| by_id.get(id).map(|l| (*l).clone())).collect()
        }
        None => labels.images.clone(),
    };
    if train.is_empty() {
        bail!("no training images");
    }
    let scores: Vec<f32> = train.iter().map(|l| l.mean()).collect();
    Ok((train, sample_weights(&scores, config.bins, config.max_weight)))
}

/// Trains (see [`train`]), then writes the run folder's `model.loupe` and `run_report.json`.
pub fn train_and_export(config: TrainConfig, out: &Path, resume: bool, devices: Vec<Device>, feature_cache_dir: Option<&Path>) -> Result<()> {
    let outcome = train(config, out, resume, devices, feature_cache_dir)?;
    let model_path = out.join("model.loupe");
    std::fs::write(&model_path, export(&outcome.net, &outcome.state, Precision::F16, serde_json::Value::Null)?)?;
    let report = RunReport { history: &outcome.state.history, failed_images: &outcome.state.failed_images, config: &outcome.state.config };
    let report_path = out.join("run_report.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?)?;
    println!("wrote {} and {}", model_path.display(), report_path.display());
    Ok(())
}

/// A finished run's `run_report.json`.
#[derive(Serialize)]
struct RunReport<'a> {
    history: &'a [EpochRecord],
    failed_images: &'a BTreeMap<u64, String>,
    config: &'a TrainConfig,
}

/// Trains on `devices` (more than one: each batch is split across them, see
/// [`data_parallel_gradients`]); the model and optimizer live on the first.
pub fn train(config: TrainConfig, out: &Path, resume: bool, devices: Vec<Device>, feature_cache_dir: Option<&Path>) -> Result<TrainOutcome> {
    std::fs::create_dir_all(out)?;
    let checkpoints = Checkpoints::new(out);
    let previous = if resume { checkpoints.load_state()? } else { None };
    if !resume && checkpoints.load_state()?.is_some() {
        bail!("{} already holds a run: pass --resume to continue it, or choose another --out", out.display());
    }
    let config = match &previous {
        Some(state) => {
            eprintln!("resuming after epoch {} of {}", state.epochs_done, state.config.epochs);
            state.config.clone()
        }
        None => config,
    };
    config.check().with_context(|| match previous {
        Some(_) => format!("{}: the run's saved settings", checkpoints.state_path().display()),
        None => "the run's settings".into(),
    })?;
    // The closed form is one exact step: the run has one epoch, whatever --epochs says.
    let config = if config.closed_form { TrainConfig { epochs: 1, ..config } } else { config };

    let labels = Labels::read(&config.labels)?;
    for line in labels.report_bad_rows() {
        eprintln!("labels: skipped {line}");
    }
    let (train_labels, weights) = training_set(&config, &labels)?;
    let (w_min, w_max) = weights.range();
    eprintln!(
        "{} training images; sample weights {} (range {w_min:.3}..{w_max:.1})",
        train_labels.len(),
        if config.weighted { "on" } else { "off (all 1)" }
    );

    let devices: Vec<Device> = devices.into_iter().map(Device::autodiff).collect();
    for device in &devices {
        device.seed(config.seed);
    }
    let device = devices.first().context("no training device")?.clone();
    if devices.len() > 1 {
        eprintln!("data parallel on {} devices: each batch of {} is split across them", devices.len(), config.batch);
    }
    let (mut net, head_trained) = initial_net(&config, &device)?;
    let mut optimizer = make_optimizer(&config);
    let mut state = match previous {
        Some(state) => {
            let (loaded_state, loaded_net, loaded_optimizer) = checkpoints.load(state, net, optimizer)?;
            net = loaded_net;
            optimizer = loaded_optimizer;
            loaded_state
        }
        None => {
            if !head_trained {
                let (mean_score, mean_histogram) = label_means(&train_labels);
                net.centre_output(mean_score, mean_histogram);
            }
            CheckpointState {
                config: config.clone(),
                epochs_done: 0,
                plateau: Plateau::new(config.lr, config.plateau_patience),
                history: Vec::new(),
                failed_images: BTreeMap::new(),
            }
        }
    };
    if config.freeze_backbone {
        net.backbone = net.backbone.freeze();
    }

    let images = ImageFolder::new(&config.images, false);
    let features = if config.freeze_backbone {
        let cache_file = feature_cache_dir.map(|dir| FeatureCache::file_in(dir, &net, config.input));
        let refs: Vec<&ImageLabel> = train_labels.iter().collect();
        Some(FeatureCache::load_or_compute(
            &net,
            net.head.layers().statistics_region(),
            &refs,
            &images,
            config.input,
            config.batch,
            &device.clone().inner(),
            cache_file.as_deref(),
        )?)
    } else {
        None
    };
    let usable: Vec<&ImageLabel> =
        train_labels.iter().filter(|l| features.as_ref().is_none_or(|f| f.contains(l.id)) && !state.failed_images.contains_key(&l.id)).collect();
    if usable.is_empty() {
        bail!("none of the training images could be read from {}", config.images.display());
    }

    if state.epochs_done == 0 && !head_trained && net.head.layers().statistics_region().is_some() {
        standardise_statistics_head(&mut net, features.as_ref(), &usable, &images, &config, &device.clone().inner())?;
    }

    if config.closed_form && state.epochs_done == 0 {
        let cache = features.as_ref().context("the closed form needs the frozen backbone's features")?;
        fit_closed_form(&mut net, cache, &usable, &weights, &config, &mut state, &device.clone().inner())?;
        checkpoints.save(&state, &net, &optimizer)?;
    }

    for epoch in state.epochs_done + 1..=config.epochs {
        let started = std::time::Instant::now();
        let lr = state.plateau.lr;
        let mut order = usable.clone();
        SplitMix64::new(config.seed ^ (epoch as u64).wrapping_mul(0x9E37)).shuffle(&mut order);
        let bar = ProgressBar::new(order.len() as u64);
        bar.set_style(ProgressStyle::with_template("epoch {msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]")?);
        let (mut loss_sum, mut weight_sum, mut seen) = (0.0f64, 0.0f64, 0usize);
        for chunk in order.chunks(config.batch) {
            // Images are decoded here, in parallel, for all devices at once.
            let (batch, images_in_batch) = match &features {
                Some(_) => (chunk.to_vec(), Vec::new()),
                None => images.load_batch(chunk),
            };
            if batch.is_empty() {
                bar.inc(chunk.len() as u64);
                continue;
            }
            let sample_w: Vec<f32> = batch.iter().map(|l| if config.weighted { weights.weight(l.mean()) } else { 1.0 }).collect();
            let batch_weight: f64 = sample_w.iter().map(|&w| f64::from(w)).sum();
            let shards = split_into_shards(&batch, images_in_batch, &sample_w, devices.len());
            let (value, grads) = data_parallel_gradients(&net, &devices, shards, |replica: &AestheticNet, shard: Shard, device| {
                let output = match &features {
                    Some(cache) => replica.head.forward(cache.batch(&shard.labels, device)),
                    None => replica.forward(input_batch(&shard.images, config.input, device)),
                };
                let n = shard.labels.len();
                let w = Tensor::<1>::from_data(TensorData::new(shard.weights, [n]), device);
                batch_loss(config.model.output, config.histogram_loss, output, &shard.labels, w, device)
            });
            if !value.is_finite() {
                bail!("the loss became {value} in epoch {epoch}: lower --lr");
            }
            net = optimizer.step(lr, net, grads);
            loss_sum += value * batch_weight;
            weight_sum += batch_weight;
            seen += batch.len();
            bar.set_message(format!("{epoch}/{} loss {:.4} lr {lr:.0e}", config.epochs, loss_sum / weight_sum));
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        state.failed_images.extend(images.failures());
        let epoch_loss = loss_sum / weight_sum.max(f64::MIN_POSITIVE);
        state.plateau.step(epoch_loss);
        state.history.push(EpochRecord { epoch, loss: epoch_loss, lr, images: seen, seconds: started.elapsed().as_secs_f64() });
        state.epochs_done = epoch;
        checkpoints.save(&state, &net, &optimizer)?;
        eprintln!(
            "epoch {epoch}/{}: loss {epoch_loss:.5} (lr {lr:.0e}, {seen} images, {:.1}s){}",
            config.epochs,
            started.elapsed().as_secs_f64(),
            if state.plateau.lr < lr { format!("; loss plateaued: lr → {:.0e}", state.plateau.lr) } else { String::new() }
        );
    }
    if !state.failed_images.is_empty() {
        eprintln!("{} images could not be read and were skipped (listed in the run report)", state.failed_images.len());
    }
    Ok(TrainOutcome { net: net.valid(), state })
}

/// Sets a fresh statistics head's input standardisation from the training images' features (all
/// of them when cached; else the first 512, computed once here).
fn standardise_statistics_head(
    net: &mut AestheticNet,
    features: Option<&FeatureCache>,
    train: &[&ImageLabel],
    images: &ImageFolder,
    config: &TrainConfig,
    device: &Device,
) -> Result<()> {
    let (mean, std) = match features {
        Some(cache) => cache.input_moments(train, device)?,
        None => {
            let sample = &train[..train.len().min(512)];
            let region = net.head.layers().statistics_region();
            let cache = FeatureCache::load_or_compute(net, region, sample, images, config.input, config.batch, device, None)?;
            let readable: Vec<&ImageLabel> = sample.iter().copied().filter(|l| cache.contains(l.id)).collect();
            cache.input_moments(&readable, device)?
        }
    };
    let statistics = net.backbone.statistics_width();
    match net.head.layers_mut() {
        HeadLayers::Statistics(layers) => layers.standardise(statistics, &mean, &std),
        HeadLayers::Quadratic(layers) => layers.standardise(&mean[..statistics], &std[..statistics]),
        _ => {}
    }
    Ok(())
}

/// `--closed-form`: the quadratic head fitted exactly to the cached features (one step, recorded
/// as the run's only epoch).
fn fit_closed_form(
    net: &mut AestheticNet,
    cache: &FeatureCache,
    train: &[&ImageLabel],
    weights: &SampleWeights,
    config: &TrainConfig,
    state: &mut CheckpointState,
    device: &Device,
) -> Result<()> {
    let started = std::time::Instant::now();
    let HeadLayers::Quadratic(layers) = net.head.layers_mut() else { bail!("--closed-form needs --head quadratic") };
    // The head's own standardisation, on the head's device.
    let head_device = layers.input_shift.val().device();
    let mut inputs = Vec::new();
    for chunk in train.chunks(256) {
        let features = cache.batch(chunk, &head_device);
        if features.block_statistics.is_none() {
            bail!("the feature cache holds no block statistics");
        }
        inputs.extend(values(layers.inputs(features))?);
    }
    let width = inputs.len() / train.len().max(1);
    let y: Vec<f32> = train.iter().map(|l| l.mean()).collect();
    let sample_w: Vec<f32> = train.iter().map(|l| if config.weighted { weights.weight(l.mean()) } else { 1.0 }).collect();
    eprintln!("closed form: weighted kernel ridge over {} images, {width} inputs, ridge {}", train.len(), config.ridge);
    let loss = crate::kernel_ridge::fit_quadratic_head(layers, &inputs, &y, &sample_w, config.ridge, device)?;
    state.history.push(EpochRecord { epoch: 1, loss, lr: 0.0, images: train.len(), seconds: started.elapsed().as_secs_f64() });
    // Records the loss as the best so far (an untouched plateau holds an infinity, which JSON
    // checkpoints cannot store).
    state.plateau.step(loss);
    state.epochs_done = 1;
    eprintln!("closed form: training loss {loss:.5} ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(())
}

fn batch_loss(
    output_kind: OutputKind,
    histogram_loss: HistogramLoss,
    output: Tensor<2>,
    batch: &[&ImageLabel],
    weights: Tensor<1>,
    device: &Device,
) -> Tensor<1> {
    let n = batch.len();
    match output_kind {
        OutputKind::Regression => {
            let target: Vec<f32> = batch.iter().map(|l| l.mean()).collect();
            let target = Tensor::<1>::from_data(TensorData::new(target, [n]), device);
            weighted_mse(output.reshape([n]), target, weights)
        }
        OutputKind::Histogram => {
            let target: Vec<f32> = batch.iter().flat_map(|l| l.histogram()).collect();
            let target = Tensor::<2>::from_data(TensorData::new(target, [n, HISTOGRAM_BINS]), device);
            match histogram_loss {
                HistogramLoss::ChiSquare => weighted_chi_square(output, target, weights),
                HistogramLoss::Emd => weighted_emd(output, target, weights),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: crate::args::TrainArgs,
    }

    #[test]
    fn resumed_settings_with_a_zero_batch_or_impossible_bins_are_refused_not_a_panic() {
        let args = ["train", "--labels", "l.txt", "--images", "i", "--out", "o", "--init", "random"];
        let config = Cli::parse_from(args).train.config().unwrap();
        assert!(config.check().is_ok());
        let refused = |config: TrainConfig| config.check().unwrap_err().to_string();
        assert!(refused(TrainConfig { batch: 0, ..config.clone() }).contains("batch size"));
        assert!(refused(TrainConfig { bins: 0, ..config.clone() }).contains("bins must be 1..=100000, got 0"));
        assert!(refused(TrainConfig { bins: 1_000_000_000_000_000, ..config.clone() }).contains("bins"));
        assert!(refused(TrainConfig { lr: f64::NAN, ..config.clone() }).contains("learning rate"));
        let model = config.model.with_width_divisor(0);
        assert!(refused(TrainConfig { model, ..config }).contains("width divisor"));
    }
}
