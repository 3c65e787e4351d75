//! Peak memory for the largest photo a user may hand Loupe (100 megapixels), counted by a global
//! allocator that tracks the live bytes: decoding it, and the fast crop search over it. One test
//! (the counter is process-wide, so nothing else may run beside it).

mod common;
mod counting;

use std::io::Cursor;

use common::*;
use counting::{Counting, peak_mb};
use image::{ImageFormat, RgbImage};
use loupe::Scorer;
use loupe::crop::{CropRequest, CropShape, FastCropOptions, fast_crop_search};
use loupe::model::{HeadKind, ModelConfig, OutputKind};
use loupe::preprocess::{InputConvention, decode_image};
use loupe::weights::WeightMetadata;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A 100-megapixel photo-like JPEG (smooth gradients and texture, so it compresses like a photo).
fn jpeg_of_100_megapixels() -> Vec<u8> {
    let photo = RgbImage::from_fn(10_000, 10_000, |x, y| {
        let texture = ((x * 7919 + y * 104_729) % 61) as u8;
        image::Rgb([(x / 40) as u8 ^ texture, (y / 40) as u8, ((x + y) / 80) as u8 | texture])
    });
    let mut bytes = Vec::new();
    photo.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg).unwrap();
    bytes
}

/// A 100-megapixel 16-bit RGBA PNG, written row by row (it is 800 MB as pixels, a few MB as a file).
fn png_of_100_megapixels_16_bit_rgba() -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, 10_000, 10_000);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Sixteen);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().unwrap();
        let mut stream = writer.stream_writer().unwrap();
        let mut row = vec![0u8; 10_000 * 8];
        for y in 0..10_000u32 {
            for (x, pixel) in row.chunks_exact_mut(8).enumerate() {
                let [r, g, b, a] = [(x as u32 * 6) as u16, (y * 6) as u16, 30_000, 65_535 - (y * 3) as u16].map(u16::to_be_bytes);
                pixel.copy_from_slice(&[r, g, b, a].concat());
            }
            std::io::Write::write_all(&mut stream, &row).unwrap();
        }
        stream.finish().unwrap();
    }
    bytes
}

/// A 100-megapixel 8-bit RGBA WebP (lossless), the 4-byte case of the formats `image` decodes whole.
fn webp_of_100_megapixels_rgba() -> Vec<u8> {
    let photo = image::RgbaImage::from_fn(10_000, 10_000, |x, y| image::Rgba([(x / 40) as u8, (y / 40) as u8, 90, 255 - (y / 40) as u8]));
    let mut bytes = Vec::new();
    photo.write_to(&mut Cursor::new(&mut bytes), ImageFormat::WebP).unwrap();
    bytes
}

#[test]
fn a_100_megapixel_photo_decodes_and_crops_within_the_memory_budget() {
    // 16-bit RGBA PNG: 800 MB as `image` decodes it whole (1.2 GB with the conversions beside it);
    // row by row it is the 300 MB of RGB it becomes. 8-bit RGBA WebP: decoded whole (400 MB),
    // then turned into RGB inside the same buffer.
    for (name, make) in [("16-bit RGBA PNG", png_of_100_megapixels_16_bit_rgba as fn() -> Vec<u8>), ("RGBA WebP", webp_of_100_megapixels_rgba)] {
        let bytes = make();
        let (photo, decode_mb) = peak_mb(|| decode_image(&bytes).unwrap());
        assert_eq!(photo.dimensions(), (10_000, 10_000));
        println!("{name} decode: peak {decode_mb:.0} MB above the {:.1} MB file", bytes.len() as f64 / 1e6);
        assert!(decode_mb <= 600.0, "decoding a 100 MP {name} peaked at {decode_mb:.0} MB");
    }

    let bytes = jpeg_of_100_megapixels();
    let (photo, decode_mb) = peak_mb(|| decode_image(&bytes).unwrap());
    assert_eq!(photo.dimensions(), (10_000, 10_000));
    // The decoded pixels alone are 300 MB.
    println!("decode: peak {decode_mb:.0} MB above the {:.1} MB file", bytes.len() as f64 / 1e6);
    assert!(decode_mb <= 600.0, "decoding a 100 MP JPEG peaked at {decode_mb:.0} MB");

    let config = ModelConfig::new(OutputKind::Regression, HeadKind::Compact).with_width_divisor(16);
    let scorer = Scorer::new(config.init(&flex()).unwrap(), WeightMetadata::new(config, InputConvention::CaffeBgr), flex());
    let request = CropRequest { shape: CropShape::Aspect { width: 1, height: 1 }, candidates: 200, seed: 1, ..CropRequest::default() };
    let (crops, crop_mb) = peak_mb(|| fast_crop_search(&scorer, &photo, &request, &FastCropOptions::default(), |_, _| {}).unwrap());
    assert!(!crops.is_empty());
    // Crops are scored from 224x224 inputs cut straight from the photo, never from full-size copies
    // (with copies, 8 re-scored crops at a time peaked at 741 MB here).
    println!("fast crop search: peak {crop_mb:.0} MB beyond the decoded photo");
    assert!(crop_mb <= 300.0, "the fast crop search over a 100 MP photo peaked at {crop_mb:.0} MB beyond it");

    let absurd = CropRequest { candidates: 1_000_000_000, ..request };
    let (refused, refused_mb) = peak_mb(|| fast_crop_search(&scorer, &photo, &absurd, &FastCropOptions::default(), |_, _| {}));
    assert!(refused.unwrap_err().to_string().contains("candidates"));
    assert!(refused_mb < 1.0, "a refused request allocated {refused_mb:.1} MB");
}
