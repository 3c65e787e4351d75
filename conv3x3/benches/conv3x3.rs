//! Per-layer timing of VGG16's thirteen 3x3 convolutions (random weights, 224x224 input):
//! milliseconds and effective GFLOP/s (2·H·W·Cin·Cout·9 per image, as for a direct convolution,
//! so Winograd's saving shows as a rate above what the arithmetic units could do directly).
//!   cargo bench -p conv3x3 --features rayon [-- --batch 8 --repeats 5]

use std::time::Instant;

use conv3x3::{Activation, Conv3x3, Nhwc, max_pool_2x2};

/// VGG16's five blocks: (3x3 convolutions, output channels), each block ending in a 2x2 max-pool.
const VGG16_BLOCKS: [(usize, usize); 5] = [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)];

fn argument(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(|v| v.parse().expect("a number")).unwrap_or(default)
}

fn main() {
    let batch = argument("--batch", 1);
    let repeats = argument("--repeats", 5);
    let mut cin = 3;
    let mut side = 224;
    let mut layers = Vec::new();
    // Packing (the Winograd transform of every filter) is paid once, when a model is loaded:
    // timed apart from the forwards.
    let mut packing = 0.0;
    let layout = VGG16_BLOCKS.iter().flat_map(|&(convs, channels)| std::iter::repeat_n(Some(channels), convs).chain([None]));
    for entry in layout {
        match entry {
            Some(cout) => {
                let weight: Vec<f32> = (0..cout * cin * 9).map(|i| ((i * 7919) % 1000) as f32 / 1e5 - 0.005).collect();
                let started = Instant::now();
                let conv = Conv3x3::new(&weight, Some(&vec![0.01; cout]), cin, cout).unwrap();
                packing += started.elapsed().as_secs_f64();
                layers.push((Some(conv), side, cin, cout));
                cin = cout;
            }
            None => {
                layers.push((None, side, cin, cin));
                side /= 2;
            }
        }
    }
    let input = Nhwc::new((0..batch * 224 * 224 * 3).map(|i| (i % 255) as f32 - 120.0).collect(), batch, 224, 224, 3).unwrap();
    let mut per_layer = vec![f64::INFINITY; layers.len()];
    let mut totals = Vec::new();
    for _ in 0..repeats {
        let started = Instant::now();
        let mut x = input.clone();
        for (i, (conv, _, _, _)) in layers.iter().enumerate() {
            let t = Instant::now();
            x = match conv {
                Some(conv) => conv.forward(&x, Activation::Relu).unwrap(),
                None => max_pool_2x2(&x),
            };
            per_layer[i] = per_layer[i].min(t.elapsed().as_secs_f64());
        }
        totals.push(started.elapsed().as_secs_f64());
    }
    println!("VGG16 convolutions, batch {batch}, best of {repeats}");
    println!("| layer | side | in → out | ms | effective GFLOP/s |");
    println!("|---|---|---|---|---|");
    let mut flops_total = 0.0;
    for (i, (conv, side, cin, cout)) in layers.iter().enumerate() {
        let ms = per_layer[i] * 1e3;
        if conv.is_some() {
            let flops = 2.0 * (batch * side * side * cin * cout * 9) as f64;
            flops_total += flops;
            println!("| conv {i} | {side} | {cin} → {cout} | {ms:.2} | {:.1} |", flops / per_layer[i] / 1e9);
        } else {
            println!("| pool {i} | {side} | {cin} | {ms:.2} | |");
        }
    }
    totals.sort_by(f64::total_cmp);
    let median = totals[totals.len() / 2];
    println!(
        "whole stack: median {:.1} ms ({:.1} ms per image), {:.1} effective GFLOP/s",
        median * 1e3,
        median * 1e3 / batch as f64,
        flops_total / median / 1e9
    );
    println!("packing the weights (once, at load): {:.1} ms", packing * 1e3);
}
