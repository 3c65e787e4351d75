//! The closed-form quadratic head fit (`loupe-train train --closed-form`): wall time of
//! `fit_quadratic_head` at n training images. Prints a markdown table.
//!
//!   cargo bench -p loupe-train --bench kernel_ridge -- [--sizes 2700,20000] [--runs 3]
//!       [--single-run-above 10000] [--ridge 0.1] [--seed N]
//!
//! The inputs are synthetic, shaped like the real head's: d = VGG16's block statistics width
//! (a mean and a std per channel of each of the five blocks, 2944), each standardised to mean 0
//! and scaled by 1/√d as `QuadraticLayers::standardise` does; labels are random scores in [1, 10]
//! and sample weights random in [0.2, 15] (the paper's weights span about 75x). The fit's time
//! depends on n and d only, not on the values. Sizes up to `--single-run-above` report the median
//! of `--runs` fits; larger ones a single fit.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::nn::Initializer;
use burn::tensor::Device;
use clap::Parser;
use loupe::model::heads::{HeadLayers, QuadraticLayers};
use loupe::model::vgg16::Vgg16;
use loupe::model::{HeadKind, StatisticsRegion};
use loupe::rng::SplitMix64;
use loupe_train::kernel_ridge::fit_quadratic_head;

#[derive(Parser)]
struct Args {
    /// Numbers of training images n, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2700,20000")]
    sizes: Vec<usize>,
    /// Fits per size (the median is reported) for sizes up to --single-run-above.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Sizes above this are fitted once.
    #[arg(long, default_value_t = 10_000)]
    single_run_above: usize,
    #[arg(long, default_value_t = 0.1)]
    ridge: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = Device::flex();
    // The real head's input width: every VGG16 block's channel statistics (zero weights: only the
    // layout matters here).
    let d = Vgg16::with_initializer(1, Initializer::Zeros, &device).statistics_width();
    println!("| n | d | fit seconds | runs |");
    println!("| ---: | ---: | ---: | ---: |");
    for &n in &args.sizes {
        let (inputs, y, weights) = synthetic(n, d, args.seed ^ n as u64);
        let runs = if n > args.single_run_above { 1 } else { args.runs.max(1) };
        let mut seconds = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut layers = quadratic_layers(d, &device)?;
            let started = Instant::now();
            let loss = fit_quadratic_head(&mut layers, &inputs, &y, &weights, args.ridge, &device)?;
            seconds.push(started.elapsed().as_secs_f64());
            if !loss.is_finite() {
                bail!("n = {n}: the fit's loss is {loss}");
            }
            eprintln!("n = {n}: {:.2} s (training weighted MSE {loss:.4})", seconds.last().unwrap());
        }
        seconds.sort_by(f64::total_cmp);
        println!("| {n} | {d} | {:.2} | {} |", seconds[seconds.len() / 2], runs);
    }
    Ok(())
}

fn quadratic_layers(d: usize, device: &Device) -> Result<QuadraticLayers> {
    match HeadLayers::new(HeadKind::Quadratic, 512, (d, StatisticsRegion::Whole), 1, 1, device) {
        HeadLayers::Quadratic(layers) => Ok(layers),
        _ => bail!("HeadLayers::new gave another head for HeadKind::Quadratic"),
    }
}

/// Row-major `[n, d]` inputs (each column standardised, scaled by 1/√d), labels and weights.
fn synthetic(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let mut inputs: Vec<f64> = (0..n * d).map(|_| gaussian(&mut rng)).collect();
    for c in 0..d {
        let mean = (0..n).map(|r| inputs[r * d + c]).sum::<f64>() / n as f64;
        let variance = (0..n).map(|r| (inputs[r * d + c] - mean).powi(2)).sum::<f64>() / n as f64;
        let scale = 1.0 / (variance.sqrt().max(1e-12) * (d as f64).sqrt());
        for r in 0..n {
            inputs[r * d + c] = (inputs[r * d + c] - mean) * scale;
        }
    }
    let y = (0..n).map(|_| (1.0 + 9.0 * rng.next_f64()) as f32).collect();
    let weights = (0..n).map(|_| (0.2 + 14.8 * rng.next_f64()) as f32).collect();
    (inputs.into_iter().map(|x| x as f32).collect(), y, weights)
}

fn gaussian(rng: &mut SplitMix64) -> f64 {
    let u = rng.next_f64().max(1e-300);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.next_f64()).cos()
}
