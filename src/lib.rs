//! Loupe: image-aesthetics scoring after "Weighted CNNs for image aesthetics" (VGG16 fine-tuned on
//! AVA with sample weights against its score imbalance).
//!
//! - [`model`]: the `Vgg16` backbone and the two heads (`paper` = VGG16's own classifier,
//!   `compact` = a small spatial head for the browser), with regression or histogram outputs.
//! - [`preprocess`]: the one image pipeline used everywhere (decode, EXIF, RGB, 224x224, normalise).
//! - [`prediction`]: what a model says about an image (score, histogram, std = difficulty).
//! - [`weights`]: Loupe's self-describing weight files.
//! - [`crop`]: the paper's crop application (best of N random crops).
//! - `imagenet` (feature `import`): ImageNet VGG16 initialisation from safetensors or torchvision `.pth`.
//! - [`scorer`]: a loaded model on a device, turning images into predictions.

pub mod crop;
pub mod error;
#[cfg(feature = "import")]
pub mod imagenet;
pub mod model;
pub mod prediction;
pub mod preprocess;
pub mod scorer;
pub mod weights;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{LoupeError, Result};
pub use prediction::Prediction;
pub use scorer::Scorer;

/// Re-exported so callers name the same burn types (Device, Tensor) as the crate.
pub use burn;
