//! The VGG16 convolutional base (Simonyan & Zisserman), laid out exactly like torchvision's
//! `vgg16().features`: a flat list of 31 layers where the 13 convolutions sit at indices
//! 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28. Keeping that layout means the ImageNet weights
//! (`features.N.weight`) load by name, with no remapping table to keep in sync.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};

/// VGG16's configuration "D": channel counts, `None` = 2x2 max-pool.
const VGG16_LAYOUT: [Option<usize>; 18] = [
    Some(64), Some(64), None,
    Some(128), Some(128), None,
    Some(256), Some(256), Some(256), None,
    Some(512), Some(512), Some(512), None,
    Some(512), Some(512), Some(512), None,
];

/// Channels of the final feature map at full width.
pub const VGG16_OUT_CHANNELS: usize = 512;
/// Input side the paper (and VGG16) uses; the map after five pools is 7x7.
pub const INPUT_SIZE: usize = 224;
pub const FEATURE_MAP_SIZE: usize = 7;

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
}

impl Vgg16 {
    /// `width_divisor` = 1 is VGG16; larger values divide every channel count (tiny test models).
    pub fn new(width_divisor: usize, device: &Device) -> Self {
        let mut features = Vec::with_capacity(31);
        let mut in_channels = 3;
        for entry in VGG16_LAYOUT {
            match entry {
                Some(channels) => {
                    let out_channels = scaled_channels(channels, width_divisor);
                    // He initialisation for ReLU networks (as torchvision inits VGG): a randomly
                    // initialised stack of 13 convolutions keeps its signal instead of fading
                    // into the biases. (ImageNet weights replace it in every real model.)
                    let conv = Conv2dConfig::new([in_channels, out_channels], [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .with_initializer(Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true })
                        .init(device);
                    features.push(VggLayer::Conv(conv));
                    features.push(VggLayer::Relu(Relu::new()));
                    in_channels = out_channels;
                }
                None => features.push(VggLayer::Pool(
                    MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                )),
            }
        }
        Self { features }
    }

    /// `[N, 3, H, W]` → `[N, C, H/32, W/32]` (block5 max-pool output).
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        for layer in &self.features {
            x = match layer {
                VggLayer::Conv(conv) => conv.forward(x),
                VggLayer::Relu(relu) => relu.forward(x),
                VggLayer::Pool(pool) => pool.forward(x),
            };
        }
        x
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
