//! What a model says about one image.

use serde::{Deserialize, Serialize};

use crate::model::HISTOGRAM_BINS;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Aesthetic score in 1..10: the regression output, or the histogram's mean.
    pub score: f32,
    /// Predicted share of ratings 1..10 (histogram model only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<[f32; HISTOGRAM_BINS]>,
    /// Standard deviation of the predicted ratings: the paper's difficulty measure (histogram
    /// model only). Small = raters would agree; large = hard to judge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<f32>,
    /// The score as a person reads it: the share of AVA's 255,502 rated photos whose mean rating
    /// is below it, in percent ("better than 71% of photos rated on AVA"); see [`ava_percentile`].
    #[serde(default)]
    pub percentile: f32,
}

impl Prediction {
    pub fn from_score(score: f32) -> Self {
        Self { score, histogram: None, std: None, percentile: ava_percentile(score) }
    }

    pub fn from_histogram(histogram: [f32; HISTOGRAM_BINS]) -> Self {
        let (score, std) = histogram_mean_std(&histogram);
        Self { score, histogram: Some(histogram), std: Some(std), percentile: ava_percentile(score) }
    }
}

/// Share of AVA's rated photos below each score 1.00, 1.01, ..., 10.00, from the mean ratings of
/// all 255,502 (written by `scripts/ava-score-table.py` from the AVA vote counts).
const AVA_SCORE_TABLE: &str = include_str!("ava_score_cdf.csv");
const AVA_TABLE_STEP: f32 = 0.01;

fn ava_share_below_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        AVA_SCORE_TABLE
            .lines()
            .filter(|line| !line.starts_with('#') && !line.starts_with("score"))
            .map(|line| {
                let share = line.split_once(',').and_then(|(_, share)| share.parse().ok());
                // The table is compiled in and checked by a test: a bad line is a build mistake.
                share.expect("src/ava_score_cdf.csv: every line is score,share")
            })
            .collect()
    })
}

/// Percentage of AVA's rated photos whose mean rating is below `score` (0 at 1 and below, 100 at
/// 10 and above; linear between the table's 0.01 steps). NaN for NaN.
pub fn ava_percentile(score: f32) -> f32 {
    if score.is_nan() {
        return f32::NAN;
    }
    let table = ava_share_below_table();
    let position = ((score - 1.0) / AVA_TABLE_STEP).clamp(0.0, (table.len() - 1) as f32);
    let below = (position.floor() as usize).min(table.len() - 2);
    let t = position - below as f32;
    100.0 * (table[below] * (1.0 - t) + table[below + 1] * t)
}

/// Mean and standard deviation of ratings 1..=10 distributed as `histogram` (normalised first, so
/// raw vote counts work too): score = Σ k·p_k, std = sqrt(Σ (k − score)²·p_k).
pub fn histogram_mean_std(histogram: &[f32]) -> (f32, f32) {
    let total: f64 = histogram.iter().map(|&p| f64::from(p)).sum();
    if total <= 0.0 {
        return (f32::NAN, f32::NAN);
    }
    let rating = |i: usize| (i + 1) as f64;
    let mean: f64 = histogram.iter().enumerate().map(|(i, &p)| rating(i) * f64::from(p)).sum::<f64>() / total;
    let variance: f64 = histogram.iter().enumerate().map(|(i, &p)| (rating(i) - mean).powi(2) * f64::from(p)).sum::<f64>() / total;
    (mean as f32, variance.sqrt() as f32)
}

/// A difficulty word for a std, for people: AVA's stds are mostly 1.2..1.8 (mean ≈ 1.43).
pub fn difficulty_label(std: f32) -> &'static str {
    match std {
        s if s < 1.25 => "easy to judge: raters would largely agree",
        s if s < 1.6 => "typical: raters would mostly agree",
        s if s < 1.9 => "divisive: raters would disagree",
        _ => "very divisive: raters would strongly disagree",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ava_table_covers_1_to_10_in_hundredths_and_rises() {
        let table = ava_share_below_table();
        assert_eq!(table.len(), 901);
        assert_eq!((table[0], table[900]), (0.0, 1.0));
        assert!(table.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!((ava_percentile(0.0), ava_percentile(1.0), ava_percentile(10.0), ava_percentile(12.0)), (0.0, 0.0, 100.0, 100.0));
        assert!(ava_percentile(f32::NAN).is_nan());
        // Halfway between two steps is halfway between their shares.
        let (a, b) = (ava_percentile(5.5), ava_percentile(5.51));
        assert!((ava_percentile(5.505) - (a + b) / 2.0).abs() < 1e-3);
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-4
    }

    #[test]
    fn mean_and_std_by_hand() {
        let mut peak = [0.0; 10];
        peak[4] = 1.0;
        assert_eq!(histogram_mean_std(&peak), (5.0, 0.0));

        // Uniform over 1..10: mean 5.5, variance (10² − 1) / 12 = 8.25.
        let (mean, std) = histogram_mean_std(&[0.1; 10]);
        assert!(close(mean, 5.5) && close(std, 8.25f32.sqrt()));

        // Half 2s, half 8s: mean 5, std 3.
        let mut split = [0.0; 10];
        split[1] = 0.5;
        split[7] = 0.5;
        let (mean, std) = histogram_mean_std(&split);
        assert!(close(mean, 5.0) && close(std, 3.0));

        // AVA image 42039's real vote counts (148 votes); mean 763/148, std by hand.
        let votes = [0.0, 5.0, 10.0, 28.0, 54.0, 31.0, 12.0, 3.0, 3.0, 2.0];
        let (mean, std) = histogram_mean_std(&votes);
        assert!(close(mean, 763.0 / 148.0), "{mean}");
        assert!((std - 1.4552).abs() < 1e-3, "{std}");
    }

    #[test]
    fn prediction_from_histogram_carries_all_three() {
        let mut histogram = [0.0; 10];
        histogram[2] = 0.25;
        histogram[3] = 0.75;
        let p = Prediction::from_histogram(histogram);
        assert!(close(p.score, 3.75));
        assert!(close(p.std.unwrap(), (0.25f32 * 0.75 * 0.75 + 0.75 * 0.25 * 0.25).sqrt()));
        assert_eq!(p.histogram, Some(histogram));
        assert!(Prediction::from_score(6.0).std.is_none());
        assert!(histogram_mean_std(&[0.0; 10]).0.is_nan());
    }
}
