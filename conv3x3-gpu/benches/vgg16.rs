//! VGG16's convolution stack (13 convolutions, ReLU, 5 max-pools; random weights) on a wgpu
//! adapter, side by side in one run: this crate's kernels (channels last; in f32, and in f16
//! where the adapter has `shader-f16`) against burn's own conv2d + ReLU + max-pool (what
//! `Conv2d` runs on the same device). Milliseconds per image and
//! effective GFLOP/s (2·H·W·Cin·Cout·9 per convolution), best and median of the repeats.
//!   cargo bench -p conv3x3-gpu [-- --side 224 --batch 1 --repeats 5]
//! (On a machine without a GPU the adapter is Mesa's lavapipe, a CPU rasteriser: the ratio is
//! the figure to read there, not the absolute times.)

use std::time::Instant;

use burn::nn::pool::MaxPool2dConfig;
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use conv3x3_gpu::{PackedConv3x3, Storage, max_pool_2x2, supports_f16};

/// VGG16's five blocks: (3x3 convolutions, output channels), each block ending in a 2x2 max-pool.
const VGG16_BLOCKS: [(usize, usize); 5] = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)];

fn argument(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(|v| v.parse().expect("a number")).unwrap_or(default)
}

/// Runs `forward` `repeats` times after one warm-up (kernel compilation), waiting for the device
/// each time; returns (best, median) seconds.
fn time(repeats: usize, device: &Device, mut forward: impl FnMut() -> Tensor<4>) -> (f64, f64) {
    forward().into_data();
    let mut seconds: Vec<f64> = (0..repeats)
        .map(|_| {
            let started = Instant::now();
            let _ = forward().into_data();
            device.sync().expect("device sync");
            started.elapsed().as_secs_f64()
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    (seconds[0], seconds[seconds.len() / 2])
}

fn main() {
    let side = argument("--side", 224);
    let batch = argument("--batch", 1);
    let repeats = argument("--repeats", 5);
    let device = Device::wgpu_options().init().expect("no wgpu adapter");

    let mut weights = Vec::new();
    let mut in_channels = 3;
    let mut flops = 0.0;
    let mut layer_side = side;
    for (convs, channels) in VGG16_BLOCKS {
        for _ in 0..convs {
            let weight = Tensor::<4>::random([channels, in_channels, 3, 3], Distribution::Normal(0.0, 0.05), &device);
            let bias = Tensor::<1>::random([channels], Distribution::Normal(0.0, 0.05), &device);
            flops += 2.0 * (layer_side * layer_side * in_channels * channels * 9) as f64;
            weights.push((weight, bias));
            in_channels = channels;
        }
        layer_side /= 2;
    }
    let input = Tensor::<4>::random([batch, 3, side, side], Distribution::Normal(0.0, 50.0), &device);
    let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();

    let run_ours = |storage: Storage| {
        let packed: Vec<_> = weights.iter().map(|(w, b)| PackedConv3x3::new(w.clone(), Some(b.clone()), storage)).collect();
        time(repeats, &device, || {
            let mut x = input.clone().permute([0, 2, 3, 1]);
            let mut layer = 0;
            for (convs, _) in VGG16_BLOCKS {
                for _ in 0..convs {
                    x = packed[layer].forward(x, true);
                    layer += 1;
                }
                x = max_pool_2x2(x);
            }
            x
        })
    };
    let mut rows = vec![("conv3x3-gpu (implicit GEMM, NHWC), f32", run_ours(Storage::F32))];
    if supports_f16(&device) {
        rows.push(("conv3x3-gpu (implicit GEMM, NHWC), f16 storage", run_ours(Storage::F16)));
    }
    let burns = time(repeats, &device, || {
        let mut x = input.clone();
        let mut layer = 0;
        for (convs, _) in VGG16_BLOCKS {
            for _ in 0..convs {
                let (weight, bias) = &weights[layer];
                x = relu(conv2d(x, weight.clone(), Some(bias.clone()), ConvOptions::new([1, 1], [1, 1], [1, 1], 1)));
                layer += 1;
            }
            x = pool.forward(x);
        }
        x
    });

    let per_image = |seconds: f64| seconds * 1e3 / batch as f64;
    let rate = |seconds: f64| flops * batch as f64 / seconds / 1e9;
    println!("VGG16 convolution stack on wgpu, {side}x{side}, batch {batch}, {repeats} repeats");
    if !supports_f16(&device) {
        println!("(no f16 row: this adapter has no shader-f16)");
    }
    println!("| path | best ms/image | median ms/image | GFLOP/s (best) | vs burn conv2d |");
    println!("|---|---|---|---|---|");
    rows.push(("burn conv2d + relu + max_pool2d", burns));
    for (name, (best, median)) in rows {
        println!("| {name} | {:.1} | {:.1} | {:.1} | {:.2}x |", per_image(best), per_image(median), rate(best), best / burns.0);
    }
}
