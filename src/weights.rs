//! Loupe's weight files: one self-describing file per model.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"LOUPEWT\n"
//! 8       4     format version, u32 LE (this code reads 1..=FORMAT_VERSION)
//! 12      4     metadata length M, u32 LE
//! 16      M     metadata, UTF-8 JSON (WeightMetadata)
//! 16+M    8     payload length P, u64 LE
//! 24+M    4     CRC-32, u32 LE: of the metadata and the payload (format 3); of the payload only (1, 2)
//! 28+M    P     payload: burnpack of the AestheticNet, tensors in f16 or f32
//! ```
//! Everything is checked before a tensor is touched, so a truncated, corrupt or foreign file is
//! refused with a message instead of loading garbage; the browser loads the same bytes it fetched.
//!
//! A file holds a whole model (`part: full`, format 1), or — so that models sharing one frozen
//! backbone download it once — only the VGG16 backbone (`backbone`) or only a head (`head`,
//! which names the backbone it was trained on by its `backbone_id`); parts are format 2. Format 3
//! (what this code writes) holds any part and its checksum covers the metadata too, so a flipped
//! bit in the provenance or the input convention is caught like one in the weights.

use burn::store::{BurnpackStore, HalfPrecisionAdapter, ModuleAdapter, ModuleContext, ModuleSnapshot};
use burn::tensor::{Bytes, DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::{LoupeError, Result};
use crate::model::{AestheticNet, HeadKind, ModelConfig, OutputKind};
use crate::preprocess::InputConvention;

pub const MAGIC: &[u8; 8] = b"LOUPEWT\n";
/// Newest format this code writes and reads (1: whole models; 2: adds backbone/head parts; 3: the
/// checksum covers the metadata too).
pub const FORMAT_VERSION: u32 = 3;
const MAX_METADATA_BYTES: u32 = 1 << 20;
const HEADER_BYTES: usize = 16;

/// What a file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// Backbone and head: a complete model.
    #[default]
    Full,
    /// The VGG16 backbone alone, shared by head files.
    Backbone,
    /// A head alone; needs the backbone whose id is `backbone_id`.
    Head,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F16,
    F32,
}

/// Everything a user (or the app) should know about a weight file without loading it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightMetadata {
    pub model: ModelConfig,
    pub input: InputConvention,
    pub precision: Precision,
    /// False for a freshly imported ImageNet backbone whose head is still random.
    pub head_trained: bool,
    /// Where the weights came from, in words.
    pub provenance: String,
    /// Licence and attribution that must travel with the weights.
    pub licence: String,
    /// Training data, split sizes, epochs... (free-form, written by the trainer).
    #[serde(default)]
    pub training: serde_json::Value,
    /// Evaluation metrics (free-form, written by the trainer).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// The Loupe version that wrote the file.
    #[serde(default)]
    pub written_by: String,
    #[serde(default)]
    pub part: Part,
    /// Backbone files: their id; head files: the id of the backbone they need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_id: Option<String>,
}

impl WeightMetadata {
    pub fn new(model: ModelConfig, input: InputConvention) -> Self {
        Self {
            model,
            input,
            precision: Precision::F16,
            head_trained: false,
            provenance: String::new(),
            licence: String::new(),
            training: serde_json::Value::Null,
            metrics: serde_json::Value::Null,
            written_by: String::new(),
            part: Part::Full,
            backbone_id: None,
        }
    }

    /// The metadata of a backbone file cut from this model, whose backbone has id `id`: only
    /// what describes the backbone itself, so retraining or swapping the heads beside it leaves
    /// that (large) file byte for byte the same.
    pub fn for_shared_backbone(&self, id: String) -> Self {
        Self {
            part: Part::Backbone,
            // A backbone part has no head: one fixed model description (the heads name theirs),
            // so heads of another kind reuse the same file too.
            model: ModelConfig::new(OutputKind::Regression, HeadKind::Compact).with_width_divisor(self.model.width_divisor),
            backbone_id: Some(id),
            metrics: serde_json::Value::Null,
            training: serde_json::Value::Null,
            head_trained: false,
            provenance: "VGG16 convolutional base (ImageNet), shared by the heads beside it".into(),
            licence: "Oxford Visual Geometry Group (Simonyan & Zisserman), CC BY 4.0".into(),
            ..self.clone()
        }
    }

    /// The metadata of a head file cut from this model, to be joined with backbone `id`.
    pub fn for_head(&self, id: String) -> Self {
        Self { part: Part::Head, backbone_id: Some(id), ..self.clone() }
    }
}

/// `manifest.json` beside a folder of weight files: what the browser app downloads, in load order,
/// with each file's size and sha256 (checked before the bytes reach the model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub models: Vec<ManifestEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// File name, relative to the manifest.
    pub file: String,
    pub kind: FileKind,
    pub part: Part,
    /// The head's kind; none for a backbone file.
    pub head: Option<HeadKind>,
    pub bytes: usize,
    /// Lower-case hex.
    pub sha256: String,
    pub head_trained: bool,
}

/// What a listed file gives the app: the shared backbone, or a model of one output kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Backbone,
    Regression,
    Histogram,
}

impl Manifest {
    pub const FILE_NAME: &'static str = "manifest.json";

    /// Lists weight files, a shared backbone first: the app loads them in this order and heads
    /// need their backbone loaded.
    pub fn new(mut models: Vec<ManifestEntry>) -> Self {
        models.sort_by_key(|m| m.part != Part::Backbone);
        Self { models }
    }
}

impl ManifestEntry {
    /// Describes the weight file `file` (its name in the folder) from its bytes.
    pub fn describe(file: String, bytes: &[u8]) -> Result<Self> {
        use sha2::Digest;
        let (metadata, _) = read_header(bytes)?;
        let is_backbone = metadata.part == Part::Backbone;
        Ok(Self {
            file,
            kind: match (is_backbone, metadata.model.output) {
                (true, _) => FileKind::Backbone,
                (false, OutputKind::Regression) => FileKind::Regression,
                (false, OutputKind::Histogram) => FileKind::Histogram,
            },
            part: metadata.part,
            head: (!is_backbone).then_some(metadata.model.head),
            bytes: bytes.len(),
            sha256: sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect(),
            head_trained: metadata.head_trained,
        })
    }
}

/// Serialise `net` (the part `metadata.part` names) with `metadata`, whose `precision` decides
/// f16 or f32 tensors.
pub fn encode(net: &AestheticNet, metadata: &WeightMetadata) -> Result<Vec<u8>> {
    let mut metadata = metadata.clone();
    metadata.written_by = format!("loupe {}", env!("CARGO_PKG_VERSION"));
    let payload = match metadata.part {
        Part::Full => burnpack(net, metadata.precision)?,
        Part::Backbone => burnpack(&net.backbone, metadata.precision)?,
        Part::Head => burnpack(&net.head, metadata.precision)?,
    };
    if metadata.part != Part::Full && metadata.backbone_id.is_none() {
        metadata.backbone_id = Some(backbone_id(net)?);
    }
    let version = FORMAT_VERSION;
    let payload: &[u8] = &payload;
    let json = serde_json::to_vec(&metadata).map_err(|e| LoupeError::Weights(e.to_string()))?;

    let mut out = Vec::with_capacity(HEADER_BYTES + json.len() + 12 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(version, &json, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// The CRC-32 a file of `version` carries: over the metadata and the payload from format 3 on,
/// over the payload only before.
pub fn checksum(version: u32, metadata: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if version >= 3 {
        hasher.update(metadata);
    }
    hasher.update(payload);
    hasher.finalize()
}

/// Drops burn's parameter ids (fresh per process, so identical weights would give different
/// files) and optionally stores f16: the same weights always make the same bytes.
#[derive(Clone)]
struct Reproducible {
    half: Option<HalfPrecisionAdapter>,
}

impl ModuleAdapter for Reproducible {
    fn adapt(&self, mut tensor: burn::store::burn_pack::Tensor, ctx: ModuleContext<'_>) -> burn::store::burn_pack::Tensor {
        tensor.param_id = None;
        match &self.half {
            Some(half) => half.adapt(tensor, ctx),
            None => tensor,
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

fn burnpack<M: ModuleSnapshot>(module: &M, precision: Precision) -> Result<Vec<u8>> {
    let half = (precision == Precision::F16).then(HalfPrecisionAdapter::new);
    let mut store = BurnpackStore::from_bytes(None).with_to_adapter(Reproducible { half });
    let failed = |e: &dyn std::fmt::Display| LoupeError::Weights(format!("cannot serialise the model: {e}"));
    module.save_into(&mut store).map_err(|e| failed(&e))?;
    let bytes = store.get_bytes().map_err(|e| failed(&e))?;
    Ok(bytes.to_vec())
}

/// A backbone's identity: the CRC-32 of its tensors' names, shapes and f16 values, in name order
/// (what a head file records it needs, and what keys cached features). Not the burnpack bytes:
/// those carry per-process parameter ids, so the same weights would get a new id on every load.
pub fn backbone_id(net: &AestheticNet) -> Result<String> {
    let mut tensors = net.backbone.collect(None, Some(Box::new(HalfPrecisionAdapter::new())), false);
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = crc32fast::Hasher::new();
    for tensor in &tensors {
        hasher.update(tensor.name.as_bytes());
        for dim in tensor.shape.iter() {
            hasher.update(&(*dim as u64).to_le_bytes());
        }
        let bytes = tensor.to_bytes().map_err(|e| LoupeError::Weights(format!("cannot read tensor {}: {e}", tensor.name)))?;
        hasher.update(&bytes);
    }
    Ok(format!("vgg16-{:08x}", hasher.finalize()))
}

/// Check a file's framing and read its metadata; returns the metadata and the payload.
pub fn read_header(bytes: &[u8]) -> Result<(WeightMetadata, &[u8])> {
    let err = |msg: String| LoupeError::Weights(msg);
    if bytes.len() < HEADER_BYTES {
        return Err(err(format!("only {} bytes: too short to be a Loupe weight file", bytes.len())));
    }
    if &bytes[..8] != MAGIC {
        return Err(err("not a Loupe weight file (wrong magic bytes)".into()));
    }
    // The fixed-size fields below are read only after the length checks that guarantee them, so
    // each slice has exactly 4 or 8 bytes and `try_into` cannot fail (the fuzz target holds it).
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version == 0 || version > FORMAT_VERSION {
        return Err(err(format!("format version {version} is not supported by this Loupe (reads 1..={FORMAT_VERSION}); upgrade Loupe")));
    }
    let metadata_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
    if metadata_len > MAX_METADATA_BYTES {
        return Err(err(format!("metadata length {metadata_len} is implausible: corrupt file")));
    }
    let metadata_end = HEADER_BYTES + metadata_len as usize;
    let payload_start = metadata_end + 12;
    if bytes.len() < payload_start {
        return Err(err("truncated inside the metadata".into()));
    }
    let payload_len = u64::from_le_bytes(bytes[metadata_end..metadata_end + 8].try_into().unwrap());
    let crc = u32::from_le_bytes(bytes[metadata_end + 8..payload_start].try_into().unwrap());
    let available = (bytes.len() - payload_start) as u64;
    if payload_len > available {
        return Err(err(format!("truncated: the payload should be {payload_len} bytes but only {available} are present")));
    }
    if payload_len < available {
        return Err(err(format!("{} unexpected bytes after the payload: corrupt file", available - payload_len)));
    }
    let json = &bytes[HEADER_BYTES..metadata_end];
    let payload = &bytes[payload_start..];
    if checksum(version, json, payload) != crc {
        return Err(err("checksum mismatch: the file is corrupt".into()));
    }
    let metadata: WeightMetadata = serde_json::from_slice(json).map_err(|e| err(format!("unreadable metadata: {e}")))?;
    if version == 1 && metadata.part != Part::Full {
        return Err(err(format!("format 1 cannot hold a {:?} part: corrupt file", metadata.part)));
    }
    metadata.model.validate()?;
    Ok((metadata, payload))
}

/// Checks every tensor as it loads: stored in the precision the metadata declares, and finite (a
/// NaN or infinite weight makes every score NaN). Then widens f16 to f32 where the file is f16.
#[derive(Clone)]
struct CheckedLoad {
    precision: Precision,
    half: Option<HalfPrecisionAdapter>,
    /// The first problem found (an adapter cannot fail; `load_payload` reports it).
    problem: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl CheckedLoad {
    fn check(&self, tensor: &burn::store::burn_pack::Tensor) -> Option<String> {
        if !tensor.dtype.is_float() {
            return None;
        }
        // f16 files keep f32 where burn's half adapter leaves a module alone; f32 files are all f32.
        let allowed: &[DType] = match self.precision {
            Precision::F16 => &[DType::F16, DType::F32],
            Precision::F32 => &[DType::F32],
        };
        if !allowed.contains(&tensor.dtype) {
            return Some(format!("tensor {} is {:?} but the file declares {:?}: corrupt file", tensor.name, tensor.dtype, self.precision));
        }
        let bytes = match tensor.to_bytes() {
            Ok(bytes) => bytes,
            Err(e) => return Some(format!("cannot read tensor {}: {e}", tensor.name)),
        };
        // Not finite = all exponent bits set (f16: 5 bits, f32: 8 bits), read straight from the bytes.
        let finite = match tensor.dtype {
            DType::F16 => bytes.chunks_exact(2).all(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 != 0x7c00),
            _ => bytes.chunks_exact(4).all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        };
        (!finite).then(|| format!("tensor {} holds NaN or infinite values: corrupt or diverged weights", tensor.name))
    }
}

impl ModuleAdapter for CheckedLoad {
    fn adapt(&self, tensor: burn::store::burn_pack::Tensor, ctx: ModuleContext<'_>) -> burn::store::burn_pack::Tensor {
        if let Some(problem) = self.check(&tensor) {
            // A poisoned lock only means another check panicked; the slot is still usable.
            let mut slot = self.problem.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert(problem);
        }
        match &self.half {
            Some(half) => half.adapt(tensor, ctx),
            None => tensor,
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

fn load_payload<M: ModuleSnapshot>(module: &mut M, payload: &[u8], metadata: &WeightMetadata) -> Result<()> {
    let checked = CheckedLoad {
        precision: metadata.precision,
        half: (metadata.precision == Precision::F16).then(HalfPrecisionAdapter::new),
        problem: Default::default(),
    };
    let problem = checked.problem.clone();
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(payload.to_vec()))).with_from_adapter(checked);
    module.load_from(&mut store).map_err(|e| {
        LoupeError::Weights(format!(
            "the tensors do not fit the declared model ({:?} part, {:?} head, {:?} output, width /{}): {e}",
            metadata.part, metadata.model.head, metadata.model.output, metadata.model.width_divisor
        ))
    })?;
    match problem.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(problem) => Err(LoupeError::Weights(problem)),
        None => Ok(()),
    }
}

/// Load a whole-model weight file onto `device`.
pub fn decode(bytes: &[u8], device: &Device) -> Result<(AestheticNet, WeightMetadata)> {
    let (metadata, payload) = read_header(bytes)?;
    decode_checked(metadata, payload, device)
}

// The `*_checked` loaders take what `read_header` returned, for callers that read the header first
// to see which part a file holds: the checksum pass over the payload then runs once, not twice.

/// [`decode`] of a file whose header [`read_header`] has checked.
pub fn decode_checked(metadata: WeightMetadata, payload: &[u8], device: &Device) -> Result<(AestheticNet, WeightMetadata)> {
    if metadata.part != Part::Full {
        return Err(LoupeError::Weights(format!(
            "this file holds only a {:?}: load it with its {}",
            metadata.part,
            if metadata.part == Part::Head { "backbone file" } else { "head files" }
        )));
    }
    let mut net = metadata.model.init_for_loading(device)?;
    load_payload(&mut net, payload, &metadata)?;
    Ok((net, metadata))
}

/// A loaded backbone file, ready to be joined with head files.
#[derive(Clone, Debug)]
pub struct SharedBackbone {
    pub backbone: crate::model::Vgg16,
    pub metadata: WeightMetadata,
    /// Which load this is: heads joined to the same load run on the very same weights. A file's
    /// `backbone_id` is only its word (two files may claim one id), so sharing goes by this.
    pub load: u64,
}

/// Load a backbone file onto `device`, prepared for inference there ([`crate::model::Vgg16::prepare_for`])
/// once, so every head joined to it shares the prepared weights.
pub fn decode_backbone(bytes: &[u8], device: &Device) -> Result<SharedBackbone> {
    let (metadata, payload) = read_header(bytes)?;
    decode_backbone_checked(metadata, payload, device)
}

/// [`decode_backbone`] of a file whose header [`read_header`] has checked.
pub fn decode_backbone_checked(metadata: WeightMetadata, payload: &[u8], device: &Device) -> Result<SharedBackbone> {
    if metadata.part != Part::Backbone {
        return Err(LoupeError::Weights(format!("expected a backbone file, found a {:?} file", metadata.part)));
    }
    let mut backbone = metadata.model.init_for_loading(device)?.backbone;
    load_payload(&mut backbone, payload, &metadata)?;
    backbone.prepare_for(device);
    static LOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let load = LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(SharedBackbone { backbone, metadata, load })
}

/// Load a head file and join it with the backbone it was trained on.
pub fn decode_head(bytes: &[u8], backbone: &SharedBackbone, device: &Device) -> Result<(AestheticNet, WeightMetadata)> {
    let (metadata, payload) = read_header(bytes)?;
    decode_head_checked(metadata, payload, backbone, device)
}

/// [`decode_head`] of a file whose header [`read_header`] has checked.
pub fn decode_head_checked(
    metadata: WeightMetadata,
    payload: &[u8],
    backbone: &SharedBackbone,
    device: &Device,
) -> Result<(AestheticNet, WeightMetadata)> {
    if metadata.part != Part::Head {
        return Err(LoupeError::Weights(format!("expected a head file, found a {:?} file", metadata.part)));
    }
    if metadata.backbone_id != backbone.metadata.backbone_id || metadata.input != backbone.metadata.input {
        return Err(LoupeError::Weights(format!(
            "this head needs backbone {:?} but {:?} is loaded",
            metadata.backbone_id, backbone.metadata.backbone_id
        )));
    }
    // The id is the file's word; the width decides whether the head's first layer fits the
    // backbone's output (a mismatch would load, then panic on the first forward pass).
    if metadata.model.width_divisor != backbone.metadata.model.width_divisor {
        return Err(LoupeError::Weights(format!(
            "this head expects a backbone of width /{} but the loaded backbone is width /{}: corrupt or mismatched files",
            metadata.model.width_divisor, backbone.metadata.model.width_divisor
        )));
    }
    let mut net = metadata.model.init_head_for_loading(&backbone.backbone, device)?;
    load_payload(&mut net.head, payload, &metadata)?;
    Ok((net, metadata))
}
