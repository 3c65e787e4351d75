//! Where a batch writes: `OUT/model=<model id>/part-<shard>-<seq>.parquet` (or `.jsonl`), each
//! part written whole to a hidden temp file, fsynced and renamed, so a part on disk is always
//! complete; `_SUCCESS-<shard>` once a shard has every key. Readers (pyarrow, Spark, DuckDB)
//! skip the hidden temps and `_` markers. A new model id is a new folder: re-scoring with new
//! weights never overwrites old results.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};
use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::Deserialize;

use super::inputs::parquet_string_columns;
use super::rows::Row;
use super::shard::Shard;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Parquet,
    Jsonl,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Jsonl => "jsonl",
        }
    }
}

/// The Arrow schema of [`Row`] (the Python package builds the same one: `loupe.SCHEMA`).
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let text = |name| Field::new(name, DataType::Utf8, true);
            let float = |name| Field::new(name, DataType::Float32, true);
            let count = |name| Field::new(name, DataType::UInt32, true);
            let pixels = |name| Field::new(name, DataType::UInt32, false);
            let real = |name| Field::new(name, DataType::Float32, false);
            let focal = Fields::from(vec![real("x"), real("y")]);
            let crop = Fields::from(vec![
                Field::new("aspect", DataType::Utf8, false),
                pixels("x"),
                pixels("y"),
                pixels("width"),
                pixels("height"),
                real("score"),
                real("percentile"),
                Field::new("focal", DataType::Struct(focal), false),
            ]);
            Arc::new(Schema::new(vec![
                Field::new("key", DataType::Utf8, false),
                text("content_sha256"),
                Field::new("model_id", DataType::Utf8, false),
                Field::new("loupe_version", DataType::Utf8, false),
                count("width"),
                count("height"),
                float("score"),
                float("percentile"),
                Field::new("histogram", DataType::List(Arc::new(Field::new("item", DataType::Float32, true))), true),
                float("std"),
                Field::new("crops", DataType::List(Arc::new(Field::new("item", DataType::Struct(crop), true))), false),
                text("error"),
                Field::new("ms", DataType::Float32, false),
            ]))
        })
        .clone()
}

/// Rows as one Arrow record batch of [`schema`].
pub fn record_batch(rows: &[Row]) -> Result<RecordBatch> {
    let mut decoder = arrow_json::ReaderBuilder::new(schema()).build_decoder()?;
    decoder.serialize(rows)?;
    decoder.flush()?.context("no rows to write")
}

/// What earlier runs wrote: every key, the part holding it, and whether its row is an error.
#[derive(Default)]
pub struct Existing {
    pub keys: HashMap<String, (PathBuf, bool)>,
}

/// One shard's output folder.
pub struct Output {
    pub dir: PathBuf,
    format: Format,
    shard: Shard,
    next_seq: u64,
}

impl Output {
    /// The folder for these weights, created if needed; this shard's temp files from a killed
    /// run are removed (other shards may be writing theirs right now).
    pub fn open(root: &Path, model_id: &str, format: Format, shard: Shard) -> Result<Self> {
        let dir = root.join(format!("model={model_id}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut next_seq = 0;
        let own = format!("part-{}-", shard.tag());
        for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if name.starts_with(&format!(".{own}")) && name.ends_with(".tmp") {
                std::fs::remove_file(dir.join(&name)).with_context(|| format!("cannot remove stale {name}"))?;
            } else if let Some(rest) = name.strip_prefix(&own) {
                let Some(seq) = rest.split('.').next().and_then(|s| s.parse::<u64>().ok()) else { continue };
                // A renamed or forged part number at the limit must not wrap to 0 (and overwrite part 0).
                let after = seq.checked_add(1).with_context(|| format!("{name}: no part number can follow it; move it aside"))?;
                next_seq = next_seq.max(after);
            }
        }
        Ok(Self { dir, format, shard, next_seq })
    }

    /// Every finished part in the folder, of any shard and either format.
    pub fn parts(&self) -> Result<Vec<PathBuf>> {
        let mut parts = Vec::new();
        for entry in std::fs::read_dir(&self.dir).with_context(|| format!("cannot list {}", self.dir.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("part-") && (name.ends_with(".parquet") || name.ends_with(".jsonl")) {
                parts.push(path);
            }
        }
        parts.sort();
        Ok(parts)
    }

    /// The keys already written (reading only the key and error columns).
    pub fn existing(&self) -> Result<Existing> {
        let mut existing = Existing::default();
        for part in self.parts()? {
            for (key, error) in read_keys(&part)? {
                existing.keys.insert(key, (part.clone(), error));
            }
        }
        Ok(existing)
    }

    /// Writes rows as the next part of this shard: temp file, fsync, rename, fsync the folder.
    pub fn write_part(&mut self, rows: &[Row]) -> Result<PathBuf> {
        let name = format!("part-{}-{:05}.{}", self.shard.tag(), self.next_seq, self.format.extension());
        self.next_seq = self.next_seq.checked_add(1).context("no part number is left for this shard")?;
        let path = self.dir.join(&name);
        match self.format {
            Format::Parquet => write_atomically(&path, |file| write_parquet(file, &record_batch(rows)?))?,
            Format::Jsonl => write_atomically(&path, |file| {
                let mut writer = BufWriter::new(file);
                for row in rows {
                    serde_json::to_writer(&mut writer, row)?;
                    writer.write_all(b"\n")?;
                }
                writer.flush()?;
                Ok(())
            })?,
        }
        Ok(path)
    }

    /// Rewrites a finished part without the rows of `keys` (atomically, like a new part): how
    /// `--retry-errors` clears the error rows it is about to redo. Killed before the rename, the
    /// part is as it was; after, the keys are simply missing and the next run redoes them.
    pub fn remove_rows(&self, part: &Path, keys: &HashSet<String>) -> Result<()> {
        if part.extension().is_some_and(|e| e == "jsonl") {
            let kept: Vec<String> = BufReader::new(File::open(part)?)
                .lines()
                .filter(|line| !line.as_ref().is_ok_and(|l| key_of_line(l).is_some_and(|(key, _)| keys.contains(&key))))
                .collect::<std::io::Result<_>>()?;
            return write_atomically(part, |file| {
                let mut writer = BufWriter::new(file);
                for line in &kept {
                    writeln!(writer, "{line}")?;
                }
                writer.flush()?;
                Ok(())
            });
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(part)?)?.build()?;
        let mut kept = Vec::new();
        for batch in reader {
            let batch = batch?;
            let key_column = batch.column_by_name("key").context("a part without a key column")?;
            let strings = arrow_array::cast::AsArray::as_string_opt::<i32>(key_column.as_ref()).context("the part's key column is not text")?;
            let keep: BooleanArray = strings.iter().map(|k| Some(!k.is_some_and(|k| keys.contains(k)))).collect();
            kept.push(arrow_select::filter::filter_record_batch(&batch, &keep)?);
        }
        let batch = arrow_select::concat::concat_batches(&schema(), &kept)?;
        write_atomically(part, |file| write_parquet(file, &batch))
    }

    /// Marks this shard finished (a rerun that found nothing to do leaves the marker as it was).
    pub fn mark_success(&self) -> Result<()> {
        let path = self.dir.join(format!("_SUCCESS-{}", self.shard.tag()));
        if path.exists() {
            return Ok(());
        }
        write_atomically(&path, |file| Ok(file.write_all(b"")?))
    }
}

fn write_parquet(file: &mut File, batch: &RecordBatch) -> Result<()> {
    let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(file, schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

/// Writes `path` through a hidden temp file beside it, renamed once fsynced.
fn write_atomically(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let dir = path.parent().context("a file without a folder")?;
    let name = path.file_name().context("a path without a name")?.to_string_lossy();
    let temp = dir.join(format!(".{name}.tmp"));
    let result = (|| -> Result<()> {
        let mut file = File::create(&temp)?;
        write(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename itself must reach the disk, or a crash could lose a part already counted.
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[derive(Deserialize)]
struct KeyOfRow {
    key: String,
    error: Option<String>,
}

fn key_of_line(line: &str) -> Option<(String, bool)> {
    let row: KeyOfRow = serde_json::from_str(line).ok()?;
    Some((row.key, row.error.is_some()))
}

/// Every row of a finished part (either format).
pub fn read_part(part: &Path) -> Result<Vec<Row>> {
    let file = File::open(part).with_context(|| format!("cannot read {}", part.display()))?;
    if part.extension().is_some_and(|e| e == "jsonl") {
        return BufReader::new(file).lines().map(|line| Ok(serde_json::from_str(&line?)?)).collect();
    }
    let mut rows = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
        let mut json = arrow_json::LineDelimitedWriter::new(Vec::new());
        json.write(&batch?)?;
        json.finish()?;
        for line in json.into_inner().split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let mut value: serde_json::Value = serde_json::from_slice(line)?;
            // arrow-json leaves nulls out; a Row names every column.
            for field in schema().fields() {
                value.as_object_mut().context("a row is an object")?.entry(field.name().as_str()).or_insert(serde_json::Value::Null);
            }
            rows.push(serde_json::from_value(value)?);
        }
    }
    Ok(rows)
}

/// A part's keys and whether each row is an error.
fn read_keys(part: &Path) -> Result<Vec<(String, bool)>> {
    if part.extension().is_some_and(|e| e == "jsonl") {
        let file = File::open(part).with_context(|| format!("cannot read {}", part.display()))?;
        let mut keys = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line?;
            match key_of_line(&line) {
                Some(key) => keys.push(key),
                None => bail!("{}: line {} is not a Loupe row", part.display(), i + 1),
            }
        }
        return Ok(keys);
    }
    let mut columns = parquet_string_columns(part, &["key", "error"])?;
    let errors = columns.pop().unwrap_or_default();
    let keys = columns.pop().unwrap_or_default();
    Ok(keys.into_iter().zip(errors).filter_map(|(key, error)| Some((key?, error.is_some()))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_number_at_its_limit_is_an_error_not_a_wrap_that_overwrites_part_zero() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model=m");
        std::fs::create_dir_all(&dir).unwrap();
        let tag = Shard::ALL.tag();
        // Past u32: the next part follows it.
        std::fs::write(dir.join(format!("part-{tag}-4294967295.jsonl")), "").unwrap();
        assert_eq!(Output::open(root.path(), "m", Format::Jsonl, Shard::ALL).unwrap().next_seq, 4_294_967_296);
        // At u64's limit no number follows: an error naming the file.
        std::fs::write(dir.join(format!("part-{tag}-{}.jsonl", u64::MAX)), "").unwrap();
        let error = Output::open(root.path(), "m", Format::Jsonl, Shard::ALL).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("no part number can follow it"), "{error}");
    }
}
