//! `loupe train`: the paper's fine-tuning (Sec. 4.2) with the weighted losses, on any device.
//!
//! Whole image → 224x224, no crop, no augmentation; ImageNet init; LR divided by 10 when the
//! training loss stops decreasing ([`Plateau`]); a checkpoint after every epoch, so `--resume`
//! after a crash or `kill -9` loses no finished epoch. `--freeze-backbone` computes the VGG16
//! features once and trains only the head (practical on a CPU).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use loupe::crop::SplitMix64;
use loupe::model::heads::StatisticsLayers;
use loupe::model::{AestheticNet, BackboneFeatures, HeadKind, HeadLayers, ModelConfig, OutputKind};
use loupe::preprocess::{InputConvention, input_batch};
use loupe::weights::{self, Precision, WeightMetadata};
use serde::{Deserialize, Serialize};

use crate::data::ImageFolder;
use crate::labels::{ImageLabel, Labels};
use crate::losses::{weighted_chi_square, weighted_emd, weighted_mse};
use crate::splits::{PAPER_BINS, SampleWeights, Splits, sample_weights, shuffle};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HistogramLoss {
    /// Weighted chi-square distance (the paper, Eq. 3).
    ChiSquare,
    /// NIMA's earth mover's distance, to compare.
    Emd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Adam,
    Sgd,
}

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
    pub fn check(&self) -> Result<()> {
        if self.closed_form
            && !(self.freeze_backbone && self.model.head == HeadKind::Quadratic && self.model.output == OutputKind::Regression)
        {
            bail!("--closed-form fits a regression model with --head quadratic on a frozen backbone (--freeze-backbone)");
        }
        Ok(())
    }
}

/// What a finished epoch leaves behind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub images: usize,
    pub seconds: f64,
}

/// "LR divided by 10 when the training loss stops decreasing" — burn has no plateau scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub lr: f64,
    pub best_loss: f64,
    pub epochs_without_improvement: usize,
    pub patience: usize,
}

impl Plateau {
    pub fn new(lr: f64, patience: usize) -> Self {
        Self { lr, best_loss: f64::INFINITY, epochs_without_improvement: 0, patience: patience.max(1) }
    }

    /// Record an epoch's training loss; returns the learning rate for the next epoch.
    pub fn step(&mut self, loss: f64) -> f64 {
        // "Decreasing" means by more than noise: 0.1% relative.
        if loss < self.best_loss * (1.0 - 1e-3) {
            self.best_loss = loss;
            self.epochs_without_improvement = 0;
        } else {
            self.epochs_without_improvement += 1;
            if self.epochs_without_improvement >= self.patience {
                self.lr /= 10.0;
                self.epochs_without_improvement = 0;
            }
        }
        self.lr
    }
}

/// `<out>/checkpoint/state.json`: the last COMPLETE epoch and where its files are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    pub config: TrainConfig,
    pub epochs_done: usize,
    pub plateau: Plateau,
    pub history: Vec<EpochRecord>,
    pub failed_images: BTreeMap<u64, String>,
}

pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn new(out: &Path) -> Self {
        Self { dir: out.join("checkpoint") }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn epoch_dir(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch-{epoch:03}"))
    }

    pub fn load_state(&self) -> Result<Option<CheckpointState>> {
        let path = self.state_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)?;
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()))?))
    }

    /// Model and optimizer of the last complete epoch.
    pub fn load(&self, state: &CheckpointState, net: AestheticNet, optimizer: ModuleOptimizer) -> Result<(AestheticNet, ModuleOptimizer)> {
        let dir = self.epoch_dir(state.epochs_done);
        let net = net
            .try_load_file(dir.join("model.bpk"))
            .map_err(|e| anyhow::anyhow!("checkpoint model: {e:?}"))?;
        let optimizer = optimizer
            .load(dir.join("optimizer.bpk"))
            .map_err(|e| anyhow::anyhow!("checkpoint optimizer: {e:?}"))?;
        Ok((net, optimizer))
    }

    /// Write the epoch's files first, then switch `state.json` to them with an atomic rename: a
    /// kill at any moment leaves the previous complete epoch loadable.
    pub fn save(&self, state: &CheckpointState, net: &AestheticNet, optimizer: &ModuleOptimizer) -> Result<()> {
        let dir = self.epoch_dir(state.epochs_done);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        net.clone().save_file(dir.join("model.bpk")).map_err(|e| anyhow::anyhow!("saving the model: {e:?}"))?;
        optimizer.save(dir.join("optimizer.bpk")).map_err(|e| anyhow::anyhow!("saving the optimizer: {e:?}"))?;
        let temporary = self.dir.join("state.json.tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(state)?)?;
        std::fs::rename(&temporary, self.state_path())?;
        // Older epochs are no longer needed.
        if state.epochs_done >= 2 {
            let _ = std::fs::remove_dir_all(self.epoch_dir(state.epochs_done - 2));
        }
        Ok(())
    }
}

pub fn make_optimizer(config: &TrainConfig) -> ModuleOptimizer {
    let decay = (config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay));
    match config.optimizer {
        Optimizer::Adam => AdamConfig::new().with_weight_decay(decay).init(),
        Optimizer::Sgd => SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_dampening(0.0)))
            .with_weight_decay(decay)
            .init(),
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
fn label_means(train: &[ImageLabel]) -> (f32, [f32; 10]) {
    let n = train.len() as f32;
    let mut histogram = [0f32; 10];
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

/// Identifies a backbone's weights (and input convention) for the feature cache.
pub fn backbone_key(net: &AestheticNet, input: InputConvention) -> String {
    let id = weights::backbone_id(net).unwrap_or_else(|_| "vgg16-unknown".into());
    format!("{id}-{input:?}").to_lowercase()
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
    config.check()?;
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
            let (loaded_net, loaded_optimizer) = checkpoints.load(&state, net, optimizer)?;
            net = loaded_net;
            optimizer = loaded_optimizer;
            state
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
        let cache_file = feature_cache_dir.map(|dir| dir.join(format!("{}.features", backbone_key(&net, config.input))));
        let refs: Vec<&ImageLabel> = train_labels.iter().collect();
        let with_statistics = net.head.layers().reads_block_statistics();
        Some(FeatureCache::load_or_compute(&net, with_statistics, &refs, &images, config.input, config.batch, &device.clone().inner(), cache_file.as_deref())?)
    } else {
        None
    };
    let usable: Vec<&ImageLabel> = train_labels
        .iter()
        .filter(|l| features.as_ref().is_none_or(|f| f.contains(l.id)) && !state.failed_images.contains_key(&l.id))
        .collect();
    if usable.is_empty() {
        bail!("none of the training images could be read from {}", config.images.display());
    }

    if state.epochs_done == 0 && !head_trained && net.head.layers().reads_block_statistics() {
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
        shuffle(&mut order, &mut SplitMix64::new(config.seed ^ (epoch as u64).wrapping_mul(0x9E37)));
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
            let sample_w: Vec<f32> =
                batch.iter().map(|l| if config.weighted { weights.weight(l.mean()) } else { 1.0 }).collect();
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
            let cache = FeatureCache::load_or_compute(net, true, sample, images, config.input, config.batch, device, None)?;
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
        inputs.extend(tensor_values(layers.inputs(features))?);
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

/// One device's part of a batch.
struct Shard<'a> {
    labels: Vec<&'a ImageLabel>,
    /// Decoded images, or none when the features come from the cache.
    images: Vec<RgbImage>,
    /// Sample weights (Eq. 1) of `labels`.
    weights: Vec<f32>,
}

/// Splits a batch into up to `parts` contiguous shards, each with its share of the batch's total
/// sample weight (the factor its weighted-mean loss gets, so the shards add up to the batch's loss).
fn split_into_shards<'a>(labels: &[&'a ImageLabel], images: Vec<RgbImage>, weights: &[f32], parts: usize) -> Vec<(Shard<'a>, f64)> {
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let size = labels.len().div_ceil(parts.max(1));
    let mut images = images.into_iter();
    labels
        .chunks(size)
        .zip(weights.chunks(size))
        .map(|(labels, weights)| {
            let shard_images: Vec<RgbImage> = images.by_ref().take(labels.len()).collect();
            let share = weights.iter().map(|&w| f64::from(w)).sum::<f64>() / total;
            (Shard { labels: labels.to_vec(), images: shard_images, weights: weights.to_vec() }, share)
        })
        .collect()
}

/// Data parallelism: shard k runs on a replica of `net` forked to `devices[k]` (its own thread),
/// its loss — a weighted mean over the shard — is scaled by the shard's `share` of the batch's
/// sample weight, and the gradients are summed on the first device (where `net` lives). The sum
/// equals the whole batch's gradient on one device. Returns the batch loss and that gradient.
/// burn-train's multi-device strategy does the same with burn's `GradientsAccumulator`; Loupe
/// keeps its own loop for the plateau schedule, checkpoints and feature cache.
pub fn data_parallel_gradients<M, S, F>(net: &M, devices: &[Device], shards: Vec<(S, f64)>, shard_loss: F) -> (f64, GradientsParams)
where
    M: Module,
    S: Send,
    F: Fn(&M, S, &Device) -> Tensor<1> + Sync,
{
    let step = |replica: &M, shard: S, share: f64, device: &Device| {
        let loss = shard_loss(replica, shard, device);
        let value = f64::from(loss.clone().into_scalar::<f32>()) * share;
        let grads = GradientsParams::from_grads(loss.mul_scalar(share).backward(), replica);
        (value, grads.to_device(&devices[0], replica))
    };
    let results: Vec<(f64, GradientsParams)> = if devices.len() == 1 {
        // One device: the model itself, on this thread (no replica, no thread).
        shards.into_iter().map(|(shard, share)| step(net, shard, share, &devices[0])).collect()
    } else {
        std::thread::scope(|scope| {
            let step = &step;
            let workers: Vec<_> = shards
                .into_iter()
                .zip(devices)
                .map(|((shard, share), device)| {
                    let replica = net.clone().fork(device);
                    scope.spawn(move || step(&replica, shard, share, device))
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("a training thread panicked")).collect()
        })
    };
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut loss = 0.0;
    for (value, grads) in results {
        loss += value;
        accumulator.accumulate(net, grads);
    }
    (loss, accumulator.grads())
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
            let target = Tensor::<2>::from_data(TensorData::new(target, [n, 10]), device);
            match histogram_loss {
                HistogramLoss::ChiSquare => weighted_chi_square(output, target, weights),
                HistogramLoss::Emd => weighted_emd(output, target, weights),
            }
        }
    }
}

/// Backbone features of every training image, computed once (frozen-backbone training): the 7x7
/// map and, for heads that read them, the block statistics — one file each, so a cache of maps
/// made for one head serves the others.
pub struct FeatureCache {
    map: CachedRows,
    statistics: Option<CachedRows>,
}

/// One feature per image id, all of one shape.
#[derive(Default)]
struct CachedRows {
    rows: BTreeMap<u64, Vec<f32>>,
    shape: [usize; 3],
}

impl CachedRows {
    /// The rows in `path`, or none when it is missing or unreadable (then they are recomputed).
    fn read_or_empty(path: Option<&Path>) -> Self {
        match path {
            Some(path) if path.exists() => Self::read(path).unwrap_or_else(|e| {
                eprintln!("feature cache {} unreadable ({e}); recomputing", path.display());
                Self::default()
            }),
            _ => Self::default(),
        }
    }

    /// `[c, h, w]` u32 LE, then per image: id u64 LE and c·h·w f32 LE.
    fn write(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temporary = path.with_extension("tmp");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
        for d in self.shape {
            file.write_all(&(d as u32).to_le_bytes())?;
        }
        for (id, row) in &self.rows {
            file.write_all(&id.to_le_bytes())?;
            for v in row {
                file.write_all(&v.to_le_bytes())?;
            }
        }
        file.flush()?;
        drop(file);
        std::fs::rename(&temporary, path)?;
        Ok(())
    }

    fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)?;
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        if bytes.len() < 12 {
            bail!("too short");
        }
        let shape = [u32_at(0), u32_at(4), u32_at(8)];
        let row = shape.iter().product::<usize>();
        let record = 8 + 4 * row;
        if row == 0 || (bytes.len() - 12) % record != 0 {
            bail!("truncated");
        }
        let rows = bytes[12..]
            .chunks_exact(record)
            .map(|r| {
                let id = u64::from_le_bytes(r[..8].try_into().unwrap());
                (id, r[8..].chunks_exact(4).map(|f| f32::from_le_bytes(f.try_into().unwrap())).collect())
            })
            .collect();
        Ok(Self { rows, shape })
    }

    fn insert(&mut self, ids: &[u64], values: Vec<f32>, shape: [usize; 3]) {
        self.shape = shape;
        for (id, row) in ids.iter().zip(values.chunks_exact(shape.iter().product())) {
            self.rows.insert(*id, row.to_vec());
        }
    }

    fn batch(&self, labels: &[&ImageLabel]) -> Vec<f32> {
        labels.iter().flat_map(|l| self.rows[&l.id].iter().copied()).collect()
    }
}

fn tensor_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor.into_data().try_into_vec_as::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))
}

impl FeatureCache {
    /// Features from `cache_file` (the maps; the statistics beside it, `…-statistics.features`)
    /// when it holds every image, else computed (and the files written).
    #[allow(clippy::too_many_arguments)]
    pub fn load_or_compute(
        net: &AestheticNet,
        with_statistics: bool,
        labels: &[&ImageLabel],
        images: &ImageFolder,
        input: InputConvention,
        batch: usize,
        device: &Device,
        cache_file: Option<&Path>,
    ) -> Result<Self> {
        let statistics_file = cache_file.map(|path| {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            path.with_file_name(format!("{stem}-statistics.features"))
        });
        let mut cached = Self {
            map: CachedRows::read_or_empty(cache_file),
            statistics: with_statistics.then(|| CachedRows::read_or_empty(statistics_file.as_deref())),
        };
        let missing: Vec<&ImageLabel> = labels.iter().copied().filter(|l| !cached.contains(l.id)).collect();
        if missing.is_empty() {
            eprintln!("backbone features: all {} from the cache", labels.len());
            return Ok(cached);
        }
        let mut backbone = net.backbone.valid().to_device(device);
        backbone.prepare_for(device);
        let mut progress = crate::data::Progress::new("backbone features", missing.len());
        for chunk in missing.chunks(batch.max(1)) {
            let (loaded, inputs) = images.load_batch(chunk);
            progress.inc(chunk.len());
            if loaded.is_empty() {
                continue;
            }
            let ids: Vec<u64> = loaded.iter().map(|l| l.id).collect();
            let features = backbone.forward_features(input_batch(&inputs, input, device), with_statistics);
            let [_, c, h, w] = features.map.dims();
            cached.map.insert(&ids, tensor_values(features.map)?, [c, h, w]);
            if let (Some(rows), Some(statistics)) = (cached.statistics.as_mut(), features.block_statistics) {
                let width = statistics.dims()[1];
                rows.insert(&ids, tensor_values(statistics)?, [width, 1, 1]);
            }
        }
        progress.finish();
        if let Some(path) = cache_file {
            cached.map.write(path)?;
        }
        if let (Some(rows), Some(path)) = (&cached.statistics, &statistics_file) {
            rows.write(path)?;
        }
        Ok(cached)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.map.rows.contains_key(&id) && self.statistics.as_ref().is_none_or(|s| s.rows.contains_key(&id))
    }

    /// The cached features of `labels`, as the head reads them.
    pub fn batch(&self, labels: &[&ImageLabel], device: &Device) -> BackboneFeatures {
        let [c, h, w] = self.map.shape;
        let map = Tensor::from_data(TensorData::new(self.map.batch(labels), [labels.len(), c, h, w]), device);
        let block_statistics = self.statistics.as_ref().map(|rows| {
            Tensor::from_data(TensorData::new(rows.batch(labels), [labels.len(), rows.shape[0]]), device)
        });
        BackboneFeatures { map, block_statistics }
    }

    /// Per-input mean and standard deviation of the statistics head's transformed inputs over
    /// `labels` (its standardisation).
    pub fn input_moments(&self, labels: &[&ImageLabel], device: &Device) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut sum: Vec<f64> = Vec::new();
        let mut sum_of_squares: Vec<f64> = Vec::new();
        for chunk in labels.chunks(256) {
            let values = tensor_values(StatisticsLayers::transformed_inputs(self.batch(chunk, device)))?;
            let width = values.len() / chunk.len();
            sum.resize(width, 0.0);
            sum_of_squares.resize(width, 0.0);
            for row in values.chunks_exact(width) {
                for (i, &v) in row.iter().enumerate() {
                    sum[i] += f64::from(v);
                    sum_of_squares[i] += f64::from(v) * f64::from(v);
                }
            }
        }
        let n = labels.len().max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std = sum.iter().zip(&sum_of_squares).map(|(s, q)| ((q / n - (s / n).powi(2)).max(0.0)).sqrt() as f32).collect();
        Ok((mean, std))
    }
}

/// The trained network as a Loupe weight file, its metadata saying how it was made.
pub fn export(net: &AestheticNet, state: &CheckpointState, precision: Precision, metrics: serde_json::Value) -> Result<Vec<u8>> {
    let config = &state.config;
    let mut metadata = WeightMetadata::new(config.model, config.input);
    metadata.precision = precision;
    metadata.head_trained = true;
    metadata.provenance = format!(
        "trained by `loupe train` from {} on {} ({} epochs{})",
        config.init,
        config.labels.display(),
        state.epochs_done,
        if config.freeze_backbone { ", frozen backbone" } else { "" }
    );
    metadata.licence = "VGG16 ImageNet weights by the Oxford Visual Geometry Group (Simonyan & Zisserman), CC BY 4.0".into();
    let last = state.history.last().cloned().unwrap_or_default();
    metadata.training = serde_json::json!({
        "labels": config.labels,
        "splits": config.splits,
        "train_images": last.images,
        "epochs": state.epochs_done,
        "sample_weights": if config.weighted { format!("Eq. 1, {} bins", config.bins) } else { "none".into() },
        "max_weight": config.max_weight,
        "loss": match (config.model.output, config.histogram_loss) {
            (OutputKind::Regression, _) => if config.weighted { "WMSE (Eq. 2)" } else { "MSE" },
            (OutputKind::Histogram, HistogramLoss::ChiSquare) => if config.weighted { "weighted chi-square (Eq. 3)" } else { "chi-square" },
            (OutputKind::Histogram, HistogramLoss::Emd) => "EMD",
        },
        "optimizer": if config.closed_form { serde_json::json!(format!("closed form (weighted kernel ridge, degree 2, ridge {})", config.ridge)) } else { serde_json::json!(config.optimizer) },
        "lr": config.lr,
        "batch": config.batch,
        "freeze_backbone": config.freeze_backbone,
        "seed": config.seed,
        "final_loss": last.loss,
        "failed_images": state.failed_images.len(),
    });
    metadata.metrics = metrics;
    Ok(weights::encode(net, &metadata)?)
}

/// Defaults used by `loupe train` (kept together so the CLI and the tests agree).
pub fn default_config(labels: PathBuf, images: PathBuf, output: OutputKind, head: HeadKind) -> TrainConfig {
    TrainConfig {
        labels,
        images,
        splits: None,
        model: ModelConfig::new(output, head),
        input: InputConvention::CaffeBgr,
        init: "random".into(),
        weighted: true,
        bins: PAPER_BINS,
        max_weight: None,
        histogram_loss: HistogramLoss::ChiSquare,
        optimizer: Optimizer::Adam,
        weight_decay: 0.0,
        epochs: 20,
        lr: 1e-5,
        batch: 16,
        freeze_backbone: false,
        plateau_patience: 1,
        seed: 0,
        closed_form: false,
        ridge: default_ridge(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    /// 8 images with different scores and sample weights; a linear model on 3 made-up features.
    fn batch() -> (Vec<ImageLabel>, Vec<f32>) {
        let labels = (0..8u64)
            .map(|id| {
                let mut counts = [0; 10];
                counts[id as usize % 6 + 2] = 3;
                counts[5] = 1;
                ImageLabel { id, counts }
            })
            .collect();
        (labels, vec![1.0, 4.0, 0.5, 2.0, 9.0, 1.0, 3.0, 0.25])
    }

    fn shard_loss(model: &Linear, shard: Shard, device: &Device) -> Tensor<1> {
        let n = shard.labels.len();
        let x: Vec<f32> = shard.labels.iter().flat_map(|l| [l.id as f32, (l.id * l.id) as f32 / 10.0, 1.0]).collect();
        let y: Vec<f32> = shard.labels.iter().map(|l| l.mean()).collect();
        let predicted = model.forward(Tensor::<2>::from_data(TensorData::new(x, [n, 3]), device)).reshape([n]);
        let target = Tensor::<1>::from_data(TensorData::new(y, [n]), device);
        weighted_mse(predicted, target, Tensor::from_data(TensorData::new(shard.weights, [n]), device))
    }

    #[test]
    fn a_batch_split_across_devices_gives_the_whole_batch_gradient() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let model: Linear = LinearConfig::new(3, 1).init(&device);
        let (labels, weights) = batch();
        let refs: Vec<&ImageLabel> = labels.iter().collect();

        let one = split_into_shards(&refs, Vec::new(), &weights, 1);
        assert_eq!(one.len(), 1);
        let (loss_one, grads_one) = data_parallel_gradients(&model, &[device.clone()], one, shard_loss);

        // Three devices (all flex here; GPUs in real use): shards of 3, 3 and 2 images, each
        // weighted by its share of the batch's sample weight, computed on three threads.
        let three = split_into_shards(&refs, Vec::new(), &weights, 3);
        assert_eq!(three.iter().map(|(s, _)| s.labels.len()).collect::<Vec<_>>(), vec![3, 3, 2]);
        let shares: f64 = three.iter().map(|(_, share)| share).sum();
        assert!((shares - 1.0).abs() < 1e-9);
        assert!((three[1].1 - 12.0 / 20.75).abs() < 1e-9, "the middle shard holds 12 of 20.75 weight");
        let devices = vec![device.clone(), device.clone(), device.clone()];
        let (loss_three, grads_three) = data_parallel_gradients(&model, &devices, three, shard_loss);

        assert!((loss_one - loss_three).abs() < 1e-4 * loss_one, "loss {loss_one} vs {loss_three}");
        let weight_one = grads_one.get::<2>(model.weight.id).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let weight_three = grads_three.get::<2>(model.weight.id).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let bias_id = model.bias.as_ref().unwrap().id;
        let bias_one = grads_one.get::<1>(bias_id).unwrap().into_data().try_to_vec::<f32>().unwrap();
        let bias_three = grads_three.get::<1>(bias_id).unwrap().into_data().try_to_vec::<f32>().unwrap();
        for (a, b) in weight_one.iter().chain(&bias_one).zip(weight_three.iter().chain(&bias_three)) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "gradient {a} vs {b}");
        }
        // Not trivially equal: the gradient is not zero.
        assert!(weight_one.iter().any(|g| g.abs() > 1e-3));
    }
}
