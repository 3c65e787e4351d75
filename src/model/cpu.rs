//! VGG16's convolution stack on the CPU through [`conv3x3`] instead of burn's generic conv2d:
//! the weights are Winograd-transformed once (when a model is loaded for inference), activations
//! stay channels-last from layer to layer, and bias + ReLU are applied as each output is written.
//! Same code natively (rayon over tiles) and in the browser's CPU fallback (one thread).
//!
//! Used only for inference on burn's `flex` device without autodiff; training, GPUs and
//! gradients keep burn's own ops. The transformed weights are a snapshot: a network whose weights
//! change afterwards must be prepared again ([`super::Vgg16::prepare_for`]).

use burn::nn::PaddingConfig2d;
use burn::tensor::{Device, Tensor, TensorData};
use conv3x3::{Activation, Conv3x3, Nhwc, max_pool_2x2};

use super::vgg16::VggLayer;

#[derive(Clone, Debug)]
enum CpuLayer {
    /// A convolution, with the ReLU that follows it fused in.
    Conv(Conv3x3, Activation),
    Pool,
}

/// A VGG16 ready for CPU inference.
#[derive(Clone, Debug)]
pub struct CpuVgg16 {
    layers: Vec<CpuLayer>,
}

/// Whether `device` is plain flex (burn's CPU backend, no autodiff): where [`CpuVgg16`] runs.
pub fn is_plain_cpu(device: &Device) -> bool {
    *device == Device::flex() && !device.is_autodiff()
}

impl CpuVgg16 {
    /// Transform `features`' weights; `None` if a layer is not VGG's (3x3, stride 1, padding 1).
    pub fn new(features: &[VggLayer]) -> Option<Self> {
        let mut layers: Vec<CpuLayer> = Vec::with_capacity(18);
        for layer in features {
            match layer {
                VggLayer::Conv(conv) => {
                    let [out_channels, in_channels, kh, kw] = conv.weight.dims();
                    let vgg_shaped = [kh, kw] == [3, 3]
                        && conv.stride == [1, 1]
                        && conv.dilation == [1, 1]
                        && conv.groups == 1
                        && matches!(conv.padding, PaddingConfig2d::Explicit(1, 1, 1, 1));
                    if !vgg_shaped {
                        return None;
                    }
                    let weight = to_f32(conv.weight.val())?;
                    let bias = match &conv.bias {
                        Some(bias) => Some(to_f32(bias.val())?),
                        None => None,
                    };
                    let conv = Conv3x3::new(&weight, bias.as_deref(), in_channels, out_channels).ok()?;
                    layers.push(CpuLayer::Conv(conv, Activation::Identity));
                }
                VggLayer::Relu(_) => match layers.last_mut() {
                    Some(CpuLayer::Conv(_, activation)) => *activation = Activation::Relu,
                    // VGG puts a ReLU after every convolution and nowhere else.
                    _ => return None,
                },
                VggLayer::Pool(_) => layers.push(CpuLayer::Pool),
            }
        }
        Some(Self { layers })
    }

    /// Like [`super::Vgg16`]'s own run: `[N, 3, H, W]` → the block-5 map, handing each block's
    /// last ReLU output to `at_block_end` when one is given (converting it costs a copy).
    pub fn run(&self, x: Tensor<4>, mut at_block_end: Option<&mut dyn FnMut(Tensor<4>)>) -> Tensor<4> {
        let device = x.device();
        let shape = x.dims();
        // The input is ours (`preprocess::input_batch`): f32 on the CPU, so this cannot fail.
        let values = to_f32(x).expect("the network input is f32");
        let mut activations = Nhwc::from_nchw(&values, shape).expect("dims match the data");
        for layer in &self.layers {
            activations = match layer {
                // The layers were built from this network's own weights, so channels chain; a
                // wrong input channel count fails here as it would in burn's conv2d.
                CpuLayer::Conv(conv, activation) => conv.forward(&activations, *activation).unwrap_or_else(|e| panic!("VGG16 input: {e}")),
                CpuLayer::Pool => {
                    if let Some(at_block_end) = at_block_end.as_mut() {
                        at_block_end(to_tensor(&activations, &device));
                    }
                    max_pool_2x2(&activations)
                }
            };
        }
        to_tensor(&activations, &device)
    }
}

fn to_f32<const D: usize>(tensor: Tensor<D>) -> Option<Vec<f32>> {
    tensor.into_data().convert::<f32>().try_into_vec::<f32>().ok()
}

fn to_tensor(activations: &Nhwc, device: &Device) -> Tensor<4> {
    let [n, h, w, c] = activations.shape();
    Tensor::from_data(TensorData::new(activations.to_nchw(), [n, c, h, w]), device)
}
