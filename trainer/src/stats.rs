//! `loupe-train data stats` and `loupe-train data split`: what the labels look like, the paper's splits, its
//! sample weights, and Fig. 2 (score distributions of all / train / RS-test / ED-test).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::labels::{ImageLabel, Labels, read_id_list};
use crate::plots;
use crate::splits::{PAPER_BINS, SCORE_MAX, SCORE_MIN, SampleWeights, ScoreClass, Splits, listed_splits, paper_splits, sample_weights};

/// `data stats --json`: every set's summary, and the sample weights of Eq. 1 over their bins.
#[derive(Serialize)]
struct StatsReport<'a> {
    sets: BTreeMap<&'a str, SetSummary>,
    sample_weights: WeightsReport<'a>,
}

#[derive(Serialize)]
struct WeightsReport<'a> {
    /// The set the weights were computed on ([`weighted_set`]): "train" with splits, else "all".
    computed_on: &'a str,
    /// Bin i covers [score_min + i * width, score_min + (i + 1) * width).
    score_min: f32,
    score_max: f32,
    #[serde(flatten)]
    weights: &'a SampleWeights,
}

/// `data stats`: every set's summary and the sample weights of Eq. 1, with plots and JSON if asked.
pub fn stats(labels: &Path, splits: Option<&Path>, bins: usize, plots_dir: Option<&Path>, json: Option<&Path>) -> Result<()> {
    let parsed = Labels::read(labels)?;
    parsed.warn_about_bad_rows();
    if parsed.images.is_empty() {
        bail!("{}: no valid label rows ({} bad): nothing to summarise", labels.display(), parsed.bad_rows.len());
    }
    let splits = splits.map(Splits::read).transpose()?;
    let sets = named_sets(&parsed, splits.as_ref());
    for (name, set) in &sets {
        print_summary(name, &summarise(set));
    }
    let weights = weights_for(&sets, bins, None);
    let (min, max) = weights.range();
    let used = weights.counts.iter().filter(|&&c| c > 0).count();
    println!("sample weights (Eq. 1, {bins} bins, {used} non-empty): {min:.3} .. {max:.1}");
    if let Some(path) = json {
        let report = StatsReport {
            sets: sets.iter().map(|(name, set)| (name.as_str(), summarise(set))).collect(),
            sample_weights: WeightsReport { computed_on: &weighted_set(&sets).0, score_min: SCORE_MIN, score_max: SCORE_MAX, weights: &weights },
        };
        std::fs::write(path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = plots_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        plots::save(&plots::ScoreDistributions(&sets), &dir.join("score_distributions"))?;
        plots::save(&plots::SampleWeightsFigure(&weights), &dir.join("sample_weights"))?;
        println!("plots in {}", dir.display());
    }
    Ok(())
}

/// `data split`: the paper's splits (or a listed test set) written to `out`, with their
/// summaries (split.json) and Fig. 2's plots.
pub fn split(labels: &Path, out: &Path, rs: usize, ed_per_class: usize, seed: u64, test_list: Option<&Path>) -> Result<()> {
    let parsed = Labels::read(labels)?;
    parsed.warn_about_bad_rows();
    let made = match test_list {
        Some(list) => listed_splits(&parsed.images, &read_id_list(list)?, ed_per_class, seed)?,
        None => paper_splits(&parsed.images, rs, ed_per_class, seed)?,
    };
    if made.train.is_empty() {
        bail!("the test sets take all {} labelled images and leave no training set: lower --rs or --ed-per-class", parsed.images.len());
    }
    made.write(out)?;
    let sets = named_sets(&parsed, Some(&made));
    let mut summary = serde_json::Map::new();
    for (name, set) in &sets {
        let s = summarise(set);
        print_summary(name, &s);
        summary.insert(name.clone(), serde_json::to_value(s)?);
    }
    let weights = weights_for(&sets, PAPER_BINS, None);
    let (min, max) = weights.range();
    println!("train sample weights (Eq. 1, {PAPER_BINS} bins): {min:.3} .. {max:.1}");
    summary.insert("seed".into(), seed.into());
    std::fs::write(out.join("split.json"), serde_json::to_vec_pretty(&summary)?)?;
    plots::save(&plots::ScoreDistributions(&sets), &out.join("score_distributions"))?;
    plots::save(&plots::SampleWeightsFigure(&weights), &out.join("sample_weights"))?;
    println!("wrote {}/{{train,rs_test,ed_test}}.txt, split.json and plots", out.display());
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct SetSummary {
    pub images: usize,
    pub mean_score: f64,
    pub sd_score: f64,
    pub min_score: f32,
    pub max_score: f32,
    pub low: usize,
    pub average: usize,
    pub high: usize,
    pub mean_std: f64,
}

pub fn summarise(labels: &[&ImageLabel]) -> SetSummary {
    let scores: Vec<f32> = labels.iter().map(|l| l.mean()).collect();
    let n = scores.len().max(1) as f64;
    let mean = scores.iter().map(|&s| f64::from(s)).sum::<f64>() / n;
    let sd = (scores.iter().map(|&s| (f64::from(s) - mean).powi(2)).sum::<f64>() / n).sqrt();
    let class = |c| scores.iter().filter(|&&s| ScoreClass::of(s) == c).count();
    SetSummary {
        images: labels.len(),
        mean_score: mean,
        sd_score: sd,
        min_score: scores.iter().copied().fold(f32::INFINITY, f32::min),
        max_score: scores.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        low: class(ScoreClass::Low),
        average: class(ScoreClass::Average),
        high: class(ScoreClass::High),
        mean_std: labels.iter().map(|l| f64::from(l.std())).sum::<f64>() / n,
    }
}

pub fn print_summary(name: &str, s: &SetSummary) {
    println!(
        "{name:>8}: {:>7} images, score {:.3} ± {:.3} ({:.2}..{:.2}); <4: {}, 4..7: {}, >7: {}; mean std {:.3}",
        s.images, s.mean_score, s.sd_score, s.min_score, s.max_score, s.low, s.average, s.high, s.mean_std
    );
}

/// The named subsets of `labels` given by `splits` (all when there are none).
pub fn named_sets<'a>(labels: &'a Labels, splits: Option<&Splits>) -> Vec<(String, Vec<&'a ImageLabel>)> {
    let all: Vec<&ImageLabel> = labels.images.iter().collect();
    let mut sets = vec![("all".to_string(), all)];
    if let Some(splits) = splits {
        let by_id: BTreeMap<u64, &ImageLabel> = labels.images.iter().map(|l| (l.id, l)).collect();
        for (name, ids) in [("train", &splits.train), ("RS-test", &splits.rs_test), ("ED-test", &splits.ed_test)] {
            sets.push((name.to_string(), ids.iter().filter_map(|id| by_id.get(id).copied()).collect()));
        }
    }
    sets
}

pub fn weights_for(sets: &[(String, Vec<&ImageLabel>)], bins: usize, max_weight: Option<f32>) -> SampleWeights {
    let scores: Vec<f32> = weighted_set(sets).1.iter().map(|l| l.mean()).collect();
    sample_weights(&scores, bins, max_weight)
}

/// The set Eq. 1 is computed on: train only; without splits every image is training data.
fn weighted_set<'s, 'l>(sets: &'s [(String, Vec<&'l ImageLabel>)]) -> &'s (String, Vec<&'l ImageLabel>) {
    // `named_sets` always starts with "all", so set 0 exists.
    sets.iter().find(|(n, _)| n == "train").unwrap_or(&sets[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AVA.txt row whose ten votes all give `rating`.
    fn row(index: usize, id: u64, rating: usize) -> String {
        let mut counts = [0; 10];
        counts[rating - 1] = 10;
        let counts: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
        format!("{index} {id} {} 0 0 1", counts.join(" "))
    }

    #[test]
    fn stats_without_valid_rows_and_splits_without_a_train_set_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, "not an AVA row\nneither is this\n").unwrap();
        let error = stats(&bad, None, PAPER_BINS, Some(&dir.path().join("plots")), None).unwrap_err().to_string();
        assert!(error.contains("no valid label rows (2 bad)"), "{error}");

        // Three images, one per ED class: RS 0 + ED 1 per class takes them all.
        let three = dir.path().join("three.txt");
        std::fs::write(&three, [row(1, 11, 2), row(2, 12, 5), row(3, 13, 9)].join("\n")).unwrap();
        let out = dir.path().join("split");
        let error = split(&three, &out, 0, 1, 0, None).unwrap_err().to_string();
        assert!(error.contains("no training set"), "{error}");
        assert!(!out.join("train.txt").exists());
    }
}
