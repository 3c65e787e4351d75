//! The `loupe` binary as a user runs it: `score` and `crop` on real fixture photos with tiny-width
//! models, agreeing with the library, and a one-line error (non-zero exit) on bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{LOUPE, fixture, run, succeeds};

fn ok(args: &[&str]) -> String {
    String::from_utf8(succeeds(args).stdout).unwrap()
}

/// The command fails with exit code 1 and one `loupe: ...` line on stderr that mentions `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "loupe {args:?}: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("loupe: ") && last.contains(needle), "loupe {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Tiny-width regression and histogram models (random, seed 3) in `dir`.
fn tiny_models(dir: &Path) -> (String, String) {
    let [regression, histogram] = common::tiny_models(dir, 3);
    (regression, histogram)
}

#[test]
fn score_prints_both_models_and_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let (regression, histogram) = tiny_models(dir.path());
    let photos = [fixture("chelsea.jpg"), fixture("coffee.jpg"), fixture("rocket.jpg")];
    let photo_args: Vec<&str> = photos.iter().map(|p| p.to_str().unwrap()).collect();

    let mut args = vec!["score", "--json", "-w", &regression, "-w", &histogram];
    args.extend(&photo_args);
    let stdout = ok(&args);
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);

    let device = loupe::burn::tensor::Device::flex();
    let files = [std::fs::read(&regression).unwrap(), std::fs::read(&histogram).unwrap()];
    let scorers = loupe::Scorer::from_weight_files(&[&files[0], &files[1]], &device).unwrap();
    for (line, photo) in lines.iter().zip(&photos) {
        assert_eq!(line["image"].as_str().unwrap(), photo.to_str().unwrap());
        let image = loupe::preprocess::decode_image(&std::fs::read(photo).unwrap()).unwrap();
        let by_library: Vec<_> = scorers.iter().map(|s| s.predict(std::slice::from_ref(&image)).unwrap().remove(0)).collect();

        let score = line["regression"]["score"].as_f64().unwrap();
        assert!((score - f64::from(by_library[0].score)).abs() < 1e-4, "{score} vs {:?}", by_library[0]);
        let histogram_line = &line["histogram"];
        let bins: Vec<f64> = histogram_line["histogram"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(bins.len(), 10);
        assert!((bins.iter().sum::<f64>() - 1.0).abs() < 1e-4);
        let mean: f64 = bins.iter().enumerate().map(|(k, p)| (k + 1) as f64 * p).sum();
        assert!((histogram_line["score"].as_f64().unwrap() - mean).abs() < 1e-4);
        assert!((histogram_line["std"].as_f64().unwrap() - f64::from(by_library[1].std.unwrap())).abs() < 1e-4);
        // Each score with its AVA percentile.
        for (name, prediction) in [("regression", &by_library[0]), ("histogram", &by_library[1])] {
            let percentile = line[name]["percentile"].as_f64().unwrap();
            assert!((percentile - f64::from(loupe::prediction::ava_percentile(prediction.score))).abs() < 1e-3, "{name}: {percentile}");
        }
    }

    // The table form names each image and model.
    let table = ok(&["score", "-w", &regression, "-w", &histogram, photo_args[0]]);
    assert!(table.contains("chelsea.jpg") && table.contains("regression:") && table.contains("histogram:") && table.contains("std"), "{table}");
    assert!(table.contains("% of AVA)"), "{table}");
}

#[test]
fn crop_writes_the_best_crop_with_the_requested_aspect() {
    let dir = tempfile::tempdir().unwrap();
    let (regression, _) = tiny_models(dir.path());
    let photo = fixture("coffee.jpg");
    let (width, height) = image::image_dimensions(&photo).unwrap();
    for (aspect, exact) in [("16:9", false), ("1:1", true), ("120x90", false)] {
        let out = dir.path().join(format!("crop-{}.png", aspect.replace(':', "_")));
        let mut args = vec![
            "crop",
            "-w",
            &regression,
            photo.to_str().unwrap(),
            "--aspect",
            aspect,
            "--candidates",
            "24",
            "--seed",
            "5",
            "--top-k",
            "3",
            "--json",
            "-o",
            out.to_str().unwrap(),
        ];
        if exact {
            args.push("--exact");
        }
        let result: serde_json::Value = serde_json::from_str(ok(&args).trim()).unwrap();
        let best = &result["topCrop"];
        let field = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap() as u32;
        let (x, y, w, h) = (field(best, "x"), field(best, "y"), field(best, "width"), field(best, "height"));
        assert!(x + w <= width && y + h <= height, "{aspect}: {best} outside {width}x{height}");
        match aspect {
            "120x90" => assert_eq!((w, h), (120, 90)),
            _ => {
                let (aw, ah) = aspect.split_once(':').map(|(a, b)| (a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap())).unwrap();
                assert!((f64::from(h) - f64::from(w) * ah / aw).abs() <= 1.0, "{aspect}: {w}x{h}");
            }
        }
        // The file holds exactly that rectangle.
        assert_eq!(image::image_dimensions(&out).unwrap(), (w, h));
        // smartcrop.js's shape: every crop best first (the top one and --top-k more), the focal
        // point at the top crop's centre, in source pixels.
        let crops = result["crops"].as_array().unwrap();
        assert_eq!(crops.len(), 4);
        assert_eq!(&crops[0], best);
        let best_score = best["score"].as_f64().unwrap();
        assert!(crops.iter().all(|a| a["score"].as_f64().unwrap() <= best_score));
        let percentile = best["percentile"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&percentile), "{percentile}");
        let focal = (result["focal"]["x"].as_f64().unwrap(), result["focal"]["y"].as_f64().unwrap());
        assert_eq!(focal, (f64::from(x) + f64::from(w) / 2.0, f64::from(y) + f64::from(h) / 2.0));
        // Only a histogram model can say how hard the crop is to judge.
        assert!(result.get("difficulty").is_none(), "{result}");
    }
}

#[test]
fn bad_input_gives_one_line_and_a_failing_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (regression, _) = tiny_models(dir.path());
    let not_an_image = dir.path().join("notes.jpg");
    std::fs::write(&not_an_image, "just some text, renamed").unwrap();
    let truncated = dir.path().join("truncated.jpg");
    let jpeg = std::fs::read(fixture("chelsea.jpg")).unwrap();
    std::fs::write(&truncated, &jpeg[..jpeg.len() / 3]).unwrap();
    let broken_weights = dir.path().join("broken.loupe");
    let weights = std::fs::read(&regression).unwrap();
    std::fs::write(&broken_weights, &weights[..weights.len() / 2]).unwrap();
    let chelsea = fixture("chelsea.jpg");
    let chelsea = chelsea.to_str().unwrap();

    // One bad photo among good ones: the good ones are still scored, the exit code says it failed.
    let output = run(&["score", "-w", &regression, chelsea, not_an_image.to_str().unwrap(), truncated.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.lines().any(|l| l.starts_with(chelsea) && l.contains("regression:")), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("notes.jpg: error")), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("truncated.jpg: error")), "{stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 of 3 images could not be scored"));

    fails_with(&["crop", "-w", &regression, not_an_image.to_str().unwrap()], "notes.jpg");
    fails_with(&["score", "-w", broken_weights.to_str().unwrap(), chelsea], "broken.loupe");
    fails_with(&["score", "-w", "/nonexistent/model.loupe", chelsea], "cannot read /nonexistent/model.loupe");
    fails_with(&["crop", "-w", &regression, chelsea, "--aspect", "banana"], "banana");
    fails_with(&["crop", "-w", &regression, chelsea, "--aspect", "5000x20"], "does not fit");
    fails_with(&["score", "-w", &regression, "--device", "tpu", chelsea], "tpu");
}

/// `loupe bundle`: a compact and a statistics head on one backbone share one backbone file, whose
/// bytes do not depend on the heads beside it (so retraining or swapping heads never changes the
/// 29 MB download), and the bundle scores like the whole models.
#[test]
fn bundled_heads_of_either_kind_share_one_backbone_file() {
    let dir = tempfile::tempdir().unwrap();
    // Both heads on the real ImageNet backbone (random backbones would differ per head: burn
    // initialises parameters lazily, in order of first use).
    let shared =
        std::env::var_os("LOUPE_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let vgg16 = shared.join("vgg16/vgg16_imagenet_conv_bgr_caffe.safetensors");
    assert!(vgg16.is_file(), "{} is missing: set LOUPE_SHARED_DATA", vgg16.display());
    let model = |head: &str, output: &str| {
        let path = dir.path().join(format!("{head}.loupe")).to_str().unwrap().to_string();
        ok(&["import-vgg16", "--from", vgg16.to_str().unwrap(), "--head", head, "--output", output, "-o", &path]);
        path
    };
    let (compact, statistics) = (model("compact", "regression"), model("statistics", "histogram"));
    let bundle = |name: &str, models: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec!["bundle", "-o", out.to_str().unwrap()];
        args.extend_from_slice(models);
        ok(&args);
        out
    };
    let alone = bundle("compact-only", &[&compact]);
    let both = bundle("both", &[&statistics, &compact]);
    let backbone = std::fs::read(alone.join("backbone.loupe")).unwrap();
    assert_eq!(backbone, std::fs::read(both.join("backbone.loupe")).unwrap(), "the backbone file depends on its heads");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(both.join("manifest.json")).unwrap()).unwrap();
    let heads: Vec<&str> = manifest["models"].as_array().unwrap().iter().filter_map(|m| m["head"].as_str()).collect();
    assert_eq!(heads.len(), 2, "{manifest}");

    // The bundled statistics (histogram) head scores a photo as its whole model does.
    let photo = fixture("coffee.jpg");
    let photo = photo.to_str().unwrap();
    let score = |weights: &[&str]| -> f64 {
        let mut args = vec!["score", "--json", photo];
        for w in weights {
            args.extend_from_slice(&["-w", w]);
        }
        let line: serde_json::Value = serde_json::from_str(ok(&args).lines().next().unwrap()).unwrap();
        line["histogram"]["score"].as_f64().unwrap()
    };
    let backbone_file = both.join("backbone.loupe");
    let head_file = both.join("histogram.loupe");
    let whole = score(&[&statistics]);
    let joined = score(&[backbone_file.to_str().unwrap(), head_file.to_str().unwrap()]);
    assert!((whole - joined).abs() < 1e-3, "whole model {whole} vs bundle {joined}");

    // The untrained head's initialisation is seeded: the same file again, another seed differs.
    let again = dir.path().join("again.loupe");
    let import = |seed: &str| {
        ok(&[
            "import-vgg16",
            "--from",
            vgg16.to_str().unwrap(),
            "--head",
            "statistics",
            "--output",
            "histogram",
            "--seed",
            seed,
            "-o",
            again.to_str().unwrap(),
        ]);
        std::fs::read(&again).unwrap()
    };
    let original = std::fs::read(&statistics).unwrap();
    assert!(import("0") == original, "import-vgg16 is not reproducible");
    assert!(import("1") != original, "the seed does not reach the head's initialisation");
}

/// One raw HTTP/1.1 GET with this Host header; the status code.
fn get_status(address: &str, path: &str, host: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

/// `loupe serve --port 0` on these folders: the running server and its address (`127.0.0.1:port`).
fn start_serve(app: &Path, weights: &Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut server = Command::new(LOUPE)
        .args(["serve", "--app", app.to_str().unwrap(), "--weights", weights.to_str().unwrap(), "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.split("http://").nth(1).and_then(|rest| rest.split('/').next()).unwrap().to_string();
    (server, address)
}

#[test]
fn loupe_serve_answers_only_its_own_host_and_never_dotfiles() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join(".git")).unwrap();
    std::fs::write(app.join("index.html"), "<!doctype html>").unwrap();
    std::fs::write(app.join(".git/config"), "[remote]").unwrap();
    std::fs::write(app.join(".env"), "SECRET=1").unwrap();
    let (mut server, address) = start_serve(&app, dir.path());
    let port = address.rsplit_once(':').unwrap().1;
    let statuses = [
        get_status(&address, "/", &address),
        get_status(&address, "/index.html", &format!("localhost:{port}")),
        get_status(&address, "/index.html", &format!("rebound.example:{port}")),
        get_status(&address, "/.git/config", &address),
        get_status(&address, "/.env", &address),
        get_status(&address, "/missing.js", &address),
    ];
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(statuses, [200, 200, 421, 404, 404, 404]);
}

#[test]
fn loupe_serve_answers_others_while_a_client_is_not_reading_a_large_file() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("index.html"), "<!doctype html>").unwrap();
    // Far more than the socket buffers hold: its response cannot be written until it is read.
    std::fs::write(app.join("loupe_bg.wasm"), vec![0u8; 64 << 20]).unwrap();
    let (mut server, address) = start_serve(&app, dir.path());
    let mut stalled = std::net::TcpStream::connect(&address).unwrap();
    write!(stalled, "GET /loupe_bg.wasm HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    // Another client meanwhile: answered although the first has read nothing. (Answered one
    // request at a time, it waited until the first hung up.)
    let mut other = std::net::TcpStream::connect(&address).unwrap();
    other.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    write!(other, "GET /index.html HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let read = other.read_to_string(&mut response);
    drop(stalled);
    server.kill().unwrap();
    server.wait().unwrap();
    read.expect("no answer while another client was not reading its download");
    assert!(response.starts_with("HTTP/1.1 200") && response.ends_with("<!doctype html>"), "{response}");
}

#[test]
fn crop_with_a_histogram_model_says_how_hard_the_top_crop_is_to_judge() {
    let dir = tempfile::tempdir().unwrap();
    let (regression, histogram) = tiny_models(dir.path());
    let photo = fixture("coffee.jpg");
    let args = ["crop", "--json", "-w", &regression, "-w", &histogram, photo.to_str().unwrap(), "--candidates", "12", "--aspect", "4:5"];
    let said: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    // The histogram model's std for the top crop, scored on its own.
    let top = &said["topCrop"];
    let cropped = image::open(&photo).unwrap().crop_imm(
        top["x"].as_u64().unwrap() as u32,
        top["y"].as_u64().unwrap() as u32,
        top["width"].as_u64().unwrap() as u32,
        top["height"].as_u64().unwrap() as u32,
    );
    let crop_file = dir.path().join("top.png");
    cropped.save(&crop_file).unwrap();
    let scored: serde_json::Value = serde_json::from_str(&ok(&["score", "--json", "-w", &histogram, crop_file.to_str().unwrap()])).unwrap();
    let std = said["difficulty"]["std"].as_f64().unwrap();
    assert!((std - scored["histogram"]["std"].as_f64().unwrap()).abs() < 1e-3, "{said} vs {scored}");
    assert!(!said["difficulty"]["label"].as_str().unwrap().is_empty());
    // `score --json` says it in words too, as the browser does.
    assert!(!scored["histogram"]["difficulty"].as_str().unwrap().is_empty(), "{scored}");
}

#[test]
fn crop_top_k_at_the_largest_number_lists_every_candidate_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let (regression, _) = tiny_models(dir.path());
    let photo = fixture("coffee.jpg");
    let args = ["crop", "--json", "-w", &regression, photo.to_str().unwrap(), "--candidates", "20", "--top-k", "18446744073709551615"];
    let said: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
    let crops = said["crops"].as_array().unwrap().len();
    assert!((1..=20).contains(&crops), "{crops}");
}
