//! Decoding every kind of input the app can be handed, and refusing the bad ones without panics.

mod common;

use std::io::Cursor;

use common::*;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use loupe::LoupeError;
use loupe::preprocess::{InputConvention, decode_image, normalise_chw, region_to_input, resize_to_input};

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image.write_to(&mut Cursor::new(&mut bytes), format).unwrap();
    bytes
}

#[test]
fn decodes_every_supported_format() {
    let rgb = DynamicImage::ImageRgb8(ImageBuffer::from_fn(40, 30, |x, y| Rgb([x as u8 * 6, y as u8 * 8, 100])));
    for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Gif, ImageFormat::Bmp] {
        let decoded = decode_image(&encode(rgb.clone(), format)).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(decoded.dimensions(), (40, 30), "{format:?}");
    }
}

#[test]
fn exif_orientation_is_applied() {
    // Stored 96x64 landscape with orientation 6 (rotate 90° clockwise to display).
    let image = decode_image(&fixture_bytes("exif_orientation6.jpg")).unwrap();
    assert_eq!(image.dimensions(), (64, 96));
}

#[test]
fn cmyk_jpeg_becomes_rgb() {
    let image = decode_image(&fixture_bytes("cmyk.jpg")).unwrap();
    assert_eq!(image.dimensions(), (96, 64));
    // Same photo as the RGB EXIF fixture: colours must be close, not inverted or black.
    let reference = image::load_from_memory(&fixture_bytes("exif_orientation6.jpg")).unwrap().into_rgb8();
    let mean_diff: f64 =
        image.pixels().zip(reference.pixels()).map(|(a, b)| (0..3).map(|c| (a[c] as f64 - b[c] as f64).abs()).sum::<f64>() / 3.0).sum::<f64>()
            / (96.0 * 64.0);
    assert!(mean_diff < 25.0, "CMYK decoded far from RGB original: mean diff {mean_diff}");
}

#[test]
fn grey_16_bit_and_alpha_become_rgb() {
    let grey = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(20, 20, Luma([77])));
    let image = decode_image(&encode(grey, ImageFormat::Png)).unwrap();
    assert_eq!(image.get_pixel(3, 3).0, [77, 77, 77]);

    let grey16 = DynamicImage::ImageLuma16(ImageBuffer::from_pixel(20, 20, Luma([0x8080])));
    assert_eq!(decode_image(&encode(grey16, ImageFormat::Png)).unwrap().get_pixel(0, 0).0, [128, 128, 128]);

    let rgb16 = DynamicImage::ImageRgb16(ImageBuffer::from_pixel(20, 20, Rgb([0xffff, 0, 0x8080])));
    assert_eq!(decode_image(&encode(rgb16, ImageFormat::Png)).unwrap().get_pixel(0, 0).0, [255, 0, 128]);

    // Fully transparent black shows as white; opaque red stays red; half-transparent blends.
    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(20, 20, |x, _| match x {
        0..=6 => Rgba([0, 0, 0, 0]),
        7..=13 => Rgba([255, 0, 0, 255]),
        _ => Rgba([0, 0, 0, 128]),
    }));
    let image = decode_image(&encode(rgba, ImageFormat::Png)).unwrap();
    assert_eq!(image.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(image.get_pixel(10, 0).0, [255, 0, 0]);
    assert_eq!(image.get_pixel(18, 0).0, [127, 127, 127]);

    let grey_alpha = DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(20, 20, LumaA([0, 255])));
    assert_eq!(decode_image(&encode(grey_alpha, ImageFormat::Png)).unwrap().get_pixel(0, 0).0, [0, 0, 0]);
}

/// What `image`'s own decoder makes of a file, alpha composited over white: the pixels Loupe
/// gave before PNGs were decoded row by row.
fn decoded_by_image(bytes: &[u8]) -> image::RgbImage {
    let rgba = image::load_from_memory(bytes).unwrap().into_rgba8();
    let over_white = |c: u8, a: u8| ((u32::from(c) * u32::from(a) + 255 * (255 - u32::from(a)) + 127) / 255) as u8;
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        Rgb([over_white(r, a), over_white(g, a), over_white(b, a)])
    })
}

#[test]
fn png_row_by_row_gives_the_pixels_of_a_whole_image_decode() {
    let ramp16 = |x: u32, y: u32| (x * 2111 + y * 977) as u16;
    let generated = [
        ("grey 8", DynamicImage::ImageLuma8(ImageBuffer::from_fn(37, 23, |x, y| Luma([(x * 7 + y) as u8])))),
        ("grey 16", DynamicImage::ImageLuma16(ImageBuffer::from_fn(37, 23, |x, y| Luma([ramp16(x, y)])))),
        ("grey+alpha 16", DynamicImage::ImageLumaA16(ImageBuffer::from_fn(37, 23, |x, y| LumaA([ramp16(x, y), ramp16(y, x)])))),
        ("RGB 16", DynamicImage::ImageRgb16(ImageBuffer::from_fn(37, 23, |x, y| Rgb([ramp16(x, y), ramp16(y, x), 40_000])))),
        ("RGBA 16", DynamicImage::ImageRgba16(ImageBuffer::from_fn(37, 23, |x, y| Rgba([ramp16(x, y), 9, ramp16(y, x), ramp16(x, x)])))),
        ("RGBA 8", DynamicImage::ImageRgba8(ImageBuffer::from_fn(37, 23, |x, y| Rgba([x as u8 * 6, y as u8 * 11, 3, (x * y) as u8])))),
    ];
    let mut cases: Vec<(String, Vec<u8>)> = generated.into_iter().map(|(name, image)| (name.to_string(), encode(image, ImageFormat::Png))).collect();
    // Adam7-interlaced files (pypng): 16-bit RGBA with an alpha ramp, and a 4-bit palette with a
    // transparent entry (tRNS).
    for name in ["interlaced_rgba16.png", "interlaced_palette_transparent.png", "chelsea_240.png"] {
        cases.push((name.to_string(), fixture_bytes(name)));
    }
    for (name, bytes) in cases {
        let ours = decode_image(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ours, decoded_by_image(&bytes), "{name}");
    }
}

/// A minimal big-endian EXIF block holding only an orientation tag.
fn exif_with_orientation(orientation: u16) -> Vec<u8> {
    let mut exif = b"MM\0\x2a\0\0\0\x08".to_vec();
    exif.extend(1u16.to_be_bytes()); // one IFD entry
    exif.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1]); // tag 0x0112 (orientation), SHORT, count 1
    exif.extend(orientation.to_be_bytes());
    exif.extend([0, 0]); // value padding
    exif.extend([0, 0, 0, 0]); // no next IFD
    exif
}

#[test]
fn png_exif_orientation_is_applied() {
    use image::ImageEncoder;
    let stored = ImageBuffer::from_fn(40, 20, |x, _| Rgba([if x < 20 { 255 } else { 0 }, 0, 0, 255]));
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut bytes);
    encoder.set_exif_metadata(exif_with_orientation(6)).unwrap();
    encoder.write_image(&stored, 40, 20, image::ExtendedColorType::Rgba8).unwrap();
    let upright = decode_image(&bytes).unwrap();
    // Orientation 6: turned 90° clockwise to display, so the stored left half is now on top.
    assert_eq!(upright.dimensions(), (20, 40));
    assert_eq!(upright.get_pixel(10, 5).0, [255, 0, 0]);
    assert_eq!(upright.get_pixel(10, 35).0, [0, 0, 0]);
}

/// A PNG whose header claims `width x height` but carries no pixel data.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32fast::hash(&ihdr).to_be_bytes());
    png
}

#[test]
fn bad_inputs_give_errors_not_panics() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("text renamed .jpg", b"Dear diary, today I took a photo.\n".repeat(20)),
        ("truncated JPEG", fixture_bytes("rocket.jpg")[..600].to_vec()),
        ("JPEG cut at a third", {
            let b = fixture_bytes("chelsea.jpg");
            b[..b.len() / 3].to_vec()
        }),
        ("JPEG with EXIF cut at two thirds", {
            let b = fixture_bytes("exif_orientation6.jpg");
            b[..b.len() * 2 / 3].to_vec()
        }),
        ("JPEG missing its last bytes", {
            let b = fixture_bytes("coffee.jpg");
            b[..b.len() - 2].to_vec()
        }),
        ("PNG cut in half", {
            let b = encode(DynamicImage::new_rgb8(300, 200), ImageFormat::Png);
            b[..b.len() / 2].to_vec()
        }),
        ("interlaced 16-bit PNG cut short", {
            let b = fixture_bytes("interlaced_rgba16.png");
            b[..b.len() * 3 / 4].to_vec()
        }),
        ("PNG with a corrupted pixel chunk", {
            let mut b = fixture_bytes("interlaced_palette_transparent.png");
            let n = b.len();
            b[n - 40] ^= 0xFF;
            b
        }),
        ("JPEG header only", fixture_bytes("rocket.jpg")[..4].to_vec()),
        ("PNG claiming 100000x100000", png_claiming(100_000, 100_000)),
        ("PNG claiming 30001x2", png_claiming(30_001, 2)),
        ("1x1 PNG", encode(DynamicImage::new_rgb8(1, 1), ImageFormat::Png)),
        ("5000x1 PNG", encode(DynamicImage::new_rgb8(5000, 1), ImageFormat::Png)),
    ];
    for (name, bytes) in cases {
        match decode_image(&bytes) {
            Ok(image) => panic!("{name}: decoded as {:?}", image.dimensions()),
            Err(error) => println!("{name}: {error}"),
        }
    }
    assert!(matches!(decode_image(&png_claiming(100_000, 100_000)), Err(LoupeError::ImageTooLarge(_))));
    assert!(matches!(decode_image(&encode(DynamicImage::new_rgb8(1, 1), ImageFormat::Png)), Err(LoupeError::ImageTooSmall { .. })));
    assert!(decode_image(b"").unwrap_err().to_string().contains("empty"));
}

#[test]
fn large_photo_resizes_whole_image_to_224() {
    let photo = decode_image(&fixture_bytes("rocket.jpg")).unwrap();
    let resized = resize_to_input(&photo);
    assert_eq!(resized.dimensions(), (224, 224));
    // The whole frame is kept (no crop): the mean colour barely moves.
    let mean = |img: &image::RgbImage| {
        let n = img.pixels().len() as f64;
        (0..3).map(|c| img.pixels().map(|p| p[c] as f64).sum::<f64>() / n).collect::<Vec<_>>()
    };
    for (a, b) in mean(&photo).iter().zip(mean(&resized)) {
        assert!((a - b).abs() < 2.0, "mean colour moved from {a} to {b}");
    }
}

#[test]
fn normalisation_follows_the_declared_convention() {
    let image = image::RgbImage::from_pixel(1, 1, Rgb([200, 100, 50]));
    let caffe = normalise_chw(&image, InputConvention::CaffeBgr);
    let expected = [50.0 - 103.939, 100.0 - 116.779, 200.0 - 123.68];
    for (a, b) in caffe.iter().zip(expected) {
        assert!((a - b).abs() < 1e-4);
    }
    let torch = normalise_chw(&image, InputConvention::TorchvisionRgb);
    let expected = [(200.0 / 255.0 - 0.485) / 0.229, (100.0 / 255.0 - 0.456) / 0.224, (50.0 / 255.0 - 0.406) / 0.225];
    for (a, b) in torch.iter().zip(expected) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn a_region_goes_to_the_input_exactly_as_its_copy_would() {
    let photo = decode_image(&fixture_bytes("rocket.jpg")).unwrap();
    for (x, y, width, height) in [(13, 7, 401, 300), (0, 0, 640, 427), (100, 50, 224, 224), (600, 400, 40, 27)] {
        let copy = image::imageops::crop_imm(&photo, x, y, width, height).to_image();
        assert_eq!(region_to_input(&photo, x, y, width, height), resize_to_input(&copy), "{x},{y} {width}x{height}");
    }
}
