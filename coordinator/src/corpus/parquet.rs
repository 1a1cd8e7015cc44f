//! Parquet in and out: a source's `*.parquet` files, as Hugging Face datasets are published,
//! and `kept.parquet`, the kept corpus in the same form when a build asks for it.
//!
//! A Parquet source file is read row by row. Each row becomes the same JSON object a `.jsonl`
//! line would be (`text`, and optional `id`, `url`, `language`; every other column is
//! metadata), so one set of rules reads both: see [`super::source`]. A null in a column is an
//! absent field, as Parquet cannot tell the two apart. Snappy, gzip, LZ4 and uncompressed
//! column chunks are read; a file in another codec, or one the reader cannot decode, stops the
//! build with an error naming it, as a broken compressed `.jsonl` does.

use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::{CorpusBuildError, Result};

/// Reads every row of the Parquet file at `path` as a JSON object, calling `row` with its
/// 1-based row number. Stops with an error once the rows' values pass `max_bytes` in all.
pub fn read_rows(
    path: &Path,
    max_bytes: u64,
    mut row: impl FnMut(usize, serde_json::Map<String, serde_json::Value>),
) -> Result<()> {
    let invalid = |reason: String| CorpusBuildError::DocumentFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|source| CorpusBuildError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // The reader is a large third-party decoder: a file it trips over must stop this build
    // with an error naming the file, never take the coordinator down.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
        let reader = SerializedFileReader::new(file)
            .map_err(|e| invalid(format!("not a readable Parquet file: {e}")))?;
        let rows = reader
            .get_row_iter(None)
            .map_err(|e| invalid(format!("not a readable Parquet file: {e}")))?;
        let mut total = 0u64;
        for (n, next) in rows.enumerate() {
            let next = next.map_err(|e| invalid(row_error(n + 1, &e)))?;
            let mut object = serde_json::Map::new();
            for (name, field) in next.get_column_iter() {
                let value = field.to_json_value();
                total += json_size(&value);
                if !value.is_null() {
                    object.insert(name.clone(), value);
                }
            }
            if total > max_bytes {
                return Err(invalid(format!(
                    "holds more than {max_bytes} bytes of values; split it into smaller files"
                )));
            }
            row(n + 1, object);
        }
        Ok(())
    }));
    read.unwrap_or_else(|_| Err(invalid("the Parquet reader failed on this file".into())))
}

/// Why row `row` could not be read, in words a dataset's owner can act on.
fn row_error(row: usize, e: &parquet::errors::ParquetError) -> String {
    let message = e.to_string();
    match message.split("Disabled feature at compile time: ").nth(1) {
        Some(codec) => format!(
            "its columns are compressed with {codec}, which Canopy does not read; \
             save it again with Snappy, gzip, LZ4 or no compression"
        ),
        None => format!("row {row}: {message}"),
    }
}

/// About how many bytes a value holds (strings by length), to bound what a file expands to.
fn json_size(value: &serde_json::Value) -> u64 {
    match value {
        serde_json::Value::String(s) => s.len() as u64,
        serde_json::Value::Array(items) => items.iter().map(json_size).sum::<u64>() + 1,
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| k.len() as u64 + json_size(v))
            .sum::<u64>()
            .saturating_add(1),
        _ => 8,
    }
}

/// The columns of `kept.parquet`: a `kept.jsonl` line's fields, `meta` as JSON text; `true`
/// marks a column every row has.
pub const KEPT_COLUMNS: [(&str, bool); 7] = [
    ("id", true),
    ("source", true),
    ("language", true),
    ("detected_language", false),
    ("text", true),
    ("url", false),
    ("meta", false),
];

/// Rows held before they are written as one row group.
const ROW_GROUP_ROWS: usize = 8192;
/// Value bytes held before the rows are written as one row group.
const ROW_GROUP_BYTES: usize = 64 << 20;

/// Writes a Parquet file of UTF-8 string columns row group by row group, holding at most one
/// group in memory: `kept.parquet`, or a source file in tests and tools.
pub struct StringTable {
    path: std::path::PathBuf,
    writer: SerializedFileWriter<std::io::BufWriter<std::fs::File>>,
    required: Vec<bool>,
    columns: Vec<Vec<Option<ByteArray>>>,
    held_bytes: usize,
}

impl StringTable {
    /// Creates (or replaces) the file at `path` with these columns (name, required). Names
    /// are ASCII letters, digits and `_`.
    pub fn create(path: &Path, columns: &[(&str, bool)]) -> Result<Self> {
        let mut schema = String::from("message table {\n");
        for (name, required) in columns {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(write_error(path, format!("bad column name {name:?}")));
            }
            let repetition = if *required { "REQUIRED" } else { "OPTIONAL" };
            schema.push_str(&format!("  {repetition} BYTE_ARRAY {name} (UTF8);\n"));
        }
        schema.push('}');
        let schema = parse_message_type(&schema).map_err(|e| write_error(path, e))?;
        let file = std::fs::File::create(path).map_err(|source| CorpusBuildError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("canopy {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = SerializedFileWriter::new(
            std::io::BufWriter::new(file),
            Arc::new(schema),
            Arc::new(properties),
        )
        .map_err(|e| write_error(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer,
            required: columns.iter().map(|(_, r)| *r).collect(),
            columns: vec![Vec::new(); columns.len()],
            held_bytes: 0,
        })
    }

    /// Adds one row: a value or `None` (null) per column, in the columns' order.
    pub fn push(&mut self, row: &[Option<&str>]) -> Result<()> {
        if row.len() != self.columns.len()
            || row
                .iter()
                .zip(&self.required)
                .any(|(v, r)| *r && v.is_none())
        {
            return Err(write_error(
                &self.path,
                "a row does not fit the columns (count, or a required value missing)",
            ));
        }
        for (column, value) in self.columns.iter_mut().zip(row) {
            self.held_bytes += value.map_or(0, str::len);
            column.push(value.map(|v| ByteArray::from(v.as_bytes().to_vec())));
        }
        if self.columns[0].len() >= ROW_GROUP_ROWS || self.held_bytes >= ROW_GROUP_BYTES {
            self.write_group()?;
        }
        Ok(())
    }

    fn write_group(&mut self) -> Result<()> {
        if self.columns.first().is_none_or(Vec::is_empty) {
            return Ok(());
        }
        let path = &self.path;
        let mut group = self
            .writer
            .next_row_group()
            .map_err(|e| write_error(path, e))?;
        for column in &mut self.columns {
            let Some(mut writer) = group.next_column().map_err(|e| write_error(path, e))? else {
                return Err(write_error(path, "fewer columns than the schema's"));
            };
            let levels: Vec<i16> = column.iter().map(|v| i16::from(v.is_some())).collect();
            let values: Vec<ByteArray> = column.drain(..).flatten().collect();
            writer
                .typed::<ByteArrayType>()
                .write_batch(&values, Some(&levels), None)
                .map_err(|e| write_error(path, e))?;
            writer.close().map_err(|e| write_error(path, e))?;
        }
        group.close().map_err(|e| write_error(path, e))?;
        self.held_bytes = 0;
        Ok(())
    }

    /// Writes what is held and closes the file.
    pub fn finish(mut self) -> Result<()> {
        self.write_group()?;
        self.writer
            .close()
            .map_err(|e| write_error(&self.path, e))?;
        Ok(())
    }
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> CorpusBuildError {
    CorpusBuildError::DocumentFile {
        path: path.to_path_buf(),
        reason: format!("writing Parquet: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(path: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut out = Vec::new();
        read_rows(path, u64::MAX, |n, row| {
            assert_eq!(n, out.len() + 1);
            out.push(row);
        })
        .unwrap();
        out
    }

    #[test]
    fn rows_read_back_across_row_groups_with_nulls_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kept.parquet");
        let mut table = StringTable::create(&path, &KEPT_COLUMNS).unwrap();
        let texts: Vec<String> = (0..20_000)
            .map(|i| format!("document {i} ünïcödé"))
            .collect();
        for (i, text) in texts.iter().enumerate() {
            let id = format!("d{i}");
            let detected = (i % 2 == 0).then_some("en");
            let meta = (i == 7).then_some("{\"year\":1948}");
            let row = [
                Some(&*id),
                Some("s"),
                Some("en"),
                detected,
                Some(text),
                None,
                meta,
            ];
            table.push(&row).unwrap();
        }
        table.finish().unwrap();
        let rows = rows_of(&path);
        assert_eq!(rows.len(), texts.len());
        assert_eq!(rows[7]["text"], texts[7].as_str());
        assert_eq!(rows[7]["meta"], "{\"year\":1948}");
        assert_eq!(rows[7]["id"], "d7");
        assert!(!rows[7].contains_key("detected_language"));
        assert!(!rows[7].contains_key("url"));
        assert_eq!(rows[8]["detected_language"], "en");
        assert!(!rows[8].contains_key("meta"));
        assert_eq!(rows[19_999]["text"], texts[19_999].as_str());
    }

    /// A fixture written by pyarrow (see `coordinator/testdata/make_parquet.py`).
    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    #[test]
    fn a_file_written_by_pyarrow_reads_with_its_types_and_nulls() {
        let rows = rows_of(&fixture("pyarrow-snappy.parquet"));
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0]["id"], 1);
        assert_eq!(rows[0]["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(rows[0]["score"], 0.5);
        assert!(
            rows[1]["text"]
                .as_str()
                .unwrap()
                .starts_with("Toute personne")
        );
        assert!(!rows[1].contains_key("url"));
        assert!(!rows[2].contains_key("text") && !rows[2].contains_key("id"));
        assert!(!rows[3].contains_key("score"));
    }

    #[test]
    fn a_codec_canopy_does_not_read_is_named_with_what_to_do() {
        let err = read_rows(&fixture("pyarrow-zstd.parquet"), u64::MAX, |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("pyarrow-zstd.parquet"), "{err}");
        assert!(
            err.contains("compressed with zstd") && err.contains("Snappy"),
            "{err}"
        );
    }

    #[test]
    fn rows_that_do_not_fit_and_bad_column_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.parquet");
        assert!(StringTable::create(&path, &[("bad name", true)]).is_err());
        let mut table = StringTable::create(&path, &[("a", true), ("b", false)]).unwrap();
        assert!(table.push(&[None, Some("x")]).is_err());
        assert!(table.push(&[Some("x")]).is_err());
        table.push(&[Some("x"), None]).unwrap();
        table.finish().unwrap();
        assert_eq!(rows_of(&path).len(), 1);
    }

    #[test]
    fn a_file_that_is_not_parquet_or_too_large_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = tmp.path().join("bad.parquet");
        std::fs::write(&bad, b"PAR1 this is not a parquet file PAR1").unwrap();
        let err = read_rows(&bad, u64::MAX, |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.parquet") && err.contains("Parquet"),
            "{err}"
        );

        let good = tmp.path().join("good.parquet");
        let mut table = StringTable::create(&good, &[("text", true)]).unwrap();
        for _ in 0..10 {
            table.push(&[Some("0123456789")]).unwrap();
        }
        table.finish().unwrap();
        let mut seen = 0;
        let err = read_rows(&good, 50, |_, _| seen += 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("split it into smaller files"), "{err}");
        assert!(seen < 10, "rows past the bound were passed on");
    }
}
