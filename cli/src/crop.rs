//! `loupe crop`: the best crop of one photo, by the fast search or the paper's brute force.

use anyhow::{Context, Result};
use loupe::crop::{CropRequest, FastCropOptions, exhaustive_crop_search, fast_crop_search};
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
    let best = crops[0];
    if let Some(out) = &args.output {
        best.rect.crop(&image).save(out).with_context(|| format!("cannot write {}", out.display()))?;
    }
    if args.json {
        println!("{}", serde_json::json!({ "image": args.image, "best": best, "alternatives": &crops[1..] }));
    } else {
        let r = best.rect;
        println!("best crop: x={} y={} {}x{}  score {:.3}", r.x, r.y, r.width, r.height, best.score);
        for (i, c) in crops[1..].iter().enumerate() {
            let r = c.rect;
            println!("  #{}: x={} y={} {}x{}  score {:.3}", i + 2, r.x, r.y, r.width, r.height, c.score);
        }
    }
    Ok(())
}
