//! The kernels on a wgpu adapter (Mesa lavapipe in CI) against burn's own conv2d and max-pool on
//! flex, for shapes that exercise every edge of the tiling: partial pixel and channel tiles,
//! VGG's 3-channel first layer, depths that are not a multiple of the tile's, and a grid large
//! enough to spill pixel tiles onto its z axis; in f32, and in f16 where the adapter has it.

use std::sync::OnceLock;

use burn::nn::pool::MaxPool2dConfig;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use conv3x3_gpu::{PackedConv3x3, Storage, max_pool_2x2, runs_on, supports_f16};

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
    x.cast(FloatDType::F32).into_data().try_into_vec::<f32>().unwrap()
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
    check_conv_stored(Storage::F32, batch, height, width, in_channels, out_channels, with_bias, relu);
}

/// `storage`'s tolerance: f32 sums in another order; f16 rounds inputs, weights and outputs to
/// 11 significant bits (2^-11 ≈ 4.9e-4 each) before and after f32 sums.
fn tolerance(storage: Storage) -> f32 {
    match storage {
        Storage::F32 => 1e-5,
        Storage::F16 => 1e-3,
    }
}

#[allow(clippy::too_many_arguments)]
fn check_conv_stored(
    storage: Storage,
    batch: usize,
    height: usize,
    width: usize,
    in_channels: usize,
    out_channels: usize,
    with_bias: bool,
    relu: bool,
) {
    let flex = Device::flex();
    let gpu = gpu();
    let seed = (batch * 1000 + height * 100 + width * 10 + in_channels + out_channels) as u64;
    let x = tensor([batch, in_channels, height, width], seed, &flex);
    let weight = tensor([out_channels, in_channels, 3, 3], seed + 1, &flex);
    let bias = with_bias.then(|| tensor([out_channels], seed + 2, &flex));
    let expected = reference_conv(&x, &weight, bias.as_ref(), relu);

    let packed = PackedConv3x3::new(weight.to_device(&gpu), bias.map(|b| b.to_device(&gpu)), storage);
    let output = packed.forward(x.to_device(&gpu).permute([0, 2, 3, 1]), relu);
    assert_eq!(output.dtype(), packed.dtype(), "computed in the packed float type");
    let actual = to_vec(output);
    let error = relative_error(&actual, &expected);
    let case = format!("{storage:?}, {batch}x{height}x{width}, {in_channels} -> {out_channels}, bias {with_bias}, relu {relu}");
    println!("{case}: relative error {error:.2e}");
    assert!(error < tolerance(storage), "{case}: {error}");
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

/// f16 storage on the shapes above and on VGG16's deepest layer (depth 4,608, the longest sum).
#[test]
fn f16_storage_matches_flex_where_the_adapter_has_it() {
    if !supports_f16(&gpu()) {
        println!("skipped: this adapter has no f16 (shader-f16)");
        return;
    }
    assert_eq!(Storage::fastest_on(&gpu()), Storage::F16);
    check_conv_stored(Storage::F16, 2, 13, 9, 3, 64, true, true);
    check_conv_stored(Storage::F16, 1, 20, 18, 64, 128, true, true);
    check_conv_stored(Storage::F16, 3, 5, 7, 5, 6, false, false);
    check_conv_stored(Storage::F16, 1, 14, 14, 512, 512, true, true);
}

#[test]
fn flex_has_no_f16_kernels() {
    assert!(!supports_f16(&Device::flex()));
    assert_eq!(Storage::fastest_on(&Device::flex()), Storage::F32);
}

#[test]
fn max_pool_matches_burns_including_odd_sides() {
    let flex = Device::flex();
    let gpu = gpu();
    for [batch, channels, height, width] in [[2, 64, 8, 6], [1, 5, 7, 9]] {
        let x = tensor([batch, channels, height, width], (channels * height) as u64, &flex);
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        let expected = to_vec(pool.forward(x.clone()).permute([0, 2, 3, 1]));
        let actual = to_vec(max_pool_2x2(x.clone().to_device(&gpu).permute([0, 2, 3, 1])));
        assert_eq!(actual, expected, "{batch}x{channels}x{height}x{width}");
        if supports_f16(&gpu) {
            // The largest of four f16 values is one of them: exact, once the input is f16.
            let half = x.to_device(&gpu).cast(FloatDType::F16);
            let expected = to_vec(pool.forward(half.clone().cast(FloatDType::F32).to_device(&flex)).permute([0, 2, 3, 1]));
            let pooled = max_pool_2x2(half.permute([0, 2, 3, 1]));
            assert_eq!(pooled.dtype(), DType::F16);
            assert_eq!(to_vec(pooled), expected, "f16 {batch}x{channels}x{height}x{width}");
        }
    }
}
