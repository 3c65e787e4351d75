//! The one image pipeline, used by the CLI, the trainer and the browser alike:
//! bytes → decoded (with limits) → EXIF-oriented → 8-bit RGB (alpha over white) → the WHOLE image
//! resized to 224x224 (aspect not kept: the paper found this best, Sec. 4.2) → normalised the way
//! the weights were trained.

use std::io::Cursor;

use burn::tensor::{Device, Tensor, TensorData};
use image::imageops::FilterType;
use image::metadata::Orientation;
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
///
/// Memory: the result is 3 bytes per pixel (300 MB at the 100-megapixel limit) and the decoding
/// peak stays close to it. PNG, the one format with 16-bit and 8-byte pixels, is converted row by
/// row; other formats' 4-byte RGBA buffers are converted in place; EXIF rotation works on RGB.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(LoupeError::Image("the file is empty".into()));
    }
    if bytes.len() > MAX_FILE_BYTES {
        return Err(LoupeError::ImageTooLarge(format!("{} bytes (limit {MAX_FILE_BYTES})", bytes.len())));
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| LoupeError::Image(e.to_string()))?;
    let (image, orientation) = match reader.format() {
        None => return Err(LoupeError::Image("not a supported image (JPEG, PNG, WebP, GIF or BMP)".into())),
        Some(image::ImageFormat::Png) => decode_png(bytes)?,
        Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            // The JPEG decoder fills a cut-off scan with grey and reports success: refuse it instead.
            return Err(LoupeError::Image("truncated JPEG (the file ends before its last scan does)".into()));
        }
        Some(_) => decode_with_image(reader)?,
    };
    let mut upright = DynamicImage::ImageRgb8(image);
    upright.apply_orientation(orientation);
    Ok(upright.into_rgb8())
}

/// JPEG, WebP, GIF and BMP through `image`'s decoders, with its limits.
fn decode_with_image(mut reader: ImageReader<Cursor<&[u8]>>) -> Result<(RgbImage, Orientation)> {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(image_error)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height)?;
    // A missing or unreadable EXIF block is no reason to refuse the photo.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(image_error)?;
    Ok((to_rgb8(image), orientation))
}

/// PNG row by row: a 100-megapixel 16-bit RGBA PNG (800 MB as `image` would hold it, from a file
/// of a few hundred KB) needs no more than its 300 MB of RGB. Interlaced rows are placed by
/// Adam7 after conversion, so they cost no more.
fn decode_png(bytes: &[u8]) -> Result<(RgbImage, Orientation)> {
    let limits = png::Limits { bytes: MAX_DECODER_ALLOC as usize };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    // Palettes, transparency chunks and low bit depths become 8-bit grey/RGB(A); 16-bit stays.
    decoder.set_transformations(png::Transformations::EXPAND);
    // The size is checked from the header alone, before anything the size implies is allocated.
    let header = decoder.read_header_info().map_err(png_error)?;
    check_dimensions(header.width, header.height)?;
    let (width, height) = (header.width, header.height);
    let mut reader = decoder.read_info().map_err(png_error)?;
    let orientation = reader.info().exif_metadata.as_deref().and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
    let (colour, depth) = reader.output_color_type();
    let layout = PngLayout::new(colour, depth)?;
    // Within u64 by `check_dimensions` (at most 3 x 100 million bytes), so within usize on wasm32.
    let stride = width as usize * 3;
    let mut rgb = vec![0u8; stride * height as usize];
    let mut row_rgb = Vec::with_capacity(stride);
    let mut next_line = 0usize;
    while let Some(row) = reader.next_interlaced_row().map_err(png_error)? {
        row_rgb.clear();
        layout.append_rgb(row.data(), &mut row_rgb);
        match row.interlace() {
            png::InterlaceInfo::Null(_) => {
                let line = rgb.get_mut(next_line * stride..(next_line + 1) * stride).ok_or_else(png_extra_rows)?;
                line.copy_from_slice(row_rgb.get(..stride).ok_or_else(png_extra_rows)?);
                next_line += 1;
            }
            png::InterlaceInfo::Adam7(pass) => png::expand_interlaced_row(&mut rgb, stride, &row_rgb, pass, 24),
        }
    }
    let image = RgbImage::from_raw(width, height, rgb).ok_or_else(|| LoupeError::Image("the PNG's pixels do not fill its size".into()))?;
    Ok((image, orientation))
}

fn png_extra_rows() -> LoupeError {
    LoupeError::Image("the PNG has more or longer rows than its header says".into())
}

fn png_error(error: png::DecodingError) -> LoupeError {
    match error {
        png::DecodingError::LimitsExceeded => LoupeError::ImageTooLarge(format!("the PNG needs more than {MAX_DECODER_ALLOC} bytes to decode")),
        png::DecodingError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            LoupeError::Image("truncated PNG (the file ends before its pixels do)".into())
        }
        other => {
            // The decoder's messages end in a debug dump of the chunk type; the first clause says it.
            let message = other.to_string();
            let reason = message.split(" while decoding").next().unwrap_or(&message);
            LoupeError::Image(format!("corrupt PNG ({reason})"))
        }
    }
}

/// A PNG row's samples after `EXPAND`: 1 to 4 channels of 8 or 16 bits.
struct PngLayout {
    channels: usize,
    sixteen_bit: bool,
}

impl PngLayout {
    fn new(colour: png::ColorType, depth: png::BitDepth) -> Result<Self> {
        let channels = match colour {
            png::ColorType::Grayscale => 1,
            png::ColorType::GrayscaleAlpha => 2,
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            png::ColorType::Indexed => return Err(LoupeError::Image("PNG palette left unexpanded".into())),
        };
        let sixteen_bit = match depth {
            png::BitDepth::Eight => false,
            png::BitDepth::Sixteen => true,
            other => return Err(LoupeError::Image(format!("PNG bit depth {other:?} left unexpanded"))),
        };
        Ok(Self { channels, sixteen_bit })
    }

    /// Append one row as 8-bit RGB: 16-bit samples rounded as `image` rounds them, grey spread
    /// to three channels, alpha composited over white exactly as `to_rgb8` does.
    fn append_rgb(&self, row: &[u8], out: &mut Vec<u8>) {
        let sample_bytes = if self.sixteen_bit { 2 } else { 1 };
        for pixel in row.chunks_exact(self.channels * sample_bytes) {
            let mut samples = [0u8; 4];
            for (slot, bytes) in samples.iter_mut().zip(pixel.chunks_exact(sample_bytes)) {
                *slot = match *bytes {
                    [high, low] => ((u32::from(u16::from_be_bytes([high, low])) + 128) / 257) as u8,
                    [value, ..] => value,
                    [] => 0,
                };
            }
            let [s0, s1, s2, s3] = samples;
            let (rgb, alpha) = match self.channels {
                1 => ([s0; 3], 255),
                2 => ([s0; 3], s1),
                3 => ([s0, s1, s2], 255),
                _ => ([s0, s1, s2], s3),
            };
            out.extend(rgb.map(|c| over_white(c, alpha)));
        }
    }
}

/// Whether an end-of-image marker follows the last start-of-scan marker. Scan data stuffs every
/// 0xFF byte, so neither marker occurs in it by chance; an EXIF thumbnail's markers come earlier.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_end = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    matches!((last_scan, last_end), (Some(scan), Some(end)) if end > scan)
}

/// Whether a photo of this size is one Loupe reads: at most [`MAX_SIDE`] a side and
/// [`MAX_PIXELS`] in all, at least [`MIN_SIDE`] a side.
pub fn check_dimensions(width: u32, height: u32) -> Result<()> {
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(LoupeError::ImageTooLarge(format!("{width}x{height} pixels (longest side allowed: {MAX_SIDE})")));
    }
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

/// One channel of a pixel with alpha, composited over white (what a viewer shows), not left as
/// whatever colour the encoder stored under alpha 0.
fn over_white(channel: u8, alpha: u8) -> u8 {
    let alpha = u32::from(alpha);
    ((u32::from(channel) * alpha + 255 * (255 - alpha) + 127) / 255) as u8
}

/// Grey, 16-bit and float images become 8-bit RGB, alpha composited over white. 8-bit RGBA (the
/// large case for WebP, GIF and BMP) is converted inside its own buffer, so the peak is that
/// buffer rather than it plus a new RGB image.
fn to_rgb8(image: DynamicImage) -> RgbImage {
    match image {
        DynamicImage::ImageRgba8(rgba) => {
            let (width, height) = rgba.dimensions();
            let mut bytes = rgba.into_raw();
            // Pixel i moves from 4i to 3i: never ahead of pixels not yet read.
            for i in 0..bytes.len() / 4 {
                let alpha = bytes[4 * i + 3];
                for c in 0..3 {
                    bytes[3 * i + c] = over_white(bytes[4 * i + c], alpha);
                }
            }
            bytes.truncate(bytes.len() / 4 * 3);
            bytes.shrink_to_fit();
            // The buffer holds exactly width x height x 3 bytes by construction.
            RgbImage::from_raw(width, height, bytes).expect("an RGBA buffer compacts to its RGB size")
        }
        other if !other.color().has_alpha() => other.into_rgb8(),
        other => {
            use image::GenericImageView;
            let (width, height) = other.dimensions();
            RgbImage::from_fn(width, height, |x, y| {
                let [r, g, b, a] = other.get_pixel(x, y).0;
                image::Rgb([over_white(r, a), over_white(g, a), over_white(b, a)])
            })
        }
    }
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
    let plane = image.width() as usize * image.height() as usize;
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
