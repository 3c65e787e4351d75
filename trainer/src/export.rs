//! A trained run → a Loupe weight file whose metadata says how it was made (`export`, and the
//! `model.loupe` every training run ends with).

use anyhow::{Context, Result};
use burn::tensor::Device;
use loupe::model::{AestheticNet, OutputKind};
use loupe::weights::{self, Precision, WeightMetadata};
use loupe_cli::{read, write};

use crate::args::ExportArgs;
use crate::checkpoint::{CheckpointState, Checkpoints};
use crate::train::{HistogramLoss, make_optimizer};

/// `export`: the run's last complete epoch as a weight file, with metrics, provenance and licence
/// if given.
pub fn export_run(args: &ExportArgs) -> Result<()> {
    let checkpoints = Checkpoints::new(&args.run);
    let state = checkpoints.load_state()?.with_context(|| format!("{} holds no checkpoint", args.run.display()))?;
    let net = state.config.model.init(&Device::flex())?;
    let optimizer = make_optimizer(&state.config);
    // The newest epoch whose files can be read (the one before it if they never reached the disk).
    let (state, net, _) = checkpoints.load(state, net, optimizer)?;
    let metrics = match &args.metrics {
        Some(path) => serde_json::from_slice(&read(path)?).with_context(|| format!("{} is not JSON", path.display()))?,
        None => serde_json::Value::Null,
    };
    let precision = if args.f32 { Precision::F32 } else { Precision::F16 };
    let mut bytes = export(&net, &state, precision, metrics)?;
    if args.provenance.is_some() || args.licence.is_some() {
        let (mut metadata, _) = weights::read_header(&bytes)?;
        metadata.provenance = args.provenance.clone().unwrap_or(metadata.provenance);
        metadata.licence = args.licence.clone().unwrap_or(metadata.licence);
        bytes = weights::encode(&net, &metadata)?;
    }
    write(&args.out, &bytes)?;
    println!("wrote {} ({:.1} MB)", args.out.display(), bytes.len() as f64 / 1e6);
    Ok(())
}

/// The trained network as a Loupe weight file, its metadata saying how it was made.
pub fn export(net: &AestheticNet, state: &CheckpointState, precision: Precision, metrics: serde_json::Value) -> Result<Vec<u8>> {
    let config = &state.config;
    let mut metadata = WeightMetadata::new(config.model, config.input);
    metadata.precision = precision;
    metadata.head_trained = true;
    metadata.provenance = format!(
        "trained by `loupe-train train` from {} on {} ({} epochs{})",
        config.init,
        config.labels.display(),
        state.epochs_done,
        if config.freeze_backbone { ", frozen backbone" } else { "" }
    );
    metadata.licence = "VGG16 ImageNet weights by the Oxford Visual Geometry Group (Simonyan & Zisserman), CC BY 4.0".into();
    let last = state.history.last().cloned().unwrap_or_default();
    metadata.training = serde_json::json!({
        "labels": config.labels,
        "splits": config.splits,
        "train_images": last.images,
        "epochs": state.epochs_done,
        "sample_weights": if config.weighted { format!("Eq. 1, {} bins", config.bins) } else { "none".into() },
        "max_weight": config.max_weight,
        "loss": match (config.model.output, config.histogram_loss) {
            (OutputKind::Regression, _) => if config.weighted { "WMSE (Eq. 2)" } else { "MSE" },
            (OutputKind::Histogram, HistogramLoss::ChiSquare) => if config.weighted { "weighted chi-square (Eq. 3)" } else { "chi-square" },
            (OutputKind::Histogram, HistogramLoss::Emd) => "EMD",
        },
        "optimizer": if config.closed_form { serde_json::json!(format!("closed form (weighted kernel ridge, degree 2, ridge {})", config.ridge)) } else { serde_json::json!(config.optimizer) },
        "lr": config.lr,
        "batch": config.batch,
        "freeze_backbone": config.freeze_backbone,
        "seed": config.seed,
        "final_loss": last.loss,
        "failed_images": state.failed_images.len(),
    });
    metadata.metrics = metrics;
    Ok(weights::encode(net, &metadata)?)
}
