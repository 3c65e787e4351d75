//! The kernels on a wgpu adapter (Mesa lavapipe in CI) against burn's own conv2d and max-pool on
//! flex, for shapes that exercise every edge of the tiling: partial pixel and channel tiles,
//! VGG's 3-channel first layer, depths that are not a multiple of the tile's, and a grid large
//! enough to spill pixel tiles onto its z axis.

use std::sync::OnceLock;

use burn::nn::pool::MaxPool2dConfig;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use conv3x3_gpu::{PackedConv3x3, max_pool_2x2, runs_on};

/// The adapter is set up once per process (a second set-up is refused).
fn gpu() -> Device {
    static GPU: OnceLock<Device> = OnceLock::new();
    GPU.get_or_init(|| Device::wgpu_options().init().expect("no wgpu adapter: install mesa-vulkan-drivers (lavapipe) for this test")).clone()
}

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let count = shape.iter().product();
    Tensor::from_data(TensorData::new(values(count, seed), shape), device)
}

fn to_vec<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data().try_into_vec::<f32>().unwrap()
}

/// Largest absolute difference, relative to the largest reference magnitude.
fn relative_error(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    actual.iter().zip(expected).fold(0f32, |m, (a, e)| m.max((a - e).abs())) / scale
}

/// `[N, C, H, W]` on flex, as the reference computes it, → channels last.
fn reference_conv(x: &Tensor<4>, weight: &Tensor<4>, bias: Option<&Tensor<1>>, relu: bool) -> Vec<f32> {
    let y = conv2d(x.clone(), weight.clone(), bias.cloned(), ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
    let y = if relu { burn::tensor::activation::relu(y) } else { y };
    to_vec(y.permute([0, 2, 3, 1]))
}

fn check_conv(batch: usize, height: usize, width: usize, in_channels: usize, out_channels: usize, with_bias: bool, relu: bool) {
    let flex = Device::flex();
    let gpu = gpu();
    let seed = (batch * 1000 + height * 100 + width * 10 + in_channels + out_channels) as u64;
    let x = tensor([batch, in_channels, height, width], seed, &flex);
    let weight = tensor([out_channels, in_channels, 3, 3], seed + 1, &flex);
    let bias = with_bias.then(|| tensor([out_channels], seed + 2, &flex));
    let expected = reference_conv(&x, &weight, bias.as_ref(), relu);

    let packed = PackedConv3x3::new(weight.to_device(&gpu), bias.map(|b| b.to_device(&gpu)));
    let actual = to_vec(packed.forward(x.to_device(&gpu).permute([0, 2, 3, 1]), relu));
    let error = relative_error(&actual, &expected);
    let case = format!("{batch}x{height}x{width}, {in_channels} -> {out_channels}, bias {with_bias}, relu {relu}");
    println!("{case}: relative error {error:.2e}");
    assert!(error < 1e-5, "{case}: {error}");
}

#[test]
fn wgpu_is_a_device_the_kernels_run_on_and_flex_is_not() {
    assert!(runs_on(&gpu()));
    assert!(!runs_on(&Device::flex()));
}

#[test]
fn vgg_first_layer_with_partial_pixel_tiles() {
    // Depth 27: two depth steps, the second mostly padding; 2 x 13 x 9 pixels: a partial tile.
    check_conv(2, 13, 9, 3, 64, true, true);
}

#[test]
fn deep_layer_with_several_channel_tiles() {
    check_conv(1, 20, 18, 64, 128, true, true);
}

#[test]
fn narrow_layers_without_bias_or_relu() {
    // Fewer channels than a tile on both sides, and a depth (45) between tile multiples.
    check_conv(3, 5, 7, 5, 6, false, false);
}

#[test]
fn one_pixel_image_sees_only_padding_around_it() {
    check_conv(1, 1, 1, 8, 16, true, false);
}

#[test]
fn large_image_spills_pixel_tiles_onto_the_z_axis() {
    // 1500 x 1500 = 2.25 M pixels = 35,157 tiles of 64: more than one grid axis holds.
    check_conv(1, 1500, 1500, 3, 4, true, true);
}

#[test]
fn max_pool_matches_burns_including_odd_sides() {
    let flex = Device::flex();
    let gpu = gpu();
    for [batch, channels, height, width] in [[2, 64, 8, 6], [1, 5, 7, 9]] {
        let x = tensor([batch, channels, height, width], (channels * height) as u64, &flex);
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        let expected = to_vec(pool.forward(x.clone()).permute([0, 2, 3, 1]));
        let actual = to_vec(max_pool_2x2(x.to_device(&gpu).permute([0, 2, 3, 1])));
        assert_eq!(actual, expected, "{batch}x{channels}x{height}x{width}");
    }
}
