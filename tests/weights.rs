//! Weight files: f32 → f16 round trip keeps outputs, and every broken file gives its own error.

mod common;

use common::*;
use loupe::burn::tensor::{Distribution, Tensor};
use loupe::model::{AestheticNet, HeadKind, ModelConfig, OutputKind, StatisticsRegion};
use loupe::preprocess::InputConvention;
use loupe::weights::{self, FORMAT_VERSION, MAGIC, Part, Precision, WeightMetadata};

fn tiny(output: OutputKind, head: HeadKind) -> ModelConfig {
    ModelConfig::new(output, head).with_width_divisor(8)
}

fn metadata(config: ModelConfig, precision: Precision) -> WeightMetadata {
    let mut metadata = WeightMetadata::new(config, InputConvention::CaffeBgr);
    metadata.precision = precision;
    metadata.provenance = "test".into();
    metadata
}

/// Rebuild a file around `payload` with edited metadata (valid framing and checksum).
fn reframe(metadata: &WeightMetadata, payload: &[u8]) -> Vec<u8> {
    reframe_as(FORMAT_VERSION, metadata, payload)
}

/// The same in an older format: before 3 the checksum covers the payload only.
fn reframe_as(version: u32, metadata: &WeightMetadata, payload: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(metadata).unwrap();
    let mut out = MAGIC.to_vec();
    out.extend(version.to_le_bytes());
    out.extend((json.len() as u32).to_le_bytes());
    out.extend(&json);
    out.extend((payload.len() as u64).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    if version >= 3 {
        crc.update(&json);
    }
    crc.update(payload);
    out.extend(crc.finalize().to_le_bytes());
    out.extend(payload);
    out
}

/// A freshly initialised tiny model of `config`, written as a whole-model file.
fn tiny_file(config: ModelConfig, precision: Precision) -> Vec<u8> {
    let net = config.init(&flex()).unwrap();
    weights::encode(&net, &metadata(config, precision)).unwrap()
}

#[test]
fn f16_round_trip_keeps_outputs() {
    let device = flex();
    let input = Tensor::<4>::random([2, 3, 224, 224], Distribution::Normal(0.0, 50.0), &device);
    for (output, head) in [
        (OutputKind::Regression, HeadKind::Compact),
        (OutputKind::Histogram, HeadKind::Compact),
        (OutputKind::Regression, HeadKind::Paper),
        (OutputKind::Histogram, HeadKind::Statistics),
    ] {
        let config = tiny(output, head);
        let net = config.init(&device).unwrap();
        let expected = to_vec(net.forward(input.clone()));
        for precision in [Precision::F32, Precision::F16] {
            let bytes = weights::encode(&net, &metadata(config, precision)).unwrap();
            let (loaded, meta) = weights::decode(&bytes, &device).unwrap();
            assert_eq!(meta.model, config);
            assert_eq!(meta.precision, precision);
            // Decoding is faithful: the loaded model encodes back to the very same bytes.
            assert!(weights::encode(&loaded, &meta).unwrap() == bytes, "{output:?} {head:?} {precision:?}: re-encoding differs");
            let actual = to_vec(loaded.forward(input.clone()));
            // A regression output is a score: measured in score points where the untrained net's
            // output is near 0 (relative to a near-0 output, f16 rounding looks arbitrarily large).
            let error = match output {
                OutputKind::Regression => relative_error_with_floor(&actual, &expected, 1.0),
                OutputKind::Histogram => relative_error(&actual, &expected),
            };
            println!("{output:?} {head:?} {precision:?}: relative error {error:.2e}");
            let limit = if precision == Precision::F32 { 1e-6 } else { 1e-2 };
            assert!(error < limit, "{output:?} {head:?} {precision:?}: {error}");
        }
    }
}

#[test]
fn f16_files_are_half_the_size() {
    let device = flex();
    let config = tiny(OutputKind::Regression, HeadKind::Compact);
    let net = config.init(&device).unwrap();
    let f32_len = weights::encode(&net, &metadata(config, Precision::F32)).unwrap().len();
    let f16_len = weights::encode(&net, &metadata(config, Precision::F16)).unwrap().len();
    assert!((f16_len as f64) < 0.6 * f32_len as f64, "f16 {f16_len} vs f32 {f32_len}");
}

fn error_of(bytes: &[u8]) -> String {
    match weights::decode(bytes, &flex()) {
        Ok(_) => panic!("a broken file loaded"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn broken_files_give_clear_errors() {
    let good = tiny_file(tiny(OutputKind::Histogram, HeadKind::Compact), Precision::F16);
    let (meta, payload) = weights::read_header(&good).unwrap();
    let payload = payload.to_vec();

    assert!(error_of(&[]).contains("too short"));
    assert!(error_of(b"PK\x03\x04 this is a zip file, not weights").contains("wrong magic"));

    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert!(error_of(&newer).contains("upgrade Loupe"));

    for cut in [20, good.len() / 2, good.len() - 1] {
        let message = error_of(&good[..cut]);
        assert!(message.contains("truncated"), "cut at {cut}: {message}");
    }

    let mut corrupt = good.clone();
    let middle = good.len() - payload.len() / 2;
    corrupt[middle] ^= 0x55;
    assert!(error_of(&corrupt).contains("checksum"));

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk");
    assert!(error_of(&trailing).contains("unexpected bytes"));

    // Format 2 checked the payload only: there, broken metadata is caught by its parser.
    let mut bad_json = reframe_as(2, &meta, &payload);
    bad_json[16] = b'#';
    assert!(error_of(&bad_json).contains("unreadable metadata"));

    // Valid framing, but the tensors are those of another architecture.
    let mut other_width = meta.clone();
    other_width.model.width_divisor = 4;
    assert!(error_of(&reframe(&other_width, &payload)).contains("do not fit"));
    let mut other_head = meta.clone();
    other_head.model.head = HeadKind::Paper;
    assert!(error_of(&reframe(&other_head, &payload)).contains("do not fit"));
    let mut other_output = meta.clone();
    other_output.model.output = OutputKind::Regression;
    assert!(error_of(&reframe(&other_output, &payload)).contains("do not fit"));
    let mut absurd = meta;
    absurd.model.width_divisor = 0;
    assert!(error_of(&reframe(&absurd, &payload)).contains("width divisor"));
}

fn part_file(net: &AestheticNet, config: ModelConfig, part: Part) -> Vec<u8> {
    let mut m = metadata(config, Precision::F32);
    m.part = part;
    weights::encode(net, &m).unwrap()
}

/// A regression and a histogram model on one backbone (as frozen-backbone training makes them),
/// and their files as `loupe bundle` writes them.
struct Bundle {
    reg_net: AestheticNet,
    hist_net: AestheticNet,
    backbone: Vec<u8>,
    reg_head: Vec<u8>,
    hist_head: Vec<u8>,
}

fn bundle(regression: ModelConfig, histogram: ModelConfig, device: &loupe::burn::tensor::Device) -> Bundle {
    let reg_net = regression.init(device).unwrap();
    let mut hist_net = histogram.init(device).unwrap();
    hist_net.backbone = reg_net.backbone.clone();
    Bundle {
        backbone: part_file(&reg_net, regression, Part::Backbone),
        reg_head: part_file(&reg_net, regression, Part::Head),
        hist_head: part_file(&hist_net, histogram, Part::Head),
        reg_net,
        hist_net,
    }
}

#[test]
fn backbone_and_head_files_rebuild_the_model() {
    use loupe::Scorer;
    let device = flex();
    let regression = tiny(OutputKind::Regression, HeadKind::Compact);
    let histogram = tiny(OutputKind::Histogram, HeadKind::Compact);
    let Bundle { mut reg_net, mut hist_net, backbone, reg_head, hist_head } = bundle(regression, histogram, &device);
    let full = weights::encode(&reg_net, &metadata(regression, Precision::F32)).unwrap();
    assert!(reg_head.len() * 10 < full.len(), "a head file should be a small part of the model");

    let scorers = Scorer::from_weight_files(&[&hist_head, &backbone, &reg_head], &device).unwrap();
    assert_eq!(scorers.len(), 2);
    let input = Tensor::<4>::random([1, 3, 224, 224], Distribution::Normal(0.0, 50.0), &device);
    let by_kind = |kind| scorers.iter().find(|s| s.output() == kind).unwrap();
    // Loaded scorers run the CPU path; so do these originals once prepared: same kernels, so any
    // difference is in the weights the files carried.
    reg_net.backbone.prepare_for(&device);
    hist_net.backbone.prepare_for(&device);
    let expected = to_vec(reg_net.forward(input.clone()));
    assert!(relative_error(&to_vec(by_kind(OutputKind::Regression).forward(input.clone())), &expected) < 1e-6);
    let expected = to_vec(hist_net.forward(input.clone()));
    assert!(relative_error(&to_vec(by_kind(OutputKind::Histogram).forward(input)), &expected) < 1e-6);

    // A head without its backbone, a head with another backbone, a part where a model is expected.
    assert!(Scorer::from_weight_files(&[&reg_head], &device).unwrap_err().to_string().contains("backbone file"));
    let other = part_file(&histogram.init(&device).unwrap(), histogram, Part::Backbone);
    assert!(Scorer::from_weight_files(&[&other, &reg_head], &device).unwrap_err().to_string().contains("needs backbone"));
    assert!(error_of(&reg_head).contains("only a Head"));
    assert!(Scorer::from_weight_files(&[&backbone], &device).is_err());
}

#[test]
fn the_backbone_id_depends_on_the_weights_only() {
    // Two loads of one file are two sets of parameters (new ids in burn): same weights, same id.
    // This is what lets heads trained in separate runs share one shipped backbone.
    let device = flex();
    let config = tiny(OutputKind::Regression, HeadKind::Compact);
    let net = config.init(&device).unwrap();
    let file = weights::encode(&net, &metadata(config, Precision::F16)).unwrap();
    let (first, _) = weights::decode(&file, &device).unwrap();
    let (second, _) = weights::decode(&file, &device).unwrap();
    assert_eq!(weights::backbone_id(&first).unwrap(), weights::backbone_id(&second).unwrap());
    // And the same files, byte for byte (regenerated weights do not churn the repository).
    let (a, b) =
        (weights::encode(&first, &metadata(config, Precision::F16)).unwrap(), weights::encode(&second, &metadata(config, Precision::F16)).unwrap());
    assert!(a == b && a == file, "re-encoding the same weights changed the bytes");
    // A histogram model given the same backbone weights has the same id; other weights, another.
    let histogram = tiny(OutputKind::Histogram, HeadKind::Compact);
    let mut other_model = histogram.init(&device).unwrap();
    assert_ne!(weights::backbone_id(&other_model).unwrap(), weights::backbone_id(&first).unwrap());
    let reloaded = weights::encode(&first, &metadata(config, Precision::F16)).unwrap();
    other_model.backbone = weights::decode(&reloaded, &device).unwrap().0.backbone;
    assert_eq!(weights::backbone_id(&other_model).unwrap(), weights::backbone_id(&first).unwrap());
}

/// Heads bundled with one backbone file are scored from one backbone pass, with exactly the
/// predictions each model gives alone; a whole-model file keeps its own backbone.
#[test]
fn heads_sharing_a_backbone_are_fed_by_one_pass() {
    use loupe::Scorer;
    let device = flex();
    let regression = tiny(OutputKind::Regression, HeadKind::Compact);
    // A head that reads block statistics too: the shared pass must compute them for it.
    let histogram = tiny(OutputKind::Histogram, HeadKind::Statistics);
    let Bundle { hist_net, backbone, reg_head, hist_head, .. } = bundle(regression, histogram, &device);
    let full = weights::encode(&hist_net, &metadata(histogram, Precision::F32)).unwrap();
    let mut scorers = Scorer::from_weight_files(&[&backbone, &reg_head, &hist_head], &device).unwrap();
    scorers.extend(Scorer::from_weight_files(&[&full], &device).unwrap());
    assert!(scorers[0].shares_backbone_with(&scorers[1]));
    assert!(!scorers[0].shares_backbone_with(&scorers[2]) && !scorers[2].shares_backbone_with(&scorers[1]));

    let images: Vec<_> =
        ["rocket.jpg", "coffee.jpg", "chelsea.jpg"].iter().map(|name| loupe::preprocess::decode_image(&fixture_bytes(name)).unwrap()).collect();
    let together = Scorer::predict_all(&scorers, &images).unwrap();
    assert_eq!(together.len(), 3);
    for (scorer, predictions) in scorers.iter().zip(&together) {
        assert_eq!(predictions, &scorer.predict(&images).unwrap(), "{:?}", scorer.output());
    }
    // The whole-model file holds the same histogram model: same predictions, its own pass.
    for (shared, own) in together[1].iter().zip(&together[2]) {
        assert!((shared.score - own.score).abs() < 1e-5);
    }
}

/// A head's statistics region travels in its file (absent = the whole map, as files from before
/// the setting), and heads reading statistics over different regions on one loaded backbone each
/// get their own: together exactly as alone.
#[test]
fn heads_keep_their_statistics_region_and_get_statistics_over_it() {
    use loupe::Scorer;
    let device = flex();
    let whole = tiny(OutputKind::Regression, HeadKind::Quadratic);
    let interior = tiny(OutputKind::Histogram, HeadKind::Statistics).with_statistics(StatisticsRegion::DeepInterior);
    // Only heads that read statistics carry the setting.
    assert_eq!(tiny(OutputKind::Regression, HeadKind::Compact).with_statistics(StatisticsRegion::DeepInterior).statistics, StatisticsRegion::Whole);
    let json = |config: ModelConfig| serde_json::to_string(&config).unwrap();
    assert!(!json(whole).contains("statistics"), "{}", json(whole));
    assert!(json(interior).contains(r#""statistics":"deep-interior""#), "{}", json(interior));
    let old_file: ModelConfig = serde_json::from_str(r#"{"output":"histogram","head":"statistics","width_divisor":8}"#).unwrap();
    assert_eq!(old_file.statistics, StatisticsRegion::Whole);

    let Bundle { backbone, reg_head, hist_head, .. } = bundle(whole, interior, &device);
    let scorers = Scorer::from_weight_files(&[&backbone, &reg_head, &hist_head], &device).unwrap();
    let regions: Vec<_> = scorers.iter().map(|s| (s.metadata.model.statistics, s.net.head.layers().statistics_region())).collect();
    assert_eq!(
        regions,
        [(StatisticsRegion::Whole, Some(StatisticsRegion::Whole)), (StatisticsRegion::DeepInterior, Some(StatisticsRegion::DeepInterior))]
    );
    let images: Vec<_> = ["rocket.jpg", "coffee.jpg"].iter().map(|name| loupe::preprocess::decode_image(&fixture_bytes(name)).unwrap()).collect();
    let together = Scorer::predict_all(&scorers, &images).unwrap();
    for (scorer, predictions) in scorers.iter().zip(&together) {
        assert_eq!(predictions, &scorer.predict(&images).unwrap(), "{:?}", scorer.output());
    }
}

#[test]
fn nan_and_infinite_weights_are_refused_at_load() {
    for precision in [Precision::F32, Precision::F16] {
        let good = tiny_file(tiny(OutputKind::Regression, HeadKind::Compact), precision);
        let (meta, payload) = weights::read_header(&good).unwrap();
        assert!(weights::decode(&good, &flex()).is_ok());
        // 0xFF bytes are NaN both as f32 and as f16: the last tensor's values, CRC recomputed.
        let mut poisoned = payload.to_vec();
        let end = poisoned.len();
        poisoned[end - 64..].fill(0xff);
        let message = error_of(&reframe(&meta, &poisoned));
        assert!(message.contains("NaN or infinite"), "{precision:?}: {message}");
    }
}

#[test]
fn a_precision_that_does_not_match_the_tensors_is_refused() {
    let half = tiny_file(tiny(OutputKind::Regression, HeadKind::Compact), Precision::F16);
    let (mut meta, payload) = weights::read_header(&half).unwrap();
    meta.precision = Precision::F32;
    let message = error_of(&reframe(&meta, payload));
    assert!(message.contains("declares F32"), "{message}");
}

#[test]
fn a_head_of_another_width_with_a_forged_backbone_id_is_refused_at_load() {
    let device = flex();
    let config = tiny(OutputKind::Regression, HeadKind::Compact);
    let files = bundle(config, tiny(OutputKind::Histogram, HeadKind::Compact), &device);
    let backbone_id = weights::read_header(&files.backbone).unwrap().0.backbone_id;
    let wider = config.with_width_divisor(4);
    let mut forged = metadata(wider, Precision::F32);
    forged.part = Part::Head;
    forged.backbone_id = backbone_id;
    let forged_head = weights::encode(&wider.init(&device).unwrap(), &forged).unwrap();
    let error = loupe::Scorer::from_weight_files(&[&files.backbone, &forged_head], &device).unwrap_err().to_string();
    assert!(error.contains("width /4") && error.contains("width /8"), "{error}");
    assert!(loupe::Scorer::from_weight_files(&[&files.backbone, &files.reg_head], &device).is_ok());
}

#[test]
fn the_checksum_covers_the_metadata() {
    let good = tiny_file(tiny(OutputKind::Regression, HeadKind::Compact), Precision::F16);
    let (meta, payload) = weights::read_header(&good).unwrap();
    // One flipped bit inside the provenance text: still valid JSON, so only a checksum over the
    // metadata can tell.
    let json_start = 16;
    let json = &good[json_start..];
    let at = json_start + json.windows(4).position(|w| w == b"test").unwrap();
    let mut flipped = good.clone();
    flipped[at] ^= 0x01;
    assert!(error_of(&flipped).contains("checksum mismatch"), "{}", error_of(&flipped));
    // Files of format 2 (shipped before format 3) still load.
    let older = reframe_as(2, &meta, payload);
    assert_eq!(weights::read_header(&older).unwrap().0, meta);
    weights::decode(&older, &flex()).unwrap();
}

#[test]
fn models_whose_files_claim_one_backbone_id_at_different_widths_never_share_a_pass() {
    use loupe::Scorer;
    let device = flex();
    // Two whole-model files that both claim one backbone id (a file's metadata is its word), at
    // widths whose feature maps differ: sharing a pass used to feed the wider head the narrower
    // backbone's map, and the first forward panicked.
    let claiming = |config: ModelConfig| {
        let mut meta = metadata(config, Precision::F32);
        meta.backbone_id = Some("vgg16-claimed".into());
        weights::encode(&config.init(&device).unwrap(), &meta).unwrap()
    };
    let narrow = claiming(tiny(OutputKind::Regression, HeadKind::Compact));
    let wide = claiming(tiny(OutputKind::Histogram, HeadKind::Compact).with_width_divisor(4));
    let scorers = Scorer::from_weight_files(&[&narrow, &wide], &device).unwrap();
    assert!(!scorers[0].shares_backbone_with(&scorers[1]));
    let images = vec![loupe::preprocess::decode_image(&fixture_bytes("rocket.jpg")).unwrap()];
    let together = Scorer::predict_all(&scorers, &images).unwrap();
    for (scorer, predictions) in scorers.iter().zip(&together) {
        assert_eq!(predictions, &scorer.predict(&images).unwrap(), "{:?}", scorer.output());
    }
}
