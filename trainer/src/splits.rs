//! The paper's splits (Sec. 4.1) and sample weights (Sec. 3.1, Eq. 1).
//!
//! - RS-test: N random images (3000 in the paper).
//! - ED-test: an equal number of images with score < 4, 4 ≤ score ≤ 7 and score > 7 (1000 each),
//!   disjoint from RS-test.
//! - train: everything else. Sample weights are computed on train only.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use loupe::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::labels::ImageLabel;

/// The paper's score classes for ED-test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreClass {
    Low,
    Average,
    High,
}

impl ScoreClass {
    pub fn of(score: f32) -> Self {
        if score < 4.0 {
            Self::Low
        } else if score <= 7.0 {
            Self::Average
        } else {
            Self::High
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Splits {
    pub train: Vec<u64>,
    pub rs_test: Vec<u64>,
    pub ed_test: Vec<u64>,
}

pub const SPLIT_FILES: [&str; 3] = ["train.txt", "rs_test.txt", "ed_test.txt"];

/// ED-test: `per_class` images of each class drawn from `pool` (in the pool's shuffled order).
fn evenly_distributed(pool: &[&ImageLabel], per_class: usize) -> Result<Vec<u64>> {
    let mut chosen = Vec::with_capacity(3 * per_class);
    for class in [ScoreClass::Low, ScoreClass::Average, ScoreClass::High] {
        let members: Vec<u64> = pool.iter().filter(|l| ScoreClass::of(l.mean()) == class).map(|l| l.id).collect();
        if members.len() < per_class {
            bail!("ED-test needs {per_class} images of class {class:?} but only {} remain", members.len());
        }
        chosen.extend(&members[..per_class]);
    }
    Ok(chosen)
}

/// The paper's random splits, deterministic per seed.
pub fn paper_splits(labels: &[ImageLabel], rs_size: usize, ed_per_class: usize, seed: u64) -> Result<Splits> {
    // Checked: absurd sizes from the command line must be refused, not wrap around.
    let held_out = ed_per_class.checked_mul(3).and_then(|ed| ed.checked_add(rs_size));
    if held_out.is_none_or(|n| n > labels.len()) {
        bail!("{} labelled images cannot hold {rs_size} RS-test + 3 x {ed_per_class} ED-test images", labels.len());
    }
    let mut order: Vec<&ImageLabel> = labels.iter().collect();
    SplitMix64::new(seed).shuffle(&mut order);
    let rs_test: Vec<u64> = order[..rs_size].iter().map(|l| l.id).collect();
    let ed_test = evenly_distributed(&order[rs_size..], ed_per_class)?;
    let held_out: HashSet<u64> = rs_test.iter().chain(&ed_test).copied().collect();
    let train = labels.iter().map(|l| l.id).filter(|id| !held_out.contains(id)).collect();
    Ok(Splits { train, rs_test, ed_test })
}

/// AVA's standard split: the listed ids are the test set (RS-test = all of them; ED-test = the
/// largest equal-thirds subset of them, capped at `ed_per_class` per class); train = the rest.
pub fn listed_splits(labels: &[ImageLabel], test_ids: &[u64], ed_per_class: usize, seed: u64) -> Result<Splits> {
    let listed: HashSet<u64> = test_ids.iter().copied().collect();
    let mut test: Vec<&ImageLabel> = labels.iter().filter(|l| listed.contains(&l.id)).collect();
    if test.is_empty() {
        bail!("none of the {} listed test ids has a label", test_ids.len());
    }
    let rs_test: Vec<u64> = test.iter().map(|l| l.id).collect();
    SplitMix64::new(seed).shuffle(&mut test);
    let smallest = [ScoreClass::Low, ScoreClass::Average, ScoreClass::High]
        .iter()
        .map(|&c| test.iter().filter(|l| ScoreClass::of(l.mean()) == c).count())
        .min()
        .unwrap_or(0);
    let ed_test = evenly_distributed(&test, smallest.min(ed_per_class))?;
    let train = labels.iter().map(|l| l.id).filter(|id| !listed.contains(id)).collect();
    Ok(Splits { train, rs_test, ed_test })
}

impl Splits {
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, ids) in SPLIT_FILES.iter().zip([&self.train, &self.rs_test, &self.ed_test]) {
            let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
            std::fs::write(dir.join(name), text).with_context(|| format!("cannot write {name}"))?;
        }
        Ok(())
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let read = |name: &str| crate::labels::read_id_list(&dir.join(name));
        Ok(Self { train: read(SPLIT_FILES[0])?, rs_test: read(SPLIT_FILES[1])?, ed_test: read(SPLIT_FILES[2])? })
    }
}

/// Eq. 1: B bins evenly covering [1, 10]; w_i = 1 / (b_i / Σ b), from the TRAIN set only.
/// Images in the same bin share a weight; rare scores weigh more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleWeights {
    /// Images per bin (b_i).
    pub counts: Vec<u32>,
    /// w_i per bin; 0 for empty bins (no training image ever uses them).
    pub weights: Vec<f32>,
}

pub const PAPER_BINS: usize = 90;
/// More bins than this would leave almost every bin empty even on all of AVA (255,502 images).
pub const MAX_BINS: usize = 100_000;
pub const SCORE_MIN: f32 = 1.0;
pub const SCORE_MAX: f32 = 10.0;

/// `--bins`: 1..=[`MAX_BINS`] (every function here assumes at least one bin).
pub fn parse_bins(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(bins @ 1..=MAX_BINS) => Ok(bins),
        _ => Err(format!("'{text}' is not a bin count from 1 to {MAX_BINS} (the paper: {PAPER_BINS})")),
    }
}

/// How far below a bin's lower edge a score may fall and still count as on it. Means are computed
/// in f32 (a few 1e-6 off), and a mean exactly on an edge (5.3 = 53/10 of the votes) must land in
/// the bin that starts there; a mean of up to 5,000 votes that is not on an edge is at least 2e-5
/// from it, so no other score moves.
const EDGE_TOLERANCE: f64 = 1e-5;

/// The bin of `score` among `bins` bins evenly covering [SCORE_MIN, SCORE_MAX], each holding its lower edge.
pub fn bin_of(score: f32, bins: usize) -> usize {
    let width = f64::from(SCORE_MAX - SCORE_MIN) / bins as f64;
    let position = (f64::from(score) - f64::from(SCORE_MIN) + EDGE_TOLERANCE) / width;
    (position.floor().max(0.0) as usize).min(bins - 1)
}

/// The paper's sample weights over `bins` bins (90 in the paper) for these training scores.
/// `max_weight` optionally clips the largest weights (not the paper's default).
pub fn sample_weights(train_scores: &[f32], bins: usize, max_weight: Option<f32>) -> SampleWeights {
    let mut counts = vec![0u32; bins];
    for &score in train_scores {
        counts[bin_of(score, bins)] += 1;
    }
    let total: u32 = counts.iter().sum();
    let weights = counts
        .iter()
        .map(|&b| {
            if b == 0 {
                return 0.0;
            }
            let normalised = b as f32 / total as f32;
            let w = 1.0 / normalised;
            max_weight.map_or(w, |m| w.min(m))
        })
        .collect();
    SampleWeights { counts, weights }
}

impl SampleWeights {
    pub fn weight(&self, score: f32) -> f32 {
        self.weights[bin_of(score, self.weights.len())]
    }

    /// Smallest and largest weight actually used.
    pub fn range(&self) -> (f32, f32) {
        let used = self.weights.iter().copied().filter(|&w| w > 0.0);
        let min = used.clone().fold(f32::INFINITY, f32::min);
        (min, used.fold(0.0, f32::max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(id: u64, score_bin: usize) -> ImageLabel {
        // All votes on one rating: the score is exactly that rating.
        let mut counts = [0; 10];
        counts[score_bin] = 10;
        ImageLabel { id, counts }
    }

    #[test]
    fn a_mean_on_a_bin_edge_lands_in_the_bin_that_starts_there() {
        // Means of exactly 5.3, 4.7 and 7.9 (computed in f32, as labels do).
        for (votes, bin) in [([0, 0, 0, 0, 70, 30, 0, 0, 0, 0], 43), ([0, 0, 0, 30, 70, 0, 0, 0, 0, 0], 37), ([0, 0, 0, 0, 0, 0, 10, 90, 0, 0], 69)] {
            let label = ImageLabel { id: 0, counts: votes };
            assert_eq!(bin_of(label.mean(), PAPER_BINS), bin, "{votes:?}: mean {}", label.mean());
        }
        assert_eq!((bin_of(1.0, 90), bin_of(1.0999, 90), bin_of(1.1, 90), bin_of(10.0, 90), bin_of(-3.0, 90)), (0, 0, 1, 89, 0));
    }

    #[test]
    fn bins_outside_one_to_max_are_refused() {
        assert_eq!(parse_bins("90"), Ok(90));
        for bad in ["0", "-1", "100001", "18446744073709551615", "many"] {
            assert!(parse_bins(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_split_sizes_that_overflow_are_refused() {
        let labels: Vec<ImageLabel> = (0..30).map(|id| label(id, (id % 10) as usize)).collect();
        for (rs, ed) in [(usize::MAX, 0), (1, usize::MAX / 2), (usize::MAX - 2, 1), (31, 0)] {
            let error = paper_splits(&labels, rs, ed, 0).unwrap_err().to_string();
            assert!(error.contains("cannot hold"), "{rs} {ed}: {error}");
        }
        assert!(paper_splits(&labels, 3, 1, 0).is_ok());
    }

    #[test]
    fn sample_weights_follow_eq_1_by_hand() {
        // 4 images: three score 5.0, one 8.0, over 9 bins of width 1 ([1,2), [2,3), ...).
        let w = sample_weights(&[5.0, 5.0, 5.0, 8.0], 9, None);
        assert_eq!(w.counts, vec![0, 0, 0, 0, 3, 0, 0, 1, 0]);
        // b' = 3/4 → w = 4/3; b' = 1/4 → w = 4.
        assert!((w.weight(5.0) - 4.0 / 3.0).abs() < 1e-6);
        assert!((w.weight(8.0) - 4.0).abs() < 1e-6);
        assert_eq!(w.weight(2.0), 0.0);
        assert_eq!(w.range(), (4.0 / 3.0, 4.0));
        // The paper's 90 bins: width 0.1; 10.0 falls in the last bin, 1.0 in the first.
        assert_eq!(bin_of(1.0, 90), 0);
        assert_eq!(bin_of(10.0, 90), 89);
        assert_eq!(bin_of(5.45, 90), 44);
        let clipped = sample_weights(&[5.0, 5.0, 5.0, 8.0], 9, Some(2.0));
        assert_eq!(clipped.weight(8.0), 2.0);
    }

    #[test]
    fn splits_are_disjoint_balanced_and_seeded() {
        // 60 low, 200 average, 40 high images.
        let labels: Vec<ImageLabel> = (0..300)
            .map(|i| {
                label(
                    i,
                    if i < 60 {
                        1
                    } else if i < 260 {
                        4
                    } else {
                        8
                    },
                )
            })
            .collect();
        let a = paper_splits(&labels, 50, 20, 1).unwrap();
        assert_eq!(a.rs_test.len(), 50);
        assert_eq!(a.ed_test.len(), 60);
        assert_eq!(a.train.len(), 300 - 110);
        let classes: Vec<ScoreClass> = a.ed_test.iter().map(|&id| ScoreClass::of(labels[id as usize].mean())).collect();
        for class in [ScoreClass::Low, ScoreClass::Average, ScoreClass::High] {
            assert_eq!(classes.iter().filter(|&&c| c == class).count(), 20);
        }
        let all: HashSet<u64> = a.train.iter().chain(&a.rs_test).chain(&a.ed_test).copied().collect();
        assert_eq!(all.len(), 300, "splits overlap or lose images");
        assert_eq!(a, paper_splits(&labels, 50, 20, 1).unwrap());
        assert_ne!(a.rs_test, paper_splits(&labels, 50, 20, 2).unwrap().rs_test);
        assert!(paper_splits(&labels, 50, 45, 1).is_err(), "only 40 high images exist");
    }
}
