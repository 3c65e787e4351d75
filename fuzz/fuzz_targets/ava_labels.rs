//! Any text as AVA labels (AVA.txt rows or the count-only CSV): parsed into labels and bad rows,
//! then binned and weighted as Eq. 1 does, without a panic or an overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loupe_train::labels::Labels;
use loupe_train::splits::{PAPER_BINS, sample_weights};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let labels = Labels::parse(text);
    let scores: Vec<f32> = labels.images.iter().map(|l| l.mean()).collect();
    for score in &scores {
        assert!((1.0..=10.0).contains(score), "mean rating {score} outside 1..10");
    }
    let weights = sample_weights(&scores, PAPER_BINS, None);
    assert_eq!(weights.counts.iter().map(|&c| c as usize).sum::<usize>(), scores.len());
});
