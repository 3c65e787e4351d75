//! The conv base reproduces the published VGG16 activations: our safetensors import, layer
//! layout and Caffe preprocessing together against onnxruntime's block5_pool outputs.

mod common;

use common::*;
use loupe::imagenet::import_imagenet;
use loupe::model::{HeadKind, ModelConfig, OutputKind};
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

    for name in ["chelsea", "coffee"] {
        let image = decode_image(&fixture_bytes(&format!("{name}_240.png"))).unwrap();
        assert_eq!(image.dimensions(), (240, 240));
        let features = net.backbone.forward(input_unresized(&image, InputConvention::CaffeBgr, &device));
        assert_eq!(features.dims(), [1, 512, 7, 7]);
        let (shape, expected) = read_npy(&format!("{name}_block5_pool_chw.npy"));
        assert_eq!(shape, vec![512, 7, 7]);
        let error = relative_error(&to_vec(features), &expected);
        println!("{name}: relative error {error:.2e}");
        assert!(error < 1e-3, "{name}: relative error {error}");
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
    let mut tiny = ModelConfig::new(OutputKind::Regression, HeadKind::Compact)
        .with_width_divisor(8)
        .init(&device)
        .unwrap();
    assert!(import_imagenet(&mut tiny, &imagenet_safetensors()).is_err());
}
