//! Data governance records, the ROOTS way: every corpus source carries who stewards it, under
//! which license and on what basis it may be used, and anyone may ask for their documents to be
//! removed.

use serde::{Deserialize, Serialize};

use crate::codec::{self, MAX_RECORD_LEN};
use crate::error::{CodecError, GovernanceError};
use crate::id::Digest;

/// Why a source may be used for training.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConsentBasis {
    /// The texts are in the public domain.
    PublicDomain,
    /// An open license that permits this use (the license field names it).
    OpenLicense,
    /// The rights holders agreed explicitly.
    ExplicitConsent,
    /// A legal exception for research (e.g. text and data mining), with the steward's agreement.
    ResearchException,
}

/// A corpus source and its governance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSource {
    /// A short unique name.
    pub name: String,
    /// BCP 47 language tags of its documents.
    pub languages: Vec<String>,
    /// SPDX license identifier (or the license's name).
    pub license: String,
    /// Where the data came from.
    pub provenance_url: String,
    /// Why it may be used.
    pub consent_basis: ConsentBasis,
    /// Who answers for it (e-mail or URL).
    pub steward_contact: String,
}

/// Most languages one source may declare.
pub const MAX_LANGUAGES: usize = 64;

impl DataSource {
    /// Checks that every required field is present and well formed.
    pub fn validate(&self) -> Result<(), GovernanceError> {
        let required = [
            ("name", &self.name),
            ("license", &self.license),
            ("provenance_url", &self.provenance_url),
            ("steward_contact", &self.steward_contact),
        ];
        for (field, value) in required {
            if value.trim().is_empty() {
                return Err(GovernanceError::Missing { field });
            }
            if value.len() > 1024 || value.chars().any(char::is_control) {
                return Err(GovernanceError::Invalid {
                    field,
                    reason: "longer than 1024 bytes or holds control characters".into(),
                });
            }
        }
        if !self
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(GovernanceError::Invalid {
                field: "name",
                reason: format!(
                    "{:?} may hold only letters, digits, '-', '_' and '.'",
                    self.name
                ),
            });
        }
        if self.languages.is_empty() {
            return Err(GovernanceError::Missing { field: "languages" });
        }
        if self.languages.len() > MAX_LANGUAGES {
            return Err(GovernanceError::Invalid {
                field: "languages",
                reason: format!(
                    "{} languages, at most {MAX_LANGUAGES}",
                    self.languages.len()
                ),
            });
        }
        for tag in &self.languages {
            if !is_language_tag(tag) {
                return Err(GovernanceError::Invalid {
                    field: "languages",
                    reason: format!("{tag:?} is not a BCP 47 tag such as \"fr\" or \"zh-Hant\""),
                });
            }
        }
        if !self.provenance_url.contains("://") {
            return Err(GovernanceError::Invalid {
                field: "provenance_url",
                reason: format!("{:?} is not a URL", self.provenance_url),
            });
        }
        Ok(())
    }

    /// Encodes the record as a frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes a frame of at most [`MAX_RECORD_LEN`] bytes and validates it.
    pub fn from_frame(frame: &[u8]) -> Result<Self, GovernanceFrameError> {
        let source: Self = codec::decode::<Self, MAX_RECORD_LEN>(frame)?;
        source.validate()?;
        Ok(source)
    }
}

/// A governance frame that does not decode or does not validate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceFrameError {
    /// Not a valid frame.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A valid frame with an invalid record.
    #[error(transparent)]
    Invalid(#[from] GovernanceError),
}

/// A BCP 47 tag in the simple form `ll[-Ssss][-RR]`: 2–8 letter subtags joined by `-`, the
/// first of 2–3 letters.
fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let Some(primary) = parts.next() else {
        return false;
    };
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// What an opt-out request removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OptOutTarget {
    /// A document by the blake3 of its normalised text.
    DocumentHash(Digest),
    /// A document by its `id` field.
    DocumentId(String),
    /// Every document whose URL matches this pattern (`*` matches any run of characters).
    UrlPattern(String),
}

/// A removal request, applied to every build from the one it arrived before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    /// What to remove.
    pub target: OptOutTarget,
    /// When it was received, in seconds since the Unix epoch.
    pub received_at: u64,
    /// Who asked, or on whose behalf, if they said.
    pub requested_by: Option<String>,
    /// Why, if they said.
    pub reason: Option<String>,
}

impl OptOut {
    /// Whether this request removes a document with these identifiers.
    pub fn matches(&self, text_hash: &Digest, id: Option<&str>, url: Option<&str>) -> bool {
        match &self.target {
            OptOutTarget::DocumentHash(h) => h == text_hash,
            OptOutTarget::DocumentId(want) => id == Some(want.as_str()),
            OptOutTarget::UrlPattern(pattern) => url.is_some_and(|u| glob_match(pattern, u)),
        }
    }

    /// Encodes the entry as a frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// Decodes a frame of at most [`MAX_RECORD_LEN`] bytes.
    pub fn from_frame(frame: &[u8]) -> Result<Self, CodecError> {
        codec::decode::<Self, MAX_RECORD_LEN>(frame)
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
/// Linear time: no backtracking blow-up on hostile patterns.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> DataSource {
        DataSource {
            name: "wiki-fr".into(),
            languages: vec!["fr".into(), "oc".into()],
            license: "CC-BY-SA-4.0".into(),
            provenance_url: "https://dumps.example.org/frwiki".into(),
            consent_basis: ConsentBasis::OpenLicense,
            steward_contact: "data@example.org".into(),
        }
    }

    #[test]
    fn valid_source_round_trips() {
        let s = source();
        s.validate().unwrap();
        assert_eq!(DataSource::from_frame(&s.to_frame().unwrap()).unwrap(), s);
    }

    #[test]
    fn incomplete_sources_are_refused_by_field() {
        let mut s = source();
        s.license = " ".into();
        assert_eq!(
            s.validate(),
            Err(GovernanceError::Missing { field: "license" })
        );
        let mut s = source();
        s.languages.clear();
        assert_eq!(
            s.validate(),
            Err(GovernanceError::Missing { field: "languages" })
        );
        let mut s = source();
        s.languages = vec!["french language".into()];
        assert!(matches!(
            s.validate(),
            Err(GovernanceError::Invalid {
                field: "languages",
                ..
            })
        ));
        let mut s = source();
        s.provenance_url = "somewhere".into();
        assert!(matches!(
            s.validate(),
            Err(GovernanceError::Invalid {
                field: "provenance_url",
                ..
            })
        ));
        // An invalid record does not come in through a frame either.
        assert!(DataSource::from_frame(&s.to_frame().unwrap()).is_err());
    }

    #[test]
    fn opt_out_matching() {
        let hash = Digest::of(b"text");
        let by = |target| OptOut {
            target,
            received_at: 0,
            requested_by: None,
            reason: None,
        };
        assert!(by(OptOutTarget::DocumentHash(hash)).matches(&hash, None, None));
        assert!(!by(OptOutTarget::DocumentHash(hash)).matches(&Digest::of(b"x"), None, None));
        assert!(by(OptOutTarget::DocumentId("doc-7".into())).matches(&hash, Some("doc-7"), None));
        let url = by(OptOutTarget::UrlPattern(
            "https://blog.example.com/*".into(),
        ));
        assert!(url.matches(&hash, None, Some("https://blog.example.com/2024/post")));
        assert!(!url.matches(&hash, None, Some("https://example.com/blog")));
        assert!(!url.matches(&hash, None, None));
        assert!(glob_match("*a*b*c", "xxaxxbxxc"));
        assert!(!glob_match("*a*b*c", "xxaxxcxxb"));
        assert!(glob_match("**", ""));
        let entry = by(OptOutTarget::UrlPattern("*".into()));
        assert_eq!(
            OptOut::from_frame(&entry.to_frame().unwrap()).unwrap(),
            entry
        );
    }
}
