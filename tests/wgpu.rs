//! Native wgpu (Mesa lavapipe in CI) computes what flex computes.

mod common;

use common::*;
use loupe::burn::tensor::Device;
use loupe::imagenet::import_imagenet;
use loupe::model::{HeadKind, ModelConfig, OutputKind};
use loupe::preprocess::{InputConvention, decode_image, input_batch};
use loupe::weights::{self, Precision, WeightMetadata};

fn wgpu() -> Device {
    Device::wgpu_options().init().expect("no wgpu adapter: install mesa-vulkan-drivers (lavapipe) for this test")
}

#[test]
fn wgpu_matches_flex_on_vgg16_with_both_heads() {
    let flex = flex();
    let gpu = wgpu();
    let photos: Vec<_> = ["rocket.jpg", "coffee.jpg"].iter().map(|name| decode_image(&fixture_bytes(name)).unwrap()).collect();
    for output in [OutputKind::Regression, OutputKind::Histogram] {
        let config = ModelConfig::new(output, HeadKind::Compact);
        let mut net = config.init(&flex).unwrap();
        import_imagenet(&mut net, &imagenet_safetensors()).unwrap();
        let mut metadata = WeightMetadata::new(config, InputConvention::CaffeBgr);
        metadata.precision = Precision::F32;
        let bytes = weights::encode(&net, &metadata).unwrap();
        let (on_gpu, _) = weights::decode(&bytes, &gpu).unwrap();

        let expected = to_vec(net.forward(input_batch(&photos, InputConvention::CaffeBgr, &flex)));
        let actual = to_vec(on_gpu.forward(input_batch(&photos, InputConvention::CaffeBgr, &gpu)));
        let error = relative_error(&actual, &expected);
        println!("{output:?}: wgpu vs flex relative error {error:.2e}");
        assert!(error < 1e-3, "{output:?}: {error}");
    }
}
