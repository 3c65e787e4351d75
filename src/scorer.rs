//! A loaded model on a device: images in, [`Prediction`]s out.

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;

use crate::error::{LoupeError, Result};
use crate::model::{AestheticNet, HISTOGRAM_BINS, OutputKind};
use crate::prediction::Prediction;
use crate::preprocess::input_batch;
use crate::weights::{self, Part, WeightMetadata};

/// How many 224x224 images go through the network at once (memory stays ~ 0.5 GB on flex).
pub const DEFAULT_BATCH: usize = 8;

#[derive(Debug)]
pub struct Scorer {
    pub net: AestheticNet,
    pub metadata: WeightMetadata,
    pub device: Device,
}

impl Scorer {
    pub fn new(net: AestheticNet, metadata: WeightMetadata, device: Device) -> Self {
        Self { net, metadata, device }
    }

    /// Load a Loupe weight file onto `device`.
    pub fn from_weight_bytes(bytes: &[u8], device: Device) -> Result<Self> {
        let (net, metadata) = weights::decode(bytes, &device)?;
        Ok(Self::new(net, metadata, device))
    }

    /// Scorers from a set of weight files: whole models, and/or one backbone file with the head
    /// files trained on it (in any order).
    pub fn from_weight_files(files: &[&[u8]], device: &Device) -> Result<Vec<Self>> {
        let mut backbone = None;
        for bytes in files {
            if weights::read_header(bytes)?.0.part == Part::Backbone {
                if backbone.is_some() {
                    return Err(LoupeError::Weights("more than one backbone file given".into()));
                }
                backbone = Some(weights::decode_backbone(bytes, device)?);
            }
        }
        let mut scorers = Vec::new();
        for bytes in files {
            let (net, metadata) = match weights::read_header(bytes)?.0.part {
                Part::Backbone => continue,
                Part::Full => weights::decode(bytes, device)?,
                Part::Head => match &backbone {
                    Some(backbone) => weights::decode_head(bytes, backbone, device)?,
                    None => return Err(LoupeError::Weights("a head file needs its backbone file too".into())),
                },
            };
            scorers.push(Self::new(net, metadata, device.clone()));
        }
        if scorers.is_empty() {
            return Err(LoupeError::Weights("no model among the weight files (only a backbone?)".into()));
        }
        Ok(scorers)
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

    /// Predictions for any number of images, in batches. Blocks until done: native code, or a
    /// CPU device in the browser; WebGPU must use [`Scorer::predict_async`].
    pub fn predict(&self, images: &[RgbImage]) -> Result<Vec<Prediction>> {
        block_on(self.predict_async(images))?
    }

    /// Predictions, reading results back asynchronously (WebGPU cannot block).
    pub async fn predict_async(&self, images: &[RgbImage]) -> Result<Vec<Prediction>> {
        let mut predictions = Vec::with_capacity(images.len());
        for chunk in images.chunks(DEFAULT_BATCH) {
            let output = self.forward(self.input(chunk));
            let data = output
                .into_data_async()
                .await
                .map_err(|e| LoupeError::Model(format!("reading the output failed: {e:?}")))?;
            predictions.extend(self.to_predictions(data)?);
        }
        Ok(predictions)
    }

    /// Network output rows → predictions.
    pub fn to_predictions(&self, data: TensorData) -> Result<Vec<Prediction>> {
        let values = data
            .try_into_vec_as::<f32>()
            .map_err(|e| LoupeError::Model(format!("unexpected output data: {e:?}")))?;
        Ok(match self.output() {
            OutputKind::Regression => values.into_iter().map(Prediction::from_score).collect(),
            OutputKind::Histogram => values
                .chunks_exact(HISTOGRAM_BINS)
                .map(|row| Prediction::from_histogram(row.try_into().expect("10 bins")))
                .collect(),
        })
    }
}

/// Run one of our async paths to completion: blocking natively; in the browser only when nothing
/// has to wait (the CPU backend), otherwise a clear error instead of a hang.
pub fn block_on<T>(future: impl Future<Output = T>) -> Result<T> {
    burn::tensor::try_read_sync(future)
        .ok_or_else(|| LoupeError::Model("this device cannot block: use the async API".into()))
}
