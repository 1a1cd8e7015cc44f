//! The opt-out list: requests to remove documents, applied at planning time (so an opted-out
//! text is never sent to a volunteer) and recorded in `dropped.jsonl` (reason `opt_out`) and
//! in the data card (each request with the number of documents it removed).
//!
//! The file (`optout.txt` in the sources directory, or `--optout FILE`) holds one request per
//! line; blank lines and lines starting with `#` are ignored:
//!
//! ```text
//! hash:<64 hex digits>   blake3 of the document's normalised text (canopy_protocol::corpus::text_hash)
//! id:<document id>       a document id (in any source)
//! id:<source>/<id>       a document id in one source
//! url:<pattern>          documents whose `url` matches; `*` matches any run of characters
//! ```
//!
//! Anything else is an error naming the file and line.

use std::path::Path;

use canopy_protocol::Digest;
use canopy_protocol::governance::{OptOut, OptOutTarget};
use serde::Serialize;

use super::{CorpusBuildError, Result};

/// The file name looked for in a sources directory.
pub const FILE_NAME: &str = "optout.txt";

/// One opt-out request, as written in the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OptOutRule {
    /// The line as written (`hash:…`, `id:…`, `url:…`).
    pub rule: String,
    /// Only documents of this source, when the id form names one.
    pub source: Option<String>,
    /// The request.
    #[serde(skip)]
    pub request: OptOut,
}

impl OptOutRule {
    /// Whether this request removes a document of `source` with these identifiers.
    pub fn matches(&self, source: &str, text_hash: &Digest, id: &str, url: Option<&str>) -> bool {
        if self.source.as_deref().is_some_and(|s| s != source) {
            return false;
        }
        self.request.matches(text_hash, Some(id), url)
    }
}

/// Parses an opt-out list; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<OptOutRule>> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| CorpusBuildError::Config {
            path: path.to_path_buf(),
            reason: format!("line {}: {reason}", n + 1),
        };
        let (kind, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("{line:?} is not hash:…, id:… or url:…")))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(bad(format!("{kind}: has no value")));
        }
        let (target, source) = match kind.trim() {
            "hash" => (
                OptOutTarget::DocumentHash(
                    value
                        .parse()
                        .map_err(|e| bad(format!("{value:?} is not a blake3 digest: {e}")))?,
                ),
                None,
            ),
            "id" => match value.split_once('/') {
                Some((source, id)) if !source.is_empty() && !id.is_empty() => (
                    OptOutTarget::DocumentId(id.to_string()),
                    Some(source.to_string()),
                ),
                _ => (OptOutTarget::DocumentId(value.to_string()), None),
            },
            "url" => (OptOutTarget::UrlPattern(value.to_string()), None),
            other => return Err(bad(format!("unknown kind {other:?} (hash, id or url)"))),
        };
        rules.push(OptOutRule {
            rule: format!("{}:{value}", kind.trim()),
            source,
            request: OptOut {
                target,
                received_at: 0,
                requested_by: None,
                reason: None,
            },
        });
    }
    Ok(rules)
}

/// Reads the list at `path`.
pub fn load(path: &Path) -> Result<Vec<OptOutRule>> {
    let text = std::fs::read_to_string(path).map_err(|source| CorpusBuildError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_matches() {
        let hash = canopy_protocol::corpus::text_hash("Some  Text");
        let text = format!(
            "# comment\n\nhash:{hash}\nid:doc-1\nid:news/7\nurl:https://blog.example.com/*\n"
        );
        let rules = parse(&text, Path::new("optout.txt")).unwrap();
        assert_eq!(rules.len(), 4);
        assert!(rules[0].matches(
            "any",
            &canopy_protocol::corpus::text_hash("some text"),
            "x",
            None
        ));
        assert!(rules[1].matches("a", &Digest::of(b""), "doc-1", None));
        assert!(rules[2].matches("news", &Digest::of(b""), "7", None));
        assert!(!rules[2].matches("wiki", &Digest::of(b""), "7", None));
        assert!(rules[3].matches(
            "a",
            &Digest::of(b""),
            "1",
            Some("https://blog.example.com/p")
        ));
        assert!(!rules[3].matches("a", &Digest::of(b""), "1", None));
    }

    #[test]
    fn bad_lines_name_the_line() {
        for bad in ["hash:zz", "nonsense", "email:a@b", "id:"] {
            let err = parse(&format!("# ok\n{bad}\n"), Path::new("o.txt"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("o.txt") && err.contains("line 2"), "{err}");
        }
    }
}
