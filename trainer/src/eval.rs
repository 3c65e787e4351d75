//! `loupe-train eval`: the paper's evaluation (Sec. 4.3–4.4) — MSE (Eq. 4), prediction range, MSE per
//! score (Fig. 3), RMSER of the std (Eq. 5) — plus the field's usual SRCC, PLCC and 2-class
//! accuracy at 5, on RS-test and ED-test; reported beside the paper's numbers.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use loupe::Scorer;
use loupe::model::OutputKind;
use loupe::scorer::backbone_passes;
use serde::Serialize;

use crate::args::EvalArgs;
use crate::labels::Labels;
use crate::plots;
use crate::splits::Splits;
use crate::stats::named_sets;

use loupe::correlation::{pearson, spearman};
use loupe::model::{BackboneFeatures, values};

use crate::data::ImageFolder;
use crate::features::{FeatureCache, backbone_key};
use crate::labels::ImageLabel;
use crate::splits::ScoreClass;

/// One image: truth and prediction.
#[derive(Clone, Debug, Serialize)]
pub struct Scored {
    pub id: u64,
    pub true_score: f32,
    pub true_std: f32,
    pub predicted_score: f32,
    pub predicted_std: Option<f32>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Metrics {
    pub images: usize,
    pub mse: f64,
    pub min_prediction: f64,
    pub max_prediction: f64,
    pub srcc: f64,
    pub plcc: f64,
    /// Share of images on the right side of 5 (the usual high/low split).
    pub accuracy_at_5: f64,
    /// Eq. 5, histogram models only.
    pub rmser: Option<f64>,
    /// MSE per half-point score bin (Fig. 3): (bin start, images, MSE).
    pub mse_by_score: Vec<(f32, usize, f64)>,
}

pub fn metrics(scored: &[Scored]) -> Metrics {
    if scored.is_empty() {
        return Metrics::default();
    }
    let truth: Vec<f64> = scored.iter().map(|s| f64::from(s.true_score)).collect();
    let predicted: Vec<f64> = scored.iter().map(|s| f64::from(s.predicted_score)).collect();
    let n = scored.len() as f64;
    let mse = truth.iter().zip(&predicted).map(|(t, p)| (t - p).powi(2)).sum::<f64>() / n;
    let accuracy_at_5 = truth.iter().zip(&predicted).filter(|(t, p)| (**t >= 5.0) == (**p >= 5.0)).count() as f64 / n;
    let rmser = scored.iter().all(|s| s.predicted_std.is_some()).then(|| {
        let squared: f64 = scored.iter().map(|s| (f64::from(s.predicted_std.unwrap_or(f32::NAN)) - f64::from(s.true_std)).powi(2)).sum();
        let mean_true_std: f64 = scored.iter().map(|s| f64::from(s.true_std)).sum::<f64>() / n;
        (squared / n).sqrt() / mean_true_std
    });
    let mut by_bin: BTreeMap<i32, (usize, f64)> = BTreeMap::new();
    for (t, p) in truth.iter().zip(&predicted) {
        let entry = by_bin.entry((t * 2.0).floor() as i32).or_default();
        entry.0 += 1;
        entry.1 += (t - p).powi(2);
    }
    Metrics {
        images: scored.len(),
        mse,
        min_prediction: predicted.iter().copied().fold(f64::INFINITY, f64::min),
        max_prediction: predicted.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        srcc: spearman(&truth, &predicted),
        plcc: pearson(&truth, &predicted),
        accuracy_at_5,
        rmser,
        mse_by_score: by_bin.into_iter().map(|(bin, (count, sum))| (bin as f32 / 2.0, count, sum / count as f64)).collect(),
    }
}

impl Metrics {
    /// One line, as `eval` prints it per model and set.
    pub fn summary(&self) -> String {
        format!(
            "{} images, MSE {:.4}, range {:.2}..{:.2}, SRCC {:.3}, PLCC {:.3}, acc@5 {:.1}%{}",
            self.images,
            self.mse,
            self.min_prediction,
            self.max_prediction,
            self.srcc,
            self.plcc,
            100.0 * self.accuracy_at_5,
            self.rmser.map_or(String::new(), |r| format!(", RMSER {:.2}%", 100.0 * r))
        )
    }
}

/// Resamples in [`mse_difference`]'s bootstrap.
const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Two models' MSE on the same images: `b − a`, with a 95% paired-bootstrap interval.
#[derive(Clone, Debug, Serialize)]
pub struct MseDifference {
    pub images: usize,
    pub difference: f64,
    pub low: f64,
    pub high: f64,
}

impl MseDifference {
    /// Whether the images tell the models apart: the interval excludes 0.
    pub fn is_clear(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// The MSE of `b` minus that of `a` over the images both scored, and its 95% interval over
/// [`BOOTSTRAP_RESAMPLES`] resamples of those images (paired: each resample scores both models on
/// the same images; fixed seed, so a report is reproducible). Why: on a few hundred images two
/// models' MSEs can differ in the third decimal by chance, and a claim like the paper's "SWR has
/// lower ED-test MSE than NSWR" needs the difference to outlast resampling. Images count as
/// independent: where several are variants of one photo (the distillation set) the interval is
/// too narrow, so "within noise" holds all the more, and "clear" needs care.
pub fn mse_difference(a: &[Scored], b: &[Scored]) -> MseDifference {
    let truth_and_a: std::collections::HashMap<u64, (f64, f64)> =
        a.iter().map(|s| (s.id, (f64::from(s.true_score), f64::from(s.predicted_score)))).collect();
    // Per image: squared error of b minus squared error of a.
    let gaps: Vec<f64> = b
        .iter()
        .filter_map(|s| {
            let &(truth, predicted_a) = truth_and_a.get(&s.id)?;
            Some((f64::from(s.predicted_score) - truth).powi(2) - (predicted_a - truth).powi(2))
        })
        .collect();
    let n = gaps.len();
    if n == 0 {
        return MseDifference { images: 0, difference: 0.0, low: 0.0, high: 0.0 };
    }
    let mean = |sum: f64| sum / n as f64;
    let mut rng = loupe::rng::SplitMix64::new(0x5eed);
    let mut resampled: Vec<f64> =
        (0..BOOTSTRAP_RESAMPLES).map(|_| mean((0..n).map(|_| gaps[rng.below_or_equal(n as u32 - 1) as usize]).sum())).collect();
    resampled.sort_by(f64::total_cmp);
    let at = |q: f64| resampled[((q * BOOTSTRAP_RESAMPLES as f64) as usize).min(BOOTSTRAP_RESAMPLES - 1)];
    MseDifference { images: n, difference: mean(gaps.iter().sum()), low: at(0.025), high: at(0.975) }
}

/// Predict every labelled image that can be read (failures are listed, not fatal) with every
/// scorer. Scorers must share one backbone (same weights) and read block statistics over one
/// region if at all ([`backbone_groups`]): it runs once per image, or not at all for images whose
/// features `cache` holds (frozen-backbone runs keep them across evaluations).
pub fn score_labels(
    scorers: &[&Scorer],
    labels: &[&ImageLabel],
    images: &ImageFolder,
    batch: usize,
    cache: Option<&Path>,
) -> Result<Vec<Vec<Scored>>> {
    let mut scored = vec![Vec::with_capacity(labels.len()); scorers.len()];
    let Some(first) = scorers.first() else { return Ok(scored) };
    // One backbone pass serves every scorer: with block statistics if any head reads them.
    let statistics = scorers.iter().find_map(|s| s.net.head.layers().statistics_region());
    let mut record = |loaded: &[&ImageLabel], features: BackboneFeatures| -> Result<()> {
        for (scorer, out) in scorers.iter().zip(scored.iter_mut()) {
            let output = scorer.net.head.forward(features.clone());
            let predictions = scorer.to_predictions(values(output)?)?;
            for (label, p) in loaded.iter().zip(predictions) {
                out.push(Scored { id: label.id, true_score: label.mean(), true_std: label.std(), predicted_score: p.score, predicted_std: p.std });
            }
        }
        Ok(())
    };
    if let Some(dir) = cache {
        let file = FeatureCache::file_in(dir, &first.net, first.metadata.input);
        let features =
            FeatureCache::load_or_compute(&first.net, statistics, labels, images, first.metadata.input, batch, &first.device, Some(&file))?;
        let readable: Vec<&ImageLabel> = labels.iter().copied().filter(|l| features.contains(l.id)).collect();
        for chunk in readable.chunks(batch.max(1)) {
            record(chunk, features.batch(chunk, &first.device))?;
        }
        return Ok(scored);
    }
    images.for_each_batch(labels, batch, "evaluating", |loaded, inputs| {
        record(loaded, first.net.backbone.forward_features(first.input(&inputs), statistics))
    })?;
    Ok(scored)
}

/// "Balanced" subset for sets without an ED split: equal numbers from the paper's three classes
/// (<4, 4..7, >7) when all three hold at least 10 images; else equal numbers from the lowest,
/// middle and highest thirds of the score range (equal-width bands), so extremes weigh as much as
/// the crowded middle, as in the paper's ED-test.
pub fn balanced_subset<'a>(labels: &[&'a ImageLabel]) -> Vec<&'a ImageLabel> {
    let classes = [ScoreClass::Low, ScoreClass::Average, ScoreClass::High];
    let groups: Vec<Vec<&ImageLabel>> = classes.iter().map(|&c| labels.iter().copied().filter(|l| ScoreClass::of(l.mean()) == c).collect()).collect();
    let groups = if groups.iter().all(|g| g.len() >= 10) {
        groups
    } else {
        let (low, high) = labels.iter().fold((f32::MAX, f32::MIN), |(lo, hi), l| (lo.min(l.mean()), hi.max(l.mean())));
        let width = (high - low) / 3.0;
        let band = |l: &ImageLabel| (((l.mean() - low) / width) as usize).min(2);
        (0..3).map(|b| labels.iter().copied().filter(|l| band(l) == b).collect()).collect()
    };
    // The same number from each group, taken in id order: deterministic, and not biased toward
    // any score within a group.
    let smallest = groups.iter().map(Vec::len).min().unwrap_or(0);
    groups
        .into_iter()
        .flat_map(|mut g| {
            g.sort_by_key(|l| l.id);
            g.truncate(smallest);
            g
        })
        .collect()
}

/// The paper's Tables 1 and 2, for the report.
pub const PAPER_TABLE_1: [(&str, f64, f64); 2] = [("NSWR", 0.3373, 1.3951), ("SWR", 0.4847, 0.9754)];
pub const PAPER_TABLE_2: (f64, f64, f64, f64) = (0.6358, 0.2675, 1.0109, 0.1957);

pub fn report_markdown(model: OutputKind, weights_name: &str, sets: &[(String, Metrics)]) -> String {
    let mut md = format!("# Evaluation of `{weights_name}`\n\n");
    md += "| test set | images | MSE (Eq. 4) | range | SRCC | PLCC | acc@5 | RMSER (Eq. 5) |\n|---|---|---|---|---|---|---|---|\n";
    for (name, m) in sets {
        md += &format!(
            "| {name} | {} | {:.4} | {:.2}..{:.2} | {:.3} | {:.3} | {:.1}% | {} |\n",
            m.images,
            m.mse,
            m.min_prediction,
            m.max_prediction,
            m.srcc,
            m.plcc,
            100.0 * m.accuracy_at_5,
            m.rmser.map_or("—".into(), |r| format!("{:.2}%", 100.0 * r))
        );
    }
    md += "\n## Beside the paper\n\n";
    // The paper's RS-test and ED-test sit beside this report's first two sets (RS/ED-test with
    // --splits; all and balanced without).
    let set = |i: usize| sets.get(i);
    let set_name = |i: usize| set(i).map_or("—".to_string(), |(n, _)| n.clone());
    let mse = |i: usize| set(i).map_or("—".to_string(), |(_, m)| format!("{:.4}", m.mse));
    let rmser = |i: usize| set(i).and_then(|(_, m)| m.rmser).map_or("—".to_string(), |r| format!("{:.2}%", 100.0 * r));
    match model {
        OutputKind::Regression => {
            md += &format!(
                "Table 1 (MSE):\n\n| model | RS-test (paper) / {} (here) | ED-test (paper) / {} (here) |\n|---|---|---|\n",
                set_name(0),
                set_name(1)
            );
            for (name, rs, ed) in PAPER_TABLE_1 {
                md += &format!("| paper {name} | {rs:.4} | {ed:.4} |\n");
            }
            md += &format!("| this model | {} | {} |\n", mse(0), mse(1));
        }
        OutputKind::Histogram => {
            let (rs_mse, rs_r, ed_mse, ed_r) = PAPER_TABLE_2;
            md += &format!(
                "Table 2:\n\n| model | MSE RS-test / {0} | RMSER RS-test / {0} | MSE ED-test / {1} | RMSER ED-test / {1} |\n|---|---|---|---|---|\n",
                set_name(0),
                set_name(1)
            );
            md += &format!("| paper SWH | {rs_mse:.4} | {:.2}% | {ed_mse:.4} | {:.2}% |\n", 100.0 * rs_r, 100.0 * ed_r);
            md += &format!("| this model | {} | {} | {} | {} |\n", mse(0), rmser(0), mse(1), rmser(1));
        }
    }
    md += "\nPaper prediction ranges: NSWR 3.54..6.46, SWR 2.06..7.53. MSE per score: `mse_by_score_*.svg` / `.png`.\n";
    md
}

/// What `eval` writes: report.json (this, serialised once) and report.md ([`Report::markdown`]).
pub struct Report {
    pub models: Vec<ModelReport>,
    /// Every pair of models on every set (with more than one model).
    pub comparisons: Vec<Comparison>,
    /// Images that could not be read, with the reason.
    pub failed_images: BTreeMap<u64, String>,
}

/// One model's results.
pub struct ModelReport {
    /// The weight file's path (runs often all end in model.loupe, so not just its name).
    pub name: String,
    pub output: OutputKind,
    /// Metrics per test set, in the sets' order.
    pub sets: Vec<(String, Metrics)>,
    pub crop_ranking: Option<CropRanking>,
}
/// The distillation set's crop-ranking check ([`crop_ranking_srcc`]).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CropRanking {
    pub mean_srcc: f64,
    pub photos: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub set: String,
    pub first: String,
    pub second: String,
    pub mse_difference: MseDifference,
}

/// report.json: one entry per model — named by its output kind when it is the only model, else by
/// its path — holding its metrics per set (and its crop ranking); then the comparisons and the
/// images that failed, when there are any.
impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(flatten)]
            sets: BTreeMap<&'a str, &'a Metrics>,
            #[serde(skip_serializing_if = "Option::is_none")]
            crop_ranking: Option<CropRanking>,
        }
        let mut map = serializer.serialize_map(None)?;
        for model in &self.models {
            let key = if self.models.len() == 1 { model.output.name() } else { model.name.as_str() };
            let sets = model.sets.iter().map(|(name, m)| (name.as_str(), m)).collect();
            map.serialize_entry(key, &Entry { sets, crop_ranking: model.crop_ranking })?;
        }
        if !self.comparisons.is_empty() {
            map.serialize_entry("comparisons", &self.comparisons)?;
        }
        if !self.failed_images.is_empty() {
            map.serialize_entry("failed_images", &self.failed_images)?;
        }
        map.end()
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut markdown = String::new();
        for model in &self.models {
            markdown += &report_markdown(model.output, &model.name, &model.sets);
            markdown += "\n";
            if let Some(crop) = model.crop_ranking {
                markdown += &format!("Crop ranking (mean per-photo SRCC over undegraded crops): {:.3}\n\n", crop.mean_srcc);
            }
        }
        if !self.comparisons.is_empty() {
            markdown += "# Paired comparisons\n\nMSE of the second model minus the first on the same images, with a 95% paired-bootstrap \
                         interval (images resampled as independent); *clear* when the interval excludes 0 (otherwise these images \
                         cannot tell the two apart by MSE).\n\n\
                         | set | first | second | images | MSE difference | 95% interval | clear |\n|---|---|---|---|---|---|---|\n";
            for c in &self.comparisons {
                let d = &c.mse_difference;
                markdown += &format!(
                    "| {} | `{}` | `{}` | {} | {:+.4} | {:+.4}..{:+.4} | {} |\n",
                    c.set,
                    c.first,
                    c.second,
                    d.images,
                    d.difference,
                    d.low,
                    d.high,
                    if d.is_clear() { "yes" } else { "no" }
                );
            }
            markdown += "\n";
        }
        markdown
    }

    /// report.json, report.md and each model's MSE-by-score plot in `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for model in &self.models {
            let plot_name: String = model.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            plots::save(&plots::MseByScore(&model.sets), &dir.join(format!("mse_by_score_{plot_name}")))?;
        }
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        println!("report in {}", dir.display());
        Ok(())
    }
}

/// `eval`: every model on every test set (RS-test and ED-test with `--splits`; else all images and
/// a balanced subset). Each image is scored once, and models sharing a backbone run it once.
pub fn run(args: &EvalArgs) -> Result<Report> {
    let (scorers, names) = args.model.load_named_scorers()?;
    let labels = Labels::read(&args.data.labels)?;
    labels.warn_about_bad_rows();
    let all: Vec<&ImageLabel> = labels.images.iter().collect();
    let sets: Vec<(String, Vec<&ImageLabel>)> = match &args.data.splits {
        Some(dir) => named_sets(&labels, Some(&Splits::read(dir)?)).into_iter().filter(|(name, _)| name.ends_with("-test")).collect(),
        None => vec![("all".into(), all.clone()), ("balanced".into(), balanced_subset(&all))],
    };
    if sets.iter().all(|(_, l)| l.is_empty()) {
        bail!("no labelled test images to evaluate");
    }
    let images = ImageFolder::new(&args.data.images, true);
    // Every image once, even when it belongs to several sets (all / balanced).
    let mut union: Vec<&ImageLabel> = sets.iter().flat_map(|(_, set)| set.iter().copied()).collect();
    union.sort_by_key(|l| l.id);
    union.dedup_by_key(|l| l.id);
    let mut scored_by_model: Vec<Vec<Scored>> = vec![Vec::new(); scorers.len()];
    for members in backbone_groups(&scorers) {
        let group: Vec<&Scorer> = members.iter().map(|&i| &scorers[i]).collect();
        let scored = score_labels(&group, &union, &images, args.batch, args.feature_cache.as_deref())?;
        for (&i, scored) in members.iter().zip(scored) {
            scored_by_model[i] = scored;
        }
    }

    let mut models: Vec<ModelReport> = scorers
        .iter()
        .zip(&names)
        .map(|(scorer, name)| ModelReport { name: name.clone(), output: scorer.output(), sets: Vec::new(), crop_ranking: None })
        .collect();
    let mut comparisons = Vec::new();
    for (set_name, set) in &sets {
        let ids: HashSet<u64> = set.iter().map(|l| l.id).collect();
        let per_model: Vec<Vec<Scored>> =
            scored_by_model.iter().map(|scored| scored.iter().filter(|s| ids.contains(&s.id)).cloned().collect()).collect();
        for (model, scored) in models.iter_mut().zip(&per_model) {
            let metrics = metrics(scored);
            println!("{} {set_name}: {}", model.name, metrics.summary());
            if let (Some(variants), "all") = (&args.variants, set_name.as_str()) {
                let (mean_srcc, photos) = crop_ranking_srcc(variants, scored)?;
                println!("{} crop ranking: mean SRCC {mean_srcc:.3} over {photos} photos", model.name);
                model.crop_ranking = Some(CropRanking { mean_srcc, photos });
            }
            model.sets.push((set_name.clone(), metrics));
        }
        comparisons.extend(paired_comparisons(set_name, &names, &per_model));
    }
    let failed_images = images.failures();
    if !failed_images.is_empty() {
        eprintln!("{} images could not be read and were skipped", failed_images.len());
    }
    Ok(Report { models, comparisons, failed_images })
}

/// Indices of the scorers, grouped by backbone weights (e.g. heads trained on the same frozen
/// VGG16, from separate files) and by the region their block statistics are taken over: each
/// group runs the backbone once.
fn backbone_groups(scorers: &[Scorer]) -> Vec<Vec<usize>> {
    let keys: Vec<String> = scorers.iter().map(|scorer| backbone_key(&scorer.net, scorer.metadata.input)).collect();
    backbone_passes(scorers, |a, b| keys[a] == keys[b]).into_iter().map(|pass| pass.members).collect()
}

/// Every pair of models on one set: the MSE difference and whether it outlasts resampling.
fn paired_comparisons(set: &str, names: &[String], per_model: &[Vec<Scored>]) -> Vec<Comparison> {
    let mut rows = Vec::new();
    for i in 0..per_model.len() {
        for j in i + 1..per_model.len() {
            let d = mse_difference(&per_model[i], &per_model[j]);
            let (first, second) = (&names[i], &names[j]);
            println!(
                "{set}: MSE of {second} minus {first}: {:+.4} (95% interval {:+.4}..{:+.4}, {})",
                d.difference,
                d.low,
                d.high,
                if d.is_clear() { "clear" } else { "within resampling noise" }
            );
            rows.push(Comparison { set: set.to_string(), first: first.clone(), second: second.clone(), mse_difference: d });
        }
    }
    rows
}

/// The distillation set's crop-ranking check: for each source photo, the Spearman correlation
/// between predicted and teacher scores over its undegraded crops (`variant` = `crop<x>,<y>,<w>,<h>`
/// with no `+degradation`), averaged over photos with at least 3 such crops.
pub fn crop_ranking_srcc(variants: &Path, scored: &[Scored]) -> Result<(f64, usize)> {
    let predicted: BTreeMap<u64, &Scored> = scored.iter().map(|s| (s.id, s)).collect();
    let mut by_photo: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut reader = csv::Reader::from_path(variants)?;
    for row in reader.records() {
        let row = row?;
        let (Some(id), Some(photo), Some(variant)) = (row.get(0), row.get(2), row.get(3)) else { continue };
        if !variant.starts_with("crop") || variant.contains('+') {
            continue;
        }
        if let Some(s) = id.parse::<u64>().ok().and_then(|id| predicted.get(&id)) {
            by_photo.entry(photo.to_string()).or_default().push((f64::from(s.true_score), f64::from(s.predicted_score)));
        }
    }
    let correlations: Vec<f64> = by_photo
        .values()
        .filter(|pairs| pairs.len() >= 3)
        .map(|pairs| {
            let (truth, predicted): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
            spearman(&truth, &predicted)
        })
        .filter(|r| r.is_finite())
        .collect();
    if correlations.is_empty() {
        bail!("{}: no photo with 3 or more undegraded crops among the evaluated images", variants.display());
    }
    Ok((correlations.iter().sum::<f64>() / correlations.len() as f64, correlations.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_subset_takes_equal_bands_of_the_score_range() {
        // Means 3..6: no score above 7, so the paper's classes do not apply; the range splits into
        // [3, 4), [4, 5), [5, 6] with 5, 30 and 8 images.
        let label = |id: u64, low: u32, high: u32| {
            let mut counts = [0; 10];
            counts[2] = low; // rating 3
            counts[5] = high; // rating 6
            ImageLabel { id, counts }
        };
        let mut labels = vec![label(1, 1, 0), label(2, 0, 1)]; // means 3 and 6: the range
        labels.extend((3..7).map(|id| label(id, 9, 1))); // 3.3: lowest band
        labels.extend((7..37).map(|id| label(id, 1, 1))); // 4.5: middle band
        labels.extend((37..44).map(|id| label(id, 1, 9))); // 5.7: highest band
        let refs: Vec<&ImageLabel> = labels.iter().collect();
        let subset = balanced_subset(&refs);
        let count = |lo: f32, hi: f32| subset.iter().filter(|l| l.mean() >= lo && l.mean() < hi).count();
        assert_eq!((count(3.0, 4.0), count(4.0, 5.0), count(5.0, 6.1)), (5, 5, 5));
    }

    #[test]
    fn mse_difference_is_zero_for_the_same_model_and_clear_for_a_better_one() {
        let s = |id: u64, t: f32, p: f32| Scored { id, true_score: t, true_std: 1.0, predicted_score: p, predicted_std: None };
        let truth: Vec<f32> = (0..200).map(|i| 3.0 + (i % 40) as f32 * 0.1).collect();
        // a: errors of ±0.5 alternating; b: the same images, errors of ±0.3 (MSE 0.09 − 0.25).
        let a: Vec<Scored> = truth.iter().enumerate().map(|(i, &t)| s(i as u64, t, t + if i % 2 == 0 { 0.5 } else { -0.5 })).collect();
        let b: Vec<Scored> = truth.iter().enumerate().rev().map(|(i, &t)| s(i as u64, t, t + if i % 3 == 0 { 0.3 } else { -0.3 })).collect();
        let same = mse_difference(&a, &a);
        assert_eq!((same.images, same.difference, same.low, same.high), (200, 0.0, 0.0, 0.0));
        assert!(!same.is_clear());
        let better = mse_difference(&a, &b);
        assert!((better.difference - (0.09 - 0.25)).abs() < 1e-6, "{better:?}");
        assert!(better.is_clear() && better.high < 0.0);
        // Noise only: errors of b are a's reshuffled, so the interval spans 0.
        let noisy: Vec<Scored> = truth.iter().enumerate().map(|(i, &t)| s(i as u64, t, t + ((i * 7919 % 200) as f32 / 200.0 - 0.5))).collect();
        let shuffled: Vec<Scored> = truth.iter().enumerate().map(|(i, &t)| s(i as u64, t, t + ((i * 104729 % 200) as f32 / 200.0 - 0.5))).collect();
        let tie = mse_difference(&noisy, &shuffled);
        assert!(tie.difference.abs() < 1e-6 && tie.low < 0.0 && tie.high > 0.0, "{tie:?}");
        // Images only one model scored are left out.
        assert_eq!(mse_difference(&a, &b[..50]).images, 50);
    }

    #[test]
    fn metrics_by_hand() {
        let s = |t: f32, p: f32, ts: f32, ps: f32| Scored { id: 0, true_score: t, true_std: ts, predicted_score: p, predicted_std: Some(ps) };
        let m = metrics(&[s(3.0, 4.0, 1.0, 1.5), s(6.0, 6.0, 2.0, 2.0), s(8.0, 6.0, 1.5, 1.5)]);
        assert!((m.mse - 5.0 / 3.0).abs() < 1e-9);
        assert_eq!((m.min_prediction, m.max_prediction), (4.0, 6.0));
        // Right side of 5: 3→4 yes, 6→6 yes, 8→6 yes.
        assert_eq!(m.accuracy_at_5, 1.0);
        // RMSER: sqrt((0.25 + 0 + 0)/3) / 1.5
        assert!((m.rmser.unwrap() - (0.25f64 / 3.0).sqrt() / 1.5).abs() < 1e-9);
        assert_eq!(m.mse_by_score.len(), 3);
    }
}
