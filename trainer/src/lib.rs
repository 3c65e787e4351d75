//! The trainer's library: the parts that benches (and tests) reach from outside the binary.

pub mod kernel_ridge;
