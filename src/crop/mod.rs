//! The paper's crop application (Sec. 5): take N random crops of the requested shape (1000 square
//! crops in the paper), score each with the model and keep the best. This exhaustive path is the
//! reference that faster searches are measured against.

use std::str::FromStr;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{LoupeError, Result};
use crate::scorer::{DEFAULT_BATCH, Scorer, block_on};

/// No crop side below this many pixels.
pub const MIN_CROP_SIDE: u32 = 16;

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
        Ok(if is_size {
            Self::Size { width: w, height: h }
        } else {
            Self::Aspect { width: w, height: h }
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CropRequest {
    pub shape: CropShape,
    /// Random candidates to score (the paper: 1000).
    pub candidates: usize,
    pub seed: u64,
    /// How many of the best crops to return (the best first).
    pub top_k: usize,
    /// Smallest crop, as a fraction of the largest crop of that aspect that fits (aspect mode).
    pub min_scale: f32,
}

impl Default for CropRequest {
    fn default() -> Self {
        Self { shape: CropShape::default(), candidates: 1000, seed: 0, top_k: 5, min_scale: 0.5 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredCrop {
    #[serde(flatten)]
    pub rect: Rect,
    pub score: f32,
}

/// SplitMix64: tiny, and gives the same candidates on every platform (native and wasm) per seed.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..=max.
    pub fn below_or_equal(&mut self, max: u32) -> u32 {
        (self.next_u64() % (u64::from(max) + 1)) as u32
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

/// The request's random candidate rectangles for an image of this size (deterministic per seed).
pub fn random_candidates(width: u32, height: u32, request: &CropRequest) -> Result<Vec<Rect>> {
    if request.candidates == 0 {
        return Err(LoupeError::Crop("at least one candidate is needed".into()));
    }
    if !(request.min_scale > 0.0 && request.min_scale <= 1.0) {
        return Err(LoupeError::Crop(format!("min_scale must be in (0, 1], got {}", request.min_scale)));
    }
    let mut rng = SplitMix64::new(request.seed);
    let place = |w: u32, h: u32, rng: &mut SplitMix64| Rect {
        x: rng.below_or_equal(width - w),
        y: rng.below_or_equal(height - h),
        width: w,
        height: h,
    };
    match request.shape {
        CropShape::Size { width: w, height: h } => {
            if w > width || h > height {
                return Err(LoupeError::Crop(format!(
                    "a {w}x{h} crop does not fit in a {width}x{height} image"
                )));
            }
            if w < MIN_CROP_SIDE || h < MIN_CROP_SIDE {
                return Err(LoupeError::Crop(format!("a crop needs sides of at least {MIN_CROP_SIDE} px")));
            }
            Ok((0..request.candidates).map(|_| place(w, h, &mut rng)).collect())
        }
        CropShape::Aspect { width: aw, height: ah } => {
            let (max_w, max_h) = largest_fit(width, height, aw, ah);
            if max_w.min(max_h) < MIN_CROP_SIDE {
                return Err(LoupeError::Crop(format!(
                    "a {aw}:{ah} crop of a {width}x{height} image would be under {MIN_CROP_SIDE} px on a side"
                )));
            }
            let portrait = ah > aw;
            Ok((0..request.candidates)
                .map(|_| {
                    let scale = f64::from(request.min_scale)
                        + (1.0 - f64::from(request.min_scale)) * rng.next_f64();
                    // Size the longer side, derive the other from the ratio: aspect within a pixel.
                    // The longer side is never so short that the shorter one drops under MIN_CROP_SIDE.
                    let (w, h) = if portrait {
                        let shortest = (f64::from(MIN_CROP_SIDE) * f64::from(ah) / f64::from(aw)).ceil() as u32;
                        let h = ((f64::from(max_h) * scale).round() as u32).clamp(shortest.min(max_h), max_h);
                        let w = ((f64::from(h) * f64::from(aw) / f64::from(ah)).round() as u32).clamp(MIN_CROP_SIDE, max_w);
                        (w, h)
                    } else {
                        let shortest = (f64::from(MIN_CROP_SIDE) * f64::from(aw) / f64::from(ah)).ceil() as u32;
                        let w = ((f64::from(max_w) * scale).round() as u32).clamp(shortest.min(max_w), max_w);
                        let h = ((f64::from(w) * f64::from(ah) / f64::from(aw)).round() as u32).clamp(MIN_CROP_SIDE, max_h);
                        (w, h)
                    };
                    place(w, h, &mut rng)
                })
                .collect())
        }
    }
}

/// Keep the `top_k` best, best first (ties: earlier candidate first, so results are stable).
pub fn best_crops(mut scored: Vec<ScoredCrop>, top_k: usize) -> Vec<ScoredCrop> {
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
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
    let candidates = random_candidates(image.width(), image.height(), request)?;
    let mut scored = Vec::with_capacity(candidates.len());
    for batch in candidates.chunks(DEFAULT_BATCH) {
        let crops: Vec<RgbImage> = batch.iter().map(|rect| rect.crop(image)).collect();
        let predictions = scorer.predict_async(&crops).await?;
        scored.extend(batch.iter().zip(predictions).map(|(&rect, p)| ScoredCrop { rect, score: p.score }));
        progress(scored.len(), candidates.len());
    }
    Ok(best_crops(scored, request.top_k))
}

mod fast;
pub use fast::{FastCropOptions, fast_crop_search, fast_crop_search_async};
