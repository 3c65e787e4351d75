//! The browser API (wasm-bindgen). Inference runs on WebGPU through burn's wgpu backend when the
//! browser has it, else on the CPU (flex); every failure reaches JS as an exception with a message.
//! Two builds (scripts/build-web.sh): `webgpu` (WebGPU with the CPU as fallback, single-threaded)
//! and `threads` (CPU only, on a rayon pool of Web Workers: `initThreadPool(n)` after `init`, in a
//! worker of a cross-origin isolated page).
//!
//! ```js
//! const loupe = await Loupe.create(false);          // true = force the CPU
//! loupe.loadWeights(new Uint8Array(bytes));         // once per model (regression, histogram)
//! const r = await loupe.score(new Uint8Array(fileBytes));
//! // r = { score, percentile, regression?: { score, percentile },
//! //       histogramModel?: { score, percentile, histogram, std, difficulty }, ms }
//! const { topCrop, crops, focal } = await loupe.crop(fileBytes, { aspect: "16:9", candidates: 200, seed: 1, topK: 5 }, (done, total) => {});
//! ```

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::crop::{CandidateLayout, CropReport, CropRequest, CropShape, FastCropOptions, exhaustive_crop_search_async, fast_crop_search_async};
use crate::error::LoupeError;
use crate::model::OutputKind;
use crate::prediction::difficulty_label;
use crate::preprocess::decode_image;
use crate::scorer::{Scorer, crop_scorer};
use crate::{Prediction, weights};

/// The `threads` build's pool: JavaScript calls `initThreadPool(n)` once, before `Loupe.create`.
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

fn js_error(error: LoupeError) -> JsError {
    JsError::new(&error.to_string())
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

#[wasm_bindgen]
pub struct Loupe {
    device: Device,
    backend: String,
    /// A shared backbone file, for head files (load it first).
    backbone: Option<weights::SharedBackbone>,
    scorers: Vec<Scorer>,
}

/// What `score` returns; each model's values appear once, under that model (the backend is
/// [`Loupe::backend`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScoreResult {
    /// The headline score: that of the model crops are scored with ([`crop_scorer`]), so a crop's
    /// score compares with it.
    score: f32,
    /// The headline score's share of AVA's rated photos scored lower, in percent.
    percentile: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    regression: Option<ModelResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    histogram_model: Option<ModelResult>,
    ms: f64,
}

/// One model's [`Prediction`] and, for the histogram model, its std in words
/// ([`difficulty_label`]), so the page shows the library's words instead of its own.
#[derive(Serialize)]
struct ModelResult {
    #[serde(flatten)]
    prediction: Prediction,
    #[serde(skip_serializing_if = "Option::is_none")]
    difficulty: Option<&'static str>,
}

impl From<Prediction> for ModelResult {
    fn from(prediction: Prediction) -> Self {
        let difficulty = prediction.std.map(difficulty_label);
        Self { prediction, difficulty }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct CropOptions {
    aspect: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    candidates: Option<usize>,
    seed: Option<u64>,
    top_k: Option<usize>,
    /// Smallest crop as a share of the largest that fits (smartcrop.js's `minScale`; default 0.5).
    min_scale: Option<f32>,
    /// Score every candidate with the full network (slow; the paper's reference).
    exact: bool,
    /// Candidates the fast search re-scores exactly.
    rerank: Option<usize>,
    /// "random" (the paper's, default) or "grid".
    layout: Option<CandidateLayout>,
}

#[wasm_bindgen]
impl Loupe {
    /// WebGPU when the browser offers an adapter and device (and this is the `webgpu` build),
    /// else the CPU backend.
    pub async fn create(force_cpu: bool) -> Loupe {
        #[cfg(feature = "webgpu")]
        if !force_cpu {
            // Autotuning benchmarks several kernels for every new tensor shape; a browser GPU pays
            // a shader compile for each (minutes for the crop search's multi-scale passes on a
            // software GPU). Minimal effort keeps the first run of each shape quick.
            use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, autotune::AutotuneLevel};
            let mut config = CubeClRuntimeConfig::default();
            config.autotune.level = AutotuneLevel::Minimal;
            CubeClRuntimeConfig::try_set(config);
            match Device::wgpu_options().init_async().await {
                Ok(device) => return Loupe::on(device, "webgpu"),
                Err(error) => web_sys_log(&format!("WebGPU unavailable ({error:?}); using the CPU")),
            }
        }
        #[cfg(not(feature = "webgpu"))]
        let _ = force_cpu;
        Loupe::on(Device::flex(), "cpu")
    }

    /// Threads the CPU backend computes on: the pool's size in the `threads` build, else 1.
    #[wasm_bindgen(getter)]
    pub fn threads(&self) -> usize {
        conv3x3::threads()
    }

    /// "webgpu" or "cpu".
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    /// What the loaded backbone keeps its activations in: "f16" on WebGPU adapters with
    /// `shader-f16`, else "f32" (sums and scores are f32 either way).
    #[wasm_bindgen(getter)]
    pub fn precision(&self) -> String {
        let in_f16 = self.scorers.iter().any(|scorer| scorer.net.backbone.computes_in_f16());
        if in_f16 { "f16" } else { "f32" }.into()
    }

    /// Load a weight file — a whole model, a shared backbone, or a head (after its backbone);
    /// returns its metadata. A second model of the same output kind replaces the first.
    #[wasm_bindgen(js_name = loadWeights)]
    pub fn load_weights(&mut self, bytes: &[u8]) -> Result<JsValue, JsError> {
        // The header (and the checksum over the payload) is read once, then the part it names.
        let (metadata, payload) = weights::read_header(bytes).map_err(js_error)?;
        if metadata.part == weights::Part::Backbone {
            let backbone = weights::decode_backbone_checked(metadata, payload, &self.device).map_err(js_error)?;
            let metadata = to_js_value(&backbone.metadata)?;
            self.backbone = Some(backbone);
            return Ok(metadata);
        }
        let scorer = Scorer::from_model_file(metadata, payload, self.backbone.as_ref(), &self.device).map_err(js_error)?;
        let metadata = to_js_value(&scorer.metadata)?;
        self.scorers.retain(|s| s.output() != scorer.output());
        self.scorers.push(scorer);
        Ok(metadata)
    }

    /// The largest photo file Loupe reads, in bytes ([`crate::preprocess::MAX_FILE_BYTES`]): the
    /// worker refuses bigger files before copying them into WebAssembly memory.
    #[wasm_bindgen(js_name = maxFileBytes)]
    pub fn max_file_bytes() -> usize {
        crate::preprocess::MAX_FILE_BYTES
    }

    /// Metadata of a weight file without loading it (checks framing and checksum).
    #[wasm_bindgen(js_name = inspectWeights)]
    pub fn inspect_weights(bytes: &[u8]) -> Result<JsValue, JsError> {
        let (metadata, _) = weights::read_header(bytes).map_err(js_error)?;
        to_js_value(&metadata)
    }

    /// Score one encoded image (JPEG, PNG, WebP, GIF, BMP) with every loaded model.
    pub async fn score(&self, image: &[u8]) -> Result<JsValue, JsError> {
        let headline_scorer = self.crop_scorer()?;
        let started = now_ms();
        let image = decode_image(image).map_err(js_error)?;
        let images = std::slice::from_ref(&image);
        let mut headline: Option<(f32, f32)> = None;
        let mut regression = None;
        let mut histogram_model = None;
        // One backbone pass feeds both heads when they share a backbone file.
        let predictions = Scorer::predict_all_async(&self.scorers, images).await.map_err(js_error)?;
        for (scorer, prediction) in self.scorers.iter().zip(predictions) {
            let Some(prediction) = prediction.into_iter().next() else { continue };
            if std::ptr::eq(scorer, headline_scorer) {
                headline = Some((prediction.score, prediction.percentile));
            }
            match scorer.output() {
                OutputKind::Regression => regression = Some(prediction.into()),
                OutputKind::Histogram => histogram_model = Some(prediction.into()),
            }
        }
        let (score, percentile) = headline.ok_or_else(|| JsError::new("no model returned a prediction"))?;
        to_js_value(&ScoreResult { score, percentile, regression, histogram_model, ms: now_ms() - started })
    }

    /// The best crops of an image, shaped like smartcrop.js's answer: `{topCrop, crops, focal}`
    /// ([`CropReport`]; crops are `{x, y, width, height, score, percentile}`, best first), with the
    /// top crop's `difficulty: {std, label}` when the histogram model is loaded.
    /// `on_progress(done, total)` is called after each batch.
    pub async fn crop(&self, image: &[u8], options: JsValue, on_progress: Option<js_sys::Function>) -> Result<JsValue, JsError> {
        let scorer = self.crop_scorer()?;
        let options: CropOptions = if options.is_undefined() || options.is_null() {
            CropOptions::default()
        } else {
            serde_wasm_bindgen::from_value(options).map_err(|e| JsError::new(&format!("crop options: {e}")))?
        };
        let mut request = CropRequest::default();
        request.shape = match (options.width, options.height, &options.aspect) {
            (Some(width), Some(height), _) => CropShape::Size { width, height },
            (_, _, Some(aspect)) => aspect.parse().map_err(js_error)?,
            _ => CropShape::default(),
        };
        request.candidates = options.candidates.unwrap_or(request.candidates);
        request.seed = options.seed.unwrap_or(request.seed);
        request.top_k = options.top_k.unwrap_or(request.top_k);
        request.min_scale = options.min_scale.unwrap_or(request.min_scale);
        request.layout = options.layout.unwrap_or(request.layout);
        let image = decode_image(image).map_err(js_error)?;
        let progress = |done: usize, total: usize| {
            if let Some(callback) = &on_progress {
                let _ = callback.call2(&JsValue::NULL, &JsValue::from(done as u32), &JsValue::from(total as u32));
            }
        };
        let crops = if options.exact {
            exhaustive_crop_search_async(scorer, &image, &request, progress).await
        } else {
            let mut fast = FastCropOptions::default();
            fast.rerank = options.rerank.unwrap_or(fast.rerank);
            fast_crop_search_async(scorer, &image, &request, &fast, progress).await
        }
        .map_err(js_error)?;
        let mut report = CropReport::new(&crops).map_err(js_error)?;
        report.judge_difficulty_async(&self.scorers, &image).await.map_err(js_error)?;
        to_js_value(&report)
    }
}

impl Loupe {
    fn on(device: Device, backend: &str) -> Self {
        Loupe { device, backend: backend.into(), backbone: None, scorers: Vec::new() }
    }

    /// The loaded model crops are scored with ([`crop_scorer`]); it also gives the headline score.
    fn crop_scorer(&self) -> Result<&Scorer, JsError> {
        crop_scorer(&self.scorers).ok_or_else(|| JsError::new("no weights loaded"))
    }
}

#[cfg(feature = "webgpu")]
fn web_sys_log(message: &str) {
    web_sys::console::warn_1(&JsValue::from_str(message));
}

/// A result as a plain JavaScript object (the page reads `crop.score`, `metadata.model.output`
/// and so on): one JSON string, parsed on the JavaScript side. serde-wasm-bindgen builds objects
/// with one call across the boundary per field, which took about 100 ms for a weight file's
/// metadata in chromium, most of a head file's load (the README's browser bench has the figures).
fn to_js_value<T: serde::Serialize + ?Sized>(value: &T) -> Result<JsValue, JsError> {
    let json = serde_json::to_string(value).map_err(|e| JsError::new(&e.to_string()))?;
    js_sys::JSON::parse(&json).map_err(|_| JsError::new("a result did not parse as JSON"))
}
