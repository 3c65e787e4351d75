//! The frozen backbone's features, computed once per image and kept on disk across runs
//! (`--feature-cache`): frozen-backbone training and evaluation then run only the heads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use loupe::model::heads::StatisticsLayers;
use loupe::model::vgg16::FEATURE_MAP_SIZE;
use loupe::model::{AestheticNet, BackboneFeatures, StatisticsRegion, values};
use loupe::preprocess::{InputConvention, input_batch};
use loupe::weights;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::data::ImageFolder;
use crate::labels::ImageLabel;

/// The cache files' `format` metadata, and the version of their layout this code reads.
const FORMAT: &str = "loupe-feature-cache";
const FORMAT_VERSION: &str = "1";

/// Identifies a backbone by its weights and input convention: two models with this key compute
/// the same features.
pub fn backbone_key(net: &AestheticNet, input: InputConvention) -> String {
    let id = weights::backbone_id(net).unwrap_or_else(|_| "vgg16-unknown".into());
    format!("{id}-{input:?}").to_lowercase()
}

/// Backbone features of every training image, computed once (frozen-backbone training): the 7x7
/// map and, for heads that read them, the block statistics — one file each, so a cache of maps
/// made for one head serves the others.
pub struct FeatureCache {
    map: CachedRows,
    statistics: Option<CachedRows>,
}

/// One feature per image id, all of one shape.
#[derive(Default)]
struct CachedRows {
    rows: BTreeMap<u64, Vec<f32>>,
    shape: [usize; 3],
}

impl CachedRows {
    /// The rows in `path`, or none when it is missing, unreadable or of another shape than
    /// `expected` (then they are recomputed).
    fn read_or_empty(path: Option<&Path>, expected: [usize; 3]) -> Self {
        match path {
            Some(path) if path.exists() => Self::read(path, expected).unwrap_or_else(|e| {
                eprintln!("feature cache {} unreadable ({e}); recomputing", path.display());
                Self::default()
            }),
            _ => Self::default(),
        }
    }

    /// A safetensors file: `ids` (u64, `[n]`) and `rows` (f32, `[n, c, h, w]`), with the format's
    /// name and version in its metadata. Written beside the target, then renamed over it.
    fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let ids: Vec<u8> = self.rows.keys().flat_map(|id| id.to_le_bytes()).collect();
        let rows: Vec<u8> = self.rows.values().flatten().flat_map(|v| v.to_le_bytes()).collect();
        let n = self.rows.len();
        let [c, h, w] = self.shape;
        let tensors = [("ids", TensorView::new(Dtype::U64, vec![n], &ids)?), ("rows", TensorView::new(Dtype::F32, vec![n, c, h, w], &rows)?)];
        let metadata = HashMap::from([("format".to_string(), FORMAT.to_string()), ("version".to_string(), FORMAT_VERSION.to_string())]);
        let temporary = path.with_extension("tmp");
        safetensors::serialize_to_file(tensors, Some(metadata), &temporary)?;
        std::fs::rename(&temporary, path)?;
        Ok(())
    }

    fn read(path: &Path, expected: [usize; 3]) -> Result<Self> {
        let bytes = std::fs::read(path)?;
        let (_, header) = SafeTensors::read_metadata(&bytes)?;
        let metadata = header.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some(FORMAT) {
            bail!("not a Loupe feature cache");
        }
        if metadata.get("version").map(String::as_str) != Some(FORMAT_VERSION) {
            bail!("feature cache version {:?}, this build reads {FORMAT_VERSION}", metadata.get("version"));
        }
        let file = SafeTensors::deserialize(&bytes)?;
        let (ids, rows) = (file.tensor("ids")?, file.tensor("rows")?);
        let &[n, c, h, w] = rows.shape() else { bail!("rows of shape {:?}", rows.shape()) };
        if ids.dtype() != Dtype::U64 || rows.dtype() != Dtype::F32 || ids.shape() != [n] {
            bail!("ids {:?} {:?} and rows {:?} {:?} do not match", ids.dtype(), ids.shape(), rows.dtype(), rows.shape());
        }
        // Rows the backbone would not compute (another width, a damaged file) would reach the
        // head as a wrong-shaped batch; a shape check here also bounds `c * h * w`.
        if [c, h, w] != expected {
            bail!("rows of shape {:?}, but this backbone computes {expected:?}", [c, h, w]);
        }
        let ids = ids.data().chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        // Row by row from the file's bytes: no second copy of the whole cache.
        let row = |bytes: &[u8]| bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        let rows = ids.zip(rows.data().chunks_exact(4 * c * h * w).map(row)).collect();
        Ok(Self { rows, shape: [c, h, w] })
    }

    fn insert(&mut self, ids: &[u64], values: Vec<f32>, shape: [usize; 3]) {
        self.shape = shape;
        for (id, row) in ids.iter().zip(values.chunks_exact(shape.iter().product())) {
            self.rows.insert(*id, row.to_vec());
        }
    }

    /// Every caller passes only ids it has checked with [`FeatureCache::contains`].
    fn batch(&self, labels: &[&ImageLabel]) -> Vec<f32> {
        labels.iter().flat_map(|l| self.rows[&l.id].iter().copied()).collect()
    }
}

impl FeatureCache {
    /// The cache file of `net`'s backbone in `dir`.
    pub fn file_in(dir: &Path, net: &AestheticNet, input: InputConvention) -> PathBuf {
        dir.join(format!("{}.safetensors", backbone_key(net, input)))
    }

    /// Features from `cache_file` (the maps; the statistics over `statistics` beside it,
    /// `…-statistics.safetensors`, or `…-statistics-<region>.safetensors` for a region other
    /// than the whole map) when it holds every image, else computed (and the files written).
    #[allow(clippy::too_many_arguments)]
    pub fn load_or_compute(
        net: &AestheticNet,
        statistics: Option<StatisticsRegion>,
        labels: &[&ImageLabel],
        images: &ImageFolder,
        input: InputConvention,
        batch: usize,
        device: &Device,
        cache_file: Option<&Path>,
    ) -> Result<Self> {
        let statistics_file = cache_file.map(|path| {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let region = match statistics.unwrap_or_default() {
                StatisticsRegion::Whole => String::new(),
                region => format!("-{}", region.name()),
            };
            path.with_file_name(format!("{stem}-statistics{region}.safetensors"))
        });
        let map_shape = [net.backbone.out_channels(), FEATURE_MAP_SIZE, FEATURE_MAP_SIZE];
        let statistics_shape = [net.backbone.statistics_width(), 1, 1];
        let mut cached = Self {
            map: CachedRows::read_or_empty(cache_file, map_shape),
            statistics: statistics.map(|_| CachedRows::read_or_empty(statistics_file.as_deref(), statistics_shape)),
        };
        let missing: Vec<&ImageLabel> = labels.iter().copied().filter(|l| !cached.contains(l.id)).collect();
        if missing.is_empty() {
            eprintln!("backbone features: all {} from the cache", labels.len());
            return Ok(cached);
        }
        let mut backbone = net.backbone.valid().to_device(device);
        backbone.prepare_for(device);
        images.for_each_batch(&missing, batch, "backbone features", |loaded, inputs| {
            let ids: Vec<u64> = loaded.iter().map(|l| l.id).collect();
            let features = backbone.forward_features(input_batch(&inputs, input, device), statistics);
            let [_, c, h, w] = features.map.dims();
            cached.map.insert(&ids, values(features.map)?, [c, h, w]);
            if let (Some(rows), Some(statistics)) = (cached.statistics.as_mut(), features.block_statistics) {
                let width = statistics.dims()[1];
                rows.insert(&ids, values(statistics)?, [width, 1, 1]);
            }
            Ok(())
        })?;
        if let Some(path) = cache_file {
            cached.map.write(path)?;
        }
        if let (Some(rows), Some(path)) = (&cached.statistics, &statistics_file) {
            rows.write(path)?;
        }
        Ok(cached)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.map.rows.contains_key(&id) && self.statistics.as_ref().is_none_or(|s| s.rows.contains_key(&id))
    }

    /// The cached features of `labels`, as the head reads them.
    pub fn batch(&self, labels: &[&ImageLabel], device: &Device) -> BackboneFeatures {
        let [c, h, w] = self.map.shape;
        let map = Tensor::from_data(TensorData::new(self.map.batch(labels), [labels.len(), c, h, w]), device);
        let block_statistics =
            self.statistics.as_ref().map(|rows| Tensor::from_data(TensorData::new(rows.batch(labels), [labels.len(), rows.shape[0]]), device));
        BackboneFeatures { map, block_statistics }
    }

    /// Per-input mean and standard deviation of the statistics head's transformed inputs over
    /// `labels` (its standardisation).
    pub fn input_moments(&self, labels: &[&ImageLabel], device: &Device) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut sum: Vec<f64> = Vec::new();
        let mut sum_of_squares: Vec<f64> = Vec::new();
        for chunk in labels.chunks(256) {
            let values = values(StatisticsLayers::transformed_inputs(self.batch(chunk, device)))?;
            let width = values.len() / chunk.len();
            sum.resize(width, 0.0);
            sum_of_squares.resize(width, 0.0);
            for row in values.chunks_exact(width) {
                for (i, &v) in row.iter().enumerate() {
                    sum[i] += f64::from(v);
                    sum_of_squares[i] += f64::from(v) * f64::from(v);
                }
            }
        }
        let n = labels.len().max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std = sum.iter().zip(&sum_of_squares).map(|(s, q)| ((q / n - (s / n).powi(2)).max(0.0)).sqrt() as f32).collect();
        Ok((mean, std))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_cache_of_another_shape_is_recomputed_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.safetensors");
        let rows = CachedRows { rows: BTreeMap::from([(7, vec![0.5; 8 * 7 * 7])]), shape: [8, 7, 7] };
        rows.write(&path).unwrap();
        assert_eq!(CachedRows::read_or_empty(Some(&path), [8, 7, 7]).rows.len(), 1);
        // Made for a backbone of another width: recomputed.
        assert!(CachedRows::read_or_empty(Some(&path), [16, 7, 7]).rows.is_empty());
        // No rows, but a row size whose product overflows (safetensors accepts it: 0 elements).
        let huge = TensorView::new(Dtype::F32, vec![0, 1 << 62, 1, 1], &[]).unwrap();
        let ids = TensorView::new(Dtype::U64, vec![0], &[]).unwrap();
        let metadata = HashMap::from([("format".to_string(), FORMAT.to_string()), ("version".to_string(), FORMAT_VERSION.to_string())]);
        safetensors::serialize_to_file([("ids", ids), ("rows", huge)], Some(metadata), &path).unwrap();
        let refused = CachedRows::read(&path, [8, 7, 7]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("this backbone computes"), "{refused}");
        assert!(CachedRows::read_or_empty(Some(&path), [8, 7, 7]).rows.is_empty());
    }
}
