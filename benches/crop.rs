//! Fast crop search vs the paper's brute force, in the same run, over real photos and aspects.
//! Prints a table: wall time of each, the speed-up, and agreement (the fast top-1 is the
//! brute-force top-1, or scores within 0.05 of it). Diagnostics from the same run: how well the
//! shared-map estimates rank the candidates (Spearman against the exact scores), where the exact
//! best sits in the estimate order, and how many of the best estimates alone would have had to be
//! re-scored to agree (the search's local stage exists to need fewer).
//!
//!   cargo bench --bench crop --features import -- [WEIGHTS.loupe] [--device flex|wgpu] [--candidates N]
//!       [--layout random|grid] [--seed N] [--aspects 1:1,4:5,16:9] [--fast-only] [--dump DIR] [--exact-from DIR] [PHOTOS...]
//!
//! `--fast-only` skips the brute force and prints where the fast search's time goes instead:
//! decoding the photo, the whole-photo backbone passes (one per scale level), the estimates from
//! the shared maps, and the exact re-scores (a second, untimed-in-the-table run of each part).
//!
//! `--dump DIR` writes each row's candidates with their estimated and exact scores as CSV.
//! `--exact-from DIR` reads the exact scores back from such a dump instead of running the brute
//! force (same photos, aspects, candidates and weights): minutes instead of hours when working on
//! the estimate step. Its rows have no brute-force time or speed-up.
//!
//! Default weights: weights/backbone.loupe + weights/regression.loupe (the shipped defaults); an
//! untrained head makes agreement meaningless. Default photos: the test fixtures.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

use loupe::Scorer;
use loupe::burn::tensor::Device;
use loupe::correlation::spearman;
use loupe::crop::{
    CandidateLayout, CropRequest, FastCropOptions, Rect, ScoredCrop, best_crops, estimate_crop_scores, exhaustive_crop_search, fast_crop_search,
};
use loupe::preprocess::decode_image;

#[derive(Parser)]
struct Args {
    /// flex, or wgpu (with the `wgpu` feature).
    #[arg(long, default_value = "flex")]
    device: String,
    #[arg(long, default_value_t = 1000)]
    candidates: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value = "random")]
    layout: CandidateLayout,
    /// Write each row's candidates with their estimated and exact scores as CSV here.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Read the exact scores back from such a dump instead of running the brute force.
    #[arg(long)]
    exact_from: Option<PathBuf>,
    #[arg(long, value_delimiter = ',', default_value = "1:1,4:5,16:9")]
    aspects: Vec<String>,
    /// Skip the brute force; print where the fast search's time goes.
    #[arg(long)]
    fast_only: bool,
    /// The fast search's settings (default: the library's): exact re-scores, whole-photo passes,
    /// and the largest side a pass may resize the photo to.
    #[arg(long)]
    rerank: Option<usize>,
    #[arg(long)]
    levels: Option<usize>,
    #[arg(long)]
    max_level_side: Option<u32>,
    /// Weight files (.loupe) and photos.
    files: Vec<PathBuf>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let Args { device: device_name, candidates, seed, layout, dump, exact_from, aspects, fast_only, rerank, levels, max_level_side, files, bench: _ } =
        Args::parse();
    let defaults = FastCropOptions::default();
    let options = FastCropOptions {
        rerank: rerank.unwrap_or(defaults.rerank),
        levels: levels.unwrap_or(defaults.levels),
        max_level_side: max_level_side.unwrap_or(defaults.max_level_side),
    };
    let (mut weights, mut photos): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| f.extension().is_some_and(|e| e == "loupe"));
    if weights.is_empty() {
        weights = vec!["weights/backbone.loupe".into(), "weights/regression.loupe".into()];
    }
    if photos.is_empty() {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        photos = ["rocket.jpg", "coffee.jpg", "chelsea.jpg"].iter().map(|p| fixtures.join(p)).collect();
    }
    let device = match device_name.as_str() {
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu_options().init().expect("wgpu adapter"),
        _ => Device::flex(),
    };
    let files: Vec<Vec<u8>> = weights.iter().map(|w| std::fs::read(w).unwrap_or_else(|e| panic!("{}: {e}", w.display()))).collect();
    let slices: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let scorer = Scorer::from_weight_files(&slices, &device).expect("weights").remove(0);
    let weights = weights.iter().map(|w| w.display().to_string()).collect::<Vec<_>>().join(" + ");
    println!(
        "weights {weights} (head trained: {}), device {device_name}, {candidates} candidates ({layout:?}, seed {seed}), fast search {options:?}",
        scorer.metadata.head_trained
    );

    // One full forward, for the cost share.
    let probe = decode_image(&std::fs::read(&photos[0]).unwrap()).unwrap();
    scorer.predict(std::slice::from_ref(&probe)).unwrap();
    let started = Instant::now();
    scorer.predict(std::slice::from_ref(&probe)).unwrap();
    let forward = started.elapsed().as_secs_f64();

    if fast_only {
        time_breakdown(&scorer, &photos, &aspects, candidates, seed, layout, &options, forward);
        return;
    }
    if let Some(dir) = &dump {
        std::fs::create_dir_all(dir).expect("--dump DIR");
    }
    println!(
        "| photo | aspect | brute force s | fast s | speed-up | same top-1 | fast top-1 within 0.05 | estimate SRCC | exact best's estimate rank | top-K by estimate needed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let (mut agree, mut runs, mut fast_total, mut exact_total) = (0, 0, 0.0, 0.0);
    // Per row, the smallest re-rank count that agrees: what other `--rerank` values would give.
    let mut needed_per_row = Vec::new();
    for photo in &photos {
        let image = decode_image(&std::fs::read(photo).unwrap()).unwrap();
        for aspect in &aspects {
            let request = CropRequest { shape: aspect.parse().unwrap(), candidates, seed, top_k: 1, layout, ..CropRequest::default() };
            let stem = photo.file_stem().unwrap().to_string_lossy();
            let dump_name = format!("{stem}-{}.csv", aspect.replace(':', "x"));
            let rects = loupe::crop::candidates(image.width(), image.height(), &request).unwrap();
            let t = Instant::now();
            // Every candidate's exact score (the brute force scores them all anyway).
            let exact = match &exact_from {
                Some(dir) => replayed_exact_scores(&dir.join(&dump_name), &rects),
                None => exhaustive_crop_search(&scorer, &image, &CropRequest { top_k: candidates, ..request.clone() }, |_, _| {}).unwrap(),
            };
            let exact_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let fast = fast_crop_search(&scorer, &image, &request, &options, |_, _| {}).unwrap();
            let fast_s = t.elapsed().as_secs_f64();
            let same = fast[0].rect == exact[0].rect;
            let close = (exact[0].score - fast[0].score) <= 0.05;
            agree += usize::from(same || close);
            runs += 1;
            fast_total += fast_s;
            exact_total += exact_s;

            // Diagnostics (untimed): every candidate's estimate against its exact score.
            let estimates = estimate_crop_scores(&scorer, &image, &rects, &options, |_, _| {}).unwrap();
            let exact_of: HashMap<Rect, f32> = exact.iter().map(|c| (c.rect, c.score)).collect();
            let exact_scores: Vec<f32> = estimates.iter().map(|e| exact_of[&e.rect]).collect();
            let estimate_scores: Vec<f32> = estimates.iter().map(|e| e.score).collect();
            let mut order: Vec<usize> = (0..estimates.len()).collect();
            order.sort_by(|&a, &b| estimate_scores[b].total_cmp(&estimate_scores[a]));
            let best_rank = order.iter().position(|&i| estimates[i].rect == exact[0].rect).unwrap() + 1;
            let mut running_best = f32::NEG_INFINITY;
            let needed = 1 + order
                .iter()
                .position(|&i| {
                    running_best = running_best.max(exact_scores[i]);
                    exact[0].score - running_best <= 0.05
                })
                .unwrap();
            needed_per_row.push(needed);
            let srcc = spearman(&to_f64(&estimate_scores), &to_f64(&exact_scores));
            let name = photo.file_name().unwrap().to_string_lossy();
            let (exact_time, speed_up) = match exact_from {
                Some(_) => ("replayed".to_string(), "—".to_string()),
                None => (format!("{exact_s:.2}"), format!("{:.1}x", exact_s / fast_s)),
            };
            println!("| {name} | {aspect} | {exact_time} | {fast_s:.2} | {speed_up} | {same} | {close} | {srcc:.3} | {best_rank} | {needed} |");
            if let Some(dir) = &dump {
                let mut writer = csv::Writer::from_path(dir.join(&dump_name)).expect("dump");
                for (e, &exact) in estimates.iter().zip(&exact_scores) {
                    let Rect { x, y, width, height } = e.rect;
                    writer.serialize(DumpRow { x, y, width, height, estimate: e.score, exact }).expect("dump");
                }
                writer.flush().expect("dump");
            }
        }
    }
    if exact_from.is_some() {
        // Brute-force times were not measured: the speed columns would be meaningless.
        println!(
            "\nagreement {agree}/{runs} ({:.0}%); fast search {:.2} s = {:.1} forwards",
            100.0 * agree as f64 / runs as f64,
            fast_total / runs as f64,
            fast_total / runs as f64 / forward
        );
    } else {
        println!(
            "\nagreement {agree}/{runs} ({:.0}%); mean speed-up {:.1}x; one full forward {:.3} s; fast search = {:.1} forwards, brute force = {:.1} forwards",
            100.0 * agree as f64 / runs as f64,
            exact_total / fast_total,
            forward,
            fast_total / runs as f64 / forward,
            exact_total / runs as f64 / forward
        );
    }
    let what_if: Vec<String> =
        [8, 16, 24, 32, 48, 64].iter().map(|&k| format!("{k}: {}/{runs}", needed_per_row.iter().filter(|&&n| n <= k).count())).collect();
    println!(
        "agreement if the top K by estimate alone were re-scored, from this run's scores (the search re-scores {} in two stages): {}",
        options.rerank,
        what_if.join(", ")
    );
}

/// `--fast-only`: the fast search per photo and aspect, and where its time goes. The parts are
/// timed on their own (the estimate step again, then the whole search), so re-scoring = whole
/// search − estimates, and level passes = estimates up to the last pass's progress report.
#[allow(clippy::too_many_arguments)]
fn time_breakdown(
    scorer: &Scorer,
    photos: &[PathBuf],
    aspects: &[String],
    candidates: usize,
    seed: u64,
    layout: CandidateLayout,
    options: &FastCropOptions,
    forward: f64,
) {
    println!("| photo | aspect | decode ms | level passes s | estimates s | exact re-scores s | fast search s | = forwards |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut total = 0.0;
    let mut rows = 0;
    for photo in photos {
        let bytes = std::fs::read(photo).unwrap();
        let t = Instant::now();
        let image = decode_image(&bytes).unwrap();
        let decode_ms = t.elapsed().as_secs_f64() * 1e3;
        for aspect in aspects {
            let request = CropRequest { shape: aspect.parse().unwrap(), candidates, seed, top_k: 1, layout, ..CropRequest::default() };
            let rects = loupe::crop::candidates(image.width(), image.height(), &request).unwrap();
            let t = Instant::now();
            let mut levels_done = None;
            estimate_crop_scores(scorer, &image, &rects, options, |done, _| {
                if done == options.levels {
                    levels_done = Some(t.elapsed().as_secs_f64());
                }
            })
            .unwrap();
            let estimates_s = t.elapsed().as_secs_f64();
            let levels_s = levels_done.unwrap_or(estimates_s);
            let t = Instant::now();
            fast_crop_search(scorer, &image, &request, options, |_, _| {}).unwrap();
            let fast_s = t.elapsed().as_secs_f64();
            total += fast_s;
            rows += 1;
            let name = photo.file_name().unwrap().to_string_lossy();
            println!(
                "| {name} | {aspect} | {decode_ms:.1} | {levels_s:.2} | {:.2} | {:.2} | {fast_s:.2} | {:.1} |",
                estimates_s - levels_s,
                (fast_s - estimates_s).max(0.0),
                fast_s / forward
            );
        }
    }
    println!(
        "
mean fast search {:.2} s ({} rows); one full forward (decode, resize, VGG16, head) {forward:.3} s",
        total / rows as f64,
        rows
    );
}

/// One candidate in a `--dump` CSV.
#[derive(serde::Serialize, serde::Deserialize)]
struct DumpRow {
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    estimate: f32,
    exact: f32,
}

/// The exact scores of a `--dump` CSV, best first; the dump must hold exactly these candidates.
fn replayed_exact_scores(path: &std::path::Path, candidates: &[Rect]) -> Vec<ScoredCrop> {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("--exact-from: {}: {e}", path.display()));
    let scored: Vec<ScoredCrop> = reader
        .deserialize()
        .map(|row| {
            let DumpRow { x, y, width, height, exact, .. } = row.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            ScoredCrop { rect: Rect { x, y, width, height }, score: exact }
        })
        .collect();
    let dumped: std::collections::HashSet<Rect> = scored.iter().map(|c| c.rect).collect();
    assert!(
        scored.len() == candidates.len() && candidates.iter().all(|r| dumped.contains(r)),
        "{} holds other candidates than this run's (photo, aspect, --candidates or --layout differ)",
        path.display()
    );
    let count = scored.len();
    best_crops(scored, count)
}

fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}
