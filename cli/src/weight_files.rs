//! Making and describing weight files: `init`, `import-vgg16`, `inspect`, `manifest`, `bundle`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use loupe::burn::tensor::Device;
use loupe::model::{AVA_MEAN_HISTOGRAM, AVA_MEAN_SCORE, AestheticNet, ModelConfig};
use loupe::preprocess::InputConvention;
use loupe::weights::{self, Manifest, ManifestEntry, Precision, WeightMetadata};
use loupe_cli::{read, write};

use crate::args::{ImportArgs, InitArgs};

pub fn init(args: InitArgs) -> Result<()> {
    let config = ModelConfig::new(args.model.output, args.model.head).with_width_divisor(args.width_divisor).with_statistics(args.model.statistics);
    let net = seeded_net(config, args.model.seed)?;
    let mut metadata = WeightMetadata::new(config, InputConvention::CaffeBgr);
    metadata.provenance = format!("random initialisation (seed {}), for tests and demos", args.model.seed);
    metadata.licence = "MIT OR Apache-2.0".into();
    let megabytes = write_untrained(net, &metadata, &args.model.out)?;
    let out = args.model.out.display();
    println!("wrote {out} ({megabytes:.1} MB, random {:?} {:?} head, width /{})", config.output, config.head, args.width_divisor);
    Ok(())
}

pub fn import_vgg16(args: ImportArgs) -> Result<()> {
    let convention = args.input.unwrap_or_else(|| loupe::imagenet::default_convention(&args.from));
    let config = ModelConfig::new(args.model.output, args.model.head).with_statistics(args.model.statistics);
    let mut net = seeded_net(config, args.model.seed)?;
    let fc_loaded = loupe::imagenet::import_imagenet(&mut net, &args.from)?;
    let mut metadata = WeightMetadata::new(config, convention);
    metadata.precision = if args.f32 { Precision::F32 } else { Precision::F16 };
    metadata.provenance = format!(
        "ImageNet VGG16 conv base from {}{}; head untrained (output centred on AVA's mean)",
        args.from.file_name().unwrap_or_default().to_string_lossy(),
        if fc_loaded { " (fc6/fc7 from the same file)" } else { "" }
    );
    metadata.licence = "VGG16 ImageNet weights by the Oxford Visual Geometry Group (Simonyan & Zisserman), CC BY 4.0".into();
    let megabytes = write_untrained(net, &metadata, &args.model.out)?;
    let out = args.model.out.display();
    println!("wrote {out} ({megabytes:.1} MB, {:?} {:?} head, {convention:?} input)", config.output, config.head);
    Ok(())
}

/// A freshly initialised network on the CPU: the same weights for the same seed.
fn seeded_net(config: ModelConfig, seed: u64) -> Result<AestheticNet> {
    let device = Device::flex();
    device.seed(seed);
    Ok(config.init(&device)?)
}

/// Writes a network whose head is untrained, its output centred on AVA's mean first (so its
/// meaningless scores at least lie in 1..10). Returns the file's size in MB.
fn write_untrained(mut net: AestheticNet, metadata: &WeightMetadata, out: &Path) -> Result<f64> {
    net.centre_output(AVA_MEAN_SCORE, AVA_MEAN_HISTOGRAM);
    let bytes = weights::encode(&net, metadata)?;
    write(out, &bytes)?;
    Ok(bytes.len() as f64 / 1e6)
}

pub fn inspect(file: &Path) -> Result<()> {
    let bytes = read(file)?;
    let (metadata, _) = weights::read_header(&bytes).with_context(|| file.display().to_string())?;
    println!("{}", serde_json::to_string_pretty(&metadata)?);
    Ok(())
}

/// Writes the folder's [`Manifest`].
pub fn manifest(dir: &Path) -> Result<()> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "loupe"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("no .loupe files in {}", dir.display());
    }
    let entries = paths
        .iter()
        .map(|path| {
            let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            ManifestEntry::describe(file, &read(path)?).with_context(|| path.display().to_string())
        })
        .collect::<Result<Vec<_>>>()?;
    let out = dir.join(Manifest::FILE_NAME);
    write(&out, serde_json::to_vec_pretty(&Manifest::new(entries))?)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Cuts whole models sharing one backbone into backbone.loupe, one head file per model, and the
/// manifest.
pub fn bundle(out: &Path, models: &[PathBuf]) -> Result<()> {
    let device = Device::flex();
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut backbone_written: Option<String> = None;
    for path in models {
        let (net, metadata) = weights::decode(&read(path)?, &device).with_context(|| path.display().to_string())?;
        let id = weights::backbone_id(&net)?;
        match &backbone_written {
            Some(first) if *first != id => bail!("{} has another backbone than the first model: they cannot share one", path.display()),
            Some(_) => {}
            None => {
                write(&out.join("backbone.loupe"), weights::encode(&net, &metadata.for_shared_backbone(id.clone()))?)?;
                backbone_written = Some(id.clone());
            }
        }
        let head = metadata.for_head(id);
        let file = out.join(format!("{}.loupe", head.model.output.name()));
        write(&file, weights::encode(&net, &head)?)?;
        println!("{} → {} (+ shared backbone.loupe)", path.display(), file.display());
    }
    manifest(out)
}
