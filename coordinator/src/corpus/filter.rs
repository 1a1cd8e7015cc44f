//! Quality filters: per-language thresholds over the quality signals the corpus kernels
//! compute (`canopy_shaders::kernels::quality`), in the spirit of the ROOTS filtering
//! pipeline (minimum length, character and word repetition, special characters), with
//! defaults overridable per language in `corpus.toml`.
//!
//! Ratios, for a document with signals `s`:
//!
//! | threshold | drops when | reason |
//! | --- | --- | --- |
//! | `min_words` | `s.words < min_words` | `too_short` |
//! | `min_bytes` | `s.bytes < min_bytes` | `too_short` |
//! | `max_char_repetition` | `s.char_repetition / s.bytes > max` (bytes equal to the byte before) | `char_repetition` |
//! | `max_word_repetition` | `s.word_repetition / s.words > max` (words repeating an earlier word) | `word_repetition` |
//! | `max_special_ratio` | `s.special / s.bytes > max` (ASCII punctuation, symbols, controls) | `special_characters` |
//! | `max_digit_ratio` | `s.digits / s.bytes > max` | `digits` |
//!
//! | `min_closed_class_ratio` | fewer than this share of the words are function words of the language ([`super::closed_class`]; 0, the default, is off; languages without a list are not checked) | `closed_class_ratio` |
//! | `max_flagged_word_ratio` | more than this share of the words (of the letters, for `zh`) are flagged words of the language ([`super::flagged`]; 1, the default, is off; languages without a list are not checked) | `flagged_words` |
//!
//! The first failing check, in this order, is the reason. The word-repetition ratio grows with
//! length (natural text reuses function words), so its default (0.8) suits documents of up to
//! a few thousand words; raise it for corpora of long books. Languages written without spaces
//! (`zh`, `ja`, `th`, …) have few whitespace-separated words: their defaults ask for bytes
//! instead of words.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DropReason;

/// The thresholds for one language. A key left out takes its default, so `[filters.default]`
/// may name only what it changes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterThresholds {
    /// Fewest words.
    pub min_words: u32,
    /// Fewest bytes.
    pub min_bytes: u32,
    /// Largest fraction of bytes equal to the byte before.
    pub max_char_repetition: f64,
    /// Largest fraction of words that repeat an earlier word.
    pub max_word_repetition: f64,
    /// Largest fraction of special bytes.
    pub max_special_ratio: f64,
    /// Largest fraction of digit bytes.
    pub max_digit_ratio: f64,
    /// Smallest fraction of words that are function words of the language (0: off).
    pub min_closed_class_ratio: f64,
    /// Largest fraction of words that are flagged words of the language (1: off).
    pub max_flagged_word_ratio: f64,
}

impl Default for FilterThresholds {
    fn default() -> Self {
        Self {
            min_words: 15,
            min_bytes: 64,
            max_char_repetition: 0.2,
            max_word_repetition: 0.8,
            max_special_ratio: 0.3,
            max_digit_ratio: 0.4,
            min_closed_class_ratio: 0.0,
            max_flagged_word_ratio: 1.0,
        }
    }
}

/// A per-language override: only the keys given replace the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdOverride {
    /// See [`FilterThresholds::min_words`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_words: Option<u32>,
    /// See [`FilterThresholds::min_bytes`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<u32>,
    /// See [`FilterThresholds::max_char_repetition`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_char_repetition: Option<f64>,
    /// See [`FilterThresholds::max_word_repetition`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_word_repetition: Option<f64>,
    /// See [`FilterThresholds::max_special_ratio`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_special_ratio: Option<f64>,
    /// See [`FilterThresholds::max_digit_ratio`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_digit_ratio: Option<f64>,
    /// See [`FilterThresholds::min_closed_class_ratio`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_closed_class_ratio: Option<f64>,
    /// See [`FilterThresholds::max_flagged_word_ratio`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_flagged_word_ratio: Option<f64>,
}

/// The filter configuration: defaults and per-language overrides (`[filters.default]`,
/// `[filters.languages.<tag>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Thresholds for languages without an override.
    pub default: FilterThresholds,
    /// Per-language overrides, by BCP 47 tag (the primary subtag also matches: `zh` applies to
    /// `zh-Hant` unless it has its own).
    pub languages: BTreeMap<String, ThresholdOverride>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        let unspaced = ThresholdOverride {
            min_words: Some(1),
            min_bytes: Some(150),
            ..ThresholdOverride::default()
        };
        Self {
            default: FilterThresholds::default(),
            languages: ["zh", "ja", "th", "lo", "km", "my"]
                .into_iter()
                .map(|l| (l.to_string(), unspaced))
                .collect(),
        }
    }
}

impl FilterConfig {
    /// The thresholds for `language`.
    pub fn for_language(&self, language: &str) -> FilterThresholds {
        let primary = language.split('-').next().unwrap_or(language);
        let Some(o) = self
            .languages
            .get(language)
            .or_else(|| self.languages.get(primary))
        else {
            return self.default;
        };
        let d = self.default;
        FilterThresholds {
            min_words: o.min_words.unwrap_or(d.min_words),
            min_bytes: o.min_bytes.unwrap_or(d.min_bytes),
            max_char_repetition: o.max_char_repetition.unwrap_or(d.max_char_repetition),
            max_word_repetition: o.max_word_repetition.unwrap_or(d.max_word_repetition),
            max_special_ratio: o.max_special_ratio.unwrap_or(d.max_special_ratio),
            max_digit_ratio: o.max_digit_ratio.unwrap_or(d.max_digit_ratio),
            min_closed_class_ratio: o.min_closed_class_ratio.unwrap_or(d.min_closed_class_ratio),
            max_flagged_word_ratio: o.max_flagged_word_ratio.unwrap_or(d.max_flagged_word_ratio),
        }
    }

    /// Checks that every ratio lies in `[0, 1]`.
    pub fn validate(&self) -> Result<(), String> {
        let langs = self
            .languages
            .keys()
            .map(|l| (l.as_str(), self.for_language(l)));
        for (lang, t) in std::iter::once(("default", self.default)).chain(langs) {
            for (name, v) in [
                ("max_char_repetition", t.max_char_repetition),
                ("max_word_repetition", t.max_word_repetition),
                ("max_special_ratio", t.max_special_ratio),
                ("max_digit_ratio", t.max_digit_ratio),
                ("min_closed_class_ratio", t.min_closed_class_ratio),
                ("max_flagged_word_ratio", t.max_flagged_word_ratio),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("filters.{lang}.{name} = {v} is outside [0, 1]"));
                }
            }
        }
        Ok(())
    }
}

impl FilterThresholds {
    /// The reason to drop a document with `signals` (the kernel's order), or `None` to keep it.
    pub fn check(&self, signals: &[u32; 8]) -> Option<DropReason> {
        let [
            bytes,
            words,
            char_rep,
            word_rep,
            special,
            digits,
            _upper,
            _lines,
        ] = *signals;
        let ratio = |n: u32, d: u32| {
            if d == 0 {
                0.0
            } else {
                f64::from(n) / f64::from(d)
            }
        };
        if words < self.min_words || bytes < self.min_bytes {
            Some(DropReason::TooShort)
        } else if ratio(char_rep, bytes) > self.max_char_repetition {
            Some(DropReason::CharRepetition)
        } else if ratio(word_rep, words) > self.max_word_repetition {
            Some(DropReason::WordRepetition)
        } else if ratio(special, bytes) > self.max_special_ratio {
            Some(DropReason::SpecialCharacters)
        } else if ratio(digits, bytes) > self.max_digit_ratio {
            Some(DropReason::Digits)
        } else {
            None
        }
    }
}

impl FilterThresholds {
    /// The closed-class check of `text` in `language`, run after [`Self::check`] (it reads
    /// the text, which the kernels' signals do not cover).
    pub fn check_closed_class(&self, language: &str, text: &str) -> Option<DropReason> {
        if self.min_closed_class_ratio <= 0.0 {
            return None;
        }
        super::closed_class::ratio(language, text)
            .filter(|&r| r < self.min_closed_class_ratio)
            .map(|_| DropReason::ClosedClassRatio)
    }

    /// The flagged-word check of `text` in `language`, run after the closed-class check.
    pub fn check_flagged(&self, language: &str, text: &str) -> Option<DropReason> {
        if self.max_flagged_word_ratio >= 1.0 {
            return None;
        }
        super::flagged::ratio(language, text)
            .filter(|&r| r > self.max_flagged_word_ratio)
            .map(|_| DropReason::FlaggedWords)
    }
}

#[cfg(test)]
mod tests {
    use canopy_shaders::kernels::quality::quality_reference;

    use super::*;

    fn check(config: &FilterConfig, lang: &str, text: &str) -> Option<DropReason> {
        config
            .for_language(lang)
            .check(&quality_reference(text.as_bytes()).to_array())
    }

    #[test]
    fn defaults_keep_prose_and_drop_junk_for_the_right_reason() {
        let c = FilterConfig::default();
        let prose = "The workshop gathered researchers from many countries to build an open \
                     multilingual corpus, document its sources, and train a large language model \
                     on it in the open.";
        assert_eq!(check(&c, "en", prose), None);
        assert_eq!(check(&c, "en", "Too short."), Some(DropReason::TooShort));
        let spam = "buy now ".repeat(40);
        assert_eq!(check(&c, "en", &spam), Some(DropReason::WordRepetition));
        let chars = format!("{prose} {}", "a".repeat(400));
        assert_eq!(check(&c, "en", &chars), Some(DropReason::CharRepetition));
        let symbols = format!("{prose} {}", "$% #@ !& *( ".repeat(30));
        assert_eq!(
            check(&c, "en", &symbols),
            Some(DropReason::SpecialCharacters)
        );
        let numbers: Vec<String> = (0..300).map(|i| (1000 + 7 * i).to_string()).collect();
        let digits = format!("{prose} {}", numbers.join(" "));
        assert_eq!(check(&c, "en", &digits), Some(DropReason::Digits));
    }

    #[test]
    fn the_flagged_word_filter_is_off_by_default_and_drops_dense_pages_when_set() {
        let mut c = FilterConfig::default();
        let word = {
            let raw: BTreeMap<String, Vec<String>> =
                serde_json::from_str(include_str!("../../data/flagged_words.json")).unwrap();
            raw["en"].iter().find(|e| !e.contains(' ')).unwrap().clone()
        };
        let spam = format!("{word} pictures free {word} videos now {word} click here today");
        let prose = "The library opens at nine and closes at six, except on public holidays.";
        assert_eq!(c.for_language("en").check_flagged("en", &spam), None);
        c.default.max_flagged_word_ratio = 0.05;
        let t = c.for_language("en");
        assert_eq!(t.check_flagged("en", &spam), Some(DropReason::FlaggedWords));
        assert_eq!(t.check_flagged("en", prose), None);
        assert_eq!(t.check_flagged("sw", &spam), None, "no list for sw");
        // A language may set its own bound, and bounds outside [0, 1] are refused.
        c.languages.insert(
            "en".into(),
            ThresholdOverride {
                max_flagged_word_ratio: Some(0.5),
                ..Default::default()
            },
        );
        assert_eq!(c.for_language("en").check_flagged("en", &spam), None);
        c.default.max_flagged_word_ratio = 1.5;
        assert!(c.validate().unwrap_err().contains("max_flagged_word_ratio"));
        // `[filters.default]` names only what it changes; the rest keeps its default.
        let parsed: FilterThresholds = toml::from_str("max_flagged_word_ratio = 0.05").unwrap();
        assert_eq!(
            parsed,
            FilterThresholds {
                max_flagged_word_ratio: 0.05,
                ..FilterThresholds::default()
            }
        );
        let parsed: FilterThresholds = toml::from_str("min_words = 3").unwrap();
        assert_eq!(parsed.max_flagged_word_ratio, 1.0, "off when not given");
    }

    #[test]
    fn languages_override_only_what_they_name() {
        let mut c = FilterConfig::default();
        let zh = "大型语言模型的开放数据集由许多国家的研究人员共同建设，记录每一个来源，并公开训练模型。这个项目希望每一份贡献都能被追溯。";
        assert_eq!(check(&c, "zh-Hant", zh), None, "bytes, not words, for zh");
        assert_eq!(check(&c, "en", zh), Some(DropReason::TooShort));
        c.languages.insert(
            "fr".into(),
            ThresholdOverride {
                max_word_repetition: Some(0.99),
                ..Default::default()
            },
        );
        let t = c.for_language("fr");
        assert_eq!(t.max_word_repetition, 0.99);
        assert_eq!(t.min_words, 15);
        let keywords = "cheap flights hotels deals discount tickets travel booking online \
                        vacation packages cruise rental cars insurance offers";
        let t = c.for_language("en");
        assert_eq!(t.check_closed_class("en", keywords), None, "off by default");
        c.default.min_closed_class_ratio = 0.15;
        let t = c.for_language("en");
        assert_eq!(
            t.check_closed_class("en", keywords),
            Some(DropReason::ClosedClassRatio)
        );
        let prose = "The committee met on Tuesday to discuss the budget for the new library.";
        assert_eq!(t.check_closed_class("en", prose), None);
        assert_eq!(
            t.check_closed_class("sw", keywords),
            None,
            "no list: not checked"
        );
        c.default.min_closed_class_ratio = 1.2;
        assert!(c.validate().unwrap_err().contains("min_closed_class_ratio"));
        c.default.min_closed_class_ratio = 0.0;
        c.default.max_special_ratio = 1.5;
        assert!(c.validate().unwrap_err().contains("max_special_ratio"));
    }
}
