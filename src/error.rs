//! One error type for the crate: every failure a user can cause ends up here with a message that
//! says what was wrong, so the CLI prints it on one line and the wasm API throws it as a JS error.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoupeError {
    #[error("cannot read image: {0}")]
    Image(String),
    #[error("image too large: {0}")]
    ImageTooLarge(String),
    #[error("image too small: {width}x{height} (need at least {min}x{min} pixels)")]
    ImageTooSmall { width: u32, height: u32, min: u32 },
    #[error("weight file: {0}")]
    Weights(String),
    #[error("invalid crop request: {0}")]
    Crop(String),
    #[error("model: {0}")]
    Model(String),
}

pub type Result<T, E = LoupeError> = std::result::Result<T, E>;
