//! VGG16's convolution stack on the CPU through [`conv3x3`] instead of burn's generic conv2d:
//! the weights are Winograd-transformed once (when a model is loaded for inference), activations
//! stay channels-last from layer to layer, and bias + ReLU are applied as each output is written.
//! Same code natively (rayon over tiles) and in the browser's CPU fallback (one thread).
//!
//! Used only for inference on burn's `flex` device without autodiff; training, GPUs and
//! gradients keep burn's own ops. The transformed weights are a snapshot: a network whose weights
//! change afterwards must be prepared again ([`super::Vgg16::prepare_for`]).

use burn::tensor::{Device, Tensor, TensorData};
use conv3x3::{Activation, Conv3x3, Nhwc, max_pool_2x2};

use super::vgg16::{STRIDE, StatisticsRegion, VARIANCE_EPSILON, VggLayer, is_vgg_conv};

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
                    if !is_vgg_conv(conv) {
                        return None;
                    }
                    let [out_channels, in_channels, _, _] = conv.weight.dims();
                    let weight = super::values(conv.weight.val()).ok()?;
                    let bias = match &conv.bias {
                        Some(bias) => Some(super::values(bias.val()).ok()?),
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
    pub fn run(&self, x: Tensor<4>, at_block_end: Option<&mut dyn FnMut(Tensor<4>)>) -> Tensor<4> {
        let device = x.device();
        match at_block_end {
            Some(at_block_end) => self.run_layers(x, Some(&mut |activations: &Nhwc| at_block_end(to_tensor(activations, &device)))),
            None => self.run_layers(x, None),
        }
    }

    /// The layers, handing each block's last ReLU output, channels last, to `at_block_end`.
    fn run_layers(&self, x: Tensor<4>, mut at_block_end: Option<&mut dyn FnMut(&Nhwc)>) -> Tensor<4> {
        let device = x.device();
        let shape = x.dims();
        // The input is ours (`preprocess::input_batch`): f32 on the CPU, so this cannot fail.
        let values = super::values(x).expect("the network input is f32");
        let mut activations = Nhwc::from_nchw(&values, shape).expect("dims match the data");
        for layer in &self.layers {
            activations = match layer {
                // The layers were built from this network's own weights, so channels chain; a
                // wrong input channel count fails here as it would in burn's conv2d.
                CpuLayer::Conv(conv, activation) => conv.forward(&activations, *activation).unwrap_or_else(|e| panic!("VGG16 input: {e}")),
                CpuLayer::Pool => {
                    if let Some(at_block_end) = at_block_end.as_mut() {
                        at_block_end(&activations);
                    }
                    max_pool_2x2(&activations)
                }
            };
        }
        to_tensor(&activations, &device)
    }

    /// The map and, if a region is given, every block's channel statistics over it (the layout
    /// of [`StatisticsRegion::block_statistics`], blocks in order), computed from the
    /// channels-last activations directly instead of converting each block's output to a tensor
    /// first.
    pub fn features(&self, x: Tensor<4>, statistics: Option<StatisticsRegion>) -> (Tensor<4>, Option<Tensor<2>>) {
        let batch = x.dims()[0];
        let mut per_image: Vec<Vec<f32>> = vec![Vec::new(); batch];
        // Only called when a region is given.
        let region = statistics.unwrap_or_default();
        let mut block = 0;
        let mut collect = |activations: &Nhwc| {
            let [_, height, width, _] = activations.shape();
            let (top, left) = (region.margin(block, height), region.margin(block, width));
            let window = Window { top, left, height: height - 2 * top, width: width - 2 * left };
            for (image, statistics) in per_image.iter_mut().enumerate() {
                channel_statistics(activations, image, window, statistics);
            }
            block += 1;
        };
        let map = self.run_layers(x, statistics.is_some().then_some(&mut collect as &mut dyn FnMut(&Nhwc)));
        let statistics = statistics.map(|_| {
            // Batches are never empty (every caller chunks a non-empty input), so image 0 exists.
            let width = per_image[0].len();
            Tensor::from_data(TensorData::new(per_image.concat(), [batch, width]), &map.device())
        });
        (map, statistics)
    }

    /// Like [`super::Vgg16::forward_block_grids`]: the map and, per block, the means of x and x²
    /// over the map's grid cells (block k: `STRIDE >> k` of its pixels; incomplete cells at the
    /// right and bottom edges dropped, as a kernel = stride average pool does). Read
    /// from the channels-last activations directly: no full-size tensor copy, square or pool per
    /// block (at a crop level's sizes those cost as much as a fifth of the pass).
    pub fn block_grids(&self, x: Tensor<4>) -> (Tensor<4>, Vec<(Tensor<4>, Tensor<4>)>) {
        let device = x.device();
        let mut grids = Vec::new();
        let mut collect = |activations: &Nhwc| {
            let cell = STRIDE >> grids.len();
            let (mean, mean_of_squares, shape) = cell_means(activations, cell);
            let tensor = |values| Tensor::from_data(TensorData::new(values, shape), &device);
            grids.push((tensor(mean), tensor(mean_of_squares)));
        };
        let map = self.run_layers(x, Some(&mut collect));
        (map, grids)
    }
}

/// Means of x and of x² over `cell x cell` cells, channels first (`[N, C, H / cell, W / cell]`).
fn cell_means(activations: &Nhwc, cell: usize) -> (Vec<f32>, Vec<f32>, [usize; 4]) {
    let [batch, height, width, channels] = activations.shape();
    let cell = cell.max(1);
    let (rows, columns) = (height / cell, width / cell);
    let plane = rows * columns;
    let (mut mean, mut mean_of_squares) = (vec![0.0f32; batch * channels * plane], vec![0.0f32; batch * channels * plane]);
    // One cell row at a time, summed channels-last (contiguous), then written channels-first.
    let (mut sum, mut sum_of_squares) = (vec![0.0f32; columns * channels], vec![0.0f32; columns * channels]);
    let scale = 1.0 / (cell * cell) as f32;
    for image in 0..batch {
        for row in 0..rows {
            sum.fill(0.0);
            sum_of_squares.fill(0.0);
            for y in row * cell..(row + 1) * cell {
                let line = &activations.data[((image * height + y) * width) * channels..][..columns * cell * channels];
                for (x, pixel) in line.chunks_exact(channels).enumerate() {
                    let at = (x / cell) * channels;
                    for ((s, q), &v) in sum[at..at + channels].iter_mut().zip(&mut sum_of_squares[at..at + channels]).zip(pixel) {
                        *s += v;
                        *q += v * v;
                    }
                }
            }
            for column in 0..columns {
                for c in 0..channels {
                    let out = ((image * channels + c) * rows + row) * columns + column;
                    mean[out] = sum[column * channels + c] * scale;
                    mean_of_squares[out] = sum_of_squares[column * channels + c] * scale;
                }
            }
        }
    }
    (mean, mean_of_squares, [batch, channels, rows, columns])
}

/// The pixels of a block's output its statistics are taken over.
#[derive(Clone, Copy, Debug)]
struct Window {
    top: usize,
    left: usize,
    height: usize,
    width: usize,
}

/// Image `image`'s channel means, then standard deviations over `window` (population, plus
/// [`VARIANCE_EPSILON`] under the root, as the tensor version), appended to `out`.
fn channel_statistics(activations: &Nhwc, image: usize, window: Window, out: &mut Vec<f32>) {
    let [_, height, width, channels] = activations.shape();
    let image_values = &activations.data[image * height * width * channels..(image + 1) * height * width * channels];
    // f64 sums: E[x²] − E[x]² loses nothing over 50k pixels then.
    let (mut sum, mut sum_of_squares) = (vec![0.0f64; channels], vec![0.0f64; channels]);
    for y in window.top..window.top + window.height {
        let row = &image_values[(y * width + window.left) * channels..(y * width + window.left + window.width) * channels];
        for pixel in row.chunks_exact(channels) {
            for ((s, q), &v) in sum.iter_mut().zip(&mut sum_of_squares).zip(pixel) {
                *s += f64::from(v);
                *q += f64::from(v) * f64::from(v);
            }
        }
    }
    let n = (window.height * window.width).max(1) as f64;
    out.extend(sum.iter().map(|s| (s / n) as f32));
    out.extend(sum.iter().zip(&sum_of_squares).map(|(s, q)| {
        let mean = s / n;
        ((q / n - mean * mean).max(0.0) + VARIANCE_EPSILON).sqrt() as f32
    }));
}

fn to_tensor(activations: &Nhwc, device: &Device) -> Tensor<4> {
    let [n, h, w, c] = activations.shape();
    Tensor::from_data(TensorData::new(activations.to_nchw(), [n, c, h, w]), device)
}
