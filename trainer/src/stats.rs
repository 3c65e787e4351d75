//! `loupe data stats` and `loupe data split`: what the labels look like, the paper's splits, its
//! sample weights, and Fig. 2 (score distributions of all / train / RS-test / ED-test).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::labels::{ImageLabel, Labels};
use crate::splits::{SampleWeights, ScoreClass, Splits, sample_weights};

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
    // Eq. 1 is computed on train only; without splits every image is training data.
    let train = sets.iter().find(|(n, _)| n == "train").unwrap_or(&sets[0]);
    let scores: Vec<f32> = train.1.iter().map(|l| l.mean()).collect();
    sample_weights(&scores, bins, max_weight)
}

