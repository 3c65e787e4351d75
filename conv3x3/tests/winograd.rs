//! The convolution against the plain definition — Winograd from 16 input channels (4x4 output
//! tiles up to 256 output channels, 2x2 above), im2col below — on shapes that exercise every edge:
//! odd sizes (tiles half outside the image), 1-pixel images, batches, channel counts that do not
//! fill a SIMD register, and layers big enough to be split across threads and channel blocks.

use conv3x3::{Activation, Conv3x3, LARGE_TILE_MAX_CHANNELS, Nhwc, WinogradTile, max_pool_2x2, reference_conv3x3};

/// Deterministic values in -1..1 (xorshift), so a failure reproduces.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Largest difference relative to the largest reference magnitude.
fn relative_error(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len());
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    actual.iter().zip(expected).fold(0.0f32, |m, (a, e)| m.max((a - e).abs())) / scale
}

fn check(batch: usize, height: usize, width: usize, cin: usize, cout: usize, activation: Activation) {
    let seed = (batch * 1_000_003 + height * 1009 + width * 31 + cin * 7 + cout) as u64;
    let input = Nhwc::new(values(batch * height * width * cin, seed), batch, height, width, cin).unwrap();
    let weight = values(cout * cin * 9, seed + 1);
    let bias = values(cout, seed + 2);
    let conv = Conv3x3::new(&weight, Some(&bias), cin, cout).unwrap();
    let actual = conv.forward(&input, activation).unwrap();
    let expected = reference_conv3x3(&input, &weight, Some(&bias), cout, activation);
    assert_eq!(actual.shape(), expected.shape());
    let error = relative_error(&actual.data, &expected.data);
    // F(4x4, 3x3)'s transforms scale values by up to 8 and by sixths before they cancel: with a
    // few hundred channels its f32 rounding reaches 1-1.5e-5 of the largest output here (F(2x2,
    // 3x3): under 1e-5). The model's own tolerance, against flex and the reference activations,
    // is 1e-3 after 13 layers.
    assert!(error < 5e-5, "{batch}x{height}x{width}x{cin} → {cout}: relative error {error}");
}

#[test]
fn matches_the_definition_on_every_edge_case() {
    for &(batch, height, width, cin, cout) in
        &[(1, 1, 1, 1, 1), (1, 1, 7, 3, 5), (1, 5, 1, 2, 3), (1, 4, 4, 3, 8), (2, 7, 9, 5, 17), (1, 13, 6, 16, 33), (3, 11, 11, 8, 64)]
    {
        check(batch, height, width, cin, cout, Activation::Identity);
        check(batch, height, width, cin, cout, Activation::Relu);
    }
}

#[test]
fn both_winograd_tiles_match_the_definition_on_edge_cases() {
    // Up to 256 output channels a layer uses 4x4 output tiles, above 2x2: odd and tiny images
    // (tiles overhanging the edges) with each.
    for cout in [LARGE_TILE_MAX_CHANNELS, LARGE_TILE_MAX_CHANNELS + 1] {
        let expected = if cout <= LARGE_TILE_MAX_CHANNELS { WinogradTile::Large } else { WinogradTile::Small };
        assert_eq!(Conv3x3::new(&vec![0.0; cout * 16 * 9], None, 16, cout).unwrap().winograd_tile(), Some(expected));
        for &(batch, height, width) in &[(1, 1, 1), (1, 2, 7), (2, 5, 6), (1, 9, 3), (1, 13, 11)] {
            check(batch, height, width, 16, cout, Activation::Relu);
        }
    }
    assert_eq!(Conv3x3::new(&[0.0; 3 * 64 * 9], None, 3, 64).unwrap().winograd_tile(), None);
}

#[test]
fn matches_the_definition_on_vgg_sized_layers() {
    // A first layer (3 → 64 channels) and a deep one (14x14, many channels: channel blocks).
    check(1, 32, 30, 3, 64, Activation::Relu);
    check(1, 14, 14, 256, 128, Activation::Relu);
    check(2, 9, 10, 96, 160, Activation::Identity);
    // Wide layers on odd sizes.
    check(1, 7, 9, 320, 288, Activation::Relu);
    check(2, 4, 4, 300, 300, Activation::Identity);
}

#[test]
fn max_pool_floors_odd_sizes() {
    let input = Nhwc::new((0..2 * 5 * 3 * 2).map(|v| v as f32).collect(), 2, 5, 3, 2).unwrap();
    let pooled = max_pool_2x2(&input);
    assert_eq!(pooled.shape(), [2, 2, 1, 2]);
    // Image 0, output (0, 0), channel c: max over rows 0..2, columns 0..2 = pixel (1, 1).
    let at = |n: usize, y: usize, x: usize, c: usize| ((n * 5 + y) * 3 + x) * 2 + c;
    assert_eq!(
        pooled.data,
        vec![
            at(0, 1, 1, 0) as f32,
            at(0, 1, 1, 1) as f32,
            at(0, 3, 1, 0) as f32,
            at(0, 3, 1, 1) as f32,
            at(1, 1, 1, 0) as f32,
            at(1, 1, 1, 1) as f32,
            at(1, 3, 1, 0) as f32,
            at(1, 3, 1, 1) as f32,
        ]
    );
}

#[test]
fn layouts_round_trip() {
    let shape = [2, 3, 4, 5];
    let nchw = values(2 * 3 * 4 * 5, 9);
    let nhwc = Nhwc::from_nchw(&nchw, shape).unwrap();
    assert_eq!(nhwc.shape(), [2, 4, 5, 3]);
    // Channel 2 of pixel (1, 3) of image 1.
    assert_eq!(nhwc.data[((4 + 1) * 5 + 3) * 3 + 2], nchw[((3 + 2) * 4 + 1) * 5 + 3]);
    assert_eq!(nhwc.to_nchw(), nchw);
}

#[test]
fn shapes_that_do_not_fit_are_errors() {
    assert!(Conv3x3::new(&[0.0; 17], None, 1, 2).is_err());
    assert!(Conv3x3::new(&[0.0; 18], Some(&[0.0; 3]), 1, 2).is_err());
    assert!(Conv3x3::new(&[], None, 0, 2).is_err());
    let conv = Conv3x3::new(&[0.0; 18], None, 1, 2).unwrap();
    let input = Nhwc::new(vec![0.0; 8], 1, 2, 2, 2).unwrap();
    assert!(conv.forward(&input, Activation::Relu).is_err());
    assert!(Nhwc::new(vec![0.0; 7], 1, 2, 2, 2).is_err());
}
