//! Any bytes as a photo: decoding (with its size limits and EXIF rotation) and the model's input
//! preparation must return an image or an error, never panic or run away with memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loupe::preprocess::{InputConvention, decode_image, normalise_chw, resize_to_input};

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = decode_image(data) {
        let input = resize_to_input(&image);
        assert_eq!(normalise_chw(&input, InputConvention::CaffeBgr).len(), 3 * input.width() as usize * input.height() as usize);
    }
});
