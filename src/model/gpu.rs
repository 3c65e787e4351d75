//! VGG16's convolution stack on GPUs through [`conv3x3_gpu`] instead of burn's generic conv2d
//! (which on WebGPU runs one output per invocation): tiled implicit-GEMM kernels, weights packed
//! once when a model is loaded for inference, activations channels-last from layer to layer, and
//! bias + ReLU applied as each output is written, in f16 where the adapter has it
//! ([`GpuPrecision`]). The same kernels run in the browser (WebGPU) and natively (wgpu: Vulkan,
//! Metal, DX12).
//!
//! Used only for inference on burn's CubeCL devices without autodiff; training and gradients
//! keep burn's ops. The packed weights are a snapshot: a network whose weights change afterwards
//! must be prepared again ([`super::Vgg16::prepare_for`]).

use burn::tensor::{Device, FloatDType, Tensor};
use conv3x3_gpu::{PackedConv3x3, Storage, max_pool_2x2};

use super::vgg16::{GpuPrecision, VggLayer, is_vgg_conv};

/// f16 holds values up to 65,504, and VGG16's ReLU outputs on Caffe-range input reach about
/// 10,000 on a photo (rocket.jpg) and 28,000 on a 4-pixel black-and-white checkerboard. The
/// stack (convolutions, ReLU, max-pool) is positively homogeneous, so in f16 it runs on its input
/// times this, with every bias times this: each activation is then scaled by it, exactly (a
/// power of two), leaving 150x headroom, and is scaled back in f32 on the way out.
const F16_ACTIVATION_SCALE: f32 = 1.0 / 64.0;

#[derive(Clone, Debug)]
enum GpuLayer {
    /// A convolution, and whether the ReLU that follows it is fused in.
    Conv(Box<PackedConv3x3>, bool),
    Pool,
}

/// A VGG16 ready for GPU inference.
#[derive(Clone, Debug)]
pub struct GpuVgg16 {
    layers: Vec<GpuLayer>,
    device: Device,
    storage: Storage,
}

/// Whether `device` is one [`GpuVgg16`] runs on: burn's CubeCL backend, without autodiff.
pub fn is_plain_gpu(device: &Device) -> bool {
    conv3x3_gpu::runs_on(device)
}

impl GpuVgg16 {
    /// Pack `features`' weights on `device`, where they live, at `precision`; `None` if a layer
    /// is not VGG's (3x3, stride 1, padding 1).
    pub fn new(features: &[VggLayer], device: &Device, precision: GpuPrecision) -> Option<Self> {
        let storage = match precision {
            GpuPrecision::Fastest => Storage::fastest_on(device),
            GpuPrecision::F32 => Storage::F32,
        };
        let scale = activation_scale(storage);
        let mut layers: Vec<GpuLayer> = Vec::with_capacity(18);
        for layer in features {
            match layer {
                VggLayer::Conv(conv) => {
                    if !is_vgg_conv(conv) {
                        return None;
                    }
                    let bias = conv.bias.as_ref().map(|bias| bias.val().mul_scalar(scale));
                    let packed = PackedConv3x3::new(conv.weight.val(), bias, storage);
                    layers.push(GpuLayer::Conv(Box::new(packed), false));
                }
                VggLayer::Relu(_) => match layers.last_mut() {
                    Some(GpuLayer::Conv(_, relu)) => *relu = true,
                    // VGG puts a ReLU after every convolution and nowhere else.
                    _ => return None,
                },
                VggLayer::Pool(_) => layers.push(GpuLayer::Pool),
            }
        }
        Some(Self { layers, device: device.clone(), storage })
    }

    /// Whether activations and weights are kept in f16 between the layers.
    pub fn in_f16(&self) -> bool {
        self.storage == Storage::F16
    }

    /// The device the packed weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Like [`super::Vgg16`]'s own run: `[N, 3, H, W]` → the block-5 map (channels first),
    /// handing each block's last ReLU output (channels first) to `at_block_end` when given; what
    /// leaves is f32 whatever the storage in between.
    pub fn run(&self, x: Tensor<4>, mut at_block_end: Option<&mut dyn FnMut(Tensor<4>)>) -> Tensor<4> {
        let mut x = self.scaled(x).permute([0, 2, 3, 1]);
        for layer in &self.layers {
            x = match layer {
                GpuLayer::Conv(conv, relu) => conv.forward(x, *relu),
                GpuLayer::Pool => {
                    if let Some(at_block_end) = at_block_end.as_mut() {
                        at_block_end(self.unscaled(x.clone().permute([0, 3, 1, 2])));
                    }
                    max_pool_2x2(x)
                }
            };
        }
        self.unscaled(x.permute([0, 3, 1, 2]))
    }

    fn scaled(&self, x: Tensor<4>) -> Tensor<4> {
        let scale = activation_scale(self.storage);
        if scale == 1.0 { x } else { x.mul_scalar(scale) }
    }

    /// An activation back in f32 and at its true scale.
    fn unscaled(&self, x: Tensor<4>) -> Tensor<4> {
        let x = x.cast(FloatDType::F32);
        let scale = activation_scale(self.storage);
        if scale == 1.0 { x } else { x.div_scalar(scale) }
    }
}

/// What every activation is multiplied by inside the stack when kept as `storage`.
fn activation_scale(storage: Storage) -> f32 {
    match storage {
        Storage::F16 => F16_ACTIVATION_SCALE,
        Storage::F32 => 1.0,
    }
}
