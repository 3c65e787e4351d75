//! Loupe's trainer, behind the `loupe-train` binary: AVA labels and the paper's splits and sample
//! weights, training with the weighted losses (gradient or closed form), evaluation like the
//! paper, and export of weight files.
//!
//! - [`labels`], [`splits`], [`stats`]: AVA's ratings, the RS/ED-test splits, Eq. 1's weights.
//! - [`data`]: labelled ids → network inputs, skipping images that cannot be read.
//! - [`losses`]: Eq. 2 and Eq. 3.
//! - [`train`]: the training loop; [`checkpoint`] (the plateau schedule, resumable checkpoints),
//!   [`features`] (the frozen backbone's feature cache), [`parallel`] (data-parallel gradients),
//!   [`kernel_ridge`] (the closed-form quadratic head).
//! - [`eval`]: the paper's metrics and the evaluation report; [`plots`]: its figures.
//! - [`export`]: a trained run → a Loupe weight file.

pub mod args;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod export;
pub mod features;
pub mod kernel_ridge;
pub mod labels;
pub mod losses;
pub mod parallel;
pub mod plots;
pub mod splits;
pub mod stats;
pub mod train;
