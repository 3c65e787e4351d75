//! `loupe-train eval` decodes one batch of photos at a time: its peak memory must not grow with
//! the number of photos evaluated (keeping every decoded input was ≈ 150 KB of input tensor plus
//! the decoded photo per image: tens of GB on AVA). Counted by a global allocator that tracks the
//! live bytes; one test, since the counter is process-wide.

#[path = "../../tests/counting/mod.rs"]
mod counting;

use std::path::Path;

use clap::Parser;
use image::{Rgb, RgbImage};
use loupe::model::{HeadKind, ModelConfig, OutputKind};
use loupe::preprocess::InputConvention;
use loupe::weights::{WeightMetadata, encode};
use loupe_train::args::EvalArgs;

use counting::{Counting, peak_mb};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Parser)]
struct Eval {
    #[command(flatten)]
    args: EvalArgs,
}

/// `count` 800x600 JPEGs (1.4 MB of pixels each once decoded) and their AVA.txt rows.
fn write_photos(dir: &Path, count: u64) {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut rows = String::new();
    for id in 1..=count {
        let photo = RgbImage::from_fn(800, 600, |x, y| Rgb([(x / 4) as u8, (y / 3) as u8, (id * 37) as u8 ^ ((x + y) % 64) as u8]));
        photo.save(images.join(format!("{id}.jpg"))).unwrap();
        rows += &format!("{id} {id} 0 5 10 20 40 40 20 10 5 0 0 0 0\n");
    }
    std::fs::write(dir.join("AVA.txt"), rows).unwrap();
}

/// The peak of live bytes while `eval` runs over `dir`'s photos, in MB above what was live before.
fn eval_peak_mb(dir: &Path, weights: &Path) -> f64 {
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let out = dir.join("report");
    let argv = [
        "eval",
        "-w",
        &path(weights),
        "--labels",
        &path(&dir.join("AVA.txt")),
        "--images",
        &path(&dir.join("images")),
        "-o",
        &path(&out),
        "--batch",
        "4",
    ];
    let eval = Eval::parse_from(argv);
    peak_mb(|| loupe_train::eval::run(&eval.args).unwrap()).1
}

#[test]
fn eval_decodes_one_batch_at_a_time_so_its_memory_does_not_grow_with_the_photos() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::new(OutputKind::Regression, HeadKind::Compact).with_width_divisor(16);
    let net = config.init(&burn::tensor::Device::default()).unwrap();
    let weights = dir.path().join("regression.loupe");
    std::fs::write(&weights, encode(&net, &WeightMetadata::new(config, InputConvention::CaffeBgr)).unwrap()).unwrap();

    let (few, many) = (dir.path().join("few"), dir.path().join("many"));
    write_photos(&few, 8);
    write_photos(&many, 64);
    let few_mb = eval_peak_mb(&few, &weights);
    let many_mb = eval_peak_mb(&many, &weights);
    println!("eval peak: {few_mb:.0} MB over 8 photos, {many_mb:.0} MB over 64");
    // Keeping every decoded photo and its input would add 56 x (1.44 MB + 0.6 MB) ≈ 114 MB.
    assert!(many_mb - few_mb < 30.0, "eval's peak grew from {few_mb:.0} MB (8 photos) to {many_mb:.0} MB (64 photos)");
}
