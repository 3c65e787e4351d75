//! The reference crop search: rectangles inside the image, with the requested aspect, the same per
//! seed, and the best really is the best-scoring candidate.

mod common;

use common::*;
use image::RgbImage;
use loupe::Scorer;
use loupe::crop::{CandidateLayout, CropRequest, CropShape, candidates, exhaustive_crop_search, random_candidates};
use loupe::model::{HeadKind, ModelConfig, OutputKind, StatisticsRegion};
use loupe::preprocess::{InputConvention, decode_image};
use loupe::weights::WeightMetadata;

fn tiny_scorer() -> Scorer {
    tiny_scorer_with(HeadKind::Compact, StatisticsRegion::Whole)
}

fn tiny_scorer_with(head: HeadKind, statistics: StatisticsRegion) -> Scorer {
    let config = ModelConfig::new(OutputKind::Regression, head).with_width_divisor(16).with_statistics(statistics);
    let device = flex();
    let net = config.init(&device).unwrap();
    Scorer::new(net, WeightMetadata::new(config, InputConvention::CaffeBgr), device)
}

fn request(shape: &str, candidates: usize, seed: u64) -> CropRequest {
    CropRequest { shape: shape.parse().unwrap(), candidates, seed, ..CropRequest::default() }
}

#[test]
fn candidates_lie_inside_with_the_requested_aspect() {
    for (w, h) in [(640, 427), (427, 640), (300, 300), (1000, 40), (400, 20)] {
        for shape in ["1:1", "4:5", "3:2", "16:9", "9:16", "16:1", "40x30"] {
            for layout in [CandidateLayout::Random, CandidateLayout::Grid] {
                let req = CropRequest { layout, ..request(shape, 300, 7) };
                let Ok(rects) = candidates(w, h, &req) else {
                    // Only a frame that cannot fit may be refused.
                    assert!(h <= 40, "{shape} refused for {w}x{h}");
                    continue;
                };
                match layout {
                    CandidateLayout::Random => assert_eq!(rects.len(), 300),
                    // A grid never repeats a rectangle, so small images may have fewer.
                    CandidateLayout::Grid => assert!(rects.len() <= 300 && !rects.is_empty(), "{}", rects.len()),
                }
                for r in rects {
                    assert!(r.x + r.width <= w && r.y + r.height <= h, "{r:?} outside {w}x{h}");
                    assert!(r.width.min(r.height) >= 16, "{shape} in {w}x{h}: {r:?} has a side under 16 px");
                    match req.shape {
                        CropShape::Aspect { width: aw, height: ah } => {
                            // Within one pixel of the exact ratio.
                            let ideal_h = r.width as f64 * ah as f64 / aw as f64;
                            let ideal_w = r.height as f64 * aw as f64 / ah as f64;
                            assert!((r.height as f64 - ideal_h).abs() <= 1.0 || (r.width as f64 - ideal_w).abs() <= 1.0, "{shape}: {r:?}");
                        }
                        CropShape::Size { width, height } => assert_eq!((r.width, r.height), (width, height)),
                    }
                }
            }
        }
    }
}

#[test]
fn the_grid_covers_positions_and_scales_evenly() {
    let req = CropRequest { layout: CandidateLayout::Grid, ..request("1:1", 1000, 0) };
    let rects = candidates(640, 427, &req).unwrap();
    assert!((900..=1000).contains(&rects.len()), "{} candidates", rects.len());
    let distinct: std::collections::HashSet<_> = rects.iter().collect();
    assert_eq!(distinct.len(), rects.len(), "repeated rectangles");
    // Ten scales from half the largest square (214 px) to all of it (427 px).
    let mut sides: Vec<u32> = rects.iter().map(|r| r.width).collect();
    sides.dedup();
    assert_eq!(sides.len(), 10, "{sides:?}");
    assert_eq!((sides[0], *sides.last().unwrap()), (427, 214));
    // At each scale, the frame reaches both edges.
    for side in sides {
        let at: Vec<_> = rects.iter().filter(|r| r.width == side).collect();
        assert!(at.iter().any(|r| r.x == 0) && at.iter().any(|r| r.x + r.width == 640), "side {side}");
        if side < 427 {
            assert!(at.iter().any(|r| r.y == 0) && at.iter().any(|r| r.y + r.height == 427), "side {side}");
        }
    }
    // The seed does not matter for a grid.
    assert_eq!(rects, candidates(640, 427, &CropRequest { seed: 9, ..req }).unwrap());
}

#[test]
fn candidates_are_deterministic_per_seed() {
    let a = random_candidates(640, 427, &request("1:1", 100, 42)).unwrap();
    let b = random_candidates(640, 427, &request("1:1", 100, 42)).unwrap();
    let c = random_candidates(640, 427, &request("1:1", 100, 43)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn impossible_requests_are_refused() {
    assert!("16-9".parse::<CropShape>().is_err());
    assert!("0:1".parse::<CropShape>().is_err());
    assert!(random_candidates(640, 427, &request("1000x10", 10, 0)).is_err());
    assert!(random_candidates(640, 427, &request("1:1", 0, 0)).is_err());
    // A count from a flag or a widget attribute: refused before anything is allocated.
    for huge in [loupe::crop::MAX_CANDIDATES + 1, usize::MAX] {
        for layout in [CandidateLayout::Random, CandidateLayout::Grid] {
            let error = candidates(640, 427, &CropRequest { layout, ..request("1:1", huge, 0) }).unwrap_err();
            assert!(error.to_string().contains("candidates"), "{error}");
        }
    }
    // A 1xN strip has no usable square.
    assert!(random_candidates(1, 500, &request("1:1", 10, 0)).is_err());
    let mut bad_scale = request("1:1", 10, 0);
    bad_scale.min_scale = 0.0;
    assert!(random_candidates(640, 427, &bad_scale).is_err());
}

#[test]
fn exhaustive_search_returns_the_best_candidates_in_order() {
    let scorer = tiny_scorer();
    let image = decode_image(&fixture_bytes("rocket.jpg")).unwrap();
    let mut req = request("4:5", 24, 3);
    req.top_k = 5;
    let mut calls = Vec::new();
    let best = exhaustive_crop_search(&scorer, &image, &req, |done, total| calls.push((done, total))).unwrap();
    assert_eq!(best.len(), 5);
    assert_eq!(calls.last(), Some(&(24, 24)));
    assert!(best.windows(2).all(|w| w[0].score >= w[1].score));

    // Brute force by hand over the same candidates: the same winner and score.
    let rects = random_candidates(image.width(), image.height(), &req).unwrap();
    let crops: Vec<RgbImage> = rects.iter().map(|r| r.crop(&image)).collect();
    let scores = scorer.predict(&crops).unwrap();
    let (i, top) = scores.iter().enumerate().max_by(|a, b| a.1.score.total_cmp(&b.1.score)).unwrap();
    assert_eq!(best[0].rect, rects[i]);
    assert!((best[0].score - top.score).abs() < 1e-5);

    // Same seed, same answer.
    let again = exhaustive_crop_search(&scorer, &image, &req, |_, _| {}).unwrap();
    assert_eq!(best, again);
}

#[test]
fn fast_search_keeps_the_contract_of_the_reference() {
    use loupe::crop::{FastCropOptions, fast_crop_search};
    // Both kinds of head input: the 7x7 map only (RoI-aligned), and block statistics as well
    // (region statistics from the per-block grids), over either region.
    for (head, statistics) in [
        (HeadKind::Compact, StatisticsRegion::Whole),
        (HeadKind::Statistics, StatisticsRegion::Whole),
        (HeadKind::Quadratic, StatisticsRegion::Whole),
        (HeadKind::Quadratic, StatisticsRegion::DeepInterior),
    ] {
        let scorer = tiny_scorer_with(head, statistics);
        let mut agreements = 0;
        let mut runs = 0;
        for photo in ["rocket.jpg", "coffee.jpg", "chelsea.jpg"] {
            let image = decode_image(&fixture_bytes(photo)).unwrap();
            for aspect in ["1:1", "16:9", "4:5"] {
                let mut req = request(aspect, 48, 11);
                req.top_k = 3;
                let options = FastCropOptions { rerank: 12, levels: 3, ..FastCropOptions::default() };
                let mut last = (0, 0);
                let fast = fast_crop_search(&scorer, &image, &req, &options, |d, t| last = (d, t)).unwrap();
                assert_eq!(last.0, last.1, "progress must reach its total");
                assert_eq!(fast.len(), 3);
                assert!(fast.windows(2).all(|w| w[0].score >= w[1].score));
                let candidates = random_candidates(image.width(), image.height(), &req).unwrap();
                for c in &fast {
                    assert!(candidates.contains(&c.rect), "the fast search returned a rectangle that is not a candidate");
                }
                // Its scores are exact: re-scoring the winner gives the same number.
                let exact_again = scorer.predict(&[fast[0].rect.crop(&image)]).unwrap()[0].score;
                assert!((exact_again - fast[0].score).abs() < 1e-4);
                assert_eq!(fast, fast_crop_search(&scorer, &image, &req, &options, |_, _| {}).unwrap(), "not deterministic");

                let exact = exhaustive_crop_search(&scorer, &image, &req, |_, _| {}).unwrap();
                assert!(fast[0].score <= exact[0].score + 1e-5);
                runs += 1;
                agreements += usize::from(fast[0].rect == exact[0].rect || exact[0].score - fast[0].score <= 0.05);
            }
        }
        // A random tiny model's scores say little about real agreement (measured with trained
        // weights by `cargo bench --bench crop`); here it is reported, the contract is asserted.
        println!("{head:?} head, {statistics:?}: fast vs brute force agreement (random tiny model): {agreements}/{runs}");
    }
}

#[test]
fn nan_scores_rank_last_in_the_crop_ranking() {
    use loupe::crop::{Rect, ScoredCrop, best_crops};
    let crop = |x, score| ScoredCrop { rect: Rect { x, y: 0, width: 16, height: 16 }, score };
    let ranked = best_crops(vec![crop(0, f32::NAN), crop(1, 4.0), crop(2, -f32::NAN), crop(3, 6.0)], 4);
    let order: Vec<u32> = ranked.iter().map(|c| c.rect.x).collect();
    assert_eq!(&order[..2], &[3, 1]);
    assert!(ranked[2..].iter().all(|c| c.score.is_nan()));
}

#[test]
fn tiny_and_thin_images_give_a_clear_error_or_a_sensible_crop() {
    use loupe::crop::{FastCropOptions, fast_crop_search};
    let scorer = tiny_scorer();
    // A 400x20 strip: a 16:1 frame fits (320x20 at most).
    let thin = RgbImage::from_pixel(400, 20, image::Rgb([120, 80, 40]));
    let crops = fast_crop_search(&scorer, &thin, &request("16:1", 8, 0), &FastCropOptions::default(), |_, _| {}).unwrap();
    let r = crops[0].rect;
    assert!(r.y + r.height <= 20 && r.x + r.width <= 400 && r.height >= 16);
    // A 400x12 strip has no frame with both sides of 16 px.
    let strip = RgbImage::from_pixel(400, 12, image::Rgb([120, 80, 40]));
    for aspect in ["1:1", "16:1"] {
        let error = fast_crop_search(&scorer, &strip, &request(aspect, 8, 0), &FastCropOptions::default(), |_, _| {}).unwrap_err();
        assert!(error.to_string().contains("under 16 px"), "{aspect}: {error}");
    }
}

/// The shipped default regression model (shared backbone + head).
fn default_scorer() -> Scorer {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
    let files: Vec<Vec<u8>> =
        ["backbone.loupe", "regression.loupe"].iter().map(|f| std::fs::read(root.join(f)).unwrap_or_else(|e| panic!("weights/{f}: {e}"))).collect();
    Scorer::from_weight_files(&[&files[0], &files[1]], &flex()).unwrap().remove(0)
}

#[test]
fn fast_search_agrees_with_brute_force_on_real_photos_with_the_default_weights() {
    use loupe::crop::{FastCropOptions, fast_crop_search};
    let scorer = default_scorer();
    assert!(scorer.metadata.head_trained);
    // 16 re-scored exactly of 48 candidates (each level's 2 best estimates, then local rounds): agreement needs
    // the estimates to lead the search to the true best while it scores only a third of them;
    // with a ranking by chance the re-scored third would hold it in about a third of runs.
    let options = FastCropOptions { rerank: 16, ..FastCropOptions::default() };
    let (mut agreements, mut runs) = (0, 0);
    for photo in ["rocket.jpg", "coffee.jpg", "chelsea.jpg"] {
        let image = decode_image(&fixture_bytes(photo)).unwrap();
        for aspect in ["1:1", "16:9"] {
            let req = CropRequest { top_k: 1, ..request(aspect, 48, 11) };
            let fast = fast_crop_search(&scorer, &image, &req, &options, |_, _| {}).unwrap();
            let exact = exhaustive_crop_search(&scorer, &image, &req, |_, _| {}).unwrap();
            let agrees = fast[0].rect == exact[0].rect || exact[0].score - fast[0].score <= 0.05;
            println!("{photo} {aspect}: fast {:.3} vs brute force {:.3} ({agrees})", fast[0].score, exact[0].score);
            agreements += usize::from(agrees);
            runs += 1;
        }
    }
    println!("agreement with the default weights: {agreements}/{runs}");
    assert!(agreements + 1 >= runs, "fast and brute-force crops agree in only {agreements} of {runs} runs");
}
