//! `loupe crop`: the best crop of one photo, by the fast search or the paper's brute force.

use anyhow::{Context, Result};
use loupe::crop::{CropReport, CropRequest, FastCropOptions, exhaustive_crop_search, fast_crop_search};
use loupe::preprocess::decode_image;
use loupe::scorer::crop_scorer;
use loupe_cli::{progress_bar, read};

use crate::args::CropArgs;

pub fn crop(args: CropArgs) -> Result<()> {
    let scorers = args.model.load_scorers()?;
    let scorer = crop_scorer(&scorers).context("no model to crop with")?;
    let image = decode_image(&read(&args.image)?).with_context(|| args.image.display().to_string())?;
    let request = CropRequest {
        shape: args.aspect,
        candidates: args.candidates,
        seed: args.seed,
        top_k: args.top_k.saturating_add(1), // --top-k is user input: no overflow at usize::MAX
        layout: args.layout,
        ..CropRequest::default()
    };
    let bar = progress_bar(args.candidates, "cropping");
    let crops = if args.exact {
        exhaustive_crop_search(scorer, &image, &request, |done, _| bar.set_position(done as u64))?
    } else {
        let options = FastCropOptions { rerank: args.rerank, ..FastCropOptions::default() };
        fast_crop_search(scorer, &image, &request, &options, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64)
        })?
    };
    bar.finish_and_clear();
    let mut report = CropReport::new(&crops)?;
    report.judge_difficulty(&scorers, &image)?;
    if let Some(out) = &args.output {
        report.top_crop.rect().crop(&image).save(out).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if args.json {
        // The browser's loupeCrop() answer ({topCrop, crops, focal}) with the photo's path.
        let mut json = serde_json::to_value(&report)?;
        json["image"] = serde_json::to_value(&args.image)?;
        println!("{json}");
    } else {
        for (i, c) in report.crops.iter().enumerate() {
            let rank = if i == 0 { "best crop:".to_string() } else { format!("  #{}:", i + 1) };
            println!("{rank} x={} y={} {}x{}  score {:.3} (better than {:.0}% of AVA)", c.x, c.y, c.width, c.height, c.score, c.percentile);
        }
        if let Some(difficulty) = &report.difficulty {
            println!("best crop's rating spread: std {:.2}, {}", difficulty.std, difficulty.label);
        }
    }
    Ok(())
}
