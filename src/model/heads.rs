//! The heads that turn the backbone's features (its 7x7 map and every block's channel
//! statistics, [`BackboneFeatures`]) into the paper's outputs.
//!
//! Four layer stacks ([`HeadLayers`]):
//! - `Paper`: VGG16's own classifier (fc6 4096 → fc7 4096 → output, ReLU + dropout 0.5), laid out
//!   like torchvision's `classifier` so ImageNet fc6/fc7 weights load by name.
//! - `Compact`: a 1x1 convolution that keeps the 7x7 spatial layout (composition matters for
//!   aesthetics) followed by a small MLP; under 1M parameters, for the browser.
//! - `Statistics`: a linear read-out over every block's channel statistics and the 7x7 map
//!   ([`StatisticsLayers`]); 28k parameters as a regression head.
//! - `Quadratic`: a second-order read-out over the block statistics alone: linear terms plus a
//!   low-rank sum of squared projections ([`QuadraticLayers`]); 50k parameters as a regression head.
//!
//! Two outputs, as in the paper: [`RegressionHead`] (one score, no activation, Sec. 3.2) and
//! [`HistogramHead`] (10 bins, softmax, Sec. 3.3).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use super::vgg16::{BackboneFeatures, FEATURE_MAP_SIZE, StatisticsRegion, scaled_channels};

pub const HISTOGRAM_BINS: usize = 10;
const FC_WIDTH: usize = 4096;
// The compact head: 64 channels x 7x7 cells → 128 hidden → output (≈0.44M parameters, 0.9 MB in
// f16), so the browser's download (29.4 MB backbone + two heads) stays under 32 MB.
const COMPACT_REDUCED_CHANNELS: usize = 64;
const COMPACT_HIDDEN: usize = 128;
const COMPACT_INPUT_SCALE: f64 = 1.0 / 16.0;
const DROPOUT: f64 = 0.5;
// The statistics head's two input groups, weighted as a ridge regression on the distillation set
// preferred them (its figures: weights/MODEL_CARD.md): the statistics count fully, the 7x7 map at
// 0.3 — each group's standardised inputs share that much variance.
const STATISTICS_GROUP_WEIGHT: f32 = 1.0;
const MAP_GROUP_WEIGHT: f32 = 0.3;
/// Squared projections in the quadratic head. A degree-2 kernel ridge regression on the
/// distillation set keeps its accuracy truncated to anywhere from 8 to 128 of them (figures:
/// weights/MODEL_CARD.md); 16 costs 47k parameters.
pub const QUADRATIC_RANK: usize = 16;

/// torchvision's `classifier` entries (indices 0..=6).
#[derive(Module, Debug)]
pub enum ClassifierLayer {
    Linear(Linear),
    Relu(Relu),
    Dropout(Dropout),
}

/// VGG16's classifier with its last layer sized for our output.
#[derive(Module, Debug)]
pub struct PaperLayers {
    pub classifier: Vec<ClassifierLayer>,
}

impl PaperLayers {
    fn new(in_features: usize, width_divisor: usize, outputs: usize, device: &Device) -> Self {
        let fc = scaled_channels(FC_WIDTH, width_divisor);
        let classifier = vec![
            ClassifierLayer::Linear(LinearConfig::new(in_features, fc).init(device)),
            ClassifierLayer::Relu(Relu::new()),
            ClassifierLayer::Dropout(DropoutConfig::new(DROPOUT).init()),
            ClassifierLayer::Linear(LinearConfig::new(fc, fc).init(device)),
            ClassifierLayer::Relu(Relu::new()),
            ClassifierLayer::Dropout(DropoutConfig::new(DROPOUT).init()),
            ClassifierLayer::Linear(LinearConfig::new(fc, outputs).init(device)),
        ];
        Self { classifier }
    }

    fn forward(&self, features: Tensor<4>) -> Tensor<2> {
        let mut x = features.flatten(1, 3);
        for layer in &self.classifier {
            x = match layer {
                ClassifierLayer::Linear(linear) => linear.forward(x),
                ClassifierLayer::Relu(relu) => relu.forward(x),
                ClassifierLayer::Dropout(dropout) => dropout.forward(x),
            };
        }
        x
    }
}

/// 1x1 conv (keeps the 7x7 layout) → flatten → hidden → dropout → output.
#[derive(Module, Debug)]
pub struct CompactLayers {
    pub reduce: Conv2d,
    pub hidden: Linear,
    pub dropout: Dropout,
    pub output: Linear,
    pub relu: Relu,
}

impl CompactLayers {
    fn new(in_channels: usize, width_divisor: usize, outputs: usize, device: &Device) -> Self {
        let reduced = scaled_channels(COMPACT_REDUCED_CHANNELS, width_divisor);
        let hidden = scaled_channels(COMPACT_HIDDEN, width_divisor);
        let cells = FEATURE_MAP_SIZE * FEATURE_MAP_SIZE;
        Self {
            reduce: Conv2dConfig::new([in_channels, reduced], [1, 1]).init(device),
            hidden: LinearConfig::new(reduced * cells, hidden).init(device),
            dropout: DropoutConfig::new(DROPOUT).init(),
            output: LinearConfig::new(hidden, outputs).init(device),
            relu: Relu::new(),
        }
    }

    fn forward(&self, features: Tensor<4>) -> Tensor<2> {
        // VGG16's pool5 activations (Caffe input range) are far above unit scale; brought near it,
        // the head's initialisation and learning rate fit them.
        let features = features.mul_scalar(COMPACT_INPUT_SCALE);
        let x = self.relu.forward(self.reduce.forward(features)).flatten(1, 3);
        let x = self.dropout.forward(self.relu.forward(self.hidden.forward(x)));
        self.output.forward(x)
    }
}

/// A linear read-out over [`BackboneFeatures::block_statistics`] and the flattened 7x7 map. Each
/// input goes through √(x + 1) (ReLU activations are heavy-tailed; the +1 keeps the gradient
/// finite at 0), then is standardised with the training set's mean and spread and weighted by its
/// group ([`StatisticsLayers::standardise`], set by the trainer; not trained). With weight decay
/// this is a ridge regression on those features — trained by the paper's losses.
#[derive(Module, Debug)]
pub struct StatisticsLayers {
    pub input_shift: Param<Tensor<1>>,
    pub input_scale: Param<Tensor<1>>,
    pub output: Linear,
    /// What the statistics are taken over (from the model's config, not a parameter).
    #[module(skip)]
    pub region: StatisticsRegion,
}

impl StatisticsLayers {
    fn new(statistics: usize, map_features: usize, outputs: usize, region: StatisticsRegion, device: &Device) -> Self {
        let scale = Self::group_weights(statistics, map_features);
        let inputs = scale.len();
        Self {
            input_shift: Self::constant(vec![0.0; inputs], device),
            input_scale: Self::constant(scale, device),
            output: LinearConfig::new(inputs, outputs).init(device),
            region,
        }
    }

    /// √(weight / inputs in the group) per input: each group's inputs together carry its weight.
    fn group_weights(statistics: usize, map_features: usize) -> Vec<f32> {
        let per = |weight: f32, count: usize| (weight / count.max(1) as f32).sqrt();
        let mut scale = vec![per(STATISTICS_GROUP_WEIGHT, statistics); statistics];
        scale.extend(vec![per(MAP_GROUP_WEIGHT, map_features); map_features]);
        scale
    }

    fn constant(values: Vec<f32>, device: &Device) -> Param<Tensor<1>> {
        let n = values.len();
        Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), device)).set_require_grad(false)
    }

    /// The inputs before standardisation: √(x + 1) of `[statistics, map]`, `[N, inputs]`.
    pub fn transformed_inputs(features: BackboneFeatures) -> Tensor<2> {
        let statistics = features.block_statistics.expect("the statistics head gets block statistics");
        let map = features.map.flatten::<2>(1, 3);
        Tensor::cat(vec![statistics, map], 1).add_scalar(1.0).sqrt()
    }

    /// Sets the standardisation from the transformed inputs' per-input `mean` and `std` over
    /// the training set; the first `statistics` inputs are the block statistics.
    pub fn standardise(&mut self, statistics: usize, mean: &[f32], std: &[f32]) {
        let device = self.input_shift.val().device();
        let weights = Self::group_weights(statistics, mean.len().saturating_sub(statistics));
        // A (nearly) constant input is scaled by at most w / 0.001 rather than blown up.
        let scale: Vec<f32> = weights.iter().zip(std).map(|(w, s)| w / s.max(1e-3)).collect();
        self.input_shift = Self::constant(mean.to_vec(), &device);
        self.input_scale = Self::constant(scale, &device);
    }

    fn forward(&self, features: BackboneFeatures) -> Tensor<2> {
        let x = Self::transformed_inputs(features);
        // Detached: the standardisation is never trained, whatever a reloaded checkpoint's
        // parameters say about gradients.
        let x = (x - self.input_shift.val().detach().unsqueeze()) * self.input_scale.val().detach().unsqueeze();
        self.output.forward(x)
    }
}

/// A second-order read-out over the block statistics:
/// `out = linear(x) + squares(projection(x)²)`, with `x` the statistics through √(x + 1),
/// standardised on the training set (not trained) and scaled by 1/√inputs. Second-order terms
/// let texture, sharpness and exposure cues interact, which a linear read-out cannot (on the
/// distillation set the quadratic read-out is the more accurate: weights/MODEL_CARD.md).
/// Trainable by gradient descent like any head; for a weighted-MSE regression on a frozen
/// backbone the trainer also fits it in closed form (weighted kernel ridge, `--closed-form`).
#[derive(Module, Debug)]
pub struct QuadraticLayers {
    pub input_shift: Param<Tensor<1>>,
    pub input_scale: Param<Tensor<1>>,
    pub linear: Linear,
    /// `[inputs, rank]`, no bias.
    pub projection: Linear,
    /// `[rank, outputs]`, no bias: each squared projection's signed weight per output.
    pub squares: Linear,
    /// What the statistics are taken over (from the model's config, not a parameter).
    #[module(skip)]
    pub region: StatisticsRegion,
}

impl QuadraticLayers {
    fn new(statistics: usize, outputs: usize, region: StatisticsRegion, device: &Device) -> Self {
        let scale = (1.0 / statistics.max(1) as f32).sqrt();
        Self {
            input_shift: StatisticsLayers::constant(vec![0.0; statistics], device),
            input_scale: StatisticsLayers::constant(vec![scale; statistics], device),
            linear: LinearConfig::new(statistics, outputs).init(device),
            projection: LinearConfig::new(statistics, QUADRATIC_RANK).with_bias(false).init(device),
            squares: LinearConfig::new(QUADRATIC_RANK, outputs).with_bias(false).init(device),
            region,
        }
    }

    /// Sets the standardisation from the transformed statistics' per-input `mean` and `std` over
    /// the training set.
    pub fn standardise(&mut self, mean: &[f32], std: &[f32]) {
        let device = self.input_shift.val().device();
        let weight = (1.0 / mean.len().max(1) as f32).sqrt();
        let scale: Vec<f32> = std.iter().map(|s| weight / s.max(1e-3)).collect();
        self.input_shift = StatisticsLayers::constant(mean.to_vec(), &device);
        self.input_scale = StatisticsLayers::constant(scale, &device);
    }

    /// The standardised inputs `x`, `[N, inputs]`.
    pub fn inputs(&self, features: BackboneFeatures) -> Tensor<2> {
        let statistics = features.block_statistics.expect("the quadratic head gets block statistics");
        let x = statistics.add_scalar(1.0).sqrt();
        (x - self.input_shift.val().detach().unsqueeze()) * self.input_scale.val().detach().unsqueeze()
    }

    fn forward(&self, features: BackboneFeatures) -> Tensor<2> {
        let x = self.inputs(features);
        let projected = self.projection.forward(x.clone());
        self.linear.forward(x) + self.squares.forward(projected.clone() * projected)
    }
}

#[derive(Module, Debug)]
pub enum HeadLayers {
    Paper(PaperLayers),
    Compact(CompactLayers),
    Statistics(StatisticsLayers),
    Quadratic(QuadraticLayers),
}

impl HeadLayers {
    /// `statistics`: the width of the backbone's block statistics, and `region` what they are
    /// taken over (both for `Statistics` and `Quadratic`, the heads that read them).
    pub fn new(
        kind: super::HeadKind,
        in_channels: usize,
        (statistics, region): (usize, StatisticsRegion),
        width_divisor: usize,
        outputs: usize,
        device: &Device,
    ) -> Self {
        let in_features = in_channels * FEATURE_MAP_SIZE * FEATURE_MAP_SIZE;
        match kind {
            super::HeadKind::Paper => Self::Paper(PaperLayers::new(in_features, width_divisor, outputs, device)),
            super::HeadKind::Compact => Self::Compact(CompactLayers::new(in_channels, width_divisor, outputs, device)),
            super::HeadKind::Statistics => Self::Statistics(StatisticsLayers::new(statistics, in_features, outputs, region, device)),
            super::HeadKind::Quadratic => Self::Quadratic(QuadraticLayers::new(statistics, outputs, region, device)),
        }
    }

    /// Whether the head reads [`BackboneFeatures::map`] (the quadratic head reads statistics only).
    pub fn reads_map(&self) -> bool {
        !matches!(self, Self::Quadratic(_))
    }

    /// Over what [`BackboneFeatures::block_statistics`] must be computed for this head; `None`
    /// for a head that reads none.
    pub fn statistics_region(&self) -> Option<StatisticsRegion> {
        match self {
            Self::Statistics(layers) => Some(layers.region),
            Self::Quadratic(layers) => Some(layers.region),
            Self::Paper(_) | Self::Compact(_) => None,
        }
    }

    /// Backbone features (map `[N, C, 7, 7]`) → `[N, outputs]` (raw, before any activation).
    pub fn forward(&self, features: BackboneFeatures) -> Tensor<2> {
        match self {
            Self::Paper(layers) => layers.forward(features.map),
            Self::Compact(layers) => layers.forward(features.map),
            Self::Statistics(layers) => layers.forward(features),
            Self::Quadratic(layers) => layers.forward(features),
        }
    }

    /// The last linear layer (VGG16's fc8 position): the trainer starts its bias at the
    /// training set's mean so an untrained head does not begin far from every label.
    pub fn output_layer_mut(&mut self) -> &mut Linear {
        match self {
            Self::Paper(layers) => match layers.classifier.last_mut() {
                Some(ClassifierLayer::Linear(linear)) => linear,
                _ => unreachable!("the paper head ends with a linear layer"),
            },
            Self::Compact(layers) => &mut layers.output,
            Self::Statistics(layers) => &mut layers.output,
            Self::Quadratic(layers) => &mut layers.linear,
        }
    }
}

/// Sec. 3.2: one output neuron, no activation: the predicted mean score.
#[derive(Module, Debug)]
pub struct RegressionHead {
    pub layers: HeadLayers,
}

impl RegressionHead {
    /// Backbone features → `[N, 1]` scores.
    pub fn forward(&self, features: BackboneFeatures) -> Tensor<2> {
        self.layers.forward(features)
    }
}

/// Sec. 3.3: ten output neurons and a softmax: the normalised histogram of ratings 1..10.
#[derive(Module, Debug)]
pub struct HistogramHead {
    pub layers: HeadLayers,
}

impl HistogramHead {
    /// Backbone features → `[N, 10]` probabilities.
    pub fn forward(&self, features: BackboneFeatures) -> Tensor<2> {
        softmax(self.layers.forward(features), 1)
    }
}

#[derive(Module, Debug)]
pub enum Head {
    Regression(RegressionHead),
    Histogram(HistogramHead),
}

impl Head {
    pub fn forward(&self, features: BackboneFeatures) -> Tensor<2> {
        match self {
            Self::Regression(head) => head.forward(features),
            Self::Histogram(head) => head.forward(features),
        }
    }

    pub fn layers(&self) -> &HeadLayers {
        match self {
            Self::Regression(head) => &head.layers,
            Self::Histogram(head) => &head.layers,
        }
    }

    pub fn layers_mut(&mut self) -> &mut HeadLayers {
        match self {
            Self::Regression(head) => &mut head.layers,
            Self::Histogram(head) => &mut head.layers,
        }
    }
}
