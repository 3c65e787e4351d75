//! Any bytes as a weight file. A mutation of a real file's metadata or payload would almost always
//! stop at the checksum, so each input is also tried with its payload length and CRC refreshed:
//! the metadata parser and the burnpack loader behind the checksum get fuzzed too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loupe::burn::tensor::Device;
use loupe::weights::{MAGIC, SharedBackbone, checksum, decode, decode_backbone, decode_head, read_header};

/// Magic (8), version (4), metadata length (4), metadata, payload length (8), CRC (4), payload.
fn with_fresh_checksum(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 16 || &data[..8] != MAGIC {
        return None;
    }
    let metadata_end = 16usize.checked_add(u32::from_le_bytes(data[12..16].try_into().ok()?) as usize)?;
    let payload_start = metadata_end.checked_add(12)?;
    if data.len() < payload_start {
        return None;
    }
    let mut file = data.to_vec();
    let version = u32::from_le_bytes(data[8..12].try_into().ok()?);
    let payload_len = (file.len() - payload_start) as u64;
    let crc = checksum(version, &file[16..metadata_end], &file[payload_start..]);
    file[metadata_end..metadata_end + 8].copy_from_slice(&payload_len.to_le_bytes());
    file[metadata_end + 8..payload_start].copy_from_slice(&crc.to_le_bytes());
    Some(file)
}

/// A real tiny backbone for head files to attach to (LOUPE_FUZZ_BACKBONE, from scripts/fuzz.sh).
fn backbone() -> Option<&'static SharedBackbone> {
    static BACKBONE: OnceLock<Option<SharedBackbone>> = OnceLock::new();
    BACKBONE
        .get_or_init(|| {
            let bytes = std::fs::read(std::env::var_os("LOUPE_FUZZ_BACKBONE")?).ok()?;
            decode_backbone(&bytes, &Device::flex()).ok()
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let device = Device::flex();
    let refreshed = with_fresh_checksum(data);
    for file in [Some(data), refreshed.as_deref()].into_iter().flatten() {
        if read_header(file).is_err() {
            continue;
        }
        let _ = decode(file, &device);
        let _ = decode_backbone(file, &device);
        if let Some(backbone) = backbone() {
            let _ = decode_head(file, backbone, &device);
        }
    }
});
