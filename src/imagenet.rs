//! ImageNet initialisation: torchvision-named VGG16 weights (`features.N.*`, and where present
//! `classifier.0/3.*` = fc6/fc7) from a `.safetensors` file or torchvision's `.pth`
//! (`vgg16-397923af.pth`). Names match our layout, so nothing is remapped; only the variant names
//! of our layer enums are skipped.

use std::path::Path;

use burn::store::{ModuleSnapshot, PytorchStore, SafetensorsStore};

use crate::error::{LoupeError, Result};
use crate::model::{AestheticNet, HeadLayers};
use crate::preprocess::InputConvention;

const BACKBONE_KEYS: &str = r"^features\.";
const FC6_FC7_KEYS: &str = r"^classifier\.(0|3)\.";
const BACKBONE_TENSORS: usize = 26;
const FC6_FC7_TENSORS: usize = 4;

/// The input convention of an ImageNet file unless the user says otherwise: torchvision's `.pth`
/// files are RGB/std-normalised; our safetensors base is the original Caffe BGR.
pub fn default_convention(path: &Path) -> InputConvention {
    if is_pytorch(path) { InputConvention::TorchvisionRgb } else { InputConvention::CaffeBgr }
}

fn is_pytorch(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("pth" | "pt"))
}

/// Load the tensors of `path` whose names match `keys` into `module`; returns how many.
fn load_matching<M: ModuleSnapshot>(module: &mut M, path: &Path, keys: &str, partial: bool) -> Result<usize> {
    let applied = if is_pytorch(path) {
        let mut store = PytorchStore::from_file(path).skip_enum_variants(true).with_regex(keys).allow_partial(partial);
        module.load_from(&mut store).map_err(|e| e.to_string())
    } else {
        let mut store = SafetensorsStore::from_file(path).skip_enum_variants(true).with_regex(keys).allow_partial(partial);
        module.load_from(&mut store).map_err(|e| e.to_string())
    }
    .map_err(|e| LoupeError::Weights(format!("loading ImageNet weights from {}: {e}", path.display())))?;
    Ok(applied.applied.len())
}

/// Fill `net`'s backbone from ImageNet VGG16 weights, and fc6/fc7 of a paper head when the file
/// has them (returns whether it did). A full-width model is required.
pub fn import_imagenet(net: &mut AestheticNet, path: &Path) -> Result<bool> {
    if !path.is_file() {
        return Err(LoupeError::Weights(format!("{} does not exist", path.display())));
    }
    let loaded = load_matching(&mut net.backbone, path, BACKBONE_KEYS, false)?;
    if loaded != BACKBONE_TENSORS {
        return Err(LoupeError::Weights(format!(
            "{}: expected VGG16's {BACKBONE_TENSORS} conv tensors (features.N.weight/bias), found {loaded}",
            path.display()
        )));
    }
    // fc6/fc7 exist only in full checkpoints (torchvision's); the conv-only base has none.
    let HeadLayers::Paper(paper) = net.head.layers_mut() else {
        return Ok(false);
    };
    Ok(load_matching(paper, path, FC6_FC7_KEYS, true)? == FC6_FC7_TENSORS)
}
