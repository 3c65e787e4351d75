//! Crop search at interactive speed, with the same answer type as the reference.
//!
//! The paper runs VGG16 once per candidate (1000 forwards). Here the backbone runs on the whole
//! photo a few times — once per *scale level*, the photo resized so that a crop of that level's
//! size becomes 224x224, exactly as the reference would resize it — and every candidate is
//! scored from the shared feature map: its region is RoI-aligned (bilinear, 2x2 samples per cell)
//! to the head's 7x7 input. Then K candidates are re-scored exactly (the reference path) — the
//! best estimates of each level first, which also measure each level's offset, then the
//! neighbours of the best exact crop so far — and ranked by their exact scores. Heads that also
//! read block statistics get each candidate's region statistics from per-block grids of the same
//! passes ([`BlockGrid`]).

use burn::tensor::{Tensor, TensorData};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::{CropRequest, Rect, ScoredCrop, best_crops, candidates, score_exactly};
use crate::error::Result;
use crate::model::read_values;
use crate::model::vgg16::{BackboneFeatures, FEATURE_MAP_SIZE, INPUT_SIZE, StatisticsRegion, VARIANCE_EPSILON};
use crate::preprocess::normalise_chw;
use crate::scorer::{DEFAULT_BATCH, Scorer, block_on};

/// VGG16's feature map stride (five 2x2 pools).
const STRIDE: f32 = crate::model::vgg16::STRIDE as f32;
/// By default no scale level resizes the photo beyond this many pixels on a side (bounds the cost).
pub const DEFAULT_MAX_LEVEL_SIDE: u32 = 1344;
/// Candidates re-scored exactly by default. The shared-map estimates rank crops well overall but
/// not finely: each level carries its own offset, and the exact scores jitter between crops a few
/// pixels apart (resampling and zero padding at the crop's edges, which a shared map never sees)
/// by as much as the gaps between the best crops (the measured sizes: README, "Crop search"). So
/// the re-scoring is a small search of its own, see [`rerank_exactly`]. With the level offsets
/// corrected and the shipped heads' deep statistics over the interior, 24 re-scores agree with
/// the brute force on 14 of the crop bench's 16 tuning rows, 16 re-scores on 12 (photos outside
/// the fixtures: README, "Crop search").
pub const DEFAULT_RERANK: usize = 24;
/// Re-scores spent first on each level's best estimates. Their errors give each level's offset
/// (the mean of exact − estimate), which corrects that level's estimates before the local stage:
/// without it the favourites all come from the level that overrates most, and the best crop of
/// another level is never looked at (crop bench, README "Crop search").
const CALIBRATION_PER_LEVEL: usize = 2;
/// Exact re-scores per round of the local stage.
const LOCAL_ROUND: usize = 4;
/// A neighbour of a crop has its centre within this fraction of that crop's width (across) and
/// height (down) ...
const NEIGHBOUR_SHIFT: f32 = 0.1;
/// ... and a width within this factor of it, either way (the aspect is fixed, so the height too):
/// the best crops often differ from the estimate's favourite in size more than in position.
const NEIGHBOUR_SCALE: f32 = 1.2;
/// Candidates per head call when estimating.
const ESTIMATE_BATCH: usize = 64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FastCropOptions {
    /// Candidates re-scored exactly (the reference path) before the final ranking.
    pub rerank: usize,
    /// Backbone passes over the whole photo, at sizes spread over the candidates' sizes.
    pub levels: usize,
    /// No level resizes the photo beyond this many pixels on a side: a level that would is run
    /// smaller, its crops then reach the network under 224 px (cheaper, rougher estimates).
    pub max_level_side: u32,
}

impl Default for FastCropOptions {
    fn default() -> Self {
        Self { rerank: DEFAULT_RERANK, levels: 3, max_level_side: DEFAULT_MAX_LEVEL_SIDE }
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
    /// Per block, for heads that read block statistics.
    blocks: Vec<BlockGrid>,
}

/// One block's activations summed over the map's grid cells (32x32 input pixels each), as
/// integral images of x and x² per channel: any region's mean and standard deviation in O(1).
struct BlockGrid {
    channels: usize,
    /// Grid cells down and across; the integral images have one more row and column.
    height: usize,
    width: usize,
    sum: Vec<f32>,
    sum_of_squares: Vec<f32>,
}

impl BlockGrid {
    /// From cell means `[C, H, W]` of x and of x².
    fn new(channels: usize, height: usize, width: usize, mean: &[f32], mean_of_squares: &[f32]) -> Self {
        let integral = |cells: &[f32]| {
            let mut out = vec![0.0f32; channels * (height + 1) * (width + 1)];
            for c in 0..channels {
                let plane = &cells[c * height * width..(c + 1) * height * width];
                let table = &mut out[c * (height + 1) * (width + 1)..(c + 1) * (height + 1) * (width + 1)];
                for y in 0..height {
                    let mut row = 0.0;
                    for x in 0..width {
                        row += plane[y * width + x];
                        table[(y + 1) * (width + 1) + x + 1] = table[y * (width + 1) + x + 1] + row;
                    }
                }
            }
            out
        };
        Self { channels, height, width, sum: integral(mean), sum_of_squares: integral(mean_of_squares) }
    }

    /// The integral over [0, x) x [0, y) in cell units, bilinear between the table's corners
    /// (exact for values constant within a cell), as four positions in a channel's table and
    /// their weights: the same for every channel.
    fn integral_taps(&self, x: f32, y: f32) -> [(usize, f32); 4] {
        let stride = self.width + 1;
        let (x, y) = (x.clamp(0.0, self.width as f32), y.clamp(0.0, self.height as f32));
        let (x0, y0) = ((x.floor() as usize).min(self.width.saturating_sub(1)), (y.floor() as usize).min(self.height.saturating_sub(1)));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let at = |xx: usize, yy: usize| yy * stride + xx;
        [(at(x0, y0), (1.0 - fx) * (1.0 - fy)), (at(x0 + 1, y0), fx * (1.0 - fy)), (at(x0, y0 + 1), (1.0 - fx) * fy), (at(x0 + 1, y0 + 1), fx * fy)]
    }

    /// Means then standard deviations of every channel over the region [x0, x1) x [y0, y1)
    /// (cell units), appended to `out` — the layout of `channel_statistics`.
    fn region_statistics(&self, (x0, y0, x1, y1): (f32, f32, f32, f32), out: &mut Vec<f32>) {
        let (x0, x1) = (x0.clamp(0.0, self.width as f32), x1.clamp(0.0, self.width as f32));
        let (y0, y1) = (y0.clamp(0.0, self.height as f32), y1.clamp(0.0, self.height as f32));
        let area = ((x1 - x0) * (y1 - y0)).max(1e-6);
        // The region's sum is one weighted sum of 16 table entries at the same positions in every
        // channel's table: found once here, not once per channel (a crop search asks this for
        // every candidate and each of VGG16's 1,472 channels).
        let mut taps = [(0usize, 0.0f32); 16];
        for (corner, (x, y, sign)) in [(x1, y1, 1.0), (x0, y1, -1.0), (x1, y0, -1.0), (x0, y0, 1.0)].into_iter().enumerate() {
            for (k, (index, weight)) in self.integral_taps(x, y).into_iter().enumerate() {
                taps[corner * 4 + k] = (index, sign * weight);
            }
        }
        let plane = (self.width + 1) * (self.height + 1);
        let region = |table: &[f32], c: usize| {
            let table = &table[c * plane..(c + 1) * plane];
            taps.iter().map(|&(index, weight)| weight * table[index]).sum::<f32>()
        };
        let means: Vec<f32> = (0..self.channels).map(|c| region(&self.sum, c) / area).collect();
        let stds: Vec<f32> = (0..self.channels)
            .map(|c| ((region(&self.sum_of_squares, c) / area - means[c] * means[c]).max(0.0) + VARIANCE_EPSILON as f32).sqrt())
            .collect();
        out.extend(means);
        out.extend(stds);
    }
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

    /// The candidate's block statistics from this level's grids over `statistics` (nothing when
    /// the head reads none): a block whose statistics leave out a margin of the crop's network
    /// input gets the candidate's region shrunk by the same fraction.
    fn region_statistics(&self, rect: &Rect, statistics: StatisticsRegion, out: &mut Vec<f32>) {
        let (x0, y0) = (rect.x as f32 * self.scale_x / STRIDE, rect.y as f32 * self.scale_y / STRIDE);
        let (width, height) = (rect.width as f32 * self.scale_x / STRIDE, rect.height as f32 * self.scale_y / STRIDE);
        for (index, block) in self.blocks.iter().enumerate() {
            let margin = statistics.margin_fraction(index);
            let (dx, dy) = (width * margin, height * margin);
            block.region_statistics((x0 + dx, y0 + dy, x0 + width - dx, y0 + height - dy), out);
        }
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
/// `candidates` is never empty: the search returns before this on an empty set.
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
    let distance = |l: &Level| ((rect.width as f32 / l.crop_width).ln().abs()) + ((rect.height as f32 / l.crop_height).ln().abs());
    (0..levels.len()).min_by(|&a, &b| distance(&levels[a]).total_cmp(&distance(&levels[b]))).unwrap_or(0)
}

/// The size a level resizes a `width x height` photo to: a crop of `crop_width x crop_height`
/// becomes 224x224, unless that puts a side over `max_side`; then both sides shrink by the same
/// factor (the level keeps its aspect). Never under 32 px (one feature cell).
fn level_input_size(width: u32, height: u32, (crop_width, crop_height): (f32, f32), max_side: u32) -> (u32, u32) {
    let side = INPUT_SIZE as f32;
    let max_side = max_side.max(32);
    let (width, height) = (width as f32 * side / crop_width, height as f32 * side / crop_height);
    let shrink = (max_side as f32 / width.max(height)).min(1.0);
    (((width * shrink).round() as u32).clamp(32, max_side), ((height * shrink).round() as u32).clamp(32, max_side))
}

async fn compute_level(scorer: &Scorer, image: &RgbImage, crop_size: (f32, f32), max_side: u32) -> Result<Level> {
    let (crop_width, crop_height) = crop_size;
    let (width, height) = level_input_size(image.width(), image.height(), crop_size, max_side);
    let resized = image::imageops::resize(image, width, height, image::imageops::FilterType::Triangle);
    let input = Tensor::<4>::from_data(
        TensorData::new(normalise_chw(&resized, scorer.metadata.input), [1, 3, height as usize, width as usize]),
        &scorer.device,
    );
    let (map, grids) = if scorer.net.head.layers().statistics_region().is_some() {
        scorer.net.backbone.forward_block_grids(input)
    } else {
        (scorer.net.backbone.forward(input), Vec::new())
    };
    let [_, channels, map_h, map_w] = map.dims();
    let features = read_values(map.reshape([channels, map_h * map_w])).await?;
    let mut blocks = Vec::with_capacity(grids.len());
    for (mean, mean_of_squares) in grids {
        let [_, c, h, w] = mean.dims();
        let mean = read_values(mean.reshape([c, h * w])).await?;
        let mean_of_squares = read_values(mean_of_squares.reshape([c, h * w])).await?;
        blocks.push(BlockGrid::new(c, h, w, &mean, &mean_of_squares));
    }
    Ok(Level {
        crop_width,
        crop_height,
        scale_x: width as f32 / image.width() as f32,
        scale_y: height as f32 / image.height() as f32,
        channels,
        height: map_h,
        width: map_w,
        features,
        blocks,
    })
}

/// A candidate's estimated score and the scale level it was estimated from.
#[derive(Clone, Copy)]
struct Estimate {
    crop: ScoredCrop,
    level: usize,
}

/// Estimated scores of `candidates` (same order) from shared backbone passes, without running
/// the network per candidate. `progress(done, total)` counts backbone passes and estimate batches.
pub async fn estimate_crop_scores_async(
    scorer: &Scorer,
    image: &RgbImage,
    candidates: &[Rect],
    options: &FastCropOptions,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredCrop>> {
    let estimates = estimate_with_levels(scorer, image, candidates, options, progress).await?;
    Ok(estimates.into_iter().map(|e| e.crop).collect())
}

async fn estimate_with_levels(
    scorer: &Scorer,
    image: &RgbImage,
    candidates: &[Rect],
    options: &FastCropOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Estimate>> {
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let sizes = level_sizes(candidates, options.levels);
    let total = sizes.len() + candidates.len().div_ceil(ESTIMATE_BATCH);
    let mut done = 0;
    let mut levels = Vec::with_capacity(sizes.len());
    for size in sizes {
        levels.push(compute_level(scorer, image, size, options.max_level_side).await?);
        done += 1;
        progress(done, total);
    }

    let cells = FEATURE_MAP_SIZE * FEATURE_MAP_SIZE;
    // At least one level: `level_sizes` makes `levels.max(1)` of them.
    let channels = levels[0].channels;
    let reads_map = scorer.net.head.layers().reads_map();
    let statistics = scorer.net.head.layers().statistics_region().unwrap_or_default();
    let mut estimates = Vec::with_capacity(candidates.len());
    for batch in candidates.chunks(ESTIMATE_BATCH) {
        let mut pooled = Vec::with_capacity(if reads_map { batch.len() * channels * cells } else { 0 });
        let mut block_statistics = Vec::new();
        let batch_levels: Vec<usize> = batch.iter().map(|rect| nearest_level(&levels, rect)).collect();
        for (rect, &level) in batch.iter().zip(&batch_levels) {
            let level = &levels[level];
            if reads_map {
                level.roi_align(rect, &mut pooled);
            }
            level.region_statistics(rect, statistics, &mut block_statistics);
        }
        let shape = [batch.len(), channels, FEATURE_MAP_SIZE, FEATURE_MAP_SIZE];
        // A head that never reads the map gets zeros rather than 25k pooled samples per candidate.
        let map = if reads_map {
            Tensor::<4>::from_data(TensorData::new(pooled, shape), &scorer.device)
        } else {
            Tensor::<4>::zeros(shape, &scorer.device)
        };
        let block_statistics = (!block_statistics.is_empty()).then(|| {
            let width = block_statistics.len() / batch.len();
            Tensor::<2>::from_data(TensorData::new(block_statistics, [batch.len(), width]), &scorer.device)
        });
        let output = scorer.net.head.forward(BackboneFeatures { map, block_statistics });
        let predictions = scorer.to_predictions(read_values(output).await?)?;
        estimates.extend(
            batch.iter().zip(batch_levels).zip(predictions).map(|((&rect, level), p)| Estimate { crop: ScoredCrop { rect, score: p.score }, level }),
        );
        done += 1;
        progress(done, total);
    }
    Ok(estimates)
}

/// [`estimate_crop_scores_async`], blocking.
pub fn estimate_crop_scores(
    scorer: &Scorer,
    image: &RgbImage,
    candidates: &[Rect],
    options: &FastCropOptions,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredCrop>> {
    block_on(estimate_crop_scores_async(scorer, image, candidates, options, progress))?
}

/// The fast search. `progress(done, total)` counts backbone passes, estimate batches and exact
/// re-scoring batches as units of work.
pub async fn fast_crop_search_async(
    scorer: &Scorer,
    image: &RgbImage,
    request: &CropRequest,
    options: &FastCropOptions,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredCrop>> {
    let candidates = candidates(image.width(), image.height(), request)?;
    let rerank = options.rerank.max(request.top_k).min(candidates.len());
    let levels = options.levels.max(1);
    let estimate_units = levels + candidates.len().div_ceil(ESTIMATE_BATCH);
    let plan = RerankPlan::new(rerank, levels);
    let total = estimate_units + plan.batches();
    let estimates = estimate_with_levels(scorer, image, &candidates, options, |done, _| progress(done, total)).await?;
    let exact = rerank_exactly(scorer, image, estimates, &plan, |done| progress(estimate_units + done, total)).await?;
    Ok(best_crops(exact, request.top_k))
}

/// How the exact re-scores are spent: each level's best estimates first (the calibration), then
/// local rounds.
struct RerankPlan {
    total: usize,
    levels: usize,
    /// At most this many per level, [`CALIBRATION_PER_LEVEL`] unless `total` is smaller.
    calibration_per_level: usize,
}

impl RerankPlan {
    fn new(total: usize, levels: usize) -> Self {
        let levels = levels.max(1);
        Self { total, levels, calibration_per_level: CALIBRATION_PER_LEVEL.min(total / levels).max(1) }
    }

    /// Re-scores spent on the calibration (never more than the total).
    fn calibration(&self) -> usize {
        (self.calibration_per_level * self.levels).min(self.total)
    }

    /// At most: a level with fewer candidates than its share calibrates with fewer.
    fn batches(&self) -> usize {
        self.calibration().div_ceil(DEFAULT_BATCH) + (self.total - self.calibration()).div_ceil(LOCAL_ROUND)
    }
}

/// Each level's offset: the mean of exact − estimate over its re-scored candidates (0 for a level
/// with none), indexed by level.
fn level_offsets(levels: usize, scored: impl IntoIterator<Item = (usize, f32)>) -> Vec<f32> {
    let mut sums = vec![(0.0f32, 0usize); levels];
    for (level, error) in scored {
        sums[level].0 += error;
        sums[level].1 += 1;
    }
    sums.into_iter().map(|(sum, count)| if count == 0 { 0.0 } else { sum / count as f32 }).collect()
}

/// Whether `other` is near `centre` in position ([`NEIGHBOUR_SHIFT`]) and size ([`NEIGHBOUR_SCALE`]).
fn is_neighbour(centre: &Rect, other: &Rect) -> bool {
    // Twice the centre, in whole pixels.
    let shift = |start: u32, side: u32, other_start: u32, other_side: u32| {
        (2 * start + side).abs_diff(2 * other_start + other_side) as f32 / (2 * side) as f32
    };
    let across = shift(centre.x, centre.width, other.x, other.width);
    let down = shift(centre.y, centre.height, other.y, other.height);
    let scale = (other.width as f32 / centre.width as f32).ln().abs();
    across.max(down) <= NEIGHBOUR_SHIFT && scale <= NEIGHBOUR_SCALE.ln() + 1e-6
}

/// Exact scores for part of the candidates, found by a small search over the estimates. First
/// the plan's calibration: each level's best estimates, whose errors give each level's offset;
/// the estimates, corrected by their level's offset, then order the rest. Then rounds of
/// [`LOCAL_ROUND`] among the neighbours of the best exact crop so far (best corrected estimate
/// first; the next best elsewhere when it has none left). The estimates find the right region;
/// the local rounds catch the crop in it whose exact score jitters highest, which the estimates
/// cannot see. `progress(done)` counts batches.
async fn rerank_exactly(
    scorer: &Scorer,
    image: &RgbImage,
    estimates: Vec<Estimate>,
    plan: &RerankPlan,
    mut progress: impl FnMut(usize),
) -> Result<Vec<ScoredCrop>> {
    let levels = plan.levels;
    let mut batches = 0;
    // Calibration: each level's best estimates, in one or more batches.
    let mut calibration: Vec<usize> = Vec::with_capacity(plan.calibration());
    for level in 0..levels {
        let mut in_level: Vec<usize> = (0..estimates.len()).filter(|&i| estimates[i].level == level).collect();
        in_level.sort_by(|&a, &b| estimates[b].crop.score.total_cmp(&estimates[a].crop.score));
        calibration.extend(in_level.into_iter().take(plan.calibration_per_level));
    }
    calibration.truncate(plan.total);
    let mut exact: Vec<ScoredCrop> = Vec::with_capacity(plan.total);
    for picks in calibration.chunks(DEFAULT_BATCH) {
        let rects: Vec<Rect> = picks.iter().map(|&i| estimates[i].crop.rect).collect();
        exact.extend(score_exactly(scorer, image, &rects).await?);
        batches += 1;
        progress(batches);
    }
    let offsets = level_offsets(levels, calibration.iter().zip(&exact).map(|(&i, e)| (estimates[i].level, e.score - estimates[i].crop.score)));
    let corrected = |i: usize| estimates[i].crop.score + offsets[estimates[i].level];
    let mut order: Vec<usize> = (0..estimates.len()).filter(|i| !calibration.contains(i)).collect();
    order.sort_by(|&a, &b| corrected(b).total_cmp(&corrected(a)));

    let mut open = vec![true; order.len()];
    while exact.len() < plan.total {
        // The calibration scored at least one crop (some level has candidates: the search
        // returns earlier on none), so there is a best exact crop to search around.
        let Some(centre) = exact.iter().max_by(|a, b| a.score.total_cmp(&b.score)).map(|c| c.rect) else { break };
        let size = LOCAL_ROUND.min(plan.total - exact.len());
        let near = |k: usize| is_neighbour(&centre, &estimates[order[k]].crop.rect);
        let picks: Vec<usize> =
            (0..order.len()).filter(|&k| open[k] && near(k)).chain((0..order.len()).filter(|&k| open[k] && !near(k))).take(size).collect();
        if picks.is_empty() {
            break;
        }
        let rects: Vec<Rect> = picks.iter().map(|&k| estimates[order[k]].crop.rect).collect();
        exact.extend(score_exactly(scorer, image, &rects).await?);
        picks.iter().for_each(|&k| open[k] = false);
        batches += 1;
        progress(batches);
    }
    Ok(exact)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vgg16::{Vgg16, channel_statistics};
    use burn::tensor::{Device, Distribution};

    fn values(tensor: Tensor<2>) -> Vec<f32> {
        crate::model::values(tensor).unwrap()
    }

    /// Block statistics (per block: its means, then its stds) compared as what the grids hold:
    /// each mean within 1e-3 and each mean of squares (std² + mean²) within 1e-4, relative. Not
    /// the std itself: found as √(E[x²] − E[x]²) in f32, a near-constant channel's std is off by
    /// up to about √ε·|mean| however small it is.
    fn assert_statistics_close(actual: &[f32], expected: &[f32], block_channels: &[usize]) {
        assert_eq!(actual.len(), expected.len());
        let mut block_start = 0;
        for &channels in block_channels {
            for mean_at in block_start..block_start + channels {
                let std_at = mean_at + channels;
                let (mean, expected_mean) = (actual[mean_at], expected[mean_at]);
                assert!((mean - expected_mean).abs() <= 1e-3 * expected_mean.abs().max(1.0), "mean {mean} vs {expected_mean}");
                let square = |mean: f32, std: f32| std * std + mean * mean;
                let (squares, expected_squares) = (square(mean, actual[std_at]), square(expected_mean, expected[std_at]));
                assert!((squares - expected_squares).abs() <= 1e-4 * expected_squares.max(1.0), "mean of squares {squares} vs {expected_squares}");
            }
            block_start += 2 * channels;
        }
    }

    #[test]
    fn neighbours_are_within_a_tenth_of_the_crop_in_position_and_a_fifth_in_size() {
        let centre = Rect { x: 100, y: 50, width: 200, height: 100 };
        assert!(is_neighbour(&centre, &centre));
        // Centre 20 px across (10% of the width) is a neighbour, 21 px is not.
        assert!(is_neighbour(&centre, &Rect { x: 120, ..centre }));
        assert!(!is_neighbour(&centre, &Rect { x: 121, ..centre }));
        // Centre 11 px down: under 10% of the width but over 10% of the height.
        assert!(!is_neighbour(&centre, &Rect { y: 61, ..centre }));
        // 20% larger, same top-left corner (centre 20 px across, 10 down): a neighbour; the
        // edge-based rule would have refused it (right edge 40 px out).
        assert!(is_neighbour(&centre, &Rect { x: 100, y: 50, width: 240, height: 120 }));
        // 25% larger or smaller (in width) is not.
        assert!(!is_neighbour(&centre, &Rect { x: 75, y: 37, width: 250, height: 125 }));
        assert!(!is_neighbour(&centre, &Rect { x: 120, y: 60, width: 160, height: 80 }));
        assert!(is_neighbour(&centre, &Rect { x: 117, y: 58, width: 167, height: 84 }));
    }

    #[test]
    fn levels_map_crops_to_224_px_unless_that_passes_the_side_cap() {
        // A 320x180 crop of a 640x427 photo: the photo at 448x531 brings it to 224x224.
        assert_eq!(level_input_size(640, 427, (320.0, 180.0), 1344), (448, 531));
        // Capped at 448: both sides shrink by 448/531 (the crop reaches the network at 189x189).
        assert_eq!(level_input_size(640, 427, (320.0, 180.0), 448), (378, 448));
        // Under the cap nothing changes; never under 32 px.
        assert_eq!(level_input_size(640, 427, (640.0, 427.0), 448), (224, 224));
        assert_eq!(level_input_size(100, 60, (100.0, 60.0), 16), (32, 32));
    }

    #[test]
    fn the_rerank_plan_calibrates_each_level_then_searches_locally() {
        let plan = RerankPlan::new(DEFAULT_RERANK, 3);
        assert_eq!((plan.total, plan.calibration()), (24, 6));
        // The calibration in one batch of 8, the other 18 in local rounds of 4 (5).
        assert_eq!(plan.batches(), 6);
        assert_eq!(RerankPlan::new(16, 3).batches(), 4);
        assert_eq!(RerankPlan::new(32, 3).batches(), 8);
        // Fewer re-scores than levels x 2: one per level, never more than the total.
        assert_eq!((RerankPlan::new(4, 3).calibration_per_level, RerankPlan::new(4, 3).calibration()), (1, 3));
        assert_eq!(RerankPlan::new(2, 3).calibration(), 2);
    }

    #[test]
    fn level_offsets_are_each_levels_mean_error() {
        let offsets = level_offsets(3, [(0, 0.2), (2, -0.1), (0, 0.4), (2, -0.3)]);
        assert_eq!(offsets.len(), 3);
        assert!((offsets[0] - 0.3).abs() < 1e-6 && offsets[1] == 0.0 && (offsets[2] + 0.2).abs() < 1e-6, "{offsets:?}");
    }

    #[test]
    fn region_statistics_are_area_weighted_means_of_the_cells() {
        // One channel, 2x3 cells: x = 1..6 and x² = (1..6)² + 1.
        let mean: Vec<f32> = (1..=6).map(|v| v as f32).collect();
        let squares: Vec<f32> = mean.iter().map(|v| v * v + 1.0).collect();
        let grid = BlockGrid::new(1, 2, 3, &mean, &squares);
        let stats = |region| {
            let mut out = Vec::new();
            grid.region_statistics(region, &mut out);
            out
        };
        // Cells 2, 3, 5, 6 (right two columns): mean 4, E[x²] = (4+9+25+36)/4 + 1 = 19.5.
        let [m, s] = stats((1.0, 0.0, 3.0, 2.0)).try_into().unwrap();
        assert!((m - 4.0).abs() < 1e-5 && (s - (19.5f32 - 16.0).sqrt()).abs() < 1e-3, "{m} {s}");
        // Half of cell 1 and half of cell 2 (top row, x in [0.5, 1.5)): mean 1.5.
        let [m, _] = stats((0.5, 0.0, 1.5, 1.0)).try_into().unwrap();
        assert!((m - 1.5).abs() < 1e-5, "{m}");
        // Regions past the edges are clipped to the grid.
        let [m, _] = stats((-4.0, -1.0, 9.0, 7.0)).try_into().unwrap();
        assert!((m - 3.5).abs() < 1e-5, "{m}");
    }

    #[test]
    fn the_cpu_path_gives_the_same_block_grids_as_burns_pools() {
        let device = Device::flex();
        let generic = Vgg16::new(16, &device);
        let mut prepared = generic.clone();
        prepared.prepare_for(&device);
        assert!(prepared.is_prepared_for(&device));
        // Two images, sides that are not multiples of 32: the edge cells are dropped alike.
        let input = Tensor::<4>::random([2, 3, 70, 100], Distribution::Normal(0.0, 60.0), &device);
        let (map, grids) = generic.forward_block_grids(input.clone());
        let (cpu_map, cpu_grids) = prepared.forward_block_grids(input);
        let close = |a: Vec<f32>, e: Vec<f32>, what: &str| {
            assert_eq!(a.len(), e.len(), "{what}");
            let scale = e.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(&e).map(|(a, e)| (a - e).abs()).fold(0.0, f32::max);
            assert!(worst <= 1e-3 * scale, "{what}: {worst} of {scale}");
        };
        let read = |tensor: Tensor<4>| tensor.into_data().try_into_vec_as::<f32>().unwrap();
        close(read(cpu_map), read(map), "map");
        assert_eq!(cpu_grids.len(), 5);
        for (k, ((mean, squares), (cpu_mean, cpu_squares))) in grids.into_iter().zip(cpu_grids).enumerate() {
            assert_eq!(cpu_mean.dims(), mean.dims(), "block {k}");
            assert_eq!(mean.dims()[2..], [2, 3], "block {k}");
            close(read(cpu_mean), read(mean), "mean");
            close(read(cpu_squares), read(squares), "mean of squares");
        }
    }

    /// At 224x224 (the 7x7 grid), a candidate covering the whole input, with blocks 4 and 5 over
    /// the region shrunk by a seventh a side, gets exactly the backbone's deep-interior statistics.
    #[test]
    fn the_shrunk_region_gives_the_backbone_deep_interior_statistics() {
        let device = Device::flex();
        let backbone = Vgg16::new(16, &device);
        let input = Tensor::<4>::random([1, 3, 224, 224], Distribution::Normal(0.0, 60.0), &device);
        let region = StatisticsRegion::DeepInterior;
        let expected = values(backbone.forward_features(input.clone(), Some(region)).block_statistics.unwrap());
        let (map, grids) = backbone.forward_block_grids(input);
        let blocks = grids
            .into_iter()
            .map(|(mean, squares)| {
                let [_, c, h, w] = mean.dims();
                BlockGrid::new(c, h, w, &values(mean.reshape([c, h * w])), &values(squares.reshape([c, h * w])))
            })
            .collect();
        let [_, channels, height, width] = map.dims();
        let level =
            Level { crop_width: 224.0, crop_height: 224.0, scale_x: 1.0, scale_y: 1.0, channels, height, width, features: Vec::new(), blocks };
        let mut actual = Vec::new();
        level.region_statistics(&Rect { x: 0, y: 0, width: 224, height: 224 }, region, &mut actual);
        assert_statistics_close(&actual, &expected, &backbone.block_channels());
        // Not the whole-map statistics: the region is what changed.
        let mut whole = Vec::new();
        level.region_statistics(&Rect { x: 0, y: 0, width: 224, height: 224 }, StatisticsRegion::Whole, &mut whole);
        assert!(whole.iter().zip(&expected).any(|(w, e)| (w - e).abs() > 1e-2 * e.abs().max(1.0)));
    }

    #[test]
    fn the_whole_grid_gives_the_backbone_block_statistics() {
        let device = Device::flex();
        let backbone = Vgg16::new(16, &device);
        // 64x64: every block's output divides evenly into the 2x2 grid of 32-pixel cells.
        let input = Tensor::<4>::random([1, 3, 64, 64], Distribution::Normal(0.0, 60.0), &device);
        let expected = values(backbone.forward_features(input.clone(), Some(StatisticsRegion::Whole)).block_statistics.unwrap());
        let (_, grids) = backbone.forward_block_grids(input);
        let mut actual = Vec::new();
        for (mean, squares) in grids {
            let [_, c, h, w] = mean.dims();
            assert_eq!((h, w), (2, 2));
            let grid = BlockGrid::new(c, h, w, &values(mean.reshape([c, h * w])), &values(squares.reshape([c, h * w])));
            grid.region_statistics((0.0, 0.0, 2.0, 2.0), &mut actual);
        }
        assert_statistics_close(&actual, &expected, &backbone.block_channels());
        // And one block checked against the definition directly.
        let block = Tensor::<4>::random([1, 4, 8, 8], Distribution::Default, &device);
        let direct = values(channel_statistics(block.clone()));
        let data = values(block.reshape([4, 64]));
        let first: Vec<f32> = data[..64].to_vec();
        let mean = first.iter().sum::<f32>() / 64.0;
        let std = (first.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 64.0).sqrt();
        assert!((direct[0] - mean).abs() < 1e-5 && (direct[4] - std).abs() < 1e-3);
    }
}
