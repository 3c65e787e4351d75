//! AVA rating labels: the ORIGINAL `AVA.txt` format (`index image_id c1..c10 tag1 tag2 challenge`,
//! space separated; the distillation set uses it too) and the count-only CSV
//! (`dis_img_path,score,score 1..score 10,dis_type`). Bad rows are reported with their line
//! numbers and skipped — never silently, never fatally.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use loupe::prediction::histogram_mean_std;

/// Ratings 1..10: AVA's vote counts are the histogram model's bins.
pub use loupe::model::HISTOGRAM_BINS as BINS;

/// One image's ratings.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageLabel {
    pub id: u64,
    /// Votes for ratings 1..=10.
    pub counts: [u32; BINS],
}

impl ImageLabel {
    /// All votes (u64: ten u32 counts can add up past u32).
    pub fn votes(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The aesthetic score: the mean rating.
    pub fn mean(&self) -> f32 {
        self.stats().0
    }

    /// Standard deviation of the ratings (the paper's difficulty).
    pub fn std(&self) -> f32 {
        self.stats().1
    }

    fn stats(&self) -> (f32, f32) {
        histogram_mean_std(&self.counts.map(|c| c as f32))
    }

    pub fn histogram(&self) -> [f32; BINS] {
        let votes = self.votes() as f32;
        self.counts.map(|c| c as f32 / votes)
    }
}

#[derive(Debug, PartialEq)]
pub struct BadRow {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Labels {
    pub images: Vec<ImageLabel>,
    pub bad_rows: Vec<BadRow>,
}

impl Labels {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read labels {}", path.display()))?;
        Ok(Self::parse(&text))
    }

    /// Either format, recognised by its first line.
    pub fn parse(text: &str) -> Self {
        let is_csv = text.lines().next().is_some_and(|l| l.starts_with("dis_img_path") || l.contains(','));
        let rows = if is_csv {
            csv_rows(text)
        } else {
            text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()).map(|(index, line)| (index + 1, parse_ava_row(line))).collect()
        };
        let mut labels = Labels::default();
        let mut seen = HashSet::new();
        for (line, parsed) in rows {
            let row = parsed.and_then(|label| {
                if label.votes() == 0 {
                    Err("no votes".to_string())
                } else if !seen.insert(label.id) {
                    Err(format!("duplicate image id {}", label.id))
                } else {
                    Ok(label)
                }
            });
            match row {
                Ok(label) => labels.images.push(label),
                Err(reason) => labels.bad_rows.push(BadRow { line, reason }),
            }
        }
        labels
    }

    /// One line per bad row (for the run report and stderr).
    pub fn report_bad_rows(&self) -> Vec<String> {
        self.bad_rows.iter().map(|b| format!("line {}: {}", b.line, b.reason)).collect()
    }

    /// Says on stderr how many rows were skipped, and the first 20 of them.
    pub fn warn_about_bad_rows(&self) {
        let bad = self.report_bad_rows();
        if !bad.is_empty() {
            eprintln!("{} bad label rows skipped:", bad.len());
            for line in bad.iter().take(20) {
                eprintln!("  {line}");
            }
            if bad.len() > 20 {
                eprintln!("  ... and {} more", bad.len() - 20);
            }
        }
    }
}

fn parse_counts<'a>(fields: impl Iterator<Item = &'a str>) -> Result<[u32; BINS], String> {
    let mut counts = [0; BINS];
    for (slot, field) in counts.iter_mut().zip(fields) {
        *slot = field.trim().parse().map_err(|_| format!("vote count '{field}' is not a whole number"))?;
    }
    // AVA's largest image has under 600 votes: a total past u32 is a broken row, not a photo.
    if counts.iter().try_fold(0u32, |total, &c| total.checked_add(c)).is_none() {
        return Err(format!("vote counts add up to more than {} votes", u32::MAX));
    }
    Ok(counts)
}

/// `index image_id c1..c10 tag1 tag2 challenge_id` (15 fields).
fn parse_ava_row(line: &str) -> Result<ImageLabel, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() != 15 {
        return Err(format!("expected 15 space-separated fields, found {}", fields.len()));
    }
    let id = fields[1].parse().map_err(|_| format!("image id '{}' is not a number", fields[1]))?;
    Ok(ImageLabel { id, counts: parse_counts(fields[2..12].iter().copied())? })
}

/// The count CSV's rows with their line numbers (its header skipped).
fn csv_rows(text: &str) -> Vec<(usize, Result<ImageLabel, String>)> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let line_of = |position: Option<&csv::Position>| position.map_or(0, |p| p.line() as usize);
    reader
        .records()
        .filter_map(|record| match record {
            Ok(record) if record.get(0) == Some("dis_img_path") => None,
            Ok(record) => Some((line_of(record.position()), parse_csv_row(&record))),
            Err(error) => Some((line_of(error.position()), Err(format!("unreadable CSV row: {error}")))),
        })
        .collect()
}

/// `dis_img_path,score,score 1..score 10,dis_type` (13 fields; the id is the file stem).
fn parse_csv_row(fields: &csv::StringRecord) -> Result<ImageLabel, String> {
    if fields.len() != 13 {
        return Err(format!("expected 13 comma-separated fields, found {}", fields.len()));
    }
    let stem = Path::new(&fields[0]).file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let id = stem.parse().map_err(|_| format!("image path '{}' does not name a numeric id", &fields[0]))?;
    Ok(ImageLabel { id, counts: parse_counts(fields.iter().skip(2).take(BINS))? })
}

/// Ids listed one per line (AVA's `.jpgl` lists and our split files).
pub fn read_id_list(path: &Path) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read id list {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim().trim_end_matches(".jpg").parse().with_context(|| format!("{} line {}: '{l}' is not an image id", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_parse_and_bad_rows_are_reported() {
        let ava = "1 953417 0 0 0 5 32 50 23 10 3 1 22 0 1396\n\
                   2 953777 0 3 2 3 13 40 35 21 8 3 20 53 1396\n\
                   3 953778 0 3 2 3 13 40 35 21 8\n\
                   4 953779 0 x 2 3 13 40 35 21 8 3 20 53 1396\n\
                   5 953780 0 0 0 0 0 0 0 0 0 0 20 53 1396\n\
                   6 953417 0 0 0 5 32 50 23 10 3 1 22 0 1396\n";
        let labels = Labels::parse(ava);
        assert_eq!(labels.images.len(), 2);
        assert_eq!(labels.images[0].id, 953417);
        assert_eq!(labels.images[0].votes(), 124);
        // 6.112903225806452 is the CSV's own score for this image.
        assert!((labels.images[0].mean() - 6.112903).abs() < 1e-5);
        let lines: Vec<usize> = labels.bad_rows.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6]);
        assert!(labels.bad_rows[3].reason.contains("duplicate"));

        let csv = "dis_img_path,score,score 1,score 2,score 3,score 4,score 5,score 6,score 7,score 8,score 9,score 10,dis_type\n\
                   AVA/images/953417.jpg,6.11,0,0,0,5,32,50,23,10,3,1,Authentic\n\
                   AVA/images/x.jpg,6.11,0,0,0,5,32,50,23,10,3,1,Authentic\n";
        let labels = Labels::parse(csv);
        assert_eq!(labels.images.len(), 1);
        assert_eq!(labels.images[0].counts[5], 50);
        assert_eq!(labels.bad_rows[0].line, 3);
    }

    #[test]
    fn vote_counts_whose_sum_exceeds_u32_are_a_bad_row_not_an_overflow() {
        let max = u32::MAX;
        let ava = format!("1 1 {max} 1 0 0 0 0 0 0 0 0 0 0 1\n2 2 {max} 0 0 0 0 0 0 0 0 0 0 0 1\n");
        let labels = Labels::parse(&ava);
        assert_eq!(labels.bad_rows.len(), 1, "{:?}", labels.bad_rows);
        assert_eq!(labels.bad_rows[0].line, 1);
        assert!(labels.bad_rows[0].reason.contains("add up to more than"), "{}", labels.bad_rows[0].reason);
        // One count at u32::MAX alone is a (very) valid row.
        assert_eq!(labels.images[0].votes(), u64::from(max));
    }
}
