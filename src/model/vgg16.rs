//! The VGG16 convolutional base (Simonyan & Zisserman), laid out exactly like torchvision's
//! `vgg16().features`: a flat list of 31 layers where the 13 convolutions sit at indices
//! 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28. Keeping that layout means the ImageNet weights
//! (`features.N.weight`) load by name, with no remapping table to keep in sync.

use std::sync::Arc;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::cpu::{CpuVgg16, is_plain_cpu};
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "webgpu"))]
use super::gpu::{GpuVgg16, is_plain_gpu};

/// VGG16's configuration "D": channel counts, `None` = 2x2 max-pool.
const VGG16_LAYOUT: [Option<usize>; 18] = [
    Some(64),
    Some(64),
    None,
    Some(128),
    Some(128),
    None,
    Some(256),
    Some(256),
    Some(256),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
];

/// Channels of the final feature map at full width.
pub const VGG16_OUT_CHANNELS: usize = 512;
/// Input side the paper (and VGG16) uses; the map after five pools is 7x7.
pub const INPUT_SIZE: usize = 224;
pub const FEATURE_MAP_SIZE: usize = 7;
/// Input pixels per cell of the final map (five 2x2 pools).
pub const STRIDE: usize = 32;
/// Keeps the standard deviation's gradient finite where a channel is constant.
pub(crate) const VARIANCE_EPSILON: f64 = 1e-6;

/// What the heads read from the backbone.
#[derive(Clone, Debug)]
pub struct BackboneFeatures {
    /// Block 5's max-pool output: `[N, C, 7, 7]` for a 224x224 input.
    pub map: Tensor<4>,
    /// Per channel, the mean and the standard deviation of each block's last ReLU output
    /// (block 1..5, its means then its stds): `[N, 2944]` at full width. Texture, sharpness, noise
    /// and exposure show in the early blocks, which the 7x7 map has pooled away. Computed only
    /// for heads that read it.
    pub block_statistics: Option<Tensor<2>>,
}

/// Which part of each block's output its channel statistics are taken over
/// ([`BackboneFeatures::block_statistics`]); a property of the head that reads them, saved with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatisticsRegion {
    /// Every block over its whole output (what files without this setting were trained on).
    #[default]
    Whole,
    /// Blocks 4 and 5 over their interior: the outer seventh on each side (one cell of the 7x7
    /// map: 4 of block 4's 28 pixels at 224, 2 of block 5's 14) left out. Those border cells see
    /// the zero padding at the image's edges, which the crop search's whole-photo passes never
    /// see inside a candidate: with them left out its estimates follow the exact scores more
    /// closely (README, "Crop search"), at little cost in accuracy (weights/MODEL_CARD.md).
    DeepInterior,
}

/// The first block (from 0) whose statistics [`StatisticsRegion::DeepInterior`] takes over the
/// interior: block 4, at stride 8, whose 3x3 convolutions already reach the padding from 4 input
/// pixels in.
const FIRST_DEEP_BLOCK: usize = 3;

impl StatisticsRegion {
    pub fn is_whole(&self) -> bool {
        *self == Self::Whole
    }

    /// The name users see (command line, metadata, cache files): its serde name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Whole => "whole",
            Self::DeepInterior => "deep-interior",
        }
    }

    /// Whether block `block`'s (from 0) statistics leave out a margin.
    fn has_margin(self, block: usize) -> bool {
        self == Self::DeepInterior && block >= FIRST_DEEP_BLOCK
    }

    /// The fraction of block `block`'s output left out on each side: 0, or one cell of the 7x7
    /// map.
    pub fn margin_fraction(self, block: usize) -> f32 {
        if self.has_margin(block) { 1.0 / FEATURE_MAP_SIZE as f32 } else { 0.0 }
    }

    /// Pixels left out on each side of a `side`-pixel edge of block `block`'s output: a seventh
    /// of it, rounded down, or none.
    pub fn margin(self, block: usize, side: usize) -> usize {
        if self.has_margin(block) { side / FEATURE_MAP_SIZE } else { 0 }
    }

    /// The statistics of block `block`'s output `[N, C, H, W]` over this region: `[N, 2C]`.
    pub fn block_statistics(self, block: usize, x: Tensor<4>) -> Tensor<2> {
        let [_, _, height, width] = x.dims();
        let (top, left) = (self.margin(block, height), self.margin(block, width));
        let x = if top > 0 || left > 0 { x.narrow(2, top, height - 2 * top).narrow(3, left, width - 2 * left) } else { x };
        channel_statistics(x)
    }
}

/// `[N, C, H, W]` → `[N, 2C]`: each channel's mean over the image, then its standard deviation.
pub fn channel_statistics(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    let values = x.reshape([n, c, h * w]);
    let mean = values.clone().mean_dim(2);
    let variance = (values - mean.clone()).square().mean_dim(2);
    let std = variance.add_scalar(VARIANCE_EPSILON).sqrt();
    Tensor::cat(vec![mean.reshape([n, c]), std.reshape([n, c])], 1)
}

/// Whether `conv` is shaped as VGG's are (3x3, stride 1, no dilation, one group, padding 1 on
/// every side): what Loupe's own CPU and GPU kernels compute.
pub(super) fn is_vgg_conv(conv: &Conv2d) -> bool {
    let [_, _, kernel_height, kernel_width] = conv.weight.dims();
    [kernel_height, kernel_width] == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Explicit(1, 1, 1, 1))
}

/// One entry of `features`. Only tuple variants with one module each, so stores that skip enum
/// variant names see torchvision's `features.<index>.weight` paths.
#[derive(Module, Debug)]
pub enum VggLayer {
    Conv(Conv2d),
    Relu(Relu),
    Pool(MaxPool2d),
}

#[derive(Module, Debug)]
pub struct Vgg16 {
    pub features: Vec<VggLayer>,
    /// The same weights prepared for inference on one device with Loupe's own kernels
    /// ([`Vgg16::prepare_for`]); shared by the heads that use this backbone.
    #[module(skip)]
    prepared: Option<Prepared>,
}

/// VGG16's convolutions readied for Loupe's kernels on one kind of device.
#[derive(Clone, Debug)]
enum Prepared {
    /// `conv3x3` on plain flex: Winograd-transformed weights.
    Cpu(Arc<CpuVgg16>),
    /// `conv3x3-gpu` on burn's CubeCL devices (WebGPU, wgpu): packed weights on the device.
    #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "webgpu"))]
    Gpu(Arc<GpuVgg16>),
}

/// What a backbone prepared for a GPU ([`Vgg16::prepare_for`]) keeps its activations and
/// weights in between layers; sums and everything after the backbone are f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuPrecision {
    /// f16 where the adapter has it (WebGPU's `shader-f16`), else f32: half the memory traffic
    /// for each stored value rounded to 11 significant bits (scores move by about 1e-3).
    #[default]
    Fastest,
    /// f32 throughout, as burn's own conv2d computes.
    F32,
}

impl Prepared {
    #[cfg_attr(not(any(feature = "wgpu", feature = "vulkan", feature = "webgpu")), allow(unused_variables))]
    fn for_device(features: &[VggLayer], device: &Device, precision: GpuPrecision) -> Option<Self> {
        if is_plain_cpu(device) {
            return CpuVgg16::new(features).map(|cpu| Self::Cpu(Arc::new(cpu)));
        }
        #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "webgpu"))]
        if is_plain_gpu(device) {
            return GpuVgg16::new(features, device, precision).map(|gpu| Self::Gpu(Arc::new(gpu)));
        }
        None
    }

    /// Whether these prepared weights serve inputs on `device`.
    fn serves(&self, device: &Device) -> bool {
        match self {
            Self::Cpu(_) => is_plain_cpu(device),
            // Packed on the device the weights lived on when prepared (a plain GPU device).
            #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "webgpu"))]
            Self::Gpu(gpu) => gpu.device() == device,
        }
    }
}

impl Vgg16 {
    /// `width_divisor` = 1 is VGG16; larger values divide every channel count (tiny test models).
    pub fn new(width_divisor: usize, device: &Device) -> Self {
        // He initialisation for ReLU networks (as torchvision inits VGG): a randomly initialised
        // stack of 13 convolutions keeps its signal instead of fading into the biases. (ImageNet
        // weights replace it in every real model.)
        Self::with_initializer(width_divisor, Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true }, device)
    }

    /// [`Vgg16::new`] with the convolutions' weights drawn by `initializer`.
    pub fn with_initializer(width_divisor: usize, initializer: Initializer, device: &Device) -> Self {
        let mut features = Vec::with_capacity(31);
        let mut in_channels = 3;
        for entry in VGG16_LAYOUT {
            match entry {
                Some(channels) => {
                    let out_channels = scaled_channels(channels, width_divisor);
                    let conv = Conv2dConfig::new([in_channels, out_channels], [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .with_initializer(initializer.clone())
                        .init(device);
                    features.push(VggLayer::Conv(conv));
                    features.push(VggLayer::Relu(Relu::new()));
                    in_channels = out_channels;
                }
                None => features.push(VggLayer::Pool(MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init())),
            }
        }
        Self { features, prepared: None }
    }

    /// Make inference on `device` fast where Loupe has its own kernels: on plain flex (the CPU,
    /// natively and in the browser) the convolutions then run through `conv3x3` with weights
    /// transformed now, once; on burn's CubeCL devices (WebGPU, wgpu) through `conv3x3-gpu` with
    /// weights packed now, once. Call it after the weights are loaded (on `device`), and again if
    /// they change (training does not call it: its devices carry autodiff, which these paths
    /// never serve). GPUs compute at [`GpuPrecision::Fastest`].
    pub fn prepare_for(&mut self, device: &Device) {
        self.prepare_at(device, GpuPrecision::Fastest);
    }

    /// [`Vgg16::prepare_for`] with the GPU path's precision chosen (the CPU path is f32).
    pub fn prepare_at(&mut self, device: &Device, precision: GpuPrecision) {
        self.prepared = Prepared::for_device(&self.features, device, precision);
    }

    /// Whether this network, prepared for a GPU, keeps its activations in f16 there
    /// ([`GpuPrecision::Fastest`] on an adapter with `shader-f16`).
    pub fn computes_in_f16(&self) -> bool {
        match &self.prepared {
            #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "webgpu"))]
            Some(Prepared::Gpu(gpu)) => gpu.in_f16(),
            _ => false,
        }
    }

    /// Whether [`Vgg16::prepare_for`] has readied this network for `device`.
    pub fn is_prepared_for(&self, device: &Device) -> bool {
        self.prepared.as_ref().is_some_and(|prepared| prepared.serves(device))
    }

    /// `[N, 3, H, W]` → `[N, C, H/32, W/32]` (block5 max-pool output).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.run(x, None)
    }

    /// The map and, if a region is given, the statistics of every block over it (see
    /// [`BackboneFeatures`]).
    pub fn forward_features(&self, x: Tensor<4>, statistics: Option<StatisticsRegion>) -> BackboneFeatures {
        if let Some(cpu) = self.cpu_for(&x) {
            let (map, block_statistics) = cpu.features(x, statistics);
            return BackboneFeatures { map, block_statistics };
        }
        let Some(region) = statistics else {
            return BackboneFeatures { map: self.run(x, None), block_statistics: None };
        };
        let mut blocks = Vec::new();
        let mut collect = |block_output: Tensor<4>| blocks.push(region.block_statistics(blocks.len(), block_output));
        let map = self.run(x, Some(&mut collect));
        BackboneFeatures { map, block_statistics: Some(Tensor::cat(blocks, 1)) }
    }

    /// The map, and each block's last ReLU output averaged over cells of 32x32 input pixels (the
    /// map's grid): per block `(mean of x, mean of x²)`, each `[N, C_block, H/32, W/32]`. Region
    /// statistics for many crops are then sums over grid cells (the fast crop search).
    pub fn forward_block_grids(&self, x: Tensor<4>) -> (Tensor<4>, Vec<(Tensor<4>, Tensor<4>)>) {
        if let Some(cpu) = self.cpu_for(&x) {
            return cpu.block_grids(x);
        }
        let mut grids = Vec::new();
        let mut collect = |block_output: Tensor<4>| {
            // Block k (from 0) has stride 2^k: a grid cell spans 32 / 2^k of its pixels.
            let cell = STRIDE >> grids.len();
            let pool = AvgPool2dConfig::new([cell, cell]).with_strides([cell, cell]).init();
            grids.push((pool.forward(block_output.clone()), pool.forward(block_output.square())));
        };
        let map = self.run(x, Some(&mut collect));
        (map, grids)
    }

    /// The prepared weights, when they serve the device `x` lives on.
    fn prepared_for(&self, x: &Tensor<4>) -> Option<&Prepared> {
        self.prepared.as_ref().filter(|prepared| prepared.serves(&x.device()))
    }

    /// The CPU path, when prepared and `x` lives where it runs.
    fn cpu_for(&self, x: &Tensor<4>) -> Option<&CpuVgg16> {
        match self.prepared_for(x) {
            Some(Prepared::Cpu(cpu)) => Some(cpu),
            _ => None,
        }
    }

    /// Runs the layers, handing each block's last ReLU output (the input of its max-pool) to
    /// `at_block_end` if given; on Loupe's own kernels when prepared for the input's device.
    fn run(&self, mut x: Tensor<4>, mut at_block_end: Option<&mut dyn FnMut(Tensor<4>)>) -> Tensor<4> {
        match self.prepared_for(&x) {
            Some(Prepared::Cpu(cpu)) => return cpu.run(x, at_block_end),
            #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "webgpu"))]
            Some(Prepared::Gpu(gpu)) => return gpu.run(x, at_block_end),
            None => {}
        }
        for layer in &self.features {
            x = match layer {
                VggLayer::Conv(conv) => conv.forward(x),
                VggLayer::Relu(relu) => relu.forward(x),
                VggLayer::Pool(pool) => {
                    if let Some(at_block_end) = at_block_end.as_mut() {
                        at_block_end(x.clone());
                    }
                    pool.forward(x)
                }
            };
        }
        x
    }

    /// Channels of each block's output (64, 128, 256, 512, 512 at full width).
    pub fn block_channels(&self) -> Vec<usize> {
        let mut channels = Vec::new();
        let mut last = 0;
        for layer in &self.features {
            match layer {
                VggLayer::Conv(conv) => last = conv.weight.dims()[0],
                VggLayer::Pool(_) => channels.push(last),
                VggLayer::Relu(_) => {}
            }
        }
        channels
    }

    /// Width of [`BackboneFeatures::block_statistics`]: a mean and a std per channel of each block.
    pub fn statistics_width(&self) -> usize {
        2 * self.block_channels().iter().sum::<usize>()
    }

    pub fn out_channels(&self) -> usize {
        self.features
            .iter()
            .rev()
            .find_map(|layer| match layer {
                VggLayer::Conv(conv) => Some(conv.weight.dims()[0]),
                _ => None,
            })
            .expect("VGG16 has convolutions")
    }
}

pub fn scaled_channels(channels: usize, width_divisor: usize) -> usize {
    (channels / width_divisor.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn values(tensor: Tensor<2>) -> Vec<f32> {
        crate::model::values(tensor).unwrap()
    }

    #[test]
    fn deep_interior_leaves_out_one_cell_of_the_7x7_map_on_each_side_of_blocks_4_and_5() {
        let region = StatisticsRegion::DeepInterior;
        // At 224: blocks 1-3 whole; block 4 (28x28) loses 4 pixels a side, block 5 (14x14) 2.
        let margins: Vec<usize> = [224, 112, 56, 28, 14].iter().enumerate().map(|(block, &side)| region.margin(block, side)).collect();
        assert_eq!(margins, [0, 0, 0, 4, 2]);
        assert_eq!((0..5).map(|block| StatisticsRegion::Whole.margin(block, 28)).sum::<usize>(), 0);
        // Rounded down: never the whole output, however small.
        assert_eq!((region.margin(4, 1), region.margin(4, 7), region.margin(4, 13)), (0, 1, 1));
        for name in ["whole", "deep-interior"] {
            assert_eq!(name.parse::<StatisticsRegion>().unwrap().name(), name);
        }
    }

    #[test]
    fn deep_interior_statistics_are_the_statistics_of_the_interior() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 14, 21], Distribution::Normal(1.0, 2.0), &device);
        let interior = x.clone().narrow(2, 2, 10).narrow(3, 3, 15);
        let expected = values(channel_statistics(interior));
        let actual = values(StatisticsRegion::DeepInterior.block_statistics(4, x.clone()));
        assert_eq!(actual.len(), expected.len());
        assert!(actual.iter().zip(&expected).all(|(a, e)| (a - e).abs() < 1e-6), "{actual:?} vs {expected:?}");
        // The whole output otherwise, and in the shallow blocks.
        let whole = values(channel_statistics(x.clone()));
        assert_eq!(values(StatisticsRegion::DeepInterior.block_statistics(2, x.clone())), whole);
        assert_eq!(values(StatisticsRegion::Whole.block_statistics(4, x)), whole);
        assert_ne!(actual, whole);
    }
}
