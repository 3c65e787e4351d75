//! A crop request as JSON (what the widget, loupeCrop() options and the wasm API deserialise) for
//! a photo of any size: the candidate list must come back bounded or as an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loupe::crop::{CropRequest, CropShape, MAX_CANDIDATES, candidates};

fuzz_target!(|data: &[u8]| {
    let Some((size, json)) = data.split_at_checked(8) else { return };
    let width = u32::from_le_bytes(size[..4].try_into().unwrap()) % 200_000;
    let height = u32::from_le_bytes(size[4..].try_into().unwrap()) % 200_000;
    if let Ok(text) = std::str::from_utf8(json) {
        let _ = text.parse::<CropShape>();
    }
    let Ok(request) = serde_json::from_slice::<CropRequest>(json) else { return };
    if let Ok(rects) = candidates(width, height, &request) {
        assert!(rects.len() <= MAX_CANDIDATES);
        for r in rects {
            assert!(
                u64::from(r.x) + u64::from(r.width) <= u64::from(width) && u64::from(r.y) + u64::from(r.height) <= u64::from(height),
                "{r:?} outside {width}x{height}"
            );
        }
    }
});
