//! Fast crop search vs the paper's brute force, in the same run, over real photos and aspects.
//! Prints a table: wall time of each, the speed-up, and agreement (the fast top-1 is the
//! brute-force top-1, or scores within 0.05 of it).
//!
//!   cargo bench --bench crop --features import -- [WEIGHTS.loupe] [--device flex|wgpu] [--candidates N]
//!       [--layout random|grid] [--aspects 1:1,4:5,16:9] [PHOTOS...]
//!
//! Default weights: weights/backbone.loupe + weights/regression.loupe (the shipped defaults); an
//! untrained head makes agreement meaningless. Default photos: the test fixtures.

use std::path::PathBuf;
use std::time::Instant;

use loupe::Scorer;
use loupe::burn::tensor::Device;
use loupe::crop::{CandidateLayout, CropRequest, FastCropOptions, exhaustive_crop_search, fast_crop_search};
use loupe::preprocess::decode_image;


fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut take = |flag: &str| args.iter().position(|a| a == flag).map(|i| { args.remove(i); args.remove(i) });
    let device_name = take("--device").unwrap_or_else(|| "flex".into());
    let candidates: usize = take("--candidates").map_or(1000, |c| c.parse().expect("--candidates N"));
    let layout: CandidateLayout = take("--layout").map_or(CandidateLayout::Random, |l| l.parse().expect("--layout random|grid"));
    let aspects: Vec<String> = take("--aspects").unwrap_or_else(|| "1:1,4:5,16:9".into()).split(',').map(String::from).collect();
    let mut weights: Vec<String> = args.iter().filter(|a| a.ends_with(".loupe")).cloned().collect();
    if weights.is_empty() {
        weights = vec!["weights/backbone.loupe".into(), "weights/regression.loupe".into()];
    }
    let mut photos: Vec<PathBuf> = args.iter().filter(|a| !a.ends_with(".loupe")).map(PathBuf::from).collect();
    if photos.is_empty() {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        photos = ["rocket.jpg", "coffee.jpg", "chelsea.jpg"].iter().map(|p| fixtures.join(p)).collect();
    }
    let device = match device_name.as_str() {
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu_options().init().expect("wgpu adapter"),
        _ => Device::flex(),
    };
    let files: Vec<Vec<u8>> = weights.iter().map(|w| std::fs::read(w).unwrap_or_else(|e| panic!("{w}: {e}"))).collect();
    let slices: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let scorer = Scorer::from_weight_files(&slices, &device).expect("weights").remove(0);
    let weights = weights.join(" + ");
    println!("weights {weights} (head trained: {}), device {device_name}, {candidates} candidates ({layout:?})", scorer.metadata.head_trained);

    // One full forward, for the cost share.
    let probe = decode_image(&std::fs::read(&photos[0]).unwrap()).unwrap();
    scorer.predict(std::slice::from_ref(&probe)).unwrap();
    let started = Instant::now();
    scorer.predict(std::slice::from_ref(&probe)).unwrap();
    let forward = started.elapsed().as_secs_f64();

    println!("| photo | aspect | brute force s | fast s | speed-up | same top-1 | fast top-1 within 0.05 |");
    println!("|---|---|---|---|---|---|---|");
    let (mut agree, mut runs, mut fast_total, mut exact_total) = (0, 0, 0.0, 0.0);
    for photo in &photos {
        let image = decode_image(&std::fs::read(photo).unwrap()).unwrap();
        for aspect in &aspects {
            let request = CropRequest { shape: aspect.parse().unwrap(), candidates, seed: 7, top_k: 1, layout, ..CropRequest::default() };
            let t = Instant::now();
            let exact = exhaustive_crop_search(&scorer, &image, &request, |_, _| {}).unwrap();
            let exact_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let fast = fast_crop_search(&scorer, &image, &request, &FastCropOptions::default(), |_, _| {}).unwrap();
            let fast_s = t.elapsed().as_secs_f64();
            let same = fast[0].rect == exact[0].rect;
            let close = (exact[0].score - fast[0].score) <= 0.05;
            agree += usize::from(same || close);
            runs += 1;
            fast_total += fast_s;
            exact_total += exact_s;
            let name = photo.file_name().unwrap().to_string_lossy();
            println!("| {name} | {aspect} | {exact_s:.2} | {fast_s:.2} | {:.1}x | {same} | {close} |", exact_s / fast_s);
        }
    }
    println!(
        "\nagreement {agree}/{runs} ({:.0}%); mean speed-up {:.1}x; one full forward {:.3} s; fast search = {:.1} forwards, brute force = {:.1} forwards",
        100.0 * agree as f64 / runs as f64,
        exact_total / fast_total,
        forward,
        fast_total / runs as f64 / forward,
        exact_total / runs as f64 / forward
    );
}
