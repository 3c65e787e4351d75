//! Loupe: image-aesthetics scoring after "Image aesthetic predictors based on weighted CNNs"
//! (VGG16 fine-tuned on AVA with sample weights against its score imbalance).
//!
//! - [`model`]: the `Vgg16` backbone and its heads (`RegressionHead` or `HistogramHead` over one of
//!   four layer stacks: `paper` = VGG16's own classifier, `compact` = a small spatial head for the
//!   browser, `statistics` and `quadratic` = read-outs of every block's channel statistics).
//! - [`preprocess`]: the one image pipeline used everywhere (decode, EXIF, RGB, 224x224, normalise).
//! - [`prediction`]: what a model says about an image (score, histogram, std = difficulty).
//! - [`weights`]: Loupe's self-describing weight files.
//! - [`crop`]: the paper's crop application (best of N random crops).
//! - `imagenet` (feature `import`): ImageNet VGG16 initialisation from safetensors or torchvision `.pth`.
//! - [`scorer`]: a loaded model on a device, turning images into predictions.
//! - [`correlation`]: Pearson and Spearman, as the field reports them.

pub mod correlation;
pub mod crop;
pub mod error;
#[cfg(feature = "import")]
pub mod imagenet;
pub mod model;
pub mod prediction;
pub mod preprocess;
pub mod rng;
pub mod scorer;
#[cfg(target_arch = "wasm32")]
pub mod web;
pub mod weights;

pub use error::{LoupeError, Result};
pub use prediction::Prediction;
pub use scorer::Scorer;

/// Re-exported so callers name the same burn types (Device, Tensor) as the crate.
pub use burn;

/// Reads one of the library's enums from text (a command-line flag, a form field) by its serde
/// name, so every enum has one spelling in JSON, weight files and on the command line; `-` and
/// `_` are interchangeable (`caffe-bgr` = `caffe_bgr`). Unknown names list the known ones.
#[macro_export]
macro_rules! from_str_by_serde_name {
    ($($name:ty),+ $(,)?) => {$(
        impl ::std::str::FromStr for $name {
            type Err = ::std::string::String;

            fn from_str(text: &str) -> ::std::result::Result<Self, Self::Err> {
                $crate::parse_serde_name(text)
            }
        }
    )+};
}

/// The parser behind [`from_str_by_serde_name`]. Tries the text as given, then with `-` and `_`
/// swapped either way.
pub fn parse_serde_name<T: serde::de::DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
    let text = text.trim();
    let spellings = [text.to_string(), text.replace('-', "_"), text.replace('_', "-")];
    let mut first_error = None;
    for spelling in spellings {
        match serde_json::from_value(serde_json::Value::String(spelling)) {
            Ok(value) => return Ok(value),
            Err(error) => first_error = first_error.or(Some(error.to_string())),
        }
    }
    Err(first_error.unwrap_or_default())
}
