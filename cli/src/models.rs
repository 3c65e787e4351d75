//! `--weights` and `--device`: which weight files to load, and loading them as scorers.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use loupe::{Scorer, weights};

use crate::{device, read};

/// Where `loupe` looks for weights when `--weights` is not given.
pub const DEFAULT_WEIGHTS: [&str; 3] = ["weights/backbone.loupe", "weights/regression.loupe", "weights/histogram.loupe"];

#[derive(clap::Args)]
pub struct ModelArgs {
    /// Loupe weight file(s); give a regression and a histogram file to see both models.
    /// Default: weights/regression.loupe and weights/histogram.loupe where they exist.
    #[arg(long = "weights", short = 'w')]
    pub weights: Vec<PathBuf>,
    /// Compute device.
    #[arg(long, default_value = "flex", help = device::DEVICE_HELP)]
    pub device: String,
}

impl ModelArgs {
    /// The files given, or the default weights that exist.
    pub fn weight_paths(&self) -> Vec<PathBuf> {
        if self.weights.is_empty() { DEFAULT_WEIGHTS.iter().map(PathBuf::from).filter(|p| p.exists()).collect() } else { self.weights.clone() }
    }

    /// The weight files' paths and bytes (at least one file).
    pub fn read_weight_files(&self) -> Result<(Vec<PathBuf>, Vec<Vec<u8>>)> {
        let paths = self.weight_paths();
        if paths.is_empty() {
            bail!("no weights: pass --weights FILE (make one with `loupe import-vgg16`)");
        }
        let files = paths.iter().map(|p| read(p)).collect::<Result<_>>()?;
        Ok((paths, files))
    }

    /// One scorer per model in the files (a backbone file joins the heads after it), on the
    /// device; says so on stderr when a model's head is untrained.
    pub fn load_scorers(&self) -> Result<Vec<Scorer>> {
        Ok(self.load_named_scorers()?.0)
    }

    /// [`ModelArgs::load_scorers`], and beside each scorer the path of its file (a backbone file
    /// names no model).
    pub fn load_named_scorers(&self) -> Result<(Vec<Scorer>, Vec<String>)> {
        let (paths, files) = self.read_weight_files()?;
        let device = device::parse_device(&self.device)?;
        let slices: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let scorers = Scorer::from_weight_files(&slices, &device).with_context(|| names.join(", "))?;
        note_untrained_heads(&scorers);
        // The scorers come in file order, backbone files left out.
        let model_names = names
            .into_iter()
            .zip(&files)
            .filter(|(_, bytes)| weights::read_header(bytes).is_ok_and(|(metadata, _)| metadata.part != weights::Part::Backbone))
            .map(|(name, _)| name)
            .collect();
        Ok((scorers, model_names))
    }
}

/// Says on stderr which models have an untrained head (their scores mean nothing yet).
pub fn note_untrained_heads(scorers: &[Scorer]) {
    for scorer in scorers.iter().filter(|s| !s.metadata.head_trained) {
        eprintln!("note: the {} model has an untrained head: its scores are not meaningful", scorer.output().name());
    }
}
