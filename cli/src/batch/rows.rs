//! One output row per photo: what `loupe batch` writes and the Python package returns. A photo
//! that cannot be read, decoded, scored or cropped is a row with its error, never a failed batch.

use std::time::Instant;

use anyhow::{Context, Result};
use image::RgbImage;
use loupe::burn::tensor::Device;
use loupe::crop::{CropReport, CropRequest, CropShape, FastCropOptions, FocalPoint, ReportedCrop, fast_crop_search};
use loupe::model::OutputKind;
use loupe::preprocess::{check_dimensions, decode_image, resize_to_input};
use loupe::scorer::crop_scorer;
use loupe::{Prediction, Scorer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The Loupe version written in every row.
pub const LOUPE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One photo's results. Columns that a task did not ask for, or that failed, are null.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The path or URI as listed (folder input: the folder joined with the file's path).
    pub key: String,
    /// SHA-256 of the file's bytes (hex); null when the file could not be read.
    pub content_sha256: Option<String>,
    /// Which weights made the row (see [`model_id`]).
    pub model_id: String,
    pub loupe_version: String,
    /// The photo's size, upright (after EXIF rotation).
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Aesthetic score 1..10 (the regression model's, else the histogram model's mean).
    pub score: Option<f32>,
    /// Share of AVA's rated photos below `score`, in percent.
    pub percentile: Option<f32>,
    /// Predicted share of ratings 1..10 (histogram model).
    pub histogram: Option<Vec<f32>>,
    /// Spread of the predicted ratings: the paper's difficulty (histogram model).
    pub std: Option<f32>,
    /// The best crop for each requested aspect or size, in the order asked.
    pub crops: Vec<CropRow>,
    /// Why this photo has no (or only some) results; null when all went well.
    pub error: Option<String>,
    /// Milliseconds spent on this photo (its decode, its share of the batch's forward pass, its crops).
    pub ms: f32,
}

/// The best crop of one aspect: the aspect asked, then the crop as `loupe crop --json` and the
/// browser report it ([`ReportedCrop`]: smartcrop.js's names, source pixels) and its focal point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CropRow {
    /// As asked: `16:9` (an aspect) or `640x480` (an exact size).
    pub aspect: String,
    #[serde(flatten)]
    pub crop: ReportedCrop,
    /// The crop's centre, in source pixels.
    pub focal: FocalPoint,
}

impl CropRow {
    fn new(aspect: String, report: &CropReport) -> Self {
        Self { aspect, crop: report.top_crop, focal: report.focal }
    }
}

/// What to compute for every photo.
#[derive(Clone, Debug)]
pub struct Tasks {
    pub score: bool,
    pub crops: Vec<CropShape>,
    /// Crop candidates per aspect (the paper: 1000) and their seed; the fast search with
    /// `loupe crop`'s defaults, so a row's crop is what `loupe crop` says.
    pub candidates: usize,
    pub seed: u64,
}

impl Default for Tasks {
    fn default() -> Self {
        Self { score: true, crops: Vec::new(), candidates: CropRequest::default().candidates, seed: 0 }
    }
}

/// `16:9` or `640x480`, as `--aspect` reads it.
pub fn shape_name(shape: &CropShape) -> String {
    match shape {
        CropShape::Aspect { width, height } => format!("{width}:{height}"),
        CropShape::Size { width, height } => format!("{width}x{height}"),
    }
}

/// The weights' identity: SHA-256 over the sorted SHA-256s (hex, one per line) of every weight
/// file, first 16 hex digits. The same files give the same id whatever their names or order.
pub fn model_id(files: &[Vec<u8>]) -> String {
    let mut digests: Vec<String> = files.iter().map(|bytes| hex(&Sha256::digest(bytes))).collect();
    digests.sort();
    hex(&Sha256::digest(digests.join("\n").as_bytes()))[..16].to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The loaded models and the id of their weights.
pub struct BatchModels {
    pub scorers: Vec<Scorer>,
    pub model_id: String,
}

impl BatchModels {
    pub fn from_weight_files(files: &[Vec<u8>], device: &Device) -> Result<Self> {
        let slices: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        Ok(Self { scorers: Scorer::from_weight_files(&slices, device)?, model_id: model_id(files) })
    }

    /// A row with nothing computed yet.
    fn empty_row(&self, key: String, content_sha256: Option<String>) -> Row {
        Row {
            key,
            content_sha256,
            model_id: self.model_id.clone(),
            loupe_version: LOUPE_VERSION.to_string(),
            width: None,
            height: None,
            score: None,
            percentile: None,
            histogram: None,
            std: None,
            crops: Vec::new(),
            error: None,
            ms: 0.0,
        }
    }

    /// Rows for a batch of prepared photos, in their order: one forward pass for the batch's
    /// scores (every model sharing it), then each photo's crops.
    pub fn rows(&self, tasks: &Tasks, prepared: Vec<Prepared>) -> Vec<Row> {
        let started = Instant::now();
        let inputs: Vec<RgbImage> = prepared.iter().filter_map(|p| p.photo.as_ref().ok().map(|photo| photo.input.clone())).collect();
        let predictions = if tasks.score && !inputs.is_empty() {
            Scorer::predict_all(&self.scorers, &inputs).map_err(|error| format!("scoring failed: {error}"))
        } else {
            Ok(Vec::new())
        };
        let forward_share = started.elapsed().as_secs_f32() * 1000.0 / inputs.len().max(1) as f32;
        let mut next_input = 0;
        let mut rows = Vec::with_capacity(prepared.len());
        for item in prepared {
            let photo = match item.photo {
                Ok(photo) => photo,
                Err(error) => {
                    rows.push(Row { error: Some(error), ms: item.ms, ..self.empty_row(item.key, item.content_sha256) });
                    continue;
                }
            };
            let crop_started = Instant::now();
            let mut row = self.empty_row(item.key, item.content_sha256);
            row.width = Some(photo.width);
            row.height = Some(photo.height);
            let mut errors = Vec::new();
            if tasks.score {
                match &predictions {
                    Ok(per_model) => {
                        // One prediction per input for every model, and `next_input` counts the
                        // decoded photos, which are exactly the inputs, in order.
                        let mine: Vec<(OutputKind, Prediction)> =
                            self.scorers.iter().zip(per_model).map(|(s, p)| (s.output(), p[next_input].clone())).collect();
                        fill_scores(&mut row, &mine);
                    }
                    Err(error) => errors.push(error.clone()),
                }
            }
            next_input += 1;
            for shape in &tasks.crops {
                let crop = photo.pixels.as_ref().context("the photo's pixels were not kept").and_then(|pixels| self.best_crop(pixels, shape, tasks));
                match crop {
                    Ok(crop) => row.crops.push(crop),
                    Err(error) => errors.push(format!("crop {}: {error:#}", shape_name(shape))),
                }
            }
            row.error = (!errors.is_empty()).then(|| errors.join("; "));
            row.ms = item.ms + forward_share + crop_started.elapsed().as_secs_f32() * 1000.0;
            rows.push(row);
        }
        rows
    }

    fn best_crop(&self, image: &RgbImage, shape: &CropShape, tasks: &Tasks) -> Result<CropRow> {
        let scorer = crop_scorer(&self.scorers).context("no model to crop with")?;
        let request = CropRequest { shape: *shape, candidates: tasks.candidates, seed: tasks.seed, top_k: 1, ..CropRequest::default() };
        let crops = fast_crop_search(scorer, image, &request, &FastCropOptions::default(), |_, _| {})?;
        Ok(CropRow::new(shape_name(shape), &CropReport::new(&crops)?))
    }
}

/// The regression model gives `score`; the histogram model gives `histogram` and `std` (and the
/// score when there is no regression model).
fn fill_scores(row: &mut Row, predictions: &[(OutputKind, Prediction)]) {
    let regression = predictions.iter().find(|(kind, _)| *kind == OutputKind::Regression);
    let histogram = predictions.iter().find(|(kind, _)| *kind == OutputKind::Histogram);
    if let Some((_, p)) = regression.or(histogram) {
        row.score = Some(p.score);
        row.percentile = Some(p.percentile);
    }
    if let Some((_, p)) = histogram {
        row.histogram = p.histogram.map(|h| h.to_vec());
        row.std = p.std;
    }
}

/// A photo decoded and resized for the network, ready for [`BatchModels::rows`]; decoding is the
/// part that runs on a thread pool beside the forward passes.
pub struct Prepared {
    pub key: String,
    pub content_sha256: Option<String>,
    pub photo: std::result::Result<Photo, String>,
    /// Time spent reading and decoding.
    pub ms: f32,
}

pub struct Photo {
    /// Upright size, after EXIF.
    pub width: u32,
    pub height: u32,
    /// The 224x224 network input.
    pub input: RgbImage,
    /// The whole photo, kept only when it is to be cropped: a batch in flight of 100 MP photos
    /// would otherwise hold 300 MB each just to report their size.
    pub pixels: Option<RgbImage>,
}

impl Prepared {
    /// A photo from its bytes (or the error reading them); `tasks` says whether its pixels are
    /// kept beyond the network input.
    pub fn from_bytes(key: String, bytes: Result<Vec<u8>>, tasks: &Tasks) -> Self {
        let started = Instant::now();
        let (content_sha256, photo) = match bytes {
            Ok(bytes) => {
                let sha = hex(&Sha256::digest(&bytes));
                (Some(sha), decode_image(&bytes).map_err(|e| e.to_string()))
            }
            Err(error) => (None, Err(format!("{error:#}"))),
        };
        let photo = photo.map(|image| Photo::new(image, tasks));
        Self { key, content_sha256, photo, ms: started.elapsed().as_secs_f32() * 1000.0 }
    }

    /// A photo already decoded (the Python package's arrays); it has no file bytes to hash. Its
    /// size is held to the decoders' limits, so an array and a file of one photo get one answer.
    pub fn from_image(key: String, image: RgbImage, tasks: &Tasks) -> Self {
        let started = Instant::now();
        let photo = check_dimensions(image.width(), image.height()).map(|()| Photo::new(image, tasks)).map_err(|e| e.to_string());
        Self { key, content_sha256: None, photo, ms: started.elapsed().as_secs_f32() * 1000.0 }
    }
}

impl Photo {
    fn new(image: RgbImage, tasks: &Tasks) -> Self {
        let input = resize_to_input(&image);
        let (width, height) = image.dimensions();
        Self { width, height, input, pixels: (!tasks.crops.is_empty()).then_some(image) }
    }
}
