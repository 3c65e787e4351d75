//! `loupe score`: one line per photo (a table row or JSON), every model from one backbone pass.

use std::path::Path;

use anyhow::{Context, Result, bail};
use loupe::prediction::difficulty_label;
use loupe::preprocess::decode_image;
use loupe::{Prediction, Scorer};
use loupe_cli::{progress_bar, read};

use crate::args::ScoreArgs;

pub fn score(args: ScoreArgs) -> Result<()> {
    let scorers = args.model.load_scorers()?;
    let bar = (args.images.len() > 1).then(|| progress_bar(args.images.len(), "scoring"));
    let mut failures = 0;
    for path in &args.images {
        let line = match score_one(&scorers, path) {
            Ok(predictions) => format_predictions(path, &predictions, args.json)?,
            Err(error) => {
                failures += 1;
                if args.json {
                    serde_json::json!({"image": path, "error": format!("{error:#}")}).to_string()
                } else {
                    format!("{}: error: {error:#}", path.display())
                }
            }
        };
        match &bar {
            Some(bar) => {
                // Not `bar.println`: it prints nothing when stderr is not a terminal (pipes, scripts).
                bar.suspend(|| println!("{line}"));
                bar.inc(1);
            }
            None => println!("{line}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if failures > 0 {
        bail!("{failures} of {} images could not be scored", args.images.len());
    }
    Ok(())
}

/// Every model's prediction for one photo, named by output kind.
fn score_one(scorers: &[Scorer], path: &Path) -> Result<Vec<(&'static str, Prediction)>> {
    let image = decode_image(&read(path)?)?;
    // One backbone pass feeds every head bundled with the same backbone.
    let predictions = Scorer::predict_all(scorers, std::slice::from_ref(&image))?;
    scorers.iter().zip(predictions).map(|(s, p)| Ok((s.output().name(), p.into_iter().next().context("no prediction")?))).collect()
}

fn format_predictions(path: &Path, predictions: &[(&str, Prediction)], json: bool) -> Result<String> {
    if json {
        let mut object = serde_json::json!({ "image": path });
        for (name, prediction) in predictions {
            object[*name] = serde_json::to_value(prediction)?;
            // The std in words, as the browser shows it.
            if let Some(std) = prediction.std {
                object[*name]["difficulty"] = difficulty_label(std).into();
            }
        }
        return Ok(object.to_string());
    }
    let mut line = format!("{}", path.display());
    for (name, p) in predictions {
        line += &format!("  {name}: {:.3} (better than {:.0}% of AVA)", p.score, p.percentile);
        if let (Some(std), Some(histogram)) = (p.std, p.histogram) {
            let bins: Vec<String> = histogram.iter().map(|v| format!("{v:.2}")).collect();
            line += &format!(" std {std:.3} ({}) [{}]", difficulty_label(std), bins.join(" "));
        }
    }
    Ok(line)
}
