//! Training and evaluation data: labelled image ids → network inputs, decoded in parallel with the
//! core crate's preprocessing. A missing or corrupt image is counted, listed and skipped: one bad
//! file never stops a run (AVA has ~20 missing and several truncated JPEGs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::RgbImage;
use loupe::preprocess::{decode_image, resize_to_input};
use rayon::prelude::*;

use crate::labels::ImageLabel;

/// Images at `<dir>/<id>.jpg`.
pub struct ImageFolder {
    pub dir: PathBuf,
    /// Preprocessed 224x224 inputs kept in memory after first use, when asked for (eval: every
    /// group of models with its own backbone reads the same images).
    cache: Option<Mutex<BTreeMap<u64, RgbImage>>>,
    /// Ids that could not be read, with the reason.
    failures: Mutex<BTreeMap<u64, String>>,
}

impl ImageFolder {
    pub fn new(dir: &Path, cache_inputs: bool) -> Self {
        Self { dir: dir.to_path_buf(), cache: cache_inputs.then(|| Mutex::new(BTreeMap::new())), failures: Mutex::new(BTreeMap::new()) }
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.jpg"))
    }

    fn load_one(&self, id: u64) -> Option<RgbImage> {
        if let Some(image) = self.cache.as_ref().and_then(|cache| cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned()) {
            return Some(image);
        }
        let result =
            std::fs::read(self.path(id)).map_err(|e| format!("cannot read: {e}")).and_then(|bytes| decode_image(&bytes).map_err(|e| e.to_string()));
        match result {
            Ok(image) => {
                let input = resize_to_input(&image);
                if let Some(cache) = &self.cache {
                    cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, input.clone());
                }
                Some(input)
            }
            Err(reason) => {
                self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, reason);
                None
            }
        }
    }

    /// Decode a batch in parallel; returns the labels that loaded and their 224x224 images.
    pub fn load_batch<'a>(&self, labels: &[&'a ImageLabel]) -> (Vec<&'a ImageLabel>, Vec<RgbImage>) {
        let loaded: Vec<Option<RgbImage>> = labels.par_iter().map(|l| self.load_one(l.id)).collect();
        labels.iter().zip(loaded).filter_map(|(l, image)| image.map(|i| (*l, i))).unzip()
    }

    /// Decodes `labels` in batches of `batch`, calling `f` with each batch's readable labels and
    /// their images (batches with none are skipped), with a progress bar titled `what`.
    pub fn for_each_batch<'a>(
        &self,
        labels: &[&'a ImageLabel],
        batch: usize,
        what: &'static str,
        mut f: impl FnMut(&[&'a ImageLabel], Vec<RgbImage>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut progress = Progress::new(what, labels.len());
        for chunk in labels.chunks(batch.max(1)) {
            let (loaded, images) = self.load_batch(chunk);
            progress.inc(chunk.len());
            if !loaded.is_empty() {
                f(&loaded, images)?;
            }
        }
        progress.finish();
        Ok(())
    }

    pub fn failures(&self) -> BTreeMap<u64, String> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Progress of a long loop: an indicatif bar on a terminal; in logs (scripts, nohup), where
/// indicatif hides its bars, a plain line at every tenth of the work instead.
pub struct Progress {
    bar: indicatif::ProgressBar,
    what: &'static str,
    total: usize,
    tenths_shown: usize,
    started: std::time::Instant,
    log_lines: bool,
}

impl Progress {
    pub fn new(what: &'static str, total: usize) -> Self {
        use std::io::IsTerminal;
        let bar = loupe_cli::progress_bar(total, what);
        let log_lines = total > 0 && !std::io::stderr().is_terminal();
        Self { bar, what, total, tenths_shown: 0, started: std::time::Instant::now(), log_lines }
    }

    pub fn inc(&mut self, n: usize) {
        self.bar.inc(n as u64);
        let done = (self.bar.position() as usize).min(self.total);
        let tenths = done * 10 / self.total.max(1);
        if self.log_lines && tenths > self.tenths_shown {
            self.tenths_shown = tenths;
            eprintln!("{}: {done}/{} ({:.0} s)", self.what, self.total, self.started.elapsed().as_secs_f64());
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
