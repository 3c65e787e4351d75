//! The paper's crop application (Sec. 5): take N random crops of the requested shape (1000 square
//! crops in the paper), score each with the model and keep the best. This exhaustive path is the
//! reference that faster searches are measured against.

use std::str::FromStr;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{LoupeError, Result};
use crate::model::OutputKind;
use crate::prediction::{ava_percentile, difficulty_label};
use crate::preprocess::region_to_input;
use crate::rng::SplitMix64;
use crate::scorer::{DEFAULT_BATCH, Scorer, block_on};

/// No crop side below this many pixels.
pub const MIN_CROP_SIDE: u32 = 16;
/// At most this many candidates per request: the list is allocated up front, and a count from a
/// flag, a widget attribute or a JSON option must not be able to exhaust memory (100x the paper's).
pub const MAX_CANDIDATES: usize = 100_000;

/// The frame a crop must fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum CropShape {
    /// Any size with this width:height ratio (random scale from `min_scale` to the largest fit).
    Aspect { width: u32, height: u32 },
    /// Exactly this many pixels (the paper's fixed-size crops for a target window).
    Size { width: u32, height: u32 },
}

impl Default for CropShape {
    fn default() -> Self {
        Self::Aspect { width: 1, height: 1 }
    }
}

impl FromStr for CropShape {
    type Err = LoupeError;

    /// `W:H` (aspect ratio, e.g. `1:1`, `4:5`, `16:9`) or `WxH` (exact size in pixels).
    fn from_str(text: &str) -> Result<Self> {
        let bad = || LoupeError::Crop(format!("'{text}' is neither an aspect like 16:9 nor a size like 640x480"));
        let (sep, is_size) = if text.contains(':') { (':', false) } else { ('x', true) };
        let (w, h) = text.trim().split_once(sep).ok_or_else(bad)?;
        let w: u32 = w.trim().parse().map_err(|_| bad())?;
        let h: u32 = h.trim().parse().map_err(|_| bad())?;
        if w == 0 || h == 0 {
            return Err(bad());
        }
        Ok(if is_size { Self::Size { width: w, height: h } } else { Self::Aspect { width: w, height: h } })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CropRequest {
    pub shape: CropShape,
    /// Candidates to score (the paper: 1000).
    pub candidates: usize,
    pub seed: u64,
    /// How many of the best crops to return (the best first).
    pub top_k: usize,
    /// Smallest crop, as a fraction of the largest crop of that aspect that fits (aspect mode).
    pub min_scale: f32,
    /// Random (the paper) or a dense grid.
    pub layout: CandidateLayout,
}

impl Default for CropRequest {
    fn default() -> Self {
        Self { shape: CropShape::default(), candidates: 1000, seed: 0, top_k: 5, min_scale: 0.5, layout: CandidateLayout::Random }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub fn crop(&self, image: &RgbImage) -> RgbImage {
        image::imageops::crop_imm(image, self.x, self.y, self.width, self.height).to_image()
    }

    /// This crop as the network's input (what scoring it needs), without a full-size copy.
    pub fn input(&self, image: &RgbImage) -> RgbImage {
        region_to_input(image, self.x, self.y, self.width, self.height)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredCrop {
    #[serde(flatten)]
    pub rect: Rect,
    pub score: f32,
}

/// A crop as Loupe reports it everywhere (CLI `crop --json`, `loupe batch` rows, the wasm API,
/// Python): smartcrop.js's field names, in source pixels, so its users can switch by changing an
/// import; plus the AVA percentile of the crop's score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportedCrop {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub score: f32,
    /// Share of AVA's rated photos below `score`, in percent ([`ava_percentile`]).
    pub percentile: f32,
}

impl ReportedCrop {
    pub fn rect(&self) -> Rect {
        Rect { x: self.x, y: self.y, width: self.width, height: self.height }
    }
}

impl From<ScoredCrop> for ReportedCrop {
    fn from(crop: ScoredCrop) -> Self {
        let Rect { x, y, width, height } = crop.rect;
        Self { x, y, width, height, score: crop.score, percentile: ava_percentile(crop.score) }
    }
}

/// Where a crop-aware image service should keep its attention, in source pixels: the best crop's
/// centre (imgix's `fp-x`/`fp-y` and CSS `object-position` want it as a share of the photo's size).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FocalPoint {
    pub x: f32,
    pub y: f32,
}

impl FocalPoint {
    pub fn centre_of(crop: &ReportedCrop) -> Self {
        Self { x: crop.x as f32 + crop.width as f32 / 2.0, y: crop.y as f32 + crop.height as f32 / 2.0 }
    }
}

/// The answer to a crop request, shaped like smartcrop.js's (`topCrop`, `crops`), with the focal
/// point: what `loupe crop --json` prints and the browser's `loupeCrop()` resolves to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CropReport {
    pub top_crop: ReportedCrop,
    /// Every crop returned, best first (`crops[0]` is `top_crop`).
    pub crops: Vec<ReportedCrop>,
    pub focal: FocalPoint,
    /// How hard the top crop is to judge, when a histogram model is loaded ([`Self::judge_difficulty_async`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<Difficulty>,
}

/// The paper's difficulty: the spread of the ratings the histogram model predicts, and in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Difficulty {
    pub std: f32,
    pub label: String,
}

impl CropReport {
    /// From a search's crops, best first; an error when the search returned none.
    pub fn new(best_first: &[ScoredCrop]) -> Result<Self> {
        let crops: Vec<ReportedCrop> = best_first.iter().map(|&crop| crop.into()).collect();
        let top_crop = *crops.first().ok_or_else(|| LoupeError::Crop("the crop search returned no crop".into()))?;
        Ok(Self { top_crop, crops, focal: FocalPoint::centre_of(&top_crop), difficulty: None })
    }

    /// Fill [`Self::difficulty`] from the first histogram model among `scorers` (one more forward
    /// pass, of the top crop); nothing when none is loaded.
    pub async fn judge_difficulty_async(&mut self, scorers: &[Scorer], image: &RgbImage) -> Result<()> {
        let Some(histogram) = scorers.iter().find(|s| s.output() == OutputKind::Histogram) else { return Ok(()) };
        let crop = self.top_crop.rect().input(image);
        let prediction = histogram.predict_async(std::slice::from_ref(&crop)).await?.into_iter().next();
        self.difficulty = prediction.and_then(|p| p.std).map(|std| Difficulty { std, label: difficulty_label(std).into() });
        Ok(())
    }

    /// [`Self::judge_difficulty_async`], blocking.
    pub fn judge_difficulty(&mut self, scorers: &[Scorer], image: &RgbImage) -> Result<()> {
        block_on(self.judge_difficulty_async(scorers, image))?
    }
}

/// The largest `aw:ah` rectangle inside `width x height`.
fn largest_fit(width: u32, height: u32, aw: u32, ah: u32) -> (u32, u32) {
    let (aw, ah) = (u64::from(aw), u64::from(ah));
    if u64::from(width) * ah <= u64::from(height) * aw {
        (width, ((u64::from(width) * ah) as f64 / aw as f64).round().min(height as f64) as u32)
    } else {
        (((u64::from(height) * aw) as f64 / ah as f64).round().min(width as f64) as u32, height)
    }
}

/// How candidate rectangles are laid out over the image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateLayout {
    /// The paper's: random scales and positions (seeded).
    #[default]
    Random,
    /// A dense grid: about the cube root of the count in scales (`min_scale`..1), evenly spaced
    /// positions at each. Covers the image evenly; the seed is unused.
    Grid,
}

crate::from_str_by_serde_name!(CandidateLayout);

/// The request's candidate rectangles for an image of this size (deterministic per seed).
pub fn candidates(width: u32, height: u32, request: &CropRequest) -> Result<Vec<Rect>> {
    let sizes = CandidateSizes::new(width, height, request)?;
    Ok(match request.layout {
        CandidateLayout::Random => {
            let mut rng = SplitMix64::new(request.seed);
            // `CandidateSizes` keeps every size within the photo (`width`, `height`), so the
            // room left on each axis cannot underflow.
            (0..request.candidates)
                .map(|_| {
                    let (w, h) = sizes.at_scale(rng.next_f64());
                    Rect { x: rng.below_or_equal(width - w), y: rng.below_or_equal(height - h), width: w, height: h }
                })
                .collect()
        }
        CandidateLayout::Grid => {
            let scales = if sizes.fixed { 1 } else { ((request.candidates as f64).cbrt().round() as usize).clamp(1, request.candidates) };
            let per_scale = (request.candidates / scales).max(1);
            let mut seen = std::collections::HashSet::new();
            let mut rects = Vec::with_capacity(request.candidates);
            for i in 0..scales {
                // Largest first.
                let t = if scales == 1 { 1.0 } else { 1.0 - i as f64 / (scales - 1) as f64 };
                let (w, h) = sizes.at_scale(t);
                for rect in grid_positions(width, height, w, h, per_scale) {
                    if seen.insert(rect) {
                        rects.push(rect);
                    }
                }
            }
            rects
        }
    })
}

/// The paper's random candidates (= [`candidates`] with the random layout).
pub fn random_candidates(width: u32, height: u32, request: &CropRequest) -> Result<Vec<Rect>> {
    candidates(width, height, &CropRequest { layout: CandidateLayout::Random, ..request.clone() })
}

/// Candidate sizes for one request and image: checked once, then read at a scale in [0, 1].
struct CandidateSizes {
    /// A fixed pixel size: every scale gives it.
    fixed: bool,
    /// The width:height ratio (for a fixed size, the size itself).
    aspect: (u32, u32),
    /// The largest such frame that fits.
    max: (u32, u32),
    min_scale: f64,
}

impl CandidateSizes {
    fn new(width: u32, height: u32, request: &CropRequest) -> Result<Self> {
        if request.candidates == 0 || request.candidates > MAX_CANDIDATES {
            return Err(LoupeError::Crop(format!("the number of candidates must be 1..={MAX_CANDIDATES}, got {}", request.candidates)));
        }
        if !(request.min_scale > 0.0 && request.min_scale <= 1.0) {
            return Err(LoupeError::Crop(format!("min_scale must be in (0, 1], got {}", request.min_scale)));
        }
        match request.shape {
            CropShape::Size { width: w, height: h } => {
                if w > width || h > height {
                    return Err(LoupeError::Crop(format!("a {w}x{h} crop does not fit in a {width}x{height} image")));
                }
                if w < MIN_CROP_SIDE || h < MIN_CROP_SIDE {
                    return Err(LoupeError::Crop(format!("a crop needs sides of at least {MIN_CROP_SIDE} px")));
                }
                Ok(Self { fixed: true, aspect: (w, h), max: (w, h), min_scale: 1.0 })
            }
            CropShape::Aspect { width: aw, height: ah } => {
                let max = largest_fit(width, height, aw, ah);
                if max.0.min(max.1) < MIN_CROP_SIDE {
                    return Err(LoupeError::Crop(format!(
                        "a {aw}:{ah} crop of a {width}x{height} image would be under {MIN_CROP_SIDE} px on a side"
                    )));
                }
                Ok(Self { fixed: false, aspect: (aw, ah), max, min_scale: f64::from(request.min_scale) })
            }
        }
    }

    /// The size at `t` in [0, 1]: from `min_scale` of the largest fit (t = 0) to all of it (t = 1).
    fn at_scale(&self, t: f64) -> (u32, u32) {
        if self.fixed {
            return self.max;
        }
        let scale = self.min_scale + (1.0 - self.min_scale) * t;
        let ((aw, ah), (max_w, max_h)) = (self.aspect, self.max);
        let (aw, ah) = (f64::from(aw), f64::from(ah));
        let side = f64::from(MIN_CROP_SIDE);
        // Size the longer side, derive the other from the ratio (aspect within a pixel); the longer
        // side is never so short that the shorter one drops under MIN_CROP_SIDE.
        if ah > aw {
            let shortest = (side * ah / aw).ceil() as u32;
            let h = ((f64::from(max_h) * scale).round() as u32).clamp(shortest.min(max_h), max_h);
            let w = ((f64::from(h) * aw / ah).round() as u32).clamp(MIN_CROP_SIDE, max_w);
            (w, h)
        } else {
            let shortest = (side * aw / ah).ceil() as u32;
            let w = ((f64::from(max_w) * scale).round() as u32).clamp(shortest.min(max_w), max_w);
            let h = ((f64::from(w) * ah / aw).round() as u32).clamp(MIN_CROP_SIDE, max_h);
            (w, h)
        }
    }
}

/// At most `count` evenly spaced positions of a `w x h` frame, spread in proportion to the room
/// left on each axis.
fn grid_positions(width: u32, height: u32, w: u32, h: u32, count: usize) -> Vec<Rect> {
    // Sizes come from `CandidateSizes`, which keeps them within the photo.
    let (room_x, room_y) = (width - w, height - h);
    let (slots_x, slots_y) = (f64::from(room_x) + 1.0, f64::from(room_y) + 1.0);
    let count = count.min(u32::MAX as usize) as u32;
    let nx = ((f64::from(count) * slots_x / slots_y).sqrt().round() as u32).clamp(1, (room_x + 1).min(count));
    // nx * ny <= count: a scale never takes more than its share.
    let ny = (count / nx).clamp(1, room_y + 1);
    let spread = |i: u32, n: u32, room: u32| if n == 1 { room / 2 } else { (f64::from(room) * f64::from(i) / f64::from(n - 1)).round() as u32 };
    (0..ny).flat_map(|j| (0..nx).map(move |i| Rect { x: spread(i, nx, room_x), y: spread(j, ny, room_y), width: w, height: h })).collect()
}

/// Keep the `top_k` best, best first (ties: earlier candidate first, so results are stable). A NaN
/// score (broken weights) ranks below every number, never as the best crop.
pub fn best_crops(mut scored: Vec<ScoredCrop>, top_k: usize) -> Vec<ScoredCrop> {
    let rank = |crop: &ScoredCrop| if crop.score.is_nan() { f32::NEG_INFINITY } else { crop.score };
    scored.sort_by(|a, b| rank(b).total_cmp(&rank(a)));
    scored.truncate(top_k.max(1));
    scored
}

/// The reference crop search: every candidate through the whole network.
/// `progress(done, total)` is called after each batch.
pub fn exhaustive_crop_search(
    scorer: &Scorer,
    image: &RgbImage,
    request: &CropRequest,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredCrop>> {
    block_on(exhaustive_crop_search_async(scorer, image, request, progress))?
}

/// [`exhaustive_crop_search`] for devices that cannot block (WebGPU in the browser).
pub async fn exhaustive_crop_search_async(
    scorer: &Scorer,
    image: &RgbImage,
    request: &CropRequest,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredCrop>> {
    let candidates = candidates(image.width(), image.height(), request)?;
    let mut scored = Vec::with_capacity(candidates.len());
    for batch in candidates.chunks(DEFAULT_BATCH) {
        scored.extend(score_exactly(scorer, image, batch).await?);
        progress(scored.len(), candidates.len());
    }
    Ok(best_crops(scored, request.top_k))
}

/// Exact scores of `rects` (same order), as one batch: each crop resized to the network's input
/// and run through the whole network, as the paper scores a crop.
async fn score_exactly(scorer: &Scorer, image: &RgbImage, rects: &[Rect]) -> Result<Vec<ScoredCrop>> {
    let crops: Vec<RgbImage> = rects.iter().map(|rect| rect.input(image)).collect();
    let predictions = scorer.predict_async(&crops).await?;
    Ok(rects.iter().zip(predictions).map(|(&rect, p)| ScoredCrop { rect, score: p.score }).collect())
}

mod fast;
pub use fast::{
    DEFAULT_MAX_LEVEL_SIDE, DEFAULT_RERANK, FastCropOptions, estimate_crop_scores, estimate_crop_scores_async, fast_crop_search,
    fast_crop_search_async,
};
