//! `loupe batch` as a job array runs it: shards that partition the catalogue, a run killed at any
//! moment and rerun giving every key exactly once, bad photos as error rows (exit 0), and rows
//! equal to what `loupe score` and `loupe crop` say for the same photos. Tiny-width random models
//! keep it fast; the code paths are the full model's.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{LOUPE, fixture, run, succeeds as ok, tiny_models};
use loupe_cli::batch::output::read_part;
use loupe_cli::batch::rows::Row;

/// A folder of `copies` copies of each fixture photo (distinct keys), in nested folders.
fn catalogue(dir: &Path, copies: usize) -> PathBuf {
    let root = dir.join("catalogue");
    for copy in 0..copies {
        let folder = root.join(format!("set{copy}"));
        std::fs::create_dir_all(&folder).unwrap();
        for name in ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "cmyk.jpg", "exif_orientation6.jpg", "coffee_240.png"] {
            std::fs::copy(fixture(name), folder.join(name)).unwrap();
        }
    }
    root
}

fn parts(model_dir: &Path) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(model_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("part-"))
        .collect();
    parts.sort();
    parts
}

/// The one `model=<id>` folder under `out`.
fn model_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(dirs[0].file_name().unwrap().to_str().unwrap().starts_with("model="));
    dirs[0].clone()
}

/// Every row under `out`, by key; panics when a key has two rows.
fn rows_by_key(out: &Path) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    for part in parts(&model_dir(out)) {
        for mut row in read_part(&part).unwrap() {
            row.ms = 0.0; // time differs between runs; everything else must not
            let key = row.key.clone();
            assert!(rows.insert(key.clone(), row).is_none(), "{key} has two rows");
        }
    }
    rows
}

#[test]
fn shards_partition_the_catalogue_and_together_equal_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let [regression, histogram] = tiny_models(dir.path(), 5);
    let root = catalogue(dir.path(), 2);
    let root = root.to_str().unwrap();
    let whole = dir.path().join("whole");
    ok(&["batch", "-q", "-w", &regression, "-w", &histogram, root, "-o", whole.to_str().unwrap(), "--format", "jsonl"]);
    let expected = rows_by_key(&whole);
    assert_eq!(expected.len(), 12);
    assert!(expected.values().all(|row| row.error.is_none() && row.score.is_some() && row.histogram.as_ref().unwrap().len() == 10));

    let sharded = dir.path().join("sharded");
    let mut per_shard = Vec::new();
    for k in 0..3 {
        let shard = format!("{k}/3");
        ok(&["batch", "-q", "-w", &regression, "-w", &histogram, root, "-o", sharded.to_str().unwrap(), "--format", "jsonl", "--shard", &shard]);
        assert!(model_dir(&sharded).join(format!("_SUCCESS-{k:05}-of-00003")).exists());
        let now = rows_by_key(&sharded).len();
        per_shard.push(now - per_shard.iter().sum::<usize>());
    }
    // The same rows, each key in exactly one shard (rows_by_key refuses a second row), and the
    // keys spread over the shards rather than all in one.
    assert_eq!(rows_by_key(&sharded), expected);
    assert!(per_shard.iter().filter(|&&n| n > 0).count() >= 2, "{per_shard:?}");
}

#[test]
fn a_killed_run_resumes_with_every_key_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let [regression, histogram] = tiny_models(dir.path(), 5);
    let root = catalogue(dir.path(), 4);
    let out = dir.path().join("out");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["batch", "-q", "-w", &regression, "-w", &histogram, root.to_str().unwrap(), "-o", out.to_str().unwrap()].map(String::from).to_vec();
        // Crops make each photo slow enough to kill the run part-way; a part every 2 photos.
        args.extend(["--task", "both", "--candidates", "40", "--batch", "1", "--part-rows", "2"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let mut child = Command::new(LOUPE).args(args(&[])).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none() || parts(&model_dir(&out)).len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(300), "no parts written");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    let model = model_dir(&out);
    assert!(!model.join("_SUCCESS-00000-of-00001").exists(), "the run finished before the kill");
    let finished: HashMap<PathBuf, Vec<u8>> = parts(&model).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect();
    let killed_rows: usize = finished.keys().map(|p| read_part(p).unwrap().len()).sum();
    assert!(killed_rows < 24, "{killed_rows}");

    let rerun = ok(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    let summary = String::from_utf8_lossy(&rerun.stderr);
    assert!(summary.contains(&format!("{killed_rows} already done")), "{summary}");
    let rows = rows_by_key(&out);
    assert_eq!(rows.len(), 24, "every key once");
    assert!(rows.values().all(|r| r.error.is_none() && r.crops.len() == 1));
    for (part, bytes) in &finished {
        assert_eq!(&std::fs::read(part).unwrap(), bytes, "{} changed", part.display());
    }
    let names: Vec<String> = std::fs::read_dir(&model).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    assert!(model.join("_SUCCESS-00000-of-00001").exists());

    // A third run finds everything done and writes nothing.
    let before = parts(&model);
    let third = ok(&args(&[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&third.stderr).contains("24 already done, 0 written"));
    assert_eq!(parts(&model), before);
}

#[test]
fn bad_photos_are_error_rows_and_the_batch_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let [regression, _] = tiny_models(dir.path(), 5);
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("folder.jpg")).unwrap();
    std::fs::write(photos.join("notes.txt"), "not an image").unwrap();
    std::fs::write(photos.join("empty.jpg"), b"").unwrap();
    let jpeg = std::fs::read(fixture("chelsea.jpg")).unwrap();
    std::fs::write(photos.join("truncated.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    let good = fixture("coffee.jpg");
    let list = [
        good.to_str().unwrap().to_string(),
        photos.join("missing.jpg").to_str().unwrap().to_string(),
        photos.join("folder.jpg").to_str().unwrap().to_string(),
        photos.join("notes.txt").to_str().unwrap().to_string(),
        photos.join("empty.jpg").to_str().unwrap().to_string(),
        photos.join("truncated.jpg").to_str().unwrap().to_string(),
        "s3://bucket/photo.jpg".to_string(),
        good.to_str().unwrap().to_string(), // listed twice: still one row
    ];
    let manifest = dir.path().join("list.txt");
    std::fs::write(&manifest, list.join("\n")).unwrap();
    let out = dir.path().join("out");
    let output = ok(&["batch", "-q", "-w", &regression, manifest.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("7 photos") && stderr.contains("(6 failed)"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let rows = rows_by_key(&out);
    assert_eq!(rows.len(), 7);
    let error = |key: &str| rows[key].error.clone().unwrap_or_default();
    assert!(rows[good.to_str().unwrap()].error.is_none() && rows[good.to_str().unwrap()].score.is_some());
    assert!(error(&list[1]).contains("cannot open"), "{}", error(&list[1]));
    assert!(error(&list[2]).contains("folder"), "{}", error(&list[2]));
    assert!(error(&list[3]).contains("not a supported image"), "{}", error(&list[3]));
    assert!(error(&list[4]).contains("empty"), "{}", error(&list[4]));
    assert!(error(&list[5]).contains("truncated"), "{}", error(&list[5]));
    assert!(error(&list[6]).contains("s3://"), "{}", error(&list[6]));
    assert!(rows[&list[3]].content_sha256.is_some() && rows[&list[1]].content_sha256.is_none());
}

#[test]
fn retry_errors_redoes_only_the_failed_photos() {
    let dir = tempfile::tempdir().unwrap();
    let [regression, _] = tiny_models(dir.path(), 5);
    let root = catalogue(dir.path(), 1);
    let late = root.join("set0/late.jpg");
    std::fs::write(&late, b"not yet a photo").unwrap();
    let out = dir.path().join("out");
    let args = ["batch", "-q", "-w", &regression, root.to_str().unwrap(), "-o", out.to_str().unwrap()];
    ok(&args);
    let late_key = late.to_str().unwrap();
    assert!(rows_by_key(&out)[late_key].error.is_some());
    std::fs::copy(fixture("rocket.jpg"), &late).unwrap();

    ok(&args);
    assert!(rows_by_key(&out)[late_key].error.is_some(), "without --retry-errors the error row stays");
    let before = rows_by_key(&out);
    let retried = ok(&[&args[..], &["--retry-errors"]].concat());
    assert!(String::from_utf8_lossy(&retried.stderr).contains("1 written"));
    let after = rows_by_key(&out);
    assert_eq!(after.len(), 7);
    assert!(after[late_key].error.is_none() && after[late_key].score.is_some());
    for (key, row) in before.iter().filter(|(key, _)| key.as_str() != late_key) {
        assert_eq!(&after[key], row);
    }
}

#[test]
fn parquet_rows_agree_with_loupe_score_and_loupe_crop() {
    let dir = tempfile::tempdir().unwrap();
    let [regression, histogram] = tiny_models(dir.path(), 5);
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for name in ["chelsea.jpg", "exif_orientation6.jpg"] {
        std::fs::copy(fixture(name), photos.join(name)).unwrap();
    }
    let out = dir.path().join("out");
    let p = photos.to_str().unwrap();
    let batch_args = [
        "batch",
        "-q",
        "-w",
        &regression,
        "-w",
        &histogram,
        p,
        "-o",
        out.to_str().unwrap(),
        "--task",
        "both",
        "--aspect",
        "1:1",
        "--aspect",
        "16:9",
        "--candidates",
        "60",
    ];
    ok(&batch_args);
    let rows = rows_by_key(&out);
    assert!(parts(&model_dir(&out))[0].extension().unwrap() == "parquet");
    for (key, row) in &rows {
        let score: serde_json::Value =
            serde_json::from_slice(&ok(&["score", "--json", "-w", &regression, "-w", &histogram, key.as_str()]).stdout).unwrap();
        assert!((row.score.unwrap() - score["regression"]["score"].as_f64().unwrap() as f32).abs() < 1e-6);
        assert!((row.std.unwrap() - score["histogram"]["std"].as_f64().unwrap() as f32).abs() < 1e-6);
        let bins: Vec<f32> = serde_json::from_value(score["histogram"]["histogram"].clone()).unwrap();
        assert_eq!(row.histogram.as_ref().unwrap(), &bins);
        let image = image::open(key).unwrap();
        // exif_orientation6 is stored landscape and shown portrait: rows give the upright size.
        let upright = if key.contains("orientation6") { (image.height(), image.width()) } else { (image.width(), image.height()) };
        assert_eq!((row.width.unwrap(), row.height.unwrap()), upright);
        for (crop, aspect) in row.crops.iter().zip(["1:1", "16:9"]) {
            assert_eq!(crop.aspect, aspect);
            let said: serde_json::Value = serde_json::from_slice(
                &ok(&["crop", "--json", "-w", &regression, "-w", &histogram, key.as_str(), "--aspect", aspect, "--candidates", "60"]).stdout,
            )
            .unwrap();
            let best = &said["topCrop"];
            let (focal, crop) = (&crop.focal, &crop.crop);
            assert_eq!([crop.x, crop.y, crop.width, crop.height].map(u64::from), ["x", "y", "width", "height"].map(|f| best[f].as_u64().unwrap()));
            assert!((crop.score - best["score"].as_f64().unwrap() as f32).abs() < 1e-6);
            assert!((crop.percentile - best["percentile"].as_f64().unwrap() as f32).abs() < 1e-4);
            assert_eq!((focal.x, focal.y), (crop.x as f32 + crop.width as f32 / 2.0, crop.y as f32 + crop.height as f32 / 2.0));
        }
    }

    // New weights: a new folder beside the old one, which stays as it was.
    let [other, _] = tiny_models(dir.path(), 6);
    ok(&["batch", "-q", "-w", &other, p, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
}

#[test]
fn a_batch_size_outside_one_to_256_is_refused_before_any_photo_is_read() {
    // Up to three batches of decoded photos are in flight: an unbounded --batch was unbounded memory.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for batch in ["0", "257", "18446744073709551615"] {
        let output = run(&["batch", "-q", fixture("coffee.jpg").parent().unwrap().to_str().unwrap(), "-o", out.to_str().unwrap(), "--batch", batch]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("--batch"), "--batch {batch}: {stderr}");
        assert!(!out.exists(), "--batch {batch} wrote output");
    }
}
