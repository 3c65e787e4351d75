//! `loupe._loupe`: the Rust half of the Python package. It builds rows with `loupe batch`'s own
//! code ([`loupe_cli::batch::rows`]), so Python, Ray and the CLI give the same numbers and the
//! same error messages. The Python half (`python/loupe/`) turns paths, bytes and numpy arrays
//! into the three calls below and rows into dicts.

use image::RgbImage;
use loupe::crop::CropShape;
use loupe::scorer::DEFAULT_BATCH;
use loupe_cli::batch::inputs::read_key;
use loupe_cli::batch::rows::{BatchModels, Prepared, Tasks};
use loupe_cli::device::parse_device;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

create_exception!(_loupe, LoupeError, PyValueError, "A photo or weight file Loupe cannot use; the message says why.");

/// The default weights, compiled in: the package scores without any download.
const DEFAULT_WEIGHTS: [&[u8]; 3] = [
    include_bytes!("../../weights/backbone.loupe"),
    include_bytes!("../../weights/regression.loupe"),
    include_bytes!("../../weights/histogram.loupe"),
];

fn loupe_error(error: impl std::fmt::Display) -> PyErr {
    LoupeError::new_err(error.to_string())
}

/// Loaded models on one device.
#[pyclass(frozen)]
struct Engine {
    models: BatchModels,
}

/// What to compute for every photo of one call, as the Python side passes it: a dict with
/// `score`, `aspects` ("W:H" or "WxH"), `candidates` and `seed`.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct TaskSpec {
    score: bool,
    aspects: Vec<String>,
    candidates: usize,
    seed: u64,
}

impl TaskSpec {
    fn tasks(self) -> PyResult<Tasks> {
        let crops = self.aspects.iter().map(|a| a.parse::<CropShape>().map_err(loupe_error)).collect::<PyResult<Vec<_>>>()?;
        Ok(Tasks { score: self.score, crops, candidates: self.candidates, seed: self.seed })
    }
}

impl Engine {
    /// Rows as JSON text (the Python side reads them with `json.loads`), the GIL released. Photos
    /// are decoded a batch at a time, so a call over thousands of paths holds one batch of
    /// pixels, not all of them.
    fn run<T: Send>(&self, py: Python<'_>, tasks: &Tasks, items: Vec<T>, prepare: impl Fn(T, &Tasks) -> Prepared + Sync) -> Vec<String> {
        py.detach(|| {
            let mut items = items.into_iter();
            let mut json = Vec::new();
            loop {
                let batch: Vec<Prepared> = items.by_ref().take(DEFAULT_BATCH).map(|item| prepare(item, tasks)).collect();
                if batch.is_empty() {
                    return json;
                }
                // Rows hold strings, numbers and options only (serde_json writes non-finite floats
                // as null), so serialising cannot fail.
                json.extend(self.models.rows(tasks, batch).iter().map(|row| serde_json::to_string(row).expect("rows serialise")));
            }
        })
    }
}

#[pymethods]
impl Engine {
    /// `weights`: weight files' bytes (a backbone file and its heads, or whole models); empty =
    /// the default weights. `device`: cpu (flex), wgpu, vulkan, cuda, or `kind:N`.
    #[new]
    fn new(py: Python<'_>, weights: Vec<Vec<u8>>, device: &str) -> PyResult<Self> {
        let device = parse_device(device).map_err(|e| loupe_error(format!("{e:#}")))?;
        let files: Vec<Vec<u8>> = if weights.is_empty() { DEFAULT_WEIGHTS.iter().map(|w| w.to_vec()).collect() } else { weights };
        let models = py.detach(|| BatchModels::from_weight_files(&files, &device)).map_err(|e| loupe_error(format!("{e:#}")))?;
        Ok(Self { models })
    }

    /// The weights' id, as in `loupe batch` rows and output folders.
    #[getter]
    fn model_id(&self) -> String {
        self.models.model_id.clone()
    }

    /// Rows for files, read as `loupe batch` reads them.
    fn rows_from_paths(&self, py: Python<'_>, keys: Vec<String>, tasks: TaskSpec) -> PyResult<Vec<String>> {
        let tasks = tasks.tasks()?;
        Ok(self.run(py, &tasks, keys, |key, tasks| Prepared::from_bytes(key.clone(), read_key(&key), tasks)))
    }

    /// Rows for encoded images (JPEG, PNG... as in a file), one key each.
    fn rows_from_bytes(&self, py: Python<'_>, keys: Vec<String>, datas: Vec<Bound<'_, PyBytes>>, tasks: TaskSpec) -> PyResult<Vec<String>> {
        let tasks = tasks.tasks()?;
        let datas: Vec<Vec<u8>> = datas.iter().map(|d| d.as_bytes().to_vec()).collect();
        Ok(self.run(py, &tasks, keys.into_iter().zip(datas).collect(), |(key, bytes), tasks| Prepared::from_bytes(key, Ok(bytes), tasks)))
    }

    /// Rows for decoded pixels: `pixels[i]` is `heights[i] x widths[i] x 3` RGB bytes, row-major.
    fn rows_from_pixels(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        pixels: Vec<Bound<'_, PyBytes>>,
        widths: Vec<u32>,
        heights: Vec<u32>,
        tasks: TaskSpec,
    ) -> PyResult<Vec<String>> {
        let tasks = tasks.tasks()?;
        let mut images = Vec::with_capacity(keys.len());
        for (((key, data), width), height) in keys.into_iter().zip(&pixels).zip(widths).zip(heights) {
            let image = RgbImage::from_raw(width, height, data.as_bytes().to_vec())
                .ok_or_else(|| loupe_error(format!("{key}: {} bytes are not {width}x{height} RGB pixels", data.as_bytes().len())))?;
            images.push((key, image));
        }
        Ok(self.run(py, &tasks, images, |(key, image), tasks| Prepared::from_image(key, image, tasks)))
    }
}

#[pymodule]
fn _loupe(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add("LoupeError", m.py().get_type::<LoupeError>())?;
    m.add("__version__", loupe_cli::batch::rows::LOUPE_VERSION)?;
    Ok(())
}
