//! The paper's two models: VGG16 + a regression head (one score) or a histogram head (10-bin
//! rating distribution). [`ModelConfig`] says which; it travels in every weight file.

mod cpu;
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "webgpu"))]
mod gpu;
pub mod heads;
pub mod vgg16;

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use heads::{HISTOGRAM_BINS, Head, HeadLayers, HistogramHead, RegressionHead};
pub use vgg16::{BackboneFeatures, GpuPrecision, INPUT_SIZE, StatisticsRegion, Vgg16};

use crate::error::{LoupeError, Result};

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// One aesthetic score in 1..10 (Sec. 3.2).
    Regression,
    /// The normalised histogram of ratings 1..10 (Sec. 3.3).
    Histogram,
}

impl OutputKind {
    /// The name users see (command line, JSON keys, weight file names): its serde name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Regression => "regression",
            Self::Histogram => "histogram",
        }
    }

    pub fn outputs(self) -> usize {
        match self {
            Self::Regression => 1,
            Self::Histogram => HISTOGRAM_BINS,
        }
    }
}

/// Which layers sit between the backbone and the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// VGG16's classifier: fc6 4096 → fc7 4096 → output (the paper).
    Paper,
    /// 1x1 conv on the 7x7 map + a small MLP (for the browser).
    Compact,
    /// A linear read-out over every block's channel statistics and the 7x7 map.
    Statistics,
    /// Linear plus low-rank squared terms over every block's channel statistics.
    Quadratic,
}

crate::from_str_by_serde_name!(OutputKind, HeadKind, StatisticsRegion);

/// A tensor's values as f32, in row-major order. Blocks until a GPU has them: the browser's
/// WebGPU path reads with [`read_values`] instead.
pub fn values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| LoupeError::Model(format!("cannot read a tensor: {e:?}")))
}

/// [`values`], awaiting the device (WebGPU cannot block).
pub async fn read_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    let data = tensor.into_data_async().await.map_err(|e| LoupeError::Model(format!("cannot read a tensor: {e:?}")))?;
    data.convert::<f32>().try_into_vec::<f32>().map_err(|e| LoupeError::Model(format!("cannot read a tensor: {e:?}")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub output: OutputKind,
    pub head: HeadKind,
    /// 1 = VGG16; larger divides every layer's width (tiny models for tests).
    pub width_divisor: usize,
    /// What the block statistics are taken over, for the heads that read them. Not written when
    /// [`StatisticsRegion::Whole`], so files from before the setting read as what they are and
    /// files that never need it keep their bytes.
    #[serde(default, skip_serializing_if = "StatisticsRegion::is_whole")]
    pub statistics: StatisticsRegion,
}

impl ModelConfig {
    pub fn new(output: OutputKind, head: HeadKind) -> Self {
        Self { output, head, width_divisor: 1, statistics: StatisticsRegion::Whole }
    }

    pub fn with_width_divisor(mut self, width_divisor: usize) -> Self {
        self.width_divisor = width_divisor;
        self
    }

    /// Block statistics over `statistics`, for a head that reads them; other heads keep
    /// [`StatisticsRegion::Whole`], so their files do not carry a setting they never use.
    pub fn with_statistics(mut self, statistics: StatisticsRegion) -> Self {
        if matches!(self.head, HeadKind::Statistics | HeadKind::Quadratic) {
            self.statistics = statistics;
        }
        self
    }

    pub fn validate(&self) -> Result<()> {
        if !(1..=64).contains(&self.width_divisor) {
            return Err(LoupeError::Model(format!("width divisor must be in 1..=64, got {}", self.width_divisor)));
        }
        Ok(())
    }

    /// A new model, randomly initialised (for training).
    pub fn init(&self, device: &Device) -> Result<AestheticNet> {
        self.validate()?;
        Ok(self.init_with_backbone(Vgg16::new(self.width_divisor, device), device))
    }

    /// A model whose parameters are about to be read from a file: the backbone starts at zeros,
    /// because drawing VGG16's 14.7M random weights (once per file: backbone and each head) was
    /// most of the time a load took.
    pub fn init_for_loading(&self, device: &Device) -> Result<AestheticNet> {
        self.validate()?;
        Ok(self.init_with_backbone(Vgg16::with_initializer(self.width_divisor, Initializer::Zeros, device), device))
    }

    /// A model whose head is about to be read from a file, on an already loaded `backbone`
    /// (shared: its tensors are not copied). Not [`ModelConfig::init_for_loading`]: a fresh
    /// zero backbone per head file was most of a head's load time in the browser.
    pub fn init_head_for_loading(&self, backbone: &Vgg16, device: &Device) -> Result<AestheticNet> {
        self.validate()?;
        Ok(self.init_with_backbone(backbone.clone(), device))
    }

    fn init_with_backbone(&self, backbone: Vgg16, device: &Device) -> AestheticNet {
        // In this order: reading a lazily initialised weight's shape draws it, and a seeded random
        // backbone depends on the order of the draws.
        let channels = backbone.out_channels();
        let statistics = (backbone.statistics_width(), self.statistics);
        let layers = HeadLayers::new(self.head, channels, statistics, self.width_divisor, self.output.outputs(), device);
        let head = match self.output {
            OutputKind::Regression => Head::Regression(RegressionHead { layers }),
            OutputKind::Histogram => Head::Histogram(HistogramHead { layers }),
        };
        AestheticNet { backbone, head }
    }
}

/// VGG16 backbone + head: `[N, 3, 224, 224]` → `[N, 1]` scores or `[N, 10]` probabilities.
#[derive(Module, Debug)]
pub struct AestheticNet {
    pub backbone: Vgg16,
    pub head: Head,
}

/// AVA's mean score and mean normalised rating histogram over all 255,502 images: the prior an
/// untrained head starts from.
pub const AVA_MEAN_SCORE: f32 = 5.383;
pub const AVA_MEAN_HISTOGRAM: [f32; HISTOGRAM_BINS] = [0.01203, 0.02547, 0.06331, 0.16369, 0.29242, 0.23243, 0.11745, 0.05591, 0.02341, 0.01388];

impl AestheticNet {
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.features(images))
    }

    /// What this model's head reads from the backbone.
    pub fn features(&self, images: Tensor<4>) -> BackboneFeatures {
        self.backbone.forward_features(images, self.head.layers().statistics_region())
    }

    /// Start an untrained output layer at a prior (a mean score, or a mean histogram through the
    /// log, so the softmax returns it) with its weights scaled down: predictions then begin near
    /// the labels' mean instead of anywhere, and training learns differences, not the offset.
    pub fn centre_output(&mut self, mean_score: f32, mean_histogram: [f32; HISTOGRAM_BINS]) {
        let bias: Vec<f32> = match self.head {
            Head::Regression(_) => vec![mean_score],
            Head::Histogram(_) => mean_histogram.iter().map(|p| p.max(1e-4).ln()).collect(),
        };
        let output = self.head.layers_mut().output_layer_mut();
        let device = output.weight.val().device();
        let outputs = bias.len();
        output.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(bias, [outputs]), &device)));
        // A fresh leaf (detached): a computed weight would tie every step to this one graph.
        output.weight = Param::from_tensor(output.weight.val().mul_scalar(0.1).detach());
    }
}
