//! The conv base reproduces the published VGG16 activations: our safetensors import, layer
//! layout and Caffe preprocessing together against onnxruntime's block5_pool outputs — through
//! burn's generic conv2d and through Loupe's CPU path (`conv3x3`, what scoring on flex runs).

mod common;

use common::*;
use loupe::burn::tensor::{Distribution, Tensor};
use loupe::imagenet::import_imagenet;
use loupe::model::{HeadKind, ModelConfig, OutputKind, StatisticsRegion};
use loupe::preprocess::{InputConvention, decode_image, input_unresized};

fn read_npy(name: &str) -> (Vec<u64>, Vec<f32>) {
    let bytes = fixture_bytes(name);
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

#[test]
fn vgg16_conv_base_matches_reference_block5_pool() {
    let device = flex();
    let mut net = ModelConfig::new(OutputKind::Regression, HeadKind::Compact).init(&device).unwrap();
    let fc_loaded = import_imagenet(&mut net, &imagenet_safetensors()).unwrap();
    assert!(!fc_loaded, "the conv-only base has no fc6/fc7");
    let generic = net.backbone.clone();
    let mut prepared = net.backbone;
    prepared.prepare_for(&device);
    assert!(prepared.is_prepared_for(&device) && !generic.is_prepared_for(&device));

    for name in ["chelsea", "coffee"] {
        let image = decode_image(&fixture_bytes(&format!("{name}_240.png"))).unwrap();
        assert_eq!(image.dimensions(), (240, 240));
        let (shape, expected) = read_npy(&format!("{name}_block5_pool_chw.npy"));
        assert_eq!(shape, vec![512, 7, 7]);
        for (path, backbone) in [("flex conv2d", &generic), ("conv3x3", &prepared)] {
            let features = backbone.forward(input_unresized(&image, InputConvention::CaffeBgr, &device));
            assert_eq!(features.dims(), [1, 512, 7, 7]);
            let error = relative_error(&to_vec(features), &expected);
            println!("{name} through {path}: relative error {error:.2e}");
            assert!(error < 1e-3, "{name} through {path}: relative error {error}");
        }
    }
}

/// Loupe's CPU path against burn's generic convolution on everything the heads and the crop
/// search read: the map, every block's statistics (over either region) and the per-block grids,
/// on a batch of two and on a photo-shaped input whose sides are not multiples of 32 (crop level
/// passes).
#[test]
fn cpu_path_matches_flex_conv2d_on_maps_statistics_and_grids() {
    let device = flex();
    let mut net = ModelConfig::new(OutputKind::Regression, HeadKind::Compact).init(&device).unwrap();
    import_imagenet(&mut net, &imagenet_safetensors()).unwrap();
    let generic = net.backbone.clone();
    let mut prepared = net.backbone;
    prepared.prepare_for(&device);
    for shape in [[2, 3, 224, 224], [1, 3, 171, 250]] {
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 60.0), &device);
        let expected = generic.forward_features(x.clone(), Some(StatisticsRegion::Whole));
        let actual = prepared.forward_features(x.clone(), Some(StatisticsRegion::Whole));
        assert_eq!(actual.map.dims(), expected.map.dims());
        let map_error = relative_error(&to_vec(actual.map), &to_vec(expected.map));
        let whole = to_vec(expected.block_statistics.unwrap());
        let statistics_error = relative_error(&to_vec(actual.block_statistics.unwrap()), &whole);
        println!("{shape:?}: map {map_error:.2e}, block statistics {statistics_error:.2e}");
        assert!(map_error < 1e-3 && statistics_error < 1e-3, "{shape:?}: map {map_error}, statistics {statistics_error}");
        let expected = to_vec(generic.forward_features(x.clone(), Some(StatisticsRegion::DeepInterior)).block_statistics.unwrap());
        let actual = to_vec(prepared.forward_features(x.clone(), Some(StatisticsRegion::DeepInterior)).block_statistics.unwrap());
        let interior_error = relative_error(&actual, &expected);
        println!("{shape:?}: deep-interior block statistics {interior_error:.2e}");
        assert!(interior_error < 1e-3, "{shape:?}: deep-interior statistics {interior_error}");
        // And they are other statistics than the whole outputs'.
        assert!(relative_error(&actual, &whole) > 1e-2, "{shape:?}: the interior gave the whole output's statistics");

        let (expected_map, expected_grids) = generic.forward_block_grids(x.clone());
        let (actual_map, actual_grids) = prepared.forward_block_grids(x);
        assert_eq!(actual_grids.len(), 5);
        assert!(relative_error(&to_vec(actual_map), &to_vec(expected_map)) < 1e-3);
        for (block, ((mean, square), (expected_mean, expected_square))) in actual_grids.into_iter().zip(expected_grids).enumerate() {
            assert_eq!(mean.dims(), expected_mean.dims());
            let error = relative_error(&to_vec(mean), &to_vec(expected_mean)).max(relative_error(&to_vec(square), &to_vec(expected_square)));
            assert!(error < 1e-3, "{shape:?} block {block} grid: relative error {error}");
        }
    }
}

#[test]
fn import_refuses_missing_and_foreign_files() {
    let device = flex();
    let mut net = ModelConfig::new(OutputKind::Regression, HeadKind::Compact).init(&device).unwrap();
    let missing = import_imagenet(&mut net, std::path::Path::new("/nonexistent/vgg16.safetensors"));
    assert!(missing.unwrap_err().to_string().contains("does not exist"));
    let not_weights = import_imagenet(&mut net, &fixture("rocket.jpg"));
    assert!(not_weights.is_err());
    // A tiny-width model cannot take full-width ImageNet tensors.
    let mut tiny = ModelConfig::new(OutputKind::Regression, HeadKind::Compact).with_width_divisor(8).init(&device).unwrap();
    assert!(import_imagenet(&mut tiny, &imagenet_safetensors()).is_err());
}
