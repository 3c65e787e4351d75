//! The one image pipeline, used by the CLI, the trainer and the browser alike:
//! bytes → decoded (with limits) → EXIF-oriented → 8-bit RGB (alpha over white) → the WHOLE image
//! resized to 224x224 (aspect not kept: the paper found this best, Sec. 4.2) → normalised the way
//! the weights were trained.

use std::io::Cursor;

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{LoupeError, Result};
use crate::model::INPUT_SIZE;

/// Refuse files above this size outright (no real photo needs more).
pub const MAX_FILE_BYTES: usize = 100 * 1024 * 1024;
/// Refuse images above this many pixels (decompression bombs): 100 megapixels.
pub const MAX_PIXELS: u64 = 100_000_000;
/// Longest side accepted.
pub const MAX_SIDE: u32 = 30_000;
/// Smallest side that still says something about aesthetics.
pub const MIN_SIDE: u32 = 16;
/// Decoder allocation ceiling.
const MAX_DECODER_ALLOC: u64 = 1 << 30;

/// How the network expects its input; recorded in every weight file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputConvention {
    /// The original VGG16 (Caffe) convention of our ImageNet base: BGR, 0..255, minus the mean
    /// pixel B 103.939, G 116.779, R 123.68.
    CaffeBgr,
    /// torchvision's convention (for `vgg16-397923af.pth`): RGB in 0..1, minus mean, over std.
    TorchvisionRgb,
}

crate::from_str_by_serde_name!(InputConvention);

impl InputConvention {
    /// Map one 8-bit RGB pixel to the three network inputs, in the network's channel order.
    fn normalise(self, [r, g, b]: [u8; 3]) -> [f32; 3] {
        let (r, g, b) = (r as f32, g as f32, b as f32);
        match self {
            Self::CaffeBgr => [b - 103.939, g - 116.779, r - 123.68],
            Self::TorchvisionRgb => [(r / 255.0 - 0.485) / 0.229, (g / 255.0 - 0.456) / 0.224, (b / 255.0 - 0.406) / 0.225],
        }
    }
}

/// Decode any supported image (JPEG, PNG, WebP, GIF first frame, BMP) into upright 8-bit RGB.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(LoupeError::Image("the file is empty".into()));
    }
    if bytes.len() > MAX_FILE_BYTES {
        return Err(LoupeError::ImageTooLarge(format!("{} bytes (limit {MAX_FILE_BYTES})", bytes.len())));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| LoupeError::Image(e.to_string()))?;
    if reader.format().is_none() {
        return Err(LoupeError::Image("not a supported image (JPEG, PNG, WebP, GIF or BMP)".into()));
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a cut-off scan with grey and reports success: refuse it instead.
        return Err(LoupeError::Image("truncated JPEG (the file ends before its last scan does)".into()));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height)?;
    // A missing or unreadable EXIF block is no reason to refuse the photo.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    image.apply_orientation(orientation);
    Ok(to_rgb8(image))
}

/// Whether an end-of-image marker follows the last start-of-scan marker. Scan data stuffs every
/// 0xFF byte, so neither marker occurs in it by chance; an EXIF thumbnail's markers come earlier.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_end = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    matches!((last_scan, last_end), (Some(scan), Some(end)) if end > scan)
}

fn check_dimensions(width: u32, height: u32) -> Result<()> {
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(LoupeError::ImageTooLarge(format!("{width}x{height} pixels (limit {MAX_PIXELS} pixels)")));
    }
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(LoupeError::ImageTooSmall { width, height, min: MIN_SIDE });
    }
    Ok(())
}

fn image_error(error: image::ImageError) -> LoupeError {
    match error {
        image::ImageError::Limits(e) => LoupeError::ImageTooLarge(e.to_string()),
        other => LoupeError::Image(other.to_string()),
    }
}

/// Grey, 16-bit and float images become 8-bit RGB; transparent pixels are composited over white
/// (what a viewer shows), not left as whatever colour the encoder stored under alpha 0.
fn to_rgb8(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    RgbImage::from_fn(width, height, |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let alpha = u32::from(a);
        let over_white = |c: u8| ((u32::from(c) * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        image::Rgb([over_white(r), over_white(g), over_white(b)])
    })
}

/// The whole image to 224x224, aspect not kept. The triangle filter widens with the scale
/// factor, so large photos are averaged rather than aliased.
pub fn resize_to_input(image: &RgbImage) -> RgbImage {
    let side = INPUT_SIZE as u32;
    if image.dimensions() == (side, side) {
        return image.clone();
    }
    image::imageops::resize(image, side, side, FilterType::Triangle)
}

/// A region of the image straight to the network's 224x224 input: the same pixels as
/// `resize_to_input` of the cropped region, without copying the region first (a crop of a
/// 100-megapixel photo can be 300 MB; its input is 150 KB).
pub fn region_to_input(image: &RgbImage, x: u32, y: u32, width: u32, height: u32) -> RgbImage {
    let side = INPUT_SIZE as u32;
    let region = image::imageops::crop_imm(image, x, y, width, height);
    if (width, height) == (side, side) {
        return region.to_image();
    }
    image::imageops::resize(&*region, side, side, FilterType::Triangle)
}

/// CHW floats of one image at its own size, normalised.
pub fn normalise_chw(image: &RgbImage, convention: InputConvention) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut chw = vec![0.0; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        let [c0, c1, c2] = convention.normalise(pixel.0);
        chw[i] = c0;
        chw[plane + i] = c1;
        chw[2 * plane + i] = c2;
    }
    chw
}

/// A batch of images (each resized to 224x224) as the network's `[N, 3, 224, 224]` input.
pub fn input_batch(images: &[RgbImage], convention: InputConvention, device: &Device) -> Tensor<4> {
    let side = INPUT_SIZE;
    let mut data = Vec::with_capacity(images.len() * 3 * side * side);
    for image in images {
        data.extend(normalise_chw(&resize_to_input(image), convention));
    }
    Tensor::from_data(TensorData::new(data, [images.len(), 3, side, side]), device)
}

/// One image at its own size as `[1, 3, H, W]` (no resize), for checks against reference activations.
pub fn input_unresized(image: &RgbImage, convention: InputConvention, device: &Device) -> Tensor<4> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    Tensor::from_data(TensorData::new(normalise_chw(image, convention), [1, 3, h, w]), device)
}
