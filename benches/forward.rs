//! One VGG16 forward at 224x224 on the CPU, batch 1 and 8: Loupe's CPU path (`conv3x3`: what
//! scoring on flex runs), burn's generic flex conv2d (what it ran before), and onnxruntime on the
//! same 13-conv graph and weights, all in the same run. Prints a table.
//!
//!   RAYON_NUM_THREADS=2 cargo bench --bench forward --features import
//!
//! Needs ../shared/data (or LOUPE_SHARED_DATA) and `pip install onnx onnxruntime safetensors numpy`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use loupe::burn::tensor::{Device, Distribution, Tensor};
use loupe::imagenet::import_imagenet;
use loupe::model::vgg16::VggLayer;
use loupe::model::{HeadKind, ModelConfig, OutputKind};

const BATCHES: [usize; 2] = [1, 8];
const MIN_TIME: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;

fn conv_gflop(model: &loupe::model::Vgg16) -> f64 {
    let mut side = 224.0;
    let mut flop = 0.0;
    for layer in &model.features {
        match layer {
            VggLayer::Conv(conv) => {
                let [out_c, in_c, kh, kw] = conv.weight.dims();
                flop += 2.0 * (out_c * in_c * kh * kw) as f64 * side * side;
            }
            VggLayer::Pool(_) => side /= 2.0,
            VggLayer::Relu(_) => {}
        }
    }
    flop / 1e9
}

fn main() {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    let shared =
        std::env::var_os("LOUPE_SHARED_DATA").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let weights = shared.join("vgg16/vgg16_imagenet_conv_bgr_caffe.safetensors");

    let device = Device::flex();
    let mut net = ModelConfig::new(OutputKind::Regression, HeadKind::Compact).init(&device).unwrap();
    import_imagenet(&mut net, &weights).expect("ImageNet weights");
    let gflop = conv_gflop(&net.backbone);

    let generic = net.backbone.clone();
    let mut prepared = net.backbone.clone();
    prepared.prepare_for(&device);
    assert!(prepared.is_prepared_for(&device), "the CPU path did not accept VGG16");
    let time_per_image = |backbone: &loupe::model::Vgg16, batch: usize| {
        let x = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 50.0), &device);
        backbone.forward(x.clone()).into_data(); // warm-up
        let (mut runs, start) = (0, Instant::now());
        while runs < 3 || start.elapsed() < MIN_TIME {
            backbone.forward(x.clone()).into_data();
            runs += 1;
        }
        start.elapsed().as_secs_f64() * 1000.0 / (runs * batch) as f64
    };
    let onnx_threads = if threads == "all" { std::thread::available_parallelism().unwrap().get().to_string() } else { threads.clone() };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/onnx_vgg16.py");
    let onnxruntime = || -> Option<Vec<f64>> {
        let out = Command::new("python3").arg(&script).arg(&weights).arg(&onnx_threads).args(BATCHES.map(|b| b.to_string())).output();
        let json: serde_json::Value = match out {
            Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).ok()?,
            Ok(out) => {
                eprintln!("onnxruntime peer failed: {}", String::from_utf8_lossy(&out.stderr));
                return None;
            }
            Err(e) => {
                eprintln!("onnxruntime peer not run: {e}");
                return None;
            }
        };
        BATCHES.iter().map(|b| json[b.to_string()].as_f64()).collect()
    };

    // The machine's speed drifts from minute to minute (a shared VM): the three paths take turns,
    // round after round, and the table gives each path's median and each ratio's median.
    let (mut loupe_ms, mut flex_ms, mut onnx_ms) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}");
        loupe_ms.push(BATCHES.map(|batch| time_per_image(&prepared, batch)));
        flex_ms.push(BATCHES.map(|batch| time_per_image(&generic, batch)));
        if let Some(peer) = onnxruntime() {
            onnx_ms.push([peer[0], peer[1]]);
        }
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };

    println!("\nVGG16 conv base, 224x224, {gflop:.2} GFLOP/image, threads: {threads}, median of {ROUNDS} rounds");
    println!(
        "| batch | Loupe CPU ms/image | Loupe GFLOP/s | flex conv2d ms/image | onnxruntime ms/image | onnxruntime GFLOP/s | Loupe / onnxruntime | flex / onnxruntime |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, batch) in BATCHES.iter().enumerate() {
        let ms = median(loupe_ms.iter().map(|r| r[i]).collect());
        let flex = median(flex_ms.iter().map(|r| r[i]).collect());
        let (peer_ms, peer_gflops, ratio, flex_ratio) = if onnx_ms.len() == ROUNDS {
            let peer = median(onnx_ms.iter().map(|r| r[i]).collect());
            let ratio = median(loupe_ms.iter().zip(&onnx_ms).map(|(l, o)| l[i] / o[i]).collect());
            let flex_ratio = median(flex_ms.iter().zip(&onnx_ms).map(|(f, o)| f[i] / o[i]).collect());
            (format!("{peer:.1}"), format!("{:.1}", gflop / peer * 1000.0), format!("{ratio:.2}x"), format!("{flex_ratio:.2}x"))
        } else {
            ("n/a".into(), "n/a".into(), "n/a".into(), "n/a".into())
        };
        println!("| {batch} | {ms:.1} | {:.1} | {flex:.1} | {peer_ms} | {peer_gflops} | {ratio} | {flex_ratio} |", gflop / ms * 1000.0);
    }
}
