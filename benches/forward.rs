//! One VGG16 forward at 224x224 on flex (the CPU backend), batch 1 and 8, beside onnxruntime on
//! the same 13-conv graph and weights in the same run. Prints a table.
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
    let shared = std::env::var_os("LOUPE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    let weights = shared.join("vgg16/vgg16_imagenet_conv_bgr_caffe.safetensors");

    let device = Device::flex();
    let mut net = ModelConfig::new(OutputKind::Regression, HeadKind::Compact).init(&device).unwrap();
    import_imagenet(&mut net, &weights).expect("ImageNet weights");
    let gflop = conv_gflop(&net.backbone);

    let mut flex_ms = Vec::new();
    for batch in BATCHES {
        let x = Tensor::<4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 50.0), &device);
        net.backbone.forward(x.clone()).into_data(); // warm-up
        let (mut runs, start) = (0, Instant::now());
        while runs < 3 || start.elapsed() < MIN_TIME {
            net.backbone.forward(x.clone()).into_data();
            runs += 1;
        }
        flex_ms.push(start.elapsed().as_secs_f64() * 1000.0 / (runs * batch) as f64);
    }

    let onnx_threads = if threads == "all" { std::thread::available_parallelism().unwrap().get().to_string() } else { threads.clone() };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/onnx_vgg16.py");
    let peer = Command::new("python3")
        .arg(&script)
        .arg(&weights)
        .arg(&onnx_threads)
        .args(BATCHES.map(|b| b.to_string()))
        .output();
    let onnx_ms: Option<serde_json::Value> = match peer {
        Ok(out) if out.status.success() => serde_json::from_slice(&out.stdout).ok(),
        Ok(out) => {
            eprintln!("onnxruntime peer failed: {}", String::from_utf8_lossy(&out.stderr));
            None
        }
        Err(e) => {
            eprintln!("onnxruntime peer not run: {e}");
            None
        }
    };

    println!("\nVGG16 conv base, 224x224, {gflop:.2} GFLOP/image, threads: {threads}");
    println!("| batch | flex ms/image | flex GFLOP/s | onnxruntime ms/image | onnxruntime GFLOP/s | flex / onnxruntime |");
    println!("|---|---|---|---|---|---|");
    for (batch, ms) in BATCHES.iter().zip(&flex_ms) {
        let peer = onnx_ms.as_ref().and_then(|v| v[batch.to_string()].as_f64());
        let (peer_ms, peer_gflops, ratio) = match peer {
            Some(p) => (format!("{p:.1}"), format!("{:.1}", gflop / p * 1000.0), format!("{:.2}x", ms / p)),
            None => ("n/a".into(), "n/a".into(), "n/a".into()),
        };
        println!("| {batch} | {ms:.1} | {:.1} | {peer_ms} | {peer_gflops} | {ratio} |", gflop / ms * 1000.0);
    }
}
