//! Crop search at interactive speed, with the same answer type as the reference.
//!
//! The paper runs VGG16 once per candidate (1000 forwards). Here the backbone runs on the whole
//! photo a few times — once per *scale level*, the photo resized so that a crop of that level's
//! size becomes 224x224, exactly as the reference would resize it — and every candidate is
//! scored from the shared feature map: its region is RoI-aligned (bilinear, 2x2 samples per cell)
//! to the head's 7x7 input. The K best by that estimate are then re-scored exactly (the reference
//! path) and ranked by their exact scores.

use burn::tensor::{Tensor, TensorData};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::{CropRequest, Rect, ScoredCrop, best_crops, candidates};
use crate::error::{LoupeError, Result};
use crate::model::vgg16::{FEATURE_MAP_SIZE, INPUT_SIZE};
use crate::preprocess::normalise_chw;
use crate::scorer::{DEFAULT_BATCH, Scorer, block_on};

/// VGG16's feature map stride (five 2x2 pools).
const STRIDE: f32 = 32.0;
/// No scale level resizes the photo beyond this many pixels on a side (bounds the cost).
const MAX_LEVEL_SIDE: u32 = 1344;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FastCropOptions {
    /// Candidates re-scored exactly (the reference path) before the final ranking.
    pub rerank: usize,
    /// Backbone passes over the whole photo, at sizes spread over the candidates' sizes.
    pub levels: usize,
}

impl Default for FastCropOptions {
    fn default() -> Self {
        Self { rerank: 16, levels: 3 }
    }
}

/// One backbone pass: the photo resized by (`scale_x`, `scale_y`) and its feature map.
struct Level {
    /// Crop size (in photo pixels) that this level maps to exactly 224x224.
    crop_width: f32,
    crop_height: f32,
    scale_x: f32,
    scale_y: f32,
    channels: usize,
    height: usize,
    width: usize,
    features: Vec<f32>,
}

impl Level {
    /// Bilinear sample of channel `c` at feature coordinates (x, y), zero outside the map.
    fn sample(&self, c: usize, x: f32, y: f32) -> f32 {
        let (x, y) = (x.clamp(0.0, (self.width - 1) as f32), y.clamp(0.0, (self.height - 1) as f32));
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let plane = &self.features[c * self.height * self.width..(c + 1) * self.height * self.width];
        let at = |xx: usize, yy: usize| plane[yy * self.width + xx];
        (at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx) * (1.0 - fy) + (at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx) * fy
    }

    /// The candidate's region of this level's map, pooled to the head's 7x7 grid: `[C, 7, 7]`.
    fn roi_align(&self, rect: &Rect, out: &mut Vec<f32>) {
        let cells = FEATURE_MAP_SIZE;
        // Feature coordinates of the region (a cell's centre sits at (i + 0.5) * stride - 0.5 px).
        let x0 = rect.x as f32 * self.scale_x / STRIDE;
        let y0 = rect.y as f32 * self.scale_y / STRIDE;
        let cell_w = rect.width as f32 * self.scale_x / STRIDE / cells as f32;
        let cell_h = rect.height as f32 * self.scale_y / STRIDE / cells as f32;
        for c in 0..self.channels {
            for gy in 0..cells {
                for gx in 0..cells {
                    let mut sum = 0.0;
                    for (sy, sx) in [(0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)] {
                        let x = x0 + (gx as f32 + sx) * cell_w - 0.5;
                        let y = y0 + (gy as f32 + sy) * cell_h - 0.5;
                        sum += self.sample(c, x, y);
                    }
                    out.push(sum / 4.0);
                }
            }
        }
    }
}

/// Crop sizes of the levels: geometric steps between the smallest and largest candidate.
fn level_sizes(candidates: &[Rect], levels: usize) -> Vec<(f32, f32)> {
    let area = |r: &Rect| (r.width as f32 * r.height as f32).sqrt();
    let smallest = candidates.iter().min_by(|a, b| area(a).total_cmp(&area(b))).expect("candidates");
    let largest = candidates.iter().max_by(|a, b| area(a).total_cmp(&area(b))).expect("candidates");
    let levels = levels.max(1);
    (0..levels)
        .map(|i| {
            let t = if levels == 1 { 0.5 } else { i as f32 / (levels - 1) as f32 };
            let lerp = |a: u32, b: u32| (a as f32).powf(1.0 - t) * (b as f32).powf(t);
            (lerp(smallest.width, largest.width), lerp(smallest.height, largest.height))
        })
        .collect()
}

/// The level whose crop size is closest (in log scale) to the candidate's.
fn nearest_level(levels: &[Level], rect: &Rect) -> usize {
    let distance = |l: &Level| {
        ((rect.width as f32 / l.crop_width).ln().abs()) + ((rect.height as f32 / l.crop_height).ln().abs())
    };
    (0..levels.len()).min_by(|&a, &b| distance(&levels[a]).total_cmp(&distance(&levels[b]))).unwrap_or(0)
}

async fn read(tensor: Tensor<2>) -> Result<Vec<f32>> {
    let data = tensor.into_data_async().await.map_err(|e| LoupeError::Model(format!("{e:?}")))?;
    data.try_into_vec_as::<f32>().map_err(|e| LoupeError::Model(format!("{e:?}")))
}

async fn compute_level(scorer: &Scorer, image: &RgbImage, crop_width: f32, crop_height: f32) -> Result<Level> {
    let side = INPUT_SIZE as f32;
    let width = ((image.width() as f32 * side / crop_width).round() as u32).clamp(32, MAX_LEVEL_SIDE);
    let height = ((image.height() as f32 * side / crop_height).round() as u32).clamp(32, MAX_LEVEL_SIDE);
    let resized = image::imageops::resize(image, width, height, image::imageops::FilterType::Triangle);
    let input = Tensor::<4>::from_data(
        TensorData::new(normalise_chw(&resized, scorer.metadata.input), [1, 3, height as usize, width as usize]),
        &scorer.device,
    );
    let map = scorer.net.backbone.forward(input);
    let [_, channels, map_h, map_w] = map.dims();
    let features = read(map.reshape([channels, map_h * map_w])).await?;
    Ok(Level {
        crop_width,
        crop_height,
        scale_x: width as f32 / image.width() as f32,
        scale_y: height as f32 / image.height() as f32,
        channels,
        height: map_h,
        width: map_w,
        features,
    })
}

/// The fast search. `progress(done, total)` counts backbone passes, estimate batches and exact
/// re-scores as units of work.
pub async fn fast_crop_search_async(
    scorer: &Scorer,
    image: &RgbImage,
    request: &CropRequest,
    options: &FastCropOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredCrop>> {
    let candidates = candidates(image.width(), image.height(), request)?;
    let sizes = level_sizes(&candidates, options.levels);
    let rerank = options.rerank.max(request.top_k).min(candidates.len());
    let estimate_batches = candidates.len().div_ceil(64);
    let total = sizes.len() + estimate_batches + rerank.div_ceil(DEFAULT_BATCH);
    let mut done = 0;

    let mut levels = Vec::with_capacity(sizes.len());
    for (w, h) in sizes {
        levels.push(compute_level(scorer, image, w, h).await?);
        done += 1;
        progress(done, total);
    }

    // Estimated scores from the shared maps, 64 candidates per head call.
    let cells = FEATURE_MAP_SIZE * FEATURE_MAP_SIZE;
    let channels = levels[0].channels;
    let mut estimates = Vec::with_capacity(candidates.len());
    for batch in candidates.chunks(64) {
        let mut pooled = Vec::with_capacity(batch.len() * channels * cells);
        for rect in batch {
            levels[nearest_level(&levels, rect)].roi_align(rect, &mut pooled);
        }
        let input = Tensor::<4>::from_data(
            TensorData::new(pooled, [batch.len(), channels, FEATURE_MAP_SIZE, FEATURE_MAP_SIZE]),
            &scorer.device,
        );
        let output = scorer.net.head.forward(input);
        let predictions = scorer.to_predictions(output.into_data_async().await.map_err(|e| LoupeError::Model(format!("{e:?}")))?)?;
        estimates.extend(batch.iter().zip(predictions).map(|(&rect, p)| ScoredCrop { rect, score: p.score }));
        done += 1;
        progress(done, total);
    }

    // Exact re-scoring of the most promising candidates.
    let shortlist = best_crops(estimates, rerank);
    let mut exact = Vec::with_capacity(shortlist.len());
    for batch in shortlist.chunks(DEFAULT_BATCH) {
        let crops: Vec<RgbImage> = batch.iter().map(|c| c.rect.crop(image)).collect();
        let predictions = scorer.predict_async(&crops).await?;
        exact.extend(batch.iter().zip(predictions).map(|(c, p)| ScoredCrop { rect: c.rect, score: p.score }));
        done += 1;
        progress(done, total);
    }
    Ok(best_crops(exact, request.top_k))
}

/// [`fast_crop_search_async`], blocking (native code, or the CPU backend in the browser).
pub fn fast_crop_search(
    scorer: &Scorer,
    image: &RgbImage,
    request: &CropRequest,
    options: &FastCropOptions,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredCrop>> {
    block_on(fast_crop_search_async(scorer, image, request, options, progress))?
}
