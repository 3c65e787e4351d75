//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use loupe::burn;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// `../shared/data` beside the checkout (or `LOUPE_SHARED_DATA`): real data too large to commit.
pub fn shared_data() -> PathBuf {
    std::env::var_os("LOUPE_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

pub fn imagenet_safetensors() -> PathBuf {
    let path = shared_data().join("vgg16/vgg16_imagenet_conv_bgr_caffe.safetensors");
    assert!(path.is_file(), "{} is missing: set LOUPE_SHARED_DATA to the shared data folder", path.display());
    path
}

pub fn to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_into_vec_as::<f32>().unwrap()
}

/// max |a - b| / max |b|: the relative error of `actual` against `expected`.
pub fn relative_error(actual: &[f32], expected: &[f32]) -> f32 {
    relative_error_with_floor(actual, expected, 0.0)
}

/// Largest difference over the larger of `floor` and the largest expected magnitude.
pub fn relative_error_with_floor(actual: &[f32], expected: &[f32], floor: f32) -> f32 {
    assert_eq!(actual.len(), expected.len());
    let scale = expected.iter().fold(floor, |m, v| m.max(v.abs()));
    let diff = actual.iter().zip(expected).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

pub fn flex() -> Device {
    Device::flex()
}
