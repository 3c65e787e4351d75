//! What a batch reads: the keys of a catalogue (a folder, or a manifest listing paths) and each
//! key's bytes. A key is the path or URI as listed; it names the photo in every output row.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use arrow_array::{Array, StringArray, cast::AsArray};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The catalogue's keys, in a stable order: a folder's files (recursive, sorted, hidden files and
/// folders left out), or a manifest: `.csv` and `.parquet` read `column`, any other file has one
/// path or URI per line (blank lines and `#` comments skipped).
pub fn list_keys(input: &Path, column: &str) -> Result<Vec<String>> {
    if input.is_dir() {
        return list_folder(input);
    }
    let extension = input.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => csv_column(input, column),
        Some("parquet") => parquet_column(input, column),
        _ => text_lines(input),
    }
}

fn is_hidden(entry: &walkdir::DirEntry) -> bool {
    entry.depth() > 0 && entry.file_name().to_str().is_some_and(|name| name.starts_with('.'))
}

fn list_folder(root: &Path) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name().into_iter().filter_entry(|e| !is_hidden(e)) {
        let entry = entry.with_context(|| format!("cannot list {}", root.display()))?;
        if entry.file_type().is_file() {
            let path = entry.path().to_str().with_context(|| format!("{} is not valid UTF-8", entry.path().display()))?;
            keys.push(path.to_string());
        }
    }
    Ok(keys)
}

fn text_lines(path: &Path) -> Result<Vec<String>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut keys = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let key = line.trim();
        if !key.is_empty() && !key.starts_with('#') {
            keys.push(key.to_string());
        }
    }
    Ok(keys)
}

fn csv_column(path: &Path, column: &str) -> Result<Vec<String>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader.headers().with_context(|| format!("{}: no header row", path.display()))?;
    let at = headers.iter().position(|h| h == column).with_context(|| {
        format!("{} has no column '{column}' (it has: {}); pick one with --column", path.display(), headers.iter().collect::<Vec<_>>().join(", "))
    })?;
    let mut keys = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: bad row {}", path.display(), line + 2))?;
        let key = record.get(at).unwrap_or_default().trim();
        if !key.is_empty() {
            keys.push(key.to_string());
        }
    }
    Ok(keys)
}

/// One string column of a Parquet file (only that column is read).
pub fn parquet_column(path: &Path, column: &str) -> Result<Vec<String>> {
    parquet_string_columns(path, &[column]).map(|mut columns| columns.remove(0).into_iter().flatten().collect())
}

/// String columns of a Parquet file, reading nothing else; nulls are `None`.
pub fn parquet_string_columns(path: &Path, columns: &[&str]) -> Result<Vec<Vec<Option<String>>>> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| format!("{} is not a Parquet file", path.display()))?;
    let schema = builder.parquet_schema();
    let mut leaves = Vec::new();
    for column in columns {
        let leaf = (0..schema.num_columns())
            .find(|&i| schema.column(i).path().string() == *column)
            .with_context(|| format!("{} has no column '{column}'; pick one with --column", path.display()))?;
        leaves.push(leaf);
    }
    let mask = ProjectionMask::leaves(schema, leaves);
    let reader = builder.with_projection(mask).build()?;
    let mut values: Vec<Vec<Option<String>>> = columns.iter().map(|_| Vec::new()).collect();
    for batch in reader {
        let batch = batch.with_context(|| format!("cannot read {}", path.display()))?;
        for (i, column) in columns.iter().enumerate() {
            let array = batch.column_by_name(column).context("projected column")?;
            let strings: &StringArray = array.as_string_opt::<i32>().with_context(|| format!("{}: column '{column}' is not text", path.display()))?;
            values[i].extend((0..strings.len()).map(|row| strings.is_valid(row).then(|| strings.value(row).to_string())));
        }
    }
    Ok(values)
}

/// Files above this are refused before reading (the decoder's own limit, checked without
/// holding the bytes).
pub const MAX_INPUT_BYTES: u64 = loupe::preprocess::MAX_FILE_BYTES as u64;

/// A key's local path: the key itself, or a `file://` URI. Other schemes are refused with a
/// message: Loupe reads local files only (mount a bucket, or list the mounted paths).
pub fn local_path(key: &str) -> Result<PathBuf> {
    if let Some(path) = key.strip_prefix("file://") {
        return Ok(PathBuf::from(path));
    }
    if let Some((scheme, _)) = key.split_once("://") {
        bail!("cannot read '{scheme}://' URIs: Loupe reads local files (mount the bucket and list its paths)");
    }
    Ok(PathBuf::from(key))
}

/// The bytes a key names; missing files, folders, unreadable files and oversized files are errors.
pub fn read_key(key: &str) -> Result<Vec<u8>> {
    let path = local_path(key)?;
    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let metadata = file.metadata().with_context(|| format!("cannot read {}", path.display()))?;
    if metadata.is_dir() {
        bail!("{} is a folder, not an image", path.display());
    }
    if metadata.len() > MAX_INPUT_BYTES {
        bail!("{} is {} bytes, over the {MAX_INPUT_BYTES}-byte limit for one image", path.display(), metadata.len());
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_folders_lines_and_csv_columns() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("photos");
        std::fs::create_dir_all(root.join("b/.cache")).unwrap();
        for name in ["a.jpg", "b/c.png", "b/.cache/x.jpg", ".DS_Store"] {
            std::fs::write(root.join(name), b"x").unwrap();
        }
        let listed = list_keys(&root, "path").unwrap();
        let expected: Vec<String> = ["a.jpg", "b/c.png"].iter().map(|n| root.join(n).to_str().unwrap().to_string()).collect();
        assert_eq!(listed, expected);

        let lines = dir.path().join("list.txt");
        std::fs::write(&lines, "# catalogue\n/x/1.jpg\n\n  file:///x/2.jpg  \n").unwrap();
        assert_eq!(list_keys(&lines, "path").unwrap(), ["/x/1.jpg", "file:///x/2.jpg"]);

        let csv = dir.path().join("list.csv");
        std::fs::write(&csv, "id,url\n1,/x/1.jpg\n2,/x/2.jpg\n").unwrap();
        assert_eq!(list_keys(&csv, "url").unwrap(), ["/x/1.jpg", "/x/2.jpg"]);
        assert!(list_keys(&csv, "path").unwrap_err().to_string().contains("no column 'path'"));
    }

    #[test]
    fn keys_come_from_a_parquet_column_nulls_skipped() {
        use std::sync::Arc;

        use arrow_array::{Int64Array, RecordBatch};
        use arrow_schema::{DataType, Field, Schema};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalogue.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("url", DataType::Utf8, true)]));
        let ids = Arc::new(Int64Array::from(vec![1, 2, 3]));
        let urls = Arc::new(StringArray::from(vec![Some("/x/1.jpg"), None, Some("file:///x/3.jpg")]));
        let batch = RecordBatch::try_new(schema.clone(), vec![ids, urls]).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        assert_eq!(list_keys(&path, "url").unwrap(), ["/x/1.jpg", "file:///x/3.jpg"]);
        assert!(list_keys(&path, "path").unwrap_err().to_string().contains("no column 'path'"));
        assert!(list_keys(&path, "id").unwrap_err().to_string().contains("not text"));
    }

    #[test]
    fn keys_that_cannot_be_read_are_errors_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_key("s3://bucket/a.jpg").unwrap_err().to_string().contains("s3://"));
        assert!(format!("{:#}", read_key("/no/such/file.jpg").unwrap_err()).contains("cannot open"));
        assert!(read_key(dir.path().to_str().unwrap()).unwrap_err().to_string().contains("folder"));
        let file = dir.path().join("a.bin");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(read_key(&format!("file://{}", file.display())).unwrap(), b"abc");
    }
}
