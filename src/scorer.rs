//! A loaded model on a device: images in, [`Prediction`]s out.

use burn::tensor::{Device, Tensor};
use image::RgbImage;

use crate::error::{LoupeError, Result};
use crate::model::{AestheticNet, BackboneFeatures, HISTOGRAM_BINS, OutputKind, StatisticsRegion, read_values};
use crate::prediction::Prediction;
use crate::preprocess::input_batch;
use crate::weights::{self, Part, SharedBackbone, WeightMetadata};

/// How many 224x224 images go through the network at once (memory stays ~ 0.5 GB on flex).
pub const DEFAULT_BATCH: usize = 8;

#[derive(Debug)]
pub struct Scorer {
    pub net: AestheticNet,
    pub metadata: WeightMetadata,
    pub device: Device,
    /// The [`SharedBackbone::load`] this model's head was joined to, if any.
    shared_backbone: Option<u64>,
}

impl Scorer {
    /// A model ready for inference on `device` (its backbone prepared for Loupe's own kernels
    /// there, unless a shared backbone already was).
    pub fn new(mut net: AestheticNet, metadata: WeightMetadata, device: Device) -> Self {
        if !net.backbone.is_prepared_for(&device) {
            net.backbone.prepare_for(&device);
        }
        Self { net, metadata, device, shared_backbone: None }
    }

    /// The model in a whole-model or head file, from what [`weights::read_header`] returned for
    /// it. A head joins `backbone`, the loaded backbone file it was trained on; every scorer
    /// joined to the same loaded backbone shares its passes.
    pub fn from_model_file(metadata: WeightMetadata, payload: &[u8], backbone: Option<&SharedBackbone>, device: &Device) -> Result<Self> {
        match metadata.part {
            Part::Full => {
                let (net, metadata) = weights::decode_checked(metadata, payload, device)?;
                Ok(Self::new(net, metadata, device.clone()))
            }
            Part::Head => {
                let backbone = backbone.ok_or_else(|| LoupeError::Weights("a head file needs its backbone file too, loaded first".into()))?;
                let (net, metadata) = weights::decode_head_checked(metadata, payload, backbone, device)?;
                Ok(Self { shared_backbone: Some(backbone.load), ..Self::new(net, metadata, device.clone()) })
            }
            Part::Backbone => Err(LoupeError::Weights("a backbone file holds no model: give its head files with it".into())),
        }
    }

    /// Scorers from a set of weight files: whole models, and/or one backbone file with the head
    /// files trained on it (in any order).
    pub fn from_weight_files(files: &[&[u8]], device: &Device) -> Result<Vec<Self>> {
        // Each header (and the checksum over its payload) is read once.
        let files = files.iter().map(|bytes| weights::read_header(bytes)).collect::<Result<Vec<_>>>()?;
        let (backbones, models): (Vec<_>, Vec<_>) = files.into_iter().partition(|(metadata, _)| metadata.part == Part::Backbone);
        if backbones.len() > 1 {
            return Err(LoupeError::Weights("more than one backbone file given".into()));
        }
        let backbone =
            backbones.into_iter().next().map(|(metadata, payload)| weights::decode_backbone_checked(metadata, payload, device)).transpose()?;
        if models.is_empty() {
            return Err(LoupeError::Weights("no model among the weight files (only a backbone?)".into()));
        }
        models.into_iter().map(|(metadata, payload)| Self::from_model_file(metadata, payload, backbone.as_ref(), device)).collect()
    }

    pub fn output(&self) -> OutputKind {
        self.metadata.model.output
    }

    /// The network input for these images (each resized to 224x224, normalised as trained).
    pub fn input(&self, images: &[RgbImage]) -> Tensor<4> {
        input_batch(images, self.metadata.input, &self.device)
    }

    /// Raw network output for a prepared batch: `[N, 1]` scores or `[N, 10]` probabilities.
    pub fn forward(&self, input: Tensor<4>) -> Tensor<2> {
        self.net.forward(input)
    }

    /// Whether `other` runs the very same backbone on the same input (heads joined to one loaded
    /// backbone file), so one backbone pass can feed both heads. Not by the files' `backbone_id`:
    /// two files claiming one id at different widths would feed a head the wrong feature map.
    pub fn shares_backbone_with(&self, other: &Scorer) -> bool {
        self.shared_backbone.is_some()
            && self.shared_backbone == other.shared_backbone
            && self.metadata.input == other.metadata.input
            && self.device == other.device
    }

    /// Predictions for any number of images, in batches. Blocks until done: native code, or a
    /// CPU device in the browser; WebGPU must use [`Scorer::predict_async`].
    pub fn predict(&self, images: &[RgbImage]) -> Result<Vec<Prediction>> {
        block_on(self.predict_async(images))?
    }

    /// Predictions, reading results back asynchronously (WebGPU cannot block).
    pub async fn predict_async(&self, images: &[RgbImage]) -> Result<Vec<Prediction>> {
        let per_model = Self::predict_all_async(std::slice::from_ref(self), images).await?;
        Ok(per_model.into_iter().next().unwrap_or_default())
    }

    /// Predictions of every model in `scorers` for the same images — `[model][image]` — running
    /// each distinct backbone once per batch: heads bundled with one backbone file read the
    /// same features (one VGG16 pass per photo for the regression and the histogram model).
    pub async fn predict_all_async(scorers: &[Scorer], images: &[RgbImage]) -> Result<Vec<Vec<Prediction>>> {
        let mut predictions: Vec<Vec<Prediction>> = scorers.iter().map(|_| Vec::with_capacity(images.len())).collect();
        for pass in backbone_passes(scorers, |a, b| scorers[a].shares_backbone_with(&scorers[b])) {
            let leader = &scorers[pass.members[0]];
            for chunk in images.chunks(DEFAULT_BATCH) {
                let features: BackboneFeatures = leader.net.backbone.forward_features(leader.input(chunk), pass.statistics);
                for &i in &pass.members {
                    let output = read_values(scorers[i].net.head.forward(features.clone())).await?;
                    predictions[i].extend(scorers[i].to_predictions(output)?);
                }
            }
        }
        Ok(predictions)
    }

    /// [`Scorer::predict_all_async`], blocking (native code, or a CPU device in the browser).
    pub fn predict_all(scorers: &[Scorer], images: &[RgbImage]) -> Result<Vec<Vec<Prediction>>> {
        block_on(Self::predict_all_async(scorers, images))?
    }

    /// Network output rows (read with [`crate::model::values`]) → predictions.
    pub fn to_predictions(&self, values: Vec<f32>) -> Result<Vec<Prediction>> {
        Ok(match self.output() {
            OutputKind::Regression => values.into_iter().map(Prediction::from_score).collect(),
            OutputKind::Histogram => {
                values.chunks_exact(HISTOGRAM_BINS).map(|row| Prediction::from_histogram(row.try_into().expect("10 bins"))).collect()
            }
        })
    }
}

/// One backbone pass and the scorers it feeds (indices into the scorers given to
/// [`backbone_passes`]), with the region their block statistics are taken over, if they read any.
pub struct BackbonePass {
    pub members: Vec<usize>,
    pub statistics: Option<StatisticsRegion>,
}

/// The fewest backbone passes that give every scorer its features: scorers join a pass when
/// `same_backbone(first member, scorer)` (the caller's notion: one loaded backbone file for the
/// scorer, the same weights for the trainer's evaluation) and they read block statistics over the
/// pass's region or none at all; a head reading another region gets a pass of its own.
pub fn backbone_passes(scorers: &[Scorer], same_backbone: impl Fn(usize, usize) -> bool) -> Vec<BackbonePass> {
    let mut passes: Vec<BackbonePass> = Vec::new();
    for (i, scorer) in scorers.iter().enumerate() {
        let region = scorer.net.head.layers().statistics_region();
        let fits = |pass: &&mut BackbonePass| {
            same_backbone(pass.members[0], i) && (region.is_none() || pass.statistics.is_none() || pass.statistics == region)
        };
        match passes.iter_mut().find(fits) {
            Some(pass) => {
                pass.statistics = pass.statistics.or(region);
                pass.members.push(i);
            }
            None => passes.push(BackbonePass { members: vec![i], statistics: region }),
        }
    }
    passes
}

/// The model a crop search scores with: the regression model, as in the paper's crop application
/// (Sec. 5), else the first (a histogram model's mean works too); `None` when there is none.
pub fn crop_scorer(scorers: &[Scorer]) -> Option<&Scorer> {
    scorers.iter().find(|s| s.output() == OutputKind::Regression).or(scorers.first())
}

/// Run one of our async paths to completion: blocking natively; in the browser only when nothing
/// has to wait (the CPU backend), otherwise a clear error instead of a hang.
pub fn block_on<T>(future: impl Future<Output = T>) -> Result<T> {
    burn::tensor::try_read_sync(future).ok_or_else(|| LoupeError::Model("this device cannot block: use the async API".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HeadKind, ModelConfig};
    use crate::preprocess::InputConvention;

    fn tiny(output: OutputKind) -> Scorer {
        let config = ModelConfig::new(output, HeadKind::Compact).with_width_divisor(64);
        let device = Device::flex();
        let net = config.init_for_loading(&device).unwrap();
        Scorer::new(net, WeightMetadata::new(config, InputConvention::CaffeBgr), device)
    }

    #[test]
    fn crops_with_the_regression_model_else_the_first() {
        let histogram_first = [tiny(OutputKind::Histogram), tiny(OutputKind::Regression)];
        assert_eq!(crop_scorer(&histogram_first).map(Scorer::output), Some(OutputKind::Regression));
        let histogram_only = [tiny(OutputKind::Histogram)];
        assert_eq!(crop_scorer(&histogram_only).map(Scorer::output), Some(OutputKind::Histogram));
        assert!(crop_scorer(&[]).is_none());
    }
}
