//! End to end on the CPU with the real `loupe-train` binary: a tiny-width VGG16 on a generated dataset
//! whose scores follow brightness. The loss falls, held-out predictions correlate with the labels,
//! the prediction ranges with and without sample weights on a skewed label set are reported,
//! and a run killed with SIGKILL resumes without losing a finished epoch.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};

const LOUPE: &str = env!("CARGO_BIN_EXE_loupe-train");

/// Deterministic pseudo-random numbers for the generated data.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Vote counts (250 votes) centred on `score` with spread 1.
fn votes_around(score: f32) -> [u32; 10] {
    let weights: Vec<f32> = (1..=10).map(|k| (-((k as f32 - score).powi(2)) / 2.0).exp()).collect();
    let total: f32 = weights.iter().sum();
    let mut votes = [0u32; 10];
    for (v, w) in votes.iter_mut().zip(&weights) {
        *v = (250.0 * w / total).round() as u32;
    }
    votes
}

/// A 64x48 image whose brightness sets its score (2..8), with texture so it is not trivial.
fn write_dataset(dir: &Path, name: &str, scores: &[f32], first_id: u64, rng: &mut Lcg) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let mut lines = String::new();
    for (i, &score) in scores.iter().enumerate() {
        let id = first_id + i as u64;
        let level = (score - 2.0) / 6.0 * 200.0 + 20.0;
        let image = RgbImage::from_fn(64, 48, |x, y| {
            let noise = rng.next() * 40.0 - 20.0;
            let v = (level + noise + ((x + y) % 8) as f32).clamp(0.0, 255.0) as u8;
            Rgb([v, v.saturating_sub(10), v.saturating_add(5)])
        });
        image.save(images.join(format!("{id}.jpg"))).unwrap();
        let votes = votes_around(score).map(|v| v.to_string()).join(" ");
        lines += &format!("{} {id} {votes} 0 0 0\n", i + 1);
    }
    let labels = dir.join(name);
    std::fs::write(&labels, lines).unwrap();
    labels
}

fn loupe(args: &[&str]) -> String {
    let output = Command::new(LOUPE).args(args).output().unwrap();
    assert!(output.status.success(), "loupe {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A weight file's metadata (what `loupe inspect` prints).
fn metadata(path: &Path) -> loupe::weights::WeightMetadata {
    loupe::weights::read_header(&std::fs::read(path).unwrap()).unwrap().0
}

fn train_args<'a>(labels: &'a str, images: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--labels", labels, "--images", images, "--out", out, "--init", "random", "--width-divisor", "16", "--seed", "1"];
    args.extend_from_slice(extra);
    args
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap()
}

fn run_state(out: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read(out.join("checkpoint/state.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

#[test]
fn training_learns_brightness_with_and_without_sample_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(7);
    // Train: skewed like AVA (most scores near 5, few extremes). Test: evenly spread.
    let train_scores: Vec<f32> = (0..256).map(|i| if i % 4 == 0 { 2.0 + 6.0 * rng.next() } else { 4.3 + 1.4 * rng.next() }).collect();
    let test_scores: Vec<f32> = (0..24).map(|i| 2.0 + 6.0 * i as f32 / 23.0).collect();
    let train = write_dataset(dir.path(), "train.txt", &train_scores, 1, &mut rng);
    let test = write_dataset(dir.path(), "test.txt", &test_scores, 1000, &mut rng);
    let images = dir.path().join("images");
    let (train, test, images) = (train.to_str().unwrap(), test.to_str().unwrap(), images.to_str().unwrap());

    let mut ranges = Vec::new();
    for (name, extra) in [
        ("weighted", vec![]),
        ("unweighted", vec!["--unweighted"]),
        // The linear head over block statistics (brightness is a block-1 mean).
        ("statistics", vec!["--head", "statistics"]),
    ] {
        let out = dir.path().join(name);
        let out_s = out.to_str().unwrap();
        // 9 one-point bins: with 256 images, the paper's 90 bins would hold 0-3 images each.
        let mut flags = vec!["--freeze-backbone", "--epochs", "30", "--lr", "1e-3", "--batch", "32", "--plateau-patience", "4", "--bins", "9"];
        flags.extend(extra);
        loupe(&train_args(train, images, out_s, &flags));
        let state = run_state(&out).unwrap();
        let losses: Vec<f64> = state["history"].as_array().unwrap().iter().map(|e| e["loss"].as_f64().unwrap()).collect();
        println!("{name}: losses {losses:?}");
        let last_three = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
        assert!(last_three < 0.5 * losses[0], "{name}: loss did not fall: {losses:?}");

        let model = out.join("model.loupe");
        let eval_dir = out.join("eval");
        loupe(&["eval", "-w", model.to_str().unwrap(), "--labels", test, "--images", images, "-o", eval_dir.to_str().unwrap()]);
        let all = &report(&eval_dir)["regression"]["all"];
        println!("{name}: {all}");
        // Through a feature cache (computed, then read back) the metrics are the same.
        // The random backbone depends on the head too (burn initialises parameters lazily, in
        // order of first use), so the statistics run keeps its own cache.
        let cache = dir.path().join(if name == "statistics" { "features-statistics" } else { "features" });
        for pass in ["computes", "reads"] {
            let cached_dir = out.join(format!("eval-cached-{pass}"));
            loupe(&[
                "eval",
                "-w",
                model.to_str().unwrap(),
                "--labels",
                test,
                "--images",
                images,
                "-o",
                cached_dir.to_str().unwrap(),
                "--feature-cache",
                cache.to_str().unwrap(),
            ]);
            let cached = &report(&cached_dir)["regression"]["all"];
            for metric in ["mse", "plcc", "min_prediction", "max_prediction"] {
                let (a, b) = (all[metric].as_f64().unwrap(), cached[metric].as_f64().unwrap());
                assert!((a - b).abs() < 1e-4, "{name}, cache {pass}: {metric} {a} vs {b}");
            }
            // The compact runs froze the same random backbone (seed 1): one file of maps serves
            // both (the statistics head adds a file of block statistics beside its maps).
            let maps =
                std::fs::read_dir(&cache).unwrap().filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().contains("statistics")).count();
            assert_eq!(maps, 1, "the feature cache was not reused");
        }
        assert!(all["plcc"].as_f64().unwrap() > 0.8, "{name}: held-out predictions do not follow the labels");
        ranges.push(all["max_prediction"].as_f64().unwrap() - all["min_prediction"].as_f64().unwrap());
    }
    // The paper's claim (weights widen the range) is reported, not asserted: at this size both
    // models already span the test labels' range (see the trainer issue's notes).
    println!("prediction range: weighted {:.2}, unweighted {:.2}", ranges[0], ranges[1]);

    // Both models in one evaluation: their MSE difference on each set, with its interval.
    let both = dir.path().join("eval-both");
    let model = |name: &str| dir.path().join(name).join("model.loupe").to_str().unwrap().to_string();
    let (weighted, unweighted) = (model("weighted"), model("unweighted"));
    loupe(&["eval", "-w", &weighted, "-w", &unweighted, "--labels", test, "--images", images, "-o", both.to_str().unwrap()]);
    let report = report(&both);
    let comparisons = report["comparisons"].as_array().expect("a comparisons list");
    let sets: Vec<&str> = comparisons.iter().map(|c| c["set"].as_str().unwrap()).collect();
    assert_eq!(sets, ["all", "balanced"]);
    for c in comparisons {
        let d = &c["mse_difference"];
        let (value, low, high) = (d["difference"].as_f64().unwrap(), d["low"].as_f64().unwrap(), d["high"].as_f64().unwrap());
        let per_model = |path: &str| report[path][c["set"].as_str().unwrap()]["mse"].as_f64().unwrap();
        // The difference is that of the two models' reported MSEs, inside its interval.
        assert!((value - (per_model(&unweighted) - per_model(&weighted))).abs() < 1e-6, "{c}");
        assert!(low < high && low <= value && value <= high, "{c}");
        assert!(d["images"].as_u64().unwrap() > 0);
    }
    assert!(std::fs::read_to_string(both.join("report.md")).unwrap().contains("# Paired comparisons"));
}

#[test]
fn a_quadratic_head_is_fitted_in_closed_form() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(11);
    let train_scores: Vec<f32> = (0..96).map(|_| 2.0 + 6.0 * rng.next()).collect();
    let test_scores: Vec<f32> = (0..24).map(|i| 2.0 + 6.0 * i as f32 / 23.0).collect();
    let train = write_dataset(dir.path(), "train.txt", &train_scores, 1, &mut rng);
    let test = write_dataset(dir.path(), "test.txt", &test_scores, 1000, &mut rng);
    let images = dir.path().join("images");
    let (train, test, images) = (train.to_str().unwrap(), test.to_str().unwrap(), images.to_str().unwrap());
    let out = dir.path().join("closed-form");
    let out_s = out.to_str().unwrap();
    let flags = ["--head", "quadratic", "--freeze-backbone", "--closed-form", "--ridge", "0.1", "--bins", "9"];
    loupe(&train_args(train, images, out_s, &flags));

    // One step, recorded as the run's only epoch, its weighted MSE far below the labels' variance.
    let state = run_state(&out).expect("a readable checkpoint state");
    let history = state["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(state["config"]["epochs"], 1, "one exact step, whatever --epochs says");
    let loss = history[0]["loss"].as_f64().unwrap();
    let mean = train_scores.iter().sum::<f32>() / train_scores.len() as f32;
    let variance = train_scores.iter().map(|s| (s - mean).powi(2)).sum::<f32>() / train_scores.len() as f32;
    assert!(loss.is_finite() && loss < 0.2 * f64::from(variance), "training loss {loss}, label variance {variance}");

    // Held-out predictions follow the labels; the run exports like any other.
    let model = out.join("model.loupe");
    // A new statistics-reading head takes blocks 4-5's statistics over their interior by default.
    let (metadata, _) = loupe::weights::read_header(&std::fs::read(&model).unwrap()).unwrap();
    assert_eq!(metadata.model.statistics, loupe::model::StatisticsRegion::DeepInterior);
    let eval_dir = out.join("eval");
    loupe(&["eval", "-w", model.to_str().unwrap(), "--labels", test, "--images", images, "-o", eval_dir.to_str().unwrap()]);
    let all = &report(&eval_dir)["regression"]["all"];
    assert!(all["plcc"].as_f64().unwrap() > 0.8, "{all}");
    let exported = out.join("export.loupe");
    loupe(&["export", "--run", out_s, "-o", exported.to_str().unwrap()]);
    assert!(std::fs::metadata(&exported).unwrap().len() > 0);

    // The closed form only fits a quadratic regression head on a frozen backbone.
    for wrong in [&["--head", "statistics", "--freeze-backbone", "--closed-form"][..], &["--head", "quadratic", "--closed-form"][..]] {
        let other = dir.path().join("refused");
        let refused = Command::new(LOUPE).args(train_args(train, images, other.to_str().unwrap(), wrong)).output().unwrap();
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("--closed-form fits a regression model with --head quadratic"), "{stderr}");
    }
}

#[test]
fn a_killed_run_resumes_without_losing_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(3);
    let scores: Vec<f32> = (0..24).map(|_| 2.0 + 6.0 * rng.next()).collect();
    let labels = write_dataset(dir.path(), "labels.txt", &scores, 1, &mut rng);
    let images = dir.path().join("images");
    let out = dir.path().join("run");
    let (labels, images, out_s) = (labels.to_str().unwrap(), images.to_str().unwrap(), out.to_str().unwrap());
    // Full fine-tuning (no frozen backbone) of the histogram model, 4 epochs.
    let args = train_args(labels, images, out_s, &["--model", "histogram", "--epochs", "4", "--lr", "1e-3", "--batch", "8"]);

    let mut child = Command::new(LOUPE).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if run_state(&out).is_some_and(|s| s["epochs_done"].as_u64() >= Some(1)) {
            break;
        }
        assert!(Instant::now() < deadline, "no epoch finished in time");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = run_state(&out).unwrap();
    let done = killed_at["epochs_done"].as_u64().unwrap();
    assert!(done < 4, "the run finished before the kill");
    let first_loss = killed_at["history"][0]["loss"].as_f64().unwrap();

    // Without --resume the folder is protected; with it the run continues.
    let refused = Command::new(LOUPE).args(&args).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    let mut resume = args.clone();
    resume.push("--resume");
    loupe(&resume);

    let state = run_state(&out).unwrap();
    let epochs: Vec<u64> = state["history"].as_array().unwrap().iter().map(|e| e["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![1, 2, 3, 4], "epochs lost or repeated");
    assert_eq!(state["history"][0]["loss"].as_f64().unwrap(), first_loss, "a finished epoch was redone");
    assert!(out.join("model.loupe").is_file());
    let metadata = metadata(&out.join("model.loupe"));
    assert!(metadata.head_trained && metadata.model.output == loupe::model::OutputKind::Histogram, "{metadata:?}");
}

#[test]
fn a_checkpoint_whose_files_never_reached_the_disk_falls_back_to_the_epoch_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(5);
    let scores: Vec<f32> = (0..16).map(|_| 2.0 + 6.0 * rng.next()).collect();
    let labels = write_dataset(dir.path(), "labels.txt", &scores, 1, &mut rng);
    let images = dir.path().join("images");
    let out = dir.path().join("run");
    let (labels, images, out_s) = (labels.to_str().unwrap(), images.to_str().unwrap(), out.to_str().unwrap());
    let mut args = train_args(labels, images, out_s, &["--model", "regression", "--epochs", "2", "--lr", "1e-3", "--batch", "8"]);
    loupe(&args);
    let first_loss = run_state(&out).unwrap()["history"][0]["loss"].as_f64().unwrap();
    // A power cut after the rename: state.json is empty and epoch 2's model never got its data.
    std::fs::write(out.join("checkpoint/state.json"), b"").unwrap();
    std::fs::write(out.join("checkpoint/epoch-002/model.bpk"), b"").unwrap();

    args.push("--resume");
    let resumed = Command::new(LOUPE).args(&args).output().unwrap();
    let said = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{said}");
    assert!(said.contains("epoch 2's checkpoint cannot be read") && said.contains("resuming after epoch 1 instead"), "{said}");
    let state = run_state(&out).unwrap();
    let epochs: Vec<u64> = state["history"].as_array().unwrap().iter().map(|e| e["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![1, 2], "epochs lost or repeated");
    assert_eq!(state["history"][0]["loss"].as_f64().unwrap(), first_loss, "the good epoch was redone");
    assert!(std::fs::metadata(out.join("checkpoint/epoch-002/model.bpk")).unwrap().len() > 0, "epoch 2 was trained and saved again");
}

/// Data parallelism on the CLI: `--device flex,flex` splits every batch across two devices (both the
/// CPU here; `cuda:0,cuda:1` or `wgpu:0,wgpu:1` with GPUs). Full fine-tuning, so decoded images are
/// sharded too. (That the shards' gradients add up to the whole batch's is a unit test.)
#[test]
fn training_splits_batches_across_several_devices() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(11);
    let scores: Vec<f32> = (0..20).map(|_| 2.0 + 6.0 * rng.next()).collect();
    let labels = write_dataset(dir.path(), "labels.txt", &scores, 1, &mut rng);
    let images = dir.path().join("images");
    let out = dir.path().join("run");
    let (labels, images, out_s) = (labels.to_str().unwrap(), images.to_str().unwrap(), out.to_str().unwrap());
    let args = train_args(labels, images, out_s, &["--epochs", "3", "--lr", "1e-3", "--batch", "8", "--device", "flex,flex"]);
    let output = Command::new(LOUPE).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("data parallel on 2 devices"), "{stderr}");
    let state = run_state(&out).unwrap();
    let history = state["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    for epoch in history {
        assert_eq!(epoch["images"].as_u64(), Some(20), "every image trained once per epoch");
        assert!(epoch["loss"].as_f64().unwrap().is_finite());
    }
    assert!(metadata(&out.join("model.loupe")).head_trained);

    // A bad entry in the list is one clear error.
    let bad = train_args(labels, images, out_s, &["--device", "flex,tpu"]);
    let refused = Command::new(LOUPE).args(&bad).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown or disabled device 'tpu'"));
}

/// `loupe-train data split` on a real slice of AVA.txt (3000 rows of the original format, plus a few
/// broken rows): the paper's classes, disjoint sets, the same files for the same seed.
#[test]
fn data_split_on_real_ava_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ava_val_slice.txt")).unwrap();
    text += "3001 999999991 1 2 3\n3002 999999992 0 0 0 0 0 0 0 0 0 0 0 0 1\n3003 999999993 a 2 3 4 5 6 7 8 9 10 0 0 1\n";
    let labels = dir.path().join("AVA.txt");
    std::fs::write(&labels, text).unwrap();
    let labels = labels.to_str().unwrap();
    let split = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let output = Command::new(LOUPE)
            .args(["data", "split", "--labels", labels, "--rs", "300", "--ed-per-class", "30", "--seed", seed, "-o", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let read = |f: &str| -> Vec<u64> { std::fs::read_to_string(out.join(f)).unwrap().lines().map(|l| l.parse().unwrap()).collect() };
        (read("train.txt"), read("rs_test.txt"), read("ed_test.txt"), stderr)
    };
    let (train, rs, ed, stderr) = split("a", "5");
    // The three broken rows are reported with their line numbers and skipped.
    for line in ["line 3001", "line 3002", "line 3003"] {
        assert!(stderr.contains(line), "{line} not reported: {stderr}");
    }
    assert_eq!((rs.len(), ed.len(), train.len()), (300, 90, 3000 - 390));
    let all: std::collections::HashSet<u64> = train.iter().chain(&rs).chain(&ed).copied().collect();
    assert_eq!(all.len(), 3000, "sets overlap");
    // ED-test: 30 images with score < 4, 30 with 4..7, 30 above 7 (checked against the rows).
    let score_of: std::collections::HashMap<u64, f64> = std::fs::read_to_string(labels)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let counts: Vec<f64> = f.get(2..12)?.iter().map(|c| c.parse().ok()).collect::<Option<_>>()?;
            let votes: f64 = counts.iter().sum();
            Some((f[1].parse().ok()?, counts.iter().enumerate().map(|(k, c)| (k + 1) as f64 * c).sum::<f64>() / votes))
        })
        .collect();
    let classes = |lo: f64, hi: f64| ed.iter().filter(|id| (lo..hi).contains(&score_of[id])).count();
    assert_eq!((classes(0.0, 4.0), classes(4.0, 7.000001), classes(7.000001, 11.0)), (30, 30, 30));
    let (train2, rs2, ed2, _) = split("b", "5");
    assert_eq!((train, rs, ed), (train2, rs2, ed2), "not deterministic per seed");
    let (_, rs3, _, _) = split("c", "6");
    assert_ne!(rs3, split("d", "5").1);
}
