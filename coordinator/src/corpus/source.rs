//! Reading a sources directory: one subdirectory per source, each with its governance record
//! (`source.toml`) and its documents.
//!
//! ```text
//! sources/
//!   corpus.toml            optional build settings (see CorpusConfig)
//!   optout.txt             optional opt-out list (see the optout module)
//!   wiki-en/
//!     source.toml
//!     part-000.jsonl
//!   books-de/
//!     source.toml
//!     faust.txt
//! ```
//!
//! `source.toml` holds the [`DataSource`] fields: `name`, `languages` (BCP 47 tags, the first
//! is the default), `license`, `provenance_url`, `consent_basis` (`public_domain`,
//! `open_license`, `explicit_consent` or `research_exception`) and `steward_contact`. Unknown
//! keys are refused (a misspelt `licence` is an error, not a missing license). A source with
//! any key missing or invalid is refused with an error naming the source and the key, and the
//! build stops: nothing ungoverned is ever trained on.
//!
//! Documents, from the source directory's files in name order (other files are ignored with a
//! warning):
//! - `*.jsonl`: one JSON object per line with a string `text`. An `id` (string or integer) is
//!   the document id, else the id is `<file>:<line>`. A `url` string is matched by opt-out URL
//!   patterns. A `language` (or `lang`) string must be one of the source's languages, else the
//!   source's first language applies. Every other field is kept as metadata. Blank lines are
//!   skipped. A line that is not such an object is **recorded as dropped** (reason
//!   `malformed`, with `file:line` and the parse error in the detail), never a silent loss
//!   and never a stop of the whole build.
//! - `*.txt`: the whole file is one document, id `<file>` (one document per file, as a book
//!   or an article is). A file that is not UTF-8 is dropped as `malformed`.
//! - `*.parquet`: one document per row, read as a `.jsonl` line holding the row's columns
//!   (see [`super::parquet`]); a derived id is `<file>:<row>`, counting rows from 1.
//!
//! `.jsonl` and `.txt` may be compressed, as datasets are published: `*.jsonl.gz`,
//! `*.jsonl.zst`, `*.txt.gz`, `*.txt.zst` (gzip and zstd, several members or frames allowed).
//! A file that does not decompress or decode, or would expand past [`MAX_FILE_BYTES`], stops
//! the build with an error naming it (its records cannot be counted, so none can be accounted
//! for).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use canopy_protocol::governance::{ConsentBasis, DataSource};
use serde::Deserialize;

use super::{CorpusBuildError, DropReason, Result};

/// The governance record's file name.
pub const SOURCE_FILE: &str = "source.toml";

/// Largest size of one document file once decompressed.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// How a document file holds its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// One JSON object per line.
    Jsonl,
    /// One document.
    Txt,
    /// One document per row (compressed inside, by column chunk).
    Parquet,
}

/// How a document file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A document file's format and compression, from its name; `None` for other files.
fn file_kind(path: &Path) -> Option<(Format, Compression)> {
    let name = path.file_name()?.to_str()?;
    let (stem, compression) = if let Some(stem) = name.strip_suffix(".gz") {
        (stem, Compression::Gzip)
    } else if let Some(stem) = name.strip_suffix(".zst") {
        (stem, Compression::Zstd)
    } else {
        (name, Compression::None)
    };
    let format = match Path::new(stem).extension()?.to_str()? {
        "jsonl" => Format::Jsonl,
        "txt" => Format::Txt,
        "parquet" if compression == Compression::None => Format::Parquet,
        _ => return None,
    };
    Some((format, compression))
}

/// Opens a document file as a stream of its decompressed bytes.
fn open_document_file(path: &Path, compression: Compression) -> Result<Box<dyn Read>> {
    let file =
        std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path).map_err(io(path))?);
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd => {
            Box::new(
                ZstdFrames::new(file).map_err(|e| CorpusBuildError::DocumentFile {
                    path: path.to_path_buf(),
                    reason: format!("not a valid zstd file: {e}"),
                })?,
            )
        }
    })
}

/// The error for a document file that fails while it is read: an I/O error of an
/// uncompressed file, else a decompression failure.
fn read_error(path: &Path, compression: Compression, e: std::io::Error) -> CorpusBuildError {
    let codec = match compression {
        Compression::None => return io(path)(e),
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    };
    CorpusBuildError::DocumentFile {
        path: path.to_path_buf(),
        reason: format!("not a valid {codec} file: {e}"),
    }
}

/// The error for a document file that expands past `max` bytes.
fn too_large(path: &Path, max: u64) -> CorpusBuildError {
    CorpusBuildError::DocumentFile {
        path: path.to_path_buf(),
        reason: format!("expands past {max} bytes; split it into smaller files"),
    }
}

/// One zstd frame after another, as multi-threaded compressors write them, decoded as one
/// stream.
struct ZstdFrames<R: BufRead> {
    frame: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> std::result::Result<Self, ruzstd::decoding::errors::FrameDecoderError> {
        Ok(Self {
            frame: Some(ruzstd::decoding::StreamingDecoder::new(source)?),
        })
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(frame) = self.frame.as_mut() else {
                return Ok(0);
            };
            let n = frame.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // This frame is done: the next one starts where it ended, if any is left.
            if frame.get_mut().fill_buf()?.is_empty() {
                self.frame = None;
                return Ok(0);
            }
            let Some((source, decoder)) = self.frame.take().map(|f| f.into_parts()) else {
                return Ok(0);
            };
            self.frame = Some(
                ruzstd::decoding::StreamingDecoder::new_with_decoder(source, decoder)
                    .map_err(std::io::Error::other)?,
            );
        }
    }
}

/// One source: its governance record and its document files.
#[derive(Debug, Clone)]
pub struct Source {
    /// The governance record (validated).
    pub record: DataSource,
    /// Its directory.
    pub dir: PathBuf,
    /// Its document files (`.jsonl`, `.txt`, either compressed, and `.parquet`), in name order.
    pub files: Vec<PathBuf>,
}

/// A document as read from a source.
#[derive(Debug, Clone, PartialEq)]
pub struct RawDocument {
    /// Its id (from the record, or derived from file and line).
    pub id: String,
    /// Its language tag.
    pub language: String,
    /// Its text.
    pub text: String,
    /// Its URL, if the record has one.
    pub url: Option<String>,
    /// Every other field of the record.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A record that could not be read as a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    /// The derived id (`<file>:<line>` or `<file>`).
    pub id: String,
    /// Why it is dropped.
    pub reason: DropReason,
    /// `file:line: what is wrong`.
    pub detail: String,
}

/// One input record: a document, or a record that is dropped on reading.
pub type Record = std::result::Result<RawDocument, Unreadable>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceToml {
    name: Option<String>,
    languages: Option<Vec<String>>,
    license: Option<String>,
    provenance_url: Option<String>,
    consent_basis: Option<ConsentBasis>,
    steward_contact: Option<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CorpusBuildError + '_ {
    move |source| CorpusBuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and validates every source under `dir` (subdirectories in name order). Fails on the
/// first source whose governance record is incomplete, naming the source and the key.
pub fn read_sources(dir: &Path) -> Result<Vec<Source>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    let mut sources: Vec<Source> = Vec::with_capacity(dirs.len());
    for d in dirs {
        let source = read_source(&d)?;
        if let Some(other) = sources.iter().find(|s| s.record.name == source.record.name) {
            return Err(CorpusBuildError::Sources {
                path: dir.to_path_buf(),
                reason: format!(
                    "{} and {} both name themselves {:?}",
                    other.dir.display(),
                    d.display(),
                    source.record.name
                ),
            });
        }
        sources.push(source);
    }
    if sources.is_empty() {
        return Err(CorpusBuildError::Sources {
            path: dir.to_path_buf(),
            reason: "no source subdirectories (each needs a source.toml)".into(),
        });
    }
    Ok(sources)
}

/// Reads one source directory: its `source.toml` (refused when incomplete) and its files.
pub fn read_source(dir: &Path) -> Result<Source> {
    let path = dir.join(SOURCE_FILE);
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let refuse = |name: &str, reason: String| CorpusBuildError::Governance {
        name: name.to_string(),
        path: path.clone(),
        reason,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(
                &dir_name,
                format!("it has no {SOURCE_FILE} (its governance record)"),
            ));
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let raw: SourceToml = toml::from_str(&text).map_err(|e| refuse(&dir_name, e.to_string()))?;
    let name = raw.name.clone().unwrap_or_else(|| dir_name.clone());
    let missing = |key: &str| {
        refuse(
            &name,
            format!(
                "{SOURCE_FILE} has no `{key}`; every source needs a license and a consent basis \
                 (and name, languages, provenance_url, steward_contact) before it is used"
            ),
        )
    };
    let record = DataSource {
        name: raw.name.ok_or_else(|| missing("name"))?,
        languages: raw.languages.ok_or_else(|| missing("languages"))?,
        license: raw.license.ok_or_else(|| missing("license"))?,
        provenance_url: raw
            .provenance_url
            .ok_or_else(|| missing("provenance_url"))?,
        consent_basis: raw.consent_basis.ok_or_else(|| missing("consent_basis"))?,
        steward_contact: raw
            .steward_contact
            .ok_or_else(|| missing("steward_contact"))?,
    };
    record
        .validate()
        .map_err(|e| refuse(&name, e.to_string()))?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = entry.map_err(io(dir))?.path();
        match file_kind(&p) {
            Some(_) if p.is_file() => files.push(p),
            _ if p.file_name().is_some_and(|n| n == SOURCE_FILE) => {}
            _ => tracing::warn!(
                "source {}: ignoring {} (not .jsonl or .txt, plain, .gz or .zst)",
                record.name,
                p.display()
            ),
        }
    }
    files.sort();
    Ok(Source {
        record,
        dir: dir.to_path_buf(),
        files,
    })
}

impl Source {
    /// Every record of the source, in file and line order.
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        self.for_each_record(MAX_FILE_BYTES, |r| out.push(r))?;
        Ok(out)
    }

    /// Streams every record of the source, in file and line order, to `record`, holding one
    /// record at a time (a `.txt` file is one record). A file that expands past `max_file`
    /// bytes, or fails to decompress, stops the reading with an error naming it.
    pub fn for_each_record(&self, max_file: u64, mut record: impl FnMut(Record)) -> Result<()> {
        for path in &self.files {
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some((format, compression)) = file_kind(path) else {
                continue;
            };
            if format == Format::Parquet {
                super::parquet::read_rows(path, max_file, |row, object| {
                    record(self.object_record(object, &format!("{file}:{row}")));
                })?;
                continue;
            }
            let mut reader =
                std::io::BufReader::new(open_document_file(path, compression)?.take(max_file + 1));
            let failed = |e| read_error(path, compression, e);
            if format == Format::Txt {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).map_err(failed)?;
                if bytes.len() as u64 > max_file {
                    return Err(too_large(path, max_file));
                }
                record(match String::from_utf8(bytes) {
                    Ok(text) => Ok(RawDocument {
                        id: file.clone(),
                        language: self.record.languages[0].clone(),
                        text,
                        url: None,
                        metadata: Default::default(),
                    }),
                    Err(e) => Err(Unreadable {
                        id: file.clone(),
                        reason: DropReason::Malformed,
                        detail: format!("{file}: not UTF-8 ({e})"),
                    }),
                });
                continue;
            }
            let mut line = Vec::new();
            let mut total = 0u64;
            for n in 1.. {
                line.clear();
                let read = reader.read_until(b'\n', &mut line).map_err(failed)?;
                if read == 0 {
                    break;
                }
                total += read as u64;
                if total > max_file {
                    return Err(too_large(path, max_file));
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let body = line.strip_suffix(b"\n").unwrap_or(&line);
                record(self.json_record(body, &format!("{file}:{n}")));
            }
        }
        Ok(())
    }

    fn json_record(&self, line: &[u8], at: &str) -> Record {
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| malformed(at, format!("not JSON ({e})")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(malformed(at, "not a JSON object".into()));
        };
        self.object_record(map, at)
    }

    /// A record from one JSON object (a `.jsonl` line or a Parquet row); `at` names it.
    fn object_record(
        &self,
        mut map: serde_json::Map<String, serde_json::Value>,
        at: &str,
    ) -> Record {
        let bad = |what: String| malformed(at, what);
        let text = match map.remove("text") {
            Some(serde_json::Value::String(t)) => t,
            Some(_) => return Err(bad("`text` is not a string".into())),
            None => return Err(bad("no `text` field".into())),
        };
        let id = match map.remove("id") {
            None | Some(serde_json::Value::Null) => at.to_string(),
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => return Err(bad("`id` is neither a string nor a number".into())),
        };
        if id.is_empty()
            || id.len() > canopy_protocol::corpus::MAX_ID_BYTES
            || id.chars().any(char::is_control)
        {
            return Err(bad(format!(
                "id {id:?} is empty, over 256 bytes or holds control characters"
            )));
        }
        let url = match map.get("url") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(u)) => Some(u.clone()),
            Some(_) => return Err(bad("`url` is not a string".into())),
        };
        let language = match map.get("language").or_else(|| map.get("lang")) {
            None | Some(serde_json::Value::Null) => self.record.languages[0].clone(),
            Some(serde_json::Value::String(l)) if self.record.languages.contains(l) => l.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "language {other} is not one of the source's languages {:?}",
                    self.record.languages
                )));
            }
        };
        map.remove("url");
        map.remove("language");
        map.remove("lang");
        Ok(RawDocument {
            id,
            language,
            text,
            url,
            metadata: map,
        })
    }
}

/// A record dropped as malformed; `at` is its `file:line` (or `file:row`).
fn malformed(at: &str, what: String) -> Unreadable {
    Unreadable {
        id: at.to_string(),
        reason: DropReason::Malformed,
        detail: format!("{at}: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name = \"s\"\nlanguages = [\"en\", \"fr\"]\nlicense = \"CC0-1.0\"\n\
        provenance_url = \"https://example.org\"\nconsent_basis = \"public_domain\"\n\
        steward_contact = \"data@example.org\"\n";

    /// Makes `dir` a source directory with the [`GOOD`] governance record; returns it.
    fn governed(dir: std::path::PathBuf) -> std::path::PathBuf {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SOURCE_FILE), GOOD).unwrap();
        dir
    }

    #[test]
    fn a_source_without_license_or_consent_is_refused_by_name_and_key() {
        let tmp = tempfile::tempdir().unwrap();
        for (key, dir) in [("license", "a"), ("consent_basis", "b")] {
            let d = tmp.path().join(dir);
            std::fs::create_dir_all(&d).unwrap();
            let text: String = GOOD
                .lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .replace("\"s\"", &format!("\"src-{dir}\""));
            std::fs::write(d.join(SOURCE_FILE), text).unwrap();
            let err = read_source(&d).unwrap_err().to_string();
            assert!(
                err.contains(&format!("src-{dir}")) && err.contains(&format!("`{key}`")),
                "{err}"
            );
        }
        let d = tmp.path().join("c");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(SOURCE_FILE), GOOD.replace("license", "licence")).unwrap();
        let err = read_source(&d).unwrap_err().to_string();
        assert!(err.contains("licence"), "{err}");
        let d = tmp.path().join("no-record");
        std::fs::create_dir_all(&d).unwrap();
        let err = read_source(&d).unwrap_err().to_string();
        assert!(
            err.contains("no-record") && err.contains("source.toml"),
            "{err}"
        );
    }

    #[test]
    fn records_are_read_and_malformed_lines_recorded_with_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let d = governed(tmp.path().join("s"));
        std::fs::write(
            d.join("a.jsonl"),
            "{\"text\": \"hello\", \"id\": 7, \"url\": \"https://x\", \"year\": 2020}\n\n\
             {\"text\": 3}\nnot json\n{\"text\": \"bonjour\", \"lang\": \"fr\"}\n\
             {\"text\": \"x\", \"language\": \"de\"}\n",
        )
        .unwrap();
        std::fs::write(d.join("b.txt"), "a whole book").unwrap();
        std::fs::write(d.join("c.bin"), [0xff]).unwrap();
        let source = read_source(&d).unwrap();
        let records = source.records().unwrap();
        assert_eq!(records.len(), 6);
        let first = records[0].as_ref().unwrap();
        assert_eq!(
            (
                first.id.as_str(),
                first.language.as_str(),
                first.url.as_deref()
            ),
            ("7", "en", Some("https://x"))
        );
        assert_eq!(first.metadata["year"], 2020);
        let bad = records[1].as_ref().unwrap_err();
        assert_eq!(bad.id, "a.jsonl:3");
        assert!(bad.detail.contains("a.jsonl:3") && bad.detail.contains("text"));
        assert!(
            records[2]
                .as_ref()
                .unwrap_err()
                .detail
                .starts_with("a.jsonl:4: not JSON")
        );
        let fr = records[3].as_ref().unwrap();
        assert_eq!((fr.id.as_str(), fr.language.as_str()), ("a.jsonl:5", "fr"));
        assert!(records[4].as_ref().unwrap_err().detail.contains("de"));
        assert_eq!(records[5].as_ref().unwrap().id, "b.txt");
    }

    #[test]
    fn parquet_rows_read_like_jsonl_lines_with_row_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = governed(tmp.path().join("s"));
        let columns = [
            ("id", false),
            ("text", false),
            ("lang", false),
            ("title", false),
        ];
        let mut table =
            super::super::parquet::StringTable::create(&dir.join("part.parquet"), &columns)
                .unwrap();
        table
            .push(&[Some("a"), Some("first"), Some("fr"), Some("T")])
            .unwrap();
        table.push(&[None, Some("second"), None, None]).unwrap();
        table.push(&[Some("c"), None, None, None]).unwrap();
        table
            .push(&[Some("d"), Some("fourth"), Some("xx"), None])
            .unwrap();
        table.finish().unwrap();
        let records = read_source(&dir).unwrap().records().unwrap();
        assert_eq!(records.len(), 4);
        let first = records[0].as_ref().unwrap();
        assert_eq!((first.id.as_str(), first.language.as_str()), ("a", "fr"));
        assert_eq!(first.metadata["title"], "T");
        let second = records[1].as_ref().unwrap();
        assert_eq!(
            (second.id.as_str(), second.language.as_str()),
            ("part.parquet:2", "en")
        );
        let no_text = records[2].as_ref().unwrap_err();
        assert_eq!(no_text.detail, "part.parquet:3: no `text` field");
        let bad_language = records[3].as_ref().unwrap_err();
        assert!(
            bad_language.detail.starts_with("part.parquet:4: language"),
            "{bad_language:?}"
        );
    }

    #[test]
    fn compressed_files_read_like_plain_ones_and_bad_ones_are_named() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let lines = "{\"id\": \"a\", \"text\": \"first document\"}\n\
                     {\"id\": \"b\", \"text\": \"second document\"}\n";
        let gzip = |data: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let zstd = |data: &[u8]| {
            ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
        };
        let (half_a, half_b) = lines.split_at(lines.find('\n').unwrap() + 1);
        let sources = [
            ("plain", vec![("part.jsonl", lines.as_bytes().to_vec())]),
            ("gz", vec![("part.jsonl.gz", gzip(lines.as_bytes()))]),
            ("zst", vec![("part.jsonl.zst", zstd(lines.as_bytes()))]),
            (
                "members",
                vec![(
                    "part.jsonl.gz",
                    [gzip(half_a.as_bytes()), gzip(half_b.as_bytes())].concat(),
                )],
            ),
            (
                "frames",
                vec![(
                    "part.jsonl.zst",
                    [zstd(half_a.as_bytes()), zstd(half_b.as_bytes())].concat(),
                )],
            ),
            (
                "book",
                vec![("tale.txt.zst", zstd("once upon a time".as_bytes()))],
            ),
        ];
        let mut texts = Vec::new();
        for (name, files) in &sources {
            let d = governed(tmp.path().join(name));
            for (file, bytes) in files {
                std::fs::write(d.join(file), bytes).unwrap();
            }
            let records = read_source(&d).unwrap().records().unwrap();
            texts.push(
                records
                    .into_iter()
                    .map(|r| r.unwrap().text)
                    .collect::<Vec<_>>(),
            );
        }
        let want = vec!["first document".to_string(), "second document".to_string()];
        for (i, t) in texts[..5].iter().enumerate() {
            assert_eq!(t, &want, "{}", sources[i].0);
        }
        assert_eq!(texts[5], vec!["once upon a time".to_string()]);

        // A damaged file stops the build, named; so does one that expands too far.
        let d = governed(tmp.path().join("damaged"));
        let mut bad = gzip(lines.as_bytes());
        let mid = bad.len() / 2;
        bad.truncate(mid);
        std::fs::write(d.join("part.jsonl.gz"), &bad).unwrap();
        let err = read_source(&d).unwrap().records().unwrap_err().to_string();
        assert!(
            err.contains("part.jsonl.gz") && err.contains("gzip"),
            "{err}"
        );
        let d = governed(tmp.path().join("big"));
        let line = "{\"text\": \"fifteen bytes..\"}\n";
        let body = line.repeat((1 << 16) / line.len());
        std::fs::write(d.join("big.jsonl.zst"), zstd(body.as_bytes())).unwrap();
        let big = read_source(&d).unwrap();
        let mut seen = 0;
        let err = big.for_each_record(1000, |_| seen += 1).unwrap_err();
        assert!(err.to_string().contains("expands past 1000 bytes"), "{err}");
        assert!(
            seen <= 1000 / line.len(),
            "records past the bound were passed on"
        );
        let mut all = 0;
        big.for_each_record(body.len() as u64, |r| all += usize::from(r.is_ok()))
            .unwrap();
        assert_eq!(all, (1 << 16) / line.len());
    }
}
